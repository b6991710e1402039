/* model_serialize_test.c - the state blob (model/um_serialize.c, um_wire.h):
 * a rich state survives a round trip unchanged (and re-serializes to the
 * same bytes); um_deserialize rejects every truncation, bad headers,
 * out-of-order and overlapping ranges, absurd counts and trailing bytes with
 * a message; random byte flips never crash it.  Blobs under test sit right
 * before a PROT_NONE page so that any read past their end faults. */
#include <signal.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "um_model.h"
#include "um_wire.h"

#define P UM_PAGE_SIZE
#define R (0x30000000ULL - 16 * P) /* crosses a 2 MiB boundary */
#define S 0x38000000ULL
#define W 0x40000000ULL
#define C (2ULL << 20)

static struct um_mapping mapping(uint64_t start, uint64_t end, uint32_t backing, uint64_t off,
				 const char *name)
{
	struct um_mapping m;
	memset(&m, 0, sizeof(m));
	m.start = start;
	m.end = end;
	m.prot = 3;
	m.backing = backing;
	m.shared = backing == UM_BACKING_SHMEM;
	m.offset = off;
	m.dev = backing == UM_BACKING_ANON ? 0 : 0x801;
	m.ino = backing == UM_BACKING_ANON ? 0 : 777 + backing;
	m.pagesize = 4096;
	snprintf(m.name, sizeof(m.name), "%s", name);
	return m;
}

static void fault(struct um_state *st, struct um_uffd *u, uint64_t addr, uint64_t flags,
		  uint32_t ptid, uint64_t t)
{
	struct uffd_msg m;
	memset(&m, 0, sizeof(m));
	m.event = UFFD_EVENT_PAGEFAULT;
	m.arg.pagefault.address = addr;
	m.arg.pagefault.flags = flags;
	m.arg.pagefault.feat.ptid = ptid;
	um_msg(st, u, &m, t, NULL);
}

/* Several uffds, ranges of every backing, WP runs across chunk boundaries,
 * pending faults, counters, fds; ids with a gap. */
static void build_rich(struct um_state *st)
{
	um_state_init(st, 4321);
	st->missed_updates = 3;
	struct um_uffd *a = um_uffd_new(st, 0xabc, UM_ORIGIN_SYSCALL, O_CLOEXEC | O_NONBLOCK, 4321);
	um_fd_add(a, 3, true);
	um_fd_add(a, 10, false);
	a->file_flags = O_NONBLOCK;
	um_op_api(a, 0, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_THREAD_ID,
		  0x1ffff, 0x8000000000000003ULL);
	struct um_mapping maps[3] = {
		mapping(R, R + 64 * P, UM_BACKING_ANON, 0, ""),
		mapping(S, S + 32 * P, UM_BACKING_SHMEM, 0x200000, "/memfd:guest-ram (deleted)"),
		mapping(S + 32 * P, S + 40 * P, UM_BACKING_FILE, 0x3000, "/var/lib/some/file"),
	};
	um_op_register(a, 0, R, 64 * P, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
		       0x7c, maps, 1);
	um_op_register(a, 0, S, 40 * P, UFFDIO_REGISTER_MODE_MINOR, 0x5c, maps + 1, 2);
	struct um_mapping big = mapping(W, W + 4 * C, UM_BACKING_ANON, 0, "[anon:guest]");
	um_op_register(a, 0, W, 4 * C, UFFDIO_REGISTER_MODE_WP, 0x5c, &big, 1);
	um_op_writeprotect(a, 0, R + 8 * P, 40 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_op_writeprotect(a, 0, W + C - 3 * P, C + 6 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_op_writeprotect(a, 0, W + 3 * C + 64 * P, 5 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_op_writeprotect(a, 0, W + 3 * C + 66 * P, P, 0, NULL);
	um_op_copy(a, 0, R, 4 * P, 0, 0);
	um_op_copy(a, -EAGAIN, R + 4 * P, 4 * P, 0, 2 * P);
	fault(st, a, R + 50 * P, 0, 101, 111);
	fault(st, a, R + 51 * P, UFFD_PAGEFAULT_FLAG_WRITE, 102, 222);
	fault(st, a, W + 5 * P, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE, 103, 333);
	fault(st, a, S + 2 * P, UFFD_PAGEFAULT_FLAG_MINOR, 104, 444);
	for (int c = 0; c < UM_C__MAX; c++)
		a->counters[c] += 1000 * (uint64_t)c + 7;

	struct um_uffd *gone = um_uffd_new(st, 0xdead, UM_ORIGIN_SYSCALL, 0, 4321);
	um_uffd_remove(st, gone); /* leaves a gap in the ids */

	struct um_uffd *b = um_uffd_new(st, 0xbcd, UM_ORIGIN_DEVICE, 0, 999);
	um_fd_add(b, 7, false);
	um_op_api(b, 0, 0, 0x1ffff, 0x8000000000000003ULL);
	fault(st, b, 0x7000000000ULL, 0, 0, 555);
	b->counters[UM_C_IOC_API] = 1;

	struct uffd_msg fm;
	memset(&fm, 0, sizeof(fm));
	fm.event = UFFD_EVENT_FORK;
	fm.arg.fork.ufd = 12;
	struct um_uffd *c = NULL;
	um_msg(st, a, &fm, 666, &c); /* a FORK_EVENT uffd: clone of a's ranges/WP */
	if (c)
		c->mm_pid = 4400;

	struct um_uffd *d = um_uffd_new(st, 0xeee, UM_ORIGIN_RECEIVED, 0, 0);
	um_fd_add(d, 15, true); /* no API, nothing registered */
}

/* Field-by-field equality; describes the first difference. */
static const char *state_diff(const struct um_state *x, const struct um_state *y)
{
	static char why[200];
#define DIFF(cond, ...)                                        \
	do {                                                   \
		if (cond) {                                    \
			snprintf(why, sizeof(why), __VA_ARGS__); \
			return why;                            \
		}                                              \
	} while (0)
	DIFF(x->pid != y->pid, "pid %d vs %d", x->pid, y->pid);
	DIFF(x->missed_updates != y->missed_updates, "missed_updates %u vs %u", x->missed_updates,
	     y->missed_updates);
	DIFF(x->next_id != y->next_id, "next_id %u vs %u", x->next_id, y->next_id);
	DIFF(x->nuffds != y->nuffds, "nuffds %u vs %u", x->nuffds, y->nuffds);
	for (uint32_t i = 0; i < x->nuffds; i++) {
		const struct um_uffd *a = x->uffds[i], *b = y->uffds[i];
		DIFF(a->id != b->id || a->ino != b->ino || a->origin != b->origin ||
			     a->create_flags != b->create_flags || a->mm_pid != b->mm_pid ||
			     a->parent_id != b->parent_id,
		     "uffd %u: identity fields", i);
		DIFF(a->nfds != b->nfds, "uffd %u: nfds %d vs %d", i, a->nfds, b->nfds);
		for (int j = 0; j < a->nfds; j++)
			DIFF(a->fds[j] != b->fds[j] || a->fd_flags[j] != b->fd_flags[j],
			     "uffd %u: fd %d", i, j);
		DIFF(a->file_flags != b->file_flags || a->api_done != b->api_done ||
			     a->features_requested != b->features_requested ||
			     a->features != b->features || a->ioctls != b->ioctls ||
			     a->wp_async != b->wp_async,
		     "uffd %u: API fields", i);
		DIFF(a->last_change_ns != b->last_change_ns, "uffd %u: last_change_ns", i);
		DIFF(memcmp(a->counters, b->counters, sizeof(a->counters)), "uffd %u: counters", i);
		DIFF(a->nranges != b->nranges, "uffd %u: nranges %u vs %u", i, a->nranges, b->nranges);
		for (uint32_t k = 0; k < a->nranges; k++)
			DIFF(memcmp(&a->ranges[k], &b->ranges[k], sizeof(a->ranges[k])),
			     "uffd %u: range %u", i, k);
		DIFF(a->wp.n != b->wp.n, "uffd %u: %u vs %u WP chunks", i, a->wp.n, b->wp.n);
		DIFF(a->wp.n && memcmp(a->wp.chunks, b->wp.chunks, a->wp.n * sizeof(*a->wp.chunks)),
		     "uffd %u: WP bits", i);
		DIFF(a->npending != b->npending, "uffd %u: npending", i);
		DIFF(memcmp(a->pending, b->pending, a->npending * sizeof(*a->pending)),
		     "uffd %u: pending faults", i);
	}
	return NULL;
#undef DIFF
}

/* A buffer whose last byte is followed by an inaccessible page. */
struct guarded {
	uint8_t *map;
	size_t maplen;
};

static uint8_t *guard_put(struct guarded *g, const void *data, size_t len)
{
	size_t ps = th_page_size();
	size_t need = (len + ps - 1) / ps * ps + ps;
	if (g->maplen < need) {
		if (g->map)
			munmap(g->map, g->maplen);
		g->map = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (g->map == MAP_FAILED) {
			g->map = NULL;
			g->maplen = 0;
			return NULL;
		}
		g->maplen = need;
		mprotect(g->map + need - ps, ps, PROT_NONE);
	}
	mprotect(g->map, g->maplen - ps, PROT_READ | PROT_WRITE);
	uint8_t *p = g->map + (g->maplen - ps) - len;
	memcpy(p, data, len);
	return p;
}

static bool state_empty(const struct um_state *st)
{
	return st->nuffds == 0 && st->uffds == NULL;
}

/* Deserialize a modified copy of blob; expect rejection mentioning word. */
static void expect_reject(struct guarded *g, const uint8_t *blob, size_t len, const char *word,
			  const char *what)
{
	struct um_state st;
	char err[256] = "";
	const uint8_t *p = guard_put(g, blob, len);
	int rc = p ? um_deserialize(&st, p, len, err, sizeof(err)) : 0;
	if (!ok(rc == -1 && err[0] && strstr(err, word) && state_empty(&st),
		"rejects %s", what))
		diag("rc %d, message '%s' (want one mentioning '%s')", rc, err, word);
	else
		note("  %s", err);
	if (rc == 0)
		um_state_free(&st);
}

/* Offsets inside a blob of build_rich(): uffd record 0 and its ranges. */
#define HDR sizeof(struct umw_state_hdr)
#define U0 HDR
#define RANGE0 (U0 + sizeof(struct umw_uffd))

int main(void)
{
	struct um_state st, st2;
	struct guarded g = {0};
	char err[256];

	/* ---- round trip ---- */
	build_rich(&st);
	ok(st.nuffds == 4 && st.uffds[0]->nranges >= 4 && st.uffds[0]->wp.n >= 4 &&
		   st.uffds[0]->npending == 4 && st.uffds[2]->origin == UM_ORIGIN_FORK_EVENT,
	   "rich state built: 4 uffds, ranges, WP chunks, pending faults, a fork-event uffd");
	size_t len = um_serialize_size(&st);
	uint8_t *blob = malloc(len), *blob2 = malloc(len);
	is_u64(um_serialize(&st, blob, len), len, "um_serialize writes um_serialize_size bytes");
	is_u64(um_serialize(&st, blob2, len - 1), 0, "um_serialize refuses a buffer too small");
	const uint8_t *gp = guard_put(&g, blob, len);
	err[0] = 0;
	int rc = um_deserialize(&st2, gp, len, err, sizeof(err));
	if (!is_int(rc, 0, "um_deserialize accepts it"))
		diag("message: %s", err);
	const char *d = rc == 0 ? state_diff(&st, &st2) : "not loaded";
	if (!ok(d == NULL, "the round trip gives back an identical state"))
		diag("first difference: %s", d);
	ok(rc == 0 && um_serialize_size(&st2) == len && um_serialize(&st2, blob2, len) == len &&
		   memcmp(blob, blob2, len) == 0,
	   "and it serializes to the same bytes");
	if (rc == 0) {
		struct um_uffd *u = um_uffd_new(&st2, 1, UM_ORIGIN_SYSCALL, 0, 0);
		ok(u && u->id == st.next_id, "a uffd created after loading gets a fresh id");
		um_state_free(&st2);
	}
	struct um_state cp;
	ok(um_state_copy(&cp, &st) == 0 && state_diff(&st, &cp) == NULL,
	   "um_state_copy gives an identical state too");
	um_state_free(&cp);

	struct um_state empty;
	um_state_init(&empty, 77);
	uint8_t eb[sizeof(struct umw_state_hdr)];
	size_t elen = um_serialize(&empty, eb, sizeof(eb));
	ok(elen == sizeof(eb) && um_deserialize(&st2, eb, elen, err, sizeof(err)) == 0 &&
		   st2.pid == 77 && st2.nuffds == 0,
	   "an empty state round-trips (header only)");
	um_state_free(&st2);

	/* ---- every truncation ---- */
	size_t bad_trunc = 0, first_bad = 0, n_trunc_word = 0;
	for (size_t l = 0; l < len; l++) {
		const uint8_t *p = guard_put(&g, blob, l);
		err[0] = 0;
		rc = um_deserialize(&st2, p, l, err, sizeof(err));
		if (rc != -1 || !err[0] || !state_empty(&st2)) {
			if (!bad_trunc++)
				first_bad = l;
			if (rc == 0)
				um_state_free(&st2);
		}
		n_trunc_word += strstr(err, "truncated") != NULL;
	}
	if (!ok(bad_trunc == 0, "all %zu truncations of the %zu-byte blob are rejected with a message",
		len, len))
		diag("%zu accepted or silent, first at length %zu", bad_trunc, first_bad);
	note("  %zu of them say 'truncated', the others report counts out of bounds", n_trunc_word);
	ok(um_deserialize(&st2, blob, 17, NULL, 0) == -1 && state_empty(&st2),
	   "a truncated blob with no error buffer: rejected, no crash");
	char small[8 + 8];
	memset(small, 'Z', sizeof(small));
	rc = um_deserialize(&st2, blob, 100, small, 8);
	ok(rc == -1 && strlen(small) == 7 && small[8] == 'Z',
	   "a short error buffer gets a truncated, terminated message, nothing past it");

	/* ---- bad headers ---- */
	uint8_t *mod = malloc(len + 1000);
	struct umw_state_hdr h;
#define WITH_HDR(field, value, word, what)                  \
	do {                                                \
		memcpy(mod, blob, len);                     \
		memcpy(&h, mod, sizeof(h));                 \
		h.field = value;                            \
		memcpy(mod, &h, sizeof(h));                 \
		expect_reject(&g, mod, len, word, what);    \
	} while (0)
	WITH_HDR(magic, 0x12345678, "magic", "a bad magic");
	WITH_HDR(magic, 0x55534d54, "magic", "a byte-swapped magic");
	WITH_HDR(version, 2, "version", "version 2");
	WITH_HDR(version, 0, "version", "version 0");
	WITH_HDR(uffd_size, (uint32_t)sizeof(struct umw_uffd) + 8, "sizes", "another uffd record size");
	WITH_HDR(range_size, 4, "sizes", "another range record size");
	WITH_HDR(hdr_size, 0, "sizes", "another header size");
	WITH_HDR(page_size, 65536, "page size", "another page size");
	WITH_HDR(nuffds, 5, "truncated", "one uffd more than present");
	WITH_HDR(nuffds, 0xffffffffu, "truncated", "an absurd uffd count");
	WITH_HDR(nuffds, 3, "trailing", "one uffd less than present");

	/* ---- bad uffd 0 records ---- */
	struct umw_uffd w0;
	memcpy(&w0, blob + U0, sizeof(w0));
#define WITH_U0(field, value, word, what)                   \
	do {                                                \
		struct umw_uffd w = w0;                     \
		memcpy(mod, blob, len);                     \
		w.field = value;                            \
		memcpy(mod + U0, &w, sizeof(w));            \
		expect_reject(&g, mod, len, word, what);    \
	} while (0)
	WITH_U0(nranges, 0xffffffffu, "out of bounds", "an absurd range count");
	WITH_U0(nranges, (uint32_t)(len / sizeof(struct umw_range)) + 1, "out of bounds",
		"a range count just beyond the blob");
	WITH_U0(nwpchunks, 0x7fffffffu, "out of bounds", "an absurd WP chunk count");
	WITH_U0(npending, UM_MAX_PENDING + 1, "out of bounds", "more pending faults than the model keeps");
	WITH_U0(npending, 0xffffffffu, "out of bounds", "an absurd pending count");
	WITH_U0(nfds, UM_MAX_FDS + 1, "out of bounds", "more fds than the model keeps");
	WITH_U0(nfds, 0x80000000u, "out of bounds", "a negative-looking fd count");
	WITH_U0(nranges, w0.nranges - 1, "", "one range less than present (shifted records)");

	/* ---- bad ranges of uffd 0 ---- */
	struct umw_range r0, r1;
	memcpy(&r0, blob + RANGE0, sizeof(r0));
	memcpy(&r1, blob + RANGE0 + sizeof(r0), sizeof(r1));
#define WITH_RANGES(a, b, word, what)                                     \
	do {                                                              \
		memcpy(mod, blob, len);                                   \
		memcpy(mod + RANGE0, &(a), sizeof(a));                    \
		memcpy(mod + RANGE0 + sizeof(a), &(b), sizeof(b));        \
		expect_reject(&g, mod, len, word, what);                  \
	} while (0)
	WITH_RANGES(r1, r0, "out of order", "swapped ranges");
	{
		struct umw_range o = r1;
		o.start = r0.end - P;
		WITH_RANGES(r0, o, "out of order", "overlapping ranges");
		o = r0;
		o.end = o.start;
		WITH_RANGES(o, r1, "invalid", "an empty range");
		o = r0;
		o.start += 1;
		WITH_RANGES(o, r1, "invalid", "a misaligned range start");
		o = r0;
		o.end = o.start - P;
		WITH_RANGES(o, r1, "invalid", "a range ending before it starts");
		o = r1;
		o.start = r0.start;
		WITH_RANGES(r0, o, "out of order", "two ranges with the same start");
	}

	/* ---- bad WP chunks of uffd 0 ---- */
	size_t chunk0 = RANGE0 + w0.nranges * sizeof(struct umw_range);
	struct umw_wpchunk c0, c1;
	memcpy(&c0, blob + chunk0, sizeof(c0));
	memcpy(&c1, blob + chunk0 + sizeof(c0), sizeof(c1));
	memcpy(mod, blob, len);
	memcpy(mod + chunk0, &c1, sizeof(c1));
	memcpy(mod + chunk0 + sizeof(c1), &c0, sizeof(c0));
	expect_reject(&g, mod, len, "out of order", "swapped WP chunks");
	memcpy(mod, blob, len);
	c1.base = c0.base;
	memcpy(mod + chunk0 + sizeof(c0), &c1, sizeof(c1));
	expect_reject(&g, mod, len, "out of order", "a duplicate WP chunk");
	memcpy(mod, blob, len);
	c0.base += P;
	memcpy(mod + chunk0, &c0, sizeof(c0));
	expect_reject(&g, mod, len, "misaligned", "a misaligned WP chunk");

	/* ---- trailing bytes ---- */
	memcpy(mod, blob, len);
	memset(mod + len, 0, 1000);
	expect_reject(&g, mod, len + 1, "trailing", "one trailing byte");
	expect_reject(&g, mod, len + 1000, "trailing", "1000 trailing bytes");
	expect_reject(&g, mod, len + sizeof(struct umw_uffd), "trailing",
		      "a trailing all-zero uffd record");

	/* ---- identity: two uffds with the same id ---- */
	{
		size_t off1 = U0 + sizeof(struct umw_uffd) + w0.nranges * sizeof(struct umw_range) +
			      w0.nwpchunks * sizeof(struct umw_wpchunk) +
			      w0.npending * sizeof(struct umw_fault);
		struct umw_uffd w1;
		memcpy(mod, blob, len);
		memcpy(&w1, mod + off1, sizeof(w1));
		ok(w1.id == st.uffds[1]->id, "(second uffd record located at offset %zu)", off1);
		w1.id = w0.id;
		memcpy(mod + off1, &w1, sizeof(w1));
		expect_reject(&g, mod, len, "id", "two uffds with the same id");
	}

	/* ---- random byte flips, in a child: a crash is reported, not fatal ---- */
	{
		const int NFLIPS = 5000;
		struct flipres {
			volatile int iter, done, accepted, rejected, bad;
			char why[200];
		} *fr = mmap(NULL, sizeof(*fr), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (fr == MAP_FAILED) {
			fail("mmap for the byte-flip results: %s", strerror(errno));
			goto out;
		}
		struct th_rng rng = th_rng_seed(0xf11b5eedULL);
		note("byte flips: seed %#llx, %d rounds", (unsigned long long)rng.s, NFLIPS);
		fflush(stdout);
		memset(fr, 0, sizeof(*fr));
		pid_t pid = fork();
		if (pid == 0) {
			alarm(60);
			for (int it = 0; it < NFLIPS; it++) {
				fr->iter = it;
				size_t l = len;
				memcpy(mod, blob, len);
				int nflip = 1 + (int)th_rng_below(&rng, 4);
				for (int k = 0; k < nflip; k++) {
					/* Bias toward the header and counts, where damage matters. */
					size_t pos = th_rng_below(&rng, 3) == 0 ? th_rng_below(&rng, RANGE0)
										: th_rng_below(&rng, len);
					mod[pos] ^= (uint8_t)(1 + th_rng_below(&rng, 255));
				}
				if (th_rng_below(&rng, 8) == 0)
					l = th_rng_below(&rng, len + 1);
				const uint8_t *p = guard_put(&g, mod, l);
				char e[256] = "";
				struct um_state s2;
				if (um_deserialize(&s2, p, l, e, sizeof(e)) == 0) {
					fr->accepted++;
					/* What was accepted must be usable: re-serialize and reload. */
					size_t l2 = um_serialize_size(&s2);
					uint8_t *b2 = malloc(l2);
					struct um_state s3;
					char e3[256] = "";
					if (!b2 || um_serialize(&s2, b2, l2) != l2 ||
					    um_deserialize(&s3, b2, l2, e3, sizeof(e3)) != 0) {
						if (!fr->bad++)
							snprintf(fr->why, sizeof(fr->why),
								 "round %d: accepted blob does not reload: %.120s", it, e3);
					} else {
						const char *dd = state_diff(&s2, &s3);
						if (dd && !fr->bad++)
							snprintf(fr->why, sizeof(fr->why),
								 "round %d: reload differs: %.120s", it, dd);
						um_state_free(&s3);
					}
					for (uint32_t i = 0; i < s2.nuffds; i++) {
						/* touch everything a consumer would */
						const struct um_uffd *u = s2.uffds[i];
						if (u->nranges)
							(void)um_range_find(u, u->ranges[u->nranges - 1].start);
						(void)um_wp_count(&u->wp);
					}
					free(b2);
					um_state_free(&s2);
				} else {
					fr->rejected++;
					if ((!e[0] || !state_empty(&s2)) && !fr->bad++)
						snprintf(fr->why, sizeof(fr->why),
							 "round %d: rejected without a message or state left", it);
				}
			}
			fr->done = 1;
			_exit(0);
		}
		int status = 0;
		if (pid > 0)
			waitpid(pid, &status, 0);
		bool clean = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && fr->done;
		if (!ok(clean, "%d rounds of random byte flips and truncations: no crash, no hang",
			NFLIPS)) {
			if (WIFSIGNALED(status))
				diag("child died of signal %d (%s) in round %d", WTERMSIG(status),
				     strsignal(WTERMSIG(status)), fr->iter);
		}
		if (!ok(fr->bad == 0, "every damaged blob is rejected with a message, or loads "
				      "into a state that round-trips"))
			diag("%d problems; first: %s", fr->bad, fr->why);
		note("  %d accepted, %d rejected", fr->accepted, fr->rejected);
		munmap((void *)fr, sizeof(*fr));
	}

out:
	free(mod);
	free(blob);
	free(blob2);
	um_state_free(&st);
	return done_testing();
}
