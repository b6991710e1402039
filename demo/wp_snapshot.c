/* wp_snapshot - a live snapshotter built on userfaultfd write-protection.
 *
 * The uffd comes from /dev/userfaultfd + USERFAULTFD_IOC_NEW (falling back to
 * userfaultfd(2) if the device cannot be opened; the path used is printed).
 * A 4 MiB anonymous region is filled, registered MODE_WP and write-protected
 * as a whole: that is the snapshot point.  A writer thread then modifies
 * random pages (several times some of them) while a handler thread, on each
 * WP fault, saves the page's old contents into the snapshot buffer and
 * unprotects that page (UFFDIO_WRITEPROTECT mode 0, which wakes the writer).
 * At the end the snapshot (saved copies + pages never written, still
 * protected) must equal the region at protect time, the region must hold
 * what the writer wrote, and there must be exactly one WP fault per distinct
 * page written. */
#include "demo_common.h"

#define REGION (4UL << 20)
#define NWRITES 600
#define SEED 0x77705f73ULL

struct snap {
	int uffd, stopfd;
	char *base, *snapshot;
	size_t len, npages;
	/* written by the handler thread, read by main after joining it */
	unsigned char *saved;
	unsigned long faults, not_wp, not_write, twice;
};

static void *handler(void *arg)
{
	struct snap *S = arg;
	struct uffd_msg msgs[16];
	struct pollfd pfd[2] = { { S->uffd, POLLIN, 0 }, { S->stopfd, POLLIN, 0 } };
	for (;;) {
		demo_poll(pfd, 2, -1);
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			demo_fail("poll(uffd) revents 0x%x", pfd[0].revents);
		int n;
		while ((n = demo_uffd_read(S->uffd, msgs, 16)) > 0) {
			for (int i = 0; i < n; i++) {
				const struct uffd_msg *m = &msgs[i];
				if (m->event != UFFD_EVENT_PAGEFAULT)
					demo_fail("unexpected uffd event 0x%x", m->event);
				uint64_t a = m->arg.pagefault.address;
				if (a < (uintptr_t)S->base || a >= (uintptr_t)S->base + S->len)
					demo_fail("WP fault at 0x%llx, outside the region",
						  (unsigned long long)a);
				if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
					S->not_wp++;
				if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE))
					S->not_write++;
				size_t pg = (a - (uintptr_t)S->base) / demo.page;
				size_t off = pg * demo.page;
				if (S->saved[pg])
					S->twice++;
				/* Still protected: these are the contents at protect time. */
				memcpy(S->snapshot + off, S->base + off, demo.page);
				S->saved[pg] = 1;
				S->faults++;
				int r = demo_uffd_wp(S->uffd, (uintptr_t)S->base + off, demo.page, 0);
				if (r < 0)
					demo_fail("UFFDIO_WRITEPROTECT(unprotect) page %zu: %s", pg, strerror(-r));
			}
		}
		if (pfd[1].revents & POLLIN)
			break;
	}
	return NULL;
}

struct writer {
	struct snap *S;
	char *model;             /* what the region must hold afterwards */
	unsigned char *written;  /* pages the writer wrote */
};

static void *writer(void *arg)
{
	struct writer *W = arg;
	struct snap *S = W->S;
	/* Writes go to random even pages: about 70% of those get written, many
	 * of them several times; odd pages are never written. */
	for (unsigned i = 0; i < NWRITES; i++) {
		uint64_t r = demo_mix64(SEED ^ (i + 1));
		size_t pg = (r % (S->npages / 2)) * 2;
		size_t at = ((r >> 20) % (demo.page / 8)) * 8;
		uint64_t v = r ^ 0xabad1deaULL;
		memcpy(S->base + pg * demo.page + at, &v, 8);
		memcpy(W->model + pg * demo.page + at, &v, 8);
		W->written[pg] = 1;
		demo_pause();
	}
	return NULL;
}

int main(int argc, char **argv)
{
	demo_init("wp_snapshot", argc, argv);
	struct snap S = { .len = REGION };
	S.npages = S.len / demo.page;
	S.base = demo_mmap_anon(S.len);
	for (size_t pg = 0; pg < S.npages; pg++)
		demo_fill_page(S.base + pg * demo.page, SEED, pg);

	const char *how;
	S.uffd = demo_uffd_dev(O_CLOEXEC, &how);
	printf("wp_snapshot: uffd created with %s\n", how);
	/* USERFAULTFD_IOC_NEW was asked for a blocking uffd; the handler polls,
	 * and poll() on a blocking uffd reports POLLERR: make it non-blocking. */
	int fl = fcntl(S.uffd, F_GETFL);
	if (fl < 0 || fcntl(S.uffd, F_SETFL, fl | O_NONBLOCK) < 0)
		demo_fail_errno("fcntl(uffd, O_NONBLOCK)");
	demo_uffd_api(S.uffd, UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	demo_uffd_register(S.uffd, S.base, S.len, UFFDIO_REGISTER_MODE_WP,
			   1ULL << _UFFDIO_WRITEPROTECT);
	int r = demo_uffd_wp(S.uffd, (uintptr_t)S.base, S.len, UFFDIO_WRITEPROTECT_MODE_WP);
	if (r < 0)
		demo_fail("UFFDIO_WRITEPROTECT whole region: %s", strerror(-r));

	/* The reference: the region at protect time (reading does not fault). */
	char *reference = demo_xmalloc(S.len);
	memcpy(reference, S.base, S.len);
	S.snapshot = demo_xmalloc(S.len);
	S.saved = demo_xmalloc(S.npages);
	S.stopfd = demo_eventfd();
	demo_ready();

	struct writer W = { &S, demo_xmalloc(S.len), demo_xmalloc(S.npages) };
	memcpy(W.model, reference, S.len);
	pthread_t th, tw;
	demo_pthread_create(&th, handler, &S);
	demo_pthread_create(&tw, writer, &W);
	pthread_join(tw, NULL);
	demo_eventfd_signal(S.stopfd);
	pthread_join(th, NULL);

	/* Complete the snapshot with the pages nobody wrote: still protected. */
	size_t distinct = 0, untouched = 0;
	for (size_t pg = 0; pg < S.npages; pg++) {
		distinct += W.written[pg];
		if (S.saved[pg] != W.written[pg])
			demo_fail("page %zu: %s by the writer but %s by the handler", pg,
				  W.written[pg] ? "written" : "not written",
				  S.saved[pg] ? "saved" : "not saved");
		if (!S.saved[pg]) {
			memcpy(S.snapshot + pg * demo.page, S.base + pg * demo.page, demo.page);
			untouched++;
		}
	}
	if (S.not_wp || S.not_write || S.twice)
		demo_fail("bad WP faults: %lu without FLAG_WP, %lu without FLAG_WRITE, %lu on an already saved page",
			  S.not_wp, S.not_write, S.twice);
	if (S.faults != distinct)
		demo_fail("%lu WP faults for %zu distinct pages written", S.faults, distinct);
	for (size_t pg = 0; pg < S.npages; pg++) {
		size_t off = pg * demo.page;
		if (memcmp(S.snapshot + off, reference + off, demo.page))
			demo_fail("snapshot page %zu differs from the region at protect time", pg);
		if (memcmp(S.base + off, W.model + off, demo.page))
			demo_fail("region page %zu does not hold what the writer wrote", pg);
	}

	/* A protected page still faults: unprotect everything before leaving. */
	r = demo_uffd_wp(S.uffd, (uintptr_t)S.base, S.len, 0);
	if (r < 0)
		demo_fail("UFFDIO_WRITEPROTECT(unprotect all): %s", strerror(-r));
	demo_uffd_unregister(S.uffd, S.base, S.len);
	close(S.stopfd);
	close(S.uffd);
	munmap(S.base, S.len);
	free(reference); free(S.snapshot); free(S.saved); free(W.model); free(W.written);
	demo_ok("%d writes to %zu distinct pages, %lu WP faults (one per page), snapshot of %zu pages (%zu saved, %zu untouched) equals the region at protect time",
		NWRITES, distinct, S.faults, S.npages, distinct, untouched);
}
