/* shim_exec.c - uffds without CLOEXEC survive exec; their model crosses to
 * the new image in a memfd named by UFFDSHIM_HANDOFF=<fd>. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"

void shim_exec_prepare(char *buf, size_t len, int *memfd)
{
	buf[0] = 0;
	*memfd = -1;
	if (!shim_model_enter())
		return;
	shim_nest_before_exec_locked();
	bool survives = false;
	for (uint32_t i = 0; i < G.model.nuffds && !survives; i++)
		for (int j = 0; j < G.model.uffds[i]->nfds; j++)
			if (!G.model.uffds[i]->fd_flags[j])
				survives = true;
	if (!survives) {
		shim_unlock();
		return;
	}
	struct um_state after;
	if (um_state_copy(&after, &G.model) < 0) {
		shim_unlock();
		return;
	}
	shim_unlock();
	um_exec(&after);
	size_t size = um_serialize_size(&after);
	void *blob = um_zalloc(size);
	int fd = (int)RAW2(SYS_memfd_create, "uffdshim-handoff", 0);
	if (blob && fd >= 0) {
		size_t n = um_serialize(&after, blob, size);
		long w = RAW3(SYS_write, fd, blob, n);
		if (w == (long)n) {
			memcpy(buf, "UFFDSHIM_HANDOFF=", 17);
			shim_utoa((uint64_t)fd, buf + 17);
			*memfd = fd;
			fd = -1;
		}
	}
	if (fd >= 0)
		RAW1(SYS_close, fd);
	um_free(blob, size);
	um_state_free(&after);
}

void shim_exec_failed(int memfd)
{
	if (memfd >= 0)
		RAW1(SYS_close, memfd);
}

void shim_exec_adopt(void)
{
	const char *v = getenv("UFFDSHIM_HANDOFF");
	if (!v)
		return;
	int fd = atoi(v);
	unsetenv("UFFDSHIM_HANDOFF");
	struct stat st;
	if (fd < 0 || RAW2(SYS_fstat, fd, &st) < 0 || st.st_size <= 0)
		return;
	size_t size = (size_t)st.st_size;
	void *blob = um_zalloc(size);
	if (blob && RAW4(SYS_pread64, fd, blob, size, 0) == (long)size) {
		struct um_state in;
		char err[200];
		if (um_deserialize(&in, blob, size, err, sizeof(err)) == 0) {
			in.pid = G.pid;
			/* Keep only fds that still are the same uffd. */
			for (uint32_t i = 0; i < in.nuffds;) {
				struct um_uffd *u = in.uffds[i];
				for (int j = 0; j < u->nfds;) {
					struct stat fs;
					if (RAW2(SYS_fstat, u->fds[j], &fs) == 0 && fs.st_ino == u->ino) {
						j++;
						continue;
					}
					u->fds[j] = u->fds[u->nfds - 1];
					u->fd_flags[j] = u->fd_flags[u->nfds - 1];
					u->nfds--;
				}
				if (u->nfds == 0) {
					um_uffd_remove(&in, u);
					continue;
				}
				for (int j = 0; j < u->nfds; j++)
					shim_fd_set(u->fds[j], FD_UFFD);
				i++;
			}
			shim_lock();
			um_state_free(&G.model);
			G.model = in;
			shim_update_own_ranges();
			shim_unlock();
		} else {
			shim_log(err);
		}
	}
	um_free(blob, size);
	RAW1(SYS_close, fd);
	if (G.model.nuffds)
		shim_ctl_ensure();
}
