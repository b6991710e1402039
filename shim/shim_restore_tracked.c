/* shim_restore_tracked.c - relaunch restore of the tracked mappings of an
 * image with an epoch section (a flattened chain, or a chain's base): the
 * private anonymous memory outside registered ranges, recreated at its
 * address with its protection and the saved page contents.
 *
 * Called by shim_restore_from_env after its own checks and before anything
 * is mapped.  It checks first (the image may be restored: a flattened chain
 * or epoch 0; its runs lie where they should; no address it needs is taken),
 * then maps and fills, and finally leaves in img only the runs the rest of
 * shim_restore.c handles (those of registered ranges: uffd_id != 0).
 * Tracked heap, stack, file and other ranges are skipped: the new process has
 * its own (uffd-replay says so).  Zero and absent pages stay unpopulated. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"
#include "um_image.h"

/* ---- where the tracked memory goes ---- */

/* The first registered range (of any uffd) overlapping [s, e), or NULL. */
static const struct um_range *first_registered(const struct um_state *st, uint64_t s,
					       uint64_t e)
{
	const struct um_range *best = NULL;
	for (uint32_t i = 0; i < st->nuffds; i++)
		for (uint32_t k = 0; k < st->uffds[i]->nranges; k++) {
			const struct um_range *r = &st->uffds[i]->ranges[k];
			if (r->start < e && r->end > s && (!best || r->start < best->start))
				best = r;
		}
	return best;
}

typedef void (*hole_fn)(const struct umi_tracked *t, uint64_t s, uint64_t e, void *ctx);

/* fn on each part of tracked range t that no registered range covers. */
static void for_each_hole(const struct um_state *st, const struct umi_tracked *t, hole_fn fn,
			  void *ctx)
{
	for (uint64_t cur = t->start; cur < t->end;) {
		const struct um_range *r = first_registered(st, cur, t->end);
		if (!r) {
			fn(t, cur, t->end, ctx);
			break;
		}
		if (r->start > cur)
			fn(t, cur, r->start, ctx);
		cur = r->end;
	}
}

static void check_hole(const struct umi_tracked *t, uint64_t s, uint64_t e, void *ctx)
{
	struct um_mapping hit[2];
	if (shim_maps_read(s, e, hit, 2))
		SHIM_REFUSE(shim_msg_str(&m_, "tracked range "); shim_msg_hex(&m_, s); shim_msg_str(&m_, "-"); shim_msg_hex(&m_, e);
			 shim_msg_str(&m_, " is already taken in the new process (by ");
			 shim_msg_str(&m_, hit[0].name[0] ? hit[0].name : "an anonymous mapping");
			 shim_msg_str(&m_, " at "); shim_msg_hex(&m_, hit[0].start); shim_msg_str(&m_, ")"));
}

struct fill_ctx {
	const struct umi_image *img;
	int pages_fd;
};

/* Any DATA run with no uffd inside [s, e)? */
static bool has_data(const struct umi_image *img, uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < img->nruns; i++)
		if (!img->runs[i].uffd_id && img->runs[i].kind == UMI_RUN_DATA &&
		    img->runs[i].addr >= s && img->runs[i].addr < e)
			return true;
	return false;
}

static void map_and_fill(const struct umi_tracked *t, uint64_t s, uint64_t e, void *ctx)
{
	const struct fill_ctx *f = ctx;
	bool data = has_data(f->img, s, e);
	int prot = (int)t->prot | (data ? PROT_WRITE : 0);
	long p = RAW6(SYS_mmap, s, e - s, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		      -1, 0);
	if (p != (long)s)
		SHIM_REFUSE(shim_msg_str(&m_, "cannot map tracked range "); shim_msg_hex(&m_, s); shim_msg_str(&m_, "-");
			 shim_msg_hex(&m_, e); shim_msg_str(&m_, " (errno "); shim_msg_dec(&m_, (uint64_t)-p);
			 shim_msg_str(&m_, ")"));
	for (size_t i = 0; data && i < f->img->nruns; i++) {
		const struct umi_run *r = &f->img->runs[i];
		if (r->uffd_id || r->kind != UMI_RUN_DATA || r->addr < s || r->addr >= e)
			continue;
		long len = (long)(r->npages * UM_PAGE_SIZE);
		if (f->pages_fd < 0 || RAW4(SYS_pread64, f->pages_fd, r->addr, len, r->offset) != len)
			SHIM_REFUSE(shim_msg_str(&m_, "cannot read the pages of run "); shim_msg_dec(&m_, i));
		if (umi_run_hash((const void *)r->addr, r->npages) != r->crc)
			SHIM_REFUSE(shim_msg_str(&m_, "page data of run "); shim_msg_dec(&m_, i);
				 shim_msg_str(&m_, " is corrupt (checksum mismatch)"));
	}
	if (prot != (int)t->prot)
		RAW3(SYS_mprotect, s, e - s, t->prot);
}

/* ---- the checks ---- */

static void check_restorable(const struct umi_image *img, const struct um_state *st)
{
	const struct umi_epoch *e = img->epoch;
	if (!(e->flags & UMI_EPOCH_FLAT) && e->epoch)
		SHIM_REFUSE(shim_msg_str(&m_, "the image is epoch "); shim_msg_dec(&m_, e->epoch);
			 shim_msg_str(&m_, " of an image chain, which holds only what changed since the "
				    "epoch before: restore the chain directory"));
	struct shim_msg m = {.n = 0};
	if (umi_check_runs(img, st, m.b, sizeof(m.b) - 2) < 0) {
		m.n = strlen(m.b);
		shim_refuse(&m);
	}
	for (size_t i = 0; i < img->nruns; i++) {
		const struct umi_run *r = &img->runs[i];
		uint64_t end = r->addr + r->npages * UM_PAGE_SIZE;
		if (!r->uffd_id && first_registered(st, r->addr, end))
			SHIM_REFUSE(shim_msg_str(&m_, "memory run "); shim_msg_dec(&m_, i);
				 shim_msg_str(&m_, " has no uffd but lies in a registered range at ");
				 shim_msg_hex(&m_, r->addr));
	}
}

/* Keep in img only the runs of registered ranges (the image buffer is the
 * caller's, writable, and already verified: compacted in place). */
static void keep_registered_runs(struct umi_image *img)
{
	struct umi_run *runs = (struct umi_run *)img->runs;
	size_t n = 0;
	for (size_t i = 0; i < img->nruns; i++)
		if (runs[i].uffd_id && runs[i].kind != UMI_RUN_ABSENT)
			runs[n++] = runs[i];
	img->nruns = n;
}

void shim_restore_tracked(struct umi_image *img, const struct um_state *st, int pages_fd)
{
	if (!img->epoch)
		return;
	check_restorable(img, st);
	for (uint32_t k = 0; k < img->epoch->nranges; k++)
		if (img->tracked[k].kind == UMI_TK_ANON)
			for_each_hole(st, &img->tracked[k], check_hole, NULL);
	struct fill_ctx f = {.img = img, .pages_fd = pages_fd};
	for (uint32_t k = 0; k < img->epoch->nranges; k++)
		if (img->tracked[k].kind == UMI_TK_ANON)
			for_each_hole(st, &img->tracked[k], map_and_fill, &f);
	keep_registered_runs(img);
}
