/* procfs_test.c - the /proc parsers of uffd-record (recorder/procfs.c) on
 * synthetic text and on this process's own /proc, and `status --verify`'s
 * cross-check (recorder/verify.c) against a synthetic model of real uffds of
 * this process: the matching model verifies OK; each deliberate lie in the
 * model (wrong mode, extra WP page, missing range, ...) is reported as exactly
 * the expected disagreement.
 *
 * The recorder sources are plain C and compiled into this test directly (the
 * test links only libuffdmodel.a). */
#include "../recorder/procfs.c"
#include "../recorder/verify.c"

#include <sys/stat.h>

#include "test_helpers.h"

#define PG 4096UL

/* ---- synthetic text ---------------------------------------------------- */

static const char SMAPS[] =
	"55d0c0a00000-55d0c0a21000 r-xp 00002000 fd:01 1311 /usr/bin/some prog\n"
	"Size:                132 kB\n"
	"KernelPageSize:        4 kB\n"
	"MMUPageSize:           4 kB\n"
	"VmFlags: rd ex mr mw me sd\n"
	"7f0000000000-7f0000004000 rw-p 00000000 00:00 0 \n"
	"Size:                 16 kB\n"
	"KernelPageSize:        4 kB\n"
	"VmFlags: rd wr mr mw me ac um uw\n"
	"7f0000004000-7f0000008000 rw-s 00001000 00:01 2049                       /memfd:x (deleted)\n"
	"Size:                 16 kB\n"
	"VmFlags: rd wr sh mr mw me ms ui\n"
	"7f0000200000-7f0000400000 rw-p 00000000 00:00 0                          [anon:my region]\n"
	"KernelPageSize:     2048 kB\n"
	"VmFlags: rd wr mr mw me ac ht um\n"
	"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"
	"VmFlags: ex\n";

static const char FDINFO_UFFD[] =
	"pos:\t0\nflags:\t02004000\nmnt_id:\t17\nino:\t36974\npending:\t2\ntotal:\t5\n"
	"API:\taa:80002100:80000000000001ff\n";
static const char FDINFO_PIPE[] = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t12345\n";

static const char STATUS[] =
	"Name:\tlazy loader\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n"
	"Pid:\t4243\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1001\t1000\t1000\n"
	"NSpid:\t4243\t17\t3\n";

static void test_text_parsers(void)
{
	struct pf_vma v;
	const char *l = "7f12a000-7f12c000 r-xs 0000a000 08:1f 99 /lib/x86_64/lib a.so";
	is_int(pf_parse_vma_header(l, strlen(l), &v), 0, "header: parses");
	ok(v.start == 0x7f12a000 && v.end == 0x7f12c000 && v.prot == (PROT_READ | PROT_EXEC) &&
	   v.shared && v.offset == 0xa000 && v.dev_major == 8 && v.dev_minor == 0x1f && v.ino == 99,
	   "header: fields");
	is_str(v.name, "/lib/x86_64/lib a.so", "header: name with a space");
	l = "7f12a000-7f12c000 ---p 00000000 00:00 0";
	ok(pf_parse_vma_header(l, strlen(l), &v) == 0 && !v.name[0] && !v.prot && !v.shared,
	   "header: anonymous, no name, no permissions");
	const char *bad[] = {"7f12a000 rw-p 0 00:00 0", "7f12a000-7f12c000 rw-q 0 00:00 0",
			     "7f12a000-7f12c000 rw-p zz 00:00 0", "7f12c000-7f12a000 rw-p 0 00:00 0",
			     "7f12a000-7f12c000 rw-p 0 00:00 x", "", "Size: 4 kB"};
	int nbad = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		nbad += pf_parse_vma_header(bad[i], strlen(bad[i]), &v) < 0;
	is_int(nbad, (int)(sizeof(bad) / sizeof(bad[0])), "header: malformed lines refused");

	is_int(pf_parse_vmflags(" rd wr um uw ui ac", 18), PF_VM_UM | PF_VM_UW | PF_VM_UI,
	       "vmflags: um uw ui");
	is_int(pf_parse_vmflags("rd wr umx uwu mr", 16), 0, "vmflags: only whole 2-letter words");
	char buf[32];
	pf_uffd_flags_str(PF_VM_UM | PF_VM_UI, buf, sizeof(buf));
	is_str(buf, "um|ui", "flags string");
	pf_uffd_flags_str(0, buf, sizeof(buf));
	is_str(buf, "none", "flags string: none");

	struct pf_vmas vs;
	char err[256] = "";
	int rc = pf_parse_smaps(SMAPS, sizeof(SMAPS) - 1, &vs, err, sizeof(err));
	is_int(rc, 0, "smaps: parses (%s)", err);
	is_int(vs.n, 5, "smaps: 5 VMAs");
	if (vs.n == 5) {
		ok(vs.v[0].uffd_flags == 0 && vs.v[0].has_vmflags && !strcmp(vs.v[0].vmflags,
		   "rd ex mr mw me sd") && !strcmp(vs.v[0].name, "/usr/bin/some prog"),
		   "smaps: VMA 0 (file, no uffd flags)");
		ok(vs.v[1].uffd_flags == (PF_VM_UM | PF_VM_UW) && vs.v[1].start == 0x7f0000000000 &&
		   vs.v[1].end == 0x7f0000004000 && !vs.v[1].name[0] && vs.v[1].kernel_page_size == 4096,
		   "smaps: VMA 1 um|uw, anonymous");
		ok(vs.v[2].uffd_flags == PF_VM_UI && vs.v[2].shared && vs.v[2].offset == 0x1000 &&
		   !strcmp(vs.v[2].name, "/memfd:x (deleted)"), "smaps: VMA 2 ui, shared memfd");
		ok(vs.v[3].uffd_flags == PF_VM_UM && vs.v[3].kernel_page_size == 2 << 20 &&
		   !strcmp(vs.v[3].name, "[anon:my region]"), "smaps: VMA 3 um, hugetlb, [anon:]");
		ok(vs.v[4].start == 0xffffffffff600000ULL && vs.v[4].prot == PROT_EXEC,
		   "smaps: [vsyscall]");
	} else {
		skip(5, "smaps did not parse");
	}
	pf_vmas_free(&vs);
	const char garbage[] = "7f0000000000-7f0000004000 rw-p 00000000 00:00 0\nthis is not smaps\n";
	rc = pf_parse_smaps(garbage, sizeof(garbage) - 1, &vs, err, sizeof(err));
	ok(rc < 0 && strstr(err, "line 2"), "smaps: garbage refused, naming the line (%s)", err);
	rc = pf_parse_smaps("", 0, &vs, err, sizeof(err));
	ok(rc == 0 && vs.n == 0, "smaps: empty (a kernel thread) is no VMAs");
	pf_vmas_free(&vs);

	const char maps[] =
		"7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 /opt/libuffdshim.so.1\n"
		"7f0000001000-7f0000002000 r-xp 00000000 fd:01 8 /opt/xlibuffdshim.so\n";
	pf_parse_smaps(maps, sizeof(maps) - 1, &vs, err, sizeof(err));
	is_int(pf_maps_has_lib(&vs, "libuffdshim.so"), 0, "maps: look-alike names do not count");
	pf_vmas_free(&vs);
	const char maps2[] =
		"7f0000000000-7f0000001000 r-xp 00000000 fd:01 7 /work/build/libuffdshim.so (deleted)\n";
	pf_parse_smaps(maps2, sizeof(maps2) - 1, &vs, err, sizeof(err));
	is_int(pf_maps_has_lib(&vs, "libuffdshim.so"), 1, "maps: a rebuilt (deleted) shim counts");
	pf_vmas_free(&vs);

	struct pf_fdinfo fi;
	rc = pf_parse_fdinfo(FDINFO_UFFD, sizeof(FDINFO_UFFD) - 1, &fi);
	ok(rc == 0 && fi.flags == 02004000 && fi.ino == 36974 && fi.has_ino && fi.mnt_id == 17,
	   "fdinfo: flags (octal), ino, mnt_id");
	ok(fi.has_uffd && fi.pending == 2 && fi.total == 5 && fi.api == 0xaa &&
	   fi.api_features == 0x80002100ULL && fi.api_ioctls == 0x80000000000001ffULL,
	   "fdinfo: the userfaultfd API line (hex)");
	rc = pf_parse_fdinfo(FDINFO_PIPE, sizeof(FDINFO_PIPE) - 1, &fi);
	ok(rc == 0 && fi.flags == 02 && !fi.has_uffd && !fi.has_api, "fdinfo: not a uffd");
	ok(pf_parse_fdinfo("pos:\t0\n", 7, &fi) < 0, "fdinfo: no flags line is an error");
	const char badapi[] = "flags:\t02\nAPI:\tzz:1\n";
	ok(pf_parse_fdinfo(badapi, sizeof(badapi) - 1, &fi) == 0 && !fi.has_api,
	   "fdinfo: a garbled API line is ignored");

	struct pf_status ps;
	rc = pf_parse_status(STATUS, sizeof(STATUS) - 1, &ps);
	ok(rc == 0 && ps.state == 'S' && ps.tgid == 4242 && ps.uid == 1000 && ps.euid == 1001 &&
	   ps.nspid_inner == 3 && !strcmp(ps.name, "lazy loader"), "status: fields, innermost NSpid");
}

/* ---- this process's own /proc --------------------------------------------- */

static void test_own_proc(void)
{
	pid_t me = getpid();
	char *p = map_anon(8);
	mprotect(p + 4 * PG, 4 * PG, PROT_READ); /* two VMAs */
	p[0] = 1;
	struct pf_vmas vs;
	char err[256];
	int rc = pf_read_smaps(me, &vs, err, sizeof(err));
	is_int(rc, 0, "own smaps: read (%s)", rc ? err : "");
	int found = 0;
	for (size_t i = 0; i < vs.n; i++) {
		if (vs.v[i].start == (uintptr_t)p && vs.v[i].end == (uintptr_t)p + 4 * PG &&
		    vs.v[i].prot == (PROT_READ | PROT_WRITE) && vs.v[i].has_vmflags)
			found |= 1;
		if (vs.v[i].start == (uintptr_t)p + 4 * PG && vs.v[i].end == (uintptr_t)p + 8 * PG &&
		    vs.v[i].prot == PROT_READ)
			found |= 2;
	}
	is_int(found, 3, "own smaps: both halves of a split mapping, with VmFlags");
	pf_vmas_free(&vs);
	rc = pf_read_maps(me, &vs, err, sizeof(err));
	ok(rc == 0 && vs.n > 3 && !pf_maps_has_lib(&vs, "libuffdshim.so"),
	   "own maps: read, shim not loaded");
	pf_vmas_free(&vs);

	int pfd[2];
	if (pipe(pfd) < 0)
		pfd[0] = pfd[1] = -1;
	int *fds;
	size_t n;
	rc = pf_list_fds(me, &fds, &n, err, sizeof(err));
	bool has = false;
	for (size_t i = 0; rc == 0 && i < n; i++)
		has |= fds[i] == pfd[1];
	ok(rc == 0 && has, "own fds: listed");
	free(fds);
	char link[128] = "";
	struct stat sb;
	uint64_t ino = 0;
	fstat(pfd[0], &sb);
	ok(pf_fd_link(me, pfd[0], link, sizeof(link)) == 0 && !strncmp(link, "pipe:[", 6),
	   "own fd link: %s", link);
	ok(pf_fd_ino(me, pfd[0], &ino) == 0 && ino == (uint64_t)sb.st_ino, "own fd inode");
	struct pf_fdinfo fi;
	ok(pf_read_fdinfo(me, pfd[0], &fi, err, sizeof(err)) == 0 && fi.has_flags &&
	   !(fi.flags & O_CLOEXEC) && !fi.has_uffd, "own fdinfo of a pipe");
	close(pfd[0]);
	close(pfd[1]);
	ok(pf_fd_link(me, pfd[0], link, sizeof(link)) < 0 && errno == ENOENT,
	   "a closed fd has no link");

	int pm = pf_pagemap_open(me, err, sizeof(err));
	uint64_t e[8];
	rc = pm >= 0 ? pf_pagemap_read(pm, (uintptr_t)p, 8, e, err, sizeof(err)) : -1;
	ok(rc == 0 && (e[0] >> 63) && !(e[1] >> 63), "own pagemap: touched page present, "
	   "untouched not (%s)", rc ? err : "");
	if (pm >= 0)
		close(pm);
	struct pf_status ps;
	ok(pf_read_status(me, &ps) == 0 && ps.tgid == me && ps.state == 'R', "own status");
	ok(pf_read_status(0x3fffffff, &ps) < 0 && errno == ENOENT, "status of no process: ENOENT");
	unmap_anon(p, 8);
}

/* ---- verify against real uffds --------------------------------------------- */

#define NPAGES 64
#define R1_START 1   /* MISSING|WP [1, 49) */
#define R1_END 49
#define R2_START 52  /* MISSING [52, 60) */
#define R2_END 60
#define ANPAGES 16   /* WP_ASYNC uffd: WP [0, 16) */

static char *mem, *amem;
static int ufd, ufd2, afd;
static uint64_t ufd_ino, afd_ino;
static const uint64_t A_FEATURES = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_WP_UNPOPULATED;
static const uint64_t B_FEATURES = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
static uint64_t a_ioctls, a_features;

static uint64_t A(int page)
{
	return (uintptr_t)mem + (uint64_t)page * PG;
}

static int setup_uffds(void)
{
	mem = map_anon(NPAGES);
	amem = map_anon(ANPAGES);
	if (!mem || !amem)
		return -1;
	memset(mem, 1, NPAGES * PG); /* populated: no MISSING fault can ever block */
	memset(amem, 2, ANPAGES * PG);
	ufd = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (ufd < 0)
		return -1;
	struct uffdio_api api;
	if (uffd_api(ufd, A_FEATURES, &api) < 0)
		return -1;
	a_ioctls = api.ioctls;
	a_features = api.features;
	struct uffdio_register r1 = {.range = {A(R1_START), (R1_END - R1_START) * PG},
				     .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
	struct uffdio_register r2 = {.range = {A(R2_START), (R2_END - R2_START) * PG},
				     .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(ufd, UFFDIO_REGISTER, &r1) < 0 || ioctl(ufd, UFFDIO_REGISTER, &r2) < 0)
		return -1;
	int wp[] = {2, 3, 4, 6};
	for (size_t i = 0; i < sizeof(wp) / sizeof(wp[0]); i++) {
		struct uffdio_writeprotect w = {.range = {A(wp[i]), PG},
						.mode = UFFDIO_WRITEPROTECT_MODE_WP};
		if (ioctl(ufd, UFFDIO_WRITEPROTECT, &w) < 0)
			return -1;
	}
	ufd2 = fcntl(ufd, F_DUPFD, 100); /* a second fd, without close-on-exec */
	afd = uffd_create(O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (afd < 0 || uffd_api(afd, B_FEATURES, NULL) < 0)
		return -1;
	struct uffdio_register r3 = {.range = {(uintptr_t)amem, ANPAGES * PG},
				     .mode = UFFDIO_REGISTER_MODE_WP};
	if (ioctl(afd, UFFDIO_REGISTER, &r3) < 0)
		return -1;
	struct uffdio_writeprotect w = {.range = {(uintptr_t)amem, ANPAGES * PG},
					.mode = UFFDIO_WRITEPROTECT_MODE_WP};
	if (ioctl(afd, UFFDIO_WRITEPROTECT, &w) < 0)
		return -1;
	amem[0] = 3;           /* WP_ASYNC: the kernel unprotects these two itself */
	amem[5 * PG] = 3;
	struct stat sb;
	fstat(ufd, &sb);
	ufd_ino = sb.st_ino;
	fstat(afd, &sb);
	afd_ino = sb.st_ino;
	return 0;
}

static void anon_map(struct um_mapping *m, uint64_t start, uint64_t end)
{
	memset(m, 0, sizeof(*m));
	m->start = start;
	m->end = end;
	m->prot = PROT_READ | PROT_WRITE;
	m->backing = UM_BACKING_ANON;
	m->pagesize = PG;
}

/* The model that matches setup_uffds() exactly. */
static void build_state(struct um_state *st)
{
	struct um_mapping m;
	um_state_init(st, getpid());
	struct um_uffd *u = um_uffd_new(st, ufd_ino, UM_ORIGIN_SYSCALL, O_CLOEXEC | O_NONBLOCK,
					getpid());
	um_fd_add(u, ufd, true);
	um_fd_add(u, ufd2, false);
	u->file_flags = O_NONBLOCK;
	um_op_api(u, 0, A_FEATURES, a_features, a_ioctls);
	anon_map(&m, A(0), A(NPAGES));
	um_op_register(u, 0, A(R1_START), (R1_END - R1_START) * PG,
		       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, 0x7c, &m, 1);
	um_op_register(u, 0, A(R2_START), (R2_END - R2_START) * PG, UFFDIO_REGISTER_MODE_MISSING,
		       0x3c, &m, 1);
	int wp[] = {2, 3, 4, 6};
	for (size_t i = 0; i < sizeof(wp) / sizeof(wp[0]); i++)
		um_op_writeprotect(u, 0, A(wp[i]), PG, UFFDIO_WRITEPROTECT_MODE_WP, NULL);

	struct um_uffd *b = um_uffd_new(st, afd_ino, UM_ORIGIN_SYSCALL,
					O_CLOEXEC | UFFD_USER_MODE_ONLY, getpid());
	um_fd_add(b, afd, true);
	um_op_api(b, 0, B_FEATURES, a_features, a_ioctls);
	anon_map(&m, (uintptr_t)amem, (uintptr_t)amem + ANPAGES * PG);
	um_op_register(b, 0, (uintptr_t)amem, ANPAGES * PG, UFFDIO_REGISTER_MODE_WP, 0x7c, &m, 1);
	um_op_writeprotect(b, 0, (uintptr_t)amem, ANPAGES * PG, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
}

static bool has_text(const struct verify_report *r, int kind, const char *needle)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->e[i].kind == kind && strstr(r->e[i].text, needle))
			return true;
	return false;
}

static void show(const struct verify_report *r)
{
	for (size_t i = 0; i < r->n; i++)
		note("  [%d/%d] %s", r->e[i].kind, r->e[i].check, r->e[i].text);
}

/* Run verify; check the total count, and how many came from one check. */
static int run_verify(struct um_state *st, struct verify_report *r)
{
	int rc = verify_state(st, getpid(), r);
	if (rc < 0)
		diag("verify failed: %s", r->error);
	show(r);
	return rc;
}

static void test_verify(void)
{
	struct um_state st;
	struct verify_report r;
	char want[256];

	/* 1. the matching model */
	build_state(&st);
	int rc = run_verify(&st, &r);
	is_int(rc, 0, "verify: matching model agrees");
	ok(r.nuffds == 2 && r.nranges == 3, "verify: 2 uffds, 3 ranges checked");
	is_u64(r.npages, (R1_END - R1_START) + (R2_END - R2_START) + ANPAGES,
	       "verify: every page of every registered range checked in pagemap (uffd-wp bits "
	       "outlive a re-register without WP)");
	ok(has_text(&r, VK_NOTE, "WP_ASYNC") && has_text(&r, VK_NOTE, "(2 model-protected pages are"),
	   "verify: WP_ASYNC uffd checked as kernel subset of model, and says so");
	{
		char *out = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&out, &len);
		verify_report_print(&r, f);
		fclose(f);
		char okline[128];
		snprintf(okline, sizeof(okline), "verify: OK (2 uffds, 3 ranges, %d pages checked)\n",
			 (R1_END - R1_START) + (R2_END - R2_START) + ANPAGES);
		ok(strstr(out, okline) != NULL, "verify: OK line");
		free(out);
	}
	verify_report_free(&r);

	/* 2. wrong mode: range 2 is MISSING only in the kernel */
	struct um_uffd *u = um_uffd_by_id(&st, 1);
	u->ranges[1].modes = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "uffd 1: range [%#" PRIx64 ", %#" PRIx64 ") model MISSING|WP, "
		 "kernel smaps um only", A(R2_START), A(R2_END));
	ok(rc == 1 && r.disagreements == 1 && has_text(&r, VK_DISAGREE, want),
	   "verify: wrong mode is exactly one smaps disagreement");
	verify_report_free(&r);
	u->ranges[1].modes = UFFDIO_REGISTER_MODE_MISSING;

	/* 3. an extra WP page in the model */
	um_wp_set(&u->wp, A(10), A(11), true);
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "uffd 1: pages [%#" PRIx64 ", %#" PRIx64 ") (1 page) model WP, "
		 "kernel pagemap not WP", A(10), A(11));
	ok(rc == 1 && r.disagreements == 1 && verify_report_count(&r, VK_DISAGREE, VC_PAGEMAP, 1) == 1 &&
	   has_text(&r, VK_DISAGREE, want), "verify: extra WP page is exactly one pagemap run");
	verify_report_free(&r);
	/* ... and a missing one, next to a kept one: runs, not pages */
	um_wp_set(&u->wp, A(10), A(11), false);
	um_wp_set(&u->wp, A(3), A(5), false);
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "uffd 1: pages [%#" PRIx64 ", %#" PRIx64 ") (2 pages) kernel "
		 "pagemap WP, model not WP", A(3), A(5));
	ok(rc == 1 && r.disagreements == 1 && has_text(&r, VK_DISAGREE, want),
	   "verify: two pages missing from the model are one run");
	verify_report_free(&r);
	um_wp_set(&u->wp, A(3), A(5), true);

	/* 4. many differing runs: the listing is capped, the count is not */
	for (int pg = 8; pg <= 48; pg += 2)
		um_wp_set(&u->wp, A(pg), A(pg + 1), true);
	rc = run_verify(&st, &r);
	ok(rc == 1 && r.disagreements == 21 &&
	   verify_report_count(&r, VK_DISAGREE, VC_PAGEMAP, 1) == VERIFY_MAX_WP_RUNS &&
	   has_text(&r, VK_MORE, "uffd 1: ... 1 more differing WP run (1 page) not listed"),
	   "verify: 21 runs counted, 20 listed, then '... 1 more'");
	verify_report_free(&r);
	um_wp_set(&u->wp, A(8), A(49), false);

	/* 5. a missing range */
	um_unregister(u, A(R2_START), A(R2_END));
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "[%#" PRIx64 ", %#" PRIx64 ") kernel smaps um only, model: not "
		 "registered", A(R2_START), A(R2_END));
	ok(rc == 1 && r.disagreements == 1 && has_text(&r, VK_DISAGREE, want),
	   "verify: missing range is exactly one smaps disagreement");
	verify_report_free(&r);
	um_state_free(&st);

	/* 6. a range boundary that is not the kernel's */
	build_state(&st);
	u = um_uffd_by_id(&st, 1);
	um_unregister(u, A(R1_END - 1), A(R1_END));
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "[%#" PRIx64 ", %#" PRIx64 ") kernel smaps um|uw, model: not "
		 "registered", A(R1_END - 1), A(R1_END));
	ok(rc == 1 && r.disagreements == 1 && has_text(&r, VK_DISAGREE, want),
	   "verify: a range end inside a kernel VMA is one disagreement");
	verify_report_free(&r);
	um_state_free(&st);

	/* 7. fd, file and API lies */
	build_state(&st);
	u = um_uffd_by_id(&st, 1);
	u->fd_flags[1] = 1;                          /* ufd2 is not close-on-exec */
	u->file_flags = 0;                           /* it is O_NONBLOCK */
	u->features_requested |= UFFD_FEATURE_EVENT_FORK;
	rc = run_verify(&st, &r);
	ok(rc == 1 && r.disagreements == 3 && verify_report_count(&r, VK_DISAGREE, VC_FDINFO, 1) == 3 &&
	   has_text(&r, VK_DISAGREE, "close-on-exec: model set, kernel clear") &&
	   has_text(&r, VK_DISAGREE, "O_NONBLOCK: model clear, kernel set") &&
	   has_text(&r, VK_DISAGREE, "requested features: model"),
	   "verify: cloexec, nonblock and requested features are three fdinfo disagreements");
	verify_report_free(&r);
	um_state_free(&st);

	build_state(&st);
	u = um_uffd_by_id(&st, 1);
	u->ino += 1000000;
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "uffd 1: fd %d: kernel inode %" PRIu64 ", model inode %" PRIu64,
		 ufd, ufd_ino, ufd_ino + 1000000);
	ok(rc == 1 && r.disagreements == 2 && verify_report_count(&r, VK_DISAGREE, VC_FDINFO, 1) == 2 &&
	   has_text(&r, VK_DISAGREE, want), "verify: wrong inode, once per fd");
	verify_report_free(&r);
	um_state_free(&st);

	build_state(&st);
	u = um_uffd_by_id(&st, 1);
	u->api_done = 0;
	rc = run_verify(&st, &r);
	ok(rc == 1 && r.disagreements == 1 && has_text(&r, VK_DISAGREE, "model: UFFDIO_API not done, "
	   "kernel: done with features"), "verify: API not done in the model");
	verify_report_free(&r);
	um_state_free(&st);

	/* 8. fds: one the model lacks, one the kernel lacks */
	build_state(&st);
	u = um_uffd_by_id(&st, 1);
	um_fd_close(&st, ufd2);
	um_fd_add(u, 777, false);
	rc = run_verify(&st, &r);
	snprintf(want, sizeof(want), "fd %d is a userfaultfd (inode %" PRIu64 ") that the model does "
		 "not know; it is model uffd 1's file", ufd2, ufd_ino);
	ok(rc == 1 && r.disagreements == 2 && has_text(&r, VK_DISAGREE, want) &&
	   has_text(&r, VK_DISAGREE, "uffd 1: fd 777: not open in the kernel"),
	   "verify: unknown uffd fd, and a model fd that is not open");
	verify_report_free(&r);
	um_state_free(&st);

	/* 9. a uffd serving another process's memory: ranges not checked here */
	build_state(&st);
	u = um_uffd_by_id(&st, 1);
	u->mm_pid = 1;
	rc = run_verify(&st, &r);
	ok(rc == 1 && r.disagreements == 2 && verify_report_count(&r, VK_DISAGREE, VC_SMAPS, 0) == 2 &&
	   has_text(&r, VK_NOTE, "uffd 1 serves the memory of another process (pid 1)") &&
	   r.nranges == 1, "verify: mm_pid elsewhere: its ranges are not this process's");
	verify_report_free(&r);
	um_state_free(&st);

	/* 10. WP_ASYNC: a kernel bit the model lacks is a disagreement */
	build_state(&st);
	struct um_uffd *b = um_uffd_by_id(&st, 2);
	um_wp_set(&b->wp, (uintptr_t)amem + 7 * PG, (uintptr_t)amem + 9 * PG, false);
	rc = run_verify(&st, &r);
	ok(rc == 1 && r.disagreements == 1 && verify_report_count(&r, VK_DISAGREE, VC_PAGEMAP, 2) == 1,
	   "verify: WP_ASYNC still requires kernel WP bits to be in the model");
	verify_report_free(&r);
	um_state_free(&st);

	/* 11. the model contradicts itself */
	build_state(&st);
	b = um_uffd_by_id(&st, 2);
	struct um_mapping m;
	anon_map(&m, A(50), A(51));
	um_register(b, A(50), A(51), UFFDIO_REGISTER_MODE_MISSING, 0, &m, 1);
	um_register(b, A(R2_START), A(R2_START + 1), UFFDIO_REGISTER_MODE_MISSING, 0, &m, 0);
	um_wp_set(&b->wp, A(51), A(52), true); /* b has nothing registered there */
	rc = run_verify(&st, &r);
	ok(rc == 1 && verify_report_count(&r, VK_DISAGREE, VC_MODEL, 0) == 2 &&
	   has_text(&r, VK_DISAGREE, "overlaps uffd") &&
	   has_text(&r, VK_DISAGREE, "write-protected outside its registered ranges") &&
	   verify_report_count(&r, VK_DISAGREE, VC_SMAPS, 2) == 1 && r.disagreements == 3,
	   "verify: overlapping uffds and WP outside registered ranges are model disagreements");
	verify_report_free(&r);
	um_state_free(&st);

	/* 12. an empty model of a process with uffds */
	um_state_init(&st, getpid());
	rc = run_verify(&st, &r);
	ok(rc == 1 && r.disagreements == 3 + 3 && verify_report_count(&r, VK_DISAGREE, VC_FDS, 0) == 3 &&
	   verify_report_count(&r, VK_DISAGREE, VC_SMAPS, 0) == 3,
	   "verify: empty model: 3 ranges and 3 uffd fds unknown");
	verify_report_free(&r);
	um_state_free(&st);
}

/* pagemap entries: a uffd-wp PTE marker is not a page to read. */
static void test_pm_entries(void)
{
	const uint64_t present = 1ull << 63, swap = 1ull << 62, wp = 1ull << 57;
	ok(pf_pm_holds_page_given(present | 0x1234, false), "pagemap: a present page holds a page");
	ok(!pf_pm_holds_page_given(0, true), "pagemap: a none entry holds none");
	ok(!pf_pm_holds_page_given(swap | wp | 0x3f, true),
	   "pagemap: a uffd-wp marker (swap type 31, offset 1) holds none, swap or not");
	ok(pf_pm_holds_page_given(swap | wp | (7ull << 5) | 1, false),
	   "pagemap: a swapped-out page (type 1) holds a page");
	ok(!pf_pm_holds_page_given(swap | wp, false) && pf_pm_holds_page_given(swap | wp, true),
	   "pagemap: a swap entry with the frame hidden is a marker only on a system without swap");
}

int main(void)
{
	test_text_parsers();
	test_pm_entries();
	test_own_proc();
	int fd = uffd_create(O_CLOEXEC);
	if (fd < 0) {
		skip(20, "%s", uffd_skip_reason(errno));
		return done_testing();
	}
	close(fd);
	if (setup_uffds() < 0) {
		fail("set up real uffds: %s", strerror(errno));
		return done_testing();
	}
	test_verify();
	return done_testing();
}
