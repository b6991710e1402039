/* minor_shmem - userfaultfd MINOR faults on shared memory (memfd).
 *
 * A 4 MiB memfd is mapped twice: an "alias" view that the handler uses to
 * write page-cache contents, and the view that the program uses, registered
 * MODE_MINOR (UFFD_FEATURE_MINOR_SHMEM).  The page cache is first filled with
 * stale data through the alias.  When the program touches a page of its view,
 * the page is in the page cache but not mapped there, so it gets a MINOR
 * fault: the handler writes the fresh contents through the alias, then
 * UFFDIO_CONTINUE maps the page-cache page into the registered view.  The
 * program checks the fresh contents, one MINOR fault per page touched, that
 * untouched pages still hold the stale data, and that both views (and the
 * file) share the same pages.
 *
 * Restart after a checkpoint (uffd-replay, see demo_common.h): the shim
 * brings the registered view back on a new memfd holding the pages that were
 * mapped in it (the touched ones); the alias is not registered, so it is not
 * part of the checkpoint.  The demo opens that memfd through
 * /proc/self/map_files (root or CAP_CHECKPOINT_RESTORE), maps the alias from
 * it again and puts the stale data back (same generator) into every page the
 * view does not map.  The touch order is fixed, so the mapped pages must be
 * exactly the first pages of that order (read from /proc/self/pagemap) and
 * hold the fresh data; the touches resume at the first page not mapped.
 * Checked after a restore: everything above, with "one MINOR fault per page"
 * for the pages touched after the restore (those mapped before it must not
 * fault again).  A checkpoint taken inside the sharing check (the mark is in
 * page 5) puts the page back first; one taken after the UNREGISTER (the uffd
 * comes back without its range) runs the whole demo again on the restored
 * uffd.  Hold points: ready, mid (half of the pages touched), end (all
 * touched, handler stopped), marked (the mark is in page 5), unregistered
 * (before close), restored. */
#include "demo_common.h"

#define REGION (4UL << 20)
#define STALE 0x5741ALL
#define FRESH 0xf7e54ULL

struct minor {
	int uffd, stopfd;
	char *alias, *view;
	size_t len, npages;
	/* written by the handler thread, read by main after joining it */
	unsigned char *hits;
	unsigned long faults, not_minor;
};

static void *handler(void *arg)
{
	struct minor *M = arg;
	struct uffd_msg msgs[16];
	struct pollfd pfd[2] = { { M->uffd, POLLIN, 0 }, { M->stopfd, POLLIN, 0 } };
	for (;;) {
		demo_poll(pfd, 2, -1);
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			demo_fail("poll(uffd) revents 0x%x", pfd[0].revents);
		int n;
		while ((n = demo_uffd_read(M->uffd, msgs, 16)) > 0) {
			for (int i = 0; i < n; i++) {
				const struct uffd_msg *m = &msgs[i];
				if (m->event != UFFD_EVENT_PAGEFAULT)
					demo_fail("unexpected uffd event 0x%x", m->event);
				uint64_t a = m->arg.pagefault.address;
				if (a < (uintptr_t)M->view || a >= (uintptr_t)M->view + M->len)
					demo_fail("fault at 0x%llx, outside the registered view",
						  (unsigned long long)a);
				if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR))
					M->not_minor++;
				size_t pg = (a - (uintptr_t)M->view) / demo.page;
				demo_fill_page(M->alias + pg * demo.page, FRESH, pg);
				int r = demo_uffd_continue(M->uffd, (uintptr_t)M->view + pg * demo.page,
							   demo.page);
				if (r < 0)
					demo_fail("UFFDIO_CONTINUE page %zu: %s", pg, strerror(-r));
				M->faults++;
				if (M->hits[pg] < 255)
					M->hits[pg]++;
			}
		}
		if (pfd[1].revents & POLLIN)
			break;
	}
	return NULL;
}

static char *map_shared(int fd, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		demo_fail_errno("mmap memfd MAP_SHARED");
	return p;
}

/* The pages the program touches: 3 of every 4. */
static int touched_page(size_t pg)
{
	return pg % 4 != 3;
}

#define MARK 0x600dcafeULL
#define MARK_PAGE 5
#define MARK_AT 16

/* Write through the registered view, read through the alias, then put the
 * fresh word back through the alias and read it through the view. */
static void sharing_check(struct minor *M)
{
	char *v = M->view + MARK_PAGE * demo.page + MARK_AT;
	char *a = M->alias + MARK_PAGE * demo.page + MARK_AT;
	uint64_t mark = MARK, fresh = DEMO_WORD(FRESH, MARK_PAGE, MARK_AT / 8);
	memcpy(v, &mark, 8);
	demo_hold("marked");
	if (memcmp(a, &mark, 8))
		demo_fail("a write through the registered view is not seen through the alias");
	memcpy(a, &fresh, 8);
	if (memcmp(v, &fresh, 8))
		demo_fail("a write through the alias is not seen through the registered view");
}

/* A restored view: open its memfd, map the alias again, put the stale data
 * back where the view maps nothing, and find where the checkpointed run had
 * got to: the index in order[] of the first touch still to do.  pre[pg] is
 * set for the pages mapped before the checkpoint, *npre counts them. */
static size_t resume_point(struct minor *M, int *mfd, const size_t *order, unsigned char *pre,
			   size_t *npre)
{
	char path[128];
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)M->view,
		 (unsigned long)M->view + M->len);
	*mfd = open(path, O_RDWR | O_CLOEXEC);
	if (*mfd < 0)
		demo_fail("restored: open %s (the view's memfd; needs root or "
			  "CAP_CHECKPOINT_RESTORE): %s", path, strerror(errno));
	M->alias = mmap(NULL, M->len, PROT_READ | PROT_WRITE, MAP_SHARED, *mfd, 0);
	if (M->alias == MAP_FAILED)
		demo_fail_errno("mmap the restored memfd again (alias)");
	uint64_t *pm = demo_pagemap(M->view, M->npages);
	size_t resume = M->npages;
	*npre = 0;
	for (size_t i = 0; i < M->npages; i++) {
		size_t pg = order[i];
		int there = (int)DEMO_PM_PRESENT(pm[pg]);
		if (!touched_page(pg) && there)
			demo_fail("restored: page %zu is never touched but is mapped in the view", pg);
		if (!touched_page(pg))
			continue;
		if (!there) {
			if (resume == M->npages)
				resume = i;
			continue;
		}
		if (resume != M->npages)
			demo_fail("restored: page %zu (touch %zu) is mapped in the view but page %zu "
				  "(touch %zu), touched before it, is not", pg, i, order[resume], resume);
		pre[pg] = 1;
		(*npre)++;
	}
	/* A checkpoint inside sharing_check(): the mark is still there.  (Only a
	 * page mapped in the view may be read through it: reading a hole would
	 * allocate the page there, without a MINOR fault.) */
	uint64_t w = 0;
	if (pre[MARK_PAGE])
		memcpy(&w, M->view + MARK_PAGE * demo.page + MARK_AT, 8);
	if (w == MARK) {
		w = DEMO_WORD(FRESH, MARK_PAGE, MARK_AT / 8);
		memcpy(M->alias + MARK_PAGE * demo.page + MARK_AT, &w, 8);
	}
	for (size_t pg = 0; pg < M->npages; pg++) {
		if (pre[pg]) {
			long bad = demo_check_page(M->view + pg * demo.page, FRESH, pg);
			if (bad >= 0)
				demo_fail("restored: view page %zu, mapped before the checkpoint, has "
					  "wrong data at byte %ld", pg, bad);
		} else {
			demo_fill_page(M->alias + pg * demo.page, STALE, pg);
		}
	}
	free(pm);
	return resume;
}

int main(int argc, char **argv)
{
	demo_init("minor_shmem", "ready mid end marked unregistered restored", argc, argv);
	struct minor M = { .len = REGION };
	M.npages = M.len / demo.page;
	M.hits = demo_xmalloc(M.npages);
	size_t *order = demo_shuffled(M.npages, FRESH);
	unsigned char *pre = demo_xmalloc(M.npages);
	size_t start = 0, npre = 0;
	int mfd = -1;

	/* Restored by uffd-replay: adopt the uffd and, if it still has it, the
	 * view; otherwise start from nothing. */
	struct demo_restore R;
	int restored = demo_restored(&R), resumed = 0;
	if (restored) {
		demo_restored_features(&R, UFFD_FEATURE_MINOR_SHMEM);
		M.uffd = R.fd;
		if (R.nranges) {
			M.view = demo_restored_range(&R, M.len, UFFDIO_REGISTER_MODE_MINOR);
			if (!M.view || R.nranges != 1)
				demo_fail("restored: uffd fd %d does not hold one 4 MiB MINOR range: "
					  "not a minor_shmem checkpoint", R.fd);
			start = resume_point(&M, &mfd, order, pre, &npre);
			resumed = 1;
		}
	}
	if (!resumed) {
		mfd = memfd_create("minor_shmem", MFD_CLOEXEC);
		if (mfd < 0) {
			if (errno == ENOSYS)
				demo_skip("memfd_create: ENOSYS");
			demo_fail_errno("memfd_create");
		}
		if (ftruncate(mfd, (off_t)M.len) < 0)
			demo_fail_errno("ftruncate memfd");
		M.alias = map_shared(mfd, M.len);
		M.view = map_shared(mfd, M.len);
		/* Populate the page cache (through the alias only) with stale data. */
		for (size_t pg = 0; pg < M.npages; pg++)
			demo_fill_page(M.alias + pg * demo.page, STALE, pg);

		if (!restored) {
			M.uffd = demo_uffd_syscall(O_CLOEXEC | O_NONBLOCK);
			demo_uffd_api(M.uffd, UFFD_FEATURE_MINOR_SHMEM);
		}
		demo_uffd_register(M.uffd, M.view, M.len, UFFDIO_REGISTER_MODE_MINOR,
				   1ULL << _UFFDIO_CONTINUE);
	}
	M.stopfd = demo_eventfd();
	pthread_t th;
	demo_pthread_create(&th, handler, &M);
	if (resumed) {
		demo_note("resuming at touch %zu: view %p, %zu pages mapped before the checkpoint",
			  start, (void *)M.view, npre);
	} else if (restored) {
		demo_note("resuming: no range, the checkpoint was taken after UNREGISTER: "
			  "running the whole demo again on the restored uffd");
	} else {
		demo_ready();
		demo_hold("ready");
	}

	/* Touch 3 pages of every 4 of the registered view, scrambled; every
	 * fifth touch is a write (of the value the page will hold). */
	char *expect = demo_page_buf();
	size_t touched = npre, writes = 0, total = M.npages - M.npages / 4;
	for (size_t i = start; i < M.npages; i++) {
		size_t pg = order[i];
		if (!touched_page(pg))
			continue;
		char *p = M.view + pg * demo.page;
		demo_fill_page(expect, FRESH, pg);
		if (i % 5 == 0) {
			*(volatile uint64_t *)(p + 8) = *(uint64_t *)(expect + 8);
			writes++;
		} else {
			(void)*(volatile char *)(p + 8);
		}
		long bad = demo_check_page(p, FRESH, pg);
		if (bad >= 0)
			demo_fail("view page %zu: byte %ld is not the fresh contents after its fault%s",
				  pg, bad, demo_check_page(p, STALE, pg) < 0 ? " (still stale)" : "");
		touched++;
		if (touched == total / 2)
			demo_hold("mid");
		demo_pause();
	}

	demo_eventfd_signal(M.stopfd);
	pthread_join(th, NULL);
	demo_hold("end");

	/* After CONTINUE both views map the same page-cache page. */
	sharing_check(&M);
	if (M.not_minor)
		demo_fail("%lu fault messages without FLAG_MINOR", M.not_minor);
	if (M.faults != touched - npre)
		demo_fail("%lu MINOR faults for %zu pages touched%s", M.faults, touched - npre,
			  resumed ? " after the restore" : "");
	for (size_t pg = 0; pg < M.npages; pg++) {
		unsigned want = touched_page(pg) && !pre[pg];
		if (M.hits[pg] != want)
			demo_fail("page %zu faulted %u times, expected %u%s", pg, M.hits[pg], want,
				  pre[pg] ? " (mapped before the checkpoint)" : "");
		/* The alias (and the file) show fresh data exactly where faulted. */
		uint64_t seed = touched_page(pg) ? FRESH : STALE;
		if (demo_check_page(M.alias + pg * demo.page, seed, pg) >= 0)
			demo_fail("alias page %zu does not hold the %s data", pg,
				  seed == FRESH ? "fresh" : "stale");
		if (pread(mfd, expect, demo.page, (off_t)(pg * demo.page)) != (ssize_t)demo.page)
			demo_fail_errno("pread memfd");
		if (demo_check_page(expect, seed, pg) >= 0)
			demo_fail("memfd page %zu (pread) does not hold the %s data", pg,
				  seed == FRESH ? "fresh" : "stale");
	}

	demo_uffd_unregister(M.uffd, M.view, M.len);
	demo_hold("unregistered");
	close(M.stopfd);
	close(M.uffd);
	munmap(M.view, M.len);
	munmap(M.alias, M.len);
	close(mfd);
	free(order); free(expect); free(M.hits); free(pre);
	if (resumed)
		demo_ok("restored with %zu of %zu pages mapped before the checkpoint; %zu more touched after it (%zu writes), %lu MINOR faults resolved by UFFDIO_CONTINUE, one per page; fresh data in view, alias and file, untouched pages stale",
			npre, touched, touched - npre, writes, M.faults);
	demo_ok("%s%zu of %zu shmem pages touched (%zu writes), %lu MINOR faults resolved by UFFDIO_CONTINUE, one per page; fresh data in view, alias and file, untouched pages stale",
		restored ? "restored uffd without its range, run again: " : "", touched, M.npages,
		writes, M.faults);
}
