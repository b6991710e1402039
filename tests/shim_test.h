/* shim_test.h - header-only helpers for tests that run under libuffdshim.so.
 * Include after test_helpers.h.  Stable API (other tests depend on it):
 *
 *   const char *shim_build_dir(void)
 *       $UFFDSHIM_BUILD, else the directory above this executable's directory
 *       (build/tests/NAME -> build).  Never NULL.
 *   bool shim_loaded(void)
 *       libuffdshim.so is mapped into this process (/proc/self/maps).
 *   void shim_reexec_if_needed(char **argv)
 *       Call first thing in main(), before any TAP output.  If the shim is not
 *       loaded, re-executes /proc/self/exe with argv and
 *       LD_PRELOAD=<build>/libuffdshim.so (prepended to any existing
 *       LD_PRELOAD) and the marker UFFDSHIM_TEST_REEXEC=1.  Returns only when
 *       the shim is loaded; calls skip_all() when the library is missing or
 *       did not load after the re-exec.
 *   int shim_record_run(char *const args[], char *out, size_t outlen)
 *       Runs <build>/uffd-record args... natively (vfork + raw execve, no
 *       LD_PRELOAD, fds above 2 closed, stdin /dev/null), captures stdout and
 *       stderr together into out (NUL-terminated, truncated to outlen-1; out
 *       may be NULL).  Returns its exit status, 128+sig if killed, or -1 if it
 *       could not be run (errno set).  args[] excludes argv[0], NULL-ended.
 *       vfork: no FORK event even if a uffd has UFFD_FEATURE_EVENT_FORK.
 *   int shim_verify_self(const char *label)
 *       `uffd-record status <getpid()> --verify`; returns its exit code (0 =
 *       model and kernel agree; see recorder/cmd_status.c for 1/2/3).  On a
 *       non-zero result prints "<label>: ..." and the tool's output as TAP
 *       diagnostics (stderr).  Emits no test line itself: use
 *       is_int(shim_verify_self("x"), 0, "model verifies after x").
 *       The calling thread only waits; it must not be the thread that has to
 *       resolve a fault for the verifier (the verifier only reads /proc and
 *       talks to the shim's control thread, so normally nothing is needed).
 *   int shim_status_json_self(char *buf, size_t len)
 *       `uffd-record status <getpid()> --json` stdout+stderr into buf; returns
 *       its exit code (0 on success) or -1.
 *   long shim_json_count(const char *json, const char *needle)
 *       Occurrences of needle in json (e.g. "\"modes\":" = number of
 *       registered ranges over all uffds of a status --json).
 *   int shim_serve_fault(int fd, const struct uffd_msg *m, const void *page,
 *                        volatile int *missing, volatile int *wp)
 *       What a plain handler does with page fault m read from uffd fd: a WP
 *       fault unprotects its page, any other copies page (4 KiB) in.  Counts
 *       it in *wp or *missing (atomically) before the call that wakes the
 *       faulting thread; returns the ioctl's result (0, or -1 with errno).
 *   long long shim_json_sum(const char *json, const char *key)
 *       Sum of the integers after every "key": in json (e.g. "wp_pages" =
 *       write-protected pages over all uffds).  Keys given without quotes.
 *
 * Everything here is callable from any test; nothing exits except
 * shim_reexec_if_needed (exec or skip_all). */
#ifndef UFFDSHIM_SHIM_TEST_H
#define UFFDSHIM_SHIM_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_helpers.h"

#define SHIM_TEST_LIB "libuffdshim.so"
#define SHIM_TEST_MARKER "UFFDSHIM_TEST_REEXEC"

extern char **environ;

static inline const char *shim_build_dir(void)
{
	static char dir[PATH_MAX];
	const char *e = getenv("UFFDSHIM_BUILD");
	if (e && *e)
		return e;
	if (!dir[0]) {
		ssize_t n = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
		if (n <= 0) {
			strcpy(dir, "build");
			return dir;
		}
		dir[n] = 0;
		for (int k = 0; k < 2; k++) { /* strip "/NAME", then "/tests" */
			char *s = strrchr(dir, '/');
			if (s && s != dir)
				*s = 0;
		}
	}
	return dir;
}

static inline bool shim_loaded(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return false;
	char line[1024];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "/" SHIM_TEST_LIB) != NULL;
	fclose(f);
	return found;
}

static inline void shim_reexec_if_needed(char **argv)
{
	if (shim_loaded())
		return;
	if (getenv(SHIM_TEST_MARKER))
		skip_all("libuffdshim.so did not load after re-exec (LD_PRELOAD=%s)",
			 getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "");
	char lib[PATH_MAX];
	snprintf(lib, sizeof(lib), "%s/%s", shim_build_dir(), SHIM_TEST_LIB);
	if (access(lib, R_OK) != 0)
		skip_all("%s not found (build it, or set UFFDSHIM_BUILD)", lib);
	const char *old = getenv("LD_PRELOAD");
	char *pre = malloc(strlen(lib) + (old ? strlen(old) : 0) + 2);
	if (!pre)
		skip_all("out of memory");
	sprintf(pre, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "");
	setenv("LD_PRELOAD", pre, 1);
	setenv(SHIM_TEST_MARKER, "1", 1);
	fflush(NULL);
	execv("/proc/self/exe", argv);
	skip_all("re-exec under the shim failed: %s", strerror(errno));
}

/* Raw execve: the shim's execve wrapper would put LD_PRELOAD back. */
static inline int shim_record_run(char *const args[], char *out, size_t outlen)
{
	char tool[PATH_MAX];
	snprintf(tool, sizeof(tool), "%s/uffd-record", shim_build_dir());
	if (out && outlen)
		out[0] = 0;
	size_t na = 0, ne = 0;
	while (args && args[na])
		na++;
	while (environ && environ[ne])
		ne++;
	char **av = calloc(na + 2, sizeof(char *));
	char **ev = calloc(ne + 1, sizeof(char *));
	if (!av || !ev) {
		free(av);
		free(ev);
		errno = ENOMEM;
		return -1;
	}
	av[0] = tool;
	for (size_t i = 0; i < na; i++)
		av[i + 1] = args[i];
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 &&
		    strncmp(environ[i], "UFFDSHIM_HANDOFF=", 17) != 0 &&
		    strncmp(environ[i], SHIM_TEST_MARKER "=", sizeof(SHIM_TEST_MARKER)) != 0)
			ev[k++] = environ[i];
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		free(av);
		free(ev);
		return -1;
	}
	fflush(NULL);
	/* vfork, not fork: a fork would copy the address space, and with a uffd
	 * that has UFFD_FEATURE_EVENT_FORK and registered memory the kernel holds
	 * fork() until someone reads the FORK event - possibly never.  The child
	 * only makes raw system calls until execve. */
	pid_t pid = vfork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		free(av);
		free(ev);
		errno = e;
		return -1;
	}
	if (pid == 0) {
		int nul = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY, 0);
		if (nul >= 0)
			syscall(SYS_dup2, nul, 0);
		syscall(SYS_dup2, p[1], 1);
		syscall(SYS_dup2, p[1], 2);
		syscall(SYS_close_range, 3, ~0U, 0);
		syscall(SYS_execve, tool, av, ev);
		static const char msg[] = "shim_test.h: cannot execute uffd-record\n";
		syscall(SYS_write, 2, msg, sizeof(msg) - 1);
		syscall(SYS_exit_group, 127);
	}
	close(p[1]);
	size_t got = 0;
	char scratch[4096];
	for (;;) {
		char *dst = scratch;
		size_t room = sizeof(scratch);
		if (out && outlen && got + 1 < outlen) {
			dst = out + got;
			room = outlen - 1 - got;
		}
		ssize_t n = read(p[0], dst, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (dst != scratch)
			got += (size_t)n;
	}
	if (out && outlen)
		out[got] = 0;
	close(p[0]);
	free(av);
	free(ev);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static inline int shim_verify_self(const char *label)
{
	static char out[65536];
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	char *args[] = {"status", pid, "--verify", NULL};
	int rc = shim_record_run(args, out, sizeof(out));
	if (rc != 0) {
		if (rc < 0)
			diag("%s: cannot run %s/uffd-record: %s", label ? label : "verify",
			     shim_build_dir(), strerror(errno));
		else
			diag("%s: uffd-record status %s --verify exited %d:\n%s",
			     label ? label : "verify", pid, rc, out);
	}
	return rc;
}

static inline int shim_status_json_self(char *buf, size_t len)
{
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	char *args[] = {"status", pid, "--json", NULL};
	return shim_record_run(args, buf, len);
}

static inline long shim_json_count(const char *json, const char *needle)
{
	long n = 0;
	size_t l = strlen(needle);
	if (!json || !l)
		return 0;
	for (const char *s = strstr(json, needle); s; s = strstr(s + l, needle))
		n++;
	return n;
}

static inline long long shim_json_sum(const char *json, const char *key)
{
	char pat[128];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	size_t l = strlen(pat);
	long long sum = 0;
	if (!json)
		return 0;
	for (const char *s = strstr(json, pat); s; s = strstr(s + l, pat))
		sum += strtoll(s + l, NULL, 10);
	return sum;
}

static inline int shim_serve_fault(int fd, const struct uffd_msg *m, const void *page,
				   volatile int *missing, volatile int *wp)
{
	uint64_t a = m->arg.pagefault.address & ~(uint64_t)4095;
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
		__atomic_add_fetch(wp, 1, __ATOMIC_SEQ_CST);
		struct uffdio_writeprotect w = {{a, 4096}, 0};
		return ioctl(fd, UFFDIO_WRITEPROTECT, &w);
	}
	__atomic_add_fetch(missing, 1, __ATOMIC_SEQ_CST);
	struct uffdio_copy c = {.dst = a, .src = (uint64_t)(uintptr_t)page, .len = 4096};
	return ioctl(fd, UFFDIO_COPY, &c);
}

/* `uffd-record track ARGS...` without the shim, its stdin and stdout on
 * pipes (t->in: a newline cuts an epoch with --step, closing it stops the
 * tracker; t->out: its epoch lines).  0, or -1 with errno. */
struct shim_tracker {
	pid_t pid;
	FILE *in, *out;
};

static inline int shim_tracker_start(struct shim_tracker *t, char *const args[])
{
	extern char **environ;
	char tool[PATH_MAX];
	snprintf(tool, sizeof(tool), "%s/uffd-record", shim_build_dir());
	char *av[32];
	int na = 0;
	av[na++] = tool;
	for (int i = 0; args[i] && na < 31; i++)
		av[na++] = args[i];
	av[na] = NULL;
	char **ev = calloc(256, sizeof(char *));
	int k = 0;
	for (int i = 0; ev && environ[i] && k < 255; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) &&
		    strncmp(environ[i], SHIM_TEST_MARKER "=", sizeof(SHIM_TEST_MARKER)))
			ev[k++] = environ[i];
	int pin[2], pout[2];
	if (!ev || pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0) {
		free(ev);
		return -1;
	}
	fflush(NULL);
	pid_t pid = vfork();
	if (pid == 0) {
		syscall(SYS_dup2, pin[0], 0);
		syscall(SYS_dup2, pout[1], 1);
		syscall(SYS_execve, tool, av, ev);
		syscall(SYS_exit_group, 127);
	}
	free(ev);
	close(pin[0]);
	close(pout[1]);
	if (pid < 0)
		return -1;
	t->pid = pid;
	t->in = fdopen(pin[1], "w");
	t->out = fdopen(pout[0], "r");
	return 0;
}

/* Read the tracker's output until a line that starts with prefix (copied to
 * line); every line read is a TAP note.  false at EOF. */
static inline bool shim_tracker_expect(struct shim_tracker *t, const char *prefix, char *line,
				       size_t len)
{
	while (fgets(line, (int)len, t->out)) {
		note("tracker: %s", line);
		if (!strncmp(line, prefix, strlen(prefix)))
			return true;
	}
	return false;
}

#endif
