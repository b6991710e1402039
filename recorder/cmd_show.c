/* cmd_show.c - uffd-record show DIR [--json]: print a checkpoint image. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <glib.h>

#include "commands.h"
#include "image_io.h"
#include "status_print.h"

int cmd_show(int argc, char **argv)
{
	const char *dir = NULL;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else {
			fprintf(stderr, "usage: uffd-record show DIR [--json]\n");
			return 2;
		}
	}
	if (!dir) {
		fprintf(stderr, "usage: uffd-record show DIR [--json]\n");
		return 2;
	}
	struct image_dir d;
	char err[600];
	if (image_dir_load(dir, &d, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-record show: %s\n", err);
		return 2;
	}
	uint64_t data = 0, zero = 0;
	for (size_t i = 0; i < d.img.nruns; i++) {
		if (d.img.runs[i].kind == UMI_RUN_DATA)
			data += d.img.runs[i].npages;
		else
			zero += d.img.runs[i].npages;
	}
	struct status_info info = {.pid = d.img.hdr.pid, .comm = d.img.hdr.comm};
	GString *o = g_string_new(NULL);
	bool with_memory = d.img.proc && (d.img.proc->flags & UMI_PROC_WITH_MEMORY);
	if (json) {
		GString *st = g_string_new(NULL);
		status_print_json(st, &d.st, &info, NULL);
		g_string_append_printf(o, "{\"image\":{\"version\":%u,\"pid\":%d,\"created_ns\":%llu,"
				       "\"with_memory\":%s,\"data_pages\":%llu,\"zero_pages\":%llu,"
				       "\"runs\":%zu,\"exe\":",
				       d.img.hdr.version, d.img.hdr.pid,
				       (unsigned long long)d.img.hdr.created_ns,
				       with_memory ? "true" : "false", (unsigned long long)data,
				       (unsigned long long)zero, d.img.nruns);
		json_string(o, d.img.proc ? d.img.proc->exe : "");
		g_string_append_printf(o, "},\"state\":%s}\n", st->str);
		g_string_free(st, TRUE);
	} else {
		time_t t = (time_t)(d.img.hdr.created_ns / 1000000000ULL);
		char when[64];
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
		g_string_append_printf(o, "image %s: format %u, x86_64, page size %u, dumped %s\n",
				       dir, d.img.hdr.version, d.img.hdr.page_size, when);
		if (d.img.proc)
			g_string_append_printf(o, "process: pid %d, %s\n", d.img.proc->pid,
					       d.img.proc->exe);
		if (with_memory)
			g_string_append_printf(o, "memory: %llu data pages (%llu KiB in %s), %llu zero "
					       "pages, %zu runs\n", (unsigned long long)data,
					       (unsigned long long)data * 4, UMI_PAGES_FILE,
					       (unsigned long long)zero, d.img.nruns);
		else
			g_string_append(o, "memory: not saved (dumped without --with-memory)\n");
		g_string_append_c(o, '\n');
		status_print_text(o, &d.st, &info);
	}
	fputs(o->str, stdout);
	g_string_free(o, TRUE);
	image_dir_free(&d);
	return 0;
}
