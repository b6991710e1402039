/* shim_wrap_mem.c - memory calls that change registrations behind the
 * app's back: munmap, mremap, madvise(DONTNEED/REMOVE), mmap(MAP_FIXED).
 * They cost one flag load unless this process has registered memory, and
 * one more unless a dirty tracker is on (then they wait while it reads an
 * epoch, and a cut waits for them: shim_track_zap_begin/end). */
#include <errno.h>
#include <stdarg.h>
#include <sys/mman.h>

#include <sys/syscall.h>

#include "shim.h"
#include "uffd_compat.h"
#include "shim_raw.h"

/* These are thin system calls: issue them directly, so they work even
 * while the dynamic linker is still resolving the shim's symbols. */
static long sys_result(long r)
{
	if (r < 0 && r > -4096) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static inline bool have_ranges(void)
{
	return __atomic_load_n(&G.own_ranges, __ATOMIC_ACQUIRE) != 0;
}

static void unmapped(uint64_t start, uint64_t len)
{
	int err = errno;
	if (shim_model_enter()) {
		uint32_t hold = shim_nest_mem_event_locked(UFFD_EVENT_UNMAP, start, len, 0);
		um_mem_unmap(&G.model, G.pid, start, len);
		shim_update_own_ranges();
		shim_unlock();
		if (hold)
			shim_nest_event_wait(hold);
	}
	errno = err;
}

int munmap(void *addr, size_t len)
{
	bool z = shim_track_zap_begin((uint64_t)addr, len);
	int r = (int)sys_result(RAW2(SYS_munmap, addr, len));
	shim_track_zap_end(z);
	if (unlikely(have_ranges()) && r == 0)
		unmapped((uint64_t)addr, len);
	return r;
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *want = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		want = va_arg(ap, void *);
		va_end(ap);
	}
	bool z = shim_track_zap_begin((uint64_t)old, old_len);
	bool z2 = (flags & MREMAP_FIXED) && shim_track_zap_begin((uint64_t)want, new_len);
	long rr = sys_result(RAW5(SYS_mremap, old, old_len, new_len, flags, want));
	shim_track_zap_end(z2);
	shim_track_zap_end(z);
	void *r = rr == -1 ? MAP_FAILED : (void *)rr;
	if (unlikely(have_ranges()) && r != MAP_FAILED) {
		int err = errno;
		if (shim_model_enter()) {
			/* MREMAP_FIXED replaces whatever was at the target. */
			if (r != old)
				um_mem_unmap(&G.model, G.pid, (uint64_t)r, new_len);
			uint32_t hold = shim_nest_mem_event_locked(UFFD_EVENT_REMAP, (uint64_t)old,
								   old_len, (uint64_t)r);
			if (flags & MREMAP_DONTUNMAP)
				um_mem_remap_dontunmap(&G.model, G.pid, (uint64_t)old, old_len,
						       (uint64_t)r);
			else
				um_mem_remap(&G.model, G.pid, (uint64_t)old, old_len,
					     (uint64_t)r, new_len);
			shim_update_own_ranges();
			shim_unlock();
			if (hold)
				shim_nest_event_wait(hold);
		}
		errno = err;
	}
	return r;
}

/* Advice after which a page that was present reads as a new one. */
static bool zaps(int advice)
{
	return advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE ||
	       advice == 24 /* MADV_DONTNEED_LOCKED */;
}

/* Advice for which the kernel sends UFFD_EVENT_REMOVE (before it zaps). */
static bool removes(int advice)
{
	return advice == MADV_DONTNEED || advice == MADV_REMOVE || advice == 24 /* DONTNEED_LOCKED */;
}

int madvise(void *addr, size_t len, int advice)
{
	/* Nested clients that asked for REMOVE get it before the pages go, as
	 * the kernel sends its own, and the caller waits until they read it. */
	bool ev = unlikely(have_ranges()) && removes(advice) && len && !((uint64_t)addr & 4095);
	if (ev) {
		int err = errno;
		if (shim_model_enter()) {
			uint32_t hold = shim_nest_mem_event_locked(UFFD_EVENT_REMOVE, (uint64_t)addr,
								   len, 0);
			shim_unlock();
			if (hold)
				shim_nest_event_wait(hold);
		}
		errno = err;
	}
	bool z = zaps(advice) && shim_track_zap_begin((uint64_t)addr, len);
	int r = (int)sys_result(RAW3(SYS_madvise, addr, len, advice));
	shim_track_zap_end(z);
	if (unlikely(have_ranges()) && r == 0 && removes(advice)) {
		int err = errno;
		if (shim_model_enter()) {
			um_mem_dontneed(&G.model, G.pid, (uint64_t)addr, len);
			shim_unlock();
		}
		errno = err;
	}
	return r;
}

static void *mapped(void *r, void *addr, size_t len, int flags)
{
	if (unlikely(have_ranges()) && r != MAP_FAILED && (flags & MAP_FIXED))
		unmapped((uint64_t)r, len);
	return r;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	long r;
	bool z = (flags & MAP_FIXED) && shim_track_zap_begin((uint64_t)addr, len);
	if (off & 4095) /* as glibc checks before the kernel sees it */
		r = -EINVAL;
	else
		r = RAW6(SYS_mmap, addr, len, prot, flags, fd, off);
	shim_track_zap_end(z);
	r = sys_result(r);
	return mapped(r == -1 ? MAP_FAILED : (void *)r, addr, len, flags);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));
