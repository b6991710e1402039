/* shim_wrap_fd.c - the exported wrappers around fd calls: creation
 * (syscall, open*), ioctl, read, close, dup*, fcntl.  Each falls through to
 * the real function at the cost of one table load unless the fd is a uffd. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "trace_format.h"
#include "uffd_compat.h"

#define ENSURE_INIT()                   \
	do {                            \
		if (unlikely(!real.ioctl)) \
			shim_init();    \
	} while (0)

long syscall(long nr, ...)
{
	va_list ap;
	va_start(ap, nr);
	long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
	long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
	va_end(ap);
	ENSURE_INIT();
	long ret = real.syscall(nr, a1, a2, a3, a4, a5, a6);
	if (unlikely(nr == SYS_userfaultfd) && ret >= 0) {
		int err = errno;
		shim_track_new((int)ret, UM_ORIGIN_SYSCALL, (uint32_t)a1, G.pid);
		errno = err;
	}
	return ret;
}

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ENSURE_INIT();
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return real.ioctl(fd, req, arg);
	if (kind < 0)
		kind = shim_fd_kind_slow(fd);
	if (kind == FD_UFFD)
		return (int)shim_uffd_ioctl(fd, req, arg);
	if (kind == FD_DEVUFFD)
		return (int)shim_devuffd_ioctl(fd, req, arg);
	return real.ioctl(fd, req, arg);
}

/* ---- open of /dev/userfaultfd ---- */
static int opened(int fd, const char *path)
{
	if (fd >= 0 && path) {
		int err = errno;
		shim_note_open(fd, path);
		errno = err;
	}
	return fd;
}

#define OPEN_MODE(flags, mode)                               \
	mode_t mode = 0;                                     \
	if ((flags) & (O_CREAT | __O_TMPFILE)) {             \
		va_list ap;                                  \
		va_start(ap, flags);                         \
		mode = (mode_t)va_arg(ap, int);              \
		va_end(ap);                                  \
	}

int open(const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	ENSURE_INIT();
	return opened(real.open(path, flags, mode), path);
}

int open64(const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	ENSURE_INIT();
	return opened(real.open64(path, flags, mode), path);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	ENSURE_INIT();
	return opened(real.openat(dirfd, path, flags, mode), path);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	OPEN_MODE(flags, mode);
	ENSURE_INIT();
	return opened(real.openat64(dirfd, path, flags, mode), path);
}

int __open_2(const char *path, int flags)
{
	ENSURE_INIT();
	return opened(real.open_2(path, flags), path);
}

int __open64_2(const char *path, int flags)
{
	ENSURE_INIT();
	return opened(real.open64_2(path, flags), path);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	ENSURE_INIT();
	return opened(real.openat_2(dirfd, path, flags), path);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	ENSURE_INIT();
	return opened(real.openat64_2(dirfd, path, flags), path);
}

/* ---- read ---- */
static ssize_t after_read(int fd, const void *buf, ssize_t r)
{
	if (r >= (ssize_t)sizeof(struct uffd_msg)) {
		int err = errno;
		shim_note_msgs(fd, buf, r);
		errno = err;
	}
	return r;
}

ssize_t read(int fd, void *buf, size_t n)
{
	ENSURE_INIT();
	if (likely(shim_fd_kind(fd) == FD_NONE))
		return real.read(fd, buf, n);
	ssize_t r = real.read(fd, buf, n);
	if (shim_fd_kind(fd) == FD_UFFD || shim_fd_kind_slow(fd) == FD_UFFD)
		return after_read(fd, buf, r);
	return r;
}

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	ENSURE_INIT();
	if (likely(shim_fd_kind(fd) == FD_NONE))
		return real.read_chk(fd, buf, n, buflen);
	ssize_t r = real.read_chk(fd, buf, n, buflen);
	if (shim_fd_kind(fd) == FD_UFFD || shim_fd_kind_slow(fd) == FD_UFFD)
		return after_read(fd, buf, r);
	return r;
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	ENSURE_INIT();
	if (likely(shim_fd_kind(fd) == FD_NONE))
		return real.readv(fd, iov, iovcnt);
	ssize_t r = real.readv(fd, iov, iovcnt);
	if (r < (ssize_t)sizeof(struct uffd_msg) || shim_fd_kind(fd) != FD_UFFD)
		return r;
	/* Gather the messages (they may straddle iovecs). */
	struct uffd_msg msgs[32];
	size_t want = (size_t)r < sizeof(msgs) ? (size_t)r : sizeof(msgs), got = 0;
	for (int i = 0; i < iovcnt && got < want; i++) {
		size_t n = iov[i].iov_len < want - got ? iov[i].iov_len : want - got;
		memcpy((char *)msgs + got, iov[i].iov_base, n);
		got += n;
	}
	int err = errno;
	shim_note_msgs(fd, msgs, (ssize_t)got);
	errno = err;
	return r;
}

/* ---- close / dup / fcntl ---- */

/* fd is gone from this process: drop it (and its uffd if it was the last).
 * Called with the model lock held. */
static void fd_gone_locked(int fd)
{
	uint64_t ino = 0;
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	if (u) {
		ino = u->ino;
		struct um_uffd *last = um_fd_close(&G.model, fd);
		if (last) {
			um_uffd_remove(&G.model, last);
			shim_update_own_ranges();
		}
	}
	shim_fd_set(fd, FD_NONE);
	if (shim_tracing && ino)
		shim_trace(UT_CLOSE, fd, ino, 0, 0, 0, 0, 0, 0);
}

int close(int fd)
{
	ENSURE_INIT();
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return real.close(fd);
	if (kind == FD_INTERNAL)
		return 0; /* the shim's own fd: a close-everything loop must not break it */
	/* The lock spans the real close so that no other thread can be handed
	 * this fd number for a new uffd before the model forgets the old one. */
	shim_gate_enter();
	bool locked = shim_model_enter();
	int r = real.close(fd);
	int err = errno;
	if (locked) {
		if (r == 0 || err != EBADF) /* released even on EINTR/EIO */
			fd_gone_locked(fd);
		shim_unlock();
	}
	shim_gate_leave();
	errno = err;
	return r;
}

/* newfd now refers to the same file as oldfd (what it referred to before was
 * closed).  Called with the model lock held. */
static void fd_dup_locked(int oldfd, int newfd, bool cloexec)
{
	if (shim_fd_kind(newfd) != FD_NONE && newfd != oldfd)
		fd_gone_locked(newfd);
	int kind = shim_fd_kind(oldfd);
	if (kind == FD_DEVUFFD) {
		shim_fd_set(newfd, FD_DEVUFFD);
		return;
	}
	if (kind == FD_NONE)
		return;
	struct um_uffd *u = um_uffd_by_fd(&G.model, oldfd);
	uint64_t ino = 0;
	if (u) {
		um_fd_add(u, newfd, cloexec);
		ino = u->ino;
		shim_fd_set(newfd, FD_UFFD);
	}
	if (shim_tracing && ino)
		shim_trace(UT_DUP, oldfd, ino, newfd, (uint64_t)newfd, cloexec, 0, 0, 0);
}

int dup(int fd)
{
	ENSURE_INIT();
	if (likely(shim_fd_kind(fd) == FD_NONE))
		return real.dup(fd);
	bool locked = shim_model_enter();
	int r = real.dup(fd);
	int err = errno;
	if (locked) {
		if (r >= 0)
			fd_dup_locked(fd, r, false);
		shim_unlock();
	}
	errno = err;
	return r;
}

int dup2(int oldfd, int newfd)
{
	ENSURE_INIT();
	if (likely(shim_fd_kind(oldfd) == FD_NONE && shim_fd_kind(newfd) == FD_NONE))
		return real.dup2(oldfd, newfd);
	bool locked = shim_model_enter();
	int r = real.dup2(oldfd, newfd);
	int err = errno;
	if (locked) {
		if (r >= 0 && oldfd != newfd)
			fd_dup_locked(oldfd, newfd, false);
		shim_unlock();
	}
	errno = err;
	return r;
}

int dup3(int oldfd, int newfd, int flags)
{
	ENSURE_INIT();
	if (likely(shim_fd_kind(oldfd) == FD_NONE && shim_fd_kind(newfd) == FD_NONE))
		return real.dup3(oldfd, newfd, flags);
	bool locked = shim_model_enter();
	int r = real.dup3(oldfd, newfd, flags);
	int err = errno;
	if (locked) {
		if (r >= 0)
			fd_dup_locked(oldfd, newfd, flags & O_CLOEXEC);
		shim_unlock();
	}
	errno = err;
	return r;
}

static int fcntl_common(int (*fn)(int, int, ...), int fd, int cmd, void *arg)
{
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return fn(fd, cmd, arg);
	if (kind == FD_INTERNAL)
		return fn(fd, cmd, arg);
	bool locked = shim_model_enter();
	int r = fn(fd, cmd, arg);
	int err = errno;
	if (!locked)
		return r;
	long v = (long)arg;
	struct um_uffd *u = r >= 0 && kind == FD_UFFD ? um_uffd_by_fd(&G.model, fd) : NULL;
	switch (r >= 0 ? cmd : -1) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		fd_dup_locked(fd, r, cmd == F_DUPFD_CLOEXEC);
		break;
	case F_SETFD:
		if (u)
			um_fd_set_cloexec(u, fd, v & FD_CLOEXEC);
		break;
	case F_SETFL:
		if (u)
			u->file_flags = (uint32_t)(v & O_NONBLOCK);
		break;
	}
	shim_unlock();
	errno = err;
	return r;
}

int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ENSURE_INIT();
	return fcntl_common(real.fcntl, fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ENSURE_INIT();
	return fcntl_common(real.fcntl64, fd, cmd, arg);
}
