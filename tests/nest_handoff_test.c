/* nest_handoff_test.c - the carrier of nested memory leaves while another
 * client stays: no fault may fall between them.
 *
 * A registers a region MISSING first (it carries the kernel registration), B
 * registers it too (nested).  A toucher thread reads the region page after
 * page while A leaves, by UNREGISTER or by close().  Every page must come
 * from A (before it left, or the one fault its reader had in hand) or from
 * B (after): a zero page would be a fault
 * filled as if no uffd watched the memory, which a handoff of the kernel
 * registration from A to B would allow between its two calls.  The shim
 * keeps A's registration instead (docs/design.md, "Nesting": a carrier that
 * leaves).  Then B leaves too, and the memory must be free of any uffd
 * (smaps shows no "um", a touch is a plain zero page).  status --verify
 * agrees at each step.  Repeated ROUNDS times for each way of leaving. */
#include <pthread.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096ul
#define N 256
#define ROUNDS 20

struct client {
	char letter;
	int fd;
	pthread_t thr;
	volatile int faults, bad, eexist;
};

static void *handler(void *arg)
{
	struct client *c = arg;
	static __thread char page[PG];
	memset(page, c->letter, sizeof(page));
	for (;;) {
		struct uffd_msg m;
		ssize_t n = read(c->fd, &m, sizeof(m));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != sizeof(m))
			return NULL; /* closed, or cancelled */
		if (m.event != UFFD_EVENT_PAGEFAULT) {
			c->bad++;
			continue;
		}
		struct uffdio_copy cp = {.dst = m.arg.pagefault.address & ~(PG - 1),
					 .src = (uint64_t)page, .len = PG};
		/* EEXIST: the other filled it first (a fault A's reader held when
		 * A left was woken and went to B, as the kernel's UNREGISTER wakes) */
		if (ioctl(c->fd, UFFDIO_COPY, &cp) == 0)
			__atomic_add_fetch(&c->faults, 1, __ATOMIC_SEQ_CST);
		else if (errno == EEXIST)
			c->eexist++;
		else
			c->bad++;
	}
}

struct toucher {
	char *p;
	volatile int next;  /* pages touched so far */
	char seen[N];
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;
	for (int i = 0; i < N; i++) {
		t->seen[i] = *(volatile char *)(t->p + i * PG);
		__atomic_store_n(&t->next, i + 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static int uffd_flags_of(const char *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long s = 0, e = 0;
	int um = -1;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		char c;
		if (sscanf(line, "%lx-%lx %c", &a, &b, &c) == 3 && c != ' ') {
			s = a, e = b;
			continue;
		}
		if (!strncmp(line, "VmFlags:", 8) && (uintptr_t)p >= s && (uintptr_t)p < e) {
			um = strstr(line, " um") != NULL;
		}
	}
	if (f)
		fclose(f);
	return um;
}

/* One round: A leaves (by close when by_close) while the toucher runs. */
static bool round_once(bool by_close, int r, char *why, size_t whylen)
{
	struct client A = {.letter = 'A'}, B = {.letter = 'B'};
	A.fd = uffd_create(O_CLOEXEC);
	B.fd = uffd_create(O_CLOEXEC);
	char *p = map_anon(N);
	if (A.fd < 0 || B.fd < 0 || !p || uffd_api(A.fd, 0, NULL) < 0 || uffd_api(B.fd, 0, NULL) < 0) {
		snprintf(why, whylen, "setup: %s", strerror(errno));
		return false;
	}
	struct uffdio_register ra = {.range = {(uint64_t)p, N * PG},
				     .mode = UFFDIO_REGISTER_MODE_MISSING};
	struct uffdio_register rb = ra;
	if (ioctl(A.fd, UFFDIO_REGISTER, &ra) < 0 || ioctl(B.fd, UFFDIO_REGISTER, &rb) < 0) {
		snprintf(why, whylen, "register: %s", strerror(errno));
		return false;
	}
	pthread_create(&A.thr, NULL, handler, &A);
	pthread_create(&B.thr, NULL, handler, &B);
	struct toucher t = {.p = p};
	pthread_t tt;
	pthread_create(&tt, NULL, touch_main, &t);
	/* Leave at a different point each round. */
	int at = 8 + (r * 37) % (N / 2);
	while (__atomic_load_n(&t.next, __ATOMIC_SEQ_CST) < at)
		sched_yield();
	int a_fd = A.fd;
	if (by_close) {
		pthread_cancel(A.thr); /* its reader goes first, as an app would stop it */
		pthread_join(A.thr, NULL);
		close(a_fd);
	} else {
		struct uffdio_range rg = {(uint64_t)p, N * PG};
		if (ioctl(a_fd, UFFDIO_UNREGISTER, &rg) < 0) {
			snprintf(why, whylen, "A's UNREGISTER: %s", strerror(errno));
			return false;
		}
	}
	int a_after = __atomic_load_n(&A.faults, __ATOMIC_SEQ_CST);
	pthread_join(tt, NULL);
	int zeros = 0, others = 0, first_zero = -1;
	for (int i = 0; i < N; i++) {
		zeros += t.seen[i] == 0;
		others += t.seen[i] != 0 && t.seen[i] != 'A' && t.seen[i] != 'B';
		if (t.seen[i] == 0 && first_zero < 0)
			first_zero = i;
	}
	/* A handler counts its fault after the COPY that woke the toucher. */
	for (int i = 0; i < 1000 && A.faults + B.faults < N; i++)
		usleep(1000);
	bool ok1 = zeros == 0 && others == 0 && A.bad == 0 && B.bad == 0 &&
		   A.faults + B.faults == N && (by_close || A.faults <= a_after + 1);
	int v = shim_verify_self("after A left");
	/* B leaves: nothing of the registration may stay. */
	pthread_cancel(B.thr);
	pthread_join(B.thr, NULL);
	close(B.fd);
	char *q = map_anon(1);
	int um = uffd_flags_of(p);
	bool free_now = um == 0;
	if (!by_close)
		close(a_fd), pthread_cancel(A.thr), pthread_join(A.thr, NULL);
	int v2 = shim_verify_self("after both left");
	munmap(p, N * PG);
	munmap(q, PG);
	if (!ok1 || v || !free_now || v2) {
		snprintf(why, whylen, "round %d (A left after %d pages): %d zero pages (first %d), "
			 "%d foreign, A %d faults (%d when it left), B %d, bad %d/%d; verify %d/%d; "
			 "um after both left: %d", r, at, zeros, first_zero, others, A.faults, a_after,
			 B.faults, A.bad, B.bad, v, v2, um);
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	shim_reexec_if_needed(argv);
	int fd = uffd_create(O_CLOEXEC);
	if (fd < 0)
		skip_all("no userfaultfd: %s", uffd_skip_reason(errno));
	close(fd);
	plan(2);
	const char *how[2] = {"UNREGISTER", "close()"};
	for (int k = 0; k < 2; k++) {
		char why[512] = "";
		int r = 0;
		while (r < ROUNDS && round_once(k == 1, r, why, sizeof(why)))
			r++;
		ok(r == ROUNDS, "the carrier leaves by %s while a thread faults page after page, "
		   "%d rounds: every page came from A or B, never a zero page; A gets none after it "
		   "left; when B leaves too no registration stays; verify agrees%s%s", how[k],
		   ROUNDS, *why ? ": " : "", why);
	}
	return done_testing();
}
