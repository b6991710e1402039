/* model_ranges_test.c - registered ranges of the model (model/um_ranges.c):
 * splitting on partial unregister, re-registration with other modes, merging
 * of adjacent same-attribute ranges (and not of different backings),
 * um_range_find, um_registered_bytes, registration over several mappings
 * and over a hole (left unregistered, as the kernel does), and a randomized
 * cross-check of um_register and um_op_register against a per-page
 * reference.  Pure model: no kernel uffd. */
#include "test_helpers.h"
#include "um_model.h"

#define P UM_PAGE_SIZE
#define RB 0x20000000ULL /* base of the test address space */
#define A(pg) (RB + (uint64_t)(pg) * P)

#define M_MISSING UFFDIO_REGISTER_MODE_MISSING
#define M_WP UFFDIO_REGISTER_MODE_WP
#define M_MINOR UFFDIO_REGISTER_MODE_MINOR
#define IOC_BASIC 0x1cULL /* arbitrary: what "the kernel answered" */
#define IOC_WP 0x5cULL

/* The address space: pages [0, 256) of RB, one hole at [160, 176). */
enum { LM_ANON0, LM_ANON_RO, LM_SHM, LM_FILE, LM_ANON1, NMAPS };
static struct um_mapping layout[NMAPS];

static struct um_mapping mk(uint64_t p0, uint64_t p1, uint32_t backing, uint32_t prot,
			    uint32_t shared, uint64_t offset, uint64_t dev, uint64_t ino,
			    const char *name)
{
	struct um_mapping m;
	memset(&m, 0, sizeof(m));
	m.start = A(p0);
	m.end = A(p1);
	m.backing = backing;
	m.prot = prot;
	m.shared = shared;
	m.offset = offset;
	m.dev = dev;
	m.ino = ino;
	m.pagesize = 4096;
	snprintf(m.name, sizeof(m.name), "%s", name);
	return m;
}

static void layout_init(void)
{
	layout[LM_ANON0] = mk(0, 64, UM_BACKING_ANON, 3, 0, 0, 0, 0, "");
	layout[LM_ANON_RO] = mk(64, 96, UM_BACKING_ANON, 1, 0, 0, 0, 0, "");
	layout[LM_SHM] = mk(96, 160, UM_BACKING_SHMEM, 3, 1, 0x10000, 5, 100, "/memfd:x (deleted)");
	layout[LM_FILE] = mk(176, 208, UM_BACKING_FILE, 1, 0, 0, 8, 200, "/tmp/f");
	layout[LM_ANON1] = mk(208, 256, UM_BACKING_ANON, 3, 0, 0, 0, 0, "");
}

static struct um_uffd *new_uffd(struct um_state *st)
{
	return um_uffd_new(st, 1000 + st->next_id, UM_ORIGIN_SYSCALL, 0, st->pid);
}

/* The same rule as the model: the kernel merges such VMAs. */
static bool attrs_mergeable(const struct um_range *a, const struct um_range *b)
{
	const struct um_mapping *x = &a->map, *y = &b->map;
	if (a->modes != b->modes || a->ioctls != b->ioctls || x->backing != y->backing ||
	    x->prot != y->prot || x->shared != y->shared || x->dev != y->dev ||
	    x->ino != y->ino || x->pagesize != y->pagesize || strcmp(x->name, y->name))
		return false;
	return x->backing == UM_BACKING_ANON || x->offset + (a->end - a->start) == y->offset;
}

/* Sorted, disjoint, aligned, map bounds == range bounds, maximally merged. */
static const char *ranges_invariant(const struct um_uffd *u)
{
	static char why[200];
	for (uint32_t i = 0; i < u->nranges; i++) {
		const struct um_range *r = &u->ranges[i];
		if (r->start >= r->end || (r->start | r->end) & (P - 1))
			snprintf(why, sizeof(why), "range %u [%#llx, %#llx) empty or unaligned", i,
				 (unsigned long long)r->start, (unsigned long long)r->end);
		else if (r->map.start != r->start || r->map.end != r->end)
			snprintf(why, sizeof(why), "range %u: map bounds [%#llx, %#llx) differ", i,
				 (unsigned long long)r->map.start, (unsigned long long)r->map.end);
		else if (i && r->start < u->ranges[i - 1].end)
			snprintf(why, sizeof(why), "range %u overlaps or precedes range %u", i, i - 1);
		else if (i && r->start == u->ranges[i - 1].end &&
			 attrs_mergeable(&u->ranges[i - 1], r))
			snprintf(why, sizeof(why), "ranges %u and %u are adjacent and mergeable", i - 1,
				 i);
		else
			continue;
		return why;
	}
	return NULL;
}

static void dump_ranges(const struct um_uffd *u)
{
	for (uint32_t i = 0; i < u->nranges; i++) {
		const struct um_range *r = &u->ranges[i];
		diag("  range %u: pages [%lld, %lld) modes %#llx backing %u prot %u offset %#llx", i,
		     (long long)(r->start - RB) / (long long)P, (long long)(r->end - RB) / (long long)P,
		     (unsigned long long)r->modes, r->map.backing, r->map.prot,
		     (unsigned long long)r->map.offset);
	}
}

/* Expect exactly these ranges (page numbers, modes, backing). */
struct want {
	uint64_t p0, p1, modes;
	uint32_t backing;
};

static void expect(const struct um_uffd *u, const struct want *w, size_t n, const char *what)
{
	bool same = u->nranges == n && ranges_invariant(u) == NULL;
	for (size_t i = 0; same && i < n; i++)
		same = u->ranges[i].start == A(w[i].p0) && u->ranges[i].end == A(w[i].p1) &&
		       u->ranges[i].modes == w[i].modes && u->ranges[i].map.backing == w[i].backing;
	if (!ok(same, "%s", what)) {
		const char *inv = ranges_invariant(u);
		if (inv)
			diag("invariant: %s", inv);
		dump_ranges(u);
		for (size_t i = 0; i < n; i++)
			diag("  want: pages [%llu, %llu) modes %#llx backing %u",
			     (unsigned long long)w[i].p0, (unsigned long long)w[i].p1,
			     (unsigned long long)w[i].modes, w[i].backing);
	}
}

static void test_split_merge(void)
{
	struct um_state st;
	um_state_init(&st, 42);
	struct um_uffd *u = new_uffd(&st);
	const struct um_mapping *L = layout;

	ok(um_range_find(u, A(0)) == NULL && um_registered_bytes(u) == 0, "nothing registered");
	is_int(um_register(u, A(0), A(64), M_MISSING, IOC_BASIC, L, NMAPS), 0, "register pages 0..64");
	expect(u, (struct want[]){{0, 64, M_MISSING, UM_BACKING_ANON}}, 1, "one anon range");
	is_u64(um_registered_bytes(u), 64 * P, "64 pages registered");
	const struct um_range *r = um_range_find(u, A(10) + 123);
	ok(r && r->start == A(0) && r->end == A(64) && r->ioctls == IOC_BASIC,
	   "um_range_find inside (unaligned address)");
	ok(um_range_find(u, A(0)) == r && um_range_find(u, A(64) - 1) == r,
	   "um_range_find at first and last byte");
	ok(um_range_find(u, A(64)) == NULL && um_range_find(u, A(0) - 1) == NULL,
	   "um_range_find just outside: NULL");

	is_int(um_unregister(u, A(20), A(30)), 0, "unregister pages 20..30");
	expect(u, (struct want[]){{0, 20, M_MISSING, UM_BACKING_ANON}, {30, 64, M_MISSING, UM_BACKING_ANON}},
	       2, "a hole in the middle splits the range");
	is_u64(um_registered_bytes(u), 54 * P, "54 pages registered");
	ok(um_range_find(u, A(25)) == NULL && um_range_find(u, A(19)) &&
		   um_range_find(u, A(30)),
	   "um_range_find: hole NULL, both sides found");

	um_register(u, A(20), A(30), M_MISSING, IOC_BASIC, L, NMAPS);
	expect(u, (struct want[]){{0, 64, M_MISSING, UM_BACKING_ANON}}, 1,
	       "re-registering the hole merges back into one range");

	um_register(u, A(10), A(40), M_WP, IOC_WP, L, NMAPS);
	expect(u,
	       (struct want[]){{0, 10, M_MISSING, UM_BACKING_ANON}, {10, 40, M_WP, UM_BACKING_ANON},
			       {40, 64, M_MISSING, UM_BACKING_ANON}},
	       3, "re-register a sub-range with WP: its modes are replaced there only");
	is_u64(um_range_find(u, A(10))->ioctls, IOC_WP, "the sub-range has the new ioctls");
	is_u64(um_registered_bytes(u), 64 * P, "still 64 pages registered");

	um_register(u, A(5), A(15), M_MISSING | M_WP, IOC_WP, L, NMAPS);
	expect(u,
	       (struct want[]){{0, 5, M_MISSING, UM_BACKING_ANON},
			       {5, 15, M_MISSING | M_WP, UM_BACKING_ANON},
			       {15, 40, M_WP, UM_BACKING_ANON},
			       {40, 64, M_MISSING, UM_BACKING_ANON}},
	       4, "a registration straddling two ranges replaces both parts");

	um_register(u, A(0), A(64), M_MISSING, IOC_BASIC, L, NMAPS);
	expect(u, (struct want[]){{0, 64, M_MISSING, UM_BACKING_ANON}}, 1,
	       "re-registering everything with the first modes merges all");

	/* Unregister across several ranges. */
	um_register(u, A(10), A(20), M_WP, IOC_WP, L, NMAPS);
	um_register(u, A(30), A(40), M_MINOR, IOC_BASIC, L, NMAPS);
	um_unregister(u, A(15), A(35));
	expect(u,
	       (struct want[]){{0, 10, M_MISSING, UM_BACKING_ANON}, {10, 15, M_WP, UM_BACKING_ANON},
			       {35, 40, M_MINOR, UM_BACKING_ANON},
			       {40, 64, M_MISSING, UM_BACKING_ANON}},
	       4, "unregister across three ranges trims two and drops one");
	um_unregister(u, A(100), A(200));
	is_int(u->nranges, 4, "unregistering where nothing is registered changes nothing");
	um_unregister(u, A(0), A(64));
	ok(u->nranges == 0 && um_registered_bytes(u) == 0, "unregister everything");

	/* WP bits go with unregistration, inside the range only. */
	um_register(u, A(0), A(64), M_WP, IOC_WP, L, NMAPS);
	um_wp_set(&u->wp, A(0), A(64), true);
	um_unregister(u, A(8), A(16));
	is_u64(um_wp_count(&u->wp), 56, "unregister clears WP bits of its range");
	ok(!um_wp_test(&u->wp, A(8)) && !um_wp_test(&u->wp, A(15)) && um_wp_test(&u->wp, A(7)) &&
		   um_wp_test(&u->wp, A(16)),
	   "and only there");
	um_unregister(u, A(0), A(64));

	/* Many ranges: growth beyond the initial capacity. */
	for (int i = 0; i < 100; i++)
		um_register(u, A(1000 + 2 * i), A(1001 + 2 * i), i % 2 ? M_WP : M_MISSING, IOC_BASIC,
			    NULL, 0);
	ok(u->nranges == 100 && ranges_invariant(u) == NULL, "100 separate one-page ranges");
	bool found = true;
	for (int i = 0; i < 100; i++) {
		const struct um_range *q = um_range_find(u, A(1000 + 2 * i));
		found &= q && q->start == A(1000 + 2 * i) && q->modes == (i % 2 ? M_WP : M_MISSING) &&
			 !um_range_find(u, A(1001 + 2 * i));
	}
	ok(found, "um_range_find finds each of them and none of the gaps");
	um_unregister(u, A(1000), A(1200));
	is_int(u->nranges, 0, "all gone after one unregister");
	um_state_free(&st);
}

static void test_maps(void)
{
	struct um_state st;
	um_state_init(&st, 42);
	struct um_uffd *u = new_uffd(&st);
	const struct um_mapping *L = layout;

	/* One call over anon RW, anon RO, shmem: three ranges. */
	um_register(u, A(60), A(100), M_MISSING, IOC_BASIC, L, NMAPS);
	expect(u,
	       (struct want[]){{60, 64, M_MISSING, UM_BACKING_ANON},
			       {64, 96, M_MISSING, UM_BACKING_ANON},
			       {96, 100, M_MISSING, UM_BACKING_SHMEM}},
	       3, "one registration over 3 mappings: different prot and backing do not merge");
	ok(u->ranges[0].map.prot == 3 && u->ranges[1].map.prot == 1,
	   "each range keeps its mapping's prot");
	is_u64(u->ranges[2].map.offset, 0x10000, "shmem range starting at the mapping: its offset");
	is_str(u->ranges[2].map.name, "/memfd:x (deleted)", "shmem range keeps the mapping name");
	um_unregister(u, A(0), A(256));

	/* Clipped shmem keeps offsets consistent; adjacent pieces merge. */
	um_register(u, A(100), A(110), M_MINOR, IOC_BASIC, L, NMAPS);
	is_u64(u->ranges[0].map.offset, 0x10000 + 4 * P, "shmem clipped at page 4: offset + 4 pages");
	um_register(u, A(110), A(120), M_MINOR, IOC_BASIC, L, NMAPS);
	expect(u, (struct want[]){{100, 120, M_MINOR, UM_BACKING_SHMEM}}, 1,
	       "adjacent shmem registrations with contiguous offsets merge");
	um_unregister(u, A(105), A(106));
	is_u64(u->ranges[1].map.offset, 0x10000 + 10 * P,
	       "split shmem: the upper part's offset moves with its start");
	um_register(u, A(105), A(106), M_MINOR, IOC_BASIC, L, NMAPS);
	expect(u, (struct want[]){{100, 120, M_MINOR, UM_BACKING_SHMEM}}, 1,
	       "and re-registering the page merges the shmem range again");
	um_unregister(u, A(0), A(256));

	/* Same file, non-contiguous offsets: not one VMA, no merge. */
	struct um_mapping two[2] = {mk(300, 310, UM_BACKING_SHMEM, 3, 1, 0, 5, 100, "/memfd:x (deleted)"),
				    mk(310, 320, UM_BACKING_SHMEM, 3, 1, 0, 5, 100, "/memfd:x (deleted)")};
	um_register(u, A(300), A(320), M_MINOR, IOC_BASIC, two, 2);
	expect(u,
	       (struct want[]){{300, 310, M_MINOR, UM_BACKING_SHMEM}, {310, 320, M_MINOR, UM_BACKING_SHMEM}},
	       2, "two mappings of one file at discontiguous offsets stay apart");
	um_unregister(u, A(300), A(320));

	/* Separate, adjacent anonymous mappings with equal attributes merge. */
	struct um_mapping a1 = mk(400, 410, UM_BACKING_ANON, 3, 0, 0, 0, 0, "");
	struct um_mapping a2 = mk(410, 420, UM_BACKING_ANON, 3, 0, 0x777000, 0, 0, "");
	um_register(u, A(400), A(410), M_MISSING, IOC_BASIC, &a1, 1);
	um_register(u, A(410), A(420), M_MISSING, IOC_BASIC, &a2, 1);
	expect(u, (struct want[]){{400, 420, M_MISSING, UM_BACKING_ANON}}, 1,
	       "adjacent anonymous registrations merge (anon offset ignored)");
	um_register(u, A(420), A(430), M_MISSING, IOC_WP, NULL, 0);
	ok(u->nranges == 2, "different ioctls do not merge");
	um_unregister(u, A(400), A(430));

	/* Named anonymous mappings: the name is an attribute. */
	struct um_mapping n1 = mk(500, 510, UM_BACKING_ANON, 3, 0, 0, 0, 0, "[anon:a]");
	struct um_mapping n2 = mk(510, 520, UM_BACKING_ANON, 3, 0, 0, 0, 0, "[anon:b]");
	um_register(u, A(500), A(510), M_MISSING, IOC_BASIC, &n1, 1);
	um_register(u, A(510), A(520), M_MISSING, IOC_BASIC, &n2, 1);
	ok(u->nranges == 2, "differently named anonymous mappings stay apart");
	um_unregister(u, A(500), A(520));

	/* Over a hole: shmem tail, the hole, file head.  The kernel registers
	 * the VMAs in the range only; the hole stays unregistered. */
	um_register(u, A(150), A(180), M_MISSING, IOC_BASIC, L, NMAPS);
	expect(u,
	       (struct want[]){{150, 160, M_MISSING, UM_BACKING_SHMEM},
			       {176, 180, M_MISSING, UM_BACKING_FILE}},
	       2, "registration over a hole: only the mapped parts are registered, the hole is not");
	is_u64(um_registered_bytes(u), 14 * P, "14 pages registered (10 shmem + 4 file)");
	ok(um_range_find(u, A(160)) == NULL && um_range_find(u, A(175) + P - 1) == NULL &&
		   um_range_find(u, A(159)) && um_range_find(u, A(176)),
	   "um_range_find: NULL across the whole hole, found on both sides");
	ok(u->ranges[0].map.offset == 0x10000 + 54 * P && u->ranges[0].map.ino == 100,
	   "the shmem part keeps its identity (offset clipped at its page 54)");
	ok(u->ranges[1].map.offset == 0 && u->ranges[1].map.ino == 200 &&
		   strcmp(u->ranges[1].map.name, "/tmp/f") == 0,
	   "the file part keeps its identity");
	um_unregister(u, A(0), A(256));

	/* Only the maps overlapping the range, with a hole between them. */
	um_register(u, A(150), A(180), M_WP, IOC_WP, &L[LM_SHM], 2);
	expect(u,
	       (struct want[]){{150, 160, M_WP, UM_BACKING_SHMEM}, {176, 180, M_WP, UM_BACKING_FILE}},
	       2, "the overlapping maps alone: the same two ranges, the hole unregistered");
	um_unregister(u, A(0), A(256));

	/* Maps given, none of them inside the range: nothing is registered. */
	um_register(u, A(162), A(170), M_MISSING, IOC_BASIC, L, NMAPS);
	ok(u->nranges == 0 && um_registered_bytes(u) == 0,
	   "a range entirely inside a hole, with maps given: nothing registered");

	/* A range of unknown backing over the hole is cut when the backing
	 * becomes known; its WP bits are not touched by registering. */
	um_register(u, A(156), A(180), M_MISSING, IOC_BASIC, NULL, 0);
	expect(u, (struct want[]){{156, 180, M_MISSING, UM_BACKING_UNKNOWN}}, 1,
	       "registration without maps over the hole: one range of unknown backing");
	um_wp_set(&u->wp, A(156), A(180), true);
	um_register(u, A(150), A(180), M_MISSING, IOC_BASIC, L, NMAPS);
	expect(u,
	       (struct want[]){{150, 160, M_MISSING, UM_BACKING_SHMEM},
			       {176, 180, M_MISSING, UM_BACKING_FILE}},
	       2, "registering with maps replaces it: the hole part becomes unregistered");
	is_u64(um_wp_count(&u->wp), 24, "registering changes no WP bit (all 24 still set)");
	um_unregister(u, A(0), A(256));
	is_u64(um_wp_count(&u->wp), 0, "unregister clears them");

	/* Maps beyond the registration on both sides, and no maps at all. */
	um_register(u, A(200), A(212), M_WP, IOC_WP, L, NMAPS);
	expect(u, (struct want[]){{200, 208, M_WP, UM_BACKING_FILE}, {208, 212, M_WP, UM_BACKING_ANON}},
	       2, "file then anon: different backings do not merge");
	is_u64(u->ranges[0].map.offset, 24 * P, "file clipped at its page 24: offset 24 pages");
	um_unregister(u, A(0), A(256));
	um_register(u, A(3), A(9), M_MISSING, IOC_BASIC, NULL, 0);
	expect(u, (struct want[]){{3, 9, M_MISSING, UM_BACKING_UNKNOWN}}, 1,
	       "registration without maps: one range of unknown backing");
	um_register(u, A(160), A(176), M_MISSING, IOC_BASIC, NULL, 0);
	um_register(u, A(0), A(256), M_MISSING, IOC_BASIC, L, NMAPS);
	expect(u,
	       (struct want[]){{0, 64, M_MISSING, UM_BACKING_ANON}, {64, 96, M_MISSING, UM_BACKING_ANON},
			       {96, 160, M_MISSING, UM_BACKING_SHMEM},
			       {176, 208, M_MISSING, UM_BACKING_FILE},
			       {208, 256, M_MISSING, UM_BACKING_ANON}},
	       5, "registering the whole layout replaces the unknown ranges with the real ones; the hole is left unregistered");
	is_u64(um_registered_bytes(u), 240 * P, "240 pages registered (256 less the 16-page hole)");
	ok(um_range_find(u, A(3)) && um_range_find(u, A(3))->map.backing == UM_BACKING_ANON &&
		   um_range_find(u, A(165)) == NULL,
	   "the unknown range at pages 3..9 became anonymous, the one in the hole is gone");
	um_state_free(&st);
}

/* ---- randomized cross-check against a per-page reference ---- */

#define NPG 256

struct pageref {
	bool reg, wp;
	uint64_t modes, ioctls;
	int map;        /* layout index, or -1 for a part no map described */
	uint64_t off;   /* offset the model should derive (non-anon) */
};

static const char *compare(const struct um_uffd *u, const struct pageref *ref)
{
	static char why[300];
	const char *inv = ranges_invariant(u);
	if (inv)
		return inv;
	uint64_t nreg = 0;
	for (int p = 0; p < NPG; p++) {
		const struct pageref *e = &ref[p];
		const struct um_range *r = um_range_find(u, A(p));
		nreg += e->reg;
		if (um_wp_test(&u->wp, A(p)) != e->wp) {
			snprintf(why, sizeof(why), "page %d: WP bit %d, reference %d", p, !e->wp, e->wp);
			return why;
		}
		if (!e->reg) {
			if (r) {
				snprintf(why, sizeof(why), "page %d registered, reference not", p);
				return why;
			}
			continue;
		}
		if (!r) {
			snprintf(why, sizeof(why), "page %d not registered, reference is", p);
			return why;
		}
		struct um_mapping none;
		memset(&none, 0, sizeof(none));
		const struct um_mapping *m = e->map >= 0 ? &layout[e->map] : &none;
		bool anon = m->backing == UM_BACKING_ANON;
		if (r->modes != e->modes || r->ioctls != e->ioctls || r->map.backing != m->backing ||
		    r->map.prot != m->prot || r->map.shared != m->shared || r->map.ino != m->ino ||
		    r->map.dev != m->dev || strcmp(r->map.name, m->name) ||
		    (!anon && r->map.offset + (A(p) - r->start) != e->off)) {
			snprintf(why, sizeof(why),
				 "page %d: modes %#llx/%#llx ioctls %#llx/%#llx backing %u/%u "
				 "offset %#llx/%#llx (model/reference)",
				 p, (unsigned long long)r->modes, (unsigned long long)e->modes,
				 (unsigned long long)r->ioctls, (unsigned long long)e->ioctls,
				 r->map.backing, m->backing,
				 (unsigned long long)(r->map.offset + (A(p) - r->start)),
				 (unsigned long long)e->off);
			return why;
		}
	}
	if (um_registered_bytes(u) != nreg * P) {
		snprintf(why, sizeof(why), "registered bytes %llu, reference %llu",
			 (unsigned long long)um_registered_bytes(u), (unsigned long long)(nreg * P));
		return why;
	}
	return NULL;
}

static int map_of_page(int p)
{
	for (int i = 0; i < NMAPS; i++)
		if (A(p) >= layout[i].start && A(p) < layout[i].end)
			return i;
	return -1;
}

static void random_walk(uint64_t seed, int nops)
{
	static const uint64_t modes[] = {M_MISSING, M_WP, M_MISSING | M_WP, M_MINOR};
	struct th_rng g = th_rng_seed(seed);
	note("ranges random walk: seed %#llx, %d ops", (unsigned long long)g.s, nops);
	struct um_state st;
	um_state_init(&st, 42);
	struct um_uffd *u = new_uffd(&st);
	struct pageref ref[NPG];
	memset(ref, 0, sizeof(ref));
	const char *bad = NULL;
	int bad_op = -1;
	char what[200] = "";
	for (int op = 0; op < nops && !bad; op++) {
		int p0 = (int)th_rng_below(&g, NPG);
		int len = th_rng_below(&g, 4) ? 1 + (int)th_rng_below(&g, 24)
					      : 1 + (int)th_rng_below(&g, NPG);
		int p1 = p0 + len > NPG ? NPG : p0 + len;
		uint64_t k = th_rng_below(&g, 10);
		if (k < 5) { /* register, with all maps, only the overlapping ones, or none */
			uint64_t md = modes[th_rng_below(&g, 4)];
			uint64_t ioc = (md & M_WP) ? IOC_WP : IOC_BASIC;
			uint64_t how = th_rng_below(&g, 8);
			/* Half through um_op_register (a successful UFFDIO_REGISTER). */
			bool via_op = th_rng_below(&g, 2);
			struct um_mapping sub[NMAPS];
			size_t ns = 0;
			if (how == 0) {
				ns = 0;
			} else if (how < 4) {
				for (int i = 0; i < NMAPS; i++)
					if (layout[i].end > A(p0) && layout[i].start < A(p1))
						sub[ns++] = layout[i];
			} else {
				memcpy(sub, layout, sizeof(layout));
				ns = NMAPS;
			}
			snprintf(what, sizeof(what), "%s [%d, %d) modes %#llx with %zu maps",
				 via_op ? "um_op_register" : "um_register", p0, p1,
				 (unsigned long long)md, ns);
			if (via_op)
				um_op_register(u, 0, A(p0), (uint64_t)(p1 - p0) * P, md, ioc, sub, ns);
			else
				um_register(u, A(p0), A(p1), md, ioc, sub, ns);
			/* Reference.  With maps, a page no given map describes (the
			 * hole) is not registered; without maps the whole range is one
			 * piece of unknown backing with offset 0 at its first page.
			 * um_op_register leaves pages this uffd registered already
			 * with modes including md alone.  WP bits never change. */
			for (int p = p0; p < p1; p++) {
				int mi = ns ? map_of_page(p) : -1;
				struct pageref *e = &ref[p];
				if (via_op && e->reg && (e->modes & md) == md)
					continue;
				if (ns && mi < 0) {
					e->reg = false;
					continue;
				}
				e->reg = true;
				e->modes = md;
				e->ioctls = ioc;
				e->map = mi;
				e->off = mi >= 0 ? layout[mi].offset + (A(p) - layout[mi].start)
						 : (uint64_t)(p - p0) * P;
			}
		} else if (k < 8) {
			snprintf(what, sizeof(what), "unregister [%d, %d)", p0, p1);
			um_unregister(u, A(p0), A(p1));
			for (int p = p0; p < p1; p++)
				ref[p].reg = ref[p].wp = false;
		} else { /* WP bits on registered pages, as the ops would */
			bool on = k == 8;
			snprintf(what, sizeof(what), "wp %s [%d, %d)", on ? "set" : "clear", p0, p1);
			for (int p = p0; p < p1; p++)
				if (ref[p].reg) {
					um_wp_set(&u->wp, A(p), A(p + 1), on);
					ref[p].wp = on;
				}
		}
		bad = compare(u, ref);
		if (bad)
			bad_op = op;
	}
	if (!ok(bad == NULL,
		"%d random register (direct and as UFFDIO_REGISTER results)/unregister/WP ops "
		"agree with a per-page reference",
		nops)) {
		diag("op %d (%s): %s", bad_op, what, bad);
		dump_ranges(u);
	}
	um_state_free(&st);
}

int main(void)
{
	layout_init();
	test_split_merge();
	test_maps();
	random_walk(0x7a9e5001, 5000);
	return done_testing();
}
