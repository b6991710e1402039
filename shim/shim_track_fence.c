/* shim_track_fence.c - the two fences between dirty tracking's cuts and the
 * app's calls:
 *   - a cut never falls between an app's uffd call and the mark dirty
 *     tracking makes of it afterwards (op fence);
 *   - while the monitor reads the pages of a cut, the app's calls that take
 *     pages away wait (zap hold).
 * docs/design.md, "Dirty tracking". */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>

#include "shim.h"
#include "shim_raw.h"

/* ---- the app's resolutions and the cut ----
 * An app's COPY/ZEROPAGE/CONTINUE/POISON/MOVE/WRITEPROTECT(0) is marked after
 * the kernel call, and the kernel call already woke the faulting thread: a
 * cut between the two would report the page in this epoch (the scan) and
 * again in the next (the late mark), a false positive.  So a cut waits for
 * such calls in flight, and calls wait while a cut runs. */
static int cut_running, ops_in_flight;

void shim_track_op_begin(void)
{
	for (;;) {
		while (__atomic_load_n(&cut_running, __ATOMIC_SEQ_CST))
			RAW6(SYS_futex, &cut_running, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
		__atomic_add_fetch(&ops_in_flight, 1, __ATOMIC_SEQ_CST);
		if (!__atomic_load_n(&cut_running, __ATOMIC_SEQ_CST))
			return;
		shim_track_op_end(); /* a cut began meanwhile: let it go first */
	}
}

void shim_track_op_end(void)
{
	if (__atomic_sub_fetch(&ops_in_flight, 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&cut_running, __ATOMIC_SEQ_CST))
		RAW6(SYS_futex, &ops_in_flight, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void shim_track_cut_begin(void)
{
	__atomic_store_n(&cut_running, 1, __ATOMIC_SEQ_CST);
	int n;
	while ((n = __atomic_load_n(&ops_in_flight, __ATOMIC_SEQ_CST)) != 0) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		RAW6(SYS_futex, &ops_in_flight, FUTEX_WAIT_PRIVATE, n, &ts, NULL, 0);
	}
}

void shim_track_cut_end(void)
{
	__atomic_store_n(&cut_running, 0, __ATOMIC_SEQ_CST);
	RAW6(SYS_futex, &cut_running, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
}

/* ---- reading an epoch ----
 * After a cut the monitor reads the pagemap and then the pages it found
 * present (process_vm_readv).  If the app zaps such a page in between
 * (MADV_DONTNEED, munmap and a new mapping there, UFFDIO_MOVE away), the
 * monitor's read faults it in again: the zero page where no uffd watches
 * (QEMU's post-copy then finds a page present that it discarded and must
 * place: UFFDIO_COPY fails with EEXIST), a fault the app never caused where
 * one does.  So from each cut until the monitor says it has read the pages
 * (UCTL_TRACK_READ_DONE), or for 5 s at most, the app's calls that take
 * pages of tracked memory away wait; and a cut waits for such calls already
 * in the kernel (at most 1 s), so none lands between the cut and the read.
 * Like the op fence: a call counts itself in flight, then looks for a hold;
 * the cut sets the hold, then looks for calls in flight. */
#define ZAP_HOLD_MAX_NS (5ull * 1000 * 1000 * 1000)
#define ZAP_DRAIN_MAX_NS (1000ull * 1000 * 1000)
int shim_track_zap_fence; /* tracking with UCTL_TRACK_HOLD_ZAPS is on */
static int zap_hold, zaps_in_flight;
static uint64_t zap_hold_until;

void shim_track_zap_hold_begin(void)
{
	__atomic_store_n(&zap_hold_until, shim_now_ns() + ZAP_HOLD_MAX_NS, __ATOMIC_SEQ_CST);
	__atomic_store_n(&zap_hold, 1, __ATOMIC_SEQ_CST);
	uint64_t t0 = shim_now_ns();
	int n;
	while ((n = __atomic_load_n(&zaps_in_flight, __ATOMIC_SEQ_CST)) != 0) {
		if (shim_now_ns() - t0 > ZAP_DRAIN_MAX_NS) {
			shim_log("dirty tracking: an app's munmap/madvise/mremap did not return "
				 "within 1 s; the cut goes on");
			break;
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		RAW6(SYS_futex, &zaps_in_flight, FUTEX_WAIT_PRIVATE, n, &ts, NULL, 0);
	}
}

void shim_track_zap_hold_end(void)
{
	if (__atomic_exchange_n(&zap_hold, 0, __ATOMIC_SEQ_CST))
		RAW6(SYS_futex, &zap_hold, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
}

void shim_track_zap_end_slow(void)
{
	if (__atomic_sub_fetch(&zaps_in_flight, 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&zap_hold, __ATOMIC_SEQ_CST))
		RAW6(SYS_futex, &zaps_in_flight, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Wait while the monitor reads (at most until the hold lapses). */
static void wait_hold(void)
{
	while (__atomic_load_n(&zap_hold, __ATOMIC_SEQ_CST)) {
		uint64_t now = shim_now_ns(), until = __atomic_load_n(&zap_hold_until, __ATOMIC_SEQ_CST);
		if (now >= until) {
			shim_log("dirty tracking: the monitor did not finish reading within 5 s; "
				 "the app's call goes on");
			shim_track_zap_hold_end();
			break;
		}
		uint64_t d = until - now < 100000000ull ? until - now : 100000000ull;
		struct timespec ts = {0, (long)d};
		RAW6(SYS_futex, &zap_hold, FUTEX_WAIT_PRIVATE, 1, &ts, NULL, 0);
	}
}

bool shim_track_zap_begin_slow(uint64_t start, uint64_t len)
{
	int err = errno;
	bool touches = true;
	if (shim_model_enter()) {
		touches = shim_track_touches_locked(start, len ? len : UM_PAGE_SIZE);
		shim_unlock();
	}
	for (;;) {
		if (touches)
			wait_hold();
		__atomic_add_fetch(&zaps_in_flight, 1, __ATOMIC_SEQ_CST);
		if (!touches || !__atomic_load_n(&zap_hold, __ATOMIC_SEQ_CST))
			break;
		shim_track_zap_end_slow(); /* a cut held zaps meanwhile: after it */
	}
	errno = err;
	return true;
}

void shim_track_fence_after_fork_child(void)
{
	/* Only this thread came over: nothing of ours is in flight or held. */
	cut_running = ops_in_flight = 0;
	zap_hold = zaps_in_flight = 0;
	shim_track_zap_fence = 0;
}
