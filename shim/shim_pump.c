/* shim_pump.c - one shim thread that reads uffds whose messages no thread of
 * the app may be reading:
 *   - the app's uffds through which dirty tracking protects pages (sync): a
 *     write by the app's own reader thread, or by any thread while none
 *     reads, must not wait for a reader (shim_track.c);
 *   - a carrier that unregistered nested memory other clients still use (its
 *     app may stop reading it), and a carrier the app closed, kept as a ghost
 *     (shim_nest_ghost.c).
 * The app's readers go first: a message of an app uffd is taken only if it
 * still waits 2 ms after it arrived; it then goes where it belongs (our WP
 * faults resolved, the others' routed, the app's own back to the app through
 * its doorbell, shim_nest_deliver), so the app still sees each of its
 * messages once.  A ghost has no app reader: it is read at once.  The thread
 * ends when nothing is left to read, and starts again when needed. */
#include <errno.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <time.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"

#define PUMP_MAX 16

static int pump_running;
static int pump_efd = -1; /* eventfd: poked when a uffd in the pump's set goes */
/* The fds the pump's poll holds now (cur_n 0: none), and a count of its
 * returns from poll, for a close() that must wait until the poll lets go. */
static int cur_fds[PUMP_MAX], cur_n, poll_gen;

struct pump_set {
	struct { int fd; short events, revents; } p[PUMP_MAX];
	uint32_t ids[PUMP_MAX];  /* app uffds: model ids */
	int ghost[PUMP_MAX];     /* ghosts: slot; app uffds: -1; the poke: -2 */
	uint32_t n;
};

static int app_fd_locked(uint32_t id)
{
	struct um_uffd *u = um_uffd_by_id(&G.model, id);
	return u && u->nfds ? u->fds[0] : -1;
}

static bool pumped_locked(uint32_t id)
{
	return shim_track_pumps_locked(id) || shim_nest_pumps_locked(id);
}

static void build(struct pump_set *s)
{
	uint32_t ids[PUMP_MAX];
	int gfds[PUMP_MAX], slots[PUMP_MAX];
	s->n = 0;
	shim_lock();
	/* PUMP_MAX - 1: the last entry is the poke's */
	uint32_t n = shim_track_pump_carriers_locked(ids, PUMP_MAX - 1);
	n = shim_nest_pump_carriers_locked(ids, n, PUMP_MAX - 1);
	for (uint32_t k = 0; k < n; k++) {
		int fd = app_fd_locked(ids[k]);
		if (fd < 0)
			continue;
		s->p[s->n].fd = fd;
		s->ids[s->n] = ids[k];
		s->ghost[s->n++] = -1;
	}
	uint32_t ng = shim_nest_pump_ghosts_locked(gfds, slots, PUMP_MAX - 1 - s->n);
	for (uint32_t k = 0; k < ng; k++) {
		s->p[s->n].fd = gfds[k];
		s->ids[s->n] = 0;
		s->ghost[s->n++] = slots[k];
	}
	if (s->n && pump_efd >= 0) { /* last: not counted as work by wanted() */
		s->p[s->n].fd = pump_efd;
		s->ids[s->n] = 0;
		s->ghost[s->n++] = -2;
	}
	shim_unlock();
	for (uint32_t k = 0; k < s->n; k++) {
		s->p[k].events = 1; /* POLLIN */
		s->p[k].revents = 0;
	}
}

/* Messages of app uffd ids[k] that still wait: take and place them. */
static void take_app(const struct pump_set *s, uint32_t k)
{
	struct uffd_msg msgs[16];
	struct iovec iov = {msgs, sizeof(msgs)};
	long r = -EBADF;
	/* Under the lock: the app cannot close and reuse the number meanwhile;
	 * RWF_NOWAIT: never block holding it. */
	shim_lock();
	if (app_fd_locked(s->ids[k]) == s->p[k].fd && pumped_locked(s->ids[k]))
		r = RAW6(SYS_preadv2, s->p[k].fd, &iov, 1, -1L, 0, RWF_NOWAIT);
	shim_unlock();
	if (r <= 0)
		return;
	ssize_t kept = shim_track_filter(s->p[k].fd, msgs, r);
	kept = kept > 0 ? shim_nest_filter(s->p[k].fd, msgs, kept, sizeof(msgs)) : kept;
	if (kept > 0)
		shim_nest_deliver(s->p[k].fd, msgs, kept);
}

static bool wanted(void)
{
	struct pump_set s;
	build(&s);
	return s.n > 0;
}

static void *pump_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pump_set s;
		build(&s);
		if (!s.n && shim_track_active()) {
			/* Tracking on: sync carriers come and go with the cuts
			 * (as before the pump served nesting too, it stays). */
			struct timespec ts = {0, 100 * 1000 * 1000};
			RAW2(SYS_nanosleep, &ts, NULL);
			continue;
		}
		if (!s.n) {
			/* Nothing to read: end, unless something came meanwhile. */
			__atomic_store_n(&pump_running, 0, __ATOMIC_SEQ_CST);
			int expected = 0;
			if (!wanted() || !__atomic_compare_exchange_n(&pump_running, &expected, 1, false,
								       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
				return NULL;
			continue;
		}
		for (uint32_t k = 0; k < s.n; k++)
			cur_fds[k] = s.p[k].fd;
		__atomic_store_n(&cur_n, (int)s.n, __ATOMIC_SEQ_CST);
		long pr = RAW3(SYS_poll, s.p, s.n, 100);
		__atomic_store_n(&cur_n, 0, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&poll_gen, 1, __ATOMIC_SEQ_CST);
		RAW6(SYS_futex, &poll_gen, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
		if (pr <= 0)
			continue;
		bool app = false, poked = false;
		for (uint32_t k = 0; k < s.n; k++) {
			if (s.ghost[k] >= 0 && (s.p[k].revents & 1))
				shim_nest_ghost_read(s.ghost[k]);
			if (s.ghost[k] == -2 && (s.p[k].revents & 1)) {
				uint64_t v;
				RAW3(SYS_read, pump_efd, &v, sizeof(v));
				poked = true;
			}
			app |= s.ghost[k] == -1 && (s.p[k].revents & 1);
		}
		if (poked) /* the set changed: build it again (and let go of the files) */
			continue;
		if (!app) {
			/* poll() on a blocking uffd answers POLLERR at once: such a
			 * uffd cannot be waited on, only looked at now and then. */
			struct timespec ts = {0, 2 * 1000 * 1000};
			RAW2(SYS_nanosleep, &ts, NULL);
			continue;
		}
		/* A fallback: the app's reader normally takes its messages at
		 * once.  Only what still waits 2 ms later is ours to move. */
		struct timespec grace = {0, 2 * 1000 * 1000};
		RAW2(SYS_nanosleep, &grace, NULL);
		for (uint32_t k = 0; k < s.n; k++)
			s.p[k].revents = 0;
		if (RAW3(SYS_poll, s.p, s.n, 0) <= 0)
			continue;
		for (uint32_t k = 0; k < s.n; k++)
			if (s.ghost[k] == -1 && (s.p[k].revents & 1))
				take_app(&s, k);
	}
}

/* A uffd of the pump's set is about to go (closed, or no longer pumped):
 * wake the pump so that its poll lets go of the file at once (the file's
 * release is what drops its registrations and wakes its faults). */
void shim_pump_poke(void)
{
	uint64_t one = 1;
	if (__atomic_load_n(&pump_running, __ATOMIC_ACQUIRE) && pump_efd >= 0)
		RAW3(SYS_write, pump_efd, &one, sizeof(one));
}

void shim_pump_release_fd(int fd)
{
	int n = __atomic_load_n(&cur_n, __ATOMIC_SEQ_CST);
	bool held = false;
	for (int k = 0; k < n && k < PUMP_MAX; k++)
		held |= cur_fds[k] == fd;
	if (!held)
		return;
	int g = __atomic_load_n(&poll_gen, __ATOMIC_SEQ_CST);
	shim_pump_poke();
	for (int i = 0; i < 10 && __atomic_load_n(&poll_gen, __ATOMIC_SEQ_CST) == g; i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		RAW6(SYS_futex, &poll_gen, FUTEX_WAIT_PRIVATE, g, &ts, NULL, 0);
	}
}

void shim_pump_start(void)
{
	int expected = 0;
	if (!__atomic_compare_exchange_n(&pump_running, &expected, 1, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		return;
	if (pump_efd < 0) {
		long e = RAW2(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (e >= 0)
			shim_fd_hide((int)e, &pump_efd);
	}
	if (shim_thread_start(pump_main, NULL, 128 * 1024) != 0)
		__atomic_store_n(&pump_running, 0, __ATOMIC_RELEASE);
}

void shim_pump_after_fork_child(void)
{
	__atomic_store_n(&pump_running, 0, __ATOMIC_RELEASE); /* the thread did not survive */
	if (pump_efd >= 0) { /* the parent's counter: not ours to poke */
		int fd = pump_efd;
		shim_fd_unhide(&pump_efd);
		shim_fd_set(fd, FD_NONE);
		RAW1(SYS_close, fd);
		pump_efd = -1;
	}
}
