/* wp_snapshot - a live snapshotter built on userfaultfd write-protection.
 *
 * The uffd comes from /dev/userfaultfd + USERFAULTFD_IOC_NEW (falling back to
 * userfaultfd(2) if the device cannot be opened; the path used is printed).
 * A 4 MiB anonymous region is filled, registered MODE_WP and write-protected
 * as a whole: that is the snapshot point.  A writer thread then modifies
 * random pages (several times some of them) while a handler thread, on each
 * WP fault, saves the page's old contents into the snapshot area and
 * unprotects that page (UFFDIO_WRITEPROTECT mode 0, which wakes the writer).
 * At the end the snapshot (saved copies + pages never written, still
 * protected) must equal the region at protect time, the region must hold
 * what the writer wrote, and there must be exactly one WP fault per distinct
 * page written.
 *
 * The snapshot area (a log page with the handler's bookkeeping, then room
 * for a copy of every page) lies after the region, past a PROT_NONE guard
 * page, and is registered MODE_WP too but never protected: it never faults,
 * and a checkpoint of the uffd's ranges carries it along with the region.
 *
 * Restart after a checkpoint (uffd-replay, see demo_common.h): the restored
 * region holds its pages with their write-protection, the snapshot area the
 * copies saved so far and the log.  The handler records a page as saved only
 * after unprotecting it, so a page that is unprotected but not recorded was
 * copied just before the checkpoint: the record is completed.  The writes
 * are a fixed sequence; the region must equal the protect-time contents with
 * exactly the first k writes applied, for one k, and the writer resumes at
 * write k (a write that was blocked in its WP fault is made again).  After a
 * restore everything above is checked, exactly as without one: the saved
 * copies made before the checkpoint, the fault count and the flags are in
 * the log, the protect-time contents and the writes come from the same
 * generators.  A checkpoint taken after the final checks (log phase
 * "checked") re-checks and finishes; one taken between the two UNREGISTERs
 * (only the snapshot area comes back) re-checks the snapshot against the
 * protect-time contents and finishes; one taken after them (the uffd comes
 * back without ranges) runs the whole demo again on the restored uffd.
 * Hold points: ready, mid (after half of the writes), end (writes done,
 * threads stopped), checked (log phase checked), unprotected (region
 * unprotected), half-unregistered (region unregistered, snapshot area not),
 * unregistered (before close), restored. */
#include "demo_common.h"

#define REGION (4UL << 20)
#define NWRITES 600
#define SEED 0x77705f73ULL
#define LOG_MAGIC 0x736e61706c6f6731ULL /* "snaplog1" */

enum { LOG_WRITING = 0, LOG_CHECKED = 1 };

/* The first page of the snapshot area. */
struct snap_log {
	uint64_t magic;
	uint32_t phase;          /* LOG_WRITING, then LOG_CHECKED */
	uint32_t reserved;
	uint64_t faults, not_wp, not_write, twice;
	unsigned char saved[];   /* per page of the region: its copy is saved */
};

struct snap {
	int uffd, stopfd;
	char *base, *snapshot;   /* region; copies of its pages */
	struct snap_log *log;    /* written by the handler thread */
	size_t len, npages;
};

static void *handler(void *arg)
{
	struct snap *S = arg;
	struct snap_log *L = S->log;
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
					L->not_wp++;
				if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE))
					L->not_write++;
				size_t pg = (a - (uintptr_t)S->base) / demo.page;
				size_t off = pg * demo.page;
				if (L->saved[pg])
					L->twice++;
				/* Still protected: these are the contents at protect time. */
				memcpy(S->snapshot + off, S->base + off, demo.page);
				int r = demo_uffd_wp(S->uffd, (uintptr_t)S->base + off, demo.page, 0);
				if (r < 0)
					demo_fail("UFFDIO_WRITEPROTECT(unprotect) page %zu: %s", pg, strerror(-r));
				/* Recorded once unprotected (see the restart above). */
				L->saved[pg] = 1;
				L->faults++;
			}
		}
		if (pfd[1].revents & POLLIN)
			break;
	}
	return NULL;
}

/* Write i of the fixed sequence: 8 bytes v at byte `at` of page pg.  Writes
 * go to random even pages: about 70% of those get written, many of them
 * several times; odd pages are never written. */
static void write_nr(unsigned i, size_t npages, size_t *pg, size_t *at, uint64_t *v)
{
	uint64_t r = demo_mix64(SEED ^ (i + 1));
	*pg = (r % (npages / 2)) * 2;
	*at = ((r >> 20) % (demo.page / 8)) * 8;
	*v = r ^ 0xabad1deaULL;
}

struct writer {
	struct snap *S;
	unsigned start;          /* first write to make (0, or after a restore) */
	char *model;             /* what the region must hold afterwards */
	unsigned char *written;  /* pages the writer wrote */
};

static void apply_write(struct writer *W, unsigned i, char *to)
{
	size_t pg, at;
	uint64_t v;
	write_nr(i, W->S->npages, &pg, &at, &v);
	memcpy(to + pg * demo.page + at, &v, 8);
	W->written[pg] = 1;
}

static void *writer(void *arg)
{
	struct writer *W = arg;
	for (unsigned i = W->start; i < NWRITES; i++) {
		apply_write(W, i, W->S->base);
		apply_write(W, i, W->model);
		if (i + 1 == NWRITES / 2)
			demo_hold("mid");
		demo_pause();
	}
	return NULL;
}

/* A restored run: complete the log, then find how many writes the region
 * holds; W->model and W->written are set to that point.  Returns k. */
static unsigned resume_point(struct snap *S, struct writer *W, const char *reference,
			     size_t *completed)
{
	struct snap_log *L = S->log;
	if (L->magic != LOG_MAGIC || L->phase > LOG_CHECKED)
		demo_fail("restored: the snapshot area has no valid log (magic 0x%llx, phase %u)",
			  (unsigned long long)L->magic, L->phase);
	*completed = 0;
	if (L->phase == LOG_WRITING) {
		uint64_t *pm = demo_pagemap(S->base, S->npages);
		for (size_t pg = 0; pg < S->npages; pg++) {
			int wp = (int)DEMO_PM_UFFD_WP(pm[pg]);
			if (wp && L->saved[pg])
				demo_fail("restored: page %zu is saved but still write-protected", pg);
			if (!wp && !L->saved[pg]) {
				L->saved[pg] = 1;
				L->faults++;
				(*completed)++;
			}
		}
		free(pm);
	}
	/* mismatch = words where the region differs from the model after i writes */
	const uint64_t *now = (const uint64_t *)S->base;
	uint64_t *model = (uint64_t *)W->model;
	memcpy(W->model, reference, S->len);
	size_t mismatch = 0;
	for (size_t w = 0; w < S->len / 8; w++)
		mismatch += now[w] != model[w];
	long k = mismatch ? -1 : 0;
	for (unsigned i = 0; i < NWRITES; i++) {
		size_t pg, at;
		uint64_t v;
		write_nr(i, S->npages, &pg, &at, &v);
		size_t w = (pg * demo.page + at) / 8;
		mismatch -= now[w] != model[w];
		model[w] = v;
		mismatch += now[w] != model[w];
		if (!mismatch)
			k = i + 1;
	}
	if (k < 0)
		demo_fail("restored: the region is not the protect-time contents plus a prefix of the writes");
	if (L->phase == LOG_CHECKED && k != NWRITES)
		demo_fail("restored: log says checked but the region holds only %ld writes", k);
	memcpy(W->model, reference, S->len);
	for (unsigned i = 0; i < (unsigned)k; i++)
		apply_write(W, i, W->model);
	return (unsigned)k;
}

/* Restored between the two UNREGISTERs: the region is gone from the image,
 * the snapshot area is there.  The checks had passed; the snapshot must still
 * equal the protect-time contents.  Then finish as the checked run did. */
static __attribute__((noreturn)) void finish_unregistered(struct snap *S, const char *reference)
{
	struct snap_log *L = S->log;
	if (L->magic != LOG_MAGIC || L->phase != LOG_CHECKED)
		demo_fail("restored: the region is unregistered but the snapshot log is not in "
			  "phase checked (magic 0x%llx, phase %u)", (unsigned long long)L->magic,
			  L->phase);
	demo_note("resuming: snapshot area %p only, the checkpoint was taken between the two "
		  "UNREGISTERs", (void *)S->log);
	if (memcmp(S->snapshot, reference, S->len))
		demo_fail("snapshot differs from the region at protect time");
	uint64_t saved = L->faults;
	demo_uffd_unregister(S->uffd, S->log, demo.page + S->len);
	close(S->uffd);
	munmap(S->log, demo.page + S->len);
	demo_ok("restored after the checks, between the UNREGISTERs: snapshot of %zu pages (%llu saved) equals the region at protect time",
		S->npages, (unsigned long long)saved);
}

int main(int argc, char **argv)
{
	demo_init("wp_snapshot", "ready mid end checked unprotected half-unregistered unregistered restored",
		  argc, argv);
	struct snap S = { .len = REGION };
	S.npages = S.len / demo.page;
	size_t span = S.len + 2 * demo.page + S.len; /* region, guard, log, copies */
	if (sizeof(struct snap_log) + S.npages > demo.page)
		demo_fail("page size %zu too small for the snapshot log", demo.page);

	/* The region at protect time: the same generator fills it. */
	char *reference = demo_xmalloc(S.len);
	for (size_t pg = 0; pg < S.npages; pg++)
		demo_fill_page(reference + pg * demo.page, SEED, pg);

	struct demo_restore R;
	int restored = demo_restored(&R), resumed = 0;
	if (restored) {
		demo_restored_features(&R, UFFD_FEATURE_PAGEFAULT_FLAG_WP);
		S.uffd = R.fd;
		if (R.nranges) {
			S.base = demo_restored_range(&R, S.len, UFFDIO_REGISTER_MODE_WP);
			char *area = demo_restored_range(&R, demo.page + S.len, UFFDIO_REGISTER_MODE_WP);
			if (!area || R.nranges != 1u + (S.base != NULL))
				demo_fail("restored: uffd fd %d does not hold the region and the snapshot "
					  "area: not a wp_snapshot checkpoint", R.fd);
			S.log = (struct snap_log *)area;
			S.snapshot = area + demo.page;
			if (!S.base)
				finish_unregistered(&S, reference);
			resumed = 1;
		}
	}
	if (!resumed) {
		S.base = demo_mmap_anon(span);
		if (mprotect(S.base + S.len, demo.page, PROT_NONE) < 0)
			demo_fail_errno("mprotect guard page");
		S.log = (struct snap_log *)(S.base + S.len + demo.page);
		S.snapshot = S.base + S.len + 2 * demo.page;
		memcpy(S.base, reference, S.len);
		S.log->magic = LOG_MAGIC;
		if (!restored) {
			const char *how;
			S.uffd = demo_uffd_dev(O_CLOEXEC, &how);
			printf("wp_snapshot: uffd created with %s\n", how);
			/* USERFAULTFD_IOC_NEW was asked for a blocking uffd; the handler
			 * polls, and poll() on a blocking uffd reports POLLERR: make it
			 * non-blocking. */
			int fl = fcntl(S.uffd, F_GETFL);
			if (fl < 0 || fcntl(S.uffd, F_SETFL, fl | O_NONBLOCK) < 0)
				demo_fail_errno("fcntl(uffd, O_NONBLOCK)");
			demo_uffd_api(S.uffd, UFFD_FEATURE_PAGEFAULT_FLAG_WP);
		}
		demo_uffd_register(S.uffd, S.base, S.len, UFFDIO_REGISTER_MODE_WP,
				   1ULL << _UFFDIO_WRITEPROTECT);
		demo_uffd_register(S.uffd, S.log, demo.page + S.len, UFFDIO_REGISTER_MODE_WP, 0);
		int r = demo_uffd_wp(S.uffd, (uintptr_t)S.base, S.len, UFFDIO_WRITEPROTECT_MODE_WP);
		if (r < 0)
			demo_fail("UFFDIO_WRITEPROTECT whole region: %s", strerror(-r));
		if (memcmp(S.base, reference, S.len))
			demo_fail("the region changed when it was write-protected");
	}
	S.stopfd = demo_eventfd();
	struct writer W = { &S, 0, demo_xmalloc(S.len), demo_xmalloc(S.npages) };
	memcpy(W.model, reference, S.len);
	size_t completed = 0, saved_before = 0;
	if (resumed) {
		W.start = resume_point(&S, &W, reference, &completed);
		saved_before = (size_t)S.log->faults;
		demo_note("resuming at write %u of %d: region %p, snapshot log phase %s, %llu pages "
			  "saved (%zu of them recorded now)", W.start, NWRITES, (void *)S.base,
			  S.log->phase ? "checked" : "writing", (unsigned long long)S.log->faults,
			  completed);
	} else if (restored) {
		demo_note("resuming: no range, the checkpoint was taken after UNREGISTER: "
			  "running the whole demo again on the restored uffd");
	} else {
		demo_ready();
		demo_hold("ready");
	}

	pthread_t th, tw;
	demo_pthread_create(&th, handler, &S);
	demo_pthread_create(&tw, writer, &W);
	pthread_join(tw, NULL);
	demo_eventfd_signal(S.stopfd);
	pthread_join(th, NULL);
	demo_hold("end");

	/* Complete the snapshot with the pages nobody wrote: still protected. */
	struct snap_log *L = S.log;
	size_t distinct = 0, untouched = 0;
	for (size_t pg = 0; pg < S.npages; pg++) {
		distinct += W.written[pg];
		if (L->saved[pg] != W.written[pg])
			demo_fail("page %zu: %s by the writer but %s by the handler", pg,
				  W.written[pg] ? "written" : "not written",
				  L->saved[pg] ? "saved" : "not saved");
		if (!L->saved[pg]) {
			memcpy(S.snapshot + pg * demo.page, S.base + pg * demo.page, demo.page);
			untouched++;
		}
	}
	if (L->not_wp || L->not_write || L->twice)
		demo_fail("bad WP faults: %llu without FLAG_WP, %llu without FLAG_WRITE, %llu on an already saved page",
			  (unsigned long long)L->not_wp, (unsigned long long)L->not_write,
			  (unsigned long long)L->twice);
	if (L->faults != distinct)
		demo_fail("%llu WP faults for %zu distinct pages written",
			  (unsigned long long)L->faults, distinct);
	for (size_t pg = 0; pg < S.npages; pg++) {
		size_t off = pg * demo.page;
		if (memcmp(S.snapshot + off, reference + off, demo.page))
			demo_fail("snapshot page %zu differs from the region at protect time", pg);
		if (memcmp(S.base + off, W.model + off, demo.page))
			demo_fail("region page %zu does not hold what the writer wrote", pg);
	}
	L->phase = LOG_CHECKED;
	demo_hold("checked");

	/* A protected page still faults: unprotect everything before leaving. */
	int r = demo_uffd_wp(S.uffd, (uintptr_t)S.base, S.len, 0);
	if (r < 0)
		demo_fail("UFFDIO_WRITEPROTECT(unprotect all): %s", strerror(-r));
	demo_hold("unprotected");
	demo_uffd_unregister(S.uffd, S.base, S.len);
	demo_hold("half-unregistered");
	demo_uffd_unregister(S.uffd, S.log, demo.page + S.len);
	demo_hold("unregistered");
	uint64_t faults = L->faults;
	close(S.stopfd);
	close(S.uffd);
	if (resumed) { /* the restored ranges, not the gap between them */
		munmap(S.base, S.len);
		munmap(S.log, demo.page + S.len);
	} else {
		munmap(S.base, span);
	}
	free(reference); free(W.model); free(W.written);
	if (resumed)
		demo_ok("restored at write %u of %d (%zu pages saved before the checkpoint); %zu distinct pages written, %llu WP faults (one per page), snapshot of %zu pages (%zu saved, %zu untouched) equals the region at protect time",
			W.start, NWRITES, saved_before, distinct, (unsigned long long)faults, S.npages,
			distinct, untouched);
	demo_ok("%s%d writes to %zu distinct pages, %llu WP faults (one per page), snapshot of %zu pages (%zu saved, %zu untouched) equals the region at protect time",
		restored ? "restored uffd without ranges, run again: " : "", NWRITES, distinct,
		(unsigned long long)faults, S.npages, distinct, untouched);
}
