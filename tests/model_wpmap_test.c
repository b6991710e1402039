/* model_wpmap_test.c - the write-protect map of the model (model/um_wpmap.c):
 * set/clear/test/count across 2 MiB chunk boundaries, run iteration, move,
 * copy, counting in ranges, a 1 GiB map, and a randomized cross-check
 * against a plain bitmap.  Pure model: no kernel uffd. */
#include "test_helpers.h"
#include "um_model.h"

#define P UM_PAGE_SIZE
#define C (2ULL << 20) /* one chunk */
#define B 0x10000000ULL /* chunk-aligned base used by the focused tests */

struct run {
	uint64_t s, e;
};

/* All runs of m in [start, end), at most max; returns how many (may exceed
 * max: then only max were stored). */
static size_t runs_of(const struct um_wpmap *m, uint64_t start, uint64_t end, struct run *out,
		      size_t max)
{
	size_t n = 0;
	uint64_t cur = start, rs, re;
	while (um_wp_next_run(m, &cur, end, &rs, &re)) {
		if (n < max)
			out[n] = (struct run){rs, re};
		n++;
		if (n > 10000000) /* a loop that never ends is a failure too */
			break;
	}
	return n;
}

/* Structure: chunks aligned, strictly increasing, none empty. */
static const char *map_invariant(const struct um_wpmap *m)
{
	static char why[200];
	if (m->n > m->cap)
		return "n > cap";
	for (uint32_t i = 0; i < m->n; i++) {
		const struct um_wpchunk *c = &m->chunks[i];
		if (c->base & (C - 1)) {
			snprintf(why, sizeof(why), "chunk %u base %#llx not 2 MiB aligned", i,
				 (unsigned long long)c->base);
			return why;
		}
		if (i && c->base <= m->chunks[i - 1].base) {
			snprintf(why, sizeof(why), "chunk %u base %#llx not above previous %#llx", i,
				 (unsigned long long)c->base,
				 (unsigned long long)m->chunks[i - 1].base);
			return why;
		}
		bool any = false;
		for (int w = 0; w < 8; w++)
			any |= c->bits[w] != 0;
		if (!any) {
			snprintf(why, sizeof(why), "chunk %u (base %#llx) is empty but kept", i,
				 (unsigned long long)c->base);
			return why;
		}
	}
	return NULL;
}

static bool maps_equal(const struct um_wpmap *a, const struct um_wpmap *b)
{
	if (a->n != b->n)
		return false;
	return a->n == 0 || memcmp(a->chunks, b->chunks, a->n * sizeof(*a->chunks)) == 0;
}

static void check_runs(const struct um_wpmap *m, uint64_t start, uint64_t end,
		       const struct run *want, size_t nwant, const char *what)
{
	struct run got[32];
	size_t n = runs_of(m, start, end, got, 32);
	bool same = n == nwant;
	for (size_t i = 0; same && i < n; i++)
		same = got[i].s == want[i].s && got[i].e == want[i].e;
	if (!ok(same, "runs: %s", what)) {
		for (size_t i = 0; i < n && i < 32; i++)
			diag("  got  [%#llx, %#llx)", (unsigned long long)got[i].s,
			     (unsigned long long)got[i].e);
		for (size_t i = 0; i < nwant; i++)
			diag("  want [%#llx, %#llx)", (unsigned long long)want[i].s,
			     (unsigned long long)want[i].e);
	}
}

static void test_basic(void)
{
	struct um_wpmap m = {0};
	uint64_t cur = B, rs, re;
	is_u64(um_wp_count(&m), 0, "empty map counts 0");
	ok(!um_wp_test(&m, B), "empty map: nothing protected");
	ok(!um_wp_next_run(&m, &cur, B + C, &rs, &re) && cur == B + C,
	   "empty map: no run, cursor moved to end");
	is_u64(um_wp_count_range(&m, 0, ~0ULL), 0, "empty map: count_range 0");

	is_int(um_wp_set(&m, B + 5 * P, B + 6 * P, true), 0, "set one page");
	ok(um_wp_test(&m, B + 5 * P) && um_wp_test(&m, B + 5 * P + P - 1),
	   "the page is protected (first and last byte)");
	ok(!um_wp_test(&m, B + 4 * P) && !um_wp_test(&m, B + 6 * P), "its neighbours are not");
	is_u64(um_wp_count(&m), 1, "count 1");
	is_int(m.n, 1, "one chunk");
	um_wp_set(&m, B + 5 * P, B + 6 * P, false);
	is_int(m.n, 0, "clearing the last bit frees the chunk");

	/* Straddling a chunk boundary. */
	uint64_t s = B + C - 2 * P, e = B + C + 2 * P;
	is_int(um_wp_set(&m, s, e, true), 0, "set 4 pages straddling a 2 MiB boundary");
	is_u64(um_wp_count(&m), 4, "count 4");
	is_int(m.n, 2, "two chunks");
	bool all = true;
	for (uint64_t a = s; a < e; a += P)
		all &= um_wp_test(&m, a);
	ok(all && !um_wp_test(&m, s - P) && !um_wp_test(&m, e), "exactly those 4 pages test true");
	is_u64(um_wp_count_range(&m, s, B + C), 2, "count_range of the lower chunk part");
	is_u64(um_wp_count_range(&m, B + C, B + 2 * C), 2, "count_range of the upper chunk part");
	is_u64(um_wp_count_range(&m, B + C - P, B + C + P), 2, "count_range across the boundary");
	um_wp_set(&m, B + C - P, B + C + P, false);
	is_u64(um_wp_count(&m), 2, "clear the 2 middle pages: 2 left");
	ok(um_wp_test(&m, s) && um_wp_test(&m, e - P) && !um_wp_test(&m, B + C - P) &&
		   !um_wp_test(&m, B + C),
	   "the outer pages stay, the middle ones are clear");
	ok(map_invariant(&m) == NULL, "map structure valid");
	um_wp_set(&m, 0, B + 4 * C, false);
	is_int(m.n, 0, "clearing everything frees every chunk");

	/* Unaligned addresses round outwards to whole pages. */
	um_wp_set(&m, B + 0x1001, B + 0x1002, true);
	ok(um_wp_test(&m, B + 0x1000) && um_wp_count(&m) == 1,
	   "set of [0x1001, 0x1002) protects page 0x1000 alone");
	um_wp_set(&m, B + 0x1fff, B + 0x2000, false);
	is_u64(um_wp_count(&m), 0, "clear of [0x1fff, 0x2000) clears page 0x1000");

	/* Whole chunks and words. */
	um_wp_set(&m, B, B + 3 * C, true);
	is_u64(um_wp_count(&m), 3 * 512, "3 whole chunks: 1536 pages");
	is_int(m.n, 3, "3 chunks");
	um_wp_set(&m, B + 64 * P, B + 128 * P, false);
	is_u64(um_wp_count(&m), 3 * 512 - 64, "clear one whole 64-page word");
	is_u64(um_wp_count_range(&m, B, B + C), 512 - 64, "count_range of the first chunk");
	um_wp_set(&m, B + 63 * P, B + 129 * P, true);
	is_u64(um_wp_count(&m), 3 * 512, "set across word boundaries 63..129 refills it");
	ok(map_invariant(&m) == NULL, "map structure valid");
	um_wp_free(&m);
	ok(m.n == 0 && m.chunks == NULL, "um_wp_free empties the map");
}

static void test_runs(void)
{
	struct um_wpmap m = {0};
	/* r1 crosses two chunk boundaries; r2 after a 2-page gap; r3 is a whole
	 * chunk (chunk 4 missing before it) continuing one page into chunk 6;
	 * r4 ends exactly at a chunk end with no chunk after; r5 starts a chunk
	 * after a missing one. */
	struct run want[] = {
		{B + C - 2 * P, B + 3 * C + P},
		{B + 3 * C + 3 * P, B + 3 * C + 4 * P},
		{B + 5 * C, B + 6 * C + P},
		{B + 8 * C - P, B + 8 * C},
		{B + 9 * C, B + 9 * C + P},
	};
	for (size_t i = 0; i < 5; i++)
		um_wp_set(&m, want[i].s, want[i].e, true);
	check_runs(&m, 0, ~0ULL & ~(P - 1), want, 5, "whole address space");
	check_runs(&m, B, B + 10 * C, want, 5, "exact window");
	struct run w1[] = {{B + 2 * C, B + 3 * C + P}, {B + 3 * C + 3 * P, B + 3 * C + 4 * P}};
	check_runs(&m, B + 2 * C, B + 3 * C + 4 * P, w1, 2, "window starting inside a run");
	struct run w2[] = {{B + C - 2 * P, B + C}};
	check_runs(&m, B, B + C, w2, 1, "window end cuts a run at a chunk boundary");
	struct run w3[] = {{B + 5 * C + 7 * P, B + 5 * C + 9 * P}};
	check_runs(&m, B + 5 * C + 7 * P, B + 5 * C + 9 * P, w3, 1, "window inside one run");
	check_runs(&m, B + 3 * C + P, B + 3 * C + 3 * P, NULL, 0, "window over a gap");
	check_runs(&m, B + 4 * C, B + 5 * C, NULL, 0, "window over a missing chunk");
	check_runs(&m, B + 6 * C + P, B + 8 * C - P, NULL, 0,
		   "window between runs spanning an empty-tail chunk");
	struct run w4[] = {{B + 8 * C - P, B + 8 * C}, {B + 9 * C, B + 9 * C + P}};
	check_runs(&m, B + 8 * C - P, B + 11 * C, w4, 2,
		   "run ending at a chunk end, next run after a missing chunk");

	uint64_t cur = B + C, rs = 0, re = 0;
	ok(um_wp_next_run(&m, &cur, B + 10 * C, &rs, &re) && rs == B + C &&
		   re == B + 3 * C + P && cur == re,
	   "cursor in the middle of a run: run starts at the cursor, cursor ends at run end");
	cur = B + 3 * C + P;
	ok(um_wp_next_run(&m, &cur, B + 3 * C + 3 * P, &rs, &re) == false &&
		   cur == B + 3 * C + 3 * P,
	   "no run in a gap: false, cursor at end");
	cur = B + 20 * C;
	ok(!um_wp_next_run(&m, &cur, B + 21 * C, &rs, &re), "no run past the last chunk");

	uint64_t total = 0;
	for (size_t i = 0; i < 5; i++)
		total += (want[i].e - want[i].s) / P;
	is_u64(um_wp_count(&m), total, "count is the sum of the runs");
	is_u64(um_wp_count_range(&m, B + C, B + 3 * C), 1024,
	       "count_range over 2 whole chunks inside r1");
	is_u64(um_wp_count_range(&m, B + 3 * C, B + 6 * C + 2 * P), 1 + 1 + 512 + 1,
	       "count_range mixing runs, gaps and a missing chunk");
	is_u64(um_wp_count_range(&m, B + 3 * C + 2 * P, B + 3 * C + 3 * P), 0,
	       "count_range of a gap page");
	is_u64(um_wp_count_range(&m, 0, ~0ULL & ~(P - 1)), total, "count_range of everything");
	um_wp_free(&m);
}

static void test_move_copy(void)
{
	struct um_wpmap m = {0}, ref = {0};
	/* A pattern straddling a chunk boundary: pages -3..+2 around B+C with
	 * a hole at -1. */
	um_wp_set(&m, B + C - 3 * P, B + C - P, true);
	um_wp_set(&m, B + C, B + C + 3 * P, true);
	uint64_t D = B + 40 * C + 5 * P; /* far away, not chunk aligned */
	is_int(um_wp_move(&m, B + C - 4 * P, D, 8 * P), 0, "move 8 pages far away");
	um_wp_set(&ref, D + P, D + 3 * P, true);
	um_wp_set(&ref, D + 4 * P, D + 7 * P, true);
	ok(maps_equal(&m, &ref), "the pattern arrived shifted, the source is clear");
	is_u64(um_wp_count_range(&m, B, B + 2 * C), 0, "nothing left at the source");
	ok(map_invariant(&m) == NULL, "map structure valid after move");

	/* Overlapping forward by one page, then back by 3 pages. */
	um_wp_move(&m, D, D + P, 8 * P);
	um_wp_free(&ref);
	um_wp_set(&ref, D + 2 * P, D + 4 * P, true);
	um_wp_set(&ref, D + 5 * P, D + 8 * P, true);
	ok(maps_equal(&m, &ref), "overlapping move forward by one page");
	um_wp_move(&m, D + P, D - 2 * P, 8 * P);
	um_wp_free(&ref);
	um_wp_set(&ref, D - P, D + P, true);
	um_wp_set(&ref, D + 2 * P, D + 5 * P, true);
	ok(maps_equal(&m, &ref), "overlapping move backward by three pages");

	/* A run of 1000 pages moved by 3 pages across chunk boundaries. */
	um_wp_free(&m);
	um_wp_free(&ref);
	um_wp_set(&m, B + C - 500 * P, B + C + 500 * P, true);
	um_wp_move(&m, B + C - 500 * P, B + C - 497 * P, 1000 * P);
	um_wp_set(&ref, B + C - 497 * P, B + C + 503 * P, true);
	ok(maps_equal(&m, &ref), "1000-page run shifted by 3 pages across a chunk boundary");
	um_wp_move(&m, B + C - 497 * P, B + 3 * C - 497 * P, 1000 * P);
	um_wp_free(&ref);
	um_wp_set(&ref, B + 3 * C - 497 * P, B + 3 * C + 503 * P, true);
	ok(maps_equal(&m, &ref), "moved by exactly 2 chunks (partly overlapping chunk ranges)");

	um_wp_move(&m, B, B, 100 * C);
	ok(maps_equal(&m, &ref), "move to the same place changes nothing");
	um_wp_move(&m, B + 3 * C - 497 * P, B, 0);
	ok(maps_equal(&m, &ref), "move of length 0 changes nothing");

	/* mremap semantics: the destination ends up holding exactly the source's
	 * bits; protection that was at the destination before does not survive
	 * (the kernel unmapped whatever was there). */
	um_wp_free(&m);
	um_wp_free(&ref);
	um_wp_set(&m, B, B + P, true);                    /* source: page 0 only */
	um_wp_set(&m, B + 10 * C, B + 10 * C + 4 * P, true); /* stale at destination */
	um_wp_move(&m, B, B + 10 * C, 4 * P);
	um_wp_set(&ref, B + 10 * C, B + 10 * C + P, true);
	if (!ok(maps_equal(&m, &ref),
		"move replaces the destination's bits (stale protection there is dropped)"))
		diag("destination pages protected after the move: %llu (want 1)",
		     (unsigned long long)um_wp_count_range(&m, B + 10 * C, B + 10 * C + 4 * P));

	/* um_wp_copy: equal and independent. */
	um_wp_free(&m);
	um_wp_free(&ref);
	for (int i = 0; i < 40; i++)
		um_wp_set(&m, B + (uint64_t)i * (C + 3 * P), B + (uint64_t)i * (C + 3 * P) + 7 * P,
			  true);
	struct um_wpmap cp;
	is_int(um_wp_copy(&cp, &m), 0, "um_wp_copy succeeds");
	ok(maps_equal(&cp, &m), "the copy equals the original");
	um_wp_set(&m, B, B + 100 * C, false);
	is_u64(um_wp_count(&cp), 40 * 7, "clearing the original leaves the copy intact");
	um_wp_set(&cp, B + 200 * C, B + 200 * C + P, true);
	is_u64(um_wp_count(&m), 0, "changing the copy leaves the original alone");
	struct um_wpmap cp2;
	is_int(um_wp_copy(&cp2, &m), 0, "copy of an empty map");
	ok(cp2.n == 0 && um_wp_count(&cp2) == 0, "is empty");
	um_wp_set(&cp2, B, B + P, true);
	is_u64(um_wp_count(&cp2), 1, "and can be written");
	um_wp_free(&cp);
	um_wp_free(&cp2);
	um_wp_free(&m);

	/* um_wp_load_chunk. */
	uint64_t bits[8] = {1, 0, 0, 0, 0, 0, 0, 1ULL << 63};
	is_int(um_wp_load_chunk(&m, B + C, bits), 0, "load one chunk");
	ok(um_wp_test(&m, B + C) && um_wp_test(&m, B + 2 * C - P) && um_wp_count(&m) == 2,
	   "its first and last pages are protected");
	uint64_t zero[8] = {0};
	um_wp_load_chunk(&m, B + C, zero);
	ok(m.n == 0 && um_wp_count(&m) == 0, "loading an empty chunk replaces and drops it");
	um_wp_free(&m);
}

static void test_large(void)
{
	struct um_wpmap m = {0};
	const uint64_t G = 1ULL << 30, base = 0x7f0000000000ULL, np = G / P;
	is_int(um_wp_set(&m, base, base + G, true), 0, "protect 1 GiB");
	is_u64(um_wp_count(&m), np, "262144 pages protected");
	is_int(m.n, 512, "512 chunks");
	struct run r[2];
	size_t n = runs_of(&m, 0, ~0ULL & ~(P - 1), r, 2);
	ok(n == 1 && r[0].s == base && r[0].e == base + G, "one run of 1 GiB");
	for (uint64_t a = base + P; a < base + G; a += 2 * P)
		um_wp_set(&m, a, a + P, false);
	is_u64(um_wp_count(&m), np / 2, "clear every other page: half left");
	is_u64(um_wp_count_range(&m, base, base + C), 256, "256 in the first 2 MiB");
	is_u64(um_wp_count_range(&m, base + G / 2 + P, base + G / 2 + 11 * P), 5,
	       "5 in 10 pages starting at an odd page");
	ok(um_wp_test(&m, base + G - 2 * P) && !um_wp_test(&m, base + G - P),
	   "even pages protected, odd ones not");
	size_t nr = runs_of(&m, base, base + G, NULL, 0);
	is_u64(nr, np / 2, "131072 one-page runs");
	struct um_wpmap cp;
	um_wp_copy(&cp, &m);
	um_wp_move(&cp, base, base + 3 * P, G);
	ok(um_wp_count(&cp) == np / 2 && um_wp_test(&cp, base + 3 * P) &&
		   !um_wp_test(&cp, base + 4 * P) && !um_wp_test(&cp, base),
	   "moving the half-protected GiB by 3 pages keeps the pattern");
	um_wp_free(&cp);
	for (uint64_t a = base; a < base + G; a += 2 * P)
		um_wp_set(&m, a, a + P, false);
	ok(um_wp_count(&m) == 0 && m.n == 0, "clearing the even pages too empties the map");
	um_wp_free(&m);
}

/* ---- extreme ranges, each in a child with a time (and memory) limit ---- */

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

/* Runs fn in a child limited to secs seconds and 1 GiB of address space.
 * Returns fn's result (0 = as expected), or -signal if the child died. */
static int run_limited(int (*fn)(void), unsigned secs)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		struct rlimit rl = {1ULL << 30, 1ULL << 30};
		setrlimit(RLIMIT_AS, &rl);
		alarm(secs);
		_exit(fn());
	}
	int status = 0;
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1000;
	if (WIFSIGNALED(status))
		return -WTERMSIG(status);
	return WEXITSTATUS(status);
}

static void report_limited(int rc, const char *what)
{
	if (!ok(rc == 0, "%s", what)) {
		if (rc == -SIGALRM)
			diag("the child did not finish in time (killed by SIGALRM)");
		else if (rc < 0)
			diag("the child died of signal %d (%s)", -rc, strsignal(-rc));
		else
			diag("the child found wrong results (check %d failed)", rc);
	}
}

/* The last 2 MiB chunk of the 64-bit space: chunk base + 2 MiB wraps to 0. */
static int top_of_space(void)
{
	const uint64_t top = 0xffffffffffe00000ULL, end = 0xfffffffffffff000ULL;
	struct um_wpmap m = {0};
	if (um_wp_set(&m, top + P, end, true) != 0)
		return 1;
	if (m.n != 1 || um_wp_count(&m) != 510 || !um_wp_test(&m, end - P) || um_wp_test(&m, top))
		return 2;
	um_wp_set(&m, top, end, false);
	if (m.n != 0)
		return 3;
	return 0;
}

/* Clearing the whole 47-bit user address space of a map with 3 chunks: the
 * cost should follow the map (3 chunks), not the range (2^26 chunks). */
static int sparse_huge_clear(void)
{
	const uint64_t user_top = 1ULL << 47;
	struct um_wpmap m = {0};
	for (int i = 0; i < 100; i++) {
		um_wp_set(&m, B, B + P, true);
		um_wp_set(&m, B + 5 * C, B + 5 * C + P, true);
		um_wp_set(&m, user_top - C, user_top - C + P, true);
		um_wp_set(&m, 0, user_top, false);
		if (m.n != 0)
			return 1;
	}
	return 0;
}

static void test_extremes(void)
{
	report_limited(run_limited(top_of_space, 5),
		       "set/clear in the last 2 MiB of the 64-bit space: only that chunk, terminates");
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	report_limited(run_limited(sparse_huge_clear, 5),
		       "100 clears of the whole 47-bit user space on a 3-chunk map finish in 5 s");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	note("  took %.3f s", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
}

/* ---- running out of memory (um_alloc_set_ops) ---- */

static bool oom;

static void *t_map(size_t len)
{
	if (oom)
		return NULL;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void t_unmap(void *p, size_t len)
{
	munmap(p, len);
}

static void *t_remap(void *p, size_t o, size_t n)
{
	if (oom)
		return NULL;
	void *q = mremap(p, o, n, MREMAP_MAYMOVE);
	return q == MAP_FAILED ? NULL : q;
}

static void test_oom(void)
{
	static const struct um_alloc_ops ops = {t_map, t_unmap, t_remap};
	um_alloc_set_ops(&ops);
	struct um_wpmap m = {0};
	oom = true;
	is_int(um_wp_set(&m, B, B + P, true), -1, "um_wp_set reports running out of memory");
	ok(m.n == 0 && um_wp_count(&m) == 0, "and leaves the map empty");
	oom = false;
	um_wp_set(&m, B, B + P, true);
	while (m.n < m.cap) /* fill the chunk array to its capacity */
		um_wp_set(&m, B + (uint64_t)m.n * C, B + (uint64_t)m.n * C + P, true);
	uint64_t n0 = m.n;
	oom = true;
	is_int(um_wp_set(&m, B + n0 * C, B + (n0 + 2) * C, true), -1,
	       "setting bits that need a new chunk past capacity fails");
	ok(m.n == n0 && um_wp_count(&m) == n0 && map_invariant(&m) == NULL, "the map is intact");
	is_int(um_wp_set(&m, B + C, B + 2 * C + P, true), 0, "bits in existing chunks need no memory");
	is_int(um_wp_set(&m, B, B + 3 * C, false), 0, "neither does clearing");
	ok(um_wp_count(&m) == n0 - 3 && map_invariant(&m) == NULL, "counts right after both");
	oom = false;
	um_wp_free(&m);
}

/* ---- randomized cross-check against a plain bitmap ---- */

#define NP 8192 /* 32 MiB window: 17 chunks touched since the base is unaligned */

struct refmap {
	uint64_t base;
	uint8_t bit[NP];
};

static uint64_t ref_count(const struct refmap *r, uint64_t p0, uint64_t p1)
{
	uint64_t n = 0;
	for (uint64_t p = p0; p < p1; p++)
		n += r->bit[p];
	return n;
}

/* Compare everything; returns a description of the first difference or NULL. */
static const char *full_compare(const struct um_wpmap *m, const struct refmap *r)
{
	static char why[300];
	const char *inv = map_invariant(m);
	if (inv)
		return inv;
	for (uint64_t p = 0; p < NP; p++)
		if (um_wp_test(m, r->base + p * P) != (bool)r->bit[p]) {
			snprintf(why, sizeof(why), "page %llu: test %d, reference %d",
				 (unsigned long long)p, !r->bit[p], r->bit[p]);
			return why;
		}
	if (um_wp_count(m) != ref_count(r, 0, NP)) {
		snprintf(why, sizeof(why), "count %llu, reference %llu (bits outside the window?)",
			 (unsigned long long)um_wp_count(m),
			 (unsigned long long)ref_count(r, 0, NP));
		return why;
	}
	/* Runs over the whole window must be the reference's maximal runs. */
	uint64_t cur = r->base, rs, re, p = 0;
	while (um_wp_next_run(m, &cur, r->base + NP * P, &rs, &re)) {
		uint64_t s = (rs - r->base) / P, e = (re - r->base) / P;
		while (p < NP && !r->bit[p])
			p++;
		uint64_t q = p;
		while (q < NP && r->bit[q])
			q++;
		if (s != p || e != q || rs % P || re % P) {
			snprintf(why, sizeof(why), "run [%llu, %llu), reference [%llu, %llu)",
				 (unsigned long long)s, (unsigned long long)e,
				 (unsigned long long)p, (unsigned long long)q);
			return why;
		}
		p = q;
	}
	while (p < NP && !r->bit[p])
		p++;
	if (p != NP) {
		snprintf(why, sizeof(why), "iteration missed the run at page %llu",
			 (unsigned long long)p);
		return why;
	}
	return NULL;
}

static uint64_t rand_len(struct th_rng *g)
{
	switch (th_rng_below(g, 10)) {
	case 0: return 1 + th_rng_below(g, NP);
	case 1: case 2: case 3: return 1 + th_rng_below(g, 1024);
	default: return 1 + th_rng_below(g, 70);
	}
}

/* One random walk; with_moves adds um_wp_move (checked with mremap
 * semantics: destination := old source, rest of the source cleared). */
static void random_walk(uint64_t seed, int nops, bool with_moves, const char *name)
{
	struct th_rng g = th_rng_seed(seed);
	static struct refmap r;
	memset(&r, 0, sizeof(r));
	r.base = 0x40000000ULL - 5 * P; /* chunk boundaries fall at odd pages */
	struct um_wpmap m = {0};
	const char *bad = NULL;
	int bad_op = -1;
	uint64_t checks = 0;
	note("%s: seed %#llx, %d ops", name, (unsigned long long)g.s, nops);
	for (int op = 0; op < nops && !bad; op++) {
		uint64_t kind = th_rng_below(&g, with_moves ? 10 : 8);
		uint64_t p0 = th_rng_below(&g, NP), len = rand_len(&g);
		if (p0 + len > NP)
			len = NP - p0;
		static char why[300];
		if (kind < 6) { /* set or clear, sometimes with unaligned ends */
			bool on = kind < 3;
			uint64_t s = r.base + p0 * P, e = r.base + (p0 + len) * P;
			if (len > 1 && th_rng_below(&g, 4) == 0) {
				s += th_rng_below(&g, P);
				e -= th_rng_below(&g, P);
			}
			um_wp_set(&m, s, e, on);
			memset(&r.bit[p0], on, len);
		} else if (kind < 8) { /* copy round trip, count_range */
			struct um_wpmap cp;
			if (um_wp_copy(&cp, &m) < 0 || !maps_equal(&cp, &m)) {
				snprintf(why, sizeof(why), "um_wp_copy differs");
				bad = why;
			}
			um_wp_free(&cp);
		} else { /* move within the window */
			uint64_t t0 = th_rng_below(&g, NP);
			if (t0 + len > NP)
				len = NP - t0;
			if (p0 + len > NP)
				len = NP - p0;
			um_wp_move(&m, r.base + p0 * P, r.base + t0 * P, len * P);
			uint8_t tmp[NP];
			memcpy(tmp, &r.bit[p0], len);
			memset(&r.bit[p0], 0, len);
			memcpy(&r.bit[t0], tmp, len);
		}
		/* Cheap checks every op. */
		uint64_t q0 = th_rng_below(&g, NP), q1 = q0 + th_rng_below(&g, NP - q0 + 1);
		uint64_t got = um_wp_count_range(&m, r.base + q0 * P, r.base + q1 * P);
		uint64_t want = ref_count(&r, q0, q1);
		checks++;
		if (!bad && got != want) {
			snprintf(why, sizeof(why), "count_range pages [%llu, %llu): %llu, reference %llu",
				 (unsigned long long)q0, (unsigned long long)q1,
				 (unsigned long long)got, (unsigned long long)want);
			bad = why;
		}
		if (!bad && um_wp_count(&m) != ref_count(&r, 0, NP)) {
			snprintf(why, sizeof(why), "count %llu, reference %llu",
				 (unsigned long long)um_wp_count(&m),
				 (unsigned long long)ref_count(&r, 0, NP));
			bad = why;
		}
		if (!bad && (op % 32 == 31 || op == nops - 1)) {
			bad = full_compare(&m, &r);
			checks++;
		}
		if (bad)
			bad_op = op;
	}
	if (!ok(bad == NULL, "%s: %d random ops agree with a plain bitmap", name, nops))
		diag("first difference after op %d: %s", bad_op, bad);
	um_wp_free(&m);
}

int main(void)
{
	test_basic();
	test_runs();
	test_move_copy();
	test_large();
	test_extremes();
	test_oom();
	random_walk(0x5eed0001, 6000, false, "set/clear/copy");
	random_walk(0x5eed0002, 6000, true, "set/clear/copy/move");
	return done_testing();
}
