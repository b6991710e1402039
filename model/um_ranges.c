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

static void ranges_merge(struct um_uffd *u)
{
	uint32_t w = 0;
	for (uint32_t i = 0; i < u->nranges; i++) {
		if (w > 0 && mergeable(&u->ranges[w - 1], &u->ranges[i])) {
			u->ranges[w - 1].end = u->ranges[i].end;
			u->ranges[w - 1].map.end = u->ranges[i].end;
			continue;
		}
		if (w != i)
			u->ranges[w] = u->ranges[i];
		w++;
	}
	u->nranges = w;
}

/* Cut [start, end) out of the ranges (splitting one that straddles). */
static int ranges_cut(struct um_uffd *u, uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < u->nranges; i++) {
		struct um_range *r = &u->ranges[i];
		if (r->end <= start || r->start >= end)
			continue;
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

static int range_insert(struct um_uffd *u, const struct um_range *nr)
{
	if (ranges_reserve(u, 1) < 0)
		return -1;
	uint32_t i = insert_pos(u, nr->start);
	memmove(&u->ranges[i + 1], &u->ranges[i], (u->nranges - i) * sizeof(*nr));
	u->ranges[i] = *nr;
	u->nranges++;
	return 0;
}

int um_register(struct um_uffd *u, uint64_t start, uint64_t end, uint64_t modes,
		uint64_t ioctls, const struct um_mapping *maps, size_t nmaps)
{
	if (ranges_cut(u, start, end) < 0)
		return -1;
	uint64_t covered = start;
	for (size_t i = 0; i < nmaps; i++) {
		if (maps[i].end <= start || maps[i].start >= end)
			continue;
		struct um_range nr = {.start = maps[i].start, .end = maps[i].end,
				      .modes = modes, .ioctls = ioctls, .map = maps[i]};
		range_clip(&nr, start, end);
		/* A hole between mappings stays unregistered, as in the kernel. */
		if (range_insert(u, &nr) < 0)
			return -1;
		covered = nr.end;
	}
	if (nmaps == 0 && covered < end) { /* backing unknown: take the range whole */
		struct um_range rest = {.start = covered, .end = end, .modes = modes,
					.ioctls = ioctls};
		rest.map.start = covered;
		rest.map.end = end;
		if (range_insert(u, &rest) < 0)
			return -1;
	}
	ranges_merge(u);
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
