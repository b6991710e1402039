/* trace_report_test.c - uffd-record merge-trace and report on synthetic traces.
 *
 * Writes two segment files (pids 100 and 101) with known records and known
 * fault latencies, merges them with `uffd-record merge-trace`, checks the
 * merged file (count, order, header, mode, segments removed, decoys kept),
 * checks `uffd-record report --json` figures, and checks that invalid files
 * (missing, empty, truncated, bad magic/version/record size, garbage, random
 * mutations) end with exit 2 and a message, never a crash.  TAP output.
 * Needs UFFDSHIM_BUILD (set by `make check`). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_helpers.h"
#include "trace_format.h"
#include "trace_gen.h"

/* ---- running uffd-record ------------------------------------------------ */

static char tool[4096];
static char tmpdir[4096];

struct run {
	int status; /* from waitpid */
	char *out, *err;
};

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

static int exited(const struct run *r, int code)
{
	return WIFEXITED(r->status) && WEXITSTATUS(r->status) == code;
}

static const char *status_str(const struct run *r)
{
	static char buf[64];

	if (WIFEXITED(r->status))
		snprintf(buf, sizeof(buf), "exit %d", WEXITSTATUS(r->status));
	else if (WIFSIGNALED(r->status))
		snprintf(buf, sizeof(buf), "killed by signal %d", WTERMSIG(r->status));
	else
		snprintf(buf, sizeof(buf), "status 0x%x", r->status);
	return buf;
}

/* Run `uffd-record ARGS...` (NULL-terminated), capturing stdout and stderr. */
static struct run run_tool(const char *arg0, ...)
{
	const char *argv[16];
	char outp[4200], errp[4200];
	struct run r = { -1, NULL, NULL };
	va_list ap;
	int n = 0;
	pid_t pid;

	argv[n++] = tool;
	argv[n++] = arg0;
	va_start(ap, arg0);
	while (n < 15 && (argv[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;

	snprintf(outp, sizeof(outp), "%s/.stdout", tmpdir);
	snprintf(errp, sizeof(errp), "%s/.stderr", tmpdir);
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(127);
		alarm(30); /* a hang is a failure, not a stuck test suite */
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR)
		;
	r.out = tg_read_file(outp, NULL);
	r.err = tg_read_file(errp, NULL);
	if (!r.out)
		r.out = strdup("");
	if (!r.err)
		r.err = strdup("");
	unlink(outp);
	unlink(errp);
	return r;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path);
}

static char *path_in(const char *name)
{
	static char bufs[4][4200];
	static int i;
	char *b = bufs[i++ % 4];

	snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, name);
	return b;
}

static int exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0;
}

/* ---- the scenario ------------------------------------------------------- */

#define PS 4096u
#define T0 1000000000ull
#define US 1000ull
#define INO_A 7
#define INO_B 9

/* Segment of pid 100 ("parent"): owns uffd ino 7.  Slot order is not time
 * order for API/REGISTER, and one unused slot sits in the middle. */
static size_t scenario_a(struct ut_record *r)
{
	size_t n = 0;
	const int64_t EEXIST_ = -17;

	r[n++] = tg_rec(T0 + 1 * US, 100, UT_CREATE, -1, 3, INO_A, 0, 1, 0, 0, 0);
	r[n++] = tg_rec(T0 + 3 * US, 100, UT_REGISTER, 3, 0, INO_A, 0x10000000, 0x400000, 3, 0, 0);
	r[n++] = tg_rec(T0 + 2 * US, 100, UT_API, 3, 0, INO_A, 0, 0, 0, 0, 0);
	r[n++] = tg_rec(T0 + 4 * US, 100, UT_PROC_FORK, -1, 101, 0, 101, 0, 0, 0, 0);
	memset(&r[n++], 0, sizeof(*r)); /* reserved, never written */
	r[n++] = tg_rec(T0 + 5 * US, 100, UT_SEND, 3, 0, INO_A, 101, 0, 0, 0, 0);
	/* missing fault, COPY after 100 us */
	r[n++] = tg_rec(T0 + 10 * US, 100, UT_MSG_PAGEFAULT, 3, 0, INO_A, 0x10000000, 100, 0, 0, 0);
	r[n++] = tg_rec(T0 + 110 * US, 100, UT_COPY, 3, 0, INO_A, 0x10000000, PS, 0, PS, 0);
	/* missing (write) fault, ZEROPAGE after 300 us */
	r[n++] = tg_rec(T0 + 200 * US, 100, UT_MSG_PAGEFAULT, 3, 0, INO_A, 0x10001000, 100, 1, 0, 0);
	r[n++] = tg_rec(T0 + 500 * US, 100, UT_ZEROPAGE, 3, 0, INO_A, 0x10001000, PS, 0, PS, 0);
	/* missing fault; failed COPY (EEXIST) does not count; WAKE after 200 us */
	r[n++] = tg_rec(T0 + 600 * US, 100, UT_MSG_PAGEFAULT, 3, 0, INO_A, 0x10002000, 100, 0, 0, 0);
	r[n++] = tg_rec(T0 + 650 * US, 100, UT_COPY, 3, EEXIST_, INO_A, 0x10002000, PS, 0,
			(uint64_t)EEXIST_, 0);
	r[n++] = tg_rec(T0 + 800 * US, 100, UT_WAKE, 3, 0, INO_A, 0x10002000, PS, 0, 0, 0);
	/* wp fault: protect, fault, protect again (no), unprotect 64K after 40 us */
	r[n++] = tg_rec(T0 + 900 * US, 100, UT_WRITEPROTECT, 3, 0, INO_A, 0x10003000, PS, 1, 0, 0);
	r[n++] = tg_rec(T0 + 1000 * US, 100, UT_MSG_PAGEFAULT, 3, 0, INO_A, 0x10003000, 100, 3, 0, 0);
	r[n++] = tg_rec(T0 + 1010 * US, 100, UT_WRITEPROTECT, 3, 0, INO_A, 0x10003000, PS, 1, 0, 0);
	r[n++] = tg_rec(T0 + 1040 * US, 100, UT_WRITEPROTECT, 3, 0, INO_A, 0x10000000, 0x10000, 0, 0, 0);
	/* missing fault; a COPY of 2 pages that copied only the first (d) does
	 * not reach it; MOVE (d = 0: range from b) after 300 us does */
	r[n++] = tg_rec(T0 + 1100 * US, 100, UT_MSG_PAGEFAULT, 3, 0, INO_A, 0x10005000, 100, 0, 0, 0);
	r[n++] = tg_rec(T0 + 1150 * US, 100, UT_COPY, 3, 0, INO_A, 0x10004000, 2 * PS, 0, PS, 0);
	r[n++] = tg_rec(T0 + 1400 * US, 100, UT_MOVE, 3, 0, INO_A, 0x10005000, PS, 0, 0, 0x30000000);
	return n; /* 20 slots, 19 used */
}

/* Segment of pid 101 ("child"): owns uffd ino 9, and serves ino 7 too
 * (received over SCM_RIGHTS).  Its first record ties with pid 100's fault
 * at T0+600us; pid 100 started first, so it comes first in the merge. */
static size_t scenario_b(struct ut_record *r)
{
	size_t n = 0;

	r[n++] = tg_rec(T0 + 600 * US, 101, UT_CREATE, -1, 4, INO_B, 0, 1, 0, 0, 0);
	r[n++] = tg_rec(T0 + 610 * US, 101, UT_RECV, 5, 0, INO_A, 100, 0, 0, 0, 0);
	r[n++] = tg_rec(T0 + 620 * US, 101, UT_API, 4, 0, INO_B, 0, 0, 0, 0, 0);
	r[n++] = tg_rec(T0 + 630 * US, 101, UT_REGISTER, 4, 0, INO_B, 0x20000000, 0x10000, 4, 0, 0);
	/* minor fault on ino 9: CONTINUE on ino 7 does not count; on ino 9 after 10 us */
	r[n++] = tg_rec(T0 + 700 * US, 101, UT_MSG_PAGEFAULT, 4, 0, INO_B, 0x20001000, 101, 4, 0, 0);
	r[n++] = tg_rec(T0 + 705 * US, 101, UT_CONTINUE, 5, 0, INO_A, 0x20001000, PS, 0, PS, 0);
	r[n++] = tg_rec(T0 + 710 * US, 101, UT_CONTINUE, 4, 0, INO_B, 0x20001000, PS, 0, PS, 0);
	/* missing fault on ino 9, never resolved */
	r[n++] = tg_rec(T0 + 720 * US, 101, UT_MSG_PAGEFAULT, 4, 0, INO_B, 0x20002000, 101, 0, 0, 0);
	/* a fault on ino 7 read and resolved by pid 101 after 20 us */
	r[n++] = tg_rec(T0 + 730 * US, 101, UT_MSG_PAGEFAULT, 5, 0, INO_A, 0x10006000, 101, 0, 0, 0);
	r[n++] = tg_rec(T0 + 750 * US, 101, UT_COPY, 5, 0, INO_A, 0x10006000, PS, 0, PS, 0);
	r[n++] = tg_rec(T0 + 1500 * US, 101, UT_CLOSE, 4, 0, INO_B, 0, 0, 0, 0, 0);
	r[n++] = tg_rec(T0 + 1600 * US, 101, UT_UNREGISTER, 4, -22, INO_B, 0x20000000, 0x10000, 0, 0, 0);
	return n; /* 12 */
}

#define N_MERGED 31

static int contains(const char *hay, const char *needle)
{
	return hay && strstr(hay, needle) != NULL;
}

static int check_json(const struct run *r, const char *needle)
{
	static int shown;

	if (ok(contains(r->out, needle), "report --json has %s", needle))
		return 1;
	if (!shown++)
		diag("the JSON was: %s", r->out);
	return 0;
}

static int exit2_with_message(const char *what, const char *file)
{
	struct run r = run_tool("report", file, "--json", NULL);
	int good = exited(&r, 2) && r.err[0] != '\0' && r.out[0] == '\0';

	ok(good, "report on %s: exit 2 with a message (%s)", what, status_str(&r));
	if (r.err[0])
		note("stderr: %.*s", (int)strcspn(r.err, "\n"), r.err);
	run_free(&r);
	return good;
}

static struct th_rng rng_st;

static uint32_t rng(void)
{
	return (uint32_t)th_rng_next(&rng_st);
}

int main(void)
{
	const char *build = getenv("UFFDSHIM_BUILD");
	const char *tmp = getenv("TMPDIR");
	struct ut_record ra[32], rb[32];
	struct ut_header ha, hb;
	size_t na, nb, len;
	struct run r;
	char *buf;
	struct stat sb;

	if (!build || !*build)
		skip_all("UFFDSHIM_BUILD is not set (run through make check)");
	snprintf(tool, sizeof(tool), "%s/uffd-record", build);
	if (access(tool, X_OK) != 0) {
		printf("Bail out! %s: %s\n", tool, strerror(errno));
		return 1;
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s/trace_report_test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! mkdtemp %s: %s\n", tmpdir, strerror(errno));
		return 1;
	}
	note("working in %s", tmpdir);
	rng_st = th_rng_seed(12345);
	note("random seed %" PRIu64 " (UFFDSHIM_TEST_SEED)", rng_st.s);

	/* ---- segments and merge ---- */
	na = scenario_a(ra);
	nb = scenario_b(rb);
	ha = tg_header(100, "parent", T0, PS);
	hb = tg_header(101, "child", T0 + 500 * US, PS);
	if (tg_write_trace(path_in("trace.100"), &ha, ra, na, 8, 0) < 0 ||
	    tg_write_trace(path_in("trace.101"), &hb, rb, nb, 3, 40) < 0 ||
	    tg_write_bytes(path_in("trace.102"), "", 0) < 0 || /* died before its header */
	    tg_write_bytes(path_in("trace.tmp"), "x", 1) < 0 ||  /* decoys: not segments */
	    tg_write_bytes(path_in("trace.12a"), "x", 1) < 0 ||
	    tg_write_bytes(path_in("trace.100.bak"), "x", 1) < 0 ||
	    tg_write_bytes(path_in("other.100"), "x", 1) < 0) {
		printf("Bail out! writing segments: %s\n", strerror(errno));
		return 1;
	}
	/* a single segment can be reported directly (comm known, unsorted) */
	tg_write_trace(path_in("single.100"), &ha, ra, na, 2, 0);

	r = run_tool("merge-trace", path_in("trace"), NULL);
	ok(exited(&r, 0), "merge-trace succeeds (%s)", status_str(&r));
	ok(contains(r.err, "trace.101") && contains(r.err, "truncated"),
	       "merge warns about the truncated record of trace.101");
	ok(contains(r.err, "trace.102"), "merge warns about the empty segment trace.102");
	run_free(&r);
	ok(!exists(path_in("trace.100")) && !exists(path_in("trace.101")) &&
	       !exists(path_in("trace.102")), "segments removed after the merge");
	ok(exists(path_in("trace.tmp")) && exists(path_in("trace.12a")) &&
	       exists(path_in("trace.100.bak")) && exists(path_in("other.100")),
	       "files that are not segments are left alone");
	ok(stat(path_in("trace"), &sb) == 0 && (sb.st_mode & 07777) == 0600,
	       "merged trace has mode 0600");

	buf = tg_read_file(path_in("trace"), &len);
	if (!ok(buf && len == sizeof(struct ut_header) + N_MERGED * sizeof(struct ut_record),
		    "merged trace holds header + %d records (%zu bytes)", N_MERGED,
		    buf ? len : 0)) {
		printf("Bail out! cannot check the merged trace\n");
		return 1;
	} else {
		const struct ut_header *h = (const struct ut_header *)buf;
		const struct ut_record *m = (const struct ut_record *)(buf + sizeof(*h));
		int sorted = 1, i_api = -1, i_reg = -1, i_tie_a = -1, i_tie_b = -1;
		int n100 = 0, n101 = 0, junk = 0;

		ok(memcmp(h->magic, UT_MAGIC, 8) == 0 && h->version == UT_VERSION &&
		       h->header_size == sizeof(*h) && h->record_size == sizeof(*m) &&
		       h->page_size == PS, "merged header: magic, version, sizes, page size");
		ok(h->pid == 0 && strcmp(h->comm, "merged") == 0 && h->start_ns == T0,
		       "merged header: pid 0, comm \"merged\", start_ns = min of segments");
		for (int i = 0; i < N_MERGED; i++) {
			if (i && m[i].t_ns < m[i - 1].t_ns)
				sorted = 0;
			if (m[i].t_ns == 0 || m[i].t_ns == 0x5a5a5a5a5a5a5a5aull)
				junk++;
			n100 += m[i].pid == 100;
			n101 += m[i].pid == 101;
			if (m[i].pid == 100 && m[i].kind == UT_API)
				i_api = i;
			if (m[i].pid == 100 && m[i].kind == UT_REGISTER)
				i_reg = i;
			if (m[i].t_ns == T0 + 600 * US)
				*(m[i].pid == 100 ? &i_tie_a : &i_tie_b) = i;
		}
		ok(sorted, "merged records are in t_ns order");
		ok(!junk && n100 == 19 && n101 == 12,
		       "merged: 19 records of pid 100, 12 of pid 101, no unused or partial slot");
		ok(i_api >= 0 && i_reg >= 0 && i_api < i_reg,
		       "a segment's out-of-order slots are sorted");
		ok(i_tie_a >= 0 && i_tie_b == i_tie_a + 1,
		       "equal t_ns: the earlier-started segment's record comes first");
		ok(m[0].kind == UT_CREATE && m[0].pid == 100 &&
		       m[N_MERGED - 1].kind == UT_UNREGISTER, "first and last records");
	}
	free(buf);

	/* ---- the report ---- */
	r = run_tool("report", path_in("trace"), "--json", NULL);
	ok(exited(&r, 0), "report --json succeeds (%s)", status_str(&r));
	ok(r.out[0] == '{' && contains(r.out, "}\n") && strchr(r.out, '\n') ==
	       r.out + strlen(r.out) - 1, "report --json prints one JSON object on one line");
	check_json(&r, "\"merged\":true");
	check_json(&r, "\"records\":31,");
	check_json(&r, "\"duration_ns\":1600000,");
	check_json(&r, "{\"pid\":100,\"comm\":null,\"records\":19,\"parent\":null");
	check_json(&r, "{\"pid\":101,\"comm\":null,\"records\":12,\"parent\":100");
	check_json(&r, "\"uffd_count\":2,\"uffds\":[7,9]");
	check_json(&r, "\"create\":{\"count\":2,\"errors\":0}");
	check_json(&r, "\"copy\":{\"count\":4,\"errors\":1}");
	check_json(&r, "\"writeprotect\":{\"count\":3,\"errors\":0}");
	check_json(&r, "\"unregister\":{\"count\":1,\"errors\":1}");
	check_json(&r, "\"msg_pagefault\":{\"count\":8,\"errors\":0}");
	check_json(&r, "\"continue\":{\"count\":2,\"errors\":0}");
	check_json(&r, "\"move\":{\"count\":1,\"errors\":0}");
	check_json(&r, "\"faults\":{\"total\":8,\"missing\":6,\"wp\":1,\"minor\":1,\"unresolved\":1}");
	/* ino 7 missing: 100, 300, 200, 20, 300 us -> p50 200, p99 300, max 300 */
	check_json(&r, "{\"ino\":7,\"mode\":\"missing\",\"faults\":5,\"resolved\":5,"
		   "\"p50_us\":200.000,\"p99_us\":300.000,\"max_us\":300.000,\"unresolved\":0}");
	check_json(&r, "{\"ino\":7,\"mode\":\"wp\",\"faults\":1,\"resolved\":1,"
		   "\"p50_us\":40.000,\"p99_us\":40.000,\"max_us\":40.000,\"unresolved\":0}");
	check_json(&r, "{\"ino\":9,\"mode\":\"missing\",\"faults\":1,\"resolved\":0,"
		   "\"p50_us\":null,\"p99_us\":null,\"max_us\":null,\"unresolved\":1}");
	check_json(&r, "{\"ino\":9,\"mode\":\"minor\",\"faults\":1,\"resolved\":1,"
		   "\"p50_us\":10.000,");
	/* windows: ino 7's 2 MiB window inside its 4 MiB registration; ino 9's
	 * 64 KiB registration as is */
	check_json(&r, "\"busiest\":[{\"ino\":7,\"start\":\"0x10000000\",\"end\":\"0x10200000\","
		   "\"faults\":6,\"missing\":5,\"wp\":1,\"minor\":0},{\"ino\":9,\"start\":"
		   "\"0x20000000\",\"end\":\"0x20010000\",\"faults\":2,\"missing\":1,\"wp\":0,"
		   "\"minor\":1}]");
	run_free(&r);

	r = run_tool("report", path_in("trace"), "--json", "--top", "1", NULL);
	ok(exited(&r, 0) && contains(r.out, "\"top\":1,\"busiest\":[{\"ino\":7,") &&
	       !contains(r.out, "\"start\":\"0x20000000\""), "--top 1 shows one window");
	run_free(&r);

	r = run_tool("report", path_in("trace"), NULL);
	ok(exited(&r, 0) && contains(r.out, "msg_pagefault") && contains(r.out, "200.000") &&
	       r.err[0] == '\0', "text report succeeds");
	run_free(&r);

	r = run_tool("report", path_in("single.100"), "--json", NULL);
	ok(exited(&r, 0) && contains(r.out, "\"merged\":false") &&
	       contains(r.out, "{\"pid\":100,\"comm\":\"parent\"") &&
	       contains(r.out, "\"records\":19,"), "report on a single segment names its comm");
	run_free(&r);

	/* ---- merging nothing, and an invalid segment ---- */
	r = run_tool("merge-trace", path_in("none"), NULL);
	ok(exited(&r, 0) && stat(path_in("none"), &sb) == 0 &&
	       sb.st_size == sizeof(struct ut_header), "no segments: header-only trace");
	run_free(&r);
	r = run_tool("report", path_in("none"), "--json", NULL);
	ok(exited(&r, 0) && contains(r.out, "\"records\":0,") &&
	       contains(r.out, "\"uffd_count\":0"), "report on an empty trace");
	run_free(&r);

	tg_write_trace(path_in("bad.200"), &ha, ra, 3, 0, 0);
	tg_write_bytes(path_in("bad.201"), "this is not a trace segment at all, no no no no no"
		       "no no no no no no no no no no no no no no no no", 100);
	r = run_tool("merge-trace", path_in("bad"), NULL);
	ok(!exited(&r, 0) && WIFEXITED(r.status) && contains(r.err, "bad.201") &&
	       exists(path_in("bad.201")) && !exists(path_in("bad.200")) &&
	       stat(path_in("bad"), &sb) == 0 &&
	       sb.st_size == sizeof(struct ut_header) + 3 * sizeof(struct ut_record),
	       "invalid segment: merge fails, keeps it, still merges the valid one");
	run_free(&r);

	/* ---- invalid files ---- */
	{
		char *good = tg_read_file(path_in("trace"), &len);
		char *bad = malloc(len + 8192);
		struct ut_header *bh = (struct ut_header *)bad;

		exit2_with_message("a missing file", path_in("does-not-exist"));
		tg_write_bytes(path_in("zero"), "", 0);
		exit2_with_message("a zero-length file", path_in("zero"));
		tg_write_bytes(path_in("trunc"), good, len - 30);
		exit2_with_message("a file truncated inside a record", path_in("trunc"));
		tg_write_bytes(path_in("trunch"), good, 20);
		exit2_with_message("a file truncated inside the header", path_in("trunch"));

		memcpy(bad, good, len);
		memcpy(bh->magic, "UFFDTRX", 8);
		tg_write_bytes(path_in("magic"), bad, len);
		exit2_with_message("a bad magic", path_in("magic"));

		memcpy(bad, good, len);
		bh->version = 2;
		tg_write_bytes(path_in("version"), bad, len);
		exit2_with_message("an unknown version", path_in("version"));

		memcpy(bad, good, len);
		bh->record_size = 64;
		tg_write_bytes(path_in("recsize"), bad, len);
		exit2_with_message("a bad record size", path_in("recsize"));

		memcpy(bad, good, len);
		bh->header_size = 0xfffffff8u;
		tg_write_bytes(path_in("hdrsize"), bad, len);
		exit2_with_message("an absurd header size", path_in("hdrsize"));

		memcpy(bad, good, len);
		bh->page_size = 0;
		tg_write_bytes(path_in("pagesize"), bad, len);
		exit2_with_message("page size 0", path_in("pagesize"));

		exit2_with_message("a directory", tmpdir);

		{
			int all = 1;

			for (int i = 0; i < 20; i++) {
				size_t n = 1 + rng() % 8000;

				for (size_t j = 0; j < n; j++)
					bad[j] = (char)rng();
				tg_write_bytes(path_in("garbage"), bad, n);
				r = run_tool("report", path_in("garbage"), NULL);
				if (!exited(&r, 2) || !r.err[0]) {
					all = 0;
					note("garbage %d (%zu bytes): %s", i, n, status_str(&r));
				}
				run_free(&r);
			}
			ok(all, "random garbage: exit 2 with a message, 20 times");
		}
		{
			/* valid header, mutated fields and records: 0 or 2, never a crash */
			int all = 1;

			for (int i = 0; i < 200; i++) {
				size_t n = len;

				memcpy(bad, good, len);
				for (int k = 1 + (int)(rng() % 16); k > 0; k--) {
					size_t off = 8 + rng() % (len - 8);

					bad[off] = (char)rng();
				}
				if (i % 4 == 0) { /* and whole random records */
					for (size_t j = sizeof(struct ut_header); j < len; j++)
						if (rng() % 3 == 0)
							bad[j] = (char)rng();
				}
				if (i % 10 == 0) /* bigger, with a tail of garbage */
					n = len + rng() % 4096;
				for (size_t j = len; j < n; j++)
					bad[j] = (char)rng();
				tg_write_bytes(path_in("mutant"), bad, n);
				r = run_tool("report", path_in("mutant"), i % 2 ? "--json" : "--top=3",
					     NULL);
				if (!(exited(&r, 0) || (exited(&r, 2) && r.err[0]))) {
					all = 0;
					note("mutant %d: %s", i, status_str(&r));
				}
				run_free(&r);
			}
			ok(all, "200 mutated traces: exit 0 or 2, never a crash");
		}
		free(good);
		free(bad);
	}

	/* ---- usage ---- */
	r = run_tool("report", NULL);
	ok(exited(&r, 2) && r.err[0], "report without FILE: exit 2 (%s)", status_str(&r));
	run_free(&r);
	r = run_tool("report", path_in("trace"), "--top", "-1", NULL);
	ok(exited(&r, 2) && r.err[0], "report --top -1: exit 2 (%s)", status_str(&r));
	run_free(&r);
	r = run_tool("report", path_in("trace"), "--bogus", NULL);
	ok(exited(&r, 2) && r.err[0], "report --bogus: exit 2 (%s)", status_str(&r));
	run_free(&r);

	if (!th_state.failed && nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		note("could not remove %s", tmpdir); /* kept on failure, as evidence */
	return done_testing();
}
