/* track_pages.c - one epoch of an image chain: which pages changed, their
 * contents, and the image directory that records them. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "image_io.h"
#include "procfs.h"
#include "track_pages.h"
#include "uffd_compat.h"
#include "um_image.h"
#include "um_model.h"

#define BATCH 256 /* pages per process_vm_readv */

int track_pages_init(struct track_pages *tp, pid_t pid, const char *dir, const char *log_path,
		     char *err, size_t errlen)
{
	memset(tp, 0, sizeof(*tp));
	tp->pid = pid;
	tp->dir = g_strdup(dir);
	tp->pagemap = pf_pagemap_open(pid, err, errlen);
	if (tp->pagemap < 0) {
		g_free(tp->dir);
		return -1;
	}
	if (log_path && !(tp->log = fopen(log_path, "a"))) {
		snprintf(err, errlen, "%s: %s", log_path, strerror(errno));
		close(tp->pagemap);
		g_free(tp->dir);
		return -1;
	}
	tp->chain_id = ((uint64_t)g_random_int() << 32) | g_random_int();
	tp->pages = g_hash_table_new(g_direct_hash, g_direct_equal);
	return 0;
}

void track_pages_free(struct track_pages *tp)
{
	if (tp->log)
		fclose(tp->log);
	if (tp->pagemap >= 0)
		close(tp->pagemap);
	if (tp->pages)
		g_hash_table_destroy(tp->pages);
	g_free(tp->dir);
	memset(tp, 0, sizeof(*tp));
	tp->pagemap = -1;
}

static uint64_t chain_get(const struct track_pages *tp, uint64_t page)
{
	return (uint64_t)(uintptr_t)g_hash_table_lookup(tp->pages, (gpointer)(uintptr_t)page);
}

static void chain_set(struct track_pages *tp, uint64_t page, uint64_t v)
{
	if (v)
		g_hash_table_insert(tp->pages, (gpointer)(uintptr_t)page, (gpointer)(uintptr_t)v);
	else
		g_hash_table_remove(tp->pages, (gpointer)(uintptr_t)page);
}

/* Index of the range holding addr, or -1. */
static long range_of(const struct uctl_track_range *r, uint32_t n, uint64_t addr)
{
	long lo = 0, hi = (long)n - 1;
	while (lo <= hi) {
		long mid = (lo + hi) / 2;
		if (addr < r[mid].start)
			hi = mid - 1;
		else if (addr >= r[mid].end)
			lo = mid + 1;
		else
			return mid;
	}
	return -1;
}

/* Pages of ranges that are gone, and of ranges that are new, leave the chain
 * (a new range is recorded from scratch). */
static void drop_stale(struct track_pages *tp, const struct uctl_track_range *r, uint32_t n)
{
	GHashTableIter it;
	gpointer k, v;
	g_hash_table_iter_init(&it, tp->pages);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		long i = range_of(r, n, (uint64_t)(uintptr_t)k);
		if (i < 0 || (r[i].flags & UCTL_TR_NEW))
			g_hash_table_iter_remove(&it);
	}
}

/* ---- the epoch being written ---- */
struct epoch_out {
	struct track_pages *tp;
	uint32_t epoch;
	int pages_fd;
	uint64_t pages_off;
	GArray *runs;            /* struct umi_run */
	struct um_state st;      /* for uffd ids of runs */
	const struct uctl_track_range *ranges;
	uint32_t nranges;
	struct track_epoch_stats *s;
	/* pages queued for reading */
	uint64_t addr[BATCH];
	bool was_present[BATCH];
	uint32_t n;
	uint8_t *buf;
};

/* The uffd of this process whose registered range holds page, or 0; *end
 * gets the end of that range (or of the tracked range). */
static uint32_t uffd_of(const struct epoch_out *e, uint64_t page, uint64_t *end)
{
	for (uint32_t i = 0; i < e->st.nuffds; i++) {
		const struct um_uffd *u = e->st.uffds[i];
		if (u->mm_pid && u->mm_pid != e->tp->pid)
			continue;
		const struct um_range *r = um_range_find(u, page);
		if (r) {
			*end = r->end;
			return u->id;
		}
	}
	long k = range_of(e->ranges, e->nranges, page);
	*end = k >= 0 ? e->ranges[k].end : page + UM_PAGE_SIZE;
	return 0;
}

static void add_run(struct epoch_out *e, uint64_t page, uint32_t kind, uint32_t hash)
{
	uint64_t end;
	uint32_t id = uffd_of(e, page, &end);
	if (e->runs->len) {
		struct umi_run *l = &g_array_index(e->runs, struct umi_run, e->runs->len - 1);
		uint64_t lend = l->addr + l->npages * UM_PAGE_SIZE;
		uint64_t lrend;
		uint32_t lid = uffd_of(e, l->addr, &lrend);
		if (lend == page && l->kind == kind && lid == id && page < lrend &&
		    (id || range_of(e->ranges, e->nranges, l->addr) ==
				   range_of(e->ranges, e->nranges, page))) {
			l->npages++;
			if (kind == UMI_RUN_DATA)
				l->crc = hash; /* chained: umi_page_hash(prev, page) */
			return;
		}
	}
	struct umi_run r = {.addr = page, .npages = 1, .kind = kind, .uffd_id = id,
			    .offset = kind == UMI_RUN_DATA ? e->pages_off - UM_PAGE_SIZE : 0,
			    .crc = kind == UMI_RUN_DATA ? hash : 0};
	g_array_append_val(e->runs, r);
}



static void log_page(struct epoch_out *e, uint64_t page)
{
	if (e->tp->log)
		fprintf(e->tp->log, "%u 0x%" PRIx64 " 1\n", e->epoch, page);
}

/* Read the queued pages and record them. */
static int flush_batch(struct epoch_out *e, char *err, size_t errlen)
{
	if (!e->n)
		return 0;
	struct iovec l[BATCH], r[BATCH];
	for (uint32_t i = 0; i < e->n; i++) {
		l[i] = (struct iovec){e->buf + i * UM_PAGE_SIZE, UM_PAGE_SIZE};
		r[i] = (struct iovec){(void *)(uintptr_t)e->addr[i], UM_PAGE_SIZE};
	}
	ssize_t got = process_vm_readv(e->tp->pid, l, e->n, r, e->n, 0);
	uint32_t ok_pages = got > 0 ? (uint32_t)(got / UM_PAGE_SIZE) : 0;
	for (uint32_t i = 0; i < e->n; i++) {
		uint64_t page = e->addr[i];
		uint64_t before = chain_get(e->tp, page);
		if (i >= ok_pages) { /* unmapped since the cut: gone */
			struct iovec l1 = l[i], r1 = r[i];
			if (process_vm_readv(e->tp->pid, &l1, 1, &r1, 1, 0) != UM_PAGE_SIZE) {
				if (before) {
					add_run(e, page, UMI_RUN_ABSENT, 0);
					chain_set(e->tp, page, 0);
					e->s->absent++;
					e->s->changed++;
					log_page(e, page);
				}
				continue;
			}
		}
		const uint8_t *data = e->buf + i * UM_PAGE_SIZE;
		if (image_page_is_zero((const uint64_t *)data)) {
			add_run(e, page, UMI_RUN_ZERO, 0);
			chain_set(e->tp, page, TP_PRESENT | TP_ZERO);
			e->s->zero++;
			if (before && !(before & TP_ZERO)) { /* was data: a change */
				e->s->changed++;
				log_page(e, page);
			}
			continue;
		}
		if (image_write_all(e->pages_fd, data, UM_PAGE_SIZE) < 0) {
			snprintf(err, errlen, "writing %s: %s", UMI_PAGES_FILE, strerror(errno));
			return -1;
		}
		e->pages_off += UM_PAGE_SIZE;
		uint32_t h = umi_page_hash(0, data, UM_PAGE_SIZE);
		/* A DATA run's crc chains page hashes: extend the last run's. */
		uint32_t chained = h;
		if (e->runs->len) {
			struct umi_run *last = &g_array_index(e->runs, struct umi_run, e->runs->len - 1);
			if (last->kind == UMI_RUN_DATA &&
			    last->addr + last->npages * UM_PAGE_SIZE == page)
				chained = umi_page_hash(last->crc, data, UM_PAGE_SIZE);
		}
		size_t before_len = e->runs->len;
		add_run(e, page, UMI_RUN_DATA, chained);
		if (e->runs->len != before_len) /* started a new run: its own chain */
			g_array_index(e->runs, struct umi_run, e->runs->len - 1).crc =
				umi_page_hash(0, data, UM_PAGE_SIZE);
		chain_set(e->tp, page, TP_PRESENT | h);
		e->s->data++;
		e->s->changed++;
		log_page(e, page);
	}
	e->n = 0;
	return 0;
}

/* One candidate page: present now (pm) or not. */
static int consider(struct epoch_out *e, uint64_t page, uint64_t pm, char *err, size_t errlen)
{
	bool present = pf_pm_holds_page(pm);
	if (!present) {
		if (chain_get(e->tp, page)) {
			/* Runs go in address order: the lower pages queued first. */
			if (flush_batch(e, err, errlen) < 0)
				return -1;
			add_run(e, page, UMI_RUN_ABSENT, 0);
			chain_set(e->tp, page, 0);
			e->s->absent++;
			e->s->changed++;
			log_page(e, page);
		}
		return 0;
	}
	e->addr[e->n++] = page;
	return e->n == BATCH ? flush_batch(e, err, errlen) : 0;
}

/* Walk every tracked page once, in address order. */
static int walk(struct epoch_out *e, bool frozen, const struct uctl_track_run *runs,
		uint64_t nruns, char *err, size_t errlen)
{
	uint64_t ri = 0;
	static uint64_t ent[512];
	for (uint32_t k = 0; k < e->nranges; k++) {
		const struct uctl_track_range *r = &e->ranges[k];
		bool whole = (r->flags & UCTL_TR_NEW) || r->mode == UCTL_TM_ALL;
		for (uint64_t a = r->start; a < r->end;) {
			uint64_t n = (r->end - a) / UM_PAGE_SIZE;
			if (n > 512)
				n = 512;
			if (pf_pagemap_read(e->tp->pagemap, a, n, ent, err, errlen) < 0)
				return -1;
			for (uint64_t i = 0; i < n; i++) {
				uint64_t page = a + i * UM_PAGE_SIZE;
				while (ri < nruns &&
				       runs[ri].start + runs[ri].npages * UM_PAGE_SIZE <= page)
					ri++;
				bool reported = ri < nruns && runs[ri].start <= page;
				bool present = pf_pm_holds_page(ent[i]);
				bool in_chain = chain_get(e->tp, page) != 0;
				bool cand = whole || reported || present != in_chain ||
					    (frozen && present && !(ent[i] >> PM_BIT_UFFD_WP & 1));
				if (cand && consider(e, page, ent[i], err, errlen) < 0)
					return -1;
			}
			a += n * UM_PAGE_SIZE;
		}
	}
	return flush_batch(e, err, errlen);
}

static void to_tracked(const struct uctl_track_range *r, struct umi_tracked *t)
{
	memset(t, 0, sizeof(*t));
	t->start = r->start;
	t->end = r->end;
	t->prot = r->prot;
	t->kind = r->kind;
	t->mode = r->mode;
	t->flags = (r->flags & UCTL_TR_NEW) ? UMI_TR_NEW : 0;
	memcpy(t->name, r->name, sizeof(t->name) - 1);
}

static int write_state(struct epoch_out *e, const char *edir, bool frozen, const void *state,
		       size_t state_len, const char *comm, char *err, size_t errlen)
{
	struct umi_tracked *tr = g_new0(struct umi_tracked, e->nranges ? e->nranges : 1);
	for (uint32_t i = 0; i < e->nranges; i++)
		to_tracked(&e->ranges[i], &tr[i]);
	struct umi_epoch ep = {.epoch = e->epoch, .nranges = e->nranges,
			       .chain_id = e->tp->chain_id,
			       .parent_created_ns = e->tp->parent_created_ns,
			       .flags = frozen ? UMI_EPOCH_FROZEN : 0};
	struct umi_process proc = {.pid = e->tp->pid, .flags = UMI_PROC_WITH_MEMORY};
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/exe", e->tp->pid);
	ssize_t n = readlink(path, proc.exe, sizeof(proc.exe) - 1);
	if (n > 0)
		proc.exe[n] = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t created = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (created <= e->tp->parent_created_ns)
		created = e->tp->parent_created_ns + 1;
	size_t size = umi_state_file_size2(state_len, e->runs->len, 1, &ep);
	void *buf = g_malloc(size);
	size_t len = umi_write_state_file2(buf, size, e->tp->pid, comm, created, state, state_len,
					   (struct umi_run *)e->runs->data, e->runs->len, &proc,
					   &ep, tr);
	int rc = len ? image_write_file(edir, UMI_STATE_FILE, buf, len, err, errlen) : -1;
	if (!len)
		snprintf(err, errlen, "laying out the epoch image failed");
	g_free(buf);
	g_free(tr);
	if (rc == 0)
		e->tp->parent_created_ns = created;
	return rc;
}

int track_pages_epoch(struct track_pages *tp, uint32_t epoch, bool frozen,
		      const struct uctl_track_rep *rep, const struct uctl_track_range *ranges,
		      const struct uctl_track_run *runs, const void *state, size_t state_len,
		      const char *comm, struct track_epoch_stats *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	char *edir = g_strdup_printf("%s/epoch-%04u", tp->dir, epoch);
	char *tmp_pages = g_strdup_printf("%s/%s.tmp", edir, UMI_PAGES_FILE);
	char *pages = g_strdup_printf("%s/%s", edir, UMI_PAGES_FILE);
	struct epoch_out e = {.tp = tp, .epoch = epoch, .pages_fd = -1, .ranges = ranges,
			      .nranges = rep->nranges, .s = s};
	int rc = -1;
	e.runs = g_array_new(FALSE, FALSE, sizeof(struct umi_run));
	e.buf = g_malloc(BATCH * UM_PAGE_SIZE);
	char e2[300];
	if (um_deserialize(&e.st, state, state_len, e2, sizeof(e2)) < 0) {
		snprintf(err, errlen, "bad state from the shim: %s", e2);
		um_state_init(&e.st, tp->pid);
		goto out;
	}
	if (mkdir(edir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", edir, strerror(errno));
		goto out;
	}
	e.pages_fd = open(tmp_pages, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (e.pages_fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp_pages, strerror(errno));
		goto out;
	}
	drop_stale(tp, ranges, rep->nranges);
	if (walk(&e, frozen, runs, rep->nruns, err, errlen) < 0)
		goto out;
	if (fsync(e.pages_fd) < 0 || close(e.pages_fd) < 0) {
		e.pages_fd = -1;
		snprintf(err, errlen, "%s: %s", tmp_pages, strerror(errno));
		goto out;
	}
	e.pages_fd = -1;
	if (rename(tmp_pages, pages) < 0) {
		snprintf(err, errlen, "%s: %s", pages, strerror(errno));
		goto out;
	}
	rc = write_state(&e, edir, frozen, state, state_len, comm, err, errlen);
	if (tp->log)
		fflush(tp->log);
out:
	if (e.pages_fd >= 0)
		close(e.pages_fd);
	um_state_free(&e.st);
	g_array_free(e.runs, TRUE);
	g_free(e.buf);
	g_free(edir);
	g_free(tmp_pages);
	g_free(pages);
	return rc;
}

int track_pages_verify(struct track_pages *tp, const struct uctl_track_range *ranges,
		       uint32_t nranges, char *err, size_t errlen)
{
	uint64_t bad = 0, present = 0, first = 0;
	static uint64_t ent[512];
	uint8_t *buf = g_malloc(UM_PAGE_SIZE);
	for (uint32_t k = 0; k < nranges; k++) {
		for (uint64_t a = ranges[k].start; a < ranges[k].end;) {
			uint64_t n = (ranges[k].end - a) / UM_PAGE_SIZE;
			if (n > 512)
				n = 512;
			if (pf_pagemap_read(tp->pagemap, a, n, ent, err, errlen) < 0) {
				g_free(buf);
				return -1;
			}
			for (uint64_t i = 0; i < n; i++) {
				uint64_t page = a + i * UM_PAGE_SIZE, want = chain_get(tp, page), have = 0;
				if (pf_pm_holds_page(ent[i])) {
					struct iovec l = {buf, UM_PAGE_SIZE}, r = {(void *)(uintptr_t)page,
										   UM_PAGE_SIZE};
					if (process_vm_readv(tp->pid, &l, 1, &r, 1, 0) == UM_PAGE_SIZE) {
						present++;
						have = image_page_is_zero((const uint64_t *)buf)
							       ? TP_PRESENT | TP_ZERO
							       : TP_PRESENT | umi_page_hash(0, buf, UM_PAGE_SIZE);
					}
				}
				if (have != want && !bad++)
					first = page;
			}
			a += n * UM_PAGE_SIZE;
		}
	}
	g_free(buf);
	tp->verified_pages = present;
	if (bad) {
		snprintf(err, errlen, "%" PRIu64 " pages differ from the chain (first at 0x%" PRIx64 ")",
			 bad, first);
		return -1;
	}
	return 0;
}
