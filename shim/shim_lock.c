/* shim_lock.c - the model lock (a futex mutex that knows its owner thread,
 * so a wrapper running in a signal handler on that thread can tell) and the
 * quiesce gate that lets a dump see no uffd operation in flight. */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"
#include "shim_raw.h"

/* A futex mutex that knows its owner thread (the address of a TLS marker:
 * no system call to learn it). */
struct mutex {
	int word;          /* 0 free, 1 locked, 2 locked with waiters */
	const void *owner;
};

static struct mutex model_mutex, order_mutex;
static __thread char tls_marker __attribute__((tls_model("initial-exec")));

static long futex(int *uaddr, int op, int val, const struct timespec *ts)
{
	return RAW6(SYS_futex, uaddr, op, val, ts, 0, 0);
}

static void mutex_lock(struct mutex *m)
{
	int c = 0;
	if (!__atomic_compare_exchange_n(&m->word, &c, 1, false, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED)) {
		if (c != 2)
			c = __atomic_exchange_n(&m->word, 2, __ATOMIC_ACQUIRE);
		while (c != 0) {
			futex(&m->word, FUTEX_WAIT_PRIVATE, 2, NULL);
			c = __atomic_exchange_n(&m->word, 2, __ATOMIC_ACQUIRE);
		}
	}
	__atomic_store_n(&m->owner, &tls_marker, __ATOMIC_RELAXED);
}

static void mutex_unlock(struct mutex *m)
{
	__atomic_store_n(&m->owner, NULL, __ATOMIC_RELAXED);
	if (__atomic_exchange_n(&m->word, 0, __ATOMIC_RELEASE) == 2)
		futex(&m->word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static bool mutex_mine(const struct mutex *m)
{
	return __atomic_load_n(&m->owner, __ATOMIC_RELAXED) == &tls_marker;
}

void shim_lock(void)
{
	mutex_lock(&model_mutex);
}

void shim_unlock(void)
{
	mutex_unlock(&model_mutex);
}

bool shim_lock_held_by_me(void)
{
	return mutex_mine(&model_mutex);
}

bool shim_order_lock(void)
{
	if (mutex_mine(&order_mutex))
		return false; /* re-entered from a signal handler: go unordered */
	mutex_lock(&order_mutex);
	return true;
}

void shim_order_unlock(void)
{
	mutex_unlock(&order_mutex);
}

bool shim_model_enter(void)
{
	if (unlikely(shim_lock_held_by_me())) {
		G.model.missed_updates++;
		return false;
	}
	shim_lock();
	return true;
}

bool shim_lock_after_fork_child(void)
{
	bool was_held = model_mutex.word != 0;
	model_mutex = (struct mutex){0, NULL};
	order_mutex = (struct mutex){0, NULL};
	return was_held;
}

/* ---- the gate ---- */
static int gate_closed;    /* futex word: 1 while a quiesce holds the gate */
static int inflight;       /* operations between enter and leave */

void shim_gate_enter(void)
{
	for (;;) {
		while (__atomic_load_n(&gate_closed, __ATOMIC_ACQUIRE))
			futex(&gate_closed, FUTEX_WAIT_PRIVATE, 1, NULL);
		__atomic_add_fetch(&inflight, 1, __ATOMIC_SEQ_CST);
		if (!__atomic_load_n(&gate_closed, __ATOMIC_SEQ_CST))
			return;
		/* A quiesce started meanwhile: step back and wait. */
		if (__atomic_sub_fetch(&inflight, 1, __ATOMIC_SEQ_CST) == 0)
			futex(&inflight, FUTEX_WAKE_PRIVATE, 1, NULL);
	}
}

void shim_gate_leave(void)
{
	if (__atomic_sub_fetch(&inflight, 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&gate_closed, __ATOMIC_RELAXED))
		futex(&inflight, FUTEX_WAKE_PRIVATE, 1, NULL);
}

int shim_quiesce(int timeout_ms)
{
	__atomic_store_n(&gate_closed, 1, __ATOMIC_SEQ_CST);
	struct timespec start;
	RAW2(SYS_clock_gettime, CLOCK_MONOTONIC, &start);
	for (;;) {
		int n = __atomic_load_n(&inflight, __ATOMIC_SEQ_CST);
		if (n == 0)
			break;
		struct timespec now;
		RAW2(SYS_clock_gettime, CLOCK_MONOTONIC, &now);
		long waited = (now.tv_sec - start.tv_sec) * 1000 +
			      (now.tv_nsec - start.tv_nsec) / 1000000;
		if (waited >= timeout_ms) {
			shim_resume();
			return -ETIMEDOUT;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		futex(&inflight, FUTEX_WAIT_PRIVATE, n, &ts);
	}
	shim_lock();
	return 0;
}

void shim_resume(void)
{
	if (shim_lock_held_by_me())
		shim_unlock();
	__atomic_store_n(&gate_closed, 0, __ATOMIC_SEQ_CST);
	futex(&gate_closed, FUTEX_WAKE_PRIVATE, 1 << 30, NULL);
}

void shim_gate_after_fork_child(void)
{
	gate_closed = 0;
	inflight = 0;
}
