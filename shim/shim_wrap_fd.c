/* shim_wrap_fd.c - the exported wrappers around fd calls: creation
 * (syscall, open*), ioctl, read, close, dup*, fcntl.  Each falls through to
 * the real function at the cost of one table load unless the fd is a uffd. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/mman.h>

#include "shim.h"
#include "shim_raw.h"
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
	/* fd and memory calls made through syscall() reach the same wrappers as
	 * their libc functions (same return and errno convention). */
	switch (nr) {
	case SYS_ioctl: return ioctl((int)a1, (unsigned long)a2, (void *)a3);
	case SYS_read: return read((int)a1, (void *)a2, (size_t)a3);
	case SYS_close: return close((int)a1);
	case SYS_dup: return dup((int)a1);
	case SYS_dup2: return dup2((int)a1, (int)a2);
	case SYS_dup3: return dup3((int)a1, (int)a2, (int)a3);
	case SYS_fcntl: return fcntl((int)a1, (int)a2, (void *)a3);
	case SYS_close_range: return close_range((unsigned)a1, (unsigned)a2, (int)a3);
	case SYS_munmap: return munmap((void *)a1, (size_t)a2);
	case SYS_madvise: return madvise((void *)a1, (size_t)a2, (int)a3);
	case SYS_mremap: return (long)mremap((void *)a1, (size_t)a2, (size_t)a3, (int)a4, (void *)a5);
	default: break;
	}
	long ret = real.syscall(nr, a1, a2, a3, a4, a5, a6);
	if (unlikely(nr == SYS_userfaultfd) && ret >= 0) {
		int err = errno;
		shim_track_new((int)ret, UM_ORIGIN_SYSCALL, (uint32_t)a1, G.pid);
		errno = err;
	}
	return ret;
}

/* Is fd the userfaultfd misc device (same device number as /dev/userfaultfd)? */
static bool is_devuffd(int fd)
{
	static dev_t rdev; /* 0: not known yet */
	struct stat st;
	if (!rdev && RAW2(SYS_stat, "/dev/userfaultfd", &st) == 0 && S_ISCHR(st.st_mode))
		rdev = st.st_rdev;
	return rdev && RAW2(SYS_fstat, fd, &st) == 0 && S_ISCHR(st.st_mode) &&
	       st.st_rdev == rdev;
}

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ENSURE_INIT();
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE)) {
		/* /dev/userfaultfd however it was opened (a path not ending in
		 * "userfaultfd", /proc/self/fd/N, fopen, a passed fd) */
		if (unlikely(req == USERFAULTFD_IOC_NEW) && is_devuffd(fd)) {
			shim_fd_set(fd, FD_DEVUFFD);
			return (int)shim_devuffd_ioctl(fd, req, arg);
		}
		return real.ioctl(fd, req, arg);
	}
	if (kind < 0)
		kind = shim_fd_kind_slow(fd);
	if (kind == FD_UFFD)
		return (int)shim_uffd_ioctl(fd, req, arg);
	if (kind == FD_DEVUFFD)
		return (int)shim_devuffd_ioctl(fd, req, arg);
	errno = EBADF; /* an internal fd of the shim */
	return -1;
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

static void fd_gone_locked(int fd);

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

/* A read of a non-blocking uffd passes the quiesce gate, so a dump never
 * happens between the kernel handing a message over and the model recording
 * it.  A blocking read cannot hold the gate while it waits; its message is
 * recorded as soon as the gate opens again. */
static bool uffd_nonblocking(int fd)
{
	if (!shim_model_enter())
		return false;
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	bool nb = u && (u->file_flags & O_NONBLOCK);
	shim_unlock();
	return nb;
}

/* The shim's own read of a uffd it serves (an external monitor's): the same
 * routing and recording as the app's read(), on a non-blocking fd. */
ssize_t shim_read_uffd_internal(int fd, void *buf, size_t n)
{
	shim_gate_enter();
	ssize_t r = real.read(fd, buf, n);
	ssize_t kept = r > 0 ? shim_nest_filter(fd, buf, r, n) : r;
	kept = kept > 0 ? shim_track_filter(fd, buf, kept) : kept;
	after_read(fd, buf, kept);
	shim_gate_leave();
	return kept;
}

/* Close a uffd fd of the shim's own (a monitor's) like the app's close. */
/* fd (a uffd) is about to be closed, or replaced by dup2/dup3: nesting may
 * keep its file for other clients, and the pump's poll must not hold it.
 * Called with the model lock held. */
static void uffd_closing_locked(int fd)
{
	shim_nest_before_close_locked(fd);
	shim_pump_release_fd(fd);
}

void shim_close_uffd_internal(int fd)
{
	shim_gate_enter();
	shim_lock();
	uffd_closing_locked(fd);
	real.close(fd);
	fd_gone_locked(fd);
	shim_unlock();
	shim_gate_leave();
}

/* One read of fd for the app: what nesting queued for it (docs/design.md
 * "Nesting"), else the kernel's messages, routed and filtered.  *raw: what
 * the source gave (< 0: error, errno set). */
static ssize_t read_once(int fd, void *buf, size_t n, size_t buflen, bool chk, ssize_t *raw)
{
	ssize_t kept = shim_nest_take(fd, buf, n);
	if (kept > 0) {
		*raw = kept;
	} else {
		ssize_t r = chk ? real.read_chk(fd, buf, n, buflen) : real.read(fd, buf, n);
		*raw = r;
		kept = r > 0 ? shim_nest_filter(fd, buf, r, n) : r;
	}
	kept = kept > 0 ? shim_track_filter(fd, buf, kept) : kept;
	after_read(fd, buf, kept);
	return kept;
}

/* The uffd this thread last waited for in shim_nest_park(): its next read
 * waits there first, without a read() that would only say EAGAIN. */
static __thread int tls_park_fd __attribute__((tls_model("initial-exec"))) = -1;

/* Wait in shim_nest_park() for fd's next message.  false: the read is
 * interrupted (errno EINTR). */
static bool park(int fd)
{
	tls_park_fd = fd;
	int p = shim_nest_park(fd);
	if (p > 0) /* the file is blocking again: the kernel's read() waits */
		tls_park_fd = -1;
	return p >= 0;
}

static ssize_t read_uffd(int fd, void *buf, size_t n, size_t buflen, bool chk)
{
	bool gated = uffd_nonblocking(fd);
	if (!gated && tls_park_fd == fd && !park(fd))
		return -1;
	for (;;) {
		if (gated)
			shim_gate_enter();
		ssize_t raw, kept = read_once(fd, buf, n, buflen, chk, &raw);
		int err = errno;
		if (gated)
			shim_gate_leave();
		if (raw < 0 && err == EAGAIN && !gated) {
			/* The app's view is blocking but the file is not:
			 * nesting made it non-blocking so that a read waits
			 * for the kernel and for the inbox at once. */
			if (!park(fd))
				return -1;
			continue;
		}
		errno = err;
		if (kept != 0 || raw <= 0)
			return kept;
		/* Every message was routed elsewhere (nesting) or was a WP
		 * fault of dirty tracking: the app saw nothing.  A blocking
		 * read waits for the next one. */
		if (gated) {
			errno = EAGAIN;
			return -1;
		}
		if (tls_park_fd == fd && !park(fd))
			return -1;
	}
}

ssize_t read(int fd, void *buf, size_t n)
{
	ENSURE_INIT();
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return real.read(fd, buf, n);
	if (kind < 0)
		kind = shim_fd_kind_slow(fd);
	if (kind == FD_UFFD)
		return read_uffd(fd, buf, n, 0, false);
	if (kind == FD_INTERNAL) {
		errno = EBADF;
		return -1;
	}
	return real.read(fd, buf, n);
}

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	ENSURE_INIT();
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return real.read_chk(fd, buf, n, buflen);
	if (kind < 0)
		kind = shim_fd_kind_slow(fd);
	if (kind == FD_UFFD)
		return read_uffd(fd, buf, n, buflen, true);
	if (kind == FD_INTERNAL) {
		errno = EBADF;
		return -1;
	}
	return real.read_chk(fd, buf, n, buflen);
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	ENSURE_INIT();
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return real.readv(fd, iov, iovcnt);
	if (kind < 0)
		kind = shim_fd_kind_slow(fd);
	if (kind != FD_UFFD || iovcnt < 0)
		return real.readv(fd, iov, iovcnt);
	/* Messages through read()'s path (routing, filtering, the model), then
	 * scattered over the iovecs. */
	struct uffd_msg msgs[32];
	size_t want = 0;
	for (int i = 0; i < iovcnt && want < sizeof(msgs); i++)
		want += iov[i].iov_len;
	if (want > sizeof(msgs))
		want = sizeof(msgs);
	if (want < sizeof(struct uffd_msg)) /* the kernel's answer (EINVAL) */
		return real.readv(fd, iov, iovcnt);
	ssize_t r = read_uffd(fd, msgs, want, 0, false);
	if (r <= 0)
		return r;
	/* Scattered by the kernel (a bad iov_base is EFAULT, as for readv). */
	struct iovec local = {msgs, (size_t)r};
	if (RAW6(SYS_process_vm_writev, RAW0(SYS_getpid), &local, 1, iov,
		 iovcnt < IOV_MAX ? iovcnt : IOV_MAX, 0) != r) {
		errno = EFAULT;
		return -1;
	}
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
			uint32_t id = last->id;
			um_uffd_remove(&G.model, last);
			if (__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
				shim_nest_carrier_gone_locked(id);
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
	if (kind == FD_INTERNAL) { /* the shim's own fd: to the app it does not exist */
		errno = EBADF;
		return -1;
	}
	/* The lock spans the real close so that no other thread can be handed
	 * this fd number for a new uffd before the model forgets the old one. */
	if (shim_in_vm_sharing_child())
		return real.close(fd);
	shim_gate_enter();
	bool locked = shim_model_enter();
	if (locked && kind == FD_UFFD)
		uffd_closing_locked(fd);
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
	int kind = shim_fd_kind(fd);
	if (likely(kind == FD_NONE))
		return real.dup(fd);
	if (kind == FD_INTERNAL) {
		errno = EBADF;
		return -1;
	}
	if (shim_in_vm_sharing_child())
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
	if (shim_fd_kind(oldfd) == FD_INTERNAL) {
		errno = EBADF;
		return -1;
	}
	if (shim_fd_kind(newfd) == FD_INTERNAL)
		shim_fd_make_room(newfd);
	if (shim_in_vm_sharing_child())
		return real.dup2(oldfd, newfd);
	bool locked = shim_model_enter();
	if (locked && oldfd != newfd && shim_fd_kind(newfd) == FD_UFFD)
		uffd_closing_locked(newfd);
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
	if (shim_fd_kind(oldfd) == FD_INTERNAL) {
		errno = EBADF;
		return -1;
	}
	if (shim_fd_kind(newfd) == FD_INTERNAL)
		shim_fd_make_room(newfd);
	if (shim_in_vm_sharing_child())
		return real.dup3(oldfd, newfd, flags);
	bool locked = shim_model_enter();
	if (locked && oldfd != newfd && shim_fd_kind(newfd) == FD_UFFD)
		uffd_closing_locked(newfd);
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
	if (kind == FD_INTERNAL) {
		errno = EBADF;
		return -1;
	}
	if (shim_in_vm_sharing_child())
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
		if (u) {
			u->file_flags = (uint32_t)(v & O_NONBLOCK);
			shim_nest_reforce_locked(fd);
		}
		break;
	case F_GETFL: /* the app's view, where nesting made the file non-blocking */
		if (u && !(u->file_flags & O_NONBLOCK))
			r &= ~O_NONBLOCK;
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

/* close_range and closefrom: the shim's own fds in the range stay open (to
 * the app they do not exist); the uffd fds in it leave the model. */
int close_range(unsigned int first, unsigned int last, int flags)
{
	ENSURE_INIT();
	long r = 0;
	if (!(flags & CLOSE_RANGE_CLOEXEC) && __atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) &&
	    !shim_in_vm_sharing_child() && shim_model_enter()) {
		unsigned top = last < SHIM_FDTAB_MAX ? last : SHIM_FDTAB_MAX - 1;
		for (unsigned fd = first; fd <= top; fd++)
			if (shim_fd_kind((int)fd) == FD_UFFD)
				uffd_closing_locked((int)fd);
		shim_unlock();
	}
	if (flags & CLOSE_RANGE_CLOEXEC) {
		r = RAW3(SYS_close_range, first, last, flags);
	} else {
		/* Close around the internal fds, in pieces. */
		unsigned a = first;
		while (r == 0 && a <= last) {
			unsigned b = a;
			while (b < last && b + 1 < SHIM_FDTAB_MAX && shim_fd_kind((int)b) != FD_INTERNAL)
				b++;
			if (shim_fd_kind((int)b) == FD_INTERNAL) {
				if (b > a)
					r = RAW3(SYS_close_range, a, b - 1, flags);
			} else {
				r = RAW3(SYS_close_range, a, last, flags);
				break;
			}
			if (b == last)
				break;
			a = b + 1;
		}
	}
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	int err = errno;
	if (!shim_in_vm_sharing_child() && shim_model_enter()) {
		unsigned top = last < SHIM_FDTAB_MAX ? last : SHIM_FDTAB_MAX - 1;
		for (unsigned fd = first; fd <= top; fd++) {
			int k = shim_fd_kind((int)fd);
			if (k == FD_NONE || k == FD_INTERNAL)
				continue;
			if (flags & CLOSE_RANGE_CLOEXEC) {
				struct um_uffd *u = um_uffd_by_fd(&G.model, (int)fd);
				if (u)
					um_fd_set_cloexec(u, (int)fd, true);
			} else {
				fd_gone_locked((int)fd);
			}
		}
		shim_unlock();
	}
	errno = err;
	return 0;
}

void closefrom(int lowfd)
{
	if (lowfd < 0)
		lowfd = 0;
	if (close_range((unsigned)lowfd, ~0U, 0) == 0)
		return;
	for (int fd = lowfd; fd < SHIM_FDTAB_MAX; fd++) /* no close_range: one by one */
		if (shim_fd_kind(fd) != FD_INTERNAL)
			close(fd);
}
