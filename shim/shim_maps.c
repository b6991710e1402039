/* shim_maps.c - what backs a range (/proc/self/maps) and which of its pages
 * the kernel holds write-protected (/proc/self/pagemap bit 57).  Parsed by
 * hand into caller memory: no stdio, no malloc. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"

static uint64_t parse_hex(const char **p)
{
	uint64_t v = 0;
	for (;; (*p)++) {
		char c = **p;
		if (c >= '0' && c <= '9')
			v = v * 16 + (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (uint64_t)(c - 'a' + 10);
		else
			return v;
	}
}

static uint64_t parse_dec(const char **p)
{
	uint64_t v = 0;
	while (**p >= '0' && **p <= '9')
		v = v * 10 + (uint64_t)(*(*p)++ - '0');
	return v;
}

static void skip_spaces(const char **p)
{
	while (**p == ' ' || **p == '\t')
		(*p)++;
}

static void classify(struct um_mapping *m);

/* One line of /proc/self/maps into m; returns false if malformed. */
static bool parse_line(const char *p, struct um_mapping *m)
{
	memset(m, 0, sizeof(*m));
	m->start = parse_hex(&p);
	if (*p++ != '-')
		return false;
	m->end = parse_hex(&p);
	skip_spaces(&p);
	m->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
		  (p[2] == 'x' ? PROT_EXEC : 0);
	m->shared = p[3] == 's';
	p += 4;
	skip_spaces(&p);
	m->offset = parse_hex(&p);
	skip_spaces(&p);
	uint64_t maj = parse_hex(&p);
	if (*p++ != ':')
		return false;
	uint64_t min = parse_hex(&p);
	m->dev = makedev(maj, min);
	skip_spaces(&p);
	m->ino = parse_dec(&p);
	skip_spaces(&p);
	size_t n = 0;
	while (p[n] && p[n] != '\n')
		n++;
	if (n >= sizeof(m->name))
		n = sizeof(m->name) - 1;
	memcpy(m->name, p, n);
	m->name[n] = 0;
	classify(m);
	return true;
}

/* What backs a mapping, from its name, sharing and inode. */
static void classify(struct um_mapping *m)
{
	m->pagesize = UM_PAGE_SIZE;
	if (m->ino == 0 && !m->shared)
		m->backing = UM_BACKING_ANON;
	else if (strstr(m->name, "anon_hugepage") || strncmp(m->name, "/dev/hugepages", 14) == 0 ||
		 strstr(m->name, "hugetlb"))
		m->backing = UM_BACKING_HUGETLB;
	else if (m->shared && (strncmp(m->name, "/dev/zero", 9) == 0 ||
			       strncmp(m->name, "/memfd:", 7) == 0 ||
			       strncmp(m->name, "/SYSV", 5) == 0 ||
			       strncmp(m->name, "/dev/shm/", 9) == 0 || m->ino == 0))
		m->backing = UM_BACKING_SHMEM;
	else if (strncmp(m->name, "/memfd:", 7) == 0)
		m->backing = UM_BACKING_SHMEM;
	else
		m->backing = UM_BACKING_FILE;
	if (m->backing == UM_BACKING_HUGETLB)
		m->pagesize = 2 * 1024 * 1024;
}

/* The devices of the kernel's internal hugetlbfs mounts (MFD_HUGETLB and
 * MAP_HUGETLB memory) and their page sizes: a hugetlb memfd mapping is named
 * "/memfd:NAME (deleted)" like a shmem one; only its device tells them
 * apart.  Probed once, on the first REGISTER. */
static struct { uint64_t dev; uint32_t pagesize; } huge_devs[3];
static int nhuge_devs = -1;

static void huge_devs_probe(void)
{
	static const unsigned shifts[] = {0, 21, 30}; /* default, 2 MiB, 1 GiB */
	int n = 0;
	for (int i = 0; i < 3; i++) {
		int fd = (int)RAW2(SYS_memfd_create, "uffdshim-probe",
				   MFD_CLOEXEC | MFD_HUGETLB | (shifts[i] << MAP_HUGE_SHIFT));
		if (fd < 0)
			continue;
		struct stat st;
		struct statfs sf;
		if (RAW2(SYS_fstat, fd, &st) == 0 && RAW2(SYS_fstatfs, fd, &sf) == 0) {
			bool dup = false;
			for (int k = 0; k < n; k++)
				dup |= huge_devs[k].dev == st.st_dev;
			if (!dup) {
				huge_devs[n].dev = st.st_dev;
				huge_devs[n++].pagesize = (uint32_t)sf.f_bsize;
			}
		}
		RAW1(SYS_close, fd);
	}
	__atomic_store_n(&nhuge_devs, n, __ATOMIC_RELEASE);
}

static void hugetlb_by_dev(struct um_mapping *m)
{
	if (m->backing == UM_BACKING_HUGETLB || m->backing == UM_BACKING_ANON)
		return;
	if (__atomic_load_n(&nhuge_devs, __ATOMIC_ACQUIRE) < 0)
		huge_devs_probe();
	for (int k = 0; k < nhuge_devs; k++)
		if (huge_devs[k].dev == m->dev) {
			m->backing = UM_BACKING_HUGETLB;
			m->pagesize = huge_devs[k].pagesize;
		}
}

/* PROCMAP_QUERY (linux/fs.h, 6.11+): one VMA per ioctl on /proc/self/maps,
 * O(log VMAs) instead of reading the whole file for every REGISTER. */
struct procmap_query_compat {
	uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags;
	uint64_t vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
_Static_assert(sizeof(struct procmap_query_compat) == 104, "procmap_query is 104 bytes");
#define PROCMAP_QUERY_COMPAT _IOWR('f', 17, struct procmap_query_compat)
#define PMQ_SHARED 0x08
#define PMQ_COVERING_OR_NEXT 0x10

static int query_unsupported; /* the kernel said ENOTTY/EINVAL once */

/* Fills out[] by queries; returns the count, or -1 if the kernel lacks it. */
static long maps_query(int fd, uint64_t start, uint64_t end, struct um_mapping *out, size_t cap)
{
	size_t n = 0;
	for (uint64_t addr = start; addr < end && n < cap;) {
		char name[sizeof(out->name) + 192];
		struct procmap_query_compat q = {.size = sizeof(q), .query_flags = PMQ_COVERING_OR_NEXT,
						 .query_addr = addr, .vma_name_size = sizeof(name),
						 .vma_name_addr = (uint64_t)name};
		long r = RAW3(SYS_ioctl, fd, PROCMAP_QUERY_COMPAT, &q);
		if (r == -ENOENT)
			break;
		if (r < 0)
			return n == 0 && (r == -ENOTTY || r == -EINVAL) ? -1 : (long)n;
		if (q.vma_start >= end)
			break;
		struct um_mapping *m = &out[n++];
		memset(m, 0, sizeof(*m));
		m->start = q.vma_start;
		m->end = q.vma_end;
		m->prot = (uint32_t)(q.vma_flags & (PROT_READ | PROT_WRITE | PROT_EXEC));
		m->shared = (q.vma_flags & PMQ_SHARED) != 0;
		m->offset = q.vma_offset;
		m->dev = makedev(q.dev_major, q.dev_minor);
		m->ino = q.inode;
		size_t nl = q.vma_name_size ? strnlen(name, sizeof(name)) : 0;
		if (nl >= sizeof(m->name))
			nl = sizeof(m->name) - 1;
		memcpy(m->name, name, nl);
		m->name[nl] = 0;
		classify(m);
		if (q.vma_page_size > UM_PAGE_SIZE) { /* the kernel says: huge pages */
			m->backing = UM_BACKING_HUGETLB;
			m->pagesize = (uint32_t)q.vma_page_size;
		}
		addr = q.vma_end;
	}
	return (long)n;
}

size_t shim_maps_read(uint64_t start, uint64_t end, struct um_mapping *out, size_t cap)
{
	int fd = (int)RAW4(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	if (!__atomic_load_n(&query_unsupported, __ATOMIC_RELAXED)) {
		long q = maps_query(fd, start, end, out, cap);
		if (q >= 0) {
			RAW1(SYS_close, fd);
			return (size_t)q;
		}
		__atomic_store_n(&query_unsupported, 1, __ATOMIC_RELAXED);
	}
	char buf[4096];
	size_t have = 0, n = 0;
	bool done = false;
	while (!done && n < cap) {
		long r = RAW3(SYS_read, fd, buf + have, sizeof(buf) - 1 - have);
		if (r <= 0)
			done = true;
		else
			have += (size_t)r;
		buf[have] = 0;
		char *line = buf;
		char *nl;
		while ((nl = memchr(line, '\n', have - (size_t)(line - buf))) || (done && *line)) {
			if (nl)
				*nl = 0;
			struct um_mapping m;
			if (parse_line(line, &m) && m.end > start && m.start < end && n < cap) {
				hugetlb_by_dev(&m);
				out[n++] = m;
			}
			if (!nl)
				break;
			line = nl + 1;
		}
		size_t rest = have - (size_t)(line - buf);
		if (done)
			break;
		memmove(buf, line, rest);
		have = rest;
		if (have >= sizeof(buf) - 1) /* absurd line: drop it */
			have = 0;
	}
	RAW1(SYS_close, fd);
	return n;
}

int shim_pagemap_fd(void)
{
	int fd = __atomic_load_n(&G.pagemap_fd, __ATOMIC_ACQUIRE);
	if (fd < 0) {
		fd = (int)RAW4(SYS_openat, AT_FDCWD, "/proc/self/pagemap", O_RDONLY | O_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		/* Keep it out of the app's way: move it high. */
		static int lock;
		while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE))
			;
		if (G.pagemap_fd < 0) {
			shim_fd_hide(fd, &G.pagemap_fd);
		} else {
			RAW1(SYS_close, fd);
		}
		fd = G.pagemap_fd;
		__atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
	}
	return fd;
}

int shim_pagemap_wp(uint64_t start, uint64_t npages, uint8_t *wp)
{
	int fd = shim_pagemap_fd();
	if (fd < 0)
		return -1;
	uint64_t ent[512];
	for (uint64_t done = 0; done < npages;) {
		uint64_t n = npages - done < 512 ? npages - done : 512;
		long r = RAW4(SYS_pread64, fd, ent, n * 8,
			      ((start >> UM_PAGE_SHIFT) + done) * 8);
		if (r != (long)(n * 8))
			return -1;
		for (uint64_t i = 0; i < n; i++)
			wp[done + i] = (ent[i] >> PM_BIT_UFFD_WP) & 1;
		done += n;
	}
	return 0;
}
