/* nest_bench.c - the cost of a fault on memory two uffd clients watch
 * (docs/design.md "Nesting"), against the same fault with one client, side by
 * side in one shimmed process, alternating within each round:
 *
 *   single      uffd A registers the region MISSING; A's handler thread reads
 *               the fault and resolves it with a 1-page UFFDIO_COPY.
 *   nested      A registers MISSING (the carrier) and uffd B registers the
 *               same region WP (virtual; its handler thread blocks in read):
 *               every fault still goes to A, through the shim's routing.
 *   takeover    A registers WP and holds no page; B registers MISSING: B takes
 *               the kernel registration over (it serves the faults of missing
 *               pages, A asks for none), so faults reach B directly.
 *   forwarded   the same, but A holds one page protected, so A keeps the
 *               kernel registration: every fault arrives on A and is routed
 *               to B (docs/design.md "Waking a client": B's parked reader
 *               reads A's fd, or A's reader kicks B's), B copies, and the
 *               shim wakes the faulting thread on A.
 *
 * The main thread reads each page once.  All threads are pinned to one CPU
 * (the steadiest fault on this 2-vCPU VM; see fault_bench.c).  Prints, per
 * variant, the median time per fault over rounds and the median per-round
 * ratio to "single".  --only NAME runs one variant besides "single" (for
 * profiling).  Exit 0 unless a variant fails (a wrong page, a lost
 * fault); timings never decide the exit status. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"

#define PG 4096ul

struct handler {
	int fd;
	pthread_t t;
	volatile long faults;
	volatile int bad;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	static __thread char page[PG];
	memset(page, 0x5a, sizeof(page));
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(h->fd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL;
		if (m.event != UFFD_EVENT_PAGEFAULT || (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			h->bad++;
			continue;
		}
		struct uffdio_copy c = {.dst = m.arg.pagefault.address & ~(PG - 1),
					.src = (uint64_t)page, .len = PG};
		h->faults++; /* before the copy wakes the reader */
		if (ioctl(h->fd, UFFDIO_COPY, &c) < 0)
			h->bad++;
	}
}

static int new_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api a = {.api = UFFD_API};
	if (fd < 0 || ioctl(fd, UFFDIO_API, &a) < 0)
		return -1;
	return fd;
}

static int reg(int fd, char *p, size_t len, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uint64_t)p, len}, .mode = mode};
	return ioctl(fd, UFFDIO_REGISTER, &r);
}

enum { V_SINGLE, V_NESTED, V_TAKEOVER, V_FORWARDED, V__N };
static const char *vname[V__N] = {"single", "nested", "takeover", "forwarded"};

/* ns per fault, or -1 on failure. */
static double run(int v, size_t pages)
{
	size_t len = pages * PG;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	madvise(p, len, MADV_NOHUGEPAGE);
	struct handler a = {.fd = new_uffd()}, b = {.fd = -1};
	if (a.fd < 0)
		return -1;
	int rc;
	if (v == V_SINGLE) {
		rc = reg(a.fd, p, len, UFFDIO_REGISTER_MODE_MISSING);
	} else {
		b.fd = new_uffd();
		rc = reg(a.fd, p, len, v == V_NESTED ? UFFDIO_REGISTER_MODE_MISSING
						     : UFFDIO_REGISTER_MODE_WP);
		if (rc == 0 && v == V_FORWARDED) { /* A holds page 0 */
			p[0] = 0x5a;
			struct uffdio_writeprotect w = {{(uint64_t)p, PG}, UFFDIO_WRITEPROTECT_MODE_WP};
			rc = ioctl(a.fd, UFFDIO_WRITEPROTECT, &w);
		}
		if (rc == 0)
			rc = reg(b.fd, p, len, v == V_NESTED ? UFFDIO_REGISTER_MODE_WP
							     : UFFDIO_REGISTER_MODE_MISSING);
	}
	if (rc < 0) {
		fprintf(stderr, "nest_bench: %s: REGISTER: %s (run under the shim)\n", vname[v],
			strerror(errno));
		return -1;
	}
	pthread_create(&a.t, NULL, handler_main, &a);
	if (b.fd >= 0)
		pthread_create(&b.t, NULL, handler_main, &b);
	uint64_t t0 = now_ns();
	unsigned sum = 0;
	for (size_t i = 0; i < pages; i++)
		sum += *(volatile unsigned char *)(p + i * PG);
	uint64_t t1 = now_ns();
	long served = a.faults + b.faults;
	long want = v == V_FORWARDED ? (long)pages - 1 : (long)pages; /* page 0 was there */
	bool ok = sum == 0x5a * pages && served == want && !a.bad && !b.bad &&
		  (v < V_TAKEOVER || b.faults == want);
	if (!ok)
		fprintf(stderr, "nest_bench: %s: %ld faults served (A %ld, B %ld), %d/%d bad\n",
			vname[v], served, a.faults, b.faults, a.bad, b.bad);
	/* closing the uffds ends the handlers' reads */
	close(a.fd);
	if (b.fd >= 0)
		close(b.fd);
	pthread_cancel(a.t);
	pthread_join(a.t, NULL);
	if (b.fd >= 0) {
		pthread_cancel(b.t);
		pthread_join(b.t, NULL);
	}
	munmap(p, len);
	return ok ? (double)(t1 - t0) / (double)want : -1;
}

static int cmp_d(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

static bool shim_loaded(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	bool found = false;
	while (f && fgets(line, sizeof(line), f))
		found |= strstr(line, "libuffdshim.so") != NULL;
	if (f)
		fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	int rounds = 7;
	size_t pages = 2000;
	const char *only = NULL; /* one variant and "single" (for profiling) */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			pages = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--quick"))
			rounds = 3, pages = 1000;
		else if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only = argv[++i];
	}
	if (!shim_loaded()) {
		const char *b = getenv("UFFDSHIM_BUILD");
		char lib[1024], self[1024];
		snprintf(lib, sizeof(lib), "%s/libuffdshim.so", b ? b : "build");
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0 || access(lib, R_OK) != 0) {
			printf("nest_bench: %s not found: skipped (set UFFDSHIM_BUILD)\n", lib);
			return 0;
		}
		self[n] = 0;
		setenv("LD_PRELOAD", lib, 1);
		execv(self, argv);
		printf("nest_bench: re-exec under the shim failed: %s\n", strerror(errno));
		return 0;
	}
	int probe = new_uffd();
	if (probe < 0) {
		printf("nest_bench: no userfaultfd (%s): skipped\n", strerror(errno));
		return 0;
	}
	close(probe);
	cpu_set_t cs;
	CPU_ZERO(&cs);
	sched_getaffinity(0, sizeof(cs), &cs);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &cs)) {
			CPU_ZERO(&cs);
			CPU_SET(c, &cs);
			sched_setaffinity(0, sizeof(cs), &cs);
			break;
		}
	printf("nest_bench: %zu MISSING faults per run, %d rounds, all threads on one CPU, "
	       "under the shim\n", pages, rounds);
	double t[V__N][64], ratio[V__N][64];
	int failed = 0;
	if (rounds > 64)
		rounds = 64;
	for (int r = 0; r < rounds; r++) {
		for (int k = 0; k < V__N; k++) {
			int v = (k + r) % V__N; /* rotate the order */
			if (only && v != V_SINGLE && strcmp(only, vname[v])) {
				t[v][r] = 0;
				continue;
			}
			t[v][r] = run(v, pages);
			failed |= t[v][r] < 0;
		}
		for (int v = 0; v < V__N; v++)
			ratio[v][r] = t[v][r] / t[V_SINGLE][r];
	}
	printf("%-10s %14s %22s\n", "variant", "ns/fault (med)", "ratio to single (med)");
	for (int v = 0; v < V__N; v++) {
		if (only && v != V_SINGLE && strcmp(only, vname[v]))
			continue;
		double tv[64], rv[64];
		memcpy(tv, t[v], sizeof(double) * (size_t)rounds);
		memcpy(rv, ratio[v], sizeof(double) * (size_t)rounds);
		qsort(tv, (size_t)rounds, sizeof(double), cmp_d);
		qsort(rv, (size_t)rounds, sizeof(double), cmp_d);
		printf("%-10s %14.0f %14.2f [%.2f-%.2f]\n", vname[v], tv[rounds / 2], rv[rounds / 2],
		       rv[0], rv[rounds - 1]);
	}
	printf("target (issue): a fault through two nested clients <= 1.5 x the single-client fault\n");
	return failed ? 1 : 0;
}
