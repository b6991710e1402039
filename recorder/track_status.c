/* track_status.c - dirty tracking in `uffd-record status`. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "status_print.h"
#include "track_status.h"

static int nest_fetch(struct uctl_conn *c, struct track_info *t)
{
	int32_t status = 0;
	void *reply = NULL;
	uint32_t len = 0;
	char err[256];
	int r = uctl_call(c, UCTL_NEST_INFO, NULL, 0, &status, &reply, &len, err, sizeof(err));
	struct uctl_nest_info ni;
	if (r != UCTL_R_OK || len < sizeof(ni)) {
		free(reply);
		return -1;
	}
	memcpy(&ni, reply, sizeof(ni));
	if (ni.nspans > 4096 || ni.nbells > 4096 || ni.nforced > 4096 || ni.nghosts > 4096 ||
	    len != sizeof(ni) + ni.nspans * 24ull + ni.nbells * 8ull + ni.nforced * 8ull +
			   ni.nghosts * 8ull) {
		free(reply);
		return -1;
	}
	t->nnest = ni.nspans;
	t->nbells = ni.nbells;
	t->nest = g_memdup2((char *)reply + sizeof(ni), ni.nspans * 24ull);
	t->bells = g_memdup2((char *)reply + sizeof(ni) + ni.nspans * 24ull, ni.nbells * 8ull);
	t->nforced = ni.nforced;
	t->forced = g_memdup2((char *)reply + sizeof(ni) + ni.nspans * 24ull + ni.nbells * 8ull,
			      ni.nforced * 8ull);
	t->nghosts = ni.nghosts;
	t->ghosts = g_memdup2((char *)reply + sizeof(ni) + ni.nspans * 24ull + ni.nbells * 8ull +
				      ni.nforced * 8ull,
			      ni.nghosts * 8ull);
	free(reply);
	return 0;
}

int track_info_fetch(struct uctl_conn *c, struct track_info *t)
{
	memset(t, 0, sizeof(*t));
	if (nest_fetch(c, t) < 0)
		return -1;
	int32_t status = 0;
	void *reply = NULL;
	uint32_t len = 0;
	char err[256];
	int r = uctl_call(c, UCTL_TRACK_INFO, NULL, 0, &status, &reply, &len, err, sizeof(err));
	if (r == UCTL_R_STATUS && status == -ENOENT) {
		free(reply);
		return 0;
	}
	if (r != UCTL_R_OK || len < sizeof(t->rep)) {
		free(reply);
		return -1;
	}
	memcpy(&t->rep, reply, sizeof(t->rep));
	uint64_t want = sizeof(t->rep) + (uint64_t)t->rep.nranges * sizeof(*t->ranges) +
			t->rep.nruns * sizeof(struct uctl_track_run);
	if (want != len) {
		free(reply);
		return -1;
	}
	t->ranges = g_memdup2((char *)reply + sizeof(t->rep),
			      t->rep.nranges * sizeof(*t->ranges));
	t->on = true;
	free(reply);
	return 0;
}

void track_info_free(struct track_info *t)
{
	g_free(t->nest);
	g_free(t->bells);
	g_free(t->forced);
	g_free(t->ghosts);
	g_free(t->ranges);
	memset(t, 0, sizeof(*t));
}

struct verify_tracking track_info_overlay(const struct track_info *t)
{
	struct verify_tracking v = {.async_fd = -1, .nest = (const uint64_t(*)[3])t->nest,
				    .nnest = t->nnest, .bells = t->bells, .nbells = t->nbells,
				    .forced = t->forced, .nforced = t->nforced,
				    .ghosts = t->ghosts, .nghosts = t->nghosts};
	if (t->on) {
		v.async_fd = t->rep.async_fd;
		v.ranges = t->ranges;
		v.nranges = t->rep.nranges;
	}
	return v;
}

static const char *mode_name(uint32_t m)
{
	switch (m) {
	case UCTL_TM_ASYNC: return "async";
	case UCTL_TM_SYNC: return "sync";
	case UCTL_TM_ALL: return "all";
	default: return "none";
	}
}

static const char *kind_name(uint32_t k)
{
	static const char *n[] = {"?", "anon", "heap", "stack", "file", "other"};
	return k < 6 ? n[k] : "?";
}

#define TEXT_MAX_RANGES 20

void track_info_text(GString *o, const struct track_info *t)
{
	if (!t->on)
		return;
	uint64_t bytes[4] = {0};
	for (uint32_t i = 0; i < t->rep.nranges; i++)
		bytes[t->ranges[i].mode & 3] += t->ranges[i].end - t->ranges[i].start;
	char a[32], b[32], c[32];
	status_size_str(bytes[UCTL_TM_ASYNC], a, sizeof(a));
	status_size_str(bytes[UCTL_TM_SYNC], b, sizeof(b));
	status_size_str(bytes[UCTL_TM_ALL], c, sizeof(c));
	g_string_append_printf(o, "\ndirty tracking: monitor pid %d, epoch %u, %u ranges: %s async "
			       "(the shim's WP_ASYNC uffd, fd %d), %s sync (WP on the app's own "
			       "uffd), %s all (saved whole each epoch)\n", t->rep.monitor_pid,
			       t->rep.epoch, t->rep.nranges, a, t->rep.async_fd, b, c);
	for (uint32_t i = 0; i < t->rep.nranges && i < TEXT_MAX_RANGES; i++) {
		const struct uctl_track_range *r = &t->ranges[i];
		char sz[32];
		status_size_str(r->end - r->start, sz, sizeof(sz));
		g_string_append_printf(o, "  [%#" PRIx64 ", %#" PRIx64 ") %-8s %-5s %-5s%s%s\n",
				       r->start, r->end, sz, mode_name(r->mode), kind_name(r->kind),
				       r->name[0] ? " " : "", r->name);
	}
	if (t->rep.nranges > TEXT_MAX_RANGES)
		g_string_append_printf(o, "  ... %u more\n", t->rep.nranges - TEXT_MAX_RANGES);
}

void track_info_json(GString *o, const struct track_info *t)
{
	if (!t->on) {
		g_string_append(o, "\"tracking\":null");
		return;
	}
	g_string_append_printf(o, "\"tracking\":{\"monitor_pid\":%d,\"epoch\":%u,\"async_fd\":%d,"
			       "\"ranges\":[", t->rep.monitor_pid, t->rep.epoch, t->rep.async_fd);
	for (uint32_t i = 0; i < t->rep.nranges; i++) {
		const struct uctl_track_range *r = &t->ranges[i];
		g_string_append_printf(o, "%s{\"start\":%" PRIu64 ",\"end\":%" PRIu64 ",\"mode\":\"%s\","
				       "\"kind\":\"%s\",\"carrier_uffd\":%u,\"name\":", i ? "," : "",
				       r->start, r->end, mode_name(r->mode), kind_name(r->kind),
				       r->carrier_id);
		char name[65];
		memcpy(name, r->name, 64);
		name[64] = 0;
		json_string(o, name);
		g_string_append_c(o, '}');
	}
	g_string_append(o, "]}");
}
