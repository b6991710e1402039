/* uffdshim_ctl.h - the control socket protocol between a shimmed process and
 * the tools (uffd-record, uffd-replay, the CRIU plugin, monitors).
 *
 * Transport: a SOCK_STREAM unix socket in the abstract namespace, address
 * "\0uffdshim.<pid>" (no file to clean up; dies with the process).  The shim
 * accepts a connection only when SO_PEERCRED says the peer has the same uid;
 * otherwise it answers status -EPERM and closes.  Every message is a header
 * plus payload, little-endian.  A request is answered by exactly one reply;
 * several requests may follow on one connection.  Garbage (bad magic,
 * version, op, or a length over UCTL_MAX_REQ) gets a reply with status
 * -EINVAL or -EPROTO and the connection is closed; the app is not affected. */
#ifndef UFFDSHIM_CTL_H
#define UFFDSHIM_CTL_H

#include <stdint.h>

#define UCTL_REQ_MAGIC 0x4c544355u  /* "UCTL" */
#define UCTL_REP_MAGIC 0x52544355u  /* "UCTR" */
#define UCTL_VERSION 1
#define UCTL_MAX_REQ (1u << 20)
#define UCTL_ADDR_PREFIX "uffdshim."

enum uctl_op {
	UCTL_PING = 1,      /* reply payload: struct uctl_ping */
	UCTL_STATE = 2,     /* reply payload: the state blob (um_serialize) */
	UCTL_UFFD_BY_INO = 3, /* req payload: uint64_t ino; reply: state blob with
			       * just that uffd (used when a uffd is received
			       * over SCM_RIGHTS) */
	UCTL_QUIESCE = 4,   /* hold every uffd operation of the app until
			     * UCTL_RESUME or the connection closes; reply
			     * payload: the state blob, taken while held */
	UCTL_RESUME = 5,
};

struct uctl_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t op;        /* request: enum uctl_op; reply: the op answered */
	int32_t status;     /* reply: 0 or -errno; request: 0 */
	uint32_t len;       /* payload bytes that follow */
	uint32_t reserved;
};

struct uctl_ping {
	int32_t pid;
	uint32_t nuffds;
	char shim_version[32];
	char trace_path[256]; /* "" when not tracing */
};

#endif
