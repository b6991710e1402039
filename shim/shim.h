/* shim.h - internals shared by the files of the preload library.
 *
 * Every wrapper follows one pattern: a cheap check decides whether the call
 * concerns a userfaultfd at all (one byte load from the fd table); if not,
 * the real function runs directly.  If it does, the real call runs first,
 * unlocked, and what the kernel returned is then applied to the model under
 * the model lock (shim_lock.c), and written to the trace if one is on.  No
 * malloc, no stdio: memory comes from mmap, strings are formatted by hand. */
#ifndef UFFDSHIM_SHIM_H
#define UFFDSHIM_SHIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <spawn.h>

#include "um_model.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define SHIM_HIDDEN __attribute__((visibility("hidden")))

/* ---- shim_real.c: the functions we wrap, resolved with RTLD_NEXT ---- */
struct shim_real {
	long (*syscall)(long, ...);
	int (*ioctl)(int, unsigned long, ...);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*read_chk)(int, void *, size_t, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	int (*close)(int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	int (*open)(const char *, int, ...);
	int (*open64)(const char *, int, ...);
	int (*openat)(int, const char *, int, ...);
	int (*openat64)(int, const char *, int, ...);
	int (*open_2)(const char *, int);
	int (*open64_2)(const char *, int);
	int (*openat_2)(int, const char *, int);
	int (*openat64_2)(int, const char *, int);
	pid_t (*fork)(void);
	int (*clone)(int (*)(void *), void *, int, void *, ...);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execveat)(int, const char *, char *const[], char *const[], int);
	int (*fexecve)(int, char *const[], char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			   const posix_spawnattr_t *, char *const[], char *const[]);
	int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			    const posix_spawnattr_t *, char *const[], char *const[]);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
};
extern struct shim_real real SHIM_HIDDEN;
void shim_real_resolve(void) SHIM_HIDDEN;

/* ---- shim_fdtab.c: what each fd number is, for the fast path ---- */
enum { FD_NONE = 0, FD_UFFD = 1, FD_DEVUFFD = 2, FD_INTERNAL = 3 };
#define SHIM_FDTAB_MAX 65536
extern uint8_t shim_fdtab[SHIM_FDTAB_MAX] SHIM_HIDDEN;
extern int shim_fdtab_high SHIM_HIDDEN; /* some uffd has fd >= SHIM_FDTAB_MAX */
static inline int shim_fd_kind(int fd)
{
	if (likely((unsigned)fd < SHIM_FDTAB_MAX))
		return __atomic_load_n(&shim_fdtab[fd], __ATOMIC_RELAXED);
	return fd >= 0 && __atomic_load_n(&shim_fdtab_high, __ATOMIC_RELAXED) ? -1 : FD_NONE;
}
void shim_fd_set(int fd, int kind) SHIM_HIDDEN;
/* The shim's own fds live near the top of the fd limit, flagged
 * FD_INTERNAL; to the app they do not exist (EBADF).  shim_fd_hide moves fd
 * there and records *slot (which holds it) so that shim_fd_make_room can move
 * it again when the app dup2()s onto that number. */
int shim_fd_hide(int fd, int *slot) SHIM_HIDDEN;
void shim_fd_unhide(int *slot) SHIM_HIDDEN;
void shim_fd_make_room(int fd) SHIM_HIDDEN;
/* Slow answer for fds above the table (-1 from shim_fd_kind). */
int shim_fd_kind_slow(int fd) SHIM_HIDDEN;

/* ---- shim_lock.c: the model lock and the quiesce gate ---- */
/* Guards G.model.  Never held across a blocking call. */
void shim_lock(void) SHIM_HIDDEN;
void shim_unlock(void) SHIM_HIDDEN;
/* True when this thread already holds the lock (a signal handler ran a
 * wrapper while its thread was inside one): the caller must not lock. */
bool shim_lock_held_by_me(void) SHIM_HIDDEN;
/* In a fork child: reset the lock; true if another thread held it at the
 * instant of fork (the child's copy of the model may then be torn). */
bool shim_lock_after_fork_child(void) SHIM_HIDDEN;
/* Orders the calls whose effects on registrations and protection depend on
 * their order (REGISTER, UNREGISTER, WRITEPROTECT): held across the kernel
 * call and the model update, so the model applies them in the kernel's
 * order.  Never held by COPY-like calls, which may fault on registered
 * memory.  Returns false (and takes nothing) when re-entered. */
bool shim_order_lock(void) SHIM_HIDDEN;
void shim_order_unlock(void) SHIM_HIDDEN;
/* The fork child's side of fork/clone (shim_init.c). */
void shim_after_fork_child(void) SHIM_HIDDEN;
/* Take the lock to update the model, unless this thread holds it already
 * (a wrapper re-entered from a signal handler): then count a missed update
 * in the model and return false; the caller skips its update. */
bool shim_model_enter(void) SHIM_HIDDEN;
/* The gate: operations that change uffd state pass it before their real
 * call; a quiesce (dump) closes it and waits for those in flight. */
void shim_gate_enter(void) SHIM_HIDDEN;
void shim_gate_leave(void) SHIM_HIDDEN;
/* Close the gate and wait (up to timeout_ms) until nothing is in flight;
 * takes the model lock on success. Returns 0 or -ETIMEDOUT. */
int shim_quiesce(int timeout_ms) SHIM_HIDDEN;
void shim_resume(void) SHIM_HIDDEN;
/* Gate state is per process: reset it in a fork child. */
void shim_gate_after_fork_child(void) SHIM_HIDDEN;

/* ---- the process-wide state ---- */
struct shim_global {
	struct um_state model;
	pid_t pid;
	int initialized;
	int own_ranges;          /* some uffd registered memory of this process */
	int control_always;      /* UFFDSHIM_CONTROL=1: control socket from the start */
	int pagemap_fd;          /* /proc/self/pagemap, internal */
	char lib_path[512];      /* absolute path of this library */
	/* Children whose FORK event was not in the model yet when fork()
	 * returned (the kernel lets fork() go while the reader is still inside
	 * read()): the clone shim_note_msgs makes from that parent uffd gets
	 * this pid.  Under the model lock. */
	struct { pid_t child; uint32_t parent_id; } fork_wait[16];
	uint32_t nfork_wait;
	/* Inodes of uffds on this process's memory that were sent to another
	 * process (SCM_RIGHTS): it may change their state behind our back
	 * (COPY with MODE_WP, WRITEPROTECT...).  Under the model lock. */
	uint64_t shared_inos[32];
	uint32_t nshared;
};
extern struct shim_global G SHIM_HIDDEN;

void shim_init(void) SHIM_HIDDEN;
/* True in the child of vfork() (or a CLONE_VM clone), which shares our
 * memory but has its own fd table: it must not touch the model.  A system
 * call: used on fd life-cycle paths only, never on the fault path. */
bool shim_in_vm_sharing_child(void) SHIM_HIDDEN;
uint64_t shim_now_ns(void) SHIM_HIDDEN;
/* Recompute G.own_ranges (under the lock). */
void shim_update_own_ranges(void) SHIM_HIDDEN;

/* ---- shim_uffd.c: creating and tracking uffds ---- */
/* A new uffd fd appeared in this process (created, received, fork event). */
struct um_uffd *shim_track_new(int fd, uint32_t origin, uint32_t flags, pid_t mm_pid)
	SHIM_HIDDEN;
long shim_uffd_ioctl(int fd, unsigned long req, void *arg) SHIM_HIDDEN;
long shim_devuffd_ioctl(int fd, unsigned long req, void *arg) SHIM_HIDDEN;
void shim_note_open(int fd, const char *path) SHIM_HIDDEN;
/* Record the messages a read() returned. */
void shim_note_msgs(int fd, const void *buf, ssize_t n) SHIM_HIDDEN;

/* ---- shim_wrap_scm.c: uffds shared with another process ---- */
/* Before a snapshot: take the WP bits of shared uffds from pagemap. Locked. */
void shim_shared_refresh_locked(void) SHIM_HIDDEN;
/* WP bits of [start, start+len) read back from pagemap into u (shim_uffd.c). */
void shim_wp_readback(struct um_uffd *u, uint64_t start, uint64_t len) SHIM_HIDDEN;

/* ---- shim_maps.c ---- */
/* Mappings of this process overlapping [start, end), from /proc/self/maps. */
size_t shim_maps_read(uint64_t start, uint64_t end, struct um_mapping *out, size_t cap)
	SHIM_HIDDEN;
/* Read the uffd-wp bits of [start, start+npages) pages into wp[] (one byte
 * per page). Returns 0 or -1. */
int shim_pagemap_wp(uint64_t start, uint64_t npages, uint8_t *wp) SHIM_HIDDEN;
/* /proc/self/pagemap, opened once and kept as an internal fd (or -1). */
int shim_pagemap_fd(void) SHIM_HIDDEN;

/* ---- shim_track.c: dirty tracking for a monitor (uffdshim_ctl.h) ---- */
struct uctl_track_range;
struct uctl_track_run;
struct shim_track_out {
	uint32_t epoch;
	int32_t monitor, async_fd;
	uint64_t wp_ns;
	struct uctl_track_range *ranges;
	uint32_t nranges, cap_ranges;
	struct uctl_track_run *runs;
	uint64_t nruns, cap_runs;
};
extern int shim_track_swallow SHIM_HIDDEN;
int shim_track_start(pid_t monitor, const uint64_t (*sel)[2], uint32_t nsel, uint32_t flags,
		     struct shim_track_out *o) SHIM_HIDDEN;
int shim_track_cut(pid_t monitor, struct shim_track_out *o) SHIM_HIDDEN;
int shim_track_info(struct shim_track_out *o) SHIM_HIDDEN;
/* monitor 0: forced (the monitor died). */
int shim_track_stop(pid_t monitor) SHIM_HIDDEN;
void shim_track_out_free(struct shim_track_out *o) SHIM_HIDDEN;
int shim_track_monitor_pidfd(void) SHIM_HIDDEN;
void shim_track_after_fork_child(void) SHIM_HIDDEN;
/* The app's uffd call changed [start, start+len) (fill, unprotect, move). */
void shim_track_mark(uint64_t start, uint64_t len) SHIM_HIDDEN;
void shim_track_mark_locked(uint64_t start, uint64_t len) SHIM_HIDDEN;
/* shim_wrap_scm.c: was the uffd with this inode sent to another process
 * (its messages may be read there)?  Locked. */
bool shim_ino_sent_locked(uint64_t ino) SHIM_HIDDEN;
/* The app sent uffd id to another process: our WP bits on it go. Locked. */
void shim_track_sent_away_locked(uint32_t id) SHIM_HIDDEN;
/* shim_track_fence.c: a cut waits for the app's marked calls in flight
 * (cut_begin/end, before any lock); the zap hold from a cut until the
 * monitor has read its pages. */
void shim_track_cut_begin(void) SHIM_HIDDEN;
void shim_track_cut_end(void) SHIM_HIDDEN;
void shim_track_zap_hold_begin(void) SHIM_HIDDEN;
void shim_track_zap_hold_end(void) SHIM_HIDDEN;
bool shim_track_touches_locked(uint64_t start, uint64_t len) SHIM_HIDDEN;
void shim_track_fence_after_fork_child(void) SHIM_HIDDEN;
/* The monitor has read the last cut's pages: the held zaps go on. */
int shim_track_read_done(pid_t monitor) SHIM_HIDDEN;
/* Around the app's call that takes pages of [start, start+len) away (munmap,
 * mremap, mmap(MAP_FIXED), madvise zaps, UFFDIO_MOVE): begin waits while the
 * monitor reads an epoch and counts the call in flight until end (a cut
 * waits for it).  One flag load when nobody tracks.  No lock held. */
bool shim_track_zap_begin_slow(uint64_t start, uint64_t len) SHIM_HIDDEN;
void shim_track_zap_end_slow(void) SHIM_HIDDEN;
extern int shim_track_zap_fence SHIM_HIDDEN;
static inline bool shim_track_zap_begin(uint64_t start, uint64_t len)
{
	if (__builtin_expect(__atomic_load_n(&shim_track_zap_fence, __ATOMIC_ACQUIRE) != 0, 0))
		return shim_track_zap_begin_slow(start, len);
	return false;
}
static inline void shim_track_zap_end(bool counted)
{
	if (counted)
		shim_track_zap_end_slow();
}
/* Before the app registers [start, start+len) (order lock held). */
void shim_track_yield(uint64_t start, uint64_t len) SHIM_HIDDEN;
bool shim_track_active(void) SHIM_HIDDEN;
/* How dirty tracking holds page now, for a debug line ("async", ...). */
const char *shim_track_describe(uint64_t page) SHIM_HIDDEN;
/* Around an app's call that dirty tracking marks afterwards (a cut never
 * falls between the kernel call and the mark). */
void shim_track_op_begin(void) SHIM_HIDDEN;
void shim_track_op_end(void) SHIM_HIDDEN;
/* The pump's view of tracking: the app uffds it reads for our WP faults. */
uint32_t shim_track_pump_carriers_locked(uint32_t *ids, uint32_t cap) SHIM_HIDDEN;
bool shim_track_pumps_locked(uint32_t id) SHIM_HIDDEN;

/* ---- shim_pump.c: reads uffds no app thread may be reading ---- */
void shim_pump_start(void) SHIM_HIDDEN;
void shim_pump_poke(void) SHIM_HIDDEN;
/* fd is about to be closed: if the pump's poll holds its file, wait (100 ms
 * at most) until it lets go, so that the close releases the file at once. */
void shim_pump_release_fd(int fd) SHIM_HIDDEN;
void shim_pump_after_fork_child(void) SHIM_HIDDEN;

/* Remove our WP faults from what read() returned; returns the new length. */
ssize_t shim_track_filter(int fd, void *buf, ssize_t n) SHIM_HIDDEN;

/* ---- shim_nest.c: several uffds of this process on the same memory ---- */
extern int shim_nest_on SHIM_HIDDEN;
extern int shim_nest_naug SHIM_HIDDEN; /* augmented spans (dirty tracking added WP) */
extern int shim_nest_enabled SHIM_HIDDEN; /* UFFDSHIM_NEST=0: the kernel's EBUSY */
/* REGISTER met EBUSY: register virtually; 0 and *ioctls, or -errno. */
int shim_nest_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ioctls)
	SHIM_HIDDEN;
bool shim_nest_touches(uint64_t start, uint64_t len) SHIM_HIDDEN;
bool shim_nest_touches_locked(uint64_t start, uint64_t len) SHIM_HIDDEN;
long shim_nest_unregister(int fd, uint64_t start, uint64_t len) SHIM_HIDDEN;
long shim_nest_unprotect(int fd, uint64_t start, uint64_t len, uint64_t mode) SHIM_HIDDEN;
void shim_nest_after_resolve(int fd, uint64_t start, uint64_t len) SHIM_HIDDEN;
void shim_nest_after_unregister(int fd, uint64_t start, uint64_t len) SHIM_HIDDEN;
/* Route what read() returned: keep fd's own, queue the others' (doorbell),
 * expand fd's doorbell into its queued messages.  cap: the caller's buffer. */
ssize_t shim_nest_filter(int fd, void *buf, ssize_t n, size_t cap) SHIM_HIDDEN;
void shim_nest_prune_locked(void) SHIM_HIDDEN;
/* shim_nest_ghost.c: the app is about to close fd (locked); the pump's view
 * of nesting (orphaned carriers to read after the app, ghosts to read). */
void shim_nest_before_close_locked(int fd) SHIM_HIDDEN;
uint32_t shim_nest_pump_carriers_locked(uint32_t *ids, uint32_t n, uint32_t cap) SHIM_HIDDEN;
bool shim_nest_pumps_locked(uint32_t id) SHIM_HIDDEN;
uint32_t shim_nest_pump_ghosts_locked(int *fds, int *slots, uint32_t cap) SHIM_HIDDEN;
void shim_nest_ghost_read(int slot) SHIM_HIDDEN;
/* The app's munmap/mremap/madvise on nested memory: events for the clients
 * that asked, where the kernel makes none for them.  Locked.  Returns the
 * clients to wait for (shim_nest_event_wait, after unlocking). */
uint32_t shim_nest_mem_event_locked(uint8_t ev, uint64_t s, uint64_t len, uint64_t to)
	SHIM_HIDDEN;
void shim_nest_event_wait(uint32_t mask) SHIM_HIDDEN;
bool shim_nest_is_bell(uint64_t s, uint64_t e) SHIM_HIDDEN;
/* Dirty tracking: add WP to uffd id's MISSING-only registration [s, e). */
int shim_nest_augment_locked(uint32_t id, int fd, uint64_t s, uint64_t e) SHIM_HIDDEN;
/* fd lacks WP mode on augmented memory in [s, s+len): WP calls are refused. */
bool shim_nest_aug_lacks_wp(int fd, uint64_t s, uint64_t len) SHIM_HIDDEN;
/* Messages of fd read by the shim: queue them for the app's read(). */
void shim_nest_deliver(int fd, const void *buf, ssize_t n) SHIM_HIDDEN;
/* Readers parked in our read() of a uffd whose file we made non-blocking. */
ssize_t shim_nest_take(int fd, void *buf, size_t cap) SHIM_HIDDEN;
int shim_nest_park(int fd) SHIM_HIDDEN;
void shim_nest_reforce_locked(int fd) SHIM_HIDDEN;
void shim_nest_before_exec_locked(void) SHIM_HIDDEN;
void shim_nest_carrier_gone_locked(uint32_t id) SHIM_HIDDEN;
void shim_nest_forked_locked(struct um_uffd *forked) SHIM_HIDDEN;
/* fork(): how many FORK events of nesting clients the child must wait for
 * (before fork), and the child's wait (after). */
int shim_nest_fork_prepare(void) SHIM_HIDDEN;
void shim_nest_fork_child_wait(int expect) SHIM_HIDDEN;
void shim_nest_fork_parent_wait(void) SHIM_HIDDEN;
uint32_t shim_nest_spans_locked(uint64_t (*out)[3], uint32_t cap, uint64_t *bells,
				uint32_t *nbells, uint64_t *forced, uint32_t *nforced,
				uint64_t *ghosts, uint32_t *nghosts) SHIM_HIDDEN;
void shim_nest_after_fork_child(void) SHIM_HIDDEN;

/* ---- shim_monitor.c: external monitors (uffdshim_ctl.h UCTL_MON_*) ---- */
/* The rest of connection fd is a monitor's: serve it on a thread of its own
 * (takes fd over).  false: could not (the caller closes fd). */
bool shim_monitor_serve(int fd, pid_t peer, const void *req, uint32_t len) SHIM_HIDDEN;
ssize_t shim_read_uffd_internal(int fd, void *buf, size_t n) SHIM_HIDDEN;
void shim_close_uffd_internal(int fd) SHIM_HIDDEN;

/* ---- shim_trace.c ---- */
extern int shim_tracing SHIM_HIDDEN;
void shim_trace_init(void) SHIM_HIDDEN;
void shim_trace_after_fork_child(void) SHIM_HIDDEN;
void shim_trace_before_exec(void) SHIM_HIDDEN;
void shim_trace(int kind, int fd, uint64_t ino, int64_t result, uint64_t a, uint64_t b,
		uint64_t c, uint64_t d, uint64_t e) SHIM_HIDDEN;
/* The same with the event's own time (e.g. when a message was read). */
void shim_trace_at(uint64_t t_ns, int kind, int fd, uint64_t ino, int64_t result, uint64_t a,
		   uint64_t b, uint64_t c, uint64_t d, uint64_t e) SHIM_HIDDEN;
const char *shim_trace_path(void) SHIM_HIDDEN;

/* ---- shim_ctl.c: the control socket thread ---- */
void shim_ctl_ensure(void) SHIM_HIDDEN;
/* The whole of len bytes to or from a control connection (false: gone). */
bool shim_ctl_io_all(int fd, void *buf, size_t len, bool writing) SHIM_HIDDEN;
/* One reply: header (op, status) and payload. */
bool shim_ctl_reply(int fd, uint32_t op, int32_t status, const void *payload, uint32_t len)
	SHIM_HIDDEN;
void shim_ctl_after_fork_child(void) SHIM_HIDDEN;
int shim_ctl_fd(void) SHIM_HIDDEN;
/* Ask process pid's shim for its model of the uffd with inode ino. */
int shim_ctl_import(pid_t pid, uint64_t ino, struct um_uffd *into) SHIM_HIDDEN;

/* ---- shim_exec.c ---- */
/* Serialize the model for the exec'd image; returns the env entry to add
 * ("UFFDSHIM_HANDOFF=<fd>") in buf, or "" when nothing survives exec. */
void shim_exec_prepare(char *buf, size_t len, int *memfd) SHIM_HIDDEN;
void shim_exec_failed(int memfd) SHIM_HIDDEN;
void shim_exec_adopt(void) SHIM_HIDDEN;

/* ---- shim_restore.c ---- */
/* UFFDSHIM_RESTORE=DIR: recreate the image's state before main (or exit). */
void shim_restore_from_env(void) SHIM_HIDDEN;
/* A checkpoint engine (CRIU) restored this process behind the shim's back:
 * its uffds are new files.  Re-read their inodes; called locked. */
void shim_refresh_inodes(void) SHIM_HIDDEN;
/* shim_restore_tracked.c: an image with an epoch section: check it may be
 * restored, recreate its tracked anonymous mappings outside registered
 * ranges with their pages (or exit with a message), then leave in img only
 * the runs of registered ranges.  No-op without an epoch section. */
struct umi_image;
void shim_restore_tracked(struct umi_image *img, const struct um_state *st, int pages_fd)
	SHIM_HIDDEN;

/* ---- shim_msg.c: messages without stdio; refusing a restore ---- */
struct shim_msg {
	char b[512];
	size_t n;
};
void shim_msg_str(struct shim_msg *m, const char *s) SHIM_HIDDEN;
void shim_msg_dec(struct shim_msg *m, uint64_t v) SHIM_HIDDEN;
void shim_msg_hex(struct shim_msg *m, uint64_t v) SHIM_HIDDEN;
/* "uffd-replay: restore refused: <m>" on stderr, then exit 1. */
__attribute__((noreturn)) void shim_refuse(struct shim_msg *m) SHIM_HIDDEN;
#define SHIM_REFUSE(...)                      \
	do {                                  \
		struct shim_msg m_ = {.n = 0}; \
		__VA_ARGS__;                  \
		shim_refuse(&m_);             \
	} while (0)

/* ---- threads of the shim's own ---- */
/* A detached thread with every signal blocked (the app's signals never land
 * on it); 0 or an errno. */
int shim_thread_start(void *(*fn)(void *), void *arg, size_t stack) SHIM_HIDDEN;

/* ---- small string helpers (no stdio in the shim) ---- */
size_t shim_utoa(uint64_t v, char *buf) SHIM_HIDDEN;/* decimal, NUL-terminated */
void shim_log(const char *msg) SHIM_HIDDEN;
bool shim_debug_enabled(void) SHIM_HIDDEN;
/* shim_debug.c: an app's fill of addr failed (err): log the page's state. */
void shim_debug_fill_failed(unsigned long req, uint64_t addr, int err) SHIM_HIDDEN;  /* to stderr when UFFDSHIM_DEBUG */

#endif
