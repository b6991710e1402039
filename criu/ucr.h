/* ucr.h - internals shared by the files of the uffdshim CRIU plugin
 * (build/criu/uffdshim_criu.so).  One file per job:
 *
 *   plugin.c     the descriptor CRIU loads, init/exit, hook table
 *   log.c        messages into CRIU's log (print_on_level), image dir
 *   record.c     the per-file record uffdshim-file-<id>.img (format below)
 *   pagemap.c    runs of pages with a pagemap bit set
 *   tasks.c      the dumped tasks: quiesced shim connections, uffd fds
 *   dump.c       PAUSE_DEVICES, CHECKPOINT_DEVICES, DUMP_EXT_FILE
 *   frozen.c     the checks once every task is frozen (may refuse the dump)
 *   unshimmed.c  the kernel's view of a uffd of a process without the shim
 *   ctlsock.c    other tools' connections to a shim (DUMP/RESTORE_UNIX_SK)
 *   restore.c    RESTORE_EXT_FILE, RESUME_DEVICES_LATE
 *   inject.c     system calls run inside a stopped, traced task (cross-mm)
 *
 * Which process runs what: init, PAUSE/CHECKPOINT_DEVICES, DUMP_EXT_FILE and
 * RESUME_DEVICES_LATE run in the criu process; RESTORE_EXT_FILE runs inside
 * the task being restored (a fork of criu, with the task's final pid), so
 * nothing it does to globals reaches the criu process: it talks to
 * RESUME_DEVICES_LATE only through the kernel (the fd it returns). */
#ifndef UFFDSHIM_CRIU_UCR_H
#define UFFDSHIM_CRIU_UCR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h> /* socklen_t, for ctl_client.h */
#include <sys/types.h>

#include "ctl_client.h"
#include "procfs.h"
#include "um_model.h"

#define UCR_PLUGIN_NAME "uffdshim"

/* ---- log.c ---- */
enum { UCR_LOG_ERROR = 1, UCR_LOG_WARN = 2, UCR_LOG_INFO = 3, UCR_LOG_DEBUG = 4 };
/* One line into CRIU's log ("uffdshim: ..." prefixed, newline added);
 * stderr when not running inside criu. */
void ucr_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ucr_err(...) ucr_log(UCR_LOG_ERROR, __VA_ARGS__)
#define ucr_warn(...) ucr_log(UCR_LOG_WARN, __VA_ARGS__)
#define ucr_info(...) ucr_log(UCR_LOG_INFO, __VA_ARGS__)
#define ucr_debug(...) ucr_log(UCR_LOG_DEBUG, __VA_ARGS__)
/* The images directory: CRIU's fd for it, or AT_FDCWD outside criu. */
int ucr_image_dir(void);
/* Write len bytes to dirfd/name (mode 0600, replaced if present).
 * Returns 0 or -errno. */
int ucr_write_file(int dirfd, const char *name, const void *buf, size_t len);
/* Read dirfd/name into a malloc'd buffer.  Returns 0 or -errno. */
int ucr_read_file(int dirfd, const char *name, void **buf, size_t *len);

/* ---- plugin.c ---- */
extern int ucr_stage; /* enum ucr_stage of this criu run */

/* ---- pagemap.c ---- */
struct ucr_run {
	uint64_t start;   /* page aligned */
	uint64_t npages;
};
struct ucr_runs {
	struct ucr_run *v;
	size_t n, cap;
};
int ucr_runs_add(struct ucr_runs *r, uint64_t start, uint64_t npages);
void ucr_runs_free(struct ucr_runs *r);
uint64_t ucr_runs_pages(const struct ucr_runs *r);
/* Append the runs of pages in [start, end) whose pagemap entry (of the open
 * /proc/PID/pagemap pmfd) has bit `bit` set (57 uffd-wp, 63 present).
 * Returns 0 or -errno. */
int ucr_pagemap_runs(int pmfd, uint64_t start, uint64_t end, int bit, struct ucr_runs *out);
#define UCR_PM_UFFD_WP 57
#define UCR_PM_PRESENT 63

/* ---- record.c: uffdshim-file-<id>.img ---- */
#define UCR_REC_MAGIC "UFFDCRF"  /* 8 bytes with the NUL */
#define UCR_REC_VERSION 1
#define UCR_REC_NAME_FMT "uffdshim-file-%u.img"
#define UCR_REC_PREFIX "uffdshim-file-"
#define UCR_STATE_NAME_FMT "uffdshim-state-%d.img"

enum ucr_source {
	UCR_SRC_SHIM = 1,   /* from the shim's model (QUIESCE) */
	UCR_SRC_KERNEL = 2, /* from /proc (process not under the shim) */
};

struct ucr_rec_hdr {
	char magic[8];          /* UCR_REC_MAGIC */
	uint32_t version;       /* UCR_REC_VERSION */
	uint32_t hdr_size;      /* sizeof(struct ucr_rec_hdr) = 96 */
	uint32_t id;            /* CRIU's file id (the name's <id>) */
	uint32_t source;        /* enum ucr_source */
	uint64_t ino;           /* inode of the uffd at dump time */
	int32_t mm_pid;         /* the process whose memory it serves */
	int32_t model_pid;      /* the shim model it came from; 0 for the kernel's view */
	uint32_t model_uffd;    /* that model's uffd id; 0 for the kernel's view */
	uint32_t create_flags;  /* userfaultfd(2) flags: O_CLOEXEC|O_NONBLOCK|UFFD_USER_MODE_ONLY */
	uint32_t file_flags;    /* F_GETFL at dump (O_NONBLOCK is restored from it) */
	uint32_t api_done;      /* 1 if UFFDIO_API had been done */
	uint64_t features;      /* UFFDIO_API features (the kernel's, from fdinfo) */
	uint32_t nholders, nranges, nwp, npresent;
	uint64_t body_len;      /* bytes after the header */
	uint32_t body_crc;      /* crc32 of the body */
	uint32_t hdr_crc;       /* crc32 of the header with hdr_crc = 0 */
};

/* Who has the uffd open: CRIU restores these fds with these numbers. */
struct ucr_holder {
	int32_t pid;
	int32_t fd;
	uint32_t fd_flags;      /* FD_CLOEXEC */
	uint32_t reserved;
};

/* A registered range: [start, end) with UFFDIO_REGISTER_MODE_* modes. */
struct ucr_range {
	uint64_t start, end;
	uint64_t modes;
	uint32_t backing;       /* enum um_backing */
	uint32_t reserved;
};

struct ucr_rec {
	struct ucr_rec_hdr h;
	struct ucr_holder *holders;
	struct ucr_range *ranges;
	struct ucr_run *wp;      /* write-protected pages */
	struct ucr_run *present; /* pages present (mapped) in the ranges at dump */
};

/* Serialize r (counts from r->h) into a malloc'd buffer. */
int ucr_rec_encode(const struct ucr_rec *r, void **buf, size_t *len);
/* Validate and parse; arrays are malloc'd (ucr_rec_free).  0 or -1 + reason. */
int ucr_rec_decode(const void *buf, size_t len, struct ucr_rec *r, char *err, size_t errlen);
int ucr_rec_write(int dirfd, const struct ucr_rec *r);
/* 0, -ENOENT when there is no record for id, other -errno with err filled. */
int ucr_rec_read(int dirfd, uint32_t id, struct ucr_rec *r, char *err, size_t errlen);
void ucr_rec_free(struct ucr_rec *r);

/* ---- tasks.c: what the dump learned about each task ---- */
struct ucr_ufd {
	int fd;
	uint64_t ino;
	uint32_t fd_flags;      /* FD_CLOEXEC */
	struct pf_fdinfo info;   /* /proc/PID/fdinfo/FD when scanned */
};

struct ucr_task {
	pid_t pid;
	bool shimmed;            /* its shim answered QUIESCE */
	bool shim_mapped;        /* libuffdshim.so is in its maps (shimmed or not) */
	bool settled;            /* no fault read and unresolved at QUIESCE */
	struct uctl_conn conn;   /* open (fd >= 0) while the app is held */
	void *blob;              /* the state blob of QUIESCE */
	uint32_t bloblen;
	struct um_state st;      /* parsed blob (valid when shimmed) */
	struct um_state fb;      /* kernel's view built by the fallback */
	bool have_fb;
	bool scanned;            /* ufds and vmas below are filled */
	struct ucr_ufd *ufds;
	size_t nufds;
	uint32_t uffd_vma_flags; /* union of um/uw/ui over its VMAs */
	bool state_written;
};

struct ucr_task *ucr_task_get(pid_t pid, bool create);
size_t ucr_task_count(void);
struct ucr_task *ucr_task_at(size_t i);
/* Fill t->ufds (the userfaultfds in /proc/PID/fd) and t->uffd_vma_flags. */
int ucr_task_scan(struct ucr_task *t, char *err, size_t errlen);
/* The fd of task t that is the file with inode ino, or NULL. */
const struct ucr_ufd *ucr_task_ufd(const struct ucr_task *t, uint64_t ino);
/* Number of distinct uffd inodes t holds. */
size_t ucr_task_nuffds(const struct ucr_task *t);
/* Connect to the shim of pid and hold its uffd operations: 1 held (t is
 * filled), 0 not shimmed, -1 error (err). */
int ucr_task_quiesce(struct ucr_task *t, char *err, size_t errlen);
void ucr_task_release(struct ucr_task *t);
void ucr_tasks_free(void);

/* ---- frozen.c ---- */
/* Every task is frozen: release the connections, scan, check.  0 or -1
 * (the reasons are in the log). */
int ucr_frozen_checks(void);

/* ---- dump.c ---- */
int ucr_pause_devices(int pid);
int ucr_checkpoint_devices(int pid);
int ucr_dump_ext_file(int fd, int id);
void ucr_dump_fini(int ret);

/* ---- ctlsock.c: other tools' connections to a shim ---- */
int ucr_dump_unix_sk(int fd, int ino);
int ucr_restore_unix_sk(int ino);

/* ---- unshimmed.c ---- */
/* Build, in the fallback model of the memory's owner, the kernel's view of
 * the uffd with inode ino (criu's copy: lfd).  Returns it (and the task
 * whose fallback model holds it in *owner), or NULL with a reason. */
struct um_uffd *ucr_unshimmed_build(uint64_t ino, int lfd, struct ucr_task **owner,
				    char *reason, size_t len);
/* The refusal reason for an unshimmed task holding several uffds, or "". */
void ucr_unshimmed_check_task(const struct ucr_task *t, char *reason, size_t len);

/* ---- restore.c ---- */
int ucr_restore_ext_file(int id);
int ucr_resume_devices_late(int pid);
void ucr_restore_fini(int ret);

/* ---- inject.c ---- */
struct ucr_inj {
	pid_t tid;
	bool active;
	uint64_t ip;            /* where the syscall instruction was written */
	long saved_word;        /* the text word it replaced */
	uint64_t saved_mask;
	unsigned char saved_regs[27 * 8]; /* struct user_regs_struct */
	int deferred_sig;       /* a stop signal seen meanwhile, re-sent at end */
};
/* Prepare to run system calls in tid, which this process traces and which
 * sits in a ptrace stop.  0 or -1 with err. */
int ucr_inj_begin(struct ucr_inj *j, pid_t tid, char *err, size_t errlen);
/* Run one system call there: its return value (-errno on failure), or
 * UCR_INJ_FAILED when the task could not be driven (err says why). */
#define UCR_INJ_FAILED (-100000L)
long ucr_inj_call(struct ucr_inj *j, long nr, long a1, long a2, long a3, long a4, long a5,
		  long a6, char *err, size_t errlen);
/* Put back the text word, registers and signal mask. */
int ucr_inj_end(struct ucr_inj *j);

/* ---- small helpers (tasks.c) ---- */
int ucr_pidfd_open(pid_t pid);
int ucr_pidfd_getfd(int pidfd, int fd);
/* True if /proc/PID/fd/FD (or /proc/self/fd/FD for pid 0) is a uffd. */
bool ucr_fd_is_uffd(pid_t pid, int fd);

#endif
