/* shim_uffd.c - what happens to the model when the app creates a uffd,
 * issues a UFFDIO_* ioctl, or reads messages. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "shim.h"
#include "shim_raw.h"
#include "trace_format.h"
#include "uffd_compat.h"

#define MAX_MAPS 128

static uint64_t fd_ino(int fd)
{
	struct stat st;
	if (RAW2(SYS_fstat, fd, &st) < 0)
		return 0;
	return st.st_ino;
}

/* Copy len bytes from the app's memory without risking a fault. */
static bool safe_copy(void *dst, const void *src, size_t len)
{
	struct iovec l = {dst, len}, r = {(void *)src, len};
	return RAW6(SYS_process_vm_readv, RAW0(SYS_getpid), &l, 1, &r, 1, 0) == (long)len;
}

struct um_uffd *shim_track_new(int fd, uint32_t origin, uint32_t flags, pid_t mm_pid)
{
	uint64_t ino = fd_ino(fd);
	struct um_uffd *u = NULL;
	if (shim_in_vm_sharing_child())
		return NULL; /* its fd table is its own; our model is the parent's */
	if (shim_model_enter()) {
		/* A stale entry for this fd number (closed behind our back) goes. */
		struct um_uffd *old = um_uffd_by_fd(&G.model, fd);
		if (old) {
			struct um_uffd *gone = um_fd_close(&G.model, fd);
			if (gone)
				um_uffd_remove(&G.model, gone);
		}
		u = um_uffd_new(&G.model, ino, origin, flags, mm_pid);
		if (u) {
			um_fd_add(u, fd, flags & O_CLOEXEC);
			u->file_flags = flags & O_NONBLOCK;
			u->last_change_ns = shim_now_ns();
		}
		shim_fd_set(fd, FD_UFFD);
		shim_unlock();
	}
	if (shim_tracing && (origin == UM_ORIGIN_SYSCALL || origin == UM_ORIGIN_DEVICE))
		shim_trace(UT_CREATE, fd, ino, fd, flags, origin, (uint64_t)mm_pid, 0, 0);
	shim_ctl_ensure();
	return u;
}

void shim_note_open(int fd, const char *path)
{
	size_t n = strlen(path);
	if (n < 11 || strcmp(path + n - 11, "userfaultfd") != 0)
		return;
	struct stat st;
	if (RAW2(SYS_fstat, fd, &st) == 0 && S_ISCHR(st.st_mode))
		shim_fd_set(fd, FD_DEVUFFD);
}

long shim_devuffd_ioctl(int fd, unsigned long req, void *arg)
{
	long ret = real.ioctl(fd, req, arg);
	if (req != USERFAULTFD_IOC_NEW || ret < 0)
		return ret;
	int err = errno;
	shim_track_new((int)ret, UM_ORIGIN_DEVICE, (uint32_t)(uintptr_t)arg, G.pid);
	errno = err;
	return ret;
}

/* Is this one of the ioctls whose outcome changes the model? */
static bool modelled(unsigned long req)
{
	switch (req) {
	case UFFDIO_API: case UFFDIO_REGISTER: case UFFDIO_UNREGISTER: case UFFDIO_WAKE:
	case UFFDIO_COPY: case UFFDIO_ZEROPAGE: case UFFDIO_WRITEPROTECT:
	case UFFDIO_CONTINUE: case UFFDIO_POISON: case UFFDIO_MOVE:
		return true;
	default:
		return false;
	}
}

/* Page bits of [start, start+len) read back from the kernel into the model,
 * in pieces that fit on the stack. */
void shim_wp_readback(struct um_uffd *u, uint64_t start, uint64_t len)
{
	uint8_t wp[4096];
	uint64_t npages = len >> UM_PAGE_SHIFT;
	for (uint64_t done = 0; done < npages;) {
		uint64_t n = npages - done < sizeof(wp) ? npages - done : sizeof(wp);
		uint64_t a = start + (done << UM_PAGE_SHIFT);
		if (shim_pagemap_wp(a, n, wp) == 0)
			um_wp_sync(u, a, n, wp);
		done += n;
	}
}

static uint64_t op_kind(unsigned long req)
{
	switch (req) {
	case UFFDIO_API: return UT_API;
	case UFFDIO_REGISTER: return UT_REGISTER;
	case UFFDIO_UNREGISTER: return UT_UNREGISTER;
	case UFFDIO_WAKE: return UT_WAKE;
	case UFFDIO_COPY: return UT_COPY;
	case UFFDIO_ZEROPAGE: return UT_ZEROPAGE;
	case UFFDIO_WRITEPROTECT: return UT_WRITEPROTECT;
	case UFFDIO_CONTINUE: return UT_CONTINUE;
	case UFFDIO_POISON: return UT_POISON;
	default: return UT_MOVE;
	}
}

/* The argument structs, as one union, copied after the kernel's answer. */
union uffd_args {
	struct uffdio_api api;
	struct uffdio_register reg;
	struct uffdio_range range;
	struct uffdio_copy copy;
	struct uffdio_zeropage zero;
	struct uffdio_writeprotect wp;
	struct uffdio_continue cont;
	struct uffdio_poison poison;
	struct uffdio_move move;
};

/* ioctls of the VFS that change fd or file flags. */
static long fdflag_ioctl(int fd, unsigned long req, void *arg)
{
	int on = 0;
	if (req == FIONBIO && !safe_copy(&on, arg, sizeof(on)))
		return real.ioctl(fd, req, arg);
	long ret = real.ioctl(fd, req, arg);
	if (ret < 0)
		return ret;
	int err = errno;
	if (shim_model_enter()) {
		struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
		if (u && req == FIONBIO) {
			u->file_flags = on ? O_NONBLOCK : 0;
			shim_nest_reforce_locked(fd);
		} else if (u) {
			um_fd_set_cloexec(u, fd, req == FIOCLEX);
		}
		shim_unlock();
	}
	errno = err;
	return ret;
}

/* The other uffds of u's address space whose ranges meet [s, e): the kernel
 * lets any uffd of the mm write-protect, fill or move there, and the pages'
 * bits belong to the uffd that registered them. */
static void wp_readback_others(struct um_uffd *u, uint64_t s, uint64_t e)
{
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *v = G.model.uffds[i];
		if (v == u || v->mm_pid != u->mm_pid)
			continue;
		for (uint32_t k = 0; k < v->nranges; k++) {
			uint64_t a = v->ranges[k].start > s ? v->ranges[k].start : s;
			uint64_t b = v->ranges[k].end < e ? v->ranges[k].end : e;
			if (a < b && (v->ranges[k].modes & UFFDIO_REGISTER_MODE_WP))
				shim_wp_readback(v, a, b - a);
		}
	}
}

/* Drop u's WP bits in [s, e) where u has no WP-registered range. */
static void wp_clip_to_own(struct um_uffd *u, uint64_t s, uint64_t e)
{
	for (uint64_t a = s; a < e;) {
		const struct um_range *r = um_range_find(u, a);
		if (r && (r->modes & UFFDIO_REGISTER_MODE_WP)) {
			a = r->end;
			continue;
		}
		uint64_t b = a + UM_PAGE_SIZE;
		while (b < e && !um_range_find(u, b))
			b += UM_PAGE_SIZE;
		um_wp_set(&u->wp, a, b < e ? b : e, false);
		a = b;
	}
}

/* ---- nesting (shim_nest.c) ---- */
/* Calls the shim answers itself on nested memory: UNREGISTER and
 * WRITEPROTECT(0) there must not touch the other clients' state.  Returns
 * true when it handled the call (*ret, *err set). */
static bool nested_call(int fd, unsigned long req, void *arg, long *ret, int *err)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) || !arg)
		return false;
	long r;
	/* Memory dirty tracking gave WP mode that this uffd did not register:
	 * answer WP operations as the kernel would without it. */
	if ((req == UFFDIO_WRITEPROTECT || req == UFFDIO_COPY || req == UFFDIO_CONTINUE) &&
	    __atomic_load_n(&shim_nest_naug, __ATOMIC_ACQUIRE)) {
		union uffd_args in;
		size_t sz = _IOC_SIZE(req);
		if (!safe_copy(&in, arg, sz))
			return false;
		uint64_t s = 0, l = 0;
		bool wp_op = false;
		if (req == UFFDIO_WRITEPROTECT) {
			s = in.wp.range.start, l = in.wp.range.len, wp_op = true;
		} else if (req == UFFDIO_COPY) {
			s = in.copy.dst, l = in.copy.len;
			wp_op = in.copy.mode & UFFDIO_COPY_MODE_WP;
		} else {
			s = in.cont.range.start, l = in.cont.range.len;
			wp_op = in.cont.mode & UFFDIO_CONTINUE_MODE_WP;
		}
		bool valid = l && !((s | l) & (UM_PAGE_SIZE - 1));
		if (wp_op && valid && shim_nest_aug_lacks_wp(fd, s, l)) {
			*ret = -1;
			*err = req == UFFDIO_WRITEPROTECT ? ENOENT : EINVAL;
			return true;
		}
	}
	if (req == UFFDIO_UNREGISTER) {
		struct uffdio_range in;
		if (!safe_copy(&in, arg, sizeof(in)) || !in.len ||
		    ((in.start | in.len) & (UM_PAGE_SIZE - 1)) || !shim_nest_touches(in.start, in.len))
			return false;
		r = shim_nest_unregister(fd, in.start, in.len);
	} else if (req == UFFDIO_WRITEPROTECT) {
		struct uffdio_writeprotect in;
		if (!safe_copy(&in, arg, sizeof(in)) || !in.range.len ||
		    ((in.range.start | in.range.len) & (UM_PAGE_SIZE - 1)) ||
		    (in.mode & ~(uint64_t)UFFDIO_WRITEPROTECT_MODE_DONTWAKE) ||
		    !shim_nest_touches(in.range.start, in.range.len))
			return false;
		r = shim_nest_unprotect(fd, in.range.start, in.range.len, in.mode);
	} else {
		return false;
	}
	*ret = r < 0 ? -1 : 0;
	*err = r < 0 ? (int)-r : 0;
	return true;
}

/* The kernel said EBUSY: another uffd of this process has the memory. */
static void nested_register(int fd, void *arg, long *ret, int *err)
{
	struct uffdio_register in;
	if (!safe_copy(&in, arg, sizeof(in)))
		return;
	uint64_t ioctls = 0;
	if (shim_nest_register(fd, in.range.start, in.range.len, in.mode, &ioctls) != 0)
		return;
	in.ioctls = ioctls;
	memcpy(arg, &in, sizeof(in)); /* what the kernel writes back */
	*ret = 0;
	*err = 0;
}

/* A resolution by a client that is not the carrier: wake the carrier's
 * sleepers (unless the call said DONTWAKE; bit 0 of every mode). */
static void nest_wake(int fd, unsigned long req, const union uffd_args *a)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return;
	switch (req) {
	case UFFDIO_COPY:
		if (!(a->copy.mode & 1))
			shim_nest_after_resolve(fd, a->copy.dst, a->copy.len);
		break;
	case UFFDIO_ZEROPAGE:
		if (!(a->zero.mode & 1))
			shim_nest_after_resolve(fd, a->zero.range.start, a->zero.range.len);
		break;
	case UFFDIO_CONTINUE:
		if (!(a->cont.mode & 1))
			shim_nest_after_resolve(fd, a->cont.range.start, a->cont.range.len);
		break;
	case UFFDIO_POISON:
		if (!(a->poison.mode & 1))
			shim_nest_after_resolve(fd, a->poison.range.start, a->poison.range.len);
		break;
	case UFFDIO_MOVE:
		if (!(a->move.mode & 1))
			shim_nest_after_resolve(fd, a->move.dst, a->move.len);
		break;
	case UFFDIO_WAKE:
		shim_nest_after_resolve(fd, a->range.start, a->range.len);
		break;
	case UFFDIO_UNREGISTER:
		/* As the kernel's UNREGISTER wakes the range: the waiters fault
		 * again, now that the model routes them to the others. */
		shim_nest_after_unregister(fd, a->range.start, a->range.len);
		break;
	}
}

/* Calls after which dirty tracking marks pages (track_mark). */
static bool marks_pages(unsigned long req)
{
	return req == UFFDIO_COPY || req == UFFDIO_ZEROPAGE || req == UFFDIO_CONTINUE ||
	       req == UFFDIO_POISON || req == UFFDIO_MOVE || req == UFFDIO_WRITEPROTECT;
}

/* Tell dirty tracking which pages a successful call changed. */
static void track_mark(unsigned long req, const union uffd_args *a)
{
	switch (req) {
	case UFFDIO_COPY:
		shim_track_mark(a->copy.dst, a->copy.len);
		break;
	case UFFDIO_ZEROPAGE:
		shim_track_mark(a->zero.range.start, a->zero.range.len);
		break;
	case UFFDIO_CONTINUE:
		shim_track_mark(a->cont.range.start, a->cont.range.len);
		break;
	case UFFDIO_POISON:
		shim_track_mark(a->poison.range.start, a->poison.range.len);
		break;
	case UFFDIO_MOVE:
		shim_track_mark(a->move.dst, a->move.len);
		shim_track_mark(a->move.src, a->move.len);
		break;
	case UFFDIO_WRITEPROTECT:
		if (!(a->wp.mode & UFFDIO_WRITEPROTECT_MODE_WP))
			shim_track_mark(a->wp.range.start, a->wp.range.len);
		break;
	}
}

long shim_uffd_ioctl(int fd, unsigned long req, void *arg)
{
	if (req == FIONBIO || req == FIOCLEX || req == FIONCLEX)
		return fdflag_ioctl(fd, req, arg);
	if (!modelled(req))
		return real.ioctl(fd, req, arg);
	uint64_t api_requested = 0;
	if (req == UFFDIO_API && arg) { /* the kernel overwrites what was asked */
		struct uffdio_api in;
		if (safe_copy(&in, arg, sizeof(in)))
			api_requested = in.features;
	}
	/* Before the order lock: a cut waits for marked calls in flight, and
	 * then takes the order lock itself. */
	bool marked = shim_track_active() && marks_pages(req);
	if (marked)
		shim_track_op_begin();
	bool zap = false;
	if (req == UFFDIO_MOVE && arg) { /* takes the pages at src away */
		struct uffdio_move mv;
		if (safe_copy(&mv, arg, sizeof(mv)))
			zap = shim_track_zap_begin(mv.src, mv.len);
	}
	shim_gate_enter();
	bool ordered = (req == UFFDIO_REGISTER || req == UFFDIO_UNREGISTER ||
			req == UFFDIO_WRITEPROTECT) && shim_order_lock();
	if (req == UFFDIO_REGISTER && arg && shim_track_active()) {
		struct uffdio_register in;
		if (safe_copy(&in, arg, sizeof(in)))
			shim_track_yield(in.range.start, in.range.len);
	}
	long ret;
	int err;
	if (!nested_call(fd, req, arg, &ret, &err)) {
		ret = real.ioctl(fd, req, arg);
		err = errno;
		if (req == UFFDIO_REGISTER && ret < 0 && err == EBUSY && shim_nest_enabled)
			nested_register(fd, arg, &ret, &err);
	}
	shim_track_zap_end(zap);
	long kret = ret < 0 ? -err : ret;
	union uffd_args a;
	size_t sz = _IOC_SIZE(req);
	bool have = false;
	if (sz <= sizeof(a) && arg) {
		if (ret == 0 || err == EAGAIN)
			memcpy(&a, arg, sz), have = true; /* the kernel wrote it back */
		else if (err != EFAULT)
			have = safe_copy(&a, arg, sz);
	}
	/* Maps are read outside the lock: a REGISTER needs its backing. */
	struct um_mapping maps[MAX_MAPS];
	size_t nmaps = 0;
	if (req == UFFDIO_REGISTER && ret == 0 && have)
		nmaps = shim_maps_read(a.reg.range.start, a.reg.range.start + a.reg.range.len,
				       maps, MAX_MAPS);
	uint64_t ino = 0, tr_a = 0, tr_b = 0, tr_c = 0, tr_d = 0, tr_e = 0;
	if (shim_model_enter()) {
		struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
		if (u && have) {
			ino = u->ino;
			switch (req) {
			case UFFDIO_API:
				um_op_api(u, kret, api_requested, a.api.features, a.api.ioctls);
				tr_a = u->features_requested; tr_d = a.api.features; tr_c = a.api.ioctls;
				break;
			case UFFDIO_REGISTER:
				um_op_register(u, kret, a.reg.range.start, a.reg.range.len,
					       a.reg.mode, a.reg.ioctls, maps, nmaps);
				tr_a = a.reg.range.start; tr_b = a.reg.range.len;
				tr_c = a.reg.mode; tr_d = a.reg.ioctls;
				break;
			case UFFDIO_UNREGISTER:
				um_op_unregister(u, kret, a.range.start, a.range.len);
				tr_a = a.range.start; tr_b = a.range.len;
				break;
			case UFFDIO_WAKE:
				um_op_wake(u, kret, a.range.start, a.range.len);
				tr_a = a.range.start; tr_b = a.range.len;
				break;
			case UFFDIO_COPY:
				um_op_copy(u, kret, a.copy.dst, a.copy.len, a.copy.mode, a.copy.copy);
				tr_a = a.copy.dst; tr_b = a.copy.len; tr_c = a.copy.mode;
				tr_d = (uint64_t)a.copy.copy; tr_e = a.copy.src;
				break;
			case UFFDIO_ZEROPAGE:
				um_op_zeropage(u, kret, a.zero.range.start, a.zero.range.len,
					       a.zero.mode, a.zero.zeropage);
				tr_a = a.zero.range.start; tr_b = a.zero.range.len;
				tr_c = a.zero.mode; tr_d = (uint64_t)a.zero.zeropage;
				break;
			case UFFDIO_WRITEPROTECT: {
				uint64_t s = a.wp.range.start, l = a.wp.range.len;
				um_op_writeprotect(u, kret, s, l, a.wp.mode, NULL);
				/* Protecting, or a failure that may have applied part of
				 * the range: take the kernel's own bits. */
				bool partial = ret < 0 && err != EINVAL && err != EFAULT &&
					       err != EPERM && err != ESRCH;
				uint64_t ps = s & ~(UM_PAGE_SIZE - 1);
				uint64_t pl = (l + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1);
				if ((ret == 0 && (a.wp.mode & UFFDIO_WRITEPROTECT_MODE_WP)) || partial)
					shim_wp_readback(u, ps, pl);
				if (ret == 0 || partial) {
					wp_clip_to_own(u, ps, ps + pl);
					/* On nested memory every client's bits are its
					 * own; the kernel's are their union. */
					if (!shim_nest_touches_locked(ps, pl))
						wp_readback_others(u, ps, ps + pl);
				}
				tr_a = s; tr_b = l; tr_c = a.wp.mode;
				break;
			}
			case UFFDIO_CONTINUE:
				um_op_continue(u, kret, a.cont.range.start, a.cont.range.len,
					       a.cont.mode, a.cont.mapped);
				tr_a = a.cont.range.start; tr_b = a.cont.range.len;
				tr_c = a.cont.mode; tr_d = (uint64_t)a.cont.mapped;
				break;
			case UFFDIO_POISON:
				um_op_poison(u, kret, a.poison.range.start, a.poison.range.len,
					     a.poison.mode, a.poison.updated);
				tr_a = a.poison.range.start; tr_b = a.poison.range.len;
				tr_c = a.poison.mode; tr_d = (uint64_t)a.poison.updated;
				break;
			case UFFDIO_MOVE:
				um_op_move(u, kret, a.move.dst, a.move.src, a.move.len,
					   a.move.mode, a.move.move);
				if (ret == 0 || err == EAGAIN) { /* the moved pages left no bits */
					uint64_t n = ret == 0 ? a.move.len : (uint64_t)a.move.move;
					for (uint32_t i = 0; i < G.model.nuffds; i++)
						if (G.model.uffds[i]->mm_pid == u->mm_pid)
							um_wp_set(&G.model.uffds[i]->wp, a.move.src,
								  a.move.src + n, false);
				}
				tr_a = a.move.dst; tr_b = a.move.len; tr_c = a.move.mode;
				tr_d = (uint64_t)a.move.move; tr_e = a.move.src;
				break;
			}
			if (req == UFFDIO_REGISTER || req == UFFDIO_UNREGISTER)
				shim_update_own_ranges();
		} else if (u) {
			ino = u->ino;
			u->counters[UM_C_IOC_ERRORS]++;
		}
		shim_unlock();
	}
	/* Only a call that began while tracking was on is marked: one that
	 * began before may have lost the race to the first cut, which saves and
	 * protects what it finds; a mark now would report the page again. */
	if (marked && have && (ret == 0 || err == EAGAIN))
		track_mark(req, &a);
	if (marked)
		shim_track_op_end();
	if (have && ret == 0)
		nest_wake(fd, req, &a);
	if ((req == UFFDIO_UNREGISTER || req == UFFDIO_REGISTER) && ret == 0 &&
	    __atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) && shim_model_enter()) {
		shim_nest_prune_locked();
		shim_unlock();
	}
	if (ordered)
		shim_order_unlock();
	if (shim_tracing)
		shim_trace((int)op_kind(req), fd, ino, kret, tr_a, tr_b, tr_c, tr_d, tr_e);
	if (ret < 0 && err == EEXIST && have && shim_debug_enabled())
		shim_debug_fill_failed(req, req == UFFDIO_COPY ? a.copy.dst
					    : req == UFFDIO_ZEROPAGE ? a.zero.range.start
					    : req == UFFDIO_CONTINUE ? a.cont.range.start : 0, err);
	shim_gate_leave();
	errno = err;
	return ret;
}

void shim_note_msgs(int fd, const void *buf, ssize_t n)
{
	const struct uffd_msg *msgs = buf;
	size_t count = (size_t)n / sizeof(struct uffd_msg);
	uint64_t t = shim_now_ns();
	uint64_t ino = 0;
	size_t nnew = 0;
	if (shim_model_enter()) {
		struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
		if (u) {
			ino = u->ino;
			for (size_t i = 0; i < count; i++) {
				struct um_uffd *forked = NULL;
				struct uffd_msg m;
				memcpy(&m, &msgs[i], sizeof(m));
				um_msg(&G.model, u, &m, t, &forked);
				u = um_uffd_by_fd(&G.model, fd); /* the clone may move arrays */
				if (forked) {
					int nfd = forked->fds[0];
					forked->ino = fd_ino(nfd);
					shim_fd_set(nfd, FD_UFFD);
					nnew++;
					if (__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
						shim_nest_forked_locked(forked);
					/* fork() may have returned before this read did. */
					for (uint32_t k = 0; k < G.nfork_wait; k++) {
						if (G.fork_wait[k].parent_id != (uint32_t)forked->parent_id)
							continue;
						forked->mm_pid = G.fork_wait[k].child;
						memmove(&G.fork_wait[k], &G.fork_wait[k + 1],
							(G.nfork_wait - k - 1) * sizeof(G.fork_wait[0]));
						G.nfork_wait--;
						break;
					}
				}
				if (!u)
					break;
			}
		}
		shim_unlock();
	}
	if (nnew)
		shim_ctl_ensure();
	if (!shim_tracing)
		return;
	for (size_t i = 0; i < count; i++) {
		struct uffd_msg m;
		memcpy(&m, &msgs[i], sizeof(m));
		switch (m.event) {
		case UFFD_EVENT_PAGEFAULT:
			shim_trace_at(t, UT_MSG_PAGEFAULT, fd, ino, 0, m.arg.pagefault.address,
				   m.arg.pagefault.feat.ptid, m.arg.pagefault.flags, 0, 0);
			break;
		case UFFD_EVENT_FORK:
			shim_trace_at(t, UT_MSG_FORK, fd, ino, 0, m.arg.fork.ufd, 0, 0, 0, 0);
			break;
		case UFFD_EVENT_REMAP:
			shim_trace_at(t, UT_MSG_REMAP, fd, ino, 0, m.arg.remap.from, m.arg.remap.to,
				   m.arg.remap.len, 0, 0);
			break;
		case UFFD_EVENT_REMOVE:
			shim_trace_at(t, UT_MSG_REMOVE, fd, ino, 0, m.arg.remove.start, m.arg.remove.end,
				   0, 0, 0);
			break;
		case UFFD_EVENT_UNMAP:
			shim_trace_at(t, UT_MSG_UNMAP, fd, ino, 0, m.arg.remove.start, m.arg.remove.end,
				   0, 0, 0);
			break;
		}
	}
}
