/* track_truth_test.c - dirty tracking against ground truth.
 *
 * This program runs under the shim and is the tracked app.  For each memory
 * kind of the table (plain anonymous memory; memory the app registered in WP
 * mode with its own uffd and handler; memory the app registered in MISSING
 * mode, to which the shim adds WP without the app noticing) it maps a region, starts `uffd-record track --step --range` on
 * itself, and per epoch writes a known random set of pages, then asks the
 * tracker for a cut.  The tracker's dirty log must hold every written page
 * (never a miss); false positives are counted and, where the mode is exact
 * (async, sync), must be zero.  The app's own uffd must see exactly its own
 * faults.  At the end the tracker verifies the chain against the stopped
 * process, and `uffd-replay` restores the chain into a fresh process
 * (this program with --check) that compares every page with what was
 * written. */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define NPAGES 2048
#define EPOCHS 4
#define INITIAL 400
#define PER_EPOCH 150
#define APP_WP 24

enum kind { K_ANON, K_APP_WP, K_APP_MISSING, K__N };
static const struct {
	const char *name;
	uint64_t base;
	bool exact;     /* the mode reports no false positive */
} kinds[K__N] = {
	{"anon (async WP)", 0x7e1000000000ull, true},
	{"app WP uffd (sync WP)", 0x7e2000000000ull, true},
	{"app MISSING uffd (sync, WP added by the shim)", 0x7e3000000000ull, true},
};

#define PG 4096ull

/* What page i holds after epoch e wrote it (e = 0: the initial touch). */
static uint64_t word(int kind, int e, uint64_t i, uint64_t w)
{
	return ((uint64_t)(kind + 1) << 56) | ((uint64_t)(e + 1) << 40) | (i << 12) | w;
}

static void fill(uint64_t *p, int kind, int e, uint64_t i)
{
	for (uint64_t w = 0; w < PG / 8; w++)
		p[w] = word(kind, e, i, w);
}

static uint64_t rng_below(uint64_t *s, uint64_t n) /* splitmix64 */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (z ^ (z >> 31)) % n;
}

/* The write plan: which pages each epoch writes, from a fixed seed. */
struct plan {
	uint8_t wrote[EPOCHS + 1][NPAGES];
	uint8_t app_wp[EPOCHS + 1][NPAGES];
	int last[NPAGES];   /* last epoch that wrote page i, -1 never */
};

static void make_plan(struct plan *p, int kind)
{
	memset(p, 0, sizeof(*p));
	uint64_t r = 1000 + (uint64_t)kind; /* fixed: the --check run replays it */
	for (int i = 0; i < NPAGES; i++)
		p->last[i] = -1;
	for (int e = 0; e <= EPOCHS; e++) {
		int n = e == 0 ? INITIAL : PER_EPOCH;
		for (int k = 0; k < n; k++) {
			uint64_t i = rng_below(&r, NPAGES);
			p->wrote[e][i] = 1;
			p->last[i] = e;
		}
		for (int k = 0; e > 0 && k < APP_WP; k++)
			p->app_wp[e][rng_below(&r, NPAGES)] = 1;
	}
}

/* ---- the app's own uffd and handler ---- */
struct app {
	int kind;
	int uffd;
	char *base;
	pthread_t thr;
	volatile int wp_faults, missing_faults, unexpected;
};

static void *handler(void *arg)
{
	struct app *a = arg;
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(a->uffd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL; /* closed */
		if (m.event != UFFD_EVENT_PAGEFAULT) {
			a->unexpected++;
			continue;
		}
		uint64_t page = m.arg.pagefault.address & ~(PG - 1);
		if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
			a->wp_faults++;
			struct uffdio_writeprotect w = {{page, PG}, 0};
			if (ioctl(a->uffd, UFFDIO_WRITEPROTECT, &w) < 0)
				a->unexpected++;
		} else {
			a->missing_faults++;
			static uint64_t buf[PG / 8];
			fill(buf, a->kind, 0, (page - (uint64_t)a->base) / PG);
			struct uffdio_copy c = {.dst = page, .src = (uint64_t)buf, .len = PG};
			if (ioctl(a->uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
				a->unexpected++;
		}
	}
}

static int app_uffd_setup(struct app *a)
{
	a->uffd = uffd_create(O_CLOEXEC);
	if (a->uffd < 0 || uffd_api(a->uffd, 0, NULL) < 0)
		return -1;
	struct uffdio_register reg = {
		.range = {(uint64_t)a->base, NPAGES * PG},
		.mode = a->kind == K_APP_WP ? UFFDIO_REGISTER_MODE_WP : UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(a->uffd, UFFDIO_REGISTER, &reg) < 0)
		return -1;
	return pthread_create(&a->thr, NULL, handler, a) == 0 ? 0 : -1;
}

/* The pages of the region the dirty log lists for epoch e. */
static void log_pages(const char *path, int e, uint64_t base, uint8_t *set)
{
	memset(set, 0, NPAGES);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	unsigned ep;
	unsigned long long addr, n;
	while (fscanf(f, "%u %llx %llu", &ep, &addr, &n) == 3) {
		if ((int)ep != e)
			continue;
		for (unsigned long long k = 0; k < n; k++) {
			uint64_t a = addr + k * PG;
			if (a >= base && a < base + NPAGES * PG)
				set[(a - base) / PG] = 1;
		}
	}
	fclose(f);
}

static int check_restored(int kind)
{
	static struct plan p;
	make_plan(&p, kind);
	uint64_t *base = (uint64_t *)kinds[kind].base;
	static uint64_t want[PG / 8];
	int bad = 0;
	for (int i = 0; i < NPAGES; i++) {
		if (p.last[i] < 0)
			continue; /* never touched: may be a MISSING page: do not read */
		fill(want, kind, p.last[i], (uint64_t)i);
		if (memcmp(base + i * (PG / 8), want, PG) != 0)
			bad++;
	}
	printf("restored %s: %d pages differ\n", kinds[kind].name, bad);
	return bad ? 1 : 0;
}

static void run_kind(int kind, const char *tmp)
{
	static struct plan p;
	make_plan(&p, kind);
	struct app a = {.kind = kind, .uffd = -1};
	a.base = mmap((void *)kinds[kind].base, NPAGES * PG, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (a.base != (char *)kinds[kind].base) {
		skip(EPOCHS + 5, "%s: cannot map the region", kinds[kind].name);
		return;
	}
	if (kind != K_ANON && app_uffd_setup(&a) < 0) {
		skip(EPOCHS + 5, "%s: app uffd: %s", kinds[kind].name, uffd_skip_reason(errno));
		return;
	}
	for (int i = 0; i < NPAGES; i++)
		if (p.wrote[0][i])
			fill((uint64_t *)(a.base + i * PG), kind, 0, (uint64_t)i);
	char dir[512], logp[512], range[64], pid[16];
	snprintf(dir, sizeof(dir), "%s/chain-%d", tmp, kind);
	snprintf(logp, sizeof(logp), "%s/dirty-%d.log", tmp, kind);
	snprintf(range, sizeof(range), "0x%llx-0x%llx", (unsigned long long)kinds[kind].base,
		 (unsigned long long)(kinds[kind].base + NPAGES * PG));
	snprintf(pid, sizeof(pid), "%d", getpid());
	char *args[] = {"track", pid, "-D", dir, "--range", range, "--step", "--verify",
			"--augment-missing", "--dirty-log", logp, NULL};
	struct shim_tracker t;
	char line[512];
	if (shim_tracker_start(&t, args) < 0 ||
	    !shim_tracker_expect(&t, "epoch 0", line, sizeof(line))) {
		skip(EPOCHS + 5, "%s: tracker did not start", kinds[kind].name);
		return;
	}
	int missed_total = 0, fp_total = 0, app_faults_want = 0;
	static uint8_t got[NPAGES], held[NPAGES];
	memset(held, 0, sizeof(held));
	for (int e = 1; e <= EPOCHS; e++) {
		/* The app's own protection for this epoch, then the writes. */
		for (int i = 0; kind == K_APP_WP && i < NPAGES; i++)
			if (p.app_wp[e][i]) {
				struct uffdio_writeprotect w = {{(uint64_t)a.base + i * PG, PG},
								UFFDIO_WRITEPROTECT_MODE_WP};
				ioctl(a.uffd, UFFDIO_WRITEPROTECT, &w);
				/* Anonymous memory: only present pages get protected. */
				bool present = false;
				for (int e2 = 0; e2 < e; e2++)
					present |= p.wrote[e2][i];
				held[i] |= present;
			}
		/* The app faults on each page it holds when it writes it. */
		for (int i = 0; kind == K_APP_WP && i < NPAGES; i++)
			if (held[i] && p.wrote[e][i]) {
				app_faults_want++;
				held[i] = 0;
			}
		for (int i = 0; i < NPAGES; i++)
			if (p.wrote[e][i])
				fill((uint64_t *)(a.base + i * PG), kind, e, (uint64_t)i);
		fprintf(t.in, "\n");
		fflush(t.in);
		char want[16];
		snprintf(want, sizeof(want), "epoch %d", e);
		if (!shim_tracker_expect(&t, want, line, sizeof(line)))
			break;
		log_pages(logp, e, kinds[kind].base, got);
		int missed = 0, fp = 0;
		for (int i = 0; i < NPAGES; i++) {
			missed += p.wrote[e][i] && !got[i];
			fp += got[i] && !p.wrote[e][i];
			if (got[i] && !p.wrote[e][i])
				diag("fp page %d: wrote %d%d%d%d%d", i, p.wrote[0][i], p.wrote[1][i],
				     p.wrote[2][i], p.wrote[3][i], p.wrote[4][i]);
		}
		missed_total += missed;
		fp_total += fp;
		if (missed || fp)
			diag("%s epoch %d: %d missed, %d false positives", kinds[kind].name, e, missed, fp);
	}
	is_int(missed_total, 0, "%s: no written page missed in %d epochs", kinds[kind].name, EPOCHS);
	if (kinds[kind].exact)
		is_int(fp_total, 0, "%s: no false positive", kinds[kind].name);
	else
		ok(1, "%s: %d false positives (every present page each epoch)", kinds[kind].name,
		   fp_total);
	/* The app's own view while tracked: a WP call on its MISSING-only range
	 * gets the kernel's answer for it, even though the shim added WP. */
	int wp_errno = 0;
	if (kind == K_APP_MISSING) {
		struct uffdio_writeprotect w = {{(uint64_t)a.base, PG}, UFFDIO_WRITEPROTECT_MODE_WP};
		wp_errno = ioctl(a.uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? errno : 0;
	}
	fclose(t.in); /* the last epoch: frozen, then --verify */
	bool verified = shim_tracker_expect(&t, "verify: the chain matches", line, sizeof(line));
	while (fgets(line, sizeof(line), t.out))
		note("tracker: %s", line);
	fclose(t.out);
	int st = 0;
	waitpid(t.pid, &st, 0);
	ok(verified && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	   "%s: the chain matches the stopped process's memory", kinds[kind].name);
	if (kind == K_APP_WP)
		is_int(a.wp_faults, app_faults_want, "%s: the app saw exactly its own WP faults",
		       kinds[kind].name);
	else if (kind == K_APP_MISSING)
		ok(a.missing_faults > 0 && a.wp_faults == 0 && wp_errno == ENOENT,
		   "%s: the app saw its MISSING faults (%d), no WP fault, and WRITEPROTECT on its "
		   "MISSING-only range still fails with ENOENT (got %s)", kinds[kind].name,
		   a.missing_faults, strerror(wp_errno));
	else
		ok(1, "%s: no app uffd", kinds[kind].name);
	is_int(a.unexpected, 0, "%s: the app's handler saw nothing unexpected", kinds[kind].name);
	/* Relaunch restore of the chain into a fresh process. */
	char replay[1024], self[1024], karg[8], out[8192];
	snprintf(replay, sizeof(replay), "%s/uffd-replay", shim_build_dir());
	ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[sl > 0 ? sl : 0] = 0;
	snprintf(karg, sizeof(karg), "%d", kind);
	snprintf(out, sizeof(out), "%s -D %s -- %s --check %s 2>&1", replay, dir, self, karg);
	FILE *pf = popen(out, "r");
	size_t n = pf ? fread(out, 1, sizeof(out) - 1, pf) : 0;
	out[n] = 0;
	int rst = pf ? pclose(pf) : -1;
	ok(rst == 0 && strstr(out, "0 pages differ"), "%s: relaunch restore of the chain holds "
	   "every written page", kinds[kind].name);
	if (rst != 0)
		diag("uffd-replay: %s", out);
	if (a.uffd >= 0)
		close(a.uffd);
	munmap(a.base, NPAGES * PG);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--check"))
		return check_restored(atoi(argv[2]));
	shim_reexec_if_needed(argv);
	int fd = uffd_create(O_CLOEXEC);
	if (fd < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	close(fd);
	char tmp[] = "/tmp/uffdshim-track-XXXXXX";
	if (!mkdtemp(tmp))
		skip_all("mkdtemp: %s", strerror(errno));
	plan(K__N * 6);
	for (int k = 0; k < K__N; k++)
		run_kind(k, tmp);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		diag("could not remove %s", tmp);
	return done_testing();
}
