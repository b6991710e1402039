/* shim_wrap_proc.c - process life cycle: fork (the atfork hooks in
 * shim_init.c do the child's side), clone without CLONE_VM, and the exec
 * family, which must keep the shim preloaded and hand the surviving uffds'
 * model to the new image. */
#include <alloca.h>
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"
#include "trace_format.h"
#include "uffd_compat.h"

#define ENSURE_INIT()                  \
	do {                           \
		if (unlikely(!real.fork)) \
			shim_init();   \
	} while (0)

/* A FORK event delivered to this process before fork() returned here
 * describes that child: now its pid is known. */
static void fork_done(pid_t child)
{
	if (!shim_model_enter())
		return;
	/* One FORK event per uffd of ours with EVENT_FORK and registrations.
	 * The kernel lets fork() return once the event is taken, which can be
	 * before the reader's read() has returned and recorded it: then leave
	 * the pid for shim_note_msgs. */
	for (uint32_t i = 0; i < G.model.nuffds; i++) {
		struct um_uffd *p = G.model.uffds[i];
		if (p->mm_pid != G.pid || !(p->features_requested & UFFD_FEATURE_EVENT_FORK) ||
		    !p->nranges)
			continue;
		struct um_uffd *c = NULL;
		for (uint32_t k = 0; k < G.model.nuffds && !c; k++) {
			struct um_uffd *u = G.model.uffds[k];
			if (u->origin == UM_ORIGIN_FORK_EVENT && u->mm_pid == 0 &&
			    u->parent_id == (int32_t)p->id)
				c = u;
		}
		if (c) {
			c->mm_pid = child;
			continue;
		}
		if (G.nfork_wait == 16) { /* its events went to another process */
			memmove(&G.fork_wait[0], &G.fork_wait[1], 15 * sizeof(G.fork_wait[0]));
			G.nfork_wait--;
		}
		G.fork_wait[G.nfork_wait].child = child;
		G.fork_wait[G.nfork_wait++].parent_id = p->id;
	}
	shim_unlock();
}

/* Forks whose children wait for nesting's FORK fix-ups go one at a time. */
static int fork_sync_lock;

static void fork_sync_acquire(int expect)
{
	while (expect && __atomic_exchange_n(&fork_sync_lock, 1, __ATOMIC_ACQUIRE))
		RAW6(SYS_futex, &fork_sync_lock, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
}

/* The parent, after fork/clone (r: its result). */
static void fork_sync_parent(int expect, long r)
{
	if (!expect)
		return;
	__atomic_store_n(&fork_sync_lock, 0, __ATOMIC_RELEASE);
	RAW6(SYS_futex, &fork_sync_lock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	if (r > 0)
		shim_nest_fork_parent_wait();
}

/* The child, before the app's code runs. */
static void fork_sync_child(int expect)
{
	fork_sync_lock = 0; /* another thread's fork may have held it */
	if (expect)
		shim_nest_fork_child_wait(expect);
}

pid_t fork(void)
{
	ENSURE_INIT();
	int expect = shim_nest_fork_prepare();
	fork_sync_acquire(expect);
	pid_t r = real.fork();
	if (r == 0) {
		fork_sync_child(expect);
		return 0;
	}
	fork_sync_parent(expect, r);
	if (r > 0) {
		int err = errno;
		fork_done(r);
		if (shim_tracing)
			shim_trace(UT_PROC_FORK, -1, 0, r, (uint64_t)r, 0, 0, 0, 0);
		errno = err;
	}
	return r;
}

/* clone() without CLONE_VM makes a copy of the process that runs no atfork
 * handler: the trampoline does the child's part. */
struct clone_tramp {
	int (*fn)(void *);
	void *arg;
	int expect;
};

static int clone_child(void *p)
{
	struct clone_tramp t = *(struct clone_tramp *)p;
	shim_after_fork_child();
	fork_sync_child(t.expect);
	return t.fn(t.arg);
}

int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	va_list ap;
	va_start(ap, arg);
	void *ptid = va_arg(ap, void *), *tls = va_arg(ap, void *), *ctid = va_arg(ap, void *);
	va_end(ap);
	ENSURE_INIT();
	if (flags & CLONE_VM)
		return real.clone(fn, stack, flags, arg, ptid, tls, ctid);
	struct clone_tramp t = {fn, arg, shim_nest_fork_prepare()};
	fork_sync_acquire(t.expect);
	int r = real.clone(clone_child, stack, flags, &t, ptid, tls, ctid);
	int err = errno;
	fork_sync_parent(t.expect, r);
	if (r > 0)
		fork_done(r);
	errno = err;
	return r;
}

/* ---- exec ---- */

/* Build the environment of the new image on the stack: LD_PRELOAD must
 * name the shim, UFFDSHIM_* settings carry over, and the model of the uffds
 * that survive exec is handed over in a memfd. */
#define MAX_EXTRA 8
static char **exec_env(char *const envp[], char **out, size_t cap, char *preload_buf,
		       size_t plen, char *handoff)
{
	size_t n = 0;
	bool have_preload = false;
	const char *extra[MAX_EXTRA];
	size_t nextra = 0;
	for (size_t i = 0; envp && envp[i] && n + MAX_EXTRA + 2 < cap; i++) {
		const char *e = envp[i];
		if (strncmp(e, "UFFDSHIM_HANDOFF=", 17) == 0)
			continue; /* stale */
		if (strncmp(e, "LD_PRELOAD=", 11) == 0) {
			if (!strstr(e, G.lib_path) && strlen(e) + strlen(G.lib_path) + 2 < plen) {
				size_t l = strlen(G.lib_path);
				memcpy(preload_buf, "LD_PRELOAD=", 11);
				memcpy(preload_buf + 11, G.lib_path, l);
				preload_buf[11 + l] = ':';
				strcpy(preload_buf + 12 + l, e + 11);
				e = preload_buf;
			}
			have_preload = true;
		}
		out[n++] = (char *)e;
	}
	if (!have_preload && G.lib_path[0] && strlen(G.lib_path) + 12 < plen) {
		memcpy(preload_buf, "LD_PRELOAD=", 11);
		strcpy(preload_buf + 11, G.lib_path);
		extra[nextra++] = preload_buf;
	}
	/* Settings the app's envp may have dropped. */
	static const char *const keep[] = {"UFFDSHIM_TRACE", "UFFDSHIM_DEBUG", NULL};
	for (int k = 0; keep[k]; k++) {
		const char *v = getenv(keep[k]);
		if (!v)
			continue;
		size_t kl = strlen(keep[k]);
		bool present = false;
		for (size_t i = 0; i < n; i++)
			if (strncmp(out[i], keep[k], kl) == 0 && out[i][kl] == '=')
				present = true;
		if (!present && nextra < MAX_EXTRA)
			extra[nextra++] = v - kl - 1; /* environ holds "KEY=value" */
	}
	if (handoff[0] && nextra < MAX_EXTRA)
		extra[nextra++] = handoff;
	for (size_t i = 0; i < nextra; i++)
		out[n++] = (char *)extra[i];
	out[n] = NULL;
	return out;
}

static size_t env_count(char *const envp[])
{
	size_t n = 0;
	while (envp && envp[n])
		n++;
	return n;
}

#define EXEC_PREPARE(envp)                                                            \
	ENSURE_INIT();                                                                \
	size_t cap_ = env_count(envp) + MAX_EXTRA + 4;                                \
	char **env_ = alloca(cap_ * sizeof(char *));                                  \
	char *pre_ = alloca(8192);                                                     \
	char handoff_[64];                                                            \
	int memfd_ = -1;                                                              \
	shim_exec_prepare(handoff_, sizeof(handoff_), &memfd_);                       \
	if (shim_tracing) {                                                           \
		shim_trace(UT_PROC_EXEC, -1, 0, 0, 0, 0, 0, 0, 0);                    \
		shim_trace_before_exec();                                             \
	}                                                                             \
	char **newenv_ = exec_env(envp, env_, cap_, pre_, 8192, handoff_)

#define EXEC_FINISH(r)                  \
	do {                            \
		int err_ = errno;       \
		shim_exec_failed(memfd_); \
		errno = err_;           \
		return (r);             \
	} while (0)

int execve(const char *path, char *const argv[], char *const envp[])
{
	EXEC_PREPARE(envp);
	int r = real.execve(path, argv, newenv_);
	EXEC_FINISH(r);
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
	EXEC_PREPARE(envp);
	int r = real.execveat(dirfd, path, argv, newenv_, flags);
	EXEC_FINISH(r);
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
	EXEC_PREPARE(envp);
	int r = real.fexecve(fd, argv, newenv_);
	EXEC_FINISH(r);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
	EXEC_PREPARE(envp);
	int r = real.execvpe(file, argv, newenv_);
	EXEC_FINISH(r);
}

/* execv/execvp/execl* use environ, which still names the shim; they reach
 * the kernel through glibc's internal execve, so wrap them too for the
 * handoff of surviving uffds. */
extern char **environ;

int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

/* The list forms: gather the arguments on the stack (as glibc does). */
#define LIST_ARGS(arg0, ap, argv)                                       \
	size_t n_ = 1;                                                  \
	va_start(ap, arg0);                                             \
	while (va_arg(ap, const char *))                                \
		n_++;                                                   \
	va_end(ap);                                                     \
	char **argv = alloca((n_ + 1) * sizeof(char *));               \
	argv[0] = (char *)(arg0);                                       \
	va_start(ap, arg0);                                             \
	for (size_t i_ = 1; i_ <= n_; i_++)                             \
		argv[i_] = va_arg(ap, char *)

int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	LIST_ARGS(arg, ap, argv);
	va_end(ap);
	return execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	LIST_ARGS(arg, ap, argv);
	va_end(ap);
	return execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	LIST_ARGS(arg, ap, argv);
	char *const *envp = va_arg(ap, char *const *);
	va_end(ap);
	return execve(path, argv, envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
		const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	ENSURE_INIT();
	size_t cap = env_count(envp) + MAX_EXTRA + 4;
	char **env = alloca(cap * sizeof(char *));
	char *pre = alloca(8192);
	char none[1] = "";
	return real.posix_spawn(pid, path, fa, attr, argv, exec_env(envp, env, cap, pre, 8192, none));
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
		 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	ENSURE_INIT();
	size_t cap = env_count(envp) + MAX_EXTRA + 4;
	char **env = alloca(cap * sizeof(char *));
	char *pre = alloca(8192);
	char none[1] = "";
	return real.posix_spawnp(pid, file, fa, attr, argv, exec_env(envp, env, cap, pre, 8192, none));
}
