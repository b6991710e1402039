/* shim_nest_wake.c - how a nesting client's readers hear of the messages the
 * shim routed to it (docs/design.md "Nesting", "Waking a client").
 *
 * Routed messages wait in the client's inbox.  The kernel wakes a thread
 * blocked in read() of a uffd only for a message of that uffd, so:
 *   - the first message for a client makes its file non-blocking in the
 *     kernel (the app keeps its blocking view: our read() emulates it and
 *     fcntl(F_GETFL) answers the app's flags).  From then on its readers
 *     wait in our read(), parked in an epoll set of the client's: its own
 *     fd, an eventfd, and the fds of the carriers of the spans it shares;
 *   - a message for a parked reader is a kick of the eventfd (one thread
 *     hop); a fault on a shared span wakes a parked reader of the client
 *     directly when it waits on the carrier's fd (EPOLLEXCLUSIVE entries,
 *     its own last, so the carrier's own readers are woken only when no
 *     client waits), and that reader routes it;
 *   - a reader we cannot kick (blocked in the kernel's read() since before
 *     the file became non-blocking, or waiting in the app's own poll/epoll)
 *     hears through the doorbell: a private page registered MISSING on the
 *     client's own uffd, touched by a small bell thread, whose fault makes
 *     the fd readable; our read() returns the inbox in its place.  For a
 *     client whose file we made non-blocking the bell rings only if the
 *     messages are still there 2 ms later.
 * State is under the model lock unless said otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>

#include "shim_nest_int.h"

static int nest_queued; /* messages in all inboxes: a read() skips the lock at 0 */
static __thread struct client *tls_quiet __attribute__((tls_model("initial-exec")));

static long futex(int *uaddr, int op, int val)
{
	return RAW6(SYS_futex, uaddr, op, val, NULL, 0, 0);
}

struct client *nest_quiet_client(void)
{
	return tls_quiet;
}

/* ---- inboxes ---- */
bool nest_inbox_push(struct client *c, const struct uffd_msg *m)
{
	if (c->tail - c->head == INBOX)
		return false;
	c->inbox[c->tail++ % INBOX] = *m;
	__atomic_add_fetch(&nest_queued, 1, __ATOMIC_SEQ_CST);
	return true;
}

struct uffd_msg nest_inbox_pop(struct client *c)
{
	__atomic_sub_fetch(&nest_queued, 1, __ATOMIC_SEQ_CST);
	struct uffd_msg m = c->inbox[c->head++ % INBOX];
	if (m.reserved3 == NEST_EV_HOLD) { /* its caller may go on */
		m.reserved3 = 0;
		__atomic_sub_fetch(&c->ev_hold, 1, __ATOMIC_SEQ_CST);
		futex(&c->ev_hold, FUTEX_WAKE_PRIVATE, 1 << 30);
	}
	return m;
}

void nest_inbox_unpop(struct client *c, const struct uffd_msg *m)
{
	c->head--;
	c->inbox[c->head % INBOX] = *m;
	__atomic_add_fetch(&nest_queued, 1, __ATOMIC_SEQ_CST);
}

/* ---- doorbells ---- */
static void *bell_main(void *arg)
{
	struct client *c = arg;
	for (;;) {
		int how;
		while (!(how = __atomic_load_n(&c->ring, __ATOMIC_ACQUIRE)))
			futex(&c->ring, FUTEX_WAIT_PRIVATE, 0);
		if (how == RING_LATER) {
			/* Its readers come back to our read(), which takes the
			 * inbox: ring only if the messages are still there after
			 * a while.  Rings meanwhile need no wake-up. */
			struct timespec ts = {0, 2 * 1000 * 1000};
			RAW2(SYS_nanosleep, &ts, NULL);
		}
		how = __atomic_exchange_n(&c->ring, 0, __ATOMIC_ACQ_REL);
		if (__atomic_load_n(&c->dead, __ATOMIC_ACQUIRE)) {
			/* Its uffd is gone (and with it the doorbell's
			 * registration): free the page and the slot (reused,
			 * with its eventfd, once no reader is parked on it). */
			RAW2(SYS_munmap, c->bell, UM_PAGE_SIZE);
			__atomic_store_n(&c->used, 0, __ATOMIC_RELEASE);
			futex(&c->ev_hold, FUTEX_WAKE_PRIVATE, 1 << 30);
			return NULL;
		}
		if (how == RING_LATER && __atomic_load_n(&c->head, __ATOMIC_ACQUIRE) ==
					     __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE))
			continue; /* taken meanwhile */
		__atomic_store_n(&c->busy, 1, __ATOMIC_RELEASE);
		/* A read fault on the MISSING doorbell: a message on the
		 * client's uffd; we sleep until its read() resolves it. */
		(void)*(volatile char *)(uintptr_t)c->bell;
		RAW3(SYS_madvise, c->bell, UM_PAGE_SIZE, MADV_DONTNEED);
		__atomic_store_n(&c->busy, 0, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* Make the client's file non-blocking in the kernel: our read() can then wait
 * on it together with other fds (poll on a blocking uffd answers POLLERR). */
static void force_nonblocking(struct client *c)
{
	c->force_tried = 1;
	long fl = RAW2(SYS_fcntl, c->fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK) && RAW3(SYS_fcntl, c->fd, F_SETFL, fl | O_NONBLOCK) == 0)
		c->forced = 1;
}

void nest_kick(int efd)
{
	uint64_t one = 1;
	if (efd >= 0)
		RAW3(SYS_write, efd, &one, sizeof(one));
}

int nest_ring_later(struct client *c)
{
	if (!c->dead && c->efd >= 0 && __atomic_load_n(&c->parked, __ATOMIC_ACQUIRE) > 0)
		return c->efd;
	int how = RING_NOW;
	if (!c->dead && c->efd >= 0 && !c->force_tried) {
		/* Its first message: from now on its blocking reads wait in
		 * our read(), where a kick reaches them.  A reader already
		 * blocked in the kernel needs this one doorbell. */
		force_nonblocking(c);
	} else if (!c->dead && c->forced) {
		/* Not parked, and not in the kernel's read() either: busy in
		 * the app or about to park.  Its next read() takes the inbox. */
		how = RING_LATER;
	}
	int old = 0;
	if (__atomic_compare_exchange_n(&c->ring, &old, how, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		futex(&c->ring, FUTEX_WAKE_PRIVATE, 1);
	else if (old == RING_LATER && how == RING_NOW)
		__atomic_store_n(&c->ring, RING_NOW, __ATOMIC_RELEASE);
	return -1;
}

void nest_ring(struct client *c)
{
	nest_kick(nest_ring_later(c));
}

/* The client for uffd u (fd), with its doorbell and bell thread. */
struct client *nest_client_get(struct um_uffd *u, int fd)
{
	struct client *c = nest_client_of(u->id);
	if (c)
		return c;
	c = NULL;
	for (uint32_t i = 0; i < nest_nclients && !c; i++)
		if (!__atomic_load_n(&nest_clients[i].used, __ATOMIC_ACQUIRE) &&
		    !__atomic_load_n(&nest_clients[i].parked, __ATOMIC_ACQUIRE))
			c = &nest_clients[i];
	bool fresh = !c;
	if (fresh && nest_nclients == MAX_CLIENTS)
		return NULL;
	if (fresh)
		c = &nest_clients[nest_nclients];
	void *bell = (void *)RAW6(SYS_mmap, 0, UM_PAGE_SIZE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((long)bell < 0 && (long)bell > -4096)
		return NULL;
	struct uffdio_register reg = {.range = {(uint64_t)bell, UM_PAGE_SIZE},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (nest_kcall(fd, UFFDIO_REGISTER, &reg) < 0) {
		RAW2(SYS_munmap, bell, UM_PAGE_SIZE);
		return NULL;
	}
	int efd = fresh ? -1 : c->efd, epfd = fresh ? -1 : c->epfd;
	if (epfd >= 0) { /* a reused slot: a fresh set, old kicks forgotten */
		shim_fd_unhide(&c->epfd);
		shim_fd_set(epfd, FD_NONE);
		RAW1(SYS_close, epfd);
	}
	if (efd >= 0) {
		uint64_t v;
		RAW3(SYS_read, efd, &v, sizeof(v));
	}
	memset(c, 0, sizeof(*c));
	c->used = 1;
	c->id = u->id;
	c->fd = fd;
	c->bell = (uint64_t)bell;
	c->efd = efd;
	c->epfd = -1;
	if (shim_thread_start(bell_main, c, 64 * 1024) != 0) {
		struct uffdio_range r = {(uint64_t)bell, UM_PAGE_SIZE};
		nest_kcall(fd, UFFDIO_UNREGISTER, &r);
		RAW2(SYS_munmap, bell, UM_PAGE_SIZE);
		c->used = 0;
		return NULL;
	}
	if (c->efd < 0) {
		long e = RAW2(SYS_eventfd2, 0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (e >= 0)
			shim_fd_hide((int)e, &c->efd);
	}
	if (fresh)
		nest_nclients++;
	return c;
}

/* ---- readers in our read() ---- */

ssize_t shim_nest_take(int fd, void *buf, size_t cap)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) || cap < sizeof(struct uffd_msg) ||
	    !__atomic_load_n(&nest_queued, __ATOMIC_SEQ_CST))
		return 0;
	size_t k = 0, room = cap / sizeof(struct uffd_msg);
	shim_lock();
	struct client *c = nest_client_by_fd(fd);
	while (c && c->head != c->tail && k < room) {
		struct uffd_msg m = nest_inbox_pop(c);
		memcpy((char *)buf + k * sizeof(m), &m, sizeof(m));
		k++;
	}
	if (c && k && c->head != c->tail)
		nest_ring(c); /* more than fit: the next reader */
	shim_unlock();
	return (ssize_t)(k * sizeof(struct uffd_msg));
}

/* After a signal interrupted the wait: would the kernel have restarted the
 * blocking read()?  It does when the handler has SA_RESTART.  We cannot tell
 * which signal came, so we restart only when every handler asks for it
 * (glibc's own SIGCANCEL and SIGSETXID aside). */
static bool restart_after_signal(void)
{
	struct {
		unsigned long handler, flags, restorer, mask;
	} ks;
	for (int sig = 1; sig <= 64; sig++) {
		if (sig == 32 || sig == 33)
			continue;
		if (RAW4(SYS_rt_sigaction, sig, NULL, &ks, 8) != 0)
			continue;
		if (ks.handler != (unsigned long)SIG_DFL && ks.handler != (unsigned long)SIG_IGN &&
		    !(ks.flags & SA_RESTART))
			return false;
	}
	return true;
}

static void unpark(void *arg)
{
	struct client *c = arg;
	__atomic_sub_fetch(&c->parked, 1, __ATOMIC_ACQ_REL);
}

/* epoll_wait() is a cancellation point, as the read() it stands for: a
 * cancelled reader is no longer parked. */
static __attribute__((noinline)) int park_wait(struct client *c, struct epoll_event *ev, int n)
{
	int r;
	pthread_cleanup_push(unpark, c);
	r = epoll_wait(c->epfd, ev, n, -1);
	pthread_cleanup_pop(0);
	return r;
}

static void ep_set(int epfd, int op, int fd, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.fd = fd};
	RAW4(SYS_epoll_ctl, epfd, op, fd, &ev);
}

/* c's epoll set, brought up to date: its eventfd, the carriers' fds it
 * delegates (made non-blocking), and its own fd last.  -1: none. */
static int park_set_locked(struct client *c, int fd)
{
	if (c->epfd < 0) {
		long e = RAW1(SYS_epoll_create1, EPOLL_CLOEXEC);
		if (e < 0)
			return -1;
		shim_fd_hide((int)e, &c->epfd);
		ep_set(c->epfd, EPOLL_CTL_ADD, c->efd, EPOLLIN);
	}
	int want[MAX_DELEGATED], nwant = 0;
	struct um_uffd *self = um_uffd_by_id(&G.model, c->id);
	for (uint32_t i = 0; self && i < nest_nspans && nwant < MAX_DELEGATED; i++) {
		struct span *s = &nest_spans[i];
		struct client *cc = s->carrier_id != c->id ? nest_client_of(s->carrier_id) : NULL;
		if (!cc || cc->efd < 0 || !um_range_find(self, s->start))
			continue;
		if (!cc->force_tried)
			force_nonblocking(cc);
		bool dup = !cc->forced;
		for (int k = 0; k < nwant; k++)
			dup |= want[k] == cc->fd;
		if (!dup)
			want[nwant++] = cc->fd;
	}
	bool same = nwant == c->ndel;
	for (int k = 0; same && k < nwant; k++)
		same = want[k] == c->del_fds[k];
	if (!same) {
		for (int k = 0; k < c->ndel; k++)
			ep_set(c->epfd, EPOLL_CTL_DEL, c->del_fds[k], 0);
		for (int k = 0; k < nwant; k++) {
			ep_set(c->epfd, EPOLL_CTL_ADD, want[k], EPOLLIN | EPOLLEXCLUSIVE);
			for (uint32_t i = 0; i < nest_nclients; i++)
				if (nest_clients[i].used && !nest_clients[i].dead &&
				    nest_clients[i].fd == want[k])
					nest_clients[i].reorder = 1;
		}
		memcpy(c->del_fds, want, sizeof(int) * (size_t)nwant);
		c->ndel = nwant;
	}
	if (c->ep_own && c->reorder) {
		ep_set(c->epfd, EPOLL_CTL_DEL, fd, 0);
		c->ep_own = 0;
	}
	if (!c->ep_own) {
		ep_set(c->epfd, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLEXCLUSIVE);
		c->ep_own = 1;
		c->reorder = 0;
	}
	return c->epfd;
}

void nest_forget_delegate(int fd)
{
	for (uint32_t i = 0; i < nest_nclients; i++) {
		struct client *c = &nest_clients[i];
		if (!c->used || c->epfd < 0)
			continue;
		for (int k = 0; k < c->ndel; k++)
			if (c->del_fds[k] == fd) {
				ep_set(c->epfd, EPOLL_CTL_DEL, fd, 0);
				c->del_fds[k] = c->del_fds[--c->ndel];
				break;
			}
	}
}

/* A carrier's fd was readable for c's parked reader: read the messages and
 * route them.  c's own go to c's inbox (its reader takes them next, no ring);
 * the carrier's own go to the carrier's inbox. */
static void delegated_read(struct client *c, int cfd)
{
	struct uffd_msg buf[16];
	struct iovec iov = {buf, sizeof(buf)};
	long r = RAW6(SYS_preadv2, cfd, &iov, 1, -1, -1, RWF_NOWAIT);
	if (r < (long)sizeof(struct uffd_msg))
		return;
	tls_quiet = c;
	ssize_t kept = shim_nest_filter(cfd, buf, r, sizeof(buf));
	tls_quiet = NULL;
	if (kept > 0) /* the carrier's own */
		shim_nest_deliver(cfd, buf, kept);
}

/* What woke a parked reader of c (reading fd). */
static int park_events(struct client *c, int fd, const struct epoll_event *ev, int n)
{
	int ret = 0;
	for (int i = 0; i < n; i++) {
		int f = ev[i].data.fd;
		if (f == c->efd) {
			uint64_t v;
			RAW3(SYS_read, f, &v, sizeof(v));
		} else if (f == fd && (ev[i].events & EPOLLERR)) {
			/* Blocking again (or no UFFDIO_API yet): the kernel's
			 * read() answers. */
			shim_lock();
			if (c->ep_own)
				ep_set(c->epfd, EPOLL_CTL_DEL, fd, 0);
			c->ep_own = 0;
			shim_unlock();
			ret = 1;
		} else if (f != fd && (ev[i].events & EPOLLERR)) { /* a carrier, blocking again */
			shim_lock();
			ep_set(c->epfd, EPOLL_CTL_DEL, f, 0);
			for (int k = 0; k < c->ndel; k++)
				if (c->del_fds[k] == f)
					c->del_fds[k] = c->del_fds[--c->ndel];
			shim_unlock();
		} else if (f != fd) {
			delegated_read(c, f);
		}
	}
	return ret;
}

static __attribute__((noinline)) int park_poll1(int fd)
{
	struct pollfd p = {fd, POLLIN, 0};
	int r = poll(&p, 1, -1);
	return r > 0 && (p.revents & (POLLERR | POLLNVAL)) ? 1 : r < 0 ? -1 : 0;
}

int shim_nest_park(int fd)
{
	struct client *c = NULL;
	if (__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE)) {
		shim_lock();
		c = nest_client_by_fd(fd);
		if (c && c->head != c->tail) {
			shim_unlock();
			return 0;
		}
		if (c && (c->efd < 0 || park_set_locked(c, fd) < 0))
			c = NULL;
		if (c)
			__atomic_add_fetch(&c->parked, 1, __ATOMIC_ACQ_REL);
		shim_unlock();
	}
	if (!c) { /* not a client here (a forked child, a peer process's forcing) */
		int r = park_poll1(fd);
		if (r >= 0)
			return r;
	} else {
		struct epoll_event ev[MAX_DELEGATED + 2];
		int r = park_wait(c, ev, MAX_DELEGATED + 2);
		int err = errno;
		/* Unlocked: a kick that still sees us only leaves a count that
		 * the next wait clears. */
		__atomic_sub_fetch(&c->parked, 1, __ATOMIC_ACQ_REL);
		if (r >= 0)
			return park_events(c, fd, ev, r);
		shim_lock();
		if (c->head != c->tail)
			nest_ring(c); /* we leave: the next reader must hear of them */
		shim_unlock();
		errno = err;
	}
	if (errno == EINTR && !restart_after_signal())
		return -1;
	return 0;
}

/* ---- the app's file flags, exec, fork ---- */

void shim_nest_reforce_locked(int fd)
{
	struct client *c = __atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) ?
			   nest_client_by_fd(fd) : NULL;
	if (c && c->forced) {
		long fl = RAW2(SYS_fcntl, fd, F_GETFL);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			RAW3(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK);
	}
}

void shim_nest_before_exec_locked(void)
{
	for (uint32_t i = 0; i < nest_nclients; i++) {
		struct client *c = &nest_clients[i];
		if (!c->used || c->dead || !c->forced)
			continue;
		struct um_uffd *u = um_uffd_by_id(&G.model, c->id);
		long fl = RAW2(SYS_fcntl, c->fd, F_GETFL);
		if (u && fl >= 0 && !(u->file_flags & O_NONBLOCK))
			RAW3(SYS_fcntl, c->fd, F_SETFL, fl & ~(long)O_NONBLOCK);
		c->forced = c->force_tried = 0;
	}
}

void nest_clients_after_fork_child(void)
{
	/* The bell threads did not survive.  Files we made non-blocking stay
	 * so (the parent shares them); our read() still emulates the app's
	 * blocking view there, without a client (shim_nest_park). */
	for (uint32_t i = 0; i < nest_nclients; i++) {
		struct client *c = &nest_clients[i];
		if (c->efd >= 0) {
			shim_fd_unhide(&c->efd);
			shim_fd_set(c->efd, FD_NONE);
			RAW1(SYS_close, c->efd);
		}
		if (c->epfd >= 0) {
			shim_fd_unhide(&c->epfd);
			shim_fd_set(c->epfd, FD_NONE);
			RAW1(SYS_close, c->epfd);
		}
	}
	memset(nest_clients, 0, sizeof(nest_clients));
	nest_nclients = 0;
	nest_queued = 0;
}
