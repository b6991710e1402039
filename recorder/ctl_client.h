/* ctl_client.h - the tools' side of the uffdshim control socket
 * (include/uffdshim_ctl.h): connect to "\0uffdshim.<pid>", send a request,
 * read its one reply, all within a deadline.  Nothing in a reply is trusted:
 * a bad header, a wrong op, a short payload are errors with a sentence, never
 * a crash.  Plain C (no GLib). */
#ifndef UFFDSHIM_RECORDER_CTL_CLIENT_H
#define UFFDSHIM_RECORDER_CTL_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uffdshim_ctl.h"
#include "um_model.h"

#define UCTL_DEFAULT_TIMEOUT_MS 5000
/* Replies larger than this are refused as garbage (a state blob of a process
 * with terabytes of write-protected memory would still fit). */
#define UCTL_MAX_REPLY (1u << 30)

enum uctl_result {
	UCTL_R_OK = 0,
	UCTL_R_NOSERVER,  /* nothing listens on the address (ECONNREFUSED) */
	UCTL_R_DENIED,    /* the shim answered -EPERM (other uid), or connect EPERM/EACCES */
	UCTL_R_TIMEOUT,   /* no (complete) reply before the deadline */
	UCTL_R_IO,        /* socket error, or the shim closed without a full reply */
	UCTL_R_PROTO,     /* garbage reply: bad magic, version, op or length */
	UCTL_R_STATUS,    /* a well-formed reply with status < 0 (not EPERM) */
	UCTL_R_BLOB,      /* the reply payload is not a valid state blob */
};

struct uctl_conn {
	int fd;
	pid_t pid;        /* the pid in the socket name */
	int timeout_ms;   /* per call: connect, and each request + reply */
};

/* Fills addr (sun_path[0] = 0, then "uffdshim.<pid>") and returns the address
 * length to pass to bind/connect (no trailing NUL is part of the name). */
struct sockaddr_un;
socklen_t uctl_addr(pid_t pid, struct sockaddr_un *addr);

/* Returns UCTL_R_OK with c->fd open, or an error with err filled in. */
int uctl_connect(struct uctl_conn *c, pid_t pid, int timeout_ms, char *err, size_t errlen);
/* One request/reply.  On UCTL_R_OK and UCTL_R_STATUS, *status is the
 * reply's status and *reply (malloc'd, may be NULL when *replylen is 0) its
 * payload; the caller frees it.  UCTL_R_DENIED when status is -EPERM. */
int uctl_call(struct uctl_conn *c, uint32_t op, const void *req, uint32_t reqlen,
	      int32_t *status, void **reply, uint32_t *replylen, char *err, size_t errlen);
void uctl_close(struct uctl_conn *c);

/* A call whose reply payload is a state blob (STATE, QUIESCE, UFFD_BY_INO),
 * parsed into st (initialised here; um_state_free it on UCTL_R_OK). */
int uctl_call_state(struct uctl_conn *c, uint32_t op, const void *req, uint32_t reqlen,
		    struct um_state *st, int32_t *status, char *err, size_t errlen);

const char *uctl_op_name(uint32_t op);

#endif
