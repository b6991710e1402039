/* image_io.h - reading and writing image directories (tools only). */
#ifndef UFFDSHIM_IMAGE_IO_H
#define UFFDSHIM_IMAGE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "um_image.h"

/* A loaded image directory: the state file in memory, validated, its state
 * parsed, and the pages file open (fd -1 if absent). */
struct image_dir {
	char *state_buf;
	size_t state_len;
	struct umi_image img;
	struct um_state st;
	int pages_fd;
	uint64_t pages_size;
};

/* Load and validate DIR.  Returns 0, or -1 with a reason in err. */
int image_dir_load(const char *dir, struct image_dir *d, char *err, size_t errlen);
void image_dir_free(struct image_dir *d);

/* Write len bytes to DIR/name atomically (temp file + rename), mode 0600. */
int image_write_file(const char *dir, const char *name, const void *buf, size_t len,
		     char *err, size_t errlen);

/* All of len bytes to fd (retrying short writes and EINTR); 0 or -1 (errno). */
int image_write_all(int fd, const void *buf, size_t len);
/* Is the 4 KiB page at p all zero? */
bool image_page_is_zero(const uint64_t *p);

#endif
