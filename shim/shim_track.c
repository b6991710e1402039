/* shim_track.c - dirty tracking of this process's private writable memory for
 * one monitor (uffd-record track), with uffd write-protection.
 *
 * Memory no uffd of the app has registered is protected by a uffd of the
 * shim's own with UFFD_FEATURE_WP_ASYNC: the kernel resolves the write faults
 * itself and PAGEMAP_SCAN collects and re-protects the written pages in one
 * step (no fault ever reaches user space).  Memory the app registered in WP
 * mode cannot get a second uffd (EBUSY), so the shim sets extra WP bits
 * through the app's own uffd ("sync"): a WP fault on a page the app itself
 * does not hold is taken out of the app's read() by shim_track_filter and
 * resolved on the spot.  Memory the app registered without WP mode is
 * reported whole at every cut ("all").  docs/design.md, "Dirty tracking".
 *
 * Runs in the control thread (start, cut, stop) and on the app's paths
 * (filter, mark).  T is guarded by the model lock; the kernel calls that
 * change protection run under the order lock, like the app's own. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"
#include "uffdshim_ctl.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define USER_SPACE_END 0x800000000000ULL
#define MAPS_BATCH 256

int shim_track_swallow; /* some app uffd carries extra WP bits of ours */

static struct {
	int active;
	int async_fd;
	int pidfd;
	pid_t monitor;
	uint32_t epoch;
	struct uctl_track_range *r;
	uint32_t n, cap;
	struct um_wpmap marks;  /* pages changed by the app's uffd calls */
	uint64_t sel[UCTL_TRACK_MAX_SEL][2];
	uint32_t nsel;
	int augment;            /* UCTL_TRACK_AUGMENT: WP added to MISSING-only ranges */
	int hold_zaps;          /* UCTL_TRACK_HOLD_ZAPS */
} T = {.async_fd = -1, .pidfd = -1};

/* Does [s, s+len) touch memory tracked at the last cut?  Locked. */
bool shim_track_touches_locked(uint64_t s, uint64_t len)
{
	for (uint32_t i = 0; T.active && i < T.n; i++)
		if (T.r[i].start < s + len && s < T.r[i].end)
			return true;
	return false;
}

int shim_track_read_done(pid_t monitor)
{
	if (!T.active)
		return -ENOENT;
	if (monitor != T.monitor)
		return -EBUSY;
	shim_track_zap_hold_end();
	return 0;
}

/* ---- growable arrays from um_alloc ---- */
static bool ranges_push(struct shim_track_out *o, const struct uctl_track_range *r)
{
	if (o->nranges == o->cap_ranges) {
		uint32_t nc = o->cap_ranges ? o->cap_ranges * 2 : 64;
		void *p = um_grow(o->ranges, o->cap_ranges * sizeof(*r), nc * sizeof(*r));
		if (!p)
			return false;
		o->ranges = p;
		o->cap_ranges = nc;
	}
	o->ranges[o->nranges++] = *r;
	return true;
}

static bool runs_push(struct shim_track_out *o, uint64_t start, uint64_t end)
{
	if (start >= end)
		return true;
	uint64_t np = (end - start) >> UM_PAGE_SHIFT;
	if (o->nruns && o->runs[o->nruns - 1].start +
				(o->runs[o->nruns - 1].npages << UM_PAGE_SHIFT) == start) {
		o->runs[o->nruns - 1].npages += np;
		return true;
	}
	if (o->nruns == o->cap_runs) {
		uint64_t nc = o->cap_runs ? o->cap_runs * 2 : 1024;
		void *p = um_grow(o->runs, o->cap_runs * sizeof(*o->runs), nc * sizeof(*o->runs));
		if (!p)
			return false;
		o->runs = p;
		o->cap_runs = nc;
	}
	o->runs[o->nruns].start = start;
	o->runs[o->nruns].npages = np;
	o->nruns++;
	return true;
}

void shim_track_out_free(struct shim_track_out *o)
{
	um_free(o->ranges, o->cap_ranges * sizeof(*o->ranges));
	um_free(o->runs, o->cap_runs * sizeof(*o->runs));
	memset(o, 0, sizeof(*o));
}

/* ---- which mappings are tracked ---- */
static bool candidate(const struct um_mapping *m)
{
	if (m->shared || !(m->prot & PROT_WRITE))
		return false;
	if (m->backing != UM_BACKING_ANON && m->backing != UM_BACKING_FILE)
		return false;
	return strcmp(m->name, "[vvar]") != 0 && strcmp(m->name, "[vdso]") != 0 &&
	       strcmp(m->name, "[vsyscall]") != 0 && strcmp(m->name, "[vvar_vclock]") != 0 &&
	       strcmp(m->name, "[uprobes]") != 0;
}

static uint32_t kind_of(const struct um_mapping *m)
{
	if (strcmp(m->name, "[heap]") == 0)
		return UCTL_TK_HEAP;
	if (strncmp(m->name, "[stack", 6) == 0)
		return UCTL_TK_STACK;
	if (m->backing == UM_BACKING_FILE)
		return UCTL_TK_FILE;
	if (m->name[0] == 0 || strncmp(m->name, "[anon", 5) == 0)
		return UCTL_TK_ANON;
	return UCTL_TK_OTHER;
}

/* An app range [s, e) carried by uffd id with modes, for splitting. */
struct app_range {
	uint64_t s, e, modes;
	uint32_t id;
	bool sent;  /* the uffd went to another process (SCM_RIGHTS) */
};

/* The app's registrations of this process's memory, sorted. Locked. */
static uint32_t app_ranges_locked(struct app_range *out, uint32_t cap)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *u = G.model.uffds[i];
		if ((u->mm_pid && u->mm_pid != G.pid) || u->nfds == 0 || u->wp_async)
			continue;
		for (uint32_t k = 0; k < u->nranges && n < cap; k++) {
			struct app_range a = {u->ranges[k].start, u->ranges[k].end,
					      u->ranges[k].modes, u->id,
					      shim_ino_sent_locked(u->ino)};
			uint32_t j = n++;
			while (j > 0 && out[j - 1].s > a.s) {
				out[j] = out[j - 1];
				j--;
			}
			out[j] = a;
		}
	}
	return n;
}

static void piece(struct shim_track_out *o, const struct um_mapping *m, uint64_t s, uint64_t e,
		  uint32_t mode, uint32_t carrier)
{
	if (s >= e)
		return;
	struct uctl_track_range r;
	memset(&r, 0, sizeof(r));
	r.start = s;
	r.end = e;
	r.prot = m->prot;
	r.kind = kind_of(m);
	r.mode = mode;
	r.carrier_id = carrier;
	memcpy(r.name, m->name, sizeof(r.name) - 1);
	ranges_push(o, &r);
}

/* [s, e) of mapping m, split where the app's registrations begin and end. */
static void split_by_app(struct shim_track_out *o, const struct um_mapping *m, uint64_t s,
			 uint64_t e, const struct app_range *ar, uint32_t nar)
{
	uint64_t cur = s;
	for (uint32_t i = 0; i < nar && cur < e; i++) {
		if (ar[i].e <= cur || ar[i].s >= e)
			continue;
		piece(o, m, cur, ar[i].s > cur ? ar[i].s : cur, UCTL_TM_ASYNC, 0);
		uint64_t as = ar[i].s > cur ? ar[i].s : cur;
		uint64_t ae = ar[i].e < e ? ar[i].e : e;
		/* The app's own WP registration carries our bits; a MISSING-only
		 * one gets WP added (augmented: the app still sees its modes).
		 * Not through a uffd another process may read. */
		bool wp = (ar[i].modes & UFFDIO_REGISTER_MODE_WP) && !ar[i].sent;
		bool aug = !ar[i].sent && ar[i].modes == UFFDIO_REGISTER_MODE_MISSING && T.augment;
		piece(o, m, as, ae, wp || aug ? UCTL_TM_SYNC : UCTL_TM_ALL, ar[i].id);
		if (aug)
			o->ranges[o->nranges - 1].flags |= UCTL_TR_AUGMENTED;
		cur = ae;
	}
	piece(o, m, cur, e, UCTL_TM_ASYNC, 0);
}

static bool overlaps(const struct um_mapping *m, const void *p, size_t len)
{
	return p && len && m->start < (uint64_t)p + len && (uint64_t)p < m->end;
}

/* The tracked pieces of the address space as it is now. */
static int current_pieces(struct shim_track_out *o)
{
	struct um_mapping *maps = um_zalloc(MAPS_BATCH * sizeof(*maps));
	struct app_range *ar = um_zalloc(1024 * sizeof(*ar));
	if (!maps || !ar) {
		um_free(maps, MAPS_BATCH * sizeof(*maps));
		um_free(ar, 1024 * sizeof(*ar));
		return -ENOMEM;
	}
	shim_lock();
	uint32_t nar = app_ranges_locked(ar, 1024);
	shim_unlock();
	for (uint64_t addr = 0; addr < USER_SPACE_END;) {
		size_t n = shim_maps_read(addr, USER_SPACE_END, maps, MAPS_BATCH);
		for (size_t i = 0; i < n; i++) {
			const struct um_mapping *m = &maps[i];
			/* not the shim's own memory: this cut's scratch and output,
			 * the tracked set it keeps, nesting's doorbells */
			bool ours = overlaps(m, maps, MAPS_BATCH * sizeof(*maps)) ||
				    overlaps(m, ar, 1024 * sizeof(*ar)) ||
				    overlaps(m, o->ranges, o->cap_ranges * sizeof(*o->ranges)) ||
				    overlaps(m, o->runs, o->cap_runs * sizeof(*o->runs)) ||
				    overlaps(m, T.r, T.cap * sizeof(*T.r)) ||
				    shim_nest_is_bell(m->start, m->end);
			if (ours || !candidate(m))
				continue;
			if (!T.nsel) {
				split_by_app(o, m, m->start, m->end, ar, nar);
				continue;
			}
			for (uint32_t k = 0; k < T.nsel; k++) {
				uint64_t s = m->start > T.sel[k][0] ? m->start : T.sel[k][0];
				uint64_t e = m->end < T.sel[k][1] ? m->end : T.sel[k][1];
				if (s < e)
					split_by_app(o, m, s, e, ar, nar);
			}
		}
		if (n < MAPS_BATCH)
			break;
		addr = maps[n - 1].end;
	}
	um_free(maps, MAPS_BATCH * sizeof(*maps));
	um_free(ar, 1024 * sizeof(*ar));
	return 0;
}

/* ---- kernel calls ---- */
static long uffd_call(int fd, unsigned long req, void *arg)
{
	return RAW3(SYS_ioctl, fd, req, arg);
}

static long wp_range(int fd, uint64_t s, uint64_t e, bool on)
{
	struct uffdio_writeprotect w = {.range = {s, e - s},
					.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	return uffd_call(fd, UFFDIO_WRITEPROTECT, &w);
}

/* PAGEMAP_SCAN of [s, e): pages in category `want` go to o; with wp, they
 * are protected again in the same step (WP_ASYNC memory only). */
static long scan(struct shim_track_out *o, uint64_t s, uint64_t e, uint64_t want, bool wp)
{
	int pm = shim_pagemap_fd();
	if (pm < 0)
		return -EIO;
	struct page_region v[256];
	for (uint64_t cur = s; cur < e;) {
		struct pm_scan_arg a = {.size = sizeof(a), .start = cur, .end = e,
					.vec = (uint64_t)v, .vec_len = 256,
					.category_mask = want, .return_mask = want};
		if (wp)
			a.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
		long r = RAW3(SYS_ioctl, pm, PAGEMAP_SCAN, &a);
		if (r < 0)
			return r;
		for (long i = 0; i < r; i++)
			if (!runs_push(o, v[i].start, v[i].end))
				return -ENOMEM;
		if (a.walk_end <= cur || a.walk_end >= e || r < 256)
			break;
		cur = a.walk_end;
	}
	return 0;
}

static int async_uffd(void)
{
	if (T.async_fd >= 0)
		return T.async_fd;
	int fd = (int)RAW1(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return fd;
	struct uffdio_api api = {.api = UFFD_API,
				 .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
	if (uffd_call(fd, UFFDIO_API, &api) < 0) {
		RAW1(SYS_close, fd);
		return -ENOSYS;
	}
	shim_fd_hide(fd, &T.async_fd);
	return T.async_fd;
}

/* Was [s, e) tracked in this mode (and carrier) at the previous cut? */
static bool was_tracked(const struct uctl_track_range *r)
{
	for (uint32_t i = 0; i < T.n; i++) {
		const struct uctl_track_range *o = &T.r[i];
		if (o->start <= r->start && r->end <= o->end)
			return o->mode == r->mode && o->carrier_id == r->carrier_id;
	}
	return false;
}

/* The app's fd of uffd id, locked. */
static int carrier_fd_locked(uint32_t id)
{
	struct um_uffd *u = um_uffd_by_id(&G.model, id);
	return u && u->nfds ? u->fds[0] : -1;
}

/* ---- the pump's side (shim_pump.c): our WP faults must not wait for the
 * app's reader.  A thread of the app may write a page we protect through the
 * app's uffd while no thread of the app reads that uffd (or the reader itself
 * writes): the pump reads the sync carriers too. ---- */
uint32_t shim_track_pump_carriers_locked(uint32_t *ids, uint32_t cap)
{
	uint32_t n = 0;
	for (uint32_t i = 0; T.active && i < T.n && n < cap; i++) {
		if (T.r[i].mode != UCTL_TM_SYNC || carrier_fd_locked(T.r[i].carrier_id) < 0)
			continue;
		bool dup = false;
		for (uint32_t k = 0; k < n; k++)
			dup |= ids[k] == T.r[i].carrier_id;
		if (!dup)
			ids[n++] = T.r[i].carrier_id;
	}
	return n;
}

/* Does uffd id still carry a sync range?  Not once tracking stopped or the
 * uffd went to another process (whose messages are not ours to take).
 * Locked. */
bool shim_track_pumps_locked(uint32_t id)
{
	for (uint32_t i = 0; T.active && i < T.n; i++)
		if (T.r[i].mode == UCTL_TM_SYNC && T.r[i].carrier_id == id)
			return true;
	return false;
}

/* Protect a newly tracked piece (or learn that it cannot be). */
static void protect_new(struct uctl_track_range *r, struct shim_track_out *o)
{
	r->flags |= UCTL_TR_NEW;
	if (r->mode == UCTL_TM_ASYNC) {
		int fd = async_uffd();
		struct uffdio_register reg = {.range = {r->start, r->end - r->start},
					      .mode = UFFDIO_REGISTER_MODE_WP};
		long rc = fd < 0 ? fd : uffd_call(fd, UFFDIO_REGISTER, &reg);
		if (rc == -ENOMEM) { /* unmapped since we read the maps (e.g. ours) */
			r->mode = 0;
			return;
		}
		if (rc < 0 || wp_range(fd, r->start, r->end, true) < 0)
			r->mode = UCTL_TM_ALL;
	} else if (r->mode == UCTL_TM_SYNC) {
		__atomic_store_n(&shim_track_swallow, 1, __ATOMIC_RELEASE);
		shim_lock();
		int fd = carrier_fd_locked(r->carrier_id);
		long rc = fd >= 0 ? 0 : -EBADF;
		if (rc == 0 && (r->flags & UCTL_TR_AUGMENTED))
			rc = shim_nest_augment_locked(r->carrier_id, fd, r->start, r->end);
		if (rc == 0)
			rc = wp_range(fd, r->start, r->end, true);
		shim_unlock();
		if (rc < 0)
			r->mode = UCTL_TM_ALL;
	}
	runs_push(o, r->start, r->end);
}

/* Collect the dirty pages of a piece tracked since the previous cut and
 * protect them again. */
static void cut_piece(struct uctl_track_range *r, struct shim_track_out *o)
{
	if (r->mode == UCTL_TM_ASYNC) {
		long rc = scan(o, r->start, r->end, PAGE_IS_WRITTEN, true);
		if (rc == -EPERM) /* a new mapping took its place */
			protect_new(r, o);
		else if (rc < 0)
			runs_push(o, r->start, r->end);
	} else if (r->mode == UCTL_TM_SYNC) {
		/* Not atomic like WP_MATCHING: a page the app or the filter
		 * unprotects between the scan and the protection is in marks.
		 * Only what the scan found needs protecting again. */
		uint64_t first = o->nruns;
		if (scan(o, r->start, r->end, PAGE_IS_WRITTEN | PAGE_IS_PRESENT, false) < 0) {
			o->nruns = first;
			runs_push(o, r->start, r->end);
		}
		shim_lock();
		int fd = carrier_fd_locked(r->carrier_id);
		for (uint64_t k = first; fd >= 0 && k < o->nruns; k++) {
			uint64_t a = o->runs[k].start, b = a + (o->runs[k].npages << UM_PAGE_SHIFT);
			wp_range(fd, a > r->start ? a : r->start, b < r->end ? b : r->end, true);
		}
		shim_unlock();
	} else {
		runs_push(o, r->start, r->end);
	}
}

static void take_marks(struct shim_track_out *o)
{
	struct um_wpmap m;
	shim_lock();
	m = T.marks;
	memset(&T.marks, 0, sizeof(T.marks));
	shim_unlock();
	uint64_t cur = 0, rs, re;
	while (um_wp_next_run(&m, &cur, USER_SPACE_END, &rs, &re)) {
		runs_push(o, rs, re);
		cur = re;
	}
	um_wp_free(&m);
}

/* Sort and merge o's runs (pieces are visited in address order, but marks
 * come first and may overlap them). */
static int cmp_run(const void *a, const void *b)
{
	const struct uctl_track_run *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static void runs_normalize(struct shim_track_out *o)
{
	if (o->nruns < 2)
		return;
	/* insertion sort is fine for nearly sorted input; fall back to a
	 * simple shell sort for the rest */
	for (uint64_t gap = o->nruns / 2; gap > 0; gap /= 2)
		for (uint64_t i = gap; i < o->nruns; i++)
			for (uint64_t j = i; j >= gap && cmp_run(&o->runs[j - gap], &o->runs[j]) > 0;
			     j -= gap) {
				struct uctl_track_run t = o->runs[j];
				o->runs[j] = o->runs[j - gap];
				o->runs[j - gap] = t;
			}
	uint64_t w = 0;
	for (uint64_t i = 1; i < o->nruns; i++) {
		uint64_t wend = o->runs[w].start + (o->runs[w].npages << UM_PAGE_SHIFT);
		if (o->runs[i].start <= wend) {
			uint64_t iend = o->runs[i].start + (o->runs[i].npages << UM_PAGE_SHIFT);
			if (iend > wend)
				o->runs[w].npages = (iend - o->runs[w].start) >> UM_PAGE_SHIFT;
		} else {
			o->runs[++w] = o->runs[i];
		}
	}
	o->nruns = w + 1;
}

/* Keep o's ranges as the tracked set for the next cut. */
static void remember(const struct shim_track_out *o)
{
	if (o->nranges > T.cap) { /* grow only: the mapping stays put */
		uint32_t cap = o->nranges < 256 ? 256 : o->nranges * 2;
		void *p = um_zalloc(cap * sizeof(*T.r));
		if (!p) {
			T.n = 0;
			return;
		}
		um_free(T.r, T.cap * sizeof(*T.r));
		T.r = p;
		T.cap = cap;
	}
	T.n = o->nranges;
	if (T.n)
		memcpy(T.r, o->ranges, T.n * sizeof(*T.r));
	for (uint32_t i = 0; i < T.n; i++)
		T.r[i].flags &= ~UCTL_TR_NEW;
}

static void fill_out_hdr(struct shim_track_out *o)
{
	o->epoch = T.epoch;
	o->monitor = T.monitor;
	o->async_fd = T.async_fd;
}

/* One cut: the current pieces, each either new (protect it, save it whole)
 * or known (collect and re-protect its written pages). */
static int do_cut(struct shim_track_out *o)
{
	uint64_t t0 = shim_now_ns();
	shim_track_cut_begin(); /* before any lock: calls in flight may need them */
	bool ordered = shim_order_lock();
	take_marks(o);
	int rc = current_pieces(o);
	if (rc == 0)
		for (uint32_t i = 0; i < o->nranges; i++) {
			if (was_tracked(&o->ranges[i]))
				cut_piece(&o->ranges[i], o);
			else
				protect_new(&o->ranges[i], o);
		}
	uint32_t w = 0; /* drop the pieces that were gone */
	for (uint32_t i = 0; i < o->nranges; i++)
		if (o->ranges[i].mode)
			o->ranges[w++] = o->ranges[i];
	o->nranges = w;
	remember(o);
	/* Now that the pieces are known: the pump reads the sync carriers. */
	for (uint32_t i = 0; i < T.n; i++)
		if (T.r[i].mode == UCTL_TM_SYNC) {
			shim_pump_start();
			break;
		}
	if (T.hold_zaps)
		shim_track_zap_hold_begin(); /* before the reply: the monitor reads next */
	if (ordered)
		shim_order_unlock();
	shim_track_cut_end();
	runs_normalize(o);
	fill_out_hdr(o);
	o->wp_ns = shim_now_ns() - t0;
	return rc;
}

static bool monitor_alive(void)
{
	if (T.pidfd < 0)
		return false;
	struct pollfd_s { int fd; short events, revents; } p = {T.pidfd, 1 /* POLLIN */, 0};
	return RAW3(SYS_poll, &p, 1, 0) == 0;
}

int shim_track_start(pid_t monitor, const uint64_t (*sel)[2], uint32_t nsel, uint32_t flags,
		     struct shim_track_out *o)
{
	if (T.active) {
		if (monitor_alive() && T.monitor != monitor)
			return -EBUSY;
		shim_track_stop(0);
	}
	if (nsel > UCTL_TRACK_MAX_SEL)
		return -EINVAL;
	for (uint32_t i = 0; i < nsel; i++)
		if (sel[i][0] >= sel[i][1] || (sel[i][0] | sel[i][1]) & (UM_PAGE_SIZE - 1))
			return -EINVAL;
	/* Sorted and merged: pieces go out in address order even when two
	 * selections fall in one mapping. */
	T.nsel = 0;
	for (uint32_t i = 0; i < nsel; i++) {
		uint32_t j = T.nsel++;
		while (j > 0 && T.sel[j - 1][0] > sel[i][0]) {
			T.sel[j][0] = T.sel[j - 1][0];
			T.sel[j][1] = T.sel[j - 1][1];
			j--;
		}
		T.sel[j][0] = sel[i][0];
		T.sel[j][1] = sel[i][1];
	}
	uint32_t w = 0;
	for (uint32_t i = 0; i < T.nsel; i++) {
		if (w && T.sel[i][0] <= T.sel[w - 1][1]) {
			if (T.sel[i][1] > T.sel[w - 1][1])
				T.sel[w - 1][1] = T.sel[i][1];
			continue;
		}
		T.sel[w][0] = T.sel[i][0];
		T.sel[w][1] = T.sel[i][1];
		w++;
	}
	T.nsel = w;
	T.augment = (flags & UCTL_TRACK_AUGMENT) != 0;
	T.hold_zaps = (flags & UCTL_TRACK_HOLD_ZAPS) != 0;
	__atomic_store_n(&shim_track_zap_fence, T.hold_zaps, __ATOMIC_SEQ_CST);
	T.monitor = monitor;
	T.epoch = 0;
	int pfd = (int)RAW2(SYS_pidfd_open, monitor, 0);
	if (pfd >= 0)
		shim_fd_hide(pfd, &T.pidfd);
	__atomic_store_n(&T.active, 1, __ATOMIC_RELEASE);
	return do_cut(o);
}

int shim_track_cut(pid_t monitor, struct shim_track_out *o)
{
	if (!T.active)
		return -ENOENT;
	if (monitor != T.monitor)
		return -EBUSY;
	T.epoch++;
	return do_cut(o);
}

int shim_track_info(struct shim_track_out *o)
{
	if (!T.active)
		return -ENOENT;
	for (uint32_t i = 0; i < T.n; i++)
		ranges_push(o, &T.r[i]);
	fill_out_hdr(o);
	return 0;
}

/* Unprotect, through the app's uffd, the pages of sync range r that the app
 * does not hold itself.  Locked. */
static void release_sync_locked(const struct uctl_track_range *r)
{
	struct um_uffd *u = r->mode == UCTL_TM_SYNC ? um_uffd_by_id(&G.model, r->carrier_id) : NULL;
	if (!u || !u->nfds)
		return;
	for (uint64_t a = r->start; a < r->end;) {
		uint64_t b = a;
		while (b < r->end && !um_wp_test(&u->wp, b))
			b += UM_PAGE_SIZE;
		if (b > a)
			wp_range(u->fds[0], a, b, false);
		while (b < r->end && um_wp_test(&u->wp, b))
			b += UM_PAGE_SIZE;
		a = b;
	}
}

/* The app sent uffd id to another process (SCM_RIGHTS): a WP fault of ours
 * could be read there, by a shim that knows nothing of our protections.
 * Give them back now; the next cut tracks those ranges "all" (saved whole,
 * so nothing written meanwhile is lost).  Locked. */
void shim_track_sent_away_locked(uint32_t id)
{
	for (uint32_t i = 0; T.active && i < T.n; i++)
		if (T.r[i].mode == UCTL_TM_SYNC && T.r[i].carrier_id == id) {
			release_sync_locked(&T.r[i]);
			T.r[i].mode = 0; /* new at the next cut */
		}
}

/* Give back every page we hold.  The shim's own uffd goes (closing it
 * unregisters and clears its bits); on the app's uffds the pages the app
 * does not hold itself are unprotected. */
int shim_track_stop(pid_t monitor)
{
	if (!T.active)
		return -ENOENT;
	if (monitor && monitor != T.monitor)
		return -EBUSY;
	__atomic_store_n(&T.active, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&shim_track_zap_fence, 0, __ATOMIC_SEQ_CST);
	shim_track_zap_hold_end();
	bool ordered = shim_order_lock();
	if (T.async_fd >= 0) {
		int fd = T.async_fd;
		shim_fd_unhide(&T.async_fd);
		shim_fd_set(fd, FD_NONE);
		RAW1(SYS_close, fd);
		T.async_fd = -1;
	}
	shim_lock();
	for (uint32_t i = 0; i < T.n; i++)
		release_sync_locked(&T.r[i]);
	um_wp_free(&T.marks);
	shim_unlock();
	if (ordered)
		shim_order_unlock();
	um_free(T.r, T.cap * sizeof(*T.r));
	T.r = NULL;
	T.n = T.cap = 0;
	if (T.pidfd >= 0) {
		int fd = T.pidfd;
		shim_fd_unhide(&T.pidfd);
		shim_fd_set(fd, FD_NONE);
		RAW1(SYS_close, fd);
		T.pidfd = -1;
	}
	T.monitor = 0;
	return 0;
}

int shim_track_monitor_pidfd(void)
{
	return __atomic_load_n(&T.active, __ATOMIC_ACQUIRE) ? T.pidfd : -1;
}

void shim_track_after_fork_child(void)
{
	/* The child's mappings lost the shim's registration (no FORK event on
	 * that uffd); the monitor tracks the parent. */
	int fds[2] = {T.async_fd, T.pidfd};
	for (int i = 0; i < 2; i++)
		if (fds[i] >= 0) {
			shim_fd_set(fds[i], FD_NONE);
			RAW1(SYS_close, fds[i]);
		}
	memset(&T, 0, sizeof(T));
	T.async_fd = T.pidfd = -1;
	shim_track_fence_after_fork_child();
}

/* The same, called with the model lock held. */
void shim_track_mark_locked(uint64_t start, uint64_t len)
{
	if (!__atomic_load_n(&T.active, __ATOMIC_ACQUIRE) || !len)
		return;
	uint64_t s = start & ~(UM_PAGE_SIZE - 1);
	uint64_t e = (start + len + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1);
	um_wp_set(&T.marks, s, e, true);
}

bool shim_track_active(void)
{
	return __atomic_load_n(&T.active, __ATOMIC_ACQUIRE) != 0;
}

const char *shim_track_describe(uint64_t page)
{
	const char *d = "no";
	shim_lock();
	for (uint32_t i = 0; T.active && i < T.n; i++) {
		const struct uctl_track_range *r = &T.r[i];
		if (page < r->start || page >= r->end)
			continue;
		d = r->mode == UCTL_TM_ASYNC ? "async"
		    : r->mode == UCTL_TM_SYNC ? (r->flags & UCTL_TR_AUGMENTED ? "sync (augmented)" : "sync")
		    : r->mode == UCTL_TM_ALL ? "all" : "gone";
		break;
	}
	shim_unlock();
	return d;
}

/* ---- the app's paths ---- */
/* The app is about to register [start, start+len): the kernel lets one uffd
 * only, so ours steps aside there (called under the order lock).  The next
 * cut finds the app's registration and saves those pieces whole. */
void shim_track_yield(uint64_t start, uint64_t len)
{
	if (!__atomic_load_n(&T.active, __ATOMIC_ACQUIRE) || T.async_fd < 0)
		return;
	uint64_t e = start + len;
	for (uint32_t i = 0; i < T.n; i++) {
		struct uctl_track_range *r = &T.r[i];
		if (r->mode != UCTL_TM_ASYNC || r->end <= start || r->start >= e)
			continue;
		uint64_t s2 = r->start > start ? r->start : start;
		uint64_t e2 = r->end < e ? r->end : e;
		struct uffdio_range rg = {s2 & ~(UM_PAGE_SIZE - 1),
					  ((e2 + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1)) -
						  (s2 & ~(UM_PAGE_SIZE - 1))};
		uffd_call(T.async_fd, UFFDIO_UNREGISTER, &rg);
		r->mode = 0; /* not tracked by us any more: new at the next cut */
	}
}

void shim_track_mark(uint64_t start, uint64_t len)
{
	if (!__atomic_load_n(&T.active, __ATOMIC_ACQUIRE) || !len)
		return;
	uint64_t s = start & ~(UM_PAGE_SIZE - 1);
	uint64_t e = (start + len + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1);
	if (shim_model_enter()) {
		um_wp_set(&T.marks, s, e, true);
		shim_unlock();
	}
}

/* Take out of the n bytes read from fd the WP faults on pages the app does
 * not hold protected itself (ours): record, unprotect and wake them. */
ssize_t shim_track_filter(int fd, void *buf, ssize_t n)
{
	if (!__atomic_load_n(&shim_track_swallow, __ATOMIC_ACQUIRE) ||
	    n < (ssize_t)sizeof(struct uffd_msg))
		return n;
	struct uffd_msg *msgs = buf;
	size_t count = (size_t)n / sizeof(struct uffd_msg), kept = 0;
	for (size_t i = 0; i < count; i++) {
		struct uffd_msg m;
		memcpy(&m, &msgs[i], sizeof(m));
		bool ours = false;
		uint64_t page = m.arg.pagefault.address & ~(UM_PAGE_SIZE - 1);
		bool wpf = m.event == UFFD_EVENT_PAGEFAULT &&
			   (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP);
		/* Ordered against the app's own WRITEPROTECT: a page it protects
		 * now must not be unprotected by us on stale knowledge. */
		bool ordered = wpf && shim_order_lock();
		if (wpf && shim_model_enter()) {
			struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
			const struct um_range *r = u ? um_range_find(u, page) : NULL;
			ours = u && !u->wp_async &&
			       !(r && (r->modes & UFFDIO_REGISTER_MODE_WP) && um_wp_test(&u->wp, page));
			if (ours && T.active)
				um_wp_set(&T.marks, page, page + UM_PAGE_SIZE, true);
			shim_unlock();
		}
		if (ours)
			wp_range(fd, page, page + UM_PAGE_SIZE, false);
		if (ordered)
			shim_order_unlock();
		if (ours)
			continue;
		if (kept != i)
			memcpy(&msgs[kept], &m, sizeof(m));
		kept++;
	}
	if (kept == count)
		return n;
	return (ssize_t)(kept * sizeof(struct uffd_msg)) + (n % (ssize_t)sizeof(struct uffd_msg));
}
