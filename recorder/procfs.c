/* procfs.c - parsers for /proc/PID/{smaps,maps,pagemap,fdinfo,fd,status}.
 * See procfs.h.  Nothing read from /proc is trusted to be well formed: a line
 * that does not parse is an error naming the line, never a crash. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "procfs.h"

char *pf_slurp(const char *path, size_t *lenp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	for (;;) {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				close(fd);
				errno = ENOMEM;
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			close(fd);
			errno = e;
			return NULL;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	if (lenp)
		*lenp = len;
	return buf;
}

void pf_vmas_free(struct pf_vmas *vs)
{
	free(vs->v);
	memset(vs, 0, sizeof(*vs));
}

static int vmas_push(struct pf_vmas *vs, const struct pf_vma *v)
{
	if (vs->n == vs->cap) {
		size_t ncap = vs->cap ? vs->cap * 2 : 64;
		struct pf_vma *nv = realloc(vs->v, ncap * sizeof(*nv));
		if (!nv)
			return -1;
		vs->v = nv;
		vs->cap = ncap;
	}
	vs->v[vs->n++] = *v;
	return 0;
}

/* Parse an unsigned hex number at *p (at least one digit). */
static bool hex_at(const char **p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	const char *s = *p;
	int n = 0;
	while (s < end && isxdigit((unsigned char)*s)) {
		if (n >= 16)
			return false;
		int d = isdigit((unsigned char)*s) ? *s - '0' : (tolower((unsigned char)*s) - 'a' + 10);
		v = (v << 4) | (uint64_t)d;
		s++;
		n++;
	}
	if (!n)
		return false;
	*p = s;
	*out = v;
	return true;
}

static bool dec_at(const char **p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	const char *s = *p;
	int n = 0;
	while (s < end && isdigit((unsigned char)*s)) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
		s++;
		n++;
	}
	if (!n)
		return false;
	*p = s;
	*out = v;
	return true;
}

static bool skip_spaces(const char **p, const char *end)
{
	const char *s = *p;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	bool any = s != *p;
	*p = s;
	return any;
}

int pf_parse_vma_header(const char *line, size_t len, struct pf_vma *v)
{
	const char *p = line, *end = line + len;
	uint64_t a, b, off, maj, min, ino;
	memset(v, 0, sizeof(*v));
	if (!hex_at(&p, end, &a) || p >= end || *p++ != '-' || !hex_at(&p, end, &b) ||
	    !skip_spaces(&p, end))
		return -1;
	if (end - p < 4)
		return -1;
	const char *perms = p;
	if ((perms[0] != 'r' && perms[0] != '-') || (perms[1] != 'w' && perms[1] != '-') ||
	    (perms[2] != 'x' && perms[2] != '-') || (perms[3] != 'p' && perms[3] != 's'))
		return -1;
	p += 4;
	if (!skip_spaces(&p, end) || !hex_at(&p, end, &off) || !skip_spaces(&p, end) ||
	    !hex_at(&p, end, &maj) || p >= end || *p++ != ':' || !hex_at(&p, end, &min) ||
	    !skip_spaces(&p, end) || !dec_at(&p, end, &ino))
		return -1;
	if (a > b || maj > UINT32_MAX || min > UINT32_MAX)
		return -1;
	if (p < end && *p != ' ' && *p != '\t')
		return -1;
	skip_spaces(&p, end);
	v->start = a;
	v->end = b;
	v->prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
		  (perms[2] == 'x' ? PROT_EXEC : 0);
	v->shared = perms[3] == 's';
	v->offset = off;
	v->dev_major = (uint32_t)maj;
	v->dev_minor = (uint32_t)min;
	v->ino = ino;
	size_t nl = (size_t)(end - p);
	while (nl && (p[nl - 1] == '\n' || p[nl - 1] == '\r'))
		nl--;
	if (nl >= sizeof(v->name))
		nl = sizeof(v->name) - 1;
	memcpy(v->name, p, nl);
	v->name[nl] = 0;
	return 0;
}

uint32_t pf_parse_vmflags(const char *value, size_t len)
{
	uint32_t f = 0;
	const char *p = value, *end = value + len;
	while (p < end) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		const char *t = p;
		while (p < end && !isspace((unsigned char)*p))
			p++;
		if (p - t != 2)
			continue;
		if (t[0] == 'u' && t[1] == 'm')
			f |= PF_VM_UM;
		else if (t[0] == 'u' && t[1] == 'w')
			f |= PF_VM_UW;
		else if (t[0] == 'u' && t[1] == 'i')
			f |= PF_VM_UI;
	}
	return f;
}

void pf_uffd_flags_str(uint32_t flags, char *buf, size_t len)
{
	static const char *const names[] = {"um", "uw", "ui"};
	size_t off = 0;
	buf[0] = 0;
	for (int i = 0; i < 3; i++) {
		if (!(flags & (1u << i)))
			continue;
		int w = snprintf(buf + off, len > off ? len - off : 0, "%s%s", off ? "|" : "",
				 names[i]);
		if (w < 0 || (size_t)w >= len - off)
			return;
		off += (size_t)w;
	}
	if (!off)
		snprintf(buf, len, "none");
}

/* Is the line (without newline) a VMA header?  Header lines start with a hex
 * digit and hold '-' before the first space; "Key: value" lines start with
 * a capital letter key and a colon. */
static bool is_header_line(const char *l, size_t n)
{
	if (!n || !isxdigit((unsigned char)l[0]))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (l[i] == '-')
			return true;
		if (!isxdigit((unsigned char)l[i]))
			return false;
	}
	return false;
}

int pf_parse_smaps(const char *text, size_t len, struct pf_vmas *out, char *err,
		   size_t errlen)
{
	memset(out, 0, sizeof(*out));
	const char *p = text, *end = text + len;
	unsigned lineno = 0;
	struct pf_vma cur;
	bool have = false;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		size_t n = (size_t)(le - p);
		lineno++;
		if (n == 0) {
			p = nl ? nl + 1 : end;
			continue;
		}
		if (is_header_line(p, n)) {
			if (have && vmas_push(out, &cur) < 0)
				goto oom;
			if (pf_parse_vma_header(p, n, &cur) < 0) {
				if (err)
					snprintf(err, errlen, "line %u is not a mapping: \"%.*s\"",
						 lineno, (int)(n > 80 ? 80 : n), p);
				pf_vmas_free(out);
				errno = EINVAL;
				return -1;
			}
			have = true;
		} else {
			const char *colon = memchr(p, ':', n);
			if (!colon || !have) {
				if (err)
					snprintf(err, errlen, "line %u is neither a mapping nor a "
						 "\"Key: value\" line: \"%.*s\"", lineno,
						 (int)(n > 80 ? 80 : n), p);
				pf_vmas_free(out);
				errno = EINVAL;
				return -1;
			}
			size_t kl = (size_t)(colon - p);
			const char *val = colon + 1;
			size_t vl = (size_t)(le - val);
			if (kl == 7 && !memcmp(p, "VmFlags", 7)) {
				cur.has_vmflags = true;
				cur.uffd_flags = pf_parse_vmflags(val, vl);
				while (vl && isspace((unsigned char)*val)) {
					val++;
					vl--;
				}
				while (vl && isspace((unsigned char)val[vl - 1]))
					vl--;
				if (vl >= sizeof(cur.vmflags))
					vl = sizeof(cur.vmflags) - 1;
				memcpy(cur.vmflags, val, vl);
				cur.vmflags[vl] = 0;
			} else if (kl == 14 && !memcmp(p, "KernelPageSize", 14)) {
				const char *q = val;
				uint64_t kb;
				skip_spaces(&q, le);
				if (dec_at(&q, le, &kb))
					cur.kernel_page_size = kb * 1024;
			}
		}
		p = nl ? nl + 1 : end;
	}
	if (have && vmas_push(out, &cur) < 0)
		goto oom;
	return 0;
oom:
	if (err)
		snprintf(err, errlen, "out of memory");
	pf_vmas_free(out);
	errno = ENOMEM;
	return -1;
}

static int read_vmas(pid_t pid, const char *file, struct pf_vmas *out, char *err,
		     size_t errlen)
{
	char path[64];
	size_t len;
	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	memset(out, 0, sizeof(*out));
	char *text = pf_slurp(path, &len);
	if (!text) {
		int e = errno;
		if (err)
			snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		errno = e;
		return -1;
	}
	char e2[200] = "";
	int rc = pf_parse_smaps(text, len, out, e2, sizeof(e2));
	free(text);
	if (rc < 0 && err)
		snprintf(err, errlen, "%s: %s", path, e2);
	return rc;
}

int pf_read_smaps(pid_t pid, struct pf_vmas *out, char *err, size_t errlen)
{
	return read_vmas(pid, "smaps", out, err, errlen);
}

int pf_read_maps(pid_t pid, struct pf_vmas *out, char *err, size_t errlen)
{
	return read_vmas(pid, "maps", out, err, errlen);
}

int pf_maps_has_lib(const struct pf_vmas *maps, const char *lib)
{
	size_t ll = strlen(lib);
	for (size_t i = 0; i < maps->n; i++) {
		const char *name = maps->v[i].name;
		if (name[0] != '/')
			continue;
		const char *base = strrchr(name, '/') + 1;
		size_t bl = strlen(base);
		static const char del[] = " (deleted)";
		if (bl >= sizeof(del) - 1 && !strcmp(base + bl - (sizeof(del) - 1), del))
			bl -= sizeof(del) - 1;
		if (bl == ll && !memcmp(base, lib, ll))
			return 1;
	}
	return 0;
}

/* ---- pagemap ---- */

int pf_pagemap_open(pid_t pid, char *err, size_t errlen)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && err) {
		int e = errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
		errno = e;
	}
	return fd;
}

int pf_pagemap_read(int fd, uint64_t start, uint64_t npages, uint64_t *out, char *err,
		    size_t errlen)
{
	uint64_t off = (start >> 12) * 8, want = npages * 8, got = 0;
	if (start & 4095 || npages > (UINT64_MAX >> 4)) {
		if (err)
			snprintf(err, errlen, "pagemap read of %#" PRIx64 " (+%" PRIu64
				 " pages) is not page aligned", start, npages);
		errno = EINVAL;
		return -1;
	}
	while (got < want) {
		ssize_t r = pread(fd, (char *)out + got, want - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			if (err)
				snprintf(err, errlen, "pagemap read at %#" PRIx64 " (%" PRIu64
					 " pages) failed: %s", start + got / 8 * 4096,
					 (want - got) / 8, r < 0 ? strerror(e) : "end of file");
			errno = e;
			return -1;
		}
		got += (uint64_t)r;
	}
	return 0;
}

#define PM_FRAME_MASK ((1ull << 55) - 1)
#define PM_SWP_TYPE_BITS 5
#define PM_SWP_TYPE_PTE_MARKER 31 /* the kernel's SWP_PTE_MARKER: the last type */

bool pf_pm_holds_page_given(uint64_t e, bool system_has_swap)
{
	if (e >> 63 & 1) /* present */
		return true;
	if (!(e >> 62 & 1)) /* not a swap entry either */
		return false;
	uint64_t frame = e & PM_FRAME_MASK;
	if (frame) /* visible: swap type in the low bits */
		return (frame & ((1u << PM_SWP_TYPE_BITS) - 1)) != PM_SWP_TYPE_PTE_MARKER;
	return system_has_swap;
}

/* SwapTotal of /proc/meminfo is not 0 (read once). */
static bool system_has_swap(void)
{
	static int known = -1;
	if (known >= 0)
		return known;
	FILE *f = fopen("/proc/meminfo", "re");
	unsigned long long kb = 1;
	char line[128];
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "SwapTotal: %llu", &kb) == 1)
			break;
	if (f)
		fclose(f);
	known = kb != 0;
	return known;
}

bool pf_pm_holds_page(uint64_t e)
{
	return pf_pm_holds_page_given(e, (e >> 62 & 1) && !(e >> 63 & 1) ? system_has_swap() : true);
}

/* ---- fdinfo ---- */

/* Find "key:" at the start of a line; returns a pointer after the colon and
 * leading blanks, or NULL.  *le gets the end of the line. */
static const char *find_key(const char *text, size_t len, const char *key, const char **le)
{
	size_t kl = strlen(key);
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		if ((size_t)(e - p) > kl && !memcmp(p, key, kl) && p[kl] == ':') {
			const char *v = p + kl + 1;
			skip_spaces(&v, e);
			*le = e;
			return v;
		}
		p = nl ? nl + 1 : end;
	}
	return NULL;
}

int pf_parse_fdinfo(const char *text, size_t len, struct pf_fdinfo *out)
{
	const char *le, *v;
	uint64_t x;
	memset(out, 0, sizeof(*out));
	if ((v = find_key(text, len, "pos", &le)) && dec_at(&v, le, &x))
		out->pos = x;
	v = find_key(text, len, "flags", &le);
	if (!v)
		return -1;
	{
		/* octal */
		uint64_t f = 0;
		int n = 0;
		while (v < le && *v >= '0' && *v <= '7' && n < 12) {
			f = f * 8 + (uint64_t)(*v - '0');
			v++;
			n++;
		}
		if (!n || f > UINT32_MAX)
			return -1;
		out->flags = (uint32_t)f;
		out->has_flags = true;
	}
	if ((v = find_key(text, len, "mnt_id", &le)) && dec_at(&v, le, &x))
		out->mnt_id = (int)x;
	if ((v = find_key(text, len, "ino", &le)) && dec_at(&v, le, &x)) {
		out->ino = x;
		out->has_ino = true;
	}
	bool hp = false, ht = false;
	if ((v = find_key(text, len, "pending", &le)) && dec_at(&v, le, &x)) {
		out->pending = x;
		hp = true;
	}
	if ((v = find_key(text, len, "total", &le)) && dec_at(&v, le, &x)) {
		out->total = x;
		ht = true;
	}
	if ((v = find_key(text, len, "API", &le))) {
		uint64_t api, feat, ioc;
		if (hex_at(&v, le, &api) && v < le && *v++ == ':' && hex_at(&v, le, &feat) &&
		    v < le && *v++ == ':' && hex_at(&v, le, &ioc) && api <= UINT32_MAX) {
			out->api = (uint32_t)api;
			out->api_features = feat;
			out->api_ioctls = ioc;
			out->has_api = true;
		}
	}
	out->has_uffd = hp && ht && out->has_api;
	return 0;
}

int pf_read_fdinfo(pid_t pid, int fd, struct pf_fdinfo *out, char *err, size_t errlen)
{
	char path[64];
	size_t len;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	char *text = pf_slurp(path, &len);
	if (!text) {
		int e = errno;
		if (err)
			snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		errno = e;
		return -1;
	}
	int rc = pf_parse_fdinfo(text, len, out);
	free(text);
	if (rc < 0) {
		if (err)
			snprintf(err, errlen, "%s has no \"flags:\" line", path);
		errno = EINVAL;
	}
	return rc;
}

/* ---- fds ---- */

int pf_fd_link(pid_t pid, int fd, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	if (len == 0) {
		errno = EINVAL;
		return -1;
	}
	ssize_t r = readlink(path, buf, len - 1);
	if (r < 0)
		return -1;
	buf[r] = 0;
	return 0;
}

int pf_fd_ino(pid_t pid, int fd, uint64_t *ino)
{
	char path[64];
	struct stat sb;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	if (stat(path, &sb) < 0)
		return -1;
	*ino = (uint64_t)sb.st_ino;
	return 0;
}

static int int_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

int pf_list_fds(pid_t pid, int **fdsp, size_t *np, char *err, size_t errlen)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	*fdsp = NULL;
	*np = 0;
	DIR *d = opendir(path);
	if (!d) {
		int e = errno;
		if (err)
			snprintf(err, errlen, "cannot list %s: %s", path, strerror(e));
		errno = e;
		return -1;
	}
	size_t n = 0, cap = 0;
	int *fds = NULL;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *s = de->d_name;
		if (!isdigit((unsigned char)s[0]))
			continue;
		char *e;
		long v = strtol(s, &e, 10);
		if (*e || v < 0 || v > INT32_MAX)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			int *nf = realloc(fds, cap * sizeof(*nf));
			if (!nf) {
				free(fds);
				closedir(d);
				if (err)
					snprintf(err, errlen, "out of memory");
				errno = ENOMEM;
				return -1;
			}
			fds = nf;
		}
		fds[n++] = (int)v;
	}
	closedir(d);
	if (n)
		qsort(fds, n, sizeof(*fds), int_cmp);
	*fdsp = fds;
	*np = n;
	return 0;
}

/* ---- status ---- */

int pf_parse_status(const char *text, size_t len, struct pf_status *out)
{
	const char *le, *v;
	uint64_t x;
	memset(out, 0, sizeof(*out));
	if ((v = find_key(text, len, "Name", &le))) {
		size_t n = (size_t)(le - v);
		if (n >= sizeof(out->name))
			n = sizeof(out->name) - 1;
		memcpy(out->name, v, n);
		out->name[n] = 0;
	}
	if ((v = find_key(text, len, "State", &le)) && v < le)
		out->state = *v;
	if ((v = find_key(text, len, "Tgid", &le)) && dec_at(&v, le, &x))
		out->tgid = (pid_t)x;
	if ((v = find_key(text, len, "Uid", &le)) && dec_at(&v, le, &x)) {
		out->uid = out->euid = (uid_t)x;
		skip_spaces(&v, le);
		if (dec_at(&v, le, &x))
			out->euid = (uid_t)x;
	}
	if ((v = find_key(text, len, "NSpid", &le))) {
		while (v < le) {
			if (!dec_at(&v, le, &x))
				break;
			out->nspid_inner = (pid_t)x;
			skip_spaces(&v, le);
		}
	}
	if (!out->nspid_inner)
		out->nspid_inner = out->tgid;
	return out->state ? 0 : -1;
}

int pf_read_status(pid_t pid, struct pf_status *out)
{
	char path[64];
	size_t len;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	memset(out, 0, sizeof(*out));
	char *text = pf_slurp(path, &len);
	if (!text)
		return -1;
	int rc = pf_parse_status(text, len, out);
	free(text);
	if (rc < 0)
		errno = EINVAL;
	return rc;
}
