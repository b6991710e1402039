/* uffd-record - read, trace and checkpoint the uffd state of shimmed processes. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static int cmd_merge_trace(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: uffd-record merge-trace FILE\n");
		return 2;
	}
	return trace_merge_segments(argv[1]) == 0 ? 0 : 1;
}

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} commands[] = {
	{"run", cmd_run, "run [--trace FILE] -- PROG ARGS   run PROG (and its children) under the shim"},
	{"status", cmd_status, "status PID [--json] [--verify]  print the uffd state of a live shimmed process"},
	{"report", cmd_report, "report FILE [--json] [--top N]   summarise a trace"},
	{"dump", cmd_dump, "dump PID -D DIR [--leave-running|--kill] [--with-memory]  checkpoint the uffd state"},
	{"track", cmd_track, "track PID -D DIR [--interval MS] [--iterations N] [--step] [--range A-B]... [--verify]\n"
	 "                                   dirty-track memory with uffd-WP into an image chain"},
	{"show", cmd_show, "show DIR [--json]                 print a checkpoint image"},
	{"merge-trace", cmd_merge_trace, NULL},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: uffd-record COMMAND ...\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (commands[i].help)
			fprintf(f, "  uffd-record %s\n", commands[i].help);
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "uffd-record: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
