/* um_ops.c - apply to the model what the kernel did: ioctl results, messages
 * read from a uffd, and the memory calls that change registrations. */
#include <errno.h>
#include <string.h>

#include <fcntl.h>

#include "uffd_compat.h"
#include "um_model.h"

static void touch(struct um_uffd *u, uint64_t t_ns)
{
	if (t_ns > u->last_change_ns)
		u->last_change_ns = t_ns;
	else
		u->last_change_ns++;
}

/* Forget waiting faults in [start, end): the kernel woke their threads. */
static void pending_resolve(struct um_uffd *u, uint64_t start, uint64_t end)
{
	uint32_t w = 0;
	for (uint32_t i = 0; i < u->npending; i++) {
		uint64_t a = u->pending[i].address;
		if (a >= start && a < end)
			continue;
		u->pending[w++] = u->pending[i];
	}
	u->npending = w;
}

static void pending_add(struct um_uffd *u, const struct um_fault *f)
{
	/* The same thread faulting again on the same page replaces its entry. */
	for (uint32_t i = 0; i < u->npending; i++)
		if (u->pending[i].address == f->address && u->pending[i].ptid == f->ptid &&
		    u->pending[i].flags == f->flags) {
			u->pending[i] = *f;
			return;
		}
	if (u->npending == UM_MAX_PENDING) {
		memmove(&u->pending[0], &u->pending[1],
			(UM_MAX_PENDING - 1) * sizeof(*u->pending));
		u->npending--;
		u->counters[UM_C_PENDING_DROPPED]++;
	}
	u->pending[u->npending++] = *f;
}

static uint64_t page_end(uint64_t a)
{
	return (a + UM_PAGE_SIZE - 1) & ~(UM_PAGE_SIZE - 1);
}

static void count_ioc(struct um_uffd *u, int counter, long ret)
{
	u->counters[counter]++;
	if (ret < 0)
		u->counters[UM_C_IOC_ERRORS]++;
	touch(u, 0);
}

void um_op_api(struct um_uffd *u, long ret, uint64_t requested, uint64_t features,
	       uint64_t ioctls)
{
	count_ioc(u, UM_C_IOC_API, ret);
	if (ret < 0)
		return;
	u->api_done = 1;
	/* The kernel turns WP_UNPOPULATED on with WP_ASYNC (userfaultfd_api). */
	if (requested & UFFD_FEATURE_WP_ASYNC)
		requested |= UFFD_FEATURE_WP_UNPOPULATED;
	u->features_requested = requested;
	u->features = features;
	u->ioctls = ioctls;
	u->wp_async = requested & UFFD_FEATURE_WP_ASYNC;
}

void um_op_register(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		    uint64_t mode, uint64_t ioctls, const struct um_mapping *maps,
		    size_t nmaps)
{
	count_ioc(u, UM_C_IOC_REGISTER, ret);
	if (ret < 0)
		return;
	uint64_t end = start + len;
	/* The kernel leaves a VMA this uffd registered already alone when its
	 * modes include the requested ones (userfaultfd_register: "already
	 * registered ... with the right tracking mode"); others get the new
	 * modes.  uffd-wp bits of the pages stay either way. */
	struct um_range small[16], *keep = small;
	size_t keep_size = (size_t)u->nranges * sizeof(*keep);
	if (u->nranges > 16 && !(keep = um_zalloc(keep_size)))
		keep = small; /* out of memory: keep what fits */
	uint32_t cap = keep == small ? 16 : u->nranges, nkeep = 0;
	for (uint32_t i = 0; i < u->nranges && nkeep < cap; i++) {
		struct um_range r = u->ranges[i];
		if (r.end <= start || r.start >= end || (r.modes & mode) != mode)
			continue;
		if (r.start < start) {
			if (r.map.backing != UM_BACKING_ANON)
				r.map.offset += start - r.start;
			r.start = r.map.start = start;
		}
		if (r.end > end)
			r.end = r.map.end = end;
		keep[nkeep++] = r;
	}
	um_register(u, start, end, mode, ioctls, maps, nmaps);
	for (uint32_t i = 0; i < nkeep; i++)
		um_register(u, keep[i].start, keep[i].end, keep[i].modes, keep[i].ioctls,
			    &keep[i].map, 1);
	if (keep != small)
		um_free(keep, keep_size);
}

void um_op_unregister(struct um_uffd *u, long ret, uint64_t start, uint64_t len)
{
	count_ioc(u, UM_C_IOC_UNREGISTER, ret);
	if (ret < 0)
		return;
	um_unregister(u, start, start + len);
	pending_resolve(u, start, start + len);
}

void um_op_wake(struct um_uffd *u, long ret, uint64_t start, uint64_t len)
{
	count_ioc(u, UM_C_IOC_WAKE, ret);
	if (ret < 0)
		return;
	pending_resolve(u, start, start + len);
}

/* Pages [start, start+done) were filled; set their WP bit as asked. */
static void filled(struct um_uffd *u, uint64_t start, int64_t done, bool wp, bool wake)
{
	if (done <= 0)
		return;
	uint64_t end = page_end(start + (uint64_t)done);
	um_wp_set(&u->wp, start, end, wp);
	u->counters[UM_C_BYTES_COPIED] += (uint64_t)done;
	if (wake)
		pending_resolve(u, start, end);
}

/* Bytes an UFFDIO_COPY/ZEROPAGE/CONTINUE/POISON/MOVE really did.  The output
 * field is the kernel's only on success (== len) or -EAGAIN (a partial
 * count); other errors either wrote a negative errno there or returned before
 * writing it, leaving whatever the app had put in the struct. */
static int64_t progress(long ret, uint64_t len, int64_t done)
{
	if (ret == 0)
		return (int64_t)len;
	return ret == -EAGAIN && done > 0 && (uint64_t)done <= len ? done : 0;
}

void um_op_copy(struct um_uffd *u, long ret, uint64_t dst, uint64_t len,
		uint64_t mode, int64_t done)
{
	count_ioc(u, UM_C_IOC_COPY, ret);
	done = progress(ret, len, done);
	filled(u, dst, done, mode & UFFDIO_COPY_MODE_WP, !(mode & UFFDIO_COPY_MODE_DONTWAKE));
}

void um_op_zeropage(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		    uint64_t mode, int64_t done)
{
	count_ioc(u, UM_C_IOC_ZEROPAGE, ret);
	done = progress(ret, len, done);
	filled(u, start, done, false, !(mode & UFFDIO_ZEROPAGE_MODE_DONTWAKE));
}

void um_op_continue(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		    uint64_t mode, int64_t done)
{
	count_ioc(u, UM_C_IOC_CONTINUE, ret);
	done = progress(ret, len, done);
	filled(u, start, done, mode & UFFDIO_CONTINUE_MODE_WP,
	       !(mode & UFFDIO_CONTINUE_MODE_DONTWAKE));
}

void um_op_poison(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
		  uint64_t mode, int64_t done)
{
	count_ioc(u, UM_C_IOC_POISON, ret);
	done = progress(ret, len, done);
	if (done > 0) {
		uint64_t end = page_end(start + (uint64_t)done);
		um_wp_set(&u->wp, start, end, false);
		if (!(mode & UFFDIO_POISON_MODE_DONTWAKE))
			pending_resolve(u, start, end);
	}
}

void um_op_move(struct um_uffd *u, long ret, uint64_t dst, uint64_t src,
		uint64_t len, uint64_t mode, int64_t done)
{
	count_ioc(u, UM_C_IOC_MOVE, ret);
	done = progress(ret, len, done);
	if (done <= 0)
		return;
	/* A moved page carries no uffd-wp bit, and leaves none behind. */
	um_wp_set(&u->wp, src, page_end(src + (uint64_t)done), false);
	filled(u, dst, done, false, !(mode & UFFDIO_MOVE_MODE_DONTWAKE));
}

void um_op_writeprotect(struct um_uffd *u, long ret, uint64_t start, uint64_t len,
			uint64_t mode, const uint8_t *pagemap_wp)
{
	count_ioc(u, UM_C_IOC_WRITEPROTECT, ret);
	if (ret < 0)
		return;
	uint64_t end = start + len;
	if (!(mode & UFFDIO_WRITEPROTECT_MODE_WP)) {
		um_wp_set(&u->wp, start, end, false);
		if (!(mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE))
			pending_resolve(u, start, end);
		return;
	}
	if (!pagemap_wp) {
		um_wp_set(&u->wp, start, end, true);
		return;
	}
	um_wp_sync(u, start, len >> UM_PAGE_SHIFT, pagemap_wp);
}

void um_wp_sync(struct um_uffd *u, uint64_t start, uint64_t npages, const uint8_t *wp)
{
	/* Apply the kernel's answer in runs of equal pages. */
	for (uint64_t i = 0; i < npages;) {
		uint64_t j = i;
		while (j < npages && (wp[j] != 0) == (wp[i] != 0))
			j++;
		um_wp_set(&u->wp, start + (i << UM_PAGE_SHIFT), start + (j << UM_PAGE_SHIFT),
			  wp[i] != 0);
		i = j;
	}
}

/* ---- memory calls of the owning process ---- */

static void unmap_one(struct um_uffd *u, uint64_t start, uint64_t end)
{
	um_unregister(u, start, end);
	pending_resolve(u, start, end);
	touch(u, 0);
}

void um_mem_unmap(struct um_state *st, pid_t mm, uint64_t start, uint64_t len)
{
	uint64_t end = page_end(start + len);
	for (uint32_t i = 0; i < st->nuffds; i++)
		if (st->uffds[i]->mm_pid == mm)
			unmap_one(st->uffds[i], start, end);
}

/* Move the registrations of [old, old+len) to new (EVENT_REMAP kept them). */
static void remap_one(struct um_uffd *u, uint64_t old, uint64_t new, uint64_t len)
{
	struct um_range moved[64];
	uint32_t n = 0;
	for (uint32_t i = 0; i < u->nranges && n < 64; i++) {
		struct um_range r = u->ranges[i];
		if (r.end <= old || r.start >= old + len)
			continue;
		if (r.start < old) {
			if (r.map.backing != UM_BACKING_ANON)
				r.map.offset += old - r.start;
			r.start = old;
		}
		if (r.end > old + len)
			r.end = old + len;
		moved[n++] = r;
	}
	um_wp_move(&u->wp, old, new, len);
	{
		/* Cut the old place without touching the (already moved) bits. */
		struct um_wpmap saved = u->wp;
		memset(&u->wp, 0, sizeof(u->wp));
		um_unregister(u, old, old + len);
		um_wp_free(&u->wp);
		u->wp = saved;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct um_mapping m = moved[i].map;
		uint64_t delta_start = moved[i].start - old;
		m.start = new + delta_start;
		m.end = m.start + (moved[i].end - moved[i].start);
		um_register(u, m.start, m.end, moved[i].modes, moved[i].ioctls, &m, 1);
	}
}

void um_mem_remap(struct um_state *st, pid_t mm, uint64_t old, uint64_t old_len,
		  uint64_t new, uint64_t new_len)
{
	old_len = page_end(old_len);
	new_len = page_end(new_len);
	for (uint32_t i = 0; i < st->nuffds; i++) {
		struct um_uffd *u = st->uffds[i];
		if (u->mm_pid != mm)
			continue;
		uint64_t keep = old_len < new_len ? old_len : new_len;
		if (old_len > new_len) /* the tail is unmapped */
			unmap_one(u, old + new_len, old + old_len);
		if (new == old) {
			if (new_len > old_len) { /* grown in place: same VMA, same modes */
				const struct um_range *r = um_range_find(u, old + old_len - 1);
				if (r) {
					struct um_mapping m = r->map;
					m.start = old + old_len;
					m.end = old + new_len;
					if (m.backing != UM_BACKING_ANON)
						m.offset += old + old_len - r->start;
					um_register(u, m.start, m.end, r->modes, r->ioctls, &m, 1);
				}
			}
			touch(u, 0);
			continue;
		}
		if (u->features_requested & UFFD_FEATURE_EVENT_REMAP) {
			bool grow_reg = new_len > old_len && um_range_find(u, old + old_len - 1);
			struct um_range last = {0};
			if (grow_reg)
				last = *um_range_find(u, old + old_len - 1);
			remap_one(u, old, new, keep);
			if (grow_reg) {
				struct um_mapping m = last.map;
				m.start = new + old_len;
				m.end = new + new_len;
				if (m.backing != UM_BACKING_ANON)
					m.offset += old + old_len - last.start;
				um_register(u, m.start, m.end, last.modes, last.ioctls, &m, 1);
			}
		} else {
			unmap_one(u, old, old + keep);
		}
		pending_resolve(u, old, old + old_len);
		touch(u, 0);
	}
}

void um_mem_remap_dontunmap(struct um_state *st, pid_t mm, uint64_t old, uint64_t len,
			    uint64_t new)
{
	len = page_end(len);
	for (uint32_t i = 0; i < st->nuffds; i++) {
		struct um_uffd *u = st->uffds[i];
		if (u->mm_pid != mm)
			continue;
		if (u->features_requested & UFFD_FEATURE_EVENT_REMAP) {
			/* The new VMA is a copy of the old one's flags: collect the
			 * registered pieces first (um_register moves the array). */
			size_t size = (size_t)u->nranges * sizeof(struct um_range);
			struct um_range *moved = size ? um_zalloc(size) : NULL;
			uint32_t n = 0;
			for (uint32_t k = 0; moved && k < u->nranges; k++) {
				struct um_range r = u->ranges[k];
				if (r.end <= old || r.start >= old + len)
					continue;
				if (r.start < old) {
					if (r.map.backing != UM_BACKING_ANON)
						r.map.offset += old - r.start;
					r.start = old;
				}
				if (r.end > old + len)
					r.end = old + len;
				moved[n++] = r;
			}
			for (uint32_t k = 0; k < n; k++) {
				struct um_mapping m = moved[k].map;
				m.start = new + (moved[k].start - old);
				m.end = m.start + (moved[k].end - moved[k].start);
				um_register(u, m.start, m.end, moved[k].modes, moved[k].ioctls, &m, 1);
			}
			um_free(moved, size);
			um_wp_move(&u->wp, old, new, len); /* the old place keeps none */
		} else {
			um_wp_set(&u->wp, old, old + len, false);
		}
		pending_resolve(u, old, old + len);
		touch(u, 0);
	}
}

void um_mem_dontneed(struct um_state *st, pid_t mm, uint64_t start, uint64_t len)
{
	uint64_t end = page_end(start + len);
	for (uint32_t i = 0; i < st->nuffds; i++) {
		struct um_uffd *u = st->uffds[i];
		if (u->mm_pid != mm)
			continue;
		/* Zapping an anonymous page drops its uffd-wp bit; file and shmem
		 * pages keep it as a pte marker. */
		for (uint32_t k = 0; k < u->nranges; k++) {
			const struct um_range *r = &u->ranges[k];
			if (r->end <= start || r->start >= end || r->map.backing != UM_BACKING_ANON)
				continue;
			um_wp_set(&u->wp, r->start > start ? r->start : start,
				  r->end < end ? r->end : end, false);
		}
		touch(u, 0);
	}
}

void um_after_fork_child(struct um_state *st, pid_t child)
{
	for (uint32_t i = 0; i < st->nuffds; i++) {
		struct um_uffd *u = st->uffds[i];
		if (u->origin != UM_ORIGIN_RECEIVED)
			u->origin = UM_ORIGIN_INHERITED;
	}
	st->pid = child;
}

/* ---- messages ---- */

void um_msg(struct um_state *st, struct um_uffd *u, const void *msgp, uint64_t t_ns,
	    struct um_uffd **forked)
{
	const struct uffd_msg *msg = msgp;
	bool foreign = u->mm_pid != st->pid; /* memory calls happen elsewhere */
	if (forked)
		*forked = NULL;
	touch(u, t_ns);
	switch (msg->event) {
	case UFFD_EVENT_PAGEFAULT: {
		uint64_t fl = msg->arg.pagefault.flags;
		if (fl & UFFD_PAGEFAULT_FLAG_WP)
			u->counters[UM_C_FAULT_WP]++;
		else if (fl & UFFD_PAGEFAULT_FLAG_MINOR)
			u->counters[UM_C_FAULT_MINOR]++;
		else
			u->counters[UM_C_FAULT_MISSING]++;
		struct um_fault f = {.address = msg->arg.pagefault.address, .flags = fl,
				     .ptid = msg->arg.pagefault.feat.ptid, .t_ns = t_ns};
		pending_add(u, &f);
		break;
	}
	case UFFD_EVENT_FORK: {
		u->counters[UM_C_EV_FORK]++;
		struct um_uffd *c = um_uffd_clone(st, u);
		if (!c)
			break;
		c->origin = UM_ORIGIN_FORK_EVENT;
		c->parent_id = (int32_t)u->id;
		c->mm_pid = 0; /* the child's pid is not known yet */
		c->ino = 0;
		c->nfds = 0;
		c->npending = 0;
		memset(c->counters, 0, sizeof(c->counters));
		/* The kernel opens the new fd with the original's creation flags
		 * (ctx->flags), not with what F_SETFL made of the original since. */
		c->file_flags = u->create_flags & O_NONBLOCK;
		um_fd_add(c, (int)msg->arg.fork.ufd, (u->create_flags & O_CLOEXEC) != 0);
		if (forked)
			*forked = c;
		break;
	}
	case UFFD_EVENT_REMAP:
		u->counters[UM_C_EV_REMAP]++;
		if (foreign) {
			uint64_t from = msg->arg.remap.from, to = msg->arg.remap.to;
			uint64_t len = msg->arg.remap.len;
			remap_one(u, from, to, page_end(len));
		}
		break;
	case UFFD_EVENT_REMOVE:
		u->counters[UM_C_EV_REMOVE]++;
		if (foreign) {
			struct um_state one = {.pid = st->pid, .uffds = &u, .nuffds = 1};
			um_mem_dontneed(&one, u->mm_pid, msg->arg.remove.start,
					msg->arg.remove.end - msg->arg.remove.start);
		}
		break;
	case UFFD_EVENT_UNMAP:
		u->counters[UM_C_EV_UNMAP]++;
		if (foreign)
			unmap_one(u, msg->arg.remove.start, page_end(msg->arg.remove.end));
		break;
	default:
		break;
	}
}
