/* shim_monitor.c - external monitors: a same-uid process (a restore pager, a
 * tracker, a debugger) attaches through the control socket and becomes one
 * more client of this process's memory.  The shim makes a uffd for it here
 * (origin "monitor", invisible to the app), and the monitor's requests run
 * through the same code as the app's own uffd calls: they are recorded in
 * the model, they nest with the app's registrations (shim_nest.c), and the
 * monitor is asked first ("below the app").  Each monitor connection has a
 * thread of its own; when the connection closes - the monitor exited or
 * died - its uffd is closed like an app's, which releases everything it
 * held and hands its registrations on. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"
#include "uffdshim_ctl.h"

struct mon {
	int conn;
	int ufd;
	pid_t peer;
	uint8_t *buf;           /* a request: header payload up to the max */
	size_t cap;
};

static bool allowed(uint64_t req, uint32_t arg_len)
{
	switch (req) {
	case UFFDIO_REGISTER: case UFFDIO_UNREGISTER: case UFFDIO_WAKE: case UFFDIO_COPY:
	case UFFDIO_ZEROPAGE: case UFFDIO_WRITEPROTECT: case UFFDIO_CONTINUE:
	case UFFDIO_POISON: case UFFDIO_MOVE:
		return arg_len == _IOC_SIZE(req);
	default:
		return false;
	}
}

static bool do_ioctl(struct mon *m, uint32_t len)
{
	struct uctl_mon_ioctl q;
	if (len < sizeof(q))
		return shim_ctl_reply(m->conn, UCTL_MON_IOCTL, -EINVAL, NULL, 0);
	memcpy(&q, m->buf, sizeof(q));
	if (!allowed(q.request, q.arg_len) || len != sizeof(q) + q.arg_len + q.data_len ||
	    (q.data_len && q.request != UFFDIO_COPY) || q.data_len > UCTL_MON_MAX_DATA)
		return shim_ctl_reply(m->conn, UCTL_MON_IOCTL, -EINVAL, NULL, 0);
	uint8_t arg[64];
	memcpy(arg, m->buf + sizeof(q), q.arg_len);
	if (q.request == UFFDIO_COPY) {
		struct uffdio_copy c;
		memcpy(&c, arg, sizeof(c));
		if (c.len != q.data_len)
			return shim_ctl_reply(m->conn, UCTL_MON_IOCTL, -EINVAL, NULL, 0);
		c.src = (uint64_t)(m->buf + sizeof(q) + q.arg_len);
		memcpy(arg, &c, sizeof(c));
	}
	long r = shim_uffd_ioctl(m->ufd, (unsigned long)q.request, arg);
	int32_t st = r < 0 ? -errno : 0;
	return shim_ctl_reply(m->conn, UCTL_MON_IOCTL, st, arg, q.arg_len);
}

static bool do_read(struct mon *m, uint32_t len)
{
	struct uctl_mon_read q;
	if (len != sizeof(q))
		return shim_ctl_reply(m->conn, UCTL_MON_READ, -EINVAL, NULL, 0);
	memcpy(&q, m->buf, sizeof(q));
	if (!q.max_msgs || q.max_msgs > 64)
		return shim_ctl_reply(m->conn, UCTL_MON_READ, -EINVAL, NULL, 0);
	struct uffd_msg msgs[64];
	ssize_t n = 0;
	int waited = 0;
	for (;;) {
		n = shim_read_uffd_internal(m->ufd, msgs, q.max_msgs * sizeof(msgs[0]));
		if (n > 0 || (n < 0 && errno != EAGAIN) || waited >= q.timeout_ms)
			break;
		/* Wait for the uffd, or for the monitor to go away. */
		struct pollfd p[2] = {{.fd = m->ufd, .events = POLLIN},
				      {.fd = m->conn, .events = POLLRDHUP}};
		int slice = q.timeout_ms - waited < 100 ? q.timeout_ms - waited : 100;
		long pr = RAW3(SYS_poll, p, 2, slice);
		if (pr > 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			return false;
		waited += slice;
	}
	if (n < 0)
		n = 0;
	return shim_ctl_reply(m->conn, UCTL_MON_READ, 0, msgs, (uint32_t)n);
}

static void *mon_main(void *arg)
{
	struct mon m = *(struct mon *)arg;
	um_free(arg, sizeof(m));
	struct timeval tv = {0, 0}; /* a monitor may be idle for long */
	RAW5(SYS_setsockopt, m.conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		struct uctl_hdr h;
		if (!shim_ctl_io_all(m.conn, &h, sizeof(h), false))
			break;
		if (h.magic != UCTL_REQ_MAGIC || h.version != UCTL_VERSION || h.len > m.cap) {
			shim_ctl_reply(m.conn, h.op, -EPROTO, NULL, 0);
			break;
		}
		if (h.len && !shim_ctl_io_all(m.conn, m.buf, h.len, false))
			break;
		bool ok;
		if (h.op == UCTL_MON_IOCTL)
			ok = do_ioctl(&m, h.len);
		else if (h.op == UCTL_MON_READ)
			ok = do_read(&m, h.len);
		else
			ok = shim_ctl_reply(m.conn, h.op, -EINVAL, NULL, 0) && false;
		if (!ok)
			break;
	}
	/* Gone: the monitor's uffd goes like an app's last close. */
	shim_close_uffd_internal(m.ufd);
	shim_fd_set(m.conn, FD_NONE);
	RAW1(SYS_close, m.conn);
	um_free(m.buf, m.cap);
	shim_log("monitor: connection closed; its uffd is gone");
	return NULL;
}

static int open_uffd(uint64_t features, struct uctl_mon_info *info)
{
	int fd = (int)RAW1(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	uint32_t flags = O_CLOEXEC | O_NONBLOCK;
	if (fd == -EPERM) {
		fd = (int)RAW1(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
		flags |= UFFD_USER_MODE_ONLY;
	}
	if (fd < 0)
		return fd;
	fd = shim_fd_hide(fd, NULL);
	if (fd < 0)
		return fd;
	struct um_uffd *u = shim_track_new(fd, UM_ORIGIN_MONITOR, flags, G.pid);
	shim_fd_set(fd, FD_INTERNAL); /* the app must not see it */
	if (!u) {
		shim_close_uffd_internal(fd);
		return -ENOMEM;
	}
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (shim_uffd_ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;
		shim_close_uffd_internal(fd);
		return -e;
	}
	info->fd = fd;
	info->features = api.features;
	info->ioctls = api.ioctls;
	shim_lock();
	struct um_uffd *uu = um_uffd_by_fd(&G.model, fd);
	info->uffd_id = uu ? uu->id : 0;
	shim_unlock();
	return fd;
}

bool shim_monitor_serve(int conn, pid_t peer, const void *req, uint32_t len)
{
	struct uctl_mon_open o;
	if (len != sizeof(o)) {
		shim_ctl_reply(conn, UCTL_MON_OPEN, -EINVAL, NULL, 0);
		return false;
	}
	memcpy(&o, req, sizeof(o));
	struct uctl_mon_info info;
	memset(&info, 0, sizeof(info));
	int ufd = open_uffd(o.features, &info);
	if (ufd < 0) {
		shim_ctl_reply(conn, UCTL_MON_OPEN, ufd, NULL, 0);
		return false;
	}
	struct mon *m = um_zalloc(sizeof(*m));
	size_t cap = sizeof(struct uctl_mon_ioctl) + 64 + UCTL_MON_MAX_DATA;
	uint8_t *buf = um_zalloc(cap);
	if (!m || !buf) {
		um_free(m, sizeof(*m));
		um_free(buf, cap);
		shim_close_uffd_internal(ufd);
		shim_ctl_reply(conn, UCTL_MON_OPEN, -ENOMEM, NULL, 0);
		return false;
	}
	*m = (struct mon){.conn = conn, .ufd = ufd, .peer = peer, .buf = buf, .cap = cap};
	if (!shim_ctl_reply(conn, UCTL_MON_OPEN, 0, &info, sizeof(info))) {
		um_free(m, sizeof(*m));
		um_free(buf, cap);
		shim_close_uffd_internal(ufd);
		return false;
	}
	int rc = shim_thread_start(mon_main, m, 256 * 1024);
	if (rc != 0) {
		um_free(m, sizeof(*m));
		um_free(buf, cap);
		shim_close_uffd_internal(ufd);
		return false;
	}
	return true;
}
