/* image_io.c - load/validate and atomically write image files. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image_io.h"

static int read_all(int fd, char **buf, size_t *len)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	size_t n = (size_t)st.st_size;
	char *b = malloc(n ? n : 1);
	if (!b)
		return -1;
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(b);
			if (r == 0)
				errno = EIO;
			return -1;
		}
		got += (size_t)r;
	}
	*buf = b;
	*len = n;
	return 0;
}

int image_dir_load(const char *dir, struct image_dir *d, char *err, size_t errlen)
{
	memset(d, 0, sizeof(*d));
	d->pages_fd = -1;
	char path[PATH_MAX];
	struct stat st;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: not an image directory (%s)", dir,
			 stat(dir, &st) < 0 ? strerror(errno) : "not a directory");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, UMI_STATE_FILE);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s (is %s a uffdshim image directory?)", path,
			 strerror(errno), dir);
		return -1;
	}
	int rc = read_all(fd, &d->state_buf, &d->state_len);
	close(fd);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, UMI_PAGES_FILE);
	d->pages_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (d->pages_fd >= 0 && fstat(d->pages_fd, &st) == 0)
		d->pages_size = (uint64_t)st.st_size;
	char e[300];
	if (umi_parse(d->state_buf, d->state_len, d->pages_fd >= 0 ? d->pages_size : 0, &d->img,
		      e, sizeof(e)) < 0) {
		snprintf(err, errlen, "%s/%s: %s", dir, UMI_STATE_FILE, e);
		image_dir_free(d);
		return -1;
	}
	if (um_deserialize(&d->st, d->img.state, d->img.state_len, e, sizeof(e)) < 0) {
		snprintf(err, errlen, "%s/%s: state section: %s", dir, UMI_STATE_FILE, e);
		image_dir_free(d);
		return -1;
	}
	return 0;
}

void image_dir_free(struct image_dir *d)
{
	free(d->state_buf);
	d->state_buf = NULL;
	if (d->pages_fd >= 0)
		close(d->pages_fd);
	d->pages_fd = -1;
	um_state_free(&d->st);
}

int image_write_file(const char *dir, const char *name, const void *buf, size_t len,
		     char *err, size_t errlen)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

int image_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

bool image_page_is_zero(const uint64_t *p)
{
	for (size_t i = 0; i < UM_PAGE_SIZE / 8; i++)
		if (p[i])
			return false;
	return true;
}
