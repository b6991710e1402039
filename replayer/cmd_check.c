/* cmd_check.c - uffd-replay check DIR: validate an image directory or an
 * image chain and say what is wrong with it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "chain.h"
#include "replay.h"
#include "uffd_compat.h"

struct page_counts {
	uint64_t data, zero, absent;
};

static struct page_counts count_pages(const struct umi_image *img)
{
	struct page_counts c = {0, 0, 0};
	for (size_t i = 0; i < img->nruns; i++) {
		uint64_t n = img->runs[i].npages;
		if (img->runs[i].kind == UMI_RUN_DATA)
			c.data += n;
		else if (img->runs[i].kind == UMI_RUN_ZERO)
			c.zero += n;
		else
			c.absent += n;
	}
	return c;
}

/* The page data of every DATA run against its checksum; problems counted. */
static int check_page_data(const char *dir, const struct image_dir *d)
{
	int bad = 0;
	for (size_t i = 0; i < d->img.nruns; i++) {
		const struct umi_run *r = &d->img.runs[i];
		if (r->kind != UMI_RUN_DATA)
			continue;
		size_t len = r->npages * UM_PAGE_SIZE;
		char *buf = malloc(len);
		if (!buf || pread(d->pages_fd, buf, len, (off_t)r->offset) != (ssize_t)len ||
		    umi_run_hash(buf, r->npages) != r->crc) {
			fprintf(stderr, "uffd-replay check: %s: page data of run %zu is %s\n", dir, i,
				buf ? "corrupt (checksum mismatch)" : "unreadable");
			bad++;
		}
		free(buf);
	}
	return bad;
}

/* Features this kernel does not offer: a restore would be refused. */
static int check_features(const char *dir, const struct um_state *st)
{
	uint64_t offered = 0;
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = {.api = UFFD_API};
	if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) == 0)
		offered = api.features;
	if (fd >= 0)
		close(fd);
	int bad = 0;
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (offered && (u->features_requested & ~offered)) {
			fprintf(stderr, "uffd-replay check: %s: uffd %u needs features %#llx that this "
				"kernel does not offer (it offers %#llx)\n", dir, u->id,
				(unsigned long long)(u->features_requested & ~offered),
				(unsigned long long)offered);
			bad++;
		}
	}
	return bad;
}

static void print_epoch_note(const struct umi_image *img)
{
	const struct umi_epoch *e = img->epoch;
	if (!e)
		return;
	if (e->flags & UMI_EPOCH_FLAT)
		printf("note: a flattened chain (up to epoch %u), %u tracked ranges\n", e->epoch,
		       e->nranges);
	else if (e->epoch)
		printf("note: epoch %u of an image chain: it cannot be restored alone (restore the "
		       "chain directory)\n", e->epoch);
	print_skipped_ranges(stdout, img);
}

static int check_image(const char *dir)
{
	struct image_dir d;
	char err[1024];
	if (image_dir_load(dir, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay check: %s\n", err);
		return 1;
	}
	int bad = 0;
	if (umi_check_runs(&d.img, &d.st, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay check: %s: %s\n", dir, err);
		bad++;
	}
	bad += check_page_data(dir, &d);
	bad += check_features(dir, &d.st);
	uint64_t ranges = 0, wp = 0;
	for (uint32_t i = 0; i < d.st.nuffds; i++) {
		ranges += d.st.uffds[i]->nranges;
		wp += um_wp_count(&d.st.uffds[i]->wp);
		if (d.st.uffds[i]->mm_pid != d.img.hdr.pid)
			printf("note: uffd %u serves pid %d's memory: a relaunch restore of this image "
			       "will refuse it\n", d.st.uffds[i]->id, d.st.uffds[i]->mm_pid);
	}
	print_epoch_note(&d.img);
	struct page_counts pc = count_pages(&d.img);
	if (!bad)
		printf("%s: OK: image format %u of pid %d, %u uffds, %llu ranges, %llu write-protected "
		       "pages, %llu data + %llu zero pages\n", dir, d.img.hdr.version, d.img.hdr.pid,
		       d.st.nuffds, (unsigned long long)ranges, (unsigned long long)wp,
		       (unsigned long long)pc.data, (unsigned long long)pc.zero);
	image_dir_free(&d);
	return bad ? 1 : 0;
}

static void print_chain_epoch(const struct image_dir *d, unsigned i)
{
	const struct umi_image *img = &d->img;
	struct page_counts pc = count_pages(img);
	uint32_t nnew = 0;
	for (uint32_t k = 0; k < img->epoch->nranges; k++)
		nnew += !!(img->tracked[k].flags & UMI_TR_NEW);
	printf("  epoch %u: %llu data + %llu zero + %llu absent pages in %zu runs, %u tracked "
	       "ranges (%u new), %u uffds%s\n", i, (unsigned long long)pc.data,
	       (unsigned long long)pc.zero, (unsigned long long)pc.absent, img->nruns,
	       img->epoch->nranges, nnew, d->st.nuffds,
	       (img->epoch->flags & UMI_EPOCH_FROZEN) ? ", frozen" : "");
}

static int check_chain(const char *dir)
{
	struct chain c;
	char err[2048];
	if (chain_load(dir, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay check: %s\n", err);
		return 1;
	}
	const struct image_dir *last = &c.ep[c.n - 1];
	int bad = check_features(dir, &last->st);
	if (!bad) {
		printf("%s: OK: image chain %#llx of pid %d, %u epochs\n", dir,
		       (unsigned long long)last->img.epoch->chain_id, last->img.hdr.pid, c.n);
		for (unsigned i = 0; i < c.n; i++)
			print_chain_epoch(&c.ep[i], i);
		print_skipped_ranges(stdout, &last->img);
	}
	chain_free(&c);
	return bad ? 1 : 0;
}

int cmd_check(const char *dir)
{
	return chain_is_chain_dir(dir) ? check_chain(dir) : check_image(dir);
}
