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
 * file) share the same pages. */
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

int main(int argc, char **argv)
{
	demo_init("minor_shmem", argc, argv);
	struct minor M = { .len = REGION };
	M.npages = M.len / demo.page;
	M.hits = demo_xmalloc(M.npages);

	int mfd = memfd_create("minor_shmem", MFD_CLOEXEC);
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

	M.uffd = demo_uffd_syscall(O_CLOEXEC | O_NONBLOCK);
	demo_uffd_api(M.uffd, UFFD_FEATURE_MINOR_SHMEM);
	demo_uffd_register(M.uffd, M.view, M.len, UFFDIO_REGISTER_MODE_MINOR,
			   1ULL << _UFFDIO_CONTINUE);
	M.stopfd = demo_eventfd();
	pthread_t th;
	demo_pthread_create(&th, handler, &M);
	demo_ready();

	/* Touch 3 pages of every 4 of the registered view, scrambled; every
	 * fifth touch is a write (of the value the page will hold). */
	size_t *order = demo_shuffled(M.npages, FRESH);
	char *expect = demo_page_buf();
	size_t touched = 0, writes = 0;
	for (size_t i = 0; i < M.npages; i++) {
		size_t pg = order[i];
		if (pg % 4 == 3)
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
		demo_pause();
	}

	demo_eventfd_signal(M.stopfd);
	pthread_join(th, NULL);

	if (M.not_minor)
		demo_fail("%lu fault messages without FLAG_MINOR", M.not_minor);
	if (M.faults != touched)
		demo_fail("%lu MINOR faults for %zu pages touched", M.faults, touched);
	for (size_t pg = 0; pg < M.npages; pg++) {
		unsigned want = pg % 4 == 3 ? 0 : 1;
		if (M.hits[pg] != want)
			demo_fail("page %zu faulted %u times, expected %u", pg, M.hits[pg], want);
		/* The alias (and the file) show fresh data exactly where faulted. */
		uint64_t seed = want ? FRESH : STALE;
		if (demo_check_page(M.alias + pg * demo.page, seed, pg) >= 0)
			demo_fail("alias page %zu does not hold the %s data", pg, want ? "fresh" : "stale");
		if (pread(mfd, expect, demo.page, (off_t)(pg * demo.page)) != (ssize_t)demo.page)
			demo_fail_errno("pread memfd");
		if (demo_check_page(expect, seed, pg) >= 0)
			demo_fail("memfd page %zu (pread) does not hold the %s data", pg,
				  want ? "fresh" : "stale");
	}
	/* After CONTINUE both views map the same page-cache page. */
	uint64_t mark = 0x600dcafeULL;
	memcpy(M.view + 5 * demo.page + 16, &mark, 8);
	if (memcmp(M.alias + 5 * demo.page + 16, &mark, 8))
		demo_fail("a write through the registered view is not seen through the alias");

	demo_uffd_unregister(M.uffd, M.view, M.len);
	close(M.stopfd);
	close(M.uffd);
	munmap(M.view, M.len);
	munmap(M.alias, M.len);
	close(mfd);
	free(order); free(expect); free(M.hits);
	demo_ok("%zu of %zu shmem pages touched (%zu writes), %lu MINOR faults resolved by UFFDIO_CONTINUE, one per page; fresh data in view, alias and file, untouched pages stale",
		touched, M.npages, writes, M.faults);
}
