/* um_alloc.c - memory for the model straight from mmap: no allocator locks,
 * so the shim can update the model in any process, across fork.  The shim
 * points the three calls at raw system calls (um_alloc_set_ops) so that the
 * model's own memory traffic never passes through the shim's wrappers. */
#include <string.h>
#include <sys/mman.h>

#include "um_model.h"

static void *libc_mmap(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void libc_munmap(void *p, size_t len)
{
	munmap(p, len);
}

static void *libc_mremap(void *p, size_t old_len, size_t new_len)
{
	void *q = mremap(p, old_len, new_len, MREMAP_MAYMOVE);
	return q == MAP_FAILED ? NULL : q;
}

static struct um_alloc_ops ops = {libc_mmap, libc_munmap, libc_mremap};

void um_alloc_set_ops(const struct um_alloc_ops *o)
{
	ops = *o;
}

static size_t round_page(size_t size)
{
	return (size + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1);
}

void *um_zalloc(size_t size)
{
	return ops.map(round_page(size ? size : 1));
}

void um_free(void *p, size_t size)
{
	if (p)
		ops.unmap(p, round_page(size ? size : 1));
}

void *um_grow(void *p, size_t old_size, size_t new_size)
{
	if (!p)
		return um_zalloc(new_size);
	size_t o = round_page(old_size ? old_size : 1), n = round_page(new_size);
	if (n <= o)
		return p;
	return ops.remap(p, o, n); /* new anonymous pages read as zero */
}
