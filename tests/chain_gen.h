/* chain_gen.h - a synthetic incremental image chain for the chain tests
 * (tests/chain_format_test.c, tests/image_tool.c "chain"), written with the
 * model's writer (umi_write_state_file2).  Header only, model only.
 *
 * Tracked ranges (at 0x7e0000000000, free in a fresh process):
 *   R0 anon rw- 16 pages   R1 anon r-- 8 pages   R2 anon rw- 4 pages
 *   R3 heap rw- 4 pages (a relaunch skips it)
 * With a uffd (cg_opts.with_uffd): uffd 1 registers R0's last two pages
 * (runs there carry uffd_id 1) and G, 4 pages at +0x400000 that no tracked
 * range covers (saved whole in every epoch).
 *
 * Epochs: 0 the base, all NEW; 1 dirty pages, an ABSENT page, a zero page;
 * 2 R2 gone (not in the range list), more dirty and ABSENT pages; 3 R2
 * re-created NEW with other contents.  cg_expect[] is the flattened result.
 *
 * A DATA page of epoch e holds 512 words w[i] = (0xE0 + e) << 56 | (addr + 8i):
 * cg_page_tag() tells which epoch wrote a page. */
#ifndef UFFDSHIM_CHAIN_GEN_H
#define UFFDSHIM_CHAIN_GEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "uffd_compat.h"
#include "um_image.h"

#define CG_BASE 0x7e0000000000ULL
#define CG_PID 4242
#define CG_CHAIN_ID 0x5eed0fc4a1dULL
#define CG_EPOCHS 4
#define CG_G 4 /* index of the registered-only range */

static const struct cg_range {
	uint64_t start;
	uint32_t npages, prot, kind;
	const char *name;
} cg_ranges[] = {
	{CG_BASE, 16, PROT_READ | PROT_WRITE, UMI_TK_ANON, "[anon:r0]"},
	{CG_BASE + 0x100000, 8, PROT_READ, UMI_TK_ANON, ""},
	{CG_BASE + 0x200000, 4, PROT_READ | PROT_WRITE, UMI_TK_ANON, ""},
	{CG_BASE + 0x300000, 4, PROT_READ | PROT_WRITE, UMI_TK_HEAP, "[heap]"},
	{CG_BASE + 0x400000, 4, PROT_READ | PROT_WRITE, 0, "G (registered only)"},
};
#define CG_NRANGES 4 /* tracked: cg_ranges[0..3] */

/* Which tracked ranges each epoch lists, and which of them are NEW. */
static const unsigned cg_present[CG_EPOCHS] = {0xf, 0xf, 0xb, 0xf};
static const unsigned cg_new[CG_EPOCHS] = {0xf, 0x0, 0x0, 0x4};

struct cg_run {
	int epoch, range, page, npages, kind, uffd; /* uffd: needs with_uffd */
};
#define D UMI_RUN_DATA
#define Z UMI_RUN_ZERO
#define A UMI_RUN_ABSENT
static const struct cg_run cg_runs[] = {
	{0, 0, 0, 10, D, 0}, {0, 0, 10, 2, Z, 0}, {0, 0, 14, 1, D, 1}, {0, 1, 0, 8, D, 0},
	{0, 2, 0, 4, D, 0}, {0, 3, 0, 2, D, 0}, {0, CG_G, 0, 2, D, 1},
	{1, 0, 2, 2, D, 0}, {1, 0, 5, 1, A, 0}, {1, 0, 10, 1, D, 0}, {1, 0, 12, 1, D, 0},
	{1, 0, 15, 1, D, 1}, {1, 2, 1, 1, Z, 0}, {1, 3, 0, 1, D, 0}, {1, CG_G, 0, 1, D, 1},
	{1, CG_G, 2, 1, D, 1},
	{2, 0, 3, 2, D, 0}, {2, 0, 12, 1, A, 0}, {2, CG_G, 2, 1, D, 1},
	{3, 0, 0, 1, Z, 0}, {3, 0, 9, 1, A, 0}, {3, 2, 0, 2, D, 0}, {3, CG_G, 2, 1, D, 1},
	{3, CG_G, 3, 1, Z, 1},
};
#define CG_NRUNS (sizeof(cg_runs) / sizeof(cg_runs[0]))

/* The flattened chain: per page, 'D' + the epoch that wrote it, 'Z', or
 * 'A' (absent, not in the image); uffd = the run's uffd_id (with_uffd). */
struct cg_page {
	int range, page;
	char kind;
	int epoch, uffd;
};
static const struct cg_page cg_expect[] = {
	{0, 0, 'Z', 0, 0}, {0, 1, 'D', 0, 0}, {0, 2, 'D', 1, 0}, {0, 3, 'D', 2, 0},
	{0, 4, 'D', 2, 0}, {0, 5, 'A', 0, 0}, {0, 6, 'D', 0, 0}, {0, 7, 'D', 0, 0},
	{0, 8, 'D', 0, 0}, {0, 9, 'A', 0, 0}, {0, 10, 'D', 1, 0}, {0, 11, 'Z', 0, 0},
	{0, 12, 'A', 0, 0}, {0, 13, 'A', 0, 0}, {0, 14, 'D', 0, 1}, {0, 15, 'D', 1, 1},
	{1, 0, 'D', 0, 0}, {1, 1, 'D', 0, 0}, {1, 2, 'D', 0, 0}, {1, 3, 'D', 0, 0},
	{1, 4, 'D', 0, 0}, {1, 5, 'D', 0, 0}, {1, 6, 'D', 0, 0}, {1, 7, 'D', 0, 0},
	{2, 0, 'D', 3, 0}, {2, 1, 'D', 3, 0}, {2, 2, 'A', 0, 0}, {2, 3, 'A', 0, 0},
	{3, 0, 'D', 1, 0}, {3, 1, 'D', 0, 0}, {3, 2, 'A', 0, 0}, {3, 3, 'A', 0, 0},
	{CG_G, 0, 'A', 0, 1}, {CG_G, 1, 'A', 0, 1}, {CG_G, 2, 'D', 3, 1}, {CG_G, 3, 'Z', 0, 1},
};
#define CG_NEXPECT (sizeof(cg_expect) / sizeof(cg_expect[0]))

/* Defects to build into the chain (each -1 / 0 for none). */
struct cg_opts {
	int with_uffd;
	int nepochs;             /* 0 = CG_EPOCHS */
	int other_chain_epoch;   /* this epoch gets another chain_id */
	int bad_parent_epoch;    /* this epoch's parent_created_ns is wrong */
	int outside_run_epoch;   /* this epoch has a run with no uffd outside tracked */
	int e0_not_new;          /* epoch 0's range 1 is not marked NEW */
};
static const struct cg_opts cg_default = {0, 0, -1, -1, -1, 0};

static inline uint64_t cg_addr(int range, int page)
{
	return cg_ranges[range].start + (uint64_t)page * UM_PAGE_SIZE;
}

static inline void cg_fill_page(uint8_t *p, uint64_t addr, int epoch)
{
	for (int i = 0; i < 512; i++) {
		uint64_t w = ((uint64_t)(0xE0 + epoch) << 56) | (addr + 8 * (uint64_t)i);
		memcpy(p + 8 * i, &w, 8);
	}
}

/* The epoch whose pattern page p (at addr) holds, -1 if all zero, -2 if
 * neither. */
static inline int cg_page_tag(const uint8_t *p, uint64_t addr)
{
	uint64_t w0;
	memcpy(&w0, p, 8);
	if (w0 == 0) {
		for (int i = 0; i < 4096; i++)
			if (p[i])
				return -2;
		return -1;
	}
	int e = (int)(w0 >> 56) - 0xE0;
	uint8_t want[4096];
	if (e < 0 || e > 15)
		return -2;
	cg_fill_page(want, addr, e);
	return memcmp(want, p, sizeof(want)) ? -2 : e;
}

/* The state blob: no uffd, or uffd 1 with R0's last two pages and G. */
static inline void *cg_state(int with_uffd, size_t *len)
{
	struct um_state st;
	um_state_init(&st, CG_PID);
	if (with_uffd) {
		struct um_uffd *u = um_uffd_new(&st, 77, UM_ORIGIN_SYSCALL, O_CLOEXEC, CG_PID);
		um_fd_add(u, 9, true);
		um_op_api(u, 0, 0, UFFD_COMPAT_ALL_FEATURES, 0);
		uint64_t s = cg_addr(0, 14), e = cg_addr(0, 16);
		struct um_mapping m = {.start = s, .end = e, .prot = 3, .backing = UM_BACKING_ANON,
				       .pagesize = 4096};
		um_register(u, s, e, UFFDIO_REGISTER_MODE_MISSING, 0, &m, 1);
		m.start = cg_addr(CG_G, 0);
		m.end = cg_addr(CG_G, 4);
		um_register(u, m.start, m.end, UFFDIO_REGISTER_MODE_MISSING, 0, &m, 1);
	}
	*len = um_serialize_size(&st);
	void *blob = malloc(*len);
	*len = um_serialize(&st, blob, *len);
	um_state_free(&st);
	return blob;
}

static inline int cg_write(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[4096 + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	int rc = f && (len == 0 || fwrite(buf, 1, len, f) == len) ? 0 : -1;
	if (f && fclose(f) != 0)
		rc = -1;
	return rc;
}

/* Write epoch e of the chain into DIR/epoch-%04d.  0 or -1. */
static inline int cg_write_epoch(const char *dir, int e, const struct cg_opts *o)
{
	char ed[4096];
	if ((size_t)snprintf(ed, sizeof(ed), "%s/epoch-%04d", dir, e) >= sizeof(ed))
		return -1;
	if (mkdir(ed, 0700) < 0)
		return -1;
	struct umi_tracked tr[CG_NRANGES];
	struct umi_epoch ep = {.epoch = (uint32_t)e, .chain_id = CG_CHAIN_ID,
			       .parent_created_ns = e ? 1000 + (uint64_t)e - 1 : 0,
			       .flags = UMI_EPOCH_FROZEN};
	if (e == o->other_chain_epoch)
		ep.chain_id ^= 1;
	if (e == o->bad_parent_epoch)
		ep.parent_created_ns += 7;
	for (int k = 0; k < CG_NRANGES; k++) {
		if (!(cg_present[e] & (1u << k)))
			continue;
		struct umi_tracked *t = &tr[ep.nranges++];
		memset(t, 0, sizeof(*t));
		t->start = cg_ranges[k].start;
		t->end = cg_addr(k, (int)cg_ranges[k].npages);
		t->prot = cg_ranges[k].prot;
		t->kind = cg_ranges[k].kind;
		t->mode = UMI_TM_ASYNC;
		t->flags = (cg_new[e] & (1u << k)) && !(e == 0 && k == 1 && o->e0_not_new) ? UMI_TR_NEW
											 : 0;
		snprintf(t->name, sizeof(t->name), "%s", cg_ranges[k].name);
	}
	struct umi_run runs[CG_NRUNS + 1];
	size_t nruns = 0, npages = 0;
	uint8_t *pages = malloc(64 * 4096);
	for (size_t i = 0; i < CG_NRUNS; i++) {
		const struct cg_run *c = &cg_runs[i];
		if (c->epoch != e || (c->uffd && !o->with_uffd))
			continue;
		struct umi_run *r = &runs[nruns++];
		memset(r, 0, sizeof(*r));
		r->addr = cg_addr(c->range, c->page);
		r->npages = (uint64_t)c->npages;
		r->kind = (uint32_t)c->kind;
		r->uffd_id = c->uffd ? 1 : 0;
		if (c->kind != D)
			continue;
		r->offset = npages * 4096;
		for (int p = 0; p < c->npages; p++)
			cg_fill_page(pages + (npages + (size_t)p) * 4096, cg_addr(c->range, c->page + p), e);
		r->crc = umi_run_hash(pages + npages * 4096, r->npages);
		npages += (size_t)c->npages;
	}
	if (e == o->outside_run_epoch)
		runs[nruns++] = (struct umi_run){.addr = CG_BASE + 0x800000, .npages = 1,
						 .kind = UMI_RUN_ZERO};
	size_t slen;
	void *blob = cg_state(o->with_uffd, &slen);
	struct umi_process proc = {.pid = CG_PID, .flags = UMI_PROC_WITH_MEMORY, .exe = "/cg"};
	size_t need = umi_state_file_size2(slen, nruns, 1, &ep);
	void *buf = malloc(need);
	size_t len = umi_write_state_file2(buf, need, CG_PID, "cg", 1000 + (uint64_t)e, blob, slen,
					   runs, nruns, &proc, &ep, tr);
	int rc = len && cg_write(ed, UMI_PAGES_FILE, pages, npages * 4096) == 0 &&
			 cg_write(ed, UMI_STATE_FILE, buf, len) == 0 ? 0 : -1;
	free(buf);
	free(blob);
	free(pages);
	return rc;
}

/* The whole chain into DIR (created). */
static inline int cg_write_chain(const char *dir, const struct cg_opts *o)
{
	if (mkdir(dir, 0700) < 0)
		return -1;
	int n = o->nepochs ? o->nepochs : CG_EPOCHS;
	for (int e = 0; e < n; e++)
		if (cg_write_epoch(dir, e, o) < 0)
			return -1;
	return 0;
}
#undef D
#undef Z
#undef A

#endif
