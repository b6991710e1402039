/* shim_trace.c - the per-process trace segment "<trace>.<pid>": a shared
 * mapping of the file, slots taken with one atomic add, so recording costs
 * no system call per record and is safe in signal handlers. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "shim.h"
#include "shim_raw.h"
#include "trace_format.h"

#define CHUNK_RECS 65536ULL
#define RESERVE_BYTES (1ULL << 30)

int shim_tracing;
static __thread uint32_t tls_tid __attribute__((tls_model("initial-exec")));

static struct {
	char base[400];       /* the trace path given by UFFDSHIM_TRACE */
	int fd;
	uint8_t *map;         /* header + records */
	uint64_t cap;         /* records the reservation can hold */
	uint64_t next;        /* next free slot (atomic) */
	uint64_t file_recs;   /* slots backed by the file (atomic) */
	int extending;
} T = {.fd = -1};

/* Records lost (segment full, or the file could not grow) are counted in
 * the header, where readers report them. */
static void dropped(void)
{
	struct ut_header *h = (struct ut_header *)T.map;
	__atomic_fetch_add(&h->dropped, 1, __ATOMIC_RELAXED);
}

const char *shim_trace_path(void)
{
	return T.base;
}

static struct ut_record *slot(uint64_t i)
{
	return (struct ut_record *)(T.map + sizeof(struct ut_header)) + i;
}

static bool extend_to(uint64_t recs)
{
	uint64_t bytes = sizeof(struct ut_header) + recs * sizeof(struct ut_record);
	if (RAW2(SYS_ftruncate, T.fd, bytes) < 0)
		return false;
	__atomic_store_n(&T.file_recs, recs, __ATOMIC_RELEASE);
	return true;
}

static void segment_open(void)
{
	char path[440];
	size_t n = strlen(T.base);
	memcpy(path, T.base, n);
	path[n++] = '.';
	shim_utoa((uint64_t)G.pid, path + n);
	int fd = (int)RAW4(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	fd = shim_fd_hide(fd, &T.fd);
	struct stat st;
	RAW2(SYS_fstat, fd, &st);
	long m = RAW6(SYS_mmap, 0, RESERVE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m < 0 && m > -4096) {
		RAW1(SYS_close, fd);
		return;
	}
	T.fd = fd;
	T.map = (uint8_t *)m;
	T.cap = (RESERVE_BYTES - sizeof(struct ut_header)) / sizeof(struct ut_record);
	uint64_t used = 0;
	if ((uint64_t)st.st_size >= sizeof(struct ut_header)) /* continued after exec */
		used = ((uint64_t)st.st_size - sizeof(struct ut_header)) / sizeof(struct ut_record);
	T.next = used;
	T.file_recs = 0;
	if (!extend_to(used + CHUNK_RECS)) {
		RAW2(SYS_munmap, T.map, RESERVE_BYTES);
		RAW1(SYS_close, fd);
		T.fd = -1;
		return;
	}
	struct ut_header *h = (struct ut_header *)T.map;
	if (used == 0) {
		memset(h, 0, sizeof(*h));
		memcpy(h->magic, UT_MAGIC, 8);
		h->version = UT_VERSION;
		h->header_size = sizeof(*h);
		h->record_size = sizeof(struct ut_record);
		h->page_size = UM_PAGE_SIZE;
		h->start_ns = shim_now_ns();
		h->pid = G.pid;
	}
	/* The program name, from /proc/self/comm. */
	int cfd = (int)RAW4(SYS_openat, AT_FDCWD, "/proc/self/comm", O_RDONLY | O_CLOEXEC, 0);
	if (cfd >= 0) {
		char comm[17] = {0};
		long r = RAW3(SYS_read, cfd, comm, 16);
		RAW1(SYS_close, cfd);
		if (r > 0) {
			if (comm[r - 1] == '\n')
				comm[r - 1] = 0;
			memcpy(h->comm, comm, sizeof(h->comm));
		}
	}
	shim_tracing = 1;
	/* The name also as a record: a merged trace keeps it per process. */
	uint64_t cw[2];
	memcpy(cw, h->comm, sizeof(cw));
	shim_trace(UT_PROC_COMM, -1, 0, 0, cw[0], cw[1], 0, 0, 0);
}

void shim_trace_init(void)
{
	const char *p = getenv("UFFDSHIM_TRACE");
	if (!p || !*p || strlen(p) >= sizeof(T.base))
		return;
	strcpy(T.base, p);
	segment_open();
}

/* Before exec: cut the segment to what was used, so the new image continues
 * it (same pid, same file). */
void shim_trace_before_exec(void)
{
	if (!shim_tracing)
		return;
	uint64_t used = __atomic_load_n(&T.next, __ATOMIC_ACQUIRE);
	if (used > T.cap)
		used = T.cap;
	extend_to(used);
}

__attribute__((destructor)) static void trace_fini(void)
{
	shim_trace_before_exec();
}

void shim_trace_after_fork_child(void)
{
	if (!shim_tracing)
		return;
	tls_tid = 0; /* this thread has a new tid in the child */
	/* The inherited mapping is the parent's segment: let go of it. */
	shim_tracing = 0;
	RAW2(SYS_munmap, T.map, RESERVE_BYTES);
	shim_fd_set(T.fd, FD_NONE);
	RAW1(SYS_close, T.fd);
	T.fd = -1;
	T.map = NULL;
	T.extending = 0;
	segment_open();
}

void shim_trace(int kind, int fd, uint64_t ino, int64_t result, uint64_t a, uint64_t b,
		uint64_t c, uint64_t d, uint64_t e)
{
	shim_trace_at(0, kind, fd, ino, result, a, b, c, d, e);
}

void shim_trace_at(uint64_t t_ns, int kind, int fd, uint64_t ino, int64_t result, uint64_t a,
		   uint64_t b, uint64_t c, uint64_t d, uint64_t e)
{
	uint64_t i = __atomic_fetch_add(&T.next, 1, __ATOMIC_RELAXED);
	if (i >= T.cap) {
		dropped();
		return;
	}
	uint64_t have = __atomic_load_n(&T.file_recs, __ATOMIC_ACQUIRE);
	if (i + CHUNK_RECS / 2 >= have) {
		int expected = 0;
		if (__atomic_compare_exchange_n(&T.extending, &expected, 1, false,
						__ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
			have = __atomic_load_n(&T.file_recs, __ATOMIC_ACQUIRE);
			if (i + CHUNK_RECS / 2 >= have) {
				uint64_t want = (i / CHUNK_RECS + 2) * CHUNK_RECS;
				extend_to(want < T.cap ? want : T.cap);
			}
			__atomic_store_n(&T.extending, 0, __ATOMIC_RELEASE);
		}
		while (i >= __atomic_load_n(&T.file_recs, __ATOMIC_ACQUIRE)) {
			if (!__atomic_load_n(&T.extending, __ATOMIC_ACQUIRE)) {
				dropped();
				return; /* the file could not grow */
			}
		}
	}
	struct ut_record *r = slot(i);
	r->pid = (uint32_t)G.pid;
	if (unlikely(!tls_tid))
		tls_tid = (uint32_t)RAW0(SYS_gettid);
	r->tid = tls_tid;
	r->kind = (uint16_t)kind;
	r->flags = 0;
	r->fd = fd;
	r->result = result;
	r->ino = ino;
	r->a = a;
	r->b = b;
	r->c = c;
	r->d = d;
	r->e = e;
	/* t_ns last: a reader of a live segment never sees half a record. */
	__atomic_store_n(&r->t_ns, t_ns ? t_ns : shim_now_ns(), __ATOMIC_RELEASE);
}
