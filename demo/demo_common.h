/* demo_common.h - helpers shared by the uffdshim demo programs (header only).
 *
 * Every demo is a real userfaultfd program that checks its own result and
 * exits DEMO_OK (0) if right, DEMO_FAIL (1) if wrong, DEMO_SKIP (77) if the
 * machine lacks something.  It prints "<name>: pid <PID> ready" once its uffd
 * is registered and ends with "<name>: OK (...)" / "FAIL ..." / "SKIP ...".
 * Common options:
 *   --pause-ms N   sleep N ms between page touches
 *   --hold POINT   stop at POINT (repeatable): print "<name>: pid <PID> hold
 *                  POINT" and wait for SIGUSR1 (blocked in every thread
 *                  while holds are asked, so the signal cannot be lost).
 *                  Every demo has "ready" (right after the ready line),
 *                  "mid" (the point where a checkpoint test dumps it; see
 *                  the demo) and "restored" (see below).
 *
 * Restart after a checkpoint: under `uffd-replay -D DIR -- DEMO`, the shim
 * recreates the uffd, its registered memory (with the contents it had) and
 * its write-protection before main() runs.  demo_restored() says so: it
 * prints "<name>: pid <PID> restored (...)" and holds at "restored" if asked,
 * before the demo changes anything.  The demo then adopts the uffd and the
 * region, works out from what the region holds how far the checkpointed run
 * had got (and says so), restarts its handler thread(s) and finishes (its OK
 * line then says "restored").
 *
 * The helpers call plain libc functions (syscall, ioctl, read, poll, close)
 * so that an LD_PRELOAD shim sees every uffd operation. */
#ifndef UFFDSHIM_DEMO_COMMON_H
#define UFFDSHIM_DEMO_COMMON_H

#include "uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "uffdshim.h"

#define DEMO_OK 0
#define DEMO_FAIL 1
#define DEMO_SKIP 77

#define DEMO_MAX_HOLDS 8

static struct {
	const char *name;   /* prefix of every line printed */
	unsigned pause_ms;  /* --pause-ms */
	size_t page;        /* system page size */
	const char *hold[DEMO_MAX_HOLDS]; /* --hold points */
	int nhold;
} demo __attribute__((unused));

/* ---- result lines ------------------------------------------------------- */

/* Print "<name>: <msg>" and exit with status; callable from any thread. */
__attribute__((noreturn, format(printf, 2, 3)))
static inline void demo_end(int status, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("%s: %s\n", demo.name ? demo.name : "demo", msg);
	fflush(stdout);
	exit(status);
}

/* The format must be a string literal. */
#define demo_fail(...) demo_end(DEMO_FAIL, "FAIL " __VA_ARGS__)
#define demo_skip(...) demo_end(DEMO_SKIP, "SKIP " __VA_ARGS__)
#define demo_fail_errno(what) demo_fail("%s: %s (errno %d)", (what), strerror(errno), errno)
#define demo_ok(fmt, ...) demo_end(DEMO_OK, "OK (" fmt ")", __VA_ARGS__)

static inline void demo_ready(void)
{
	printf("%s: pid %d ready\n", demo.name, (int)getpid());
	fflush(stdout);
}

/* ---- arguments and pacing ----------------------------------------------- */

/* Is word a member of the space-separated list? */
static inline int demo_in_list(const char *list, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
			return 1;
	return 0;
}

/* points: the space-separated --hold points this demo has. */
static inline void demo_init(const char *name, const char *points, int argc, char **argv)
{
	demo.name = name;
	long pg = sysconf(_SC_PAGESIZE);
	demo.page = pg > 0 ? (size_t)pg : 4096;
	for (int i = 1; i < argc; i++) {
		const char *v = NULL;
		if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc) {
			const char *p = argv[++i];
			if (!demo_in_list(points, p))
				demo_fail("bad --hold point '%s' (this demo has: %s)", p, points);
			if (demo.nhold == DEMO_MAX_HOLDS)
				demo_fail("too many --hold points");
			demo.hold[demo.nhold++] = p;
			continue;
		}
		if (strcmp(argv[i], "--pause-ms") == 0 && i + 1 < argc)
			v = argv[++i];
		else if (strncmp(argv[i], "--pause-ms=", 11) == 0)
			v = argv[i] + 11;
		if (!v)
			demo_fail("usage: %s [--pause-ms N] [--hold POINT]... (bad argument '%s')",
				  argv[0], argv[i]);
		char *end;
		errno = 0;
		unsigned long n = strtoul(v, &end, 10);
		if (errno || *end || end == v || n > 60000)
			demo_fail("bad --pause-ms value '%s' (0..60000)", v);
		demo.pause_ms = (unsigned)n;
	}
	if (demo.nhold) {
		/* Before any thread exists, so that every thread inherits it. */
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR1);
		if (sigprocmask(SIG_BLOCK, &s, NULL) < 0)
			demo_fail_errno("sigprocmask(SIGUSR1)");
	}
}

/* If --hold point was given: say so and wait for SIGUSR1 (any thread). */
static inline void demo_hold(const char *point)
{
	int asked = 0;
	for (int i = 0; i < demo.nhold; i++)
		asked |= strcmp(demo.hold[i], point) == 0;
	if (!asked)
		return;
	printf("%s: pid %d hold %s\n", demo.name, (int)getpid(), point);
	fflush(stdout);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	int sig;
	while (sigwait(&s, &sig) != 0)
		;
}

/* Sleep --pause-ms milliseconds (no-op at 0), resuming after signals. */
static inline void demo_pause(void)
{
	if (!demo.pause_ms)
		return;
	struct timespec ts = { demo.pause_ms / 1000, (long)(demo.pause_ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- memory and data ---------------------------------------------------- */

static inline void *demo_xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		demo_fail("out of memory (%zu bytes)", n);
	return p;
}

static inline void *demo_page_buf(void)
{
	void *p = NULL;
	if (posix_memalign(&p, demo.page, demo.page))
		demo_fail("posix_memalign failed");
	return p;
}

static inline char *demo_mmap_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		demo_fail_errno("mmap anonymous");
	return p;
}

static inline uint64_t demo_mix64(uint64_t x)
{
	x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27; x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Word i of the known content of page pgoff of data set "seed". */
#define DEMO_WORD(seed, pgoff, i) \
	(demo_mix64((seed) ^ ((pgoff) * 0x9e3779b97f4a7c15ULL)) + (i) * 0x2545f4914f6cdd1dULL)

static inline void demo_fill_page(void *p, uint64_t seed, uint64_t pgoff)
{
	for (size_t i = 0; i < demo.page / 8; i++)
		((uint64_t *)p)[i] = DEMO_WORD(seed, pgoff, i);
}

/* Byte offset of the first difference from demo_fill_page(seed, pgoff), or -1. */
static inline long demo_check_page(const void *p, uint64_t seed, uint64_t pgoff)
{
	for (size_t i = 0; i < demo.page / 8; i++)
		if (((const uint64_t *)p)[i] != DEMO_WORD(seed, pgoff, i))
			return (long)(i * 8);
	return -1;
}

/* A fixed pseudo-random permutation of 0..n-1 (Fisher-Yates). */
static inline size_t *demo_shuffled(size_t n, uint64_t seed)
{
	size_t *v = demo_xmalloc(n * sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = demo_mix64(seed + i) % i;
		size_t t = v[i - 1]; v[i - 1] = v[j]; v[j] = t;
	}
	return v;
}

/* ---- userfaultfd -------------------------------------------------------- */

static inline void demo_uffd_create_failed(const char *how)
{
	if (errno == ENOSYS)
		demo_skip("%s: kernel has no userfaultfd (ENOSYS)", how);
	if (errno == EPERM || errno == EACCES)
		demo_skip("%s: not permitted (%s): need root/CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1",
			  how, strerror(errno));
	demo_fail_errno(how);
}

/* A uffd from the userfaultfd(2) system call. */
static inline int demo_uffd_syscall(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags);
	if (fd < 0)
		demo_uffd_create_failed("userfaultfd(2)");
	return fd;
}

/* A uffd from /dev/userfaultfd + USERFAULTFD_IOC_NEW, or from the system
 * call if the device cannot be opened.  *how says which path was used. */
static inline int demo_uffd_dev(int flags, const char **how)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		*how = "userfaultfd(2) (fallback: /dev/userfaultfd unavailable)";
		return demo_uffd_syscall(flags);
	}
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	int err = errno;
	close(dev);
	errno = err;
	if (fd < 0)
		demo_uffd_create_failed("ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW)");
	*how = "/dev/userfaultfd USERFAULTFD_IOC_NEW";
	return fd;
}

/* UFFDIO_API asking for `features`; returns the features granted.  A kernel
 * that lacks a requested feature makes the demo SKIP, naming the bits. */
static inline uint64_t demo_uffd_api(int fd, uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) == 0) {
		if ((api.features & features) != features)
			demo_fail("UFFDIO_API granted features 0x%llx, asked 0x%llx",
				  (unsigned long long)api.features, (unsigned long long)features);
		return api.features;
	}
	int err = errno;
	if (err == EPERM)
		demo_skip("UFFDIO_API features 0x%llx: EPERM (UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE)",
			  (unsigned long long)features);
	if (err == EINVAL && features) {
		/* Which bits does this kernel lack?  Ask a fresh probe uffd. */
		int probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		struct uffdio_api p = { .api = UFFD_API, .features = 0 };
		int ok = probe >= 0 && ioctl(probe, UFFDIO_API, &p) == 0;
		if (probe >= 0)
			close(probe);
		if (ok && (p.features & features) != features)
			demo_skip("kernel lacks uffd features 0x%llx (has 0x%llx)",
				  (unsigned long long)(features & ~p.features),
				  (unsigned long long)p.features);
	}
	errno = err;
	demo_fail_errno("UFFDIO_API");
}

/* UFFDIO_REGISTER; fails unless the ioctls returned include `need`
 * (a mask of 1 << _UFFDIO_*).  Returns the ioctls mask. */
static inline uint64_t demo_uffd_register(int fd, void *start, size_t len,
					  uint64_t mode, uint64_t need)
{
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)start, .len = len }, .mode = mode };
	if (ioctl(fd, UFFDIO_REGISTER, &r) < 0)
		demo_fail("UFFDIO_REGISTER %p+0x%zx mode 0x%llx: %s", start, len,
			  (unsigned long long)mode, strerror(errno));
	if ((r.ioctls & need) != need)
		demo_fail("UFFDIO_REGISTER returned ioctls 0x%llx, need 0x%llx",
			  (unsigned long long)r.ioctls, (unsigned long long)need);
	return r.ioctls;
}

static inline void demo_uffd_unregister(int fd, void *start, size_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)start, .len = len };
	if (ioctl(fd, UFFDIO_UNREGISTER, &r) < 0)
		demo_fail("UFFDIO_UNREGISTER %p+0x%zx: %s", start, len, strerror(errno));
}

/* UFFDIO_COPY len bytes from src to dst (waking the faulting threads).
 * Returns 0, or -errno: -EAGAIN means the mm is changing under a pending
 * non-cooperative event (read the events, then retry); -EEXIST means the
 * page is already there.  A partial copy is continued here. */
static inline int demo_uffd_copy(int fd, uintptr_t dst, const void *src, size_t len)
{
	while (len) {
		struct uffdio_copy c = { .dst = dst, .src = (uintptr_t)src, .len = len };
		if (ioctl(fd, UFFDIO_COPY, &c) == 0)
			return 0;
		int err = errno;
		if (c.copy > 0 && (size_t)c.copy < len) {
			dst += c.copy; src = (const char *)src + c.copy; len -= c.copy;
			continue;
		}
		if (err == EINTR)
			continue;
		return -err;
	}
	return 0;
}

/* UFFDIO_WRITEPROTECT; mode is UFFDIO_WRITEPROTECT_MODE_WP or 0 (unprotect
 * and wake).  Returns 0 or -errno (-EAGAIN: retry after reading events). */
static inline int demo_uffd_wp(int fd, uintptr_t start, size_t len, uint64_t mode)
{
	struct uffdio_writeprotect w = { .range = { start, len }, .mode = mode };
	while (ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* UFFDIO_CONTINUE: map the page-cache pages of [start, start+len). */
static inline int demo_uffd_continue(int fd, uintptr_t start, size_t len)
{
	while (len) {
		struct uffdio_continue c = { .range = { start, len } };
		if (ioctl(fd, UFFDIO_CONTINUE, &c) == 0)
			return 0;
		int err = errno;
		if (c.mapped > 0 && (size_t)c.mapped < len) {
			start += c.mapped; len -= c.mapped;
			continue;
		}
		if (err == EINTR)
			continue;
		return -err;
	}
	return 0;
}

/* Read up to max messages from a non-blocking uffd.  Returns how many
 * (0 when none is queued). */
static inline int demo_uffd_read(int fd, struct uffd_msg *msgs, int max)
{
	for (;;) {
		ssize_t n = read(fd, msgs, (size_t)max * sizeof(*msgs));
		if (n >= 0) {
			if (n == 0 || n % (ssize_t)sizeof(*msgs))
				demo_fail("read(uffd) returned %zd bytes, not a multiple of %zu",
					  n, sizeof(*msgs));
			return (int)(n / (ssize_t)sizeof(*msgs));
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return 0;
		demo_fail_errno("read(uffd)");
	}
}

/* poll() that retries on EINTR. */
static inline int demo_poll(struct pollfd *p, nfds_t n, int timeout_ms)
{
	int r;
	while ((r = poll(p, n, timeout_ms)) < 0)
		if (errno != EINTR)
			demo_fail_errno("poll");
	return r;
}

/* ---- stopping a poll loop ----------------------------------------------- */

static inline int demo_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		demo_fail_errno("eventfd");
	return fd;
}

static inline void demo_eventfd_signal(int fd)
{
	uint64_t one = 1;
	while (write(fd, &one, sizeof(one)) < 0)
		if (errno != EINTR)
			demo_fail_errno("write(eventfd)");
}

static inline void demo_pthread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int e = pthread_create(t, NULL, fn, arg);
	if (e)
		demo_fail("pthread_create: %s", strerror(e));
}


/* ---- restart after a checkpoint (uffd-replay) --------------------------- */

#define DEMO_MAX_RANGES 4

/* What the shim restored before main(): one uffd and its ranges. */
struct demo_restore {
	int fd;               /* the uffd, at its checkpointed fd number */
	uint64_t features;    /* UFFDIO_API features it was created with */
	unsigned nranges;
	struct { char *start; size_t len; uint64_t modes; } r[DEMO_MAX_RANGES];
};

/* 1 if this process was restored by uffd-replay (R filled; the restored line
 * printed, held at "restored" if asked), 0 if not.  Each demo checkpoints
 * one uffd; an image with more is not one of this demo's. */
static inline int demo_restored(struct demo_restore *R)
{
	struct uffdshim_restored_uffd u[2];
	int n = uffdshim_restored(u, 2);
	if (n == 0)
		return 0;
	if (n != 1)
		demo_fail("restored: %d uffds, this demo checkpoints one", n);
	if (u[0].nranges > DEMO_MAX_RANGES)
		demo_fail("restored: uffd fd %d has %u ranges, this demo registers at most %d",
			  u[0].fd, u[0].nranges, DEMO_MAX_RANGES);
	memset(R, 0, sizeof(*R));
	R->fd = u[0].fd;
	R->features = u[0].features;
	R->nranges = u[0].nranges;
	for (unsigned i = 0; i < R->nranges; i++) {
		uint64_t start, len, modes;
		if (uffdshim_restored_range(R->fd, i, &start, &len, &modes) < 0)
			demo_fail("restored: range %u of uffd fd %d cannot be read", i, R->fd);
		R->r[i].start = (char *)(uintptr_t)start;
		R->r[i].len = len;
		R->r[i].modes = modes;
	}
	printf("%s: pid %d restored (uffd fd %d, features 0x%llx, %u registered range%s)\n",
	       demo.name, (int)getpid(), R->fd, (unsigned long long)R->features, R->nranges,
	       R->nranges == 1 ? "" : "s");
	fflush(stdout);
	demo_hold("restored");
	return 1;
}

/* The restored range of length len with exactly these modes, or NULL. */
static inline char *demo_restored_range(const struct demo_restore *R, size_t len, uint64_t modes)
{
	for (unsigned i = 0; i < R->nranges; i++)
		if (R->r[i].len == len && R->r[i].modes == modes)
			return R->r[i].start;
	return NULL;
}

/* Check the restored uffd was created with exactly `features`. */
static inline void demo_restored_features(const struct demo_restore *R, uint64_t features)
{
	if (R->features != features)
		demo_fail("restored uffd fd %d has features 0x%llx, this demo uses 0x%llx: not "
			  "a checkpoint of this demo", R->fd, (unsigned long long)R->features,
			  (unsigned long long)features);
}

/* "<name>: <msg>" */
__attribute__((format(printf, 1, 2)))
static inline void demo_note(const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("%s: %s\n", demo.name, msg);
	fflush(stdout);
}

/* /proc/self/pagemap entries of the npages pages from p (reading it neither
 * faults nor changes anything). */
#define DEMO_PM_PRESENT(e) (((e) >> PM_BIT_PRESENT & 1) | ((e) >> PM_BIT_SWAPPED & 1))
#define DEMO_PM_UFFD_WP(e) ((e) >> PM_BIT_UFFD_WP & 1)

static inline uint64_t *demo_pagemap(const void *p, size_t npages)
{
	uint64_t *ent = demo_xmalloc(npages * sizeof(*ent));
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		demo_fail_errno("open /proc/self/pagemap");
	size_t want = npages * sizeof(*ent), got = 0;
	off_t off = (off_t)((uintptr_t)p / demo.page * sizeof(*ent));
	while (got < want) {
		ssize_t n = pread(fd, (char *)ent + got, want - got, off + (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			demo_fail("reading /proc/self/pagemap: %s", n < 0 ? strerror(errno) : "short read");
		got += (size_t)n;
	}
	close(fd);
	return ent;
}

#endif
