/* lazy_loader - an on-demand loader built on userfaultfd MISSING faults.
 *
 * It writes an 8 MiB data file with a known pattern, maps an anonymous
 * region of the same size and registers it MODE_MISSING on a uffd made with
 * userfaultfd(2).  A handler thread poll()s the uffd (and an eventfd that
 * stops it), reads the fault messages and resolves each one by pread()ing the
 * page from the file and UFFDIO_COPYing it in.  The main thread touches 7/8 of
 * the pages in a scrambled order (reads and writes), checks every byte against
 * the file and that each touched page faulted exactly once, with the fault
 * address page-aligned, the WRITE flag right and the faulting thread id
 * (UFFD_FEATURE_THREAD_ID) its own.  Then it unregisters and checks that an
 * untouched page reads as zeros without a fault.
 *
 * Restart after a checkpoint (uffd-replay, see demo_common.h): the restored
 * region holds the pages loaded before the checkpoint.  The touch order is
 * fixed, so those must be exactly the first pages of that order (read from
 * /proc/self/pagemap; their contents are checked against the file, which is
 * made again from the same generator), and the touches resume at the first
 * page that is not there (a fault that was pending at the checkpoint is
 * simply taken again).  Checked after a restore: each page touched after it
 * faulted exactly once with the right address, WRITE flag and thread id, the
 * pages loaded before it did not fault again, every touched page equals the
 * file and the untouched ones were never loaded.  A checkpoint taken after
 * the UNREGISTER (the uffd comes back without its range) runs the whole demo
 * again on the restored uffd.
 * Hold points: ready, mid (half of the pages touched), end (all touched,
 * handler stopped), unregistered (before close), restored. */
#include "demo_common.h"

#define FILE_SIZE (8UL << 20)
#define SEED 0x6c617a79ULL

struct loader {
	int uffd, stopfd, datafd;
	char *base;
	size_t len, npages;
	pid_t main_tid;
	/* written by the handler thread, read by main after joining it */
	unsigned char *hits;     /* faults per page */
	unsigned char *wflag;    /* UFFD_PAGEFAULT_FLAG_WRITE seen for the page */
	unsigned long faults, misaligned, wrong_tid;
};

static void serve_fault(struct loader *L, const struct uffd_msg *m, void *buf)
{
	uint64_t addr = m->arg.pagefault.address;
	/* A fault the handler cannot serve would block its thread forever. */
	if (addr < (uintptr_t)L->base || addr >= (uintptr_t)L->base + L->len)
		demo_fail("fault at 0x%llx, outside the region", (unsigned long long)addr);
	if (addr % demo.page)
		L->misaligned++;
	if ((pid_t)m->arg.pagefault.feat.ptid != L->main_tid)
		L->wrong_tid++;
	size_t pg = (addr - (uintptr_t)L->base) / demo.page;
	off_t off = (off_t)(pg * demo.page);
	size_t got = 0;
	while (got < demo.page) {
		ssize_t n = pread(L->datafd, (char *)buf + got, demo.page - got, off + (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			demo_fail("pread data file at 0x%llx: %s", (unsigned long long)off,
				  n < 0 ? strerror(errno) : "short file");
		got += (size_t)n;
	}
	int r = demo_uffd_copy(L->uffd, (uintptr_t)L->base + pg * demo.page, buf, demo.page);
	if (r < 0)
		demo_fail("UFFDIO_COPY page %zu: %s", pg, strerror(-r));
	L->faults++;
	if (L->hits[pg] < 255)
		L->hits[pg]++;
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE)
		L->wflag[pg] = 1;
}

static void *handler(void *arg)
{
	struct loader *L = arg;
	struct uffd_msg msgs[16];
	void *buf = demo_page_buf();
	struct pollfd pfd[2] = { { L->uffd, POLLIN, 0 }, { L->stopfd, POLLIN, 0 } };
	for (;;) {
		demo_poll(pfd, 2, -1);
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			demo_fail("poll(uffd) revents 0x%x", pfd[0].revents);
		int n;
		while ((n = demo_uffd_read(L->uffd, msgs, 16)) > 0) {
			for (int i = 0; i < n; i++) {
				if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
					demo_fail("unexpected uffd event 0x%x", msgs[i].event);
				serve_fault(L, &msgs[i], buf);
			}
		}
		if (pfd[1].revents & POLLIN)
			break;
	}
	free(buf);
	return NULL;
}

static int make_data_file(void)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/lazy_loader.XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		demo_fail("mkstemp %s: %s", path, strerror(errno));
	unlink(path); /* nothing is left behind, whatever happens */
	void *buf = demo_page_buf();
	for (size_t pg = 0; pg < FILE_SIZE / demo.page; pg++) {
		demo_fill_page(buf, SEED, pg);
		if (pwrite(fd, buf, demo.page, (off_t)(pg * demo.page)) != (ssize_t)demo.page)
			demo_fail_errno("writing the data file");
	}
	free(buf);
	return fd;
}

/* The pages the main thread touches: 7 of every 8. */
static int touched_page(size_t pg)
{
	return pg % 8 != 7;
}

/* A restored region: find where the checkpointed run had got to.  Returns the
 * index in order[] of the first touch still to do; pre[pg] is set for the
 * pages loaded before the checkpoint, *npre counts them. */
static size_t resume_point(struct loader *L, const size_t *order, unsigned char *pre,
			   size_t *npre)
{
	uint64_t *pm = demo_pagemap(L->base, L->npages);
	char *expect = demo_page_buf();
	size_t resume = L->npages;
	*npre = 0;
	for (size_t i = 0; i < L->npages; i++) {
		size_t pg = order[i];
		int there = (int)DEMO_PM_PRESENT(pm[pg]);
		if (!touched_page(pg)) {
			if (there)
				demo_fail("restored: page %zu is never touched but was loaded", pg);
			continue;
		}
		if (!there) {
			if (resume == L->npages)
				resume = i;
			continue;
		}
		if (resume != L->npages)
			demo_fail("restored: page %zu (touch %zu) was loaded but page %zu (touch %zu), "
				  "touched before it, was not", pg, i, order[resume], resume);
		if (pread(L->datafd, expect, demo.page, (off_t)(pg * demo.page)) != (ssize_t)demo.page)
			demo_fail_errno("pread data file");
		if (memcmp(L->base + pg * demo.page, expect, demo.page) != 0)
			demo_fail("restored: page %zu, loaded before the checkpoint, differs from the file",
				  pg);
		pre[pg] = 1;
		(*npre)++;
	}
	free(pm);
	free(expect);
	return resume;
}

int main(int argc, char **argv)
{
	demo_init("lazy_loader", "ready mid end unregistered restored", argc, argv);
	struct loader L = { .len = FILE_SIZE, .main_tid = gettid() };
	L.npages = L.len / demo.page;
	L.hits = demo_xmalloc(L.npages);
	L.wflag = demo_xmalloc(L.npages);
	L.datafd = make_data_file();

	/* Restored by uffd-replay: adopt the uffd and, if it still has it, the
	 * region; otherwise start from nothing. */
	struct demo_restore R;
	int restored = demo_restored(&R), resumed = 0;
	if (restored) {
		demo_restored_features(&R, UFFD_FEATURE_THREAD_ID);
		L.uffd = R.fd;
		if (R.nranges) {
			L.base = demo_restored_range(&R, L.len, UFFDIO_REGISTER_MODE_MISSING);
			if (!L.base || R.nranges != 1)
				demo_fail("restored: uffd fd %d does not hold one 8 MiB MISSING range: "
					  "not a lazy_loader checkpoint", R.fd);
			resumed = 1;
		}
	}
	if (!resumed) {
		L.base = demo_mmap_anon(L.len);
		if (!restored) {
			L.uffd = demo_uffd_syscall(O_CLOEXEC | O_NONBLOCK);
			demo_uffd_api(L.uffd, UFFD_FEATURE_THREAD_ID);
		}
		demo_uffd_register(L.uffd, L.base, L.len, UFFDIO_REGISTER_MODE_MISSING,
				   1ULL << _UFFDIO_COPY);
	}
	size_t *order = demo_shuffled(L.npages, SEED);
	unsigned char *pre = demo_xmalloc(L.npages);
	size_t start = 0, npre = 0;
	if (resumed)
		start = resume_point(&L, order, pre, &npre);
	L.stopfd = demo_eventfd();
	pthread_t th;
	demo_pthread_create(&th, handler, &L);
	if (resumed) {
		demo_note("resuming at touch %zu: region %p, %zu pages loaded before the checkpoint",
			  start, (void *)L.base, npre);
	} else if (restored) {
		demo_note("resuming: no range, the checkpoint was taken after UNREGISTER: "
			  "running the whole demo again on the restored uffd");
	} else {
		demo_ready();
		demo_hold("ready");
	}

	/* Touch 7 pages of every 8, in a scrambled order; every third touch is
	 * a write (of the byte the file has there, so the data stays equal). */
	unsigned char *wrote = demo_xmalloc(L.npages);
	char *expect = demo_page_buf();
	size_t touched = npre, total = L.npages - L.npages / 8;
	for (size_t i = 0; i < start; i++)
		wrote[order[i]] = touched_page(order[i]) && i % 3 == 0;
	for (size_t i = start; i < L.npages; i++) {
		size_t pg = order[i];
		if (!touched_page(pg))
			continue;
		char *p = L.base + pg * demo.page;
		size_t at = (pg * 131) % demo.page; /* fault somewhere inside the page */
		if (pread(L.datafd, expect, demo.page, (off_t)(pg * demo.page)) != (ssize_t)demo.page)
			demo_fail_errno("pread data file");
		if (i % 3 == 0) {
			*(volatile char *)(p + at) = expect[at];
			wrote[pg] = 1;
		} else {
			(void)*(volatile char *)(p + at);
		}
		if (memcmp(p, expect, demo.page) != 0)
			demo_fail("page %zu differs from the file after its fault", pg);
		touched++;
		if (touched == total / 2)
			demo_hold("mid");
		demo_pause();
	}

	demo_eventfd_signal(L.stopfd);
	pthread_join(th, NULL);
	demo_hold("end");

	if (L.misaligned || L.wrong_tid)
		demo_fail("bad fault messages: %lu not page-aligned, %lu with a foreign thread id",
			  L.misaligned, L.wrong_tid);
	if (L.faults != touched - npre)
		demo_fail("%lu faults for %zu pages touched%s", L.faults, touched - npre,
			  resumed ? " after the restore" : "");
	for (size_t pg = 0; pg < L.npages; pg++) {
		unsigned want = touched_page(pg) && !pre[pg];
		if (L.hits[pg] != want)
			demo_fail("page %zu faulted %u times, expected %u%s", pg, L.hits[pg], want,
				  pre[pg] ? " (loaded before the checkpoint)" : "");
		if (want && L.wflag[pg] != wrote[pg])
			demo_fail("page %zu: fault WRITE flag %d but the touch was a %s", pg,
				  L.wflag[pg], wrote[pg] ? "write" : "read");
	}
	/* Whole region once more, now that the handler is gone. */
	for (size_t pg = 0; pg < L.npages; pg++) {
		if (!touched_page(pg) || (!resumed && pg % 8))
			continue;
		if (pread(L.datafd, expect, demo.page, (off_t)(pg * demo.page)) != (ssize_t)demo.page)
			demo_fail_errno("pread data file");
		if (memcmp(L.base + pg * demo.page, expect, demo.page) != 0)
			demo_fail("page %zu changed after the handler stopped", pg);
	}

	demo_uffd_unregister(L.uffd, L.base, L.len);
	demo_hold("unregistered");
	const char *untouched = L.base + 7 * demo.page;
	for (size_t i = 0; i < demo.page; i++)
		if (untouched[i])
			demo_fail("untouched page 7 is not zero after UNREGISTER");
	close(L.stopfd);
	close(L.uffd);
	close(L.datafd);
	munmap(L.base, L.len);
	size_t nw = 0;
	for (size_t pg = 0; pg < L.npages; pg++)
		nw += wrote[pg] && !pre[pg];
	free(order); free(wrote); free(expect); free(L.hits); free(L.wflag); free(pre);
	if (resumed)
		demo_ok("restored with %zu of %zu pages loaded before the checkpoint; %zu more loaded on demand after it, %lu faults (%zu write), each page once, contents equal the file",
			npre, touched, touched - npre, L.faults, nw);
	demo_ok("%s%zu of %zu pages loaded on demand in scrambled order, %lu faults (%zu write), each page once, contents equal the file",
		restored ? "restored uffd without its range, run again: " : "", touched, L.npages,
		L.faults, nw);
}
