/* shim_nest_ghost.c - a carrier that leaves while other clients still use
 * its kernel registration.
 *
 * The kernel registration of nested memory belongs to one uffd, the carrier.
 * Handing it to another client when the carrier unregisters or closes would
 * take two calls (UNREGISTER, REGISTER), and a fault between them would be
 * filled as if no uffd watched the memory.  So the registration stays where
 * it is:
 *   - the carrier UNREGISTERs: nothing changes in the kernel; the carrier's
 *     model forgets the range, so routing sends every fault there to the
 *     others (an "orphaned" carrier).  If the app stops reading that uffd,
 *     the pump (shim_pump.c) reads it for the others.
 *   - the carrier's last fd is closed: before the app's close the shim keeps
 *     a hidden copy of the file (a "ghost"), which the pump reads and routes
 *     (nest_ghost_read); the app sees its uffd gone, as it asked.
 * When no other client is left, shim_nest_prune_locked undoes the kernel
 * registration of an orphaned carrier, and the ghost is closed (which drops
 * its registrations).  docs/design.md, "Nesting". */
#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>

#include "shim_nest_int.h"

struct ghost nest_ghosts[MAX_GHOSTS] = {[0 ... MAX_GHOSTS - 1] = {.fd = -1}};

int nest_ghost_fd(uint32_t id)
{
	for (int g = 0; g < MAX_GHOSTS; g++)
		if (nest_ghosts[g].fd >= 0 && nest_ghosts[g].id == id)
			return nest_ghosts[g].fd;
	return -1;
}

void nest_ghost_release(int g)
{
	if (g < 0 || g >= MAX_GHOSTS || nest_ghosts[g].fd < 0)
		return;
	for (uint32_t i = 0; i < nest_nspans; i++)
		if (nest_spans[i].ghost == g + 1)
			return;
	int fd = nest_ghosts[g].fd;
	shim_fd_unhide(&nest_ghosts[g].fd);
	shim_fd_set(fd, FD_NONE);
	RAW1(SYS_close, fd);
	nest_ghosts[g].fd = -1;
}

void nest_ghosts_after_fork_child(void)
{
	/* The child's memory is not registered with the parent's ghosts. */
	for (int g = 0; g < MAX_GHOSTS; g++)
		if (nest_ghosts[g].fd >= 0) {
			int fd = nest_ghosts[g].fd;
			shim_fd_unhide(&nest_ghosts[g].fd);
			shim_fd_set(fd, FD_NONE);
			RAW1(SYS_close, fd);
			nest_ghosts[g].fd = -1;
		}
}

/* The app is about to close fd.  If it is the last fd of a uffd that carries
 * nested memory for other clients, keep the file.  Locked. */
void shim_nest_before_close_locked(int fd)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return;
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	if (!u || u->nfds != 1)
		return;
	bool carries = false;
	for (uint32_t i = 0; i < nest_nspans && !carries; i++)
		carries = nest_spans[i].carrier_id == u->id && !nest_spans[i].ghost &&
			  nest_others(&nest_spans[i], u->id) >= 1;
	if (!carries)
		return;
	int g = 0;
	while (g < MAX_GHOSTS && nest_ghosts[g].fd >= 0)
		g++;
	if (g == MAX_GHOSTS)
		return; /* the old way: the next client takes the registration */
	long nfd = RAW3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);
	if (nfd < 0)
		return;
	long fl = RAW2(SYS_fcntl, (int)nfd, F_GETFL);
	if (fl >= 0) /* nobody else reads it now: the pump never blocks */
		RAW3(SYS_fcntl, (int)nfd, F_SETFL, fl | O_NONBLOCK);
	nest_ghosts[g].id = u->id;
	shim_fd_hide((int)nfd, &nest_ghosts[g].fd);
	for (uint32_t i = 0; i < nest_nspans; i++)
		if (nest_spans[i].carrier_id == u->id && !nest_spans[i].ghost &&
		    nest_others(&nest_spans[i], u->id) >= 1)
			nest_spans[i].ghost = g + 1;
	/* Parked readers of the others wait on fd's file: not under a number
	 * the app is about to free. */
	nest_forget_delegate(fd);
	shim_pump_start();
}

/* ---- the pump's side ---- */
static bool orphaned(const struct span *s, const struct um_uffd *car)
{
	return car && car->nfds && !s->ghost && !s->augmented &&
	       (!um_range_find(car, s->start) || !um_range_find(car, s->end - UM_PAGE_SIZE));
}

uint32_t shim_nest_pump_carriers_locked(uint32_t *ids, uint32_t n, uint32_t cap)
{
	for (uint32_t i = 0; i < nest_nspans && n < cap; i++) {
		struct um_uffd *car = um_uffd_by_id(&G.model, nest_spans[i].carrier_id);
		if (!orphaned(&nest_spans[i], car))
			continue;
		bool dup = false;
		for (uint32_t k = 0; k < n; k++)
			dup |= ids[k] == car->id;
		if (!dup)
			ids[n++] = car->id;
	}
	return n;
}

bool shim_nest_pumps_locked(uint32_t id)
{
	for (uint32_t i = 0; i < nest_nspans; i++)
		if (nest_spans[i].carrier_id == id &&
		    orphaned(&nest_spans[i], um_uffd_by_id(&G.model, id)))
			return true;
	return false;
}

uint32_t shim_nest_pump_ghosts_locked(int *fds, int *slots, uint32_t cap)
{
	uint32_t n = 0;
	for (int g = 0; g < MAX_GHOSTS && n < cap; g++)
		if (nest_ghosts[g].fd >= 0) {
			fds[n] = nest_ghosts[g].fd;
			slots[n++] = g;
		}
	return n;
}

/* Read ghost g and route what it held: a fault to the client it is for
 * (or resolved as without a uffd), events dropped (the shim makes the
 * clients' own from the app's calls), FORK's child uffd closed. */
void shim_nest_ghost_read(int g)
{
	struct uffd_msg buf[16];
	struct iovec iov = {buf, sizeof(buf)};
	int kicks[16];
	uint32_t nkicks = 0;
	shim_lock();
	int gfd = g >= 0 && g < MAX_GHOSTS ? nest_ghosts[g].fd : -1;
	long r = gfd >= 0 ? RAW6(SYS_preadv2, gfd, &iov, 1, -1L, 0, RWF_NOWAIT) : -EBADF;
	for (long i = 0; r > 0 && i < r / (long)sizeof(buf[0]); i++) {
		struct uffd_msg *m = &buf[i];
		if (m->event == UFFD_EVENT_FORK) {
			RAW1(SYS_close, (int)m->arg.fork.ufd);
			continue;
		}
		if (m->event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t page = m->arg.pagefault.address & ~(UM_PAGE_SIZE - 1);
		struct span *s = nest_span_at(page);
		uint32_t to = s ? nest_route(s, page, m->arg.pagefault.flags) : 0;
		struct client *dst = to ? nest_client_of(to) : NULL;
		if (dst && nest_inbox_push(dst, m)) {
			int k = nest_ring_later(dst);
			if (k >= 0 && nkicks < 16)
				kicks[nkicks++] = k;
			continue;
		}
		nest_resolve_unwanted(gfd, page, m->arg.pagefault.flags);
	}
	shim_unlock();
	for (uint32_t k = 0; k < nkicks; k++)
		nest_kick(kicks[k]);
}
