/* uffd-replay - recreate checkpointed uffd state.
 *
 *   uffd-replay check DIR             validate an image and explain what is wrong
 *   uffd-replay -D DIR -- PROG ARGS   start PROG under the shim in restore mode:
 *                                     before its main() runs, the image's memory,
 *                                     uffds, registrations and write-protection
 *                                     exist again (see include/uffdshim.h) */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "image_io.h"
#include "uffd_compat.h"
#include "shim_path.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: uffd-replay check DIR\n"
		   "       uffd-replay -D DIR -- PROG [ARGS...]\n");
}

static int cmd_check(const char *dir)
{
	struct image_dir d;
	char err[1024];
	if (image_dir_load(dir, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay check: %s\n", err);
		return 1;
	}
	/* Cross-checks the container cannot make on its own. */
	int bad = 0;
	uint64_t data_pages = 0, zero_pages = 0, ranges = 0, wp = 0;
	for (size_t i = 0; i < d.img.nruns; i++) {
		const struct umi_run *r = &d.img.runs[i];
		const struct um_uffd *u = um_uffd_by_id(&d.st, r->uffd_id);
		uint64_t end = r->addr + r->npages * UM_PAGE_SIZE;
		bool inside = false;
		for (uint32_t k = 0; u && k < u->nranges; k++)
			inside |= r->addr >= u->ranges[k].start && end <= u->ranges[k].end;
		if (!inside) {
			fprintf(stderr, "uffd-replay check: %s: memory run %zu [%#llx, %#llx) is not "
				"inside a registered range of uffd %u\n", dir, i,
				(unsigned long long)r->addr, (unsigned long long)end, r->uffd_id);
			bad++;
		}
		if (r->kind == UMI_RUN_DATA) {
			data_pages += r->npages;
			/* verify the page data checksum */
			size_t len = r->npages * UM_PAGE_SIZE;
			char *buf = malloc(len);
			if (!buf || pread(d.pages_fd, buf, len, (off_t)r->offset) != (ssize_t)len ||
			    umi_run_hash(buf, r->npages) != r->crc) {
				fprintf(stderr, "uffd-replay check: %s: page data of run %zu is %s\n",
					dir, i, buf ? "corrupt (checksum mismatch)" : "unreadable");
				bad++;
			}
			free(buf);
		} else {
			zero_pages += r->npages;
		}
	}
	/* Features this kernel does not offer: a restore would be refused. */
	uint64_t offered = 0;
	{
		int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
		struct uffdio_api api = {.api = UFFD_API};
		if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) == 0)
			offered = api.features;
		if (fd >= 0)
			close(fd);
	}
	for (uint32_t i = 0; i < d.st.nuffds; i++) {
		const struct um_uffd *u = d.st.uffds[i];
		if (offered && (u->features_requested & ~offered)) {
			fprintf(stderr, "uffd-replay check: %s: uffd %u needs features %#llx that this "
				"kernel does not offer (it offers %#llx)\n", dir, u->id,
				(unsigned long long)(u->features_requested & ~offered),
				(unsigned long long)offered);
			bad++;
		}
	}
	for (uint32_t i = 0; i < d.st.nuffds; i++) {
		ranges += d.st.uffds[i]->nranges;
		wp += um_wp_count(&d.st.uffds[i]->wp);
		if (d.st.uffds[i]->mm_pid != d.img.hdr.pid)
			printf("note: uffd %u serves pid %d's memory: a relaunch restore of this image "
			       "will refuse it\n", d.st.uffds[i]->id, d.st.uffds[i]->mm_pid);
	}
	if (!bad)
		printf("%s: OK: image format %u of pid %d, %u uffds, %llu ranges, %llu write-protected "
		       "pages, %llu data + %llu zero pages\n", dir, d.img.hdr.version, d.img.hdr.pid,
		       d.st.nuffds, (unsigned long long)ranges, (unsigned long long)wp,
		       (unsigned long long)data_pages, (unsigned long long)zero_pages);
	image_dir_free(&d);
	return bad ? 1 : 0;
}

static int cmd_restore(const char *dir, char **argv)
{
	/* Refuse a bad image here, with the full explanation, before PROG starts. */
	struct image_dir d;
	char err[1024];
	if (image_dir_load(dir, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay: %s\n", err);
		return 1;
	}
	image_dir_free(&d);
	char lib[PATH_MAX], absdir[PATH_MAX];
	if (shim_library_path(lib, sizeof(lib)) < 0)
		return 2;
	if (!realpath(dir, absdir)) {
		fprintf(stderr, "uffd-replay: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	const char *old = getenv("LD_PRELOAD");
	char *preload = malloc(strlen(lib) + (old ? strlen(old) : 0) + 2);
	if (!preload)
		return 2;
	sprintf(preload, "%s%s%s", lib, old && *old ? ":" : "", old && *old ? old : "");
	setenv("LD_PRELOAD", preload, 1);
	setenv("UFFDSHIM_RESTORE", absdir, 1);
	execvp(argv[0], argv);
	fprintf(stderr, "uffd-replay: %s: %s\n", argv[0], strerror(errno));
	return 127;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "check"))
		return cmd_check(argv[2]);
	const char *dir = NULL;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if ((!strcmp(argv[i], "-D") || !strcmp(argv[i], "--dir")) && i + 1 < argc)
			dir = argv[++i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!dir || i >= argc) {
		usage(stderr);
		return 2;
	}
	return cmd_restore(dir, argv + i);
}
