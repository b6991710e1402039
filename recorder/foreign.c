/* foreign.c - find the uffds other shimmed processes hold on a pid's memory. */
#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_client.h"
#include "foreign.h"

static bool holds_uffd(pid_t q)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)q);
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char lp[PATH_MAX], link[64];
		snprintf(lp, sizeof(lp), "%s/%s", path, e->d_name);
		ssize_t n = readlink(lp, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = 0;
			found = strcmp(link, "anon_inode:[userfaultfd]") == 0;
		}
	}
	closedir(d);
	return found;
}

int gather_foreign_uffds(pid_t pid, struct um_state *extra)
{
	um_state_init(extra, pid);
	DIR *proc = opendir("/proc");
	if (!proc)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(proc))) {
		char *end;
		long q = strtol(e->d_name, &end, 10);
		if (*end || q <= 0 || q == pid || q == getpid() || !holds_uffd((pid_t)q))
			continue;
		struct uctl_conn c;
		char err[256];
		if (uctl_connect(&c, (pid_t)q, 1000, err, sizeof(err)) != UCTL_R_OK)
			continue;
		struct um_state st;
		int32_t status;
		if (uctl_call_state(&c, UCTL_STATE, NULL, 0, &st, &status, err, sizeof(err)) ==
		    UCTL_R_OK) {
			for (uint32_t i = 0; i < st.nuffds; i++) {
				if (st.uffds[i]->mm_pid != pid)
					continue;
				/* The same uffd may be held by several processes:
				 * keep one copy (the most recently changed). */
				struct um_uffd *have = um_uffd_by_ino(extra, st.uffds[i]->ino);
				if (have && have->last_change_ns >= st.uffds[i]->last_change_ns)
					continue;
				if (have)
					um_uffd_remove(extra, have);
				if (um_uffd_clone(extra, st.uffds[i]))
					n++;
			}
			um_state_free(&st);
		}
		uctl_close(&c);
	}
	closedir(proc);
	return n;
}
