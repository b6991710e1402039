/* fault_bench.c - userfaultfd fault costs, native vs. under the uffdshim
 * LD_PRELOAD library, measured side by side in one run.
 *
 * The parent never measures anything itself: for every round and workload it
 * re-executes itself (/proc/self/exe --worker WORKLOAD ...) twice, once with
 * LD_PRELOAD unset (native) and once with LD_PRELOAD=<shim> (shimmed), so both
 * sides pay the same process setup.  The two runs of a pair go back to back
 * and the pair's order alternates from round to round (native first on odd
 * rounds, shimmed first on even ones), so machine noise and drift hit both
 * sides alike.  A worker sets its workload up once and then times P passes of
 * it (default 3; the region is emptied / re-protected between passes,
 * untimed); it reports every pass on one stdout line
 *   FAULT_BENCH_RESULT workload=W ops=N passes=P wall_ns=T1,T2,.. cpu_ns=C1,..
 *                      shim_loaded=0|1|-1 ...
 * and passes anything else it prints through to stderr.  A worker's value is
 * its fastest pass (each pass averages thousands of faults, so the shim's
 * amortised costs are in every pass; the minimum only drops passes that
 * another process on this 2-CPU VM disturbed).  The table shows, per
 * workload, the median over rounds of each side's values and the median of
 * the per-round paired ratios shimmed/native with their min-max.
 *
 * Thread placement (--placement, default same): on this 2-vCPU VM a fault's
 * cost depends mostly on whether the faulting and the handler thread share a
 * CPU (~10 us per MISSING fault) or not (~40 us: cross-CPU wakeups of a halted
 * vCPU), and an unpinned run flips between the two from process to process
 * (+-50%), which drowns a 5% budget.  So by default each worker pins its
 * threads (and so any thread the shim starts from them) to its first allowed
 * CPU: the fastest, steadiest fault, hence the strictest ratio for a
 * per-fault cost the shim adds.  split and free are there to look at the
 * other cases.
 *
 * Workloads (all on 4 KiB anonymous pages, THP off for the region):
 *   missing            N pages registered MISSING; the main thread reads each
 *                      page once; a handler thread poll()s [uffd, eventfd],
 *                      read()s one struct uffd_msg and resolves the fault with
 *                      a 1-page UFFDIO_COPY.  Per fault: wall and CPU time
 *                      (CLOCK_PROCESS_CPUTIME_ID: both threads, user+kernel).
 *   wp                 N populated pages registered WP and write-protected
 *                      whole; the main thread writes one byte per page; the
 *                      handler unprotects the faulting page (UFFDIO_WRITEPROTECT
 *                      mode 0, which also wakes).  Per fault: wall and CPU.
 *   ioctl-passthrough  ioctl(pipe_fd, FIONREAD) in a tight loop: the shim's
 *                      interposition cost on an fd that is not a uffd.
 * Each worker validates its work (one fault message per page, no duplicates,
 * page contents, the pagemap uffd-wp bit before/after, FIONREAD's answer) and
 * exits non-zero, loudly, if anything is wrong.  It also checks that the shim
 * is (shimmed) or is not (native) mapped into it, so an LD_PRELOAD that ld.so
 * silently ignored cannot pass as "shimmed".
 *
 * The shim is $UFFDSHIM_LIB, else <dir of this exe>/../libuffdshim.so; if it
 * is missing, only the native side runs.  The verdict against the 1.05 budget
 * judges the per-fault rows (missing, wp) by CPU time with placement "same"
 * (there wall time is CPU time plus what other load took) and by wall time
 * otherwise, and reports the other measure beside it.  It is printed, never
 * turned into an exit status (the machine is noisy): the exit status is 1
 * only if a workload failed (natively or under the shim), 2 on bad usage. */
#include "uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define TARGET_RATIO 1.05
#define DEFAULT_ROUNDS 7
#define DEFAULT_MIB 64
#define DEFAULT_IOCTL_ITERS 200000
#define DEFAULT_PASSES 3
#define RESULT_TAG "FAULT_BENCH_RESULT"
#define HANDLER_POLL_TIMEOUT_MS 20000
#define HDR_MAGIC 0x5546464442454e43ULL /* "UFFDBENC" */

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static const char *g_worker_name = "?";

/* Fail loudly from a worker (any thread): the main thread may be stuck in a
 * fault nobody will resolve, so leave at once. */
__attribute__((noreturn, format(printf, 1, 2))) static void wfail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int e = errno;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "fault_bench worker [%s, pid %d]: FAILED: %s (errno %d: %s)\n",
		g_worker_name, (int)getpid(), buf, e, e ? strerror(e) : "-");
	_exit(2);
}

static uint64_t ts_ns(clockid_t clk)
{
	struct timespec ts;
	if (clock_gettime(clk, &ts) != 0)
		wfail("clock_gettime(%d)", (int)clk);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;
	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* ------------------------------------------------------------------ */
/* Worker side                                                         */
/* ------------------------------------------------------------------ */

#define MAX_PASSES 64

/* Where a worker's threads run.  free: wherever the scheduler puts them;
 * same: the main and the handler thread share one CPU; split: the main thread
 * on one CPU, the handler on another.  (Threads the shim starts inherit the
 * affinity of the thread that starts them.) */
enum placement { PL_FREE, PL_SAME, PL_SPLIT };
static const char *placement_name[] = { "free", "same", "split" };

struct wopts {
	enum placement placement;
	uint64_t mib;
	uint64_t ioctl_iters;
	unsigned passes;
	const char *expect_lib; /* shim path the parent preloaded, or "" */
};

struct wresult {
	uint64_t ops;      /* operations per pass */
	unsigned passes;
	uint64_t wall_ns[MAX_PASSES], cpu_ns[MAX_PASSES];
	char extra[256];
};

static const char *g_expect_lib;
static int g_lib_found;

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	char rp[PATH_MAX];
	const char *name = info->dlpi_name;
	if (!name || !*name)
		return 0;
	if (strcmp(name, g_expect_lib) == 0 ||
	    (realpath(name, rp) && strcmp(rp, g_expect_lib) == 0)) {
		g_lib_found = 1;
		return 1;
	}
	return 0;
}

/* Is the shim mapped into this process?  -1: nothing to look for. */
static int shim_loaded(const char *lib)
{
	if (!lib || !*lib)
		return -1;
	g_expect_lib = lib;
	g_lib_found = 0;
	dl_iterate_phdr(phdr_cb, NULL);
	return g_lib_found;
}

static int open_uffd(void)
{
	/* libc syscall(), as QEMU does: this is what the shim intercepts. */
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		wfail("userfaultfd() (root, or vm.unprivileged_userfaultfd=1, is needed)");
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	if (ioctl(uffd, UFFDIO_API, &api) != 0)
		wfail("UFFDIO_API");
	return uffd;
}

static char *map_region(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		wfail("mmap %zu bytes", len);
	/* One fault per 4 KiB page, on both sides, whatever THP is set to. */
	if (madvise(p, len, MADV_NOHUGEPAGE) != 0)
		wfail("madvise(MADV_NOHUGEPAGE)");
	return p;
}

static void register_range(int uffd, char *base, size_t len, uint64_t mode, uint64_t need_ioctl)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)base, .len = len },
		.mode = mode,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
		wfail("UFFDIO_REGISTER mode %#llx", (unsigned long long)mode);
	if ((reg.ioctls & (1ULL << need_ioctl)) == 0)
		wfail("UFFDIO_REGISTER answered ioctls %#llx without bit %llu",
		      (unsigned long long)reg.ioctls, (unsigned long long)need_ioctl);
}

/* Read the pagemap entries of [base, base + pages * psz). */
static uint64_t *read_pagemap(char *base, size_t pages, size_t psz)
{
	uint64_t *pm = malloc(pages * sizeof *pm);
	if (!pm)
		wfail("malloc pagemap buffer");
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		wfail("open /proc/self/pagemap");
	size_t want = pages * sizeof *pm, got = 0;
	off_t off = (off_t)((uintptr_t)base / psz * sizeof *pm);
	while (got < want) {
		ssize_t n = pread(fd, (char *)pm + got, want - got, off + (off_t)got);
		if (n <= 0)
			wfail("pread /proc/self/pagemap");
		got += (size_t)n;
	}
	close(fd);
	return pm;
}

/* Handler thread state shared by the two fault workloads. */
struct hctx {
	int uffd, stopfd;
	bool wp; /* false: MISSING + COPY; true: WP + unprotect */
	char *base;
	size_t pages, psz;
	unsigned char *src;     /* MISSING: the page UFFDIO_COPY copies from */
	unsigned char *seen;    /* per page: fault messages seen this pass */
	unsigned pass;          /* current pass (MISSING: part of the copied header) */
	int handler_cpu;        /* >= 0: pin the handler thread there */
	uint64_t msgs, dups, total_msgs, eexist, eagain;
};

static uint64_t src_header(uint64_t idx, unsigned pass)
{
	return HDR_MAGIC ^ idx ^ ((uint64_t)pass << 40);
}

static void fill_src_page(unsigned char *src, size_t psz, uint64_t idx, unsigned pass)
{
	uint64_t h = src_header(idx, pass), t = ~idx;
	memcpy(src, &h, 8);
	memcpy(src + psz - 8, &t, 8);
}

static void *handler_main(void *arg)
{
	struct hctx *h = arg;
	if (h->handler_cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(h->handler_cpu, &set);
		int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
		if (e) {
			errno = e;
			wfail("handler: pin to CPU %d", h->handler_cpu);
		}
	}
	struct pollfd pfd[2] = {
		{ .fd = h->uffd, .events = POLLIN },
		{ .fd = h->stopfd, .events = POLLIN },
	};
	for (;;) {
		int r = poll(pfd, 2, HANDLER_POLL_TIMEOUT_MS);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			wfail("handler: poll");
		}
		if (r == 0) {
			errno = 0;
			wfail("handler: no fault and no stop for %d ms (after %" PRIu64 " faults)",
			      HANDLER_POLL_TIMEOUT_MS, h->msgs);
		}
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			errno = 0;
			wfail("handler: poll revents %#x on the uffd", (unsigned)pfd[0].revents);
		}
		if (pfd[0].revents & POLLIN) {
			struct uffd_msg msg;
			ssize_t n = read(h->uffd, &msg, sizeof msg);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					continue;
				wfail("handler: read(uffd)");
			}
			if (n != (ssize_t)sizeof msg) {
				errno = 0;
				wfail("handler: read(uffd) returned %zd bytes, want %zu", n, sizeof msg);
			}
			if (msg.event != UFFD_EVENT_PAGEFAULT) {
				errno = 0;
				wfail("handler: unexpected uffd event %#x", (unsigned)msg.event);
			}
			uint64_t addr = msg.arg.pagefault.address & ~(uint64_t)(h->psz - 1);
			uint64_t base = (uintptr_t)h->base;
			if (addr < base || addr >= base + h->pages * h->psz) {
				errno = 0;
				wfail("handler: fault at %#llx outside the region",
				      (unsigned long long)msg.arg.pagefault.address);
			}
			uint64_t idx = (addr - base) / h->psz;
			bool is_wp = (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) != 0;
			if (is_wp != h->wp) {
				errno = 0;
				wfail("handler: fault flags %#llx on page %" PRIu64 " (want %s fault)",
				      (unsigned long long)msg.arg.pagefault.flags, idx,
				      h->wp ? "a WP" : "a MISSING");
			}
			h->msgs++;
			if (h->seen[idx]++)
				h->dups++;
			if (!h->wp) {
				fill_src_page(h->src, h->psz, idx, h->pass);
				struct uffdio_copy c = {
					.dst = addr, .src = (uintptr_t)h->src, .len = h->psz, .mode = 0,
				};
				while (ioctl(h->uffd, UFFDIO_COPY, &c) != 0) {
					if (errno == EAGAIN) {
						h->eagain++;
						if (c.copy > 0) {
							errno = 0;
							wfail("handler: partial UFFDIO_COPY");
						}
						c.copy = 0;
						continue;
					}
					if (errno == EEXIST) {
						/* Already filled: just wake the waiter. */
						h->eexist++;
						struct uffdio_range wr = { .start = addr, .len = h->psz };
						if (ioctl(h->uffd, UFFDIO_WAKE, &wr) != 0)
							wfail("handler: UFFDIO_WAKE");
						break;
					}
					wfail("handler: UFFDIO_COPY page %" PRIu64, idx);
				}
			} else {
				struct uffdio_writeprotect w = {
					.range = { .start = addr, .len = h->psz }, .mode = 0,
				};
				while (ioctl(h->uffd, UFFDIO_WRITEPROTECT, &w) != 0) {
					if (errno == EAGAIN) {
						h->eagain++;
						continue;
					}
					wfail("handler: UFFDIO_WRITEPROTECT(mode 0) page %" PRIu64, idx);
				}
			}
			continue; /* drain faults before looking at the stop fd */
		}
		if (pfd[1].revents & POLLIN)
			break;
	}
	return NULL;
}

static int g_handler_cpu = -1; /* set by worker_main from the placement */

static void start_handler(pthread_t *t, struct hctx *h)
{
	h->handler_cpu = g_handler_cpu;
	int e = pthread_create(t, NULL, handler_main, h);
	if (e) {
		errno = e;
		wfail("pthread_create");
	}
}

static void stop_handler(pthread_t t, struct hctx *h)
{
	uint64_t one = 1;
	if (write(h->stopfd, &one, sizeof one) != (ssize_t)sizeof one)
		wfail("write(eventfd)");
	int e = pthread_join(t, NULL);
	if (e) {
		errno = e;
		wfail("pthread_join");
	}
}

/* Check the handler's record of one pass: exactly one fault message per
 * page.  Then clear it for the next pass.  (The handler is idle in poll()
 * by now: every fault of the pass was resolved before the touch loop ended,
 * and the resolving ioctl + wakeup order its updates before our reads.) */
static void check_and_reset_faults(struct hctx *h, unsigned pass)
{
	errno = 0;
	if (h->msgs != h->pages || h->dups != 0)
		wfail("pass %u: %" PRIu64 " fault messages (%" PRIu64 " duplicates) for %zu pages",
		      pass, h->msgs, h->dups, h->pages);
	for (size_t i = 0; i < h->pages; i++)
		if (h->seen[i] != 1)
			wfail("pass %u: page %zu saw %u fault messages, want 1", pass, i,
			      (unsigned)h->seen[i]);
	h->total_msgs += h->msgs;
	h->msgs = 0;
	memset(h->seen, 0, h->pages);
}

static void finish_result(struct wresult *res, uint64_t ops, unsigned pass, uint64_t wall,
			  uint64_t cpu)
{
	res->ops = ops;
	res->wall_ns[pass] = wall;
	res->cpu_ns[pass] = cpu;
	res->passes = pass + 1;
}

static void work_missing(const struct wopts *o, struct wresult *res)
{
	size_t psz = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (size_t)o->mib << 20, pages = len / psz;
	char *base = map_region(len);
	unsigned char *tmpl = aligned_alloc(psz, psz), *src = aligned_alloc(psz, psz);
	struct hctx h = { .wp = false, .base = base, .pages = pages, .psz = psz };
	if (!tmpl || !src || !(h.seen = calloc(pages, 1)))
		wfail("malloc");
	for (size_t j = 0; j < psz; j++)
		tmpl[j] = (unsigned char)(j * 7 + 3);
	memcpy(src, tmpl, psz);
	h.src = src;
	h.uffd = open_uffd();
	register_range(h.uffd, base, len, UFFDIO_REGISTER_MODE_MISSING, _UFFDIO_COPY);
	if ((h.stopfd = eventfd(0, EFD_CLOEXEC)) < 0)
		wfail("eventfd");

	pthread_t t;
	start_handler(&t, &h);
	for (unsigned pass = 0; pass < o->passes; pass++) {
		/* Empty the region again (it stays registered): every page
		 * faults MISSING once more. */
		if (pass > 0 && madvise(base, len, MADV_DONTNEED) != 0)
			wfail("madvise(MADV_DONTNEED)");
		h.pass = pass;
		uint64_t sum = 0;
		uint64_t w0 = ts_ns(CLOCK_MONOTONIC), c0 = ts_ns(CLOCK_PROCESS_CPUTIME_ID);
		for (size_t i = 0; i < pages; i++)
			sum += *(volatile uint64_t *)(base + i * psz);
		uint64_t c1 = ts_ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ts_ns(CLOCK_MONOTONIC);

		/* Validate: one fault per page; every page holds what this
		 * pass's UFFDIO_COPY put there. */
		check_and_reset_faults(&h, pass);
		uint64_t want_sum = 0;
		for (size_t i = 0; i < pages; i++) {
			const unsigned char *p = (const unsigned char *)base + i * psz;
			uint64_t hd, tl, want_hd = src_header(i, pass);
			want_sum += want_hd;
			memcpy(&hd, p, 8);
			memcpy(&tl, p + psz - 8, 8);
			errno = 0;
			if (hd != want_hd || tl != ~(uint64_t)i || memcmp(p + 8, tmpl + 8, psz - 16) != 0)
				wfail("pass %u: page %zu does not hold the contents UFFDIO_COPY put there",
				      pass, i);
		}
		errno = 0;
		if (sum != want_sum)
			wfail("pass %u: the touch loop read %#" PRIx64 ", want %#" PRIx64, pass, sum,
			      want_sum);
		finish_result(res, pages, pass, w1 - w0, c1 - c0);
	}
	stop_handler(t, &h);

	struct uffdio_range ur = { .start = (uintptr_t)base, .len = len };
	if (ioctl(h.uffd, UFFDIO_UNREGISTER, &ur) != 0)
		wfail("UFFDIO_UNREGISTER");
	close(h.stopfd);
	close(h.uffd);
	munmap(base, len);
	snprintf(res->extra, sizeof res->extra, "faults=%" PRIu64 " eexist=%" PRIu64 " eagain=%" PRIu64,
		 h.total_msgs, h.eexist, h.eagain);
	free(h.seen);
	free(tmpl);
	free(src);
}

static unsigned char wp_byte(size_t i, unsigned pass)
{
	return (unsigned char)(i * 31 + pass * 101 + 0x5a);
}

static void check_all_protected(char *base, size_t pages, size_t psz, unsigned pass)
{
	uint64_t *pm = read_pagemap(base, pages, psz);
	for (size_t i = 0; i < pages; i++) {
		errno = 0;
		if (!(pm[i] >> PM_BIT_PRESENT & 1) || !(pm[i] >> PM_BIT_UFFD_WP & 1))
			wfail("pass %u: page %zu not present+write-protected after protecting "
			      "(pagemap %#" PRIx64 ")", pass, i, pm[i]);
	}
	free(pm);
}

static void work_wp(const struct wopts *o, struct wresult *res)
{
	size_t psz = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (size_t)o->mib << 20, pages = len / psz;
	char *base = map_region(len);
	struct hctx h = { .wp = true, .base = base, .pages = pages, .psz = psz };
	if (!(h.seen = calloc(pages, 1)))
		wfail("malloc");
	/* Populate every page (header + trailer identify it; byte 8 is the one
	 * the timed loop writes). */
	for (size_t i = 0; i < pages; i++) {
		char *p = base + i * psz;
		uint64_t hd = HDR_MAGIC ^ (uint64_t)i, tl = ~(uint64_t)i;
		memcpy(p, &hd, 8);
		memcpy(p + psz - 8, &tl, 8);
		p[8] = (char)~wp_byte(i, 0);
	}
	h.uffd = open_uffd();
	register_range(h.uffd, base, len, UFFDIO_REGISTER_MODE_WP, _UFFDIO_WRITEPROTECT);
	if ((h.stopfd = eventfd(0, EFD_CLOEXEC)) < 0)
		wfail("eventfd");

	pthread_t t;
	start_handler(&t, &h);
	uint64_t protect_ns = 0;
	for (unsigned pass = 0; pass < o->passes; pass++) {
		struct uffdio_writeprotect all = {
			.range = { .start = (uintptr_t)base, .len = len },
			.mode = UFFDIO_WRITEPROTECT_MODE_WP,
		};
		uint64_t p0 = ts_ns(CLOCK_MONOTONIC);
		if (ioctl(h.uffd, UFFDIO_WRITEPROTECT, &all) != 0)
			wfail("pass %u: UFFDIO_WRITEPROTECT(WP) of the whole region", pass);
		protect_ns += ts_ns(CLOCK_MONOTONIC) - p0;
		check_all_protected(base, pages, psz, pass);

		uint64_t w0 = ts_ns(CLOCK_MONOTONIC), c0 = ts_ns(CLOCK_PROCESS_CPUTIME_ID);
		for (size_t i = 0; i < pages; i++)
			*(volatile char *)(base + i * psz + 8) = (char)wp_byte(i, pass);
		uint64_t c1 = ts_ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ts_ns(CLOCK_MONOTONIC);

		/* Validate: one WP fault per page, every write landed, nothing
		 * else changed, and no page is left write-protected. */
		check_and_reset_faults(&h, pass);
		uint64_t *pm = read_pagemap(base, pages, psz);
		for (size_t i = 0; i < pages; i++) {
			const char *p = base + i * psz;
			uint64_t hd, tl;
			memcpy(&hd, p, 8);
			memcpy(&tl, p + psz - 8, 8);
			errno = 0;
			if ((unsigned char)p[8] != wp_byte(i, pass) || hd != (HDR_MAGIC ^ (uint64_t)i) ||
			    tl != ~(uint64_t)i)
				wfail("pass %u: page %zu has the wrong contents after its WP fault", pass, i);
			if (pm[i] >> PM_BIT_UFFD_WP & 1)
				wfail("pass %u: page %zu is still write-protected after its fault "
				      "(pagemap %#" PRIx64 ")", pass, i, pm[i]);
		}
		free(pm);
		finish_result(res, pages, pass, w1 - w0, c1 - c0);
	}
	stop_handler(t, &h);

	struct uffdio_range ur = { .start = (uintptr_t)base, .len = len };
	if (ioctl(h.uffd, UFFDIO_UNREGISTER, &ur) != 0)
		wfail("UFFDIO_UNREGISTER");
	close(h.stopfd);
	close(h.uffd);
	munmap(base, len);
	snprintf(res->extra, sizeof res->extra,
		 "faults=%" PRIu64 " eagain=%" PRIu64 " protect_all_ns=%" PRIu64,
		 h.total_msgs, h.eagain, protect_ns / o->passes);
	free(h.seen);
}

static void work_ioctl(const struct wopts *o, struct wresult *res)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		wfail("pipe2");
	if (write(p[1], "abc", 3) != 3)
		wfail("write(pipe)");
	int n = 0;
	for (int i = 0; i < 1000; i++) /* warm up */
		if (ioctl(p[0], FIONREAD, &n) != 0)
			wfail("ioctl(pipe, FIONREAD)");
	uint64_t iters = o->ioctl_iters;
	for (unsigned pass = 0; pass < o->passes; pass++) {
		uint64_t bad = 0;
		uint64_t w0 = ts_ns(CLOCK_MONOTONIC), c0 = ts_ns(CLOCK_PROCESS_CPUTIME_ID);
		for (uint64_t i = 0; i < iters; i++) {
			n = -1;
			if (ioctl(p[0], FIONREAD, &n) != 0)
				wfail("ioctl(pipe, FIONREAD) call %" PRIu64, i);
			bad += (n != 3);
		}
		uint64_t c1 = ts_ns(CLOCK_PROCESS_CPUTIME_ID), w1 = ts_ns(CLOCK_MONOTONIC);
		errno = 0;
		if (bad)
			wfail("FIONREAD on the pipe answered something other than 3 in %" PRIu64 " calls",
			      bad);
		finish_result(res, iters, pass, w1 - w0, c1 - c0);
	}
	close(p[0]);
	close(p[1]);
	snprintf(res->extra, sizeof res->extra, "calls=%" PRIu64, iters * o->passes);
}

/* ------------------------------------------------------------------ */
/* Workload table                                                      */
/* ------------------------------------------------------------------ */

struct workload {
	const char *name;
	void (*run)(const struct wopts *, struct wresult *);
	bool per_fault;   /* counts against the per-fault budget */
	bool show_cpu;    /* print a CPU-time row too */
	double div;       /* ns per op -> unit */
	const char *unit, *unit_json;
};

static const struct workload workloads[] = {
	{ "missing", work_missing, true, true, 1000.0, "µs/fault", "us_per_fault" },
	{ "wp", work_wp, true, true, 1000.0, "µs/fault", "us_per_fault" },
	{ "ioctl-passthrough", work_ioctl, false, true, 1.0, "ns/call", "ns_per_call" },
};
#define NWL (sizeof workloads / sizeof workloads[0])

static const struct workload *find_workload(const char *name)
{
	for (size_t i = 0; i < NWL; i++)
		if (strcmp(workloads[i].name, name) == 0)
			return &workloads[i];
	return NULL;
}

static int worker_main(const char *name, const struct wopts *o)
{
	const struct workload *w = find_workload(name);
	g_worker_name = name;
	if (!w) {
		fprintf(stderr, "fault_bench --worker: unknown workload '%s'\n", name);
		return 2;
	}
	/* Whatever happens (a shim that loses a wakeup...), do not hang the
	 * parent forever: SIGALRM's default action ends us, and the parent
	 * reports it. */
	size_t pages = (size_t)(o->mib << 20) / (size_t)sysconf(_SC_PAGESIZE);
	alarm((unsigned)(60 + o->passes * (pages / 500 + o->ioctl_iters / 100000)));
	if (o->placement != PL_FREE) {
		/* The first two CPUs we may use (one CPU: "split" is "same"). */
		cpu_set_t set;
		int cpus[2] = { -1, -1 }, n = 0;
		if (sched_getaffinity(0, sizeof set, &set) != 0)
			wfail("sched_getaffinity");
		for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
			if (CPU_ISSET(c, &set))
				cpus[n++] = c;
		if (n == 0) {
			errno = 0;
			wfail("no CPU in the affinity mask");
		}
		CPU_ZERO(&set);
		CPU_SET(cpus[0], &set);
		if (sched_setaffinity(0, sizeof set, &set) != 0) /* this thread */
			wfail("pin the main thread to CPU %d", cpus[0]);
		if (o->placement == PL_SPLIT && n == 2)
			g_handler_cpu = cpus[1];
	}
	struct wresult r = { 0 };
	w->run(o, &r);
	int loaded = shim_loaded(o->expect_lib);
	printf(RESULT_TAG " workload=%s ops=%" PRIu64 " passes=%u wall_ns=", name, r.ops, r.passes);
	for (unsigned i = 0; i < r.passes; i++)
		printf("%s%" PRIu64, i ? "," : "", r.wall_ns[i]);
	printf(" cpu_ns=");
	for (unsigned i = 0; i < r.passes; i++)
		printf("%s%" PRIu64, i ? "," : "", r.cpu_ns[i]);
	printf(" shim_loaded=%d %s\n", loaded, r.extra);
	if (fflush(stdout) != 0)
		wfail("writing the result");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Parent side                                                         */
/* ------------------------------------------------------------------ */

enum side { NATIVE = 0, SHIMMED = 1 };
static const char *side_name[] = { "native", "shimmed" };

struct wstate {
	const struct workload *w;
	bool selected;
	bool failed;
	char fail_msg[320];
	int n[2];        /* samples so far, per side */
	double *wall[2]; /* ns per op */
	double *cpu[2];
	/* paired per-round ratios (only rounds where both sides succeeded) */
	int npair;
	double *rwall, *rcpu;
};

struct popts {
	uint64_t rounds, mib, ioctl_iters, passes;
	bool pass_median; /* reduce a worker's passes by median (default: min) */
	enum placement placement;
	bool json;
	const char *shim; /* absolute path, or NULL: native only */
	char shim_wanted[PATH_MAX + 32];
};

/* Build the worker's environment: LD_PRELOAD removed (native) or set to the
 * shim alone (shimmed); everything else inherited. */
static char **worker_env(const char *preload)
{
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 2, sizeof *env);
	if (!env)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
			env[k++] = environ[i];
	if (preload) {
		size_t l = strlen(preload) + 12;
		char *s = malloc(l);
		if (!s) {
			free(env);
			return NULL;
		}
		snprintf(s, l, "LD_PRELOAD=%s", preload);
		env[k++] = s;
	}
	env[k] = NULL;
	return env;
}

static void free_env(char **env, const char *preload)
{
	if (!env)
		return;
	if (preload) {
		size_t k = 0;
		while (env[k])
			k++;
		free(env[k - 1]);
	}
	free(env);
}

static bool parse_field(const char *line, const char *key, uint64_t *out)
{
	char pat[64];
	snprintf(pat, sizeof pat, " %s=", key);
	const char *p = strstr(line, pat);
	if (!p)
		return false;
	p += strlen(pat);
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 10);
	if (errno || end == p || (*end && *end != ' ' && *end != '\n'))
		return false;
	*out = v;
	return true;
}

/* Parse " key=v1,v2,...": up to max values into out; returns how many (0 on
 * a malformed field). */
static int parse_list(const char *line, const char *key, uint64_t *out, int max)
{
	char pat[64];
	snprintf(pat, sizeof pat, " %s=", key);
	const char *p = strstr(line, pat);
	if (!p)
		return 0;
	p += strlen(pat);
	int n = 0;
	for (;;) {
		char *end;
		if (n >= max || *p < '0' || *p > '9')
			return 0;
		errno = 0;
		out[n++] = strtoull(p, &end, 10);
		if (errno)
			return 0;
		if (*end == ',') {
			p = end + 1;
			continue;
		}
		if (*end && *end != ' ')
			return 0;
		return n;
	}
}

struct sample {
	int n; /* passes */
	double wall[MAX_PASSES], cpu[MAX_PASSES]; /* ns per op, per pass */
};

/* Run one worker.  On success fills *out (ns per op, per pass) and returns 0;
 * otherwise writes a reason into msg and returns -1. */
static int run_worker(const struct popts *po, const struct workload *w, enum side side,
		      struct sample *out_sample, char *msg, size_t msgsz)
{
	char mib[32], iters[32], passes[32];
	snprintf(mib, sizeof mib, "%" PRIu64, po->mib);
	snprintf(iters, sizeof iters, "%" PRIu64, po->ioctl_iters);
	snprintf(passes, sizeof passes, "%" PRIu64, po->passes);
	const char *expect = po->shim ? po->shim : "";
	char *argv[] = { "fault_bench", "--worker", (char *)w->name, "--mib", mib,
			 "--ioctl-iters", iters, "--passes", passes,
			 "--placement", (char *)placement_name[po->placement],
			 "--expect-lib", (char *)expect, NULL };
	const char *preload = side == SHIMMED ? po->shim : NULL;
	char **env = worker_env(preload);
	int pfd[2] = { -1, -1 };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int rc = -1;

	if (!env) {
		snprintf(msg, msgsz, "out of memory");
		return -1;
	}
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		snprintf(msg, msgsz, "pipe2: %s", strerror(errno));
		free_env(env, preload);
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	int e = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	free_env(env, preload);
	if (e) {
		snprintf(msg, msgsz, "posix_spawn /proc/self/exe: %s", strerror(e));
		close(pfd[0]);
		return -1;
	}

	/* Collect the worker's stdout. */
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap + 1);
	for (;;) {
		char tmp[4096];
		ssize_t n = read(pfd[0], tmp, sizeof tmp);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (out && len < cap) {
			size_t c = (size_t)n < cap - len ? (size_t)n : cap - len;
			memcpy(out + len, tmp, c);
			len += c;
		}
	}
	close(pfd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			snprintf(msg, msgsz, "waitpid: %s", strerror(errno));
			free(out);
			return -1;
		}
	}
	if (!out) {
		snprintf(msg, msgsz, "out of memory");
		return -1;
	}
	out[len] = 0;

	/* Find our line; pass anything else through to stderr. */
	char *result = NULL;
	for (char *line = out, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (strncmp(line, RESULT_TAG " ", sizeof RESULT_TAG) == 0)
			result = line;
		else if (*line)
			fprintf(stderr, "  [%s %s stdout] %s\n", w->name, side_name[side], line);
	}

	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		snprintf(msg, msgsz, "%s worker killed by signal %d (%s)%s", side_name[side], sig,
			 strsignal(sig), sig == SIGALRM ? ": it timed out" : "");
		goto out;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(msg, msgsz, "%s worker exited with status %d (see its message above)",
			 side_name[side], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		goto out;
	}
	uint64_t ops, np, wns[MAX_PASSES], cns[MAX_PASSES];
	if (!result || !parse_field(result, "ops", &ops) || !parse_field(result, "passes", &np) ||
	    ops == 0 || np != po->passes || parse_list(result, "wall_ns", wns, MAX_PASSES) != (int)np ||
	    parse_list(result, "cpu_ns", cns, MAX_PASSES) != (int)np) {
		snprintf(msg, msgsz, "%s worker printed no valid result line", side_name[side]);
		goto out;
	}
	/* shim_loaded is -1 when there is no shim to look for. */
	const char *sl = strstr(result, " shim_loaded=");
	int loaded = sl ? atoi(sl + 13) : -2;
	if (side == SHIMMED && loaded != 1) {
		snprintf(msg, msgsz,
			 "the shimmed worker does not have %s mapped: ld.so ignored LD_PRELOAD "
			 "(see its message above)", po->shim);
		goto out;
	}
	if (side == NATIVE && loaded == 1) {
		snprintf(msg, msgsz, "the native worker has the shim mapped (LD_PRELOAD leaked?)");
		goto out;
	}
	out_sample->n = (int)np;
	for (int i = 0; i < (int)np; i++) {
		out_sample->wall[i] = (double)wns[i] / (double)ops;
		out_sample->cpu[i] = (double)cns[i] / (double)ops;
	}
	rc = 0;
out:
	free(out);
	return rc;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct stats {
	double med, min, max;
	int n;
};

static struct stats stats_of(const double *v, int n)
{
	struct stats s = { 0, 0, 0, n };
	if (n <= 0)
		return s;
	double *c = malloc((size_t)n * sizeof *c);
	if (!c)
		return s;
	memcpy(c, v, (size_t)n * sizeof *c);
	qsort(c, (size_t)n, sizeof *c, cmp_double);
	s.min = c[0];
	s.max = c[n - 1];
	s.med = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
	free(c);
	return s;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fault_bench [--rounds R] [--mib M] [--only WORKLOAD[,WORKLOAD...]] [--json]\n"
		"                   [--passes P] [--pass-stat min|median] [--ioctl-iters N]\n"
		"                   [--placement same|free|split]\n"
		"  Runs each workload natively and under the uffdshim LD_PRELOAD library,\n"
		"  interleaved for R rounds (default %d), and compares the medians.\n"
		"  --mib M          region size for the fault workloads (default %d MiB)\n"
		"  --passes P       timed passes per worker process (default %d); a worker's\n"
		"                   result is the fastest pass (--pass-stat median: the median)\n"
		"  --ioctl-iters N  ioctl calls per ioctl-passthrough pass (default %d)\n"
		"  --placement P    same (default): a worker's threads share its first allowed\n"
		"                   CPU; split: faulting thread and handler on two CPUs;\n"
		"                   free: no pinning (noisiest on this VM)\n"
		"  --json           print machine-readable JSON on stdout instead of the table\n"
		"  workloads: missing, wp, ioctl-passthrough\n"
		"  shim: $UFFDSHIM_LIB, else <dir of this program>/../libuffdshim.so\n",
		DEFAULT_ROUNDS, DEFAULT_MIB, DEFAULT_PASSES, DEFAULT_IOCTL_ITERS);
}

static void find_shim(struct popts *po)
{
	const char *env = getenv("UFFDSHIM_LIB");
	char exe[PATH_MAX];
	po->shim = NULL;
	if (env && *env) {
		snprintf(po->shim_wanted, sizeof po->shim_wanted, "%s", env);
	} else {
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0) {
			snprintf(po->shim_wanted, sizeof po->shim_wanted, "libuffdshim.so");
			return;
		}
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		snprintf(po->shim_wanted, sizeof po->shim_wanted, "%s/../libuffdshim.so", exe);
	}
	static char abs_path[PATH_MAX];
	if (realpath(po->shim_wanted, abs_path) && access(abs_path, R_OK) == 0) {
		po->shim = abs_path;
		snprintf(po->shim_wanted, sizeof po->shim_wanted, "%s", abs_path);
	}
}

static void fmt_val(char *buf, size_t sz, double v, const struct workload *w)
{
	if (w->div == 1.0)
		snprintf(buf, sz, "%.1f", v);
	else
		snprintf(buf, sz, "%.2f", v / w->div);
}

/* Which time the verdict rests on: with both threads on one CPU (placement
 * "same") a fault's wall time is its CPU time plus whatever other load on
 * that CPU took, so CPU time is the undisturbed measure; otherwise wall time
 * (CPU time then misses the cross-CPU wakeup latency). */
static const char *metric_name[] = { "wall", "CPU" };
static int primary_metric(const struct popts *po)
{
	return po->placement == PL_SAME ? 1 : 0;
}

struct judgement {
	bool any;          /* some per-fault row to judge */
	bool noisy;        /* an over-target row whose spread reaches below the target */
	double worst;      /* worst median paired ratio */
	double spread;     /* largest native (max-min)/median among the over rows */
	char worst_name[64];
	char over[512];    /* the rows over the target */
};

static struct judgement judge(struct wstate *ws, size_t nws, int m)
{
	struct judgement j = { 0 };
	for (size_t i = 0; i < nws; i++) {
		struct wstate *s = &ws[i];
		if (!s->selected || !s->w->per_fault || !s->npair || s->failed)
			continue;
		struct stats r = stats_of(m ? s->rcpu : s->rwall, s->npair);
		struct stats nat = stats_of(m ? s->cpu[NATIVE] : s->wall[NATIVE], s->n[NATIVE]);
		j.any = true;
		if (r.med > j.worst) {
			j.worst = r.med;
			snprintf(j.worst_name, sizeof j.worst_name, "%s", s->w->name);
		}
		if (r.med > TARGET_RATIO) {
			size_t l = strlen(j.over);
			snprintf(j.over + l, sizeof j.over - l, "%s%s %.3f [%.3f-%.3f]", l ? ", " : "",
				 s->w->name, r.med, r.min, r.max);
			if (r.min <= TARGET_RATIO)
				j.noisy = true;
			double sp = nat.med > 0 ? (nat.max - nat.min) / nat.med : 0;
			if (sp > j.spread)
				j.spread = sp;
		}
	}
	return j;
}

static void print_table(const struct popts *po, struct wstate *ws, size_t nws)
{
	size_t psz = (size_t)sysconf(_SC_PAGESIZE);
	printf("fault_bench: %" PRIu64 " rounds x %" PRIu64 " passes per worker (%s pass kept); "
	       "fault workloads on %" PRIu64 " MiB (%zu pages of %zu KiB); ioctl loop of %" PRIu64
	       " calls; thread placement: %s\n",
	       po->rounds, po->passes, po->pass_median ? "median" : "fastest", po->mib,
	       (size_t)(po->mib << 20) / psz, psz / 1024, po->ioctl_iters,
	       placement_name[po->placement]);
	if (po->shim)
		printf("shim: %s\n", po->shim);
	else
		printf("shim: NOT FOUND (%s): native only\n", po->shim_wanted);
	printf("each round runs native and shimmed back to back (order alternating); "
	       "ratio = median of per-round shimmed/native [min-max]\n\n");
	printf("%-18s %-5s %-9s %11s %11s %8s  %-15s %s\n", "workload", "time", "unit", "native med",
	       "shimmed med", "ratio", "[min-max]", "native spread");

	for (size_t i = 0; i < nws; i++) {
		struct wstate *s = &ws[i];
		if (!s->selected)
			continue;
		for (int m = 0; m < (s->w->show_cpu ? 2 : 1); m++) {
			struct stats nat = stats_of(m ? s->cpu[NATIVE] : s->wall[NATIVE], s->n[NATIVE]);
			struct stats sh = stats_of(m ? s->cpu[SHIMMED] : s->wall[SHIMMED], s->n[SHIMMED]);
			struct stats r = stats_of(m ? s->rcpu : s->rwall, s->npair);
			char a[32] = "-", b[32] = "-", c[16] = "-", d[32] = "", e[16] = "-";
			if (nat.n)
				fmt_val(a, sizeof a, nat.med, s->w);
			if (sh.n)
				fmt_val(b, sizeof b, sh.med, s->w);
			if (r.n) {
				snprintf(c, sizeof c, "%.3f", r.med);
				snprintf(d, sizeof d, "[%.3f-%.3f]", r.min, r.max);
			}
			if (nat.n > 1 && nat.med > 0)
				snprintf(e, sizeof e, "%.1f%%", 100.0 * (nat.max - nat.min) / nat.med);
			/* pad the unit by characters, not bytes ("µ" is two) */
			int ulen = 0;
			for (const char *u = s->w->unit; *u; u++)
				ulen += ((unsigned char)*u & 0xc0) != 0x80;
			printf("%-18s %-5s %s%*s %11s %11s %8s  %-15s %s\n", s->w->name, m ? "cpu" : "wall",
			       s->w->unit, ulen < 9 ? 9 - ulen : 0, "", a, b, c, d, e);
		}
		if (s->failed)
			printf("%-18s FAILED: %s\n", s->w->name, s->fail_msg);
	}
	printf("\n");

	/* Interposition cost on unrelated fds, in absolute terms. */
	for (size_t i = 0; i < nws; i++) {
		struct wstate *s = &ws[i];
		if (!s->selected || s->w->per_fault || !s->n[NATIVE] || !s->n[SHIMMED])
			continue;
		int m = primary_metric(po);
		struct stats nat = stats_of(m ? s->cpu[NATIVE] : s->wall[NATIVE], s->n[NATIVE]);
		struct stats sh = stats_of(m ? s->cpu[SHIMMED] : s->wall[SHIMMED], s->n[SHIMMED]);
		printf("%s: the shim adds %+.1f ns per call (%s time, difference of medians; "
		       "informational, not in the verdict)\n",
		       s->w->name, sh.med - nat.med, metric_name[m]);
	}

	/* Verdict: every per-fault row (wall and CPU) of the workloads that
	 * completed, against the target; failed workloads are named. */
	char failed[256] = "";
	for (size_t i = 0; i < nws; i++) {
		size_t l = strlen(failed);
		if (ws[i].selected && ws[i].failed)
			snprintf(failed + l, sizeof failed - l, "%s%s", l ? ", " : "", ws[i].w->name);
	}
	if (*failed)
		printf("FAILED workloads: %s (see the messages above; exit status 1)\n", failed);
	if (!po->shim) {
		printf("VERDICT: none (shim not found at %s; ran native only)\n", po->shim_wanted);
		return;
	}
	int prim = primary_metric(po), sec = !prim;
	struct judgement jp = judge(ws, nws, prim), js = judge(ws, nws, sec);
	const char *partial = *failed ? " (only the workloads that did not fail)" : "";
	if (!jp.any) {
		printf("VERDICT: none (no per-fault workload completed on both sides)\n");
		return;
	}
	printf("VERDICT: ");
	if (!*jp.over)
		printf("within the %.2f target%s by %s time per fault (worst %.3f, %s)", TARGET_RATIO,
		       partial, metric_name[prim], jp.worst, jp.worst_name);
	else
		printf("OVER the %.2f target%s by %s time per fault: %s", TARGET_RATIO, partial,
		       metric_name[prim], jp.over);
	if (!*js.over)
		printf("; %s time per fault within too (worst %.3f, %s)", metric_name[sec], js.worst,
		       js.worst_name);
	else
		printf("; %s time per fault over: %s", metric_name[sec], js.over);
	if (*jp.over || *js.over) {
		if (jp.noisy || js.noisy)
			printf(" -- noisy: native spread up to %.0f%%, rerun with more --rounds",
			       100 * (jp.spread > js.spread ? jp.spread : js.spread));
		if (!*jp.over && prim == 1)
			printf(" (wall over but CPU within: other load on the CPU, or the shim waiting/sleeping)");
	}
	printf("\n");
}

static void json_samples(const double *v, int n, double div)
{
	printf("[");
	for (int i = 0; i < n; i++)
		printf("%s%.4f", i ? ", " : "", v[i] / div);
	printf("]");
}

static void json_stats(const char *key, const double *v, int n, double div)
{
	struct stats s = stats_of(v, n);
	printf("\"%s\": {\"n\": %d", key, n);
	if (n)
		printf(", \"median\": %.4f, \"min\": %.4f, \"max\": %.4f", s.med / div, s.min / div,
		       s.max / div);
	printf(", \"samples\": ");
	json_samples(v, n, div);
	printf("}");
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_json(const struct popts *po, struct wstate *ws, size_t nws)
{
	printf("{\"bench\": \"fault_bench\", \"rounds\": %" PRIu64 ", \"passes\": %" PRIu64
	       ", \"pass_stat\": \"%s\", \"mib\": %" PRIu64 ", \"ioctl_iters\": %" PRIu64
	       ", \"placement\": \"%s\", \"target_ratio\": %.2f, \"shim\": ",
	       po->rounds, po->passes, po->pass_median ? "median" : "min", po->mib, po->ioctl_iters,
	       placement_name[po->placement], TARGET_RATIO);
	if (po->shim)
		json_str(po->shim);
	else
		printf("null");
	printf(",\n \"results\": [");
	bool first = true, any_failed = false;
	for (size_t i = 0; i < nws; i++) {
		struct wstate *s = &ws[i];
		if (!s->selected)
			continue;
		for (int m = 0; m < (s->w->show_cpu ? 2 : 1); m++) {
			printf("%s\n  {\"workload\": \"%s\", \"time\": \"%s\", \"unit\": \"%s\", "
			       "\"per_fault\": %s, \"failed\": %s",
			       first ? "" : ",", s->w->name, m ? "cpu" : "wall", s->w->unit_json,
			       s->w->per_fault ? "true" : "false", s->failed ? "true" : "false");
			first = false;
			if (s->failed) {
				printf(", \"error\": ");
				json_str(s->fail_msg);
			}
			printf(",\n   ");
			json_stats("native", m ? s->cpu[NATIVE] : s->wall[NATIVE], s->n[NATIVE], s->w->div);
			printf(",\n   ");
			json_stats("shimmed", m ? s->cpu[SHIMMED] : s->wall[SHIMMED], s->n[SHIMMED],
				   s->w->div);
			printf(",\n   ");
			json_stats("ratio", m ? s->rcpu : s->rwall, s->npair, 1.0);
			printf("}");
			if (s->failed)
				any_failed = true;
		}
	}
	printf("\n ],\n \"verdict\": ");
	/* status: within/over the target by the primary metric (per-fault rows
	 * of the workloads that completed), or none; failures are separate. */
	int prim = primary_metric(po);
	struct judgement jp = judge(ws, nws, prim), js = judge(ws, nws, !prim);
	if (!po->shim || !jp.any)
		printf("{\"status\": \"none\"");
	else
		printf("{\"status\": \"%s\", \"metric\": \"%s\", \"worst_ratio\": %.4f, "
		       "\"other_metric\": \"%s\", \"other_status\": \"%s\", \"other_worst_ratio\": %.4f",
		       *jp.over ? "over" : "within", prim ? "cpu" : "wall", jp.worst, prim ? "wall" : "cpu",
		       *js.over ? "over" : "within", js.worst);
	printf(", \"any_workload_failed\": %s}", any_failed ? "true" : "false");
	printf("\n}\n");
}

int main(int argc, char **argv)
{
	struct popts po = { .rounds = DEFAULT_ROUNDS, .mib = DEFAULT_MIB,
			    .ioctl_iters = DEFAULT_IOCTL_ITERS, .passes = DEFAULT_PASSES,
			    .placement = PL_SAME };
	const char *worker = NULL, *only = NULL, *expect = "";

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
		const char *eq = strchr(a, '=');
		char key[64];
		if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof key) {
			memcpy(key, a, (size_t)(eq - a));
			key[eq - a] = 0;
			val = eq + 1;
			a = key;
		}
		bool takes = strcmp(a, "--rounds") == 0 || strcmp(a, "--mib") == 0 ||
			     strcmp(a, "--only") == 0 || strcmp(a, "--ioctl-iters") == 0 ||
			     strcmp(a, "--worker") == 0 || strcmp(a, "--expect-lib") == 0 ||
			     strcmp(a, "--passes") == 0 || strcmp(a, "--pass-stat") == 0 ||
			     strcmp(a, "--placement") == 0;
		if (takes && !val) {
			if (i + 1 >= argc) {
				fprintf(stderr, "fault_bench: %s needs a value\n", a);
				return 2;
			}
			val = argv[++i];
		} else if (!takes && val) {
			fprintf(stderr, "fault_bench: %s takes no value\n", a);
			return 2;
		}
		bool ok = true;
		if (strcmp(a, "--rounds") == 0)
			ok = parse_u64(val, 1, 1000, &po.rounds);
		else if (strcmp(a, "--mib") == 0)
			ok = parse_u64(val, 1, 1 << 20, &po.mib);
		else if (strcmp(a, "--ioctl-iters") == 0)
			ok = parse_u64(val, 1, 1000000000, &po.ioctl_iters);
		else if (strcmp(a, "--passes") == 0)
			ok = parse_u64(val, 1, MAX_PASSES, &po.passes);
		else if (strcmp(a, "--placement") == 0) {
			ok = false;
			for (int k = 0; k < 3; k++)
				if (strcmp(val, placement_name[k]) == 0) {
					po.placement = (enum placement)k;
					ok = true;
				}
		} else if (strcmp(a, "--pass-stat") == 0) {
			ok = strcmp(val, "min") == 0 || strcmp(val, "median") == 0;
			po.pass_median = strcmp(val, "median") == 0;
		} else if (strcmp(a, "--only") == 0)
			only = val;
		else if (strcmp(a, "--worker") == 0)
			worker = val;
		else if (strcmp(a, "--expect-lib") == 0)
			expect = val;
		else if (strcmp(a, "--json") == 0)
			po.json = true;
		else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "fault_bench: unknown argument '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
		if (!ok) {
			fprintf(stderr, "fault_bench: bad value '%s' for %s\n", val, a);
			return 2;
		}
	}

	if (worker) {
		struct wopts wo = { .placement = po.placement, .mib = po.mib, .ioctl_iters = po.ioctl_iters,
				    .passes = (unsigned)po.passes, .expect_lib = expect };
		return worker_main(worker, &wo);
	}

	struct wstate ws[NWL];
	memset(ws, 0, sizeof ws);
	for (size_t i = 0; i < NWL; i++) {
		ws[i].w = &workloads[i];
		ws[i].selected = only == NULL;
	}
	if (only) {
		char *list = strdup(only), *save = NULL;
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			const struct workload *w = find_workload(t);
			if (!w) {
				fprintf(stderr, "fault_bench: unknown workload '%s' (missing, wp, ioctl-passthrough)\n", t);
				return 2;
			}
			ws[w - workloads].selected = true;
		}
		free(list);
	}
	for (size_t i = 0; i < NWL; i++) {
		for (int s = 0; s < 2; s++) {
			ws[i].wall[s] = calloc(po.rounds, sizeof(double));
			ws[i].cpu[s] = calloc(po.rounds, sizeof(double));
		}
		ws[i].rwall = calloc(po.rounds, sizeof(double));
		ws[i].rcpu = calloc(po.rounds, sizeof(double));
		if (!ws[i].wall[0] || !ws[i].wall[1] || !ws[i].cpu[0] || !ws[i].cpu[1] ||
		    !ws[i].rwall || !ws[i].rcpu) {
			fprintf(stderr, "fault_bench: out of memory\n");
			return 2;
		}
	}

	find_shim(&po);
	if (!po.shim)
		fprintf(stderr, "fault_bench: shim not found at %s: running native only\n", po.shim_wanted);

	for (uint64_t r = 0; r < po.rounds; r++) {
		char progress[512];
		size_t pl = (size_t)snprintf(progress, sizeof progress, "round %" PRIu64 "/%" PRIu64 ":",
					     r + 1, po.rounds);
		for (size_t i = 0; i < NWL; i++) {
			struct wstate *s = &ws[i];
			if (!s->selected || s->failed)
				continue;
			double wall[2] = { 0, 0 }, cpu[2] = { 0, 0 };
			bool ok[2] = { false, false };
			enum side order[2] = { NATIVE, SHIMMED };
			if (r % 2) {
				order[0] = SHIMMED;
				order[1] = NATIVE;
			}
			for (int k = 0; k < 2; k++) {
				enum side side = order[k];
				if (side == SHIMMED && !po.shim)
					continue;
				char msg[256];
				struct sample smp;
				if (run_worker(&po, s->w, side, &smp, msg, sizeof msg) != 0) {
					s->failed = true;
					snprintf(s->fail_msg, sizeof s->fail_msg, "round %" PRIu64 ": %s", r + 1, msg);
					fprintf(stderr, "fault_bench: %s FAILED: %s\n", s->w->name, s->fail_msg);
					break;
				}
				ok[side] = true;
				struct stats sw = stats_of(smp.wall, smp.n), sc = stats_of(smp.cpu, smp.n);
				wall[side] = po.pass_median ? sw.med : sw.min;
				cpu[side] = po.pass_median ? sc.med : sc.min;
			}
			for (int side = 0; side < 2; side++) {
				if (!ok[side])
					continue;
				s->wall[side][s->n[side]] = wall[side];
				s->cpu[side][s->n[side]] = cpu[side];
				s->n[side]++;
			}
			if (ok[NATIVE] && ok[SHIMMED] && wall[NATIVE] > 0 && cpu[NATIVE] > 0) {
				s->rwall[s->npair] = wall[SHIMMED] / wall[NATIVE];
				s->rcpu[s->npair] = cpu[SHIMMED] / cpu[NATIVE];
				s->npair++;
			}
			if (pl < sizeof progress) {
				char a[32] = "-", b[32] = "-";
				if (ok[NATIVE])
					fmt_val(a, sizeof a, wall[NATIVE], s->w);
				if (ok[SHIMMED])
					fmt_val(b, sizeof b, wall[SHIMMED], s->w);
				pl += (size_t)snprintf(progress + pl, sizeof progress - pl, "  %s: %s native, %s shimmed %s;",
						       s->w->name, a, b, s->w->unit);
			}
		}
		fprintf(stderr, "%s\n", progress);
	}

	if (po.json)
		print_json(&po, ws, NWL);
	else
		print_table(&po, ws, NWL);

	int rc = 0;
	for (size_t i = 0; i < NWL; i++)
		if (ws[i].selected && ws[i].failed)
			rc = 1;
	return rc;
}
