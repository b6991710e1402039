/* unshimmed.c - a uffd of a process that does not run under uffdshim.
 * The kernel shows: the uffd's features and file flags (fdinfo), which VMAs
 * are registered and in which modes (smaps VmFlags um/uw/ui), and which pages
 * are write-protected (pagemap bit 57).  It does not show which uffd a VMA is
 * registered with, nor whose memory a uffd serves.  So the plugin claims such
 * a uffd only when that is unambiguous:
 *   - no holder holds a second uffd;
 *   - at most one holder has uffd-registered memory: that process's memory
 *     is taken to be the one the uffd serves (a uffd received from another
 *     process over SCM_RIGHTS cannot be told apart: a documented limit);
 *   - if no holder has registered memory, no other process of the dump has
 *     registered memory without a uffd of its own (it could be this one's).
 * Otherwise the dump is refused with the reason in CRIU's log. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ucr.h"
#include "uffd_compat.h"

#define KERNEL_FEATURE_INITIALIZED ((uint64_t)1 << 31)

void ucr_unshimmed_check_task(const struct ucr_task *t, char *reason, size_t len)
{
	reason[0] = 0;
	if (t->shimmed || ucr_task_nuffds(t) < 2)
		return;
	char fds[256] = "";
	for (size_t i = 0; i < t->nufds && strlen(fds) < sizeof(fds) - 40; i++)
		snprintf(fds + strlen(fds), sizeof(fds) - strlen(fds), "%sfd %d (inode %llu)",
			 i ? ", " : "", t->ufds[i].fd, (unsigned long long)t->ufds[i].ino);
	snprintf(reason, len, "pid %d holds %zu userfaultfds (%s) and does not run under "
		 "uffdshim: the kernel does not say which uffd registered which range (smaps "
		 "um/uw/ui name no uffd), so they cannot be restored exactly and the dump is "
		 "refused; run the program under uffdshim (LD_PRELOAD=libuffdshim.so, or "
		 "uffd-record run) to checkpoint it", t->pid, ucr_task_nuffds(t), fds);
}

static uint32_t backing_of(const struct pf_vma *v)
{
	if (v->kernel_page_size > UM_PAGE_SIZE)
		return UM_BACKING_HUGETLB;
	const char *n = v->name;
	bool anon_name = !n[0] || n[0] == '[';
	if (!v->shared)
		return anon_name ? UM_BACKING_ANON : UM_BACKING_FILE;
	if (anon_name || !strncmp(n, "/memfd:", 7) || !strncmp(n, "/dev/shm/", 9) ||
	    !strncmp(n, "/SYSV", 5) || !strncmp(n, "/dev/zero", 9))
		return UM_BACKING_SHMEM;
	return UM_BACKING_FILE;
}

static int add_ranges(struct um_uffd *u, pid_t pid, char *reason, size_t len)
{
	struct pf_vmas vs;
	char err[300];
	if (pf_read_smaps(pid, &vs, err, sizeof(err)) < 0) {
		snprintf(reason, len, "%s", err);
		return -1;
	}
	int pmfd = pf_pagemap_open(pid, err, sizeof(err));
	if (pmfd < 0) {
		pf_vmas_free(&vs);
		snprintf(reason, len, "%s", err);
		return -1;
	}
	int rc = 0;
	for (size_t i = 0; i < vs.n && !rc; i++) {
		const struct pf_vma *v = &vs.v[i];
		if (!v->uffd_flags)
			continue;
		struct um_mapping m;
		memset(&m, 0, sizeof(m));
		m.start = v->start;
		m.end = v->end;
		m.prot = v->prot;
		m.shared = v->shared;
		m.offset = v->offset;
		m.dev = ((uint64_t)v->dev_major << 8) | v->dev_minor;
		m.ino = v->ino;
		m.backing = backing_of(v);
		m.pagesize = v->kernel_page_size ? (uint32_t)v->kernel_page_size : UM_PAGE_SIZE;
		size_t nl = strnlen(v->name, sizeof(m.name) - 1);
		memcpy(m.name, v->name, nl); /* truncated, as the model keeps it */
		/* PF_VM_* bits are the UFFDIO_REGISTER_MODE_* bits. */
		if (um_register(u, v->start, v->end, v->uffd_flags, 0, &m, 1) < 0) {
			snprintf(reason, len, "out of memory");
			rc = -1;
			break;
		}
		if (v->uffd_flags & PF_VM_UW) {
			struct ucr_runs wp = {0};
			rc = ucr_pagemap_runs(pmfd, v->start, v->end, UCR_PM_UFFD_WP, &wp);
			for (size_t k = 0; !rc && k < wp.n; k++)
				rc = um_wp_set(&u->wp, wp.v[k].start,
					       wp.v[k].start + wp.v[k].npages * UM_PAGE_SIZE, true);
			ucr_runs_free(&wp);
			if (rc)
				snprintf(reason, len, "reading /proc/%d/pagemap failed", pid);
		}
	}
	close(pmfd);
	pf_vmas_free(&vs);
	return rc ? -1 : 0;
}

struct um_uffd *ucr_unshimmed_build(uint64_t ino, int lfd, struct ucr_task **owner,
				    char *reason, size_t len)
{
	*owner = NULL;
	struct ucr_task *mm = NULL, *first = NULL;
	for (size_t i = 0; i < ucr_task_count(); i++) {
		struct ucr_task *t = ucr_task_at(i);
		if (!ucr_task_ufd(t, ino))
			continue;
		ucr_unshimmed_check_task(t, reason, len);
		if (reason[0])
			return NULL;
		if (!first || t->pid < first->pid)
			first = t;
		if (!t->uffd_vma_flags)
			continue;
		if (mm) {
			snprintf(reason, len, "it is held by pids %d and %d, which both have "
				 "uffd-registered memory, and neither runs under uffdshim: the kernel "
				 "does not say whose memory this uffd serves", mm->pid, t->pid);
			return NULL;
		}
		mm = t;
	}
	if (!first) {
		snprintf(reason, len, "no task of the dump holds it");
		return NULL;
	}
	if (!mm) {
		for (size_t i = 0; i < ucr_task_count(); i++) {
			const struct ucr_task *t = ucr_task_at(i);
			if (t->uffd_vma_flags && !t->shimmed && t->nufds == 0) {
				snprintf(reason, len, "pid %d has uffd-registered memory and holds no "
					 "uffd, and nothing says whether this uffd (held by pid %d, not "
					 "running under uffdshim) is the one that serves it", t->pid,
					 first->pid);
				return NULL;
			}
		}
		mm = first;
	}

	struct pf_fdinfo fi;
	char err[300];
	if (pf_read_fdinfo(getpid(), lfd, &fi, err, sizeof(err)) < 0 || !fi.has_api) {
		snprintf(reason, len, "cannot read the uffd's fdinfo: %s", err);
		return NULL;
	}
	int fl = fcntl(lfd, F_GETFL);
	um_state_free(&mm->fb);
	um_state_init(&mm->fb, mm->pid);
	struct um_uffd *u = um_uffd_new(&mm->fb, ino, UM_ORIGIN_SYSCALL,
					fl >= 0 ? ((uint32_t)fl & O_NONBLOCK) : 0, mm->pid);
	if (!u) {
		snprintf(reason, len, "out of memory");
		return NULL;
	}
	u->file_flags = fl >= 0 ? ((uint32_t)fl & O_NONBLOCK) : 0;
	for (size_t k = 0; k < mm->nufds; k++)
		if (mm->ufds[k].ino == ino)
			um_fd_add(u, mm->ufds[k].fd, mm->ufds[k].fd_flags & FD_CLOEXEC);
	if (fi.api_features & KERNEL_FEATURE_INITIALIZED) {
		uint64_t f = fi.api_features & ~KERNEL_FEATURE_INITIALIZED;
		um_op_api(u, 0, f, f, fi.api_ioctls);
	}
	if (add_ranges(u, mm->pid, reason, len) < 0)
		return NULL;
	mm->have_fb = true;
	*owner = mm;
	ucr_info("uffd inode %llu: pid %d does not run under uffdshim; taken from the kernel: "
		 "%u registered range%s of pid %d, %llu write-protected pages", (unsigned long long)ino,
		 first->pid, u->nranges, u->nranges == 1 ? "" : "s", mm->pid,
		 (unsigned long long)um_wp_count(&u->wp));
	return u;
}
