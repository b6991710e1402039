/* chain.c - find, load and validate an incremental image chain. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"

void chain_epoch_path(const char *dir, unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/epoch-%04u", dir, i);
}

bool chain_is_chain_dir(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;
	chain_epoch_path(dir, 0, p, sizeof(p));
	return lstat(p, &st) == 0;
}

/* "epoch-NNNN" (exactly four digits): its number, else -1. */
static int epoch_number(const char *name)
{
	if (strncmp(name, "epoch-", 6) != 0 || strlen(name) != 10)
		return -1;
	int n = 0;
	for (int i = 6; i < 10; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -1;
		n = n * 10 + (name[i] - '0');
	}
	return n;
}

/* How many epochs DIR holds (0 .. n-1, no gap), or -1 with err. */
static int count_epochs(const char *dir, char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	if (!d) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	bool *seen = calloc(CHAIN_MAX_EPOCHS, sizeof(*seen));
	int max = -1;
	struct dirent *de;
	while (seen && (de = readdir(d))) {
		int k = epoch_number(de->d_name);
		if (k >= 0) {
			seen[k] = true;
			max = k > max ? k : max;
		}
	}
	closedir(d);
	int rc = max + 1;
	for (int k = 0; seen && k <= max; k++)
		if (!seen[k]) {
			snprintf(err, errlen, "%s: epoch-%04d is missing (the chain has epochs up to "
				 "epoch-%04d): the chain is broken there", dir, k, max);
			rc = -1;
			break;
		}
	if (rc == 0)
		snprintf(err, errlen, "%s: no epoch-0000: not an image chain", dir), rc = -1;
	if (!seen)
		snprintf(err, errlen, "out of memory"), rc = -1;
	free(seen);
	return rc;
}

/* The page data of every DATA run against its checksum. */
static int verify_data(const struct image_dir *d, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t cap = 0;
	int rc = 0;
	for (size_t i = 0; i < d->img.nruns && rc == 0; i++) {
		const struct umi_run *r = &d->img.runs[i];
		if (r->kind != UMI_RUN_DATA)
			continue;
		size_t len = r->npages * UM_PAGE_SIZE;
		if (len > cap) {
			free(buf);
			buf = malloc(len);
			cap = buf ? len : 0;
		}
		if (!buf || d->pages_fd < 0 ||
		    pread(d->pages_fd, buf, len, (off_t)r->offset) != (ssize_t)len) {
			snprintf(err, errlen, "the page data of run %zu is unreadable", i);
			rc = -1;
		} else if (umi_run_hash(buf, r->npages) != r->crc) {
			snprintf(err, errlen, "the page data of run %zu is corrupt (checksum mismatch)",
				 i);
			rc = -1;
		}
	}
	free(buf);
	return rc;
}

/* One epoch's image on its own: an epoch section that says it is epoch i. */
static int check_epoch_image(const struct image_dir *d, unsigned i, char *err, size_t errlen)
{
	const struct umi_image *img = &d->img;
	if (!img->epoch) {
		snprintf(err, errlen, "the image has no epoch section: it is not part of a chain");
		return -1;
	}
	if (img->epoch->flags & UMI_EPOCH_FLAT) {
		snprintf(err, errlen, "the image is a flattened chain, not an epoch of one");
		return -1;
	}
	if (img->epoch->epoch != i) {
		snprintf(err, errlen, "the image says it is epoch %u, its directory says %u",
			 img->epoch->epoch, i);
		return -1;
	}
	for (uint32_t k = 0; i == 0 && k < img->epoch->nranges; k++)
		if (!(img->tracked[k].flags & UMI_TR_NEW)) {
			snprintf(err, errlen, "epoch 0 (the base) has tracked range %u [%#llx, %#llx) "
				 "not marked NEW", k, (unsigned long long)img->tracked[k].start,
				 (unsigned long long)img->tracked[k].end);
			return -1;
		}
	if (umi_check_runs(img, &d->st, err, errlen) < 0)
		return -1;
	return verify_data(d, err, errlen);
}

/* The link from epoch i-1 (prev) to epoch i (cur). */
static int check_link(const struct umi_image *prev, const struct umi_image *cur, unsigned i,
		      char *err, size_t errlen)
{
	if (cur->epoch->chain_id != prev->epoch->chain_id) {
		snprintf(err, errlen, "chain_id %#llx differs from epoch-0000's %#llx: epoch-%04u "
			 "belongs to another chain", (unsigned long long)cur->epoch->chain_id,
			 (unsigned long long)prev->epoch->chain_id, i);
		return -1;
	}
	if (cur->epoch->parent_created_ns != prev->hdr.created_ns) {
		snprintf(err, errlen, "broken link epoch-%04u -> epoch-%04u: parent_created_ns %llu "
			 "is not epoch-%04u's created_ns %llu (replaced or re-recorded epoch?)",
			 i - 1, i, (unsigned long long)cur->epoch->parent_created_ns, i - 1,
			 (unsigned long long)prev->hdr.created_ns);
		return -1;
	}
	if (cur->hdr.pid != prev->hdr.pid || cur->hdr.page_size != prev->hdr.page_size ||
	    cur->hdr.arch != prev->hdr.arch) {
		snprintf(err, errlen, "pid/arch/page size %d/%u/%u differ from epoch-%04u's "
			 "%d/%u/%u", cur->hdr.pid, cur->hdr.arch, cur->hdr.page_size, i - 1,
			 prev->hdr.pid, prev->hdr.arch, prev->hdr.page_size);
		return -1;
	}
	return 0;
}

int chain_load(const char *dir, struct chain *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	int n = count_epochs(dir, err, errlen);
	if (n < 0)
		return -1;
	c->dir = strdup(dir);
	c->ep = calloc((size_t)n, sizeof(*c->ep));
	if (!c->dir || !c->ep) {
		snprintf(err, errlen, "out of memory");
		chain_free(c);
		return -1;
	}
	char path[PATH_MAX], e[700];
	for (unsigned i = 0; i < (unsigned)n; i++) {
		chain_epoch_path(dir, i, path, sizeof(path));
		int rc = image_dir_load(path, &c->ep[i], e, sizeof(e));
		if (rc == 0)
			c->n = i + 1;
		if (rc == 0)
			rc = check_epoch_image(&c->ep[i], i, e, sizeof(e));
		if (rc == 0 && i)
			rc = check_link(&c->ep[i - 1].img, &c->ep[i].img, i, e, sizeof(e));
		if (rc < 0) {
			snprintf(err, errlen, "epoch %u (%s): %s", i, path, e);
			chain_free(c);
			return -1;
		}
	}
	return 0;
}

void chain_free(struct chain *c)
{
	for (unsigned i = 0; i < c->n; i++)
		image_dir_free(&c->ep[i]);
	free(c->ep);
	free(c->dir);
	memset(c, 0, sizeof(*c));
}

uint64_t chain_new_id(void)
{
	uint64_t id = 0;
	while (!id) {
		if (getrandom(&id, sizeof(id), 0) != sizeof(id)) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			id = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^
			     ((uint64_t)getpid() << 48);
		}
	}
	return id;
}
