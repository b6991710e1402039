/* scn_memory_events.c - scenario: memory calls of the process that change
 * registrations behind the uffd's back.  munmap of part of a registered
 * range; mremap move, grow (in place and moving), shrink and MREMAP_DONTUNMAP,
 * each with and without UFFD_FEATURE_EVENT_REMAP (a reader thread takes the
 * REMAP events, which the kernel waits for); madvise(MADV_DONTNEED) on
 * write-protected anonymous memory (uffd-wp bits dropped) and shmem (bits
 * kept as pte markers); mmap(MAP_FIXED) over part of a registered range.
 * After every step the model must match the kernel (status --verify), and
 * the ranges / WP pages it lists must be the expected ones. */
#include <poll.h>
#include <pthread.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096UL
#define M_MISSING UFFDIO_REGISTER_MODE_MISSING
#define M_WP UFFDIO_REGISTER_MODE_WP
#define VERIFY(...) do { char l_[160]; snprintf(l_, sizeof(l_), __VA_ARGS__); \
	is_int(shim_verify_self(l_), 0, "verify: %s", l_); } while (0)

#include "scn_common.h"


static int reg(int uffd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uint64_t)addr, len}, .mode = mode};
	return ioctl(uffd, UFFDIO_REGISTER, &r);
}

static int protect(int uffd, void *addr, size_t len)
{
	struct uffdio_writeprotect w = {.range = {(uint64_t)addr, len},
					.mode = UFFDIO_WRITEPROTECT_MODE_WP};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w);
}

/* npages of populated anonymous memory, registered with mode (and all
 * protected when mode has WP). */
static char *region(int uffd, int npages, uint64_t mode)
{
	char *p = map_anon(npages);
	for (int i = 0; i < npages; i++)
		memset(p + i * PG, 'a' + i, PG);
	if (reg(uffd, p, npages * PG, mode) < 0 || ((mode & M_WP) && protect(uffd, p, npages * PG) < 0))
		diag("region: %s", strerror(errno));
	return p;
}

/* A free stretch of npages to move things to, a free page on either side
 * (so that it never touches the mapping it receives from). */
static char *hole(int npages)
{
	char *p = map_anon(npages + 2);
	munmap(p, (npages + 2) * PG);
	return p + PG;
}

/* The model's ranges of uffd inside [base, base+span pages), as page offsets. */
static void check_ranges(int uffd, char *base, int span, const char *label, int n,
			 const int *pages)
{
	struct juffd u;
	if (js_load(label) || !ju_fd(uffd, &u)) {
		fail("%s: status --json lists the uffd", label);
		return;
	}
	int k = 0;
	char got[256] = "";
	for (int i = 0; i < u.nranges; i++)
		if (u.r[i].end > (uint64_t)base && u.r[i].start < (uint64_t)base + span * PG) {
			u.r[k++] = u.r[i];
			snprintf(got + strlen(got), sizeof(got) - strlen(got), " [%ld,%ld)",
				 (long)((int64_t)(u.r[i].start - (uint64_t)base) / (int64_t)PG),
				 (long)((int64_t)(u.r[i].end - (uint64_t)base) / (int64_t)PG));
		}
	bool same = k == n;
	for (int i = 0; same && i < n; i++)
		same = u.r[i].start == (uint64_t)base + pages[2 * i] * PG &&
		       u.r[i].end == (uint64_t)base + pages[2 * i + 1] * PG;
	ok(same, "%s: the model has %d range(s) there (model:%s)", label, n, got);
}

/* ---- the reader of events of the EVENT_REMAP uffd ---- */
static struct {
	int uffd;
	volatile int stop;
	volatile int remaps;
	struct uffd_msg last;
} ev;

static void *ev_main(void *arg)
{
	(void)arg;
	while (!ev.stop) {
		struct pollfd pfd = {.fd = ev.uffd, .events = POLLIN};
		if (poll(&pfd, 1, 50) != 1 || !(pfd.revents & POLLIN))
			continue;
		struct uffd_msg m;
		if (read(ev.uffd, &m, sizeof(m)) != (ssize_t)sizeof(m))
			continue;
		if (m.event == UFFD_EVENT_REMAP) {
			ev.last = m;
			__atomic_add_fetch(&ev.remaps, 1, __ATOMIC_SEQ_CST);
		}
	}
	return NULL;
}

static void remap_event(int before, void *from, void *to, size_t len, const char *label)
{
	/* mremap() returns once the kernel handed the event over, which may be
	 * before the reader's read() has returned. */
	for (int i = 0; i < 2000 && ev.remaps == before; i++)
		usleep(1000);
	ok(ev.remaps == before + 1 && ev.last.arg.remap.from == (uint64_t)from &&
	   ev.last.arg.remap.to == (uint64_t)to && ev.last.arg.remap.len == len,
	   "%s: one REMAP event (from, to, len)", label);
}

int main(int argc, char **argv)
{
	(void)argc;
	shim_reexec_if_needed(argv);
	int ua = uffd_create(O_CLOEXEC | O_NONBLOCK); /* no events */
	if (ua < 0)
		skip_all("%s", uffd_skip_reason(errno));
	if (uffd_api(ua, 0, NULL) < 0)
		skip_all("UFFDIO_API: %s", strerror(errno));
	int ub = uffd_create(O_CLOEXEC | O_NONBLOCK); /* EVENT_REMAP */
	if (uffd_api(ub, UFFD_FEATURE_EVENT_REMAP, NULL) < 0)
		skip_all("UFFDIO_API EVENT_REMAP: %s", strerror(errno));
	ev.uffd = ub;
	pthread_t reader;
	pthread_create(&reader, NULL, ev_main, NULL);

	/* ---- munmap of parts ---- */
	char *m = region(ua, 16, M_MISSING | M_WP);
	wp_matches(ua, m, 16, 16, "munmap: before");
	VERIFY("munmap: before");
	is_int(munmap(m + 4 * PG, 4 * PG), 0, "munmap pages [4, 8)");
	check_ranges(ua, m, 16, "munmap middle", 2, (int[]){0, 4, 8, 16});
	wp_matches(ua, m, 16, 12, "munmap middle");
	VERIFY("munmap middle");
	munmap(m, 2 * PG);
	munmap(m + 14 * PG, 2 * PG);
	check_ranges(ua, m, 16, "munmap head and tail", 2, (int[]){2, 4, 8, 14});
	wp_matches(ua, m, 16, 8, "munmap head and tail");
	VERIFY("munmap head and tail");
	munmap(m, 16 * PG);

	/* ---- mremap move ---- */
	char *n = region(ua, 8, M_MISSING | M_WP), *t = hole(8);
	char *r = mremap(n, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t);
	ok(r == t && t[3 * PG] == 'd', "move without EVENT_REMAP: moved, contents kept");
	check_ranges(ua, n, 8, "move without EVENT_REMAP (old place)", 0, NULL);
	check_ranges(ua, t, 8, "move without EVENT_REMAP (new place: unregistered)", 0, NULL);
	wp_matches(ua, t, 8, 0, "move without EVENT_REMAP: bits cleared");
	VERIFY("move without EVENT_REMAP");
	munmap(t, 8 * PG);

	n = region(ub, 8, M_MISSING | M_WP);
	struct uffdio_writeprotect un = {.range = {(uint64_t)n + 4 * PG, 4 * PG}};
	ioctl(ub, UFFDIO_WRITEPROTECT, &un); /* pages [0, 4) protected */
	t = hole(8);
	int before = ev.remaps;
	r = mremap(n, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t);
	ok(r == t && t[5 * PG] == 'f', "move with EVENT_REMAP: moved, contents kept");
	remap_event(before, n, t, 8 * PG, "move with EVENT_REMAP");
	check_ranges(ub, n, 8, "move with EVENT_REMAP (old place)", 0, NULL);
	check_ranges(ub, t, 8, "move with EVENT_REMAP (new place)", 1, (int[]){0, 8});
	wp_matches(ub, t, 8, 4, "move with EVENT_REMAP: bits moved");
	VERIFY("move with EVENT_REMAP");
	munmap(t, 8 * PG);

	/* ---- grow in place, shrink ---- */
	char *g = region(ua, 16, M_MISSING);
	struct uffdio_range half = {(uint64_t)g + 8 * PG, 8 * PG};
	ioctl(ua, UFFDIO_UNREGISTER, &half);
	munmap(g + 8 * PG, 8 * PG);
	r = mremap(g, 8 * PG, 16 * PG, 0);
	ok(r == g, "grow in place: 8 -> 16 pages");
	check_ranges(ua, g, 16, "grow in place (the VMA keeps its flags)", 1, (int[]){0, 16});
	VERIFY("grow in place");
	r = mremap(g, 16 * PG, 4 * PG, 0);
	ok(r == g, "shrink in place: 16 -> 4 pages");
	check_ranges(ua, g, 16, "shrink", 1, (int[]){0, 4});
	VERIFY("shrink");
	munmap(g, 4 * PG);

	/* ---- grow by moving ---- */
	g = region(ua, 4, M_MISSING | M_WP);
	t = hole(8);
	r = mremap(g, 4 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t);
	ok(r == t && t[3 * PG] == 'd', "grow by moving without EVENT_REMAP");
	check_ranges(ua, t, 8, "grow by moving without EVENT_REMAP", 0, NULL);
	wp_matches(ua, t, 8, 0, "grow by moving without EVENT_REMAP: bits cleared");
	VERIFY("grow by moving without EVENT_REMAP");
	munmap(t, 8 * PG);
	g = region(ub, 4, M_MISSING | M_WP);
	t = hole(8);
	before = ev.remaps;
	r = mremap(g, 4 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, t);
	ok(r == t && t[3 * PG] == 'd', "grow by moving with EVENT_REMAP");
	remap_event(before, g, t, 4 * PG, "grow by moving with EVENT_REMAP");
	check_ranges(ub, t, 8, "grow by moving with EVENT_REMAP", 1, (int[]){0, 8});
	wp_matches(ub, t, 8, 4, "grow by moving with EVENT_REMAP: bits moved");
	VERIFY("grow by moving with EVENT_REMAP");
	munmap(t, 8 * PG);

	/* ---- MREMAP_DONTUNMAP: the old range stays mapped (empty) and registered ---- */
	g = region(ua, 4, M_MISSING | M_WP);
	t = hole(4);
	r = mremap(g, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, t);
	ok(r == t && t[2 * PG] == 'c', "DONTUNMAP without EVENT_REMAP: pages moved");
	check_ranges(ua, g, 4, "DONTUNMAP without EVENT_REMAP (old place stays registered)", 1,
		     (int[]){0, 4});
	check_ranges(ua, t, 4, "DONTUNMAP without EVENT_REMAP (new place unregistered)", 0, NULL);
	wp_matches(ua, g, 4, 0, "DONTUNMAP without EVENT_REMAP: the old place lost its bits");
	VERIFY("DONTUNMAP without EVENT_REMAP");
	munmap(g, 4 * PG);
	munmap(t, 4 * PG);
	g = region(ub, 4, M_MISSING | M_WP);
	t = hole(4);
	before = ev.remaps;
	r = mremap(g, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, t);
	ok(r == t && t[2 * PG] == 'c', "DONTUNMAP with EVENT_REMAP: pages moved");
	remap_event(before, g, t, 4 * PG, "DONTUNMAP with EVENT_REMAP");
	check_ranges(ub, g, 4, "DONTUNMAP with EVENT_REMAP (old place stays registered)", 1,
		     (int[]){0, 4});
	check_ranges(ub, t, 4, "DONTUNMAP with EVENT_REMAP (new place registered)", 1,
		     (int[]){0, 4});
	wp_matches(ub, g, 4, 0, "DONTUNMAP with EVENT_REMAP: the old place lost its bits");
	wp_matches(ub, t, 4, 4, "DONTUNMAP with EVENT_REMAP: the new place has them");
	VERIFY("DONTUNMAP with EVENT_REMAP");
	munmap(g, 4 * PG);
	munmap(t, 4 * PG);
	VERIFY("DONTUNMAP areas unmapped");

	/* ---- MADV_DONTNEED on protected memory ---- */
	char *d = region(ua, 8, M_WP);
	is_int(madvise(d + 2 * PG, 4 * PG, MADV_DONTNEED), 0, "anon: MADV_DONTNEED pages [2, 6)");
	ok(d[3 * PG] == 0 && d[7 * PG] == 'h', "anon: dropped pages read zero, others kept");
	wp_matches(ua, d, 8, 4, "anon DONTNEED: the dropped pages lost their bits");
	VERIFY("anon MADV_DONTNEED");
	munmap(d, 8 * PG);
	int mfd = memfd_create("scn-mem", MFD_CLOEXEC);
	if (ftruncate(mfd, 8 * PG) < 0)
		diag("ftruncate: %s", strerror(errno));
	char *s = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	memset(s, 's', 8 * PG);
	is_int(reg(ua, s, 8 * PG, M_WP), 0, "shmem: REGISTER WP");
	is_int(protect(ua, s, 8 * PG), 0, "shmem: protect 8 pages");
	is_int(madvise(s + 2 * PG, 4 * PG, MADV_DONTNEED), 0, "shmem: MADV_DONTNEED pages [2, 6)");
	wp_matches(ua, s, 8, 8, "shmem DONTNEED: pte markers keep every bit");
	VERIFY("shmem MADV_DONTNEED");
	is_int(s[3 * PG], 's', "shmem: the page cache still has the data");
	munmap(s, 8 * PG);
	close(mfd);

	/* ---- mmap(MAP_FIXED) over part of a registered range ---- */
	char *f = region(ua, 16, M_MISSING | M_WP);
	char *o = mmap(f + 4 * PG, 4 * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ok(o == f + 4 * PG && o[0] == 0, "MAP_FIXED over pages [4, 8): fresh memory");
	check_ranges(ua, f, 16, "MAP_FIXED", 2, (int[]){0, 4, 8, 16});
	wp_matches(ua, f, 16, 12, "MAP_FIXED: the replaced pages lost their bits");
	VERIFY("MAP_FIXED over a registered range");
	munmap(f, 16 * PG);
	VERIFY("all unmapped");

	ev.stop = 1;
	pthread_join(reader, NULL);
	close(ua);
	close(ub);
	VERIFY("end");
	return done_testing();
}
