/* cmd_track.c - `uffd-record track PID -D DIR`: dirty tracking of a shimmed
 * process's private writable memory with uffd write-protection, written as
 * an incremental image chain (DIR/epoch-0000 whole, then one epoch per cut
 * with the pages changed since the previous one; docs/image-format.md).
 *
 * The shim does the protecting (UCTL_TRACK_*, shim/shim_track.c); this side
 * reads the pages it reports, adds what pagemap shows changed in presence,
 * and writes the images.  The last epoch is taken with the process stopped,
 * so the chain ends at one point in time; --verify then compares the whole
 * chain with the live memory, page by page. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "ctl_client.h"
#include "image_io.h"
#include "procfs.h"
#include "track_pages.h"
#include "uffd_compat.h"
#include "um_image.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Tell the shim this epoch's pages are read: the app's calls that take
 * pages away (held since the cut, UCTL_TRACK_HOLD_ZAPS) go on.  A failure
 * only delays them: the shim lets them go after 5 s. */
static void read_done(pid_t pid)
{
	char err[256];
	struct uctl_conn c;
	int32_t status = 0;
	void *reply = NULL;
	uint32_t replylen = 0;
	if (uctl_connect(&c, pid, UCTL_DEFAULT_TIMEOUT_MS, err, sizeof(err)) != UCTL_R_OK ||
	    uctl_call(&c, UCTL_TRACK_READ_DONE, NULL, 0, &status, &reply, &replylen, err,
		      sizeof(err)) != UCTL_R_OK || status != 0)
		fprintf(stderr, "uffd-record track: pid %d: telling the shim the epoch is read: %s\n",
			pid, status ? strerror(-status) : err);
	free(reply);
	if (c.fd >= 0)
		uctl_close(&c);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uffd-record track PID -D DIR [--interval MS] [--iterations N] [--step]\n"
		"                         [--range START-END]... [--no-freeze] [--verify]\n"
		"                         [--dirty-log FILE] [--quiet] [--no-augment-missing]\n"
		"  Write-protects the private writable memory of a shimmed process (or the\n"
		"  given ranges) and writes DIR/epoch-0000 (every present page), then one\n"
		"  incremental epoch per interval with the pages written since the last.\n"
		"  --iterations N  stop after epoch N (default: run until SIGINT/SIGTERM)\n"
		"  --step          cut an epoch for each line read on stdin (EOF ends)\n"
		"  --no-freeze     do not stop the process for the last epoch\n"
		"  --verify        at the end, compare the chain with the live memory\n"
		"  --dirty-log F   append \"EPOCH ADDR NPAGES\" lines of changed pages to F\n"
		"  --no-augment-missing  save every present page of the app's MISSING-only\n"
		"                  registrations every epoch (all) instead of adding WP to\n"
		"                  them (sync, the default)\n");
}

/* The reply of START/CUT/INFO, checked. */
struct track_reply {
	struct uctl_track_rep rep;
	struct uctl_track_range *ranges;
	struct uctl_track_run *runs;
	void *raw;
};

static int parse_reply(void *buf, uint32_t len, struct track_reply *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->raw = buf;
	if (len < sizeof(t->rep)) {
		snprintf(err, errlen, "short tracking reply (%u bytes)", len);
		return -1;
	}
	memcpy(&t->rep, buf, sizeof(t->rep));
	uint64_t need = sizeof(t->rep) + (uint64_t)t->rep.nranges * sizeof(struct uctl_track_range) +
			t->rep.nruns * sizeof(struct uctl_track_run);
	if (t->rep.nruns > len || need != len) {
		snprintf(err, errlen, "malformed tracking reply (%u ranges, %" PRIu64 " runs, %u bytes)",
			 t->rep.nranges, t->rep.nruns, len);
		return -1;
	}
	t->ranges = (void *)((char *)buf + sizeof(t->rep));
	t->runs = (void *)((char *)t->ranges + t->rep.nranges * sizeof(struct uctl_track_range));
	for (uint32_t i = 0; i < t->rep.nranges; i++) {
		const struct uctl_track_range *r = &t->ranges[i];
		if (r->start >= r->end || (r->start | r->end) & (UM_PAGE_SIZE - 1) ||
		    (i && r->start < t->ranges[i - 1].end)) {
			snprintf(err, errlen, "malformed tracked range %u in the reply", i);
			return -1;
		}
	}
	return 0;
}

static int track_call(struct uctl_conn *c, uint32_t op, const void *req, uint32_t reqlen,
		      struct track_reply *t, char *err, size_t errlen)
{
	int32_t status = 0;
	void *reply = NULL;
	uint32_t rlen = 0;
	int r = uctl_call(c, op, req, reqlen, &status, &reply, &rlen, err, errlen);
	if (r == UCTL_R_STATUS) {
		snprintf(err, errlen, "%s refused: %s%s", uctl_op_name(op), strerror(-status),
			 status == -EBUSY ? " (another monitor is tracking this process)" : "");
		free(reply);
		return -1;
	}
	if (r != UCTL_R_OK) {
		free(reply);
		return -1;
	}
	if (!t) {
		free(reply);
		return 0;
	}
	if (parse_reply(reply, rlen, t, err, errlen) < 0) {
		free(reply);
		return -1;
	}
	return 0;
}

/* Wait until every thread of pid is stopped (SIGSTOP sent). */
static void wait_stopped(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	for (int tries = 0; tries < 200; tries++) {
		DIR *d = opendir(path);
		if (!d)
			return;
		bool all = true;
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char sp[384];
			snprintf(sp, sizeof(sp), "%s/%s/stat", path, e->d_name);
			size_t len = 0;
			char *txt = pf_slurp(sp, &len);
			char *rp = txt ? strrchr(txt, ')') : NULL;
			if (rp && rp[1] == ' ' && rp[2] != 'T' && rp[2] != 't')
				all = false;
			free(txt);
		}
		closedir(d);
		if (all)
			return;
		usleep(5000);
	}
}

static void comm_of(pid_t pid, char *comm, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	comm[0] = 0;
	FILE *f = fopen(path, "r");
	if (f) {
		if (fgets(comm, (int)len, f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
	}
}

static bool parse_range(const char *s, uint64_t r[2])
{
	char *end;
	errno = 0;
	r[0] = strtoull(s, &end, 0);
	if (errno || *end != '-')
		return false;
	r[1] = strtoull(end + 1, &end, 0);
	return !errno && !*end && r[0] < r[1] && !((r[0] | r[1]) & (UM_PAGE_SIZE - 1));
}

static const char *mode_name(uint32_t m)
{
	return m == UCTL_TM_ASYNC ? "async" : m == UCTL_TM_SYNC ? "sync" : "all";
}

int cmd_track(int argc, char **argv)
{
	const char *dir = NULL, *log_path = NULL;
	int interval_ms = 100, iterations = -1;
	bool step = false, freeze = true, verify = false, quiet = false, augment = true;
	uint64_t sel[UCTL_TRACK_MAX_SEL][2];
	uint32_t nsel = 0;
	pid_t pid = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-D") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(a, "--interval") && i + 1 < argc)
			interval_ms = atoi(argv[++i]);
		else if (!strcmp(a, "--iterations") && i + 1 < argc)
			iterations = atoi(argv[++i]);
		else if (!strcmp(a, "--range") && i + 1 < argc) {
			if (nsel == UCTL_TRACK_MAX_SEL || !parse_range(argv[++i], sel[nsel])) {
				fprintf(stderr, "uffd-record track: bad --range %s (want START-END, page "
						"aligned, at most %d)\n", argv[i], UCTL_TRACK_MAX_SEL);
				return 2;
			}
			nsel++;
		} else if (!strcmp(a, "--step"))
			step = true;
		else if (!strcmp(a, "--no-freeze"))
			freeze = false;
		else if (!strcmp(a, "--verify"))
			verify = true;
		else if (!strcmp(a, "--augment-missing")) /* the default; kept for scripts */
			augment = true;
		else if (!strcmp(a, "--no-augment-missing"))
			augment = false;
		else if (!strcmp(a, "--quiet"))
			quiet = true;
		else if (!strcmp(a, "--dirty-log") && i + 1 < argc)
			log_path = argv[++i];
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!pid && a[0] >= '0' && a[0] <= '9')
			pid = atoi(a);
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!pid || !dir || interval_ms < 1 || iterations == 0) {
		usage(stderr);
		return 2;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "uffd-record track: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	char probe[4096];
	snprintf(probe, sizeof(probe), "%s/epoch-0000", dir);
	if (access(probe, F_OK) == 0) {
		fprintf(stderr, "uffd-record track: %s already holds a chain; use an empty directory\n",
			dir);
		return 1;
	}
	char err[512];
	struct uctl_conn c;
	if (uctl_connect(&c, pid, UCTL_DEFAULT_TIMEOUT_MS, err, sizeof(err)) != UCTL_R_OK) {
		fprintf(stderr, "uffd-record track: pid %d: %s\n", pid, err);
		return 1;
	}
	struct track_pages tp;
	if (track_pages_init(&tp, pid, dir, log_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-record track: %s\n", err);
		uctl_close(&c);
		return 1;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	size_t reqlen = sizeof(struct uctl_track_req) + nsel * 16u;
	uint8_t *req = g_malloc0(reqlen);
	struct uctl_track_req tr = {.nsel = nsel,
				    .flags = UCTL_TRACK_HOLD_ZAPS | (augment ? UCTL_TRACK_AUGMENT : 0)};
	memcpy(req, &tr, sizeof(tr));
	memcpy(req + sizeof(tr), sel, nsel * 16u);
	int ret = 0;
	for (uint32_t epoch = 0;; epoch++) {
		bool last = (iterations > 0 && (int)epoch >= iterations) || stop_requested;
		if (epoch > 0 && !last) {
			if (step) {
				char line[64];
				if (!fgets(line, sizeof(line), stdin))
					last = true;
			} else {
				for (int t = 0; t < interval_ms && !stop_requested; t += 10)
					usleep((useconds_t)((interval_ms - t < 10 ? interval_ms - t : 10) * 1000));
				last = stop_requested;
			}
		}
		struct track_reply t;
		uint64_t t0 = now_ns(CLOCK_MONOTONIC);
		/* One connection per epoch: the shim serves one connection at a
		 * time, and status and dump must get through between cuts (the
		 * shim knows the monitor by its pid). */
		if (epoch > 0 && uctl_connect(&c, pid, UCTL_DEFAULT_TIMEOUT_MS, err, sizeof(err)) !=
				     UCTL_R_OK) {
			fprintf(stderr, "uffd-record track: pid %d: %s\n", pid, err);
			ret = 1;
			break;
		}
		if (track_call(&c, epoch ? UCTL_TRACK_CUT : UCTL_TRACK_START, epoch ? NULL : req,
			       epoch ? 0 : (uint32_t)reqlen, &t, err, sizeof(err)) < 0) {
			fprintf(stderr, "uffd-record track: pid %d: %s\n", pid, err);
			uctl_close(&c);
			ret = 1;
			break;
		}
		/* The uffd state for the image, taken before any stop. */
		void *blob = NULL;
		uint32_t bloblen = 0;
		int32_t status = 0;
		if (uctl_call(&c, UCTL_STATE, NULL, 0, &status, &blob, &bloblen, err, sizeof(err)) !=
		    UCTL_R_OK) {
			fprintf(stderr, "uffd-record track: pid %d: state: %s\n", pid, err);
			free(t.raw);
			uctl_close(&c);
			ret = 1;
			break;
		}
		bool stopping = last;
		if (!stopping)
			uctl_close(&c);
		bool frozen = last && freeze && epoch > 0;
		if (frozen && kill(pid, SIGSTOP) == 0)
			wait_stopped(pid);
		else
			frozen = false;
		struct track_epoch_stats s;
		char comm[32];
		comm_of(pid, comm, sizeof(comm));
		int rc = track_pages_epoch(&tp, epoch, frozen, &t.rep, t.ranges, t.runs, blob, bloblen,
					   comm, &s, err, sizeof(err));
		if (!stopping)
			read_done(pid);
		int vrc = 0;
		if (rc == 0 && last && verify)
			vrc = track_pages_verify(&tp, t.ranges, t.rep.nranges, err, sizeof(err));
		if (frozen)
			kill(pid, SIGCONT);
		free(blob);
		if (rc < 0) {
			fprintf(stderr, "uffd-record track: epoch %u: %s\n", epoch, err);
			free(t.raw);
			ret = 1;
			break;
		}
		uint64_t t1 = now_ns(CLOCK_MONOTONIC);
		if (!quiet || step) {
			uint32_t nnew = 0, nmode[4] = {0};
			for (uint32_t i = 0; i < t.rep.nranges; i++) {
				nnew += !!(t.ranges[i].flags & UCTL_TR_NEW);
				nmode[t.ranges[i].mode & 3]++;
			}
			printf("epoch %u: %" PRIu64 " changed pages (%" PRIu64 " data, %" PRIu64
			       " zero, %" PRIu64 " absent) in %u ranges (%u new; %u %s, %u %s, %u %s)"
			       "%s; shim %.1f ms, total %.1f ms\n",
			       epoch, s.changed, s.data, s.zero, s.absent, t.rep.nranges, nnew,
			       nmode[UCTL_TM_ASYNC], mode_name(UCTL_TM_ASYNC), nmode[UCTL_TM_SYNC],
			       mode_name(UCTL_TM_SYNC), nmode[UCTL_TM_ALL], mode_name(UCTL_TM_ALL),
			       frozen ? ", frozen" : "", t.rep.wp_ns / 1e6, (t1 - t0) / 1e6);
			fflush(stdout);
		}
		free(t.raw);
		if (vrc != 0) {
			fprintf(stderr, "uffd-record track: verify: %s\n", err);
			ret = 1;
		} else if (last && verify) {
			printf("verify: the chain matches the live memory (%" PRIu64 " pages present)\n",
			       tp.verified_pages);
		}
		if (last)
			break;
	}
	if (c.fd < 0 && uctl_connect(&c, pid, UCTL_DEFAULT_TIMEOUT_MS, err, sizeof(err)) != UCTL_R_OK)
		c.fd = -1;
	if (c.fd >= 0) {
		track_call(&c, UCTL_TRACK_STOP, NULL, 0, NULL, err, sizeof(err));
		uctl_close(&c);
	}
	track_pages_free(&tp);
	g_free(req);
	return ret;
}
