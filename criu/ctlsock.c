/* ctlsock.c - connections to a shim's control socket that a tool other than
 * this dump holds open at dump time (uffd-record status, a monitor).  CRIU
 * cannot dump a stream socket whose peer is outside the dumped tree and asks
 * the plugins (DUMP_UNIX_SK).  Such a connection is claimed and recorded in
 * uffdshim-usk-<ino>.img; at restore (RESTORE_UNIX_SK, inside the restored
 * task) it becomes a socket whose peer is gone, so the shim's control thread
 * sees the tool disconnect, exactly as if it had quit, and releases any hold
 * that tool had on the app.  (The dump's own QUIESCE connection is closed
 * once the tasks are frozen, and CRIU restores it as a half-closed socket
 * without the plugin's help.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "plugin_abi.h"
#include "ucr.h"
#include "uffdshim_ctl.h"
#include "um_image.h"

#define USK_MAGIC "UFFDUSK" /* 8 bytes with the NUL */
#define USK_NAME_FMT "uffdshim-usk-%u.img"

struct usk_rec {
	char magic[8];
	uint32_t version;   /* 1 */
	uint32_t ino;       /* the socket's inode (CRIU's id for it) */
	int32_t pid;        /* the shim's pid, from the socket's name */
	uint32_t crc;       /* crc32 of the record with crc = 0 */
};

static int32_t atoi_safe(const char *p, size_t n)
{
	int32_t v = 0;
	for (size_t i = 0; i < n && p[i] >= '0' && p[i] <= '9' && v < 100000000; i++)
		v = v * 10 + (p[i] - '0');
	return v;
}

int ucr_dump_unix_sk(int fd, int ino)
{
	if (ucr_stage != UCR_STAGE_DUMP)
		return -ENOTSUP;
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	size_t plen = sizeof(UCTL_ADDR_PREFIX) - 1;
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0 || a.sun_family != AF_UNIX ||
	    len <= offsetof(struct sockaddr_un, sun_path) + 1 + plen || a.sun_path[0] ||
	    memcmp(a.sun_path + 1, UCTL_ADDR_PREFIX, plen))
		return -ENOTSUP;
	struct usk_rec r;
	memset(&r, 0, sizeof(r));
	memcpy(r.magic, USK_MAGIC, sizeof(USK_MAGIC));
	r.version = 1;
	r.ino = (uint32_t)ino;
	r.pid = atoi_safe(a.sun_path + 1 + plen,
			  len - offsetof(struct sockaddr_un, sun_path) - 1 - plen);
	r.crc = umi_crc32(0, &r, sizeof(r));
	char name[64];
	snprintf(name, sizeof(name), USK_NAME_FMT, (unsigned)ino);
	int rc = ucr_write_file(ucr_image_dir(), name, &r, sizeof(r));
	if (rc < 0) {
		ucr_err("socket inode %u: cannot write %s: %s", (unsigned)ino, name, strerror(-rc));
		return rc;
	}
	ucr_info("socket inode %u: a connection to pid %d's uffdshim control socket from a "
		 "process outside the dump; restored as a connection whose peer has left", (unsigned)ino,
		 r.pid);
	return 0;
}

int ucr_restore_unix_sk(int ino)
{
	if (ucr_stage != UCR_STAGE_RESTORE)
		return -ENOTSUP;
	char name[64];
	snprintf(name, sizeof(name), USK_NAME_FMT, (unsigned)ino);
	void *buf;
	size_t len;
	int rc = ucr_read_file(ucr_image_dir(), name, &buf, &len);
	if (rc == -ENOENT)
		return -ENOTSUP;
	if (rc < 0) {
		ucr_err("cannot read %s: %s", name, strerror(-rc));
		return rc;
	}
	struct usk_rec r;
	bool ok = len == sizeof(r);
	if (ok) {
		memcpy(&r, buf, sizeof(r));
		uint32_t crc = r.crc;
		r.crc = 0;
		ok = !memcmp(r.magic, USK_MAGIC, sizeof(USK_MAGIC)) && r.version == 1 &&
		     r.ino == (uint32_t)ino && umi_crc32(0, &r, sizeof(r)) == crc;
	}
	free(buf);
	if (!ok) {
		ucr_err("%s is not a valid record", name);
		return -EINVAL;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		rc = -errno;
		ucr_err("socket inode %u: socketpair: %s", (unsigned)ino, strerror(errno));
		return rc;
	}
	close(sv[1]);
	return sv[0];
}
