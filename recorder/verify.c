/* verify.c - cross-check a uffd model against /proc (see verify.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procfs.h"
#include "uffd_compat.h"
#include "um_model.h"
#include "uffdshim_ctl.h"
#include "verify.h"

/* The kernel's UFFD_FEATURE_INITIALIZED: set in ctx->features (and so in the
 * fdinfo API line) once UFFDIO_API succeeded. */
#define KERNEL_FEATURE_INITIALIZED ((uint64_t)1 << 31)
/* Pages per pagemap pread (32 MiB of entries): one pread per range unless a
 * range is over 16 GiB. */
#define PM_CHUNK_PAGES (4ULL << 20)

#define MODE_MASK (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | \
		   UFFDIO_REGISTER_MODE_MINOR)

static unsigned listed_disagreements(const struct verify_report *r)
{
	unsigned n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += r->e[i].kind == VK_DISAGREE;
	return n;
}

__attribute__((format(printf, 5, 6)))
static void add(struct verify_report *r, int kind, int check, uint32_t uffd,
		const char *fmt, ...)
{
	if (kind == VK_DISAGREE) {
		r->disagreements++;
		if (listed_disagreements(r) >= VERIFY_MAX_LINES) {
			r->unlisted++;
			return;
		}
	}
	if (r->n == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 32;
		struct verify_entry *ne = realloc(r->e, ncap * sizeof(*ne));
		if (!ne)
			return; /* counted, just not listed */
		r->e = ne;
		r->cap = ncap;
	}
	va_list ap;
	va_start(ap, fmt);
	char *text = NULL;
	int rc = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (rc < 0)
		return;
	r->e[r->n++] = (struct verify_entry){.kind = kind, .check = check, .uffd = uffd,
					     .text = text};
}

static void report_fail(struct verify_report *r, int err, const char *msg)
{
	r->failed = true;
	r->err_errno = err;
	size_t n = strnlen(msg, sizeof(r->error) - 1);
	memcpy(r->error, msg, n);
	r->error[n] = 0;
}

void verify_report_free(struct verify_report *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->e[i].text);
	free(r->e);
	memset(r, 0, sizeof(*r));
}

unsigned verify_report_count(const struct verify_report *r, int kind, int check,
			     uint32_t uffd)
{
	unsigned n = 0;
	for (size_t i = 0; i < r->n; i++)
		if (r->e[i].kind == kind && (check < 0 || r->e[i].check == check) &&
		    (!uffd || r->e[i].uffd == uffd))
			n++;
	return n;
}

void verify_report_print(const struct verify_report *r, FILE *f)
{
	for (size_t i = 0; i < r->n; i++)
		fprintf(f, "verify: %s%s\n", r->e[i].kind == VK_NOTE ? "note: " : "",
			r->e[i].text);
	if (r->failed)
		fprintf(f, "verify: could not complete: %s\n", r->error);
	else if (!r->disagreements)
		fprintf(f, "verify: OK (%u uffd%s, %u range%s, %" PRIu64 " page%s checked)\n",
			r->nuffds, r->nuffds == 1 ? "" : "s", r->nranges,
			r->nranges == 1 ? "" : "s", r->npages, r->npages == 1 ? "" : "s");
	else
		fprintf(f, "verify: %u disagreement%s\n", r->disagreements,
			r->disagreements == 1 ? "" : "s");
}

static pid_t self_pid(const struct um_state *st, pid_t pid)
{
	/* mm_pid values are the process's own view of pids; st->pid is how the
	 * process sees itself (it differs from pid inside a pid namespace). */
	return st->pid > 0 ? st->pid : pid;
}

static bool own_memory(const struct um_state *st, const struct um_uffd *u, pid_t pid)
{
	return u->mm_pid == self_pid(st, pid);
}

static void modes_str(uint64_t modes, char *buf, size_t len)
{
	if (!(modes & MODE_MASK))
		snprintf(buf, len, "not registered");
	else
		um_modes_str(modes & MODE_MASK, buf, len);
}

static void kflags_str(uint32_t k, char *buf, size_t len)
{
	if (!k) {
		snprintf(buf, len, "no uffd flags");
		return;
	}
	pf_uffd_flags_str(k, buf, len);
	if (!(k & (k - 1))) /* exactly one flag */
		strncat(buf, " only", len - strlen(buf) - 1);
}

/* ---- (1) smaps ---- */

struct seg {
	uint64_t start, end;
	uint32_t modes;
	uint32_t uffd;
	uint64_t rstart, rend; /* the model range it came from */
	bool nested;           /* inside a nested span (modes: the kernel's union) */
};

static int seg_cmp(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return (x->end > y->end) - (x->end < y->end);
}

struct bad {
	bool active;
	uint64_t a, b;
	bool mapped;
	uint32_t k, m, uffd;
	long seg;          /* index into segs, -1 for none */
	long vma_first, vma_last;
};

static void bad_flush(struct verify_report *r, struct bad *p, const struct seg *segs,
		      const struct pf_vmas *vs)
{
	if (!p->active)
		return;
	p->active = false;
	char ms[64], ks[64], ctx[400] = "";
	modes_str(p->m, ms, sizeof(ms));
	kflags_str(p->k, ks, sizeof(ks));
	const struct pf_vma *v = (p->vma_first >= 0 && p->vma_first == p->vma_last)
				 ? &vs->v[p->vma_first] : NULL;
	bool vma_differs = v && (v->start != p->a || v->end != p->b);
	if (p->seg >= 0) {
		const struct seg *s = &segs[p->seg];
		bool part = s->rstart != p->a || s->rend != p->b;
		if (part && vma_differs)
			snprintf(ctx, sizeof(ctx), " (model range [%#" PRIx64 ", %#" PRIx64
				 "), VMA [%#" PRIx64 ", %#" PRIx64 "))", s->rstart, s->rend,
				 v->start, v->end);
		else if (part)
			snprintf(ctx, sizeof(ctx), " (model range [%#" PRIx64 ", %#" PRIx64 "))",
				 s->rstart, s->rend);
		else if (vma_differs)
			snprintf(ctx, sizeof(ctx), " (VMA [%#" PRIx64 ", %#" PRIx64 "))",
				 v->start, v->end);
		if (!p->mapped)
			add(r, VK_DISAGREE, VC_SMAPS, p->uffd, "uffd %u: range [%#" PRIx64 ", %#"
			    PRIx64 ") model %s, kernel: not mapped%s", p->uffd, p->a, p->b, ms, ctx);
		else
			add(r, VK_DISAGREE, VC_SMAPS, p->uffd, "uffd %u: range [%#" PRIx64 ", %#"
			    PRIx64 ") model %s, kernel smaps %s%s", p->uffd, p->a, p->b, ms, ks, ctx);
	} else {
		if (vma_differs)
			snprintf(ctx, sizeof(ctx), " (VMA [%#" PRIx64 ", %#" PRIx64 ")%s%s)",
				 v->start, v->end, v->name[0] ? " " : "", v->name);
		else if (v && v->name[0])
			snprintf(ctx, sizeof(ctx), " (%s)", v->name);
		add(r, VK_DISAGREE, VC_SMAPS, 0, "[%#" PRIx64 ", %#" PRIx64 ") kernel smaps %s, "
		    "model: not registered by any uffd of this process%s", p->a, p->b, ks, ctx);
	}
}

/* The tracking overlay of the current verify_state_tracked call (tools are
 * single threaded; NULL outside it). */
static const struct verify_tracking *trk_now;

/* The tracked range holding addr in the given mode, or NULL. */
static const struct uctl_track_range *trk_at(uint64_t addr, uint32_t mode)
{
	if (!trk_now)
		return NULL;
	long lo = 0, hi = (long)trk_now->nranges - 1;
	while (lo <= hi) {
		long mid = (lo + hi) / 2;
		const struct uctl_track_range *t = &trk_now->ranges[mid];
		if (addr < t->start)
			hi = mid - 1;
		else if (addr >= t->end)
			lo = mid + 1;
		else
			return t->mode == mode ? t : NULL;
	}
	return NULL;
}

/* The nested span holding addr (index), or -1. */
static long nest_at(uint64_t addr)
{
	for (uint32_t i = 0; trk_now && i < trk_now->nnest; i++)
		if (addr >= trk_now->nest[i][0] && addr < trk_now->nest[i][1])
			return (long)i;
	return -1;
}

static bool is_bell(uint64_t a, uint64_t b)
{
	for (uint32_t i = 0; trk_now && i < trk_now->nbells; i++)
		if (trk_now->bells[i] == a && b == a + UM_PAGE_SIZE)
			return true;
	return false;
}

static void interval(struct verify_report *r, struct bad *p, const struct seg *segs,
		     const struct pf_vmas *vs, uint64_t a, uint64_t b, bool mapped, uint32_t k,
		     long si, long vi)
{
	/* A doorbell of the shim's nesting: registered MISSING, in no model. */
	if (si < 0 && (k & PF_VM_UFFD_MASK) == PF_VM_UM && is_bell(a, b))
		k &= ~PF_VM_UM;
	/* The shim's dirty-tracking uffd registered this (WP). */
	if (si < 0 && (k & PF_VM_UFFD_MASK) == PF_VM_UW && trk_at(a, UCTL_TM_ASYNC))
		k &= ~PF_VM_UW;
	uint32_t m = si >= 0 ? segs[si].modes : 0;
	uint32_t id = si >= 0 ? segs[si].uffd : 0;
	if (k == m && (mapped || !m)) {
		bad_flush(r, p, segs, vs);
		return;
	}
	if (p->active && p->b == a && p->mapped == mapped && p->k == k && p->m == m &&
	    p->uffd == id && p->seg == si) {
		p->b = b;
		if (vi >= 0) {
			if (p->vma_first < 0)
				p->vma_first = vi;
			p->vma_last = vi;
		}
		return;
	}
	bad_flush(r, p, segs, vs);
	*p = (struct bad){.active = true, .a = a, .b = b, .mapped = mapped, .k = k, .m = m,
			  .uffd = id, .seg = si, .vma_first = vi, .vma_last = vi};
	if (vi < 0)
		p->vma_first = p->vma_last = -1;
}

/* Make the VMA list sorted and non-overlapping (smaps of a process that
 * changes its mappings while we read may repeat or reorder a VMA). */
static void vmas_sanitize(struct pf_vmas *vs)
{
	size_t w = 0;
	for (size_t i = 0; i < vs->n; i++) {
		struct pf_vma v = vs->v[i];
		if (w && v.start < vs->v[w - 1].end)
			v.start = vs->v[w - 1].end;
		if (v.start >= v.end)
			continue;
		vs->v[w++] = v;
	}
	vs->n = w;
}

static int check_smaps(const struct um_state *st, pid_t pid, const struct pf_vmas *vsp,
		       struct verify_report *r)
{
	const struct pf_vmas vs = *vsp;

	size_t ns = 0, cap = 0;
	struct seg *segs = NULL;
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (!own_memory(st, u, pid))
			continue;
		for (uint32_t k = 0; k < u->nranges; k++) {
			const struct um_range *rg = &u->ranges[k];
			/* Pieces split at nested spans: there the kernel holds the
			 * union of every client's modes. */
			for (uint64_t a = rg->start; a < rg->end;) {
				uint64_t b = rg->end;
				long q = nest_at(a);
				if (q >= 0 && trk_now->nest[q][1] < b)
					b = trk_now->nest[q][1];
				for (uint32_t k2 = 0; q < 0 && trk_now && k2 < trk_now->nnest; k2++)
					if (trk_now->nest[k2][0] > a && trk_now->nest[k2][0] < b)
						b = trk_now->nest[k2][0];
				if (ns == cap) {
					cap = cap ? cap * 2 : 64;
					struct seg *n2 = realloc(segs, cap * sizeof(*n2));
					if (!n2) {
						free(segs);
						report_fail(r, ENOMEM, "out of memory");
						return -1;
					}
					segs = n2;
				}
				segs[ns++] = (struct seg){.start = a, .end = b,
					.modes = (uint32_t)((q >= 0 ? trk_now->nest[q][2] : rg->modes) &
							    MODE_MASK),
					.uffd = u->id, .rstart = rg->start, .rend = rg->end,
					.nested = q >= 0};
				a = b;
			}
			r->nranges++;
		}
	}
	if (ns)
		qsort(segs, ns, sizeof(*segs), seg_cmp);
	/* Two uffds of one process never overlap (nor do one uffd's ranges). */
	size_t w = 0;
	for (size_t i = 0; i < ns; i++) {
		if (w && segs[i].start < segs[w - 1].end && segs[i].nested && segs[w - 1].nested &&
		    segs[i].start >= segs[w - 1].start && segs[i].end <= segs[w - 1].end)
			continue; /* several clients of one nested span */
		if (w && segs[i].start < segs[w - 1].end) {
			const struct seg *p = &segs[w - 1];
			add(r, VK_DISAGREE, VC_MODEL, segs[i].uffd, "model: uffd %u range [%#" PRIx64
			    ", %#" PRIx64 ") overlaps uffd %u range [%#" PRIx64 ", %#" PRIx64 ")",
			    segs[i].uffd, segs[i].rstart, segs[i].rend, p->uffd, p->rstart, p->rend);
			segs[i].start = p->end;
			if (segs[i].start >= segs[i].end)
				continue;
		}
		segs[w++] = segs[i];
	}
	ns = w;

	/* Sweep the address space over VMA and model boundaries. */
	struct bad pend = {.active = false};
	size_t vi = 0, si = 0;
	uint64_t x = 0;
	for (;;) {
		while (vi < vs.n && vs.v[vi].end <= x)
			vi++;
		while (si < ns && segs[si].end <= x)
			si++;
		if (vi >= vs.n && si >= ns)
			break;
		bool in_v = vi < vs.n && vs.v[vi].start <= x;
		bool in_s = si < ns && segs[si].start <= x;
		if (!in_v && !in_s) {
			uint64_t nx = UINT64_MAX;
			if (vi < vs.n && vs.v[vi].start < nx)
				nx = vs.v[vi].start;
			if (si < ns && segs[si].start < nx)
				nx = segs[si].start;
			x = nx;
			continue;
		}
		uint64_t b = UINT64_MAX;
		if (in_v)
			b = vs.v[vi].end;
		else if (vi < vs.n)
			b = vs.v[vi].start;
		if (in_s) {
			if (segs[si].end < b)
				b = segs[si].end;
		} else if (si < ns && segs[si].start < b) {
			b = segs[si].start;
		}
		interval(r, &pend, segs, &vs, x, b, in_v, in_v ? vs.v[vi].uffd_flags : 0,
			 in_s ? (long)si : -1, in_v ? (long)vi : -1);
		x = b;
	}
	bad_flush(r, &pend, segs, &vs);
	free(segs);
	return 0;
}

/* ---- (2) pagemap ---- */

struct wprun {
	int type;          /* 0 none, 1 model WP & kernel not, 2 kernel WP & model not */
	uint64_t a, b;
};

struct wpctx {
	struct verify_report *r;
	const struct um_state *all;
	const struct um_uffd *u;
	unsigned listed;
	unsigned more_runs;
	uint64_t more_pages;
	uint64_t async_cleared; /* WP_ASYNC: model WP, kernel not (allowed) */
	struct wprun run;
};

static void wp_flush(struct wpctx *c)
{
	struct wprun *rn = &c->run;
	if (!rn->type)
		return;
	uint64_t pages = (rn->b - rn->a) >> UM_PAGE_SHIFT;
	if (rn->type == 1 && c->u->wp_async) {
		c->async_cleared += pages;
	} else if (c->listed >= VERIFY_MAX_WP_RUNS) {
		c->r->disagreements++;
		c->more_runs++;
		c->more_pages += pages;
	} else {
		c->listed++;
		add(c->r, VK_DISAGREE, VC_PAGEMAP, c->u->id, "uffd %u: pages [%#" PRIx64 ", %#"
		    PRIx64 ") (%" PRIu64 " page%s) %s", c->u->id, rn->a, rn->b, pages,
		    pages == 1 ? "" : "s", rn->type == 1 ? "model WP, kernel pagemap not WP"
							 : "kernel pagemap WP, model not WP");
	}
	rn->type = 0;
}

static void wp_page(struct wpctx *c, uint64_t addr, int type)
{
	struct wprun *rn = &c->run;
	if (rn->type == type && rn->b == addr) {
		rn->b = addr + UM_PAGE_SIZE;
		return;
	}
	wp_flush(c);
	if (type)
		*rn = (struct wprun){.type = type, .a = addr, .b = addr + UM_PAGE_SIZE};
}

/* Compare [start, end) (mapped) page by page: one pread per piece. */
static int check_pagemap_piece(struct wpctx *c, int pm, uint64_t start, uint64_t end,
			       uint64_t *ebuf, uint8_t *mbuf)
{
	char err[300];
	for (uint64_t cs = start; cs < end;) {
		uint64_t np = (end - cs) >> UM_PAGE_SHIFT;
		if (np > PM_CHUNK_PAGES)
			np = PM_CHUNK_PAGES;
		uint64_t ce = cs + (np << UM_PAGE_SHIFT);
		if (pf_pagemap_read(pm, cs, np, ebuf, err, sizeof(err)) < 0) {
			report_fail(c->r, errno, err);
			return -1;
		}
		memset(mbuf, 0, np);
		uint64_t cur = cs, rs, re;
		while (um_wp_next_run(&c->u->wp, &cur, ce, &rs, &re))
			memset(mbuf + ((rs - cs) >> UM_PAGE_SHIFT), 1, (re - rs) >> UM_PAGE_SHIFT);
		for (uint64_t i = 0; i < np; i++) {
			int kb = (int)PF_PM_UFFD_WP(ebuf[i]), mb = mbuf[i];
			uint64_t a = cs + (i << UM_PAGE_SHIFT);
			/* Dirty tracking may hold more pages of the app's WP ranges. */
			if (kb && !mb && trk_at(a, UCTL_TM_SYNC)) {
				c->r->tracked_wp++;
				kb = 0;
			}
			if (kb && !mb && c->all && nest_at(a) >= 0)
				for (uint32_t q = 0; q < c->all->nuffds; q++) /* another client holds it */
					if (c->all->uffds[q] != c->u && um_wp_test(&c->all->uffds[q]->wp, a))
						kb = 0;
			wp_page(c, a, kb == mb ? 0 : mb ? 1 : 2);
		}
		c->r->npages += np;
		cs = ce;
	}
	return 0;
}

/* Index of the first VMA whose end is above addr. */
static size_t vma_after(const struct pf_vmas *vs, uint64_t addr)
{
	size_t lo = 0, hi = vs->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (vs->v[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int check_pagemap_uffd(const struct um_state *all, const struct um_uffd *u, int pm,
			      const struct pf_vmas *vs, uint64_t *ebuf, uint8_t *mbuf,
			      struct verify_report *r)
{
	struct wpctx c = {.r = r, .all = all, .u = u};
	for (uint32_t k = 0; k < u->nranges; k++) {
		const struct um_range *rg = &u->ranges[k];
		/* Every registered range: re-registering without WP keeps the
		 * pages' uffd-wp bits, so they can exist in any range. */
		/* Only the mapped parts (smaps reported the rest): adjacent VMAs
		 * make one piece, so a range normally costs one pread. */
		uint64_t ps = 0, pe = 0;
		for (size_t vi = vma_after(vs, rg->start); vi < vs->n && vs->v[vi].start < rg->end;
		     vi++) {
			uint64_t a = vs->v[vi].start > rg->start ? vs->v[vi].start : rg->start;
			uint64_t b = vs->v[vi].end < rg->end ? vs->v[vi].end : rg->end;
			if (pe == a) {
				pe = b;
				continue;
			}
			if (pe > ps && check_pagemap_piece(&c, pm, ps, pe, ebuf, mbuf) < 0)
				return -1;
			ps = a;
			pe = b;
		}
		if (pe > ps && check_pagemap_piece(&c, pm, ps, pe, ebuf, mbuf) < 0)
			return -1;
		wp_flush(&c);
	}
	wp_flush(&c);

	/* Model WP bits outside the registered ranges: the kernel clears WP on
	 * unregister, so nothing can be protected there. */
	unsigned outside = 0, outside_more = 0;
	uint64_t cur = 0, rs, re, last = ~(UM_PAGE_SIZE - 1);
	uint32_t k0 = 0;
	while (um_wp_next_run(&u->wp, &cur, last, &rs, &re)) {
		uint64_t pos = rs;
		while (k0 < u->nranges && u->ranges[k0].end <= pos)
			k0++;
		for (uint32_t k = k0; k < u->nranges && pos < re; k++) {
			const struct um_range *rg = &u->ranges[k];
			if (rg->start >= re)
				break;
			if (rg->end <= pos)
				continue;
			if (rg->start > pos) {
				if (outside++ < VERIFY_MAX_WP_RUNS)
					add(r, VK_DISAGREE, VC_MODEL, u->id, "uffd %u: model has pages [%#"
					    PRIx64 ", %#" PRIx64 ") write-protected outside its "
					    "registered ranges", u->id, pos, rg->start);
				else {
					r->disagreements++;
					outside_more++;
				}
			}
			pos = rg->end;
		}
		if (pos < re) {
			if (outside++ < VERIFY_MAX_WP_RUNS)
				add(r, VK_DISAGREE, VC_MODEL, u->id, "uffd %u: model has pages [%#"
				    PRIx64 ", %#" PRIx64 ") write-protected outside its "
				    "registered ranges", u->id, pos, re);
			else {
				r->disagreements++;
				outside_more++;
			}
		}
	}

	if (c.more_runs)
		add(r, VK_MORE, VC_PAGEMAP, u->id, "uffd %u: ... %u more differing WP run%s (%"
		    PRIu64 " page%s) not listed", u->id, c.more_runs, c.more_runs == 1 ? "" : "s",
		    c.more_pages, c.more_pages == 1 ? "" : "s");
	if (outside_more)
		add(r, VK_MORE, VC_MODEL, u->id, "uffd %u: ... %u more runs of WP pages outside "
		    "WP ranges not listed", u->id, outside_more);
	if (u->wp_async)
		add(r, VK_NOTE, VC_PAGEMAP, u->id, "uffd %u: UFFD_FEATURE_WP_ASYNC: the kernel "
		    "unprotects written pages by itself, so only kernel WP bits being a subset "
		    "of the model's was checked (%" PRIu64 " model-protected page%s no longer "
		    "protected in the kernel)", u->id, c.async_cleared,
		    c.async_cleared == 1 ? " is" : "s are");
	return 0;
}

static int check_pagemap(const struct um_state *st, pid_t pid, const struct pf_vmas *vs,
			 struct verify_report *r)
{
	bool any = false;
	uint64_t maxp = 0;
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (!own_memory(st, u, pid))
			continue;
		for (uint32_t k = 0; k < u->nranges; k++) {
			uint64_t np = (u->ranges[k].end - u->ranges[k].start) >> UM_PAGE_SHIFT;
			if (np > maxp)
				maxp = np;
		}
		any = any || u->nranges || u->wp.n;
	}
	if (!any)
		return 0;
	if (maxp > PM_CHUNK_PAGES)
		maxp = PM_CHUNK_PAGES;
	if (!maxp)
		maxp = 1;
	char err[300];
	int pm = pf_pagemap_open(pid, err, sizeof(err));
	if (pm < 0) {
		report_fail(r, errno, err);
		return -1;
	}
	uint64_t *ebuf = malloc(maxp * sizeof(*ebuf));
	uint8_t *mbuf = malloc(maxp);
	int rc = 0;
	if (!ebuf || !mbuf) {
		report_fail(r, ENOMEM, "out of memory");
		rc = -1;
	}
	for (uint32_t i = 0; !rc && i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (own_memory(st, u, pid))
			rc = check_pagemap_uffd(st, u, pm, vs, ebuf, mbuf, r);
	}
	free(ebuf);
	free(mbuf);
	close(pm);
	return rc;
}

/* ---- (3) fdinfo of the model's fds ---- */

static int check_fds_of(const struct um_state *st, pid_t pid, const struct um_uffd *u,
			struct verify_report *r)
{
	bool file_checked = false;
	char link[256], err[300];
	if (u->nfds <= 0)
		add(r, VK_NOTE, VC_FDINFO, u->id, "uffd %u: the model lists no fd for it", u->id);
	for (int j = 0; j < u->nfds && j < UM_MAX_FDS; j++) {
		int fd = u->fds[j];
		if (pf_fd_link(pid, fd, link, sizeof(link)) < 0) {
			if (errno != ENOENT) {
				snprintf(err, sizeof(err), "cannot read /proc/%d/fd/%d: %s", (int)pid,
					 fd, strerror(errno));
				report_fail(r, errno, err);
				return -1;
			}
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: not open in the "
			    "kernel", u->id, fd);
			continue;
		}
		if (strcmp(link, PF_UFFD_LINK) != 0) {
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: kernel says it is "
			    "\"%s\", not a userfaultfd", u->id, fd, link);
			continue;
		}
		uint64_t ino;
		if (pf_fd_ino(pid, fd, &ino) < 0) {
			if (errno == ENOENT) {
				add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: not open in the "
				    "kernel", u->id, fd);
				continue;
			}
			snprintf(err, sizeof(err), "cannot stat /proc/%d/fd/%d: %s", (int)pid, fd,
				 strerror(errno));
			report_fail(r, errno, err);
			return -1;
		}
		if (ino != u->ino) {
			const struct um_uffd *o = um_uffd_by_ino(st, ino);
			char who[64] = "";
			if (o && o != u)
				snprintf(who, sizeof(who), " (the inode of model uffd %u)", o->id);
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: kernel inode %" PRIu64
			    "%s, model inode %" PRIu64, u->id, fd, ino, who, u->ino);
			continue;
		}
		struct pf_fdinfo fi;
		if (pf_read_fdinfo(pid, fd, &fi, err, sizeof(err)) < 0) {
			if (errno == ENOENT) {
				add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: not open in the "
				    "kernel", u->id, fd);
				continue;
			}
			report_fail(r, errno, err);
			return -1;
		}
		bool k_cloexec = fi.flags & O_CLOEXEC, m_cloexec = u->fd_flags[j] & FD_CLOEXEC;
		if (k_cloexec != m_cloexec)
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: close-on-exec: model "
			    "%s, kernel %s (fdinfo flags 0%o)", u->id, fd, m_cloexec ? "set" : "clear",
			    k_cloexec ? "set" : "clear", fi.flags);
		if (file_checked)
			continue; /* the rest belongs to the open file, shared by every fd */
		file_checked = true;
		bool k_nb = fi.flags & O_NONBLOCK, m_nb = u->file_flags & O_NONBLOCK;
		bool forced = false; /* the shim's read() emulates the app's blocking view */
		for (uint32_t k = 0; trk_now && k < trk_now->nforced; k++)
			forced |= trk_now->forced[k] == u->id;
		if (k_nb && !m_nb && forced)
			k_nb = false;
		if (k_nb != m_nb)
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: O_NONBLOCK: model %s, "
			    "kernel %s (fdinfo flags 0%o)", u->id, fd, m_nb ? "set" : "clear",
			    k_nb ? "set" : "clear", fi.flags);
		if (!fi.has_api) {
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: fdinfo has no "
			    "userfaultfd \"API:\" line", u->id, fd);
			continue;
		}
		uint64_t kf = fi.api_features;
		char a[400], b[400];
		if (u->api_done) {
			uint64_t want = u->features_requested | KERNEL_FEATURE_INITIALIZED;
			if (kf != want) {
				if (!(kf & KERNEL_FEATURE_INITIALIZED)) {
					um_features_str(u->features_requested, a, sizeof(a));
					add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: model: "
					    "UFFDIO_API done with features %#" PRIx64 " (%s), kernel: "
					    "UFFDIO_API not done (fdinfo API features %#" PRIx64 ")",
					    u->id, fd, u->features_requested, a, kf);
				} else {
					um_features_str(u->features_requested, a, sizeof(a));
					um_features_str(kf & ~KERNEL_FEATURE_INITIALIZED, b, sizeof(b));
					add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: requested "
					    "features: model %#" PRIx64 " (%s), kernel %#" PRIx64 " (%s)",
					    u->id, fd, u->features_requested, a,
					    kf & ~KERNEL_FEATURE_INITIALIZED, b);
				}
			}
		} else if (kf & KERNEL_FEATURE_INITIALIZED) {
			um_features_str(kf & ~KERNEL_FEATURE_INITIALIZED, b, sizeof(b));
			add(r, VK_DISAGREE, VC_FDINFO, u->id, "uffd %u: fd %d: model: UFFDIO_API not "
			    "done, kernel: done with features %#" PRIx64 " (%s)", u->id, fd,
			    kf & ~KERNEL_FEATURE_INITIALIZED, b);
		}
		if (fi.has_uffd && fi.total >= fi.pending &&
		    fi.total - fi.pending != u->npending)
			add(r, VK_NOTE, VC_FDINFO, u->id, "uffd %u: kernel has %" PRIu64 " fault%s "
			    "read and not yet woken (%" PRIu64 " more queued unread); the model "
			    "lists %u pending", u->id, fi.total - fi.pending,
			    fi.total - fi.pending == 1 ? "" : "s", fi.pending, u->npending);
	}
	return 0;
}

/* ---- (4) every uffd fd of the process is in the model ---- */

static int check_unknown_fds(const struct um_state *st, pid_t pid, struct verify_report *r)
{
	int *fds;
	size_t n;
	char err[300], link[256];
	if (pf_list_fds(pid, &fds, &n, err, sizeof(err)) < 0) {
		report_fail(r, errno, err);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (pf_fd_link(pid, fds[i], link, sizeof(link)) < 0 || strcmp(link, PF_UFFD_LINK))
			continue;
		if (um_uffd_by_fd(st, fds[i]))
			continue;
		if (trk_now && fds[i] == trk_now->async_fd) {
			add(r, VK_NOTE, VC_FDS, 0, "fd %d is the shim's dirty-tracking uffd "
			    "(WP_ASYNC, invisible to the app)", fds[i]);
			continue;
		}
		bool ghost = false;
		for (uint32_t k = 0; trk_now && k < trk_now->nghosts; k++)
			ghost |= trk_now->ghosts[k] == (uint64_t)fds[i];
		if (ghost) {
			add(r, VK_NOTE, VC_FDS, 0, "fd %d is a uffd the app closed that the shim "
			    "keeps: its registration serves other clients (nesting)", fds[i]);
			continue;
		}
		uint64_t ino = 0;
		char who[96] = "";
		if (pf_fd_ino(pid, fds[i], &ino) == 0) {
			const struct um_uffd *o = um_uffd_by_ino(st, ino);
			if (o)
				snprintf(who, sizeof(who), "; it is model uffd %u's file, which the "
					 "model does not list under this fd", o->id);
		}
		add(r, VK_DISAGREE, VC_FDS, 0, "fd %d is a userfaultfd (inode %" PRIu64 ") that the "
		    "model does not know%s", fds[i], ino, who);
	}
	free(fds);
	return 0;
}

int verify_state(const struct um_state *st, pid_t pid, struct verify_report *r)
{
	return verify_state_with(st, NULL, pid, r);
}

static int verify_state_impl(const struct um_state *st, const struct um_state *foreign,
			     pid_t pid, struct verify_report *r);

int verify_state_tracked(const struct um_state *st, const struct um_state *foreign,
			 const struct verify_tracking *trk, pid_t pid, struct verify_report *r)
{
	trk_now = trk;
	int rc = verify_state_impl(st, foreign, pid, r);
	if (rc >= 0 && trk_now && trk_now->nranges)
		add(r, VK_NOTE, VC_PAGEMAP, 0, "dirty tracking is on (%u ranges): the shim's own "
		    "WP registrations and %" PRIu64 " extra WP page%s on the app's WP ranges were "
		    "accounted for", trk_now->nranges, r->tracked_wp, r->tracked_wp == 1 ? "" : "s");
	trk_now = NULL;
	return rc;
}

int verify_state_with(const struct um_state *st, const struct um_state *foreign, pid_t pid,
		      struct verify_report *r)
{
	return verify_state_tracked(st, foreign, NULL, pid, r);
}

static int verify_state_impl(const struct um_state *st, const struct um_state *foreign,
			     pid_t pid, struct verify_report *r)
{
	memset(r, 0, sizeof(*r));
	r->nuffds = st->nuffds;
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (!own_memory(st, u, pid))
		{
			if (u->mm_pid)
				add(r, VK_NOTE, VC_SMAPS, u->id, "uffd %u serves the memory of another "
				    "process (pid %d): only its fds were checked", u->id,
				    (int)u->mm_pid);
			else
				add(r, VK_NOTE, VC_SMAPS, u->id, "uffd %u serves the memory of an "
				    "unknown process: only its fds were checked", u->id);
		}
	}
	struct pf_vmas vs;
	char err[300];
	if (pf_read_smaps(pid, &vs, err, sizeof(err)) < 0) {
		report_fail(r, errno, err);
		return -1;
	}
	vmas_sanitize(&vs);
	/* The memory checks see this process's uffds and the ones other
	 * processes hold on its memory (FORK-event readers, SCM_RIGHTS
	 * handlers); a uffd both sides know is taken once, from here. */
	struct um_state all = *st;
	struct um_uffd **arr = NULL;
	if (foreign && foreign->nuffds) {
		arr = calloc(st->nuffds + foreign->nuffds, sizeof(*arr));
		if (!arr) {
			pf_vmas_free(&vs);
			report_fail(r, ENOMEM, "out of memory");
			return -1;
		}
		uint32_t n = 0;
		for (uint32_t i = 0; i < st->nuffds; i++)
			arr[n++] = st->uffds[i];
		for (uint32_t i = 0; i < foreign->nuffds; i++) {
			const struct um_uffd *f = foreign->uffds[i];
			struct um_uffd *mine = um_uffd_by_ino(st, f->ino);
			if (mine && own_memory(st, mine, pid))
				continue;
			add(r, VK_NOTE, VC_SMAPS, f->id, "uffd with inode %llu, held by another "
			    "process, serves this process's memory: its ranges are included",
			    (unsigned long long)f->ino);
			arr[n++] = foreign->uffds[i];
		}
		all.uffds = arr;
		all.nuffds = n;
	}
	int rc = check_smaps(&all, pid, &vs, r);
	if (rc == 0)
		rc = check_pagemap(&all, pid, &vs, r);
	free(arr);
	pf_vmas_free(&vs);
	if (rc < 0)
		return -1;
	for (uint32_t i = 0; i < st->nuffds; i++)
		if (check_fds_of(st, pid, st->uffds[i], r) < 0)
			return -1;
	if (check_unknown_fds(st, pid, r) < 0)
		return -1;
	if (r->unlisted)
		add(r, VK_MORE, VC_MODEL, 0, "... %u more disagreements not listed", r->unlisted);
	return r->disagreements ? 1 : 0;
}
