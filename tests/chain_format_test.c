/* chain_format_test.c - incremental image chains: the epoch section and
 * ABSENT runs of the image format, loading and validating a chain,
 * flattening it (exact page contents), and refusing broken chains with the
 * right reason.  The chains are synthetic (tests/chain_gen.h), written with
 * the model's writer into a temporary directory.  No uffd, no process. */
#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>

#include "test_helpers.h"
#include "chain_gen.h"
#include "chain.h"

static char work[PATH_MAX];

static void rm_rf(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char p[PATH_MAX + 300];
	while (d && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			rm_rf(p);
		else
			unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(path);
}

static const char *wpath(const char *name)
{
	static char p[4][PATH_MAX + 64];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", work, name);
	return p[k];
}

static void flip_byte(const char *path, long off)
{
	FILE *f = fopen(path, "r+b");
	if (!f)
		return;
	fseek(f, off, SEEK_SET);
	int c = fgetc(f);
	fseek(f, off, SEEK_SET);
	fputc(c ^ 0xff, f);
	fclose(f);
}

/* ---- the flattened image, page by page ---- */

static const struct umi_run *run_at(const struct umi_image *img, uint64_t a)
{
	for (size_t i = 0; i < img->nruns; i++)
		if (a >= img->runs[i].addr && a < img->runs[i].addr + img->runs[i].npages * 4096)
			return &img->runs[i];
	return NULL;
}

/* Every page of cg_expect against the flattened image in dir. */
static void check_pages(const char *dir, int with_uffd)
{
	struct image_dir d;
	char err[1024];
	if (!ok(image_dir_load(dir, &d, err, sizeof(err)) == 0, "flattened image loads (%s)",
		with_uffd ? "with uffd" : "no uffd")) {
		diag("%s", err);
		return;
	}
	ok(d.img.epoch && (d.img.epoch->flags & UMI_EPOCH_FLAT) && d.img.epoch->epoch == 3 &&
	   d.img.epoch->chain_id == CG_CHAIN_ID && d.img.epoch->nranges == 4,
	   "epoch section: flat, epoch 3, chain id, 4 ranges");
	bool all_new = d.img.epoch != NULL;
	for (uint32_t k = 0; d.img.epoch && k < d.img.epoch->nranges; k++)
		all_new &= !!(d.img.tracked[k].flags & UMI_TR_NEW);
	ok(all_new, "every range is NEW");
	uint64_t want_pages = 0, have_pages = 0;
	int bad = 0;
	for (size_t i = 0; i < CG_NEXPECT; i++) {
		const struct cg_page *e = &cg_expect[i];
		char kind = !with_uffd && e->uffd ? 'A' : e->kind;
		uint64_t a = cg_addr(e->range, e->page);
		const struct umi_run *r = run_at(&d.img, a);
		char got = !r ? 'A' : r->kind == UMI_RUN_DATA ? 'D' : r->kind == UMI_RUN_ZERO ? 'Z' : '?';
		int tag = -3;
		if (r && r->kind == UMI_RUN_DATA) {
			uint8_t page[4096];
			if (pread(d.pages_fd, page, 4096, (off_t)(r->offset + (a - r->addr))) == 4096)
				tag = cg_page_tag(page, a);
		}
		want_pages += kind != 'A';
		if (got != kind || (kind == 'D' && tag != e->epoch) ||
		    (r && (int)r->uffd_id != (with_uffd ? e->uffd : 0))) {
			diag("range %d page %d: want %c (epoch %d, uffd %d), got %c (epoch %d, uffd %d)",
			     e->range, e->page, kind, e->epoch, e->uffd, got, tag,
			     r ? (int)r->uffd_id : -1);
			bad++;
		}
	}
	for (size_t i = 0; i < d.img.nruns; i++)
		have_pages += d.img.runs[i].npages;
	is_int(bad, 0, "every page holds its newest content, kind and uffd (%s)",
	       with_uffd ? "with uffd" : "no uffd");
	is_u64(have_pages, want_pages, "and no other page is in the image");
	size_t runs_r0 = 0;
	for (size_t i = 0; i < d.img.nruns; i++)
		runs_r0 += d.img.runs[i].addr < cg_addr(0, 14);
	is_int((int)runs_r0, 5, "adjacent pages coalesced (R0 below the uffd's pages: Z p0, D p1-4, "
	       "D p6-8, D p10, Z p11)");
	image_dir_free(&d);
}

static void t_flatten(int with_uffd)
{
	struct cg_opts o = cg_default;
	o.with_uffd = with_uffd;
	const char *dir = wpath(with_uffd ? "good-u" : "good"), *flat = wpath(with_uffd ? "flat-u"
											 : "flat");
	ok(cg_write_chain(dir, &o) == 0, "synthetic chain written (%s)", dir);
	struct chain c;
	char err[2048] = "";
	if (!ok(chain_load(dir, &c, err, sizeof(err)) == 0, "chain loads and validates (%s)", err))
		return;
	is_int((int)c.n, CG_EPOCHS, "4 epochs");
	ok(chain_flatten(&c, flat, err, sizeof(err)) == 0, "chain flattens (%s)", err);
	ok(chain_verify_flat(&c, flat, err, sizeof(err)) == 0,
	   "flattened image matches the chain page by page (%s)", err);
	chain_free(&c);
	struct stat st;
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/%s", flat, UMI_PAGES_FILE);
	ok(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600, "pages file is 0600");
	check_pages(flat, with_uffd);
	ok(!chain_is_chain_dir(flat) && chain_is_chain_dir(dir), "chain_is_chain_dir");
}

/* ---- broken chains ---- */

/* Load a chain; it must be refused with want in the message. */
static void refused(const char *dir, const char *want, const char *what)
{
	struct chain c;
	char err[2048] = "";
	int rc = chain_load(dir, &c, err, sizeof(err));
	ok(rc < 0 && strstr(err, want), "%s: refused with \"%s\"", what, want);
	if (rc == 0)
		chain_free(&c);
	else if (!strstr(err, want))
		diag("message: %s", err);
}

static const char *broken(const char *name, struct cg_opts o)
{
	const char *dir = wpath(name);
	if (cg_write_chain(dir, &o) < 0)
		diag("could not write %s", dir);
	return dir;
}

static void t_broken(void)
{
	struct cg_opts o = cg_default;
	const char *d = broken("missing", o);
	rm_rf(wpath("missing/epoch-0002"));
	refused(d, "epoch-0002 is missing", "missing epoch");

	o = cg_default;
	o.other_chain_epoch = 2;
	refused(broken("chainid", o), "belongs to another chain", "wrong chain_id");

	o = cg_default;
	o.bad_parent_epoch = 1;
	refused(broken("parent", o), "broken link epoch-0000 -> epoch-0001", "broken parent link");

	o = cg_default;
	d = broken("crc", o);
	flip_byte(wpath("crc/epoch-0001/uffd-state.img"), 100); /* in the state section */
	refused(d, "epoch 1", "bad crc: names the epoch");
	refused(d, "corrupt (checksum mismatch)", "bad crc");

	o = cg_default;
	d = broken("pagecrc", o);
	flip_byte(wpath("pagecrc/epoch-0002/uffd-pages.img"), 10);
	refused(d, "page data of run 0 is corrupt", "bad page data");

	o = cg_default;
	o.outside_run_epoch = 2;
	refused(broken("outside", o), "not inside a tracked range", "run outside tracked ranges");

	o = cg_default;
	o.e0_not_new = 1;
	refused(broken("notnew", o), "not marked NEW", "epoch 0 range not NEW");

	o = cg_default;
	d = broken("trunc", o);
	ok(truncate(wpath("trunc/epoch-0003/uffd-state.img"), 300) == 0, "truncate epoch 3");
	refused(d, "truncated", "truncated epoch image");

	o = cg_default;
	o.nepochs = 1;
	d = broken("one", o);
	struct chain c;
	char err[2048] = "";
	ok(chain_load(d, &c, err, sizeof(err)) == 0 &&
	   chain_flatten(&c, wpath("one-flat"), err, sizeof(err)) == 0 &&
	   chain_verify_flat(&c, wpath("one-flat"), err, sizeof(err)) == 0,
	   "a chain of the base alone flattens (%s)", err);
	if (c.n)
		chain_free(&c);
	mkdir(wpath("empty"), 0700);
	refused(wpath("empty"), "no epoch-0000", "a directory without epochs");
}

/* ---- the format itself ---- */

static size_t build(uint8_t *buf, size_t cap, const struct umi_run *runs, size_t nruns,
		    const struct umi_epoch *ep, const struct umi_tracked *tr)
{
	size_t slen;
	void *blob = cg_state(0, &slen);
	size_t n = umi_write_state_file2(buf, cap, CG_PID, "t", 5, blob, slen, runs, nruns, NULL,
					 ep, tr);
	free(blob);
	return n;
}

static void t_format(void)
{
	static uint8_t a[16384], b[16384];
	char err[512] = "";
	struct umi_image img;
	struct umi_run run = {.addr = CG_BASE, .npages = 1, .kind = UMI_RUN_ABSENT};
	size_t slen;
	void *blob = cg_state(0, &slen);
	size_t n1 = umi_write_state_file(a, sizeof(a), CG_PID, "t", 5, blob, slen, &run, 1, NULL);
	size_t n2 = build(b, sizeof(b), &run, 1, NULL, NULL);
	free(blob);
	ok(n1 && n1 == n2 && !memcmp(a, b, n1), "umi_write_state_file2 without epoch = the old writer");
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 && strstr(err, "ABSENT"),
	   "ABSENT run refused without an epoch section (%s)", err);
	run.kind = UMI_RUN_ZERO;
	run.uffd_id = 1;
	n1 = build(a, sizeof(a), &run, 1, NULL, NULL);
	err[0] = 0;
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) == 0 && !img.epoch,
	   "an image without epoch section parses as before (%s)", err);

	struct umi_tracked tr[2] = {
		{.start = CG_BASE, .end = CG_BASE + 0x4000, .prot = 3, .kind = UMI_TK_ANON,
		 .mode = UMI_TM_ASYNC, .flags = UMI_TR_NEW},
		{.start = CG_BASE + 0x8000, .end = CG_BASE + 0x9000, .prot = 1, .kind = UMI_TK_FILE,
		 .mode = UMI_TM_ALL, .name = "/lib/x.so"},
	};
	struct umi_epoch ep = {.epoch = 2, .nranges = 2, .chain_id = 9, .parent_created_ns = 4};
	struct umi_run runs[2] = {{.addr = CG_BASE + 0x1000, .npages = 3, .kind = UMI_RUN_ABSENT},
				  {.addr = CG_BASE + 0x8000, .npages = 1, .kind = UMI_RUN_ZERO}};
	n1 = build(a, sizeof(a), runs, 2, &ep, tr);
	err[0] = 0;
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) == 0 && img.epoch &&
	   img.epoch->epoch == 2 && img.epoch->nranges == 2 && img.tracked[1].kind == UMI_TK_FILE &&
	   !strcmp(img.tracked[1].name, "/lib/x.so"), "an epoch image round-trips (%s)", err);
	is_u64(n1, umi_state_file_size2(slen, 2, 0, &ep), "its size is umi_state_file_size2's");

	runs[0].npages = 4; /* [0x1000, 0x5000) leaves range 0 */
	n1 = build(a, sizeof(a), runs, 2, &ep, tr);
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 &&
	   strstr(err, "not inside a tracked range"), "a run across a tracked range's end (%s)", err);
	runs[0].npages = 3;

	tr[1].start = CG_BASE + 0x3000;
	n1 = build(a, sizeof(a), runs, 1, &ep, tr);
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 && strstr(err, "overlap"),
	   "overlapping tracked ranges refused (%s)", err);
	tr[1].start = CG_BASE + 0x8000;
	tr[1].kind = 9;
	n1 = build(a, sizeof(a), runs, 1, &ep, tr);
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 && strstr(err, "unknown kind"),
	   "unknown range kind refused (%s)", err);
	tr[1].kind = UMI_TK_FILE;
	ep.flags = UMI_EPOCH_FLAT;
	n1 = build(a, sizeof(a), runs, 1, &ep, tr);
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 && strstr(err, "not marked NEW"),
	   "a flat image with a range not NEW refused (%s)", err);
	ep.flags = 0x80;
	n1 = build(a, sizeof(a), runs, 1, &ep, tr);
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 && strstr(err, "unknown flags"),
	   "unknown epoch flags refused (%s)", err);
	ep.flags = 0;
	n1 = build(a, sizeof(a), runs, 1, &ep, tr);
	/* The epoch section is the third: header 64, state, memory, then ours. */
	a[n1 - 8] ^= 1; /* in the last tracked range's name padding area */
	ok(umi_parse(a, n1, (uint64_t)-1, &img, err, sizeof(err)) < 0 && strstr(err, "corrupt"),
	   "a flipped byte in the epoch section is found (%s)", err);
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(work, sizeof(work), "%s/chain_format_test.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(work))
		skip_all("cannot create a temporary directory: %s", strerror(errno));
	t_format();
	t_flatten(1);
	t_flatten(0);
	t_broken();
	if (!getenv("UFFDSHIM_KEEP"))
		rm_rf(work);
	else
		diag("work files kept in %s", work);
	return done_testing();
}
