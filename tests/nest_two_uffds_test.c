/* nest_two_uffds_test.c - two uffds of one process on the same memory.
 *
 * Without the shim the kernel refuses the second registration with EBUSY
 * (checked first, natively, before the re-exec under the shim).  Under the
 * shim both work as docs/design.md "Nesting" says:
 *   - MISSING: the carrier (first registrant) is asked first when it has
 *     MISSING mode; a fault the carrier does not want is forwarded to the
 *     other client (doorbell) and resolved by it;
 *   - WP: every client that holds a page gets its own fault, one after the
 *     other, and the write goes through only when none holds it;
 *   - a client that unregisters releases only its own protections;
 *   - the second client's REGISTER answers what the kernel would;
 *   - events the shim makes for a client hold the caller until read;
 *   - status --verify agrees throughout. */
#include <pthread.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096ul
#define N 16

struct client {
	const char *name;
	char letter;
	int fd;
	pthread_t thr;
	volatile int missing, wp, other, removes, unmaps;
	volatile uint64_t last_start, last_end;
};

static void *handler(void *arg)
{
	struct client *c = arg;
	static __thread char page[PG];
	memset(page, c->letter, sizeof(page));
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(c->fd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL;
		if (m.event == UFFD_EVENT_REMOVE || m.event == UFFD_EVENT_UNMAP) {
			c->last_start = m.arg.remove.start;
			c->last_end = m.arg.remove.end;
			__atomic_add_fetch(m.event == UFFD_EVENT_REMOVE ? &c->removes : &c->unmaps, 1,
					   __ATOMIC_SEQ_CST);
			continue;
		}
		if (m.event != UFFD_EVENT_PAGEFAULT) {
			__atomic_add_fetch(&c->other, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		uint64_t a = m.arg.pagefault.address & ~(PG - 1);
		if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
			__atomic_add_fetch(&c->wp, 1, __ATOMIC_SEQ_CST);
			struct uffdio_writeprotect w = {{a, PG}, 0};
			if (ioctl(c->fd, UFFDIO_WRITEPROTECT, &w) < 0)
				__atomic_add_fetch(&c->other, 1, __ATOMIC_SEQ_CST);
		} else {
			__atomic_add_fetch(&c->missing, 1, __ATOMIC_SEQ_CST);
			struct uffdio_copy cp = {.dst = a, .src = (uint64_t)page, .len = PG};
			if (ioctl(c->fd, UFFDIO_COPY, &cp) < 0)
				__atomic_add_fetch(&c->other, 1, __ATOMIC_SEQ_CST);
		}
	}
}

static int new_uffd(void)
{
	int fd = uffd_create(O_CLOEXEC);
	if (fd < 0 || uffd_api(fd, 0, NULL) < 0)
		return -1;
	return fd;
}

static long reg(int fd, char *p, size_t pages, uint64_t mode, uint64_t *ioctls)
{
	struct uffdio_register r = {.range = {(uint64_t)p, pages * PG}, .mode = mode};
	long rc = ioctl(fd, UFFDIO_REGISTER, &r);
	if (ioctls)
		*ioctls = r.ioctls;
	return rc < 0 ? -errno : 0;
}

static long wp(int fd, char *p, size_t pages, bool on)
{
	struct uffdio_writeprotect w = {{(uint64_t)p, pages * PG},
					on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	return ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

/* Natively: does the kernel refuse the second uffd? */
static const char *native_check(void)
{
	int a = new_uffd(), b = new_uffd();
	char *p = map_anon(N);
	if (a < 0 || b < 0 || !p)
		return "skip";
	if (reg(a, p, N, UFFDIO_REGISTER_MODE_MISSING, NULL) != 0)
		return "skip";
	long r = reg(b, p, N, UFFDIO_REGISTER_MODE_MISSING, NULL);
	close(a);
	close(b);
	return r == -EBUSY ? "EBUSY" : r == 0 ? "0" : "other";
}

static void start(struct client *c)
{
	pthread_create(&c->thr, NULL, handler, c);
}

struct zap {
	char *p;
	size_t len;
	volatile int done;
};

static void *zap_main(void *arg)
{
	struct zap *z = arg;
	madvise(z->p, z->len, MADV_DONTNEED);
	__atomic_store_n(&z->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void write_page(char *p, char v)
{
	*(volatile char *)p = v;
	__asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	if (!getenv("NEST_NATIVE")) {
		const char *n = native_check();
		setenv("NEST_NATIVE", n, 1);
	}
	shim_reexec_if_needed(argv);
	const char *native = getenv("NEST_NATIVE");
	int probe = new_uffd();
	if (probe < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	close(probe);
	if (!strcmp(native, "skip"))
		skip_all("could not set up the native check");

	is_str(native, "EBUSY", "kernel alone: a second uffd registering the same range gets EBUSY");

	/* ---- MISSING: A has WP only, B has MISSING: B serves the faults ---- */
	struct client A = {.name = "A", .letter = 'A', .fd = new_uffd()};
	struct client B = {.name = "B", .letter = 'B', .fd = new_uffd()};
	char *p = map_anon(N);
	uint64_t io_a = 0, io_b = 0, io_ref = 0;
	is_int(reg(A.fd, p, N, UFFDIO_REGISTER_MODE_WP, &io_a), 0, "A registers WP");
	is_int(reg(B.fd, p, N, UFFDIO_REGISTER_MODE_MISSING, &io_b), 0,
	       "B registers MISSING on the same range: accepted under the shim");
	char *ref = map_anon(1);
	int rfd = new_uffd();
	reg(rfd, ref, 1, UFFDIO_REGISTER_MODE_MISSING, &io_ref);
	close(rfd);
	is_u64(io_b, io_ref, "B's REGISTER answers the ioctls the kernel gives a MISSING range");
	is_int(shim_verify_self("nested registration"), 0, "status --verify agrees (nested)");
	start(&A);
	start(&B);
	for (int i = 0; i < N; i++)
		write_page(p + i * PG, 0);
	int bad = 0;
	for (int i = 0; i < N; i++)
		bad += p[i * PG + 1] != 'B';
	is_int(B.missing, N, "every MISSING fault went to B (it took over the kernel registration: A holds nothing)");
	is_int(A.missing, 0, "A saw no MISSING fault");
	is_int(bad, 0, "pages hold B's contents");

	/* ---- WP: both hold page 5, A holds 2, B holds 10 ---- */
	struct client C = {.name = "C", .letter = 'C', .fd = new_uffd()};
	struct client D = {.name = "D", .letter = 'D', .fd = new_uffd()};
	char *q = map_anon(N);
	memset(q, 1, N * PG);
	is_int(reg(C.fd, q, N, UFFDIO_REGISTER_MODE_WP, NULL), 0, "C registers WP");
	is_int(reg(D.fd, q, N, UFFDIO_REGISTER_MODE_WP, NULL), 0, "D registers WP on the same range");
	is_int(wp(C.fd, q, 8, true), 0, "C protects pages 0-7");
	is_int(wp(D.fd, q + 4 * PG, 8, true), 0, "D protects pages 4-11");
	is_int(shim_verify_self("nested WP"), 0, "status --verify agrees (nested WP)");
	start(&C);
	start(&D);
	write_page(q + 5 * PG, 5);
	ok(C.wp == 1 && D.wp == 1, "a page both hold: each got its fault (C %d, D %d)", C.wp, D.wp);
	write_page(q + 2 * PG, 2);
	ok(C.wp == 2 && D.wp == 1, "a page only C holds: C's fault (C %d, D %d)", C.wp, D.wp);
	write_page(q + 10 * PG, 10);
	ok(C.wp == 2 && D.wp == 2, "a page only D holds: D's fault, forwarded (C %d, D %d)", C.wp,
	   D.wp);
	write_page(q + 14 * PG, 14);
	ok(C.wp == 2 && D.wp == 2, "a page nobody holds: no fault");
	ok(q[5 * PG] == 5 && q[2 * PG] == 2 && q[10 * PG] == 10 && q[14 * PG] == 14,
	   "every write went through");
	/* D unregisters: its holds go, C's stay. */
	struct uffdio_range ur = {(uint64_t)q, N * PG};
	is_int(ioctl(D.fd, UFFDIO_UNREGISTER, &ur) < 0 ? -errno : 0, 0, "D unregisters");
	write_page(q + 7 * PG, 7);
	write_page(q + 8 * PG, 8);
	ok(C.wp == 3 && D.wp == 2, "after D left: C still gets its page 7, page 8 is free (C %d, D %d)",
	   C.wp, D.wp);
	is_int(shim_verify_self("after D unregistered"), 0, "status --verify agrees after D left");
	/* ---- events: E carries without asking for any, F asked for REMOVE and UNMAP ---- */
	struct client E = {.name = "E", .letter = 'E', .fd = uffd_create(O_CLOEXEC)};
	struct client F = {.name = "F", .letter = 'F', .fd = uffd_create(O_CLOEXEC)};
	uffd_api(E.fd, 0, NULL);
	uffd_api(F.fd, UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP, NULL);
	char *w = map_anon(N);
	is_int(reg(E.fd, w, N, UFFDIO_REGISTER_MODE_MISSING, NULL), 0, "E registers MISSING");
	is_int(reg(F.fd, w, N, UFFDIO_REGISTER_MODE_MISSING, NULL), 0,
	       "F (EVENT_REMOVE|EVENT_UNMAP) registers the same range");
	start(&E);
	start(&F);
	for (int i = 0; i < N; i++)
		write_page(w + i * PG, 1);
	/* F's reader stops: the madvise that makes F's event must wait for it
	 * (the kernel holds the thread that causes an event until it is read). */
	pthread_cancel(F.thr);
	pthread_join(F.thr, NULL);
	struct zap z = {w, 4 * PG, 0};
	pthread_t zt;
	pthread_create(&zt, NULL, zap_main, &z);
	usleep(200 * 1000);
	uint64_t pm = 0;
	int pmfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	bool still = pmfd >= 0 && pread(pmfd, &pm, 8, (off_t)((uintptr_t)w / PG * 8)) == 8 &&
		     (pm >> 63 & 1);
	if (pmfd >= 0)
		close(pmfd);
	ok(!__atomic_load_n(&z.done, __ATOMIC_SEQ_CST) && still,
	   "MADV_DONTNEED is held while F's REMOVE event is unread, before the pages go "
	   "(as the kernel sends REMOVE before it zaps)");
	start(&F);
	pthread_join(zt, NULL);
	for (int t = 0; t < 200 && !F.removes; t++)
		usleep(5000);
	ok(F.removes == 1 && F.last_start == (uint64_t)w && F.last_end == (uint64_t)w + 4 * PG &&
	   E.removes == 0, "MADV_DONTNEED: F gets its REMOVE event [0, 4) (E asked for none: %d)",
	   E.removes);
	munmap(w, N * PG);
	for (int t = 0; t < 200 && !F.unmaps; t++)
		usleep(5000);
	ok(F.unmaps == 1 && F.last_start == (uint64_t)w && F.last_end == (uint64_t)w + N * PG,
	   "munmap: F gets its UNMAP event");
	is_int(shim_verify_self("after the events"), 0, "status --verify agrees after the unmap");
	close(E.fd);
	close(F.fd);
	is_int(A.other + B.other + C.other + D.other + E.other + F.other, 0,
	       "no handler saw anything unexpected");
	close(A.fd);
	close(B.fd);
	close(C.fd);
	close(D.fd);
	return done_testing();
}
