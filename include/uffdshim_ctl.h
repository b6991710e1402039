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
	/* Dirty tracking (one monitor at a time; docs/design.md "Dirty
	 * tracking").  The connecting process becomes the monitor: when it
	 * exits, the shim stops tracking and releases every page it held. */
	UCTL_TRACK_START = 6, /* req: struct uctl_track_req (+ ranges); reply:
			       * struct uctl_track_rep + ranges (epoch 0) */
	UCTL_TRACK_CUT = 7,   /* end an epoch: reply: rep + ranges + dirty runs
			       * (pages changed since the previous cut or start;
			       * every tracked page is protected again) */
	UCTL_TRACK_STOP = 8,  /* release everything; reply: no payload */
	UCTL_TRACK_INFO = 9,  /* reply: rep + ranges (no cut); -ENOENT when
			       * nothing is tracked */
	UCTL_TRACK_READ_DONE = 14, /* the monitor has read the pages of the last
			       * cut: the app's calls that take pages away
			       * (UCTL_TRACK_HOLD_ZAPS) go on; reply: no payload */
	/* An external monitor (docs/design.md "External monitors"): OPEN makes
	 * a uffd in this process for the connection, which from then on is
	 * served by a thread of its own and speaks only MON_*; the uffd goes
	 * when the connection closes (the monitor exits or dies). */
	UCTL_MON_OPEN = 11,   /* req: struct uctl_mon_open; reply: struct uctl_mon_info */
	UCTL_MON_IOCTL = 12,  /* req: struct uctl_mon_ioctl + the UFFDIO_* argument
			       * (+ for UFFDIO_COPY the len bytes of data, src
			       * ignored); reply status 0/-errno, payload: the
			       * argument as the kernel left it */
	UCTL_MON_READ = 13,   /* req: struct uctl_mon_read; reply: uffd_msg[] (may
			       * be none after the timeout) */
	UCTL_NEST_INFO = 10,  /* reply: struct uctl_nest_info, then nspans ×
			       * {start, end, kernel modes} (uint64_t each),
			       * then nbells doorbell page addresses (uint64_t),
			       * then nforced uffd ids (uint64_t) whose file is
			       * O_NONBLOCK in the kernel while the app's view
			       * is blocking, then nghosts fds of carriers the
			       * app closed, kept (docs/design.md "Nesting") */
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

/* Nesting (several clients on one page): the spans whose kernel
 * registration serves more than one uffd, and the shim's doorbell pages
 * (one page each, registered MISSING on a client's uffd). */
struct uctl_nest_info {
	uint32_t nspans;
	uint32_t nbells;
	uint32_t nforced;     /* uffd ids whose file the shim made non-blocking */
	uint32_t nghosts;     /* fds (uint64_t, after the forced ids) of closed
			       * carriers' uffds the shim keeps for the other
			       * clients (docs/design.md "Nesting") */
};

struct uctl_mon_open {
	uint64_t features;    /* UFFDIO_API features for the monitor's uffd */
};
struct uctl_mon_info {
	uint32_t uffd_id;     /* its id in the model */
	int32_t fd;           /* its fd in the process (the app cannot use it) */
	uint64_t features;    /* UFFDIO_API's answer */
	uint64_t ioctls;
};
struct uctl_mon_ioctl {
	uint64_t request;     /* UFFDIO_REGISTER, _COPY, _WRITEPROTECT, ... */
	uint32_t arg_len;     /* bytes of the argument that follow (its _IOC_SIZE) */
	uint32_t data_len;    /* UFFDIO_COPY: bytes of data after the argument */
};
#define UCTL_MON_MAX_DATA (1u << 20)
struct uctl_mon_read {
	uint32_t max_msgs;    /* at most this many (≤ 64) */
	int32_t timeout_ms;   /* wait this long for the first (0: don't wait) */
};

/* UCTL_TRACK_START request: flags, then nsel selected [start, end) pairs
 * (none: every private writable mapping). */
#define UCTL_TRACK_MAX_SEL 64
#define UCTL_TRACK_AUGMENT 1u /* memory an app registered MISSING-only: add WP
			       * to its registration (sync) instead of saving
			       * every present page each epoch (all) */
#define UCTL_TRACK_HOLD_ZAPS 2u /* from each cut until UCTL_TRACK_READ_DONE
			       * (5 s at most), the app's munmap, mremap,
			       * mmap(MAP_FIXED), madvise(DONTNEED, FREE, REMOVE)
			       * and UFFDIO_MOVE on tracked memory wait: a page
			       * the monitor found present stays present until
			       * it has read it, so the read never faults a page
			       * in (docs/design.md "Reading an epoch") */
struct uctl_track_req {
	uint32_t flags;       /* UCTL_TRACK_AUGMENT | UCTL_TRACK_HOLD_ZAPS */
	uint32_t nsel;
	/* uint64_t sel[nsel][2] follows */
};

struct uctl_track_rep {
	uint32_t epoch;       /* 0 after START, then 1, 2, ... per CUT */
	uint32_t nranges;     /* struct uctl_track_range that follow */
	uint64_t nruns;       /* then struct uctl_track_run */
	int32_t monitor_pid;
	int32_t async_fd;     /* the shim's WP_ASYNC uffd in the target, -1 */
	uint64_t wp_ns;       /* time spent protecting / scanning in the shim */
};

enum uctl_track_mode {
	UCTL_TM_ASYNC = 1,    /* the shim's own uffd, UFFD_FEATURE_WP_ASYNC */
	UCTL_TM_SYNC = 2,     /* WP added to the app's own registration: its WP
			       * faults are taken and resolved by the shim */
	UCTL_TM_ALL = 3,      /* could not be protected: every present page is
			       * reported at every cut */
};
enum uctl_track_kind {
	UCTL_TK_ANON = 1, UCTL_TK_HEAP = 2, UCTL_TK_STACK = 3, UCTL_TK_FILE = 4,
	UCTL_TK_OTHER = 5,
};
#define UCTL_TR_NEW 1u        /* new since the previous cut: save it whole */
#define UCTL_TR_AUGMENTED 2u  /* SYNC on an app registration without WP mode:
			       * the shim added WP to it (the app's view is
			       * unchanged; see docs/design.md) */

struct uctl_track_range {
	uint64_t start, end;
	uint32_t prot;        /* PROT_* */
	uint32_t kind;        /* enum uctl_track_kind */
	uint32_t mode;        /* enum uctl_track_mode */
	uint32_t flags;       /* UCTL_TR_* */
	uint32_t carrier_id;  /* SYNC: model id of the app uffd carrying WP */
	uint32_t reserved;
	char name[64];
};

struct uctl_track_run {
	uint64_t start;       /* page aligned */
	uint64_t npages;
};

#endif
