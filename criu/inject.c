/* inject.c - run a system call inside a task that this process traces and
 * that sits in a ptrace stop (at RESUME_DEVICES_LATE CRIU's master traces
 * every restored thread, stopped at a system-call exit).  Used where only
 * code running in a process can do something: creating a userfaultfd bound
 * to that process's address space, or putting an fd into its fd table.
 *
 * How: two bytes of an executable mapping of the task are replaced by the
 * x86-64 "syscall" instruction, the registers point there with the call's
 * number and arguments, every signal but SIGTRAP is blocked, and the task is
 * run with PTRACE_SYSCALL to the entry and then the exit of that call; the
 * result is taken from rax.  ucr_inj_end puts back the bytes, the registers
 * and the signal mask, leaving the task in the same kind of stop as before. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ucr.h"

_Static_assert(sizeof(struct user_regs_struct) <= sizeof(((struct ucr_inj *)0)->saved_regs),
	       "register buffer");

#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK 0x420a
#define PTRACE_SETSIGMASK 0x420b
#endif

/* The first private executable mapping of tid: where the instruction goes. */
static uint64_t exec_area(pid_t tid)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", tid);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	uint64_t found = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;
		char perms[8];
		if (sscanf(line, "%llx-%llx %7s", &s, &e, perms) != 3)
			continue;
		if (perms[0] == 'r' && perms[2] == 'x' && perms[3] == 'p' && !strstr(line, "[vsyscall]")) {
			found = s;
			break;
		}
	}
	fclose(f);
	return found;
}

static bool traced_by_me(pid_t tid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	int tracer = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %d", &tracer) == 1)
			break;
	fclose(f);
	return tracer == getpid();
}

int ucr_inj_begin(struct ucr_inj *j, pid_t tid, char *err, size_t errlen)
{
	memset(j, 0, sizeof(*j));
	j->tid = tid;
	if (!traced_by_me(tid)) {
		snprintf(err, errlen, "task %d is not stopped under this criu's ptrace", tid);
		return -1;
	}
	struct user_regs_struct regs;
	if (ptrace(PTRACE_GETREGS, tid, NULL, &regs) < 0) {
		snprintf(err, errlen, "PTRACE_GETREGS %d: %s", tid, strerror(errno));
		return -1;
	}
	memcpy(j->saved_regs, &regs, sizeof(regs));
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(j->saved_mask), &j->saved_mask) < 0) {
		snprintf(err, errlen, "PTRACE_GETSIGMASK %d: %s", tid, strerror(errno));
		return -1;
	}
	j->ip = exec_area(tid);
	if (!j->ip) {
		snprintf(err, errlen, "task %d has no executable mapping to run a system call from",
			 tid);
		return -1;
	}
	errno = 0;
	j->saved_word = ptrace(PTRACE_PEEKTEXT, tid, (void *)j->ip, NULL);
	if (errno) {
		snprintf(err, errlen, "PTRACE_PEEKTEXT %d at %#llx: %s", tid,
			 (unsigned long long)j->ip, strerror(errno));
		return -1;
	}
	long word = (j->saved_word & ~0xffffL) | 0x050f; /* "syscall": 0f 05 */
	if (ptrace(PTRACE_POKETEXT, tid, (void *)j->ip, (void *)word) < 0) {
		snprintf(err, errlen, "PTRACE_POKETEXT %d: %s", tid, strerror(errno));
		return -1;
	}
	j->active = true;
	return 0;
}

/* Run tid to its next ptrace stop that is a system-call stop. */
static int step(struct ucr_inj *j, char *err, size_t errlen)
{
	for (int tries = 0; tries < 8; tries++) {
		if (ptrace(PTRACE_SYSCALL, j->tid, NULL, NULL) < 0) {
			snprintf(err, errlen, "PTRACE_SYSCALL %d: %s", j->tid, strerror(errno));
			return -1;
		}
		int status;
		pid_t w;
		while ((w = waitpid(j->tid, &status, __WALL)) < 0 && errno == EINTR)
			;
		if (w != j->tid) {
			snprintf(err, errlen, "waitpid %d: %s", j->tid, strerror(errno));
			return -1;
		}
		if (!WIFSTOPPED(status)) {
			snprintf(err, errlen, "task %d ended while a system call ran in it (status %#x)",
				 j->tid, status);
			j->active = false;
			return -1;
		}
		int sig = WSTOPSIG(status) & 0x7f;
		if (sig == SIGTRAP)
			return 0;
		/* Only unblockable signals get here (SIGSTOP): keep it for later. */
		j->deferred_sig = sig;
	}
	snprintf(err, errlen, "task %d keeps stopping with signals", j->tid);
	return -1;
}

long ucr_inj_call(struct ucr_inj *j, long nr, long a1, long a2, long a3, long a4, long a5,
		  long a6, char *err, size_t errlen)
{
	if (!j->active) {
		snprintf(err, errlen, "no injection session");
		return UCR_INJ_FAILED;
	}
	struct user_regs_struct regs;
	memcpy(&regs, j->saved_regs, sizeof(regs));
	regs.rip = j->ip;
	regs.rax = (unsigned long long)nr;
	regs.orig_rax = (unsigned long long)-1; /* no system-call restart on the way */
	regs.rdi = (unsigned long long)a1;
	regs.rsi = (unsigned long long)a2;
	regs.rdx = (unsigned long long)a3;
	regs.r10 = (unsigned long long)a4;
	regs.r8 = (unsigned long long)a5;
	regs.r9 = (unsigned long long)a6;
	regs.eflags &= ~(0x100ULL | 0x400ULL); /* TF, DF */
	uint64_t block = ~0ULL & ~(1ULL << (SIGTRAP - 1));
	if (ptrace(PTRACE_SETSIGMASK, j->tid, (void *)sizeof(block), &block) < 0 ||
	    ptrace(PTRACE_SETREGS, j->tid, NULL, &regs) < 0) {
		snprintf(err, errlen, "setting up task %d: %s", j->tid, strerror(errno));
		return UCR_INJ_FAILED;
	}
	if (step(j, err, errlen) < 0) /* entry */
		return UCR_INJ_FAILED;
	struct user_regs_struct now;
	if (ptrace(PTRACE_GETREGS, j->tid, NULL, &now) < 0) {
		snprintf(err, errlen, "PTRACE_GETREGS %d: %s", j->tid, strerror(errno));
		return UCR_INJ_FAILED;
	}
	if ((long)now.orig_rax != nr) {
		snprintf(err, errlen, "task %d stopped at system call %lld, not at the injected %ld",
			 j->tid, (long long)now.orig_rax, nr);
		return UCR_INJ_FAILED;
	}
	if (step(j, err, errlen) < 0) /* exit */
		return UCR_INJ_FAILED;
	if (ptrace(PTRACE_GETREGS, j->tid, NULL, &now) < 0) {
		snprintf(err, errlen, "PTRACE_GETREGS %d: %s", j->tid, strerror(errno));
		return UCR_INJ_FAILED;
	}
	return (long)now.rax;
}

int ucr_inj_end(struct ucr_inj *j)
{
	if (!j->active)
		return -1;
	int rc = 0;
	if (ptrace(PTRACE_POKETEXT, j->tid, (void *)j->ip, (void *)j->saved_word) < 0)
		rc = -1;
	if (ptrace(PTRACE_SETREGS, j->tid, NULL, j->saved_regs) < 0)
		rc = -1;
	if (ptrace(PTRACE_SETSIGMASK, j->tid, (void *)sizeof(j->saved_mask), &j->saved_mask) < 0)
		rc = -1;
	if (j->deferred_sig)
		kill(j->tid, j->deferred_sig);
	j->active = false;
	return rc;
}
