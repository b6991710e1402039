/* scn_register_modes.c - scenario: UFFDIO_REGISTER with every mode
 * combination on private anonymous memory, memfd shmem and (when huge pages
 * can be reserved) hugetlb; refused combinations; a partial UNREGISTER that
 * splits a range; re-registering a range with other modes; a second uffd on
 * a taken range.  Runs under libuffdshim.so and, after every step, checks
 * the shim's model against the kernel (uffd-record status --verify) and
 * specific model facts (status --json) against what the kernel answered. */
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096UL
#define HPG (2UL << 20)
#define M_MISSING UFFDIO_REGISTER_MODE_MISSING
#define M_WP UFFDIO_REGISTER_MODE_WP
#define M_MINOR UFFDIO_REGISTER_MODE_MINOR
#define VERIFY(...) do { char l_[160]; snprintf(l_, sizeof(l_), __VA_ARGS__); \
	is_int(shim_verify_self(l_), 0, "verify: %s", l_); } while (0)

#include "scn_common.h"
static int reg(int uffd, void *addr, size_t len, uint64_t mode, uint64_t *ioctls)
{
	struct uffdio_register r = {.range = {(uint64_t)addr, len}, .mode = mode};
	int rc = ioctl(uffd, UFFDIO_REGISTER, &r);
	if (ioctls)
		*ioctls = rc == 0 ? r.ioctls : 0;
	return rc;
}

static int unreg(int uffd, void *addr, size_t len)
{
	struct uffdio_range r = {(uint64_t)addr, len};
	return ioctl(uffd, UFFDIO_UNREGISTER, &r);
}

/* One fault: a thread touches addr, the main thread reads the message. */
struct toucher {
	pthread_t t;
	volatile char *addr;
	char seen;
};

static void *touch_main(void *p)
{
	struct toucher *t = p;
	t->seen = *t->addr;
	return NULL;
}

static bool read_msg(int uffd, struct uffd_msg *m)
{
	struct pollfd pfd = {.fd = uffd, .events = POLLIN};
	if (poll(&pfd, 1, 5000) != 1)
		return false;
	return read(uffd, m, sizeof(*m)) == (ssize_t)sizeof(*m);
}

static const char *mode_name(uint64_t m)
{
	static char b[32];
	snprintf(b, sizeof(b), "%s%s%s", m & M_MISSING ? "MISSING|" : "", m & M_WP ? "WP|" : "",
		 m & M_MINOR ? "MINOR|" : "");
	if (b[0])
		b[strlen(b) - 1] = 0;
	return b;
}

/* Register [addr, addr+len) with mode, check the model has exactly that one
 * range with the kernel's answer, verify, unregister, verify. */
static void one_mode(int uffd, char *addr, size_t len, uint64_t mode, const char *backing,
		     uint64_t pagesize)
{
	const char *what = mode_name(mode);
	uint64_t ioctls;
	if (!is_int(reg(uffd, addr, len, mode, &ioctls), 0, "%s %s: REGISTER", backing, what))
		diag("errno %s", strerror(errno));
	struct juffd u;
	if (js_load(what) == 0 && ju_fd(uffd, &u)) {
		is_int(u.nranges, 1, "%s %s: model has 1 range", backing, what);
		ok(u.r[0].start == (uint64_t)addr && u.r[0].end == (uint64_t)addr + len,
		   "%s %s: range bounds", backing, what);
		is_u64(u.r[0].modes, mode, "%s %s: range modes", backing, what);
		is_u64(u.r[0].ioctls, ioctls, "%s %s: range ioctls = the kernel's answer", backing,
		       what);
		is_str(u.r[0].backing, backing, "%s %s: backing", backing, what);
		is_u64(u.r[0].pagesize, pagesize, "%s %s: page size", backing, what);
	} else {
		fail("%s %s: status --json lists the uffd", backing, what);
	}
	bool minor = mode & M_MINOR, wp = mode & M_WP;
	ok(!!(ioctls & (1ULL << _UFFDIO_CONTINUE)) == minor, "%s %s: CONTINUE offered iff MINOR",
	   backing, what);
	ok(!!(ioctls & (1ULL << _UFFDIO_WRITEPROTECT)) == wp,
	   "%s %s: WRITEPROTECT offered iff WP", backing, what);
	VERIFY("%s %s registered", backing, what);
	is_int(unreg(uffd, addr, len), 0, "%s %s: UNREGISTER", backing, what);
	VERIFY("%s %s unregistered", backing, what);
}

/* The model's ranges of uffd, as [start,end) page offsets from base. */
static void check_ranges(int uffd, char *base, int span, const char *label, int n,
			 const int *pages, const uint64_t *modes)
{
	struct juffd u;
	if (js_load(label) || !ju_fd(uffd, &u)) {
		fail("%s: status --json lists the uffd", label);
		return;
	}
	/* Only the ranges inside [base, base + span pages). */
	int k = 0;
	for (int i = 0; i < u.nranges; i++)
		if (u.r[i].start >= (uint64_t)base && u.r[i].end <= (uint64_t)base + span * PG)
			u.r[k++] = u.r[i];
	if (!is_int(k, n, "%s: model has %d range(s) there", label, n))
		return;
	for (int i = 0; i < n; i++) {
		uint64_t s = (uint64_t)base + pages[2 * i] * PG, e = (uint64_t)base + pages[2 * i + 1] * PG;
		ok(u.r[i].start == s && u.r[i].end == e, "%s: range %d is pages [%d, %d)", label, i,
		   pages[2 * i], pages[2 * i + 1]);
		if (modes)
			is_u64(u.r[i].modes, modes[i], "%s: range %d modes %s", label, i,
			       mode_name(modes[i]));
	}
}



/* ---- hugetlb: reserve pages, restore the setting at exit ---- */
static long hp_saved = -1;

static long hp_get(void)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int hp_set(long v)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "w");
	if (!f)
		return -1;
	int rc = fprintf(f, "%ld\n", v) > 0 ? 0 : -1;
	return fclose(f) == 0 ? rc : -1;
}

static void hp_restore(void)
{
	if (hp_saved >= 0 && hp_set(hp_saved) < 0)
		diag("could not restore nr_hugepages to %ld", hp_saved);
}

static void hugetlb_part(int uffd)
{
	hp_saved = hp_get();
	if (hp_saved < 0 || (hp_saved < 8 && hp_set(8) < 0) || hp_get() < 4) {
		skip(1, "hugetlb: cannot reserve huge pages (nr_hugepages %ld: %s)", hp_get(),
		     strerror(errno));
		hp_restore();
		hp_saved = -1;
		return;
	}
	atexit(hp_restore);
	char *h = mmap(NULL, 2 * HPG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (h == MAP_FAILED) {
		skip(1, "hugetlb: mmap(MAP_HUGETLB): %s", strerror(errno));
		return;
	}
	one_mode(uffd, h, 2 * HPG, M_MISSING, "hugetlb", HPG);
	one_mode(uffd, h, 2 * HPG, M_MISSING | M_WP, "hugetlb", HPG);
	/* A huge page filled by COPY, then half of the range unregistered. */
	is_int(reg(uffd, h, 2 * HPG, M_MISSING | M_WP, NULL), 0, "hugetlb: REGISTER MISSING|WP");
	char *src = malloc(HPG);
	memset(src, 0x5a, HPG);
	struct uffdio_copy c = {.dst = (uint64_t)h, .src = (uint64_t)src, .len = HPG};
	is_int(ioctl(uffd, UFFDIO_COPY, &c), 0, "hugetlb: COPY of one huge page");
	ok(h[0] == 0x5a && h[HPG - 1] == 0x5a, "hugetlb: the page holds what was copied");
	free(src);
	VERIFY("hugetlb COPY");
	is_int(unreg(uffd, h + HPG, HPG), 0, "hugetlb: UNREGISTER the second huge page");
	check_ranges(uffd, h, 1024, "hugetlb after partial unregister", 1, (int[]){0, 512},
		     (uint64_t[]){M_MISSING | M_WP});
	VERIFY("hugetlb partial unregister");
	unreg(uffd, h, 2 * HPG);
	munmap(h, 2 * HPG);
	VERIFY("hugetlb unmapped");

	/* Shared hugetlbfs memfd: MINOR. */
	int mfd = memfd_create("scn-huge", MFD_HUGETLB | MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, 2 * HPG) < 0) {
		skip(1, "hugetlb memfd: %s", strerror(errno));
		return;
	}
	char *hs = mmap(NULL, 2 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (hs == MAP_FAILED) {
		skip(1, "hugetlb memfd mmap: %s", strerror(errno));
		close(mfd);
		return;
	}
	one_mode(uffd, hs, 2 * HPG, M_MINOR, "hugetlb", HPG);
	one_mode(uffd, hs, 2 * HPG, M_MINOR | M_MISSING | M_WP, "hugetlb", HPG);
	munmap(hs, 2 * HPG);
	close(mfd);
	VERIFY("hugetlb memfd unmapped");
}

int main(int argc, char **argv)
{
	(void)argc;
	shim_reexec_if_needed(argv);
	int uffd = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		skip_all("%s", uffd_skip_reason(errno));
	struct uffdio_api api;
	if (uffd_api(uffd, 0, &api) < 0)
		skip_all("UFFDIO_API: %s", strerror(errno));

	struct juffd u;
	if (js_load("start") == 0 && ju_fd(uffd, &u)) {
		is_int(js_nuffds(), 1, "start: model has 1 uffd");
		is_str(u.origin, "syscall", "start: origin syscall");
		is_int(u.mm_pid, getpid(), "start: serves this process's memory");
		ok(u.api_done && u.nonblock && u.nfds == 1 && u.cloexec[0],
		   "start: API done, O_NONBLOCK, one CLOEXEC fd");
	} else {
		fail("start: status --json lists the uffd");
	}
	VERIFY("start");

	/* ---- private anonymous ---- */
	char *a = map_anon(16);
	one_mode(uffd, a, 16 * PG, M_MISSING, "anon", PG);
	one_mode(uffd, a, 16 * PG, M_WP, "anon", PG);
	one_mode(uffd, a, 16 * PG, M_MISSING | M_WP, "anon", PG);
	static const uint64_t refused[] = {M_MINOR, M_MINOR | M_MISSING, M_MINOR | M_WP, 0};
	for (int i = 0; i < 4; i++) {
		errno = 0;
		int rc = reg(uffd, a, 16 * PG, refused[i], NULL);
		ok(rc == -1 && errno == EINVAL, "anon %s: REGISTER refused with EINVAL (errno %s)",
		   refused[i] ? mode_name(refused[i]) : "mode 0", strerror(errno));
	}
	if (js_load("refused") == 0 && ju_fd(uffd, &u)) {
		is_int(u.nranges, 0, "refused registrations left no range");
		is_int(ju_counter(&u, "ioctl_errors"), 4, "refused registrations counted as errors");
	}
	VERIFY("anon refused modes");

	/* A real MISSING fault, pending in the model until COPY resolves it. */
	is_int(reg(uffd, a, 16 * PG, M_MISSING, NULL), 0, "anon: REGISTER MISSING");
	struct toucher t = {.addr = a + 3 * PG + 17};
	pthread_create(&t.t, NULL, touch_main, &t);
	struct uffd_msg m;
	ok(read_msg(uffd, &m) && m.event == UFFD_EVENT_PAGEFAULT &&
	   m.arg.pagefault.address == (uint64_t)a + 3 * PG &&
	   !(m.arg.pagefault.flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR)),
	   "anon: MISSING fault message for page 3");
	if (js_load("pending") == 0 && ju_fd(uffd, &u))
		ok(u.npending == 1 && u.pend_addr[0] == (uint64_t)a + 3 * PG,
		   "anon: the fault is pending in the model");
	VERIFY("anon MISSING fault pending");
	char pat[PG];
	memset(pat, 0x33, sizeof(pat));
	struct uffdio_copy c = {.dst = (uint64_t)a + 3 * PG, .src = (uint64_t)pat, .len = PG};
	is_int(ioctl(uffd, UFFDIO_COPY, &c), 0, "anon: COPY resolves it");
	pthread_join(t.t, NULL);
	is_int(t.seen, 0x33, "anon: the faulting thread read the copied byte");
	if (js_load("resolved") == 0 && ju_fd(uffd, &u)) {
		is_int(u.npending, 0, "anon: nothing pending after COPY");
		is_int(ju_counter(&u, "faults_missing"), 1, "anon: 1 MISSING fault counted");
		is_int(ju_counter(&u, "copy"), 1, "anon: 1 COPY counted");
	}
	VERIFY("anon MISSING fault resolved");

	/* Partial unregister splits the range; the kernel splits the VMA. */
	is_int(unreg(uffd, a + 4 * PG, 4 * PG), 0, "split: UNREGISTER pages [4, 8)");
	check_ranges(uffd, a, 16, "split [4,8)", 2, (int[]){0, 4, 8, 16}, NULL);
	VERIFY("split [4,8)");
	is_int(unreg(uffd, a + 6 * PG, 4 * PG), 0, "split: UNREGISTER pages [6, 10) over the hole");
	check_ranges(uffd, a, 16, "split [6,10)", 2, (int[]){0, 4, 10, 16}, NULL);
	VERIFY("split [6,10)");

	/* Re-register over ranges and holes with other modes: one range again. */
	is_int(reg(uffd, a, 16 * PG, M_MISSING | M_WP, NULL), 0,
	       "re-register: pages [0, 16) MISSING|WP over ranges and holes");
	check_ranges(uffd, a, 16, "re-register MISSING|WP", 1, (int[]){0, 16},
		     (uint64_t[]){M_MISSING | M_WP});
	VERIFY("re-register MISSING|WP");

	/* A second uffd on a range the first one holds: the kernel says EBUSY;
	 * the shim nests it (docs/design.md, "Nesting"; strict kernel
	 * behaviour with UFFDSHIM_NEST=0, which shim_transparency_test uses). */
	int uffd2 = uffd_create(O_CLOEXEC);
	uffd_api(uffd2, 0, NULL);
	errno = 0;
	is_int(reg(uffd2, a, 16 * PG, M_MISSING, NULL), 0,
	       "second uffd: REGISTER of a taken range is nested (errno %s)", strerror(errno));
	if (js_load("nested") == 0) {
		is_int(js_nuffds(), 2, "second uffd: model has 2 uffds");
		if (ju_fd(uffd2, &u))
			is_int(u.nranges, 1, "second uffd: its own (virtual) range");
	}
	VERIFY("second uffd nested");
	close(uffd2);
	VERIFY("second uffd closed");
	unreg(uffd, a, 16 * PG);
	VERIFY("pages [0, 16) unregistered");

	/* Re-registration of a registered range (the kernel's rule, per VMA: one
	 * this uffd registered with at least the requested modes is left alone;
	 * any other gets exactly the requested modes; uffd-wp bits of its pages
	 * stay as they are either way, and count again once WP is back). */
	char *b = map_anon(16);
	memset(b, 0x44, 16 * PG);
	is_int(reg(uffd, b, 16 * PG, M_WP, NULL), 0, "re-register: REGISTER WP on populated memory");
	struct uffdio_writeprotect wp = {.range = {(uint64_t)b, 16 * PG},
					 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	is_int(ioctl(uffd, UFFDIO_WRITEPROTECT, &wp), 0, "re-register: WRITEPROTECT 16 pages");
	wp_matches(uffd, b, 16, 16, "WP 16 pages");
	VERIFY("WP 16 pages");
	is_int(reg(uffd, b, 8 * PG, M_WP | M_MISSING, NULL), 0,
	       "re-register: pages [0, 8) WP|MISSING (a superset: replaces WP)");
	check_ranges(uffd, b, 16, "re-register [0,8) WP|MISSING", 2, (int[]){0, 8, 8, 16},
		     (uint64_t[]){M_MISSING | M_WP, M_WP});
	wp_matches(uffd, b, 16, 16, "re-register [0,8) WP|MISSING");
	VERIFY("re-register [0,8) WP|MISSING");
	is_int(reg(uffd, b, 8 * PG, M_MISSING, NULL), 0,
	       "re-register: pages [0, 8) MISSING (a subset: the kernel keeps MISSING|WP)");
	check_ranges(uffd, b, 16, "re-register [0,8) MISSING", 2, (int[]){0, 8, 8, 16},
		     (uint64_t[]){M_MISSING | M_WP, M_WP});
	wp_matches(uffd, b, 16, 16, "re-register [0,8) MISSING");
	VERIFY("re-register [0,8) with a subset of its modes");
	is_int(reg(uffd, b + 8 * PG, 8 * PG, M_MISSING, NULL), 0,
	       "re-register: pages [8, 16) MISSING (not a subset: replaces WP, bits stay)");
	check_ranges(uffd, b, 16, "re-register [8,16) MISSING", 2, (int[]){0, 8, 8, 16},
		     (uint64_t[]){M_MISSING | M_WP, M_MISSING});
	wp_matches(uffd, b, 16, 16, "re-register [8,16) MISSING");
	VERIFY("re-register [8,16) MISSING");
	is_int(reg(uffd, b + 8 * PG, 8 * PG, M_WP, NULL), 0,
	       "re-register: pages [8, 16) WP again (the old bits protect again)");
	check_ranges(uffd, b, 16, "re-register [8,16) WP", 2, (int[]){0, 8, 8, 16},
		     (uint64_t[]){M_MISSING | M_WP, M_WP});
	wp_matches(uffd, b, 16, 16, "re-register [8,16) WP");
	VERIFY("re-register [8,16) WP again");

	unreg(uffd, a, 16 * PG);
	unreg(uffd, b, 16 * PG);
	unmap_anon(a, 16);
	unmap_anon(b, 16);
	VERIFY("anon done");

	/* ---- memfd shmem ---- */
	int mfd = memfd_create("scn-shmem", MFD_CLOEXEC);
	char file[16 * PG];
	for (int i = 0; i < 16; i++)
		memset(file + i * PG, 'A' + i, PG);
	ok(mfd >= 0 && pwrite(mfd, file, sizeof(file), 0) == (ssize_t)sizeof(file),
	   "shmem: memfd with 16 pages of content");
	char *s = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	static const uint64_t shmodes[] = {M_MISSING, M_WP, M_MINOR, M_MISSING | M_MINOR,
					   M_WP | M_MINOR, M_MISSING | M_WP | M_MINOR};
	for (int i = 0; i < 6; i++)
		one_mode(uffd, s, 16 * PG, shmodes[i], "shmem", PG);

	/* A real MINOR fault resolved by CONTINUE. */
	is_int(reg(uffd, s, 16 * PG, M_MINOR, NULL), 0, "shmem: REGISTER MINOR");
	struct toucher t2 = {.addr = s + 2 * PG};
	pthread_create(&t2.t, NULL, touch_main, &t2);
	ok(read_msg(uffd, &m) && m.event == UFFD_EVENT_PAGEFAULT &&
	   m.arg.pagefault.address == (uint64_t)s + 2 * PG &&
	   (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR), "shmem: MINOR fault message");
	struct uffdio_continue cont = {.range = {(uint64_t)s + 2 * PG, PG}};
	is_int(ioctl(uffd, UFFDIO_CONTINUE, &cont), 0, "shmem: CONTINUE resolves it");
	pthread_join(t2.t, NULL);
	is_int(t2.seen, 'C', "shmem: the thread read the file's page");
	if (js_load("minor") == 0 && ju_fd(uffd, &u)) {
		is_int(ju_counter(&u, "faults_minor"), 1, "shmem: 1 MINOR fault counted");
		is_int(u.npending, 0, "shmem: nothing pending after CONTINUE");
	}
	VERIFY("shmem MINOR fault resolved");
	/* Part of the mapping: the VMA splits, the range keeps its file offset. */
	is_int(unreg(uffd, s, 16 * PG), 0, "shmem: UNREGISTER");
	is_int(reg(uffd, s + 4 * PG, 8 * PG, M_MISSING | M_WP, NULL), 0,
	       "shmem: REGISTER pages [4, 12) MISSING|WP");
	check_ranges(uffd, s, 16, "shmem partial", 1, (int[]){4, 12},
		     (uint64_t[]){M_MISSING | M_WP});
	if (ju_fd(uffd, &u))
		is_int(jnum(u.obj, u.end, "offset"), 4 * PG, "shmem partial: file offset 4 pages");
	VERIFY("shmem partial register");
	unreg(uffd, s, 16 * PG);
	munmap(s, 16 * PG);
	close(mfd);
	VERIFY("shmem done");

	/* ---- hugetlb ---- */
	hugetlb_part(uffd);

	close(uffd);
	if (js_load("end") == 0)
		is_int(js_nuffds(), 0, "end: no uffd left in the model");
	VERIFY("end");
	return done_testing();
}
