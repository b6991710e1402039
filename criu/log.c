/* log.c - messages into CRIU's log, and file access in the images dir. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugin_abi.h"
#include "ucr.h"

void ucr_log(int level, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	const char *tag = level == UCR_LOG_ERROR ? "Error (uffdshim): " :
			  level == UCR_LOG_WARN ? "Warn  (uffdshim): " : "uffdshim: ";
	if (print_on_level)
		print_on_level((unsigned)level, "%s%s\n", tag, msg);
	else if (level <= UCR_LOG_INFO)
		fprintf(stderr, "%s%s\n", tag, msg);
}

int ucr_image_dir(void)
{
	if (criu_get_image_dir) {
		int fd = criu_get_image_dir();
		if (fd >= 0)
			return fd;
	}
	return AT_FDCWD;
}

int ucr_write_file(int dirfd, const char *name, const void *buf, size_t len)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = w < 0 ? errno : EIO;
			close(fd);
			return -e;
		}
		p += w;
		len -= (size_t)w;
	}
	if (close(fd) < 0)
		return -errno;
	return 0;
}

int ucr_read_file(int dirfd, const char *name, void **bufp, size_t *lenp)
{
	*bufp = NULL;
	*lenp = 0;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	if (sb.st_size > (1LL << 34)) {
		close(fd);
		return -EFBIG;
	}
	size_t len = (size_t)sb.st_size, got = 0;
	char *buf = malloc(len ? len : 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < len) {
		ssize_t r = read(fd, buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got != len) {
		free(buf);
		return -EIO;
	}
	*bufp = buf;
	*lenp = len;
	return 0;
}
