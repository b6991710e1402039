/* track_status.h - what `uffd-record status` shows of dirty tracking: the
 * shim's UCTL_TRACK_INFO answer, fetched and printed. */
#ifndef UFFDSHIM_RECORDER_TRACK_STATUS_H
#define UFFDSHIM_RECORDER_TRACK_STATUS_H

#include <glib.h>
#include <stdbool.h>

#include "ctl_client.h"
#include "verify.h"

struct track_info {
	bool on;
	struct uctl_track_rep rep;
	struct uctl_track_range *ranges; /* g_malloc'd, rep.nranges */
	/* nesting (UCTL_NEST_INFO) */
	uint64_t (*nest)[3];
	uint32_t nnest;
	uint64_t *bells;
	uint32_t nbells;
	uint64_t *forced;
	uint32_t nforced;
	uint64_t *ghosts;
	uint32_t nghosts;
};

/* Ask the shim on c (an open connection).  Returns 0 (t->on tells whether
 * tracking is on), or -1 when the shim does not know the request (an older
 * shim: the connection is closed then; reconnect). */
int track_info_fetch(struct uctl_conn *c, struct track_info *t);
void track_info_free(struct track_info *t);
/* The overlay verify needs (points into t). */
struct verify_tracking track_info_overlay(const struct track_info *t);
void track_info_text(GString *o, const struct track_info *t);
/* The member "tracking":{...} (no leading comma). */
void track_info_json(GString *o, const struct track_info *t);

#endif
