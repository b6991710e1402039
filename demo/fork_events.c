/* fork_events - userfaultfd non-cooperative events: FORK, REMAP, REMOVE, UNMAP.
 *
 * A 64-page anonymous region is registered MODE_MISSING on a uffd with
 * UFFD_FEATURE_EVENT_FORK|EVENT_REMAP|EVENT_REMOVE|EVENT_UNMAP.  One handler
 * thread serves the faults (UFFDIO_COPY of a pattern chosen by the page's
 * original offset, one pattern per process) and records the events.  Page
 * layout and steps (p = page):
 *   touch p0-15; fork(): the handler gets UFFD_EVENT_FORK with a new uffd for
 *   the child and serves the child's faults on it (the child touches p0-31,
 *   sees the parent's data in p0-15 and child data in p16-31, exits);
 *   touch p16-23 (parent data: the child's pages did not leak) and p32-39;
 *   mremap p32-47 to a new place (REMAP event; the handler translates later
 *   faults there back to the original offsets) and touch it all;
 *   madvise(MADV_DONTNEED) p0-7 (REMOVE event) and touch them again;
 *   munmap p48-63 (UNMAP event).
 * The kernel follows the REMAP event with an UNMAP event for the source range
 * of the move (p32-47), so five events are expected.
 * Checked: each event once, with the right fields, on the right uffd; every
 * page's data; the exact number of faults per page in each process.
 *
 * Restart after a checkpoint (uffd-replay, see demo_common.h) is supported
 * for a checkpoint taken before the fork: the restored region must be the
 * one 64-page MISSING range with only a prefix of p0-15 present (read from
 * /proc/self/pagemap; their data is checked); the demo resumes the touches
 * there and then forks, moves, drops and unmaps itself, so every event
 * above happens (and is checked) in the restored process.  The faults of the
 * pages present at the restore happened before it and are not counted.
 * Not supported: a checkpoint taken while the FORK event's uffd is open
 * (it serves the child's memory; uffd-replay refuses the image), and one
 * taken after the child is gone and the parent went on (its events and
 * faults before the checkpoint cannot be checked again): the restored demo
 * says so and exits 77 (SKIP).  A checkpoint taken after both UNREGISTERs (the
 * uffd comes back without ranges) runs the whole demo again on the restored
 * uffd.  Hold points: ready, mid (p0-7 touched, before the fork),
 * child-exited (the child is gone, the parent still holds its uffd: a
 * checkpoint there is one uffd-replay must refuse), moved (after the
 * mremap: a checkpoint there is one the restored demo does not support),
 * unregistered (before close), restored. */
#include "demo_common.h"

#define NPG 64
#define PSEED 0x9a7e47ULL
#define CSEED 0xc41dULL
#define MAXEV 16
#define MAXPEND 64

struct ev { unsigned event; int on_child; uint64_t a, b, c; };

struct fe {
	int uffd, cuffd, cmd[2];
	char *base;
	void *buf; /* the handler's page buffer (owned by main: the forked child
		    * has no handler thread but must not leak its buffer) */
	/* handler-owned; main reads them after joining the handler */
	struct ev evs[MAXEV];
	int nev;
	struct { uint64_t from, to, len; } remap[4];
	int nremap;
	struct { int child; uint64_t addr; } pend[MAXPEND];
	int npend;
	unsigned char hits[2][NPG]; /* [0] parent, [1] child; by original page */
	unsigned long eagain, fork_fd_bad;
};

/* Serve one fault; returns 0, or -EAGAIN to retry once events are read. */
static int serve(struct fe *F, int child, uint64_t addr, void *buf)
{
	uint64_t a = addr & ~(uint64_t)(demo.page - 1), orig = a;
	for (int i = F->nremap - 1; i >= 0; i--)
		if (orig >= F->remap[i].to && orig < F->remap[i].to + F->remap[i].len)
			orig = F->remap[i].from + (orig - F->remap[i].to);
	if (orig < (uintptr_t)F->base || orig >= (uintptr_t)F->base + NPG * demo.page)
		demo_fail("%s fault at 0x%llx, outside the region (and its remaps)",
			  child ? "child" : "parent", (unsigned long long)a);
	size_t pg = (orig - (uintptr_t)F->base) / demo.page;
	demo_fill_page(buf, child ? CSEED : PSEED, pg);
	int r = demo_uffd_copy(child ? F->cuffd : F->uffd, a, buf, demo.page);
	if (r == -EAGAIN)
		return r;
	if (r < 0)
		demo_fail("UFFDIO_COPY %s page %zu at 0x%llx: %s", child ? "child" : "parent",
			  pg, (unsigned long long)a, strerror(-r));
	F->hits[child][pg]++;
	return 0;
}

static void on_msg(struct fe *F, int child, const struct uffd_msg *m, void *buf)
{
	if (m->event == UFFD_EVENT_PAGEFAULT) {
		if (serve(F, child, m->arg.pagefault.address, buf) == 0)
			return;
		F->eagain++;
		if (F->npend == MAXPEND)
			demo_fail("too many faults waiting for UFFDIO_COPY to stop saying EAGAIN");
		F->pend[F->npend].child = child;
		F->pend[F->npend++].addr = m->arg.pagefault.address;
		return;
	}
	if (F->nev == MAXEV)
		demo_fail("too many uffd events");
	struct ev *e = &F->evs[F->nev++];
	e->event = m->event;
	e->on_child = child;
	switch (m->event) {
	case UFFD_EVENT_FORK: {
		int nfd = (int)m->arg.fork.ufd;
		char link[64], path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", nfd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		if (nfd < 0 || nfd == F->uffd || F->cuffd >= 0 || !strstr(link, "userfaultfd"))
			F->fork_fd_bad++;
		e->a = (uint64_t)nfd;
		F->cuffd = nfd;
		break;
	}
	case UFFD_EVENT_REMAP:
		e->a = m->arg.remap.from; e->b = m->arg.remap.to; e->c = m->arg.remap.len;
		if (F->nremap < 4) {
			F->remap[F->nremap].from = e->a;
			F->remap[F->nremap].to = e->b;
			F->remap[F->nremap++].len = e->c;
		}
		break;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		e->a = m->arg.remove.start; e->b = m->arg.remove.end;
		break;
	default:
		demo_fail("unknown uffd event 0x%x", m->event);
	}
}

static void *handler(void *arg)
{
	struct fe *F = arg;
	struct uffd_msg msgs[16];
	void *buf = F->buf;
	int quit = 0;
	while (!quit || F->npend) {
		struct pollfd pfd[3] = { { F->uffd, POLLIN, 0 }, { F->cuffd, POLLIN, 0 },
					 { F->cmd[0], POLLIN, 0 } };
		/* A fault refused with EAGAIN is retried after a short wait: the
		 * event that caused it may already be read but not yet completed. */
		demo_poll(pfd, 3, F->npend ? 1 : -1);
		for (int c = 0; c < 2; c++) {
			if (pfd[c].revents & (POLLERR | POLLHUP | POLLNVAL))
				demo_fail("poll(%s uffd) revents 0x%x", c ? "child" : "parent", pfd[c].revents);
			int n;
			while (pfd[c].fd >= 0 && (n = demo_uffd_read(pfd[c].fd, msgs, 16)) > 0)
				for (int i = 0; i < n; i++)
					on_msg(F, c, &msgs[i], buf);
		}
		int left = 0;
		for (int i = 0; i < F->npend; i++)
			if (serve(F, F->pend[i].child, F->pend[i].addr, buf) == -EAGAIN)
				F->pend[left++] = F->pend[i];
		F->npend = left;
		if (pfd[2].revents & POLLIN) {
			char c;
			ssize_t n = read(F->cmd[0], &c, 1);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n != 1)
				demo_fail("handler command pipe: %s", n < 0 ? strerror(errno) : "EOF");
			if (c == 'c') {        /* the child is gone: drop its uffd */
				if (F->cuffd >= 0)
					close(F->cuffd);
				F->cuffd = -1;
			} else if (c == 'q') {
				quit = 1;
			}
		}
	}
	return NULL;
}

static void command(struct fe *F, char c)
{
	while (write(F->cmd[1], &c, 1) < 0)
		if (errno != EINTR)
			demo_fail_errno("write command pipe");
}

/* Touch pages [from, to) of `at` (whose page 0 is original page pg0) and
 * check each holds `seed` data. */
static void touch(const char *who, char *at, size_t pg0, size_t from, size_t to, uint64_t seed)
{
	for (size_t i = from; i < to; i++) {
		long bad = demo_check_page(at + i * demo.page, seed, pg0 + i);
		if (bad >= 0)
			demo_fail("%spage %zu (original page %zu): wrong data at byte %ld", who, i,
				  pg0 + i, bad);
		demo_pause();
	}
}

static const char *evname(unsigned e)
{
	return e == UFFD_EVENT_FORK ? "FORK" : e == UFFD_EVENT_REMAP ? "REMAP" :
	       e == UFFD_EVENT_REMOVE ? "REMOVE" : e == UFFD_EVENT_UNMAP ? "UNMAP" : "?";
}

#define FEATURES (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
		  UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP)

/* A restored region: it must be from before the fork.  Returns how many of
 * p0-15 were touched before the checkpoint (they are present, p0 first). */
static size_t resume_point(struct fe *F, const struct demo_restore *R)
{
	size_t P = demo.page;
	const char *why = NULL;
	F->base = demo_restored_range(R, NPG * P, UFFDIO_REGISTER_MODE_MISSING);
	if (!F->base || R->nranges != 1)
		why = "the region is no longer one 64-page MISSING range";
	size_t npre = 0;
	uint64_t *pm = F->base ? demo_pagemap(F->base, NPG) : NULL;
	for (size_t pg = 0; !why && pg < NPG; pg++) {
		if (!DEMO_PM_PRESENT(pm[pg]))
			continue;
		if (pg >= 16)
			why = "pages touched after the fork are present";
		else if (pg != npre)
			demo_fail("restored: page %zu is present but page %zu, touched before it, is not",
				  pg, npre);
		else
			npre++;
	}
	free(pm);
	if (why)
		demo_skip("restored from a checkpoint taken after the fork (%s): not supported, "
			  "the FORK event and what came before the checkpoint cannot be checked "
			  "again in one process", why);
	touch("restored ", F->base, 0, 0, npre, PSEED);
	return npre;
}

int main(int argc, char **argv)
{
	demo_init("fork_events", "ready mid child-exited moved unregistered restored", argc, argv);
	static struct fe F = { .cuffd = -1 };
	size_t P = demo.page;
	unsigned char pre[NPG] = { 0 };
	size_t npre = 0;
	struct demo_restore R;
	int restored = demo_restored(&R), resumed = 0;
	if (restored) {
		demo_restored_features(&R, FEATURES);
		F.uffd = R.fd;
		if (R.nranges) {
			npre = resume_point(&F, &R);
			memset(pre, 1, npre);
			resumed = 1;
		}
	}
	if (!resumed) {
		F.base = demo_mmap_anon(NPG * P);
		if (!restored) {
			F.uffd = demo_uffd_syscall(O_CLOEXEC | O_NONBLOCK);
			demo_uffd_api(F.uffd, FEATURES);
		}
		demo_uffd_register(F.uffd, F.base, NPG * P, UFFDIO_REGISTER_MODE_MISSING,
				   1ULL << _UFFDIO_COPY);
	}
	if (pipe2(F.cmd, O_CLOEXEC) < 0)
		demo_fail_errno("pipe2");
	F.buf = demo_page_buf();
	pthread_t th;
	demo_pthread_create(&th, handler, &F);
	if (resumed) {
		demo_note("resuming before the fork: region %p, %zu of p0-15 touched", (void *)F.base,
			  npre);
	} else if (restored) {
		demo_note("resuming: no range, the checkpoint was taken after UNREGISTER: "
			  "running the whole demo again on the restored uffd");
	} else {
		demo_ready();
		demo_hold("ready");
	}

	touch("", F.base, 0, npre < 8 ? npre : 8, 8, PSEED);
	if (npre <= 8)
		demo_hold("mid");
	touch("", F.base, 0, npre > 8 ? npre : 8, 16, PSEED);
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		demo_fail_errno("fork");
	if (pid == 0) {
		demo.name = "fork_events[child]";
		touch("child: ", F.base, 0, 0, 16, PSEED);
		touch("child: ", F.base, 0, 16, 32, CSEED);
		exit(DEMO_OK);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			demo_fail_errno("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		demo_fail("child exited with status 0x%x", st);
	demo_hold("child-exited");
	command(&F, 'c');

	touch("", F.base, 0, 16, 24, PSEED);
	touch("", F.base, 0, 32, 40, PSEED);
	char *dst = mmap(NULL, 16 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		demo_fail_errno("mmap reservation");
	if (mremap(F.base + 32 * P, 16 * P, 16 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dst) != dst)
		demo_fail_errno("mremap");
	touch("moved ", dst, 32, 0, 16, PSEED);
	demo_hold("moved");
	if (madvise(F.base, 8 * P, MADV_DONTNEED) < 0)
		demo_fail_errno("madvise(MADV_DONTNEED)");
	touch("", F.base, 0, 0, 8, PSEED);
	if (munmap(F.base + 48 * P, 16 * P) < 0)
		demo_fail_errno("munmap");
	command(&F, 'q');
	pthread_join(th, NULL);

	/* The events, in order. */
	char log[512] = "";
	for (int i = 0; i < F.nev; i++)
		snprintf(log + strlen(log), sizeof(log) - strlen(log), "%s%s(0x%llx,0x%llx,0x%llx)",
			 i ? " " : "", evname(F.evs[i].event), (unsigned long long)F.evs[i].a,
			 (unsigned long long)F.evs[i].b, (unsigned long long)F.evs[i].c);
	printf("fork_events: events: %s\n", log);
	uint64_t b = (uintptr_t)F.base;
	const struct ev want[] = {
		{ UFFD_EVENT_FORK, 0, F.evs[0].a, 0, 0 },
		{ UFFD_EVENT_REMAP, 0, b + 32 * P, (uintptr_t)dst, 16 * P },
		/* Linux also reports the source of a moving mremap as unmapped,
		 * right after the REMAP event. */
		{ UFFD_EVENT_UNMAP, 0, b + 32 * P, b + 48 * P, 0 },
		{ UFFD_EVENT_REMOVE, 0, b, b + 8 * P, 0 },
		{ UFFD_EVENT_UNMAP, 0, b + 48 * P, b + 64 * P, 0 },
	};
	int nwant = sizeof(want) / sizeof(want[0]);
	if (F.nev != nwant)
		demo_fail("%d events, expected %d (FORK REMAP UNMAP REMOVE UNMAP): %s", F.nev, nwant, log);
	for (int i = 0; i < nwant; i++)
		if (memcmp(&F.evs[i], &want[i], sizeof(want[i])))
			demo_fail("event %d: got %s%s, expected %s(0x%llx,0x%llx,0x%llx): %s", i,
				  evname(F.evs[i].event), F.evs[i].on_child ? " on the child uffd" : "",
				  evname(want[i].event), (unsigned long long)want[i].a,
				  (unsigned long long)want[i].b, (unsigned long long)want[i].c, log);
	if (F.fork_fd_bad)
		demo_fail("UFFD_EVENT_FORK gave fd %lld, which is not a new uffd", (long long)F.evs[0].a);
	/* Faults per original page: parent, child. */
	unsigned long nf[2] = { 0, 0 };
	for (size_t pg = 0; pg < NPG; pg++) {
		unsigned wp = (pg < 8 ? 2 : pg < 24 ? 1 : pg < 32 ? 0 : pg < 48 ? 1 : 0) - pre[pg];
		unsigned wc = pg >= 16 && pg < 32;
		if (F.hits[0][pg] != wp || F.hits[1][pg] != wc)
			demo_fail("page %zu: %u parent / %u child faults, expected %u / %u", pg,
				  F.hits[0][pg], F.hits[1][pg], wp, wc);
		nf[0] += F.hits[0][pg];
		nf[1] += F.hits[1][pg];
	}
	demo_uffd_unregister(F.uffd, F.base, 32 * P);
	demo_uffd_unregister(F.uffd, dst, 16 * P);
	demo_hold("unregistered");
	close(F.uffd);
	close(F.cmd[0]);
	close(F.cmd[1]);
	munmap(F.base, 32 * P);
	munmap(dst, 16 * P);
	free(F.buf);
	demo_ok("%sevents FORK, REMAP (+ UNMAP of its source), REMOVE, UNMAP once each with the right fields; %lu parent faults + %lu child faults on the forked uffd, per page as expected (%lu COPY retries after EAGAIN); data right in both processes",
		resumed ? "restored before the fork: " : restored ? "restored uffd without ranges, run again: " : "",
		nf[0], nf[1], F.eagain);
}
