/* cmd_report.c - uffd-record report FILE [--json] [--top N]
 *
 * Summarises a trace (a merged one, or a single segment "<trace>.<pid>"):
 *   run        duration (first record or header start_ns, to last record),
 *              processes (pid, comm when the header names it, parent when a
 *              proc_fork record names it), number of uffds (distinct ino != 0)
 *   operations count and errors (result < 0) per record kind
 *   latency    fault-to-resolution per uffd (ino) and fault mode
 *   busiest    the address windows with the most faults
 *
 * Fault resolution.  A msg_pagefault record (c = flags: UFFD_PAGEFAULT_FLAG_WP
 * -> wp, UFFD_PAGEFAULT_FLAG_MINOR -> minor, else missing) for the page
 * containing address a is resolved by the first later record on the same ino
 * with result >= 0 whose range overlaps that page:
 *   copy, zeropage, continue, poison, move:  [a, a+d) if d > 0, else [a, a+b)
 *   writeprotect with mode bit 0 (WP) clear: [a, a+b)
 *   wake:                                    [a, a+b)
 * Latency = resolution t_ns - fault t_ns.  Percentiles use the nearest-rank
 * method (p-th percentile = the ceil(p/100 * n)-th smallest value).  Faults
 * left over at the end of the trace are "unresolved".
 *
 * Busiest windows.  Each fault is counted in the 2 MiB-aligned window holding
 * its address, clipped to the registered range (successful register records
 * on that ino, minus later unregisters) that holds it, if one does.  So a
 * registration smaller than 2 MiB is shown as itself; a bigger one as its
 * 2 MiB pieces.  Windows are per ino (each uffd serves one address space),
 * ranked by fault count, then ino, then address.
 *
 * Exit status: 0 ok, 2 usage error or unreadable/invalid trace, 1 internal
 * error (output could not be written). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "commands.h"
#include "trace_read.h"
#include "uffd_compat.h"

#define WINDOW_SIZE (2ull << 20)

enum fault_mode { MODE_MISSING, MODE_WP, MODE_MINOR, NMODES };
static const char *const mode_names[NMODES] = { "missing", "wp", "minor" };

struct range {
	uint64_t start, end; /* [start, end) */
};

struct fault {
	uint64_t t_ns;
	int mode;
};

/* pending faults on one page of one uffd */
struct pend_page {
	uint64_t page; /* address / page_size; the hash key points here */
	GArray *faults; /* struct fault */
};

struct lat_stats {
	GArray *ns; /* uint64_t latencies of resolved faults */
	uint64_t unresolved;
};

struct uffd_state {
	uint64_t ino; /* the hash key points here */
	GHashTable *pending; /* &page -> struct pend_page */
	size_t npending; /* faults in pending */
	GArray *regs; /* struct range, registered ranges */
	struct lat_stats lat[NMODES];
	uint64_t faults[NMODES];
};

struct proc_info {
	uint32_t pid;
	uint64_t records;
	uint32_t parent; /* 0: unknown */
	uint64_t execs;
	const char *comm; /* NULL: unknown */
	char comm_buf[17]; /* from a UT_PROC_COMM record */
};

struct window_key {
	uint64_t ino, start, end;
};

struct window {
	struct window_key key; /* the hash key points here */
	uint64_t count[NMODES];
	uint64_t total;
};

struct report {
	const struct trace_file *tf;
	uint64_t page_size;
	size_t nused;
	uint64_t first_t, last_t, start_ns;
	uint64_t count[UT_KIND_MAX], errors[UT_KIND_MAX];
	uint64_t unknown_count, unknown_errors;
	GHashTable *procs; /* pid -> struct proc_info */
	GHashTable *uffds; /* &ino -> struct uffd_state */
	GHashTable *windows; /* struct window_key -> struct window */
	uint64_t faults[NMODES], unresolved[NMODES];
};

/* ---- helpers ------------------------------------------------------------ */

static uint64_t range_end(uint64_t start, uint64_t len)
{
	uint64_t end = start + len;

	return end < start ? UINT64_MAX : end; /* saturate: never wrap */
}

static guint window_hash(gconstpointer p)
{
	const struct window_key *k = p;
	uint64_t h = k->ino * 0x9e3779b97f4a7c15ull ^ k->start ^ (k->end << 17);

	return (guint)(h ^ (h >> 32));
}

static gboolean window_equal(gconstpointer a, gconstpointer b)
{
	return memcmp(a, b, sizeof(struct window_key)) == 0;
}

static void pend_page_free(gpointer p)
{
	struct pend_page *pp = p;

	g_array_free(pp->faults, TRUE);
	g_free(pp);
}

static void uffd_state_free(gpointer p)
{
	struct uffd_state *u = p;

	g_hash_table_destroy(u->pending);
	g_array_free(u->regs, TRUE);
	for (int m = 0; m < NMODES; m++)
		g_array_free(u->lat[m].ns, TRUE);
	g_free(u);
}

static struct uffd_state *uffd_get(struct report *r, uint64_t ino)
{
	struct uffd_state *u = g_hash_table_lookup(r->uffds, &ino);

	if (u)
		return u;
	u = g_new0(struct uffd_state, 1);
	u->ino = ino;
	u->pending = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, pend_page_free);
	u->regs = g_array_new(FALSE, FALSE, sizeof(struct range));
	for (int m = 0; m < NMODES; m++)
		u->lat[m].ns = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	g_hash_table_insert(r->uffds, &u->ino, u);
	return u;
}

static struct proc_info *proc_get(struct report *r, uint32_t pid)
{
	struct proc_info *p = g_hash_table_lookup(r->procs, GUINT_TO_POINTER(pid));

	if (p)
		return p;
	p = g_new0(struct proc_info, 1);
	p->pid = pid;
	g_hash_table_insert(r->procs, GUINT_TO_POINTER(pid), p);
	return p;
}

/* Remove [s, e) from the registered ranges of U (splitting as needed). */
static void regs_subtract(struct uffd_state *u, uint64_t s, uint64_t e)
{
	for (guint i = 0; i < u->regs->len;) {
		struct range *rg = &g_array_index(u->regs, struct range, i);

		if (rg->end <= s || rg->start >= e) {
			i++;
			continue;
		}
		if (rg->start < s && rg->end > e) { /* split in two */
			struct range tail = { e, rg->end };

			rg->end = s;
			g_array_insert_val(u->regs, i + 1, tail);
			i += 2;
		} else if (rg->start < s) {
			rg->end = s;
			i++;
		} else if (rg->end > e) {
			rg->start = e;
			i++;
		} else {
			g_array_remove_index(u->regs, i);
		}
	}
}

static const struct range *regs_find(const struct uffd_state *u, uint64_t addr)
{
	for (guint i = 0; i < u->regs->len; i++) {
		const struct range *rg = &g_array_index(u->regs, struct range, i);

		if (addr >= rg->start && addr < rg->end)
			return rg;
	}
	return NULL;
}

/* ---- fault matching ----------------------------------------------------- */

static void on_fault(struct report *r, const struct ut_record *rec)
{
	struct uffd_state *u = uffd_get(r, rec->ino);
	struct fault f = { rec->t_ns, MODE_MISSING };
	uint64_t page = rec->a / r->page_size;
	struct pend_page *pp;
	struct window_key k;
	struct window *w;
	const struct range *rg;

	if (rec->c & UFFD_PAGEFAULT_FLAG_WP)
		f.mode = MODE_WP;
	else if (rec->c & UFFD_PAGEFAULT_FLAG_MINOR)
		f.mode = MODE_MINOR;
	u->faults[f.mode]++;
	r->faults[f.mode]++;

	pp = g_hash_table_lookup(u->pending, &page);
	if (!pp) {
		pp = g_new0(struct pend_page, 1);
		pp->page = page;
		pp->faults = g_array_new(FALSE, FALSE, sizeof(struct fault));
		g_hash_table_insert(u->pending, &pp->page, pp);
	}
	g_array_append_val(pp->faults, f);
	u->npending++;

	memset(&k, 0, sizeof(k));
	k.ino = rec->ino;
	k.start = rec->a & ~(WINDOW_SIZE - 1);
	k.end = range_end(k.start, WINDOW_SIZE);
	rg = regs_find(u, rec->a);
	if (rg) {
		if (rg->start > k.start)
			k.start = rg->start;
		if (rg->end < k.end)
			k.end = rg->end;
	}
	w = g_hash_table_lookup(r->windows, &k);
	if (!w) {
		w = g_new0(struct window, 1);
		w->key = k;
		g_hash_table_insert(r->windows, &w->key, w);
	}
	w->count[f.mode]++;
	w->total++;
}

static void resolve_page(struct uffd_state *u, struct pend_page *pp, uint64_t t_ns)
{
	for (guint i = 0; i < pp->faults->len; i++) {
		const struct fault *f = &g_array_index(pp->faults, struct fault, i);
		uint64_t lat = t_ns - f->t_ns; /* records are in t_ns order */

		g_array_append_val(u->lat[f->mode].ns, lat);
	}
	u->npending -= pp->faults->len;
}

struct resolve_ctx {
	struct uffd_state *u;
	uint64_t first, last, t_ns;
};

static gboolean resolve_if_in_range(gpointer key, gpointer value, gpointer data)
{
	struct resolve_ctx *c = data;
	struct pend_page *pp = value;

	if (pp->page < c->first || pp->page > c->last)
		return FALSE;
	resolve_page(c->u, pp, c->t_ns);
	return TRUE;
}

/* Resolve the faults pending on INO whose page overlaps [start, end). */
static void resolve(struct report *r, uint64_t ino, uint64_t start, uint64_t end, uint64_t t_ns)
{
	struct uffd_state *u = g_hash_table_lookup(r->uffds, &ino);
	struct resolve_ctx c;

	if (!u || !u->npending || end <= start)
		return;
	c.u = u;
	c.first = start / r->page_size;
	c.last = (end - 1) / r->page_size;
	c.t_ns = t_ns;
	if (c.last - c.first < g_hash_table_size(u->pending)) {
		/* few pages: look each one up */
		for (uint64_t p = c.first;; p++) {
			struct pend_page *pp = g_hash_table_lookup(u->pending, &p);

			if (pp) {
				resolve_page(u, pp, t_ns);
				g_hash_table_remove(u->pending, &p);
			}
			if (p == c.last)
				break;
		}
	} else {
		/* a big range: scan the pending pages instead */
		g_hash_table_foreach_remove(u->pending, resolve_if_in_range, &c);
	}
}

static void on_record(struct report *r, const struct ut_record *rec)
{
	uint64_t len;

	if (rec->kind >= UT_KIND_MAX || !trace_kind_name(rec->kind)) {
		r->unknown_count++;
		r->unknown_errors += rec->result < 0;
	} else {
		r->count[rec->kind]++;
		r->errors[rec->kind] += rec->result < 0;
	}
	proc_get(r, rec->pid)->records++;

	switch (rec->kind) {
	case UT_PROC_FORK:
		if (rec->result >= 0 && rec->a && rec->a <= UINT32_MAX && rec->a != rec->pid)
			proc_get(r, (uint32_t)rec->a)->parent = rec->pid;
		break;
	case UT_PROC_EXEC:
		proc_get(r, rec->pid)->execs++;
		break;
	case UT_PROC_COMM: {
		struct proc_info *p = proc_get(r, rec->pid);
		memcpy(p->comm_buf, &rec->a, 8);
		memcpy(p->comm_buf + 8, &rec->b, 8);
		p->comm_buf[16] = 0;
		p->comm = p->comm_buf;
		break;
	}
	case UT_REGISTER:
		if (rec->result >= 0 && rec->b) {
			struct uffd_state *u = uffd_get(r, rec->ino);
			struct range rg = { rec->a, range_end(rec->a, rec->b) };

			regs_subtract(u, rg.start, rg.end);
			g_array_append_val(u->regs, rg);
		}
		break;
	case UT_UNREGISTER:
		if (rec->result >= 0 && rec->b) {
			struct uffd_state *u = g_hash_table_lookup(r->uffds, &rec->ino);

			if (u)
				regs_subtract(u, rec->a, range_end(rec->a, rec->b));
		}
		break;
	case UT_MSG_PAGEFAULT:
		on_fault(r, rec);
		break;
	case UT_COPY:
	case UT_ZEROPAGE:
	case UT_CONTINUE:
	case UT_POISON:
	case UT_MOVE:
		if (rec->result < 0)
			break;
		len = (int64_t)rec->d > 0 ? rec->d : rec->b;
		resolve(r, rec->ino, rec->a, range_end(rec->a, len), rec->t_ns);
		break;
	case UT_WRITEPROTECT:
		if (rec->result < 0 || (rec->c & UFFDIO_WRITEPROTECT_MODE_WP))
			break;
		resolve(r, rec->ino, rec->a, range_end(rec->a, rec->b), rec->t_ns);
		break;
	case UT_WAKE:
		if (rec->result < 0)
			break;
		resolve(r, rec->ino, rec->a, range_end(rec->a, rec->b), rec->t_ns);
		break;
	default:
		break;
	}
}

/* ---- ordering ----------------------------------------------------------- */

static int cmp_rec_ptr(const void *pa, const void *pb)
{
	const struct ut_record *a = *(const struct ut_record *const *)pa;
	const struct ut_record *b = *(const struct ut_record *const *)pb;

	if (a->t_ns != b->t_ns)
		return a->t_ns < b->t_ns ? -1 : 1;
	return a < b ? -1 : a > b; /* same array: file order, so stable */
}

static int cmp_u64(const void *pa, const void *pb)
{
	uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;

	return a < b ? -1 : a > b;
}

static int cmp_proc(const void *pa, const void *pb)
{
	const struct proc_info *a = *(const struct proc_info *const *)pa;
	const struct proc_info *b = *(const struct proc_info *const *)pb;

	return a->pid < b->pid ? -1 : a->pid > b->pid;
}

static int cmp_uffd(const void *pa, const void *pb)
{
	const struct uffd_state *a = *(const struct uffd_state *const *)pa;
	const struct uffd_state *b = *(const struct uffd_state *const *)pb;

	return a->ino < b->ino ? -1 : a->ino > b->ino;
}

static int cmp_window(const void *pa, const void *pb)
{
	const struct window *a = *(const struct window *const *)pa;
	const struct window *b = *(const struct window *const *)pb;

	if (a->total != b->total)
		return a->total > b->total ? -1 : 1;
	if (a->key.ino != b->key.ino)
		return a->key.ino < b->key.ino ? -1 : 1;
	return a->key.start < b->key.start ? -1 : a->key.start > b->key.start;
}

/* The values of H, sorted with CMP; *N gets their number.  g_free() it. */
static gpointer *sorted_values(GHashTable *h, int (*cmp)(const void *, const void *), guint *n)
{
	GHashTableIter it;
	gpointer v, *out = g_new(gpointer, g_hash_table_size(h) + 1);
	guint i = 0;

	g_hash_table_iter_init(&it, h);
	while (g_hash_table_iter_next(&it, NULL, &v))
		out[i++] = v;
	qsort(out, i, sizeof(gpointer), cmp);
	*n = i;
	return out;
}

/* nearest-rank percentile of the sorted array V[0..n), n > 0 */
static uint64_t percentile(const uint64_t *v, size_t n, unsigned p)
{
	/* ceil(n * p / 100) without overflow: n = 100q + r */
	size_t rank = (n / 100) * p + ((n % 100) * p + 99) / 100;

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

/* ---- output ------------------------------------------------------------- */

static void json_str(FILE *o, const char *s)
{
	fputc('"', o);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(o, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", o);
		else if (*p < 0x20 || *p >= 0x7f)
			fprintf(o, "\\u%04x", *p); /* bytes, not UTF-8: keep JSON valid */
		else
			fputc(*p, o);
	}
	fputc('"', o);
}

/* printable copy of a comm for the text report */
static void text_comm(char out[17], const char *comm)
{
	size_t i;

	for (i = 0; i < 16 && comm[i]; i++)
		out[i] = (comm[i] >= 0x20 && comm[i] < 0x7f) ? comm[i] : '?';
	out[i] = '\0';
}

/* ns as microseconds with three decimals, exactly */
static void fmt_us(char *buf, size_t len, uint64_t ns)
{
	snprintf(buf, len, "%" PRIu64 ".%03" PRIu64, ns / 1000, ns % 1000);
}

static void fmt_s(char *buf, size_t len, uint64_t ns)
{
	snprintf(buf, len, "%" PRIu64 ".%09" PRIu64, ns / 1000000000u, ns % 1000000000u);
}

struct output {
	struct proc_info **procs;
	guint nprocs;
	struct uffd_state **uffds;
	guint nuffds;
	GArray *inos; /* uint64_t: the distinct inos != 0, sorted */
	guint ninos;
	struct window **windows;
	guint nwindows;
	guint top;
};

static void print_text(FILE *o, const struct report *r, const struct output *x)
{
	const struct trace_file *tf = r->tf;
	char buf[64], b2[64], b3[64], comm[17];
	uint64_t total_faults = 0, total_unres = 0;

	fprintf(o, "trace %s\n", tf->path);
	if (tf->hdr.pid == 0) {
		fprintf(o, "  merged trace");
	} else {
		text_comm(comm, tf->comm);
		fprintf(o, "  segment of pid %d (%s)", tf->hdr.pid, comm);
	}
	fprintf(o, ", page size %u, %zu records in %zu slots\n", tf->hdr.page_size, r->nused,
		tf->nslots);
	if (tf->hdr.dropped)
		fprintf(o, "  WARNING: %u records were lost while tracing (segment full)\n",
			tf->hdr.dropped);

	fmt_s(buf, sizeof(buf), r->last_t - r->start_ns);
	fprintf(o, "\nrun\n  duration   %s s\n", buf);
	fprintf(o, "  processes  %u\n", x->nprocs);
	for (guint i = 0; i < x->nprocs; i++) {
		const struct proc_info *p = x->procs[i];

		if (p->comm)
			text_comm(comm, p->comm);
		fprintf(o, "    pid %-8" PRIu32 " %-16s %8" PRIu64 " records", p->pid,
			p->comm ? comm : "(comm unknown)", p->records);
		if (p->parent)
			fprintf(o, ", child of %" PRIu32, p->parent);
		if (p->execs)
			fprintf(o, ", exec'd %" PRIu64 "x", p->execs);
		fputc('\n', o);
	}
	fprintf(o, "  uffds      %u\n", x->ninos);

	fprintf(o, "\noperations\n  %-16s %10s %10s\n", "kind", "count", "errors");
	for (unsigned k = 0; k < UT_KIND_MAX; k++)
		if (r->count[k])
			fprintf(o, "  %-16s %10" PRIu64 " %10" PRIu64 "\n", trace_kind_name(k),
				r->count[k], r->errors[k]);
	if (r->unknown_count)
		fprintf(o, "  %-16s %10" PRIu64 " %10" PRIu64 "\n", "(unknown kind)",
			r->unknown_count, r->unknown_errors);
	if (!r->nused)
		fprintf(o, "  (no records)\n");

	for (int m = 0; m < NMODES; m++) {
		total_faults += r->faults[m];
		total_unres += r->unresolved[m];
	}
	fprintf(o, "\nfaults %" PRIu64 " (missing %" PRIu64 ", wp %" PRIu64 ", minor %" PRIu64
		"), unresolved %" PRIu64 "\n", total_faults, r->faults[MODE_MISSING],
		r->faults[MODE_WP], r->faults[MODE_MINOR], total_unres);
	if (total_faults) {
		fprintf(o, "\nfault-to-resolution latency (us)\n  %-10s %-8s %9s %9s %12s %12s "
			"%12s %10s\n", "ino", "mode", "faults", "resolved", "p50", "p99", "max",
			"unresolved");
		for (guint i = 0; i < x->nuffds; i++) {
			const struct uffd_state *u = x->uffds[i];

			for (int m = 0; m < NMODES; m++) {
				const GArray *ns = u->lat[m].ns;
				const uint64_t *v = (const uint64_t *)ns->data;

				if (!u->faults[m])
					continue;
				if (ns->len) {
					fmt_us(buf, sizeof(buf), percentile(v, ns->len, 50));
					fmt_us(b2, sizeof(b2), percentile(v, ns->len, 99));
					fmt_us(b3, sizeof(b3), v[ns->len - 1]);
				} else {
					strcpy(buf, "-");
					strcpy(b2, "-");
					strcpy(b3, "-");
				}
				fprintf(o, "  %-10" PRIu64 " %-8s %9" PRIu64 " %9u %12s %12s %12s %10"
					PRIu64 "\n", u->ino, mode_names[m], u->faults[m], ns->len,
					buf, b2, b3, u->lat[m].unresolved);
			}
		}
		fprintf(o, "\nbusiest address windows (top %u of %u, by faults)\n"
			"  %-10s %-18s %-18s %9s %9s %9s %9s\n", x->top < x->nwindows ? x->top :
			x->nwindows, x->nwindows, "ino", "start", "end", "faults", "missing", "wp",
			"minor");
		for (guint i = 0; i < x->nwindows && i < x->top; i++) {
			const struct window *w = x->windows[i];

			fprintf(o, "  %-10" PRIu64 " 0x%016" PRIx64 " 0x%016" PRIx64 " %9" PRIu64
				" %9" PRIu64 " %9" PRIu64 " %9" PRIu64 "\n", w->key.ino,
				w->key.start, w->key.end, w->total, w->count[MODE_MISSING],
				w->count[MODE_WP], w->count[MODE_MINOR]);
		}
	}
}

static void print_json(FILE *o, const struct report *r, const struct output *x)
{
	const struct trace_file *tf = r->tf;
	char buf[64];
	uint64_t total_faults = 0, total_unres = 0;
	int first;

	fputs("{\"file\":", o);
	json_str(o, tf->path);
	fprintf(o, ",\"merged\":%s,\"header\":{\"pid\":%d,\"comm\":", tf->hdr.pid ? "false" :
		"true", tf->hdr.pid);
	json_str(o, tf->comm);
	fprintf(o, ",\"page_size\":%u,\"start_ns\":%" PRIu64 "}", tf->hdr.page_size,
		tf->hdr.start_ns);
	fprintf(o, ",\"records\":%zu,\"slots\":%zu", r->nused, tf->nslots);

	fmt_s(buf, sizeof(buf), r->last_t - r->start_ns);
	fprintf(o, ",\"run\":{\"start_ns\":%" PRIu64 ",\"end_ns\":%" PRIu64 ",\"duration_ns\":%"
		PRIu64 ",\"duration_s\":%s", r->start_ns, r->last_t, r->last_t - r->start_ns, buf);
	fputs(",\"processes\":[", o);
	for (guint i = 0; i < x->nprocs; i++) {
		const struct proc_info *p = x->procs[i];

		fprintf(o, "%s{\"pid\":%" PRIu32 ",\"comm\":", i ? "," : "", p->pid);
		if (p->comm)
			json_str(o, p->comm);
		else
			fputs("null", o);
		fprintf(o, ",\"records\":%" PRIu64 ",\"parent\":", p->records);
		if (p->parent)
			fprintf(o, "%" PRIu32, p->parent);
		else
			fputs("null", o);
		fprintf(o, ",\"execs\":%" PRIu64 "}", p->execs);
	}
	fprintf(o, "],\"uffd_count\":%u,\"uffds\":[", x->ninos);
	for (guint i = 0; i < x->ninos; i++)
		fprintf(o, "%s%" PRIu64, i ? "," : "", g_array_index(x->inos, uint64_t, i));
	fputs("]}", o);

	fputs(",\"ops\":{", o);
	for (unsigned k = 1; k < UT_KIND_MAX; k++)
		fprintf(o, "%s\"%s\":{\"count\":%" PRIu64 ",\"errors\":%" PRIu64 "}",
			k > 1 ? "," : "", trace_kind_name(k), r->count[k], r->errors[k]);
	fprintf(o, ",\"unknown\":{\"count\":%" PRIu64 ",\"errors\":%" PRIu64 "}}",
		r->unknown_count, r->unknown_errors);

	for (int m = 0; m < NMODES; m++) {
		total_faults += r->faults[m];
		total_unres += r->unresolved[m];
	}
	fprintf(o, ",\"faults\":{\"total\":%" PRIu64 ",\"missing\":%" PRIu64 ",\"wp\":%" PRIu64
		",\"minor\":%" PRIu64 ",\"unresolved\":%" PRIu64 "}", total_faults,
		r->faults[MODE_MISSING], r->faults[MODE_WP], r->faults[MODE_MINOR], total_unres);

	fputs(",\"latency\":[", o);
	first = 1;
	for (guint i = 0; i < x->nuffds; i++) {
		const struct uffd_state *u = x->uffds[i];

		for (int m = 0; m < NMODES; m++) {
			const GArray *ns = u->lat[m].ns;
			const uint64_t *v = (const uint64_t *)ns->data;

			if (!u->faults[m])
				continue;
			fprintf(o, "%s{\"ino\":%" PRIu64 ",\"mode\":\"%s\",\"faults\":%" PRIu64
				",\"resolved\":%u", first ? "" : ",", u->ino, mode_names[m],
				u->faults[m], ns->len);
			first = 0;
			if (ns->len) {
				fmt_us(buf, sizeof(buf), percentile(v, ns->len, 50));
				fprintf(o, ",\"p50_us\":%s", buf);
				fmt_us(buf, sizeof(buf), percentile(v, ns->len, 99));
				fprintf(o, ",\"p99_us\":%s", buf);
				fmt_us(buf, sizeof(buf), v[ns->len - 1]);
				fprintf(o, ",\"max_us\":%s", buf);
			} else {
				fputs(",\"p50_us\":null,\"p99_us\":null,\"max_us\":null", o);
			}
			fprintf(o, ",\"unresolved\":%" PRIu64 "}", u->lat[m].unresolved);
		}
	}
	fprintf(o, "],\"top\":%u,\"busiest\":[", x->top);
	for (guint i = 0; i < x->nwindows && i < x->top; i++) {
		const struct window *w = x->windows[i];

		fprintf(o, "%s{\"ino\":%" PRIu64 ",\"start\":\"0x%" PRIx64 "\",\"end\":\"0x%"
			PRIx64 "\",\"faults\":%" PRIu64 ",\"missing\":%" PRIu64 ",\"wp\":%" PRIu64
			",\"minor\":%" PRIu64 "}", i ? "," : "", w->key.ino, w->key.start,
			w->key.end, w->total, w->count[MODE_MISSING], w->count[MODE_WP],
			w->count[MODE_MINOR]);
	}
	fputs("]}\n", o);
}

/* ---- the command -------------------------------------------------------- */

static int analyse(struct report *r)
{
	const struct trace_file *tf = r->tf;
	const struct ut_record **recs;
	size_t n = 0;
	int sorted = 1;
	GHashTableIter it;
	gpointer v;

	recs = g_try_new(const struct ut_record *, tf->nslots ? tf->nslots : 1);
	if (!recs)
		return -1;
	for (size_t i = 0; i < tf->nslots; i++) {
		if (!trace_slot_used(&tf->rec[i]))
			continue;
		if (n && recs[n - 1]->t_ns > tf->rec[i].t_ns)
			sorted = 0;
		recs[n++] = &tf->rec[i];
	}
	/* A merged trace is sorted; a raw segment may not be. */
	if (!sorted)
		qsort(recs, n, sizeof(*recs), cmp_rec_ptr);
	r->nused = n;
	if (n) {
		r->first_t = recs[0]->t_ns;
		r->last_t = recs[n - 1]->t_ns;
	}
	r->start_ns = tf->hdr.start_ns && tf->hdr.start_ns <= r->first_t ? tf->hdr.start_ns
									   : r->first_t;
	if (!n)
		r->start_ns = r->last_t = 0;
	if (tf->hdr.pid > 0)
		proc_get(r, (uint32_t)tf->hdr.pid)->comm = tf->comm;

	for (size_t i = 0; i < n; i++)
		on_record(r, recs[i]);
	g_free(recs);

	/* what is still pending is unresolved; sort the latencies */
	g_hash_table_iter_init(&it, r->uffds);
	while (g_hash_table_iter_next(&it, NULL, &v)) {
		struct uffd_state *u = v;
		GHashTableIter pit;
		gpointer pv;

		g_hash_table_iter_init(&pit, u->pending);
		while (g_hash_table_iter_next(&pit, NULL, &pv)) {
			const struct pend_page *pp = pv;

			for (guint j = 0; j < pp->faults->len; j++) {
				int m = g_array_index(pp->faults, struct fault, j).mode;

				u->lat[m].unresolved++;
				r->unresolved[m]++;
			}
		}
		for (int m = 0; m < NMODES; m++)
			g_array_sort(u->lat[m].ns, cmp_u64);
	}
	return 0;
}

static int usage_error(GOptionContext *ctx, const char *msg)
{
	fprintf(stderr, "uffd-record report: %s\n", msg);
	fprintf(stderr, "usage: uffd-record report FILE [--json] [--top N]  (--help for more)\n");
	g_option_context_free(ctx);
	return 2;
}

int cmd_report(int argc, char **argv)
{
	gboolean json = FALSE;
	gint top = 10;
	GOptionEntry entries[] = {
		{ "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print one JSON object", NULL },
		{ "top", 'n', 0, G_OPTION_ARG_INT, &top,
		  "Show the N busiest address windows (default 10)", "N" },
		{ NULL, 0, 0, 0, NULL, NULL, NULL },
	};
	GOptionContext *ctx = g_option_context_new("FILE - summarise a uffdshim trace");
	GError *gerr = NULL;
	gchar **args = g_new0(gchar *, (argc > 0 ? argc : 1) + 1);
	gchar **args_orig = args;
	int nargs = argc > 0 ? argc : 1, ret = 0;
	struct trace_file tf;
	struct report r;
	struct output x;
	char err[512];

	g_option_context_set_description(ctx,
		"FILE is a merged trace (uffd-record run --trace) or one segment FILE.PID.\n"
		"Exit status: 0 ok, 2 bad usage or unreadable/invalid trace, 1 output error.");
	g_option_context_add_main_entries(ctx, entries, NULL);
	args[0] = (gchar *)"uffd-record report";
	for (int i = 1; i < argc; i++)
		args[i] = argv[i];
	if (!g_option_context_parse(ctx, &nargs, &args, &gerr)) {
		ret = usage_error(ctx, gerr->message);
		g_error_free(gerr);
		g_free(args_orig);
		return ret;
	}
	/* GOption only permutes the array it was given */
	if (nargs != 2) {
		g_free(args_orig);
		return usage_error(ctx, nargs < 2 ? "missing FILE" : "more than one FILE");
	}
	if (top < 0) {
		g_free(args_orig);
		return usage_error(ctx, "--top wants a number >= 0");
	}

	if (trace_open(&tf, args[1], 0, err, sizeof(err)) != TRACE_OK) {
		fprintf(stderr, "uffd-record report: %s\n", err);
		g_free(args_orig);
		g_option_context_free(ctx);
		return 2;
	}
	g_free(args_orig);
	g_option_context_free(ctx);

	memset(&r, 0, sizeof(r));
	r.tf = &tf;
	r.page_size = tf.hdr.page_size;
	r.procs = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
	r.uffds = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, uffd_state_free);
	r.windows = g_hash_table_new_full(window_hash, window_equal, NULL, g_free);

	if (analyse(&r) < 0) {
		fprintf(stderr, "uffd-record report: %s: out of memory\n", tf.path);
		ret = 1;
		goto out;
	}
	memset(&x, 0, sizeof(x));
	x.procs = (struct proc_info **)sorted_values(r.procs, cmp_proc, &x.nprocs);
	x.uffds = (struct uffd_state **)sorted_values(r.uffds, cmp_uffd, &x.nuffds);
	x.windows = (struct window **)sorted_values(r.windows, cmp_window, &x.nwindows);
	x.top = (guint)top;
	/* every distinct ino != 0, whatever the record kind */
	x.inos = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	for (size_t i = 0; i < tf.nslots; i++)
		if (trace_slot_used(&tf.rec[i]) && tf.rec[i].ino)
			g_array_append_val(x.inos, tf.rec[i].ino);
	g_array_sort(x.inos, cmp_u64);
	for (guint i = 0; i < x.inos->len; i++)
		if (!i || g_array_index(x.inos, uint64_t, i) != g_array_index(x.inos, uint64_t, x.ninos - 1))
			g_array_index(x.inos, uint64_t, x.ninos++) = g_array_index(x.inos, uint64_t, i);
	g_array_set_size(x.inos, x.ninos);

	if (json)
		print_json(stdout, &r, &x);
	else
		print_text(stdout, &r, &x);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "uffd-record report: writing the report: %s\n", strerror(errno));
		ret = 1;
	}
	g_free(x.procs);
	g_free(x.uffds);
	g_free(x.windows);
	g_array_free(x.inos, TRUE);
out:
	g_hash_table_destroy(r.windows);
	g_hash_table_destroy(r.uffds);
	g_hash_table_destroy(r.procs);
	trace_close(&tf);
	return ret;
}
