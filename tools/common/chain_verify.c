/* chain_verify.c - check a flattened image against its chain, page by page:
 * the flatten rule computed again the slow, obvious way (one hash table
 * entry per page), then every page of the image compared with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "chain.h"

struct page {
	uint32_t kind;           /* UMI_RUN_DATA or ZERO */
	uint32_t src;            /* epoch */
	uint64_t offset;         /* DATA: in that epoch's pages file */
};

static bool in_tracked(const struct umi_image *img, uint64_t a, bool new_only)
{
	for (uint32_t k = 0; k < img->epoch->nranges; k++)
		if (a >= img->tracked[k].start && a < img->tracked[k].end)
			return !new_only || (img->tracked[k].flags & UMI_TR_NEW);
	return false;
}

/* The uffd whose registered range holds a, or 0. */
static uint32_t reg_owner(const struct um_state *st, uint64_t a)
{
	for (uint32_t i = 0; i < st->nuffds; i++)
		if (um_range_find(st->uffds[i], a))
			return st->uffds[i]->id;
	return 0;
}

static void apply(GHashTable *pages, const struct image_dir *d, uint32_t i)
{
	GHashTableIter it;
	gpointer key, val;
	g_hash_table_iter_init(&it, pages);
	while (g_hash_table_iter_next(&it, &key, &val)) {
		uint64_t a = *(uint64_t *)key;
		bool tr = in_tracked(&d->img, a, false), reg = reg_owner(&d->st, a) != 0;
		if ((!tr && !reg) || in_tracked(&d->img, a, true) || (reg && !tr))
			g_hash_table_iter_remove(&it);
	}
	for (size_t k = 0; k < d->img.nruns; k++) {
		const struct umi_run *r = &d->img.runs[k];
		for (uint64_t p = 0; p < r->npages; p++) {
			uint64_t a = r->addr + p * UM_PAGE_SIZE;
			if (r->kind == UMI_RUN_ABSENT) {
				g_hash_table_remove(pages, &a);
				continue;
			}
			uint64_t *kp = g_new(uint64_t, 1);
			struct page *pg = g_new(struct page, 1);
			*kp = a;
			*pg = (struct page){.kind = r->kind, .src = i,
					    .offset = r->offset + p * UM_PAGE_SIZE};
			g_hash_table_replace(pages, kp, pg);
		}
	}
}

static bool same_bytes(int fd1, uint64_t off1, int fd2, uint64_t off2)
{
	char a[UM_PAGE_SIZE], b[UM_PAGE_SIZE];
	return pread(fd1, a, sizeof(a), (off_t)off1) == (ssize_t)sizeof(a) &&
	       pread(fd2, b, sizeof(b), (off_t)off2) == (ssize_t)sizeof(b) &&
	       memcmp(a, b, sizeof(a)) == 0;
}

/* Every page of the flattened image f against the expected pages. */
static int compare(const struct chain *c, GHashTable *pages, const struct image_dir *f,
		   char *err, size_t errlen)
{
	const struct image_dir *last = &c->ep[c->n - 1];
	uint64_t n = 0;
	for (size_t k = 0; k < f->img.nruns; k++) {
		const struct umi_run *r = &f->img.runs[k];
		for (uint64_t p = 0; p < r->npages; p++, n++) {
			uint64_t a = r->addr + p * UM_PAGE_SIZE;
			const struct page *pg = g_hash_table_lookup(pages, &a);
			const char *bad = NULL;
			if (!pg)
				bad = "is in the image but absent in the chain";
			else if (pg->kind != r->kind)
				bad = "has another kind than in the chain";
			else if (r->uffd_id != reg_owner(&last->st, a))
				bad = "has the wrong uffd_id";
			else if (r->kind == UMI_RUN_DATA &&
				 !same_bytes(f->pages_fd, r->offset + p * UM_PAGE_SIZE,
					     c->ep[pg->src].pages_fd, pg->offset))
				bad = "differs from the chain's newest content";
			if (bad) {
				snprintf(err, errlen, "page %#llx (run %zu) %s",
					 (unsigned long long)a, k, bad);
				return -1;
			}
		}
	}
	if (n != g_hash_table_size(pages)) {
		snprintf(err, errlen, "the image has %llu pages, the chain %u",
			 (unsigned long long)n, g_hash_table_size(pages));
		return -1;
	}
	return 0;
}

/* Each DATA run's checksum over its bytes. */
static int check_hashes(const struct image_dir *f, char *err, size_t errlen)
{
	for (size_t k = 0; k < f->img.nruns; k++) {
		const struct umi_run *r = &f->img.runs[k];
		if (r->kind != UMI_RUN_DATA)
			continue;
		size_t len = r->npages * UM_PAGE_SIZE;
		char *b = g_malloc(len);
		bool good = pread(f->pages_fd, b, len, (off_t)r->offset) == (ssize_t)len &&
			    umi_run_hash(b, r->npages) == r->crc;
		g_free(b);
		if (!good) {
			snprintf(err, errlen, "run %zu: checksum mismatch", k);
			return -1;
		}
	}
	return 0;
}

static int check_header(const struct chain *c, const struct image_dir *f, char *err,
			size_t errlen)
{
	const struct umi_image *last = &c->ep[c->n - 1].img, *img = &f->img;
	if (!img->epoch || !(img->epoch->flags & UMI_EPOCH_FLAT) ||
	    img->epoch->epoch != last->epoch->epoch ||
	    img->epoch->chain_id != last->epoch->chain_id ||
	    img->epoch->nranges != last->epoch->nranges || img->hdr.pid != last->hdr.pid ||
	    img->state_len != last->state_len ||
	    memcmp(img->state, last->state, last->state_len) != 0) {
		snprintf(err, errlen, "the flattened image's header, epoch section or state "
			 "differ from the last epoch's");
		return -1;
	}
	for (uint32_t k = 0; k < img->epoch->nranges; k++)
		if (img->tracked[k].start != last->tracked[k].start ||
		    img->tracked[k].end != last->tracked[k].end ||
		    !(img->tracked[k].flags & UMI_TR_NEW)) {
			snprintf(err, errlen, "tracked range %u differs from the last epoch's", k);
			return -1;
		}
	return 0;
}

int chain_verify_flat(const struct chain *c, const char *flat_dir, char *err, size_t errlen)
{
	struct image_dir f;
	char e[700];
	if (image_dir_load(flat_dir, &f, e, sizeof(e)) < 0) {
		snprintf(err, errlen, "%s", e);
		return -1;
	}
	GHashTable *pages = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
	for (uint32_t i = 0; i < c->n; i++)
		apply(pages, &c->ep[i], i);
	int rc = check_header(c, &f, err, errlen);
	if (rc == 0)
		rc = compare(c, pages, &f, err, errlen);
	if (rc == 0)
		rc = check_hashes(&f, err, errlen);
	if (rc == 0 && umi_check_runs(&f.img, &f.st, e, sizeof(e)) < 0) {
		snprintf(err, errlen, "%s", e);
		rc = -1;
	}
	g_hash_table_destroy(pages);
	image_dir_free(&f);
	return rc;
}
