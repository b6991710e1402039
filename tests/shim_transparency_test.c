/* shim_transparency_test.c - the app must see exactly what the kernel gives.
 *
 * The program runs itself twice as a child: once natively (no LD_PRELOAD,
 * started with a raw execve so that a shimmed parent cannot put the shim back)
 * and once with LD_PRELOAD=<build>/libuffdshim.so.  Each child runs the same
 * table of cases (tests/transparency_cases.h: case x memory type anon /
 * shmem(memfd) / hugetlb(memfd, if free huge pages exist) x required
 * features) and writes one transcript line per case to fd 3 (a pipe): every
 * return value, errno (errno is set to a sentinel before each call, so a
 * success that clobbers errno shows too), every field of the argument struct
 * after the call, page state (pagemap present/uffd-wp bits and the first byte
 * of present pages), fd numbers and fd flags.  Addresses are written relative
 * to the case's own mappings ("d+0x1000"), so ASLR does not matter.
 *
 * The parent compares the two transcripts case by case and prints one TAP
 * line per case; on a mismatch both lines are shown.  After each group of
 * cases (after each case for hugetlb, and for the "model ..." sections) the
 * shim child also runs `uffd-record status <self> --verify` (and for the
 * "failed calls" groups compares `status --json` before and after the failed
 * calls): those results come back as "K" lines and become TAP lines of their
 * own.  Cases that close or replace the shim's own fds (dup2 onto 920,
 * closefrom) run in later child processes ("parts"), so that they cannot
 * spoil the checks of the others.
 *
 * Transcript protocol (child -> parent, one record per line, tab separated):
 *   M <mode> <loaded 0|1>          first line
 *   C <name> <transcript>          a case that ran
 *   S <name> <reason>              a case that cannot run here (same in both)
 *   K <name> <1|0> <detail>        a check of the shim's model ("n/a" natively)
 *   E <count>                      last line: the child finished
 * Details have newlines as \x1e.
 *
 * Run: UFFDSHIM_BUILD=$PWD/build build/tests/shim_transparency_test
 * Environment: UFFDSHIM_TT_FILTER=substring runs only cases whose name
 * contains it (checkpoints still run); UFFDSHIM_TT_KEEP=dir writes the
 * transcripts (transcript.<mode>.<part>) and the full output of every failed
 * verify (verify.<pid>.<n>.txt) there.  Hugetlb cases need free huge pages
 * (vm.nr_hugepages >= 8); they are skipped otherwise.
 * One child: build/tests/shim_transparency_test --child native|shim [part]
 * writes its transcript to fd 3. */
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>

#include "test_helpers.h"
#include "shim_test.h"

#define TFD 3                  /* the transcript pipe in the children */
#define ERRNO_SENTINEL 9999    /* errno before every recorded call */

enum { MEM_NONE = 0, MEM_ANON = 1, MEM_SHMEM = 2, MEM_HUGETLB = 4 };
#define MEM_ALL (MEM_ANON | MEM_SHMEM | MEM_HUGETLB)
#define MEM_AS (MEM_ANON | MEM_SHMEM)

/* ------------------------------------------------------------------ */
/* child side: transcript                                              */
/* ------------------------------------------------------------------ */

static bool is_shim_child;
static uint64_t avail_features;   /* what UFFDIO_API(0) answered */
static long free_hugepages;
static char tline[16384];
static size_t tlen;

static void twrite(const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(TFD, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(3);
		s += w;
		n -= (size_t)w;
	}
}

/* Append to the current case's transcript (a space between items). */
static TH_PRINTF(1, 2) void R(const char *fmt, ...)
{
	if (tlen && tlen < sizeof(tline) - 1)
		tline[tlen++] = ' ';
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tline + tlen, sizeof(tline) - tlen, fmt, ap);
	va_end(ap);
	if (n > 0)
		tlen += (size_t)n < sizeof(tline) - tlen ? (size_t)n : sizeof(tline) - tlen - 1;
	for (size_t i = 0; i < tlen; i++)
		if (tline[i] == '\n' || tline[i] == '\t')
			tline[i] = ' ';
}

static TH_PRINTF(1, 2) void emit(const char *fmt, ...)
{
	char buf[32768];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	for (int i = 0; i < n; i++)
		if (buf[i] == '\n')
			buf[i] = '\x1e';
	buf[n++] = '\n';
	twrite(buf, (size_t)n);
}

static const char *ename(int e)
{
	static char b[8][24];
	static int k;
	if (e == ERRNO_SENTINEL)
		return "-";
	const char *n = strerrorname_np(e);
	if (n)
		return n;
	char *s = b[k++ & 7];
	snprintf(s, 24, "errno%d", e);
	return s;
}

/* ------------------------------------------------------------------ */
/* child side: mappings and fds of a case                              */
/* ------------------------------------------------------------------ */

struct region {
	char tag[8];
	char *base;
	size_t len;
	int mem;
	int memfd;
	char *alias;       /* shmem/hugetlb: a second shared mapping, not registered */
	size_t ps;
};

#define MAX_REGIONS 8
struct cx {
	int mem;                   /* MEM_* of this run of the case */
	size_t ps;                 /* its page size */
	long arg;                  /* the table's argument */
	struct region reg[MAX_REGIONS];
	int nreg;
};

/* What a group leaves behind until its checkpoint: mappings and fds. */
#define MAX_CLEAN 4096
static struct {
	char *addr;
	size_t len;
} clean_maps[MAX_CLEAN];
static int nclean_maps;
static int clean_fds[MAX_CLEAN];
static int nclean_fds;

static void keep_map(void *addr, size_t len)
{
	if (nclean_maps < MAX_CLEAN)
		clean_maps[nclean_maps++] = (typeof(clean_maps[0])){addr, len};
}

static void keep_fd(int fd)
{
	if (fd >= 0 && nclean_fds < MAX_CLEAN)
		clean_fds[nclean_fds++] = fd;
}

/* The fd was closed by the case itself. */
static void forget_fd(int fd)
{
	for (int i = 0; i < nclean_fds; i++)
		if (clean_fds[i] == fd)
			clean_fds[i] = -1;
}

/* [a, a+len) is no longer ours (unmapped or moved away by the case). */
static void forget_map(char *a, size_t len)
{
	char *e = a + len;
	int n = nclean_maps;
	for (int i = 0; i < n; i++) {
		char *s = clean_maps[i].addr, *t = s + clean_maps[i].len;
		if (!clean_maps[i].len || t <= a || s >= e)
			continue;
		clean_maps[i].len = 0;
		if (s < a)
			keep_map(s, (size_t)(a - s));
		if (t > e)
			keep_map(e, (size_t)(t - e));
	}
}

static void cleanup_group(void)
{
	for (int i = nclean_fds - 1; i >= 0; i--)
		if (clean_fds[i] >= 0)
			close(clean_fds[i]);
	for (int i = 0; i < nclean_maps; i++)
		if (clean_maps[i].len)
			munmap(clean_maps[i].addr, clean_maps[i].len);
	nclean_fds = nclean_maps = 0;
}

static size_t mem_ps(int mem)
{
	return mem == MEM_HUGETLB ? (2UL << 20) : 4096;
}

#define SETUP_FAIL(what) R("SETUP-FAILED(%s: %s)", what, strerrorname_np(errno) ?: "?")

/* All mappings of the cases live in a window of their own at a fixed address,
 * each followed by a 32 MiB gap that nothing else maps: what lies past a
 * region is then the same natively and under the shim (whose own mmaps, and
 * thread stacks, go where the kernel puts mmap(NULL)). */
#define WINDOW_BASE 0x200000000000ULL
#define WINDOW_GAP (32ULL << 20)
static uint64_t window_next = WINDOW_BASE;

/* len bytes read-write at the next window slot (2 MiB aligned). */
static void *wmap(size_t len, int flags, int fd)
{
	uint64_t at = window_next;
	window_next += ((len + (2ULL << 20) - 1) & ~((2ULL << 20) - 1)) + WINDOW_GAP;
	return mmap((void *)(uintptr_t)at, len, PROT_READ | PROT_WRITE,
		    flags | MAP_FIXED_NOREPLACE, fd, 0);
}

/* npages (of the memory's page size) of fresh memory, tagged for addresses. */
static struct region *mk_region_mem(struct cx *c, const char *tag, int mem, size_t npages)
{
	if (c->nreg >= MAX_REGIONS)
		return NULL;
	struct region *r = &c->reg[c->nreg];
	memset(r, 0, sizeof(*r));
	snprintf(r->tag, sizeof(r->tag), "%s", tag);
	r->mem = mem ? mem : MEM_ANON;
	r->ps = mem_ps(r->mem);
	r->len = npages * r->ps;
	r->memfd = -1;
	if (r->mem == MEM_ANON) {
		void *p = wmap(r->len, MAP_PRIVATE | MAP_ANONYMOUS, -1);
		if (p == MAP_FAILED) {
			SETUP_FAIL("mmap anon");
			return NULL;
		}
		r->base = p;
	} else {
		unsigned fl = MFD_CLOEXEC | (r->mem == MEM_HUGETLB ? MFD_HUGETLB : 0);
		r->memfd = memfd_create(r->mem == MEM_HUGETLB ? "uffdtt-huge" : "uffdtt-shmem", fl);
		if (r->memfd < 0) {
			SETUP_FAIL("memfd_create");
			return NULL;
		}
		keep_fd(r->memfd);
		if (ftruncate(r->memfd, (off_t)r->len) < 0) {
			SETUP_FAIL("ftruncate");
			return NULL;
		}
		void *p = wmap(r->len, MAP_SHARED, r->memfd);
		void *q = wmap(r->len, MAP_SHARED, r->memfd);
		if (p == MAP_FAILED || q == MAP_FAILED) {
			SETUP_FAIL("mmap memfd");
			if (p != MAP_FAILED)
				munmap(p, r->len);
			if (q != MAP_FAILED)
				munmap(q, r->len);
			return NULL;
		}
		r->base = p;
		r->alias = q;
		keep_map(q, r->len);
	}
	keep_map(r->base, r->len);
	c->nreg++;
	return r;
}

static struct region *mk_region(struct cx *c, const char *tag, size_t npages)
{
	return mk_region_mem(c, tag, c->mem, npages);
}

/* An address as "tag+0xoff" (inside or at the end of a region of the case). */
static const char *A(struct cx *c, uint64_t v)
{
	static char b[16][48];
	static int k;
	char *s = b[k++ & 15];
	for (int i = 0; i < c->nreg; i++) {
		struct region *r = &c->reg[i];
		uint64_t base = (uint64_t)(uintptr_t)r->base, al = (uint64_t)(uintptr_t)r->alias;
		if (v >= base && v <= base + r->len) {
			snprintf(s, 48, "%s+%#" PRIx64, r->tag, v - base);
			return s;
		}
		if (r->alias && v >= al && v <= al + r->len) {
			snprintf(s, 48, "%s~+%#" PRIx64, r->tag, v - al);
			return s;
		}
	}
	if (v < 0x100000 || v >= 0x800000000000ULL)
		snprintf(s, 48, "%#" PRIx64, v);
	else
		snprintf(s, 48, "?+%#" PRIx64, v & 0xfff); /* should not happen */
	return s;
}

/* Fill page i of a region (through the alias for shared memory when
 * via_alias: the registered mapping is then not touched). */
static void fill(struct region *r, size_t page, char v, bool via_alias)
{
	char *p = (via_alias && r->alias ? r->alias : r->base) + page * r->ps;
	memset(p, v, r->ps);
}

/* Page state of a region: per page '.' (not present) or the first byte as
 * hex, then 'w' when the uffd-wp bit is set.  From /proc/self/pagemap, so
 * nothing is touched that could fault. */
static void pstate(struct cx *c, struct region *r)
{
	if (!r)
		return;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	char buf[512];
	size_t off = 0;
	size_t np = r->len / r->ps;
	for (size_t i = 0; i < np && off < sizeof(buf) - 16; i++) {
		uint64_t ent = 0;
		uintptr_t a = (uintptr_t)r->base + i * r->ps;
		if (fd < 0 || pread(fd, &ent, 8, (off_t)(a / 4096 * 8)) != 8)
			ent = 0;
		bool present = ent >> PM_BIT_PRESENT & 1;
		bool wp = ent >> PM_BIT_UFFD_WP & 1;
		if (present)
			off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%02x%s", i ? "," : "",
						(unsigned char)*(volatile char *)a, wp ? "w" : "");
		else
			off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s.%s", i ? "," : "",
						wp ? "w" : "");
	}
	if (fd >= 0)
		close(fd);
	R("%s=[%s]", r->tag, buf);
}

/* ------------------------------------------------------------------ */
/* child side: recorded calls                                          */
/* ------------------------------------------------------------------ */

static void pr_arg(struct cx *c, unsigned long req, const void *arg)
{
	switch (req) {
	case UFFDIO_API: {
		const struct uffdio_api *a = arg;
		R("{api=%#llx features=%#llx ioctls=%#llx}", (unsigned long long)a->api,
		  (unsigned long long)a->features, (unsigned long long)a->ioctls);
		break;
	}
	case UFFDIO_REGISTER: {
		const struct uffdio_register *a = arg;
		R("{start=%s len=%#llx mode=%#llx ioctls=%#llx}", A(c, a->range.start),
		  (unsigned long long)a->range.len, (unsigned long long)a->mode,
		  (unsigned long long)a->ioctls);
		break;
	}
	case UFFDIO_UNREGISTER:
	case UFFDIO_WAKE: {
		const struct uffdio_range *a = arg;
		R("{start=%s len=%#llx}", A(c, a->start), (unsigned long long)a->len);
		break;
	}
	case UFFDIO_COPY: {
		const struct uffdio_copy *a = arg;
		R("{dst=%s src=%s len=%#llx mode=%#llx copy=%lld}", A(c, a->dst), A(c, a->src),
		  (unsigned long long)a->len, (unsigned long long)a->mode, (long long)a->copy);
		break;
	}
	case UFFDIO_ZEROPAGE: {
		const struct uffdio_zeropage *a = arg;
		R("{start=%s len=%#llx mode=%#llx zeropage=%lld}", A(c, a->range.start),
		  (unsigned long long)a->range.len, (unsigned long long)a->mode,
		  (long long)a->zeropage);
		break;
	}
	case UFFDIO_WRITEPROTECT: {
		const struct uffdio_writeprotect *a = arg;
		R("{start=%s len=%#llx mode=%#llx}", A(c, a->range.start),
		  (unsigned long long)a->range.len, (unsigned long long)a->mode);
		break;
	}
	case UFFDIO_CONTINUE: {
		const struct uffdio_continue *a = arg;
		R("{start=%s len=%#llx mode=%#llx mapped=%lld}", A(c, a->range.start),
		  (unsigned long long)a->range.len, (unsigned long long)a->mode,
		  (long long)a->mapped);
		break;
	}
	case UFFDIO_POISON: {
		const struct uffdio_poison *a = arg;
		R("{start=%s len=%#llx mode=%#llx updated=%lld}", A(c, a->range.start),
		  (unsigned long long)a->range.len, (unsigned long long)a->mode,
		  (long long)a->updated);
		break;
	}
	case UFFDIO_MOVE: {
		const struct uffdio_move *a = arg;
		R("{dst=%s src=%s len=%#llx mode=%#llx move=%lld}", A(c, a->dst), A(c, a->src),
		  (unsigned long long)a->len, (unsigned long long)a->mode, (long long)a->move);
		break;
	}
	}
}

static const char *req_name(unsigned long req)
{
	switch (req) {
	case UFFDIO_API: return "API";
	case UFFDIO_REGISTER: return "REGISTER";
	case UFFDIO_UNREGISTER: return "UNREGISTER";
	case UFFDIO_WAKE: return "WAKE";
	case UFFDIO_COPY: return "COPY";
	case UFFDIO_ZEROPAGE: return "ZEROPAGE";
	case UFFDIO_WRITEPROTECT: return "WRITEPROTECT";
	case UFFDIO_CONTINUE: return "CONTINUE";
	case UFFDIO_POISON: return "POISON";
	case UFFDIO_MOVE: return "MOVE";
	default: return "ioctl";
	}
}

/* ioctl(fd, req, arg), recorded: "NAME=ret/errno {fields after the call}".
 * The struct is shown only when arg is a real struct of ours. */
static long IOC(struct cx *c, int fd, unsigned long req, void *arg)
{
	errno = ERRNO_SENTINEL;
	long r = ioctl(fd, req, arg);
	int e = errno;
	R("%s=%ld/%s", req_name(req), r, ename(e));
	if ((uintptr_t)arg >= 0x100000)
		pr_arg(c, req, arg);
	errno = e;
	return r;
}

/* A call returning int/long, recorded as "label=ret/errno". */
#define CALL(label, expr)                                        \
	({                                                       \
		errno = ERRNO_SENTINEL;                          \
		long r_ = (long)(expr);                          \
		int e_ = errno;                                  \
		R("%s=%ld/%s", label, r_, ename(e_));            \
		errno = e_;                                      \
		r_;                                              \
	})

static int raw_uffd(int flags)
{
	return (int)syscall(SYS_userfaultfd, flags);
}

/* A uffd (O_CLOEXEC|O_NONBLOCK) with UFFDIO_API(features) done, recorded. */
static int mk_uffd_flags(struct cx *c, uint64_t features, int flags)
{
	int fd = raw_uffd(flags);
	if (fd < 0) {
		SETUP_FAIL("userfaultfd");
		return -1;
	}
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API, .features = features};
	if (ioctl(fd, UFFDIO_API, &a) < 0) {
		SETUP_FAIL("UFFDIO_API");
		return -1;
	}
	return fd;
}

static int mk_uffd(struct cx *c, uint64_t features)
{
	return mk_uffd_flags(c, features, O_CLOEXEC | O_NONBLOCK);
}

/* Every feature this kernel has, minus the ones that change how faults are
 * delivered (SIGBUS) or that make WP asynchronous (WP_ASYNC), and minus the
 * events that block fork/mremap/munmap/madvise until read. */
#define FEAT_EVENTS (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |  \
		     UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP)
static uint64_t feat_std(void)
{
	return avail_features & ~(uint64_t)(UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_ASYNC |
					    FEAT_EVENTS);
}

/* Register [page0, page0+npages) of r, recorded. */
static long reg_pages(struct cx *c, int fd, struct region *r, size_t page0, size_t npages,
		      uint64_t mode)
{
	struct uffdio_register g = {
		.range = {(uintptr_t)r->base + page0 * r->ps, npages * r->ps}, .mode = mode};
	return IOC(c, fd, UFFDIO_REGISTER, &g);
}

/* uffd(features) + region tag of npages, pages [0, nreg) registered with mode.
 * fill_mask: pages filled ('A'+i) before registering. */
static int setup_std(struct cx *c, struct region **out, uint64_t features, uint64_t mode,
		     size_t npages, size_t nreg, unsigned fill_mask)
{
	int fd = mk_uffd(c, features);
	if (fd < 0)
		return -1;
	struct region *r = mk_region(c, "d", npages);
	if (!r)
		return -1;
	for (size_t i = 0; i < npages; i++)
		if (fill_mask & (1u << i))
			fill(r, i, (char)('A' + i), false);
	if (nreg && mode) {
		struct uffdio_register g = {.range = {(uintptr_t)r->base, nreg * r->ps},
					    .mode = mode};
		if (ioctl(fd, UFFDIO_REGISTER, &g) < 0) {
			SETUP_FAIL("REGISTER");
			return -1;
		}
		R("reg.ioctls=%#llx", (unsigned long long)g.ioctls);
	}
	*out = r;
	return fd;
}

/* Turn a uffd range op into a recorded call with a struct. */
static long range_op(struct cx *c, int fd, unsigned long req, uint64_t start, uint64_t len)
{
	struct uffdio_range g = {start, len};
	return IOC(c, fd, req, &g);
}

static long copy_op(struct cx *c, int fd, uint64_t dst, uint64_t src, uint64_t len,
		    uint64_t mode)
{
	struct uffdio_copy g = {.dst = dst, .src = src, .len = len, .mode = mode, .copy = 0x5a5a};
	return IOC(c, fd, UFFDIO_COPY, &g);
}

static long zero_op(struct cx *c, int fd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_zeropage g = {.range = {start, len}, .mode = mode, .zeropage = 0x5a5a};
	return IOC(c, fd, UFFDIO_ZEROPAGE, &g);
}

static long wp_op(struct cx *c, int fd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_writeprotect g = {.range = {start, len}, .mode = mode};
	return IOC(c, fd, UFFDIO_WRITEPROTECT, &g);
}

static long cont_op(struct cx *c, int fd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_continue g = {.range = {start, len}, .mode = mode, .mapped = 0x5a5a};
	return IOC(c, fd, UFFDIO_CONTINUE, &g);
}

static long poison_op(struct cx *c, int fd, uint64_t start, uint64_t len, uint64_t mode)
{
	struct uffdio_poison g = {.range = {start, len}, .mode = mode, .updated = 0x5a5a};
	return IOC(c, fd, UFFDIO_POISON, &g);
}

static long move_op(struct cx *c, int fd, uint64_t dst, uint64_t src, uint64_t len,
		    uint64_t mode)
{
	struct uffdio_move g = {.dst = dst, .src = src, .len = len, .mode = mode, .move = 0x5a5a};
	return IOC(c, fd, UFFDIO_MOVE, &g);
}

#define U(p) ((uint64_t)(uintptr_t)(p))
#define PG(r, i) (U((r)->base) + (uint64_t)(i) * (r)->ps)

/* fd flags: "fd=N fl=<F_GETFL> cloexec=<0|1>" */
static void fdstate(const char *label, int fd)
{
	errno = ERRNO_SENTINEL;
	int fl = fcntl(fd, F_GETFL);
	int e1 = errno;
	int fdf = fcntl(fd, F_GETFD);
	int e2 = errno;
	R("%s:fd=%d fl=%#x/%s fdflags=%d/%s", label, fd, fl, ename(e1), fdf, ename(e2));
}

/* ---- faults: a thread touches memory, the case reads the message ---- */
struct toucher {
	pthread_t t;
	volatile char *addr;
	int write;
	char val;
	volatile int done;
	char got;
};

static void *touch_fn(void *p)
{
	struct toucher *t = p;
	if (t->write)
		*t->addr = t->val;
	else
		t->got = *t->addr;
	t->done = 1;
	return NULL;
}

static bool touch_start(struct toucher *t, void *addr, int write, char val)
{
	memset(t, 0, sizeof(*t));
	t->addr = addr;
	t->write = write;
	t->val = val;
	return pthread_create(&t->t, NULL, touch_fn, t) == 0;
}

/* Wait for the toucher to finish; if it does not within 2 s, unregister
 * [base, base+len) from fd to release it (and say so). */
static void touch_join(struct cx *c, struct toucher *t, int fd, uint64_t base, uint64_t len)
{
	for (int i = 0; i < 200 && !t->done; i++)
		usleep(10000);
	if (!t->done) {
		R("toucher-stuck");
		struct uffdio_range g = {base, len};
		ioctl(fd, UFFDIO_UNREGISTER, &g);
	}
	pthread_join(t->t, NULL);
	R("touched(%s,%02x)", t->write ? "w" : "r", (unsigned char)(t->write ? t->val : t->got));
}

static void pr_msg(struct cx *c, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		R("msg{PAGEFAULT flags=%#llx addr=%s ptid=%s}",
		  (unsigned long long)m->arg.pagefault.flags, A(c, m->arg.pagefault.address),
		  m->arg.pagefault.feat.ptid ? "set" : "0");
		break;
	case UFFD_EVENT_FORK:
		R("msg{FORK ufd=%u}", m->arg.fork.ufd);
		break;
	case UFFD_EVENT_REMAP:
		R("msg{REMAP from=%s to=%s len=%#llx}", A(c, m->arg.remap.from),
		  A(c, m->arg.remap.to), (unsigned long long)m->arg.remap.len);
		break;
	case UFFD_EVENT_REMOVE:
		R("msg{REMOVE start=%s end=%s}", A(c, m->arg.remove.start), A(c, m->arg.remove.end));
		break;
	case UFFD_EVENT_UNMAP:
		R("msg{UNMAP start=%s end=%s}", A(c, m->arg.remove.start), A(c, m->arg.remove.end));
		break;
	default:
		R("msg{event=%u}", m->event);
	}
}

/* poll (up to ms), recorded as poll=ret/errno rev=... */
static int poll_rec(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	errno = ERRNO_SENTINEL;
	int r = poll(&p, 1, ms);
	int e = errno;
	R("poll=%d/%s rev=%#x", r, ename(e), p.revents);
	return r;
}

/* read() of up to n messages, recorded with the messages. */
static ssize_t read_msgs(struct cx *c, int fd, size_t bytes)
{
	struct uffd_msg m[4];
	memset(m, 0, sizeof(m));
	if (bytes > sizeof(m))
		bytes = sizeof(m);
	errno = ERRNO_SENTINEL;
	ssize_t r = read(fd, m, bytes);
	int e = errno;
	R("read(%zu)=%zd/%s", bytes, r, ename(e));
	for (ssize_t i = 0; r > 0 && i < r / (ssize_t)sizeof(struct uffd_msg); i++)
		pr_msg(c, &m[i]);
	errno = e;
	return r;
}

/* ---- the case table ---- */
typedef void (*case_fn)(struct cx *);
struct tcase {
	const char *name;
	case_fn fn;
	unsigned mems;       /* MEM_NONE: runs once, no memory type */
	uint64_t need;       /* features the kernel must offer */
	long arg;
};

struct tsection {
	const char *name;
	const struct tcase *cases;
	size_t ncases;
	unsigned mems;       /* memory types to iterate (MEM_NONE: once) */
	int verify_each;     /* checkpoint after every case */
	void (*after)(const char *group); /* extra shim-side checks of the group */
	int part;            /* which child run: cases that break the shim's own
			      * fds (the control socket) run in a process of their own */
};
#define NPARTS 3

static void checkpoint(const char *group);

#include "transparency_cases.h"

/* ------------------------------------------------------------------ */
/* child main                                                          */
/* ------------------------------------------------------------------ */

static const char *mem_name(int mem)
{
	switch (mem) {
	case MEM_ANON: return "anon";
	case MEM_SHMEM: return "shmem";
	case MEM_HUGETLB: return "hugetlb";
	default: return "";
	}
}

static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	long v = 0;
	size_t kl = strlen(key);
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			v = strtol(line + kl + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* The shim child checks the model against the kernel: K lines. */
static void checkpoint(const char *group)
{
	char name[300];
	snprintf(name, sizeof(name), "model verifies after %s", group);
	if (!is_shim_child) {
		emit("K\t%s\t1\tn/a natively", name);
		return;
	}
	static char out[4 << 20];
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	char *args[] = {"status", pid, "--verify", NULL};
	int rc = shim_record_run(args, out, sizeof(out));
	static int nth;
	const char *keep = getenv("UFFDSHIM_TT_KEEP");
	if (keep && rc) { /* the whole output, for whoever debugs this */
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/verify.%d.%02d.txt", keep, (int)getpid(), nth);
		FILE *f = fopen(path, "we");
		if (f) {
			fprintf(f, "%s\n%s", name, out);
			fclose(f);
		}
	}
	nth++;
	for (char *s = out; *s; s++)
		if (*s == '\t')
			*s = ' ';
	/* The status dump is long: keep the verifier's own lines ("verify: ...")
	 * and anything that is not part of the dump; else the tail. */
	static char brief[16384];
	size_t bl = 0;
	brief[0] = 0;
	for (char *line = out; rc && *line;) {
		char *nl = strchr(line, '\n');
		size_t l = nl ? (size_t)(nl - line) : strlen(line);
		if (nl)
			*nl = 0;
		bool want = !strncmp(line, "verify", 6) || !strncmp(line, "uffd-record", 11);
		if (want) {
			if (bl + l + 2 < sizeof(brief)) {
				memcpy(brief + bl, line, l);
				bl += l;
				brief[bl++] = '\n';
				brief[bl] = 0;
			}
		}
		if (nl)
			*nl = '\n';
		line = nl ? nl + 1 : line + l;
	}
	if (rc && !bl) {
		size_t ol = strlen(out), from = ol > 4000 ? ol - 4000 : 0;
		memcpy(brief, out + from, ol - from + 1);
	}
	emit("K\t%s\t%d\tuffd-record status --verify exited %d\n%s", name, rc == 0, rc, brief);
}

static int child_main(const char *mode, int part)
{
	is_shim_child = !strcmp(mode, "shim");
	emit("M\t%s\t%d", mode, shim_loaded() ? 1 : 0);
	signal(SIGPIPE, SIG_DFL);
	alarm(120); /* a case that hangs must not hang make check */
	{
		int fd = raw_uffd(O_CLOEXEC);
		struct uffdio_api a = {.api = UFFD_API};
		if (fd >= 0 && ioctl(fd, UFFDIO_API, &a) == 0)
			avail_features = a.features;
		if (fd >= 0)
			close(fd);
	}
	free_hugepages = meminfo("HugePages_Free");
	const char *filter = getenv("UFFDSHIM_TT_FILTER");
	int count = 0;
	for (size_t s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
		const struct tsection *sec = &sections[s];
		if (sec->part != part)
			continue;
		int nm = sec->mems == MEM_NONE ? 1 : 3;
		for (int mbit = 0; mbit < nm; mbit++) {
			int mem = sec->mems == MEM_NONE ? MEM_NONE : (1 << mbit);
			if (sec->mems != MEM_NONE && !(sec->mems & mem))
				continue;
			char group[160];
			snprintf(group, sizeof(group), "%s%s%s%s", sec->name, mem ? " [" : "",
				 mem_name(mem), mem ? "]" : "");
			for (size_t k = 0; k < sec->ncases; k++) {
				const struct tcase *tc = &sec->cases[k];
				/* a MEM_NONE case of a typed section runs once, with anon */
				if (mem != MEM_NONE && (tc->mems == MEM_NONE ? mem != MEM_ANON
									   : !(tc->mems & mem)))
					continue;
				char name[300];
				snprintf(name, sizeof(name), "%s: %s%s%s%s", sec->name, tc->name,
					 mem ? " [" : "", mem_name(mem), mem ? "]" : "");
				if (filter && !strstr(name, filter))
					continue;
				count++;
				uint64_t miss = tc->need & ~avail_features;
				if (miss) {
					emit("S\t%s\tkernel lacks feature bits %#" PRIx64, name, miss);
					continue;
				}
				if (mem == MEM_HUGETLB && free_hugepages < 8) {
					emit("S\t%s\tno free huge pages (HugePages_Free=%ld; raise "
					     "vm.nr_hugepages)", name, free_hugepages);
					continue;
				}
				struct cx c = {.mem = mem, .ps = mem_ps(mem), .arg = tc->arg};
				tlen = 0;
				tline[0] = 0;
				tc->fn(&c);
				emit("C\t%s\t%s", name, tline);
				/* huge pages are few: give them back after each case */
				if (sec->verify_each || mem == MEM_HUGETLB) {
					checkpoint(name);
					cleanup_group();
				}
			}
			if (sec->after)
				sec->after(group);
			if (!sec->verify_each)
				checkpoint(group);
			cleanup_group();
		}
	}
	if (part == 1)
		final_cases();
	emit("E\t%d", count);
	return 0;
}

/* ------------------------------------------------------------------ */
/* parent                                                              */
/* ------------------------------------------------------------------ */

struct rec {
	char kind;
	char *name;
	char *a, *b;     /* C/S: text; K: ok flag, detail */
};

struct transcript {
	char *buf;
	size_t len;
	struct rec *r;
	size_t n;
	int status;
	bool loaded;
	bool ended;
	char mode[16];
};

static void parse(struct transcript *t)
{
	size_t cap = 64;
	t->r = calloc(cap, sizeof(*t->r));
	char *save = NULL;
	for (char *line = strtok_r(t->buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[4] = {0};
		int nf = 0;
		char *p = line;
		while (nf < 4) {
			f[nf++] = p;
			char *tab = nf < 4 ? strchr(p, '\t') : NULL;
			if (!tab)
				break;
			*tab = 0;
			p = tab + 1;
		}
		for (int i = 0; i < nf; i++)
			for (char *s = f[i]; *s; s++)
				if (*s == '\x1e')
					*s = '\n';
		switch (f[0][0]) {
		case 'M':
			snprintf(t->mode, sizeof(t->mode), "%s", nf > 1 ? f[1] : "?");
			t->loaded = nf > 2 && f[2][0] == '1';
			continue;
		case 'E':
			t->ended = true;
			continue;
		case 'C':
		case 'S':
		case 'K':
			break;
		default:
			continue;
		}
		if (t->n == cap) {
			cap *= 2;
			t->r = realloc(t->r, cap * sizeof(*t->r));
		}
		t->r[t->n++] = (struct rec){f[0][0], nf > 1 ? f[1] : "", nf > 2 ? f[2] : "",
					    nf > 3 ? f[3] : ""};
	}
}

/* Runs this program as a child in mode (native|shim); the transcript read
 * from its fd 3. */
static int run_child(const char *self, const char *mode, int part, const char *lib,
		     struct transcript *t)
{
	memset(t, 0, sizeof(*t));
	char partstr[16];
	snprintf(partstr, sizeof(partstr), "%d", part);
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **env = calloc(ne + 2, sizeof(char *));
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) && strncmp(environ[i], "UFFDSHIM_HANDOFF=", 17) &&
		    strncmp(environ[i], SHIM_TEST_MARKER "=", strlen(SHIM_TEST_MARKER) + 1))
			env[k++] = environ[i];
	char pre[PATH_MAX + 16];
	snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", lib);
	if (!strcmp(mode, "shim"))
		env[k++] = pre;
	char *argv[] = {(char *)self, "--child", (char *)mode, partstr, NULL};
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);
		syscall(SYS_dup2, nul, 0);
		syscall(SYS_dup2, 2, 1); /* stray output must not corrupt the TAP stream */
		syscall(SYS_dup3, p[1], TFD, 0);
		syscall(SYS_close_range, TFD + 1, ~0U, 0);
		syscall(SYS_execve, self, argv, env);
		_exit(127);
	}
	close(p[1]);
	size_t cap = 1 << 16;
	t->buf = malloc(cap);
	for (;;) {
		if (t->len + 4096 > cap)
			t->buf = realloc(t->buf, cap *= 2);
		ssize_t n = read(p[0], t->buf + t->len, cap - t->len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		t->len += (size_t)n;
	}
	t->buf[t->len] = 0;
	close(p[0]);
	free(env);
	while (waitpid(pid, &t->status, 0) < 0 && errno == EINTR)
		;
	if (getenv("UFFDSHIM_TT_KEEP")) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/transcript.%s.%d", getenv("UFFDSHIM_TT_KEEP"), mode,
			 part);
		FILE *f = fopen(path, "w");
		if (f) {
			fwrite(t->buf, 1, t->len, f);
			fclose(f);
		}
	}
	parse(t);
	return 0;
}

static void child_status(const struct transcript *t, const char *mode, int part)
{
	bool good = WIFEXITED(t->status) && WEXITSTATUS(t->status) == 0 && t->ended;
	ok(good, "%s child (part %d) ran every case and exited 0", mode, part);
	if (!good) {
		if (WIFSIGNALED(t->status))
			diag("  killed by signal %d (%s)", WTERMSIG(t->status),
			     strsignal(WTERMSIG(t->status)));
		else
			diag("  exit status %d, end marker %s", WEXITSTATUS(t->status),
			     t->ended ? "seen" : "missing");
	}
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "--child"))
		return child_main(argv[2], argc >= 4 ? atoi(argv[3]) : 0);
	/* Kernel-identical behaviour, case by case: nesting (a second uffd on a
	 * taken range, where the kernel says EBUSY) is off here and tested in
	 * nest_two_uffds_test. */
	if (!getenv("UFFDSHIM_NEST"))
		setenv("UFFDSHIM_NEST", "0", 1);

	int fd = uffd_create(O_CLOEXEC);
	if (fd < 0)
		skip_all("%s", uffd_skip_reason(errno));
	close(fd);
	char lib[PATH_MAX];
	snprintf(lib, sizeof(lib), "%s/%s", shim_build_dir(), SHIM_TEST_LIB);
	if (access(lib, R_OK) != 0)
		skip_all("%s not found (build it, or set UFFDSHIM_BUILD)", lib);
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		skip_all("cannot read /proc/self/exe");
	self[n] = 0;

	struct transcript natp[NPARTS], shimp[NPARTS];
	for (int p = 0; p < NPARTS; p++)
		if (run_child(self, "native", p, lib, &natp[p]) < 0 ||
		    run_child(self, "shim", p, lib, &shimp[p]) < 0)
			skip_all("cannot start the children: %s", strerror(errno));
	/* One list of records per mode, parts in order. */
	struct transcript nat = {0}, shim = {0};
	for (int p = 0; p < NPARTS; p++) {
		struct transcript *src[2] = {&natp[p], &shimp[p]}, *dst[2] = {&nat, &shim};
		for (int k = 0; k < 2; k++) {
			dst[k]->r = realloc(dst[k]->r, (dst[k]->n + src[k]->n + 1) * sizeof(struct rec));
			memcpy(dst[k]->r + dst[k]->n, src[k]->r, src[k]->n * sizeof(struct rec));
			dst[k]->n += src[k]->n;
		}
	}

	ok(!natp[0].loaded, "native child runs without libuffdshim.so");
	ok(shimp[0].loaded, "shim child runs with libuffdshim.so loaded");

	/* Cases and checks, in the native child's order. */
	size_t j = 0;
	for (size_t i = 0; i < nat.n; i++) {
		const struct rec *a = &nat.r[i];
		if (a->kind == 'K')
			continue;
		/* The shim child's next case record. */
		while (j < shim.n && shim.r[j].kind == 'K')
			j++;
		const struct rec *b = j < shim.n ? &shim.r[j++] : NULL;
		if (b && strcmp(a->name, b->name) != 0) {
			fail("%s: transcripts out of step (shim has '%s')", a->name, b->name);
			continue;
		}
		if (a->kind == 'S' && b && b->kind == 'S') {
			skip(1, "%s: %s", a->name, a->a);
			continue;
		}
		if (!b) {
			fail("%s: missing from the shim transcript (shim child died?)", a->name);
			diag("  native: %s", a->a);
			continue;
		}
		bool same = a->kind == b->kind && !strcmp(a->a, b->a);
		bool setup_ok = !strstr(a->a, "SETUP-FAILED") && !strstr(b->a, "SETUP-FAILED");
		if (!ok(same && setup_ok, "%s: ret/errno/fields identical", a->name) || !same) {
			if (!setup_ok)
				diag("  a setup step failed");
			diag("  native: %s%s", a->kind == 'S' ? "SKIP " : "", a->a);
			diag("  shim:   %s%s", b->kind == 'S' ? "SKIP " : "", b->a);
		}
	}
	while (j < shim.n && shim.r[j].kind == 'K')
		j++;
	if (j < shim.n)
		fail("shim transcript has %zu extra records (first: %s)", shim.n - j, shim.r[j].name);

	/* The shim-side checks, named by the native child's list. */
	for (size_t i = 0; i < nat.n; i++) {
		if (nat.r[i].kind != 'K')
			continue;
		const struct rec *b = NULL;
		for (size_t q = 0; q < shim.n && !b; q++)
			if (shim.r[q].kind == 'K' && !strcmp(shim.r[q].name, nat.r[i].name))
				b = &shim.r[q];
		if (!b) {
			fail("%s (no result from the shim child)", nat.r[i].name);
			continue;
		}
		if (!ok(b->a[0] == '1', "%s", b->name))
			diag("  %s", b->b);
	}
	for (int p = 0; p < NPARTS; p++) {
		child_status(&natp[p], "native", p);
		child_status(&shimp[p], "shim", p);
	}
	return done_testing();
}
