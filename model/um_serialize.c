/* um_serialize.c - the state of one process as a flat little-endian blob:
 * the payload of the control socket's STATE reply and of an image's state
 * section.  Layout in docs/image-format.md ("State blob"). */
#include <stdio.h>
#include <string.h>

#include "um_model.h"
#include "um_wire.h"

size_t um_serialize_size(const struct um_state *st)
{
	size_t n = sizeof(struct umw_state_hdr);
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		n += sizeof(struct umw_uffd) + u->nranges * sizeof(struct umw_range) +
		     u->wp.n * sizeof(struct umw_wpchunk) + u->npending * sizeof(struct umw_fault);
	}
	return n;
}

static void put(uint8_t **p, const void *src, size_t n)
{
	memcpy(*p, src, n);
	*p += n;
}

static void map_to_wire(struct umw_mapping *w, const struct um_mapping *m)
{
	memset(w, 0, sizeof(*w));
	w->start = m->start;
	w->end = m->end;
	w->prot = m->prot;
	w->shared = m->shared;
	w->offset = m->offset;
	w->dev = m->dev;
	w->ino = m->ino;
	w->backing = m->backing;
	w->pagesize = m->pagesize;
	memcpy(w->name, m->name, sizeof(w->name));
	w->name[sizeof(w->name) - 1] = 0;
}

size_t um_serialize(const struct um_state *st, void *buf, size_t cap)
{
	if (cap < um_serialize_size(st))
		return 0;
	uint8_t *p = buf;
	struct umw_state_hdr h = {.magic = UMW_STATE_MAGIC, .version = UMW_STATE_VERSION,
				  .hdr_size = sizeof(h), .uffd_size = sizeof(struct umw_uffd),
				  .range_size = sizeof(struct umw_range),
				  .pid = st->pid, .nuffds = st->nuffds, .next_id = st->next_id,
				  .page_size = UM_PAGE_SIZE, .ncounters = UM_C__MAX,
				  .missed_updates = st->missed_updates};
	put(&p, &h, sizeof(h));
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		struct umw_uffd w;
		memset(&w, 0, sizeof(w));
		w.id = u->id;
		w.ino = u->ino;
		w.origin = u->origin;
		w.create_flags = u->create_flags;
		w.mm_pid = u->mm_pid;
		w.parent_id = u->parent_id;
		w.nfds = (uint32_t)u->nfds;
		for (int j = 0; j < u->nfds && j < UM_MAX_FDS; j++) {
			w.fds[j] = u->fds[j];
			w.fd_flags[j] = u->fd_flags[j];
		}
		w.file_flags = u->file_flags;
		w.api_done = u->api_done;
		w.features_requested = u->features_requested;
		w.features = u->features;
		w.ioctls = u->ioctls;
		w.nranges = u->nranges;
		w.nwpchunks = u->wp.n;
		w.npending = u->npending;
		w.last_change_ns = u->last_change_ns;
		for (int c = 0; c < UM_C__MAX && c < UMW_MAX_COUNTERS; c++)
			w.counters[c] = u->counters[c];
		put(&p, &w, sizeof(w));
		for (uint32_t k = 0; k < u->nranges; k++) {
			struct umw_range r;
			memset(&r, 0, sizeof(r));
			r.start = u->ranges[k].start;
			r.end = u->ranges[k].end;
			r.modes = u->ranges[k].modes;
			r.ioctls = u->ranges[k].ioctls;
			map_to_wire(&r.map, &u->ranges[k].map);
			put(&p, &r, sizeof(r));
		}
		for (uint32_t k = 0; k < u->wp.n; k++) {
			struct umw_wpchunk c;
			c.base = u->wp.chunks[k].base;
			memcpy(c.bits, u->wp.chunks[k].bits, sizeof(c.bits));
			put(&p, &c, sizeof(c));
		}
		for (uint32_t k = 0; k < u->npending; k++) {
			struct umw_fault f = {.address = u->pending[k].address,
					      .flags = u->pending[k].flags,
					      .ptid = u->pending[k].ptid,
					      .t_ns = u->pending[k].t_ns};
			put(&p, &f, sizeof(f));
		}
	}
	return (size_t)(p - (uint8_t *)buf);
}

#define FAIL(...)                                        \
	do {                                             \
		if (err)                                 \
			snprintf(err, errlen, __VA_ARGS__); \
		um_state_free(st);                       \
		return -1;                               \
	} while (0)

static bool take(const uint8_t **p, const uint8_t *end, void *dst, size_t n)
{
	if ((size_t)(end - *p) < n)
		return false;
	memcpy(dst, *p, n);
	*p += n;
	return true;
}

static int load_uffd(struct um_state *st, const struct umw_uffd *w, const uint8_t **p,
		     const uint8_t *end, char *err, size_t errlen)
{
	struct um_uffd *u = um_uffd_new(st, w->ino, w->origin, w->create_flags, w->mm_pid);
	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	u->id = w->id;
	u->parent_id = w->parent_id;
	u->nfds = (int32_t)w->nfds;
	for (uint32_t j = 0; j < w->nfds; j++) {
		u->fds[j] = w->fds[j];
		u->fd_flags[j] = w->fd_flags[j];
	}
	u->file_flags = w->file_flags;
	u->api_done = w->api_done;
	u->features_requested = w->features_requested;
	u->features = w->features;
	u->ioctls = w->ioctls;
	u->wp_async = w->features_requested & (1ULL << 15);
	u->last_change_ns = w->last_change_ns;
	for (int c = 0; c < UM_C__MAX && c < UMW_MAX_COUNTERS; c++)
		u->counters[c] = w->counters[c];
	uint64_t prev_end = 0;
	for (uint32_t k = 0; k < w->nranges; k++) {
		struct umw_range r;
		if (!take(p, end, &r, sizeof(r))) {
			snprintf(err, errlen, "uffd %u: truncated in its ranges", w->id);
			return -1;
		}
		if (r.start >= r.end || (r.start | r.end) & (UM_PAGE_SIZE - 1) ||
		    r.start < prev_end) {
			snprintf(err, errlen, "uffd %u: range %u [%#llx, %#llx) is invalid "
				 "or out of order", w->id, k, (unsigned long long)r.start,
				 (unsigned long long)r.end);
			return -1;
		}
		prev_end = r.end;
		struct um_mapping m;
		memset(&m, 0, sizeof(m));
		m.start = r.start;
		m.end = r.end;
		m.prot = r.map.prot;
		m.shared = r.map.shared;
		m.offset = r.map.offset;
		m.dev = r.map.dev;
		m.ino = r.map.ino;
		m.backing = r.map.backing;
		m.pagesize = r.map.pagesize;
		memcpy(m.name, r.map.name, sizeof(m.name));
		m.name[sizeof(m.name) - 1] = 0;
		if (um_register(u, r.start, r.end, r.modes, r.ioctls, &m, 1) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	uint64_t prev_base = 0;
	for (uint32_t k = 0; k < w->nwpchunks; k++) {
		struct umw_wpchunk c;
		if (!take(p, end, &c, sizeof(c))) {
			snprintf(err, errlen, "uffd %u: truncated in its write-protect map", w->id);
			return -1;
		}
		if ((c.base & ((1ULL << 21) - 1)) || (k && c.base <= prev_base)) {
			snprintf(err, errlen, "uffd %u: write-protect chunk %u is misaligned "
				 "or out of order", w->id, k);
			return -1;
		}
		prev_base = c.base;
		if (um_wp_load_chunk(&u->wp, c.base, c.bits) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	for (uint32_t k = 0; k < w->npending; k++) {
		struct umw_fault f;
		if (!take(p, end, &f, sizeof(f))) {
			snprintf(err, errlen, "uffd %u: truncated in its pending faults", w->id);
			return -1;
		}
		u->pending[u->npending++] = (struct um_fault){.address = f.address,
			.flags = f.flags, .ptid = f.ptid, .t_ns = f.t_ns};
	}
	return 0;
}

int um_deserialize(struct um_state *st, const void *buf, size_t len, char *err,
		   size_t errlen)
{
	const uint8_t *p = buf, *end = p + len;
	struct umw_state_hdr h;
	um_state_init(st, 0);
	if (!take(&p, end, &h, sizeof(h)))
		FAIL("state blob truncated: %zu bytes, header needs %zu", len, sizeof(h));
	if (h.magic != UMW_STATE_MAGIC)
		FAIL("not a uffdshim state blob (magic %#x)", h.magic);
	if (h.version != UMW_STATE_VERSION)
		FAIL("state blob version %u is not supported (this build reads %u)",
		     h.version, UMW_STATE_VERSION);
	if (h.hdr_size != sizeof(h) || h.uffd_size != sizeof(struct umw_uffd) ||
	    h.range_size != sizeof(struct umw_range))
		FAIL("state blob record sizes %u/%u/%u do not match this build's %zu/%zu/%zu",
		     h.hdr_size, h.uffd_size, h.range_size, sizeof(h), sizeof(struct umw_uffd),
		     sizeof(struct umw_range));
	if (h.page_size != UM_PAGE_SIZE)
		FAIL("state blob page size %u differs from this build's %llu", h.page_size,
		     (unsigned long long)UM_PAGE_SIZE);
	st->pid = h.pid;
	st->missed_updates = h.missed_updates;
	for (uint32_t i = 0; i < h.nuffds; i++) {
		struct umw_uffd w;
		if (!take(&p, end, &w, sizeof(w)))
			FAIL("state blob truncated at uffd %u of %u", i, h.nuffds);
		if (w.nfds > UM_MAX_FDS || w.npending > UM_MAX_PENDING ||
		    w.nranges > (uint64_t)(end - p) / sizeof(struct umw_range) ||
		    w.nwpchunks > (uint64_t)(end - p) / sizeof(struct umw_wpchunk))
			FAIL("uffd %u: counts out of bounds (fds %u, ranges %u, wp chunks %u, "
			     "pending %u)", w.id, w.nfds, w.nranges, w.nwpchunks, w.npending);
		if (w.id == 0 || um_uffd_by_id(st, w.id))
			FAIL("uffd id %u is zero or appears twice", w.id);
		char e2[200] = "";
		if (load_uffd(st, &w, &p, end, e2, sizeof(e2)) < 0)
			FAIL("%s", e2);
	}
	if (p != end)
		FAIL("state blob has %zu trailing bytes", (size_t)(end - p));
	st->next_id = h.next_id;
	for (uint32_t i = 0; i < st->nuffds; i++)
		if (st->uffds[i]->id >= st->next_id)
			st->next_id = st->uffds[i]->id + 1;
	return 0;
}
