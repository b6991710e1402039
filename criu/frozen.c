/* frozen.c - the checks made once CRIU has frozen every task of the dump
 * (first CHECKPOINT_DEVICES call): release the shims' connections, list each
 * task's uffds, and refuse the dump when it would not restore exactly:
 *   - a task not under the shim with more than one uffd (unshimmed.c);
 *   - uffd-registered memory that no uffd of the dump is known to serve;
 *   - a shim model that disagrees with the kernel (recorder/verify.c, run on
 *     each task's model together with the uffds other tasks' models hold for
 *     its memory).
 * It also names the child a FORK-event uffd serves when the model does not. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ucr.h"
#include "uffd_compat.h"
#include "verify.h"

#define MODE_MASK (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | \
		   UFFDIO_REGISTER_MODE_MINOR)

/* The uffds other dumped tasks' models hold on t's memory (a FORK-event
 * reader holds the child's, a handler the one it received): verify counts
 * their ranges and write-protected pages as t's registrations. */
static int foreign_state(const struct ucr_task *t, struct um_state *out)
{
	um_state_init(out, t->pid);
	pid_t self = t->st.pid > 0 ? t->st.pid : t->pid;
	for (size_t i = 0; i < ucr_task_count(); i++) {
		const struct ucr_task *q = ucr_task_at(i);
		if (q == t || !q->shimmed)
			continue;
		for (uint32_t k = 0; k < q->st.nuffds; k++) {
			const struct um_uffd *u = q->st.uffds[k];
			if (u->mm_pid != self || um_uffd_by_ino(out, u->ino))
				continue;
			if (!um_uffd_clone(out, u)) {
				um_state_free(out);
				return -1;
			}
		}
	}
	return 0;
}

static int verify_task(const struct ucr_task *t)
{
	struct um_state foreign;
	if (foreign_state(t, &foreign) < 0) {
		ucr_err("pid %d: out of memory", t->pid);
		return -1;
	}
	struct verify_report rep;
	int rc = verify_state_with(&t->st, &foreign, t->pid, &rep);
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
	um_state_free(&foreign);
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

int ucr_frozen_checks(void)
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
