/* ctl_bad_input_test - the control socket refuses garbage, truncated and
 * oversized requests and peers of another uid, and the app under the shim
 * keeps running with its uffd state intact. */
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "shim_test.h"
#include "uffdshim_ctl.h"

static socklen_t addr_of(pid_t pid, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s%d", UCTL_ADDR_PREFIX, pid);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static pid_t target; /* the shimmed test process */

static int connect_self(void)
{
	struct sockaddr_un a;
	socklen_t l = addr_of(target, &a);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {3, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, l) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send raw bytes; return the reply status (or 1 if the shim closed without a
 * reply, 2 if nothing came before the timeout). */
static int send_raw(const void *buf, size_t len, bool half_close)
{
	int fd = connect_self();
	if (fd < 0)
		return -1000;
	/* The shim may answer and close before the request is written (a peer of
	 * another uid is refused at once): no SIGPIPE, and read the reply anyway. */
	if (len && send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len && errno != EPIPE &&
	    errno != ECONNRESET) {
		close(fd);
		return -1001;
	}
	if (half_close)
		shutdown(fd, SHUT_WR);
	struct uctl_hdr h;
	ssize_t r = read(fd, &h, sizeof(h));
	close(fd);
	if (r == 0)
		return 1;
	if (r < 0)
		return 2;
	if (r != sizeof(h) || h.magic != UCTL_REP_MAGIC)
		return -1002;
	return h.status;
}

static int ping_status(void)
{
	struct uctl_hdr h = {.magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION, .op = UCTL_PING};
	return send_raw(&h, sizeof(h), false);
}

int main(int argc, char **argv)
{
	shim_reexec_if_needed(argv);
	target = getpid();
	int uffd = uffd_create(O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		skip_all("cannot create a userfaultfd: %s", uffd_skip_reason(errno));
	struct uffdio_api api;
	if (uffd_api(uffd, 0, &api) < 0)
		skip_all("UFFDIO_API failed: %s", strerror(errno));
	size_t npages = 16;
	char *mem = map_anon(npages);
	struct uffdio_register reg = {.range = {(uint64_t)mem, npages * th_page_size()},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	ok(ioctl(uffd, UFFDIO_REGISTER, &reg) == 0, "register a range");

	is_int(ping_status(), 0, "a well-formed PING is answered");

	struct uctl_hdr h = {.magic = 0xdeadbeef, .version = UCTL_VERSION, .op = UCTL_STATE};
	is_int(send_raw(&h, sizeof(h), false), -EPROTO, "bad magic: -EPROTO");
	h.magic = UCTL_REQ_MAGIC;
	h.version = 99;
	is_int(send_raw(&h, sizeof(h), false), -EPROTO, "unknown version: -EPROTO");
	h.version = UCTL_VERSION;
	h.op = 12345;
	is_int(send_raw(&h, sizeof(h), false), -EINVAL, "unknown op: -EINVAL");
	h.op = UCTL_STATE;
	h.len = 0xffffffffu;
	is_int(send_raw(&h, sizeof(h), false), -EPROTO, "absurd payload length: -EPROTO");
	h.len = 1000;
	is_int(send_raw(&h, sizeof(h), false), -EINVAL, "oversized request: -EINVAL");
	h.op = UCTL_UFFD_BY_INO;
	h.len = 3;
	char req[sizeof(h) + 3];
	memcpy(req, &h, sizeof(h));
	memset(req + sizeof(h), 0x41, 3);
	is_int(send_raw(req, sizeof(req), false), -EINVAL, "UFFD_BY_INO with a 3-byte inode: -EINVAL");
	is_int(send_raw(&h, 7, true), 1, "truncated header then EOF: connection closed, no reply");
	is_int(send_raw(NULL, 0, true), 1, "connect and close: nothing happens");
	char junk[4096];
	struct th_rng rng = th_rng_seed(0x5eed);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)th_rng_next(&rng);
	int r = send_raw(junk, sizeof(junk), true);
	ok(r == -EPROTO || r == 1, "4 KiB of random bytes: refused (%d)", r);

	/* Another uid: the shim must refuse with -EPERM. */
	pid_t c = fork();
	if (c == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(77);
		int got = ping_status();
		/* 0: refused as it must be; else encode what came back */
		_exit(got == -EPERM ? 0 : got < 0 ? 100 + (-got) % 100 : 50 + got % 50);
	}
	int st;
	waitpid(c, &st, 0);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		skip(1, "cannot switch to uid 65534 to test a foreign peer");
	else
		ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a peer with another uid gets -EPERM "
		   "(child status %d, signal %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);

	/* Dirty tracking requests out of turn or with unknown flags. */
	struct uctl_hdr rd = {.magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION,
			      .op = UCTL_TRACK_READ_DONE};
	is_int(send_raw(&rd, sizeof(rd), false), -ENOENT,
	       "TRACK_READ_DONE while nothing is tracked: -ENOENT");
	struct {
		struct uctl_hdr h;
		struct uctl_track_req r;
	} ts = {{.magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION, .op = UCTL_TRACK_START,
		 .len = sizeof(struct uctl_track_req)},
		{.flags = 0x80}};
	is_int(send_raw(&ts, sizeof(ts), false), -EINVAL, "TRACK_START with an unknown flag: -EINVAL");

	/* The app is unharmed: its state is intact and its uffd still works. */
	is_int(ping_status(), 0, "the control socket still answers after all that");
	is_int(shim_verify_self("after garbage"), 0, "model and kernel still agree");
	struct uffdio_zeropage z = {.range = {(uint64_t)mem, th_page_size()}};
	ok(ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0 && mem[0] == 0, "the uffd still serves its range");
	return done_testing();
}
