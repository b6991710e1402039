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

#define MODE_MASK (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | \
		   UFFDIO_REGISTER_MODE_MINOR)
#define KERNEL_FEATURE_INITIALIZED ((uint64_t)1 << 31)

static bool checked;       /* ucr_frozen_checks ran */
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

/* ---- CHECKPOINT_DEVICES: every task is frozen (checks: frozen.c) ---- */

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
		checked_rc = ucr_frozen_checks();
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
		checked_rc = ucr_frozen_checks();
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
