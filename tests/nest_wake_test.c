/* nest_wake_test.c - how a nested client that is not the carrier hears of the
 * faults the shim forwards to it (docs/design.md "Waking a client").
 *
 * Setup of every case: uffd A registers a range WP and keeps one page
 * protected, so it stays the carrier; uffd B registers the same range
 * MISSING, so every fault of a missing page arrives on A and is forwarded to
 * B.  B's reader waits in one of the ways an app may:
 *   - a blocking read() started before B shared any memory (blocked in the
 *     kernel: the doorbell reaches it first, then it waits in our read());
 *   - a blocking read() started afterwards; the same with readv();
 *   - a non-blocking uffd read after poll() (the doorbell every time).
 * Each case checks that B served every fault with its own contents, that A
 * saw none, that fcntl(F_GETFL) still shows the app's own flags, and that
 * status --verify agrees.  Then, for a parked blocking reader: a signal whose
 * handler lacks SA_RESTART interrupts read() with EINTR, one with SA_RESTART
 * does not (both as the kernel does); pthread_cancel() ends it and a new
 * reader serves the next faults; and exec() gives the file its blocking
 * flag back (checked by the re-executed test in /proc/self/fdinfo), and the
 * model reaches the new image through execl(). */
#include <poll.h>
#include <pthread.h>
#include <sys/uio.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096ul
#define N 32
#define N_TESTS_BEFORE_EXEC 29

enum how { H_READ_EARLY, H_READ, H_READV, H_POLL, H__N };
static const char *how_name[H__N] = {"blocking read() from before", "blocking read()",
				     "blocking readv()", "poll() + non-blocking read()"};

struct reader {
	int fd;
	enum how how;
	char letter;
	pthread_t t;
	volatile int missing, wp, bad, eintr, started, tid;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	static __thread char page[PG];
	memset(page, r->letter, sizeof(page));
	r->tid = (int)syscall(SYS_gettid);
	__atomic_store_n(&r->started, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		struct uffd_msg m[2];
		ssize_t n;
		if (r->how == H_POLL) {
			struct pollfd p = {r->fd, POLLIN, 0};
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return NULL;
			n = read(r->fd, m, sizeof(m));
			if (n < 0 && errno == EAGAIN)
				continue;
		} else if (r->how == H_READV) {
			struct iovec iov[2] = {{&m[0], 16}, {(char *)&m[0] + 16, 16 + sizeof(m[1])}};
			n = readv(r->fd, iov, 2);
		} else {
			n = read(r->fd, m, sizeof(m));
		}
		if (n < 0 && errno == EINTR) {
			__atomic_add_fetch(&r->eintr, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		if (n <= 0 || n % sizeof(m[0]))
			return NULL;
		for (size_t i = 0; i < (size_t)n / sizeof(m[0]); i++) {
			if (m[i].event != UFFD_EVENT_PAGEFAULT) {
				r->bad++;
				continue;
			}
			if (shim_serve_fault(r->fd, &m[i], page, &r->missing, &r->wp) < 0)
				r->bad++;
		}
	}
}

static void start(struct reader *r)
{
	pthread_create(&r->t, NULL, reader_main, r);
	while (!__atomic_load_n(&r->started, __ATOMIC_SEQ_CST))
		usleep(1000);
}

static void stop(struct reader *r)
{
	pthread_cancel(r->t);
	pthread_join(r->t, NULL);
}

static int new_uffd(int flags)
{
	int fd = uffd_create(flags);
	if (fd < 0 || uffd_api(fd, 0, NULL) < 0)
		return -1;
	return fd;
}

static long reg(int fd, char *p, size_t pages, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uint64_t)p, pages * PG}, .mode = mode};
	return ioctl(fd, UFFDIO_REGISTER, &r);
}

/* A (WP, holding page 0) and B (MISSING) on one range; B's reader waits as
 * `how` says.  Touches every page and checks the outcome. */
static void one_case(enum how how)
{
	const char *h = how_name[how];
	struct reader A = {.fd = new_uffd(O_CLOEXEC), .how = H_READ, .letter = 'A'};
	int bflags = O_CLOEXEC | (how == H_POLL ? O_NONBLOCK : 0);
	struct reader B = {.fd = new_uffd(bflags), .how = how, .letter = 'B'};
	char *p = map_anon(N);
	p[0] = 1;
	struct uffdio_writeprotect w = {{(uint64_t)p, PG}, UFFDIO_WRITEPROTECT_MODE_WP};
	if (reg(A.fd, p, N, UFFDIO_REGISTER_MODE_WP) < 0 || ioctl(A.fd, UFFDIO_WRITEPROTECT, &w) < 0) {
		fail("%s: A registers WP and protects page 0: %s", h, strerror(errno));
		return;
	}
	start(&A);
	if (how == H_READ_EARLY)
		start(&B);
	ok(reg(B.fd, p, N, UFFDIO_REGISTER_MODE_MISSING) == 0, "%s: B registers MISSING over A", h);
	if (how != H_READ_EARLY)
		start(&B);
	long sum = 0;
	for (int i = 1; i < N; i++)
		sum += *(volatile char *)(p + i * PG);
	is_int(sum, 'B' * (N - 1), "%s: every page read holds B's contents", h);
	is_int(B.missing, N - 1, "%s: B served every fault", h);
	ok(A.missing == 0 && A.wp == 0 && !A.bad && !B.bad && !B.wp,
	   "%s: A saw nothing, no call failed (A %d/%d, bad %d/%d)", h, A.missing, A.wp, A.bad,
	   B.bad);
	int fl = fcntl(B.fd, F_GETFL);
	is_int(fl & O_NONBLOCK, bflags & O_NONBLOCK, "%s: F_GETFL shows B's own O_NONBLOCK", h);
	is_int(shim_verify_self(h), 0, "%s: status --verify agrees", h);
	stop(&B);
	stop(&A);
	close(B.fd);
	close(A.fd);
	unmap_anon(p, N);
}

static void on_signal(int sig)
{
	(void)sig;
}

static void set_handler(int flags)
{
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = flags};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
}

/* Until the reader waits in read() again: parked in the shim's epoll set
 * (its kernel wait channel says so; at most 5 s). */
static void wait_parked(const struct reader *r)
{
	char path[64], wchan[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", r->tid);
	for (int i = 0; i < 2500; i++) {
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(wchan, 1, sizeof(wchan) - 1, f) : 0;
		if (f)
			fclose(f);
		wchan[n] = 0;
		if (strstr(wchan, "epoll"))
			return;
		usleep(2000);
	}
}

static int fdinfo_flags(int fd)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	int flags = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "flags: %o", &flags) == 1)
			break;
	if (f)
		fclose(f);
	return flags;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--after-exec")) {
		/* Re-executed with B's fd open: its file is blocking again. */
		int fd = atoi(argv[2]);
		int fl = fdinfo_flags(fd);
		bool blocking = fl >= 0 && !(fl & O_NONBLOCK);
		printf("%s %d - after exec: the kernel's file of B is blocking again (flags 0%o)\n",
		       blocking ? "ok" : "not ok", N_TESTS_BEFORE_EXEC + 1, fl);
		fflush(stdout);
		int v = shim_verify_self("after exec");
		printf("%s %d - after exec (execl): the model was handed over, status --verify "
		       "agrees\n", v == 0 ? "ok" : "not ok", N_TESTS_BEFORE_EXEC + 2);
		return blocking && v == 0 ? 0 : 1;
	}
	shim_reexec_if_needed(argv);
	int probe = new_uffd(O_CLOEXEC);
	if (probe < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	close(probe);
	plan(N_TESTS_BEFORE_EXEC + 2);

	for (int h = 0; h < H__N; h++)
		one_case((enum how)h);

	/* ---- a parked blocking reader: signals, cancel, exec ---- */
	struct reader A = {.fd = new_uffd(O_CLOEXEC), .how = H_READ, .letter = 'A'};
	struct reader B = {.fd = new_uffd(0), .how = H_READ, .letter = 'B'};
	char *p = map_anon(N);
	p[0] = 1;
	struct uffdio_writeprotect w = {{(uint64_t)p, PG}, UFFDIO_WRITEPROTECT_MODE_WP};
	reg(A.fd, p, N, UFFDIO_REGISTER_MODE_WP);
	ioctl(A.fd, UFFDIO_WRITEPROTECT, &w);
	reg(B.fd, p, N, UFFDIO_REGISTER_MODE_MISSING);
	start(&A);
	start(&B);
	int i = 1;
	for (; i < 4; i++)
		(void)*(volatile char *)(p + i * PG);
	wait_parked(&B);
	set_handler(0);
	pthread_kill(B.t, SIGUSR1);
	for (int t = 0; t < 5000 && !__atomic_load_n(&B.eintr, __ATOMIC_SEQ_CST); t++)
		usleep(1000);
	is_int(B.eintr, 1, "a signal without SA_RESTART interrupts the parked read() with EINTR");
	wait_parked(&B);
	set_handler(SA_RESTART);
	pthread_kill(B.t, SIGUSR1);
	usleep(100 * 1000); /* delivered (a wrong EINTR would show now) */
	wait_parked(&B);
	is_int(B.eintr, 1, "a signal with SA_RESTART does not (the read() goes on)");
	(void)*(volatile char *)(p + i++ * PG);
	is_int(B.missing, 4, "the reader still serves faults after the signals");
	stop(&B);
	struct reader B2 = {.fd = B.fd, .how = H_READ, .letter = 'C'};
	start(&B2);
	for (int k = 0; k < 4; k++, i++)
		(void)*(volatile char *)(p + i * PG);
	ok(B2.missing == 4 && p[(i - 1) * PG] == 'C',
	   "after pthread_cancel of the parked reader, a new reader serves the faults (%d)",
	   B2.missing);
	is_int(shim_verify_self("after cancel"), 0, "status --verify agrees");

	/* exec with B's fd open (no O_CLOEXEC): the file goes back to blocking */
	char fdbuf[16];
	snprintf(fdbuf, sizeof(fdbuf), "%d", B.fd);
	fflush(stdout);
	execl("/proc/self/exe", argv[0], "--after-exec", fdbuf, (char *)NULL);
	fail("exec: %s", strerror(errno));
	return 1;
}
