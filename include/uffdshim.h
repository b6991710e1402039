/* uffdshim.h - what a cooperative program asks the uffdshim preload library.
 *
 * After `uffd-replay -D DIR -- PROG`, the shim has recreated, before PROG's
 * main() runs, the checkpointed uffds (same fd numbers, flags and features),
 * the memory of their registered ranges (same addresses, protection, backing
 * and page contents), the registrations and the write-protected pages.  PROG
 * asks which uffds were restored and restarts its fault-handler threads on
 * them instead of creating new ones.
 *
 * Header only: the functions look the shim up at run time, so a program that
 * includes this header links and runs without the shim; the answer is then
 * "nothing was restored" (0). */
#ifndef UFFDSHIM_H
#define UFFDSHIM_H

#include <dlfcn.h>
#include <stdint.h>

struct uffdshim_restored_uffd {
	int fd;               /* the uffd, at its checkpointed fd number */
	uint32_t id;          /* its id in the image */
	uint64_t features;    /* UFFDIO_API features it was created with */
	uint32_t nranges;     /* registered ranges: uffdshim_restored_range() */
	uint32_t reserved;
};

/* Fills up to max entries; returns how many uffds were restored (0 when this
 * process was not restored, or the shim is not loaded). */
static inline int uffdshim_restored(struct uffdshim_restored_uffd *out, int max)
{
	int (*fn)(struct uffdshim_restored_uffd *, int) =
		(int (*)(struct uffdshim_restored_uffd *, int))dlsym(RTLD_DEFAULT,
								     "uffdshim_restored_v1");
	return fn ? fn(out, max) : 0;
}

/* Range idx of restored uffd fd: 0, or -1 if there is no such range. */
static inline int uffdshim_restored_range(int fd, unsigned idx, uint64_t *start, uint64_t *len,
					  uint64_t *modes)
{
	int (*fn)(int, unsigned, uint64_t *, uint64_t *, uint64_t *) =
		(int (*)(int, unsigned, uint64_t *, uint64_t *, uint64_t *))dlsym(
			RTLD_DEFAULT, "uffdshim_restored_range_v1");
	return fn ? fn(fd, idx, start, len, modes) : -1;
}

#endif
