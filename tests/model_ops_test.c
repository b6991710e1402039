/* model_ops_test.c - the model's update rules (model/um_ops.c, um_state.c):
 * what each UFFDIO_* result, each message read from a uffd, each memory call
 * of the owning process and each fd event does to the state.  Pure model:
 * the "kernel answers" are made up here, no kernel uffd is used. */
#include <signal.h>
#include <sys/wait.h>

#include "test_helpers.h"
#include "um_model.h"

#define P UM_PAGE_SIZE
#define R 0x30000000ULL        /* anonymous region */
#define S 0x38000000ULL        /* shmem region */
#define Q 0x50000000ULL        /* where mremap moves things */
#define ME 100                 /* this process */
#define OTHER 200              /* another process (foreign memory) */

#define M_MISSING UFFDIO_REGISTER_MODE_MISSING
#define M_WP UFFDIO_REGISTER_MODE_WP
#define M_MINOR UFFDIO_REGISTER_MODE_MINOR
#define IOCS 0x7cULL

static struct um_mapping anon_map(uint64_t start, uint64_t end)
{
	struct um_mapping m;
	memset(&m, 0, sizeof(m));
	m.start = start;
	m.end = end;
	m.prot = 3;
	m.backing = UM_BACKING_ANON;
	m.pagesize = 4096;
	return m;
}

static struct um_mapping shm_map(uint64_t start, uint64_t end, uint64_t offset)
{
	struct um_mapping m = anon_map(start, end);
	m.backing = UM_BACKING_SHMEM;
	m.shared = 1;
	m.offset = offset;
	m.dev = 1;
	m.ino = 4242;
	snprintf(m.name, sizeof(m.name), "/memfd:guest (deleted)");
	return m;
}

static struct uffd_msg pf_msg(uint64_t addr, uint64_t flags, uint32_t ptid)
{
	struct uffd_msg m;
	memset(&m, 0, sizeof(m));
	m.event = UFFD_EVENT_PAGEFAULT;
	m.arg.pagefault.address = addr;
	m.arg.pagefault.flags = flags;
	m.arg.pagefault.feat.ptid = ptid;
	return m;
}

static struct uffd_msg ev_msg(uint8_t event, uint64_t a, uint64_t b, uint64_t c)
{
	struct uffd_msg m;
	memset(&m, 0, sizeof(m));
	m.event = event;
	switch (event) {
	case UFFD_EVENT_FORK: m.arg.fork.ufd = (uint32_t)a; break;
	case UFFD_EVENT_REMAP: m.arg.remap.from = a; m.arg.remap.to = b; m.arg.remap.len = c; break;
	default: m.arg.remove.start = a; m.arg.remove.end = b; break;
	}
	return m;
}

/* A uffd of state st with API done, [R, R+64P) anon registered MISSING|WP,
 * WP on [R, R+16P), pending faults at pages 2, 20, 40. */
static struct um_uffd *setup(struct um_state *st, pid_t mm, uint64_t features)
{
	struct um_uffd *u = um_uffd_new(st, 7000 + st->next_id, UM_ORIGIN_SYSCALL, O_CLOEXEC, mm);
	um_op_api(u, 0, features, features | UFFD_FEATURE_THREAD_ID, 0x8000000000000003ULL);
	struct um_mapping m = anon_map(R, R + 64 * P);
	um_op_register(u, 0, R, 64 * P, M_MISSING | M_WP, IOCS, &m, 1);
	um_op_writeprotect(u, 0, R, 16 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	uint64_t t = 1000;
	for (int pg = 2; pg <= 40; pg += pg == 2 ? 18 : 20) {
		struct uffd_msg f = pf_msg(R + (uint64_t)pg * P, 0, (uint32_t)(10 + pg));
		um_msg(st, u, &f, t++, NULL);
	}
	return u;
}

/* What must not change when the kernel refused a call. */
struct snap {
	uint32_t nranges, npending;
	struct um_range ranges[16];
	struct um_wpmap wp;
	struct um_fault pending[UM_MAX_PENDING];
	uint64_t api_done, features, ioctls;
};

static void snap_take(struct snap *s, const struct um_uffd *u)
{
	memset(s, 0, sizeof(*s));
	s->nranges = u->nranges;
	memcpy(s->ranges, u->ranges, (u->nranges < 16 ? u->nranges : 16) * sizeof(*u->ranges));
	um_wp_copy(&s->wp, &u->wp);
	s->npending = u->npending;
	memcpy(s->pending, u->pending, u->npending * sizeof(*u->pending));
	s->api_done = u->api_done;
	s->features = u->features;
	s->ioctls = u->ioctls;
}

static bool snap_same(struct snap *s, const struct um_uffd *u)
{
	bool same = s->nranges == u->nranges && s->npending == u->npending &&
		    s->wp.n == u->wp.n && s->api_done == u->api_done &&
		    s->features == u->features && s->ioctls == u->ioctls &&
		    memcmp(s->ranges, u->ranges, (u->nranges < 16 ? u->nranges : 16) * sizeof(*u->ranges)) == 0 &&
		    memcmp(s->pending, u->pending, u->npending * sizeof(*u->pending)) == 0 &&
		    (u->wp.n == 0 || memcmp(s->wp.chunks, u->wp.chunks, u->wp.n * sizeof(*u->wp.chunks)) == 0);
	um_wp_free(&s->wp);
	return same;
}

static bool pending_has(const struct um_uffd *u, uint64_t addr)
{
	for (uint32_t i = 0; i < u->npending; i++)
		if (u->pending[i].address == addr)
			return true;
	return false;
}

static void test_failed_calls(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = setup(&st, ME, 0);
	struct um_mapping m = anon_map(R + 64 * P, R + 128 * P);
	static struct snap s;
	const long E = -EINVAL;
	struct {
		const char *name;
		int counter;
	} calls[] = {
		{"REGISTER", UM_C_IOC_REGISTER},  {"UNREGISTER", UM_C_IOC_UNREGISTER},
		{"WAKE", UM_C_IOC_WAKE},          {"COPY", UM_C_IOC_COPY},
		{"ZEROPAGE", UM_C_IOC_ZEROPAGE},  {"WRITEPROTECT(WP)", UM_C_IOC_WRITEPROTECT},
		{"WRITEPROTECT(0)", UM_C_IOC_WRITEPROTECT}, {"CONTINUE", UM_C_IOC_CONTINUE},
		{"POISON", UM_C_IOC_POISON},      {"MOVE", UM_C_IOC_MOVE},
		{"API", UM_C_IOC_API},
	};
	uint8_t pm[64];
	memset(pm, 1, sizeof(pm));
	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		uint64_t errs = u->counters[UM_C_IOC_ERRORS], cnt = u->counters[calls[i].counter];
		snap_take(&s, u);
		switch (i) {
		case 0: um_op_register(u, E, R + 64 * P, 64 * P, M_MISSING, IOCS, &m, 1); break;
		case 1: um_op_unregister(u, E, R, 64 * P); break;
		case 2: um_op_wake(u, E, R, 64 * P); break;
		case 3: um_op_copy(u, -EEXIST, R, 64 * P, 0, -EEXIST); break;
		case 4: um_op_zeropage(u, E, R, 64 * P, 0, E); break;
		case 5: um_op_writeprotect(u, -ENOENT, R, 64 * P, UFFDIO_WRITEPROTECT_MODE_WP, pm); break;
		case 6: um_op_writeprotect(u, E, R, 64 * P, 0, NULL); break;
		case 7: um_op_continue(u, E, R, 64 * P, 0, E); break;
		case 8: um_op_poison(u, E, R, 64 * P, 0, E); break;
		case 9: um_op_move(u, E, R + 32 * P, R, 16 * P, 0, E); break;
		case 10: um_op_api(u, E, UFFD_FEATURE_MOVE, 0, 0); break;
		}
		ok(snap_same(&s, u), "failed %s changes no range, WP bit, pending fault or API state",
		   calls[i].name);
		ok(u->counters[UM_C_IOC_ERRORS] == errs + 1 && u->counters[calls[i].counter] == cnt + 1,
		   "failed %s counts one call and one error", calls[i].name);
	}
	/* Failed calls that still carry a positive byte count do apply it
	 * (partial results); done == 0 means nothing happened. */
	snap_take(&s, u);
	um_op_copy(u, -EAGAIN, R, 4 * P, 0, 0);
	ok(snap_same(&s, u), "COPY -EAGAIN with nothing done changes nothing");
	um_state_free(&st);

	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	um_op_api(u, -EINVAL, UFFD_FEATURE_WP_ASYNC, 0, 0);
	ok(!u->api_done && !u->features && !u->wp_async, "a refused UFFDIO_API leaves API undone");
	um_op_api(u, 0, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_THREAD_ID, 0x1ffff, 0x8000000000000003ULL);
	ok(u->api_done && u->features == 0x1ffff && u->ioctls == 0x8000000000000003ULL && u->wp_async,
	   "a successful UFFDIO_API records answered features, ioctls, WP_ASYNC");
	is_u64(u->features_requested,
	       UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_THREAD_ID,
	       "WP_ASYNC requested: the kernel turns WP_UNPOPULATED on too (features_requested "
	       "has both, nothing else added)");
	um_state_free(&st);

	/* WP_UNPOPULATED is added for WP_ASYNC only. */
	static const struct {
		uint64_t req, want;
		const char *what;
	} api_cases[] = {
		{UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
		 "WP_ASYNC alone"},
		{UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
		 UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, "WP_ASYNC and WP_UNPOPULATED"},
		{UFFD_FEATURE_WP_UNPOPULATED, UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED alone"},
		{UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_MISSING_SHMEM,
		 UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_MISSING_SHMEM, "no WP feature"},
		{0, 0, "no feature at all"},
	};
	for (size_t i = 0; i < sizeof(api_cases) / sizeof(api_cases[0]); i++) {
		um_state_init(&st, ME);
		u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
		um_op_api(u, 0, api_cases[i].req, 0x1ffff, 3);
		ok(u->api_done && u->features_requested == api_cases[i].want &&
			   !!u->wp_async == !!(api_cases[i].req & UFFD_FEATURE_WP_ASYNC) &&
			   u->features == 0x1ffff,
		   "UFFDIO_API requesting %s: features_requested %#llx, wp_async %d",
		   api_cases[i].what, (unsigned long long)api_cases[i].want,
		   !!(api_cases[i].req & UFFD_FEATURE_WP_ASYNC));
		um_state_free(&st);
	}
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	um_op_api(u, -EINVAL, UFFD_FEATURE_WP_ASYNC, 0, 0);
	ok(!u->api_done && u->features_requested == 0 && !u->wp_async,
	   "a refused UFFDIO_API with WP_ASYNC records no requested feature");
	um_state_free(&st);
}

/* The output byte count of COPY/ZEROPAGE/CONTINUE/POISON/MOVE is the
 * kernel's only when the call succeeded (then it is len) or returned -EAGAIN
 * with 0 < count <= len.  Otherwise the field holds a negative errno or
 * whatever the application left in its struct: nothing may be applied. */
static void test_output_field(void)
{
	static const struct {
		long ret;
		int64_t done; /* in pages, or as is when < 0 or huge */
		bool pages;
		const char *what;
	} bad[] = {
		{-EINVAL, 4, true, "-EINVAL, field 4 pages (the app's garbage)"},
		{-EINVAL, 8, true, "-EINVAL, field == len"},
		{-EEXIST, 2, true, "-EEXIST, field 2 pages"},
		{-ENOENT, 1, true, "-ENOENT, field 1 page"},
		{-EFAULT, 8, true, "-EFAULT, field == len"},
		{-ESRCH, 3, true, "-ESRCH, field 3 pages"},
		{-ENOMEM, 5, true, "-ENOMEM, field 5 pages"},
		{-EAGAIN, 0, true, "-EAGAIN, field 0"},
		{-EAGAIN, -EAGAIN, false, "-EAGAIN, field -EAGAIN"},
		{-EAGAIN, -1, false, "-EAGAIN, field -1"},
		{-EAGAIN, 9, true, "-EAGAIN, field len + 1 page"},
		{-EAGAIN, (int64_t)(8 * UM_PAGE_SIZE) + 1, false, "-EAGAIN, field len + 1 byte"},
		{-EAGAIN, INT64_MIN, false, "-EAGAIN, field INT64_MIN"},
		{-EAGAIN, INT64_MAX, false, "-EAGAIN, field INT64_MAX"},
	};
	static const char *const opname[] = {"COPY", "ZEROPAGE", "CONTINUE", "POISON", "MOVE"};
	static const int opctr[] = {UM_C_IOC_COPY, UM_C_IOC_ZEROPAGE, UM_C_IOC_CONTINUE,
				    UM_C_IOC_POISON, UM_C_IOC_MOVE};
	static struct snap s;
	const uint64_t len = 8 * P, dst = R + 8 * P, src = R + 40 * P;
	/* Pass 0: fields within a few pages of len; pass 1: INT64_MIN/MAX (a
	 * model that trusted those would try to mark the whole address space,
	 * so they come last, after the other failures are reported). */
	const size_t nbad = sizeof(bad) / sizeof(bad[0]), nhuge = 2;
	for (int pass = 0; pass < 2; pass++) {
		for (int op = 0; op < 5; op++) {
			bool all_same = true, all_counted = true;
			const char *first_bad = NULL;
			for (size_t i = pass ? nbad - nhuge : 0; i < (pass ? nbad : nbad - nhuge); i++) {
				struct um_state st;
				um_state_init(&st, ME);
				struct um_uffd *u = setup(&st, ME, 0);
				/* Faults waiting on the destination and WP bits on both
				 * sides, so any applied byte shows. */
				for (int pg = 8; pg < 16; pg++) {
					struct uffd_msg f = pf_msg(R + (uint64_t)pg * P, 0, 50);
					um_msg(&st, u, &f, 100, NULL);
				}
				um_op_writeprotect(u, 0, src, len, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
				int64_t done = bad[i].pages ? bad[i].done * (int64_t)P : bad[i].done;
				/* mode 0 clears WP of filled pages; COPY|WP would set WP where
				 * it is clear, so use both for COPY. */
				uint64_t errs = u->counters[UM_C_IOC_ERRORS], cnt = u->counters[opctr[op]];
				uint64_t bytes = u->counters[UM_C_BYTES_COPIED];
				for (int wpmode = 0; wpmode < (op == 0 ? 2 : 1); wpmode++) {
					snap_take(&s, u);
					switch (op) {
					case 0:
						um_op_copy(u, bad[i].ret, wpmode ? R + 20 * P : dst, len,
							   wpmode ? UFFDIO_COPY_MODE_WP : 0, done);
						break;
					case 1: um_op_zeropage(u, bad[i].ret, dst, len, 0, done); break;
					case 2: um_op_continue(u, bad[i].ret, dst, len, 0, done); break;
					case 3: um_op_poison(u, bad[i].ret, dst, len, 0, done); break;
					case 4: um_op_move(u, bad[i].ret, dst, src, len, 0, done); break;
					}
					bool same = snap_same(&s, u) && u->counters[UM_C_BYTES_COPIED] == bytes;
					if (!same && !first_bad)
						first_bad = bad[i].what;
					all_same &= same;
				}
				all_counted &= u->counters[UM_C_IOC_ERRORS] == errs + (op == 0 ? 2 : 1) &&
					       u->counters[opctr[op]] == cnt + (op == 0 ? 2 : 1);
				um_state_free(&st);
			}
			if (!ok(all_same, "failed %s with an untrustworthy output field (%s) "
					  "changes no WP bit, pending fault or byte count",
				opname[op], pass ? "INT64_MIN, INT64_MAX" : "12 cases"))
				diag("first case that changed something: %s", first_bad);
			ok(all_counted, "and each such %s counts one call and one error", opname[op]);
		}
	}

	/* The boundaries that are trusted: -EAGAIN with 1 byte, and with len. */
	for (int op = 0; op < 5; op++) {
		struct um_state st;
		um_state_init(&st, ME);
		struct um_uffd *u = setup(&st, ME, 0);
		um_op_writeprotect(u, 0, R, 64 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
		for (int k = 0; k < 2; k++) {
			uint64_t d = k ? R + 8 * P : R + 24 * P;
			int64_t done = k ? (int64_t)len : 1;
			switch (op) {
			case 0: um_op_copy(u, -EAGAIN, d, len, 0, done); break;
			case 1: um_op_zeropage(u, -EAGAIN, d, len, 0, done); break;
			case 2: um_op_continue(u, -EAGAIN, d, len, 0, done); break;
			case 3: um_op_poison(u, -EAGAIN, d, len, 0, done); break;
			case 4: um_op_move(u, -EAGAIN, d, k ? R + 48 * P : R + 56 * P, len, 0, done); break;
			}
		}
		/* 1 byte: its whole page; len: all 8 pages (MOVE: same at the source). */
		uint64_t want = 64 - 1 - 8 - (op == 4 ? 1 + 8 : 0);
		ok(um_wp_count_range(&u->wp, R, R + 64 * P) == want && !um_wp_test(&u->wp, R + 24 * P) &&
			   um_wp_test(&u->wp, R + 25 * P) && !um_wp_test(&u->wp, R + 15 * P) &&
			   um_wp_test(&u->wp, R + 16 * P),
		   "%s -EAGAIN with 1 byte done applies to its page, with len done to all %d pages",
		   opname[op], 8);
		is_u64(u->counters[UM_C_BYTES_COPIED], op == 3 ? 0 : 1 + len,
		       "%s -EAGAIN: bytes counted as reported", opname[op]);
		um_state_free(&st);
	}

	/* Success: the field is not read; the full len applies. */
	for (int op = 0; op < 5; op++) {
		struct um_state st;
		um_state_init(&st, ME);
		struct um_uffd *u = setup(&st, ME, 0);
		um_op_writeprotect(u, 0, R, 64 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
		struct uffd_msg f = pf_msg(R + 10 * P, 0, 60);
		um_msg(&st, u, &f, 100, NULL);
		const int64_t garbage = op & 1 ? -EINVAL : 3;
		switch (op) {
		case 0: um_op_copy(u, 0, R + 8 * P, len, 0, garbage); break;
		case 1: um_op_zeropage(u, 0, R + 8 * P, len, 0, garbage); break;
		case 2: um_op_continue(u, 0, R + 8 * P, len, 0, garbage); break;
		case 3: um_op_poison(u, 0, R + 8 * P, len, 0, garbage); break;
		case 4: um_op_move(u, 0, R + 8 * P, R + 48 * P, len, 0, garbage); break;
		}
		ok(um_wp_count_range(&u->wp, R + 8 * P, R + 16 * P) == 0 &&
			   um_wp_count(&u->wp) == 64 - 8 - (op == 4 ? 8 : 0) &&
			   !pending_has(u, R + 10 * P) && pending_has(u, R + 2 * P) && u->npending == 3,
		   "%s returning 0 applies the full len whatever the field holds (%lld)", opname[op],
		   (long long)garbage);
		is_u64(u->counters[UM_C_BYTES_COPIED], op == 3 ? 0 : len, "%s success: len bytes counted",
		       opname[op]);
		um_state_free(&st);
	}
}

static void test_fill_ops(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = setup(&st, ME, 0);

	/* COPY with MODE_WP, partial: 4 pages asked at [R+32P), 2 done. */
	um_msg(&st, u, &(struct uffd_msg){0}, 0, NULL); /* event 0: ignored */
	for (int pg = 32; pg < 36; pg++) {
		struct uffd_msg f = pf_msg(R + (uint64_t)pg * P, 0, 1);
		um_msg(&st, u, &f, 2000, NULL);
	}
	uint64_t errs = u->counters[UM_C_IOC_ERRORS];
	um_op_copy(u, -EAGAIN, R + 32 * P, 4 * P, UFFDIO_COPY_MODE_WP, 2 * P);
	ok(um_wp_test(&u->wp, R + 32 * P) && um_wp_test(&u->wp, R + 33 * P) &&
		   !um_wp_test(&u->wp, R + 34 * P) && !um_wp_test(&u->wp, R + 35 * P),
	   "partial COPY|WP: only the 2 copied pages are write-protected");
	ok(!pending_has(u, R + 32 * P) && !pending_has(u, R + 33 * P) &&
		   pending_has(u, R + 34 * P) && pending_has(u, R + 35 * P),
	   "partial COPY: faults on the copied pages are woken, the others wait");
	is_u64(u->counters[UM_C_BYTES_COPIED], 2 * P, "partial COPY counts the bytes done");
	is_u64(u->counters[UM_C_IOC_ERRORS], errs + 1, "partial COPY counts as an error");
	um_op_copy(u, 0, R + 34 * P, 2 * P, UFFDIO_COPY_MODE_WP, 0);
	ok(um_wp_count_range(&u->wp, R + 32 * P, R + 36 * P) == 4 && !pending_has(u, R + 34 * P) &&
		   !pending_has(u, R + 35 * P),
	   "the retried COPY|WP finishes the job");
	is_u64(u->counters[UM_C_BYTES_COPIED], 4 * P, "bytes: 4 pages");

	/* COPY without WP clears protection; partial clears only what was done. */
	um_op_copy(u, -EAGAIN, R, 8 * P, 0, 3 * P);
	ok(!um_wp_test(&u->wp, R) && !um_wp_test(&u->wp, R + 2 * P) && um_wp_test(&u->wp, R + 3 * P),
	   "partial COPY without WP clears the protection of the 3 copied pages only");
	ok(!pending_has(u, R + 2 * P), "and wakes the fault on page 2");
	um_op_copy(u, 0, R + 3 * P, 5 * P, UFFDIO_COPY_MODE_DONTWAKE, 0);
	ok(um_wp_count_range(&u->wp, R, R + 8 * P) == 0, "full COPY without WP clears protection");
	struct uffd_msg f = pf_msg(R + 4 * P, 0, 77);
	um_msg(&st, u, &f, 3000, NULL);
	um_op_copy(u, 0, R + 4 * P, P, UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP, 0);
	ok(pending_has(u, R + 4 * P) && um_wp_test(&u->wp, R + 4 * P),
	   "COPY with DONTWAKE: the fault still waits; WP set");
	um_op_wake(u, 0, R + 4 * P, P);
	ok(!pending_has(u, R + 4 * P), "UFFDIO_WAKE resolves it");
	is_u64(u->counters[UM_C_IOC_WAKE], 1, "one WAKE counted");

	/* ZEROPAGE: no WP, wakes; partial. */
	um_op_writeprotect(u, 0, R + 40 * P, 8 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_op_zeropage(u, -EAGAIN, R + 40 * P, 8 * P, 0, 4 * P);
	ok(um_wp_count_range(&u->wp, R + 40 * P, R + 48 * P) == 4 && !um_wp_test(&u->wp, R + 43 * P) &&
		   um_wp_test(&u->wp, R + 44 * P),
	   "partial ZEROPAGE clears WP on the 4 zeroed pages");
	ok(!pending_has(u, R + 40 * P), "ZEROPAGE wakes the fault on page 40");

	/* CONTINUE with and without WP. */
	um_op_continue(u, 0, R + 50 * P, 2 * P, UFFDIO_CONTINUE_MODE_WP, 0);
	ok(um_wp_test(&u->wp, R + 50 * P) && um_wp_test(&u->wp, R + 51 * P), "CONTINUE|WP protects");
	um_op_continue(u, 0, R + 50 * P, P, 0, 0);
	ok(!um_wp_test(&u->wp, R + 50 * P) && um_wp_test(&u->wp, R + 51 * P),
	   "CONTINUE without WP unprotects");

	/* POISON: no protection, wakes. */
	f = pf_msg(R + 51 * P, UFFD_PAGEFAULT_FLAG_WRITE, 3);
	um_msg(&st, u, &f, 4000, NULL);
	uint64_t bytes = u->counters[UM_C_BYTES_COPIED];
	um_op_poison(u, 0, R + 51 * P, P, 0, 0);
	ok(!um_wp_test(&u->wp, R + 51 * P) && !pending_has(u, R + 51 * P),
	   "POISON clears WP and wakes");
	is_u64(u->counters[UM_C_BYTES_COPIED], bytes, "POISON does not count as bytes copied");

	/* MOVE: neither source nor destination keep WP bits. */
	um_op_writeprotect(u, 0, R + 52 * P, 12 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	f = pf_msg(R + 52 * P, 0, 3);
	um_msg(&st, u, &f, 5000, NULL);
	um_op_move(u, -EAGAIN, R + 52 * P, R + 60 * P, 4 * P, 0, 2 * P);
	ok(!um_wp_test(&u->wp, R + 52 * P) && !um_wp_test(&u->wp, R + 53 * P) &&
		   um_wp_test(&u->wp, R + 54 * P),
	   "partial MOVE: the 2 moved destination pages lose WP");
	ok(!um_wp_test(&u->wp, R + 60 * P) && !um_wp_test(&u->wp, R + 61 * P) &&
		   um_wp_test(&u->wp, R + 62 * P),
	   "partial MOVE: the 2 moved source pages lose WP");
	ok(!pending_has(u, R + 52 * P), "MOVE wakes the destination fault");
	is_u64(u->counters[UM_C_BYTES_COPIED], bytes + 2 * P, "MOVE counts its bytes");
	um_state_free(&st);
}

static void test_writeprotect(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = setup(&st, ME, 0);
	ok(um_wp_count(&u->wp) == 16 && u->npending == 3, "setup: 16 protected pages, 3 faults");

	um_op_writeprotect(u, 0, R + 16 * P, 32 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	ok(um_wp_count(&u->wp) == 48 && pending_has(u, R + 20 * P),
	   "WRITEPROTECT mode WP: 32 more pages protected, faults still wait");
	um_op_writeprotect(u, 0, R + 16 * P, 8 * P, UFFDIO_WRITEPROTECT_MODE_DONTWAKE, NULL);
	ok(um_wp_count(&u->wp) == 40 && pending_has(u, R + 20 * P),
	   "WRITEPROTECT mode DONTWAKE: unprotected, the fault on page 20 still waits");
	um_op_wake(u, 0, R + 16 * P, 8 * P);
	ok(!pending_has(u, R + 20 * P) && pending_has(u, R + 2 * P) && pending_has(u, R + 40 * P),
	   "WAKE of pages 16..24 resolves only the fault on page 20");
	um_op_writeprotect(u, 0, R + 32 * P, 16 * P, 0, NULL);
	ok(um_wp_count(&u->wp) == 24 && !pending_has(u, R + 40 * P) && pending_has(u, R + 2 * P),
	   "WRITEPROTECT mode 0: unprotects and wakes the fault on page 40 only");

	/* pagemap_wp readback: the kernel protected only some pages. */
	uint8_t pm[12] = {1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1};
	um_op_writeprotect(u, 0, R + 10 * P, 12 * P, UFFDIO_WRITEPROTECT_MODE_WP, pm);
	bool exact = true;
	for (int i = 0; i < 12; i++)
		exact &= um_wp_test(&u->wp, R + (uint64_t)(10 + i) * P) == (pm[i] != 0);
	ok(exact, "WRITEPROTECT with pagemap readback: WP bits are exactly what pagemap said "
		  "(including clearing pages 0..15 that were protected before)");
	ok(um_wp_test(&u->wp, R + 9 * P) && !um_wp_test(&u->wp, R + 22 * P) &&
		   um_wp_test(&u->wp, R + 24 * P) && um_wp_count_range(&u->wp, R, R + 64 * P) == 10 + 6 + 8,
	   "pages outside the readback keep their bits (0..9 and 24..31 protected)");
	is_u64(u->counters[UM_C_IOC_WRITEPROTECT], 5, "5 WRITEPROTECT calls counted");
	uint8_t pm2[4] = {2, 0x80, 0, 1};
	um_wp_sync(u, R + 40 * P, 4, pm2);
	ok(um_wp_test(&u->wp, R + 40 * P) && um_wp_test(&u->wp, R + 41 * P) &&
		   !um_wp_test(&u->wp, R + 42 * P) && um_wp_test(&u->wp, R + 43 * P),
	   "um_wp_sync: any non-zero byte means protected");
	um_wp_sync(u, R + 40 * P, 4, (const uint8_t[4]){0});
	is_u64(um_wp_count_range(&u->wp, R + 40 * P, R + 44 * P), 0, "um_wp_sync: zeros unprotect");

	/* UNREGISTER clears WP and pending in its range only. */
	struct uffd_msg f = pf_msg(R + 60 * P, UFFD_PAGEFAULT_FLAG_WP, 9);
	um_msg(&st, u, &f, 7000, NULL);
	um_op_writeprotect(u, 0, R + 56 * P, 8 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_op_unregister(u, 0, R + 48 * P, 16 * P);
	ok(um_wp_count_range(&u->wp, R + 48 * P, R + 64 * P) == 0 && !pending_has(u, R + 60 * P),
	   "UNREGISTER clears WP bits and pending faults of its range");
	ok(u->nranges == 1 && u->ranges[0].end == R + 48 * P && pending_has(u, R + 2 * P) &&
		   um_wp_test(&u->wp, R + 9 * P),
	   "and keeps the rest");

	/* Re-REGISTER never touches the pages' uffd-wp bits (the kernel does
	 * not walk the ptes on register), whatever the new modes. */
	struct um_mapping m = anon_map(R, R + 64 * P);
	static struct snap s;
	uint64_t before = um_wp_count(&u->wp);
	ok(before == 24 && um_wp_count_range(&u->wp, R, R + 32 * P) == 24 &&
		   um_wp_count_range(&u->wp, R, R + 16 * P) == 13,
	   "before re-registering: 24 protected pages, 13 of them in pages 0..15");
	snap_take(&s, u);
	um_op_register(u, 0, R, 8 * P, M_MISSING | M_WP, IOCS, &m, 1);
	ok(snap_same(&s, u), "re-REGISTER with the same modes changes nothing");
	um_op_register(u, 0, R, 16 * P, M_MINOR, IOCS, &m, 1);
	ok(u->nranges == 2 && u->ranges[0].end == R + 16 * P && u->ranges[0].modes == M_MINOR &&
		   u->ranges[1].modes == (M_MISSING | M_WP),
	   "re-REGISTER of pages 0..15 with MINOR: new modes there");
	ok(um_wp_count(&u->wp) == before && um_wp_test(&u->wp, R + 9 * P),
	   "re-REGISTER without WP keeps every WP bit");
	um_op_register(u, 0, R, 16 * P, M_MISSING, IOCS, &m, 1);
	ok(u->nranges == 2 && u->ranges[0].modes == M_MISSING && um_wp_count(&u->wp) == before,
	   "re-REGISTER with MISSING over MINOR: new modes, WP bits still kept");
	um_op_register(u, 0, R, 48 * P, M_MISSING | M_WP, IOCS, &m, 1);
	ok(u->nranges == 1 && u->ranges[0].modes == (M_MISSING | M_WP) &&
		   um_wp_count(&u->wp) == before,
	   "re-REGISTER with MISSING|WP: one range again, WP bits unchanged");
	um_state_free(&st);
}

/* UFFDIO_REGISTER over parts this uffd registered already: a part whose
 * modes include the requested ones is left alone ("nothing to do" in the
 * kernel), other parts get the new modes and ioctls. */
static void test_register_superset(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	um_op_api(u, 0, 0, 0x1ffff, 3);
	struct um_mapping m = anon_map(R, R + 64 * P);
	const uint64_t IOC2 = 0x1cULL;
	um_op_register(u, 0, R, 64 * P, M_MISSING | M_WP, IOCS, &m, 1);
	um_op_writeprotect(u, 0, R, 16 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	static struct snap s;

	static const uint64_t subsets[] = {M_MISSING, M_WP, M_MISSING | M_WP};
	for (int i = 0; i < 3; i++) {
		snap_take(&s, u);
		uint64_t cnt = u->counters[UM_C_IOC_REGISTER];
		um_op_register(u, 0, R + 8 * P, 16 * P, subsets[i], IOC2, &m, 1);
		ok(snap_same(&s, u) && u->counters[UM_C_IOC_REGISTER] == cnt + 1,
		   "REGISTER %s inside a MISSING|WP range: nothing changes (modes, ioctls, WP bits), "
		   "one call counted",
		   i == 0 ? "MISSING" : i == 1 ? "WP" : "MISSING|WP");
	}

	um_op_register(u, 0, R + 8 * P, 16 * P, M_MINOR, IOC2, &m, 1);
	ok(u->nranges == 3 && u->ranges[0].end == R + 8 * P && u->ranges[1].start == R + 8 * P &&
		   u->ranges[1].end == R + 24 * P && u->ranges[1].modes == M_MINOR &&
		   u->ranges[1].ioctls == IOC2 && u->ranges[2].modes == (M_MISSING | M_WP) &&
		   u->ranges[2].ioctls == IOCS,
	   "REGISTER MINOR (not included): pages 8..23 get MINOR and the new ioctls, the rest stays");
	is_u64(um_wp_count(&u->wp), 16, "all 16 WP bits kept");

	/* One call over mixed parts: MISSING|WP, MINOR, MISSING|WP. */
	um_op_register(u, 0, R, 64 * P, M_MISSING, IOC2, &m, 1);
	ok(u->nranges == 3 && u->ranges[0].modes == (M_MISSING | M_WP) && u->ranges[0].ioctls == IOCS &&
		   u->ranges[1].modes == M_MISSING && u->ranges[1].ioctls == IOC2 &&
		   u->ranges[1].start == R + 8 * P && u->ranges[1].end == R + 24 * P &&
		   u->ranges[2].modes == (M_MISSING | M_WP) && u->ranges[2].ioctls == IOCS,
	   "REGISTER MISSING over MISSING|WP, MINOR, MISSING|WP: only the MINOR part changes");
	is_u64(um_wp_count(&u->wp), 16, "WP bits kept");
	um_op_register(u, 0, R, 64 * P, M_MISSING | M_WP, IOCS, &m, 1);
	ok(u->nranges == 1 && u->ranges[0].start == R && u->ranges[0].end == R + 64 * P &&
		   u->ranges[0].modes == (M_MISSING | M_WP) && u->ranges[0].ioctls == IOCS,
	   "REGISTER MISSING|WP over all of it: the middle gets MISSING|WP, one range again");

	/* A registration reaching past the registered part. */
	struct um_mapping big = anon_map(R, R + 96 * P);
	um_op_register(u, 0, R + 56 * P, 24 * P, M_WP, IOC2, &big, 1);
	ok(u->nranges == 2 && u->ranges[0].end == R + 64 * P &&
		   u->ranges[0].modes == (M_MISSING | M_WP) && u->ranges[1].start == R + 64 * P &&
		   u->ranges[1].end == R + 80 * P && u->ranges[1].modes == M_WP &&
		   u->ranges[1].ioctls == IOC2,
	   "REGISTER WP over pages 56..79: the registered part is kept, the new part gets WP");

	/* A failed REGISTER changes nothing, even where modes differ. */
	snap_take(&s, u);
	um_op_register(u, -EBUSY, R, 80 * P, M_MINOR, IOC2, &big, 1);
	ok(snap_same(&s, u), "a refused REGISTER changes nothing");
	um_state_free(&st);

	/* Shmem: a kept part keeps its file offset; the pieces merge back. */
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	m = shm_map(S, S + 32 * P, 0x100000);
	um_op_register(u, 0, S, 16 * P, M_MISSING | M_MINOR, IOCS, &m, 1);
	um_op_register(u, 0, S + 4 * P, 4 * P, M_MINOR, IOC2, &m, 1);
	ok(u->nranges == 1 && u->ranges[0].start == S && u->ranges[0].end == S + 16 * P &&
		   u->ranges[0].map.offset == 0x100000 && u->ranges[0].ioctls == IOCS &&
		   u->ranges[0].modes == (M_MISSING | M_MINOR),
	   "shmem: REGISTER MINOR inside MISSING|MINOR leaves one range, offset and ioctls unchanged");
	um_op_register(u, 0, S + 4 * P, 20 * P, M_MINOR, IOC2, &m, 1);
	ok(u->nranges == 2 && u->ranges[0].end == S + 16 * P && u->ranges[0].map.offset == 0x100000 &&
		   u->ranges[0].modes == (M_MISSING | M_MINOR) && u->ranges[1].start == S + 16 * P &&
		   u->ranges[1].end == S + 24 * P && u->ranges[1].modes == M_MINOR &&
		   u->ranges[1].map.offset == 0x100000 + 16 * P,
	   "shmem: REGISTER MINOR past the end: the registered part kept, the new part at offset +16 pages");
	um_state_free(&st);

	/* Another uffd's registration is not "this uffd's": each uffd has its
	 * own ranges, so registering u2 does not look at u's. */
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	struct um_uffd *u2 = um_uffd_new(&st, 2, UM_ORIGIN_SYSCALL, 0, ME);
	m = anon_map(R, R + 64 * P);
	um_op_register(u, 0, R, 64 * P, M_MISSING | M_WP, IOCS, &m, 1);
	um_op_register(u2, 0, R, 16 * P, M_MISSING, IOC2, &m, 1);
	ok(u2->nranges == 1 && u2->ranges[0].modes == M_MISSING && u2->ranges[0].ioctls == IOC2 &&
		   u->nranges == 1 && u->ranges[0].modes == (M_MISSING | M_WP),
	   "a second uffd registers with its own modes; the first is untouched");
	um_state_free(&st);

	/* No maps: the same rule over ranges of unknown backing. */
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	um_op_register(u, 0, R, 8 * P, M_MISSING | M_WP, IOCS, NULL, 0);
	um_op_register(u, 0, R + 16 * P, 8 * P, M_MISSING, IOCS, NULL, 0);
	um_op_register(u, 0, R, 32 * P, M_WP, IOC2, NULL, 0);
	ok(u->nranges == 2 && u->ranges[0].start == R && u->ranges[0].end == R + 8 * P &&
		   u->ranges[0].modes == (M_MISSING | M_WP) && u->ranges[1].start == R + 8 * P &&
		   u->ranges[1].end == R + 32 * P && u->ranges[1].modes == M_WP &&
		   u->ranges[1].ioctls == IOC2 && u->ranges[1].map.backing == UM_BACKING_UNKNOWN,
	   "without maps: the MISSING|WP part kept, the MISSING part and the gap get WP");
	um_state_free(&st);

	/* Many kept parts in one call (more than any small fixed buffer). */
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	for (int i = 0; i < 100; i++) {
		um_op_register(u, 0, Q + 2 * (uint64_t)i * P, P, M_MISSING | M_WP, IOCS, NULL, 0);
		um_op_writeprotect(u, 0, Q + 2 * (uint64_t)i * P, P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	}
	um_op_register(u, 0, Q, 200 * P, M_MISSING, IOC2, NULL, 0);
	bool alternate = u->nranges == 200;
	for (uint32_t i = 0; alternate && i < 200; i++)
		alternate = u->ranges[i].start == Q + i * P && u->ranges[i].end == Q + (i + 1) * P &&
			    u->ranges[i].modes == (i % 2 ? M_MISSING : (M_MISSING | M_WP)) &&
			    u->ranges[i].ioctls == (i % 2 ? IOC2 : IOCS);
	ok(alternate, "REGISTER MISSING over 100 separate MISSING|WP pages: all 100 kept, "
		      "the 100 gaps between them get MISSING (200 ranges)");
	is_u64(um_wp_count(&u->wp), 100, "and the 100 WP bits stay");
	um_state_free(&st);
}

static void test_pagefault_msgs(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	struct uffd_msg f = pf_msg(R, 0, 11);
	um_msg(&st, u, &f, 500, NULL);
	f = pf_msg(R + P, UFFD_PAGEFAULT_FLAG_WRITE, 12);
	um_msg(&st, u, &f, 501, NULL);
	f = pf_msg(R + 2 * P, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE, 13);
	um_msg(&st, u, &f, 502, NULL);
	f = pf_msg(R + 3 * P, UFFD_PAGEFAULT_FLAG_MINOR, 14);
	um_msg(&st, u, &f, 503, NULL);
	ok(u->counters[UM_C_FAULT_MISSING] == 2 && u->counters[UM_C_FAULT_WP] == 1 &&
		   u->counters[UM_C_FAULT_MINOR] == 1,
	   "faults counted by kind: 2 MISSING (read, write), 1 WP, 1 MINOR");
	is_int(u->npending, 4, "4 pending faults");
	ok(u->pending[2].address == R + 2 * P &&
		   u->pending[2].flags == (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE) &&
		   u->pending[2].ptid == 13 && u->pending[2].t_ns == 502,
	   "a pending fault keeps address, flags, thread id and time");
	is_u64(u->last_change_ns, 503, "last_change_ns follows the message time");
	f = pf_msg(R + 2 * P, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE, 13);
	um_msg(&st, u, &f, 600, NULL);
	ok(u->npending == 4 && u->pending[2].t_ns == 600,
	   "the same thread faulting again on the same page replaces its entry");
	f = pf_msg(R + 2 * P, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE, 99);
	um_msg(&st, u, &f, 601, NULL);
	is_int(u->npending, 5, "another thread on the same page adds an entry");
	is_u64(u->counters[UM_C_FAULT_WP], 3, "every delivered WP fault is counted");

	for (int i = 0; i < 300; i++) {
		f = pf_msg(Q + (uint64_t)i * P, 0, 1);
		um_msg(&st, u, &f, 1000 + (uint64_t)i, NULL);
	}
	is_int(u->npending, UM_MAX_PENDING, "pending list capped at UM_MAX_PENDING");
	is_u64(u->counters[UM_C_PENDING_DROPPED], 305 - UM_MAX_PENDING, "the overflow is counted");
	ok(u->pending[0].address == Q + (uint64_t)(300 - UM_MAX_PENDING) * P &&
		   u->pending[UM_MAX_PENDING - 1].address == Q + 299 * P,
	   "the oldest faults were dropped, the newest kept in order");
	um_state_free(&st);
}

static void test_fork_msg(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = setup(&st, ME, UFFD_FEATURE_EVENT_FORK);
	struct um_mapping m = shm_map(S, S + 16 * P, 0x4000);
	um_op_register(u, 0, S, 16 * P, M_MINOR, IOCS, &m, 1);
	u->counters[UM_C_IOC_COPY] = 5;
	struct uffd_msg e = ev_msg(UFFD_EVENT_FORK, 17, 0, 0);
	struct um_uffd *c = (struct um_uffd *)1;
	um_msg(&st, u, &e, 9000, &c);
	ok(c != NULL && c != u && st.nuffds == 2 && um_uffd_by_id(&st, c->id) == c,
	   "FORK creates a second uffd in the state");
	if (!c || c == (struct um_uffd *)1) {
		um_state_free(&st);
		return;
	}
	ok(c->id != u->id && c->parent_id == (int32_t)u->id && c->origin == UM_ORIGIN_FORK_EVENT,
	   "new id, parent id, origin fork-event");
	ok(c->nfds == 1 && c->fds[0] == 17 && c->fd_flags[0] == 1 && um_uffd_by_fd(&st, 17) == c,
	   "its fd is the one in the message, CLOEXEC like the parent's creation flags");
	ok(c->nranges == u->nranges && memcmp(c->ranges, u->ranges, u->nranges * sizeof(*u->ranges)) == 0,
	   "ranges cloned");
	ok(c->wp.n == u->wp.n && um_wp_count(&c->wp) == 16 &&
		   memcmp(c->wp.chunks, u->wp.chunks, u->wp.n * sizeof(*u->wp.chunks)) == 0,
	   "WP bits cloned");
	ok(c->ranges != u->ranges && c->wp.chunks != u->wp.chunks && c->pending != u->pending,
	   "deep copy: no shared arrays");
	ok(c->npending == 0 && c->counters[UM_C_IOC_COPY] == 0 && c->mm_pid == 0 && c->ino == 0,
	   "no pending faults, zero counters, memory owner and inode not known yet");
	ok(c->api_done && c->features == u->features && c->features_requested == u->features_requested,
	   "API state inherited");
	ok(u->counters[UM_C_EV_FORK] == 1 && u->npending == 3 && u->nfds == 0,
	   "parent: one FORK event counted, its own state untouched");
	um_wp_set(&c->wp, R, R + 64 * P, false);
	um_unregister(c, R, R + 64 * P);
	ok(um_wp_count(&u->wp) == 16 && u->nranges == 2, "changing the child leaves the parent alone");
	um_state_free(&st);
}

/* REMAP/REMOVE/UNMAP events: applied when the memory belongs to another
 * process (its calls are invisible here), ignored for our own memory (the
 * shim saw the call and applied it via um_mem_*). */
static void test_memory_events(void)
{
	for (int foreign = 1; foreign >= 0; foreign--) {
		struct um_state st;
		um_state_init(&st, ME);
		struct um_uffd *u = setup(&st, foreign ? OTHER : ME,
					  UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
						  UFFD_FEATURE_EVENT_UNMAP);
		struct um_mapping m = shm_map(S, S + 16 * P, 0);
		um_op_register(u, 0, S, 16 * P, M_MISSING | M_WP, IOCS, &m, 1);
		um_op_writeprotect(u, 0, S, 16 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
		const char *who = foreign ? "foreign memory" : "own memory";
		static struct snap s;

		/* REMOVE (MADV_DONTNEED) over both regions. */
		snap_take(&s, u);
		struct uffd_msg e = ev_msg(UFFD_EVENT_REMOVE, R + 4 * P, R + 8 * P, 0);
		um_msg(&st, u, &e, 100, NULL);
		e = ev_msg(UFFD_EVENT_REMOVE, S, S + 4 * P, 0);
		um_msg(&st, u, &e, 101, NULL);
		if (foreign) {
			ok(um_wp_count_range(&u->wp, R + 4 * P, R + 8 * P) == 0 &&
				   um_wp_count(&u->wp) == 12 + 16,
			   "%s: REMOVE drops WP bits of anonymous pages", who);
			ok(um_wp_count_range(&u->wp, S, S + 4 * P) == 4,
			   "%s: REMOVE keeps WP bits of shmem pages", who);
		} else {
			ok(snap_same(&s, u), "%s: REMOVE changes nothing", who);
		}
		is_u64(u->counters[UM_C_EV_REMOVE], 2, "%s: 2 REMOVE events counted", who);

		/* REMAP of the anonymous region to Q. */
		snap_take(&s, u);
		e = ev_msg(UFFD_EVENT_REMAP, R, Q, 64 * P);
		um_msg(&st, u, &e, 102, NULL);
		if (foreign) {
			const struct um_range *r = um_range_find(u, Q);
			ok(r && r->start == Q && r->end == Q + 64 * P && r->modes == (M_MISSING | M_WP) &&
				   r->map.backing == UM_BACKING_ANON && !um_range_find(u, R),
			   "%s: REMAP moves the registration", who);
			ok(um_wp_count_range(&u->wp, Q, Q + 64 * P) == 12 &&
				   um_wp_count_range(&u->wp, R, R + 64 * P) == 0 && um_wp_test(&u->wp, Q) &&
				   !um_wp_test(&u->wp, Q + 4 * P),
			   "%s: REMAP moves the WP bits", who);
		} else {
			ok(snap_same(&s, u), "%s: REMAP changes nothing", who);
		}
		is_u64(u->counters[UM_C_EV_REMAP], 1, "%s: REMAP counted", who);

		/* UNMAP of half the shmem region. */
		struct uffd_msg f = pf_msg(S + 10 * P, 0, 5);
		um_msg(&st, u, &f, 103, NULL);
		snap_take(&s, u);
		e = ev_msg(UFFD_EVENT_UNMAP, S + 8 * P, S + 16 * P, 0);
		um_msg(&st, u, &e, 104, NULL);
		if (foreign) {
			const struct um_range *r = um_range_find(u, S);
			ok(r && r->end == S + 8 * P && !um_range_find(u, S + 8 * P),
			   "%s: UNMAP cuts the registration", who);
			ok(um_wp_count_range(&u->wp, S + 8 * P, S + 16 * P) == 0 &&
				   um_wp_count_range(&u->wp, S, S + 8 * P) == 8 && !pending_has(u, S + 10 * P),
			   "%s: UNMAP drops WP bits and waiting faults there", who);
		} else {
			ok(snap_same(&s, u), "%s: UNMAP changes nothing", who);
		}
		is_u64(u->counters[UM_C_EV_UNMAP], 1, "%s: UNMAP counted", who);
		um_state_free(&st);
	}
}

/* ---- memory calls of the owning process ---- */

static const struct um_range *only_range(const struct um_uffd *u)
{
	return u->nranges == 1 ? &u->ranges[0] : NULL;
}

static void test_mem_unmap_dontneed(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = setup(&st, ME, 0);
	struct um_uffd *o = setup(&st, OTHER, 0);
	um_mem_unmap(&st, ME, R + 8 * P, 8 * P);
	ok(u->nranges == 2 && u->ranges[0].end == R + 8 * P && u->ranges[1].start == R + 16 * P,
	   "munmap in the middle splits the registration");
	ok(um_wp_count(&u->wp) == 8, "and drops the WP bits there");
	ok(o->nranges == 1 && um_wp_count(&o->wp) == 16,
	   "a uffd serving another process's memory is not touched");
	um_mem_unmap(&st, ME, R + 30 * P, 1);
	ok(!um_range_find(u, R + 30 * P) && um_range_find(u, R + 31 * P),
	   "munmap of 1 byte unmaps the whole page");
	um_mem_unmap(&st, ME, R + 40 * P, 8 * P);
	ok(!pending_has(u, R + 40 * P) && pending_has(u, R + 20 * P) && o->npending == 3,
	   "munmap forgets the faults waiting there");
	um_state_free(&st);

	um_state_init(&st, ME);
	u = setup(&st, ME, 0);
	o = setup(&st, OTHER, 0);
	struct um_mapping m = shm_map(S, S + 16 * P, 0);
	um_op_register(u, 0, S, 16 * P, M_WP, IOCS, &m, 1);
	um_op_writeprotect(u, 0, S, 16 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_mem_dontneed(&st, ME, R + 4 * P, 8 * P);
	ok(um_wp_count_range(&u->wp, R, R + 16 * P) == 8 && !um_wp_test(&u->wp, R + 4 * P) &&
		   um_wp_test(&u->wp, R + 12 * P),
	   "MADV_DONTNEED on anonymous memory drops WP bits");
	um_mem_dontneed(&st, ME, S, 16 * P);
	is_u64(um_wp_count_range(&u->wp, S, S + 16 * P), 16, "MADV_DONTNEED on shmem keeps them");
	ok(u->nranges == 2, "MADV_DONTNEED keeps registrations");
	is_u64(um_wp_count(&o->wp), 16, "another process's uffd is not touched");
	um_state_free(&st);
}

static void test_mem_remap(void)
{
	struct um_state st;
	const struct um_range *r;

	/* Moved, UFFD_FEATURE_EVENT_REMAP: registration and bits follow. */
	um_state_init(&st, ME);
	struct um_uffd *u = setup(&st, ME, UFFD_FEATURE_EVENT_REMAP);
	um_mem_remap(&st, ME, R, 64 * P, Q, 64 * P);
	r = only_range(u);
	ok(r && r->start == Q && r->end == Q + 64 * P && r->modes == (M_MISSING | M_WP) &&
		   r->ioctls == IOCS,
	   "mremap move with EVENT_REMAP: the registration moves");
	ok(um_wp_count(&u->wp) == 16 && um_wp_count_range(&u->wp, Q, Q + 16 * P) == 16,
	   "and its WP bits move with it");
	ok(u->npending == 0, "faults waiting at the old place are gone");
	um_state_free(&st);

	/* Moved without EVENT_REMAP: the kernel drops the registration. */
	um_state_init(&st, ME);
	u = setup(&st, ME, 0);
	um_mem_remap(&st, ME, R, 64 * P, Q, 64 * P);
	ok(u->nranges == 0 && um_wp_count(&u->wp) == 0 && u->npending == 0,
	   "mremap move without EVENT_REMAP: registration, WP bits and faults gone");
	um_state_free(&st);

	/* Grown in place. */
	um_state_init(&st, ME);
	u = setup(&st, ME, 0);
	um_mem_remap(&st, ME, R, 64 * P, R, 96 * P);
	r = only_range(u);
	ok(r && r->start == R && r->end == R + 96 * P && r->modes == (M_MISSING | M_WP),
	   "grown in place: the registration grows with the VMA");
	ok(um_wp_count(&u->wp) == 16 && u->npending == 3, "WP bits and faults unchanged");
	/* Shrunk in place. */
	struct uffd_msg f = pf_msg(R + 50 * P, 0, 1);
	um_msg(&st, u, &f, 10, NULL);
	um_op_writeprotect(u, 0, R + 48 * P, 16 * P, UFFDIO_WRITEPROTECT_MODE_WP, NULL);
	um_mem_remap(&st, ME, R, 96 * P, R, 48 * P);
	r = only_range(u);
	ok(r && r->start == R && r->end == R + 48 * P, "shrunk in place: the tail is unregistered");
	ok(um_wp_count(&u->wp) == 16 && !pending_has(u, R + 50 * P) && pending_has(u, R + 40 * P),
	   "the tail's WP bits and faults are gone, the rest stays");
	um_state_free(&st);

	/* Shmem grown in place: the offset continues. */
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	struct um_mapping m = shm_map(S, S + 16 * P, 0x100000);
	um_op_register(u, 0, S, 16 * P, M_MINOR, IOCS, &m, 1);
	um_mem_remap(&st, ME, S, 16 * P, S, 32 * P);
	r = only_range(u);
	ok(r && r->start == S && r->end == S + 32 * P && r->map.offset == 0x100000,
	   "shmem grown in place: one range, offset of its start unchanged");
	um_state_free(&st);

	/* Moved and grown, EVENT_REMAP, anonymous. */
	um_state_init(&st, ME);
	u = setup(&st, ME, UFFD_FEATURE_EVENT_REMAP);
	um_mem_remap(&st, ME, R, 64 * P, Q, 80 * P);
	r = only_range(u);
	ok(r && r->start == Q && r->end == Q + 80 * P && r->modes == (M_MISSING | M_WP),
	   "moved and grown with EVENT_REMAP: one registration over the new size");
	ok(!um_range_find(u, R) && um_wp_count_range(&u->wp, Q, Q + 16 * P) == 16,
	   "nothing left at the old place, WP bits moved");
	um_state_free(&st);

	/* Moved and grown, EVENT_REMAP, shmem: file offsets must stay consistent. */
	um_state_init(&st, ME);
	u = um_uffd_new(&st, 1, UM_ORIGIN_SYSCALL, 0, ME);
	um_op_api(u, 0, UFFD_FEATURE_EVENT_REMAP, UFFD_FEATURE_EVENT_REMAP, 0);
	m = shm_map(S, S + 16 * P, 0x100000);
	um_op_register(u, 0, S, 16 * P, M_MINOR, IOCS, &m, 1);
	um_mem_remap(&st, ME, S, 16 * P, Q, 32 * P);
	r = only_range(u);
	if (!ok(r && r->start == Q && r->end == Q + 32 * P && r->map.offset == 0x100000,
		"shmem moved and grown with EVENT_REMAP: one range, file offset continuous")) {
		for (uint32_t i = 0; i < u->nranges; i++)
			diag("  range %u: [%#llx, %#llx) offset %#llx", i,
			     (unsigned long long)u->ranges[i].start, (unsigned long long)u->ranges[i].end,
			     (unsigned long long)u->ranges[i].map.offset);
		diag("  want: [%#llx, %#llx) offset 0x100000 (the grown part at offset %#llx)",
		     (unsigned long long)Q, (unsigned long long)(Q + 32 * P),
		     (unsigned long long)(0x100000 + 16 * P));
	}
	const struct um_range *tail = um_range_find(u, Q + 16 * P);
	ok(tail && tail->map.offset + (Q + 16 * P - tail->start) == 0x100000 + 16 * P,
	   "the grown part's page 16 maps file offset start + 16 pages");
	um_state_free(&st);

	/* Moved and shrunk, EVENT_REMAP. */
	um_state_init(&st, ME);
	u = setup(&st, ME, UFFD_FEATURE_EVENT_REMAP);
	um_mem_remap(&st, ME, R, 64 * P, Q, 8 * P);
	r = only_range(u);
	ok(r && r->start == Q && r->end == Q + 8 * P && !um_range_find(u, R + 8 * P),
	   "moved and shrunk with EVENT_REMAP: 8 pages registered at the new place, nothing old");
	ok(um_wp_count(&u->wp) == 8 && um_wp_count_range(&u->wp, Q, Q + 8 * P) == 8,
	   "only the kept pages' WP bits survive, at the new place");

	/* Another process's uffd is not touched by our mremap. */
	struct um_uffd *o = setup(&st, OTHER, UFFD_FEATURE_EVENT_REMAP);
	um_mem_remap(&st, ME, R, 64 * P, Q + 64 * P, 64 * P);
	ok(o->nranges == 1 && o->ranges[0].start == R && um_wp_count(&o->wp) == 16,
	   "mremap leaves a foreign-memory uffd alone");
	um_state_free(&st);
}

static void test_fds(void)
{
	struct um_state st;
	um_state_init(&st, ME);
	struct um_uffd *u = um_uffd_new(&st, 11, UM_ORIGIN_SYSCALL, O_CLOEXEC, ME);
	struct um_uffd *v = um_uffd_new(&st, 12, UM_ORIGIN_DEVICE, 0, ME);
	ok(u && v && u->id == 1 && v->id == 2 && st.nuffds == 2, "two uffds, ids 1 and 2");
	is_int(um_fd_add(u, 3, true), 0, "add fd 3");
	is_int(um_fd_add(u, 9, false), 0, "add fd 9 (dup)");
	is_int(um_fd_add(v, 4, false), 0, "add fd 4 to the other uffd");
	ok(um_uffd_by_fd(&st, 3) == u && um_uffd_by_fd(&st, 9) == u && um_uffd_by_fd(&st, 4) == v &&
		   um_uffd_by_fd(&st, 5) == NULL,
	   "um_uffd_by_fd");
	ok(um_uffd_by_ino(&st, 12) == v && um_uffd_by_id(&st, 1) == u && !um_uffd_by_id(&st, 3),
	   "um_uffd_by_ino, um_uffd_by_id");
	um_fd_add(u, 3, false);
	ok(u->nfds == 2 && u->fd_flags[0] == 0, "adding a known fd updates its CLOEXEC flag");
	um_fd_set_cloexec(u, 3, true);
	is_int(u->fd_flags[0], 1, "um_fd_set_cloexec");
	for (int fd = 20; fd < 26; fd++)
		um_fd_add(u, fd, false);
	is_int(u->nfds, UM_MAX_FDS, "UM_MAX_FDS fds");
	is_int(um_fd_add(u, 30, false), -1, "one more is refused");
	for (int fd = 20; fd < 26; fd++)
		um_fd_close(&st, fd);
	ok(um_fd_close(&st, 9) == NULL && u->nfds == 1 && u->fds[0] == 3 && u->fd_flags[0] == 1,
	   "closing one of two fds: NULL, the other fd and its flag remain");
	ok(um_fd_close(&st, 55) == NULL, "closing an unknown fd: NULL");
	ok(um_fd_close(&st, 3) == u && u->nfds == 0, "closing the last fd returns the uffd");
	um_uffd_remove(&st, u);
	ok(st.nuffds == 1 && st.uffds[0] == v, "um_uffd_remove");
	um_state_free(&st);

	/* exec, foreign memory only (no own-memory uffd survives). */
	um_state_init(&st, ME);
	struct um_uffd *a = setup(&st, ME, 0);
	um_fd_add(a, 3, true);
	struct um_uffd *c = setup(&st, OTHER, 0);
	um_fd_add(c, 6, false);
	um_fd_add(c, 7, true);
	uint32_t cid = c->id;
	um_exec(&st);
	c = um_uffd_by_id(&st, cid);
	ok(st.nuffds == 1 && c && um_uffd_by_fd(&st, 3) == NULL, "exec drops a uffd whose only fd is CLOEXEC");
	ok(c && c->nfds == 1 && c->fds[0] == 6 && !um_uffd_by_fd(&st, 7),
	   "exec drops CLOEXEC fds of a surviving uffd");
	ok(c && c->origin == UM_ORIGIN_EXEC, "a survivor's origin becomes survived-exec");
	ok(c && c->nranges == 1 && um_wp_count(&c->wp) == 16 && c->npending == 3,
	   "a uffd serving another process keeps its registrations, WP bits and faults");
	um_state_free(&st);

	um_state_init(&st, ME);
	a = um_uffd_new(&st, 1, UM_ORIGIN_RECEIVED, 0, OTHER);
	c = um_uffd_new(&st, 2, UM_ORIGIN_SYSCALL, 0, ME);
	um_after_fork_child(&st, 321);
	ok(st.pid == 321 && a->origin == UM_ORIGIN_RECEIVED && c->origin == UM_ORIGIN_INHERITED &&
		   c->mm_pid == ME,
	   "after fork: pid changes, origins become inherited (received stays), memory owner stays");
	um_state_free(&st);
}

/* exec with a surviving uffd that served our own (now replaced) memory.  Run
 * in a child with a time limit: a hang here is a model bug to report. */
struct exec_result {
	uint32_t nuffds, nfds, origin, nranges, npending;
	int32_t fd0;
	uint64_t wp;
};

static void test_exec_own_memory(void)
{
	int pfd[2];
	if (pipe(pfd) < 0) {
		fail("pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		alarm(3);
		struct um_state st;
		um_state_init(&st, ME);
		struct um_uffd *b = setup(&st, ME, 0);
		um_fd_add(b, 4, true);
		um_fd_add(b, 5, false);
		um_exec(&st);
		struct exec_result res = {.nuffds = st.nuffds};
		b = um_uffd_by_fd(&st, 5);
		if (b)
			res = (struct exec_result){st.nuffds, (uint32_t)b->nfds, b->origin, b->nranges,
						   b->npending, b->fds[0], um_wp_count(&b->wp)};
		ssize_t w = write(pfd[1], &res, sizeof(res));
		_exit(w == (ssize_t)sizeof(res) ? 0 : 1);
	}
	close(pfd[1]);
	struct exec_result res;
	memset(&res, 0xff, sizeof(res));
	ssize_t n = pid > 0 ? read(pfd[0], &res, sizeof(res)) : -1;
	close(pfd[0]);
	int status = 0;
	if (pid > 0)
		waitpid(pid, &status, 0);
	bool finished = n == (ssize_t)sizeof(res) && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (!ok(finished, "um_exec returns with an own-memory uffd surviving (3 s limit)")) {
		if (WIFSIGNALED(status))
			diag("the child was killed by signal %d (%s)", WTERMSIG(status),
			     WTERMSIG(status) == SIGALRM ? "timed out: um_exec does not return"
							 : strsignal(WTERMSIG(status)));
		return;
	}
	ok(res.nuffds == 1 && res.nfds == 1 && res.fd0 == 5 && res.origin == UM_ORIGIN_EXEC,
	   "exec keeps the uffd with its non-CLOEXEC fd only");
	ok(res.nranges == 0 && res.wp == 0 && res.npending == 0,
	   "own memory was replaced by exec: no registrations, WP bits or faults left");
}

int main(void)
{
	test_failed_calls();
	test_output_field();
	test_fill_ops();
	test_writeprotect();
	test_register_superset();
	test_pagefault_msgs();
	test_fork_msg();
	test_memory_events();
	test_mem_unmap_dontneed();
	test_mem_remap();
	test_fds();
	test_exec_own_memory();
	return done_testing();
}
