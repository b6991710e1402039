/* trace_merge.c - merge the per-process segments "<trace>.<pid>" of a run
 * into one trace sorted by t_ns (see commands.h and model/trace_format.h).
 *
 * Segments are mapped read-only.  Within a segment, records are not assumed
 * to be in time order (threads reserve slots and read the clock in either
 * order), so each segment gets an index of its used slots sorted stably by
 * t_ns; the segments are then merged with a binary heap keyed by
 * (t_ns, segment rank), where segments are ranked by (start_ns, pid).  Equal
 * timestamps therefore keep their order within a segment, and across
 * segments the earlier-started process comes first: the merge is stable and
 * deterministic.  Memory: one size_t per record, plus the output buffer.
 *
 * Segments that are empty or were never initialised (all zero) are removed
 * with a warning.  Segments with an invalid header are left in place, with a
 * message; the merge still writes the valid ones but returns -1. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "commands.h"
#include "trace_read.h"

struct segment {
	char *path;
	unsigned long pid;      /* from the file name */
	struct trace_file tf;
	size_t *order;          /* used slots, sorted by (t_ns, slot) */
	size_t nused;
	size_t pos;             /* next entry of order[] to merge */
	int valid;              /* tf is open */
	int remove;             /* unlink once the merged trace is in place */
};

static int cmp_slot(const void *pa, const void *pb, void *arg)
{
	const struct ut_record *rec = arg;
	size_t a = *(const size_t *)pa, b = *(const size_t *)pb;

	if (rec[a].t_ns != rec[b].t_ns)
		return rec[a].t_ns < rec[b].t_ns ? -1 : 1;
	return a < b ? -1 : a > b;
}

static int cmp_segment(const void *pa, const void *pb)
{
	const struct segment *a = pa, *b = pb;

	/* invalid segments last; among valid ones (start_ns, pid) */
	if (a->valid != b->valid)
		return a->valid ? -1 : 1;
	if (a->valid && a->tf.hdr.start_ns != b->tf.hdr.start_ns)
		return a->tf.hdr.start_ns < b->tf.hdr.start_ns ? -1 : 1;
	return a->pid < b->pid ? -1 : a->pid > b->pid;
}

/* "<base>.<digits>" with base == BASE: the pid, or 0. */
static unsigned long segment_pid(const char *name, const char *base, size_t baselen)
{
	const char *p;
	unsigned long pid = 0;

	if (strncmp(name, base, baselen) != 0 || name[baselen] != '.')
		return 0;
	p = name + baselen + 1;
	if (!*p || strlen(p) > 10)
		return 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		pid = pid * 10 + (unsigned long)(*p - '0');
	}
	return pid;
}

static int build_order(struct segment *s)
{
	const struct ut_record *rec = s->tf.rec;
	size_t n = 0, sorted = 1;

	s->order = malloc((s->tf.nslots ? s->tf.nslots : 1) * sizeof(size_t));
	if (!s->order)
		return -1;
	for (size_t i = 0; i < s->tf.nslots; i++) {
		if (!trace_slot_used(&rec[i]))
			continue;
		if (n && rec[s->order[n - 1]].t_ns > rec[i].t_ns)
			sorted = 0;
		s->order[n++] = i;
	}
	if (!sorted)
		qsort_r(s->order, n, sizeof(size_t), cmp_slot, (void *)rec);
	s->nused = n;
	return 0;
}

/* --- the heap of segment indices, keyed by (next t_ns, rank) ------------ */

static inline uint64_t seg_next_t(const struct segment *s)
{
	return s->tf.rec[s->order[s->pos]].t_ns;
}

static inline int heap_less(const struct segment *segs, size_t a, size_t b)
{
	uint64_t ta = seg_next_t(&segs[a]), tb = seg_next_t(&segs[b]);

	return ta != tb ? ta < tb : a < b; /* segs[] is sorted by rank */
}

static void heap_down(size_t *heap, size_t n, size_t i, const struct segment *segs)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i, tmp;

		if (l < n && heap_less(segs, heap[l], heap[m]))
			m = l;
		if (r < n && heap_less(segs, heap[r], heap[m]))
			m = r;
		if (m == i)
			return;
		tmp = heap[i];
		heap[i] = heap[m];
		heap[m] = tmp;
		i = m;
	}
}

/* Write the merged records of SEGS[0..nvalid) to F; returns the count
 * written, or -1 on a write error. */
static long long write_merged(FILE *f, struct segment *segs, size_t nvalid)
{
	size_t *heap = g_new(size_t, nvalid ? nvalid : 1);
	size_t n = 0;
	long long written = 0;

	for (size_t i = 0; i < nvalid; i++)
		if (segs[i].nused)
			heap[n++] = i;
	for (size_t i = n / 2; i-- > 0;)
		heap_down(heap, n, i, segs);
	while (n) {
		struct segment *s = &segs[heap[0]];

		if (fwrite(&s->tf.rec[s->order[s->pos]], sizeof(struct ut_record), 1, f) != 1) {
			written = -1;
			break;
		}
		written++;
		if (++s->pos == s->nused)
			heap[0] = heap[--n];
		heap_down(heap, n, 0, segs);
	}
	g_free(heap);
	return written;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd); /* best effort: the rename is already visible */
		close(fd);
	}
}

int trace_merge_segments(const char *trace_path)
{
	char *dir = NULL, *base = NULL, *tmp = NULL;
	GArray *segs = g_array_new(FALSE, TRUE, sizeof(struct segment));
	DIR *d = NULL;
	struct dirent *de;
	size_t baselen, nvalid = 0, ninvalid = 0;
	uint32_t page_size = 0;
	uint64_t start_ns = 0;
	uint32_t dropped = 0;
	struct ut_header hdr;
	FILE *f = NULL;
	int fd = -1, ret = -1;
	long long written;
	char err[512];

	if (!trace_path || !*trace_path || trace_path[strlen(trace_path) - 1] == '/') {
		fprintf(stderr, "uffd-record: merge: bad trace path '%s'\n",
			trace_path ? trace_path : "(null)");
		goto out;
	}
	dir = g_path_get_dirname(trace_path);
	base = g_path_get_basename(trace_path);
	baselen = strlen(base);

	d = opendir(dir);
	if (!d) {
		fprintf(stderr, "uffd-record: merge: %s: %s\n", dir, strerror(errno));
		goto out;
	}
	while ((errno = 0, de = readdir(d))) {
		unsigned long pid = segment_pid(de->d_name, base, baselen);
		struct segment s = { 0 };

		if (!pid)
			continue;
		s.pid = pid;
		s.path = g_build_filename(dir, de->d_name, NULL);
		g_array_append_val(segs, s);
	}
	if (errno) {
		fprintf(stderr, "uffd-record: merge: reading %s: %s\n", dir, strerror(errno));
		goto out;
	}
	closedir(d);
	d = NULL;

	for (size_t i = 0; i < segs->len; i++) {
		struct segment *s = &g_array_index(segs, struct segment, i);
		enum trace_status st = trace_open(&s->tf, s->path, TRACE_OPEN_DROP_PARTIAL,
						  err, sizeof(err));

		if (st == TRACE_ERR_EMPTY || st == TRACE_ERR_BLANK) {
			/* The process died before writing its header: nothing
			 * to keep; it is unlinked with the others. */
			fprintf(stderr, "uffd-record: merge: warning: %s; removing it\n", err);
			s->remove = 1;
			continue;
		}
		if (st != TRACE_OK) {
			fprintf(stderr, "uffd-record: merge: %s; segment left in place\n", err);
			ninvalid++;
			continue;
		}
		s->valid = 1;
		s->remove = 1;
		if (s->tf.partial_bytes)
			fprintf(stderr, "uffd-record: merge: warning: %s: dropped a truncated "
				"last record (%zu bytes)\n", s->path, s->tf.partial_bytes);
		if (s->tf.hdr.pid > 0 && (unsigned long)s->tf.hdr.pid != s->pid)
			fprintf(stderr, "uffd-record: merge: warning: %s: header says pid %d\n",
				s->path, s->tf.hdr.pid);
		if (build_order(s) < 0) {
			fprintf(stderr, "uffd-record: merge: out of memory\n");
			goto out;
		}
	}
	/* Rank: valid segments first, by (start_ns, pid). */
	g_array_sort(segs, cmp_segment);
	for (size_t i = 0; i < segs->len; i++) {
		struct segment *s = &g_array_index(segs, struct segment, i);

		if (!s->valid)
			continue;
		nvalid++;
		if (!page_size) {
			page_size = s->tf.hdr.page_size;
		} else if (s->tf.hdr.page_size != page_size) {
			fprintf(stderr, "uffd-record: merge: warning: %s: page size %u, "
				"others %u; the merged trace says %u\n", s->path,
				s->tf.hdr.page_size, page_size, page_size);
		}
		if (s->tf.hdr.start_ns && (!start_ns || s->tf.hdr.start_ns < start_ns))
			start_ns = s->tf.hdr.start_ns;
		dropped += s->tf.hdr.dropped;
	}
	if (!page_size) {
		long ps = sysconf(_SC_PAGESIZE);
		page_size = ps > 0 ? (uint32_t)ps : 4096;
	}

	tmp = g_strdup_printf("%s.merge-XXXXXX", trace_path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "uffd-record: merge: creating %s: %s\n", tmp, strerror(errno));
		g_free(tmp);
		tmp = NULL;
		goto out;
	}
	if (fchmod(fd, 0600) < 0) {
		fprintf(stderr, "uffd-record: merge: %s: chmod: %s\n", tmp, strerror(errno));
		goto out;
	}
	f = fdopen(fd, "wb");
	if (!f) {
		fprintf(stderr, "uffd-record: merge: %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	fd = -1; /* owned by f now */
	setvbuf(f, NULL, _IOFBF, 1 << 20);

	trace_header_init(&hdr, page_size, start_ns, 0, "merged");
	hdr.dropped = dropped;
	if (fwrite(&hdr, sizeof(hdr), 1, f) != 1)
		goto write_error;
	written = write_merged(f, (struct segment *)segs->data, nvalid);
	if (written < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
		goto write_error;
	if (fclose(f) != 0) {
		f = NULL;
		goto write_error;
	}
	f = NULL;
	if (rename(tmp, trace_path) < 0) {
		fprintf(stderr, "uffd-record: merge: renaming %s to %s: %s\n", tmp, trace_path,
			strerror(errno));
		goto out;
	}
	g_free(tmp);
	tmp = NULL;
	fsync_dir(dir);

	/* The merged trace is in place: drop the segments it was made from
	 * and the empty ones.  Invalid segments stay for inspection. */
	for (size_t i = 0; i < segs->len; i++) {
		struct segment *s = &g_array_index(segs, struct segment, i);

		if (s->remove && unlink(s->path) < 0 && errno != ENOENT)
			fprintf(stderr, "uffd-record: merge: warning: removing %s: %s\n",
				s->path, strerror(errno));
	}
	ret = ninvalid ? -1 : 0;
	goto out;

write_error:
	fprintf(stderr, "uffd-record: merge: writing %s: %s\n", tmp, strerror(errno));
out:
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		g_free(tmp);
	}
	if (d)
		closedir(d);
	for (size_t i = 0; i < segs->len; i++) {
		struct segment *s = &g_array_index(segs, struct segment, i);

		if (s->valid)
			trace_close(&s->tf);
		free(s->order);
		g_free(s->path);
	}
	g_array_free(segs, TRUE);
	g_free(dir);
	g_free(base);
	return ret;
}
