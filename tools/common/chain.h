/* chain.h - incremental image chains (tools only): DIR/epoch-0000 (the base,
 * a complete image), DIR/epoch-0001, ... each an image directory with an
 * epoch section (model/um_image.h; layout and rules in
 * docs/image-format.md, "Image chains").  Load and validate a chain, flatten
 * it into one image directory, and check a flattened image against its
 * chain. */
#ifndef UFFDSHIM_CHAIN_H
#define UFFDSHIM_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image_io.h"

#define CHAIN_MAX_EPOCHS 10000 /* epoch-0000 .. epoch-9999 */

struct chain {
	char *dir;
	unsigned n;              /* epochs: 0 .. n-1 */
	struct image_dir *ep;    /* ep[i] is DIR/epoch-%04u, validated */
};

/* Does dir hold an epoch-0000 entry (is it meant as a chain)? */
bool chain_is_chain_dir(const char *dir);

/* DIR/epoch-NNNN of epoch i into buf. */
void chain_epoch_path(const char *dir, unsigned i, char *buf, size_t len);

/* Load DIR's epochs and validate each image (with its page-data checksums)
 * and every link: contiguous numbering from 0, the same chain_id, pid and
 * page size, parent_created_ns equal to the previous image's created_ns,
 * every range of epoch 0 NEW, runs inside tracked or registered ranges.
 * Returns 0, or -1 with the epoch and the problem in err. */
int chain_load(const char *dir, struct chain *c, char *err, size_t errlen);
void chain_free(struct chain *c);

/* Write the chain flattened into the image directory out (created 0700 if
 * missing; files 0600, each through a temp file + rename): epoch n-1's
 * state, process and tracked ranges (all NEW), flags UMI_EPOCH_FLAT, and
 * the newest content of every page.  Returns 0, or -1 with err. */
int chain_flatten(const struct chain *c, const char *out, char *err, size_t errlen);

/* Check the image in flat_dir page by page against the chain (computed
 * again, independently of chain_flatten).  0, or -1 with the first
 * difference in err.  For tests. */
int chain_verify_flat(const struct chain *c, const char *flat_dir, char *err, size_t errlen);

/* A random chain id for a new chain (never 0). */
uint64_t chain_new_id(void);

#endif
