/* scn_common.h - what the scenario tests (tests/scn_*.c) share: reading
 * `uffd-record status --json` of this process one uffd object at a time (by
 * id or fd, with its ranges, fds, counters), and comparing the model's WP
 * pages with pagemap bit 57.  Header only; include after shim_test.h.  The
 * JSON is the tool's own (recorder/status_print.c), so a small scanner
 * suffices: keys are looked up inside the object's braces. */
#ifndef UFFDSHIM_SCN_COMMON_H
#define UFFDSHIM_SCN_COMMON_H

#ifndef PG
#define PG 4096UL
#endif

/* ---- `status --json` of this process, one uffd object at a time ---- */
static char js[1 << 20];

struct jrange {
	uint64_t start, end, modes, ioctls, pagesize;
	char backing[16];
};
struct juffd {
	int id, parent_id, mm_pid, nfds, fds[8], cloexec[8], nranges, npending;
	bool nonblock, api_done;
	char origin[32];
	uint64_t ino, features_requested, wp_pages;
	struct jrange r[32];
	uint64_t pend_addr[16], pend_flags[16];
	const char *obj, *end; /* the object's text inside js */
};

/* Pointer just past "key": inside [s, e), or NULL. */
__attribute__((unused)) static const char *jkey(const char *s, const char *e, const char *key)
{
	char pat[64];
	int n = snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = s ? memmem(s, (size_t)(e - s), pat, (size_t)n) : NULL;
	return p ? p + n : NULL;
}
__attribute__((unused)) static long long jnum(const char *s, const char *e, const char *key)
{
	const char *p = jkey(s, e, key);
	return p ? strtoll(p + (*p == '"'), NULL, 0) : -1;
}

__attribute__((unused)) static int js_load(const char *label)
{
	int rc = shim_status_json_self(js, sizeof(js));
	if (rc)
		diag("%s: status --json exited %d: %s", label, rc, js);
	return rc;
}

__attribute__((unused)) static int js_nuffds(void)
{
	return (int)shim_json_count(js, "{\"id\":");
}

/* The nth uffd object (0-based) of the last js_load(). */
__attribute__((unused)) static bool ju_nth(int nth, struct juffd *u)
{
	memset(u, 0, sizeof(*u));
	const char *s = strstr(js, "{\"id\":");
	for (int i = 0; s && i < nth; i++)
		s = strstr(s + 1, "{\"id\":");
	if (!s)
		return false;
	const char *e = strstr(s + 1, "{\"id\":");
	if (!e && !(e = strstr(s, "],\"verify\"")))
		e = s + strlen(s);
	u->obj = s;
	u->end = e;
	u->id = (int)jnum(s, e, "id");
	u->ino = (uint64_t)jnum(s, e, "ino");
	u->parent_id = (int)jnum(s, e, "parent_id");
	u->mm_pid = (int)jnum(s, e, "mm_pid");
	const char *p = jkey(s, e, "origin");
	if (p)
		sscanf(p, "\"%31[^\"]\"", u->origin);
	p = jkey(s, e, "nonblock");
	u->nonblock = p && *p == 't';
	p = jkey(s, e, "api_done");
	u->api_done = p && *p == 't';
	u->features_requested = (uint64_t)jnum(s, e, "features_requested");
	u->wp_pages = (uint64_t)jnum(s, e, "wp_pages");
	const char *fe = jkey(s, e, "create_flags");
	for (p = jkey(s, e, "fds"); p && u->nfds < 8 && (p = jkey(p, fe, "fd"));) {
		u->fds[u->nfds] = atoi(p);
		const char *c = jkey(p, fe, "cloexec");
		u->cloexec[u->nfds++] = c && *c == 't';
	}
	const char *rs = jkey(s, e, "ranges"), *re = jkey(s, e, "wp_pages");
	for (p = rs; p && u->nranges < 32 && (p = jkey(p, re, "start"));) {
		const char *q = strstr(p, "\"pagesize\":");
		struct jrange *r = &u->r[u->nranges++];
		r->start = (uint64_t)strtoull(p, NULL, 10);
		r->end = (uint64_t)jnum(p, q, "end");
		r->modes = (uint64_t)jnum(p, q, "modes");
		r->ioctls = (uint64_t)jnum(p, q, "ioctls");
		r->pagesize = (uint64_t)jnum(p, q + 20, "pagesize");
		const char *b = jkey(p, q, "backing");
		if (b)
			sscanf(b, "\"%15[^\"]\"", r->backing);
		p = q;
	}
	const char *ps = jkey(s, e, "pending"), *pe = jkey(s, e, "counters");
	for (p = ps; p && u->npending < 16 && (p = jkey(p, pe, "address"));) {
		u->pend_addr[u->npending] = strtoull(p, NULL, 10);
		u->pend_flags[u->npending++] = (uint64_t)jnum(p, pe, "flags");
	}
	return true;
}

/* The uffd that lists fd among its fds. */
__attribute__((unused)) static bool ju_fd(int fd, struct juffd *u)
{
	for (int i = 0; ju_nth(i, u); i++)
		for (int j = 0; j < u->nfds; j++)
			if (u->fds[j] == fd)
				return true;
	memset(u, 0, sizeof(*u));
	return false;
}

/* A counter of the uffd (0 when absent: the JSON lists non-zero ones). */
__attribute__((unused)) static long long ju_counter(const struct juffd *u, const char *name)
{
	const char *c = jkey(u->obj, u->end, "counters");
	long long v = c ? jnum(c, u->end, name) : -1;
	return v < 0 ? 0 : v;
}

/* uffd-wp bits (pagemap bit 57) of npages pages at addr. */
__attribute__((unused)) static int pm_wp_count(const void *addr, int npages)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), n = 0;
	for (int i = 0; fd >= 0 && i < npages; i++) {
		uint64_t e = 0;
		if (pread(fd, &e, 8, ((uint64_t)addr / PG + i) * 8) == 8)
			n += (e >> PM_BIT_UFFD_WP) & 1;
	}
	if (fd >= 0)
		close(fd);
	return n;
}

/* The model's WP pages in [addr, addr + npages) = the kernel's = want. */
__attribute__((unused)) static void wp_matches(int uffd, const void *addr, int npages, int want, const char *label)
{
	struct juffd u;
	int k = pm_wp_count(addr, npages), m = -1;
	if (js_load(label) == 0 && ju_fd(uffd, &u)) {
		m = 0;
		const char *p = jkey(u.obj, u.end, "wp_runs");
		while (p && (p = jkey(p, u.end, "start"))) {
			uint64_t s = strtoull(p, NULL, 10), e = (uint64_t)jnum(p, u.end, "end");
			uint64_t lo = (uint64_t)addr, hi = lo + npages * PG;
			if (s < lo)
				s = lo;
			if (e > hi)
				e = hi;
			if (e > s)
				m += (int)((e - s) / PG);
			p = jkey(p, u.end, "pages");
		}
	}
	is_int(k, want, "%s: kernel pagemap has %d WP pages", label, want);
	is_int(m, k, "%s: model WP pages = kernel pagemap WP pages", label);
}

#endif
