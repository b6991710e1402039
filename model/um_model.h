/* um_model.h - the uffd state model: a pure description of what the kernel
 * holds for every userfaultfd of one process, updated from the results the
 * kernel returned.  No I/O, no preload tricks, no malloc (memory comes from
 * um_alloc.c, which uses mmap, so the shim may use the model inside any
 * process, across fork, without libc's allocator locks).  The shim, the
 * recorder, the replayer and the unit tests all drive this same code.
 *
 * Locking is the caller's business: every function here assumes exclusive
 * access to the state it is given. */
#ifndef UFFDSHIM_UM_MODEL_H
#define UFFDSHIM_UM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define UM_MAX_FDS 8          /* fd numbers one uffd may have in one process */
#define UM_MAX_PENDING 256    /* delivered, unresolved faults kept per uffd */
#define UM_PAGE_SHIFT 12
#define UM_PAGE_SIZE (1ULL << UM_PAGE_SHIFT)

/* How a uffd came to be in this process. */
enum um_origin {
	UM_ORIGIN_SYSCALL = 1,   /* userfaultfd(2) */
	UM_ORIGIN_DEVICE = 2,    /* /dev/userfaultfd + USERFAULTFD_IOC_NEW */
	UM_ORIGIN_FORK_EVENT = 3,/* UFFD_EVENT_FORK delivered it to a reader */
	UM_ORIGIN_RECEIVED = 4,  /* SCM_RIGHTS from another process */
	UM_ORIGIN_INHERITED = 5, /* fork() copied the fd table */
	UM_ORIGIN_EXEC = 6,      /* survived exec (no CLOEXEC) */
	UM_ORIGIN_RESTORED = 7,  /* recreated by uffd-replay / the CRIU plugin */
	UM_ORIGIN_MONITOR = 8,   /* made by the shim for an external monitor */
};

/* What backs a registered range. */
enum um_backing {
	UM_BACKING_UNKNOWN = 0,
	UM_BACKING_ANON = 1,     /* private anonymous */
	UM_BACKING_SHMEM = 2,    /* MAP_SHARED anonymous, memfd, tmpfs, SysV shm */
	UM_BACKING_HUGETLB = 3,  /* hugetlbfs or MAP_HUGETLB */
	UM_BACKING_FILE = 4,     /* other file mapping */
};

/* Counters kept per uffd. */
enum um_counter {
	UM_C_IOC_API, UM_C_IOC_REGISTER, UM_C_IOC_UNREGISTER, UM_C_IOC_WAKE,
	UM_C_IOC_COPY, UM_C_IOC_ZEROPAGE, UM_C_IOC_WRITEPROTECT, UM_C_IOC_CONTINUE,
	UM_C_IOC_POISON, UM_C_IOC_MOVE,
	UM_C_IOC_ERRORS,          /* any UFFDIO_* that failed (incl. partial) */
	UM_C_FAULT_MISSING, UM_C_FAULT_WP, UM_C_FAULT_MINOR,
	UM_C_EV_FORK, UM_C_EV_REMAP, UM_C_EV_REMOVE, UM_C_EV_UNMAP,
	UM_C_BYTES_COPIED,        /* COPY + ZEROPAGE + CONTINUE + MOVE bytes */
	UM_C_PENDING_DROPPED,     /* pending faults forgotten for lack of room */
	UM_C__MAX
};

/* One mapping of the address space, as /proc/PID/maps describes it. */
struct um_mapping {
	uint64_t start, end;
	uint32_t prot;           /* PROT_* */
	uint32_t shared;         /* 1 for MAP_SHARED */
	uint64_t offset;
	uint64_t dev, ino;
	uint32_t backing;        /* enum um_backing */
	uint32_t pagesize;       /* 4096, or the huge page size for hugetlb */
	char name[64];           /* path or [anon:...] name, truncated */
};

/* A registered range of one uffd: [start, end) with one set of modes and
 * one backing mapping.  A uffd's ranges are sorted and never overlap. */
struct um_range {
	uint64_t start, end;
	uint64_t modes;          /* UFFDIO_REGISTER_MODE_* */
	uint64_t ioctls;         /* what UFFDIO_REGISTER answered */
	struct um_mapping map;   /* backing mapping (clipped to the range) */
};

/* A fault that was read() from the uffd and not resolved yet. */
struct um_fault {
	uint64_t address;        /* as delivered (page-aligned unless EXACT_ADDRESS) */
	uint64_t flags;          /* UFFD_PAGEFAULT_FLAG_* */
	uint32_t ptid;           /* with UFFD_FEATURE_THREAD_ID, else 0 */
	uint32_t reserved;
	uint64_t t_ns;           /* when it was read (CLOCK_MONOTONIC) */
};

/* Write-protected pages of one uffd, 4 KiB granularity, kept as sorted 2 MiB
 * chunks with a 512-bit bitmap each (um_wpmap.c). */
struct um_wpchunk {
	uint64_t base;           /* 2 MiB aligned */
	uint64_t bits[8];
};
struct um_wpmap {
	struct um_wpchunk *chunks;
	uint32_t n, cap;
};

/* One userfaultfd context. */
struct um_uffd {
	uint32_t id;             /* stable small number inside this model, 1-based */
	uint64_t ino;            /* inode of the uffd file: identity across processes */
	uint32_t origin;         /* enum um_origin */
	uint32_t create_flags;   /* O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY as created */
	int32_t mm_pid;          /* process whose memory it serves; 0 = not known */
	int32_t parent_id;       /* FORK_EVENT: id of the uffd the event came from */
	int32_t nfds;
	int32_t fds[UM_MAX_FDS];
	uint32_t fd_flags[UM_MAX_FDS];  /* FD_CLOEXEC per fd */
	uint32_t file_flags;     /* O_NONBLOCK as now set (shared by all fds) */
	uint32_t api_done;       /* UFFDIO_API succeeded */
	uint64_t features_requested;
	uint64_t features;       /* as the kernel answered */
	uint64_t ioctls;         /* as the kernel answered */
	uint64_t wp_async;       /* features & UFFD_FEATURE_WP_ASYNC: the kernel
				  * clears WP bits on its own, so the WP map is
				  * only exact when refreshed from pagemap */
	struct um_range *ranges;
	uint32_t nranges, cap_ranges;
	struct um_wpmap wp;
	struct um_fault *pending;  /* UM_MAX_PENDING slots */
	uint32_t npending;
	uint64_t counters[UM_C__MAX];
	uint64_t last_change_ns; /* last state change (ops, events) */
};

/* The model of one process. */
struct um_state {
	int32_t pid;
	uint32_t missed_updates; /* kernel calls the model could not follow (a
				  * wrapper re-entered from a signal handler
				  * while its thread held the model): when
				  * non-zero the model may be inexact */
	uint32_t next_id;
	struct um_uffd **uffds;
	uint32_t nuffds, cap_uffds;
};

/* ---- um_state.c: lifetime, lookup ---- */
int um_state_init(struct um_state *st, pid_t pid);
void um_state_free(struct um_state *st);
struct um_uffd *um_uffd_new(struct um_state *st, uint64_t ino, uint32_t origin,
			    uint32_t create_flags, pid_t mm_pid);
void um_uffd_remove(struct um_state *st, struct um_uffd *u);
struct um_uffd *um_uffd_by_fd(const struct um_state *st, int fd);
struct um_uffd *um_uffd_by_ino(const struct um_state *st, uint64_t ino);
struct um_uffd *um_uffd_by_id(const struct um_state *st, uint32_t id);
/* Deep copy of one uffd (ranges, WP map, pending) into st with a new id. */
struct um_uffd *um_uffd_clone(struct um_state *st, const struct um_uffd *src);
int um_state_copy(struct um_state *dst, const struct um_state *src);

/* ---- fds ---- */
int um_fd_add(struct um_uffd *u, int fd, bool cloexec);
/* Forget fd; returns the uffd that lost its last fd (the caller then removes
 * it) or NULL. */
struct um_uffd *um_fd_close(struct um_state *st, int fd);
void um_fd_set_cloexec(struct um_uffd *u, int fd, bool cloexec);
/* exec: drop every CLOEXEC fd and every uffd left without fds. */
void um_exec(struct um_state *st);

/* ---- um_ranges.c ---- */
/* Register [start,end) with modes.  maps[] describe the mappings the range
 * crosses (clipped by the function); ioctls is what the kernel answered. */
int um_register(struct um_uffd *u, uint64_t start, uint64_t end, uint64_t modes,
		uint64_t ioctls, const struct um_mapping *maps, size_t nmaps);
/* Remove [start,end) from u's registrations (and clear WP bits there). */
int um_unregister(struct um_uffd *u, uint64_t start, uint64_t end);
const struct um_range *um_range_find(const struct um_uffd *u, uint64_t addr);
/* Total registered bytes. */
uint64_t um_registered_bytes(const struct um_uffd *u);

/* ---- um_wpmap.c ---- */
int um_wp_set(struct um_wpmap *m, uint64_t start, uint64_t end, bool on);
bool um_wp_test(const struct um_wpmap *m, uint64_t addr);
uint64_t um_wp_count(const struct um_wpmap *m);
uint64_t um_wp_count_range(const struct um_wpmap *m, uint64_t start, uint64_t end);
/* Iterate maximal runs of protected pages in [start,end): returns false when
 * none is left; *cursor starts at start. */
bool um_wp_next_run(const struct um_wpmap *m, uint64_t *cursor, uint64_t end,
		    uint64_t *run_start, uint64_t *run_end);
void um_wp_free(struct um_wpmap *m);
/* Replace one 2 MiB chunk's bits (loading a serialized map). */
int um_wp_load_chunk(struct um_wpmap *m, uint64_t base, const uint64_t bits[8]);
int um_wp_copy(struct um_wpmap *dst, const struct um_wpmap *src);
/* Move bits of [from, from+len) to [to, to+len) (mremap). */
int um_wp_move(struct um_wpmap *m, uint64_t from, uint64_t to, uint64_t len);

/* ---- um_ops.c: apply what the kernel did ---- */
/* Each op_* takes the call's arguments and what the kernel returned (ret is
 * the ioctl's return value, 0 or -errno; done is the output byte count field
 * where there is one).  Nothing changes for a call the kernel refused
 * outright; partial results apply what was done. */
void um_op_api(struct um_uffd *u, long ret, uint64_t requested, uint64_t features,
	       uint64_t ioctls);
void um_op_register(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		    uint64_t mode, uint64_t ioctls, const struct um_mapping *maps,
		    size_t nmaps);
void um_op_unregister(struct um_uffd *u, long ret, uint64_t start, uint64_t len);
void um_op_wake(struct um_uffd *u, long ret, uint64_t start, uint64_t len);
void um_op_copy(struct um_uffd *u, long ret, uint64_t dst, uint64_t len,
		uint64_t mode, int64_t done);
void um_op_zeropage(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		    uint64_t mode, int64_t done);
/* pagemap_wp: when non-NULL, the kernel's uffd-wp bit of every page in
 * [start, start+len) read back right after the call (one byte per page);
 * used where the kernel protects only present pages (anonymous memory
 * without UFFD_FEATURE_WP_UNPOPULATED). */
void um_op_writeprotect(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
			uint64_t mode, const uint8_t *pagemap_wp);
/* Set the WP bits of npages pages from start to what the kernel reports
 * (wp[i] != 0: page i is protected), e.g. read back from pagemap. */
void um_wp_sync(struct um_uffd *u, uint64_t start, uint64_t npages, const uint8_t *wp);
void um_op_continue(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		    uint64_t mode, int64_t done);
void um_op_poison(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		  uint64_t mode, int64_t done);
void um_op_move(struct um_uffd *u, long ret, uint64_t dst, uint64_t src,
		uint64_t len, uint64_t mode, int64_t done);

/* Messages read() from the uffd.  msg points at one struct uffd_msg.  For a
 * FORK event the new uffd is created in st (returned through *forked). */
void um_msg(struct um_state *st, struct um_uffd *u, const void *msg, uint64_t t_ns,
	    struct um_uffd **forked);

/* Memory calls of the process that owns the memory (mm_pid == st->pid):
 * the kernel changes registrations on its own for these. */
void um_mem_unmap(struct um_state *st, pid_t mm, uint64_t start, uint64_t len);
void um_mem_remap(struct um_state *st, pid_t mm, uint64_t old, uint64_t old_len,
		  uint64_t new, uint64_t new_len);
/* mremap(MREMAP_DONTUNMAP): the pages moved to new; the old VMA stays,
 * empty and still registered; the new VMA is registered (and the moved
 * pages keep their uffd-wp bits) only with UFFD_FEATURE_EVENT_REMAP. */
void um_mem_remap_dontunmap(struct um_state *st, pid_t mm, uint64_t old, uint64_t len,
			    uint64_t new);
void um_mem_dontneed(struct um_state *st, pid_t mm, uint64_t start, uint64_t len);
/* After fork, in the child: its uffd fds still serve the parent's memory. */
void um_after_fork_child(struct um_state *st, pid_t child);

/* ---- um_serialize.c: a flat, versioned blob of the whole state ---- */
/* Serialized form: see docs/image-format.md ("state section"). */
size_t um_serialize_size(const struct um_state *st);
/* Writes into buf (size from um_serialize_size); returns bytes written. */
size_t um_serialize(const struct um_state *st, void *buf, size_t cap);
/* Parses; returns 0 or -1 with a reason in err (never crashes on garbage). */
int um_deserialize(struct um_state *st, const void *buf, size_t len, char *err,
		   size_t errlen);

/* ---- um_names.c ---- */
const char *um_origin_name(uint32_t origin);
const char *um_backing_name(uint32_t backing);
const char *um_counter_name(int c);
/* Writes "MISSING|WP" etc. */
void um_modes_str(uint64_t modes, char *buf, size_t len);
void um_features_str(uint64_t features, char *buf, size_t len);
void um_ioctls_str(uint64_t ioctls, char *buf, size_t len);

/* ---- um_alloc.c ---- */
struct um_alloc_ops {
	void *(*map)(size_t len);                 /* zeroed pages or NULL */
	void (*unmap)(void *p, size_t len);
	void *(*remap)(void *p, size_t old_len, size_t new_len); /* may move */
};
void um_alloc_set_ops(const struct um_alloc_ops *ops);
void *um_zalloc(size_t size);
void um_free(void *p, size_t size);
/* Grow an array: returns new pointer (contents kept) or NULL. */
void *um_grow(void *p, size_t old_size, size_t new_size);

#endif
