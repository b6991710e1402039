/* cmd_show.c - uffd-record show DIR [--json]: print a checkpoint image, or
 * each epoch of an image chain (DIR/epoch-0000, ...) briefly. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <glib.h>

#include "chain.h"
#include "commands.h"
#include "image_io.h"
#include "status_print.h"

static const char *const tk_names[] = {"?", "anon", "heap", "stack", "file", "other"};
static const char *const tm_names[] = {"?", "async", "sync", "all"};

struct run_counts {
	uint64_t runs[4], pages[4]; /* by kind: DATA, ZERO, ABSENT (index = kind) */
};

static struct run_counts count_runs(const struct umi_image *img)
{
	struct run_counts c;
	memset(&c, 0, sizeof(c));
	for (size_t i = 0; i < img->nruns; i++) {
		uint32_t k = img->runs[i].kind <= UMI_RUN_ABSENT ? img->runs[i].kind : 0;
		c.runs[k]++;
		c.pages[k] += img->runs[i].npages;
	}
	return c;
}

static const char *tk_name(uint32_t k)
{
	return tk_names[k <= UMI_TK_OTHER ? k : 0];
}

static const char *tm_name(uint32_t m)
{
	return tm_names[m <= UMI_TM_ALL ? m : 0];
}

static void epoch_text(GString *o, const struct umi_image *img)
{
	const struct umi_epoch *e = img->epoch;
	struct run_counts c = count_runs(img);
	g_string_append_printf(o, "epoch: %u of chain %#llx%s%s, parent created_ns %llu\n",
			       e->epoch, (unsigned long long)e->chain_id,
			       (e->flags & UMI_EPOCH_FROZEN) ? ", frozen" : "",
			       (e->flags & UMI_EPOCH_FLAT) ? ", flattened" : "",
			       (unsigned long long)e->parent_created_ns);
	g_string_append_printf(o, "runs: %llu data (%llu pages), %llu zero (%llu pages), %llu "
			       "absent (%llu pages)\n", (unsigned long long)c.runs[1],
			       (unsigned long long)c.pages[1], (unsigned long long)c.runs[2],
			       (unsigned long long)c.pages[2], (unsigned long long)c.runs[3],
			       (unsigned long long)c.pages[3]);
	g_string_append_printf(o, "tracked ranges: %u\n", e->nranges);
	for (uint32_t k = 0; k < e->nranges; k++) {
		const struct umi_tracked *t = &img->tracked[k];
		g_string_append_printf(o, "  %#llx-%#llx %c%c%c %-5s %-5s%s %s\n",
				       (unsigned long long)t->start, (unsigned long long)t->end,
				       (t->prot & PROT_READ) ? 'r' : '-',
				       (t->prot & PROT_WRITE) ? 'w' : '-',
				       (t->prot & PROT_EXEC) ? 'x' : '-', tk_name(t->kind),
				       tm_name(t->mode), (t->flags & UMI_TR_NEW) ? " NEW" : "    ",
				       t->name);
	}
}

static void epoch_json(GString *o, const struct umi_image *img)
{
	const struct umi_epoch *e = img->epoch;
	struct run_counts c = count_runs(img);
	g_string_append_printf(o, ",\"epoch\":{\"epoch\":%u,\"chain_id\":%llu,"
			       "\"parent_created_ns\":%llu,\"frozen\":%s,\"flat\":%s,"
			       "\"data_runs\":%llu,\"zero_runs\":%llu,\"absent_runs\":%llu,"
			       "\"absent_pages\":%llu,\"ranges\":[", e->epoch,
			       (unsigned long long)e->chain_id,
			       (unsigned long long)e->parent_created_ns,
			       (e->flags & UMI_EPOCH_FROZEN) ? "true" : "false",
			       (e->flags & UMI_EPOCH_FLAT) ? "true" : "false",
			       (unsigned long long)c.runs[1], (unsigned long long)c.runs[2],
			       (unsigned long long)c.runs[3], (unsigned long long)c.pages[3]);
	for (uint32_t k = 0; k < e->nranges; k++) {
		const struct umi_tracked *t = &img->tracked[k];
		g_string_append_printf(o, "%s{\"start\":%llu,\"end\":%llu,\"prot\":%u,\"kind\":\"%s\","
				       "\"mode\":\"%s\",\"new\":%s,\"name\":", k ? "," : "",
				       (unsigned long long)t->start, (unsigned long long)t->end,
				       t->prot, tk_name(t->kind), tm_name(t->mode),
				       (t->flags & UMI_TR_NEW) ? "true" : "false");
		json_string(o, t->name);
		g_string_append_c(o, '}');
	}
	g_string_append(o, "]}");
}

static void show_json(GString *o, const struct image_dir *d)
{
	struct status_info info = {.pid = d->img.hdr.pid, .comm = d->img.hdr.comm};
	struct run_counts c = count_runs(&d->img);
	bool with_memory = d->img.proc && (d->img.proc->flags & UMI_PROC_WITH_MEMORY);
	GString *st = g_string_new(NULL);
	status_print_json(st, &d->st, &info, NULL);
	g_string_append_printf(o, "{\"image\":{\"version\":%u,\"pid\":%d,\"created_ns\":%llu,"
			       "\"with_memory\":%s,\"data_pages\":%llu,\"zero_pages\":%llu,"
			       "\"runs\":%zu,\"exe\":",
			       d->img.hdr.version, d->img.hdr.pid,
			       (unsigned long long)d->img.hdr.created_ns,
			       with_memory ? "true" : "false", (unsigned long long)c.pages[1],
			       (unsigned long long)c.pages[2], d->img.nruns);
	json_string(o, d->img.proc ? d->img.proc->exe : "");
	if (d->img.epoch)
		epoch_json(o, &d->img);
	g_string_append_printf(o, "},\"state\":%s}\n", st->str);
	g_string_free(st, TRUE);
}

static void show_text(GString *o, const char *dir, const struct image_dir *d)
{
	struct status_info info = {.pid = d->img.hdr.pid, .comm = d->img.hdr.comm};
	struct run_counts c = count_runs(&d->img);
	bool with_memory = d->img.proc && (d->img.proc->flags & UMI_PROC_WITH_MEMORY);
	time_t t = (time_t)(d->img.hdr.created_ns / 1000000000ULL);
	char when[64];
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
	g_string_append_printf(o, "image %s: format %u, x86_64, page size %u, dumped %s\n", dir,
			       d->img.hdr.version, d->img.hdr.page_size, when);
	if (d->img.proc)
		g_string_append_printf(o, "process: pid %d, %s\n", d->img.proc->pid,
				       d->img.proc->exe);
	if (with_memory || d->img.epoch)
		g_string_append_printf(o, "memory: %llu data pages (%llu KiB in %s), %llu zero "
				       "pages, %zu runs\n", (unsigned long long)c.pages[1],
				       (unsigned long long)c.pages[1] * 4, UMI_PAGES_FILE,
				       (unsigned long long)c.pages[2], d->img.nruns);
	else
		g_string_append(o, "memory: not saved (dumped without --with-memory)\n");
	if (d->img.epoch)
		epoch_text(o, &d->img);
	g_string_append_c(o, '\n');
	status_print_text(o, &d->st, &info);
}

static int show_image(const char *dir, bool json)
{
	struct image_dir d;
	char err[600];
	if (image_dir_load(dir, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-record show: %s\n", err);
		return 2;
	}
	GString *o = g_string_new(NULL);
	if (json)
		show_json(o, &d);
	else
		show_text(o, dir, &d);
	fputs(o->str, stdout);
	g_string_free(o, TRUE);
	image_dir_free(&d);
	return 0;
}

/* One line (text) or one object (json) per epoch. */
static void chain_epoch(GString *o, const struct image_dir *d, unsigned i, bool json)
{
	const struct umi_image *img = &d->img;
	struct run_counts c = count_runs(img);
	uint32_t nnew = 0;
	for (uint32_t k = 0; k < img->epoch->nranges; k++)
		nnew += !!(img->tracked[k].flags & UMI_TR_NEW);
	if (json) {
		g_string_append_printf(o, "%s{\"epoch\":%u,\"created_ns\":%llu,\"frozen\":%s,"
				       "\"data_pages\":%llu,\"zero_pages\":%llu,\"absent_pages\":%llu,"
				       "\"runs\":%zu,\"ranges\":%u,\"new_ranges\":%u,\"uffds\":%u}",
				       i ? "," : "", i, (unsigned long long)img->hdr.created_ns,
				       (img->epoch->flags & UMI_EPOCH_FROZEN) ? "true" : "false",
				       (unsigned long long)c.pages[1], (unsigned long long)c.pages[2],
				       (unsigned long long)c.pages[3], img->nruns,
				       img->epoch->nranges, nnew, d->st.nuffds);
		return;
	}
	g_string_append_printf(o, "  epoch %u: %llu data + %llu zero + %llu absent pages in %zu "
			       "runs, %u tracked ranges (%u new), %u uffds%s\n", i,
			       (unsigned long long)c.pages[1], (unsigned long long)c.pages[2],
			       (unsigned long long)c.pages[3], img->nruns, img->epoch->nranges,
			       nnew, d->st.nuffds,
			       (img->epoch->flags & UMI_EPOCH_FROZEN) ? ", frozen" : "");
}

static int show_chain(const char *dir, bool json)
{
	struct chain c;
	char err[2048];
	if (chain_load(dir, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-record show: %s\n", err);
		return 2;
	}
	const struct umi_image *last = &c.ep[c.n - 1].img;
	GString *o = g_string_new(NULL);
	if (json)
		g_string_append_printf(o, "{\"chain\":{\"chain_id\":%llu,\"pid\":%d,\"epochs\":[",
				       (unsigned long long)last->epoch->chain_id, last->hdr.pid);
	else
		g_string_append_printf(o, "image chain %s: %u epochs of pid %d (%.16s), chain %#llx\n",
				       dir, c.n, last->hdr.pid, last->hdr.comm,
				       (unsigned long long)last->epoch->chain_id);
	for (unsigned i = 0; i < c.n; i++)
		chain_epoch(o, &c.ep[i], i, json);
	if (json)
		g_string_append(o, "]}}\n");
	else
		g_string_append_printf(o, "(uffd-record show %s/epoch-NNNN for one epoch in full)\n",
				       dir);
	fputs(o->str, stdout);
	g_string_free(o, TRUE);
	chain_free(&c);
	return 0;
}

int cmd_show(int argc, char **argv)
{
	const char *dir = NULL;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else {
			fprintf(stderr, "usage: uffd-record show DIR [--json]\n");
			return 2;
		}
	}
	if (!dir) {
		fprintf(stderr, "usage: uffd-record show DIR [--json]\n");
		return 2;
	}
	return chain_is_chain_dir(dir) ? show_chain(dir, json) : show_image(dir, json);
}
