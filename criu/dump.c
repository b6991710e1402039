/* dump.c - the dump side: hold each shimmed task's uffd operations before
 * CRIU freezes it (PAUSE_DEVICES), check the held state against the kernel
 * once everything is frozen (CHECKPOINT_DEVICES), and claim each uffd file
 * with a record of everything the restore needs (DUMP_EXT_FILE). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "plugin_abi.h"
#include "ucr.h"
#include "uffd_compat.h"
#include "um_image.h"
#include "verify.h"

#define MODE_MASK (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | \
		   UFFDIO_REGISTER_MODE_MINOR)
#define KERNEL_FEATURE_INITIALIZED ((uint64_t)1 << 31)

static bool checked;       /* checkpoint_all ran */
static int checked_rc;
static bool inventory_added;

/* ---- PAUSE_DEVICES: before the task is seized ---- */

int ucr_pause_devices(int pid)
{
	if (ucr_stage != UCR_STAGE_DUMP)
		return -ENOTSUP; /* pre-dump copies memory only: nothing to hold */
	struct ucr_task *t = ucr_task_get(pid, true);
	if (!t) {
		ucr_err("out of memory");
		return -ENOMEM;
	}
	char err[768];
	int rc = ucr_task_quiesce(t, err, sizeof(err));
	if (rc < 0) {
		ucr_err("%s", err);
		return -EIO;
	}
	if (rc == 0) {
		struct pf_vmas maps;
		if (pf_read_maps(pid, &maps, err, sizeof(err)) == 0) {
			t->shim_mapped = pf_maps_has_lib(&maps, "libuffdshim.so") == 1;
			pf_vmas_free(&maps);
		}
		ucr_debug("pid %d: no uffdshim control socket (%s)", pid, t->shim_mapped ?
			  "the shim is loaded but the process has not touched a uffd" :
			  "not running under uffdshim");
	}
	return -ENOTSUP; /* let other plugins see the task too */
}

/* ---- CHECKPOINT_DEVICES: every task is frozen ---- */

/* The shim models of all dumped tasks that concern pid t's memory: t's own
 * model plus, from other tasks' models, the uffds that serve t's memory
 * (without their fds, which are those other tasks'). */
static int combined_state(const struct ucr_task *t, struct um_state *out)
{
	if (um_state_copy(out, &t->st) < 0)
		return -1;
	pid_t self = t->st.pid > 0 ? t->st.pid : t->pid;
	for (size_t i = 0; i < ucr_task_count(); i++) {
		const struct ucr_task *q = ucr_task_at(i);
		if (q == t || !q->shimmed)
			continue;
		for (uint32_t k = 0; k < q->st.nuffds; k++) {
			const struct um_uffd *u = q->st.uffds[k];
			if (u->mm_pid != self || um_uffd_by_ino(out, u->ino))
				continue;
			struct um_uffd *c = um_uffd_clone(out, u);
			if (!c) {
				um_state_free(out);
				return -1;
			}
			c->nfds = 0;
		}
	}
	return 0;
}

static int verify_task(const struct ucr_task *t)
{
	struct um_state synth;
	if (combined_state(t, &synth) < 0) {
		ucr_err("pid %d: out of memory", t->pid);
		return -1;
	}
	struct verify_report rep;
	int rc = verify_state(&synth, t->pid, &rep);
	if (rc < 0) {
		ucr_err("pid %d: cannot check the shim's model against the kernel: %s", t->pid,
			rep.error);
	} else if (rc > 0 && t->st.missed_updates) {
		ucr_err("pid %d: the shim's model is inexact (%u kernel calls it could not follow, "
			"made from signal handlers) and disagrees with the kernel (%u disagreement%s): "
			"the dump is refused", t->pid, t->st.missed_updates, rep.disagreements,
			rep.disagreements == 1 ? "" : "s");
	} else if (rc > 0) {
		ucr_err("pid %d: transient: the shim's model disagrees with the kernel at freeze "
			"time (%u disagreement%s: an app thread was inside a uffd or memory call the "
			"shim had not recorded yet); the dump would not restore exactly, so it is "
			"refused: run it again", t->pid, rep.disagreements,
			rep.disagreements == 1 ? "" : "s");
	}
	if (rc > 0) {
		unsigned shown = 0;
		for (size_t i = 0; i < rep.n && shown < 20; i++)
			if (rep.e[i].kind == VK_DISAGREE) {
				ucr_err("pid %d:   %s", t->pid, rep.e[i].text);
				shown++;
			}
	} else if (rc == 0) {
		ucr_info("pid %d: the shim's model agrees with the kernel (%u uffds, %u ranges, "
			 "%" PRIu64 " pages checked)", t->pid, rep.nuffds, rep.nranges, rep.npages);
	}
	verify_report_free(&rep);
	um_state_free(&synth);
	return rc == 0 ? 0 : -1;
}

/* Is pid's uffd-registered memory served by a uffd this dump has? */
static bool memory_served(const struct ucr_task *t)
{
	for (size_t i = 0; i < ucr_task_count(); i++) {
		const struct ucr_task *q = ucr_task_at(i);
		if (!q->shimmed)
			continue;
		for (uint32_t k = 0; k < q->st.nuffds; k++) {
			const struct um_uffd *u = q->st.uffds[k];
			if (u->mm_pid == t->pid && u->nfds > 0 && ucr_task_ufd(q, u->ino))
				return true;
		}
	}
	/* Without the shim: its one uffd is taken to serve its own memory. */
	return !t->shimmed && ucr_task_nuffds(t) == 1;
}

static pid_t ppid_of(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	int pp = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "PPid: %d", &pp) == 1)
			break;
	fclose(f);
	return pp;
}

/* Does t's smaps show exactly u's ranges with u's modes over them? */
static bool vmas_match(const struct ucr_task *t, const struct um_uffd *u)
{
	struct pf_vmas vs;
	char err[300];
	if (!u->nranges || pf_read_smaps(t->pid, &vs, err, sizeof(err)) < 0)
		return false;
	bool ok = true;
	for (uint32_t k = 0; k < u->nranges && ok; k++) {
		const struct um_range *g = &u->ranges[k];
		uint64_t covered = 0;
		for (size_t i = 0; i < vs.n && ok; i++) {
			const struct pf_vma *v = &vs.v[i];
			if (v->end <= g->start || v->start >= g->end)
				continue;
			covered += (v->end < g->end ? v->end : g->end) -
				   (v->start > g->start ? v->start : g->start);
			ok = (v->uffd_flags & PF_VM_UFFD_MASK) == (g->modes & MODE_MASK);
		}
		ok = ok && covered == g->end - g->start;
	}
	pf_vmas_free(&vs);
	return ok;
}

/* A uffd that a FORK event delivered learns its child's pid in the shim
 * only if the fork() wrapper sees it; when the reader noted the event after
 * fork() returned, the model says "unknown process".  Find that child among
 * the dumped tasks: the one child of the forking process whose registered
 * VMAs are exactly the uffd's ranges. */
static void resolve_unknown_mm(void)
{
	for (size_t i = 0; i < ucr_task_count(); i++) {
		struct ucr_task *q = ucr_task_at(i);
		if (!q->shimmed)
			continue;
		for (uint32_t k = 0; k < q->st.nuffds; k++) {
			struct um_uffd *u = q->st.uffds[k];
			if (u->mm_pid || u->origin != UM_ORIGIN_FORK_EVENT)
				continue;
			const struct um_uffd *from = u->parent_id > 0 ?
				um_uffd_by_id(&q->st, (uint32_t)u->parent_id) : NULL;
			pid_t forker = from && from->mm_pid > 0 ? from->mm_pid : q->pid;
			struct ucr_task *found = NULL;
			int nfound = 0;
			for (size_t c = 0; c < ucr_task_count(); c++) {
				struct ucr_task *t = ucr_task_at(c);
				if (t == q && forker != q->pid)
					continue;
				if (ppid_of(t->pid) != forker || !vmas_match(t, u))
					continue;
				found = t;
				nfound++;
			}
			if (nfound == 1) {
				u->mm_pid = found->pid;
				ucr_info("pid %d: uffd %u (from a FORK event, the model does not know for "
					 "which child) serves pid %d: the only child of pid %d whose "
					 "registered memory is exactly its ranges", q->pid, u->id,
					 found->pid, forker);
			} else {
				ucr_debug("pid %d: uffd %u (FORK event) serves an unknown process: %d "
					  "candidate%s", q->pid, u->id, nfound, nfound == 1 ? "" : "s");
			}
		}
	}
}

static int checkpoint_all(void)
{
	char err[512];
	int rc = 0;
	/* Frozen now: the connections can go.  The shim's control thread is
	 * frozen inside its read; it sees the end of the connection (and
	 * reopens its gate) only when the task runs again: after a failed
	 * dump, with --leave-running, or after a restore (CRIU restores the
	 * half-closed socket as it is). */
	for (size_t i = 0; i < ucr_task_count(); i++)
		ucr_task_release(ucr_task_at(i));
	for (size_t i = 0; i < ucr_task_count(); i++) {
		struct ucr_task *t = ucr_task_at(i);
		if (ucr_task_scan(t, err, sizeof(err)) < 0) {
			ucr_err("pid %d: %s", t->pid, err);
			return -1;
		}
	}
	resolve_unknown_mm();
	for (size_t i = 0; i < ucr_task_count(); i++) {
		struct ucr_task *t = ucr_task_at(i);
		if (!t->shimmed && t->shim_mapped && t->nufds)
			ucr_warn("pid %d runs under uffdshim and holds a uffd, but its control socket "
				 "did not answer (is criu in another network namespace? the socket is "
				 "abstract): using the kernel's view of it", t->pid);
		if (!t->shimmed) {
			char reason[1024];
			ucr_unshimmed_check_task(t, reason, sizeof(reason));
			if (reason[0]) {
				ucr_err("%s", reason);
				rc = -1;
				continue;
			}
		}
		if (t->uffd_vma_flags && !memory_served(t)) {
			char fl[32];
			pf_uffd_flags_str(t->uffd_vma_flags, fl, sizeof(fl));
			ucr_err("pid %d has memory registered with userfaultfd (smaps %s) but no uffd "
				"of this dump is known to serve it%s: after a restore that memory would "
				"be plain zero-filled memory, so the dump is refused (dump the process "
				"that holds its uffd in the same tree, under uffdshim)", t->pid, fl,
				t->shimmed ? "" : " (the process is not running under uffdshim and "
				"holds no uffd itself)");
			rc = -1;
			continue;
		}
		if (t->shimmed && verify_task(t) < 0)
			rc = -1;
	}
	return rc;
}

int ucr_checkpoint_devices(int pid)
{
	if (ucr_stage != UCR_STAGE_DUMP)
		return -ENOTSUP;
	if (!ucr_task_get(pid, false)) {
		/* A task CRIU did not pause?  Take it in unshimmed. */
		if (!ucr_task_get(pid, true))
			return -ENOMEM;
		if (checked) {
			char err[512];
			struct ucr_task *t = ucr_task_get(pid, false);
			if (ucr_task_scan(t, err, sizeof(err)) < 0) {
				ucr_err("pid %d: %s", pid, err);
				return -EIO;
			}
		}
	}
	if (!checked) {
		checked = true;
		checked_rc = checkpoint_all();
		if (checked_rc < 0)
			return -EIO;
	}
	return -ENOTSUP;
}

/* ---- DUMP_EXT_FILE: one uffd file ---- */

static void write_state_images(void)
{
	int dirfd = ucr_image_dir();
	for (size_t i = 0; i < ucr_task_count(); i++) {
		struct ucr_task *t = ucr_task_at(i);
		if (t->state_written || (!t->shimmed && !t->have_fb))
			continue;
		void *blob = t->blob;
		size_t blen = t->bloblen;
		void *own = NULL;
		if (!t->shimmed) { /* the fallback's view, in the same form */
			blen = um_serialize_size(&t->fb);
			own = blob = malloc(blen);
			if (!blob)
				continue;
			blen = um_serialize(&t->fb, blob, blen);
		}
		struct umi_process proc;
		memset(&proc, 0, sizeof(proc));
		proc.pid = t->pid;
		char path[64], comm[16] = "";
		snprintf(path, sizeof(path), "/proc/%d/exe", t->pid);
		ssize_t n = readlink(path, proc.exe, sizeof(proc.exe) - 1);
		proc.exe[n > 0 ? n : 0] = 0;
		snprintf(path, sizeof(path), "/proc/%d/comm", t->pid);
		FILE *f = fopen(path, "re");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = 0;
			fclose(f);
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		size_t cap = umi_state_file_size(blen, 0, 1);
		void *img = malloc(cap);
		if (img) {
			size_t len = umi_write_state_file(img, cap, t->pid, comm,
							  (uint64_t)ts.tv_sec * 1000000000ull +
								  (uint64_t)ts.tv_nsec,
							  blob, blen, NULL, 0, &proc);
			char name[64];
			snprintf(name, sizeof(name), UCR_STATE_NAME_FMT, t->pid);
			int rc = len ? ucr_write_file(dirfd, name, img, len) : -EINVAL;
			if (rc < 0)
				ucr_warn("cannot write %s: %s", name, strerror(-rc));
			else
				t->state_written = true;
			free(img);
		}
		free(own);
	}
}

/* The uffd as the shim models it: the model of the process whose memory it
 * serves if that process holds it, else the first holder's. */
static struct um_uffd *from_models(uint64_t ino, struct ucr_task **model_task,
				   char *reason, size_t len)
{
	struct um_uffd *best = NULL;
	*model_task = NULL;
	for (size_t i = 0; i < ucr_task_count(); i++) {
		struct ucr_task *t = ucr_task_at(i);
		if (!ucr_task_ufd(t, ino) || !t->shimmed)
			continue;
		struct um_uffd *u = um_uffd_by_ino(&t->st, ino);
		if (!u) {
			snprintf(reason, len, "pid %d runs under uffdshim but its model does not "
				 "know its uffd with inode %llu (transient: try again)", t->pid,
				 (unsigned long long)ino);
			return NULL;
		}
		if (!best || (u->mm_pid == t->st.pid && best->mm_pid != (*model_task)->st.pid)) {
			best = u;
			*model_task = t;
		}
	}
	if (!best)
		snprintf(reason, len, "no shimmed holder");
	return best;
}

static int fill_record(struct ucr_rec *r, int lfd, uint32_t id, uint64_t ino,
		       const struct um_uffd *u, const struct ucr_task *model_task,
		       char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->h.id = id;
	r->h.ino = ino;
	r->h.source = model_task && model_task->shimmed ? UCR_SRC_SHIM : UCR_SRC_KERNEL;
	r->h.mm_pid = u->mm_pid;
	r->h.model_pid = r->h.source == UCR_SRC_SHIM ? model_task->pid : 0;
	r->h.model_uffd = r->h.source == UCR_SRC_SHIM ? u->id : 0;

	/* The kernel's word on features and flags (criu's copy shares the file). */
	struct pf_fdinfo fi;
	if (pf_read_fdinfo(getpid(), lfd, &fi, err, errlen) < 0)
		return -1;
	if (!fi.has_api) {
		snprintf(err, errlen, "fdinfo of the uffd has no API line");
		return -1;
	}
	r->h.api_done = (fi.api_features & KERNEL_FEATURE_INITIALIZED) != 0;
	r->h.features = fi.api_features & ~KERNEL_FEATURE_INITIALIZED;
	int fl = fcntl(lfd, F_GETFL);
	r->h.file_flags = fl < 0 ? 0 : (uint32_t)fl;
	r->h.create_flags = O_CLOEXEC | (r->h.file_flags & O_NONBLOCK) |
			    (u->create_flags & UFFD_USER_MODE_ONLY);
	if (r->h.source == UCR_SRC_SHIM &&
	    (!!u->api_done != r->h.api_done ||
	     (u->api_done && (u->features_requested | r->h.features) != r->h.features)))
		ucr_warn("uffd inode %llu: the model says API %s with features %#llx, the kernel "
			 "%s with %#llx: the kernel's are restored", (unsigned long long)ino,
			 u->api_done ? "done" : "not done",
			 (unsigned long long)u->features_requested,
			 r->h.api_done ? "done" : "not done", (unsigned long long)r->h.features);

	/* Holders. */
	size_t nh = 0;
	for (size_t i = 0; i < ucr_task_count(); i++)
		for (size_t k = 0; k < ucr_task_at(i)->nufds; k++)
			nh += ucr_task_at(i)->ufds[k].ino == ino;
	r->holders = calloc(nh ? nh : 1, sizeof(*r->holders));
	r->ranges = calloc(u->nranges ? u->nranges : 1, sizeof(*r->ranges));
	if (!r->holders || !r->ranges) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < ucr_task_count(); i++) {
		const struct ucr_task *t = ucr_task_at(i);
		for (size_t k = 0; k < t->nufds; k++)
			if (t->ufds[k].ino == ino)
				r->holders[r->h.nholders++] = (struct ucr_holder){
					.pid = t->pid, .fd = t->ufds[k].fd,
					.fd_flags = t->ufds[k].fd_flags};
	}

	/* Ranges, write-protected pages, present pages. */
	int pmfd = pf_pagemap_open(u->mm_pid, err, errlen);
	if (pmfd < 0)
		return -1;
	struct ucr_runs wp = {0}, present = {0};
	int rc = 0;
	bool wp_from_kernel = r->h.source == UCR_SRC_KERNEL || u->wp_async;
	for (uint32_t k = 0; k < u->nranges && !rc; k++) {
		const struct um_range *g = &u->ranges[k];
		r->ranges[r->h.nranges++] = (struct ucr_range){
			.start = g->start, .end = g->end, .modes = g->modes & MODE_MASK,
			.backing = g->map.backing};
		if (g->modes & UFFDIO_REGISTER_MODE_WP) {
			if (wp_from_kernel) {
				rc = ucr_pagemap_runs(pmfd, g->start, g->end, UCR_PM_UFFD_WP, &wp);
			} else {
				uint64_t cur = g->start, rs, re;
				while (!rc && um_wp_next_run(&u->wp, &cur, g->end, &rs, &re))
					rc = ucr_runs_add(&wp, rs, (re - rs) / UM_PAGE_SIZE);
			}
		}
		if (!rc)
			rc = ucr_pagemap_runs(pmfd, g->start, g->end, UCR_PM_PRESENT, &present);
	}
	close(pmfd);
	if (rc < 0) {
		snprintf(err, errlen, "reading /proc/%d/pagemap: %s", u->mm_pid, strerror(-rc));
		ucr_runs_free(&wp);
		ucr_runs_free(&present);
		return -1;
	}
	r->wp = wp.v;
	r->h.nwp = (uint32_t)wp.n;
	r->present = present.v;
	r->h.npresent = (uint32_t)present.n;
	return 0;
}

int ucr_dump_ext_file(int fd, int id)
{
	if (ucr_stage != UCR_STAGE_DUMP || !ucr_fd_is_uffd(0, fd))
		return -ENOTSUP;
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		ucr_err("file id %#x: fstat: %s", id, strerror(errno));
		return -errno;
	}
	uint64_t ino = sb.st_ino;
	if (!checked) {
		checked = true;
		checked_rc = checkpoint_all();
	}
	if (checked_rc < 0)
		return -EIO;

	bool any = false, any_shimmed = false;
	for (size_t i = 0; i < ucr_task_count(); i++) {
		const struct ucr_task *t = ucr_task_at(i);
		if (ucr_task_ufd(t, ino)) {
			any = true;
			any_shimmed |= t->shimmed;
		}
	}
	if (!any) {
		ucr_err("file id %#x: uffd inode %llu is not open in any task this plugin saw "
			"(was PAUSE_DEVICES skipped?)", id, (unsigned long long)ino);
		return -EIO;
	}
	char reason[1024] = "";
	struct ucr_task *model_task = NULL;
	struct um_uffd *u;
	if (any_shimmed) {
		u = from_models(ino, &model_task, reason, sizeof(reason));
	} else {
		u = ucr_unshimmed_build(ino, fd, &model_task, reason, sizeof(reason));
		if (u)
			model_task = NULL; /* the kernel's view: no shim model */
	}
	if (!u) {
		ucr_err("cannot checkpoint uffd inode %llu (file id %#x): %s",
			(unsigned long long)ino, id, reason);
		return -EIO;
	}
	if (u->mm_pid <= 0 || !ucr_task_get(u->mm_pid, false)) {
		ucr_err("cannot checkpoint uffd inode %llu (file id %#x): it serves the memory of "
			"%s%d, which is not part of this dump (dump that process tree together)",
			(unsigned long long)ino, id, u->mm_pid > 0 ? "pid " : "an unknown process ",
			u->mm_pid);
		return -EIO;
	}

	struct ucr_rec r;
	char err[512];
	if (fill_record(&r, fd, (uint32_t)id, ino, u, model_task, err, sizeof(err)) < 0) {
		ucr_err("file id %#x (uffd inode %llu): %s", id, (unsigned long long)ino, err);
		ucr_rec_free(&r);
		return -EIO;
	}
	int rc = ucr_rec_write(ucr_image_dir(), &r);
	if (rc < 0) {
		ucr_err("file id %#x: writing its record: %s", id, strerror(-rc));
		ucr_rec_free(&r);
		return rc;
	}
	struct ucr_runs wpv = {.v = r.wp, .n = r.h.nwp}, prv = {.v = r.present, .n = r.h.npresent};
	char modes[64] = "", holders[160] = "";
	for (uint32_t k = 0; k < r.h.nholders && strlen(holders) < sizeof(holders) - 24; k++)
		snprintf(holders + strlen(holders), sizeof(holders) - strlen(holders), "%s%d:%d",
			 k ? "," : "", r.holders[k].pid, r.holders[k].fd);
	uint64_t allm = 0;
	for (uint32_t k = 0; k < r.h.nranges; k++)
		allm |= r.ranges[k].modes;
	um_modes_str(allm, modes, sizeof(modes));
	ucr_info("file id %#x: uffd inode %llu (pid:fd %s) serves pid %d: %u range%s (%s), "
		 "%llu write-protected and %llu present pages, features %#llx%s, flags %#o; "
		 "from %s", id, (unsigned long long)ino, holders, r.h.mm_pid, r.h.nranges,
		 r.h.nranges == 1 ? "" : "s", allm ? modes : "none",
		 (unsigned long long)ucr_runs_pages(&wpv), (unsigned long long)ucr_runs_pages(&prv),
		 (unsigned long long)r.h.features, r.h.api_done ? "" : " (no UFFDIO_API yet)",
		 r.h.file_flags, r.h.source == UCR_SRC_SHIM ? "the shim's model" :
		 "the kernel's view (process not under uffdshim)");
	if (r.h.source == UCR_SRC_SHIM)
		ucr_info("file id %#x: model of pid %d, uffd %u", id, r.h.model_pid, r.h.model_uffd);
	ucr_rec_free(&r);
	write_state_images();
	if (!inventory_added && add_inventory_plugin) {
		if (add_inventory_plugin(UCR_PLUGIN_NAME) < 0) {
			ucr_err("cannot add %s to the inventory", UCR_PLUGIN_NAME);
			return -EIO;
		}
		inventory_added = true;
	}
	return 0;
}

void ucr_dump_fini(int ret)
{
	if (ucr_task_count())
		ucr_debug("dump %s: releasing %zu task record%s", ret ? "failed" : "done",
			  ucr_task_count(), ucr_task_count() == 1 ? "" : "s");
	ucr_tasks_free();
	checked = false;
	checked_rc = 0;
	inventory_added = false;
}
