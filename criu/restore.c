/* restore.c - the restore side.
 *
 * RESTORE_EXT_FILE(id) runs inside the task that CRIU restores the file in
 * (the holder with the lowest pid).  If that task is the one whose memory the
 * uffd serves, the uffd is created right there, with the dumped creation
 * flags and UFFDIO_API features, and returned (CRIU moves it to the dumped fd
 * number).  Otherwise a uffd created there would serve the wrong address
 * space: a memfd named "uffdshim-placeholder-<id>" stands in for it.
 *
 * RESUME_DEVICES_LATE(pid) runs in the criu master once memory is in its
 * final place and every task is stopped.  For each record whose memory is
 * pid's: take the uffd from its holder with pidfd_getfd (a placeholder is
 * first replaced: the uffd is created inside pid by an injected system call,
 * and put at each holder's fd number the same way), register every range
 * with its modes, map again the pages that were present at dump time and
 * that CRIU does not restore as present (zero pages, pages of a MINOR view
 * of shmem), write-protect the dumped runs, and check the result against
 * smaps and pagemap.  This hook cannot fail the restore: errors go to the
 * log. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "plugin_abi.h"
#include "ucr.h"
#include "uffd_compat.h"

#define KERNEL_FEATURE_INITIALIZED ((uint64_t)1 << 31)

static struct ucr_rec *recs;
static size_t nrecs;
static bool loaded;

/* ---- RESTORE_EXT_FILE (inside the restored task) ---- */

int ucr_restore_ext_file(int id)
{
	if (ucr_stage != UCR_STAGE_RESTORE)
		return -ENOTSUP;
	struct ucr_rec r;
	char err[400];
	int rc = ucr_rec_read(ucr_image_dir(), (uint32_t)id, &r, err, sizeof(err));
	if (rc == -ENOENT)
		return -ENOTSUP; /* not one of ours */
	if (rc < 0) {
		ucr_err("file id %#x: %s", id, err);
		return -EINVAL;
	}
	pid_t me = getpid();
	int fd;
	if (r.h.mm_pid != me) {
		char name[64];
		snprintf(name, sizeof(name), "uffdshim-placeholder-%u", r.h.id);
		fd = memfd_create(name, MFD_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			ucr_err("file id %#x: memfd_create: %s", id, strerror(errno));
		} else {
			ucr_info("file id %#x: pid %d holds a uffd that serves pid %d's memory: a "
				 "placeholder for now, the uffd is made in pid %d once it is restored",
				 id, me, r.h.mm_pid, r.h.mm_pid);
		}
		ucr_rec_free(&r);
		return fd < 0 ? rc : fd;
	}
	fd = (int)syscall(SYS_userfaultfd, (int)r.h.create_flags);
	if (fd < 0) {
		rc = -errno;
		ucr_err("file id %#x: userfaultfd(%#x) in pid %d: %s", id, r.h.create_flags, me,
			strerror(errno));
		ucr_rec_free(&r);
		return rc;
	}
	if (r.h.api_done) {
		struct uffdio_api api = {.api = UFFD_API, .features = r.h.features};
		if (ioctl(fd, UFFDIO_API, &api) < 0) {
			rc = -errno;
			ucr_err("file id %#x: UFFDIO_API features %#llx: %s", id,
				(unsigned long long)r.h.features, strerror(errno));
			close(fd);
			ucr_rec_free(&r);
			return rc;
		}
	}
	ucr_info("file id %#x: uffd recreated in pid %d (flags %#o, features %#llx%s)", id, me,
		 r.h.create_flags, (unsigned long long)r.h.features,
		 r.h.api_done ? "" : ", no UFFDIO_API");
	ucr_rec_free(&r);
	return fd;
}

/* ---- RESUME_DEVICES_LATE (criu master) ---- */

static int load_records(void)
{
	int dirfd = ucr_image_dir();
	int d = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d < 0) {
		ucr_err("cannot open the images directory: %s", strerror(errno));
		return -1;
	}
	DIR *dp = fdopendir(d);
	if (!dp) {
		close(d);
		return -1;
	}
	struct dirent *de;
	size_t plen = strlen(UCR_REC_PREFIX);
	while ((de = readdir(dp))) {
		if (strncmp(de->d_name, UCR_REC_PREFIX, plen))
			continue;
		char *end;
		unsigned long id = strtoul(de->d_name + plen, &end, 10);
		if (strcmp(end, ".img"))
			continue;
		struct ucr_rec *n = realloc(recs, (nrecs + 1) * sizeof(*n));
		if (!n)
			break;
		recs = n;
		char err[400];
		if (ucr_rec_read(dirfd, (uint32_t)id, &recs[nrecs], err, sizeof(err)) < 0) {
			ucr_err("%s", err);
			continue;
		}
		nrecs++;
	}
	closedir(dp);
	return 0;
}

static int uffd_ioctl(int fd, unsigned long req, void *arg)
{
	int rc;
	while ((rc = ioctl(fd, req, arg)) < 0 && errno == EINTR)
		;
	return rc;
}

/* Make a uffd bound to r's memory owner and put it at every holder's fd
 * number, replacing the placeholder.  Returns this process's copy. */
static int cross_mm_install(const struct ucr_rec *r, int mm_pidfd, char *err, size_t errlen)
{
	pid_t mm = r->h.mm_pid;
	struct ucr_inj j;
	char e2[300];
	if (ucr_inj_begin(&j, mm, e2, sizeof(e2)) < 0) {
		snprintf(err, errlen, "cannot run userfaultfd() in pid %d: %s", mm, e2);
		return -1;
	}
	long x = ucr_inj_call(&j, SYS_userfaultfd, (long)r->h.create_flags, 0, 0, 0, 0, 0, e2,
			      sizeof(e2));
	int c = -1;
	if (x >= 0) {
		c = ucr_pidfd_getfd(mm_pidfd, (int)x);
		if (c < 0)
			snprintf(e2, sizeof(e2), "pidfd_getfd: %s", strerror(errno));
		ucr_inj_call(&j, SYS_close, x, 0, 0, 0, 0, 0, e2, sizeof(e2));
	} else if (x != UCR_INJ_FAILED) {
		snprintf(e2, sizeof(e2), "%s", strerror((int)-x));
	}
	ucr_inj_end(&j);
	if (c < 0) {
		snprintf(err, errlen, "userfaultfd(%#x) in pid %d: %s", r->h.create_flags, mm, e2);
		return -1;
	}
	if (r->h.api_done) {
		struct uffdio_api api = {.api = UFFD_API, .features = r->h.features};
		if (uffd_ioctl(c, UFFDIO_API, &api) < 0) {
			snprintf(err, errlen, "UFFDIO_API features %#llx: %s",
				 (unsigned long long)r->h.features, strerror(errno));
			close(c);
			return -1;
		}
	}
	struct stat sc;
	fstat(c, &sc);
	for (uint32_t i = 0; i < r->h.nholders; i++) {
		const struct ucr_holder *h = &r->holders[i];
		if (ucr_inj_begin(&j, h->pid, e2, sizeof(e2)) < 0) {
			snprintf(err, errlen, "cannot put the uffd into pid %d: %s", h->pid, e2);
			close(c);
			return -1;
		}
		long p = ucr_inj_call(&j, SYS_pidfd_open, getpid(), 0, 0, 0, 0, 0, e2, sizeof(e2));
		long y = p >= 0 ? ucr_inj_call(&j, SYS_pidfd_getfd, p, c, 0, 0, 0, 0, e2, sizeof(e2))
				: p;
		long d = y >= 0 ? ucr_inj_call(&j, SYS_dup3, y, h->fd,
					       (h->fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0, 0, 0, 0,
					       e2, sizeof(e2))
				: y;
		if (y >= 0 && y != h->fd)
			ucr_inj_call(&j, SYS_close, y, 0, 0, 0, 0, 0, e2, sizeof(e2));
		if (p >= 0)
			ucr_inj_call(&j, SYS_close, p, 0, 0, 0, 0, 0, e2, sizeof(e2));
		ucr_inj_end(&j);
		uint64_t ino = 0;
		if (d < 0 || pf_fd_ino(h->pid, h->fd, &ino) < 0 || ino != sc.st_ino) {
			snprintf(err, errlen, "putting the uffd at fd %d of pid %d failed: %s", h->fd,
				 h->pid, d == UCR_INJ_FAILED ? e2 : d < 0 ? strerror((int)-d) :
				 "the fd is not the new uffd");
			close(c);
			return -1;
		}
		ucr_info("file id %#x: uffd of pid %d's memory put at fd %d of pid %d", r->h.id, mm,
			 h->fd, h->pid);
	}
	return c;
}

static const struct ucr_range *range_at(const struct ucr_rec *r, uint64_t a)
{
	for (uint32_t i = 0; i < r->h.nranges; i++)
		if (a >= r->ranges[i].start && a < r->ranges[i].end)
			return &r->ranges[i];
	return NULL;
}

struct repop_count {
	uint64_t cont, zero, touched, left;
};

/* Map again [a, b) (inside range g), absent now and present at dump. */
static void repopulate_piece(int c, pid_t pid, const struct ucr_range *g, uint64_t a, uint64_t b,
			     struct repop_count *n)
{
	uint64_t pages = (b - a) / UM_PAGE_SIZE;
	if (g->modes & UFFDIO_REGISTER_MODE_MINOR) {
		struct uffdio_continue cc = {.range = {a, b - a}, .mode = UFFDIO_CONTINUE_MODE_DONTWAKE};
		if (uffd_ioctl(c, UFFDIO_CONTINUE, &cc) == 0) {
			n->cont += pages;
			return;
		}
		ucr_debug("pid %d: UFFDIO_CONTINUE [%#" PRIx64 ", %#" PRIx64 "): %s", pid, a, b,
			  strerror(errno));
	} else if (g->backing == UM_BACKING_ANON && (g->modes & UFFDIO_REGISTER_MODE_MISSING)) {
		/* CRIU does not dump pages that map the zero page. */
		struct uffdio_zeropage z = {.range = {a, b - a}, .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE};
		if (uffd_ioctl(c, UFFDIO_ZEROPAGE, &z) == 0) {
			n->zero += pages;
			return;
		}
		ucr_debug("pid %d: UFFDIO_ZEROPAGE [%#" PRIx64 ", %#" PRIx64 "): %s", pid, a, b,
			  strerror(errno));
	} else if (g->backing == UM_BACKING_ANON) {
		/* Not MISSING-registered: a read fault maps the zero page. */
		for (uint64_t p = a; p < b; p += UM_PAGE_SIZE) {
			char byte;
			struct iovec l = {&byte, 1}, rv = {(void *)p, 1};
			if (process_vm_readv(pid, &l, 1, &rv, 1, 0) == 1)
				n->touched++;
		}
		return;
	}
	n->left += pages;
}

static void repopulate(int c, const struct ucr_rec *r, int pmfd, struct repop_count *n)
{
	pid_t pid = r->h.mm_pid;
	for (uint32_t i = 0; i < r->h.npresent; i++) {
		uint64_t s = r->present[i].start, e = s + r->present[i].npages * UM_PAGE_SIZE;
		struct ucr_runs now = {0};
		if (ucr_pagemap_runs(pmfd, s, e, UCR_PM_PRESENT, &now) < 0)
			continue;
		uint64_t x = s;
		for (size_t k = 0; k <= now.n; k++) {
			uint64_t gap_end = k < now.n ? now.v[k].start : e;
			while (x < gap_end) { /* [x, gap_end) is absent now */
				const struct ucr_range *g = range_at(r, x);
				uint64_t y = g && g->end < gap_end ? g->end : gap_end;
				if (g)
					repopulate_piece(c, pid, g, x, y, n);
				x = y;
			}
			if (k < now.n)
				x = now.v[k].start + now.v[k].npages * UM_PAGE_SIZE;
		}
		ucr_runs_free(&now);
	}
}

static bool runs_equal(const struct ucr_run *a, size_t na, const struct ucr_runs *b)
{
	if (na != b->n)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].start != b->v[i].start || a[i].npages != b->v[i].npages)
			return false;
	return true;
}

/* Compare what the kernel shows now with the record.  Returns the number
 * of disagreements (each logged). */
static unsigned check_restored(const struct ucr_rec *r, int pmfd)
{
	pid_t pid = r->h.mm_pid;
	unsigned bad = 0;
	struct pf_vmas vs;
	char err[300];
	if (pf_read_smaps(pid, &vs, err, sizeof(err)) < 0) {
		ucr_err("pid %d: %s", pid, err);
		return 1;
	}
	for (uint32_t i = 0; i < r->h.nranges; i++) {
		const struct ucr_range *g = &r->ranges[i];
		uint64_t covered = 0;
		for (size_t k = 0; k < vs.n; k++) {
			const struct pf_vma *v = &vs.v[k];
			if (v->end <= g->start || v->start >= g->end)
				continue;
			uint64_t s = v->start > g->start ? v->start : g->start;
			uint64_t e = v->end < g->end ? v->end : g->end;
			covered += e - s;
			if ((v->uffd_flags & PF_VM_UFFD_MASK) != g->modes) {
				char want[32], got[32];
				pf_uffd_flags_str((uint32_t)g->modes, want, sizeof(want));
				pf_uffd_flags_str(v->uffd_flags, got, sizeof(got));
				if (bad < 8)
					ucr_err("pid %d: [%#" PRIx64 ", %#" PRIx64 ") has smaps %s, the dump "
						"had %s", pid, s, e, got, want);
				else if (bad == 8)
					ucr_err("pid %d: (more VMAs differ)", pid);
				bad++;
			}
		}
		if (covered != g->end - g->start) {
			ucr_err("pid %d: registered range [%#" PRIx64 ", %#" PRIx64 ") is not all mapped "
				"after restore", pid, g->start, g->end);
			bad++;
		}
	}
	pf_vmas_free(&vs);
	struct ucr_runs wp = {0}, present = {0};
	for (uint32_t i = 0; i < r->h.nranges; i++) {
		const struct ucr_range *g = &r->ranges[i];
		if (g->modes & UFFDIO_REGISTER_MODE_WP)
			ucr_pagemap_runs(pmfd, g->start, g->end, UCR_PM_UFFD_WP, &wp);
		ucr_pagemap_runs(pmfd, g->start, g->end, UCR_PM_PRESENT, &present);
	}
	if (!runs_equal(r->wp, r->h.nwp, &wp)) {
		struct ucr_runs want = {.v = r->wp, .n = r->h.nwp};
		ucr_err("pid %d: uffd-wp bits differ from the dump: %" PRIu64 " pages in %zu runs now, "
			"%" PRIu64 " pages in %u runs dumped", pid, ucr_runs_pages(&wp), wp.n,
			ucr_runs_pages(&want), r->h.nwp);
		bad++;
	}
	if (!runs_equal(r->present, r->h.npresent, &present)) {
		struct ucr_runs want = {.v = r->present, .n = r->h.npresent};
		ucr_warn("pid %d: present pages of the registered ranges differ from the dump: "
			 "%" PRIu64 " now, %" PRIu64 " dumped", pid, ucr_runs_pages(&present),
			 ucr_runs_pages(&want));
	}
	ucr_runs_free(&wp);
	ucr_runs_free(&present);
	return bad;
}

static int restore_one(const struct ucr_rec *r)
{
	pid_t mm = r->h.mm_pid;
	char err[600];
	int pidfd = ucr_pidfd_open(mm);
	if (pidfd < 0) {
		ucr_err("file id %#x: pidfd_open(%d): %s", r->h.id, mm, strerror(errno));
		return -1;
	}
	int c = -1;
	const char *how = "";
	for (uint32_t i = 0; i < r->h.nholders && c < 0; i++) {
		const struct ucr_holder *h = &r->holders[i];
		if (h->pid == mm && ucr_fd_is_uffd(mm, h->fd)) {
			c = ucr_pidfd_getfd(pidfd, h->fd);
			if (c < 0)
				ucr_err("file id %#x: pidfd_getfd(%d, fd %d): %s", r->h.id, mm, h->fd,
					strerror(errno));
			how = "taken with pidfd_getfd";
		}
	}
	if (c < 0) {
		c = cross_mm_install(r, pidfd, err, sizeof(err));
		how = "made inside the task by an injected userfaultfd()";
		if (c < 0) {
			ucr_err("file id %#x: %s", r->h.id, err);
			close(pidfd);
			return -1;
		}
	}
	/* A fresh uffd with the dumped features? */
	struct pf_fdinfo fi;
	if (pf_read_fdinfo(getpid(), c, &fi, err, sizeof(err)) == 0 && fi.has_api) {
		uint64_t want = r->h.api_done ? (r->h.features | KERNEL_FEATURE_INITIALIZED) : 0;
		if (fi.api_features != want)
			ucr_err("file id %#x: the restored uffd has features %#llx, the dump %#llx",
				r->h.id, (unsigned long long)fi.api_features, (unsigned long long)want);
	}
	int fails = 0;
	for (uint32_t i = 0; i < r->h.nranges; i++) {
		const struct ucr_range *g = &r->ranges[i];
		struct uffdio_register reg = {.range = {g->start, g->end - g->start}, .mode = g->modes};
		if (uffd_ioctl(c, UFFDIO_REGISTER, &reg) < 0) {
			ucr_err("file id %#x: pid %d: UFFDIO_REGISTER [%#" PRIx64 ", %#" PRIx64 ") mode "
				"%#" PRIx64 ": %s", r->h.id, mm, g->start, g->end, g->modes,
				strerror(errno));
			fails++;
		}
	}
	int pmfd = pf_pagemap_open(mm, err, sizeof(err));
	struct repop_count n = {0};
	if (pmfd >= 0)
		repopulate(c, r, pmfd, &n);
	uint64_t wpages = 0;
	for (uint32_t i = 0; i < r->h.nwp; i++) {
		struct uffdio_writeprotect w = {
			.range = {r->wp[i].start, r->wp[i].npages * UM_PAGE_SIZE},
			.mode = UFFDIO_WRITEPROTECT_MODE_WP};
		if (uffd_ioctl(c, UFFDIO_WRITEPROTECT, &w) < 0) {
			ucr_err("file id %#x: pid %d: UFFDIO_WRITEPROTECT [%#llx, +%llu pages): %s",
				r->h.id, mm, (unsigned long long)r->wp[i].start,
				(unsigned long long)r->wp[i].npages, strerror(errno));
			fails++;
		} else {
			wpages += r->wp[i].npages;
		}
	}
	unsigned bad = pmfd >= 0 ? check_restored(r, pmfd) : 1;
	if (pmfd >= 0)
		close(pmfd);
	ucr_info("file id %#x: pid %d: uffd %s; %u range%s registered, %" PRIu64 " pages "
		 "write-protected, pages mapped again: %" PRIu64 " CONTINUE, %" PRIu64 " ZEROPAGE, "
		 "%" PRIu64 " read%s; %s", r->h.id, mm, how, r->h.nranges,
		 r->h.nranges == 1 ? "" : "s", wpages, n.cont, n.zero, n.touched,
		 n.left ? " (some left absent)" : "",
		 bad || fails ? "DIFFERS from the dump (see above)" :
		 "smaps flags and uffd-wp bits equal the dump");
	close(c);
	close(pidfd);
	return bad || fails ? -1 : 0;
}

int ucr_resume_devices_late(int pid)
{
	if (ucr_stage != UCR_STAGE_RESTORE)
		return -ENOTSUP;
	if (!loaded) {
		loaded = true;
		load_records();
	}
	int rc = -ENOTSUP;
	for (size_t i = 0; i < nrecs; i++) {
		const struct ucr_rec *r = &recs[i];
		if (r->h.mm_pid != pid || restore_one(r) == 0)
			continue;
		rc = -EIO;
		/* This hook cannot fail the restore, and a task whose uffd state
		 * is not what it was would read zeros where it expects faults:
		 * kill it, so that CRIU's detach fails and the restore with it. */
		const char *keep = getenv("UFFDSHIM_CRIU_KEEP_BROKEN");
		if (keep && *keep && strcmp(keep, "0")) {
			ucr_err("file id %#x: pid %d is left running with uffd state that differs from "
				"the dump (UFFDSHIM_CRIU_KEEP_BROKEN)", r->h.id, pid);
			continue;
		}
		ucr_err("file id %#x: killing pid %d and the uffd's holders: its uffd state could not "
			"be restored, and running it would turn faults into zero-filled memory", r->h.id,
			pid);
		kill(pid, SIGKILL);
		for (uint32_t k = 0; k < r->h.nholders; k++)
			kill(r->holders[k].pid, SIGKILL);
	}
	return rc;
}

void ucr_restore_fini(int ret)
{
	for (size_t i = 0; i < nrecs; i++)
		ucr_rec_free(&recs[i]);
	free(recs);
	recs = NULL;
	nrecs = 0;
	loaded = false;
}
