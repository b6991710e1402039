/* dump_restore_bench.c - how fast a large uffd state is checkpointed
 * (uffd-record dump) and relaunched (uffd-replay -D DIR -- PROG).
 *
 * A child of the benchmark runs under the shim (LD_PRELOAD) and sets up, by
 * default, 10,000 registrations over 1 GiB of anonymous memory (alternately
 * MODE_WP and MODE_WP|MODE_MISSING, so that no two neighbours merge), with
 * 100,000 pages spread evenly over it holding data and write-protected (one
 * UFFDIO_WRITEPROTECT per range; anonymous memory without WP_UNPOPULATED
 * protects the present pages only).  Then, ROUNDS times each (median, min
 * and max printed):
 *
 *   dump state     `uffd-record dump PID -D DIR --leave-running`: wall time
 *                  of the command, and its own "state" phase
 *   dump memory    the same with --with-memory: bytes of page data written
 *                  over the command's memory + write phases, in GB/s
 *   restore state  `uffd-replay -D DIR -- this --restored-child`: the time
 *                  from starting uffd-replay to the restored child's main(),
 *                  less the same for the child started with the shim
 *                  preloaded and nothing to restore (the baseline)
 *   restore memory the same from the image with memory, less the state-only
 *                  restore: bytes of page data read back, in GB/s
 *
 * For scale, the same number of bytes is also written to a file in the image
 * directory and copied into fresh anonymous memory (the machine's ceilings
 * for the two memory figures).
 *
 * The restored child checks what it got (the number of restored ranges, the
 * uffd-wp bits and present pages from /proc/self/pagemap, the contents of
 * every 61st data page), and one more restore from each image is held for
 * `uffd-record status PID --verify`.  The figures are printed against the
 * targets (dump <= 100 ms, restore <= 200 ms, >= 1 GB/s each way), never
 * turned into a failure: the exit status is 1 only if something did not
 * work (setup, a dump, a restore, a check), 2 on bad usage.
 *
 * Images go to --dir (default /dev/shm when it is writable, so that the
 * figures are the tools' and not the disk's; else $TMPDIR or /tmp).  Tools:
 * $UFFDSHIM_BUILD/{uffd-record,uffd-replay}, else the ones beside
 * <dir of this program>/..; the shim: $UFFDSHIM_LIB, else
 * <dir of the tools>/libuffdshim.so. */
#include "uffd_compat.h"
#include "uffdshim.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PAGE 4096ULL
#define TARGET_DUMP_MS 100.0
#define TARGET_RESTORE_MS 200.0
#define TARGET_GBS 1.0
#define MAX_ROUNDS 32

struct cfg {
	uint64_t ranges, mib, wp_pages, rounds;
	const char *dir;
	bool keep;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;
	int e = errno;
	va_start(ap, fmt);
	fprintf(stderr, "dump_restore_bench [pid %d]: FAILED: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, e ? " (%s)\n" : "\n", strerror(e));
	exit(1);
}

/* ---- the layout both sides agree on ---- */

static uint64_t npages_of(const struct cfg *c)
{
	return c->mib * (1ULL << 20) / PAGE;
}

/* Page i holds data (and is write-protected): wp_pages of them, evenly. */
static bool is_data(const struct cfg *c, uint64_t i)
{
	uint64_t n = npages_of(c);
	return i * c->wp_pages / n != (i + 1) * c->wp_pages / n;
}

static uint64_t word(uint64_t page, uint64_t k)
{
	return (page + 1) * 0x9e3779b97f4a7c15ULL ^ (k * 0xbf58476d1ce4e5b9ULL) ^ 0x5a5a;
}

/* ---- the child: set up, then wait for EOF on stdin ---- */

static int child_main(const struct cfg *c)
{
	uint64_t n = npages_of(c), len = n * PAGE;
	char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		die("mmap %" PRIu64 " MiB", c->mib);
	madvise(base, len, MADV_NOHUGEPAGE); /* 4 KiB pages, whatever THP says */
	for (uint64_t i = 0; i < n; i++)
		if (is_data(c, i))
			for (uint64_t k = 0; k < PAGE / 8; k++)
				((uint64_t *)(base + i * PAGE))[k] = word(i, k);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP};
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	for (uint64_t r = 0; r < c->ranges; r++) {
		uint64_t p0 = r * n / c->ranges, p1 = (r + 1) * n / c->ranges;
		struct uffdio_register reg = {
			.range = {(uintptr_t)base + p0 * PAGE, (p1 - p0) * PAGE},
			.mode = UFFDIO_REGISTER_MODE_WP | (r % 2 ? UFFDIO_REGISTER_MODE_MISSING : 0)};
		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
			die("UFFDIO_REGISTER range %" PRIu64, r);
		struct uffdio_writeprotect wp = {.range = reg.range,
						 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
		if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
			die("UFFDIO_WRITEPROTECT range %" PRIu64, r);
	}
	printf("READY pid=%d base=%p\n", (int)getpid(), (void *)base);
	fflush(stdout);
	char b[64];
	while (read(0, b, sizeof(b)) > 0)
		;
	return 0;
}

/* ---- the restored child: report main()'s time, then check ---- */

static int restored_main(const struct cfg *c, bool wait_stdin)
{
	uint64_t t_main = now_ns();
	struct uffdshim_restored_uffd u[2];
	int nu = uffdshim_restored(u, 2);
	uint64_t ranges = nu == 1 ? u[0].nranges : 0, wp = 0, present = 0, bad = 0;
	uint64_t start = 0, len = 0, modes = 0, last = 0;
	if (nu == 1 && ranges &&
	    uffdshim_restored_range(u[0].fd, 0, &start, &len, &modes) == 0 &&
	    uffdshim_restored_range(u[0].fd, (unsigned)ranges - 1, &last, &len, &modes) == 0) {
		uint64_t n = (last + len - start) / PAGE;
		int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		uint64_t *ent = malloc(n * 8);
		if (pm < 0 || !ent || pread(pm, ent, n * 8, (off_t)(start / PAGE * 8)) != (ssize_t)(n * 8))
			die("reading /proc/self/pagemap");
		close(pm);
		for (uint64_t i = 0; i < n; i++) {
			wp += ent[i] >> PM_BIT_UFFD_WP & 1;
			bool in = (ent[i] >> PM_BIT_PRESENT & 1) || (ent[i] >> PM_BIT_SWAPPED & 1);
			present += in;
			if (in && is_data(c, i) && i % 61 == 0)
				for (uint64_t k = 0; k < PAGE / 8; k++)
					if (((uint64_t *)(start + i * PAGE))[k] != word(i, k)) {
						bad++;
						break;
					}
		}
		free(ent);
	}
	printf("RESTORED main_ns=%" PRIu64 " uffds=%d ranges=%" PRIu64 " wp=%" PRIu64
	       " present=%" PRIu64 " bad=%" PRIu64 "\n",
	       t_main, nu, ranges, wp, present, bad);
	fflush(stdout);
	if (wait_stdin) {
		char b[64];
		while (read(0, b, sizeof(b)) > 0)
			;
	}
	return 0;
}

/* ---- running things ---- */

struct proc {
	pid_t pid;
	FILE *out;  /* its stdout */
	int in;     /* its stdin, or -1 */
	uint64_t t0;
};

/* Start argv with envp; only fds 0-2 are passed (a restore needs the
 * checkpointed fd numbers free). */
static void spawn(struct proc *p, char *const argv[], char *const envp[], bool keep_stdin)
{
	int o[2], i[2] = {-1, -1};
	if (pipe2(o, O_CLOEXEC) < 0 || (keep_stdin && pipe2(i, O_CLOEXEC) < 0))
		die("pipe2");
	p->t0 = now_ns();
	p->pid = fork();
	if (p->pid < 0)
		die("fork");
	if (p->pid == 0) {
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		dup2(keep_stdin ? i[0] : nul, 0);
		dup2(o[1], 1);
		execve(argv[0], argv, envp);
		fprintf(stderr, "dump_restore_bench: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(o[1]);
	if (keep_stdin)
		close(i[0]);
	p->in = i[1];
	p->out = fdopen(o[0], "r");
}

static int finish(struct proc *p)
{
	if (p->in >= 0)
		close(p->in);
	p->in = -1;
	char line[4096];
	while (fgets(line, sizeof(line), p->out))
		fputs(line, stderr); /* anything unexpected is shown */
	fclose(p->out);
	int st;
	while (waitpid(p->pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The first line of p's stdout starting with tag (others go to stderr). */
static bool read_tagged(struct proc *p, const char *tag, char *line, size_t len)
{
	while (fgets(line, (int)len, p->out)) {
		if (!strncmp(line, tag, strlen(tag)))
			return true;
		fputs(line, stderr);
	}
	return false;
}

static char **env_with(const char *preload)
{
	size_t n = 0;
	while (environ[n])
		n++;
	char **e = calloc(n + 2, sizeof(*e));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) && strncmp(environ[i], "UFFDSHIM_", 9))
			e[k++] = environ[i];
	if (preload) {
		static char buf[PATH_MAX + 16];
		snprintf(buf, sizeof(buf), "LD_PRELOAD=%s", preload);
		e[k++] = buf;
	}
	return e;
}

/* ---- statistics ---- */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct stat3 {
	double med, min, max;
};

static struct stat3 stats(const double *v, int n)
{
	double s[MAX_ROUNDS];
	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp_d);
	return (struct stat3){n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[0], s[n - 1]};
}

static void row(const char *what, const double *v, int n, const char *unit, double target,
		bool at_most)
{
	struct stat3 s = stats(v, n);
	bool met = at_most ? s.med <= target : s.med >= target;
	printf("  %-34s %9.2f %9.2f %9.2f  %-5s  %s %.0f %-5s %s\n", what, s.med, s.min, s.max, unit,
	       at_most ? "<=" : ">=", target, unit, met ? "met" : "MISSED");
}

/* ---- the parent ---- */

struct tools {
	char record[PATH_MAX + 32], replay[PATH_MAX + 32], shim[PATH_MAX + 32], self[PATH_MAX];
};

static void find_tools(struct tools *t)
{
	ssize_t n = readlink("/proc/self/exe", t->self, sizeof(t->self) - 1);
	if (n <= 0)
		die("readlink /proc/self/exe");
	t->self[n] = 0;
	char dir[PATH_MAX];
	const char *b = getenv("UFFDSHIM_BUILD");
	if (b && *b) {
		snprintf(dir, sizeof(dir), "%s", b);
	} else {
		snprintf(dir, sizeof(dir), "%s", t->self);
		for (int i = 0; i < 2; i++) /* <build>/bench/NAME -> <build> */
			*strrchr(dir, '/') = 0;
	}
	snprintf(t->record, sizeof(t->record), "%s/uffd-record", dir);
	snprintf(t->replay, sizeof(t->replay), "%s/uffd-replay", dir);
	const char *lib = getenv("UFFDSHIM_LIB");
	if (lib && *lib)
		snprintf(t->shim, sizeof(t->shim), "%s", lib);
	else
		snprintf(t->shim, sizeof(t->shim), "%s/libuffdshim.so", dir);
	if (access(t->record, X_OK) || access(t->replay, X_OK) || access(t->shim, R_OK))
		die("need %s, %s and %s (build first, or set UFFDSHIM_BUILD / UFFDSHIM_LIB)",
		    t->record, t->replay, t->shim);
}

/* Run a tool to the end; the lines of its stdout that start with one of
 * the "|"-separated prefixes go into out.  Returns its exit status. */
static int run_tool(char *const argv[], const char *keep, char *out, size_t outlen, double *ms)
{
	struct proc p;
	spawn(&p, argv, env_with(NULL), false);
	size_t got = 0;
	char line[1024];
	out[0] = 0;
	while (fgets(line, sizeof(line), p.out)) {
		size_t l = strlen(line);
		bool kept = false;
		for (const char *k = keep; k && *k && !kept;) {
			size_t kl = strcspn(k, "|");
			kept = !strncmp(line, k, kl);
			k += kl + (k[kl] == '|');
		}
		if (kept && got + l < outlen) {
			memcpy(out + got, line, l + 1);
			got += l;
		}
	}
	fclose(p.out);
	int st;
	while (waitpid(p.pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	*ms = (double)(now_ns() - p.t0) / 1e6;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct dump_fig {
	double wall_ms, state_ms, mem_ms, write_ms;
	uint64_t data_pages;
};

static void dump(const struct tools *t, pid_t pid, const char *dir, bool mem, struct dump_fig *f)
{
	char spid[16], out[4096];
	snprintf(spid, sizeof(spid), "%d", (int)pid);
	char *argv[] = {(char *)t->record, "dump", spid, "-D", (char *)dir, "--leave-running",
			mem ? "--with-memory" : NULL, NULL};
	int rc = run_tool(argv, "dumped |times: ", out, sizeof(out), &f->wall_ms);
	const char *tm = strstr(out, "times: state ");
	if (rc != 0 || !tm ||
	    sscanf(tm, "times: state %lf ms, memory %lf ms, write %lf ms", &f->state_ms, &f->mem_ms,
		   &f->write_ms) != 3)
		die("uffd-record dump %s%s exited %d: %s", spid, mem ? " --with-memory" : "", rc, out);
	f->data_pages = 0;
	const char *dp = strstr(out, "write-protected pages, ");
	if (dp)
		sscanf(dp, "write-protected pages, %" SCNu64 " data pages", &f->data_pages);
}

struct restored {
	double ms;
	uint64_t ranges, wp, present, bad;
	int uffds;
	pid_t pid;
};

/* Start the restored child (or, dir NULL, the baseline: the shim preloaded,
 * nothing to restore) and read its report. */
static void restore(const struct tools *t, const struct cfg *c, const char *dir,
		    struct restored *r, bool hold, struct proc *held)
{
	char sr[24], sm[24], sw[24];
	snprintf(sr, sizeof(sr), "%" PRIu64, c->ranges);
	snprintf(sm, sizeof(sm), "%" PRIu64, c->mib);
	snprintf(sw, sizeof(sw), "%" PRIu64, c->wp_pages);
	char *child[] = {(char *)t->self, "--restored-child", "--ranges", sr, "--mib", sm,
			 "--wp-pages", sw, hold ? "--wait" : NULL, NULL};
	char *argv[16];
	int k = 0;
	if (dir) {
		argv[k++] = (char *)t->replay;
		argv[k++] = "-D";
		argv[k++] = (char *)dir;
		argv[k++] = "--";
	}
	for (int i = 0; child[i]; i++)
		argv[k++] = child[i];
	argv[k] = NULL;
	struct proc p;
	spawn(&p, argv, env_with(dir ? NULL : t->shim), hold);
	char line[512];
	uint64_t main_ns = 0;
	if (!read_tagged(&p, "RESTORED ", line, sizeof(line)) ||
	    sscanf(line, "RESTORED main_ns=%" SCNu64 " uffds=%d ranges=%" SCNu64 " wp=%" SCNu64
			 " present=%" SCNu64 " bad=%" SCNu64,
		   &main_ns, &r->uffds, &r->ranges, &r->wp, &r->present, &r->bad) != 6) {
		int rc = finish(&p);
		die("%s: the restored child did not report (exit status %d)", dir ? dir : "baseline",
		    rc);
	}
	r->ms = (double)(main_ns - p.t0) / 1e6;
	r->pid = p.pid;
	if (hold) {
		*held = p;
		return;
	}
	int rc = finish(&p);
	if (rc != 0)
		die("%s: the restored child exited %d", dir ? dir : "baseline", rc);
}

static bool check_restored(const char *what, const struct restored *r, const struct cfg *c,
			   uint64_t want_wp, uint64_t want_present)
{
	bool ok = r->uffds == 1 && r->ranges == c->ranges && r->wp == want_wp &&
		  r->present == want_present && r->bad == 0;
	printf("  %-15s %d uffd, %" PRIu64 " ranges, %" PRIu64 " uffd-wp pages, %" PRIu64
	       " present, %" PRIu64 " bad sampled pages: %s\n", what, r->uffds, r->ranges, r->wp,
	       r->present, r->bad, ok ? "as expected" : "WRONG");
	if (!ok)
		printf("  %-15s expected 1 uffd, %" PRIu64 " ranges, %" PRIu64 " uffd-wp, %" PRIu64
		       " present, 0 bad\n", "", c->ranges, want_wp, want_present);
	return ok;
}

/* Hold a restored child and run `uffd-record status PID --verify` on it. */
static bool verify_restored(const struct tools *t, const struct cfg *c, const char *dir,
			    const char *what)
{
	struct proc held;
	struct restored r;
	restore(t, c, dir, &r, true, &held);
	char spid[16], out[8192];
	snprintf(spid, sizeof(spid), "%d", (int)r.pid);
	char *argv[] = {(char *)t->record, "status", spid, "--verify", NULL};
	double ms;
	int rc = run_tool(argv, "verify: ", out, sizeof(out), &ms);
	char *last = out, *nl;
	while ((nl = strchr(last, '\n')) && nl[1]) /* the summary is the last line */
		last = nl + 1;
	printf("  %-15s status --verify of the restored child: exit %d, %s", what, rc,
	       *last ? last : "no verify line\n");
	return finish(&held) == 0 && rc == 0;
}

/* GB/s of writing len bytes to a new file in dir (the pages file's way). */
static double ref_write(const char *dir, uint64_t len)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/ref.bin", dir);
	size_t chunk = 4u << 20;
	char *buf = malloc(chunk);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (!buf || fd < 0)
		die("%s", path);
	memset(buf, 0x5a, chunk);
	uint64_t t0 = now_ns();
	for (uint64_t done = 0; done < len; done += chunk)
		if (write(fd, buf, len - done < chunk ? len - done : chunk) < 0)
			die("write %s", path);
	fsync(fd);
	double s = (double)(now_ns() - t0) / 1e9;
	close(fd);
	unlink(path);
	free(buf);
	return (double)len / s / 1e9;
}

/* GB/s of copying len bytes into fresh anonymous memory (a restore's way). */
static double ref_fill(uint64_t len)
{
	size_t chunk = 4u << 20;
	char *src = malloc(chunk);
	char *dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!src || dst == MAP_FAILED)
		die("ref_fill: %" PRIu64 " bytes", len);
	memset(src, 0x5a, chunk);
	madvise(dst, len, MADV_NOHUGEPAGE);
	uint64_t t0 = now_ns();
	for (uint64_t done = 0; done < len; done += chunk)
		memcpy(dst + done, src, len - done < chunk ? len - done : chunk);
	double s = (double)(now_ns() - t0) / 1e9;
	munmap(dst, len);
	free(src);
	return (double)len / s / 1e9;
}

/* The image directory, removed at exit (also when something failed). */
static char g_dir[PATH_MAX];

static void remove_dir(void)
{
	char cmd[PATH_MAX + 32];
	if (!g_dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "dump_restore_bench: could not remove %s\n", g_dir);
}

static int bench(const struct cfg *c)
{
	struct tools t;
	find_tools(&t);
	char *dir = g_dir, d_state[PATH_MAX + 8], d_mem[PATH_MAX + 8];
	const char *root = c->dir;
	if (!root)
		root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof(g_dir), "%s/uffdshim-bench.XXXXXX", root);
	if (!mkdtemp(dir))
		die("mkdtemp %s", dir);
	if (!c->keep)
		atexit(remove_dir);
	snprintf(d_state, sizeof(d_state), "%s/state", dir);
	snprintf(d_mem, sizeof(d_mem), "%s/mem", dir);

	printf("dump_restore_bench: %" PRIu64 " registrations over %" PRIu64 " MiB, %" PRIu64
	       " pages with data and write-protected (%.1f MiB); %" PRIu64 " rounds; images in %s\n",
	       c->ranges, c->mib, c->wp_pages, c->wp_pages * PAGE / 1048576.0, c->rounds, dir);
	printf("  tools %s, %s; shim %s\n", t.record, t.replay, t.shim);

	/* the child under the shim */
	char sr[24], sm[24], sw[24];
	snprintf(sr, sizeof(sr), "%" PRIu64, c->ranges);
	snprintf(sm, sizeof(sm), "%" PRIu64, c->mib);
	snprintf(sw, sizeof(sw), "%" PRIu64, c->wp_pages);
	char *cargv[] = {t.self, "--child", "--ranges", sr, "--mib", sm, "--wp-pages", sw, NULL};
	struct proc child;
	spawn(&child, cargv, env_with(t.shim), true);
	char line[512];
	if (!read_tagged(&child, "READY ", line, sizeof(line)))
		die("the child did not set up (exit status %d)", finish(&child));
	printf("  setup: child pid %d under the shim, ready after %.2f s\n", (int)child.pid,
	       (double)(now_ns() - child.t0) / 1e9);

	int R = (int)c->rounds;
	double d_wall[MAX_ROUNDS], d_state_ms[MAX_ROUNDS], m_gbs[MAX_ROUNDS], m_wall[MAX_ROUNDS];
	double base_ms[MAX_ROUNDS], rs_ms[MAX_ROUNDS], rm_ms[MAX_ROUNDS], r_net[MAX_ROUNDS],
		rm_gbs[MAX_ROUNDS];
	struct dump_fig f;
	uint64_t data_pages = 0;
	for (int i = 0; i < R; i++) {
		dump(&t, child.pid, d_state, false, &f);
		d_wall[i] = f.wall_ms;
		d_state_ms[i] = f.state_ms;
	}
	for (int i = 0; i < R; i++) {
		dump(&t, child.pid, d_mem, true, &f);
		data_pages = f.data_pages;
		m_wall[i] = f.wall_ms;
		m_gbs[i] = (double)(f.data_pages * PAGE) / ((f.mem_ms + f.write_ms) * 1e6);
	}
	struct restored r_base, r_state, r_mem;
	for (int i = 0; i < R; i++) {
		restore(&t, c, NULL, &r_base, false, NULL);
		restore(&t, c, d_state, &r_state, false, NULL);
		restore(&t, c, d_mem, &r_mem, false, NULL);
		base_ms[i] = r_base.ms;
		rs_ms[i] = r_state.ms;
		rm_ms[i] = r_mem.ms;
		r_net[i] = r_state.ms - r_base.ms;
		double fill = r_mem.ms - r_state.ms;
		rm_gbs[i] = fill > 0 ? (double)(data_pages * PAGE) / (fill * 1e6) : 0;
	}
	printf("\n  %-34s %9s %9s %9s  %-5s  target\n", "", "median", "min", "max", "unit");
	row("dump, uffd state only (command)", d_wall, R, "ms", TARGET_DUMP_MS, true);
	printf("  %-34s %9.2f %9.2f %9.2f  ms     (its \"state\" phase)\n", "",
	       stats(d_state_ms, R).med, stats(d_state_ms, R).min, stats(d_state_ms, R).max);
	row("restore, uffd state only (net)", r_net, R, "ms", TARGET_RESTORE_MS, true);
	printf("  %-34s %9.2f %9.2f %9.2f  ms     (to main: restore %.2f, baseline %.2f)\n", "",
	       stats(rs_ms, R).med, stats(rs_ms, R).min, stats(rs_ms, R).max, stats(rs_ms, R).med,
	       stats(base_ms, R).med);
	row("dump --with-memory, pages written", m_gbs, R, "GB/s", TARGET_GBS, false);
	printf("  %-34s %9.2f %9.2f %9.2f  ms     (%" PRIu64 " data pages, %.1f MiB)\n",
	       "  whole command", stats(m_wall, R).med, stats(m_wall, R).min, stats(m_wall, R).max,
	       data_pages, data_pages * PAGE / 1048576.0);
	row("restore with memory, pages read", rm_gbs, R, "GB/s", TARGET_GBS, false);
	printf("  %-34s %9.2f %9.2f %9.2f  ms     (to main)\n", "  whole relaunch",
	       stats(rm_ms, R).med, stats(rm_ms, R).min, stats(rm_ms, R).max);

	/* What the machine itself does with the same bytes. */
	double w_gbs = ref_write(dir, data_pages * PAGE), f_gbs = ref_fill(data_pages * PAGE);
	printf("  %-34s %9.2f %9s %9s  GB/s   (plain write() of the same bytes to %s)\n",
	       "  ceiling: writing the file", w_gbs, "", "", root);
	printf("  %-34s %9.2f %9s %9s  GB/s   (memcpy into fresh anonymous pages)\n",
	       "  ceiling: filling new memory", f_gbs, "", "");

	/* What came back, and does the model agree with the kernel? */
	printf("\n  checks:\n");
	bool ok = true;
	ok &= check_restored("state only:", &r_state, c, 0, 0);
	ok &= check_restored("with memory:", &r_mem, c, c->wp_pages, c->wp_pages);
	ok &= verify_restored(&t, c, d_state, "state only");
	ok &= verify_restored(&t, c, d_mem, "with memory");
	finish(&child);
	if (c->keep)
		printf("  images kept in %s\n", dir);
	printf("dump_restore_bench: %s (timings are reported, never judged)\n",
	       ok ? "all checks passed" : "SOME CHECKS FAILED");
	return ok ? 0 : 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: dump_restore_bench [--ranges N] [--mib M] [--wp-pages W] [--rounds R]\n"
		   "                          [--dir DIR] [--keep]\n"
		   "  defaults: 10000 ranges, 1024 MiB, 100000 write-protected pages, 5 rounds\n");
}

int main(int argc, char **argv)
{
	struct cfg c = {.ranges = 10000, .mib = 1024, .wp_pages = 100000, .rounds = 5};
	enum { BENCH, CHILD, RESTORED } role = BENCH;
	bool wait_stdin = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		uint64_t *num = !strcmp(a, "--ranges") ? &c.ranges : !strcmp(a, "--mib") ? &c.mib :
				!strcmp(a, "--wp-pages") ? &c.wp_pages :
				!strcmp(a, "--rounds") ? &c.rounds : NULL;
		if (num && i + 1 < argc) {
			*num = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(a, "--dir") && i + 1 < argc) {
			c.dir = argv[++i];
		} else if (!strcmp(a, "--keep")) {
			c.keep = true;
		} else if (!strcmp(a, "--child")) {
			role = CHILD;
		} else if (!strcmp(a, "--restored-child")) {
			role = RESTORED;
		} else if (!strcmp(a, "--wait")) {
			wait_stdin = true;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	uint64_t n = c.mib * (1ULL << 20) / PAGE;
	if (!c.ranges || c.ranges > n || c.wp_pages > n || !c.rounds || c.rounds > MAX_ROUNDS) {
		fprintf(stderr, "dump_restore_bench: need 1 <= ranges <= pages, wp-pages <= pages, "
				"1 <= rounds <= %d\n", MAX_ROUNDS);
		return 2;
	}
	if (role == CHILD)
		return child_main(&c);
	if (role == RESTORED)
		return restored_main(&c, wait_stdin);
	return bench(&c);
}
