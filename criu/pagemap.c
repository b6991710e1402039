/* pagemap.c - runs of pages whose /proc/PID/pagemap entry has a bit set. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ucr.h"

int ucr_runs_add(struct ucr_runs *r, uint64_t start, uint64_t npages)
{
	if (!npages)
		return 0;
	if (r->n && r->v[r->n - 1].start + r->v[r->n - 1].npages * UM_PAGE_SIZE == start) {
		r->v[r->n - 1].npages += npages;
		return 0;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct ucr_run *v = realloc(r->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n].start = start;
	r->v[r->n].npages = npages;
	r->n++;
	return 0;
}

void ucr_runs_free(struct ucr_runs *r)
{
	free(r->v);
	memset(r, 0, sizeof(*r));
}

uint64_t ucr_runs_pages(const struct ucr_runs *r)
{
	uint64_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += r->v[i].npages;
	return n;
}

#define CHUNK 4096 /* entries per pread: 16 MiB of address space */

int ucr_pagemap_runs(int pmfd, uint64_t start, uint64_t end, int bit, struct ucr_runs *out)
{
	static uint64_t ent[CHUNK];
	uint64_t run_start = 0, run_n = 0;
	for (uint64_t a = start; a < end;) {
		uint64_t n = (end - a) / UM_PAGE_SIZE;
		if (n > CHUNK)
			n = CHUNK;
		size_t want = (size_t)n * 8, got = 0;
		off_t off = (off_t)(a / UM_PAGE_SIZE * 8);
		while (got < want) {
			ssize_t r = pread(pmfd, (char *)ent + got, want - got, off + (off_t)got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return r < 0 ? -errno : -EIO;
			got += (size_t)r;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t pa = a + i * UM_PAGE_SIZE;
			if ((ent[i] >> bit) & 1) {
				if (!run_n)
					run_start = pa;
				run_n++;
			} else if (run_n) {
				if (ucr_runs_add(out, run_start, run_n) < 0)
					return -ENOMEM;
				run_n = 0;
			}
		}
		a += n * UM_PAGE_SIZE;
	}
	if (run_n && ucr_runs_add(out, run_start, run_n) < 0)
		return -ENOMEM;
	return 0;
}
