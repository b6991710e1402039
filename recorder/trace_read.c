/* trace_read.c - open and validate uffdshim trace files; see trace_read.h. */
#include "trace_read.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format is "all little-endian" and the structures are written and read
 * in place, so this code is only right on a little-endian host, and only if
 * the compiler lays the structures out without padding. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "trace files are little-endian and read in place");
_Static_assert(sizeof(struct ut_header) == 56, "struct ut_header layout");
_Static_assert(sizeof(struct ut_record) == 80, "struct ut_record layout");

/* Upper bound for header_size: anything larger is garbage, not a future
 * header extension. */
#define TRACE_MAX_HEADER_SIZE 65536u

static const char *const kind_names[UT_KIND_MAX] = {
	[UT_CREATE] = "create",
	[UT_API] = "api",
	[UT_REGISTER] = "register",
	[UT_UNREGISTER] = "unregister",
	[UT_WAKE] = "wake",
	[UT_COPY] = "copy",
	[UT_ZEROPAGE] = "zeropage",
	[UT_WRITEPROTECT] = "writeprotect",
	[UT_CONTINUE] = "continue",
	[UT_POISON] = "poison",
	[UT_MOVE] = "move",
	[UT_CLOSE] = "close",
	[UT_DUP] = "dup",
	[UT_MSG_PAGEFAULT] = "msg_pagefault",
	[UT_MSG_FORK] = "msg_fork",
	[UT_MSG_REMAP] = "msg_remap",
	[UT_MSG_REMOVE] = "msg_remove",
	[UT_MSG_UNMAP] = "msg_unmap",
	[UT_PROC_FORK] = "proc_fork",
	[UT_PROC_EXEC] = "proc_exec",
	[UT_SEND] = "send",
	[UT_RECV] = "recv",
	[UT_PROC_COMM] = "proc_comm",
};
_Static_assert(UT_PROC_COMM + 1 == UT_KIND_MAX, "kind_names must name every enum ut_kind");

const char *trace_kind_name(unsigned kind)
{
	if (kind >= UT_KIND_MAX)
		return NULL;
	return kind_names[kind];
}

const char *trace_status_str(enum trace_status st)
{
	switch (st) {
	case TRACE_OK: return "ok";
	case TRACE_ERR_IO: return "cannot read";
	case TRACE_ERR_NOT_REGULAR: return "not a regular file";
	case TRACE_ERR_EMPTY: return "empty file";
	case TRACE_ERR_BLANK: return "no header (all bytes are zero)";
	case TRACE_ERR_SHORT: return "truncated (shorter than its header)";
	case TRACE_ERR_MAGIC: return "bad magic (not a uffdshim trace)";
	case TRACE_ERR_VERSION: return "unknown version";
	case TRACE_ERR_HEADER_SIZE: return "bad header size";
	case TRACE_ERR_RECORD_SIZE: return "bad record size";
	case TRACE_ERR_PAGE_SIZE: return "bad page size";
	case TRACE_ERR_TRUNCATED: return "truncated (ends inside a record)";
	}
	return "unknown error";
}

void trace_header_init(struct ut_header *h, uint32_t page_size, uint64_t start_ns,
		       int32_t pid, const char *comm)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, UT_MAGIC, sizeof(h->magic));
	h->version = UT_VERSION;
	h->header_size = sizeof(struct ut_header);
	h->record_size = sizeof(struct ut_record);
	h->page_size = page_size;
	h->start_ns = start_ns;
	h->pid = pid;
	if (comm)
		strncpy(h->comm, comm, sizeof(h->comm) - 1);
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int all_zero(const unsigned char *p, size_t n)
{
	/* Word-at-a-time would be faster; segments are at most a few hundred MB
	 * and this only runs on files that already failed the magic check. */
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static int valid_page_size(uint32_t ps)
{
	return ps >= 512 && ps <= (1u << 30) && (ps & (ps - 1)) == 0;
}

enum trace_status trace_open(struct trace_file *tf, const char *path, unsigned flags,
			     char *err, size_t errlen)
{
	enum trace_status st;
	struct stat sb;
	const struct ut_header *h;
	size_t size, body;
	int fd;

	memset(tf, 0, sizeof(*tf));

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return TRACE_ERR_IO;
	}
	if (fstat(fd, &sb) < 0) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return TRACE_ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		seterr(err, errlen, "%s: not a regular file", path);
		close(fd);
		return TRACE_ERR_NOT_REGULAR;
	}
	if (sb.st_size == 0) {
		seterr(err, errlen, "%s: empty file (no trace header)", path);
		close(fd);
		return TRACE_ERR_EMPTY;
	}
	if ((uintmax_t)sb.st_size > SIZE_MAX) {
		seterr(err, errlen, "%s: file too large", path);
		close(fd);
		return TRACE_ERR_IO;
	}
	size = (size_t)sb.st_size;
	tf->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (tf->map == MAP_FAILED) {
		seterr(err, errlen, "%s: mmap: %s", path, strerror(errno));
		tf->map = NULL;
		close(fd);
		return TRACE_ERR_IO;
	}
	/* The mapping outlives the fd: a merge of many segments must not
	 * run out of descriptors. */
	close(fd);
	tf->map_len = size;
	h = (const struct ut_header *)tf->map;

	/* Magic first, even in a short file: garbage is "not a trace" rather
	 * than "truncated". */
	if (memcmp(tf->map, UT_MAGIC, size < sizeof(h->magic) ? size : sizeof(h->magic)) != 0) {
		if (all_zero(tf->map, size)) {
			seterr(err, errlen, "%s: no trace header (all %zu bytes are zero)", path, size);
			st = TRACE_ERR_BLANK;
		} else {
			seterr(err, errlen, "%s: bad magic: not a uffdshim trace file", path);
			st = TRACE_ERR_MAGIC;
		}
		goto fail;
	}
	if (size < sizeof(struct ut_header)) {
		seterr(err, errlen, "%s: truncated: %zu bytes, shorter than the %zu-byte header",
		       path, size, sizeof(struct ut_header));
		st = TRACE_ERR_SHORT;
		goto fail;
	}
	memcpy(&tf->hdr, h, sizeof(tf->hdr));
	memcpy(tf->comm, tf->hdr.comm, sizeof(tf->hdr.comm));
	tf->comm[sizeof(tf->hdr.comm)] = '\0';

	if (tf->hdr.version != UT_VERSION) {
		seterr(err, errlen, "%s: unknown trace version %u (this tool reads version %u)",
		       path, tf->hdr.version, UT_VERSION);
		st = TRACE_ERR_VERSION;
		goto fail;
	}
	/* Records are read in place: header_size must keep them 8-aligned. */
	if (tf->hdr.header_size < sizeof(struct ut_header) ||
	    tf->hdr.header_size > TRACE_MAX_HEADER_SIZE || tf->hdr.header_size % 8) {
		seterr(err, errlen, "%s: bad header size %u (expected %zu)", path,
		       tf->hdr.header_size, sizeof(struct ut_header));
		st = TRACE_ERR_HEADER_SIZE;
		goto fail;
	}
	if (tf->hdr.record_size != sizeof(struct ut_record)) {
		seterr(err, errlen, "%s: bad record size %u (expected %zu)", path,
		       tf->hdr.record_size, sizeof(struct ut_record));
		st = TRACE_ERR_RECORD_SIZE;
		goto fail;
	}
	if (!valid_page_size(tf->hdr.page_size)) {
		seterr(err, errlen, "%s: bad page size %u", path, tf->hdr.page_size);
		st = TRACE_ERR_PAGE_SIZE;
		goto fail;
	}
	if (size < tf->hdr.header_size) {
		seterr(err, errlen, "%s: truncated: %zu bytes, shorter than its %u-byte header",
		       path, size, tf->hdr.header_size);
		st = TRACE_ERR_SHORT;
		goto fail;
	}
	body = size - tf->hdr.header_size;
	tf->nslots = body / sizeof(struct ut_record);
	tf->partial_bytes = body % sizeof(struct ut_record);
	if (tf->partial_bytes && !(flags & TRACE_OPEN_DROP_PARTIAL)) {
		seterr(err, errlen, "%s: truncated: %zu stray bytes after record %zu "
		       "(the last record is incomplete)", path, tf->partial_bytes, tf->nslots);
		st = TRACE_ERR_TRUNCATED;
		goto fail;
	}
	tf->rec = (const struct ut_record *)(tf->map + tf->hdr.header_size);
	tf->path = strdup(path);
	if (!tf->path) {
		seterr(err, errlen, "%s: out of memory", path);
		st = TRACE_ERR_IO;
		goto fail;
	}
	return TRACE_OK;

fail:
	munmap((void *)tf->map, tf->map_len);
	memset(tf, 0, sizeof(*tf));
	return st;
}

void trace_close(struct trace_file *tf)
{
	if (tf->map)
		munmap((void *)tf->map, tf->map_len);
	free(tf->path);
	memset(tf, 0, sizeof(*tf));
}

size_t trace_count_used(const struct trace_file *tf)
{
	size_t n = 0;

	for (size_t i = 0; i < tf->nslots; i++)
		n += trace_slot_used(&tf->rec[i]);
	return n;
}
