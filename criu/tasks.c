/* tasks.c - what the dump learns about each task it seizes: the shim's
 * state (taken with QUIESCE, before the task is frozen) and, once frozen,
 * its userfaultfds and which of its VMAs carry uffd flags. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ucr.h"

static struct ucr_task **tasks;
static size_t ntasks, cap;

struct ucr_task *ucr_task_get(pid_t pid, bool create)
{
	for (size_t i = 0; i < ntasks; i++)
		if (tasks[i]->pid == pid)
			return tasks[i];
	if (!create)
		return NULL;
	if (ntasks == cap) {
		size_t ncap = cap ? cap * 2 : 16;
		struct ucr_task **n = realloc(tasks, ncap * sizeof(*n));
		if (!n)
			return NULL;
		tasks = n;
		cap = ncap;
	}
	struct ucr_task *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->pid = pid;
	t->conn.fd = -1;
	um_state_init(&t->st, pid);
	um_state_init(&t->fb, pid);
	tasks[ntasks++] = t;
	return t;
}

size_t ucr_task_count(void)
{
	return ntasks;
}

struct ucr_task *ucr_task_at(size_t i)
{
	return i < ntasks ? tasks[i] : NULL;
}

void ucr_task_release(struct ucr_task *t)
{
	if (t->conn.fd >= 0) {
		uctl_close(&t->conn);
		ucr_debug("pid %d: control connection closed (the shim reopens its gate when "
			  "the task runs again)", t->pid);
	}
}

void ucr_tasks_free(void)
{
	for (size_t i = 0; i < ntasks; i++) {
		struct ucr_task *t = tasks[i];
		ucr_task_release(t);
		free(t->blob);
		um_state_free(&t->st);
		um_state_free(&t->fb);
		free(t->ufds);
		free(t);
	}
	free(tasks);
	tasks = NULL;
	ntasks = cap = 0;
}

/* ---- small helpers ---- */

int ucr_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

int ucr_pidfd_getfd(int pidfd, int fd)
{
	return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
}

bool ucr_fd_is_uffd(pid_t pid, int fd)
{
	char link[256];
	if (pid)
		return pf_fd_link(pid, fd, link, sizeof(link)) == 0 && !strcmp(link, PF_UFFD_LINK);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = 0;
	return !strcmp(link, PF_UFFD_LINK);
}

/* ---- what the kernel shows ---- */

int ucr_task_scan(struct ucr_task *t, char *err, size_t errlen)
{
	int *fds;
	size_t n;
	free(t->ufds);
	t->ufds = NULL;
	t->nufds = 0;
	if (pf_list_fds(t->pid, &fds, &n, err, errlen) < 0)
		return -1;
	t->ufds = calloc(n ? n : 1, sizeof(*t->ufds));
	if (!t->ufds) {
		free(fds);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (!ucr_fd_is_uffd(t->pid, fds[i]))
			continue;
		struct ucr_ufd *u = &t->ufds[t->nufds];
		u->fd = fds[i];
		if (pf_fd_ino(t->pid, fds[i], &u->ino) < 0 ||
		    pf_read_fdinfo(t->pid, fds[i], &u->info, err, errlen) < 0) {
			if (errno == ENOENT)
				continue; /* closed meanwhile: the task is not frozen yet */
			free(fds);
			return -1;
		}
		u->fd_flags = (u->info.flags & O_CLOEXEC) ? FD_CLOEXEC : 0;
		t->nufds++;
	}
	free(fds);
	struct pf_vmas vs;
	if (pf_read_smaps(t->pid, &vs, err, errlen) < 0)
		return -1;
	t->uffd_vma_flags = 0;
	for (size_t i = 0; i < vs.n; i++)
		t->uffd_vma_flags |= vs.v[i].uffd_flags;
	pf_vmas_free(&vs);
	t->scanned = true;
	return 0;
}

const struct ucr_ufd *ucr_task_ufd(const struct ucr_task *t, uint64_t ino)
{
	for (size_t i = 0; i < t->nufds; i++)
		if (t->ufds[i].ino == ino)
			return &t->ufds[i];
	return NULL;
}

size_t ucr_task_nuffds(const struct ucr_task *t)
{
	size_t n = 0;
	for (size_t i = 0; i < t->nufds; i++) {
		bool seen = false;
		for (size_t k = 0; k < i; k++)
			seen |= t->ufds[k].ino == t->ufds[i].ino;
		n += !seen;
	}
	return n;
}

/* ---- holding the shim ---- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Is the held state a good point to dump?  No fault the app has read may be
 * unresolved (after restore the faulting thread faults again and the app's
 * handler would get the same fault twice), and every uffd fd must be the
 * model's.  Returns true, or false with the reason. */
static bool settled(const struct ucr_task *t, const struct um_state *st, char *why, size_t len)
{
	for (uint32_t i = 0; i < st->nuffds; i++) {
		if (st->uffds[i]->npending) {
			snprintf(why, len, "uffd %u has %u fault(s) read by the app and not resolved",
				 st->uffds[i]->id, st->uffds[i]->npending);
			return false;
		}
	}
	int *fds;
	size_t n;
	char err[256];
	if (pf_list_fds(t->pid, &fds, &n, err, sizeof(err)) < 0) {
		snprintf(why, len, "%s", err);
		return false;
	}
	bool ok = true;
	for (size_t i = 0; i < n && ok; i++) {
		if (!ucr_fd_is_uffd(t->pid, fds[i]))
			continue;
		uint64_t ino = 0;
		struct pf_fdinfo fi;
		if (pf_fd_ino(t->pid, fds[i], &ino) < 0 ||
		    pf_read_fdinfo(t->pid, fds[i], &fi, err, sizeof(err)) < 0)
			continue;
		const struct um_uffd *u = um_uffd_by_fd(st, fds[i]);
		if (!u || u->ino != ino) {
			snprintf(why, len, "fd %d is a userfaultfd (inode %llu) the shim's model does "
				 "not list yet", fds[i], (unsigned long long)ino);
			ok = false;
		} else if (fi.has_uffd && fi.total > fi.pending) {
			snprintf(why, len, "fd %d: %llu fault(s) read by the app and not resolved",
				 fds[i], (unsigned long long)(fi.total - fi.pending));
			ok = false;
		}
	}
	free(fds);
	return ok;
}

/* How long PAUSE_DEVICES waits for a settled point (env
 * UFFDSHIM_CRIU_SETTLE_MS, default 1000 ms). */
static int settle_ms(void)
{
	const char *e = getenv("UFFDSHIM_CRIU_SETTLE_MS");
	if (e && *e) {
		char *end;
		long v = strtol(e, &end, 10);
		if (!*end && v >= 0 && v <= 60000)
			return (int)v;
	}
	return 1000;
}

int ucr_task_quiesce(struct ucr_task *t, char *err, size_t errlen)
{
	char e2[512];
	/* The shim serves one connection at a time and drops one idle for 5 s:
	 * wait longer than that, so that another tool's idle connection delays
	 * the dump instead of failing it (CRIU's seize alarm is 10 s). */
	int rc = uctl_connect(&t->conn, t->pid, 7000, e2, sizeof(e2));
	if (rc == UCTL_R_NOSERVER)
		return 0;
	if (rc != UCTL_R_OK) {
		snprintf(err, errlen, "pid %d: cannot reach its uffdshim control socket: %s", t->pid,
			 e2);
		return -1;
	}
	int64_t deadline = now_ms() + settle_ms();
	for (int attempt = 1;; attempt++) {
		int32_t status;
		void *buf;
		uint32_t len;
		rc = uctl_call(&t->conn, UCTL_QUIESCE, NULL, 0, &status, &buf, &len, e2, sizeof(e2));
		if (rc != UCTL_R_OK) {
			free(buf);
			uctl_close(&t->conn);
			snprintf(err, errlen, "pid %d: QUIESCE failed: %s%s", t->pid, e2,
				 status == -ETIMEDOUT ? " (an operation of the app stayed inside a "
				 "uffd call for 2 s)" : "");
			return -1;
		}
		struct um_state st;
		if (um_deserialize(&st, buf, len, e2, sizeof(e2)) < 0) {
			free(buf);
			uctl_close(&t->conn);
			snprintf(err, errlen, "pid %d: the shim's state blob is invalid: %s", t->pid, e2);
			return -1;
		}
		char why[300] = "";
		bool ok = settled(t, &st, why, sizeof(why));
		if (ok || now_ms() >= deadline) {
			free(t->blob);
			um_state_free(&t->st);
			t->blob = buf;
			t->bloblen = len;
			t->st = st;
			t->shimmed = true;
			t->settled = ok;
			if (ok)
				ucr_info("pid %d: shim quiesced (%u uffd%s, attempt %d)", t->pid, st.nuffds,
					 st.nuffds == 1 ? "" : "s", attempt);
			else
				ucr_warn("pid %d: no settled point within %d ms (%s): dumping anyway; "
					 "after restore the app's handler sees that fault again", t->pid,
					 settle_ms(), why);
			return 1;
		}
		ucr_debug("pid %d: attempt %d not settled (%s), resuming briefly", t->pid, attempt,
			  why);
		um_state_free(&st);
		free(buf);
		void *rb;
		uint32_t rl;
		rc = uctl_call(&t->conn, UCTL_RESUME, NULL, 0, &status, &rb, &rl, e2, sizeof(e2));
		free(rb);
		if (rc != UCTL_R_OK) {
			uctl_close(&t->conn);
			snprintf(err, errlen, "pid %d: RESUME failed: %s", t->pid, e2);
			return -1;
		}
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
