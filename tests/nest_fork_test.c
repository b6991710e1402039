/* nest_fork_test.c - fork of a process whose memory two uffds share
 * (docs/design.md "Nesting", events).
 *
 * uffd A registers a range WP without UFFD_FEATURE_EVENT_FORK and keeps page 0
 * protected (so it stays the carrier); uffd B registers the same range
 * MISSING with EVENT_FORK.  As if B were alone, a fork must give B one FORK
 * event whose uffd serves the child's missing pages, while A's protection
 * does not reach the child (A did not ask).  Then the same with a carrier
 * that asked for FORK events too: each gets its event, the carrier's child
 * uffd holds the child's memory with the carrier's own modes, and the other
 * client's child uffd holds nothing there (clients do not nest across
 * processes: the child's memory has one kernel registration).  The model
 * verifies in each state. */
#include <pthread.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096ul
#define N 16

struct reader {
	int fd;
	char letter;
	pthread_t t;
	volatile int missing, wp, forks, bad, child_fd;
	struct reader *child;    /* started on the FORK event's uffd */
};

static void *reader_main(void *arg);

static void start(struct reader *r)
{
	pthread_create(&r->t, NULL, reader_main, r);
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	static __thread char page[PG];
	memset(page, r->letter, sizeof(page));
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(r->fd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL;
		if (m.event == UFFD_EVENT_FORK) {
			__atomic_add_fetch(&r->forks, 1, __ATOMIC_SEQ_CST);
			r->child_fd = (int)m.arg.fork.ufd;
			if (r->child) {
				r->child->fd = (int)m.arg.fork.ufd;
				start(r->child);
			}
			continue;
		}
		if (m.event != UFFD_EVENT_PAGEFAULT) {
			r->bad++;
			continue;
		}
		if (shim_serve_fault(r->fd, &m, page, &r->missing, &r->wp) < 0)
			r->bad++;
	}
}

static int new_uffd(uint64_t features)
{
	int fd = uffd_create(O_CLOEXEC);
	if (fd < 0 || uffd_api(fd, features, NULL) < 0)
		return -1;
	return fd;
}

static long reg(int fd, char *p, size_t pages, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uint64_t)p, pages * PG}, .mode = mode};
	return ioctl(fd, UFFDIO_REGISTER, &r);
}

static void wait_for(volatile int *v, int want)
{
	for (int i = 0; i < 5000 && __atomic_load_n(v, __ATOMIC_SEQ_CST) < want; i++)
		usleep(1000);
}

/* A region of N pages where uffd a registers WP and keeps page 0 protected
 * (the carrier) and uffd b registers MISSING (forwarded); both readers run,
 * and the parent faults pages 1-3 in (b's). */
static char *shared_region(struct reader *a, struct reader *b)
{
	char *p = map_anon(N);
	p[0] = 1;
	struct uffdio_writeprotect w = {{(uint64_t)p, PG}, UFFDIO_WRITEPROTECT_MODE_WP};
	reg(a->fd, p, N, UFFDIO_REGISTER_MODE_WP);
	ioctl(a->fd, UFFDIO_WRITEPROTECT, &w);
	ok(reg(b->fd, p, N, UFFDIO_REGISTER_MODE_MISSING) == 0, "%c registers MISSING over %c's WP",
	   b->letter, a->letter);
	start(a);
	start(b);
	for (int i = 1; i < 4; i++)
		(void)*(volatile char *)(p + i * PG);
	return p;
}

/* Fork; the child runs fn(p) and reports one byte through a pipe, then waits
 * to be killed (its memory must exist while the parent verifies). */
static pid_t fork_child(char *p, int (*fn)(char *), int *result)
{
	int pp[2];
	if (pipe(pp) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		close(pp[0]);
		char r = (char)fn(p);
		if (write(pp[1], &r, 1) != 1)
			_exit(2);
		for (;;)
			pause();
	}
	close(pp[1]);
	char r = 'x';
	*result = pid > 0 && read(pp[0], &r, 1) == 1 ? r : -1;
	close(pp[0]);
	return pid;
}

static void end_child(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}

/* Child of part 1: its missing pages hold B's child handler's 'K'; page 0
 * (protected by A in the parent) is writable without a fault. */
static int child_one(char *p)
{
	int bad = 0;
	for (int i = 4; i < N; i++)
		bad += p[i * PG] != 'K';
	for (int i = 1; i < 4; i++)
		bad += p[i * PG] != 'B';
	p[0] = 9;
	return bad;
}

/* Child of part 2: the carrier's child uffd has WP only there: a missing
 * page reads as zeros (no fault), as for that uffd alone. */
static int child_two(char *p)
{
	int bad = 0;
	for (int i = 4; i < N; i++)
		bad += p[i * PG] != 0;
	return bad;
}

int main(int argc, char **argv)
{
	shim_reexec_if_needed(argv);
	int probe = new_uffd(0);
	if (probe < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	close(probe);
	plan(14);

	/* ---- part 1: only B asked for FORK events ---- */
	struct reader K = {.letter = 'K'};
	struct reader A = {.fd = new_uffd(0), .letter = 'A'};
	struct reader B = {.fd = new_uffd(UFFD_FEATURE_EVENT_FORK), .letter = 'B', .child = &K};
	char *p = shared_region(&A, &B);
	int res = -1;
	pid_t pid = fork_child(p, child_one, &res);
	is_int(res, 0, "child: its missing pages were served by B's child uffd, page 0 was free");
	wait_for(&B.forks, 1); /* read before fork() returned; counted just after */
	is_int(B.forks, 1, "B got one FORK event");
	is_int(A.forks + A.wp + A.bad, 0, "A (no EVENT_FORK) saw nothing of the child");
	wait_for(&K.missing, N - 4);
	is_int(K.missing, N - 4, "the FORK event's uffd served the child's %d missing pages", N - 4);
	is_int(B.missing, 3, "B served only the parent's faults");
	is_int(shim_verify_self("after the fork"), 0, "status --verify agrees (parent, child's uffd)");
	end_child(pid);

	/* ---- part 2: the carrier asked for FORK events too ---- */
	B.child = NULL; /* B gets a FORK event for this fork as well: leave it */
	struct reader A2 = {.fd = new_uffd(UFFD_FEATURE_EVENT_FORK), .letter = 'a'};
	struct reader B2 = {.fd = new_uffd(UFFD_FEATURE_EVENT_FORK), .letter = 'b'};
	char *q = shared_region(&A2, &B2);
	res = -1;
	pid = fork_child(q, child_two, &res);
	is_int(res, 0, "child: missing pages read as zeros (the carrier's child uffd has WP only)");
	wait_for(&A2.forks, 1);
	wait_for(&B2.forks, 1);
	ok(A2.forks == 1 && B2.forks == 1, "each client got its FORK event (A2 %d, B2 %d)", A2.forks,
	   B2.forks);
	struct uffdio_register probe_reg = {.range = {(uint64_t)q + 4 * PG, PG},
					    .mode = UFFDIO_REGISTER_MODE_MISSING};
	long rr = ioctl(B2.child_fd, UFFDIO_REGISTER, &probe_reg);
	int e = errno;
	ok(rr < 0 && e == EBUSY, "the child's memory is registered once (B2's child uffd gets "
	   "EBUSY: %s)", rr < 0 ? strerror(e) : "accepted");
	struct uffdio_register ra = {.range = {(uint64_t)q, N * PG}, .mode = UFFDIO_REGISTER_MODE_WP};
	ok(ioctl(A2.child_fd, UFFDIO_REGISTER, &ra) == 0 && ra.ioctls != 0,
	   "A2's child uffd holds the child's memory (re-registering WP: ok)");
	is_int(shim_verify_self("after the second fork"), 0, "status --verify agrees");
	end_child(pid);
	is_int(A.bad + B.bad + K.bad + A2.bad + B2.bad, 0, "no call failed");
	return done_testing();
}
