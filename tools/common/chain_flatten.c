/* chain_flatten.c - merge a validated chain into one image: the newest
 * content of every page (docs/image-format.md, "Flattening").
 *
 * The pages are held as extents: sorted, non-overlapping runs of pages that
 * each come from one place (one epoch's pages file at one offset, or zero).
 * Every step of the rule is a clip of the extents against a sorted list of
 * intervals, so the cost follows the number of runs, not of pages. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "chain.h"

struct ext {
	uint64_t start, end;     /* bytes, page aligned */
	uint64_t offset;         /* DATA: in the source's pages file, at start */
	uint32_t kind;           /* UMI_RUN_DATA / ZERO / ABSENT; 0 for a plain interval */
	uint32_t src;            /* DATA: the epoch whose pages file holds it;
				    intervals: a label (the uffd id of a region) */
};

static GArray *ext_new(void)
{
	return g_array_new(FALSE, FALSE, sizeof(struct ext));
}

static int ext_cmp(const void *a, const void *b)
{
	const struct ext *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* The part [s, e) of x. */
static struct ext ext_piece(const struct ext *x, uint64_t s, uint64_t e)
{
	struct ext p = *x;
	if (p.kind == UMI_RUN_DATA)
		p.offset += s - x->start;
	p.start = s;
	p.end = e;
	return p;
}

/* Sort a and merge overlapping or touching intervals (labels dropped). */
static void iv_union(GArray *a)
{
	g_array_sort(a, ext_cmp);
	guint o = 0;
	for (guint i = 0; i < a->len; i++) {
		struct ext x = g_array_index(a, struct ext, i);
		struct ext *last = o ? &g_array_index(a, struct ext, o - 1) : NULL;
		if (last && x.start <= last->end) {
			if (x.end > last->end)
				last->end = x.end;
			continue;
		}
		x.kind = x.src = 0;
		g_array_index(a, struct ext, o++) = x;
	}
	g_array_set_size(a, o);
}

/* The parts of the extents in `in` that lie inside (inside = true) or
 * outside the sorted, disjoint intervals `by`.  Frees in. */
static GArray *ext_clip(GArray *in, const GArray *by, bool inside)
{
	GArray *out = ext_new();
	guint j = 0;
	for (guint i = 0; i < in->len; i++) {
		const struct ext *x = &g_array_index(in, struct ext, i);
		while (j < by->len && g_array_index(by, struct ext, j).end <= x->start)
			j++;
		uint64_t cur = x->start;
		for (guint k = j; k < by->len && cur < x->end; k++) {
			const struct ext *b = &g_array_index(by, struct ext, k);
			if (b->start >= x->end)
				break;
			uint64_t s = b->start > cur ? b->start : cur;
			uint64_t e = b->end < x->end ? b->end : x->end;
			struct ext p = ext_piece(x, inside ? s : cur, inside ? e : s);
			if (p.start < p.end)
				g_array_append_val(out, p);
			cur = e;
		}
		if (!inside && cur < x->end) {
			struct ext p = ext_piece(x, cur, x->end);
			g_array_append_val(out, p);
		}
	}
	g_array_free(in, TRUE);
	return out;
}

static void add_iv(GArray *a, uint64_t start, uint64_t end, uint32_t label)
{
	struct ext x = {.start = start, .end = end, .src = label};
	g_array_append_val(a, x);
}

/* The registered ranges of every uffd of d's state, labelled with the uffd. */
static GArray *registered(const struct image_dir *d)
{
	GArray *a = ext_new();
	for (uint32_t i = 0; i < d->st.nuffds; i++)
		for (uint32_t k = 0; k < d->st.uffds[i]->nranges; k++)
			add_iv(a, d->st.uffds[i]->ranges[k].start, d->st.uffds[i]->ranges[k].end,
			       d->st.uffds[i]->id);
	g_array_sort(a, ext_cmp);
	return a;
}

/* Tracked ranges of d (only the NEW ones if new_only). */
static GArray *tracked(const struct image_dir *d, bool new_only)
{
	GArray *a = ext_new();
	for (uint32_t k = 0; k < d->img.epoch->nranges; k++)
		if (!new_only || (d->img.tracked[k].flags & UMI_TR_NEW))
			add_iv(a, d->img.tracked[k].start, d->img.tracked[k].end, 0);
	return a;
}

static GArray *iv_copy(const GArray *a)
{
	GArray *c = ext_new();
	g_array_append_vals(c, a->data, a->len);
	return c;
}

/* Apply epoch i of the chain to the extents cur (freed); returns the new. */
static GArray *apply_epoch(GArray *cur, const struct image_dir *d, uint32_t i)
{
	GArray *tr = tracked(d, false), *reg = registered(d);
	iv_union(tr);
	/* kept: tracked or registered; cleared first: NEW ranges and registered
	 * memory outside every tracked range (saved whole in each epoch). */
	GArray *keep = iv_copy(tr);
	g_array_append_vals(keep, reg->data, reg->len);
	iv_union(keep);
	GArray *clear = ext_clip(iv_copy(reg), tr, false), *newtr = tracked(d, true);
	g_array_append_vals(clear, newtr->data, newtr->len);
	iv_union(clear);
	cur = ext_clip(cur, keep, true);
	cur = ext_clip(cur, clear, false);
	GArray *runs = ext_new(), *set = ext_new();
	for (size_t k = 0; k < d->img.nruns; k++) {
		const struct umi_run *r = &d->img.runs[k];
		struct ext x = {.start = r->addr, .end = r->addr + r->npages * UM_PAGE_SIZE,
				.offset = r->offset, .kind = r->kind, .src = i};
		g_array_append_val(runs, x);
		if (r->kind != UMI_RUN_ABSENT)
			g_array_append_val(set, x);
	}
	cur = ext_clip(cur, runs, false);
	g_array_append_vals(cur, set->data, set->len);
	g_array_sort(cur, ext_cmp);
	g_array_free(runs, TRUE);
	g_array_free(set, TRUE);
	g_array_free(tr, TRUE);
	g_array_free(reg, TRUE);
	g_array_free(keep, TRUE);
	g_array_free(clear, TRUE);
	g_array_free(newtr, TRUE);
	return cur;
}

/* The regions of the last epoch, labelled with the uffd id their runs get:
 * registered ranges (their uffd), tracked memory outside them (0).  Sorted;
 * a registered range overlapping an earlier region is dropped. */
static GArray *regions(const struct image_dir *d)
{
	GArray *reg = registered(d), *runion = iv_copy(reg);
	iv_union(runion);
	GArray *tr = ext_clip(tracked(d, false), runion, false);
	GArray *all = ext_new();
	for (guint i = 0; i < reg->len; i++) {
		const struct ext *x = &g_array_index(reg, struct ext, i);
		if (!all->len || g_array_index(all, struct ext, all->len - 1).end <= x->start)
			g_array_append_val(all, *x);
	}
	g_array_append_vals(all, tr->data, tr->len);
	g_array_sort(all, ext_cmp);
	g_array_free(reg, TRUE);
	g_array_free(runion, TRUE);
	g_array_free(tr, TRUE);
	return all;
}

/* ---- writing ---- */

struct writer {
	const struct chain *c;
	int fd;                  /* the new pages file */
	uint64_t size;           /* bytes written to it */
	GArray *runs;            /* struct umi_run */
	char *buf;               /* one window of pages */
	char err[PATH_MAX + 200];
};

#define WINDOW_PAGES 256

/* Append the pages of DATA extent x to the pages file; h chains the run hash. */
static int copy_pages(struct writer *w, const struct ext *x, uint32_t *h)
{
	const struct image_dir *src = &w->c->ep[x->src];
	for (uint64_t a = x->start; a < x->end;) {
		uint64_t n = (x->end - a) / UM_PAGE_SIZE;
		if (n > WINDOW_PAGES)
			n = WINDOW_PAGES;
		size_t len = n * UM_PAGE_SIZE;
		off_t off = (off_t)(x->offset + (a - x->start));
		if (pread(src->pages_fd, w->buf, len, off) != (ssize_t)len) {
			snprintf(w->err, sizeof(w->err), "epoch %u: cannot read its pages file", x->src);
			return -1;
		}
		for (uint64_t p = 0; p < n; p++)
			*h = umi_page_hash(*h, w->buf + p * UM_PAGE_SIZE, UM_PAGE_SIZE);
		for (size_t done = 0; done < len;) {
			ssize_t wr = pwrite(w->fd, w->buf + done, len - done, (off_t)(w->size + done));
			if (wr <= 0) {
				snprintf(w->err, sizeof(w->err), "writing pages: %s", strerror(errno));
				return -1;
			}
			done += (size_t)wr;
		}
		w->size += len;
		a += len;
	}
	return 0;
}

/* Emit the extents inside region rg as runs (adjacent pages of one kind
 * coalesced).  *j: the first extent not before rg. */
static int emit_region(struct writer *w, const GArray *cur, guint *j, const struct ext *rg)
{
	while (*j < cur->len && g_array_index(cur, struct ext, *j).end <= rg->start)
		(*j)++;
	struct umi_run *run = NULL;
	uint32_t h = 0;
	for (guint k = *j; k < cur->len; k++) {
		const struct ext *e = &g_array_index(cur, struct ext, k);
		if (e->start >= rg->end)
			break;
		struct ext x = ext_piece(e, e->start > rg->start ? e->start : rg->start,
					 e->end < rg->end ? e->end : rg->end);
		if (!run || run->kind != x.kind || run->addr + run->npages * UM_PAGE_SIZE != x.start) {
			if (run && run->kind == UMI_RUN_DATA)
				run->crc = h;
			struct umi_run r = {.addr = x.start, .kind = x.kind, .uffd_id = rg->src,
					    .offset = x.kind == UMI_RUN_DATA ? w->size : 0};
			g_array_append_val(w->runs, r);
			run = &g_array_index(w->runs, struct umi_run, w->runs->len - 1);
			h = 0;
		}
		run->npages += (x.end - x.start) / UM_PAGE_SIZE;
		if (x.kind == UMI_RUN_DATA && copy_pages(w, &x, &h) < 0)
			return -1;
	}
	if (run && run->kind == UMI_RUN_DATA)
		run->crc = h;
	return 0;
}

/* The state file of the flattened image into out. */
static int write_state(struct writer *w, const char *out)
{
	const struct image_dir *last = &w->c->ep[w->c->n - 1];
	struct umi_epoch e = *last->img.epoch;
	e.flags = UMI_EPOCH_FLAT | (e.flags & UMI_EPOCH_FROZEN);
	e.parent_created_ns = 0;
	struct umi_tracked *tr = g_new0(struct umi_tracked, e.nranges + 1);
	memcpy(tr, last->img.tracked, e.nranges * sizeof(*tr));
	for (uint32_t k = 0; k < e.nranges; k++)
		tr[k].flags |= UMI_TR_NEW;
	char comm[sizeof(last->img.hdr.comm) + 1] = "";
	memcpy(comm, last->img.hdr.comm, sizeof(last->img.hdr.comm));
	size_t nruns = w->runs->len;
	size_t need = umi_state_file_size2(last->img.state_len, nruns, last->img.proc != NULL, &e);
	void *buf = g_malloc(need);
	size_t len = umi_write_state_file2(buf, need, last->img.hdr.pid, comm,
					   last->img.hdr.created_ns, last->img.state,
					   last->img.state_len, (const struct umi_run *)w->runs->data,
					   nruns, last->img.proc, &e, tr);
	int rc = len ? image_write_file(out, UMI_STATE_FILE, buf, len, w->err, sizeof(w->err))
		     : -1;
	if (!len)
		snprintf(w->err, sizeof(w->err), "could not lay out the state file");
	g_free(buf);
	g_free(tr);
	return rc;
}

static int open_out(struct writer *w, const char *out, char *tmp, size_t tmplen)
{
	struct stat st;
	if (mkdir(out, 0700) < 0 && (errno != EEXIST || stat(out, &st) < 0 || !S_ISDIR(st.st_mode))) {
		snprintf(w->err, sizeof(w->err), "%s: %s", out,
			 errno == EEXIST ? "exists and is not a directory" : strerror(errno));
		return -1;
	}
	snprintf(tmp, tmplen, "%s/.%s.tmp", out, UMI_PAGES_FILE);
	w->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		snprintf(w->err, sizeof(w->err), "%s: %s", tmp, strerror(errno));
		return -1;
	}
	return 0;
}

/* Write every region's runs, then the pages file (rename), then the state. */
static int write_image(struct writer *w, const GArray *cur, const char *out)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	if (open_out(w, out, tmp, sizeof(tmp)) < 0)
		return -1;
	GArray *rg = regions(&w->c->ep[w->c->n - 1]);
	guint j = 0;
	int rc = 0;
	for (guint i = 0; i < rg->len && rc == 0; i++)
		rc = emit_region(w, cur, &j, &g_array_index(rg, struct ext, i));
	g_array_free(rg, TRUE);
	snprintf(path, sizeof(path), "%s/%s", out, UMI_PAGES_FILE);
	if (rc == 0 && (fsync(w->fd) < 0 || rename(tmp, path) < 0)) {
		snprintf(w->err, sizeof(w->err), "%s: %s", path, strerror(errno));
		rc = -1;
	}
	close(w->fd);
	if (rc < 0) {
		unlink(tmp);
		return -1;
	}
	return write_state(w, out);
}

int chain_flatten(const struct chain *c, const char *out, char *err, size_t errlen)
{
	if (!c->n) {
		snprintf(err, errlen, "the chain is empty");
		return -1;
	}
	GArray *cur = ext_new();
	for (uint32_t i = 0; i < c->n; i++)
		cur = apply_epoch(cur, &c->ep[i], i);
	struct writer w = {.c = c, .fd = -1, .runs = g_array_new(FALSE, FALSE,
								    sizeof(struct umi_run)),
			   .buf = g_malloc(WINDOW_PAGES * UM_PAGE_SIZE)};
	int rc = write_image(&w, cur, out);
	if (rc < 0)
		snprintf(err, errlen, "flattening %s into %s: %s", c->dir, out, w.err);
	g_array_free(cur, TRUE);
	g_array_free(w.runs, TRUE);
	g_free(w.buf);
	return rc;
}
