/* replay.h - the subcommands of uffd-replay, one file each. */
#ifndef UFFDSHIM_REPLAY_H
#define UFFDSHIM_REPLAY_H

#include <stdio.h>

#include "image_io.h"

int cmd_check(const char *dir);                 /* cmd_check.c: an image or a chain */
int cmd_restore(const char *dir, char **argv);  /* cmd_restore.c */
int cmd_flatten(int argc, char **argv);         /* cmd_flatten.c */

/* One line on f naming the tracked ranges of img that a relaunch cannot
 * recreate (heap, stack, file, other: the new process has its own); nothing
 * when there are none.  cmd_flatten.c */
void print_skipped_ranges(FILE *f, const struct umi_image *img);

#endif
