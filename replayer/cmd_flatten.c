/* cmd_flatten.c - uffd-replay flatten DIR -o OUT: an image chain merged into
 * one image directory (docs/image-format.md, "Flattening"). */
#include <stdio.h>
#include <string.h>

#include "chain.h"
#include "replay.h"

void print_skipped_ranges(FILE *f, const struct umi_image *img)
{
	static const char *const kinds[] = {"", "anon", "heap", "stack", "file", "other"};
	if (!img->epoch)
		return;
	int n = 0;
	for (uint32_t k = 0; k < img->epoch->nranges; k++) {
		const struct umi_tracked *t = &img->tracked[k];
		if (t->kind == UMI_TK_ANON)
			continue;
		fprintf(f, "%s %s %#llx-%#llx%s%s", n++ ? "," : "uffd-replay: not recreated by a "
			"relaunch (the new process has its own):", kinds[t->kind],
			(unsigned long long)t->start, (unsigned long long)t->end, t->name[0] ? " " : "",
			t->name);
	}
	if (n)
		fputc('\n', f);
}

int cmd_flatten(int argc, char **argv)
{
	const char *dir = NULL, *out = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc)
			out = argv[++i];
		else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else
			out = NULL; /* usage */
	}
	if (!dir || !out || argc > 4) {
		fprintf(stderr, "usage: uffd-replay flatten DIR -o OUT\n");
		return 2;
	}
	struct chain c;
	char err[2048];
	if (chain_load(dir, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-replay flatten: %s\n", err);
		return 1;
	}
	int rc = chain_flatten(&c, out, err, sizeof(err));
	if (rc < 0)
		fprintf(stderr, "uffd-replay flatten: %s\n", err);
	else
		printf("%s: %u epochs flattened into %s\n", dir, c.n, out);
	chain_free(&c);
	return rc < 0 ? 1 : 0;
}
