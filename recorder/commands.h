/* commands.h - the subcommands of uffd-record, one file each. */
#ifndef UFFDSHIM_RECORDER_COMMANDS_H
#define UFFDSHIM_RECORDER_COMMANDS_H

/* Each takes argv as given after "uffd-record" (argv[0] is the subcommand
 * name) and returns the process exit status. */
int cmd_run(int argc, char **argv);    /* cmd_run.c */
int cmd_status(int argc, char **argv); /* cmd_status.c */
int cmd_report(int argc, char **argv); /* cmd_report.c */
int cmd_dump(int argc, char **argv);   /* cmd_dump.c */
int cmd_show(int argc, char **argv);   /* cmd_show.c */
int cmd_track(int argc, char **argv);  /* cmd_track.c */

/* trace_merge.c: merge the per-process segments "<trace_path>.<pid>" that a
 * run left into one sorted trace at trace_path, then delete the segments.
 * Returns 0, or -1 with a message on stderr. */
int trace_merge_segments(const char *trace_path);

#endif
