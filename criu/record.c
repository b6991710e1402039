/* record.c - the per-file record uffdshim-file-<id>.img: everything the
 * restore needs to recreate one userfaultfd (see ucr.h for the layout:
 * header, then holders, ranges, write-protected runs, present runs, each an
 * array of fixed-size little-endian records). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ucr.h"
#include "um_image.h"

_Static_assert(sizeof(struct ucr_rec_hdr) == 96, "record header layout");
_Static_assert(sizeof(struct ucr_holder) == 16, "holder layout");
_Static_assert(sizeof(struct ucr_range) == 32, "range layout");
_Static_assert(sizeof(struct ucr_run) == 16, "run layout");

static size_t body_len(const struct ucr_rec_hdr *h)
{
	return (size_t)h->nholders * sizeof(struct ucr_holder) +
	       (size_t)h->nranges * sizeof(struct ucr_range) +
	       (size_t)(h->nwp + (uint64_t)h->npresent) * sizeof(struct ucr_run);
}

int ucr_rec_encode(const struct ucr_rec *r, void **bufp, size_t *lenp)
{
	struct ucr_rec_hdr h = r->h;
	memset(h.magic, 0, sizeof(h.magic));
	memcpy(h.magic, UCR_REC_MAGIC, sizeof(UCR_REC_MAGIC));
	h.version = UCR_REC_VERSION;
	h.hdr_size = sizeof(h);
	h.body_len = body_len(&h);
	size_t len = sizeof(h) + h.body_len;
	char *buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	char *p = buf + sizeof(h);
#define PUT(arr, n, type)                                   \
	do {                                                \
		if (n)                                      \
			memcpy(p, arr, (size_t)(n) * sizeof(type)); \
		p += (size_t)(n) * sizeof(type);            \
	} while (0)
	PUT(r->holders, h.nholders, struct ucr_holder);
	PUT(r->ranges, h.nranges, struct ucr_range);
	PUT(r->wp, h.nwp, struct ucr_run);
	PUT(r->present, h.npresent, struct ucr_run);
#undef PUT
	h.body_crc = umi_crc32(0, buf + sizeof(h), h.body_len);
	h.hdr_crc = 0;
	h.hdr_crc = umi_crc32(0, &h, sizeof(h));
	memcpy(buf, &h, sizeof(h));
	*bufp = buf;
	*lenp = len;
	return 0;
}

void ucr_rec_free(struct ucr_rec *r)
{
	free(r->holders);
	free(r->ranges);
	free(r->wp);
	free(r->present);
	memset(r, 0, sizeof(*r));
}

#define FAIL(...)                                      \
	do {                                           \
		snprintf(err, errlen, __VA_ARGS__);    \
		ucr_rec_free(r);                       \
		return -1;                             \
	} while (0)

static int check_runs(const struct ucr_run *v, uint32_t n, const char *what, char *err,
		      size_t errlen)
{
	for (uint32_t i = 0; i < n; i++) {
		if ((v[i].start & (UM_PAGE_SIZE - 1)) || !v[i].npages || v[i].npages > (1ULL << 36) ||
		    v[i].start + v[i].npages * UM_PAGE_SIZE < v[i].start) {
			snprintf(err, errlen, "%s run %u is malformed (%#llx, %llu pages)", what, i,
				 (unsigned long long)v[i].start, (unsigned long long)v[i].npages);
			return -1;
		}
		if (i && v[i].start < v[i - 1].start + v[i - 1].npages * UM_PAGE_SIZE) {
			snprintf(err, errlen, "%s runs %u and %u overlap or are out of order", what,
				 i - 1, i);
			return -1;
		}
	}
	return 0;
}

int ucr_rec_decode(const void *buf, size_t len, struct ucr_rec *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	struct ucr_rec_hdr h;
	if (len < sizeof(h))
		FAIL("%zu bytes is too short for a record header (%zu)", len, sizeof(h));
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, UCR_REC_MAGIC, sizeof(UCR_REC_MAGIC)) != 0)
		FAIL("not a uffdshim CRIU record (bad magic)");
	uint32_t crc = h.hdr_crc;
	h.hdr_crc = 0;
	if (umi_crc32(0, &h, sizeof(h)) != crc)
		FAIL("record header is corrupt (checksum mismatch)");
	h.hdr_crc = crc;
	if (h.version != UCR_REC_VERSION || h.hdr_size != sizeof(h))
		FAIL("record version %u (header %u bytes) is not the version %u this plugin reads",
		     h.version, h.hdr_size, UCR_REC_VERSION);
	if (h.nholders > 4096 || h.nranges > (1u << 24) || h.nwp > (1u << 28) ||
	    h.npresent > (1u << 28))
		FAIL("record counts are implausible (%u holders, %u ranges, %u+%u runs)",
		     h.nholders, h.nranges, h.nwp, h.npresent);
	if (h.body_len != body_len(&h) || len - sizeof(h) != h.body_len)
		FAIL("record body is %zu bytes, its header says %llu (counts need %zu): truncated?",
		     len - sizeof(h), (unsigned long long)h.body_len, body_len(&h));
	const char *p = (const char *)buf + sizeof(h);
	if (umi_crc32(0, p, h.body_len) != h.body_crc)
		FAIL("record body is corrupt (checksum mismatch)");
	if (h.source != UCR_SRC_SHIM && h.source != UCR_SRC_KERNEL)
		FAIL("record has unknown source %u", h.source);
	if (h.mm_pid <= 0)
		FAIL("record names no process for the uffd's memory (mm pid %d)", h.mm_pid);
	r->h = h;
#define GET(arr, n, type)                                                   \
	do {                                                                \
		size_t sz = (size_t)(n) * sizeof(type);                     \
		arr = malloc(sz ? sz : 1);                                  \
		if (!arr)                                                   \
			FAIL("out of memory");                              \
		if (sz)                                                     \
			memcpy(arr, p, sz);                                 \
		p += sz;                                                    \
	} while (0)
	GET(r->holders, h.nholders, struct ucr_holder);
	GET(r->ranges, h.nranges, struct ucr_range);
	GET(r->wp, h.nwp, struct ucr_run);
	GET(r->present, h.npresent, struct ucr_run);
#undef GET
	for (uint32_t i = 0; i < h.nholders; i++)
		if (r->holders[i].pid <= 0 || r->holders[i].fd < 0)
			FAIL("holder %u (pid %d, fd %d) is malformed", i, r->holders[i].pid,
			     r->holders[i].fd);
	for (uint32_t i = 0; i < h.nranges; i++) {
		const struct ucr_range *g = &r->ranges[i];
		if (g->start >= g->end || (g->start | g->end) & (UM_PAGE_SIZE - 1) || !g->modes ||
		    (i && g->start < r->ranges[i - 1].end))
			FAIL("range %u [%#llx, %#llx) modes %#llx is malformed or out of order", i,
			     (unsigned long long)g->start, (unsigned long long)g->end,
			     (unsigned long long)g->modes);
	}
	char e2[200];
	if (check_runs(r->wp, h.nwp, "write-protect", e2, sizeof(e2)) < 0 ||
	    check_runs(r->present, h.npresent, "present", e2, sizeof(e2)) < 0)
		FAIL("%s", e2);
	return 0;
}

int ucr_rec_write(int dirfd, const struct ucr_rec *r)
{
	void *buf;
	size_t len;
	int rc = ucr_rec_encode(r, &buf, &len);
	if (rc < 0)
		return rc;
	char name[64];
	snprintf(name, sizeof(name), UCR_REC_NAME_FMT, r->h.id);
	rc = ucr_write_file(dirfd, name, buf, len);
	free(buf);
	return rc;
}

int ucr_rec_read(int dirfd, uint32_t id, struct ucr_rec *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	char name[64];
	snprintf(name, sizeof(name), UCR_REC_NAME_FMT, id);
	void *buf;
	size_t len;
	int rc = ucr_read_file(dirfd, name, &buf, &len);
	if (rc == -ENOENT)
		return rc;
	if (rc < 0) {
		snprintf(err, errlen, "cannot read %s: %s", name, strerror(-rc));
		return rc;
	}
	char e2[300];
	rc = ucr_rec_decode(buf, len, r, e2, sizeof(e2));
	free(buf);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", name, e2);
		return -EINVAL;
	}
	if (r->h.id != id) {
		snprintf(err, errlen, "%s holds the record of file id %u", name, r->h.id);
		ucr_rec_free(r);
		return -EINVAL;
	}
	return 0;
}
