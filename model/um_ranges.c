/* um_ranges.c - registered ranges of one uffd: sorted, non-overlapping,
 * adjacent ranges with the same attributes merged (as the kernel merges VMAs). */
#include <string.h>

#include "um_model.h"

static int ranges_reserve(struct um_uffd *u, uint32_t extra)
{
	if (u->nranges + extra <= u->cap_ranges)
		return 0;
	uint32_t ncap = u->cap_ranges ? u->cap_ranges : 16;
	while (ncap < u->nranges + extra)
		ncap *= 2;
	void *p = um_grow(u->ranges, (size_t)u->cap_ranges * sizeof(*u->ranges),
			  (size_t)ncap * sizeof(*u->ranges));
	if (!p)
		return -1;
	u->ranges = p;
	u->cap_ranges = ncap;
	return 0;
}

/* Clip a range to [start, end), keeping the file offset consistent. */
static void range_clip(struct um_range *r, uint64_t start, uint64_t end)
{
	if (r->start < start) {
		if (r->map.backing != UM_BACKING_ANON)
			r->map.offset += start - r->start;
		r->start = start;
	}
	if (r->end > end)
		r->end = end;
	r->map.start = r->start;
	r->map.end = r->end;
}

static bool mergeable(const struct um_range *a, const struct um_range *b)
{
	if (a->end != b->start || a->modes != b->modes || a->ioctls != b->ioctls)
		return false;
	const struct um_mapping *x = &a->map, *y = &b->map;
	if (x->backing != y->backing || x->prot != y->prot || x->shared != y->shared ||
	    x->dev != y->dev || x->ino != y->ino || x->pagesize != y->pagesize ||
	    strcmp(x->name, y->name) != 0)
		return false;
	if (x->backing != UM_BACKING_ANON && x->offset + (a->end - a->start) != y->offset)
		return false;
	return true;
}

/* Merge mergeable neighbours among ranges lo..hi and the ones next to them
 * (the rest are merged already). */
static void ranges_merge_span(struct um_uffd *u, uint32_t lo, uint32_t hi)
{
	if (u->nranges < 2)
		return;
	if (lo > 0)
		lo--;
	if (hi + 1 < u->nranges)
		hi++;
	else
		hi = u->nranges - 1;
	uint32_t w = lo;
	for (uint32_t i = lo + 1; i <= hi; i++) {
		if (mergeable(&u->ranges[w], &u->ranges[i])) {
			u->ranges[w].end = u->ranges[i].end;
			u->ranges[w].map.end = u->ranges[i].end;
			continue;
		}
		if (++w != i)
			u->ranges[w] = u->ranges[i];
	}
	uint32_t gone = hi - w;
	if (gone) {
		memmove(&u->ranges[w + 1], &u->ranges[hi + 1],
			(u->nranges - hi - 1) * sizeof(*u->ranges));
		u->nranges -= gone;
	}
}

/* Index of the first range that ends after addr. */
static uint32_t first_ending_after(const struct um_uffd *u, uint64_t addr)
{
	uint32_t lo = 0, hi = u->nranges;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (u->ranges[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Cut [start, end) out of the ranges (splitting one that straddles). */
static int ranges_cut(struct um_uffd *u, uint64_t start, uint64_t end)
{
	for (uint32_t i = first_ending_after(u, start); i < u->nranges; i++) {
		struct um_range *r = &u->ranges[i];
		if (r->start >= end)
			break;
		if (r->start < start && r->end > end) {
			if (ranges_reserve(u, 1) < 0)
				return -1;
			r = &u->ranges[i];
			memmove(&u->ranges[i + 1], r, (u->nranges - i) * sizeof(*r));
			u->nranges++;
			range_clip(&u->ranges[i], r->start, start);
			range_clip(&u->ranges[i + 1], end, u->ranges[i + 1].end);
			return 0;
		}
		if (r->start < start) {
			range_clip(r, r->start, start);
		} else if (r->end > end) {
			range_clip(r, end, r->end);
		} else {
			memmove(r, r + 1, (u->nranges - i - 1) * sizeof(*r));
			u->nranges--;
			i--;
		}
	}
	return 0;
}

static uint32_t insert_pos(const struct um_uffd *u, uint64_t start)
{
	uint32_t lo = 0, hi = u->nranges;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (u->ranges[mid].start < start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Returns the index it went to, or -1. */
static int64_t range_insert(struct um_uffd *u, const struct um_range *nr)
{
	if (ranges_reserve(u, 1) < 0)
		return -1;
	uint32_t i = insert_pos(u, nr->start);
	memmove(&u->ranges[i + 1], &u->ranges[i], (u->nranges - i) * sizeof(*nr));
	u->ranges[i] = *nr;
	u->nranges++;
	return i;
}

int um_register(struct um_uffd *u, uint64_t start, uint64_t end, uint64_t modes,
		uint64_t ioctls, const struct um_mapping *maps, size_t nmaps)
{
	if (ranges_cut(u, start, end) < 0)
		return -1;
	uint64_t covered = start;
	int64_t lo = -1, hi = -1, at;
	for (size_t i = 0; i < nmaps; i++) {
		if (maps[i].end <= start || maps[i].start >= end)
			continue;
		struct um_range nr = {.start = maps[i].start, .end = maps[i].end,
				      .modes = modes, .ioctls = ioctls, .map = maps[i]};
		range_clip(&nr, start, end);
		/* A hole between mappings stays unregistered, as in the kernel. */
		if ((at = range_insert(u, &nr)) < 0)
			return -1;
		lo = lo < 0 ? at : lo;
		hi = at;
		covered = nr.end;
	}
	if (nmaps == 0 && covered < end) { /* backing unknown: take the range whole */
		struct um_range rest = {.start = covered, .end = end, .modes = modes,
					.ioctls = ioctls};
		rest.map.start = covered;
		rest.map.end = end;
		if ((at = range_insert(u, &rest)) < 0)
			return -1;
		lo = hi = at;
	}
	if (lo >= 0)
		ranges_merge_span(u, (uint32_t)lo, (uint32_t)hi);
	return 0;
}

int um_unregister(struct um_uffd *u, uint64_t start, uint64_t end)
{
	int rc = ranges_cut(u, start, end);
	um_wp_set(&u->wp, start, end, false);
	return rc;
}

const struct um_range *um_range_find(const struct um_uffd *u, uint64_t addr)
{
	uint32_t i = insert_pos(u, addr + 1);
	if (i == 0)
		return NULL;
	const struct um_range *r = &u->ranges[i - 1];
	return (addr >= r->start && addr < r->end) ? r : NULL;
}

uint64_t um_registered_bytes(const struct um_uffd *u)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < u->nranges; i++)
		n += u->ranges[i].end - u->ranges[i].start;
	return n;
}
