/* track_no_populate_test.c - dirty tracking reads the app's memory without
 * ever faulting a page in.
 *
 * The tracker reads /proc/PID/pagemap and then the pages it found there.  Two
 * ways that read used to make pages: uffd-wp PTE markers (what WP_UNPOPULATED
 * protection leaves in a none PTE) look like swap entries in pagemap, and
 * reading one maps the zero page; and a page the app zaps between the
 * pagemap read and the page read is faulted in again.  QEMU's post-copy
 * destination, which discards pages and then must place each one itself,
 * failed on the result (UFFDIO_COPY: EEXIST).
 *
 * This program runs under the shim and is the tracked app, with a tracker
 * cutting an epoch every 2 ms over three regions of its own:
 *   untouched  mapped, one page written: the rest must stay not present;
 *   zapped     written whole and MADV_DONTNEED'd, round after round: after
 *              each zap no page of it may be present;
 *   missing    registered MISSING with the app's own uffd, touched and
 *              zapped round after round: the app's handler must see exactly
 *              one fault per page touched (a read by the tracker of a zapped
 *              page would be a fault the app never caused), and after each
 *              zap no page may be present.
 * At the end the tracker is stopped and must verify its chain against the
 * (frozen) process. */
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096ull
#define NPAGES 2048 /* 8 MiB: four page tables' worth */
#define ROUNDS_SECONDS 2

static uint64_t present_pages(int pm, const char *base)
{
	static uint64_t ent[NPAGES];
	if (pread(pm, ent, sizeof(ent), (off_t)((uintptr_t)base / PG * 8)) != (ssize_t)sizeof(ent))
		return UINT64_MAX;
	uint64_t n = 0;
	for (int i = 0; i < NPAGES; i++)
		n += ent[i] >> 63 & 1;
	return n;
}

static char *map_region(void)
{
	char *p = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, NPAGES * PG, MADV_NOHUGEPAGE); /* page by page, as counted */
	return p;
}

/* ---- the app's own uffd on the "missing" region ---- */
static int app_uffd = -1;
static volatile int app_missing, app_wp, app_unexpected;

static void *handler(void *arg)
{
	static char page[PG];
	(void)arg;
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(app_uffd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL; /* closed */
		if (m.event != UFFD_EVENT_PAGEFAULT ||
		    (shim_serve_fault(app_uffd, &m, page, &app_missing, &app_wp) < 0 &&
		     errno != EEXIST))
			app_unexpected++;
	}
}

/* ---- the tracker's output: epochs counted by a reader thread ---- */
static struct shim_tracker tr;
static volatile int epochs, verified;

static void *tracker_reader(void *arg)
{
	char line[512];
	(void)arg;
	while (fgets(line, sizeof(line), tr.out)) {
		if (!strncmp(line, "epoch ", 6))
			epochs++;
		else if (!strncmp(line, "verify: the chain matches", 25))
			verified = 1;
		else
			note("tracker: %s", line);
	}
	return NULL;
}

static void wait_epochs(int n)
{
	int want = epochs + n;
	for (int i = 0; i < 5000 && epochs < want; i++)
		usleep(1000);
}

int main(int argc, char **argv)
{
	shim_reexec_if_needed(argv);
	app_uffd = uffd_create(O_CLOEXEC);
	if (app_uffd < 0 || uffd_api(app_uffd, 0, NULL) < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	char *untouched = map_region(), *zapped = map_region(), *missing = map_region();
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (!untouched || !zapped || !missing || pm < 0)
		skip_all("mmap or /proc/self/pagemap: %s", strerror(errno));
	struct uffdio_register reg = {.range = {(uint64_t)(uintptr_t)missing, NPAGES * PG},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	pthread_t ht, rt;
	if (ioctl(app_uffd, UFFDIO_REGISTER, &reg) < 0 ||
	    pthread_create(&ht, NULL, handler, NULL) != 0)
		skip_all("registering the app's uffd: %s", strerror(errno));
	plan(7);
	untouched[0] = 1;

	char tmp[] = "/tmp/uffdshim-nopop-XXXXXX";
	if (!mkdtemp(tmp))
		skip_all("mkdtemp: %s", strerror(errno));
	char dir[600], pid[16], r[3][64];
	snprintf(dir, sizeof(dir), "%s/chain", tmp);
	snprintf(pid, sizeof(pid), "%d", getpid());
	char *regions[3] = {untouched, zapped, missing};
	for (int i = 0; i < 3; i++)
		snprintf(r[i], sizeof(r[i]), "0x%llx-0x%llx",
			 (unsigned long long)(uintptr_t)regions[i],
			 (unsigned long long)((uintptr_t)regions[i] + NPAGES * PG));
	char *args[] = {"track", pid, "-D", dir, "--interval", "2", "--verify",
			"--range", r[0], "--range", r[1], "--range", r[2], NULL};
	if (shim_tracker_start(&tr, args) < 0 || pthread_create(&rt, NULL, tracker_reader, NULL))
		skip_all("cannot start uffd-record track: %s", strerror(errno));
	wait_epochs(5);
	ok(epochs >= 5, "the tracker cuts epochs every 2 ms (%d so far)", epochs);

	/* untouched: WP_UNPOPULATED left markers in its none PTEs; the tracker
	 * must not read them as swapped-out pages. */
	wait_epochs(5);
	is_u64(present_pages(pm, untouched), 1,
	       "untouched memory: after %d epochs only the page the app wrote is present", epochs);

	/* zapped and missing, round after round while the tracker reads */
	uint64_t rounds = 0, zap_left = 0, miss_left = 0, touches = 0;
	time_t end = time(NULL) + ROUNDS_SECONDS;
	while (time(NULL) < end) {
		for (int i = 0; i < NPAGES; i++)
			zapped[i * PG] = (char)(rounds + 1);
		for (int i = 0; i < NPAGES; i += 4, touches++)
			(void)*(volatile char *)(missing + i * PG); /* a MISSING fault each */
		usleep(500); /* let a cut find them dirty and the tracker start reading */
		madvise(zapped, NPAGES * PG, MADV_DONTNEED);
		madvise(missing, NPAGES * PG, MADV_DONTNEED);
		usleep(2000);
		zap_left += present_pages(pm, zapped);
		miss_left += present_pages(pm, missing);
		rounds++;
	}
	int ep = epochs;
	is_u64(zap_left, 0, "zapped memory: no page present after any of %" PRIu64 " zaps "
	       "(%d epochs meanwhile)", rounds, ep);
	is_u64(miss_left, 0, "the app's MISSING memory: no page present after any zap");
	is_int(app_missing, (long long)touches, "the app's uffd saw exactly its own MISSING faults "
	       "(%" PRIu64 " touches)", touches);
	is_int(app_unexpected + app_wp, 0, "the app's handler saw nothing unexpected");

	fclose(tr.in);
	kill(tr.pid, SIGINT); /* interval mode: the last epoch is frozen, then verify */
	int st = 0;
	waitpid(tr.pid, &st, 0);
	pthread_join(rt, NULL);
	ok(verified && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	   "the tracker stops and verifies its chain against the frozen process (exit %d)",
	   WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	close(app_uffd);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		diag("could not remove %s", tmp);
	return done_testing();
}
