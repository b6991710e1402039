/* cmd_status.c - uffd-record status PID [--json] [--verify] [--timeout SECONDS]
 *
 * Shows the shim's model of every userfaultfd of a running process, taken
 * over its control socket (include/uffdshim_ctl.h), and with --verify checks
 * that model against what the kernel shows in /proc (verify.h).  With
 * --verify the state is taken with UCTL_QUIESCE, so the app's uffd operations
 * are held while /proc is read, and released (UCTL_RESUME) right after.
 *
 * Exit status:
 *   0  shown (and, with --verify, model and kernel agree); also when the
 *      process is shimmed but has not used userfaultfd yet
 *   1  --verify found disagreements
 *   2  usage error; garbage or invalid reply; no reply in time; /proc could
 *      not be read for --verify; internal error
 *   3  the process cannot be inspected: no such process, not running under
 *      uffdshim, control socket refused (EPERM: other uid), other network
 *      namespace, /proc/PID not readable, process exited during --verify */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "commands.h"
#include "ctl_client.h"
#include "foreign.h"
#include "track_status.h"
#include "procfs.h"
#include "status_print.h"
#include "verify.h"

#define SHIM_LIB "libuffdshim.so"

enum { EX_OK = 0, EX_DISAGREE = 1, EX_ERROR = 2, EX_UNAVAILABLE = 3 };

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool gone(int e)
{
	return e == ENOENT || e == ESRCH;
}

/* Is pid in another network namespace than ours?  (Abstract unix sockets
 * belong to one.)  Unknown counts as "no". */
static bool other_netns(pid_t pid)
{
	char a[64], b[64], p[64];
	ssize_t n1 = readlink("/proc/self/ns/net", a, sizeof(a) - 1);
	snprintf(p, sizeof(p), "/proc/%d/ns/net", (int)pid);
	ssize_t n2 = readlink(p, b, sizeof(b) - 1);
	if (n1 <= 0 || n2 <= 0)
		return false;
	a[n1] = b[n2] = 0;
	return strcmp(a, b) != 0;
}

/* The output of a process that is shimmed but has no control socket yet:
 * its model is empty. */
static int not_used(pid_t pid, bool json, bool verify)
{
	struct verify_report vr;
	struct um_state st;
	int vrc = 0;
	um_state_init(&st, pid);
	if (verify) {
		struct um_state foreign;
		gather_foreign_uffds(pid, &foreign);
		vrc = verify_state_with(&st, &foreign, pid, &vr);
		um_state_free(&foreign);
	}
	if (json) {
		GString *o = g_string_new(NULL);
		g_string_append_printf(o, "{\"pid\":%d,\"shimmed\":true,\"uffds\":[]", (int)pid);
		if (verify) {
			g_string_append_c(o, ',');
			status_print_json_verify(o, &vr);
		}
		g_string_append(o, "}\n");
		fputs(o->str, stdout);
		g_string_free(o, TRUE);
	} else {
		printf("pid %d is shimmed and has not used userfaultfd\n", (int)pid);
		if (verify)
			verify_report_print(&vr, stdout);
	}
	um_state_free(&st);
	if (!verify)
		return EX_OK;
	int ex = vrc < 0 ? (gone(vr.err_errno) ? EX_UNAVAILABLE : EX_ERROR)
			 : vrc ? EX_DISAGREE : EX_OK;
	verify_report_free(&vr);
	return ex;
}

int cmd_status(int argc, char **argv)
{
	gboolean opt_json = FALSE, opt_verify = FALSE;
	gdouble opt_timeout = UCTL_DEFAULT_TIMEOUT_MS / 1000.0;
	GOptionEntry entries[] = {
		{"json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "Print one JSON object", NULL},
		{"verify", 0, 0, G_OPTION_ARG_NONE, &opt_verify,
		 "Check the model against the kernel (/proc/PID/smaps, pagemap, fdinfo, fd); "
		 "exit 1 on any disagreement", NULL},
		{"timeout", 0, 0, G_OPTION_ARG_DOUBLE, &opt_timeout,
		 "Seconds to wait for the control socket (default 5)", "SECONDS"},
		{NULL, 0, 0, 0, NULL, NULL, NULL},
	};
	GOptionContext *ctx = g_option_context_new("PID - show the uffd state of a shimmed process");
	g_option_context_add_main_entries(ctx, entries, NULL);
	g_option_context_set_summary(ctx,
		"Exit status: 0 shown / verified, 1 verify disagreements, 2 error or bad reply,\n"
		"3 process not available (gone, not shimmed, refused).");
	GError *gerr = NULL;
	char **args = g_new0(char *, argc + 1);
	for (int i = 0; i < argc; i++)
		args[i] = argv[i];
	int nargs = argc;
	char **pargs = args;
	if (!g_option_context_parse(ctx, &nargs, &pargs, &gerr)) {
		fprintf(stderr, "uffd-record status: %s\n", gerr->message);
		g_error_free(gerr);
		g_option_context_free(ctx);
		g_free(args);
		return EX_ERROR;
	}
	g_option_context_free(ctx);
	if (nargs != 2) {
		fprintf(stderr, "usage: uffd-record status PID [--json] [--verify] "
			"[--timeout SECONDS]\n");
		g_free(args);
		return EX_ERROR;
	}
	char *end;
	errno = 0;
	long lp = strtol(pargs[1], &end, 10);
	if (errno || *end || end == pargs[1] || lp <= 0 || lp > INT_MAX) {
		fprintf(stderr, "uffd-record status: \"%s\" is not a pid\n", pargs[1]);
		g_free(args);
		return EX_ERROR;
	}
	g_free(args);
	if (!(opt_timeout > 0) || opt_timeout > 3600) {
		fprintf(stderr, "uffd-record status: --timeout must be in (0, 3600] seconds\n");
		return EX_ERROR;
	}
	int timeout_ms = (int)(opt_timeout * 1000 + 0.5);
	if (timeout_ms < 1)
		timeout_ms = 1;
	pid_t pid = (pid_t)lp;

	/* Alive? */
	struct pf_status ps;
	if (pf_read_status(pid, &ps) < 0) {
		if (gone(errno))
			fprintf(stderr, "uffd-record: pid %d: no such process\n", (int)pid);
		else
			fprintf(stderr, "uffd-record: pid %d: cannot read /proc/%d/status: %s\n",
				(int)pid, (int)pid, strerror(errno));
		return EX_UNAVAILABLE;
	}
	if (ps.state == 'Z' || ps.state == 'X') {
		fprintf(stderr, "uffd-record: pid %d: no such process (it has exited; a zombie "
			"waiting for its parent)\n", (int)pid);
		return EX_UNAVAILABLE;
	}
	if (ps.tgid > 0 && ps.tgid != pid) {
		fprintf(stderr, "uffd-record: note: %d is a thread of process %d; showing process "
			"%d\n", (int)pid, (int)ps.tgid, (int)ps.tgid);
		pid = ps.tgid;
		if (pf_read_status(pid, &ps) < 0) {
			fprintf(stderr, "uffd-record: pid %d: no such process\n", (int)pid);
			return EX_UNAVAILABLE;
		}
	}
	const char *comm = ps.name[0] ? ps.name : NULL;

	/* Shimmed? */
	struct pf_vmas maps;
	char err[512];
	if (pf_read_maps(pid, &maps, err, sizeof(err)) < 0) {
		if (gone(errno))
			fprintf(stderr, "uffd-record: pid %d: no such process\n", (int)pid);
		else
			fprintf(stderr, "uffd-record: pid %d: %s%s\n", (int)pid, err,
				errno == EACCES || errno == EPERM ?
				" (run uffd-record as the process's user, or as root)" : "");
		return EX_UNAVAILABLE;
	}
	int shimmed = pf_maps_has_lib(&maps, SHIM_LIB);
	bool no_maps = maps.n == 0;
	pf_vmas_free(&maps);
	if (!shimmed) {
		if (no_maps) /* a kernel thread, or exiting */
			fprintf(stderr, "uffd-record: pid %d is not running under uffdshim (it has "
				"no user memory: a kernel thread or an exiting process)\n", (int)pid);
		else
			fprintf(stderr, "uffd-record: pid %d is not running under uffdshim (%s is "
				"not loaded; start it with `uffd-record run -- PROG`)\n", (int)pid,
				SHIM_LIB);
		return EX_UNAVAILABLE;
	}

	/* Connect. */
	pid_t sock_pid = ps.nspid_inner > 0 ? ps.nspid_inner : pid;
	struct uctl_conn conn;
	int rc = uctl_connect(&conn, sock_pid, timeout_ms, err, sizeof(err));
	if (rc == UCTL_R_NOSERVER) {
		if (other_netns(pid)) {
			fprintf(stderr, "uffd-record: pid %d is in another network namespace: its "
				"control socket cannot be reached from here (run uffd-record inside "
				"that namespace, e.g. with nsenter --net --target %d)\n", (int)pid,
				(int)pid);
			return EX_UNAVAILABLE;
		}
		return not_used(pid, opt_json, opt_verify);
	}
	if (rc != UCTL_R_OK) {
		fprintf(stderr, "uffd-record: pid %d: %s\n", (int)pid, err);
		return rc == UCTL_R_DENIED ? EX_UNAVAILABLE : EX_ERROR;
	}

	/* Ask: dirty tracking first (not allowed while quiesced). */
	struct track_info trk;
	if (track_info_fetch(&conn, &trk) < 0) { /* an older shim closed on it */
		uctl_close(&conn);
		rc = uctl_connect(&conn, sock_pid, timeout_ms, err, sizeof(err));
		if (rc != UCTL_R_OK) {
			fprintf(stderr, "uffd-record: pid %d: %s\n", (int)pid, err);
			return EX_ERROR;
		}
	}
	struct um_state st;
	int32_t status = 0;
	bool quiesced = false;
	char note[256] = "";
	if (opt_verify) {
		rc = uctl_call_state(&conn, UCTL_QUIESCE, NULL, 0, &st, &status, err, sizeof(err));
		if (rc == UCTL_R_STATUS && (status == -EINVAL || status == -EOPNOTSUPP ||
					    status == -ENOSYS || status == -EPROTO ||
					    status == -ETIMEDOUT || status == -EBUSY)) {
			/* A shim without QUIESCE, or one that could not hold the app
			 * (an operation stuck in the kernel): check it running.  A
			 * shim closes after an op it does not know, so reconnect. */
			uctl_close(&conn);
			if (status == -ETIMEDOUT || status == -EBUSY)
				snprintf(note, sizeof(note), "the shim could not hold the app's uffd "
					 "operations (QUIESCE: %s): the process kept running while it was "
					 "checked", strerror(-status));
			else
				snprintf(note, sizeof(note), "the shim does not support QUIESCE (%s): "
					 "the process kept running while it was checked", strerror(-status));
			rc = uctl_connect(&conn, sock_pid, timeout_ms, err, sizeof(err));
			if (rc == UCTL_R_OK)
				rc = uctl_call_state(&conn, UCTL_STATE, NULL, 0, &st, &status, err,
						     sizeof(err));
		} else if (rc == UCTL_R_OK) {
			quiesced = true;
		}
	} else {
		rc = uctl_call_state(&conn, UCTL_STATE, NULL, 0, &st, &status, err, sizeof(err));
	}
	if (rc != UCTL_R_OK) {
		uctl_close(&conn);
		if (rc == UCTL_R_DENIED) {
			uid_t me = geteuid();
			if (me != ps.uid)
				fprintf(stderr, "uffd-record: pid %d: the shim refused the connection "
					"(EPERM): it answers only its own uid; the process runs as uid "
					"%u, uffd-record as uid %u; run uffd-record as uid %u\n", (int)pid,
					(unsigned)ps.uid, (unsigned)me, (unsigned)ps.uid);
			else
				fprintf(stderr, "uffd-record: pid %d: the shim refused the connection "
					"(EPERM) although uffd-record runs as the process's uid %u\n",
					(int)pid, (unsigned)me);
			return EX_UNAVAILABLE;
		}
		if (rc == UCTL_R_TIMEOUT && (ps.state == 'T' || ps.state == 't'))
			fprintf(stderr, "uffd-record: pid %d: %s (the process is stopped)\n",
				(int)pid, err);
		else
			fprintf(stderr, "uffd-record: pid %d: %s\n", (int)pid, err);
		return EX_ERROR;
	}
	if (st.pid != sock_pid)
		fprintf(stderr, "uffd-record: note: the state of pid %d names pid %d\n", (int)pid,
			(int)st.pid);

	/* Verify while the app's uffd operations are held, then let it go. */
	struct verify_report vr;
	int vrc = 0;
	if (opt_verify) {
		struct um_state foreign;
		gather_foreign_uffds(pid, &foreign);
		struct verify_tracking ov = track_info_overlay(&trk);
		vrc = verify_state_tracked(&st, &foreign, &ov, pid, &vr);
		um_state_free(&foreign);
	}
	if (quiesced) {
		int32_t rs;
		void *rb;
		uint32_t rl;
		char e2[256];
		int r2 = uctl_call(&conn, UCTL_RESUME, NULL, 0, &rs, &rb, &rl, e2, sizeof(e2));
		free(rb);
		if (r2 != UCTL_R_OK)
			fprintf(stderr, "uffd-record: note: pid %d: RESUME: %s (closing the "
				"connection resumes it too)\n", (int)pid, e2);
	}
	uctl_close(&conn);

	struct status_info info = {.pid = pid, .comm = comm, .now_ns = mono_ns(),
				   .quiesced = quiesced};
	GString *o = g_string_new(NULL);
	if (opt_json) {
		status_print_json(o, &st, &info, opt_verify ? &vr : NULL);
		/* add "tracking" to the object ("...}\n") */
		g_string_truncate(o, o->len - 2);
		g_string_append_c(o, ',');
		track_info_json(o, &trk);
		g_string_append(o, "}\n");
	} else {
		status_print_text(o, &st, &info);
		track_info_text(o, &trk);
	}
	track_info_free(&trk);
	fputs(o->str, stdout);
	g_string_free(o, TRUE);
	if (opt_verify && !opt_json) {
		printf("\n");
		if (note[0])
			printf("verify: note: %s\n", note);
		verify_report_print(&vr, stdout);
	} else if (opt_verify && note[0]) {
		fprintf(stderr, "uffd-record: note: %s\n", note);
	}
	um_state_free(&st);
	int ex = EX_OK;
	if (opt_verify) {
		if (vrc < 0) {
			ex = gone(vr.err_errno) ? EX_UNAVAILABLE : EX_ERROR;
			if (opt_json)
				fprintf(stderr, "uffd-record: pid %d: verify could not complete: %s\n",
					(int)pid, vr.error);
		} else if (vrc) {
			ex = EX_DISAGREE;
		}
		verify_report_free(&vr);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "uffd-record: writing the output failed\n");
		return EX_ERROR;
	}
	return ex;
}
