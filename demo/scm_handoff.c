/* scm_handoff - a Firecracker-style page-fault handler in another process.
 *
 * The parent maps 1 MiB of anonymous memory, creates a uffd, does UFFDIO_API
 * and registers the region MODE_MISSING.  It then forks a child that execs
 * this program again (/proc/self/exe --handler FD, a new program image) and
 * sends it the uffd over a unix socketpair with SCM_RIGHTS, together with a
 * description of the region.  The handler serves every fault with UFFDIO_COPY
 * of a known pattern, writing into the parent's memory through the uffd.
 * Once the handler has acknowledged the uffd the parent closes its own copy
 * (so a dead handler cannot leave it hanging: the uffd is released instead),
 * touches 3/4 of the pages in a scrambled order and checks their contents,
 * then tells the handler to stop, gets its fault count back, and checks that
 * count and the handler's exit status.
 *
 * Restart after a checkpoint (uffd-replay, see demo_common.h) is supported
 * for a checkpoint of the parent taken while it still holds its uffd (before
 * or during the handoff): the restored parent adopts the uffd and the region
 * (no page may be present yet: the parent touches nothing before it has let
 * its uffd go), starts a new handler, hands it the restored uffd and carries
 * on; everything above is checked.  Not supported: a checkpoint of the parent
 * after it closed its uffd (the image holds no uffd, so a relaunch is simply
 * a new run, and the handler it had is gone), and a checkpoint of the handler
 * (its uffd serves the parent's memory: uffd-replay refuses the image).
 * A handler left behind by a killed parent sees the socket close and exits.
 * Hold points: ready, mid (before the handoff), handed-off (the handler
 * has the uffd, the parent still holds it too), restored. */
#include "demo_common.h"

#include <sys/socket.h>

#define REGION (1UL << 20)
#define SEED 0x5c4d0ffULL
#define MAGIC 0x75666664u /* "uffd" */

struct hello { uint32_t magic; int32_t parent; uint64_t base, len, page, seed; };
struct reply { uint32_t magic; int32_t pid; uint64_t faults; };

static void send_all(int sock, const void *p, size_t n, int fd_to_pass)
{
	struct iovec iov = { (void *)p, n };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd_to_pass >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd_to_pass, sizeof(int));
	}
	ssize_t r;
	while ((r = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (r != (ssize_t)n)
		demo_fail("sendmsg: %s", r < 0 ? strerror(errno) : "short write");
}

/* Receive one message of exactly n bytes; *fd gets a passed fd (or -1).
 * Returns 0 on end of file. */
static int recv_one(int sock, void *p, size_t n, int *fd)
{
	struct iovec iov = { p, n };
	union { char buf[CMSG_SPACE(sizeof(int) * 4)]; struct cmsghdr align; } u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	ssize_t r;
	while ((r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	if (r < 0)
		demo_fail_errno("recvmsg");
	if (fd)
		*fd = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int got;
			memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (fd && *fd < 0 && i == 0)
				*fd = got;
			else
				close(got);
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		demo_fail("recvmsg: message or control data truncated (flags 0x%x)", mh.msg_flags);
	if (r != 0 && r != (ssize_t)n)
		demo_fail("recvmsg: %zd bytes, expected %zu", r, n);
	return r != 0;
}

/* ---- the handler process (this program exec'd with --handler FD) -------- */

static int handler_main(const char *fdarg)
{
	demo.name = "scm_handoff[handler]";
	demo.page = (size_t)sysconf(_SC_PAGESIZE);
	int sock = atoi(fdarg), uffd;
	struct hello h;
	if (!recv_one(sock, &h, sizeof(h), &uffd))
		demo_fail("parent closed the socket before sending the uffd");
	if (uffd < 0 || h.magic != MAGIC || h.page != demo.page)
		demo_fail("bad hello (fd %d, magic 0x%x, page %llu)", uffd, h.magic,
			  (unsigned long long)h.page);
	struct reply rep = { MAGIC, (int32_t)getpid(), 0 };
	send_all(sock, &rep, sizeof(rep), -1); /* ack: the uffd arrived */

	void *buf = demo_page_buf();
	struct uffd_msg msgs[16];
	struct pollfd pfd[2] = { { uffd, POLLIN, 0 }, { sock, POLLIN, 0 } };
	for (;;) {
		demo_poll(pfd, 2, -1);
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			demo_fail("poll(uffd) revents 0x%x", pfd[0].revents);
		int n;
		while ((n = demo_uffd_read(uffd, msgs, 16)) > 0) {
			for (int i = 0; i < n; i++) {
				uint64_t a = msgs[i].arg.pagefault.address & ~(h.page - 1);
				/* Exiting releases the uffd, so the parent cannot hang. */
				if (msgs[i].event != UFFD_EVENT_PAGEFAULT || a < h.base ||
				    a >= h.base + h.len)
					demo_fail("unexpected message: event 0x%x address 0x%llx",
						  msgs[i].event, (unsigned long long)a);
				demo_fill_page(buf, h.seed, (a - h.base) / h.page);
				int r = demo_uffd_copy(uffd, a, buf, h.page);
				if (r < 0)
					demo_fail("UFFDIO_COPY into pid %d at 0x%llx: %s", h.parent,
						  (unsigned long long)a, strerror(-r));
				rep.faults++;
			}
		}
		if (pfd[1].revents & (POLLIN | POLLHUP)) {
			uint32_t stop;
			if (!recv_one(sock, &stop, sizeof(stop), NULL))
				demo_fail("parent went away without saying stop");
			if (stop != MAGIC)
				demo_fail("bad stop message 0x%x", stop);
			break;
		}
	}
	send_all(sock, &rep, sizeof(rep), -1);
	close(uffd);
	close(sock);
	free(buf);
	return DEMO_OK;
}

/* ---- the parent --------------------------------------------------------- */

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--handler") == 0)
		return handler_main(argv[2]);
	demo_init("scm_handoff", "ready mid handed-off restored", argc, argv);
	size_t npages = REGION / demo.page;
	char *base = NULL;
	int uffd;
	struct demo_restore R;
	int restored = demo_restored(&R);
	if (restored) {
		demo_restored_features(&R, 0);
		uffd = R.fd;
		/* The parent never unregisters: its uffd always has the region. */
		base = demo_restored_range(&R, REGION, UFFDIO_REGISTER_MODE_MISSING);
		if (!base || R.nranges != 1)
			demo_fail("restored: uffd fd %d does not hold one 1 MiB MISSING range: "
				  "not a scm_handoff checkpoint", R.fd);
		uint64_t *pm = demo_pagemap(base, npages);
		for (size_t pg = 0; pg < npages; pg++)
			if (DEMO_PM_PRESENT(pm[pg]))
				demo_fail("restored: page %zu is present, but the parent touches "
					  "nothing while it holds its uffd", pg);
		free(pm);
	} else {
		base = demo_mmap_anon(REGION);
		uffd = demo_uffd_syscall(O_CLOEXEC | O_NONBLOCK);
		demo_uffd_api(uffd, 0);
		demo_uffd_register(uffd, base, REGION, UFFDIO_REGISTER_MODE_MISSING,
				   1ULL << _UFFDIO_COPY);
	}
	if (restored) {
		demo_note("resuming before the handoff: region %p, handing the restored uffd to a "
			  "new handler", (void *)base);
	} else {
		demo_ready();
		demo_hold("ready");
	}
	demo_hold("mid");

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		demo_fail_errno("socketpair");
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		demo_fail_errno("fork");
	if (pid == 0) {
		/* The handler inherits only the socket (dup drops CLOEXEC). */
		int fd = dup(sv[1]);
		char fdarg[16];
		snprintf(fdarg, sizeof(fdarg), "%d", fd);
		char *args[] = { argv[0], "--handler", fdarg, NULL };
		if (fd >= 0)
			execv("/proc/self/exe", args);
		fprintf(stderr, "scm_handoff: exec /proc/self/exe: %s\n", strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	struct hello h = { MAGIC, (int32_t)getpid(), (uintptr_t)base, REGION, demo.page, SEED };
	send_all(sv[0], &h, sizeof(h), uffd);
	struct reply rep;
	int st = 0;
	if (!recv_one(sv[0], &rep, sizeof(rep), NULL)) {
		waitpid(pid, &st, 0);
		demo_fail("the handler went away before acknowledging the uffd (wait status 0x%x)", st);
	}
	if (rep.magic != MAGIC || rep.pid != pid)
		demo_fail("bad ack from the handler (pid %d, expected %d)", rep.pid, (int)pid);
	demo_hold("handed-off");
	close(uffd); /* the handler's copy keeps the registration alive */

	size_t *order = demo_shuffled(npages, SEED);
	size_t touched = 0;
	for (size_t i = 0; i < npages; i++) {
		size_t pg = order[i];
		if (pg % 4 == 1)
			continue;
		long bad = demo_check_page(base + pg * demo.page, SEED, pg);
		if (bad >= 0)
			demo_fail("page %zu: byte %ld is not what the handler should have copied", pg, bad);
		touched++;
		demo_pause();
	}

	uint32_t stop = MAGIC;
	send_all(sv[0], &stop, sizeof(stop), -1);
	int got = recv_one(sv[0], &rep, sizeof(rep), NULL);
	close(sv[0]);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			demo_fail_errno("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		demo_fail("handler pid %d ended with wait status 0x%x", (int)pid, st);
	if (!got)
		demo_fail("the handler exited without reporting its counts");
	if (rep.faults != touched)
		demo_fail("handler served %llu faults for %zu pages touched",
			  (unsigned long long)rep.faults, touched);
	munmap(base, REGION);
	free(order);
	demo_ok("%suffd passed by SCM_RIGHTS to exec'd handler pid %d, which served %llu faults for %zu pages touched; contents right; handler exited 0",
		restored ? "restored before the handoff: " : "", (int)pid,
		(unsigned long long)rep.faults, touched);
}
