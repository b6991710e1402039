/* cmd_restore.c - uffd-replay -D DIR -- PROG ARGS: start PROG with the shim in
 * restore mode.  An image directory is handed to the shim as it is (PROG
 * replaces uffd-replay); an image chain is first flattened into a private
 * temporary directory, which stays until PROG exits (the shim reads it
 * before main), so uffd-replay then waits for PROG and passes on its exit
 * status. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chain.h"
#include "replay.h"
#include "shim_path.h"

/* LD_PRELOAD and UFFDSHIM_RESTORE for PROG; 0 or -1. */
static int restore_env(const char *dir)
{
	char lib[PATH_MAX], absdir[PATH_MAX];
	if (shim_library_path(lib, sizeof(lib)) < 0)
		return -1;
	if (!realpath(dir, absdir)) {
		fprintf(stderr, "uffd-replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	const char *old = getenv("LD_PRELOAD");
	char *preload = malloc(strlen(lib) + (old ? strlen(old) : 0) + 2);
	if (!preload)
		return -1;
	sprintf(preload, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "");
	setenv("LD_PRELOAD", preload, 1);
	setenv("UFFDSHIM_RESTORE", absdir, 1);
	free(preload);
	return 0;
}

/* Refuse a bad image here, with the full explanation, before PROG starts. */
static int precheck_image(const char *dir)
{
	struct image_dir d;
	char err[1024];
	if (image_dir_load(dir, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay: %s\n", err);
		return -1;
	}
	int rc = 0;
	const struct umi_epoch *e = d.img.epoch;
	if (e && !(e->flags & UMI_EPOCH_FLAT) && e->epoch) {
		fprintf(stderr, "uffd-replay: %s is epoch %u of an image chain: it holds only what "
			"changed since epoch %u; restore the chain directory instead\n", dir, e->epoch,
			e->epoch - 1);
		rc = -1;
	} else if (e && umi_check_runs(&d.img, &d.st, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay: %s: %s\n", dir, err);
		rc = -1;
	} else {
		print_skipped_ranges(stderr, &d.img);
	}
	image_dir_free(&d);
	return rc;
}

static int exec_prog(const char *dir, char **argv)
{
	if (restore_env(dir) < 0)
		return 2;
	execvp(argv[0], argv);
	fprintf(stderr, "uffd-replay: %s: %s\n", argv[0], strerror(errno));
	return 127;
}

/* Remove the temporary image directory (flat: files only). */
static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX];
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			unlink(p);
		}
	if (d)
		closedir(d);
	rmdir(dir);
}

static volatile sig_atomic_t child_pid;

static void forward(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* Run PROG restored from dir, wait for it, remove dir; PROG's status. */
static int run_and_wait(const char *dir, char **argv)
{
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
	struct sigaction sa = {.sa_handler = forward}, old[4];
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 4; i++)
		sigaction(sigs[i], &sa, &old[i]);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < 4; i++)
			sigaction(sigs[i], &old[i], NULL);
		_exit(exec_prog(dir, argv));
	}
	child_pid = pid;
	int status = 0;
	while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	remove_dir(dir);
	if (pid < 0) {
		fprintf(stderr, "uffd-replay: fork: %s\n", strerror(errno));
		return 2;
	}
	for (int i = 0; i < 4; i++)
		sigaction(sigs[i], &old[i], NULL);
	if (WIFSIGNALED(status)) {
		signal(WTERMSIG(status), SIG_DFL);
		raise(WTERMSIG(status));
		return 128 + WTERMSIG(status);
	}
	return WEXITSTATUS(status);
}

static int restore_chain(const char *dir, char **argv)
{
	struct chain c;
	char err[2048];
	if (chain_load(dir, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay: %s\n", err);
		return 1;
	}
	const char *t = getenv("TMPDIR");
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s/uffd-replay.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmp)) {
		fprintf(stderr, "uffd-replay: %s: %s\n", tmp, strerror(errno));
		chain_free(&c);
		return 2;
	}
	int rc = chain_flatten(&c, tmp, err, sizeof(err));
	if (rc < 0)
		fprintf(stderr, "uffd-replay: %s\n", err);
	else
		print_skipped_ranges(stderr, &c.ep[c.n - 1].img);
	chain_free(&c);
	if (rc < 0) {
		remove_dir(tmp);
		return 1;
	}
	return run_and_wait(tmp, argv);
}

int cmd_restore(const char *dir, char **argv)
{
	if (chain_is_chain_dir(dir))
		return restore_chain(dir, argv);
	if (precheck_image(dir) < 0)
		return 1;
	return exec_prog(dir, argv);
}
