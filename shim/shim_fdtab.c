/* shim_fdtab.c - one byte per fd number saying whether the shim cares. */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"

uint8_t shim_fdtab[SHIM_FDTAB_MAX];
int shim_fdtab_high;

void shim_fd_set(int fd, int kind)
{
	if (fd < 0)
		return;
	if (fd < SHIM_FDTAB_MAX) {
		__atomic_store_n(&shim_fdtab[fd], (uint8_t)kind, __ATOMIC_RELEASE);
		return;
	}
	if (kind != FD_NONE)
		__atomic_store_n(&shim_fdtab_high, 1, __ATOMIC_RELEASE);
}

int shim_fd_kind_slow(int fd)
{
	shim_lock();
	int k = um_uffd_by_fd(&G.model, fd) ? FD_UFFD : FD_NONE;
	shim_unlock();
	return k;
}

/* ---- the shim's own fds ---- */

/* Variables holding internal fds, so a relocation can update them. */
#define MAX_INTERNAL 32
static int *internal_slots[MAX_INTERNAL];

/* Lowest number the shim uses: near the top of the soft fd limit (at most
 * 64 Ki), where programs rarely look, leaving room for CRIU's service fds. */
static int internal_base(void)
{
	struct rlimit rl;
	long lim = 1024;
	if (RAW2(SYS_getrlimit, RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		lim = (long)rl.rlim_cur;
	if (lim > SHIM_FDTAB_MAX)
		lim = SHIM_FDTAB_MAX;
	/* CRIU wants a task's highest fd + 49 below round_down(limit, 128) for
	 * its service fds: stay a full 128 below that. */
	lim &= ~127L;
	return lim > 256 ? (int)lim - 128 : 3;
}

int shim_fd_hide(int fd, int *slot)
{
	long hi = RAW3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, internal_base());
	if (hi >= 0) {
		RAW1(SYS_close, fd);
		fd = (int)hi;
	}
	shim_fd_set(fd, FD_INTERNAL);
	if (slot) {
		*slot = fd;
		for (int i = 0; i < MAX_INTERNAL; i++)
			if (!internal_slots[i] || internal_slots[i] == slot) {
				internal_slots[i] = slot;
				break;
			}
	}
	return fd;
}

void shim_fd_unhide(int *slot)
{
	for (int i = 0; i < MAX_INTERNAL; i++)
		if (internal_slots[i] == slot)
			internal_slots[i] = NULL;
}

void shim_fd_make_room(int fd)
{
	for (int i = 0; i < MAX_INTERNAL; i++) {
		int *slot = internal_slots[i];
		if (!slot || __atomic_load_n(slot, __ATOMIC_ACQUIRE) != fd)
			continue;
		long to = RAW3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, internal_base());
		if (to == fd || to < 0)
			to = RAW3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 3);
		if (to < 0)
			return;
		shim_fd_set((int)to, FD_INTERNAL);
		__atomic_store_n(slot, (int)to, __ATOMIC_RELEASE);
		shim_fd_set(fd, FD_NONE);
		RAW1(SYS_close, fd); /* the app's dup2 would have closed it anyway */
	}
}
