/* track_bench.c - the cost of dirty tracking (UCTL_TRACK_*, shim/shim_track.c
 * and `uffd-record track`), measured side by side in one run.
 *
 * Part 1, "write": a worker process runs under the shim (LD_PRELOAD) and
 * writes to a 256 MiB private anonymous region (populated, THP off): each
 * write is 64 bytes at a random 64-byte slot of a random 4 KiB page of the
 * region, so every epoch re-dirties the working set.  Two patterns by
 * default (--hot-mib 0,16): the whole region (every page re-dirtied every
 * 100 ms: the worst case) and a 16 MiB hot window (4096 pages per epoch; the
 * whole region is still tracked).  The figure is writes per second.
 *
 * This VM's memory throughput drifts by +-30% from second to second and
 * from process to process (page placement, neighbours, DAMON), so the
 * variants are not compared across processes: one worker process
 * alternates phases of --secs (default 1 s)
 *     U X U Y U Z U | U Y U Z U X U | ...      (one "round" per group)
 * where U is untracked and X, Y, Z are the tracked variants (order rotating
 * from round to round), and each tracked phase is paired with the mean of
 * the two U phases around it.  The parent moves the phases through a shared
 * page (a memfd on the worker's fd 3); the worker notices within 1024 writes
 * and records its write count, CPU time and minor faults at each change.
 * Between phases there is an unmeasured gap where the monitor is started or
 * stopped, and after stopping one a settle time (0.3 s) in which the working
 * set becomes writable again.  Variants:
 *
 *   untracked     nothing tracks the worker (it is shimmed and holds a uffd,
 *                 so the shim's control thread runs, as in every phase)
 *   async-floor   the kernel floor: no shim involvement in tracking; the
 *                 worker's own WP_ASYNC uffd over the region and a thread of
 *                 its own doing PAGEMAP_SCAN(WP_MATCHING) every interval
 *   async-proto   this program is the monitor and speaks the control
 *                 protocol itself: TRACK_START on the region, TRACK_CUT every
 *                 --interval ms, TRACK_STOP: the shim-side cost alone
 *   async-tool    `uffd-record track PID -D DIR --interval MS --range A-B`
 *                 runs alongside and writes the image chain to DIR (a tmpfs
 *                 dir under /dev/shm when writable): the full tool
 *   sync-proto    in a second worker process that registered its region in
 *                 WP mode with a uffd of its own and runs a handler thread
 *                 blocked in read(): it protects nothing itself, so every
 *                 WP fault is the tracker's, taken out of the handler's
 *                 read() by the shim (its own faults are counted and must be
 *                 zero); monitored through the protocol; its U phases are
 *                 the "sync-base" row
 *   sync-tool     the same, with the tool (not in the default set)
 *
 * The worker's threads (the writer, the shim's threads it starts, the sync
 * handler, the floor scanner) share the first allowed CPU, and the monitor
 * (this program or the tool) runs on the second, so the shim's scanning and
 * the faults are charged to the workload's throughput and the monitor's own
 * work is not (--no-pin: no pinning).  The table gives per variant the
 * median writes/s over its phases, the median of the paired ratios
 * variant/untracked with their min-max, cost = 1/ratio (time per write),
 * and what the monitor saw (epochs, pages per cut, the cut's wp_ns and wall
 * time); then the extra worker CPU per WP fault, and a verdict against the
 * issue's target (async tracking <= 1.10 x the untracked cost at 100 ms
 * epochs), printed, never turned into an exit status.
 *
 * Part 2, "cut": a worker under the shim populates 1 GiB (--cut-mib) which
 * this program tracks (protocol).  For 0, 1k, 10k and 100k dirty pages
 * (distinct pages spread over the region; the worker writes them, then this
 * program cuts) it times one TRACK_CUT (wall, and the reply's wp_ns: the
 * shim's scan + re-protect), checks that the cut reported exactly the pages
 * written, and reads them with process_vm_readv (checking a tag in each).
 * Least squares over all samples gives the fixed cost of a cut over the
 * region and the cost per dirty page (--cut-sync: the same for a region the
 * app registered in WP mode).
 *
 * Default runtime about 80 s.  Exit status: 0 (also when userfaultfd,
 * WP_ASYNC or the shim is missing: a note says why; benchmarks are not
 * tests), 1 if something did not work (a worker failed, a cut missed a
 * written page, the app saw a fault of the tracker, the tool failed), 2 on
 * bad usage.  The shim: $UFFDSHIM_LIB, else <dir of this program>/../
 * libuffdshim.so; the tool: $UFFDSHIM_BUILD/uffd-record, else <dir of this
 * program>/../uffd-record. */
#include "uffd_compat.h"
#include "uffdshim_ctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PG ((uint64_t)4096)
#define TARGET_COST 1.10
#define WRITE_BASE 0x7e6000000000ULL /* fixed, so the printed --range is exact */
#define CUT_BASE 0x7e7000000000ULL
#define MAX_ROUNDS 50
#define MAX_SAMPLES 4096
#define SPREAD_MUL 2654435761ULL /* prime > any page count: i -> (a*i+b) mod n is a bijection */

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
static uint64_t mono(void)
{
	return now_ns(CLOCK_MONOTONIC);
}

/* ------------------------------------------------------------------ */
/* Shared by both sides                                                */
/* ------------------------------------------------------------------ */

/* The i-th of the distinct pages a DIRTY command writes. */
static uint64_t spread_page(uint64_t i, uint64_t seed, uint64_t npages)
{
	return (SPREAD_MUL * i + seed * 7919) % npages;
}
static uint64_t page_tag(uint64_t seed, uint64_t pg)
{
	return 0x7472616b00000000ULL ^ (seed << 40) ^ pg;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Pin the calling thread (and the threads it starts afterwards). */
static bool pin_to(int cpu)
{
	if (cpu < 0)
		return true;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof set, &set) == 0;
}

/* ------------------------------------------------------------------ */
/* Worker side (runs under the shim)                                   */
/* ------------------------------------------------------------------ */

__attribute__((noreturn, format(printf, 1, 2))) static void wfail(const char *fmt, ...)
{
	char buf[512];
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "track_bench worker [pid %d]: FAILED: %s (errno %d: %s)\n", (int)getpid(),
		buf, e, e ? strerror(e) : "-");
	_exit(3);
}

struct wopts {
	const char *kind; /* write | cut */
	bool sync;        /* register the region WP with a uffd of our own */
	uint64_t mib, hot_mib, interval_ms;
	int cpu;
};

/* Shared by the parent and a write worker: a memfd, the worker's fd 3.  The
 * parent moves the phase on; the worker notices within 1024 writes and
 * records a mark (its write count, times, faults) for each phase it enters. */
#define MAX_MARKS 1024
struct mark {
	int32_t phase, pad;
	uint64_t writes, ns, cpu_ns, minflt;
};
struct shm {
	volatile int32_t phase;     /* parent: the current phase; -1: stop */
	volatile int32_t floor_req; /* parent: 1 = the in-process floor tracker on */
	volatile int32_t floor_ack; /* worker: 1 = protecting, 0 = released */
	volatile int32_t nmarks;
	struct mark marks[MAX_MARKS];
	volatile int32_t fl_epochs; /* the floor tracker's epochs since floor_req = 1 */
	double fl_dirty[1024], fl_scan_ms[1024];
	volatile uint64_t own_faults, other_msgs; /* the sync handler's */
};

static char *map_fixed(uint64_t want, size_t len)
{
	char *p = mmap((void *)want, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED || (uint64_t)p != want) {
		if (p != MAP_FAILED)
			munmap(p, len);
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0);
		if (p == MAP_FAILED)
			wfail("mmap %zu bytes", len);
	}
	if (madvise(p, len, MADV_NOHUGEPAGE) != 0)
		wfail("madvise(MADV_NOHUGEPAGE)");
	return p;
}

/* The app's uffd.  libc syscall(), so the shim sees it (and starts its
 * control thread).  User-mode only: the faults we care for are user writes. */
static int app_uffd(bool blocking, uint64_t features)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | (blocking ? 0 : O_NONBLOCK) |
						       UFFD_USER_MODE_ONLY);
	if (fd < 0)
		wfail("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api) != 0)
		wfail("UFFDIO_API");
	return fd;
}

struct handler {
	int uffd;
	struct shm *shm;
};

/* The sync workload's handler: it protects nothing, so every WP fault is
 * the tracker's and the shim takes it out of this read(). */
static void *handler_main(void *arg)
{
	struct handler *h = arg;
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(h->uffd, &m, sizeof m);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n != (ssize_t)sizeof m)
			return NULL;
		if (m.event == UFFD_EVENT_PAGEFAULT && (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			/* should have been swallowed by the shim: count it,
			 * resolve it anyway */
			h->shm->own_faults++;
			struct uffdio_writeprotect w = {
				.range = { m.arg.pagefault.address & ~(PG - 1), PG }, .mode = 0 };
			ioctl(h->uffd, UFFDIO_WRITEPROTECT, &w);
		} else {
			h->shm->other_msgs++;
		}
	}
}

/* The kernel floor of async tracking: what the shim does, done by the app
 * itself: a WP_ASYNC uffd of its own over the region, and this thread
 * collecting and re-protecting the written pages with PAGEMAP_SCAN every
 * interval.  On while the parent holds floor_req at 1. */
struct floor {
	struct shm *shm;
	uint64_t start, end, interval_ns;
};

static void *floor_main(void *arg)
{
	struct floor *f = arg;
	struct shm *s = f->shm;
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		wfail("open /proc/self/pagemap");
	static struct page_region v[1024];
	for (;;) {
		while (!__atomic_load_n(&s->floor_req, __ATOMIC_ACQUIRE)) {
			if (__atomic_load_n(&s->phase, __ATOMIC_ACQUIRE) < 0)
				return NULL;
			usleep(1000);
		}
		int fd = app_uffd(false, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED);
		struct uffdio_register reg = { .range = { f->start, f->end - f->start },
					       .mode = UFFDIO_REGISTER_MODE_WP };
		struct uffdio_writeprotect wp = { .range = { f->start, f->end - f->start },
						  .mode = UFFDIO_WRITEPROTECT_MODE_WP };
		if (ioctl(fd, UFFDIO_REGISTER, &reg) || ioctl(fd, UFFDIO_WRITEPROTECT, &wp))
			wfail("floor: register + protect the region (WP_ASYNC)");
		s->fl_epochs = 0;
		__atomic_store_n(&s->floor_ack, 1, __ATOMIC_RELEASE);
		struct timespec next;
		clock_gettime(CLOCK_MONOTONIC, &next);
		while (__atomic_load_n(&s->floor_req, __ATOMIC_ACQUIRE)) {
			uint64_t t = (uint64_t)next.tv_nsec + f->interval_ns;
			next.tv_sec += (time_t)(t / 1000000000ULL);
			next.tv_nsec = (long)(t % 1000000000ULL);
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
				;
			if (!__atomic_load_n(&s->floor_req, __ATOMIC_ACQUIRE))
				break;
			uint64_t t0 = mono(), pages = 0;
			for (uint64_t cur = f->start; cur < f->end;) {
				struct pm_scan_arg a = { .size = sizeof a, .start = cur, .end = f->end,
							 .vec = (uint64_t)v, .vec_len = 1024,
							 .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
							 .category_mask = PAGE_IS_WRITTEN,
							 .return_mask = PAGE_IS_WRITTEN };
				long r = ioctl(pm, PAGEMAP_SCAN, &a);
				if (r < 0)
					wfail("floor: PAGEMAP_SCAN");
				for (long i = 0; i < r; i++)
					pages += (v[i].end - v[i].start) / PG;
				if (r < 1024 || a.walk_end <= cur || a.walk_end >= f->end)
					break;
				cur = a.walk_end;
			}
			int e = s->fl_epochs;
			if (e < 1024) {
				s->fl_dirty[e] = (double)pages;
				s->fl_scan_ms[e] = (mono() - t0) / 1e6;
				__atomic_store_n(&s->fl_epochs, e + 1, __ATOMIC_RELEASE);
			}
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > next.tv_sec ||
			    (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
				next = now; /* behind: the next epoch is a whole interval */
		}
		close(fd); /* unregisters the region */
		__atomic_store_n(&s->floor_ack, 0, __ATOMIC_RELEASE);
	}
}

/* One line from stdin (the parent's commands); false at EOF. */
static bool read_cmd(char *buf, size_t len)
{
	size_t n = 0;
	while (n + 1 < len) {
		char c;
		ssize_t r = read(0, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (c == '\n') {
			buf[n] = 0;
			return true;
		}
		buf[n++] = c;
	}
	buf[n] = 0;
	return n > 0;
}

static inline uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void add_mark(struct shm *s, int32_t phase, uint64_t writes)
{
	int n = s->nmarks;
	if (n >= MAX_MARKS)
		wfail("too many phases");
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	s->marks[n] = (struct mark){ .phase = phase, .writes = writes, .ns = mono(),
				     .cpu_ns = now_ns(CLOCK_PROCESS_CPUTIME_ID),
				     .minflt = (uint64_t)ru.ru_minflt };
	__atomic_store_n(&s->nmarks, n + 1, __ATOMIC_RELEASE);
}

static int worker_main(const struct wopts *o)
{
	alarm(1800); /* never hang the parent forever */
	if (!pin_to(o->cpu))
		wfail("pin to CPU %d", o->cpu);
	bool cut = strcmp(o->kind, "cut") == 0;
	size_t len = (size_t)o->mib << 20, npages = len / PG;
	struct shm *shm = NULL;
	if (!cut) {
		shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
		if (shm == MAP_FAILED)
			wfail("mmap the shared page (fd 3)");
	} else {
		static struct shm local;
		shm = &local;
	}
	char *base = map_fixed(cut ? CUT_BASE : WRITE_BASE, len);
	for (size_t i = 0; i < npages; i++) /* populate, with each page's index */
		*(volatile uint64_t *)(base + i * PG) = i;

	/* A uffd in every case: it starts the shim's control thread (on this
	 * CPU: threads inherit the affinity). */
	struct handler h = { .uffd = -1, .shm = shm };
	int uffd = app_uffd(o->sync, 0);
	pthread_t t;
	if (o->sync) {
		struct uffdio_register reg = { .range = { (uint64_t)base, len },
					       .mode = UFFDIO_REGISTER_MODE_WP };
		if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
			wfail("UFFDIO_REGISTER(WP) of the region");
		h.uffd = uffd;
		if (pthread_create(&t, NULL, handler_main, &h) != 0)
			wfail("pthread_create");
	} else if (!cut) {
		static struct floor fl;
		fl = (struct floor){ .shm = shm, .start = (uint64_t)base, .end = (uint64_t)base + len,
				     .interval_ns = o->interval_ms * 1000000ULL };
		if (pthread_create(&t, NULL, floor_main, &fl) != 0)
			wfail("pthread_create");
	}
	printf("READY %d %#" PRIx64 " %#" PRIx64 "\n", (int)getpid(), (uint64_t)base, (uint64_t)len);
	fflush(stdout);

	char cmd[128];
	if (!cut) {
		size_t wpages = o->hot_mib && o->hot_mib < o->mib ? (size_t)(o->hot_mib << 20) / PG : npages;
		uint64_t s = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid(), writes = 0;
		int32_t cur = __atomic_load_n(&shm->phase, __ATOMIC_ACQUIRE);
		add_mark(shm, cur, 0);
		while (cur >= 0) {
			for (int k = 0; k < 1024; k++) {
				uint64_t x = xorshift(&s);
				size_t pg = (size_t)(((x >> 32) * (uint64_t)wpages) >> 32);
				uint64_t *p = (uint64_t *)(base + pg * PG + ((x & 63) << 6));
				for (int j = 0; j < 8; j++)
					p[j] = x + (uint64_t)j;
			}
			writes += 1024;
			int32_t ph = __atomic_load_n(&shm->phase, __ATOMIC_ACQUIRE);
			if (ph != cur) {
				add_mark(shm, ph, writes);
				cur = ph;
			}
		}
		printf("RESULT writes=%" PRIu64 " own_faults=%" PRIu64 " other_msgs=%" PRIu64 "\n", writes,
		       shm->own_faults, shm->other_msgs);
		fflush(stdout);
		while (read_cmd(cmd, sizeof cmd)) /* stay until the parent is done */
			;
	} else {
		while (read_cmd(cmd, sizeof cmd)) {
			unsigned long long n, seed;
			if (sscanf(cmd, "DIRTY %llu %llu", &n, &seed) != 2 || n > npages)
				wfail("bad command '%s'", cmd);
			uint64_t w0 = mono();
			for (uint64_t i = 0; i < n; i++) {
				uint64_t pg = spread_page(i, seed, npages);
				*(volatile uint64_t *)(base + pg * PG) = page_tag(seed, pg);
			}
			printf("DONE %llu %" PRIu64 " own_faults=%" PRIu64 "\n", n, mono() - w0,
			       shm->own_faults);
			fflush(stdout);
		}
	}
	/* Leave without joining the handler (blocked in read). */
	fflush(stdout);
	_exit(shm->own_faults || shm->other_msgs ? 4 : 0);
}

/* ------------------------------------------------------------------ */
/* Parent side                                                         */
/* ------------------------------------------------------------------ */

struct popts {
	uint64_t rounds, mib, hot_mib, cut_mib, interval_ms, reps, settle_ns;
	uint64_t pat[8];   /* --hot-mib list: one write pattern each (0: whole region) */
	int npat;
	double secs;
	bool pin, quick, do_write, do_cut, cut_sync, keep;
	unsigned variants; /* bit per enum variant */
	const char *dir;   /* parent of the tool's chains */
};

enum variant { V_UNTRACKED, V_ASYNC_FLOOR, V_ASYNC_PROTO, V_ASYNC_TOOL, V_SYNC_PROTO, V_SYNC_TOOL,
	       V_SYNC_BASE, NV };
static const char *vname[NV] = { "untracked", "async-floor", "async-proto", "async-tool",
				 "sync-proto", "sync-tool", "sync-base" };
static const bool v_sync[NV] = { false, false, false, false, true, true, true };
/* 0 none, 1 protocol, 2 tool, 3 in-process without the shim */
static const int v_track[NV] = { 0, 3, 1, 2, 1, 2, 0 };
#define DEFAULT_VARIANTS ((1u << V_ASYNC_FLOOR) | (1u << V_ASYNC_PROTO) | (1u << V_ASYNC_TOOL) | \
			  (1u << V_SYNC_PROTO))

static char g_exe[PATH_MAX], g_shim[PATH_MAX], g_tool[PATH_MAX], g_tmp[PATH_MAX];
static int g_cpu_work = -1, g_cpu_mon = -1;
static int g_failed;

__attribute__((format(printf, 1, 2))) static void pfail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "track_bench: FAILED: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	g_failed = 1;
}

/* ---- line reader over a pipe ---- */
struct lines {
	int fd;
	bool eof;
	size_t len;
	char buf[1 << 16];
};

/* Read what is there (after poll said readable). */
static void lines_fill(struct lines *l)
{
	if (l->len >= sizeof l->buf - 1) /* a line too long: drop it */
		l->len = 0;
	ssize_t n = read(l->fd, l->buf + l->len, sizeof l->buf - 1 - l->len);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		l->eof = true;
		return;
	}
	l->len += (size_t)n;
}

/* The next complete line into out (NUL-terminated), or false. */
static bool lines_next(struct lines *l, char *out, size_t outlen)
{
	char *nl = memchr(l->buf, '\n', l->len);
	if (!nl) {
		if (l->eof && l->len) { /* last line without newline */
			size_t c = l->len < outlen - 1 ? l->len : outlen - 1;
			memcpy(out, l->buf, c);
			out[c] = 0;
			l->len = 0;
			return true;
		}
		return false;
	}
	size_t n = (size_t)(nl - l->buf);
	size_t c = n < outlen - 1 ? n : outlen - 1;
	memcpy(out, l->buf, c);
	out[c] = 0;
	memmove(l->buf, nl + 1, l->len - n - 1);
	l->len -= n + 1;
	return true;
}

/* Wait up to timeout_ms for a line from l. */
static bool lines_wait(struct lines *l, char *out, size_t outlen, int timeout_ms)
{
	uint64_t end = mono() + (uint64_t)timeout_ms * 1000000ULL;
	for (;;) {
		if (lines_next(l, out, outlen))
			return true;
		if (l->eof)
			return false;
		uint64_t now = mono();
		if (now >= end)
			return false;
		struct pollfd p = { .fd = l->fd, .events = POLLIN };
		int r = poll(&p, 1, (int)((end - now) / 1000000ULL) + 1);
		if (r > 0)
			lines_fill(l);
	}
}

/* ---- processes ---- */
struct child {
	pid_t pid;
	int in;          /* its stdin (write end), or -1 */
	struct lines *out;
};

static char **env_without_preload(const char *preload)
{
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = calloc(n + 2, sizeof *env);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
			env[k++] = environ[i];
	if (preload) {
		static char pl[PATH_MAX + 16];
		snprintf(pl, sizeof pl, "LD_PRELOAD=%s", preload);
		env[k++] = pl;
	}
	env[k] = NULL;
	return env;
}

/* fork + exec with stdout on a pipe, stdin on a pipe (want_in) or
 * /dev/null, fd3 (if >= 0) as its fd 3; stderr inherited.  The child runs
 * on cpu (-1: as we do). */
static int spawn(struct child *c, char *const argv[], const char *preload, bool want_in, int cpu,
		 int fd3)
{
	int pin[2] = { -1, -1 }, pout[2];
	if ((want_in && pipe2(pin, O_CLOEXEC) != 0) || pipe2(pout, O_CLOEXEC) != 0)
		return -1;
	char **env = env_without_preload(preload);
	fflush(NULL);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* never outlive us (a worker writes until told to stop) */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (cpu >= 0)
			pin_to(cpu);
		int nul = open("/dev/null", O_RDONLY);
		dup2(want_in ? pin[0] : nul, 0);
		dup2(pout[1], 1);
		if (fd3 >= 0 && fd3 != 3)
			dup2(fd3, 3);
		else if (fd3 == 3)
			fcntl(3, F_SETFD, 0);
		execve(argv[0], argv, env);
		fprintf(stderr, "track_bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	free(env);
	if (want_in)
		close(pin[0]);
	close(pout[1]);
	c->pid = pid;
	c->in = want_in ? pin[1] : -1;
	c->out = calloc(1, sizeof *c->out);
	c->out->fd = pout[0];
	return 0;
}

/* Close its stdin, wait (SIGKILL after timeout_ms); its exit status, or
 * 128+signal. */
static int child_finish(struct child *c, int timeout_ms)
{
	if (c->pid <= 0)
		return -1;
	if (c->in >= 0)
		close(c->in);
	c->in = -1;
	int st = 0;
	uint64_t end = mono() + (uint64_t)timeout_ms * 1000000ULL;
	char line[1024];
	for (;;) {
		pid_t r = waitpid(c->pid, &st, WNOHANG);
		if (r == c->pid)
			break;
		if (mono() > end) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			break;
		}
		/* keep draining its stdout so it never blocks on a full pipe */
		struct pollfd p = { .fd = c->out->fd, .events = POLLIN };
		if (!c->out->eof && poll(&p, 1, 10) > 0)
			lines_fill(c->out);
		else if (c->out->eof)
			usleep(5000);
		while (lines_next(c->out, line, sizeof line))
			;
	}
	close(c->out->fd);
	free(c->out);
	c->out = NULL;
	c->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool say(struct child *c, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	return write(c->in, buf, (size_t)n) == n;
}

/* ---- the control protocol, spoken directly ---- */
static int ctl_connect(pid_t pid, char *err, size_t errlen)
{
	struct sockaddr_un a;
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	int n = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "%s%d", UCTL_ADDR_PREFIX, (int)pid);
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
	uint64_t end = mono() + 5000000000ULL;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			snprintf(err, errlen, "socket: %s", strerror(errno));
			return -1;
		}
		if (connect(fd, (struct sockaddr *)&a, alen) == 0) {
			struct timeval tv = { 30, 0 };
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
			return fd;
		}
		int e = errno;
		close(fd);
		if (mono() > end || (e != ECONNREFUSED && e != ENOENT && e != EAGAIN)) {
			snprintf(err, errlen, "connect to the shim of pid %d: %s", (int)pid, strerror(e));
			return -1;
		}
		usleep(10000);
	}
}

static bool io_full(int fd, void *buf, size_t len, bool wr)
{
	char *p = buf;
	while (len) {
		ssize_t n = wr ? write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* One request; the reply payload (malloc'd) in *out.  Returns the reply's
 * status (0 or -errno), or -EIO / -EPROTO on a transport problem. */
static int ctl_call(int fd, uint32_t op, const void *req, uint32_t reqlen, void **out,
		    uint32_t *outlen)
{
	struct uctl_hdr h = { .magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION, .op = op,
			      .len = reqlen };
	*out = NULL;
	*outlen = 0;
	if (!io_full(fd, &h, sizeof h, true) || (reqlen && !io_full(fd, (void *)req, reqlen, true)))
		return -EIO;
	if (!io_full(fd, &h, sizeof h, false))
		return -EIO;
	if (h.magic != UCTL_REP_MAGIC || h.op != op || h.len > (1u << 30))
		return -EPROTO;
	if (h.len) {
		*out = malloc(h.len);
		if (!*out || !io_full(fd, *out, h.len, false)) {
			free(*out);
			*out = NULL;
			return -EIO;
		}
	}
	*outlen = h.len;
	return h.status;
}

struct cut_reply {
	struct uctl_track_rep rep;
	const struct uctl_track_range *ranges;
	const struct uctl_track_run *runs;
	uint64_t pages; /* sum of the runs */
	void *raw;
};

static int track_op(int fd, uint32_t op, const void *req, uint32_t reqlen, struct cut_reply *r,
		    char *err, size_t errlen)
{
	uint32_t len;
	memset(r, 0, sizeof *r);
	int st = ctl_call(fd, op, req, reqlen, &r->raw, &len);
	if (st < 0) {
		snprintf(err, errlen, "op %u: %s", op, strerror(-st));
		free(r->raw);
		r->raw = NULL;
		return -1;
	}
	if (op == UCTL_TRACK_STOP)
		return 0;
	if (len < sizeof r->rep) {
		snprintf(err, errlen, "op %u: short reply (%u bytes)", op, len);
		return -1;
	}
	memcpy(&r->rep, r->raw, sizeof r->rep);
	uint64_t need = sizeof r->rep + (uint64_t)r->rep.nranges * sizeof *r->ranges +
			r->rep.nruns * sizeof *r->runs;
	if (need != len) {
		snprintf(err, errlen, "op %u: malformed reply", op);
		return -1;
	}
	r->ranges = (const void *)((char *)r->raw + sizeof r->rep);
	r->runs = (const void *)(r->ranges + r->rep.nranges);
	for (uint64_t i = 0; i < r->rep.nruns; i++)
		r->pages += r->runs[i].npages;
	return 0;
}

/* TRACK_START on [base, base+len); checks the region is tracked whole in
 * the expected mode. */
static int track_start(int fd, uint64_t base, uint64_t len, uint32_t want_mode, char *err,
		       size_t errlen)
{
	uint8_t req[sizeof(struct uctl_track_req) + 16];
	struct uctl_track_req tr = { .flags = 0, .nsel = 1 };
	uint64_t sel[2] = { base, base + len };
	memcpy(req, &tr, sizeof tr);
	memcpy(req + sizeof tr, sel, sizeof sel);
	struct cut_reply r;
	if (track_op(fd, UCTL_TRACK_START, req, sizeof req, &r, err, errlen) < 0)
		return -1;
	uint64_t covered = 0;
	bool bad = false;
	for (uint32_t i = 0; i < r.rep.nranges; i++) {
		covered += r.ranges[i].end - r.ranges[i].start;
		bad |= r.ranges[i].mode != want_mode;
	}
	if (bad || covered != len) {
		snprintf(err, errlen, "TRACK_START: the region is tracked in %u ranges covering %" PRIu64
			 " of %" PRIu64 " bytes, first mode %u (want mode %u: %s)", r.rep.nranges,
			 covered, len, r.rep.nranges ? r.ranges[0].mode : 0, want_mode,
			 want_mode == UCTL_TM_ASYNC ? "async" : "sync");
		free(r.raw);
		return -1;
	}
	free(r.raw);
	return 0;
}

/* ---- statistics ---- */
struct stats {
	double med, min, max;
	int n;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static struct stats stats_of(const double *v, int n)
{
	struct stats s = { 0, 0, 0, n };
	if (n <= 0)
		return s;
	double *c = malloc((size_t)n * sizeof *c);
	memcpy(c, v, (size_t)n * sizeof *c);
	qsort(c, (size_t)n, sizeof *c, cmp_double);
	s.min = c[0];
	s.max = c[n - 1];
	s.med = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
	free(c);
	return s;
}

static double median_of(double *v, int n)
{
	return stats_of(v, n).med;
}

/* ---- part 1: sessions of alternating phases ---- */
#define LABEL_GAP (-1)
#define MAX_S (MAX_ROUNDS * 8)

/* One variant's samples over every session of every round. */
struct vstat {
	int n, nr;
	double wps[MAX_S], cpuw[MAX_S], flt[MAX_S];
	double ratio[MAX_S], cost[MAX_S]; /* paired with the neighbouring untracked phases */
	double ep[MAX_S], per[MAX_S], dirty[MAX_S], shim[MAX_S], cut[MAX_S], dirmib[MAX_S];
};

/* What a tracked phase's monitor saw. */
struct phase_extra {
	int epochs;
	double dirty_med, shim_ms_med, cut_ms_med, dir_mib;
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(p);
}

static uint64_t dir_bytes(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	uint64_t sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[PATH_MAX + 300];
		struct stat sb;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (lstat(p, &sb) == 0)
			sum += S_ISDIR(sb.st_mode) ? dir_bytes(p) : (uint64_t)sb.st_blocks * 512;
	}
	closedir(d);
	return sum;
}

static char **worker_argv(const struct popts *po, const char *kind, bool sync, uint64_t mib)
{
	static char a_mib[32], a_hot[32], a_cpu[16], a_int[32];
	static char *argv[24];
	snprintf(a_int, sizeof a_int, "%" PRIu64, po->interval_ms);
	snprintf(a_mib, sizeof a_mib, "%" PRIu64, mib);
	snprintf(a_hot, sizeof a_hot, "%" PRIu64, po->hot_mib);
	snprintf(a_cpu, sizeof a_cpu, "%d", g_cpu_work);
	int n = 0;
	argv[n++] = g_exe;
	argv[n++] = "--worker";
	argv[n++] = (char *)kind;
	argv[n++] = "--sync";
	argv[n++] = sync ? "1" : "0";
	argv[n++] = "--mib";
	argv[n++] = a_mib;
	if (!strcmp(kind, "write")) {
		argv[n++] = "--hot-mib";
		argv[n++] = a_hot;
		argv[n++] = "--interval";
		argv[n++] = a_int;
	}
	argv[n++] = "--cpu";
	argv[n++] = a_cpu;
	argv[n] = NULL;
	return argv;
}

static bool parse_kv(const char *line, const char *key, double *out)
{
	char pat[64];
	snprintf(pat, sizeof pat, " %s=", key);
	const char *p = strstr(line, pat);
	if (!p)
		return false;
	*out = strtod(p + strlen(pat), NULL);
	return true;
}

/* A tool line "epoch N: C changed pages ... in R ranges (K new; A async, S sync, L all)...;
 * shim X ms, total Y ms". */
struct tool_epoch {
	unsigned epoch;
	double changed, shim_ms, total_ms;
	unsigned nasync, nsync, nall;
};
static bool parse_tool_epoch(const char *line, struct tool_epoch *t)
{
	memset(t, 0, sizeof *t);
	unsigned long long changed;
	if (sscanf(line, "epoch %u: %llu changed pages", &t->epoch, &changed) != 2)
		return false;
	t->changed = (double)changed;
	const char *p = strstr(line, " new; ");
	if (p)
		sscanf(p, " new; %u async, %u sync, %u all", &t->nasync, &t->nsync, &t->nall);
	p = strstr(line, "; shim ");
	if (p)
		sscanf(p, "; shim %lf ms, total %lf ms", &t->shim_ms, &t->total_ms);
	return true;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Move the worker to phase id and wait until it noticed (it records a mark
 * within 1024 writes). */
static bool set_phase(struct shm *s, int32_t id)
{
	int n0 = __atomic_load_n(&s->nmarks, __ATOMIC_ACQUIRE);
	__atomic_store_n(&s->phase, id, __ATOMIC_RELEASE);
	uint64_t end = mono() + 5000000000ULL;
	while (mono() < end) {
		int n = __atomic_load_n(&s->nmarks, __ATOMIC_ACQUIRE);
		if (n > n0 && s->marks[n - 1].phase == id)
			return true;
		usleep(200);
	}
	return false;
}

/* The state of one session (one worker process). */
struct session {
	const struct popts *po;
	bool sync;
	int round;
	struct child w;
	struct shm *shm;
	pid_t wpid;
	uint64_t base, len;
	int ctl;              /* the protocol connection, once opened */
	struct child t;       /* the tool of the current phase */
	char dir[PATH_MAX + 64];
};

/* Start variant v's monitor (nothing for untracked phases). */
static bool monitor_start(struct session *S, int v, char *err, size_t errlen)
{
	char line[1024];
	switch (v_track[v]) {
	case 1:
		if (S->ctl < 0 && (S->ctl = ctl_connect(S->wpid, err, errlen)) < 0)
			return false;
		return track_start(S->ctl, S->base, S->len, S->sync ? UCTL_TM_SYNC : UCTL_TM_ASYNC, err,
				   errlen) == 0;
	case 2: {
		snprintf(S->dir, sizeof S->dir, "%s/r%d-%s-%" PRIu64, g_tmp, S->round, vname[v],
			 S->po->hot_mib);
		char spid[16], sint[16], range[64];
		snprintf(spid, sizeof spid, "%d", S->wpid);
		snprintf(sint, sizeof sint, "%" PRIu64, S->po->interval_ms);
		snprintf(range, sizeof range, "%#" PRIx64 "-%#" PRIx64, S->base, S->base + S->len);
		char *targv[] = { g_tool, "track", spid, "-D", S->dir, "--interval", sint, "--range", range,
				  NULL };
		if (spawn(&S->t, targv, NULL, false, -1, -1) != 0) {
			snprintf(err, errlen, "spawn uffd-record: %s", strerror(errno));
			return false;
		}
		struct tool_epoch te;
		line[0] = 0;
		if (!lines_wait(S->t.out, line, sizeof line, 60000) || !parse_tool_epoch(line, &te) ||
		    te.epoch != 0) {
			snprintf(err, errlen, "the tool did not write epoch 0 (%s)", line);
			return false;
		}
		if ((S->sync ? te.nsync : te.nasync) != 1 || te.nall || (S->sync ? te.nasync : te.nsync)) {
			snprintf(err, errlen, "the tool tracks the region in an unexpected mode: %s", line);
			return false;
		}
		return true;
	}
	case 3: {
		__atomic_store_n(&S->shm->floor_req, 1, __ATOMIC_RELEASE);
		uint64_t end = mono() + 10000000000ULL;
		while (!__atomic_load_n(&S->shm->floor_ack, __ATOMIC_ACQUIRE) && mono() < end)
			usleep(500);
		if (!S->shm->floor_ack) {
			snprintf(err, errlen, "the worker's floor tracker did not start");
			return false;
		}
		return true;
	}
	}
	return true;
}

/* Run the current phase for the phase time; a protocol monitor cuts every
 * interval, the tool's epoch lines are collected. */
static bool monitor_window(struct session *S, int v, struct phase_extra *x, char *err,
			   size_t errlen)
{
	const struct popts *po = S->po;
	uint64_t start = mono(), end = start + (uint64_t)(po->secs * 1e9);
	uint64_t next = start + po->interval_ms * 1000000ULL;
	double dirty[MAX_SAMPLES], shim[MAX_SAMPLES], cutw[MAX_SAMPLES];
	int nd = 0;
	memset(x, 0, sizeof *x);
	int tr = v_track[v];
	if (tr == 0 || tr == 3) {
		sleep_ns(end - start);
		if (tr == 3) {
			nd = __atomic_load_n(&S->shm->fl_epochs, __ATOMIC_ACQUIRE);
			if (nd > 1024)
				nd = 1024;
			for (int i = 0; i < nd; i++) {
				dirty[i] = S->shm->fl_dirty[i];
				shim[i] = cutw[i] = S->shm->fl_scan_ms[i];
			}
		}
	} else {
		char line[1024];
		for (;;) {
			uint64_t now = mono();
			if (now >= end)
				break;
			uint64_t until = tr == 1 && next < end ? next : end;
			if (tr == 2) {
				struct pollfd p = { .fd = S->t.out->fd, .events = POLLIN };
				if (!S->t.out->eof &&
				    poll(&p, 1, (int)((until - now) / 1000000ULL) + 1) > 0)
					lines_fill(S->t.out);
				else if (S->t.out->eof)
					sleep_ns(until - now);
				while (lines_next(S->t.out, line, sizeof line)) {
					struct tool_epoch te;
					if (parse_tool_epoch(line, &te) && te.epoch > 0 && nd < MAX_SAMPLES &&
					    mono() <= end) {
						dirty[nd] = te.changed;
						shim[nd] = te.shim_ms;
						cutw[nd] = te.total_ms;
						nd++;
					}
				}
				continue;
			}
			if (now < until) {
				sleep_ns(until - now);
				continue;
			}
			struct cut_reply r;
			uint64_t c0 = mono();
			if (track_op(S->ctl, UCTL_TRACK_CUT, NULL, 0, &r, err, errlen) < 0)
				return false;
			uint64_t c1 = mono();
			if (nd < MAX_SAMPLES) {
				dirty[nd] = (double)r.pages;
				shim[nd] = r.rep.wp_ns / 1e6;
				cutw[nd] = (c1 - c0) / 1e6;
				nd++;
			}
			free(r.raw);
			next += po->interval_ms * 1000000ULL;
			if (next < c1) /* behind: the next epoch is a whole interval */
				next = c1 + po->interval_ms * 1000000ULL;
		}
	}
	x->epochs = nd;
	x->dirty_med = median_of(dirty, nd);
	x->shim_ms_med = median_of(shim, nd);
	x->cut_ms_med = median_of(cutw, nd);
	return true;
}

static bool monitor_stop(struct session *S, int v, struct phase_extra *x, char *err, size_t errlen)
{
	switch (v_track[v]) {
	case 1: {
		/* one connection per phase: the shim drops a connection that
		 * stays idle for 5 s (SO_RCVTIMEO in shim_ctl.c) */
		struct cut_reply r;
		bool ok = track_op(S->ctl, UCTL_TRACK_STOP, NULL, 0, &r, err, errlen) == 0;
		close(S->ctl);
		S->ctl = -1;
		return ok;
	}
	case 2: {
		kill(S->t.pid, SIGINT); /* the tool takes its last epoch (frozen) and stops */
		int st = child_finish(&S->t, 120000);
		x->dir_mib = (double)dir_bytes(S->dir) / (1 << 20);
		if (!S->po->keep)
			nftw(S->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		S->dir[0] = 0;
		if (st != 0) {
			snprintf(err, errlen, "uffd-record track exited with status %d", st);
			return false;
		}
		return true;
	}
	case 3: {
		__atomic_store_n(&S->shm->floor_req, 0, __ATOMIC_RELEASE);
		uint64_t end = mono() + 10000000000ULL;
		while (__atomic_load_n(&S->shm->floor_ack, __ATOMIC_ACQUIRE) && mono() < end)
			usleep(500);
		if (S->shm->floor_ack) {
			snprintf(err, errlen, "the worker's floor tracker did not stop");
			return false;
		}
		return true;
	}
	}
	return true;
}

/* One worker process: U, then per round each tracked variant of plan (the
 * order rotating from round to round), each followed by U.  Each tracked
 * phase is paired with the mean of the U phases around it. */
static void run_session(const struct popts *po, bool sync, const int *plan, int nplan,
			struct vstat *vs)
{
	struct session S = { .po = po, .sync = sync, .ctl = -1 };
	char err[512] = "", line[1024];
	int label[MAX_MARKS];
	struct phase_extra extra[MAX_MARKS];
	int32_t id = 0;
	int ubase = sync ? V_SYNC_BASE : V_UNTRACKED;
	const char *sname = sync ? "sync session" : "async session";
	memset(extra, 0, sizeof extra);
	for (int i = 0; i < MAX_MARKS; i++)
		label[i] = LABEL_GAP;

	int mfd = (int)syscall(SYS_memfd_create, "track_bench", 0);
	if (mfd < 0 || ftruncate(mfd, (off_t)((sizeof(struct shm) + PG - 1) & ~(PG - 1))) != 0) {
		pfail("%s: memfd: %s", sname, strerror(errno));
		return;
	}
	S.shm = mmap(NULL, sizeof *S.shm, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (S.shm == MAP_FAILED) {
		pfail("%s: mmap memfd: %s", sname, strerror(errno));
		close(mfd);
		return;
	}
	if (spawn(&S.w, worker_argv(po, "write", sync, po->mib), g_shim, true, -1, mfd) != 0) {
		pfail("%s: spawn worker: %s", sname, strerror(errno));
		goto out;
	}
	unsigned long long base, len;
	line[0] = 0;
	if (!lines_wait(S.w.out, line, sizeof line, 60000) ||
	    sscanf(line, "READY %d %llx %llx", &S.wpid, &base, &len) != 3) {
		pfail("%s: the worker did not get ready (%s)", sname, line);
		goto out;
	}
	S.base = base;
	S.len = len;
	if (base != WRITE_BASE)
		fprintf(stderr, "track_bench: note: the region is at %#llx, not %#llx\n", base, WRITE_BASE);
	sleep_ns(po->settle_ns); /* phase 0: warm-up, not measured */

	fprintf(stderr, "write (%s, %s):", po->hot_mib && po->hot_mib < po->mib ? "hot window" :
		"whole region", sync ? "sync" : "async");
	int nph = 1 + (int)po->rounds * nplan * 2;
	for (int k = 0; k < nph; k++) {
		{
			int r = k ? (k - 1) / (2 * nplan) : 0, j = k ? (k - 1) % (2 * nplan) : 0;
			int v = k == 0 || (j % 2) ? ubase : plan[(j / 2 + r) % nplan];
			S.round = r;
			if (k && j == 0)
				fprintf(stderr, "\n  round %d/%" PRIu64 ":", r + 1, po->rounds);
			if (!monitor_start(&S, v, err, sizeof err)) {
				pfail("%s: %s: %s", sname, vname[v], err);
				goto out;
			}
			label[++id] = v;
			if (id >= MAX_MARKS - 2 || !set_phase(S.shm, id)) {
				pfail("%s: the worker does not follow the phases", sname);
				goto out;
			}
			uint64_t w0 = mono();
			int m0 = __atomic_load_n(&S.shm->nmarks, __ATOMIC_ACQUIRE);
			uint64_t wr0 = S.shm->marks[m0 - 1].writes;
			if (!monitor_window(&S, v, &extra[id], err, sizeof err)) {
				pfail("%s: %s: %s", sname, vname[v], err);
				goto out;
			}
			label[++id] = LABEL_GAP;
			if (!set_phase(S.shm, id)) {
				pfail("%s: the worker does not follow the phases", sname);
				goto out;
			}
			int m1 = __atomic_load_n(&S.shm->nmarks, __ATOMIC_ACQUIRE);
			fprintf(stderr, " %s %.1f", vname[v],
				(double)(S.shm->marks[m1 - 1].writes - wr0) / ((mono() - w0) / 1e9) / 1e6);
			if (!monitor_stop(&S, v, &extra[id - 1], err, sizeof err)) {
				pfail("%s: %s: %s", sname, vname[v], err);
				goto out;
			}
			if (v_track[v]) /* let the working set become writable again */
				sleep_ns(po->settle_ns);
		}
	}
	__atomic_store_n(&S.shm->phase, -1, __ATOMIC_RELEASE);
	line[0] = 0;
	if (!lines_wait(S.w.out, line, sizeof line, 30000) || strncmp(line, "RESULT ", 7)) {
		pfail("%s: no result from the worker (%s)", sname, line);
		goto out;
	}
	double own = 0, other = 0;
	parse_kv(line, "own_faults", &own);
	parse_kv(line, "other_msgs", &other);
	if (own || other)
		pfail("%s: the app's handler saw %.0f WP faults and %.0f other messages (the shim "
		      "should take every fault of the tracker out of its read)", sname, own, other);
	int st = child_finish(&S.w, 30000);
	if (st != 0)
		pfail("%s: the worker exited with status %d", sname, st);

	/* Per phase: writes/s, CPU per write, faults/s. */
	double rate[MAX_MARKS] = { 0 };
	int nm = S.shm->nmarks;
	int seq[MAX_MARKS], nseq = 0; /* measured phases in order */
	for (int i = 0; i + 1 < nm; i++) {
		const struct mark *a = &S.shm->marks[i], *b = &S.shm->marks[i + 1];
		int ph = a->phase;
		if (ph <= 0 || ph >= MAX_MARKS || label[ph] == LABEL_GAP || b->ns <= a->ns ||
		    b->writes <= a->writes)
			continue;
		double secs = (b->ns - a->ns) / 1e9, wr = (double)(b->writes - a->writes);
		rate[ph] = wr / secs;
		seq[nseq++] = ph;
		struct vstat *s = &vs[label[ph]];
		if (s->n < MAX_S) {
			int j = s->n++;
			s->wps[j] = rate[ph];
			s->cpuw[j] = (double)(b->cpu_ns - a->cpu_ns) / wr;
			s->flt[j] = (double)(b->minflt - a->minflt) / secs;
			s->ep[j] = extra[ph].epochs;
			s->per[j] = extra[ph].epochs ? secs * 1e3 / extra[ph].epochs : 0;
			s->dirty[j] = extra[ph].dirty_med;
			s->shim[j] = extra[ph].shim_ms_med;
			s->cut[j] = extra[ph].cut_ms_med;
			s->dirmib[j] = extra[ph].dir_mib;
		}
	}
	for (int i = 1; i + 1 < nseq; i++) {
		int ph = seq[i], v = label[ph];
		if (!v_track[v] || label[seq[i - 1]] != ubase || label[seq[i + 1]] != ubase)
			continue;
		double u = (rate[seq[i - 1]] + rate[seq[i + 1]]) / 2;
		struct vstat *s = &vs[v];
		if (u > 0 && rate[ph] > 0 && s->nr < MAX_S) {
			s->ratio[s->nr] = rate[ph] / u;
			s->cost[s->nr] = u / rate[ph];
			s->nr++;
		}
	}
	fprintf(stderr, " (Mwrites/s)\n");
out:
	if (S.ctl >= 0)
		close(S.ctl);
	if (S.t.pid > 0) {
		kill(S.t.pid, SIGKILL);
		child_finish(&S.t, 5000);
	}
	if (S.dir[0] && !po->keep)
		nftw(S.dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	if (S.w.pid > 0) {
		__atomic_store_n(&S.shm->phase, -1, __ATOMIC_RELEASE);
		kill(S.w.pid, SIGKILL);
		child_finish(&S.w, 5000);
	}
	munmap(S.shm, sizeof *S.shm);
	close(mfd);
}

static void part_write(const struct popts *po)
{
	static struct vstat vs[NV];
	memset(vs, 0, sizeof vs);
	int aplan[NV], na = 0, splan[NV], ns = 0;
	for (int v = 0; v < NV; v++) {
		if (!(po->variants & (1u << v)) || !v_track[v])
			continue;
		if (v_sync[v])
			splan[ns++] = v;
		else
			aplan[na++] = v;
	}
	bool hot = po->hot_mib && po->hot_mib < po->mib;
	if (na)
		run_session(po, false, aplan, na, vs);
	if (ns)
		run_session(po, true, splan, ns, vs);

	printf("\n== 1. write-heavy workload: %" PRIu64 " MiB region (tracked whole), random 64-byte "
	       "writes to random 4 KiB pages of %s; %" PRIu64 " ms epochs; %" PRIu64 " rounds ==\n",
	       po->mib, hot ? "a hot window" : "the whole region", po->interval_ms, po->rounds);
	if (hot)
		printf("hot window: the first %" PRIu64 " MiB of the region (%" PRIu64 " pages)\n",
		       po->hot_mib, (po->hot_mib << 20) / PG);
	printf("one worker process (async variants; another for sync) alternates %g s phases "
	       "U X U Y U ... (U untracked; each tracked variant once per round, order rotating);\n"
	       "ratio = X / mean(U before, U after), median over rounds [min-max]; cost = 1/ratio "
	       "(time per write); untracked row: every U phase\n\n", po->secs);
	printf("%-12s %9s %-13s %6s %-13s %6s %7s %8s %6s %7s %8s %8s %8s\n", "variant", "Mwrites/s",
	       "[min-max]", "ratio", "[min-max]", "cost", "ns/wr", "kflt/s", "epochs", "period",
	       "dirty/ep", "shim ms", "cut ms");
	for (int v = 0; v < NV; v++) {
		struct vstat *s = &vs[v];
		if (!s->n)
			continue;
		struct stats w = stats_of(s->wps, s->n), ra = stats_of(s->ratio, s->nr),
			     co = stats_of(s->cost, s->nr);
		char rr[16] = "-", rs[32] = "", cs[16] = "-", mm[32];
		snprintf(mm, sizeof mm, "[%.1f-%.1f]", w.min / 1e6, w.max / 1e6);
		if (ra.n) {
			snprintf(rr, sizeof rr, "%.3f", ra.med);
			snprintf(rs, sizeof rs, "[%.3f-%.3f]", ra.min, ra.max);
			snprintf(cs, sizeof cs, "%.2fx", co.med);
		}
		printf("%-12s %9.2f %-13s %6s %-13s %6s %7.1f %8.1f", vname[v], w.med / 1e6, mm, rr, rs,
		       cs, median_of(s->cpuw, s->n), median_of(s->flt, s->n) / 1e3);
		if (v_track[v])
			printf(" %6.0f %5.0fms %8.0f %8.2f %8.2f", median_of(s->ep, s->n),
			       median_of(s->per, s->n), median_of(s->dirty, s->n), median_of(s->shim, s->n),
			       median_of(s->cut, s->n));
		printf("\n");
	}
	printf("\nMwrites/s: median over phases [min-max]; ns/wr: the worker's CPU time (all its "
	       "threads, on one CPU) per write; kflt/s: its minor faults per second;\n"
	       "epochs: cuts per phase; period: phase time / epochs; dirty/ep: pages per cut "
	       "(median); shim ms: scan + re-protect (the reply's wp_ns; async-floor: its own "
	       "PAGEMAP_SCAN);\n"
	       "cut ms: wall time of TRACK_CUT (protocol), of the tool's whole epoch (cut + state + "
	       "read + write; tool), of the scan (floor).  sync-base: U phases of the sync process "
	       "(region registered WP by the app, untracked)\n");
	for (int v = 0; v < NV; v++)
		if (v_track[v] == 2 && vs[v].n)
			printf("%s: %.0f MiB of chain per phase (median, in %s, removed)\n", vname[v],
			       median_of(vs[v].dirmib, vs[v].n), g_tmp);
	/* Extra CPU per fault: what each WP fault costs the workload. */
	for (int v = 0; v < NV; v++) {
		struct vstat *s = &vs[v], *u = &vs[v_sync[v] ? V_SYNC_BASE : V_UNTRACKED];
		double f = median_of(s->flt, s->n);
		if (!v_track[v] || !s->n || !u->n || f <= 0)
			continue;
		double extra = (median_of(s->cpuw, s->n) - median_of(u->cpuw, u->n)) *
			       median_of(s->wps, s->n) / f;
		printf("%s: %.0f k faults/s, %.2f us of extra worker CPU per fault\n", vname[v], f / 1e3,
		       extra / 1e3);
	}
	for (int v = 0; v < NV; v++) {
		struct vstat *s = &vs[v];
		if (!v_track[v] || !s->nr)
			continue;
		struct stats co = stats_of(s->cost, s->nr);
		printf("VERDICT %-11s (%s): cost %.2fx untracked [%.2f-%.2f] at %" PRIu64 " ms epochs: %s"
		       "%s\n", vname[v], hot ? "hot window" : "whole region", co.med, co.min, co.max,
		       po->interval_ms, v_sync[v] ? "for information (the target is for async)" :
		       co.med <= TARGET_COST ? "within the target" : "OVER the target",
		       v_sync[v] ? "" : " (<= 1.10x)");
	}
}

/* ---- part 2: the cost of a cut ---- */
static const uint64_t cut_counts[] = { 0, 1000, 10000, 100000 };
#define NCOUNTS (sizeof cut_counts / sizeof cut_counts[0])

struct cutsample {
	double d, cut_ms, wp_ms, read_ms, dirty_ms;
	uint64_t runs;
};

/* Read the reported pages with process_vm_readv, 256 pages per call;
 * check each page's tag.  Returns pages read, or -1. */
static long read_pages(pid_t pid, const struct cut_reply *r, uint64_t seed, uint64_t base,
		       char *buf, char *err, size_t errlen)
{
	enum { B = 256 };
	struct iovec local = { buf, 0 }, remote[B];
	int nrem = 0;
	uint64_t inbuf = 0, done = 0, bad = 0;
	uint64_t first[B]; /* page address of each page in buf */
	for (uint64_t i = 0; i <= r->rep.nruns; i++) {
		uint64_t a = i < r->rep.nruns ? r->runs[i].start : 0;
		uint64_t left = i < r->rep.nruns ? r->runs[i].npages : 0;
		for (;;) {
			bool flush = inbuf == B || nrem == B || (i == r->rep.nruns && inbuf);
			if (flush) {
				local.iov_len = inbuf * PG;
				ssize_t n = process_vm_readv(pid, &local, 1, remote, (unsigned long)nrem, 0);
				if (n != (ssize_t)(inbuf * PG)) {
					snprintf(err, errlen, "process_vm_readv: %zd of %" PRIu64 " bytes (%s)",
						 n, inbuf * PG, strerror(errno));
					return -1;
				}
				for (uint64_t k = 0; k < inbuf; k++) {
					uint64_t pg = (first[k] - base) / PG, got;
					memcpy(&got, buf + k * PG, 8);
					bad += got != page_tag(seed, pg);
				}
				done += inbuf;
				inbuf = 0;
				nrem = 0;
			}
			if (!left)
				break;
			uint64_t take = left < B - inbuf ? left : B - inbuf;
			remote[nrem].iov_base = (void *)a;
			remote[nrem].iov_len = take * PG;
			nrem++;
			for (uint64_t k = 0; k < take; k++)
				first[inbuf + k] = a + k * PG;
			inbuf += take;
			a += take * PG;
			left -= take;
		}
	}
	if (bad) {
		snprintf(err, errlen, "%" PRIu64 " of %" PRIu64 " pages read do not hold what was written",
			 bad, done);
		return -1;
	}
	return (long)done;
}

/* Do the reported runs hold exactly the n pages DIRTY n seed wrote? */
static bool check_runs(const struct cut_reply *r, uint64_t n, uint64_t seed, uint64_t base,
		       uint64_t npages, uint64_t *missed, uint64_t *extra)
{
	uint64_t *want = malloc((n ? n : 1) * sizeof *want);
	for (uint64_t i = 0; i < n; i++)
		want[i] = base + spread_page(i, seed, npages) * PG;
	qsort(want, n, sizeof *want, cmp_u64);
	uint64_t wi = 0;
	*missed = *extra = 0;
	for (uint64_t i = 0; i < r->rep.nruns; i++)
		for (uint64_t k = 0; k < r->runs[i].npages; k++) {
			uint64_t a = r->runs[i].start + k * PG;
			while (wi < n && want[wi] < a) {
				(*missed)++;
				wi++;
			}
			if (wi < n && want[wi] == a)
				wi++;
			else
				(*extra)++;
		}
	*missed += n - wi;
	free(want);
	return !*missed && !*extra;
}

static void part_cut(const struct popts *po, bool sync)
{
	const char *mname = sync ? "sync" : "async";
	char err[512], line[1024];
	struct child w = { 0 };
	int ctl = -1;
	struct cutsample *s = calloc(NCOUNTS * (po->reps + 1), sizeof *s);
	int ns = 0;
	char *buf = aligned_alloc(PG, 256 * PG);
	uint64_t maxd = (po->cut_mib << 20) / PG;
	uint64_t setup0 = mono(), start_ns = 0;

	if (spawn(&w, worker_argv(po, "cut", sync, po->cut_mib), g_shim, true, -1, -1) != 0) {
		pfail("cut: spawn worker: %s", strerror(errno));
		goto out;
	}
	int wpid;
	unsigned long long base, len;
	if (!lines_wait(w.out, line, sizeof line, 120000) ||
	    sscanf(line, "READY %d %llx %llx", &wpid, &base, &len) != 3) {
		pfail("cut: the worker did not get ready (%s)", line);
		goto out;
	}
	uint64_t npages = len / PG;
	if ((ctl = ctl_connect(wpid, err, sizeof err)) < 0) {
		pfail("cut: %s", err);
		goto out;
	}
	uint64_t t0 = mono();
	if (track_start(ctl, base, len, sync ? UCTL_TM_SYNC : UCTL_TM_ASYNC, err, sizeof err) < 0) {
		pfail("cut: %s", err);
		goto out;
	}
	start_ns = mono() - t0;
	struct cut_reply r;
	if (track_op(ctl, UCTL_TRACK_CUT, NULL, 0, &r, err, sizeof err) < 0) { /* settle */
		pfail("cut: %s", err);
		goto out;
	}
	free(r.raw);
	uint64_t seed = 1;
	for (uint64_t rep = 0; rep <= po->reps; rep++) { /* rep 0: warm-up, not kept */
		for (size_t k = 0; k < NCOUNTS; k++) {
			uint64_t d = cut_counts[(k + rep) % NCOUNTS];
			if (sync && d > 10000)
				continue; /* a user-space fault per page: keep it short */
			if (d > maxd)
				d = maxd;
			seed++;
			if (!say(&w, "DIRTY %" PRIu64 " %" PRIu64 "\n", d, seed) ||
			    !lines_wait(w.out, line, sizeof line, 120000) || strncmp(line, "DONE ", 5)) {
				pfail("cut: DIRTY %" PRIu64 ": no answer (%s)", d, line);
				goto out;
			}
			double dirty_ns = 0;
			sscanf(line, "DONE %*u %lf", &dirty_ns);
			uint64_t c0 = mono();
			if (track_op(ctl, UCTL_TRACK_CUT, NULL, 0, &r, err, sizeof err) < 0) {
				pfail("cut: %s", err);
				goto out;
			}
			uint64_t c1 = mono();
			uint64_t missed, extra;
			if (!check_runs(&r, d, seed, base, npages, &missed, &extra)) {
				if (missed)
					pfail("cut (%s): %" PRIu64 " dirty pages written, the cut missed %" PRIu64
					      " (and reported %" PRIu64 " not written)", mname, d, missed, extra);
				else
					fprintf(stderr, "track_bench: note: cut (%s) after %" PRIu64
						" dirty pages reported %" PRIu64 " pages not written\n", mname, d,
						extra);
			}
			uint64_t c2 = mono();
			long got = read_pages(wpid, &r, seed, base, buf, err, sizeof err);
			uint64_t c3 = mono();
			if (got < 0) {
				pfail("cut (%s): %s", mname, err);
				free(r.raw);
				goto out;
			}
			if (rep > 0)
				s[ns++] = (struct cutsample){ .d = (double)d, .cut_ms = (c1 - c0) / 1e6,
							      .wp_ms = r.rep.wp_ns / 1e6,
							      .read_ms = (c3 - c2) / 1e6,
							      .dirty_ms = dirty_ns / 1e6,
							      .runs = r.rep.nruns };
			free(r.raw);
		}
	}
	track_op(ctl, UCTL_TRACK_STOP, NULL, 0, &r, err, sizeof err);
	close(ctl);
	ctl = -1;
	int st = child_finish(&w, 30000);
	if (st != 0)
		pfail("cut: the worker exited with status %d", st);

	printf("\n== 2. cost of a cut: %" PRIu64 " MiB tracked (%s), populated; %" PRIu64
	       " reps per count (median) ==\n", po->cut_mib, mname, po->reps);
	printf("TRACK_START of the region: %.1f ms; setup + run: %.1f s\n", start_ns / 1e6,
	       (mono() - setup0) / 1e9);
	printf("%10s %8s %9s %9s %9s %10s %11s %11s\n", "dirty", "runs", "cut ms", "shim ms",
	       "read ms", "cut+read", "us/page cut", "us/page all");
	double base_cut = 0, base_all = 0;
	for (size_t k = 0; k < NCOUNTS; k++) {
		double cm[64], wm[64], rm[64], am[64];
		int m = 0;
		uint64_t runs = 0;
		double d = -1;
		for (int i = 0; i < ns && m < 64; i++)
			if (s[i].d == (double)(cut_counts[k] < maxd ? cut_counts[k] : maxd)) {
				d = s[i].d;
				cm[m] = s[i].cut_ms;
				wm[m] = s[i].wp_ms;
				rm[m] = s[i].read_ms;
				am[m] = s[i].cut_ms + s[i].read_ms;
				runs = s[i].runs;
				m++;
			}
		if (!m)
			continue;
		double c = stats_of(cm, m).med, a = stats_of(am, m).med;
		if (d == 0) {
			base_cut = c;
			base_all = a;
		}
		char pc[16] = "-", pa[16] = "-";
		if (d > 0) {
			snprintf(pc, sizeof pc, "%.3f", (c - base_cut) * 1e3 / d);
			snprintf(pa, sizeof pa, "%.3f", (a - base_all) * 1e3 / d);
		}
		printf("%10.0f %8" PRIu64 " %9.3f %9.3f %9.3f %10.3f %11s %11s\n", d, runs, c,
		       stats_of(wm, m).med, stats_of(rm, m).med, a, pc, pa);
	}
	/* least squares over every sample */
	double sx = 0, sy = 0, sxx = 0, sxy = 0, sya = 0, sxya = 0;
	for (int i = 0; i < ns; i++) {
		double x = s[i].d, y = s[i].cut_ms, ya = s[i].cut_ms + s[i].read_ms;
		sx += x;
		sy += y;
		sxx += x * x;
		sxy += x * y;
		sya += ya;
		sxya += x * ya;
	}
	double den = ns * sxx - sx * sx;
	if (ns > 1 && den > 0) {
		double b = (ns * sxy - sx * sy) / den, a = (sy - b * sx) / ns;
		double ba = (ns * sxya - sx * sya) / den, aa = (sya - ba * sx) / ns;
		printf("fit (least squares, %d samples): cut = %.3f ms + %.3f us/dirty page; "
		       "cut + process_vm_readv = %.3f ms + %.3f us/dirty page\n", ns, a, b * 1e3, aa,
		       ba * 1e3);
	}
	printf("(us/page columns: (median at N - median at 0) / N; the dirty pages are spread "
	       "over the region (runs: the runs the cut listed); the cut reported exactly the pages written%s)\n",
	       g_failed ? " unless FAILED above" : "");
out:
	if (ctl >= 0)
		close(ctl);
	if (w.pid > 0) {
		kill(w.pid, SIGKILL);
		child_finish(&w, 5000);
	}
	free(s);
	free(buf);
}

/* ---- setup ---- */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: track_bench [--rounds N] [--quick] [--secs S] [--mib M] [--hot-mib H[,H...]]\n"
		"                   [--interval MS] [--cut-mib M] [--reps N] [--only write|cut]\n"
		"                   [--variants LIST] [--cut-sync] [--dir D] [--keep] [--no-pin]\n"
		"  --rounds N      write rounds (default 3): per round one async and one sync\n"
		"                  worker, each phase once\n"
		"  --quick         1 round of 0.5 s phases, 2 cut reps\n"
		"  --secs S        seconds per phase (default 1)\n"
		"  --mib M         the write region (default 256 MiB)\n"
		"  --hot-mib LIST  one write pattern per value: writes to the first H MiB of the\n"
		"                  region only, 0 = all of it (default 0,16)\n"
		"  --interval MS   epoch length (default 100)\n"
		"  --variants L    comma list of async-floor,async-proto,async-tool,sync-proto,\n"
		"                  sync-tool (default: all but sync-tool); the untracked phases\n"
		"                  are always run: they are the baseline\n"
		"  --cut-mib M     the region of part 2 (default 1024 MiB)\n"
		"  --reps N        measured cuts per dirty count in part 2 (default 5)\n"
		"  --cut-sync      part 2 also for a sync-tracked region (up to 10k pages)\n"
		"  --dir D         where the tool writes its chains (default /dev/shm, else /tmp)\n"
		"  --keep          keep the chains\n"
		"  --no-pin        do not pin (default: the worker on one CPU, the monitor on another)\n");
}

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* /proc/stat "cpu" line: steal ticks, and all ticks. */
static unsigned long long cpu_field(int want)
{
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[10] = { 0 }, sum = 0;
	if (f) {
		if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
			   &v[4], &v[5], &v[6], &v[7]) != 8)
			memset(v, 0, sizeof v);
		fclose(f);
	}
	for (int i = 0; i < 8; i++)
		sum += v[i];
	return want < 0 ? sum : v[want];
}
static unsigned long long steal_ticks(void)
{
	return cpu_field(7);
}
static unsigned long long all_ticks(void)
{
	return cpu_field(-1);
}

/* Is userfaultfd with WP_ASYNC there?  NULL, or why not. */
static const char *probe_uffd(void)
{
	static char why[256];
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0) {
		int e = errno;
		snprintf(why, sizeof why, "userfaultfd(UFFD_USER_MODE_ONLY): %s%s", strerror(e),
			 e == ENOSYS ? " (kernel without userfaultfd)" :
			 e == EPERM ? " (not permitted: vm.unprivileged_userfaultfd / seccomp)" : "");
		return why;
	}
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	if (ioctl(fd, UFFDIO_API, &api) != 0) {
		snprintf(why, sizeof why, "UFFDIO_API(WP_ASYNC | WP_UNPOPULATED): %s (kernel older "
			 "than 6.7?)", strerror(errno));
		close(fd);
		return why;
	}
	close(fd);
	return NULL;
}

static void find_paths(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = 0;
	snprintf(g_exe, sizeof g_exe, "%s", exe);
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	char want[PATH_MAX + 64];
	const char *e = getenv("UFFDSHIM_LIB");
	if (e && *e)
		snprintf(want, sizeof want, "%s", e);
	else
		snprintf(want, sizeof want, "%s/../libuffdshim.so", exe);
	if (!realpath(want, g_shim))
		g_shim[0] = 0;
	const char *b = getenv("UFFDSHIM_BUILD");
	if (b && *b)
		snprintf(want, sizeof want, "%s/uffd-record", b);
	else
		snprintf(want, sizeof want, "%s/../uffd-record", exe);
	if (!realpath(want, g_tool) || access(g_tool, X_OK) != 0)
		g_tool[0] = 0;
}

int main(int argc, char **argv)
{
	struct popts po = { .rounds = 3, .mib = 256, .cut_mib = 1024, .interval_ms = 100,
			    .reps = 5, .secs = 1.0, .settle_ns = 300000000ULL, .pin = true,
			    .do_write = true, .do_cut = true,
			    .variants = DEFAULT_VARIANTS, .pat = { 0, 16 }, .npat = 2 };
	struct wopts wo = { .cpu = -1 };
	const char *worker = NULL, *variants = NULL;
	bool rounds_set = false, secs_set = false, reps_set = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool takes = !strcmp(a, "--rounds") || !strcmp(a, "--secs") || !strcmp(a, "--mib") ||
			     !strcmp(a, "--hot-mib") || !strcmp(a, "--interval") ||
			     !strcmp(a, "--cut-mib") || !strcmp(a, "--reps") || !strcmp(a, "--only") ||
			     !strcmp(a, "--variants") || !strcmp(a, "--dir") || !strcmp(a, "--worker") ||
			     !strcmp(a, "--sync") || !strcmp(a, "--cpu");
		const char *val = NULL;
		if (takes) {
			if (i + 1 >= argc) {
				fprintf(stderr, "track_bench: %s needs a value\n", a);
				return 2;
			}
			val = argv[++i];
		}
		bool ok = true;
		uint64_t u;
		if (!strcmp(a, "--rounds"))
			ok = parse_u64(val, 1, MAX_ROUNDS, &po.rounds), rounds_set = true;
		else if (!strcmp(a, "--secs")) {
			char *end;
			po.secs = strtod(val, &end);
			ok = *end == 0 && po.secs >= 0.1 && po.secs <= 600;
			secs_set = true;
		} else if (!strcmp(a, "--mib"))
			ok = parse_u64(val, 1, 1 << 20, &po.mib);
		else if (!strcmp(a, "--hot-mib")) {
			char *list = strdup(val), *save = NULL;
			po.npat = 0;
			for (char *t = strtok_r(list, ",", &save); t && ok; t = strtok_r(NULL, ",", &save))
				ok = po.npat < 8 && parse_u64(t, 0, 1 << 20, &po.pat[po.npat++]);
			ok = ok && po.npat > 0;
			free(list);
			po.hot_mib = po.pat[0];
		}
		else if (!strcmp(a, "--interval"))
			ok = parse_u64(val, 1, 100000, &po.interval_ms);
		else if (!strcmp(a, "--cut-mib"))
			ok = parse_u64(val, 1, 1 << 20, &po.cut_mib);
		else if (!strcmp(a, "--reps"))
			ok = parse_u64(val, 1, 200, &po.reps), reps_set = true;
		else if (!strcmp(a, "--only")) {
			po.do_write = !strcmp(val, "write");
			po.do_cut = !strcmp(val, "cut");
			ok = po.do_write || po.do_cut;
		} else if (!strcmp(a, "--variants"))
			variants = val;
		else if (!strcmp(a, "--dir"))
			po.dir = val;
		else if (!strcmp(a, "--keep"))
			po.keep = true;
		else if (!strcmp(a, "--cut-sync"))
			po.cut_sync = true;
		else if (!strcmp(a, "--quick"))
			po.quick = true;
		else if (!strcmp(a, "--no-pin"))
			po.pin = false;
		else if (!strcmp(a, "--worker"))
			worker = val;
		else if (!strcmp(a, "--sync"))
			wo.sync = !strcmp(val, "1");
		else if (!strcmp(a, "--cpu"))
			wo.cpu = atoi(val);
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "track_bench: unknown argument '%s'\n", a);
			usage(stderr);
			return 2;
		}
		if (!ok) {
			fprintf(stderr, "track_bench: bad value '%s' for %s\n", val, a);
			return 2;
		}
		(void)u;
	}
	if (worker) {
		wo.kind = worker;
		wo.mib = po.mib;
		wo.hot_mib = po.hot_mib;
		wo.interval_ms = po.interval_ms;
		return worker_main(&wo);
	}
	if (po.quick) {
		if (!rounds_set)
			po.rounds = 1;
		if (!secs_set)
			po.secs = 0.5;
		if (!reps_set)
			po.reps = 2;
	}
	if (variants) {
		po.variants = 0;
		char *list = strdup(variants), *save = NULL;
		for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int v;
			for (v = 0; v < NV && strcmp(t, vname[v]); v++)
				;
			if (v == NV) {
				fprintf(stderr, "track_bench: unknown variant '%s'\n", t);
				return 2;
			}
			po.variants |= 1u << v;
		}
		free(list);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN); /* a closed control socket is an error, not our death */

	find_paths();
	/* The command lines, exactly. */
	printf("track_bench:");
	for (int i = 0; i < argc; i++)
		printf(" %s", argv[i]);
	printf("\n");
	printf("track_bench: %ld CPUs, kernel ", sysconf(_SC_NPROCESSORS_ONLN));
	fflush(stdout);
	if (system("uname -r") != 0)
		printf("?\n");

	const char *why = probe_uffd();
	if (why) {
		printf("track_bench: NOT RUN: %s\n"
		       "track_bench: (dirty tracking needs userfaultfd with WP_ASYNC; a benchmark, "
		       "not a test: exit 0)\n", why);
		return 0;
	}
	if (!g_shim[0]) {
		printf("track_bench: NOT RUN: the shim is not found ($UFFDSHIM_LIB, else "
		       "<this dir>/../libuffdshim.so); tracking needs it (exit 0)\n");
		return 0;
	}
	if (!g_tool[0] && (po.variants & ((1u << V_ASYNC_TOOL) | (1u << V_SYNC_TOOL)))) {
		printf("track_bench: note: uffd-record not found: the tool variants are skipped\n");
		po.variants &= ~((1u << V_ASYNC_TOOL) | (1u << V_SYNC_TOOL));
	}

	/* CPUs: the worker on the first allowed one, the monitor (this process
	 * and the tool it starts) on the second. */
	if (po.pin) {
		cpu_set_t set;
		int cpus[2] = { -1, -1 }, n = 0;
		if (sched_getaffinity(0, sizeof set, &set) == 0)
			for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
				if (CPU_ISSET(c, &set))
					cpus[n++] = c;
		g_cpu_work = cpus[0];
		g_cpu_mon = n > 1 ? cpus[1] : -1;
		if (g_cpu_mon >= 0)
			pin_to(g_cpu_mon);
	}

	const char *pdir = po.dir;
	if (!pdir)
		pdir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(g_tmp, sizeof g_tmp, "%s/track_bench.XXXXXX", pdir);
	if (!mkdtemp(g_tmp)) {
		fprintf(stderr, "track_bench: mkdtemp %s: %s\n", g_tmp, strerror(errno));
		return 1;
	}

	struct stat sst;
	char when[64] = "?";
	if (stat(g_shim, &sst) == 0)
		strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&sst.st_mtime));
	printf("shim: %s (%lld bytes, built %s)\ntool: %s\n", g_shim, (long long)sst.st_size, when,
	       g_tool[0] ? g_tool : "(not found)");
	unsigned long long st0 = steal_ticks(), all0 = all_ticks();
	printf("placement: %s\n", po.pin ? "worker threads (writer, shim control thread, sync handler) "
	       "on one CPU, monitor (this process / the tool) on another" : "not pinned");
	char **wa = worker_argv(&po, "write", false, po.mib);
	printf("commands:\n  write worker:  LD_PRELOAD=%s", g_shim);
	for (int i = 0; wa[i]; i++)
		printf(" %s", wa[i]);
	printf("   (--hot-mib H per pattern; --sync 1 for the sync session; fd 3: the phase page)\n");
	printf("  async-floor:   in the worker: its own WP_ASYNC uffd over the region, a thread "
	       "doing PAGEMAP_SCAN(WP_MATCHING) every %" PRIu64 " ms\n", po.interval_ms);
	printf("  *-proto:       this process on \"\\0%sPID\": TRACK_START "
	       "[%#llx-%#llx), TRACK_CUT every %" PRIu64 " ms, TRACK_STOP\n", UCTL_ADDR_PREFIX,
	       WRITE_BASE, WRITE_BASE + (po.mib << 20), po.interval_ms);
	if (g_tool[0])
		printf("  *-tool:        %s track PID -D %s/rROUND-VARIANT-H --interval %"
		       PRIu64 " --range %#llx-%#llx   (SIGINT ends it)\n", g_tool, g_tmp,
		       po.interval_ms, WRITE_BASE, WRITE_BASE + (po.mib << 20));
	wa = worker_argv(&po, "cut", false, po.cut_mib);
	printf("  cut worker:    LD_PRELOAD=%s", g_shim);
	for (int i = 0; wa[i]; i++)
		printf(" %s", wa[i]);
	printf("\n  cut monitor:   this process: TRACK_START [%#llx-%#llx), then per sample "
	       "DIRTY N (worker), TRACK_CUT, process_vm_readv of the reported pages\n",
	       CUT_BASE, CUT_BASE + (po.cut_mib << 20));
	fflush(stdout);

	uint64_t t0 = mono();
	for (int i = 0; po.do_write && i < po.npat; i++) {
		po.hot_mib = po.pat[i];
		part_write(&po);
	}
	if (po.do_cut) {
		part_cut(&po, false);
		if (po.cut_sync)
			part_cut(&po, true);
	}
	unsigned long long st1 = steal_ticks(), all1 = all_ticks();
	if (all1 > all0)
		printf("\nsteal time during the run: %.1f%% of all CPU time (the host took it)\n",
		       100.0 * (double)(st1 - st0) / (double)(all1 - all0));
	printf("\ntrack_bench: %.0f s%s\n", (mono() - t0) / 1e9,
	       g_failed ? "; something FAILED (see the messages above): exit status 1" : "");
	if (!po.keep)
		nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	else
		printf("chains kept in %s\n", g_tmp);
	return g_failed ? 1 : 0;
}
