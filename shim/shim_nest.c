/* shim_nest.c - several uffds of one process on the same memory.
 *
 * The kernel lets one uffd register a page; a second gets EBUSY.  Here the
 * first keeps the kernel registration (the carrier) with the union of every
 * client's modes, and the others get virtual registrations in the model.
 * Faults on a nested span arrive on the carrier; the carrier's read() (our
 * wrapper) routes each to the client the rules name (docs/design.md,
 * "Nesting"):
 *   MISSING / MINOR: the first client (carrier first, then by id) that
 *     registered the page in that mode; none: the shim resolves it as the
 *     kernel would without uffd (ZEROPAGE / CONTINUE);
 *   WP: the first client that holds the page protected; none: the shim
 *     unprotects it.  A page stays protected while any client holds it; a
 *     client that unprotects wakes the writer, which faults again for the
 *     next holder.
 * A message for another client goes to that client's inbox, and its readers
 * hear of it as shim_nest_wake.c says (an eventfd kick to a reader parked in
 * our read(), else a doorbell fault on its own uffd).  Resolutions by a
 * non-carrier client are followed by a UFFDIO_WAKE on the carrier (the
 * faulting thread sleeps there).
 *
 * State is under the model lock; kernel calls that change registrations run
 * under the order lock like the app's own. */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>

#include "shim.h"
#include "shim_nest_int.h"
#include "shim_raw.h"
#include "uffd_compat.h"

int shim_nest_on;
int shim_nest_naug;
int shim_nest_enabled = 1;
struct span nest_spans[MAX_SPANS];
uint32_t nest_nspans;
struct client nest_clients[MAX_CLIENTS];
uint32_t nest_nclients;

/* ---- lookups (locked) ---- */
static struct span *span_at(uint64_t addr)
{
	for (uint32_t i = 0; i < nest_nspans; i++)
		if (addr >= nest_spans[i].start && addr < nest_spans[i].end)
			return &nest_spans[i];
	return NULL;
}

struct client *nest_client_of(uint32_t id)
{
	for (uint32_t i = 0; i < nest_nclients; i++)
		if (nest_clients[i].used && !nest_clients[i].dead && nest_clients[i].id == id)
			return &nest_clients[i];
	return NULL;
}

struct client *nest_client_by_fd(int fd)
{
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	return u ? nest_client_of(u->id) : NULL;
}

static int fd_of(uint32_t id)
{
	struct um_uffd *u = um_uffd_by_id(&G.model, id);
	return u && u->nfds ? u->fds[0] : nest_ghost_fd(id);
}

struct span *nest_span_at(uint64_t addr)
{
	return span_at(addr);
}

uint32_t nest_others(const struct span *s, uint32_t id)
{
	uint32_t n = 0;
	for (uint32_t k = 0; k < G.model.nuffds; k++) {
		const struct um_uffd *u = G.model.uffds[k];
		n += u->id != id && u->nfds && (!u->mm_pid || u->mm_pid == G.pid) &&
		     um_range_find(u, s->start) != NULL;
	}
	return n;
}

/* Is [s, e) one of the shim's doorbell pages (dirty tracking skips them)? */
bool shim_nest_is_bell(uint64_t s, uint64_t e)
{
	for (uint32_t i = 0; i < nest_nclients; i++)
		if (__atomic_load_n(&nest_clients[i].used, __ATOMIC_ACQUIRE) &&
		    nest_clients[i].bell >= s &&
		    nest_clients[i].bell < e)
			return true;
	return false;
}

/* ---- registration ---- */
static uint64_t kernel_ioctls(const struct um_mapping *m, uint64_t modes)
{
	uint64_t io = (1ull << _UFFDIO_WAKE) | (1ull << _UFFDIO_COPY) |
		      (1ull << _UFFDIO_WRITEPROTECT) | (1ull << _UFFDIO_CONTINUE) |
		      (1ull << _UFFDIO_POISON);
	if (m->backing != UM_BACKING_HUGETLB)
		io |= (1ull << _UFFDIO_ZEROPAGE) | (1ull << _UFFDIO_MOVE);
	if (!(modes & UFFDIO_REGISTER_MODE_MINOR))
		io &= ~(1ull << _UFFDIO_CONTINUE);
	if (!(modes & UFFDIO_REGISTER_MODE_WP))
		io &= ~(1ull << _UFFDIO_WRITEPROTECT);
	return io;
}

/* The uffd (other than self) whose model registration holds addr; locked. */
static struct um_uffd *owner_at(uint64_t addr, uint32_t self, uint64_t *end)
{
	struct span *s = span_at(addr);
	if (s) {
		*end = s->end;
		return um_uffd_by_id(&G.model, s->carrier_id);
	}
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *u = G.model.uffds[i];
		if (u->id == self || (u->mm_pid && u->mm_pid != G.pid))
			continue;
		const struct um_range *r = um_range_find(u, addr);
		if (r) {
			*end = r->end;
			return u;
		}
	}
	return NULL;
}

static bool span_add(uint64_t s, uint64_t e, uint32_t carrier, uint64_t kmodes)
{
	for (uint32_t i = 0; i < nest_nspans; i++)
		if (nest_spans[i].start == s && nest_spans[i].end == e) {
			nest_spans[i].kmodes |= kmodes;
			return true;
		}
	if (nest_nspans == MAX_SPANS)
		return false;
	uint32_t j = nest_nspans++;
	while (j > 0 && nest_spans[j - 1].start > s) {
		nest_spans[j] = nest_spans[j - 1];
		j--;
	}
	nest_spans[j] = (struct span){s, e, carrier, kmodes, 0, 0};
	return true;
}

/* Should the newcomer (modes `mode`) carry [a, b) that o registered with
 * kmodes?  When it asks for MISSING/MINOR faults the owner does not, and the
 * owner holds no protected page and no unresolved fault there.  Locked. */
static bool takes_over(const struct um_uffd *o, const struct um_uffd *me, uint64_t mode,
		       uint64_t kmodes, uint64_t a, uint64_t b)
{
	const uint64_t fill = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR;
	if (!(mode & fill) || (kmodes & fill) || o->origin == UM_ORIGIN_MONITOR ||
	    me->features_requested != o->features_requested)
		return false;
	uint64_t cur = a, rs, re;
	if (um_wp_next_run(&o->wp, &cur, b, &rs, &re))
		return false;
	for (uint32_t i = 0; i < o->npending; i++)
		if (o->pending[i].address >= a && o->pending[i].address < b)
			return false;
	return true;
}

int shim_nest_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ioctls)
{
	if (!mode || (mode & ~(uint64_t)(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP |
					 UFFDIO_REGISTER_MODE_MINOR)))
		return -EBUSY;
	uint64_t end = start + len;
	struct um_mapping maps[64];
	size_t nm = shim_maps_read(start, end, maps, 64);
	/* Fully mapped, one kind of memory the mode suits (as the kernel checks). */
	uint64_t cur = start;
	for (size_t i = 0; i < nm; i++) {
		if (maps[i].start > cur || maps[i].backing == UM_BACKING_UNKNOWN)
			return -EBUSY;
		if ((mode & UFFDIO_REGISTER_MODE_MINOR) && maps[i].backing == UM_BACKING_ANON)
			return -EINVAL;
		cur = maps[i].end;
	}
	if (cur < end || !nm)
		return -EBUSY;
	shim_lock();
	struct um_uffd *me = um_uffd_by_fd(&G.model, fd);
	if (!me || !me->api_done || me->wp_async) {
		shim_unlock();
		return -EBUSY;
	}
	uint32_t self = me->id;
	struct client *cme = nest_client_get(me, fd);
	int rc = cme ? 0 : -EBUSY;
	for (uint64_t a = start; rc == 0 && a < end;) {
		uint64_t oend = end;
		struct um_uffd *o = owner_at(a, self, &oend);
		if (!o) { /* nobody here: ours in the kernel */
			uint64_t b = a + UM_PAGE_SIZE;
			uint64_t tmp;
			while (b < end && !owner_at(b, self, &tmp))
				b += UM_PAGE_SIZE;
			struct uffdio_register reg = {.range = {a, b - a}, .mode = mode};
			rc = (int)nest_kcall(fd, UFFDIO_REGISTER, &reg);
			a = b;
			continue;
		}
		uint64_t b = oend < end ? oend : end;
		int ofd = o->nfds ? o->fds[0] : -1;
		struct span *sp = span_at(a);
		uint64_t kmodes = sp ? sp->kmodes : 0;
		if (!sp) {
			const struct um_range *orr = um_range_find(o, a);
			kmodes = orr ? orr->modes : 0;
		}
		if (ofd < 0 || !nest_client_get(o, ofd)) {
			rc = -EBUSY;
			break;
		}
		if (!sp && takes_over(o, me, mode, kmodes, a, b)) {
			/* The newcomer serves the faults of missing pages the owner
			 * does not ask for: it becomes the carrier, so that those
			 * faults reach it without a doorbell.  The owner holds no
			 * page and waits for no fault here, so the moment without a
			 * registration changes nothing it could observe. */
			struct uffdio_range ur = {a, b - a};
			struct uffdio_register reg = {.range = {a, b - a}, .mode = kmodes | mode};
			if (nest_kcall(ofd, UFFDIO_UNREGISTER, &ur) == 0) {
				if (nest_kcall(fd, UFFDIO_REGISTER, &reg) == 0) {
					if (!span_add(a, b, self, kmodes | mode))
						rc = -EBUSY;
					a = b;
					continue;
				}
				reg.mode = kmodes; /* put the owner back */
				nest_kcall(ofd, UFFDIO_REGISTER, &reg);
			}
		}
		if ((kmodes | mode) != kmodes) { /* widen the carrier's registration */
			struct uffdio_register reg = {.range = {a, b - a}, .mode = kmodes | mode};
			rc = (int)nest_kcall(ofd, UFFDIO_REGISTER, &reg);
			if (rc < 0)
				break;
		}
		if (!span_add(a, b, sp ? sp->carrier_id : o->id, kmodes | mode))
			rc = -EBUSY;
		a = b;
	}
	if (rc == 0)
		__atomic_store_n(&shim_nest_on, 1, __ATOMIC_RELEASE);
	shim_unlock();
	if (rc == 0)
		*ioctls = kernel_ioctls(&maps[0], mode);
	return rc;
}

/* Dirty tracking adds WP to the app's MISSING-only registration [s, e) of uffd
 * id (fd): the kernel registration gets MISSING|WP, the app's model keeps its
 * modes; the span stays known so that verify expects "uw", the app's own WP
 * calls there get the kernel's answer for a non-WP range, and WP faults are
 * resolved by the shim.  Locked. */
int shim_nest_augment_locked(uint32_t id, int fd, uint64_t s, uint64_t e)
{
	struct um_uffd *u = um_uffd_by_id(&G.model, id);
	const struct um_range *r = u ? um_range_find(u, s) : NULL;
	if (!r || r->end < e)
		return -EINVAL;
	uint64_t kmodes = r->modes | UFFDIO_REGISTER_MODE_WP;
	struct span *sp = span_at(s);
	if (sp && sp->augmented && sp->start <= s && sp->end >= e)
		return 0;
	if (sp)
		return -EBUSY; /* nested already: left to the nesting rules */
	struct uffdio_register reg = {.range = {s, e - s}, .mode = kmodes};
	long rc = nest_kcall(fd, UFFDIO_REGISTER, &reg);
	if (rc < 0)
		return (int)rc;
	if (!span_add(s, e, id, kmodes))
		return -ENOSPC;
	span_at(s)->augmented = 1;
	__atomic_add_fetch(&shim_nest_naug, 1, __ATOMIC_ACQ_REL);
	__atomic_store_n(&shim_nest_on, 1, __ATOMIC_RELEASE);
	return 0;
}

/* Does uffd fd lack WP mode somewhere in [s, s+len) that dirty tracking
 * augmented?  Then the kernel would have refused a WP operation there. */
bool shim_nest_aug_lacks_wp(int fd, uint64_t s, uint64_t len)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return false;
	bool lacks = false;
	shim_lock();
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	for (uint32_t i = 0; u && i < nest_nspans && !lacks; i++) {
		struct span *sp = &nest_spans[i];
		if (!sp->augmented || sp->end <= s || sp->start >= s + len)
			continue;
		uint64_t a = sp->start > s ? sp->start : s;
		const struct um_range *r = um_range_find(u, a);
		lacks = !r || !(r->modes & UFFDIO_REGISTER_MODE_WP);
	}
	shim_unlock();
	return lacks;
}

/* ---- events ----
 * The kernel makes FORK/REMAP/REMOVE/UNMAP events for the carrier only, and
 * only when the carrier asked for them at UFFDIO_API.  The other clients of a
 * nested span that asked get them from the shim: copies of the carrier's
 * (shim_nest_filter), or, when the carrier did not ask, events the shim makes
 * from the app's own munmap/mremap/madvise (their caller waits until they are
 * read, shim_nest_event_wait, as the kernel's does).  FORK events come from the kernel for
 * every client (each has a doorbell registered, so the kernel makes a child
 * uffd for it): nest_fork_fixup_locked() (shim_nest_fork.c) makes that child uffd hold what the client
 * registered. */
static uint64_t event_feature(uint8_t ev)
{
	switch (ev) {
	case UFFD_EVENT_REMOVE: return UFFD_FEATURE_EVENT_REMOVE;
	case UFFD_EVENT_UNMAP: return UFFD_FEATURE_EVENT_UNMAP;
	case UFFD_EVENT_REMAP: return UFFD_FEATURE_EVENT_REMAP;
	default: return 0;
	}
}

/* Hand event m (about [s, e)) to every client of the nested spans there that
 * asked for it, except skip (0: none).  Locked. */
static uint32_t events_to_clients(const struct uffd_msg *m, uint64_t s, uint64_t e, uint32_t skip,
				  bool carrier_has_it)
{
	uint32_t held = 0;
	uint64_t feat = event_feature(m->event);
	for (uint32_t i = 0; feat && i < nest_nspans; i++) {
		struct span *sp = &nest_spans[i];
		if (sp->end <= s || sp->start >= e)
			continue;
		struct um_uffd *car = um_uffd_by_id(&G.model, sp->carrier_id);
		bool kernel_did = car && (car->features_requested & feat);
		if (kernel_did != carrier_has_it)
			continue;
		uint64_t a = sp->start > s ? sp->start : s, b = sp->end < e ? sp->end : e;
		for (uint32_t k = 0; k < G.model.nuffds; k++) {
			struct um_uffd *u = G.model.uffds[k];
			if (u->id == skip || u->id == sp->carrier_id || !u->nfds ||
			    !(u->features_requested & feat) || !um_range_find(u, a))
				continue;
			struct client *c = nest_client_get(u, u->fds[0]);
			struct uffd_msg copy = *m;
			if (m->event != UFFD_EVENT_REMAP) {
				copy.arg.remove.start = a;
				copy.arg.remove.end = b;
			}
			if (!carrier_has_it) /* ours: the caller waits until it is read */
				copy.reserved3 = NEST_EV_HOLD;
			if (c && nest_inbox_push(c, &copy)) {
				if (!carrier_has_it) {
					__atomic_add_fetch(&c->ev_hold, 1, __ATOMIC_SEQ_CST);
					held |= 1u << (c - nest_clients);
				}
				nest_ring(c);
			}
		}
	}
	return held;
}

/* The app unmapped, moved or zapped [s, s+len) (to: REMAP's new address).
 * Called locked, before the model forgets the ranges. */
uint32_t shim_nest_mem_event_locked(uint8_t ev, uint64_t s, uint64_t len, uint64_t to)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) || !len)
		return 0;
	struct uffd_msg m;
	memset(&m, 0, sizeof(m));
	m.event = ev;
	if (ev == UFFD_EVENT_REMAP) {
		m.arg.remap.from = s;
		m.arg.remap.to = to;
		m.arg.remap.len = len;
	} else {
		m.arg.remove.start = s;
		m.arg.remove.end = s + len;
	}
	return events_to_clients(&m, s, s + len, 0, false);
}

/* The caller of munmap/mremap/madvise that made events for the clients in
 * mask waits until each client's app has read them, as the kernel holds the
 * thread that caused an event (at most 10 s; a client that goes away lets
 * it go).  Not locked. */
void shim_nest_event_wait(uint32_t mask)
{
	for (uint32_t i = 0; i < MAX_CLIENTS; i++) {
		if (!(mask & (1u << i)))
			continue;
		struct client *c = &nest_clients[i];
		for (int t = 0; t < 100; t++) {
			int v = __atomic_load_n(&c->ev_hold, __ATOMIC_SEQ_CST);
			if (v <= 0 || __atomic_load_n(&c->dead, __ATOMIC_ACQUIRE) ||
			    !__atomic_load_n(&c->used, __ATOMIC_ACQUIRE))
				break;
			struct timespec ts = {0, 100 * 1000 * 1000};
			RAW6(SYS_futex, &c->ev_hold, FUTEX_WAIT_PRIVATE, v, &ts, NULL, 0);
		}
	}
}

/* ---- routing ---- */
/* Who gets a fault at page p of span s (flags: UFFD_PAGEFAULT_FLAG_*);
 * 0 = nobody. Locked. */
static uint32_t route(const struct span *s, uint64_t page, uint64_t flags)
{
	uint64_t want = (flags & UFFD_PAGEFAULT_FLAG_WP) ? UFFDIO_REGISTER_MODE_WP
			: (flags & UFFD_PAGEFAULT_FLAG_MINOR) ? UFFDIO_REGISTER_MODE_MINOR
							       : UFFDIO_REGISTER_MODE_MISSING;
	uint32_t best = 0;
	/* External monitors first (below the app), then the carrier, then the
	 * others in the order they were made. */
	for (uint32_t pass = 0; pass < 3 && !best; pass++)
		for (uint32_t i = 0; i < G.model.nuffds && !best; i++) {
			struct um_uffd *u = G.model.uffds[i];
			bool mon = u->origin == UM_ORIGIN_MONITOR;
			bool car = u->id == s->carrier_id;
			if (pass == 0 ? !mon : pass == 1 ? (mon || !car) : (mon || car))
				continue;
			const struct um_range *r = um_range_find(u, page);
			if (!r || !(r->modes & want))
				continue;
			if (want == UFFDIO_REGISTER_MODE_WP && !um_wp_test(&u->wp, page))
				continue;
			best = u->id;
		}
	return best;
}

/* Resolve a fault nobody wants, as the kernel would without a uffd. */
static void resolve_unwanted(int fd, uint64_t page, uint64_t flags)
{
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		/* Only dirty tracking protected it: note the write for it. */
		shim_track_mark_locked(page, UM_PAGE_SIZE);
		struct uffdio_writeprotect w = {{page, UM_PAGE_SIZE}, 0};
		nest_kcall(fd, UFFDIO_WRITEPROTECT, &w);
	} else if (flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		shim_log("nest: MINOR fault nobody wants: CONTINUE");
		struct uffdio_continue c = {.range = {page, UM_PAGE_SIZE}};
		nest_kcall(fd, UFFDIO_CONTINUE, &c);
	} else {
		shim_log("nest: MISSING fault nobody wants: ZEROPAGE");
		struct uffdio_zeropage z = {.range = {page, UM_PAGE_SIZE}};
		if (nest_kcall(fd, UFFDIO_ZEROPAGE, &z) < 0)
			nest_kwake(fd, page, page + UM_PAGE_SIZE);
	}
}

uint32_t nest_route(const struct span *s, uint64_t page, uint64_t flags)
{
	return route(s, page, flags);
}

void nest_resolve_unwanted(int fd, uint64_t page, uint64_t flags)
{
	resolve_unwanted(fd, page, flags);
}

ssize_t shim_nest_filter(int fd, void *buf, ssize_t n, size_t cap)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) ||
	    n < (ssize_t)sizeof(struct uffd_msg))
		return n;
	struct uffd_msg *msgs = buf;
	size_t count = (size_t)n / sizeof(*msgs), room = cap / sizeof(*msgs), kept = 0;
	struct uffd_msg extra[INBOX];
	size_t nextra = 0;
	int kicks[INBOX];
	size_t nkicks = 0;
	struct client *quiet = nest_quiet_client();
	shim_lock();
	struct client *me = nest_client_by_fd(fd);
	for (size_t i = 0; i < count; i++) {
		struct uffd_msg m;
		memcpy(&m, &msgs[i], sizeof(m));
		if (m.event != UFFD_EVENT_PAGEFAULT) {
			uint64_t es = m.event == UFFD_EVENT_REMAP ? m.arg.remap.from
								   : m.arg.remove.start;
			uint64_t ee = m.event == UFFD_EVENT_REMAP ? es + m.arg.remap.len
								   : m.arg.remove.end;
			/* Our doorbell's re-arming (MADV_DONTNEED) or unmapping is
			 * not the app's business. */
			if (me && (m.event == UFFD_EVENT_REMOVE || m.event == UFFD_EVENT_UNMAP) &&
			    es >= me->bell && ee <= me->bell + UM_PAGE_SIZE)
				continue;
			if (me && m.event == UFFD_EVENT_FORK) {
				bool keep = nest_fork_fixup_locked(me, &m);
				nest_fork_sync_one();
				if (!keep) {
					RAW1(SYS_close, m.arg.fork.ufd);
					continue;
				}
			}
			/* the carrier's own event: a copy for each client that asked */
			if (me && event_feature(m.event) && ee > es)
				(void)events_to_clients(&m, es, ee, me->id, true);
			msgs[kept++] = m;
			continue;
		}
		uint64_t page = m.arg.pagefault.address & ~(UM_PAGE_SIZE - 1);
		if (me && page == me->bell) {
			/* Our doorbell: what waits in the inbox takes its place. */
			struct uffdio_zeropage z = {.range = {page, UM_PAGE_SIZE}};
			nest_kcall(fd, UFFDIO_ZEROPAGE, &z);
			while (me->head != me->tail && nextra < INBOX)
				extra[nextra++] = nest_inbox_pop(me);
			continue;
		}
		struct span *s = span_at(page);
		struct um_uffd *self = me ? um_uffd_by_id(&G.model, me->id) : NULL;
		if (!s || !self || s->carrier_id != self->id) {
			msgs[kept++] = m;
			continue;
		}
		uint32_t to = route(s, page, m.arg.pagefault.flags);
		if (!to && s->augmented && !(m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			/* Dirty tracking only added WP here: any other fault is
			 * the app's, whatever the model says; filling the page
			 * ourselves could race the app's own fill. */
			shim_log("nest: augmented span: a fault no client claims goes to the app");
			to = self->id;
		}
		if (to == self->id) {
			msgs[kept++] = m;
			continue;
		}
		struct client *dst = to ? nest_client_of(to) : NULL;
		if (dst && nest_inbox_push(dst, &m)) {
			/* Kicked after unlocking: the reader would wake into
			 * the lock we hold. */
			int k = dst == quiet ? -1 : nest_ring_later(dst);
			if (k >= 0 && nkicks < INBOX)
				kicks[nkicks++] = k;
			continue;
		}
		resolve_unwanted(fd, page, m.arg.pagefault.flags);
	}
	if (me && me->head != me->tail)
		nest_ring(me); /* more than fit: ring again */
	shim_unlock();
	for (size_t k = 0; k < nkicks; k++)
		if (k == 0 || kicks[k] != kicks[k - 1])
			nest_kick(kicks[k]);
	for (size_t k = 0; k < nextra; k++) {
		if (kept < room) {
			msgs[kept++] = extra[k];
		} else { /* no room in the caller's buffer: back to the inbox */
			shim_lock();
			if (me && me->head > 0)
				nest_inbox_unpop(me, &extra[k]);
			nest_ring(me);
			shim_unlock();
		}
	}
	return (ssize_t)(kept * sizeof(*msgs));
}

/* Messages of fd's uffd read by the shim (the tracker's pump): queue them for
 * the app's own read() and ring its doorbell.  A fault that cannot be queued
 * is woken instead (the thread faults again: a new message). */
void shim_nest_deliver(int fd, const void *buf, ssize_t n)
{
	const struct uffd_msg *msgs = buf;
	size_t count = (size_t)n / sizeof(*msgs);
	shim_lock();
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	struct client *c = u ? nest_client_get(u, fd) : NULL;
	if (c)
		__atomic_store_n(&shim_nest_on, 1, __ATOMIC_RELEASE);
	for (size_t i = 0; i < count; i++) {
		if (c && nest_inbox_push(c, &msgs[i]))
			continue;
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
			uint64_t page = msgs[i].arg.pagefault.address & ~(UM_PAGE_SIZE - 1);
			shim_log("nest: could not queue a fault: woken to fault again");
			nest_kwake(fd, page, page + UM_PAGE_SIZE);
		} else {
			shim_log("nest: an event could not be handed to the app");
		}
	}
	int kick = c ? nest_ring_later(c) : -1;
	shim_unlock();
	nest_kick(kick);
}

/* ---- the other calls of a client on nested memory ---- */
bool shim_nest_touches_locked(uint64_t start, uint64_t len)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return false;
	for (uint32_t i = 0; i < nest_nspans; i++)
		if (nest_spans[i].start < start + len && start < nest_spans[i].end)
			return true;
	return false;
}

bool shim_nest_touches(uint64_t start, uint64_t len)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return false;
	shim_lock();
	bool hit = shim_nest_touches_locked(start, len);
	shim_unlock();
	return hit;
}

static void wake_carriers(int fd, uint64_t start, uint64_t len, bool also_own);

/* After fd's successful call resolved [start, start+len): wake the threads
 * that sleep on the carrier. */
void shim_nest_after_resolve(int fd, uint64_t start, uint64_t len)
{
	wake_carriers(fd, start, len, false);
}

/* Wake the sleepers of the nested spans in [start, start+len) on their
 * carriers; with also_own, even where fd is the carrier (a call the shim
 * answered without the kernel, which would have woken them). */
static void wake_carriers(int fd, uint64_t start, uint64_t len, bool also_own)
{
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE) || !len)
		return;
	uint64_t s0 = start & ~(UM_PAGE_SIZE - 1), e0 = start + len;
	struct {
		int fd;
		uint64_t s, e;
	} w[8];
	uint32_t nw = 0;
	shim_lock();
	struct um_uffd *me = um_uffd_by_fd(&G.model, fd);
	for (uint32_t i = 0; i < nest_nspans; i++) {
		struct span *s = &nest_spans[i];
		if (s->end <= s0 || s->start >= e0 || (!also_own && me && s->carrier_id == me->id))
			continue;
		int cfd = fd_of(s->carrier_id);
		uint64_t a = s->start > s0 ? s->start : s0, b = s->end < e0 ? s->end : e0;
		if (cfd >= 0 && nw < 8)
			w[nw++] = (typeof(w[0])){cfd, a, b};
		else if (cfd >= 0)
			nest_kwake(cfd, a, b);
	}
	shim_unlock();
	/* Woken after unlocking: the sleeper may run at once and need the
	 * lock.  (A carrier closed meanwhile makes it a stray UFFDIO_WAKE on
	 * whatever has that number now: ENOTTY, or a spurious wake-up.) */
	for (uint32_t i = 0; i < nw; i++)
		nest_kwake(w[i].fd, w[i].s, w[i].e);
}

void shim_nest_after_unregister(int fd, uint64_t start, uint64_t len)
{
	wake_carriers(fd, start, len, true);
	/* The model forgot the range: a carrier it orphaned is the pump's now. */
	if (!__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		return;
	shim_lock();
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	bool orphan = u && shim_nest_pumps_locked(u->id);
	shim_unlock();
	if (orphan)
		shim_pump_start();
}

/* Does a client other than self hold page p protected?  Locked. */
static bool held_by_other(uint32_t self, uint64_t p)
{
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *u = G.model.uffds[i];
		if (u->id == self || (u->mm_pid && u->mm_pid != G.pid))
			continue;
		const struct um_range *r = um_range_find(u, p);
		if (r && (r->modes & UFFDIO_REGISTER_MODE_WP) && um_wp_test(&u->wp, p))
			return true;
	}
	return false;
}

long shim_nest_unprotect(int fd, uint64_t start, uint64_t len, uint64_t mode)
{
	uint64_t end = start + len;
	shim_lock();
	struct um_uffd *me = um_uffd_by_fd(&G.model, fd);
	uint32_t self = me ? me->id : 0;
	long rc = 0;
	for (uint64_t a = start; a < end && rc == 0;) {
		uint64_t b = a;
		while (b < end && !held_by_other(self, b))
			b += UM_PAGE_SIZE;
		if (b > a) {
			struct uffdio_writeprotect w = {{a, b - a}, mode};
			rc = nest_kcall(fd, UFFDIO_WRITEPROTECT, &w);
		}
		while (b < end && held_by_other(self, b))
			b += UM_PAGE_SIZE;
		a = b;
	}
	shim_unlock();
	if (rc == 0 && !(mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE))
		wake_carriers(fd, start, len, true);
	return rc;
}

long shim_nest_unregister(int fd, uint64_t start, uint64_t len)
{
	uint64_t end = start + len;
	long rc = 0;
	shim_lock();
	struct um_uffd *me = um_uffd_by_fd(&G.model, fd);
	uint32_t self = me ? me->id : 0;
	for (uint64_t a = start; a < end && rc == 0;) {
		struct span *s = span_at(a);
		uint64_t b = a + UM_PAGE_SIZE;
		while (b < end && span_at(b) == s)
			b += UM_PAGE_SIZE;
		if (!s) { /* our own registration, or none: the kernel's answer */
			struct uffdio_range r = {a, b - a};
			rc = nest_kcall(fd, UFFDIO_UNREGISTER, &r);
		} else if (s->carrier_id != self) {
			/* Virtual: pages only we held go writable; our waiters
			 * fault again for the next client. */
			for (uint64_t p = a; p < b; p += UM_PAGE_SIZE)
				if (me && um_wp_test(&me->wp, p) && !held_by_other(self, p)) {
					struct uffdio_writeprotect w = {{p, UM_PAGE_SIZE},
									UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
					nest_kcall(fd, UFFDIO_WRITEPROTECT, &w);
				}
			int cfd = fd_of(s->carrier_id);
			if (cfd >= 0)
				nest_kwake(cfd, a, b);
		} else if (nest_others(s, self) == 0) { /* nobody to keep it for */
			struct uffdio_range r = {a, b - a};
			rc = nest_kcall(fd, UFFDIO_UNREGISTER, &r);
		} else {
			/* We carry it for others: the kernel registration stays
			 * (handing it to another uffd would leave a moment with
			 * none, when a fault is filled as if no uffd were there).
			 * Our part goes: the pages only we held become writable;
			 * our waiters are woken once the model forgets our range
			 * (nest_wake), and fault again for the next client.  The
			 * pump reads our fd for them if our app stops reading it. */
			for (uint64_t p = a; p < b; p += UM_PAGE_SIZE)
				if (me && um_wp_test(&me->wp, p) && !held_by_other(self, p)) {
					struct uffdio_writeprotect w = {{p, UM_PAGE_SIZE},
									UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
					nest_kcall(fd, UFFDIO_WRITEPROTECT, &w);
				}
		}
		a = b;
	}
	shim_unlock();
	return rc;
}

/* The carrier uffd id is gone (its last fd closed: the kernel dropped its
 * registrations): the next client of each of its spans takes the kernel
 * registration, with its own protections.  Locked. */
void shim_nest_carrier_gone_locked(uint32_t id)
{
	int gfd = nest_ghost_fd(id);
	for (uint32_t i = 0; i < nest_nclients; i++) /* its doorbell goes */
		if (nest_clients[i].used && !nest_clients[i].dead && nest_clients[i].id == id) {
			__atomic_store_n(&nest_clients[i].dead, 1, __ATOMIC_RELEASE);
			nest_ring(&nest_clients[i]);
			/* A ghost keeps the file: its doorbell's registration goes
			 * now, as with the release of the file (which also wakes a
			 * ring in progress). */
			if (gfd >= 0) {
				struct uffdio_range rg = {nest_clients[i].bell, UM_PAGE_SIZE};
				nest_kcall(gfd, UFFDIO_UNREGISTER, &rg);
			}
		}
	for (uint32_t i = 0; i < nest_nspans; i++) {
		struct span *s = &nest_spans[i];
		if (s->carrier_id != id)
			continue;
		if (s->ghost) {
			/* A ghost keeps carrying it.  Faults the app's reader had
			 * read but not resolved are woken, as the kernel's release
			 * of the file would: they fault again, for the others. */
			nest_kwake(nest_ghosts[s->ghost - 1].fd, s->start, s->end);
			continue;
		}
		for (uint32_t k = 0; k < G.model.nuffds; k++) {
			struct um_uffd *u = G.model.uffds[k];
			const struct um_range *r = um_range_find(u, s->start);
			if (!r || !u->nfds || (u->mm_pid && u->mm_pid != G.pid))
				continue;
			struct uffdio_register reg = {.range = {s->start, s->end - s->start},
						      .mode = r->modes};
			if (nest_kcall(u->fds[0], UFFDIO_REGISTER, &reg) == 0)
				for (uint64_t p = s->start; p < s->end; p += UM_PAGE_SIZE)
					if (um_wp_test(&u->wp, p)) {
						struct uffdio_writeprotect w = {{p, UM_PAGE_SIZE},
										UFFDIO_WRITEPROTECT_MODE_WP};
						nest_kcall(u->fds[0], UFFDIO_WRITEPROTECT, &w);
					}
			s->carrier_id = u->id;
			s->kmodes = r->modes;
			break;
		}
	}
	shim_nest_prune_locked();
}

/* The kernel registration of span s on carrier fd cfd where the carrier has
 * no range of its own any more (it was kept for the others, who are gone):
 * undone, as the carrier's UNREGISTER would have.  Locked. */
static void drop_orphaned(const struct span *s, const struct um_uffd *car, int cfd)
{
	for (uint64_t p = s->start; p < s->end;) {
		const struct um_range *r = um_range_find(car, p);
		if (r) {
			p = r->end;
			continue;
		}
		uint64_t q = s->end;
		for (uint32_t k = 0; k < car->nranges; k++)
			if (car->ranges[k].start > p && car->ranges[k].start < q)
				q = car->ranges[k].start;
		struct uffdio_range rg = {p, q - p};
		nest_kcall(cfd, UFFDIO_UNREGISTER, &rg);
		p = q;
	}
}

/* After unregister/close: a span ends when no client but its carrier is
 * left.  A carrier that unregistered or closed (a ghost) keeps carrying it
 * for the others; when they are gone too, its kernel registration goes.
 * Locked. */
void shim_nest_prune_locked(void)
{
	uint32_t w = 0;
	bool ghost_dropped[MAX_GHOSTS] = {false};
	for (uint32_t i = 0; i < nest_nspans; i++) {
		struct span s = nest_spans[i];
		struct um_uffd *car = um_uffd_by_id(&G.model, s.carrier_id);
		bool aug_alive = s.augmented && car && um_range_find(car, s.start);
		if (aug_alive || ((car || s.ghost) && nest_others(&s, s.carrier_id) >= 1)) {
			nest_spans[w++] = s;
			continue;
		}
		if (car && car->nfds)
			drop_orphaned(&s, car, car->fds[0]);
		if (s.ghost) {
			/* Unregistered now: the close of the ghost may come later
			 * (the pump's poll holds the file meanwhile). */
			struct uffdio_range rg = {s.start, s.end - s.start};
			nest_kcall(nest_ghosts[s.ghost - 1].fd, UFFDIO_UNREGISTER, &rg);
			ghost_dropped[s.ghost - 1] = true;
		}
	}
	if (w != nest_nspans)
		shim_pump_poke(); /* an orphaned carrier or a ghost may be off its list */
	nest_nspans = w;
	for (int g = 0; g < MAX_GHOSTS; g++) /* closing a ghost drops its registrations */
		if (ghost_dropped[g])
			nest_ghost_release(g);
	int naug = 0;
	for (uint32_t i = 0; i < nest_nspans; i++)
		naug += nest_spans[i].augmented;
	__atomic_store_n(&shim_nest_naug, naug, __ATOMIC_RELEASE);
}

/* Spans for status --verify: fills up to cap (start, end, kmodes), returns
 * the count; and the doorbell pages. Locked by the caller. */
uint32_t shim_nest_spans_locked(uint64_t (*out)[3], uint32_t cap, uint64_t *bells,
				uint32_t *nbells, uint64_t *forced, uint32_t *nforced,
				uint64_t *ghosts, uint32_t *nghosts)
{
	*nghosts = 0;
	for (int g = 0; g < MAX_GHOSTS; g++)
		if (nest_ghosts[g].fd >= 0)
			ghosts[(*nghosts)++] = (uint64_t)nest_ghosts[g].fd;
	uint32_t n = 0;
	for (uint32_t i = 0; i < nest_nspans && n < cap; i++, n++) {
		out[n][0] = nest_spans[i].start;
		out[n][1] = nest_spans[i].end;
		out[n][2] = nest_spans[i].kmodes;
	}
	*nbells = 0;
	for (uint32_t i = 0; i < nest_nclients && *nbells < MAX_CLIENTS; i++)
		if (nest_clients[i].used && !nest_clients[i].dead)
			bells[(*nbells)++] = nest_clients[i].bell;
	*nforced = 0;
	for (uint32_t i = 0; i < nest_nclients && *nforced < MAX_CLIENTS; i++)
		if (nest_clients[i].used && !nest_clients[i].dead && nest_clients[i].forced)
			forced[(*nforced)++] = nest_clients[i].id;
	return n;
}

void shim_nest_after_fork_child(void)
{
	/* The bell threads did not survive; the child's mappings lost the
	 * registrations of uffds without EVENT_FORK.  Nesting starts afresh. */
	nest_clients_after_fork_child();
	nest_ghosts_after_fork_child();
	nest_nspans = 0;
	shim_nest_on = 0;
	shim_nest_naug = 0;
}
