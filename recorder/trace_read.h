/* trace_read.h - open and validate uffdshim trace files (model/trace_format.h).
 *
 * Shared by trace_merge.c (segments "<trace>.<pid>") and cmd_report.c (the
 * merged trace, or a single segment).  A trace is mapped read-only; records
 * are used in place.  Nothing here trusts the file: every size and offset is
 * checked against the real file size before it is used. */
#ifndef UFFDSHIM_RECORDER_TRACE_READ_H
#define UFFDSHIM_RECORDER_TRACE_READ_H

#include <stddef.h>
#include <stdint.h>

#include "trace_format.h"

enum trace_status {
	TRACE_OK = 0,
	TRACE_ERR_IO,           /* open/fstat/mmap failed (message has errno) */
	TRACE_ERR_NOT_REGULAR,  /* not a regular file */
	TRACE_ERR_EMPTY,        /* zero-length file */
	TRACE_ERR_BLANK,        /* every byte is zero: the header was never written */
	TRACE_ERR_SHORT,        /* shorter than its header: truncated */
	TRACE_ERR_MAGIC,        /* not a trace: bad magic */
	TRACE_ERR_VERSION,      /* unknown version */
	TRACE_ERR_HEADER_SIZE,  /* header_size smaller than the v1 header, unaligned or absurd */
	TRACE_ERR_RECORD_SIZE,  /* record_size != sizeof(struct ut_record) */
	TRACE_ERR_PAGE_SIZE,    /* page_size not a power of two in [512, 1 GiB] */
	TRACE_ERR_TRUNCATED,    /* ends inside a record */
};

/* trace_open() flags */
#define TRACE_OPEN_DROP_PARTIAL 0x1u /* a partial last record is ignored (see
                                      * partial_bytes) instead of TRACE_ERR_TRUNCATED */

struct trace_file {
	char *path;                  /* copy of the path given to trace_open() */
	const unsigned char *map;    /* whole file, read-only */
	size_t map_len;
	struct ut_header hdr;        /* copy of the header */
	char comm[sizeof(((struct ut_header *)0)->comm) + 1]; /* hdr.comm, NUL-terminated */
	const struct ut_record *rec; /* nslots record slots (used or not) */
	size_t nslots;
	size_t partial_bytes;        /* bytes of a dropped partial record (DROP_PARTIAL) */
};

/* Open, map and validate PATH.  On TRACE_OK, TF must be released with
 * trace_close().  On any error TF holds nothing to release and ERR (if not
 * NULL) receives a one-line message naming the file and the problem. */
enum trace_status trace_open(struct trace_file *tf, const char *path, unsigned flags,
			     char *err, size_t errlen);
void trace_close(struct trace_file *tf);

/* A slot is used iff its t_ns is non-zero; unused slots may appear anywhere
 * (not only at the end) and readers skip them. */
static inline int trace_slot_used(const struct ut_record *r)
{
	return r->t_ns != 0;
}
size_t trace_count_used(const struct trace_file *tf);

/* "copy", "msg_pagefault", ... for a valid enum ut_kind; NULL otherwise. */
const char *trace_kind_name(unsigned kind);
/* Short English text for a status ("bad magic", "truncated", ...). */
const char *trace_status_str(enum trace_status st);

/* Fill a v1 header (magic, version, sizes) with the given values; COMM is
 * truncated to 15 bytes and NUL-padded. */
void trace_header_init(struct ut_header *h, uint32_t page_size, uint64_t start_ns,
		       int32_t pid, const char *comm);

#endif
