/* shim_restore.c - relaunch restore: with UFFDSHIM_RESTORE=DIR (set by
 * uffd-replay) the shim recreates, before the program's main() runs, the
 * checkpointed memory of registered ranges, the uffds at their fd numbers,
 * their registrations and write-protection.  Everything is checked first
 * (image, addresses, fd numbers, kernel features); if anything is wrong the
 * process exits with a message and main() never runs half-restored. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"
#include "uffd_compat.h"
#include "uffdshim.h"
#include "um_image.h"

#define MAX_RESTORED 64

static struct {
	int n;
	struct uffdshim_restored_uffd u[MAX_RESTORED];
} restored;

static void *read_file(const char *dir, const char *name, size_t *len, bool required)
{
	char path[600];
	size_t dl = strlen(dir), nl = strlen(name);
	if (dl + nl + 2 > sizeof(path))
		SHIM_REFUSE(shim_msg_str(&m_, "image path too long"));
	memcpy(path, dir, dl);
	path[dl] = '/';
	memcpy(path + dl + 1, name, nl + 1);
	int fd = (int)RAW4(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		if (!required)
			return NULL;
		SHIM_REFUSE(shim_msg_str(&m_, path); shim_msg_str(&m_, ": cannot open (errno "); shim_msg_dec(&m_, (uint64_t)-fd);
		       shim_msg_str(&m_, ")"));
	}
	struct stat st;
	RAW2(SYS_fstat, fd, &st);
	*len = (size_t)st.st_size;
	void *buf = um_zalloc(*len ? *len : 1);
	if (!buf || RAW4(SYS_pread64, fd, buf, *len, 0) != (long)*len)
		SHIM_REFUSE(shim_msg_str(&m_, path); shim_msg_str(&m_, ": read failed"));
	RAW1(SYS_close, fd);
	return buf;
}

/* The mappings of this process, read once before anything is mapped (the
 * ranges are checked against it: one read of /proc/self/maps, not one per
 * range). */
static struct um_mapping *maps_now;
static size_t nmaps_now;
#define MAPS_CAP 8192

/* Does [start, end) overlap any mapping of this process? */
static bool address_taken(uint64_t start, uint64_t end, struct um_mapping *hit)
{
	if (!maps_now) {
		maps_now = um_zalloc(MAPS_CAP * sizeof(*maps_now));
		if (maps_now)
			nmaps_now = shim_maps_read(0, ~0ULL, maps_now, MAPS_CAP);
	}
	if (!maps_now || nmaps_now == MAPS_CAP) { /* fall back: ask for this range */
		struct um_mapping maps[4];
		size_t n = shim_maps_read(start, end, maps, 4);
		if (n)
			*hit = maps[0];
		return n > 0;
	}
	size_t lo = 0, hi = nmaps_now; /* first mapping that ends after start */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (maps_now[mid].end <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < nmaps_now && maps_now[lo].start < end) {
		*hit = maps_now[lo];
		return true;
	}
	return false;
}

/* Move an fd of the restore to a high number: it must not sit on a number
 * that a restored uffd is to take (nor make that number look used). */
static int fd_out_of_way(int fd)
{
	long hi = RAW3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 940);
	if (hi < 0)
		return fd;
	RAW1(SYS_close, fd);
	return (int)hi;
}

static int open_pages(const char *dir)
{
	char path[600];
	size_t dl = strlen(dir);
	memcpy(path, dir, dl);
	path[dl] = '/';
	strcpy(path + dl + 1, UMI_PAGES_FILE);
	int fd = (int)RAW4(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	return fd < 0 ? fd : fd_out_of_way(fd);
}

/* Map one registered range at its address with its backing. */
static void map_range(const struct um_range *r)
{
	uint64_t len = r->end - r->start;
	int prot = (int)r->map.prot | PROT_WRITE; /* writable while filling */
	long p;
	if (r->map.backing == UM_BACKING_ANON || r->map.backing == UM_BACKING_UNKNOWN ||
	    (r->map.backing == UM_BACKING_HUGETLB && !r->map.shared)) {
		int fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
		if (r->map.backing == UM_BACKING_HUGETLB)
			fl |= MAP_HUGETLB;
		p = RAW6(SYS_mmap, r->start, len, prot, fl, -1, 0);
	} else if (r->map.backing == UM_BACKING_SHMEM || r->map.backing == UM_BACKING_HUGETLB) {
		/* Shared memory comes back as a new memfd holding the range. */
		unsigned mfl = r->map.backing == UM_BACKING_HUGETLB ? MFD_HUGETLB : 0;
		int fd = (int)RAW2(SYS_memfd_create, "uffdshim-restored", mfl);
		if (fd < 0 || RAW2(SYS_ftruncate, fd, len) < 0)
			SHIM_REFUSE(shim_msg_str(&m_, "cannot create shared memory for range "); shim_msg_hex(&m_, r->start));
		p = RAW6(SYS_mmap, r->start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
		RAW1(SYS_close, fd);
	} else {
		int fd = (int)RAW4(SYS_openat, AT_FDCWD, r->map.name,
				   (r->map.prot & PROT_WRITE) && r->map.shared ? O_RDWR : O_RDONLY, 0);
		if (fd < 0)
			SHIM_REFUSE(shim_msg_str(&m_, "file "); shim_msg_str(&m_, r->map.name);
			       shim_msg_str(&m_, " backing range "); shim_msg_hex(&m_, r->start);
			       shim_msg_str(&m_, " cannot be opened"));
		p = RAW6(SYS_mmap, r->start, len, r->map.shared ? (int)r->map.prot : prot,
			 (r->map.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE, fd,
			 r->map.offset);
		RAW1(SYS_close, fd);
	}
	if (p != (long)r->start)
		SHIM_REFUSE(shim_msg_str(&m_, "cannot map range "); shim_msg_hex(&m_, r->start); shim_msg_str(&m_, "-");
		       shim_msg_hex(&m_, r->end); shim_msg_str(&m_, " (errno "); shim_msg_dec(&m_, (uint64_t)-p);
		       shim_msg_str(&m_, ")"));
}

/* Runs in private anonymous ranges are filled after REGISTER, with
 * UFFDIO_COPY straight from the pages file (fill_by_copy): the kernel
 * allocates each page and copies into it, with no zeroing pass and no page
 * fault per page.  The others (shmem, hugetlb, files) are read in before the
 * range is registered. */
static bool filled_by_copy(const struct um_state *st, const struct umi_run *r)
{
	const struct um_uffd *u = um_uffd_by_id(st, r->uffd_id);
	const struct um_range *rg = u ? um_range_find(u, r->addr) : NULL;
	return rg && rg->map.backing == UM_BACKING_ANON && !rg->map.shared;
}

/* ---- filling memory on two threads ----
 *
 * The page data is hashed (verify_runs) and copied in (fill_by_copy) by the
 * calling thread and one helper thread, each taking half of the bytes: the
 * hash, the kernel's page allocation and copy of UFFDIO_COPY, and the faults
 * on the mapped pages file then use both CPUs of a small machine.  The helper
 * runs on a stack of our own (mmap, unmapped after the join: glibc caches
 * only the stacks it allocated), with every signal blocked, and is always
 * joined before the function returns: no thread of the restore survives
 * into the program.  Failures are reported by the calling thread after the
 * join. */

#define HELPER_STACK (256u << 10)
#define HELPER_MIN_PAGES 256 /* less work than this is done on one thread */

struct fill_job {
	const struct umi_image *img;
	const struct um_state *st;
	const uint8_t *src;
	const struct um_uffd *u; /* fill_by_copy: the uffd and its fd */
	int fd;
	size_t from, to;         /* runs [from, to) */
	size_t bad;              /* the first run that failed, or (size_t)-1 */
	long err;                /* its errno (copy), 0 for a checksum mismatch */
};

/* Run fn on jobs[0] here and on jobs[1] in a helper thread (or here too when
 * no thread can be made); returns once both are done. */
static void run_on_two(void *(*fn)(void *), struct fill_job jobs[2])
{
	if (jobs[1].from == jobs[1].to) {
		fn(&jobs[0]);
		return;
	}
	void *stack = (void *)RAW6(SYS_mmap, 0, HELPER_STACK, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	bool have_stack = (unsigned long)stack < -4095UL;
	pthread_t t;
	pthread_attr_t attr;
	bool threaded = false;
	if (have_stack && pthread_attr_init(&attr) == 0) {
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		threaded = pthread_attr_setstack(&attr, stack, HELPER_STACK) == 0 &&
			   pthread_create(&t, &attr, fn, &jobs[1]) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		pthread_attr_destroy(&attr);
	}
	fn(&jobs[0]);
	if (threaded)
		pthread_join(t, NULL);
	else
		fn(&jobs[1]);
	if (have_stack)
		RAW2(SYS_munmap, stack, HELPER_STACK);
}

/* Split runs [0, nruns) that pick() selects into two jobs of about equal
 * data bytes (zero runs count one page each: they cost an ioctl). */
static void split_runs(struct fill_job jobs[2], const struct fill_job *proto,
		       bool (*pick)(const struct fill_job *, const struct umi_run *))
{
	const struct umi_image *img = proto->img;
	uint64_t total = 0;
	for (size_t i = 0; i < img->nruns; i++)
		if (pick(proto, &img->runs[i]))
			total += img->runs[i].kind == UMI_RUN_DATA ? img->runs[i].npages : 1;
	size_t mid = 0;
	uint64_t acc = 0;
	for (; mid < img->nruns && acc * 2 < total; mid++)
		if (pick(proto, &img->runs[mid]))
			acc += img->runs[mid].kind == UMI_RUN_DATA ? img->runs[mid].npages : 1;
	jobs[0] = *proto;
	jobs[1] = *proto;
	jobs[0].from = 0;
	jobs[0].to = mid;
	jobs[1].from = mid;
	jobs[1].to = img->nruns;
	jobs[0].bad = jobs[1].bad = (size_t)-1;
	jobs[0].err = jobs[1].err = 0;
	/* Nothing (worth a thread) for the second half: run everything here. */
	if (acc == total || total < HELPER_MIN_PAGES) {
		jobs[0].to = img->nruns;
		jobs[1].from = jobs[1].to = img->nruns;
	}
}

static bool pick_data(const struct fill_job *j, const struct umi_run *r)
{
	return r->kind == UMI_RUN_DATA;
}

#define POPULATE_STEP (1u << 20)

static void *verify_job(void *arg)
{
	struct fill_job *j = arg;
	uint64_t end = 0; /* the data of the job's runs lies below end */
	for (size_t i = j->from; i < j->to; i++) {
		const struct umi_run *r = &j->img->runs[i];
		if (r->kind == UMI_RUN_DATA && r->offset + r->npages * UM_PAGE_SIZE > end)
			end = r->offset + r->npages * UM_PAGE_SIZE;
	}
	uint64_t mapped_lo = 0, mapped_hi = 0; /* what we populated last */
	for (size_t i = j->from; i < j->to; i++) {
		const struct umi_run *r = &j->img->runs[i];
		if (r->kind != UMI_RUN_DATA)
			continue;
		uint64_t lo = r->offset, hi = r->offset + r->npages * UM_PAGE_SIZE;
		/* Map the pages file ahead in steps of a MiB, one call each, not a
		 * fault per 64 KiB (fault-around). */
		if (lo < mapped_lo || hi > mapped_hi) {
			mapped_lo = lo;
			mapped_hi = hi + POPULATE_STEP < end ? hi + POPULATE_STEP : end;
			RAW3(SYS_madvise, j->src + mapped_lo, mapped_hi - mapped_lo,
			     22 /* MADV_POPULATE_READ */);
		}
		if (umi_run_hash(j->src + r->offset, r->npages) != r->crc) {
			j->bad = i;
			return NULL;
		}
	}
	return NULL;
}

/* Every run's page data, checked against its hash in the mapped pages file
 * before any page is filled. */
static void verify_runs(const struct umi_image *img, const struct um_state *st,
			const uint8_t *src)
{
	struct fill_job proto = {.img = img, .st = st, .src = src}, jobs[2];
	split_runs(jobs, &proto, pick_data);
	run_on_two(verify_job, jobs);
	for (int k = 0; k < 2; k++)
		if (jobs[k].bad != (size_t)-1)
			SHIM_REFUSE(shim_msg_str(&m_, "page data of run "); shim_msg_dec(&m_, jobs[k].bad);
			       shim_msg_str(&m_, " is corrupt (checksum mismatch)"));
}

static void fill_pages(const struct umi_image *img, int pages_fd, const struct um_state *st,
		       const uint8_t *src)
{
	if (src)
		verify_runs(img, st, src);
	for (size_t i = 0; i < img->nruns; i++) {
		const struct umi_run *r = &img->runs[i];
		uint64_t len = r->npages * UM_PAGE_SIZE;
		if (src && filled_by_copy(st, r))
			continue;
		if (r->kind == UMI_RUN_ZERO) {
			/* present but zero: make the pages present */
			RAW3(SYS_madvise, r->addr, len, 23 /* MADV_POPULATE_WRITE */);
			continue;
		}
		/* Populate first: one call instead of a trap per page. */
		RAW3(SYS_madvise, r->addr, len, 23 /* MADV_POPULATE_WRITE */);
		if (pages_fd < 0 || RAW4(SYS_pread64, pages_fd, r->addr, len, r->offset) != (long)len)
			SHIM_REFUSE(shim_msg_str(&m_, "cannot read the pages of run "); shim_msg_dec(&m_, i));
		/* With the file mapped, verify_runs checked every run already. */
		if (!src && umi_run_hash((void *)r->addr, r->npages) != r->crc)
			SHIM_REFUSE(shim_msg_str(&m_, "page data of run "); shim_msg_dec(&m_, i);
			       shim_msg_str(&m_, " is corrupt (checksum mismatch)"));
	}
}

static void check_image(const struct um_state *st, pid_t old_pid)
{
	for (uint32_t i = 0; i < st->nuffds; i++) {
		const struct um_uffd *u = st->uffds[i];
		if (u->mm_pid != old_pid)
			SHIM_REFUSE(shim_msg_str(&m_, "uffd "); shim_msg_dec(&m_, u->id); shim_msg_str(&m_, " served the memory of pid ");
			       shim_msg_dec(&m_, (uint64_t)u->mm_pid);
			       shim_msg_str(&m_, ", another process: a relaunch recreates one process only"));
		for (int j = 0; j < u->nfds; j++) {
			long r = RAW2(SYS_fcntl, u->fds[j], F_GETFD);
			if (r != -EBADF)
				SHIM_REFUSE(shim_msg_str(&m_, "fd "); shim_msg_dec(&m_, (uint64_t)u->fds[j]);
				       shim_msg_str(&m_, " of uffd "); shim_msg_dec(&m_, u->id);
				       shim_msg_str(&m_, " is already in use in the new process"));
		}
		if (u->api_done) {
			int fd = (int)RAW1(SYS_userfaultfd, O_CLOEXEC);
			if (fd < 0)
				SHIM_REFUSE(shim_msg_str(&m_, "cannot create a userfaultfd (errno ");
				       shim_msg_dec(&m_, (uint64_t)-fd); shim_msg_str(&m_, ")"));
			struct uffdio_api api = {.api = UFFD_API, .features = u->features_requested};
			long r = RAW3(SYS_ioctl, fd, UFFDIO_API, &api);
			RAW1(SYS_close, fd);
			if (r < 0)
				SHIM_REFUSE(shim_msg_str(&m_, "this kernel does not offer the features of uffd ");
				       shim_msg_dec(&m_, u->id); shim_msg_str(&m_, " ("); shim_msg_hex(&m_, u->features_requested);
				       shim_msg_str(&m_, ")"));
		}
		for (uint32_t k = 0; k < u->nranges; k++) {
			struct um_mapping hit;
			if (address_taken(u->ranges[k].start, u->ranges[k].end, &hit))
				SHIM_REFUSE(shim_msg_str(&m_, "range "); shim_msg_hex(&m_, u->ranges[k].start); shim_msg_str(&m_, "-");
				       shim_msg_hex(&m_, u->ranges[k].end);
				       shim_msg_str(&m_, " is already taken in the new process (by ");
				       shim_msg_str(&m_, hit.name[0] ? hit.name : "an anonymous mapping");
				       shim_msg_str(&m_, " at "); shim_msg_hex(&m_, hit.start); shim_msg_str(&m_, ")"));
		}
	}
}

static int create_uffd(const struct um_uffd *u)
{
	int flags = (int)(u->create_flags & (O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
	int fd = -1;
	if (u->origin == UM_ORIGIN_DEVICE) {
		int dev = (int)RAW4(SYS_openat, AT_FDCWD, "/dev/userfaultfd", O_RDWR | O_CLOEXEC, 0);
		if (dev >= 0) {
			fd = (int)RAW3(SYS_ioctl, dev, USERFAULTFD_IOC_NEW, flags);
			RAW1(SYS_close, dev);
		}
	}
	if (fd < 0)
		fd = (int)RAW1(SYS_userfaultfd, flags);
	if (fd < 0)
		SHIM_REFUSE(shim_msg_str(&m_, "cannot create uffd "); shim_msg_dec(&m_, u->id));
	return fd;
}

static bool pick_copy(const struct fill_job *j, const struct umi_run *r)
{
	return r->uffd_id == j->u->id && filled_by_copy(j->st, r);
}

static void *copy_job(void *arg)
{
	struct fill_job *j = arg;
	for (size_t i = j->from; i < j->to; i++) {
		const struct umi_run *r = &j->img->runs[i];
		if (!pick_copy(j, r))
			continue;
		uint64_t len = r->npages * UM_PAGE_SIZE;
		if (r->kind == UMI_RUN_ZERO) {
			struct uffdio_zeropage z = {.range = {r->addr, len},
						    .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE};
			for (;;) {
				z.zeropage = 0;
				long e = RAW3(SYS_ioctl, j->fd, UFFDIO_ZEROPAGE, &z);
				if (e == 0)
					break;
				if (e != -EAGAIN || z.zeropage <= 0) {
					j->bad = i;
					j->err = e;
					return NULL;
				}
				z.range.start += (uint64_t)z.zeropage;
				z.range.len -= (uint64_t)z.zeropage;
			}
			continue;
		}
		struct uffdio_copy c = {.dst = r->addr, .src = (uint64_t)(j->src + r->offset),
					.len = len, .mode = UFFDIO_COPY_MODE_DONTWAKE};
		for (;;) {
			c.copy = 0;
			long e = RAW3(SYS_ioctl, j->fd, UFFDIO_COPY, &c);
			if (e == 0)
				break;
			if (e != -EAGAIN || c.copy <= 0) {
				j->bad = i;
				j->err = e;
				return NULL;
			}
			c.dst += (uint64_t)c.copy;
			c.src += (uint64_t)c.copy;
			c.len -= (uint64_t)c.copy;
		}
	}
	return NULL;
}

/* The runs of uffd u that fill_pages left for UFFDIO_COPY (their data was
 * verified by fill_pages). */
static void fill_by_copy(const struct um_uffd *u, int fd, const struct umi_image *img,
			 const struct um_state *st, const uint8_t *src)
{
	if (!src)
		return;
	struct fill_job proto = {.img = img, .st = st, .src = src, .u = u, .fd = fd}, jobs[2];
	split_runs(jobs, &proto, pick_copy);
	run_on_two(copy_job, jobs);
	for (int k = 0; k < 2; k++) {
		size_t i = jobs[k].bad;
		if (i != (size_t)-1)
			SHIM_REFUSE(shim_msg_str(&m_, img->runs[i].kind == UMI_RUN_ZERO ? "UFFDIO_ZEROPAGE"
									       : "UFFDIO_COPY");
			       shim_msg_str(&m_, " of run "); shim_msg_dec(&m_, i);
			       shim_msg_str(&m_, " failed (errno "); shim_msg_dec(&m_, (uint64_t)-jobs[k].err);
			       shim_msg_str(&m_, ")"));
	}
}

/* No memory run of the image fills a page of [start, end)? */
static bool filled_none(const struct umi_image *img, uint64_t start, uint64_t end)
{
	size_t lo = 0, hi = img->nruns; /* first run that ends after start */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (img->runs[mid].addr + img->runs[mid].npages * UM_PAGE_SIZE <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == img->nruns || img->runs[lo].addr >= end;
}

/* [start, end) lies in one registered range of u, of private anonymous memory. */
static bool same_anon_range(const struct um_uffd *u, uint64_t start, uint64_t end)
{
	const struct um_range *r = um_range_find(u, start);
	return r && end <= r->end && r->map.backing == UM_BACKING_ANON && !r->map.shared;
}

static void restore_uffd(struct um_uffd *u, const struct umi_image *img,
			 const struct um_state *st, const uint8_t *src)
{
	int tmp = fd_out_of_way(create_uffd(u));
	for (int j = 0; j < u->nfds; j++) {
		if (RAW3(SYS_dup3, tmp, u->fds[j], u->fd_flags[j] ? O_CLOEXEC : 0) < 0)
			SHIM_REFUSE(shim_msg_str(&m_, "cannot place uffd "); shim_msg_dec(&m_, u->id); shim_msg_str(&m_, " at fd ");
			       shim_msg_dec(&m_, (uint64_t)u->fds[j]));
		if (!u->fd_flags[j])
			RAW3(SYS_fcntl, u->fds[j], F_SETFD, 0);
	}
	bool keep_tmp = false;
	for (int j = 0; j < u->nfds; j++)
		keep_tmp |= u->fds[j] == tmp;
	if (!keep_tmp)
		RAW1(SYS_close, tmp);
	int fd = u->fds[0];
	RAW3(SYS_fcntl, fd, F_SETFL, u->file_flags & O_NONBLOCK);
	if (u->api_done) {
		struct uffdio_api api = {.api = UFFD_API, .features = u->features_requested};
		if (RAW3(SYS_ioctl, fd, UFFDIO_API, &api) < 0)
			SHIM_REFUSE(shim_msg_str(&m_, "UFFDIO_API failed for uffd "); shim_msg_dec(&m_, u->id));
	}
	for (uint32_t k = 0; k < u->nranges; k++) {
		struct uffdio_register reg = {.range = {u->ranges[k].start,
							u->ranges[k].end - u->ranges[k].start},
					      .mode = u->ranges[k].modes};
		long r = RAW3(SYS_ioctl, fd, UFFDIO_REGISTER, &reg);
		if (r < 0)
			SHIM_REFUSE(shim_msg_str(&m_, "UFFDIO_REGISTER of "); shim_msg_hex(&m_, u->ranges[k].start);
			       shim_msg_str(&m_, " failed (errno "); shim_msg_dec(&m_, (uint64_t)-r); shim_msg_str(&m_, ")"));
		u->ranges[k].ioctls = reg.ioctls;
	}
	fill_by_copy(u, fd, img, st, src);
	/* One WRITEPROTECT per run of protected pages; on private anonymous
	 * memory without WP_UNPOPULATED the kernel protects present pages only,
	 * so runs there are joined across gaps that hold no restored page. */
	bool join = !(u->features_requested & UFFD_FEATURE_WP_UNPOPULATED);
	uint64_t cur = 0, rs, re, ps = 0, pe = 0;
	for (bool more = true; more;) {
		more = um_wp_next_run(&u->wp, &cur, ~0ULL >> 1, &rs, &re);
		if (more && pe && join && filled_none(img, pe, rs) && same_anon_range(u, ps, re)) {
			pe = re;
			continue;
		}
		if (pe) {
			struct uffdio_writeprotect wp = {.range = {ps, pe - ps},
							 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
			long r = RAW3(SYS_ioctl, fd, UFFDIO_WRITEPROTECT, &wp);
			if (r < 0)
				SHIM_REFUSE(shim_msg_str(&m_, "UFFDIO_WRITEPROTECT of "); shim_msg_hex(&m_, ps);
				       shim_msg_str(&m_, " failed (errno "); shim_msg_dec(&m_, (uint64_t)-r);
				       shim_msg_str(&m_, ")"));
		}
		ps = rs;
		pe = re;
	}
	/* Where the kernel protects present pages only (private anonymous memory
	 * without WP_UNPOPULATED) and a page was not restored (an image without
	 * memory), the protection is gone: the model takes the kernel's bits. */
	if (join) {
		for (uint32_t k = 0; k < u->nranges; k++) {
			const struct um_range *r = &u->ranges[k];
			if (r->map.backing != UM_BACKING_ANON ||
			    !um_wp_count_range(&u->wp, r->start, r->end))
				continue;
			uint8_t wpb[4096];
			for (uint64_t a = r->start; a < r->end;) {
				uint64_t n = (r->end - a) >> UM_PAGE_SHIFT;
				if (n > sizeof(wpb))
					n = sizeof(wpb);
				if (shim_pagemap_wp(a, n, wpb) == 0)
					um_wp_sync(u, a, n, wpb);
				a += n << UM_PAGE_SHIFT;
			}
		}
	}
	struct stat fst;
	if (RAW2(SYS_fstat, fd, &fst) == 0)
		u->ino = fst.st_ino;
	u->origin = UM_ORIGIN_RESTORED;
	u->mm_pid = G.pid;
	u->npending = 0; /* the faulting threads fault again in the new process */
}

void shim_restore_from_env(void)
{
	const char *dir = getenv("UFFDSHIM_RESTORE");
	if (!dir || !*dir)
		return;
	size_t slen = 0, plen = 0;
	void *sbuf = read_file(dir, UMI_STATE_FILE, &slen, true);
	int pages_fd = open_pages(dir);
	if (pages_fd >= 0) {
		struct stat st;
		RAW2(SYS_fstat, pages_fd, &st);
		plen = (size_t)st.st_size;
	}
	struct umi_image img;
	struct shim_msg e = {.n = 0};
	if (umi_parse(sbuf, slen, pages_fd >= 0 ? plen : 0, &img, e.b, sizeof(e.b) - 2) < 0) {
		e.n = strlen(e.b);
		shim_refuse(&e);
	}
	struct um_state st;
	if (um_deserialize(&st, img.state, img.state_len, e.b, sizeof(e.b) - 2) < 0) {
		e.n = strlen(e.b);
		shim_refuse(&e);
	}
	pid_t old = img.hdr.pid;
	check_image(&st, old);
	shim_restore_tracked(&img, &st, pages_fd); /* tracked memory of a chain's image */
	/* Apply: memory, contents, then the uffds on top. */
	for (uint32_t i = 0; i < st.nuffds; i++)
		for (uint32_t k = 0; k < st.uffds[i]->nranges; k++)
			map_range(&st.uffds[i]->ranges[k]);
	/* The pages file, mapped as the source of UFFDIO_COPY. */
	const uint8_t *src = NULL;
	if (pages_fd >= 0 && plen) {
		long m = RAW6(SYS_mmap, 0, plen, PROT_READ, MAP_PRIVATE, pages_fd, 0);
		if (m > 0 || m < -4095)
			src = (const uint8_t *)m;
	}
	fill_pages(&img, pages_fd, &st, src);
	for (uint32_t i = 0; i < st.nuffds; i++)
		for (uint32_t k = 0; k < st.uffds[i]->nranges; k++) {
			const struct um_range *r = &st.uffds[i]->ranges[k];
			if (!(r->map.prot & PROT_WRITE))
				RAW3(SYS_mprotect, r->start, r->end - r->start, r->map.prot);
		}
	for (uint32_t i = 0; i < st.nuffds; i++)
		restore_uffd(st.uffds[i], &img, &st, src);
	if (src)
		RAW2(SYS_munmap, src, plen);
	if (pages_fd >= 0)
		RAW1(SYS_close, pages_fd);
	um_free(sbuf, slen);
	/* The model of the new process is the image's, rebased. */
	st.pid = G.pid;
	shim_lock();
	um_state_free(&G.model);
	G.model = st;
	for (uint32_t i = 0; i < st.nuffds && restored.n < MAX_RESTORED; i++) {
		struct um_uffd *u = st.uffds[i];
		for (int j = 0; j < u->nfds; j++)
			shim_fd_set(u->fds[j], FD_UFFD);
		restored.u[restored.n++] = (struct uffdshim_restored_uffd){
			.fd = u->fds[0], .id = u->id, .features = u->features_requested,
			.nranges = u->nranges};
	}
	shim_update_own_ranges();
	shim_unlock();
	unsetenv("UFFDSHIM_RESTORE");
	if (G.model.nuffds)
		shim_ctl_ensure();
}

/* ---- the public API (include/uffdshim.h) ---- */

__attribute__((visibility("default"))) int uffdshim_restored_v1(struct uffdshim_restored_uffd *out,
								 int max)
{
	for (int i = 0; i < restored.n && i < max; i++)
		out[i] = restored.u[i];
	return restored.n;
}

__attribute__((visibility("default"))) int uffdshim_restored_range_v1(int fd, unsigned idx,
								       uint64_t *start,
								       uint64_t *len,
								       uint64_t *modes)
{
	int rc = -1;
	shim_lock();
	struct um_uffd *u = um_uffd_by_fd(&G.model, fd);
	if (u && idx < u->nranges) {
		*start = u->ranges[idx].start;
		*len = u->ranges[idx].end - u->ranges[idx].start;
		*modes = u->ranges[idx].modes;
		rc = 0;
	}
	shim_unlock();
	return rc;
}

void shim_refresh_inodes(void)
{
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *u = G.model.uffds[i];
		/* The process whose memory it served has exited: that memory and
		 * its registrations are gone (exit sends no UNMAP event). */
		if (u->mm_pid > 0 && u->mm_pid != G.pid && u->nranges &&
		    RAW2(SYS_kill, u->mm_pid, 0) == -ESRCH) {
			u->nranges = 0;
			um_wp_free(&u->wp);
			u->npending = 0;
		}
		struct stat st;
		if (u->nfds == 0 || RAW2(SYS_fstat, u->fds[0], &st) < 0 || st.st_ino == u->ino)
			continue;
		/* Same fd number, another file: a checkpoint engine restored it.
		 * Threads that were waiting on faults fault again. */
		u->ino = st.st_ino;
		u->origin = UM_ORIGIN_RESTORED;
		u->npending = 0;
	}
}
