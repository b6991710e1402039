/* shim_path.c - where libuffdshim.so is: $UFFDSHIM_LIB, else beside the tool. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim_path.h"

int shim_library_path(char *buf, size_t len)
{
	const char *env = getenv("UFFDSHIM_LIB");
	if (env && *env) {
		if (!realpath(env, buf) || access(buf, R_OK) != 0) {
			fprintf(stderr, "uffdshim: UFFDSHIM_LIB=%s: not readable\n", env);
			return -1;
		}
		return 0;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -1;
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (!slash)
		return -1;
	*slash = 0;
	static const char *const rel[] = {"libuffdshim.so", "../lib/uffdshim/libuffdshim.so", NULL};
	for (int i = 0; rel[i]; i++) {
		if ((size_t)snprintf(buf, len, "%s/%s", exe, rel[i]) >= len)
			continue;
		if (access(buf, R_OK) == 0)
			return 0;
	}
	fprintf(stderr, "uffdshim: libuffdshim.so not found beside %s (set UFFDSHIM_LIB)\n", exe);
	return -1;
}
