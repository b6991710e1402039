/* track_sent_uffd_test.c - dirty tracking of a process that hands its uffd to
 * a handler process (SCM_RIGHTS) and keeps its own copy.
 *
 * Tracking adds WP to the app's MISSING-only registration and protects the
 * present pages through the app's uffd.  Once that uffd is read in another
 * process, a WP fault of ours would reach a handler whose shim knows nothing
 * of it (and the owner's pump would take the handler's messages).  So the
 * shim gives its protections on a uffd back before the uffd leaves, and
 * tracks that memory "all" from then on.
 *
 * This program runs under the shim: it writes set A of a region, registers
 * the region MISSING, starts `uffd-record track --step` on itself (A gets
 * protected), sends the uffd to a handler (this program exec'd with
 * --handler) and keeps it, then rewrites A and writes set B (missing pages:
 * the handler serves them).  The handler must see exactly B's MISSING faults
 * and no WP fault; the dirty log must hold A and B; the chain must verify. */
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096ull
#define NPAGES 256

struct counts {
	int missing, wp, other;
};

static int send_fd(int sock, int fd)
{
	char c = 'U';
	struct iovec iov = {&c, 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof(u));
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			    .msg_controllen = sizeof(u.b)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = {&c, 1};
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			    .msg_controllen = sizeof(u.b)};
	if (recvmsg(sock, &mh, 0) != 1)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	int fd = -1;
	if (cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* The handler: serve the uffd until the owner says stop, then report. */
static int handler_main(int sock)
{
	int uffd = recv_fd(sock);
	if (uffd < 0)
		return 2;
	struct counts n = {0, 0, 0};
	static char page[PG];
	memset(page, 0xb5, sizeof(page));
	for (;;) {
		struct pollfd p[2] = {{uffd, POLLIN, 0}, {sock, POLLIN, 0}};
		if (poll(p, 2, 5000) <= 0)
			return 3;
		if (p[0].revents & POLLIN) {
			struct uffd_msg m;
			if (read(uffd, &m, sizeof(m)) != sizeof(m))
				continue;
			if (m.event != UFFD_EVENT_PAGEFAULT)
				n.other++;
			else if (shim_serve_fault(uffd, &m, page, &n.missing, &n.wp) < 0 &&
				 errno != EEXIST)
				n.other++;
			continue;
		}
		if (p[1].revents) {
			char c;
			if (read(sock, &c, 1) != 1 || c != 'S')
				return 4;
			return write(sock, &n, sizeof(n)) == sizeof(n) ? 0 : 5;
		}
	}
}

static struct shim_tracker tr;

/* Pages of [base, base+NPAGES) the dirty log lists for epoch e. */
static int logged(const char *path, int e, uint64_t base, uint8_t *set)
{
	memset(set, 0, NPAGES);
	FILE *f = fopen(path, "r");
	unsigned ep;
	unsigned long long addr, k;
	int n = 0;
	while (f && fscanf(f, "%u %llx %llu", &ep, &addr, &k) == 3)
		for (unsigned long long i = 0; (int)ep == e && i < k; i++) {
			uint64_t a = addr + i * PG;
			if (a >= base && a < base + NPAGES * PG && !set[(a - base) / PG]++)
				n++;
		}
	if (f)
		fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--handler"))
		return handler_main(atoi(argv[2]));
	shim_reexec_if_needed(argv);
	int uffd = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0 || uffd_api(uffd, 0, NULL) < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	char *base = map_anon(NPAGES);
	if (!base)
		skip_all("mmap: %s", strerror(errno));
	for (int i = 0; i < NPAGES; i += 2) /* set A: the even pages */
		base[i * PG] = 1;
	struct uffdio_register reg = {.range = {(uint64_t)(uintptr_t)base, NPAGES * PG},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		skip_all("UFFDIO_REGISTER: %s", strerror(errno));
	plan(6);

	char tmp[] = "/tmp/uffdshim-sent-XXXXXX";
	if (!mkdtemp(tmp))
		skip_all("mkdtemp: %s", strerror(errno));
	char dir[600], logp[600], pid[16], range[64], line[512];
	snprintf(dir, sizeof(dir), "%s/chain", tmp);
	snprintf(logp, sizeof(logp), "%s/dirty.log", tmp);
	snprintf(pid, sizeof(pid), "%d", getpid());
	snprintf(range, sizeof(range), "0x%llx-0x%llx", (unsigned long long)(uintptr_t)base,
		 (unsigned long long)((uintptr_t)base + NPAGES * PG));
	char *args[] = {"track", pid, "-D", dir, "--range", range, "--step", "--verify",
			"--dirty-log", logp, NULL};
	if (shim_tracker_start(&tr, args) < 0 ||
	    !shim_tracker_expect(&tr, "epoch 0", line, sizeof(line)))
		skip_all("uffd-record track did not start");
	ok(strstr(line, " 1 sync"), "before the handoff the app's MISSING range is tracked sync "
	   "(WP added through its uffd): %s", line);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		skip_all("socketpair: %s", strerror(errno));
	fflush(NULL);
	pid_t h = fork();
	if (h == 0) {
		int fd = dup(sv[1]); /* without CLOEXEC */
		char fdarg[16], self[PATH_MAX];
		snprintf(fdarg, sizeof(fdarg), "%d", fd);
		ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
		self[l > 0 ? l : 0] = 0;
		char *hargs[] = {self, "--handler", fdarg, NULL};
		execv(self, hargs);
		_exit(127);
	}
	close(sv[1]);
	ok(send_fd(sv[0], uffd) == 0, "the uffd goes to handler pid %d; the app keeps its copy", h);

	/* Rewrite A (present, protected by tracking before the handoff), then
	 * write B (missing: the handler fills them first). */
	for (int i = 0; i < NPAGES; i += 2)
		base[i * PG] = 2;
	for (int i = 1; i < NPAGES; i += 2)
		base[i * PG] = 3;
	fprintf(tr.in, "\n");
	fflush(tr.in);
	bool cut = shim_tracker_expect(&tr, "epoch 1", line, sizeof(line));
	static uint8_t set[NPAGES];
	int n = logged(logp, 1, (uint64_t)(uintptr_t)base, set);
	ok(cut && n == NPAGES, "epoch 1 holds every page of A and B (%d of %d)", n, NPAGES);

	char s = 'S';
	struct counts c = {-1, -1, -1};
	bool got = write(sv[0], &s, 1) == 1 && read(sv[0], &c, sizeof(c)) == sizeof(c);
	int st = 0;
	waitpid(h, &st, 0);
	ok(got && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the handler reports and exits 0 "
	   "(status 0x%x)", st);
	ok(c.missing == NPAGES / 2 && c.wp == 0 && c.other == 0,
	   "the handler saw exactly B's MISSING faults (%d of %d), no WP fault of the tracker's "
	   "(%d), nothing else (%d)", c.missing, NPAGES / 2, c.wp, c.other);

	fclose(tr.in); /* the last epoch: frozen, then --verify */
	bool verified = shim_tracker_expect(&tr, "verify: the chain matches", line, sizeof(line));
	while (fgets(line, sizeof(line), tr.out))
		note("tracker: %s", line);
	waitpid(tr.pid, &st, 0);
	ok(verified && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	   "the tracker verifies its chain against the frozen process");
	close(uffd);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		diag("could not remove %s", tmp);
	return done_testing();
}
