/* ctl_client.c - control socket client (see ctl_client.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl_client.h"

const char *uctl_op_name(uint32_t op)
{
	switch (op) {
	case UCTL_PING: return "PING";
	case UCTL_STATE: return "STATE";
	case UCTL_UFFD_BY_INO: return "UFFD_BY_INO";
	case UCTL_QUIESCE: return "QUIESCE";
	case UCTL_RESUME: return "RESUME";
	case UCTL_TRACK_START: return "TRACK_START";
	case UCTL_TRACK_CUT: return "TRACK_CUT";
	case UCTL_TRACK_STOP: return "TRACK_STOP";
	case UCTL_TRACK_INFO: return "TRACK_INFO";
	case UCTL_TRACK_READ_DONE: return "TRACK_READ_DONE";
	case UCTL_NEST_INFO: return "NEST_INFO";
	case UCTL_MON_OPEN: return "MON_OPEN";
	case UCTL_MON_IOCTL: return "MON_IOCTL";
	case UCTL_MON_READ: return "MON_READ";
	default: return "?";
	}
}

socklen_t uctl_addr(pid_t pid, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s%d", UCTL_ADDR_PREFIX,
			 (int)pid);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int uctl_connect(struct uctl_conn *c, pid_t pid, int timeout_ms, char *err, size_t errlen)
{
	struct sockaddr_un a;
	socklen_t alen = uctl_addr(pid, &a);
	c->fd = -1;
	c->pid = pid;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : UCTL_DEFAULT_TIMEOUT_MS;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return UCTL_R_IO;
	}
	/* A unix stream connect blocks only while the listener's backlog is
	 * full; SO_SNDTIMEO bounds that wait. */
	struct timeval tv = {.tv_sec = c->timeout_ms / 1000,
			     .tv_usec = (c->timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int rc;
	do
		rc = connect(fd, (struct sockaddr *)&a, alen);
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int e = errno;
		close(fd);
		if (e == ECONNREFUSED || e == ENOENT) {
			snprintf(err, errlen, "nothing listens on the control socket "
				 "\"\\0%s%d\"", UCTL_ADDR_PREFIX, (int)pid);
			return UCTL_R_NOSERVER;
		}
		if (e == EPERM || e == EACCES) {
			snprintf(err, errlen, "connecting to the control socket: %s", strerror(e));
			return UCTL_R_DENIED;
		}
		if (e == EAGAIN || e == EINPROGRESS || e == ETIMEDOUT) {
			snprintf(err, errlen, "the control socket did not accept the connection "
				 "within %d.%03d s", c->timeout_ms / 1000, c->timeout_ms % 1000);
			return UCTL_R_TIMEOUT;
		}
		snprintf(err, errlen, "connecting to the control socket: %s", strerror(e));
		return UCTL_R_IO;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->fd = fd;
	return UCTL_R_OK;
}

void uctl_close(struct uctl_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Wait for fd to be ready for events before the deadline: 1 ready, 0 timed
 * out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int rc = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -1;
		if (rc > 0)
			return 1;
	}
}

/* Send all: 0, or -errno (-ETIMEDOUT on the deadline). */
static int send_all(int fd, const void *buf, size_t len, int64_t deadline)
{
	const char *p = buf;
	while (len) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			p += w;
			len -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_fd(fd, POLLOUT, deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return -errno;
	}
	return 0;
}

/* Receive up to len bytes into buf, *got counting what arrived: 0 when all
 * len bytes came, 1 on end of file first, -errno on error (-ETIMEDOUT on the
 * deadline). */
static int recv_all(int fd, void *buf, size_t len, int64_t deadline, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t r = recv(fd, (char *)buf + *got, len - *got, MSG_DONTWAIT);
		if (r > 0) {
			*got += (size_t)r;
			continue;
		}
		if (r == 0)
			return 1;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_fd(fd, POLLIN, deadline);
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return -errno;
	}
	return 0;
}

int uctl_call(struct uctl_conn *c, uint32_t op, const void *req, uint32_t reqlen,
	      int32_t *status, void **reply, uint32_t *replylen, char *err, size_t errlen)
{
	*reply = NULL;
	*replylen = 0;
	*status = 0;
	if (c->fd < 0) {
		snprintf(err, errlen, "not connected");
		return UCTL_R_IO;
	}
	int64_t deadline = now_ms() + c->timeout_ms;
	struct uctl_hdr h = {.magic = UCTL_REQ_MAGIC, .version = UCTL_VERSION, .op = op,
			     .len = reqlen};
	int se = send_all(c->fd, &h, sizeof(h), deadline);
	if (!se && reqlen)
		se = send_all(c->fd, req, reqlen, deadline);
	if (se == -ETIMEDOUT) {
		snprintf(err, errlen, "the shim did not take the %s request within %d.%03d s",
			 uctl_op_name(op), c->timeout_ms / 1000, c->timeout_ms % 1000);
		return UCTL_R_TIMEOUT;
	}
	/* On EPIPE/ECONNRESET the shim may still have answered (a refusal is sent
	 * before it closes): read what is there. */
	struct uctl_hdr rh;
	size_t hgot;
	int r = recv_all(c->fd, &rh, sizeof(rh), deadline, &hgot);
	if (r == -ETIMEDOUT) {
		snprintf(err, errlen, "no reply to %s within %d.%03d s", uctl_op_name(op),
			 c->timeout_ms / 1000, c->timeout_ms % 1000);
		return UCTL_R_TIMEOUT;
	}
	if (r != 0) {
		if (r == 1 && hgot == 0)
			snprintf(err, errlen, "the shim closed the connection without answering %s",
				 uctl_op_name(op));
		else if (r == 1)
			snprintf(err, errlen, "the reply to %s ends after %zu bytes, inside its "
				 "%zu-byte header", uctl_op_name(op), hgot, sizeof(rh));
		else if (se)
			snprintf(err, errlen, "sending the %s request failed: %s", uctl_op_name(op),
				 strerror(-se));
		else
			snprintf(err, errlen, "reading the reply to %s: %s", uctl_op_name(op),
				 strerror(-r));
		return UCTL_R_IO;
	}
	if (rh.magic != UCTL_REP_MAGIC) {
		snprintf(err, errlen, "garbage reply to %s: magic %#x, expected %#x "
			 "(is this a uffdshim control socket?)", uctl_op_name(op), rh.magic,
			 UCTL_REP_MAGIC);
		return UCTL_R_PROTO;
	}
	if (rh.version != UCTL_VERSION) {
		snprintf(err, errlen, "the shim speaks control protocol version %u, this "
			 "uffd-record speaks %u", rh.version, UCTL_VERSION);
		return UCTL_R_PROTO;
	}
	*status = rh.status;
	if (rh.status == -EPERM) {
		snprintf(err, errlen, "the shim refused the request (EPERM: it only answers "
			 "processes of its own uid)");
		return UCTL_R_DENIED;
	}
	if (rh.op != op && rh.status >= 0) {
		snprintf(err, errlen, "garbage reply: it answers op %u, the request was %s (%u)",
			 rh.op, uctl_op_name(op), op);
		return UCTL_R_PROTO;
	}
	if (rh.len > UCTL_MAX_REPLY) {
		snprintf(err, errlen, "garbage reply to %s: payload length %u is over the "
			 "%u-byte limit", uctl_op_name(op), rh.len, UCTL_MAX_REPLY);
		return UCTL_R_PROTO;
	}
	/* Grow the buffer as bytes arrive: a lying length costs no memory. */
	size_t cap = rh.len < (1u << 20) ? rh.len : (1u << 20), got = 0;
	char *buf = rh.len ? malloc(cap) : NULL;
	if (rh.len && !buf) {
		snprintf(err, errlen, "out of memory");
		return UCTL_R_IO;
	}
	while (got < rh.len) {
		if (got == cap) {
			size_t ncap = cap * 2 < rh.len ? cap * 2 : rh.len;
			char *nb = realloc(buf, ncap);
			if (!nb) {
				free(buf);
				snprintf(err, errlen, "out of memory for a %u-byte reply", rh.len);
				return UCTL_R_IO;
			}
			buf = nb;
			cap = ncap;
		}
		size_t want = cap - got, n;
		deadline = now_ms() + c->timeout_ms; /* an idle timeout for big payloads */
		r = recv_all(c->fd, buf + got, want, deadline, &n);
		got += n;
		if (r == -ETIMEDOUT) {
			free(buf);
			snprintf(err, errlen, "the reply to %s stalled after %zu of %u payload bytes "
				 "(no data for %d.%03d s)", uctl_op_name(op), got, rh.len,
				 c->timeout_ms / 1000, c->timeout_ms % 1000);
			return UCTL_R_TIMEOUT;
		}
		if (r < 0) {
			free(buf);
			snprintf(err, errlen, "reading the reply to %s: %s", uctl_op_name(op),
				 strerror(-r));
			return UCTL_R_IO;
		}
		if (r == 1) {
			free(buf);
			snprintf(err, errlen, "the reply to %s is truncated: its header announces "
				 "%u payload bytes, the connection closed after %zu", uctl_op_name(op),
				 rh.len, got);
			return UCTL_R_IO;
		}
	}
	*reply = buf;
	*replylen = rh.len;
	if (rh.status < 0) {
		snprintf(err, errlen, "the shim answered %s with an error: %s", uctl_op_name(op),
			 strerror(-rh.status));
		return UCTL_R_STATUS;
	}
	return UCTL_R_OK;
}

int uctl_call_state(struct uctl_conn *c, uint32_t op, const void *req, uint32_t reqlen,
		    struct um_state *st, int32_t *status, char *err, size_t errlen)
{
	void *buf;
	uint32_t len;
	um_state_init(st, 0);
	int rc = uctl_call(c, op, req, reqlen, status, &buf, &len, err, errlen);
	if (rc != UCTL_R_OK) {
		free(buf);
		return rc;
	}
	char e2[256];
	if (um_deserialize(st, buf, len, e2, sizeof(e2)) < 0) {
		snprintf(err, errlen, "the %s reply (%u bytes) is not a valid state blob: %s",
			 uctl_op_name(op), len, e2);
		free(buf);
		return UCTL_R_BLOB;
	}
	free(buf);
	return UCTL_R_OK;
}
