/* trace_gen.h - build synthetic uffdshim trace files (model/trace_format.h)
 * for tests: headers, records, and segment files with unused slots or a
 * truncated tail.  Header-only; every function is static inline. */
#ifndef UFFDSHIM_TESTS_TRACE_GEN_H
#define UFFDSHIM_TESTS_TRACE_GEN_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace_format.h"

static inline struct ut_header tg_header(int32_t pid, const char *comm, uint64_t start_ns,
					 uint32_t page_size)
{
	struct ut_header h;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, UT_MAGIC, sizeof(h.magic));
	h.version = UT_VERSION;
	h.header_size = sizeof(struct ut_header);
	h.record_size = sizeof(struct ut_record);
	h.page_size = page_size;
	h.start_ns = start_ns;
	h.pid = pid;
	if (comm)
		strncpy(h.comm, comm, sizeof(h.comm) - 1);
	return h;
}

/* A record; tid = pid, flags = 0. */
static inline struct ut_record tg_rec(uint64_t t_ns, uint32_t pid, uint16_t kind, int32_t fd,
				      int64_t result, uint64_t ino, uint64_t a, uint64_t b,
				      uint64_t c, uint64_t d, uint64_t e)
{
	struct ut_record r;

	memset(&r, 0, sizeof(r));
	r.t_ns = t_ns;
	r.pid = pid;
	r.tid = pid;
	r.kind = kind;
	r.fd = fd;
	r.result = result;
	r.ino = ino;
	r.a = a;
	r.b = b;
	r.c = c;
	r.d = d;
	r.e = e;
	return r;
}

static inline int tg_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write a trace file: header, the N records, ZERO_SLOTS unused (all-zero)
 * slots, then PARTIAL bytes (< record size) of a record whose bytes are all
 * 0x5a, as a crashed writer might leave.  Returns 0 or -1. */
static inline int tg_write_trace(const char *path, const struct ut_header *h,
				 const struct ut_record *recs, size_t n, size_t zero_slots,
				 size_t partial)
{
	struct ut_record zero, junk;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int ret = 0;

	if (fd < 0)
		return -1;
	memset(&zero, 0, sizeof(zero));
	memset(&junk, 0x5a, sizeof(junk));
	if (tg_write_all(fd, h, sizeof(*h)) < 0)
		ret = -1;
	for (size_t i = 0; !ret && i < n; i++)
		ret = tg_write_all(fd, &recs[i], sizeof(recs[i]));
	for (size_t i = 0; !ret && i < zero_slots; i++)
		ret = tg_write_all(fd, &zero, sizeof(zero));
	if (!ret && partial)
		ret = tg_write_all(fd, &junk, partial < sizeof(junk) ? partial : sizeof(junk) - 1);
	if (close(fd) < 0)
		ret = -1;
	return ret;
}

/* Write LEN raw bytes to PATH.  Returns 0 or -1. */
static inline int tg_write_bytes(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int ret;

	if (fd < 0)
		return -1;
	ret = tg_write_all(fd, buf, len);
	if (close(fd) < 0)
		ret = -1;
	return ret;
}

/* Read a whole file into a malloc()ed buffer (NUL-terminated; *LEN = size
 * without the NUL).  Returns NULL on error. */
static inline char *tg_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 4096, n = 0;
	char *buf;

	if (fd < 0)
		return NULL;
	buf = malloc(cap);
	for (;;) {
		ssize_t r;

		if (!buf)
			break;
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap * 2);

			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			buf = NULL;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (buf) {
		buf[n] = '\0';
		if (len)
			*len = n;
	}
	return buf;
}

#endif
