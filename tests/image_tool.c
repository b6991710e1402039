/* image_tool.c - edit uffdshim checkpoint images for tests/replay_refuse.sh,
 * making every checksum right again, so that the edit is the one thing wrong
 * with the image (or, for a valid edit, the image stays valid).
 *
 *   image_tool info DIR                  one line about the first uffd:
 *                                        "fd=N features=0xF ranges=R start=0xS end=0xE"
 *   image_tool set DIR version N         header fields (header checksum fixed)
 *   image_tool set DIR arch N
 *   image_tool set DIR magic STRING
 *   image_tool set DIR features 0xF      UFFDIO_API features uffd 1 asks for
 *   image_tool set DIR range-addr 0xA    move range 0 of uffd 1 to address A,
 *                                        with its write-protected pages and
 *                                        memory runs
 *   image_tool chain DIR [uffd]          write the synthetic image chain of
 *                                        tests/chain_gen.h into DIR (with
 *                                        "uffd": with its uffd 1, fd 9)
 *   image_tool chain-expect [uffd]       what `probe` prints in a process
 *                                        restored from that chain
 *   image_tool probe                     (run restored) each page of the
 *                                        chain's ranges: "R0 p3 e2" (holds
 *                                        epoch 2's data), "none" (mapped,
 *                                        not populated, reads zero),
 *                                        "unmapped", "bad"; and each range's
 *                                        protection.  Maps nothing itself.
 * The state blob edits parse the image (um_image.c, um_serialize.c),
 * change the model and write the file again with umi_write_state_file().
 * Exit status: 0 done, 1 the image could not be read or edited, 2 usage.
 *
 * Without arguments it tests itself (TAP; make check runs it so): an image
 * built in memory goes through every edit and is parsed back. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_helpers.h"
#include "chain_gen.h"
#include "um_image.h"

/* ---- editing a state file held in memory ---- */

static int set_header(uint8_t *buf, size_t len, const char *field, const char *val, char *err,
		      size_t errlen)
{
	struct umi_header h;
	if (len < sizeof(h)) {
		snprintf(err, errlen, "state file too short for a header");
		return -1;
	}
	memcpy(&h, buf, sizeof(h));
	if (!strcmp(field, "version")) {
		h.version = (uint32_t)strtoul(val, NULL, 0);
	} else if (!strcmp(field, "arch")) {
		h.arch = (uint32_t)strtoul(val, NULL, 0);
	} else if (!strcmp(field, "magic")) {
		memset(h.magic, 0, sizeof(h.magic));
		memcpy(h.magic, val, strnlen(val, sizeof(h.magic)));
	} else {
		snprintf(err, errlen, "unknown header field %s", field);
		return -1;
	}
	h.header_crc = 0;
	h.header_crc = umi_crc32(0, &h, sizeof(h));
	memcpy(buf, &h, sizeof(h));
	return 0;
}

static int cmp_run(const void *a, const void *b)
{
	const struct umi_run *x = a, *y = b;
	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* Move range k of u to addr, with its WP bits and the memory runs in it. */
static int move_range(struct um_uffd *u, uint32_t k, uint64_t addr, struct umi_run *runs,
		      size_t nruns, char *err, size_t errlen)
{
	if (k >= u->nranges || addr % UM_PAGE_SIZE) {
		snprintf(err, errlen, "uffd %u has no range %u, or 0x%" PRIx64 " is not page aligned",
			 u->id, k, addr);
		return -1;
	}
	struct um_range *r = &u->ranges[k];
	uint64_t s = r->start, e = r->end, d = addr - s;
	uint64_t (*wp)[2] = calloc((e - s) / UM_PAGE_SIZE + 1, sizeof(*wp));
	size_t nwp = 0;
	uint64_t cur = s, rs, re;
	while (um_wp_next_run(&u->wp, &cur, e, &rs, &re)) {
		wp[nwp][0] = rs;
		wp[nwp++][1] = re;
	}
	um_wp_set(&u->wp, s, e, false);
	for (size_t i = 0; i < nwp; i++)
		um_wp_set(&u->wp, wp[i][0] + d, wp[i][1] + d, true);
	free(wp);
	r->start += d;
	r->end += d;
	r->map.start += d;
	r->map.end += d;
	/* keep the ranges sorted (insertion sort: a few ranges) */
	for (uint32_t i = 1; i < u->nranges; i++)
		for (uint32_t j = i; j > 0 && u->ranges[j].start < u->ranges[j - 1].start; j--) {
			struct um_range t = u->ranges[j];
			u->ranges[j] = u->ranges[j - 1];
			u->ranges[j - 1] = t;
		}
	for (uint32_t i = 1; i < u->nranges; i++)
		if (u->ranges[i].start < u->ranges[i - 1].end) {
			snprintf(err, errlen, "range moved to 0x%" PRIx64 " overlaps another", addr);
			return -1;
		}
	for (size_t i = 0; i < nruns; i++)
		if (runs[i].uffd_id == u->id && runs[i].addr >= s && runs[i].addr < e)
			runs[i].addr += d;
	qsort(runs, nruns, sizeof(*runs), cmp_run);
	return 0;
}

/* Parse, change uffd 1, write again.  Returns the new file (malloc) or NULL. */
static uint8_t *set_state(const uint8_t *buf, size_t len, const char *field, uint64_t val,
			  size_t *outlen, char *err, size_t errlen)
{
	struct umi_image img;
	struct um_state st;
	if (umi_parse(buf, len, (uint64_t)-1, &img, err, errlen) < 0 ||
	    um_deserialize(&st, img.state, img.state_len, err, errlen) < 0)
		return NULL;
	uint8_t *out = NULL;
	struct umi_run *runs = calloc(img.nruns + 1, sizeof(*runs));
	memcpy(runs, img.runs, img.nruns * sizeof(*runs));
	struct um_uffd *u = st.nuffds ? st.uffds[0] : NULL;
	int rc = -1;
	if (!u)
		snprintf(err, errlen, "the image has no uffd");
	else if (!strcmp(field, "features")) {
		u->features_requested = val;
		rc = 0;
	} else if (!strcmp(field, "range-addr")) {
		rc = move_range(u, 0, val, runs, img.nruns, err, errlen);
	} else {
		snprintf(err, errlen, "unknown field %s", field);
	}
	if (rc == 0) {
		size_t slen = um_serialize_size(&st);
		void *blob = malloc(slen);
		slen = um_serialize(&st, blob, slen);
		char comm[sizeof(img.hdr.comm) + 1] = "";
		memcpy(comm, img.hdr.comm, sizeof(img.hdr.comm));
		size_t need = umi_state_file_size(slen, img.nruns, img.proc != NULL);
		out = malloc(need);
		*outlen = umi_write_state_file(out, need, img.hdr.pid, comm, img.hdr.created_ns, blob,
					       slen, runs, img.nruns, img.proc);
		free(blob);
		if (!*outlen) {
			snprintf(err, errlen, "could not write the state file");
			free(out);
			out = NULL;
		}
	}
	free(runs);
	um_state_free(&st);
	return out;
}

/* ---- files ---- */

static uint8_t *load(const char *dir, size_t *len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, UMI_STATE_FILE);
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "image_tool: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
	*len = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
	fclose(f);
	return buf;
}

static int store(const char *dir, const uint8_t *buf, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, UMI_STATE_FILE);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "image_tool: writing %s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}

static int cmd_info(const char *dir)
{
	size_t len;
	uint8_t *buf = load(dir, &len);
	struct umi_image img;
	struct um_state st;
	char err[512];
	if (!buf)
		return 1;
	if (umi_parse(buf, len, (uint64_t)-1, &img, err, sizeof(err)) < 0 ||
	    um_deserialize(&st, img.state, img.state_len, err, sizeof(err)) < 0) {
		fprintf(stderr, "image_tool: %s: %s\n", dir, err);
		return 1;
	}
	if (!st.nuffds) {
		fprintf(stderr, "image_tool: %s: no uffd\n", dir);
		return 1;
	}
	const struct um_uffd *u = st.uffds[0];
	printf("fd=%d features=0x%" PRIx64 " ranges=%u start=0x%" PRIx64 " end=0x%" PRIx64 "\n",
	       u->nfds ? u->fds[0] : -1, u->features_requested, u->nranges,
	       u->nranges ? u->ranges[0].start : 0, u->nranges ? u->ranges[0].end : 0);
	um_state_free(&st);
	free(buf);
	return 0;
}

static int cmd_set(const char *dir, const char *field, const char *val)
{
	size_t len, outlen = 0;
	uint8_t *buf = load(dir, &len), *out = NULL;
	char err[512] = "";
	if (!buf)
		return 1;
	int rc;
	if (!strcmp(field, "version") || !strcmp(field, "arch") || !strcmp(field, "magic")) {
		rc = set_header(buf, len, field, val, err, sizeof(err));
		if (rc == 0)
			rc = store(dir, buf, len);
	} else {
		out = set_state(buf, len, field, strtoull(val, NULL, 0), &outlen, err, sizeof(err));
		rc = out ? store(dir, out, outlen) : -1;
	}
	if (rc < 0)
		fprintf(stderr, "image_tool: %s: %s\n", dir, err);
	free(buf);
	free(out);
	return rc ? 1 : 0;
}

/* ---- self test ---- */

#define T_BASE 0x7f0000000000ULL

static uint8_t *sample(size_t *len)
{
	struct um_state st;
	um_state_init(&st, 1234);
	struct um_uffd *u = um_uffd_new(&st, 99, UM_ORIGIN_SYSCALL, O_CLOEXEC, 1234);
	um_fd_add(u, 5, true);
	um_op_api(u, 0, UFFD_FEATURE_PAGEFAULT_FLAG_WP, UFFD_COMPAT_ALL_FEATURES, 0);
	struct um_mapping m = {.start = T_BASE, .end = T_BASE + (4 << 20), .prot = 3,
			       .backing = UM_BACKING_ANON, .pagesize = 4096};
	um_register(u, T_BASE, T_BASE + (4 << 20), UFFDIO_REGISTER_MODE_WP, 0, &m, 1);
	m.start = T_BASE + (8 << 20);
	m.end = m.start + (1 << 20);
	um_register(u, m.start, m.end, UFFDIO_REGISTER_MODE_WP, 0, &m, 1);
	um_wp_set(&u->wp, T_BASE + 0x1000, T_BASE + 0x3000, true);
	um_wp_set(&u->wp, T_BASE + (8 << 20), T_BASE + (8 << 20) + 0x1000, true);
	struct umi_run runs[3] = {
		{.addr = T_BASE, .npages = 2, .kind = UMI_RUN_DATA, .uffd_id = u->id},
		{.addr = T_BASE + 0x5000, .npages = 1, .kind = UMI_RUN_ZERO, .uffd_id = u->id},
		{.addr = T_BASE + (8 << 20), .npages = 1, .kind = UMI_RUN_DATA, .offset = 0x2000,
		 .uffd_id = u->id},
	};
	struct umi_process proc = {.pid = 1234, .flags = UMI_PROC_WITH_MEMORY, .exe = "/x"};
	size_t slen = um_serialize_size(&st);
	void *blob = malloc(slen);
	slen = um_serialize(&st, blob, slen);
	size_t need = umi_state_file_size(slen, 3, 1);
	uint8_t *buf = malloc(need);
	*len = umi_write_state_file(buf, need, 1234, "sample", 1, blob, slen, runs, 3, &proc);
	free(blob);
	um_state_free(&st);
	return buf;
}

/* Parse buf; 0 if valid, else -1 with the reason in err. */
static int parse(const uint8_t *buf, size_t len, struct um_state *st, struct umi_image *img,
		 char *err, size_t errlen)
{
	if (umi_parse(buf, len, (uint64_t)-1, img, err, errlen) < 0)
		return -1;
	return um_deserialize(st, img->state, img->state_len, err, errlen);
}

static void t_header(const char *field, const char *val, const char *want)
{
	size_t len;
	uint8_t *buf = sample(&len);
	char err[512] = "";
	struct um_state st;
	struct umi_image img;
	ok(set_header(buf, len, field, val, err, sizeof(err)) == 0, "set %s %s", field, val);
	int r = parse(buf, len, &st, &img, err, sizeof(err));
	ok(r < 0 && strstr(err, want), "%s %s: refused with \"%s\" (%s)", field, val, want, err);
	free(buf);
}

static int self_test(void)
{
	size_t len, len2;
	char err[512] = "";
	struct um_state st;
	struct umi_image img;
	uint8_t *buf = sample(&len);
	ok(parse(buf, len, &st, &img, err, sizeof(err)) == 0, "sample image parses (%s)", err);
	um_state_free(&st);

	t_header("version", "2", "newer than this build");
	t_header("arch", "183", "architecture 183");
	t_header("magic", "NOTANIMG", "bad magic");

	uint8_t *b2 = set_state(buf, len, "features", 1ULL << 20, &len2, err, sizeof(err));
	ok(b2 && parse(b2, len2, &st, &img, err, sizeof(err)) == 0, "features edit parses (%s)", err);
	if (b2 && st.nuffds) {
		is_u64(st.uffds[0]->features_requested, 1ULL << 20, "features now asked");
		is_int((int)st.uffds[0]->nranges, 2, "ranges kept");
		is_u64(um_wp_count(&st.uffds[0]->wp), 3, "write-protected pages kept");
		um_state_free(&st);
	}
	free(b2);

	uint64_t to = 0x555555558000ULL;
	b2 = set_state(buf, len, "range-addr", to, &len2, err, sizeof(err));
	ok(b2 && parse(b2, len2, &st, &img, err, sizeof(err)) == 0, "range-addr edit parses (%s)",
	   err);
	if (b2 && st.nuffds) {
		const struct um_uffd *u = st.uffds[0];
		is_u64(u->ranges[0].start, to, "range 0 starts at the new address");
		is_u64(u->ranges[0].end - u->ranges[0].start, 4 << 20, "and keeps its length");
		is_u64(u->ranges[1].start, T_BASE + (8 << 20), "range 1 stays");
		ok(um_wp_test(&u->wp, to + 0x1000) && um_wp_test(&u->wp, to + 0x2000) &&
		   !um_wp_test(&u->wp, T_BASE + 0x1000) && um_wp_count(&u->wp) == 3,
		   "write-protected pages moved with it");
		ok(img.nruns == 3 && img.runs[0].addr == to && img.runs[1].addr == to + 0x5000 &&
		   img.runs[2].addr == T_BASE + (8 << 20), "memory runs moved with it, in order");
		um_state_free(&st);
	}
	free(b2);

	b2 = set_state(buf, len, "range-addr", T_BASE + (8 << 20) - 0x1000, &len2, err,
		       sizeof(err));
	ok(!b2 && strstr(err, "overlaps"), "a move onto another range is refused (%s)", err);
	free(b2);

	buf[len / 2] ^= 0x40;
	ok(parse(buf, len, &st, &img, err, sizeof(err)) < 0 && strstr(err, "corrupt"),
	   "a flipped byte is found (%s)", err);
	buf[len / 2] ^= 0x40;
	ok(parse(buf, len / 2, &st, &img, err, sizeof(err)) < 0 && strstr(err, "truncated"),
	   "a truncated file is found (%s)", err);
	free(buf);
	return done_testing();
}

/* ---- chains (tests/replay_chain.sh) ---- */

/* The protection of the mapping holding addr, as maps shows it, or NULL. */
static const char *maps_prot(uint64_t addr, char *out)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	const char *r = NULL;
	while (f && !r && fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		char perm[8];
		if (sscanf(line, "%llx-%llx %7s", &s, &e, perm) == 3 && addr >= s && addr < e) {
			memcpy(out, perm, 3);
			out[3] = 0;
			r = out;
		}
	}
	if (f)
		fclose(f);
	return r;
}

static int cmd_probe(void)
{
	for (int k = 0; k < CG_NRANGES; k++) {
		char prot[8];
		const char *pr = maps_prot(cg_ranges[k].start, prot);
		printf("R%d prot %s\n", k, pr ? pr : "unmapped");
		for (uint32_t p = 0; p < cg_ranges[k].npages; p++) {
			uint64_t a = cg_addr(k, (int)p);
			unsigned char vec = 0;
			const char *st = "unmapped";
			char tag[16];
			if (mincore((void *)a, 4096, &vec) == 0) {
				int t = cg_page_tag((const uint8_t *)a, a);
				snprintf(tag, sizeof(tag), "e%d", t);
				st = t >= 0 && (vec & 1) ? tag : t == -1 && !(vec & 1) ? "none" : "bad";
			}
			printf("R%d p%u %s\n", k, p, st);
		}
	}
	return 0;
}

static int cmd_chain_expect(int with_uffd)
{
	for (int k = 0; k < CG_NRANGES; k++) {
		bool skipped = cg_ranges[k].kind != UMI_TK_ANON;
		printf("R%d prot %s\n", k, skipped ? "unmapped"
					     : cg_ranges[k].prot & PROT_WRITE ? "rw-" : "r--");
		for (size_t i = 0; i < CG_NEXPECT; i++) {
			const struct cg_page *e = &cg_expect[i];
			if (e->range != k)
				continue;
			if (skipped)
				printf("R%d p%d unmapped\n", k, e->page);
			else if (e->kind == 'D' && (!e->uffd || with_uffd))
				printf("R%d p%d e%d\n", k, e->page, e->epoch);
			else
				printf("R%d p%d none\n", k, e->page);
		}
	}
	return 0;
}

static int cmd_chain(const char *dir, int with_uffd)
{
	struct cg_opts o = cg_default;
	o.with_uffd = with_uffd;
	if (cg_write_chain(dir, &o) < 0) {
		fprintf(stderr, "image_tool: cannot write a chain into %s: %s\n", dir,
			strerror(errno));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 1)
		return self_test();
	if (argc == 3 && !strcmp(argv[1], "info"))
		return cmd_info(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "set"))
		return cmd_set(argv[2], argv[3], argv[4]);
	bool uffd = argc >= 3 && !strcmp(argv[argc - 1], "uffd");
	if ((argc == 3 || (argc == 4 && uffd)) && !strcmp(argv[1], "chain"))
		return cmd_chain(argv[2], uffd);
	if ((argc == 2 || (argc == 3 && uffd)) && !strcmp(argv[1], "chain-expect"))
		return cmd_chain_expect(uffd);
	if (argc == 2 && !strcmp(argv[1], "probe"))
		return cmd_probe();
	fprintf(stderr, "usage: image_tool [info DIR | set DIR FIELD VALUE | chain DIR [uffd] | "
			"chain-expect [uffd] | probe]\n"
			"  FIELD: version, arch, magic, features, range-addr\n");
	return 2;
}
