/* shim_wrap_scm.c - a uffd passed to another process with SCM_RIGHTS (a
 * Firecracker-style page-fault handler).  The receiver learns whose memory
 * the uffd serves from SO_PEERCRED and takes the sender's model of it. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"
#include "trace_format.h"

#define ENSURE_INIT()                     \
	do {                              \
		if (unlikely(!real.sendmsg)) \
			shim_init();      \
	} while (0)

static pid_t peer_pid(int sock)
{
	struct ucred c;
	socklen_t l = sizeof(c);
	if (RAW5(SYS_getsockopt, sock, SOL_SOCKET, SO_PEERCRED, &c, &l) < 0)
		return 0;
	return c.pid;
}

static bool is_uffd_file(int fd, uint64_t *ino)
{
	struct stat st;
	if (RAW2(SYS_fstat, fd, &st) < 0 || (st.st_mode & S_IFMT) != 0)
		return false; /* anon inodes have no file type bits */
	char path[40] = "/proc/self/fd/", link[64];
	shim_utoa((uint64_t)fd, path + 14);
	long n = RAW4(SYS_readlinkat, AT_FDCWD, path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = 0;
	*ino = st.st_ino;
	return strcmp(link, "anon_inode:[userfaultfd]") == 0;
}

/* Features of a uffd from /proc/self/fdinfo ("API:\taa:<features|bit31>:<ioctls>"),
 * for a uffd whose sender has no shim to ask. */
static bool fdinfo_api(int fd, uint64_t *features, uint64_t *ioctls)
{
	char path[48] = "/proc/self/fdinfo/", buf[512];
	shim_utoa((uint64_t)fd, path + 18);
	int f = (int)RAW4(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	if (f < 0)
		return false;
	long n = RAW3(SYS_read, f, buf, sizeof(buf) - 1);
	RAW1(SYS_close, f);
	if (n <= 0)
		return false;
	buf[n] = 0;
	char *p = strstr(buf, "API:");
	if (!p || !(p = strchr(p, ':')) || !(p = strchr(p + 1, ':')))
		return false;
	uint64_t v[2] = {0, 0};
	for (int k = 0; k < 2; k++) {
		p++;
		for (;; p++) {
			char c = *p;
			int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
			if (d < 0)
				break;
			v[k] = v[k] * 16 + (uint64_t)d;
		}
		if (k == 0 && *p != ':')
			return false;
	}
	if (!(v[0] & 0x80000000ULL))
		return false; /* UFFDIO_API not done yet */
	*features = v[0] & ~0x80000000ULL;
	*ioctls = v[1];
	return true;
}

bool shim_ino_sent_locked(uint64_t ino)
{
	for (uint32_t k = 0; k < G.nshared; k++)
		if (G.shared_inos[k] == ino)
			return true;
	return false;
}

/* Before a uffd leaves: dirty tracking's WP bits on it go (a WP fault of
 * ours must not be read by the receiver, whose shim knows nothing of them;
 * done first, so none is queued when the receiver can read). */
static void before_send(const struct msghdr *msg)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int *fds = (int *)CMSG_DATA(c);
		for (int i = 0; i < n; i++)
			if (shim_fd_kind(fds[i]) == FD_UFFD && shim_model_enter()) {
				struct um_uffd *u = um_uffd_by_fd(&G.model, fds[i]);
				if (u)
					shim_track_sent_away_locked(u->id);
				shim_unlock();
			}
	}
}

ssize_t sendmsg(int sock, const struct msghdr *msg, int flags)
{
	ENSURE_INIT();
	if (msg && msg->msg_controllen >= sizeof(struct cmsghdr) && shim_track_active()) {
		int err = errno;
		before_send(msg);
		errno = err;
	}
	ssize_t r = real.sendmsg(sock, msg, flags);
	if (r < 0 || !msg || !msg->msg_controllen)
		return r;
	int err = errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int *fds = (int *)CMSG_DATA(c);
		for (int i = 0; i < n; i++) {
			if (shim_fd_kind(fds[i]) != FD_UFFD)
				continue;
			/* The receiver can change this uffd's state on our memory. */
			if (shim_model_enter()) {
				struct um_uffd *u = um_uffd_by_fd(&G.model, fds[i]);
				if (u && u->mm_pid == G.pid && !shim_ino_sent_locked(u->ino) &&
				    G.nshared < 32)
					G.shared_inos[G.nshared++] = u->ino;
				shim_unlock();
			}
			if (shim_tracing)
				shim_trace(UT_SEND, fds[i], 0, 0, (uint64_t)peer_pid(sock), 0, 0, 0, 0);
		}
	}
	errno = err;
	return r;
}

ssize_t recvmsg(int sock, struct msghdr *msg, int flags)
{
	ENSURE_INIT();
	ssize_t r = real.recvmsg(sock, msg, flags);
	if (r < 0 || !msg || !msg->msg_controllen || msg->msg_controllen < sizeof(struct cmsghdr))
		return r;
	int err = errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int *fds = (int *)CMSG_DATA(c);
		for (int i = 0; i < n; i++) {
			uint64_t ino;
			if (!is_uffd_file(fds[i], &ino))
				continue;
			pid_t peer = peer_pid(sock);
			uint32_t fl = (flags & MSG_CMSG_CLOEXEC) ? O_CLOEXEC : 0;
			long st = RAW2(SYS_fcntl, fds[i], F_GETFL);
			if (st >= 0)
				fl |= (uint32_t)st & O_NONBLOCK;
			/* Ask the sender's shim for what it knows of this uffd. */
			struct um_uffd tmp;
			memset(&tmp, 0, sizeof(tmp));
			bool imported = peer > 0 && shim_ctl_import(peer, ino, &tmp) == 0;
			struct um_uffd *u = shim_track_new(fds[i], UM_ORIGIN_RECEIVED, fl,
							   imported && tmp.mm_pid ? tmp.mm_pid : peer);
			uint64_t ff, fi;
			if (u && !imported && fdinfo_api(fds[i], &ff, &fi) && shim_model_enter()) {
				u->api_done = 1;
				u->features_requested = ff;
				(void)fi; /* fdinfo's ioctl mask is not UFFDIO_API's answer */
				shim_unlock();
			}
			if (u && imported && shim_model_enter()) {
				u->api_done = tmp.api_done;
				u->features_requested = tmp.features_requested;
				u->features = tmp.features;
				u->ioctls = tmp.ioctls;
				u->wp_async = tmp.wp_async;
				for (uint32_t k = 0; k < tmp.nranges; k++)
					um_register(u, tmp.ranges[k].start, tmp.ranges[k].end,
						    tmp.ranges[k].modes, tmp.ranges[k].ioctls,
						    &tmp.ranges[k].map, 1);
				um_wp_free(&u->wp);
				u->wp = tmp.wp;
				tmp.wp.chunks = NULL;
				shim_unlock();
			}
			um_free(tmp.ranges, (size_t)tmp.cap_ranges * sizeof(*tmp.ranges));
			um_wp_free(&tmp.wp);
			if (shim_tracing)
				shim_trace(UT_RECV, fds[i], ino, 0, (uint64_t)peer, imported, 0, 0, 0);
		}
	}
	errno = err;
	return r;
}

void shim_shared_refresh_locked(void)
{
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *u = G.model.uffds[i];
		bool shared = false;
		for (uint32_t k = 0; k < G.nshared; k++)
			shared |= G.shared_inos[k] == u->ino;
		if (!shared || u->mm_pid != G.pid)
			continue;
		for (uint32_t k = 0; k < u->nranges; k++)
			shim_wp_readback(u, u->ranges[k].start, u->ranges[k].end - u->ranges[k].start);
	}
}
