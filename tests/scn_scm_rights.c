/* scn_scm_rights.c - scenario: a uffd handed to a page-fault handler in
 * another process (Firecracker style).  The sender registers its memory
 * (MISSING, and MISSING|WP with pages copied write-protected), forks and
 * execs this program as the handler ("handler" mode), and sends the uffd
 * over a unix socketpair with SCM_RIGHTS.  The handler's model must show the
 * uffd as received, serving the sender's memory (mm pid = the sender), with
 * the sender's API state, registrations and WP pages imported; it serves the
 * sender's faults with UFFDIO_COPY, some with MODE_WP: the sender's model
 * must then show those WP pages too (its uffd's state changed in another
 * process).  The sender closes its own fd while the handler still holds the
 * uffd (the memory stays registered: the handler's model has it), and
 * finally lets the handler go (then nothing is registered).  Both sides
 * verify after every step; the TAP stream passes between them with the
 * test counts. */
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096UL
#define NPAGES 32
#define VERIFY(...) do { char l_[160]; snprintf(l_, sizeof(l_), __VA_ARGS__); \
	is_int(shim_verify_self(l_), 0, "verify: %s", l_); } while (0)

#include "scn_common.h"

/* Messages on the socket. */
struct hello { uint64_t base, len; };
struct counts { int run, failed, faults; };

static char pattern(uint64_t page) /* what the handler puts in page i */
{
	return (char)('a' + page % 26);
}

static bool send_msg(int sock, const void *p, size_t n, int fd)
{
	struct iovec iov = {(void *)p, n};
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } c;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	if (fd >= 0) {
		memset(&c, 0, sizeof(c));
		mh.msg_control = c.buf;
		mh.msg_controllen = sizeof(c.buf);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)n;
}

/* Receives exactly n bytes; *fd gets a passed fd (or -1). */
static bool recv_msg(int sock, void *p, size_t n, int *fd)
{
	struct iovec iov = {p, n};
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } c;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf,
			    .msg_controllen = sizeof(c.buf)};
	ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	if (fd) {
		*fd = -1;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		if (r > 0 && cm && cm->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(cm), sizeof(int));
	}
	return r == (ssize_t)n;
}

/* ---- the handler process ---- */
static int handler(char **argv)
{
	int sock = atoi(argv[2]);
	th_state.run = atoi(argv[3]);
	th_state.failed = atoi(argv[4]);
	pid_t sender = getppid();
	note("handler: pid %d, serving pid %d", (int)getpid(), (int)sender);
	struct hello hi;
	int uffd;
	ok(recv_msg(sock, &hi, sizeof(hi), &uffd) && uffd >= 0, "handler: received the uffd");
	struct juffd u;
	if (js_load("handler") == 0 && ju_fd(uffd, &u)) {
		is_int(js_nuffds(), 1, "handler: its model has 1 uffd");
		is_str(u.origin, "received", "handler: origin received");
		is_int(u.mm_pid, sender, "handler: it serves the sender's memory (mm pid)");
		ok(u.nfds == 1 && u.cloexec[0], "handler: fd %d, CLOEXEC (MSG_CMSG_CLOEXEC)", uffd);
		ok(u.api_done && u.nonblock, "handler: API done, O_NONBLOCK (the shared file)");
		ok(u.nranges == 2 && u.r[0].start == hi.base && u.r[1].end == hi.base + hi.len,
		   "handler: the sender's 2 ranges imported");
		ok(u.r[0].modes == UFFDIO_REGISTER_MODE_MISSING &&
		   u.r[1].modes == (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP),
		   "handler: with their modes");
		is_int(u.wp_pages, 4, "handler: the sender's 4 WP pages imported");
	} else {
		fail("handler: its model lists the received uffd");
	}
	VERIFY("handler: received");
	struct counts c = {th_state.run, th_state.failed, 0};
	send_msg(sock, &c, sizeof(c), -1);

	/* Serve until the sender says stop. */
	static char page[PG];
	for (;;) {
		struct pollfd p[2] = {{.fd = uffd, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
		if (poll(p, 2, 10000) <= 0)
			break;
		if (p[1].revents)
			break;
		struct uffd_msg m;
		if (read(uffd, &m, sizeof(m)) != sizeof(m) || m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t a = m.arg.pagefault.address & ~(PG - 1);
		memset(page, pattern((a - hi.base) / PG), PG);
		/* Pages [24, 28) of the sender go in write-protected. */
		uint64_t i = (a - hi.base) / PG;
		struct uffdio_copy cp = {.dst = a, .src = (uint64_t)page, .len = PG,
					 .mode = i >= 24 && i < 28 ? UFFDIO_COPY_MODE_WP : 0};
		if (ioctl(uffd, UFFDIO_COPY, &cp) == 0)
			c.faults++;
	}
	int stop;
	recv_msg(sock, &stop, sizeof(stop), NULL);
	th_state.run = stop; /* the sender's count: it printed meanwhile */
	th_state.failed = c.failed + (stop >> 16);
	th_state.run &= 0xffff;
	if (js_load("handler end") == 0 && ju_fd(uffd, &u)) {
		is_int(ju_counter(&u, "faults_missing"), c.faults, "handler: %d faults in its model",
		       c.faults);
		is_int(ju_counter(&u, "copy"), c.faults, "handler: %d COPYs in its model", c.faults);
		is_int(u.npending, 0, "handler: nothing pending");
		is_int(u.wp_pages, 8, "handler: 8 WP pages (4 imported, 4 it copied with MODE_WP)");
	}
	VERIFY("handler: done");
	c.run = th_state.run;
	c.failed = th_state.failed;
	send_msg(sock, &c, sizeof(c), -1);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "handler") == 0)
		return handler(argv);
	shim_reexec_if_needed(argv);
	int uffd = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		skip_all("%s", uffd_skip_reason(errno));
	if (uffd_api(uffd, 0, NULL) < 0)
		skip_all("UFFDIO_API: %s", strerror(errno));
	char *mem = map_anon(NPAGES);
	struct uffdio_register r1 = {.range = {(uint64_t)mem, 16 * PG},
				     .mode = UFFDIO_REGISTER_MODE_MISSING};
	struct uffdio_register r2 = {.range = {(uint64_t)mem + 16 * PG, 16 * PG},
				     .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP};
	ok(ioctl(uffd, UFFDIO_REGISTER, &r1) == 0 && ioctl(uffd, UFFDIO_REGISTER, &r2) == 0,
	   "sender: REGISTER [0,16) MISSING, [16,32) MISSING|WP");
	static char src[4 * PG];
	for (int i = 0; i < 4; i++)
		memset(src + i * PG, pattern(16 + i), PG);
	struct uffdio_copy cp = {.dst = (uint64_t)mem + 16 * PG, .src = (uint64_t)src,
				 .len = 4 * PG, .mode = UFFDIO_COPY_MODE_WP};
	is_int(ioctl(uffd, UFFDIO_COPY, &cp), 0, "sender: COPY pages [16, 20) write-protected");
	VERIFY("sender: registered");

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		skip_all("socketpair: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		char fd[16], run[16], failed[16];
		fcntl(sv[1], F_SETFD, 0);
		snprintf(fd, sizeof(fd), "%d", sv[1]);
		snprintf(run, sizeof(run), "%d", th_state.run);
		snprintf(failed, sizeof(failed), "%d", th_state.failed);
		execl("/proc/self/exe", argv[0], "handler", fd, run, failed, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	int sock = sv[0];
	struct hello hi = {(uint64_t)mem, NPAGES * PG};
	bool sent = send_msg(sock, &hi, sizeof(hi), uffd); /* no TAP line while it prints */
	struct counts c;
	bool ready = recv_msg(sock, &c, sizeof(c), NULL);
	if (ready) {
		th_state.run = c.run;
		th_state.failed = c.failed;
	}
	ok(sent && ready, "sender: sent the uffd to handler pid %d, which took it", pid);

	/* Faults served by the handler. */
	bool good = true;
	for (int i = 0; i < 16; i++)
		good &= mem[i * PG + 9] == pattern(i);
	ok(good, "sender: pages [0, 16) hold the handler's pattern");
	if (js_load("sender") == 0) {
		struct juffd u;
		is_int(js_nuffds(), 1, "sender: its model has 1 uffd");
		if (ju_fd(uffd, &u))
			ok(u.nranges == 2 && u.wp_pages == 4 && u.npending == 0,
			   "sender: 2 ranges, 4 WP pages, nothing pending (the handler read the faults)");
	}
	VERIFY("sender: faults served");

	/* The handler fills pages [24, 28) write-protected: the sender's memory
	 * now has 8 WP pages, though the sender made no call. */
	good = true;
	for (int i = 16; i < NPAGES; i++)
		good &= mem[i * PG + 9] == pattern(i);
	ok(good, "sender: pages [16, 32) hold the right data");
	is_int(pm_wp_count(mem, NPAGES), 8, "sender: the kernel has 8 WP pages in its memory");
	if (js_load("sender wp") == 0)
		is_int(shim_json_sum(js, "wp_pages"), 8, "sender: its model has the 8 WP pages");
	VERIFY("sender: the handler write-protected pages");

	/* The sender lets go of its fd: the uffd lives on in the handler, and
	 * so do the registrations of the sender's memory. */
	close(uffd);
	char hp[24];
	snprintf(hp, sizeof(hp), "%d", (int)pid);
	struct juffd hu;
	if (shim_record_run((char *[]){"status", hp, "--json", NULL}, js, sizeof(js)) == 0 &&
	    ju_nth(0, &hu))
		ok(hu.mm_pid == getpid() && hu.nranges == 2 && hu.wp_pages == 8,
		   "sender: the handler's model has the uffd on the sender's memory: 2 ranges, "
		   "8 WP pages");
	else
		fail("sender: status of the handler lists its uffd");
	VERIFY("sender: own fd closed, the handler holds the uffd");

	/* Stop the handler; it reports its fault count and the test counts. */
	int stop = th_state.run | (th_state.failed << 16);
	send_msg(sock, &stop, sizeof(stop), -1);
	int faults = -1;
	if (recv_msg(sock, &c, sizeof(c), NULL)) {
		th_state.run = c.run;
		th_state.failed = c.failed;
		faults = c.faults;
	}
	is_int(faults, 28, "sender: the handler served 28 faults (32 pages, 4 copied before)");
	int st;
	waitpid(pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sender: the handler exited cleanly");
	/* The handler's exit released the uffd: nothing is registered now. */
	if (js_load("handler gone") == 0)
		is_int(shim_json_count(js, "\"modes\":"), 0, "sender: no registered range left");
	VERIFY("sender: handler gone");
	close(sock);
	munmap(mem, NPAGES * PG);
	return done_testing();
}
