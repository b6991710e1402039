/* um_wpmap.c - which pages of a uffd are write-protected: sorted 2 MiB chunks
 * with one bit per 4 KiB page.  Range operations touch whole words. */
#include <string.h>

#include "um_model.h"

#define CHUNK_SHIFT 21
#define CHUNK_SIZE (1ULL << CHUNK_SHIFT)
#define PAGES_PER_CHUNK (CHUNK_SIZE >> UM_PAGE_SHIFT)

/* Index of the first chunk with base >= addr's chunk base. */
static uint32_t lower_bound(const struct um_wpmap *m, uint64_t base)
{
	uint32_t lo = 0, hi = m->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (m->chunks[mid].base < base)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct um_wpchunk *chunk_get(struct um_wpmap *m, uint64_t base, bool create)
{
	uint32_t i = lower_bound(m, base);
	if (i < m->n && m->chunks[i].base == base)
		return &m->chunks[i];
	if (!create)
		return NULL;
	if (m->n == m->cap) {
		uint32_t ncap = m->cap ? m->cap * 2 : 64;
		void *p = um_grow(m->chunks, (size_t)m->cap * sizeof(*m->chunks),
				  (size_t)ncap * sizeof(*m->chunks));
		if (!p)
			return NULL;
		m->chunks = p;
		m->cap = ncap;
	}
	memmove(&m->chunks[i + 1], &m->chunks[i], (m->n - i) * sizeof(*m->chunks));
	m->n++;
	memset(&m->chunks[i], 0, sizeof(*m->chunks));
	m->chunks[i].base = base;
	return &m->chunks[i];
}

static bool chunk_empty(const struct um_wpchunk *c)
{
	for (int i = 0; i < 8; i++)
		if (c->bits[i])
			return false;
	return true;
}

/* Set or clear bits [first, last) of one chunk. */
static void bits_apply(uint64_t *bits, uint64_t first, uint64_t last, bool on)
{
	while (first < last) {
		uint64_t w = first / 64, b = first % 64;
		uint64_t n = 64 - b;
		if (n > last - first)
			n = last - first;
		uint64_t mask = (n == 64) ? ~0ULL : (((1ULL << n) - 1) << b);
		if (on)
			bits[w] |= mask;
		else
			bits[w] &= ~mask;
		first += n;
	}
}

int um_wp_set(struct um_wpmap *m, uint64_t start, uint64_t end, bool on)
{
	start &= ~(UM_PAGE_SIZE - 1);
	end = (end + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1);
	int rc = 0;
	if (!on) { /* visit only the chunks that exist */
		uint32_t i = lower_bound(m, start & ~(CHUNK_SIZE - 1));
		while (i < m->n && m->chunks[i].base < end) {
			struct um_wpchunk *c = &m->chunks[i];
			uint64_t s = start > c->base ? start : c->base;
			uint64_t e = end - c->base > CHUNK_SIZE ? c->base + CHUNK_SIZE : end;
			bits_apply(c->bits, (s - c->base) >> UM_PAGE_SHIFT,
				   (e - c->base) >> UM_PAGE_SHIFT, false);
			if (chunk_empty(c)) {
				memmove(c, c + 1, (m->n - i - 1) * sizeof(*c));
				m->n--;
			} else {
				i++;
			}
		}
		return 0;
	}
	while (start < end) {
		uint64_t base = start & ~(CHUNK_SIZE - 1);
		uint64_t stop = end - base > CHUNK_SIZE ? base + CHUNK_SIZE : end;
		struct um_wpchunk *c = chunk_get(m, base, on);
		if (c) {
			bits_apply(c->bits, (start - base) >> UM_PAGE_SHIFT,
				   (stop - base) >> UM_PAGE_SHIFT, on);
			if (!on && chunk_empty(c)) {
				uint32_t i = (uint32_t)(c - m->chunks);
				memmove(c, c + 1, (m->n - i - 1) * sizeof(*c));
				m->n--;
			}
		} else if (on) {
			rc = -1;
		}
		start = stop;
	}
	return rc;
}

bool um_wp_test(const struct um_wpmap *m, uint64_t addr)
{
	uint64_t base = addr & ~(CHUNK_SIZE - 1);
	uint32_t i = lower_bound(m, base);
	if (i >= m->n || m->chunks[i].base != base)
		return false;
	uint64_t p = (addr - base) >> UM_PAGE_SHIFT;
	return (m->chunks[i].bits[p / 64] >> (p % 64)) & 1;
}

uint64_t um_wp_count_range(const struct um_wpmap *m, uint64_t start, uint64_t end)
{
	uint64_t n = 0, cur = start, rs, re;
	while (um_wp_next_run(m, &cur, end, &rs, &re))
		n += (re - rs) >> UM_PAGE_SHIFT;
	return n;
}

uint64_t um_wp_count(const struct um_wpmap *m)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < m->n; i++)
		for (int w = 0; w < 8; w++)
			n += (uint64_t)__builtin_popcountll(m->chunks[i].bits[w]);
	return n;
}

/* First bit at or after 'from' (< 512) whose value is 'want', or -1. */
static int find_bit(const uint64_t *bits, uint64_t from, bool want)
{
	while (from < PAGES_PER_CHUNK) {
		uint64_t w = bits[from / 64];
		if (!want)
			w = ~w;
		w &= ~0ULL << (from % 64);
		if (w)
			return (int)((from & ~63ULL) + (uint64_t)__builtin_ctzll(w));
		from = (from & ~63ULL) + 64;
	}
	return -1;
}

bool um_wp_next_run(const struct um_wpmap *m, uint64_t *cursor, uint64_t end,
		    uint64_t *run_start, uint64_t *run_end)
{
	uint64_t a = *cursor & ~(UM_PAGE_SIZE - 1), start = 0;
	uint32_t i = lower_bound(m, a & ~(CHUNK_SIZE - 1));
	bool found = false;
	for (; i < m->n && m->chunks[i].base < end; i++) {
		const struct um_wpchunk *c = &m->chunks[i];
		uint64_t p0 = a > c->base ? (a - c->base) >> UM_PAGE_SHIFT : 0;
		if (p0 >= PAGES_PER_CHUNK)
			continue;
		int p = find_bit(c->bits, p0, true);
		if (p < 0)
			continue;
		start = c->base + ((uint64_t)p << UM_PAGE_SHIFT);
		found = start < end;
		break;
	}
	if (!found) {
		*cursor = end;
		return false;
	}
	uint64_t addr = start;
	for (; i < m->n; i++) {
		const struct um_wpchunk *c = &m->chunks[i];
		if (c->base != (addr & ~(CHUNK_SIZE - 1)))
			break; /* a missing chunk ends the run */
		int p = find_bit(c->bits, (addr - c->base) >> UM_PAGE_SHIFT, false);
		if (p >= 0) {
			addr = c->base + ((uint64_t)p << UM_PAGE_SHIFT);
			break;
		}
		addr = c->base + CHUNK_SIZE;
	}
	if (addr > end)
		addr = end;
	*run_start = start;
	*run_end = addr;
	*cursor = addr;
	return true;
}

void um_wp_free(struct um_wpmap *m)
{
	um_free(m->chunks, (size_t)m->cap * sizeof(*m->chunks));
	memset(m, 0, sizeof(*m));
}

int um_wp_copy(struct um_wpmap *dst, const struct um_wpmap *src)
{
	memset(dst, 0, sizeof(*dst));
	if (!src->n)
		return 0;
	dst->chunks = um_zalloc((size_t)src->n * sizeof(*src->chunks));
	if (!dst->chunks)
		return -1;
	memcpy(dst->chunks, src->chunks, (size_t)src->n * sizeof(*src->chunks));
	dst->n = dst->cap = src->n;
	return 0;
}

int um_wp_move(struct um_wpmap *m, uint64_t from, uint64_t to, uint64_t len)
{
	if (from == to || len == 0)
		return 0;
	/* Collect the runs first (bounded by the map itself), then re-apply. */
	struct um_wpmap tmp = {0};
	uint64_t cur = from, rs, re;
	int rc = 0;
	while (um_wp_next_run(m, &cur, from + len, &rs, &re))
		rc |= um_wp_set(&tmp, rs - from + to, re - from + to, true);
	um_wp_set(m, from, from + len, false);
	um_wp_set(m, to, to + len, false); /* what was at the target is replaced */
	for (uint32_t i = 0; i < tmp.n; i++) {
		uint64_t c2 = tmp.chunks[i].base;
		while (um_wp_next_run(&tmp, &c2, tmp.chunks[i].base + CHUNK_SIZE, &rs, &re))
			rc |= um_wp_set(m, rs, re, true);
	}
	um_wp_free(&tmp);
	return rc;
}

int um_wp_load_chunk(struct um_wpmap *m, uint64_t base, const uint64_t bits[8])
{
	struct um_wpchunk *c = chunk_get(m, base, true);
	if (!c)
		return -1;
	memcpy(c->bits, bits, sizeof(c->bits));
	if (chunk_empty(c))
		um_wp_set(m, base, base + CHUNK_SIZE, false);
	return 0;
}
