/* shim_debug.c - what the shim can tell about a page when something went
 * wrong there, written to stderr under UFFDSHIM_DEBUG.
 *
 * An app's COPY/ZEROPAGE/CONTINUE that fails with EEXIST means the page was
 * populated before the app placed it: a legal outcome for an app whose
 * threads race, but for a pager such as QEMU's post-copy a fatal one.  The
 * line says what the page table holds there (pagemap; the page flags where
 * /proc/kpageflags can be read: a huge page, the zero page) and how dirty
 * tracking and nesting see the page, so that a rare failure says why. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"

#define KPF_HUGE 17
#define KPF_THP 22
#define KPF_ZERO_PAGE 24

struct line {
	char b[320];
	size_t n;
};

static void put(struct line *l, const char *s)
{
	size_t k = strlen(s);
	if (l->n + k >= sizeof(l->b))
		k = sizeof(l->b) - 1 - l->n;
	memcpy(l->b + l->n, s, k);
	l->n += k;
	l->b[l->n] = 0;
}

static void put_hex(struct line *l, uint64_t v)
{
	char t[19] = "0x";
	int n = 0;
	char d[16];
	do {
		d[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	for (int i = 0; i < n; i++)
		t[2 + i] = d[n - 1 - i];
	t[2 + n] = 0;
	put(l, t);
}

static void put_dec(struct line *l, uint64_t v)
{
	char t[24];
	shim_utoa(v, t);
	put(l, t);
}

static const char *req_name(unsigned long req)
{
	switch (req) {
	case UFFDIO_COPY: return "COPY";
	case UFFDIO_ZEROPAGE: return "ZEROPAGE";
	case UFFDIO_CONTINUE: return "CONTINUE";
	default: return "call";
	}
}

void shim_debug_fill_failed(unsigned long req, uint64_t addr, int err)
{
	if (!shim_debug_enabled())
		return;
	uint64_t page = addr & ~(UM_PAGE_SIZE - 1), pm = 0, kf = 0;
	struct line l = {.n = 0};
	put(&l, req_name(req));
	put(&l, " ");
	put_hex(&l, page);
	put(&l, err == EEXIST ? ": EEXIST" : ": failed, errno ");
	if (err != EEXIST)
		put_dec(&l, (uint64_t)err);
	int fd = shim_pagemap_fd();
	if (fd >= 0 && RAW4(SYS_pread64, fd, &pm, 8, (page >> UM_PAGE_SHIFT) * 8) == 8) {
		put(&l, "; pagemap ");
		put_hex(&l, pm);
		put(&l, pm >> PM_BIT_PRESENT & 1 ? " present" : " not-present");
		if (pm >> PM_BIT_SWAPPED & 1)
			put(&l, " swapped");
		if (pm >> PM_BIT_UFFD_WP & 1)
			put(&l, " uffd-wp");
		uint64_t pfn = pm & ((1ULL << 55) - 1);
		int kfd = pfn && (pm >> PM_BIT_PRESENT & 1)
				  ? (int)RAW4(SYS_openat, AT_FDCWD, "/proc/kpageflags",
					      O_RDONLY | O_CLOEXEC, 0)
				  : -1;
		if (kfd >= 0) {
			if (RAW4(SYS_pread64, kfd, &kf, 8, pfn * 8) == 8) {
				put(&l, "; kpageflags ");
				put_hex(&l, kf);
				if (kf >> KPF_THP & 1)
					put(&l, " THP");
				if (kf >> KPF_HUGE & 1)
					put(&l, " huge");
				if (kf >> KPF_ZERO_PAGE & 1)
					put(&l, " zero-page");
			}
			RAW1(SYS_close, kfd);
		}
	}
	put(&l, "; tracked ");
	put(&l, shim_track_describe(page));
	put(&l, shim_nest_touches(page, UM_PAGE_SIZE) ? "; nested span" : "");
	shim_log(l.b);
}
