/* verify.h - cross-check a uffd model (struct um_state) against the kernel's
 * view of process pid:
 *
 *  (1) /proc/PID/smaps: for every uffd whose memory is this process's
 *      (mm_pid == pid, or == st->pid when the process sees itself under
 *      another pid), each stretch of address space has VmFlags um/uw/ui
 *      exactly per the model's modes (um = MISSING, uw = WP, ui = MINOR),
 *      memory with uffd flags is covered by the model, and model ranges lie
 *      over mapped memory.  Mismatches are reported as maximal runs.
 *  (2) /proc/PID/pagemap bit 57 (uffd-wp) for every page of every
 *      WP-registered range equals the model's WP bit; with
 *      UFFD_FEATURE_WP_ASYNC (u->wp_async) the kernel clears bits on write
 *      by itself, so only kernel bits subset-of model bits is required.  Model
 *      WP bits outside WP-registered ranges are a disagreement too.  One
 *      pread per range (8 bytes a page).
 *  (3) for every fd of every model uffd (fds are always this process's): the
 *      fd exists, is a userfaultfd, has the model's inode, its close-on-exec
 *      and O_NONBLOCK flags match, and the fdinfo "API:" feature field equals
 *      features_requested | bit 31 once UFFDIO_API was done (0 before).
 *  (4) every userfaultfd in /proc/PID/fd is known to the model.
 *
 * Plain C (no GLib) so unit tests can compile it directly. */
#ifndef UFFDSHIM_RECORDER_VERIFY_H
#define UFFDSHIM_RECORDER_VERIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "um_model.h"

/* Listing caps: differing WP page runs listed per uffd, and disagreement lines
 * listed in all (the count keeps counting). */
#define VERIFY_MAX_WP_RUNS 20
#define VERIFY_MAX_LINES 1000

enum verify_kind {
	VK_DISAGREE = 1, /* one disagreement (counted) */
	VK_MORE = 2,     /* "... N more" summary of unlisted disagreements */
	VK_NOTE = 3,     /* information, not a disagreement */
};

/* Which check found it (for tests and JSON). */
enum verify_check {
	VC_MODEL = 0,    /* the model contradicts itself */
	VC_SMAPS = 1,
	VC_PAGEMAP = 2,
	VC_FDINFO = 3,
	VC_FDS = 4,
};

struct verify_entry {
	int kind;        /* enum verify_kind */
	int check;       /* enum verify_check */
	uint32_t uffd;   /* model id, 0 when none */
	char *text;      /* without the "verify: " prefix */
};

struct verify_report {
	struct verify_entry *e;
	size_t n, cap;
	unsigned disagreements;  /* all of them, listed or not */
	unsigned unlisted;       /* dropped beyond VERIFY_MAX_LINES */
	unsigned nuffds;         /* uffds checked */
	unsigned nranges;        /* ranges checked against smaps */
	uint64_t npages;         /* pages checked against pagemap */
	uint64_t tracked_wp;     /* WP pages held by dirty tracking, not the app */
	bool failed;             /* could not check: see error/err_errno */
	int err_errno;
	char error[256];
};

/* Returns 0 when model and kernel agree, 1 on any disagreement, -1 when the
 * check could not be done (r->error says why; r->err_errno is ESRCH/ENOENT
 * when the process went away).  r is initialised here; free it with
 * verify_report_free. */
int verify_state(const struct um_state *st, pid_t pid, struct verify_report *r);
/* The same, with the uffds other processes hold on pid's memory (see
 * foreign.h) included in the smaps and pagemap checks. */
int verify_state_with(const struct um_state *st, const struct um_state *foreign, pid_t pid,
		      struct verify_report *r);
/* What dirty tracking (UCTL_TRACK_INFO) adds on top of the app's uffds: the
 * shim's own WP_ASYNC uffd (an fd the model does not list, "uw" on the ranges
 * it registered) and extra WP bits on the app's WP ranges ("sync").  With it,
 * verify checks that the kernel holds the model's state plus exactly that. */
struct uctl_track_range;
struct verify_tracking {
	int async_fd;                          /* -1: none */
	const struct uctl_track_range *ranges; /* sorted */
	uint32_t nranges;
	/* Nesting (UCTL_NEST_INFO): spans {start, end, kernel modes} whose one
	 * kernel registration serves several uffds of the model, and the
	 * shim's doorbell pages. */
	const uint64_t (*nest)[3];
	uint32_t nnest;
	const uint64_t *bells;
	uint32_t nbells;
	/* uffd ids whose file the shim made non-blocking while the app's
	 * view stays blocking */
	const uint64_t *forced;
	uint32_t nforced;
	/* fds of uffds the app closed that the shim keeps: they carry nested
	 * memory for other clients */
	const uint64_t *ghosts;
	uint32_t nghosts;
};
int verify_state_tracked(const struct um_state *st, const struct um_state *foreign,
			 const struct verify_tracking *trk, pid_t pid, struct verify_report *r);
void verify_report_free(struct verify_report *r);
/* Every entry as a "verify: ..." line, then "verify: OK (N uffds, M ranges, P
 * pages checked)" or "verify: K disagreements". */
void verify_report_print(const struct verify_report *r, FILE *f);
/* How many entries of this kind (and check, or -1 for any) mention uffd id
 * (0 = any). */
unsigned verify_report_count(const struct verify_report *r, int kind, int check,
			     uint32_t uffd);

#endif
