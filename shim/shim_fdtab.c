/* shim_fdtab.c - one byte per fd number saying whether the shim cares. */
#include "shim.h"

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
