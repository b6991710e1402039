/* criu_uffd_snap - print what the kernel shows of the userfaultfd state of a
 * process tree, in a form two runs can be diffed on (tests/criu_demos.sh
 * takes one while CRIU holds the tasks frozen after the dump and one after
 * the restore, before the tasks run again).
 *
 *   criu_uffd_snap ROOT_PID
 *
 * For ROOT_PID and every descendant (by /proc/P/task/T/children), in pid
 * order: each stretch of VMAs with uffd VmFlags (adjacent VMAs with the same
 * flags merged), then the pages of those stretches whose pagemap uffd-wp bit
 * (57) is set, then the present ones (bit 63), as runs:
 *
 *   <pid> vma <start>-<end> <um,uw,ui>
 *   <pid> wp <start>-<end>
 *   <pid> present <start>-<end>
 *
 * Without arguments it is a TAP test that skips (make check runs every
 * program built from tests/). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096ULL

struct stretch {
	uint64_t start, end;
	unsigned flags; /* 1 um, 2 uw, 4 ui */
};

static unsigned vmflags_uffd(const char *v)
{
	unsigned f = 0;
	for (const char *p = v; *p;) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, "um", 2) && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			f |= 1;
		else if (!strncmp(p, "uw", 2) && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			f |= 2;
		else if (!strncmp(p, "ui", 2) && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			f |= 4;
		while (*p && *p != ' ')
			p++;
	}
	return f;
}

static size_t read_stretches(int pid, struct stretch *out, size_t cap)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	size_t n = 0;
	uint64_t s = 0, e = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;
		if (sscanf(line, "%llx-%llx ", &a, &b) == 2 && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' ')) {
			s = a;
			e = b;
			continue;
		}
		if (strncmp(line, "VmFlags:", 8))
			continue;
		unsigned fl = vmflags_uffd(line + 8);
		if (!fl)
			continue;
		if (n && out[n - 1].end == s && out[n - 1].flags == fl) {
			out[n - 1].end = e;
		} else if (n < cap) {
			out[n].start = s;
			out[n].end = e;
			out[n].flags = fl;
			n++;
		}
	}
	fclose(f);
	return n;
}

static void print_runs(int pid, int pmfd, const struct stretch *st, size_t n, int bit,
		       const char *what)
{
	uint64_t run_s = 0, run_e = 0;
	for (size_t i = 0; i < n; i++) {
		for (uint64_t a = st[i].start; a < st[i].end; a += PAGE) {
			uint64_t ent = 0;
			if (pread(pmfd, &ent, 8, (off_t)(a / PAGE * 8)) != 8)
				ent = 0;
			if (!((ent >> bit) & 1))
				continue;
			if (run_e == a) {
				run_e = a + PAGE;
				continue;
			}
			if (run_e)
				printf("%d %s %#" PRIx64 "-%#" PRIx64 "\n", pid, what, run_s, run_e);
			run_s = a;
			run_e = a + PAGE;
		}
	}
	if (run_e)
		printf("%d %s %#" PRIx64 "-%#" PRIx64 "\n", pid, what, run_s, run_e);
}

static void snap(int pid)
{
	static struct stretch st[4096];
	size_t n = read_stretches(pid, st, 4096);
	for (size_t i = 0; i < n; i++)
		printf("%d vma %#" PRIx64 "-%#" PRIx64 " %s%s%s\n", pid, st[i].start, st[i].end,
		       st[i].flags & 1 ? "um," : "", st[i].flags & 2 ? "uw," : "",
		       st[i].flags & 4 ? "ui," : "");
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	int pmfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pmfd < 0) {
		if (n)
			printf("%d pagemap-error %s\n", pid, strerror(errno));
		return;
	}
	print_runs(pid, pmfd, st, n, 57, "wp");
	print_runs(pid, pmfd, st, n, 63, "present");
	close(pmfd);
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Append pid's descendants (all threads' children) to list. */
static void descendants(int pid, int *list, size_t *n, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char cp[320];
		snprintf(cp, sizeof(cp), "/proc/%d/task/%s/children", pid, de->d_name);
		FILE *f = fopen(cp, "re");
		if (!f)
			continue;
		int c;
		while (fscanf(f, "%d", &c) == 1)
			if (*n < cap) {
				list[(*n)++] = c;
				descendants(c, list, n, cap);
			}
		fclose(f);
	}
	closedir(d);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		printf("1..0 # SKIP helper of tests/criu_demos.sh (usage: criu_uffd_snap ROOT_PID)\n");
		return 77;
	}
	int pids[1024];
	size_t n = 0;
	pids[n++] = atoi(argv[1]);
	descendants(pids[0], pids, &n, 1024);
	qsort(pids, n, sizeof(int), cmp_int);
	for (size_t i = 0; i < n; i++)
		snap(pids[i]);
	return 0;
}
