/* shim_nest_fork.c - fork() of a process where uffds share memory
 * (docs/design.md "Nesting", events: FORK).
 *
 * Every nesting client has a kernel registration (its doorbell), so the
 * kernel makes a child uffd and a FORK event for each client that asked.
 * When the event is read (shim_nest_filter), nest_fork_fixup_locked() makes
 * the child uffd hold what the client registered; the child waits in fork()
 * until the parent has fixed up every such event, and the parent's fork()
 * returns once the app has them (shim_wrap_proc.c calls the prepare/wait
 * functions here). */
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "shim_nest_int.h"

/* Protect (mode WP) or release (0) the pages of [a, b) that u holds (held) or
 * does not hold (!held), through uffd fd. */
static void wp_call(int fd, uint64_t s, uint64_t e, uint64_t mode)
{
	struct uffdio_writeprotect w = {{s, e - s}, mode};
	if (e > s)
		nest_kcall(fd, UFFDIO_WRITEPROTECT, &w);
}

static void wp_pages_of(int fd, const struct um_uffd *u, uint64_t a, uint64_t b, bool held,
			uint64_t mode)
{
	uint64_t cur = a, rs, re, gap = a; /* the model's runs of protected pages */
	while (um_wp_next_run(&u->wp, &cur, b, &rs, &re)) {
		if (held)
			wp_call(fd, rs, re, mode);
		else
			wp_call(fd, gap, rs, mode);
		cur = gap = re;
	}
	if (!held)
		wp_call(fd, gap, b, mode);
}

/* The kernel's FORK event m on client me's uffd, read.  The new uffd (its fd is in
 * this process; it acts on the child's memory) holds the child's copies of
 * what this uffd holds in the kernel: its doorbell, and the spans it carries
 * with every client's modes and protections.  Make it hold what the uffd
 * itself registered, as a fork without nesting would: no doorbell, its own
 * modes and protections, and its virtual registrations where the child's
 * memory is free (it is not where the carrier also asked for FORK events:
 * the carrier's child uffd holds it then; clients do not nest across
 * processes).  The model's copy (um_op of the event) is this uffd's state. */
#define FORK_GAPS 32
static struct fork_gap {
	int fd;
	uint64_t start, end;
} fork_gaps[FORK_GAPS];
static uint32_t nfork_gaps;

bool nest_fork_fixup_locked(struct client *me, const struct uffd_msg *m)
{
	int nfd = (int)m->arg.fork.ufd;
	struct uffdio_range bell = {me->bell, UM_PAGE_SIZE};
	nest_kcall(nfd, UFFDIO_UNREGISTER, &bell);
	const struct um_uffd *u = um_uffd_by_id(&G.model, me->id);
	if (!u || !u->nranges)
		return false; /* only our doorbell made it: no event for the app */
	for (uint32_t i = 0; i < nest_nspans; i++) {
		const struct span *s = &nest_spans[i];
		for (uint32_t k = 0; k < u->nranges; k++) {
			const struct um_range *r = &u->ranges[k];
			uint64_t a = r->start > s->start ? r->start : s->start;
			uint64_t b = r->end < s->end ? r->end : s->end;
			if (a >= b)
				continue;
			struct uffdio_register reg = {.range = {a, b - a}, .mode = r->modes};
			if (s->carrier_id == u->id && s->kmodes == r->modes) {
				if (s->kmodes & UFFDIO_REGISTER_MODE_WP) /* others' bits go */
					wp_pages_of(nfd, u, a, b, false,
						    UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
			} else if (s->carrier_id == u->id) {
				/* Fewer modes: a REGISTER over its own registration
				 * only adds, so unregister first (the child waits in
				 * fork() meanwhile; the bits go with it). */
				struct uffdio_range ur = {a, b - a};
				nest_kcall(nfd, UFFDIO_UNREGISTER, &ur);
				if (nest_kcall(nfd, UFFDIO_REGISTER, &reg) == 0 &&
				    (r->modes & UFFDIO_REGISTER_MODE_WP))
					wp_pages_of(nfd, u, a, b, true, UFFDIO_WRITEPROTECT_MODE_WP);
			} else if (nest_kcall(nfd, UFFDIO_REGISTER, &reg) == 0) {
				if (r->modes & UFFDIO_REGISTER_MODE_WP)
					wp_pages_of(nfd, u, a, b, true, UFFDIO_WRITEPROTECT_MODE_WP);
			} else if (nfork_gaps < FORK_GAPS) { /* the model's copy must lack it */
				fork_gaps[nfork_gaps++] = (struct fork_gap){nfd, a, b};
			}
		}
	}
	return true;
}

/* ---- fork: the child waits for its FORK events' fix-ups ----
 * The kernel registers the child's memory with the child uffds at fork; the
 * fix-ups above change those registrations only when the parent reads the
 * events.  The child must not touch that memory meanwhile (a fault there
 * would reach the wrong uffd, or none), so it waits in our fork() until the
 * parent counted as many fix-ups as clients asked for FORK events (a shared
 * page; at most 2 s: a parent that does not read its events lets it go). */
struct fork_sync {
	int done;                 /* futex, shared with the children */
};
static struct fork_sync *fork_sync;

static int fork_sync_expect_locked(void)
{
	int n = 0;
	for (uint32_t i = 0; i < nest_nclients; i++) {
		const struct client *c = &nest_clients[i];
		const struct um_uffd *u = c->used && !c->dead ? um_uffd_by_id(&G.model, c->id) : NULL;
		n += u && u->mm_pid == G.pid && (u->features_requested & UFFD_FEATURE_EVENT_FORK);
	}
	return n;
}

int shim_nest_fork_prepare(void)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return 0;
	shim_lock();
	int n = fork_sync_expect_locked();
	if (n && !fork_sync) {
		void *pg = (void *)RAW6(SYS_mmap, 0, UM_PAGE_SIZE, PROT_READ | PROT_WRITE,
					MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if ((long)pg < 0 && (long)pg > -4096)
			n = 0;
		else
			fork_sync = pg;
	}
	if (n)
		__atomic_store_n(&fork_sync->done, 0, __ATOMIC_SEQ_CST);
	shim_unlock();
	return n;
}

void shim_nest_fork_child_wait(int expect)
{
	for (int waited = 0; fork_sync && waited < 2000; waited += 100) {
		int d = __atomic_load_n(&fork_sync->done, __ATOMIC_SEQ_CST);
		if (d >= expect)
			return;
		struct timespec ts = {0, 100 * 1000 * 1000};
		RAW6(SYS_futex, &fork_sync->done, FUTEX_WAIT, d, &ts, NULL, 0);
	}
}

/* The parent, after fork(): the kernel let fork() return once every FORK
 * event was read, but one the shim read for a client (a parked reader of
 * another client, the tracking pump) still waits in that client's inbox:
 * return when the app has it, as the kernel would (at most 5 s). */
void shim_nest_fork_parent_wait(void)
{
	for (int i = 0; i < 5000 && __atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE); i++) {
		bool queued = false;
		shim_lock();
		for (uint32_t k = 0; k < nest_nclients && !queued; k++) {
			const struct client *c = &nest_clients[k];
			for (uint32_t h = c->head; c->used && h != c->tail && !queued; h++)
				queued = c->inbox[h % INBOX].event == UFFD_EVENT_FORK;
		}
		shim_unlock();
		if (!queued)
			return;
		struct timespec ts = {0, 1000 * 1000};
		RAW2(SYS_nanosleep, &ts, NULL);
	}
}

void nest_fork_sync_one(void)
{
	if (!fork_sync)
		return;
	__atomic_add_fetch(&fork_sync->done, 1, __ATOMIC_SEQ_CST);
	RAW6(SYS_futex, &fork_sync->done, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
}

/* The model just made forked, the copy of a client for its FORK event: what
 * fork_fixup_locked() could not register in the child is not there.  Locked. */
void shim_nest_forked_locked(struct um_uffd *forked)
{
	for (uint32_t i = 0; forked->nfds && i < nfork_gaps;) {
		struct fork_gap g = fork_gaps[i];
		if (g.fd != forked->fds[0]) {
			i++;
			continue;
		}
		um_op_unregister(forked, 0, g.start, g.end - g.start);
		fork_gaps[i] = fork_gaps[--nfork_gaps];
	}
}
