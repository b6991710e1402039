/* um_image.c - write and validate the checkpoint image's state file. */
#include <stdio.h>
#include <string.h>

#include "um_image.h"

/* CRC-32 (IEEE 802.3, reflected, as zlib), 16 bytes per step ("slice by
 * 16"): the same values as the byte-wise form, several times faster. */
static uint32_t crc_tab[16][256];
static int crc_ready; /* set (release) once crc_tab is complete */

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int j = 1; j < 16; j++)
			crc_tab[j][i] = (crc_tab[j - 1][i] >> 8) ^ crc_tab[0][crc_tab[j - 1][i] & 0xff];
	__atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

uint32_t umi_crc32(uint32_t crc, const void *buf, size_t len)
{
	if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
		crc_init(); /* threads racing here write the same values */
	const uint8_t *p = buf;
	crc = ~crc;
	for (; len && ((uintptr_t)p & 7); len--)
		crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	for (; len >= 16; len -= 16, p += 16) {
		uint32_t w[4];
		memcpy(w, p, 16);
		w[0] ^= crc; /* little endian (x86_64 only, as the image says) */
		crc = crc_tab[15][w[0] & 0xff] ^ crc_tab[14][(w[0] >> 8) & 0xff] ^
		      crc_tab[13][(w[0] >> 16) & 0xff] ^ crc_tab[12][w[0] >> 24] ^
		      crc_tab[11][w[1] & 0xff] ^ crc_tab[10][(w[1] >> 8) & 0xff] ^
		      crc_tab[9][(w[1] >> 16) & 0xff] ^ crc_tab[8][w[1] >> 24] ^
		      crc_tab[7][w[2] & 0xff] ^ crc_tab[6][(w[2] >> 8) & 0xff] ^
		      crc_tab[5][(w[2] >> 16) & 0xff] ^ crc_tab[4][w[2] >> 24] ^
		      crc_tab[3][w[3] & 0xff] ^ crc_tab[2][(w[3] >> 8) & 0xff] ^
		      crc_tab[1][(w[3] >> 16) & 0xff] ^ crc_tab[0][w[3] >> 24];
	}
	while (len--)
		crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* Four independent multiply-rotate lanes (the xxh64 round), folded to 32
 * bits: several times faster than CRC-32, for the bulk page data. */
uint32_t umi_page_hash(uint32_t seed, const void *buf, size_t len)
{
	const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL;
	uint64_t a = seed + P1 + P2, b = seed + P2, c = seed, d = seed - P1;
	const unsigned char *p = buf;
	size_t i = 0;
	for (; i + 32 <= len; i += 32) {
		uint64_t w[4];
		memcpy(w, p + i, sizeof(w));
		a = rotl64(a + w[0] * P2, 31) * P1;
		b = rotl64(b + w[1] * P2, 31) * P1;
		c = rotl64(c + w[2] * P2, 31) * P1;
		d = rotl64(d + w[3] * P2, 31) * P1;
	}
	uint64_t h = rotl64(a, 1) + rotl64(b, 7) + rotl64(c, 12) + rotl64(d, 18) + len;
	for (; i < len; i++)
		h = rotl64(h ^ (p[i] * P1), 11) * P2;
	h ^= h >> 33;
	h *= P2;
	h ^= h >> 29;
	h *= P1;
	h ^= h >> 32;
	return (uint32_t)h;
}

uint32_t umi_run_hash(const void *buf, uint64_t npages)
{
	uint32_t h = 0;
	for (uint64_t i = 0; i < npages; i++)
		h = umi_page_hash(h, (const unsigned char *)buf + i * UM_PAGE_SIZE, UM_PAGE_SIZE);
	return h;
}

static size_t pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static size_t epoch_len(const struct umi_epoch *epoch)
{
	return sizeof(*epoch) + (size_t)epoch->nranges * sizeof(struct umi_tracked);
}

size_t umi_state_file_size2(size_t state_len, size_t nruns, int with_process,
			    const struct umi_epoch *epoch)
{
	size_t n = sizeof(struct umi_header);
	n += sizeof(struct umi_section) + pad8(state_len);
	n += sizeof(struct umi_section) + pad8(nruns * sizeof(struct umi_run));
	if (with_process)
		n += sizeof(struct umi_section) + pad8(sizeof(struct umi_process));
	if (epoch)
		n += sizeof(struct umi_section) + pad8(epoch_len(epoch));
	return n;
}

size_t umi_state_file_size(size_t state_len, size_t nruns, int with_process)
{
	return umi_state_file_size2(state_len, nruns, with_process, NULL);
}

static uint8_t *put_section(uint8_t *p, uint32_t type, uint32_t flags, const void *payload,
			    size_t len)
{
	struct umi_section s = {.type = type, .flags = flags, .length = len,
				.crc = umi_crc32(0, payload, len)};
	memcpy(p, &s, sizeof(s));
	p += sizeof(s);
	if (len)
		memcpy(p, payload, len);
	memset(p + len, 0, pad8(len) - len);
	return p + pad8(len);
}

/* The epoch section's payload: the epoch record, then the ranges. */
static uint8_t *put_epoch(uint8_t *p, const struct umi_epoch *epoch,
			  const struct umi_tracked *tracked)
{
	size_t len = epoch_len(epoch), tl = len - sizeof(*epoch);
	uint32_t crc = umi_crc32(umi_crc32(0, epoch, sizeof(*epoch)), tracked, tl);
	struct umi_section s = {.type = UMI_SEC_EPOCH, .length = len, .crc = crc};
	memcpy(p, &s, sizeof(s));
	p += sizeof(s);
	memcpy(p, epoch, sizeof(*epoch));
	if (tl)
		memcpy(p + sizeof(*epoch), tracked, tl);
	memset(p + len, 0, pad8(len) - len);
	return p + pad8(len);
}

size_t umi_write_state_file2(void *buf, size_t cap, int32_t pid, const char *comm,
			     uint64_t created_ns, const void *state, size_t state_len,
			     const struct umi_run *runs, size_t nruns,
			     const struct umi_process *proc, const struct umi_epoch *epoch,
			     const struct umi_tracked *tracked)
{
	size_t need = umi_state_file_size2(state_len, nruns, proc != NULL, epoch);
	if (cap < need || (epoch && epoch->nranges && !tracked))
		return 0;
	memset(buf, 0, need);
	struct umi_header h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, UMI_MAGIC, 8);
	h.version = UMI_VERSION;
	h.header_size = sizeof(h);
	h.arch = UMI_ARCH_X86_64;
	h.page_size = UM_PAGE_SIZE;
	h.nsections = 2 + (proc != NULL) + (epoch != NULL);
	h.created_ns = created_ns;
	h.pid = pid;
	if (comm)
		strncpy(h.comm, comm, sizeof(h.comm) - 1);
	h.header_crc = umi_crc32(0, &h, sizeof(h));
	uint8_t *p = buf;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	p = put_section(p, UMI_SEC_STATE, 0, state, state_len);
	p = put_section(p, UMI_SEC_MEMORY, 0, runs, nruns * sizeof(*runs));
	if (epoch)
		p = put_epoch(p, epoch, tracked);
	if (proc)
		p = put_section(p, UMI_SEC_PROCESS, UMI_SEC_OPTIONAL, proc, sizeof(*proc));
	return (size_t)(p - (uint8_t *)buf);
}

size_t umi_write_state_file(void *buf, size_t cap, int32_t pid, const char *comm,
			    uint64_t created_ns, const void *state, size_t state_len,
			    const struct umi_run *runs, size_t nruns,
			    const struct umi_process *proc)
{
	return umi_write_state_file2(buf, cap, pid, comm, created_ns, state, state_len, runs,
				     nruns, proc, NULL, NULL);
}

#define FAIL(...)                                       \
	do {                                            \
		if (err)                                \
			snprintf(err, errlen, __VA_ARGS__); \
		return -1;                              \
	} while (0)

static int parse_header(const void *buf, size_t len, struct umi_header *out, char *err,
			size_t errlen)
{
	if (len < sizeof(struct umi_header))
		FAIL("%zu bytes is too short for an image header (%zu bytes): truncated or "
		     "not an image", len, sizeof(struct umi_header));
	struct umi_header h;
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, UMI_MAGIC, 8) != 0)
		FAIL("not a uffdshim image (bad magic)");
	uint32_t crc = h.header_crc;
	h.header_crc = 0;
	if (umi_crc32(0, &h, sizeof(h)) != crc)
		FAIL("image header is corrupt (checksum mismatch)");
	h.header_crc = crc;
	if (h.version > UMI_VERSION)
		FAIL("image format version %u is newer than this build reads (%u)", h.version,
		     UMI_VERSION);
	if (h.version == 0 || h.header_size != sizeof(h))
		FAIL("image header: version %u / header size %u not understood", h.version,
		     h.header_size);
	if (h.arch != UMI_ARCH_X86_64)
		FAIL("image is for architecture %u, this machine is x86_64 (%u)", h.arch,
		     UMI_ARCH_X86_64);
	if (h.page_size != UM_PAGE_SIZE)
		FAIL("image page size %u differs from this machine's %llu", h.page_size,
		     (unsigned long long)UM_PAGE_SIZE);
	*out = h;
	return 0;
}

/* The epoch section's payload p (len bytes, checksum already verified). */
static int parse_epoch(const uint8_t *p, uint64_t len, struct umi_image *img, char *err,
		       size_t errlen)
{
	if (img->epoch)
		FAIL("image has two epoch sections");
	if (len < sizeof(struct umi_epoch))
		FAIL("epoch section of %llu bytes is shorter than its record (%zu)",
		     (unsigned long long)len, sizeof(struct umi_epoch));
	const struct umi_epoch *e = (const struct umi_epoch *)p;
	if (len != sizeof(*e) + (uint64_t)e->nranges * sizeof(struct umi_tracked))
		FAIL("epoch section length %llu does not match its %u tracked ranges",
		     (unsigned long long)len, e->nranges);
	if (e->flags & ~UMI_EPOCH_KNOWN)
		FAIL("epoch section has unknown flags %#x", e->flags & ~UMI_EPOCH_KNOWN);
	img->epoch = e;
	img->tracked = (const struct umi_tracked *)(p + sizeof(*e));
	return 0;
}

static int parse_sections(const uint8_t *p, const uint8_t *end, uint32_t nsections,
			  struct umi_image *img, char *err, size_t errlen)
{
	bool have_state = false, have_mem = false;
	for (uint32_t i = 0; i < nsections; i++) {
		struct umi_section s;
		if ((size_t)(end - p) < sizeof(s))
			FAIL("image truncated: section %u of %u is missing", i + 1, nsections);
		memcpy(&s, p, sizeof(s));
		p += sizeof(s);
		if (s.length > (uint64_t)(end - p))
			FAIL("image truncated: section %u (type %u) claims %llu bytes, %zu left",
			     i + 1, s.type, (unsigned long long)s.length, (size_t)(end - p));
		if (umi_crc32(0, p, s.length) != s.crc)
			FAIL("image section %u (type %u) is corrupt (checksum mismatch)", i + 1,
			     s.type);
		switch (s.type) {
		case UMI_SEC_STATE:
			img->state = p;
			img->state_len = s.length;
			have_state = true;
			break;
		case UMI_SEC_MEMORY:
			if (s.length % sizeof(struct umi_run))
				FAIL("memory section length %llu is not a whole number of runs",
				     (unsigned long long)s.length);
			img->runs = (const struct umi_run *)p;
			img->nruns = s.length / sizeof(struct umi_run);
			have_mem = true;
			break;
		case UMI_SEC_PROCESS:
			if (s.length == sizeof(struct umi_process))
				img->proc = (const struct umi_process *)p;
			break;
		case UMI_SEC_EPOCH:
			if (parse_epoch(p, s.length, img, err, errlen) < 0)
				return -1;
			break;
		default:
			if (!(s.flags & UMI_SEC_OPTIONAL))
				FAIL("image has a required section of unknown type %u (written by a "
				     "newer uffdshim?)", s.type);
		}
		p += pad8(s.length);
		if (p > end)
			p = end;
	}
	if (!have_state || !have_mem)
		FAIL("image lacks its %s section", have_state ? "memory" : "state");
	return 0;
}

static int check_tracked(const struct umi_image *img, char *err, size_t errlen)
{
	const struct umi_epoch *e = img->epoch;
	for (uint32_t i = 0; i < e->nranges; i++) {
		const struct umi_tracked *t = &img->tracked[i];
		if ((t->start | t->end) & (UM_PAGE_SIZE - 1) || t->start >= t->end)
			FAIL("tracked range %u [%#llx, %#llx) is malformed", i,
			     (unsigned long long)t->start, (unsigned long long)t->end);
		if (i && t->start < img->tracked[i - 1].end)
			FAIL("tracked ranges %u and %u overlap or are out of order", i - 1, i);
		if (t->kind < UMI_TK_ANON || t->kind > UMI_TK_OTHER)
			FAIL("tracked range %u has unknown kind %u", i, t->kind);
		if (t->mode < UMI_TM_ASYNC || t->mode > UMI_TM_ALL)
			FAIL("tracked range %u has unknown mode %u", i, t->mode);
		if (t->flags & ~UMI_TR_NEW)
			FAIL("tracked range %u has unknown flags %#x", i, t->flags & ~UMI_TR_NEW);
		if (!memchr(t->name, 0, sizeof(t->name)))
			FAIL("tracked range %u: name is not NUL-terminated", i);
		if ((e->flags & UMI_EPOCH_FLAT) && !(t->flags & UMI_TR_NEW))
			FAIL("flattened image: tracked range %u is not marked NEW", i);
	}
	return 0;
}

static int check_run(const struct umi_image *img, size_t i, uint64_t pages_size, char *err,
		     size_t errlen)
{
	const struct umi_run *r = &img->runs[i];
	if ((r->addr & (UM_PAGE_SIZE - 1)) || r->npages == 0 || r->npages > (1ULL << 40) ||
	    r->addr + r->npages * UM_PAGE_SIZE < r->addr)
		FAIL("memory run %zu is malformed (addr %#llx, %llu pages)", i,
		     (unsigned long long)r->addr, (unsigned long long)r->npages);
	if (r->kind != UMI_RUN_DATA && r->kind != UMI_RUN_ZERO && r->kind != UMI_RUN_ABSENT)
		FAIL("memory run %zu has unknown kind %u", i, r->kind);
	if (r->kind == UMI_RUN_ABSENT && !img->epoch)
		FAIL("memory run %zu is ABSENT (kind 3), which only an image with an epoch "
		     "section may hold", i);
	if (r->kind == UMI_RUN_DATA && pages_size != (uint64_t)-1 &&
	    (r->offset % UM_PAGE_SIZE || r->offset > pages_size ||
	     r->npages * UM_PAGE_SIZE > pages_size - r->offset))
		FAIL("memory run %zu points past the end of %s (offset %#llx, %llu pages, "
		     "file %llu bytes): the pages file is truncated", i, UMI_PAGES_FILE,
		     (unsigned long long)r->offset, (unsigned long long)r->npages,
		     (unsigned long long)pages_size);
	if (i && r->addr < img->runs[i - 1].addr + img->runs[i - 1].npages * UM_PAGE_SIZE)
		FAIL("memory runs %zu and %zu overlap or are out of order", i - 1, i);
	return 0;
}

/* Runs with uffd_id 0 each lie inside one tracked range (both lists are
 * sorted: one walk). */
static int check_untracked_runs(const struct umi_image *img, char *err, size_t errlen)
{
	uint32_t k = 0, n = img->epoch->nranges;
	for (size_t i = 0; i < img->nruns; i++) {
		const struct umi_run *r = &img->runs[i];
		if (r->uffd_id)
			continue;
		uint64_t end = r->addr + r->npages * UM_PAGE_SIZE;
		while (k < n && img->tracked[k].end <= r->addr)
			k++;
		if (k == n || r->addr < img->tracked[k].start || end > img->tracked[k].end)
			FAIL("memory run %zu [%#llx, %#llx) has no uffd and is not inside a tracked "
			     "range", i, (unsigned long long)r->addr, (unsigned long long)end);
	}
	return 0;
}

int umi_parse(const void *buf, size_t len, uint64_t pages_size, struct umi_image *img,
	      char *err, size_t errlen)
{
	memset(img, 0, sizeof(*img));
	if (parse_header(buf, len, &img->hdr, err, errlen) < 0)
		return -1;
	const uint8_t *p = (const uint8_t *)buf + sizeof(struct umi_header);
	if (parse_sections(p, (const uint8_t *)buf + len, img->hdr.nsections, img, err,
			   errlen) < 0)
		return -1;
	if (img->epoch && check_tracked(img, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < img->nruns; i++)
		if (check_run(img, i, pages_size, err, errlen) < 0)
			return -1;
	if (img->epoch && check_untracked_runs(img, err, errlen) < 0)
		return -1;
	return 0;
}

int umi_check_runs(const struct umi_image *img, const struct um_state *st, char *err,
		   size_t errlen)
{
	for (size_t i = 0; i < img->nruns; i++) {
		const struct umi_run *r = &img->runs[i];
		if (!r->uffd_id && img->epoch)
			continue; /* inside a tracked range: umi_parse checked it */
		const struct um_uffd *u = um_uffd_by_id(st, r->uffd_id);
		const struct um_range *rg = u ? um_range_find(u, r->addr) : NULL;
		uint64_t end = r->addr + r->npages * UM_PAGE_SIZE;
		if (!rg || end > rg->end)
			FAIL("memory run %zu [%#llx, %#llx) is not inside a registered range of "
			     "uffd %u", i, (unsigned long long)r->addr, (unsigned long long)end,
			     r->uffd_id);
	}
	return 0;
}
