/* shim_init.c - start-up of the preload library and the fork hooks. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"

struct shim_global G = {.pagemap_fd = -1};

static int debug_on;

size_t shim_utoa(uint64_t v, char *buf)
{
	char tmp[24];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = 0;
	return n;
}

void shim_log(const char *msg)
{
	if (!debug_on)
		return;
	RAW3(SYS_write, 2, "uffdshim: ", 10);
	RAW3(SYS_write, 2, msg, strlen(msg));
	RAW3(SYS_write, 2, "\n", 1);
}

bool shim_debug_enabled(void)
{
	return debug_on != 0;
}

uint64_t shim_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

bool shim_in_vm_sharing_child(void)
{
	return (pid_t)RAW0(SYS_getpid) != G.pid;
}

void shim_update_own_ranges(void)
{
	if (__atomic_load_n(&shim_nest_on, __ATOMIC_ACQUIRE))
		shim_nest_prune_locked();
	int own = 0;
	for (uint32_t i = 0; i < G.model.nuffds && !own; i++)
		own = G.model.uffds[i]->mm_pid == G.pid && G.model.uffds[i]->nranges > 0;
	__atomic_store_n(&G.own_ranges, own, __ATOMIC_RELEASE);
}

static void *raw_map(size_t len)
{
	long r = RAW6(SYS_mmap, 0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return (r < 0 && r > -4096) ? NULL : (void *)r;
}

static void raw_unmap(void *p, size_t len)
{
	RAW2(SYS_munmap, p, len);
}

static void *raw_remap(void *p, size_t old_len, size_t new_len)
{
	long r = RAW4(SYS_mremap, p, old_len, new_len, MREMAP_MAYMOVE);
	return (r < 0 && r > -4096) ? NULL : (void *)r;
}

static const struct um_alloc_ops raw_alloc = {raw_map, raw_unmap, raw_remap};

/* fork() does not take the model lock: with UFFD_FEATURE_EVENT_FORK the
 * kernel holds fork() until a reader takes the FORK event, and that reader
 * may be a thread of this process that needs the lock to record it.  If some
 * thread was inside a model update at the instant of fork, the child's copy
 * may be torn: the child then drops it (without touching it) and says so. */
void shim_after_fork_child(void)
{
	if (shim_lock_after_fork_child()) {
		uint32_t missed = G.model.missed_updates;
		memset(&G.model, 0, sizeof(G.model)); /* leak the torn copy */
		um_state_init(&G.model, 0);
		G.model.missed_updates = missed + 1;
		memset(shim_fdtab, 0, sizeof(shim_fdtab));
	}
	shim_gate_after_fork_child();
	G.pid = (pid_t)RAW0(SYS_getpid);
	if (G.pagemap_fd >= 0) { /* it was opened as the parent's /proc/self */
		shim_fd_set(G.pagemap_fd, FD_NONE);
		RAW1(SYS_close, G.pagemap_fd);
		G.pagemap_fd = -1;
	}
	um_after_fork_child(&G.model, G.pid);
	shim_update_own_ranges();
	shim_trace_after_fork_child();
	shim_track_after_fork_child();
	shim_pump_after_fork_child();
	shim_nest_after_fork_child();
	shim_ctl_after_fork_child();
}

void shim_init(void)
{
	if (G.initialized)
		return;
	G.initialized = 1;
	int saved = errno;
	um_alloc_set_ops(&raw_alloc);
	shim_real_resolve();
	debug_on = getenv("UFFDSHIM_DEBUG") != NULL;
	const char *nest = getenv("UFFDSHIM_NEST");
	shim_nest_enabled = !(nest && nest[0] == '0');
	G.pid = (pid_t)RAW0(SYS_getpid);
	um_state_init(&G.model, G.pid);
	Dl_info info;
	if (dladdr((void *)shim_init, &info) && info.dli_fname) {
		size_t n = strlen(info.dli_fname);
		if (n < sizeof(G.lib_path))
			memcpy(G.lib_path, info.dli_fname, n + 1);
	}
	pthread_atfork(NULL, NULL, shim_after_fork_child);
	shim_trace_init();
	shim_exec_adopt();
	shim_restore_from_env();
	/* UFFDSHIM_CONTROL=1 (uffd-record run sets it): the control socket from
	 * the start, so that a process that has no uffd (yet) can be tracked or
	 * watched by a monitor; otherwise it opens with the first uffd. */
	const char *ctl = getenv("UFFDSHIM_CONTROL");
	G.control_always = ctl && ctl[0] == '1';
	if (G.control_always)
		shim_ctl_ensure();
	errno = saved;
}

__attribute__((constructor)) static void shim_constructor(void)
{
	shim_init();
}

int shim_thread_start(void *(*fn)(void *), void *arg, size_t stack)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, stack);
	int rc = pthread_create(&t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}
