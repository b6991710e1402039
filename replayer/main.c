/* uffd-replay - recreate checkpointed uffd state.
 *
 *   uffd-replay check DIR             validate an image or an image chain and
 *                                     explain what is wrong
 *   uffd-replay flatten DIR -o OUT    merge an image chain into one image
 *   uffd-replay -D DIR -- PROG ARGS   start PROG under the shim in restore mode:
 *                                     before its main() runs, the image's memory,
 *                                     uffds, registrations and write-protection
 *                                     exist again (see include/uffdshim.h); a
 *                                     chain is flattened first */
#include <stdio.h>
#include <string.h>

#include "replay.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: uffd-replay check DIR\n"
		   "       uffd-replay flatten DIR -o OUT\n"
		   "       uffd-replay -D DIR -- PROG [ARGS...]\n"
		   "DIR is an image directory or an image chain (DIR/epoch-0000, ...).\n");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "check"))
		return cmd_check(argv[2]);
	if (argc >= 2 && !strcmp(argv[1], "flatten"))
		return cmd_flatten(argc - 1, argv + 1);
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
