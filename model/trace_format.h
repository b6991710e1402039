/* trace_format.h - the on-disk layout of a uffdshim trace (uffd-record run --trace).
 *
 * A trace file is a header followed by fixed-size records, all little-endian,
 * in the order they were written.  While a program runs, each process writes
 * its own segment file "<trace>.<pid>" through a shared mapping (no syscall per
 * record); when the run ends, uffd-record merges the segments into <trace>
 * (records sorted by t_ns).  Unused trailing slots are all zero (t_ns == 0)
 * and readers skip them.  See docs/image-format.md ("Trace files"). */
#ifndef UFFDSHIM_TRACE_FORMAT_H
#define UFFDSHIM_TRACE_FORMAT_H

#include <stdint.h>

#define UT_MAGIC "UFFDTRC\0"
#define UT_VERSION 1

struct ut_header {
	char magic[8];         /* UT_MAGIC */
	uint32_t version;      /* UT_VERSION */
	uint32_t header_size;  /* sizeof(struct ut_header): records start here */
	uint32_t record_size;  /* sizeof(struct ut_record) */
	uint32_t page_size;
	uint64_t start_ns;     /* CLOCK_MONOTONIC when the segment/run started */
	int32_t pid;           /* writer pid (0 in a merged file) */
	uint32_t dropped;      /* records lost: the segment was full or could
				* not grow (a merged file sums its segments) */
	char comm[16];         /* program name of the writer */
};

/* Record kinds. */
enum ut_kind {
	UT_CREATE = 1,     /* a=flags, b=how (1 syscall, 2 /dev/userfaultfd), c=mm pid */
	UT_API,            /* a=features requested, d=features granted, c=ioctls */
	UT_REGISTER,       /* a=start, b=len, c=mode, d=ioctls returned */
	UT_UNREGISTER,     /* a=start, b=len */
	UT_WAKE,           /* a=start, b=len */
	UT_COPY,           /* a=dst, b=len, c=mode, d=bytes copied (out field), e=src */
	UT_ZEROPAGE,       /* a=start, b=len, c=mode, d=bytes zeroed */
	UT_WRITEPROTECT,   /* a=start, b=len, c=mode */
	UT_CONTINUE,       /* a=start, b=len, c=mode, d=bytes mapped */
	UT_POISON,         /* a=start, b=len, c=mode, d=bytes updated */
	UT_MOVE,           /* a=dst, b=len, c=mode, d=bytes moved; e=src */
	UT_CLOSE,          /* fd closed (the uffd may live on in other fds) */
	UT_DUP,            /* a=new fd, b=1 if FD_CLOEXEC */
	UT_MSG_PAGEFAULT,  /* a=address, c=pagefault flags, b=ptid; t_ns = when read() returned it */
	UT_MSG_FORK,       /* a=new uffd fd in the reader */
	UT_MSG_REMAP,      /* a=from, b=to, c=len */
	UT_MSG_REMOVE,     /* a=start, b=end */
	UT_MSG_UNMAP,      /* a=start, b=end */
	UT_PROC_FORK,      /* a=child pid */
	UT_PROC_EXEC,      /* the process exec'd (record written before exec) */
	UT_SEND,           /* uffd sent over SCM_RIGHTS; a=peer pid if known */
	UT_RECV,           /* uffd received; a=peer pid (whose memory it serves),
			    * b=1 if the sender's shim gave its model */
	UT_PROC_COMM,      /* the process's name (at start and after exec):
			    * 16 bytes of comm in a and b, NUL padded */
	UT_KIND_MAX
};

struct ut_record {
	uint64_t t_ns;     /* CLOCK_MONOTONIC; 0 marks an unused slot */
	uint32_t pid;
	uint32_t tid;
	uint16_t kind;     /* enum ut_kind */
	uint16_t flags;    /* reserved, 0 */
	int32_t fd;
	int64_t result;    /* return value, or -errno */
	uint64_t ino;      /* inode of the uffd: its identity across fds and processes */
	uint64_t a, b, c, d, e;
};

#endif
