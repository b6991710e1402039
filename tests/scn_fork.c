/* scn_fork.c - scenario: fork of a process whose memory is registered.
 * With UFFD_FEATURE_EVENT_FORK: a handler thread reads the FORK event; the
 * parent's model gets the new uffd (origin fork-event, parent = the original,
 * mm pid = the child, the original's ranges, the fd and file flags the
 * kernel gave it); the child's model has its inherited fd serving the
 * parent's memory; the child's missing pages fault to the new uffd and the
 * parent's handler fills them.  Without EVENT_FORK: the child's memory is
 * unregistered (ordinary zero-fill), nothing reaches the parent.  The child
 * prints its own TAP lines (the parent waits), then idles while the parent
 * checks its own model.  Every status/verify here runs the tool through
 * vfork(): fork() would itself raise FORK events and copy registrations. */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096UL
#define VERIFY(...) do { char l_[160]; snprintf(l_, sizeof(l_), __VA_ARGS__); \
	is_int(verify_self(l_), 0, "verify: %s", l_); } while (0)
#define shim_status_json_self status_json_vfork

/* uffd-record ARGS run through vfork (shares the mm: no fork of it). */
static int record_vfork(char *const args[], char *out, size_t outlen)
{
	char tool[PATH_MAX];
	snprintf(tool, sizeof(tool), "%s/uffd-record", shim_build_dir());
	char *av[8] = {tool};
	for (int i = 0; args[i] && i < 6; i++)
		av[i + 1] = args[i];
	size_t ne = 0, k = 0;
	while (environ[ne])
		ne++;
	char **envp = calloc(ne + 1, sizeof(char *));
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
			envp[k++] = environ[i];
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = vfork();
	if (pid == 0) {
		syscall(SYS_dup2, p[1], 1);
		syscall(SYS_dup2, p[1], 2);
		syscall(SYS_close_range, 3, ~0U, 0);
		syscall(SYS_execve, tool, av, envp);
		syscall(SYS_exit_group, 127);
	}
	close(p[1]);
	size_t got = 0;
	ssize_t n;
	while (got + 1 < outlen && (n = read(p[0], out + got, outlen - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = 0;
	close(p[0]);
	free(envp);
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int verify_self(const char *label)
{
	static char out[65536];
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	int rc = record_vfork((char *[]){"status", pid, "--verify", NULL}, out, sizeof(out));
	if (rc)
		diag("%s: uffd-record status %s --verify exited %d:\n%s", label, pid, rc, out);
	return rc;
}

/* verify_self without diagnostics (for waiting until it holds). */
static int verify_quiet(void)
{
	static char out[65536];
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	return record_vfork((char *[]){"status", pid, "--verify", NULL}, out, sizeof(out));
}

static int status_json_vfork(char *buf, size_t len)
{
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	return record_vfork((char *[]){"status", pid, "--json", NULL}, buf, len);
}

#include "scn_common.h"
static int reg_missing(int uffd, void *addr, size_t len)
{
	struct uffdio_register r = {.range = {(uint64_t)addr, len},
				    .mode = UFFDIO_REGISTER_MODE_MISSING};
	return ioctl(uffd, UFFDIO_REGISTER, &r);
}

static int fill(int uffd, void *dst, char c)
{
	static char page[PG];
	memset(page, c, PG);
	struct uffdio_copy cp = {.dst = (uint64_t)dst, .src = (uint64_t)page, .len = PG};
	return ioctl(uffd, UFFDIO_COPY, &cp);
}

/* ---- the handler thread of the parent: the original uffd and the one the
 * FORK event brings; it fills faults with 'P' (parent) or 'C' (child). ---- */
static struct {
	int u;
	volatile int fu, stop, forks, faults_u, faults_f, filled, k_nonblock;
} h = {.fu = -1};
static char js_fork[1 << 18]; /* status --json taken when the FORK event was read */

static void *h_main(void *arg)
{
	(void)arg;
	/* Lowest priority on the shared CPU: once the kernel hands the FORK
	 * event over, the forking thread runs before this one is back from
	 * read() (the window the shim must cope with). */
	struct sched_param sp = {0};
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	while (!h.stop) {
		struct pollfd p[2] = {{.fd = h.u, .events = POLLIN}, {.fd = h.fu, .events = POLLIN}};
		if (poll(p, h.fu >= 0 ? 2 : 1, 50) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			struct uffd_msg m;
			if (!(p[i].revents & POLLIN) || read(p[i].fd, &m, sizeof(m)) != sizeof(m))
				continue;
			if (m.event == UFFD_EVENT_FORK) {
				/* The kernel gives the new fd the original's creation
				 * flags; note them and the model's view, then make it
				 * non-blocking (poll needs that: POLLERR otherwise). */
				int fu = (int)m.arg.fork.ufd;
				h.k_nonblock = !!(fcntl(fu, F_GETFL) & O_NONBLOCK);
				status_json_vfork(js_fork, sizeof(js_fork));
				fcntl(fu, F_SETFL, O_NONBLOCK);
				h.fu = fu;
				h.forks++;
			} else if (m.event == UFFD_EVENT_PAGEFAULT) {
				if (i) /* counted first: the faulting thread goes on at once */
					h.faults_f++;
				else
					h.faults_u++;
				fill(p[i].fd, (void *)(m.arg.pagefault.address & ~(PG - 1)),
				     i ? 'C' : 'P');
				h.filled++;
			}
		}
	}
	return NULL;
}

/* Until the handler is back from every COPY it started (the faulting
 * thread goes on as soon as the kernel has the page, before the ioctl
 * returns and the shim records it). */
static void h_settle(void)
{
	for (int i = 0; i < 2000 && h.filled != h.faults_u + h.faults_f; i++)
		usleep(1000);
}

/* ---- child side: TAP lines of its own, counts handed back ---- */
struct sync {
	int c2p[2], p2c[2];
};

static void child_report_and_wait(struct sync *s)
{
	int v[2] = {th_state.run, th_state.failed};
	if (write(s->c2p[1], v, sizeof(v)) != sizeof(v))
		_exit(3);
	char go;
	if (read(s->p2c[0], &go, 1) != 1)
		_exit(4);
	_exit(0);
}

static void parent_take_child_counts(struct sync *s)
{
	int v[2];
	if (read(s->c2p[0], v, sizeof(v)) == sizeof(v)) {
		th_state.run = v[0];
		th_state.failed = v[1];
	} else {
		fail("the child reported its test counts");
	}
}

static void parent_release_child(struct sync *s, pid_t pid)
{
	if (write(s->p2c[1], "g", 1) != 1)
		diag("cannot release the child");
	int st;
	waitpid(pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child exited cleanly (status %#x)", st);
	for (int i = 0; i < 2; i++) {
		close(s->c2p[i]);
		close(s->p2c[i]);
	}
}

static void child_checks(int uffd, char *mem, int npages, int nfilled, char filled_c,
			 char fault_c, pid_t parent, const char *what)
{
	struct juffd u;
	if (js_load(what) == 0) {
		int with_fds = 0;
		for (int i = 0; ju_nth(i, &u); i++)
			with_fds += u.nfds > 0;
		is_int(with_fds, 1, "%s child: its model has 1 uffd with fds (the inherited one)",
		       what);
		if (ju_fd(uffd, &u)) {
			is_str(u.origin, "inherited", "%s child: origin inherited", what);
			is_int(u.mm_pid, parent, "%s child: the uffd serves the parent's memory", what);
			is_int(u.nranges, 1, "%s child: with the parent's registration", what);
		} else {
			fail("%s child: its model lists fd %d", what, uffd);
		}
	}
	/* The parent's model names the child as the memory of a FORK-event uffd
	 * only once its fork() has returned (docs/design.md, "Processes"):
	 * until then verify here sees a registration it cannot attribute. */
	for (int tries = 0; tries < 40 && verify_quiet() != 0; tries++)
		usleep(25 * 1000);
	VERIFY("%s child, before touching", what);
	bool good = true;
	for (int i = 0; i < npages; i++)
		good &= mem[i * PG + 5] == (i < nfilled ? filled_c : fault_c);
	ok(good, "%s child: pages [0, %d) hold '%c', the rest '%s'", what, nfilled, filled_c,
	   fault_c ? (char[]){fault_c, 0} : "\\0");
	VERIFY("%s child, after touching", what);
}

int main(int argc, char **argv)
{
	(void)argc;
	shim_reexec_if_needed(argv);
	pid_t me = getpid();
	struct juffd u;

	/* ---- without EVENT_FORK ---- */
	int v = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (v < 0)
		skip_all("%s", uffd_skip_reason(errno));
	if (uffd_api(v, 0, NULL) < 0)
		skip_all("UFFDIO_API: %s", strerror(errno));
	char *s = map_anon(8);
	is_int(reg_missing(v, s, 8 * PG), 0, "plain: REGISTER 8 pages MISSING");
	for (int i = 0; i < 4; i++)
		fill(v, s + i * PG, 'Q');
	VERIFY("plain: before fork");
	struct sync sy;
	if (pipe(sy.c2p) < 0 || pipe(sy.p2c) < 0)
		skip_all("pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		child_checks(v, s, 8, 4, 'Q', 0, me, "plain");
		child_report_and_wait(&sy);
	}
	parent_take_child_counts(&sy);
	if (js_load("plain parent") == 0) {
		is_int(js_nuffds(), 1, "plain parent: still 1 uffd");
		struct pollfd pfd = {.fd = v, .events = POLLIN};
		is_int(poll(&pfd, 1, 0), 0, "plain parent: the child's faults reached no one");
	}
	VERIFY("plain parent, child alive");
	parent_release_child(&sy, pid);
	close(v);
	munmap(s, 8 * PG);
	VERIFY("plain done");

	/* ---- with EVENT_FORK ---- */
	int uf = uffd_create(O_CLOEXEC);
	if (uffd_api(uf, UFFD_FEATURE_EVENT_FORK, NULL) < 0)
		skip_all("UFFDIO_API EVENT_FORK: %s", strerror(errno));
	fcntl(uf, F_SETFL, O_NONBLOCK); /* now; the uffd was created blocking */
	char *r = map_anon(16);
	is_int(reg_missing(uf, r, 16 * PG), 0, "EVENT_FORK: REGISTER 16 pages MISSING");
	for (int i = 0; i < 8; i++)
		fill(uf, r + i * PG, 'P');
	h.u = uf;
	/* One CPU for this thread and the handler: the kernel wakes fork()
	 * while the handler is still inside read(), and this thread then runs
	 * first (fork returns before the handler's read does). */
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
	sched_setaffinity(0, sizeof(one), &one);
	pthread_t ht;
	pthread_create(&ht, NULL, h_main, NULL);
	VERIFY("EVENT_FORK: before fork");
	if (pipe(sy.c2p) < 0 || pipe(sy.p2c) < 0)
		skip_all("pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		child_checks(uf, r, 16, 8, 'P', 'C', me, "EVENT_FORK");
		child_report_and_wait(&sy);
	}
	parent_take_child_counts(&sy);
	h_settle();
	is_int(h.forks, 1, "EVENT_FORK parent: the handler read 1 FORK event");
	is_int(h.faults_f, 8, "EVENT_FORK parent: 8 child faults served on the new uffd");
	is_int(h.faults_u, 0, "EVENT_FORK parent: none on the original");
	if (js_load("EVENT_FORK parent") == 0) {
		is_int(js_nuffds(), 2, "EVENT_FORK parent: 2 uffds in the model");
		struct juffd o;
		if (ju_fd(uf, &o) && ju_fd(h.fu, &u)) {
			is_str(u.origin, "fork-event", "new uffd: origin fork-event");
			is_int(u.parent_id, o.id, "new uffd: parent is the original uffd");
			is_int(u.mm_pid, pid, "new uffd: serves the child's memory (mm pid)");
			ok(u.nranges == 1 && u.r[0].start == (uint64_t)r &&
			   u.r[0].end == (uint64_t)r + 16 * PG, "new uffd: the original's range");
			is_u64(u.features_requested, UFFD_FEATURE_EVENT_FORK,
			       "new uffd: the original's features");
			ok(u.nfds == 1 && u.cloexec[0], "new uffd: its fd %d, CLOEXEC as created", h.fu);
			is_int(ju_counter(&u, "faults_missing"), 8, "new uffd: 8 MISSING faults");
			is_int(ju_counter(&u, "copy"), 8, "new uffd: 8 COPYs");
			is_int(ju_counter(&o, "events_fork"), 1, "original: 1 FORK event");
			is_int(o.mm_pid, me, "original: still serves this process");
		} else {
			fail("EVENT_FORK parent: the model lists fds %d and %d", uf, h.fu);
		}
	}
	/* The new fd's O_NONBLOCK as the model had it at the FORK event. */
	snprintf(js, sizeof(js), "%s", js_fork);
	ok(!h.k_nonblock, "new uffd: the kernel made its fd blocking (the original's creation flags)");
	if (ju_fd(h.fu, &u))
		is_int(u.nonblock, h.k_nonblock, "new uffd: the model's O_NONBLOCK of it at the FORK "
		       "event = the kernel's");
	else
		fail("new uffd: in the model at the FORK event");
	VERIFY("EVENT_FORK parent, child alive");
	parent_release_child(&sy, pid);

	/* The parent's own missing pages still fault to the original uffd. */
	ok(r[10 * PG] == 'P', "EVENT_FORK parent: its own page 10 was filled by the handler");
	h_settle();
	is_int(h.faults_u, 1, "EVENT_FORK parent: 1 fault on the original");
	VERIFY("EVENT_FORK parent, own fault");
	h.stop = 1;
	pthread_join(ht, NULL);
	close(h.fu);
	if (js_load("closed") == 0)
		is_int(js_nuffds(), 1, "the fork-event uffd left the model when closed");
	close(uf);
	munmap(r, 16 * PG);
	VERIFY("end");
	return done_testing();
}
