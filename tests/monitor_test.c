/* monitor_test.c - an external monitor attached through the control socket.
 *
 * This program (under the shim) is the app: it registers a region MISSING
 * with its own uffd and serves its faults with 'A'.  A second process, this
 * program run as "--monitor", attaches (UCTL_MON_OPEN), registers the first
 * half of the same region MISSING - which the kernel alone would refuse
 * with EBUSY - and serves its faults with 'M' through UCTL_MON_READ and
 * UCTL_MON_IOCTL.  The monitor sits below the app: it is asked first, and
 * the app never sees the faults the monitor resolved.  Then the monitor is
 * killed: its uffd goes, and the app's own semantics are intact (a page
 * made missing again faults to the app).  Another uid cannot attach. */
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"
#include "uffdshim_ctl.h"

#define PG 4096ul
#define N 16

/* ---- the monitor's side of the protocol ---- */
static int mon_connect(pid_t pid)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "%s%d", UCTL_ADDR_PREFIX, (int)pid);
	if (connect(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
							  1 + (size_t)n)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool xfer(int fd, void *p, size_t len, bool wr)
{
	char *c = p;
	while (len) {
		ssize_t r = wr ? send(fd, c, len, MSG_NOSIGNAL) : read(fd, c, len);
		if (r <= 0)
			return false;
		c += r;
		len -= (size_t)r;
	}
	return true;
}

/* One request; returns the reply status (or -EIO), payload into out. */
static int call(int fd, uint32_t op, const void *req, uint32_t len, void *out, uint32_t cap,
		uint32_t *outlen)
{
	struct uctl_hdr h = {.magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION, .op = op, .len = len};
	if (!xfer(fd, &h, sizeof(h), true) || (len && !xfer(fd, (void *)req, len, true)) ||
	    !xfer(fd, &h, sizeof(h), false) || h.magic != UCTL_REP_MAGIC || h.len > cap ||
	    (h.len && !xfer(fd, out, h.len, false)))
		return -EIO;
	if (outlen)
		*outlen = h.len;
	return h.status;
}

static int mon_ioctl(int fd, uint64_t req, const void *arg, uint32_t arg_len, const void *data,
		     uint32_t data_len)
{
	static uint8_t buf[sizeof(struct uctl_mon_ioctl) + 64 + PG];
	struct uctl_mon_ioctl q = {.request = req, .arg_len = arg_len, .data_len = data_len};
	memcpy(buf, &q, sizeof(q));
	memcpy(buf + sizeof(q), arg, arg_len);
	if (data_len)
		memcpy(buf + sizeof(q) + arg_len, data, data_len);
	uint8_t out[64];
	return call(fd, UCTL_MON_IOCTL, buf, (uint32_t)(sizeof(q) + arg_len + data_len), out,
		    sizeof(out), NULL);
}

/* --monitor PID ADDR NPAGES: serve MISSING faults of [ADDR, +NPAGES) with 'M'. */
static int monitor_main(pid_t pid, uint64_t addr, uint64_t npages)
{
	int fd = mon_connect(pid);
	if (fd < 0)
		return 2;
	struct uctl_mon_open o = {.features = 0};
	struct uctl_mon_info info;
	uint32_t got = 0;
	int st = call(fd, UCTL_MON_OPEN, &o, sizeof(o), &info, sizeof(info), &got);
	if (st != 0) {
		printf("open %d\n", st);
		fflush(stdout);
		return 3;
	}
	struct uffdio_register r = {.range = {addr, npages * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	st = mon_ioctl(fd, UFFDIO_REGISTER, &r, sizeof(r), NULL, 0);
	printf("registered %d uffd %u\n", st, info.uffd_id);
	fflush(stdout);
	static char page[PG];
	memset(page, 'M', sizeof(page));
	for (;;) {
		struct uctl_mon_read q = {.max_msgs = 16, .timeout_ms = 500};
		struct uffd_msg msgs[16];
		uint32_t len = 0;
		if (call(fd, UCTL_MON_READ, &q, sizeof(q), msgs, sizeof(msgs), &len) != 0)
			return 4;
		for (uint32_t i = 0; i < len / sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			struct uffdio_copy c = {.dst = msgs[i].arg.pagefault.address & ~(PG - 1),
						.len = PG};
			mon_ioctl(fd, UFFDIO_COPY, &c, sizeof(c), page, PG);
		}
	}
}

/* ---- the app ---- */
struct app {
	int fd;
	volatile int faults, other;
};

static void *handler(void *arg)
{
	struct app *a = arg;
	static char page[PG];
	memset(page, 'A', sizeof(page));
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(a->fd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL;
		if (m.event != UFFD_EVENT_PAGEFAULT || (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			a->other++;
			continue;
		}
		a->faults++;
		struct uffdio_copy c = {.dst = m.arg.pagefault.address & ~(PG - 1),
					.src = (uint64_t)page, .len = PG};
		if (ioctl(a->fd, UFFDIO_COPY, &c) < 0)
			a->other++;
	}
}

static pid_t start_monitor(char *self, char *base, int npages, FILE **out, uid_t as_uid)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	char spid[16], saddr[32], sn[16];
	snprintf(spid, sizeof(spid), "%d", (int)getpid());
	snprintf(saddr, sizeof(saddr), "%llu", (unsigned long long)(uintptr_t)base);
	snprintf(sn, sizeof(sn), "%d", npages);
	fflush(NULL);
	pid_t pid = vfork();
	if (pid == 0) {
		syscall(SYS_dup2, p[1], 1);
		if (as_uid && syscall(SYS_setresuid, as_uid, as_uid, as_uid) < 0)
			syscall(SYS_exit_group, 9);
		char *av[] = {self, "--monitor", spid, saddr, sn, NULL};
		syscall(SYS_execve, self, av, environ);
		syscall(SYS_exit_group, 127);
	}
	close(p[1]);
	*out = fdopen(p[0], "r");
	return pid;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "--monitor"))
		return monitor_main(atoi(argv[2]), strtoull(argv[3], NULL, 0),
				    strtoull(argv[4], NULL, 0));
	shim_reexec_if_needed(argv);
	struct app a = {.fd = uffd_create(O_CLOEXEC)};
	if (a.fd < 0 || uffd_api(a.fd, 0, NULL) < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	char self[1024];
	ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[sl > 0 ? sl : 0] = 0;
	char *p = map_anon(N);
	struct uffdio_register r = {.range = {(uint64_t)p, N * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	is_int(ioctl(a.fd, UFFDIO_REGISTER, &r), 0, "the app registers %d pages MISSING", N);
	pthread_t t;
	pthread_create(&t, NULL, handler, &a);

	FILE *mo;
	pid_t mp = start_monitor(self, p, N / 2, &mo, 0);
	char line[128] = "";
	bool reg = mp > 0 && fgets(line, sizeof(line), mo) && !strncmp(line, "registered 0", 12);
	ok(reg, "a monitor attaches and registers the first half MISSING (the kernel alone: EBUSY)");
	if (!reg)
		diag("monitor said: %s", line);
	is_int(shim_verify_self("monitor attached"), 0, "status --verify agrees with a monitor attached");

	int m_pages = 0, a_pages = 0;
	for (int i = 0; i < N; i++) {
		char c = *(volatile char *)(p + i * PG);
		m_pages += i < N / 2 && c == 'M';
		a_pages += i >= N / 2 && c == 'A';
	}
	is_int(m_pages, N / 2, "the monitor served the first half (asked first, below the app)");
	is_int(a_pages, N / 2, "the app served the second half");
	is_int(a.faults, N / 2, "the app saw only its own %d faults", N / 2);

	/* The monitor dies: its uffd goes, the app's semantics stay. */
	kill(mp, SIGKILL);
	waitpid(mp, NULL, 0);
	fclose(mo);
	usleep(200 * 1000);
	madvise(p, 4 * PG, MADV_DONTNEED);
	int back = 0;
	for (int i = 0; i < 4; i++)
		back += *(volatile char *)(p + i * PG) == 'A';
	is_int(back, 4, "after the monitor died, missing pages of its half fault to the app");
	is_int(a.faults, N / 2 + 4, "the app saw exactly those 4 more faults");
	is_int(shim_verify_self("monitor gone"), 0, "status --verify agrees after the monitor left");

	/* Another uid is refused. */
	pid_t op = start_monitor(self, p, N / 2, &mo, 65534);
	line[0] = 0;
	if (op > 0 && !fgets(line, sizeof(line), mo))
		line[0] = 0;
	int st = 0;
	if (op > 0)
		waitpid(op, &st, 0);
	ok(op > 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0 && strncmp(line, "registered", 10),
	   "a monitor of another uid cannot attach (%s)", line[0] ? line : "no connection");
	if (mo)
		fclose(mo);
	is_int(a.other, 0, "the app's handler saw nothing unexpected");
	return done_testing();
}
