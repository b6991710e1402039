/* scn_writeprotect.c - scenario: write protection.  UFFDIO_WRITEPROTECT of a
 * whole range, of runs and single pages, unprotection (with and without
 * DONTWAKE); COPY with MODE_WP; CONTINUE with MODE_WP on shmem; protection
 * of unpopulated anonymous memory with and without
 * UFFD_FEATURE_WP_UNPOPULATED; WP faults taken by one thread and handled by
 * another, with the model's pending list checked while unresolved.  After
 * every step the model must match the kernel (status --verify) and its WP
 * page count must equal the pages whose pagemap bit 57 is set. */
#include <poll.h>
#include <pthread.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096UL
#define M_MISSING UFFDIO_REGISTER_MODE_MISSING
#define M_WP UFFDIO_REGISTER_MODE_WP
#define M_MINOR UFFDIO_REGISTER_MODE_MINOR
#define VERIFY(...) do { char l_[160]; snprintf(l_, sizeof(l_), __VA_ARGS__); \
	is_int(shim_verify_self(l_), 0, "verify: %s", l_); } while (0)

#include "scn_common.h"


static int reg(int uffd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uint64_t)addr, len}, .mode = mode};
	return ioctl(uffd, UFFDIO_REGISTER, &r);
}

static int wprot(int uffd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_writeprotect w = {.range = {(uint64_t)addr, len}, .mode = mode};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w);
}

/* A thread that writes one byte (and blocks while the page is protected). */
struct writer {
	pthread_t t;
	volatile char *addr;
	char val;
	volatile int done;
};

static void *writer_main(void *p)
{
	struct writer *w = p;
	*w->addr = w->val;
	w->done = 1;
	return NULL;
}

static bool read_msg(int uffd, struct uffd_msg *m)
{
	struct pollfd pfd = {.fd = uffd, .events = POLLIN};
	if (poll(&pfd, 1, 5000) != 1)
		return false;
	return read(uffd, m, sizeof(*m)) == (ssize_t)sizeof(*m);
}

/* A write to a protected page: the message, the pending entry while it is
 * unresolved, then resolution by unprotecting (with or without DONTWAKE). */
static void wp_fault(int uffd, char *page, bool dontwake)
{
	const char *how = dontwake ? "DONTWAKE+WAKE" : "unprotect";
	struct writer w = {.addr = page + 100, .val = 0x77};
	pthread_create(&w.t, NULL, writer_main, &w);
	struct uffd_msg m;
	uint64_t want = UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE;
	ok(read_msg(uffd, &m) && m.event == UFFD_EVENT_PAGEFAULT &&
	   m.arg.pagefault.address == (uint64_t)page && m.arg.pagefault.flags == want,
	   "%s: WP|WRITE fault message for the page", how);
	struct juffd u;
	if (js_load("pending") == 0 && ju_fd(uffd, &u)) {
		is_int(u.npending, 1, "%s: the model lists 1 pending fault", how);
		ok(u.pend_addr[0] == (uint64_t)page && u.pend_flags[0] == want,
		   "%s: pending fault at the page, flags WP|WRITE", how);
	}
	ok(!w.done, "%s: the writer is still blocked", how);
	VERIFY("%s: WP fault pending", how);
	if (dontwake) {
		is_int(wprot(uffd, page, PG, UFFDIO_WRITEPROTECT_MODE_DONTWAKE), 0,
		       "%s: unprotect with DONTWAKE", how);
		if (js_load("dontwake") == 0 && ju_fd(uffd, &u))
			is_int(u.npending, 1, "%s: still pending after DONTWAKE", how);
		VERIFY("%s: unprotected, not woken", how);
		struct uffdio_range r = {(uint64_t)page, PG};
		is_int(ioctl(uffd, UFFDIO_WAKE, &r), 0, "%s: WAKE", how);
	} else {
		is_int(wprot(uffd, page, PG, 0), 0, "%s: unprotect (and wake)", how);
	}
	pthread_join(w.t, NULL);
	is_int(page[100], 0x77, "%s: the write landed", how);
	if (js_load("resolved") == 0 && ju_fd(uffd, &u))
		is_int(u.npending, 0, "%s: nothing pending once resolved", how);
	VERIFY("%s: WP fault resolved", how);
}

int main(int argc, char **argv)
{
	(void)argc;
	shim_reexec_if_needed(argv);
	int uffd = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		skip_all("%s", uffd_skip_reason(errno));
	if (uffd_api(uffd, 0, NULL) < 0)
		skip_all("UFFDIO_API: %s", strerror(errno));
	struct juffd u;

	/* ---- whole range, runs, single pages ---- */
	char *p = map_anon(64);
	memset(p, 0x11, 64 * PG);
	is_int(reg(uffd, p, 64 * PG, M_WP), 0, "REGISTER 64 populated pages WP");
	wp_matches(uffd, p, 64, 0, "registered");
	is_int(wprot(uffd, p, 64 * PG, UFFDIO_WRITEPROTECT_MODE_WP), 0, "protect all 64 pages");
	wp_matches(uffd, p, 64, 64, "all protected");
	VERIFY("all protected");
	is_int(wprot(uffd, p + 10 * PG, 10 * PG, 0), 0, "unprotect pages [10, 20)");
	wp_matches(uffd, p, 64, 54, "[10,20) unprotected");
	VERIFY("[10,20) unprotected");
	is_int(wprot(uffd, p + 12 * PG, PG, UFFDIO_WRITEPROTECT_MODE_WP), 0, "protect page 12");
	is_int(wprot(uffd, p + 15 * PG, PG, UFFDIO_WRITEPROTECT_MODE_WP), 0, "protect page 15");
	is_int(wprot(uffd, p, PG, 0), 0, "unprotect page 0");
	wp_matches(uffd, p, 64, 55, "single pages");
	if (js_load("runs") == 0 && ju_fd(uffd, &u))
		is_int(shim_json_count(jkey(u.obj, u.end, "wp_runs"), "\"pages\":"), 4,
		       "the model has 4 WP runs: [1,10) 12 15 [20,64)");
	VERIFY("single pages");
	/* Writes to unprotected pages just happen; no message. */
	p[0] = 1;
	p[11 * PG] = 1;
	struct pollfd pfd = {.fd = uffd, .events = POLLIN};
	is_int(poll(&pfd, 1, 0), 0, "writes to unprotected pages raise no message");

	/* A refused WRITEPROTECT (memory not registered) changes nothing. */
	char *x = map_anon(4);
	memset(x, 1, 4 * PG);
	errno = 0;
	ok(wprot(uffd, x, 4 * PG, UFFDIO_WRITEPROTECT_MODE_WP) == -1 && errno == ENOENT,
	   "WRITEPROTECT of unregistered memory fails with ENOENT (errno %s)", strerror(errno));
	is_int(pm_wp_count(x, 4), 0, "the kernel protected nothing there");
	if (js_load("refused") == 0 && ju_fd(uffd, &u)) {
		is_int(u.wp_pages, 55, "the model's WP page count is unchanged");
		is_int(ju_counter(&u, "ioctl_errors"), 1, "the refused call is counted as an error");
		is_int(u.nranges, 1, "still one range");
	}
	VERIFY("refused WRITEPROTECT");
	/* Over a WP range and then a MISSING-only one: the kernel protects the
	 * first VMA, then fails with ENOENT at the second. */
	is_int(reg(uffd, x, 2 * PG, M_WP), 0, "partial: REGISTER pages [0, 2) WP");
	is_int(reg(uffd, x + 2 * PG, 2 * PG, M_MISSING), 0, "partial: pages [2, 4) MISSING");
	errno = 0;
	ok(wprot(uffd, x, 4 * PG, UFFDIO_WRITEPROTECT_MODE_WP) == -1 && errno == ENOENT,
	   "partial: protecting [0, 4) fails with ENOENT (errno %s)", strerror(errno));
	wp_matches(uffd, x, 4, 2, "partial: the WP part was protected before the failure");
	VERIFY("partially applied WRITEPROTECT");
	errno = 0;
	ok(wprot(uffd, x, 4 * PG, 0) == -1 && errno == ENOENT,
	   "partial: unprotecting [0, 4) fails with ENOENT too");
	wp_matches(uffd, x, 4, 0, "partial: the WP part was unprotected before the failure");
	VERIFY("partially applied unprotect");
	munmap(x, 4 * PG);
	VERIFY("partial area unmapped");

	/* ---- WP faults handled by this thread while a writer waits ---- */
	wp_fault(uffd, p + 30 * PG, false);
	wp_fault(uffd, p + 31 * PG, true);
	wp_matches(uffd, p, 64, 53, "after two WP faults");
	if (js_load("faults") == 0 && ju_fd(uffd, &u))
		is_int(ju_counter(&u, "faults_wp"), 2, "2 WP faults counted");
	struct uffdio_range all = {(uint64_t)p, 64 * PG};
	is_int(ioctl(uffd, UFFDIO_UNREGISTER, &all), 0, "UNREGISTER clears every WP bit");
	wp_matches(uffd, p, 64, 0, "unregistered");
	VERIFY("unregistered");

	/* ---- COPY with MODE_WP ---- */
	char *q = map_anon(16);
	is_int(reg(uffd, q, 16 * PG, M_MISSING | M_WP), 0, "REGISTER 16 empty pages MISSING|WP");
	char src[4 * PG];
	memset(src, 0x5c, sizeof(src));
	struct uffdio_copy c = {.dst = (uint64_t)q, .src = (uint64_t)src, .len = 4 * PG,
				.mode = UFFDIO_COPY_MODE_WP};
	is_int(ioctl(uffd, UFFDIO_COPY, &c), 0, "COPY pages [0, 4) with MODE_WP");
	c = (struct uffdio_copy){.dst = (uint64_t)q + 4 * PG, .src = (uint64_t)src, .len = 4 * PG};
	is_int(ioctl(uffd, UFFDIO_COPY, &c), 0, "COPY pages [4, 8) without MODE_WP");
	ok(q[0] == 0x5c && q[7 * PG] == 0x5c, "the copied pages read back");
	wp_matches(uffd, q, 16, 4, "COPY_MODE_WP");
	VERIFY("COPY_MODE_WP");
	wp_fault(uffd, q + 2 * PG, false);
	wp_matches(uffd, q, 16, 3, "WP fault on a page copied with MODE_WP");
	munmap(q, 16 * PG);
	VERIFY("COPY area unmapped");

	/* ---- CONTINUE with MODE_WP on shmem ---- */
	int mfd = memfd_create("scn-wp", MFD_CLOEXEC);
	char file[8 * PG];
	memset(file, 'f', sizeof(file));
	ok(mfd >= 0 && pwrite(mfd, file, sizeof(file), 0) == (ssize_t)sizeof(file),
	   "memfd with 8 pages in the page cache");
	char *s = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	is_int(reg(uffd, s, 8 * PG, M_MINOR | M_WP), 0, "REGISTER shmem MINOR|WP");
	struct uffdio_continue ct = {.range = {(uint64_t)s, 2 * PG},
				     .mode = UFFDIO_CONTINUE_MODE_WP};
	is_int(ioctl(uffd, UFFDIO_CONTINUE, &ct), 0, "CONTINUE pages [0, 2) with MODE_WP");
	ct = (struct uffdio_continue){.range = {(uint64_t)s + 2 * PG, 2 * PG}};
	is_int(ioctl(uffd, UFFDIO_CONTINUE, &ct), 0, "CONTINUE pages [2, 4) without MODE_WP");
	ok(s[0] == 'f' && s[3 * PG] == 'f', "the continued pages read the file");
	wp_matches(uffd, s, 8, 2, "CONTINUE_MODE_WP");
	VERIFY("CONTINUE_MODE_WP");
	wp_fault(uffd, s + PG, false);
	wp_matches(uffd, s, 8, 1, "WP fault on a shmem page");
	munmap(s, 8 * PG);
	close(mfd);
	VERIFY("shmem unmapped");

	/* ---- unpopulated anonymous memory ---- */
	char *r = map_anon(16);
	memset(r, 0x22, 8 * PG); /* pages [0, 8) populated, [8, 16) not */
	is_int(reg(uffd, r, 16 * PG, M_WP), 0, "REGISTER half-populated memory WP");
	is_int(wprot(uffd, r, 16 * PG, UFFDIO_WRITEPROTECT_MODE_WP), 0,
	       "protect all 16 pages (no WP_UNPOPULATED)");
	wp_matches(uffd, r, 16, 8, "no WP_UNPOPULATED: only populated pages protected");
	VERIFY("WP without WP_UNPOPULATED");

	int uffd2 = uffd_create(O_CLOEXEC);
	struct uffdio_api api;
	if (uffd_api(uffd2, UFFD_FEATURE_WP_UNPOPULATED, &api) < 0) {
		skip(1, "UFFD_FEATURE_WP_UNPOPULATED: %s", strerror(errno));
	} else {
		if (js_load("api2") == 0 && ju_fd(uffd2, &u))
			is_u64(u.features_requested, UFFD_FEATURE_WP_UNPOPULATED,
			       "the model has the requested WP_UNPOPULATED");
		char *r2 = map_anon(16);
		memset(r2, 0x22, 8 * PG);
		is_int(reg(uffd2, r2, 16 * PG, M_WP), 0, "WP_UNPOPULATED: REGISTER WP");
		is_int(wprot(uffd2, r2, 16 * PG, UFFDIO_WRITEPROTECT_MODE_WP), 0,
		       "WP_UNPOPULATED: protect all 16 pages");
		wp_matches(uffd2, r2, 16, 16, "WP_UNPOPULATED: every page protected");
		VERIFY("WP with WP_UNPOPULATED");
		is_int(wprot(uffd2, r2 + 12 * PG, 4 * PG, 0), 0,
		       "WP_UNPOPULATED: unprotect empty pages [12, 16)");
		wp_matches(uffd2, r2, 16, 12, "WP_UNPOPULATED: [12,16) unprotected");
		VERIFY("WP_UNPOPULATED partly unprotected");
		close(uffd2);
		is_int(pm_wp_count(r2, 16), 0, "WP_UNPOPULATED: closing the uffd dropped every bit");
		if (js_load("closed") == 0)
			is_int(js_nuffds(), 1, "the closed uffd left the model");
		munmap(r2, 16 * PG);
		VERIFY("uffd2 closed");
	}
	close(uffd);
	is_int(pm_wp_count(r, 16), 0, "closing the last uffd unprotected everything");
	VERIFY("end");
	return done_testing();
}
