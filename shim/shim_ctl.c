/* shim_ctl.c - the control socket: one thread per shimmed process that has
 * touched a uffd, serving the model to same-uid tools (include/uffdshim_ctl.h).
 * The thread blocks every signal, so the app's signals never land on it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffdshim_ctl.h"

static bool ctl_listen(void);
static int ctl_started;   /* 0 no, 1 starting/started */
static int listen_fd = -1;

int shim_ctl_fd(void)
{
	return listen_fd;
}

static socklen_t ctl_addr(pid_t pid, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	size_t n = 1; /* abstract: leading NUL */
	memcpy(a->sun_path + n, UCTL_ADDR_PREFIX, sizeof(UCTL_ADDR_PREFIX) - 1);
	n += sizeof(UCTL_ADDR_PREFIX) - 1;
	n += shim_utoa((uint64_t)pid, a->sun_path + n);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

bool shim_ctl_io_all(int fd, void *buf, size_t len, bool writing)
{
	uint8_t *p = buf;
	while (len) {
		long r = writing ? RAW4(SYS_sendto, fd, p, len, MSG_NOSIGNAL)
				 : RAW3(SYS_read, fd, p, len);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			return false;
		p += r;
		len -= (size_t)r;
	}
	return true;
}

bool shim_ctl_reply(int fd, uint32_t op, int32_t status, const void *payload, uint32_t len)
{
	struct uctl_hdr h = {.magic = UCTL_REP_MAGIC, .version = UCTL_VERSION, .op = op,
			     .status = status, .len = len};
	return shim_ctl_io_all(fd, &h, sizeof(h), true) && (!len || shim_ctl_io_all(fd, (void *)payload, len, true));
}

/* The serialized st (or its uffd with inode ino), for send_blob.  Called
 * locked; the blob is sent after the lock is let go, so that a fork of the
 * app never copies the lock held by a reply in flight. */
struct blob {
	void *p;
	size_t size, n;
	int32_t status;
};

static struct blob state_blob(const struct um_state *st, uint64_t ino)
{
	struct blob b = {0};
	shim_refresh_inodes();
	struct um_state one;
	const struct um_state *src = st;
	if (ino) {
		um_state_init(&one, st->pid);
		struct um_uffd *u = um_uffd_by_ino(st, ino);
		if (!u) {
			b.status = -ENOENT;
			return b;
		}
		if (!um_uffd_clone(&one, u)) {
			um_state_free(&one);
			b.status = -ENOMEM;
			return b;
		}
		src = &one;
	}
	b.size = um_serialize_size(src);
	b.p = um_zalloc(b.size);
	b.n = b.p ? um_serialize(src, b.p, b.size) : 0;
	if (!b.p)
		b.status = -ENOMEM;
	if (ino)
		um_state_free(&one);
	return b;
}

static bool send_blob(int fd, uint32_t op, struct blob *b)
{
	bool ok = b->status ? shim_ctl_reply(fd, op, b->status, NULL, 0)
			    : shim_ctl_reply(fd, op, 0, b->p, (uint32_t)b->n);
	um_free(b->p, b->size);
	return ok;
}

/* Serialize and send, when the lock is held for longer anyway (quiesced). */
static bool send_state(int fd, uint32_t op, const struct um_state *st, uint64_t ino)
{
	struct blob b = state_blob(st, ino);
	return send_blob(fd, op, &b);
}

/* The answer to a tracking request: header, ranges, runs. */
static bool send_track(int fd, uint32_t op, int rc, struct shim_track_out *o)
{
	if (rc < 0) {
		shim_track_out_free(o);
		return shim_ctl_reply(fd, op, rc, NULL, 0);
	}
	struct uctl_track_rep rep = {.epoch = o->epoch, .nranges = o->nranges, .nruns = o->nruns,
				     .monitor_pid = o->monitor, .async_fd = o->async_fd,
				     .wp_ns = o->wp_ns};
	uint64_t rl = (uint64_t)o->nranges * sizeof(*o->ranges);
	uint64_t ul = o->nruns * sizeof(*o->runs);
	uint64_t total = sizeof(rep) + rl + ul;
	bool ok = total < (1ull << 31);
	if (ok) {
		struct uctl_hdr h = {.magic = UCTL_REP_MAGIC, .version = UCTL_VERSION, .op = op,
				     .len = (uint32_t)total};
		ok = shim_ctl_io_all(fd, &h, sizeof(h), true) && shim_ctl_io_all(fd, &rep, sizeof(rep), true) &&
		     (!rl || shim_ctl_io_all(fd, o->ranges, rl, true)) && (!ul || shim_ctl_io_all(fd, o->runs, ul, true));
	} else {
		ok = shim_ctl_reply(fd, op, -E2BIG, NULL, 0);
	}
	shim_track_out_free(o);
	return ok;
}

/* A tracking request from peer (SO_PEERCRED pid). */
static bool serve_track(int fd, const struct uctl_hdr *h, const uint8_t *req, pid_t peer)
{
	struct shim_track_out o;
	memset(&o, 0, sizeof(o));
	switch (h->op) {
	case UCTL_TRACK_START: {
		struct uctl_track_req tr;
		if (h->len < sizeof(tr))
			return shim_ctl_reply(fd, h->op, -EINVAL, NULL, 0);
		memcpy(&tr, req, sizeof(tr));
		if (tr.nsel > UCTL_TRACK_MAX_SEL || h->len != sizeof(tr) + tr.nsel * 16u ||
		    (tr.flags & ~(UCTL_TRACK_AUGMENT | UCTL_TRACK_HOLD_ZAPS)))
			return shim_ctl_reply(fd, h->op, -EINVAL, NULL, 0);
		uint64_t sel[UCTL_TRACK_MAX_SEL][2];
		memcpy(sel, req + sizeof(tr), tr.nsel * 16u);
		return send_track(fd, h->op, shim_track_start(peer, (const uint64_t(*)[2])sel,
							      tr.nsel, tr.flags, &o), &o);
	}
	case UCTL_TRACK_CUT:
		return send_track(fd, h->op, shim_track_cut(peer, &o), &o);
	case UCTL_TRACK_INFO:
		return send_track(fd, h->op, shim_track_info(&o), &o);
	case UCTL_TRACK_READ_DONE:
		return shim_ctl_reply(fd, h->op, shim_track_read_done(peer), NULL, 0);
	default:
		return shim_ctl_reply(fd, h->op, shim_track_stop(peer), NULL, 0);
	}
}

/* One connection: requests until the peer closes or sends garbage.  Returns
 * true when the connection was handed to a monitor thread (not to close). */
static bool serve(int fd)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (RAW5(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 ||
	    cred.uid != (uid_t)RAW0(SYS_getuid)) {
		shim_ctl_reply(fd, 0, -EPERM, NULL, 0);
		return false;
	}
	struct timeval tv = {5, 0};
	RAW5(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	bool quiesced = false;
	for (;;) {
		struct uctl_hdr h;
		if (!shim_ctl_io_all(fd, &h, sizeof(h), false))
			break;
		if (h.magic != UCTL_REQ_MAGIC || h.version != UCTL_VERSION || h.len > UCTL_MAX_REQ) {
			shim_ctl_reply(fd, h.op, -EPROTO, NULL, 0);
			break;
		}
		uint8_t small[sizeof(struct uctl_track_req) + UCTL_TRACK_MAX_SEL * 16];
		/* No request of ours is longer than this: refuse before reading. */
		uint32_t max = h.op == UCTL_TRACK_START ? (uint32_t)sizeof(small) : 64;
		if (h.len > max) {
			shim_ctl_reply(fd, h.op, -EINVAL, NULL, 0);
			break;
		}
		if (h.len && !shim_ctl_io_all(fd, small, h.len, false))
			break;
		bool ok = true;
		switch (h.op) {
		case UCTL_PING: {
			struct uctl_ping p;
			memset(&p, 0, sizeof(p));
			p.pid = G.pid;
			shim_lock();
			p.nuffds = G.model.nuffds;
			shim_unlock();
			memcpy(p.shim_version, "uffdshim 0.1", 13);
			const char *tp = shim_trace_path();
			size_t tl = strlen(tp);
			if (tl < sizeof(p.trace_path))
				memcpy(p.trace_path, tp, tl);
			ok = shim_ctl_reply(fd, h.op, 0, &p, sizeof(p));
			break;
		}
		case UCTL_STATE:
		case UCTL_UFFD_BY_INO: {
			uint64_t ino = 0;
			if (h.op == UCTL_UFFD_BY_INO) {
				if (h.len != sizeof(ino)) {
					ok = shim_ctl_reply(fd, h.op, -EINVAL, NULL, 0) && false;
					break;
				}
				memcpy(&ino, small, sizeof(ino));
			}
			if (!quiesced)
				shim_lock();
			shim_shared_refresh_locked();
			struct blob b = state_blob(&G.model, ino);
			if (!quiesced)
				shim_unlock();
			ok = send_blob(fd, h.op, &b);
			break;
		}
		case UCTL_QUIESCE:
			if (quiesced) {
				ok = send_state(fd, h.op, &G.model, 0);
				break;
			}
			if (shim_quiesce(2000) < 0) {
				ok = shim_ctl_reply(fd, h.op, -ETIMEDOUT, NULL, 0);
				break;
			}
			quiesced = true;
			shim_shared_refresh_locked();
			ok = send_state(fd, h.op, &G.model, 0);
			break;
		case UCTL_RESUME:
			if (quiesced) {
				shim_resume();
				quiesced = false;
			}
			ok = shim_ctl_reply(fd, h.op, 0, NULL, 0);
			break;
		case UCTL_NEST_INFO: {
			static uint64_t sp[256][3], bells[16], forced[16], ghosts[16];
			struct uctl_nest_info ni = {0};
			if (!quiesced)
				shim_lock();
			ni.nspans = shim_nest_spans_locked(sp, 256, bells, &ni.nbells, forced,
							   &ni.nforced, ghosts, &ni.nghosts);
			if (!quiesced)
				shim_unlock();
			static uint8_t out[sizeof(ni) + sizeof(sp) + sizeof(bells) + sizeof(forced) +
					   sizeof(ghosts)];
			size_t off = 0;
			memcpy(out, &ni, sizeof(ni));
			off += sizeof(ni);
			memcpy(out + off, sp, ni.nspans * 24u);
			off += ni.nspans * 24u;
			memcpy(out + off, bells, ni.nbells * 8u);
			off += ni.nbells * 8u;
			memcpy(out + off, forced, ni.nforced * 8u);
			off += ni.nforced * 8u;
			memcpy(out + off, ghosts, ni.nghosts * 8u);
			off += ni.nghosts * 8u;
			ok = shim_ctl_reply(fd, h.op, 0, out, (uint32_t)off);
			break;
		}
		case UCTL_MON_OPEN:
			if (quiesced) {
				ok = shim_ctl_reply(fd, h.op, -EBUSY, NULL, 0);
				break;
			}
			return shim_monitor_serve(fd, cred.pid, small, h.len);
		case UCTL_TRACK_START:
		case UCTL_TRACK_CUT:
		case UCTL_TRACK_STOP:
		case UCTL_TRACK_INFO:
		case UCTL_TRACK_READ_DONE:
			if (quiesced) { /* the app's uffd calls are held: no kernel
					 * calls of ours in between */
				ok = shim_ctl_reply(fd, h.op, -EBUSY, NULL, 0);
				break;
			}
			ok = serve_track(fd, &h, small, cred.pid);
			break;
		default:
			shim_ctl_reply(fd, h.op, -EINVAL, NULL, 0);
			ok = false;
		}
		if (!ok)
			break;
	}
	if (quiesced) {
		/* After a restore by CRIU this is where the shim wakes up: the
		 * connection of the dump is gone.  Re-read the uffds' inodes before
		 * the app's operations go on. */
		shim_refresh_inodes();
		shim_resume(); /* a dump tool that dies must not leave the app frozen */
	}
	return false;
}

static void *ctl_thread(void *arg)
{
	(void)arg;
	for (;;) {
		/* Wait in poll, not in accept: a blocked accept4 reserves the
		 * lowest free fd number, which would shift the app's fds. */
		/* A 1 s timeout: if the app dup2()s onto our number, the socket
		 * moves (shim_fd_make_room) and the next round polls it there. */
		int lfd = __atomic_load_n(&listen_fd, __ATOMIC_ACQUIRE);
		/* The monitor of dirty tracking, if any: when it exits, every
		 * page it had protected is given back. */
		struct pollfd pfd[2] = {{.fd = lfd, .events = POLLIN},
					{.fd = shim_track_monitor_pidfd(), .events = POLLIN}};
		long pr = RAW3(SYS_poll, pfd, pfd[1].fd >= 0 ? 2 : 1, 1000);
		if (pr < 0 && pr != -EINTR)
			break;
		if (pr > 0 && pfd[1].fd >= 0 && (pfd[1].revents & (POLLIN | POLLHUP | POLLNVAL))) {
			shim_track_stop(0);
			shim_log("dirty tracking: the monitor exited; pages released");
			if (!(pfd[0].revents & (POLLIN | POLLNVAL)))
				continue;
		}
		if (pr <= 0)
			continue;
		if (pfd[0].revents & POLLNVAL) { /* closed behind our back: reopen */
			shim_fd_set(lfd, FD_NONE);
			if (!ctl_listen())
				break;
			continue;
		}
		int c = (int)RAW4(SYS_accept4, lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (c == -EAGAIN)
			continue;
		if (c >= 0) { /* keep it out of the app's low fd numbers */
			c = shim_fd_hide(c, NULL);
			RAW3(SYS_fcntl, c, F_SETFL, 0); /* blocking, with SO_RCVTIMEO */
		}
		if (c < 0) {
			if (c == -EINTR || c == -ECONNABORTED || c == -EMFILE || c == -ENFILE) {
				struct timespec ts = {0, 10 * 1000 * 1000};
				if (c != -EINTR)
					RAW2(SYS_nanosleep, &ts, NULL);
				continue;
			}
			break;
		}
		if (serve(c))
			continue; /* a monitor's thread has it now */
		shim_fd_set(c, FD_NONE);
		RAW1(SYS_close, c);
	}
	return NULL;
}

/* Open, bind and listen on the control socket; false on failure. */
static bool ctl_listen(void)
{
	int fd = (int)RAW3(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un a;
	socklen_t al = ctl_addr(G.pid, &a);
	if (RAW3(SYS_bind, fd, &a, al) < 0 || RAW2(SYS_listen, fd, 8) < 0) {
		RAW1(SYS_close, fd);
		shim_log("control socket: bind/listen failed");
		return false;
	}
	shim_fd_hide(fd, &listen_fd);
	return true;
}

static void ctl_start(void)
{
	if (!ctl_listen())
		return;
	if (shim_thread_start(ctl_thread, NULL, 256 * 1024) != 0)
		shim_log("control thread: pthread_create failed");
}

void shim_ctl_ensure(void)
{
	int expected = 0;
	if (!__atomic_compare_exchange_n(&ctl_started, &expected, 1, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		return;
	int err = errno;
	ctl_start();
	errno = err;
}

void shim_ctl_after_fork_child(void)
{
	/* The thread did not survive fork; the socket is the parent's name. */
	if (listen_fd >= 0) {
		shim_fd_set(listen_fd, FD_NONE);
		RAW1(SYS_close, listen_fd);
		listen_fd = -1;
	}
	ctl_started = 0;
	if (G.model.nuffds || G.control_always)
		shim_ctl_ensure();
}

int shim_ctl_import(pid_t pid, uint64_t ino, struct um_uffd *into)
{
	int fd = (int)RAW3(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {0, 300 * 1000};
	RAW5(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	RAW5(SYS_setsockopt, fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_un a;
	socklen_t al = ctl_addr(pid, &a);
	int rc = -1;
	void *blob = NULL;
	uint32_t blen = 0;
	struct uctl_hdr h = {.magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION,
			     .op = UCTL_UFFD_BY_INO, .len = sizeof(ino)};
	if (RAW3(SYS_connect, fd, &a, al) < 0 || !shim_ctl_io_all(fd, &h, sizeof(h), true) ||
	    !shim_ctl_io_all(fd, &ino, sizeof(ino), true) || !shim_ctl_io_all(fd, &h, sizeof(h), false) ||
	    h.magic != UCTL_REP_MAGIC || h.status != 0 || h.len == 0 || h.len > (64u << 20))
		goto out;
	blen = h.len;
	blob = um_zalloc(blen);
	if (!blob || !shim_ctl_io_all(fd, blob, blen, false))
		goto out;
	struct um_state st;
	char err[160];
	if (um_deserialize(&st, blob, blen, err, sizeof(err)) < 0 || st.nuffds != 1) {
		if (st.nuffds != 1)
			um_state_free(&st);
		goto out;
	}
	/* Take its API state, registrations and protections; keep our fds. */
	struct um_uffd *src = st.uffds[0];
	into->create_flags = src->create_flags;
	into->mm_pid = src->mm_pid;
	into->api_done = src->api_done;
	into->features_requested = src->features_requested;
	into->features = src->features;
	into->ioctls = src->ioctls;
	into->wp_async = src->wp_async;
	for (uint32_t k = 0; k < src->nranges; k++)
		um_register(into, src->ranges[k].start, src->ranges[k].end, src->ranges[k].modes,
			    src->ranges[k].ioctls, &src->ranges[k].map, 1);
	um_wp_free(&into->wp);
	um_wp_copy(&into->wp, &src->wp);
	um_state_free(&st);
	rc = 0;
out:
	um_free(blob, blen);
	RAW1(SYS_close, fd);
	return rc;
}
