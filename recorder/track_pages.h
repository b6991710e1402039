/* track_pages.h - the tracker's side of an image chain: what every tracked
 * page holds after the epochs written so far, and writing the next epoch
 * (DIR/epoch-NNNN) from the shim's dirty report (recorder/cmd_track.c). */
#ifndef UFFDSHIM_RECORDER_TRACK_PAGES_H
#define UFFDSHIM_RECORDER_TRACK_PAGES_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "uffdshim_ctl.h"

struct track_pages {
	pid_t pid;
	char *dir;
	int pagemap;              /* /proc/PID/pagemap */
	FILE *log;                /* --dirty-log, or NULL */
	uint64_t chain_id;
	uint64_t parent_created_ns;
	/* page address -> TP_PRESENT | TP_ZERO | hash of its contents, for
	 * every page present in the chain so far */
	GHashTable *pages;
	uint64_t verified_pages;
};
#define TP_PRESENT (1ull << 32)
#define TP_ZERO (1ull << 33)

struct track_epoch_stats {
	uint64_t changed;         /* data + zero + absent */
	uint64_t data, zero, absent;
};

int track_pages_init(struct track_pages *tp, pid_t pid, const char *dir, const char *log_path,
		     char *err, size_t errlen);
void track_pages_free(struct track_pages *tp);

/* Write epoch `epoch`: the pages the shim reported (runs), the new ranges
 * whole, and the pages whose presence changed; with frozen (the process is
 * stopped) also every present page that is not write-protected. */
int track_pages_epoch(struct track_pages *tp, uint32_t epoch, bool frozen,
		      const struct uctl_track_rep *rep, const struct uctl_track_range *ranges,
		      const struct uctl_track_run *runs, const void *state, size_t state_len,
		      const char *comm, struct track_epoch_stats *s, char *err, size_t errlen);

/* Compare the chain with the live memory of the (stopped) process: 0, or -1
 * with the first differences in err. */
int track_pages_verify(struct track_pages *tp, const struct uctl_track_range *ranges,
		       uint32_t nranges, char *err, size_t errlen);

#endif
