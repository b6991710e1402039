/* cmd_dump.c - uffd-record dump PID -D DIR [--leave-running|--kill]
 * [--with-memory]: write the complete uffd state of a shimmed process.
 *
 * Consistency: the shim is quiesced first (no uffd operation of the app runs
 * until we resume it); with --with-memory the process is also stopped
 * (SIGSTOP) while its registered pages are read, so the contents match the
 * state.  Order on the way out: pages and state written, then SIGKILL
 * (--kill) or SIGCONT + resume (default, --leave-running). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "procfs.h"
#include "commands.h"
#include "ctl_client.h"
#include "image_io.h"
#include "uffd_compat.h"

#define BATCH_PAGES 256

#define OUTBUF (4u << 20)

/* The output buffers are page aligned (mmap), never malloc'd: the kernel's
 * copy of process_vm_readv into a buffer that is not aligned as the pages
 * are (malloc returns 16-byte aligned memory) ran at less than half the
 * speed (1.5 against 3.5 GB/s on an AMD EPYC VM, the dump's main cost). */
static uint8_t *outbuf_alloc(void)
{
	void *p = mmap(NULL, OUTBUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void outbuf_free(uint8_t *p)
{
	if (p)
		munmap(p, OUTBUF);
}

/* Page data is written by a second thread while the next batch is read and
 * hashed: two buffers, handed over one at a time. */
struct writer {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	const uint8_t *job;  /* buffer being written, NULL when idle */
	size_t len;
	bool stop, failed;
	int err;
};

struct pages_out {
	int fd;
	uint8_t *bufs[2];
	int cur;
	uint8_t *buf;     /* bufs[cur]: pending page data, OUTBUF at most */
	size_t buffered;
	struct writer w;
	uint64_t offset;
	GArray *runs; /* struct umi_run */
	uint64_t data_pages, zero_pages;
};



/* Record one page in the runs (merging with the last run).  Its data, when
 * not zero, is already at the end of o->buf. */
static void account_page(struct pages_out *o, uint32_t uffd, uint64_t addr, const void *data,
			 bool zero)
{
	struct umi_run *last = o->runs->len ? &g_array_index(o->runs, struct umi_run,
							     o->runs->len - 1) : NULL;
	uint32_t kind = zero ? UMI_RUN_ZERO : UMI_RUN_DATA;
	if (last && last->kind == kind && last->uffd_id == uffd &&
	    last->addr + last->npages * UM_PAGE_SIZE == addr &&
	    (zero || last->offset + last->npages * UM_PAGE_SIZE == o->offset)) {
		last->npages++;
		if (!zero)
			last->crc = umi_page_hash(last->crc, data, UM_PAGE_SIZE);
	} else {
		struct umi_run r = {.addr = addr, .npages = 1, .kind = kind, .uffd_id = uffd,
				    .offset = zero ? 0 : o->offset,
				    .crc = zero ? 0 : umi_page_hash(0, data, UM_PAGE_SIZE)};
		g_array_append_val(o->runs, r);
	}
	if (zero) {
		o->zero_pages++;
	} else {
		o->offset += UM_PAGE_SIZE;
		o->data_pages++;
	}
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->job && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->job)
			break;
		const uint8_t *job = w->job;
		size_t len = w->len;
		pthread_mutex_unlock(&w->mu);
		int rc = image_write_all(w->fd, job, len);
		int e = errno;
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && !w->failed) {
			w->failed = true;
			w->err = e;
		}
		w->job = NULL;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Wait until the writer is idle; false (errno set) if a write failed. */
static bool writer_idle(struct writer *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->job)
		pthread_cond_wait(&w->cv, &w->mu);
	bool ok = !w->failed;
	int e = w->err;
	pthread_mutex_unlock(&w->mu);
	if (!ok)
		errno = e;
	return ok;
}

/* Hand the current buffer to the writer and continue in the other one. */
static int flush_out(struct pages_out *o)
{
	if (!writer_idle(&o->w))
		return -1;
	if (!o->buffered)
		return 0;
	pthread_mutex_lock(&o->w.mu);
	o->w.job = o->buf;
	o->w.len = o->buffered;
	pthread_cond_broadcast(&o->w.cv);
	pthread_mutex_unlock(&o->w.mu);
	o->cur ^= 1;
	o->buf = o->bufs[o->cur];
	o->buffered = 0;
	return 0;
}

static int writer_start(struct pages_out *o)
{
	memset(&o->w, 0, sizeof(o->w));
	o->w.fd = o->fd;
	pthread_mutex_init(&o->w.mu, NULL);
	pthread_cond_init(&o->w.cv, NULL);
	return pthread_create(&o->w.thread, NULL, writer_main, &o->w) == 0 ? 0 : -1;
}

/* Write what is left and stop the writer; -1 (errno set) on a failed write. */
static int writer_finish(struct pages_out *o)
{
	int rc = flush_out(o);
	if (!writer_idle(&o->w))
		rc = -1;
	int e = errno;
	pthread_mutex_lock(&o->w.mu);
	o->w.stop = true;
	pthread_cond_broadcast(&o->w.cv);
	pthread_mutex_unlock(&o->w.mu);
	pthread_join(o->w.thread, NULL);
	pthread_mutex_destroy(&o->w.mu);
	pthread_cond_destroy(&o->w.cv);
	errno = e;
	return rc;
}

/* Present pages waiting to be read: collected across ranges, read with one
 * process_vm_readv per BATCH_PAGES pages straight into the output buffer. */
static struct {
	struct iovec riov[BATCH_PAGES];
	uint64_t addrs[BATCH_PAGES];
	uint32_t uffds[BATCH_PAGES];
	size_t nr, m;
} batch;

static int batch_flush(pid_t pid, struct pages_out *o, char *err, size_t errlen)
{
	size_t m = batch.m;
	if (!m)
		return 0;
	if (OUTBUF - o->buffered < m * UM_PAGE_SIZE && flush_out(o) < 0) {
		snprintf(err, errlen, "writing %s: %s", UMI_PAGES_FILE, strerror(errno));
		return -1;
	}
	struct iovec l = {o->buf + o->buffered, m * UM_PAGE_SIZE};
	ssize_t got = process_vm_readv(pid, &l, 1, batch.riov, batch.nr, 0);
	if (got != (ssize_t)l.iov_len) {
		snprintf(err, errlen, "reading memory of pid %d near %#llx: %s", pid,
			 (unsigned long long)batch.addrs[0], got < 0 ? strerror(errno) : "short read");
		return -1;
	}
	uint8_t *p = o->buf + o->buffered, *batch_end = p + m * UM_PAGE_SIZE;
	for (size_t k = 0; k < m; k++) {
		bool zero = image_page_is_zero((const uint64_t *)p);
		account_page(o, batch.uffds[k], batch.addrs[k], p, zero);
		if (zero) { /* squeeze it out of the buffer */
			memmove(p, p + UM_PAGE_SIZE, (size_t)(batch_end - p - UM_PAGE_SIZE));
			batch_end -= UM_PAGE_SIZE;
		} else {
			p += UM_PAGE_SIZE;
			o->buffered += UM_PAGE_SIZE;
		}
	}
	batch.m = batch.nr = 0;
	return 0;
}

/* Queue the present pages of [start, end) of pid (one pagemap read per
 * BATCH_PAGES pages). */
static int dump_range(pid_t pid, int pagemap, uint32_t uffd, uint64_t start, uint64_t end,
		      struct pages_out *o, char *err, size_t errlen)
{
	static uint64_t ent[BATCH_PAGES];
	for (uint64_t a = start; a < end;) {
		uint64_t n = (end - a) / UM_PAGE_SIZE;
		if (n > BATCH_PAGES)
			n = BATCH_PAGES;
		ssize_t r = pread(pagemap, ent, n * 8, (off_t)(a / UM_PAGE_SIZE * 8));
		if (r != (ssize_t)(n * 8)) {
			snprintf(err, errlen, "reading /proc/%d/pagemap: %s", pid,
				 r < 0 ? strerror(errno) : "short read");
			return -1;
		}
		for (uint64_t i = 0; i < n; i++) {
			if (!pf_pm_holds_page(ent[i]))
				continue;
			uint64_t pa = a + i * UM_PAGE_SIZE;
			struct iovec *last = batch.nr ? &batch.riov[batch.nr - 1] : NULL;
			if (last && (uint64_t)last->iov_base + last->iov_len == pa)
				last->iov_len += UM_PAGE_SIZE;
			else
				batch.riov[batch.nr++] = (struct iovec){(void *)pa, UM_PAGE_SIZE};
			batch.addrs[batch.m] = pa;
			batch.uffds[batch.m++] = uffd;
			if (batch.m == BATCH_PAGES && batch_flush(pid, o, err, errlen) < 0)
				return -1;
		}
		a += n * UM_PAGE_SIZE;
	}
	return 0;
}

static int cmp_range_start(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	return x[0] < y[0] ? -1 : x[0] > y[0];
}

static int dump_memory(pid_t pid, const struct um_state *st, const char *dir,
		       struct pages_out *o, char *err, size_t errlen)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	int pm = open(path, O_RDONLY | O_CLOEXEC);
	if (pm < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/.%s.tmp", dir, UMI_PAGES_FILE);
	o->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (o->fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(pm);
		return -1;
	}
	/* Ranges of the uffds serving this pid's memory, in address order. */
	GArray *rs = g_array_new(FALSE, FALSE, sizeof(uint64_t) * 3);
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (u->mm_pid != pid)
			continue;
		for (uint32_t k = 0; k < u->nranges; k++) {
			uint64_t e[3] = {u->ranges[k].start, u->ranges[k].end, u->id};
			g_array_append_val(rs, e);
		}
	}
	qsort(rs->data, rs->len, sizeof(uint64_t) * 3, cmp_range_start);
	int rc = writer_start(o);
	if (rc < 0)
		snprintf(err, errlen, "cannot start the writer thread");
	for (guint i = 0; i < rs->len && rc == 0;) {
		/* Adjacent ranges of one uffd are walked as one span: fewer,
		 * larger pagemap reads. */
		uint64_t *e = (uint64_t *)rs->data + i * 3;
		uint64_t end = e[1];
		guint j = i + 1;
		for (; j < rs->len; j++) {
			uint64_t *f = (uint64_t *)rs->data + j * 3;
			if (f[0] != end || f[2] != e[2])
				break;
			end = f[1];
		}
		rc = dump_range(pid, pm, (uint32_t)e[2], e[0], end, o, err, errlen);
		i = j;
	}
	if (rc == 0)
		rc = batch_flush(pid, o, err, errlen);
	batch.m = batch.nr = 0;
	g_array_free(rs, TRUE);
	close(pm);
	if (writer_finish(o) < 0 && rc == 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -1;
	}
	o->buffered = 0;
	if (rc == 0 && close(o->fd) < 0) { /* no fsync: like CRIU, leave flushing to the kernel */
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		rc = -1;
	} else if (rc != 0) {
		close(o->fd);
	}
	o->fd = -1;
	char final[PATH_MAX + 64];
	snprintf(final, sizeof(final), "%s/%s", dir, UMI_PAGES_FILE);
	if (rc == 0 && rename(path, final) < 0) {
		snprintf(err, errlen, "%s: %s", final, strerror(errno));
		rc = -1;
	}
	if (rc != 0)
		unlink(path);
	return rc;
}

static void usage(void)
{
	fprintf(stderr, "usage: uffd-record dump PID -D DIR [--leave-running | --kill] "
			"[--with-memory]\n");
}

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int cmd_dump(int argc, char **argv)
{
	const char *dir = NULL;
	bool kill_after = false, leave = false, with_memory = false, quiet = false;
	pid_t pid = 0;
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "-D") || !strcmp(argv[i], "--dir")) && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--kill"))
			kill_after = true;
		else if (!strcmp(argv[i], "--leave-running"))
			leave = true;
		else if (!strcmp(argv[i], "--with-memory"))
			with_memory = true;
		else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q"))
			quiet = true;
		else if (argv[i][0] != '-' && !pid) {
			char *end;
			long v = strtol(argv[i], &end, 10);
			if (*end || v <= 0) {
				fprintf(stderr, "uffd-record dump: '%s' is not a pid\n", argv[i]);
				return 2;
			}
			pid = (pid_t)v;
		} else {
			usage();
			return 2;
		}
	}
	if (!pid || !dir || (kill_after && leave)) {
		usage();
		return 2;
	}
	char err[PATH_MAX + 512];
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "/proc/%d", pid);
	if (access(path, F_OK) != 0) {
		fprintf(stderr, "uffd-record dump: pid %d: no such process\n", pid);
		return 3;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "uffd-record dump: %s: %s\n", dir, strerror(errno));
		return 2;
	}
	struct uctl_conn c;
	if (uctl_connect(&c, pid, UCTL_DEFAULT_TIMEOUT_MS, err, sizeof(err)) != UCTL_R_OK) {
		fprintf(stderr, "uffd-record dump: pid %d: %s\n", pid, err);
		return 3;
	}
	uint64_t t0 = now_ns(CLOCK_MONOTONIC);
	struct um_state st;
	int32_t status = 0;
	void *blob = NULL;
	uint32_t bloblen = 0;
	int rc = uctl_call(&c, UCTL_QUIESCE, NULL, 0, &status, &blob, &bloblen, err, sizeof(err));
	if (rc != UCTL_R_OK || status != 0) {
		fprintf(stderr, "uffd-record dump: pid %d: could not quiesce: %s\n", pid,
			rc != UCTL_R_OK ? err : strerror(-status));
		uctl_close(&c);
		free(blob);
		return 1;
	}
	char e2[300];
	if (um_deserialize(&st, blob, bloblen, e2, sizeof(e2)) < 0) {
		fprintf(stderr, "uffd-record dump: pid %d: bad state from the shim: %s\n", pid, e2);
		uctl_close(&c);
		free(blob);
		return 1;
	}
	uint64_t t_state = now_ns(CLOCK_MONOTONIC);
	struct pages_out o = {.fd = -1, .runs = g_array_new(FALSE, FALSE, sizeof(struct umi_run)),
			      .bufs = {outbuf_alloc(), outbuf_alloc()}};
	o.buf = o.bufs[0];
	if (with_memory && (!o.bufs[0] || !o.bufs[1])) {
		fprintf(stderr, "uffd-record dump: out of memory for the page buffers\n");
		g_array_free(o.runs, TRUE);
		outbuf_free(o.bufs[0]);
		outbuf_free(o.bufs[1]);
		um_state_free(&st);
		free(blob);
		uctl_close(&c); /* closing the connection resumes the app */
		return 1;
	}
	int ret = 0;
	bool stopped = false;
	if (with_memory) {
		stopped = kill(pid, SIGSTOP) == 0;
		if (dump_memory(pid, &st, dir, &o, err, sizeof(err)) < 0) {
			fprintf(stderr, "uffd-record dump: %s\n", err);
			ret = 1;
		}
	}
	uint64_t t_mem = now_ns(CLOCK_MONOTONIC);
	if (ret == 0) {
		struct umi_process proc = {.pid = pid, .flags = with_memory ? UMI_PROC_WITH_MEMORY : 0};
		snprintf(path, sizeof(path), "/proc/%d/exe", pid);
		ssize_t n = readlink(path, proc.exe, sizeof(proc.exe) - 1);
		if (n > 0)
			proc.exe[n] = 0;
		char comm[32] = "";
		snprintf(path, sizeof(path), "/proc/%d/comm", pid);
		FILE *f = fopen(path, "r");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = 0;
			fclose(f);
		}
		size_t size = umi_state_file_size(bloblen, o.runs->len, 1);
		void *buf = malloc(size);
		size_t len = buf ? umi_write_state_file(buf, size, pid, comm, now_ns(CLOCK_REALTIME),
							blob, bloblen,
							(struct umi_run *)o.runs->data, o.runs->len,
							&proc) : 0;
		if (!len || image_write_file(dir, UMI_STATE_FILE, buf, len, err, sizeof(err)) < 0) {
			fprintf(stderr, "uffd-record dump: %s\n", len ? err : "out of memory");
			ret = 1;
		}
		free(buf);
		if (!with_memory) { /* an image without memory has an empty pages file */
			if (image_write_file(dir, UMI_PAGES_FILE, "", 0, err, sizeof(err)) < 0) {
				fprintf(stderr, "uffd-record dump: %s\n", err);
				ret = 1;
			}
		}
	}
	uint64_t t_done = now_ns(CLOCK_MONOTONIC);
	if (kill_after && ret == 0) {
		kill(pid, SIGKILL);
		if (stopped)
			kill(pid, SIGCONT);
	} else {
		if (stopped)
			kill(pid, SIGCONT);
		int32_t s2;
		void *r2 = NULL;
		uint32_t l2 = 0;
		uctl_call(&c, UCTL_RESUME, NULL, 0, &s2, &r2, &l2, err, sizeof(err));
		free(r2);
	}
	uctl_close(&c);
	if (ret == 0 && !quiet) {
		uint64_t ranges = 0, wp = 0;
		for (uint32_t i = 0; i < st.nuffds; i++) {
			ranges += st.uffds[i]->nranges;
			wp += um_wp_count(&st.uffds[i]->wp);
		}
		printf("dumped pid %d to %s: %u uffds, %llu ranges, %llu write-protected pages",
		       pid, dir, st.nuffds, (unsigned long long)ranges, (unsigned long long)wp);
		if (with_memory)
			printf(", %llu data pages + %llu zero pages", (unsigned long long)o.data_pages,
			       (unsigned long long)o.zero_pages);
		printf("%s\n", kill_after ? " (process killed)" : "");
		printf("times: state %.3f ms, memory %.3f ms, write %.3f ms\n",
		       (t_state - t0) / 1e6, (t_mem - t_state) / 1e6, (t_done - t_mem) / 1e6);
	}
	g_array_free(o.runs, TRUE);
	outbuf_free(o.bufs[0]);
	outbuf_free(o.bufs[1]);
	um_state_free(&st);
	free(blob);
	return ret;
}
