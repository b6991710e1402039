/* test_helpers.h - the small TAP library every C test of uffdshim includes.
 * Header only: each tests/NAME.c is one translation unit, so the state below
 * is per test program.
 *
 *   plan(n)                       print "1..n" first (or call done_testing at the end)
 *   ok(cond, fmt, ...)            "ok N - name" / "not ok N - name" (+ file:line on failure)
 *   is_int(got, want, fmt, ...)   signed comparison, prints got/expected on failure
 *   is_u64(got, want, fmt, ...)   unsigned comparison (decimal and hex)
 *   is_str(got, want, fmt, ...)   string comparison (NULL-safe)
 *   skip(n, fmt, ...)             n "ok N # skip reason" lines
 *   diag(fmt, ...)                "# ..." on stderr (shown by prove)
 *   note(fmt, ...)                "# ..." on stdout (prove -v only)
 *   skip_all(fmt, ...)            "1..0 # SKIP reason", exit TH_SKIP_EXIT; must come
 *                                 before any test line.  The only helper that exits.
 *   done_testing()                prints the plan if none was given; returns the exit
 *                                 status: 0 when every test passed and the count
 *                                 matches the plan, else 1.  Use: return done_testing();
 *
 * Helpers: th_page_size(), map_anon(npages) (NULL on failure, errno kept),
 * unmap_anon(p, npages), uffd_create(flags) / uffd_create_dev(flags) (fd, or
 * -1 with errno), uffd_api(fd, features, &api) (0, or -1 with errno),
 * uffd_skip_reason(errno), a fixed-seed PRNG (th_rng_*). */
#ifndef UFFDSHIM_TEST_HELPERS_H
#define UFFDSHIM_TEST_HELPERS_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd_compat.h"

/* Exit status of skip_all().  77 is the automake "skipped" convention.
 * prove alone counts any non-zero exit as a failure, even after "1..0 # SKIP";
 * `make check` runs tests through tests/tap-exec.sh, which maps 77 to 0.  Run
 * by hand under plain prove, build with -DTH_SKIP_EXIT=0. */
#ifndef TH_SKIP_EXIT
#define TH_SKIP_EXIT 77
#endif

#define TH_PRINTF(a, b) __attribute__((format(printf, a, b)))

static struct {
	int planned;   /* -1: no plan printed yet */
	int run;
	int failed;
} th_state __attribute__((unused)) = {-1, 0, 0};

static inline void th_vline(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
	char buf[4096];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* Every line of a multi-line message gets the "# " prefix. */
	char *s = buf;
	for (;;) {
		char *nl = strchr(s, '\n');
		if (nl)
			*nl = 0;
		fprintf(f, "%s%s\n", prefix, s);
		if (!nl || !nl[1])
			break;
		s = nl + 1;
	}
}

static inline TH_PRINTF(1, 2) void diag(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	va_start(ap, fmt);
	th_vline(stderr, "# ", fmt, ap);
	va_end(ap);
	fflush(stderr);
}

static inline TH_PRINTF(1, 2) void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	th_vline(stdout, "# ", fmt, ap);
	va_end(ap);
	fflush(stdout);
}

static inline void plan(int n)
{
	if (th_state.planned >= 0) {
		diag("plan(%d) called twice (first plan %d)", n, th_state.planned);
		th_state.failed++;
		return;
	}
	th_state.planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

static inline __attribute__((noreturn)) TH_PRINTF(1, 2) void skip_all(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *c = buf; *c; c++) /* the reason must stay on the plan line */
		if (*c == '\n')
			*c = ' ';
	if (th_state.run || th_state.planned >= 0)
		diag("skip_all after %d tests (plan %d): the TAP stream is now invalid",
		     th_state.run, th_state.planned);
	printf("1..0 # SKIP %s\n", buf);
	fflush(stdout);
	exit(TH_SKIP_EXIT);
}

/* Core of ok()/is_*(): prints the test line; returns cond. */
static inline bool th_result(bool cond, const char *file, int line, const char *fmt,
			     va_list ap)
{
	char name[1024];
	vsnprintf(name, sizeof(name), fmt, ap);
	for (char *c = name; *c; c++) /* '#' would start a directive */
		if (*c == '\n' || *c == '#')
			*c = (*c == '#') ? '%' : ' ';
	th_state.run++;
	printf("%sok %d%s%s\n", cond ? "" : "not ", th_state.run, name[0] ? " - " : "", name);
	fflush(stdout);
	if (!cond) {
		th_state.failed++;
		diag("  Failed test '%s'\n  at %s line %d.", name, file, line);
	}
	return cond;
}

static inline TH_PRINTF(4, 5) bool th_ok(bool cond, const char *file, int line,
					 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = th_result(cond, file, line, fmt, ap);
	va_end(ap);
	return r;
}

static inline TH_PRINTF(5, 6) bool th_is_int(long long got, long long want, const char *file,
					     int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = th_result(got == want, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		diag("         got: %lld\n    expected: %lld", got, want);
	return r;
}

static inline TH_PRINTF(5, 6) bool th_is_u64(uint64_t got, uint64_t want, const char *file,
					     int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = th_result(got == want, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		diag("         got: %" PRIu64 " (%#" PRIx64 ")\n    expected: %" PRIu64
		     " (%#" PRIx64 ")", got, got, want, want);
	return r;
}

static inline TH_PRINTF(5, 6) bool th_is_str(const char *got, const char *want,
					     const char *file, int line, const char *fmt, ...)
{
	bool same = (!got && !want) || (got && want && strcmp(got, want) == 0);
	va_list ap;
	va_start(ap, fmt);
	bool r = th_result(same, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		diag("         got: %s%s%s\n    expected: %s%s%s", got ? "'" : "",
		     got ? got : "NULL", got ? "'" : "", want ? "'" : "", want ? want : "NULL",
		     want ? "'" : "");
	return r;
}

/* The test-name format is required: ok(x, "name"), is_int(a, b, "name %d", i). */
#define ok(cond, ...) th_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...)                                                   \
	th_is_int((long long)(got), (long long)(want), __FILE__, __LINE__, __VA_ARGS__)
#define is_u64(got, want, ...)                                                   \
	th_is_u64((uint64_t)(got), (uint64_t)(want), __FILE__, __LINE__, __VA_ARGS__)
#define is_str(got, want, ...) th_is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define pass(...) th_ok(true, __FILE__, __LINE__, __VA_ARGS__)
#define fail(...) th_ok(false, __FILE__, __LINE__, __VA_ARGS__)

/* n tests that cannot run here, each "ok N # skip reason". */
static inline TH_PRINTF(2, 3) void skip(int n, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *c = buf; *c; c++)
		if (*c == '\n')
			*c = ' ';
	for (int i = 0; i < n; i++)
		printf("ok %d # skip %s\n", ++th_state.run, buf);
	fflush(stdout);
}

static inline int done_testing(void)
{
	if (th_state.planned < 0) {
		th_state.planned = th_state.run;
		printf("1..%d\n", th_state.run);
	} else if (th_state.planned != th_state.run) {
		diag("Looks like you planned %d tests but ran %d.", th_state.planned,
		     th_state.run);
	}
	fflush(stdout);
	if (th_state.failed)
		diag("Looks like you failed %d test%s of %d run.", th_state.failed,
		     th_state.failed == 1 ? "" : "s", th_state.run);
	return (th_state.failed || th_state.planned != th_state.run) ? 1 : 0;
}

/* ---- memory ---------------------------------------------------------- */

static inline size_t th_page_size(void)
{
	static size_t ps;
	if (!ps) {
		long v = sysconf(_SC_PAGESIZE);
		ps = v > 0 ? (size_t)v : 4096;
	}
	return ps;
}

/* npages of fresh private anonymous read-write memory, or NULL (errno set). */
static inline void *map_anon(size_t npages)
{
	void *p = mmap(NULL, npages * th_page_size(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static inline int unmap_anon(void *p, size_t npages)
{
	return munmap(p, npages * th_page_size());
}

/* ---- userfaultfd ------------------------------------------------------ */

/* userfaultfd(2); the fd, or -1 with errno (ENOSYS, EPERM, ...). */
static inline int uffd_create(int flags)
{
#ifdef SYS_userfaultfd
	return (int)syscall(SYS_userfaultfd, flags);
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* /dev/userfaultfd + USERFAULTFD_IOC_NEW; the fd, or -1 with errno. */
static inline int uffd_create_dev(int flags)
{
#ifdef USERFAULTFD_IOC_NEW
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	int err = errno;
	close(dev);
	errno = err;
	return fd;
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* UFFDIO_API asking for features; 0 or -1 with errno.  *out (may be NULL)
 * receives what the kernel answered. */
static inline int uffd_api(int fd, uint64_t features, struct uffdio_api *out)
{
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	int rc = ioctl(fd, UFFDIO_API, &api);
	if (out)
		*out = api;
	return rc;
}

/* A reason for skip_all() after uffd_create*() failed with err. */
static inline const char *uffd_skip_reason(int err)
{
	switch (err) {
	case ENOSYS:
		return "kernel has no userfaultfd (ENOSYS)";
	case EPERM:
	case EACCES:
		return "userfaultfd not permitted (need root/CAP_SYS_PTRACE or "
		       "vm.unprivileged_userfaultfd=1)";
	case ENOENT:
		return "/dev/userfaultfd does not exist";
	default:
		return strerror(err);
	}
}

/* ---- reproducible randomness -------------------------------------------- */

struct th_rng {
	uint64_t s;
};

/* Seed: the given default, unless UFFDSHIM_TEST_SEED is set (to replay or
 * explore); randomized tests should note() the seed they use. */
static inline struct th_rng th_rng_seed(uint64_t dflt)
{
	const char *e = getenv("UFFDSHIM_TEST_SEED");
	struct th_rng r = {.s = e && *e ? strtoull(e, NULL, 0) : dflt};
	return r;
}

static inline uint64_t th_rng_next(struct th_rng *r) /* splitmix64 */
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t th_rng_below(struct th_rng *r, uint64_t n)
{
	return n ? th_rng_next(r) % n : 0;
}

#endif
