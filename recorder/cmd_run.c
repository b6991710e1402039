/* cmd_run.c - uffd-record run [--trace FILE] -- PROG ARGS: run PROG with the
 * shim preloaded (children and exec'd programs inherit it), wait for it,
 * merge the trace segments, and exit with PROG's status. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "shim_path.h"

static void usage(void)
{
	fprintf(stderr, "usage: uffd-record run [--trace FILE] -- PROG [ARGS...]\n");
}

int cmd_run(int argc, char **argv)
{
	const char *trace = NULL;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if (!strcmp(argv[i], "--trace") && i + 1 < argc) {
			trace = argv[++i];
		} else if (!strncmp(argv[i], "--trace=", 8)) {
			trace = argv[i] + 8;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "uffd-record run: unknown option %s\n", argv[i]);
			usage();
			return 2;
		} else {
			break;
		}
	}
	if (i >= argc) {
		usage();
		return 2;
	}
	char lib[PATH_MAX];
	if (shim_library_path(lib, sizeof(lib)) < 0)
		return 2;
	char trace_abs[PATH_MAX] = "";
	if (trace) {
		/* The segments are "<trace>.<pid>": make the path absolute, since
		 * the program may change directory. */
		if (trace[0] == '/') {
			snprintf(trace_abs, sizeof(trace_abs), "%s", trace);
		} else {
			char cwd[PATH_MAX];
			if (!getcwd(cwd, sizeof(cwd)) ||
			    (size_t)snprintf(trace_abs, sizeof(trace_abs), "%s/%s", cwd, trace) >=
				    sizeof(trace_abs)) {
				fprintf(stderr, "uffd-record run: trace path too long\n");
				return 2;
			}
		}
		FILE *f = fopen(trace_abs, "w"); /* fail early if it cannot be written */
		if (!f) {
			fprintf(stderr, "uffd-record run: cannot write %s: %s\n", trace_abs,
				strerror(errno));
			return 2;
		}
		fclose(f);
		unlink(trace_abs);
	}
	const char *old = getenv("LD_PRELOAD");
	size_t n = strlen(lib) + (old ? strlen(old) + 1 : 0) + 1;
	char *preload = malloc(n);
	if (!preload)
		return 2;
	snprintf(preload, n, "%s%s%s", lib, old && *old ? ":" : "", old ? old : "");
	pid_t pid = fork();
	if (pid < 0) {
		perror("uffd-record run: fork");
		return 2;
	}
	if (pid == 0) {
		setenv("LD_PRELOAD", preload, 1);
		setenv("UFFDSHIM_CONTROL", "1", 1); /* status/track work before any uffd */
		if (trace)
			setenv("UFFDSHIM_TRACE", trace_abs, 1);
		execvp(argv[i], argv + i);
		fprintf(stderr, "uffd-record run: %s: %s\n", argv[i], strerror(errno));
		_exit(127);
	}
	free(preload);
	/* Let the terminal's ^C reach the program, not us. */
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			perror("uffd-record run: waitpid");
			return 2;
		}
	if (trace && trace_merge_segments(trace_abs) < 0)
		fprintf(stderr, "uffd-record run: could not merge the trace %s\n", trace_abs);
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}
