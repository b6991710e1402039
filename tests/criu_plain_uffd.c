/* criu_plain_uffd - a userfaultfd program that does NOT run under uffdshim,
 * for tests/criu_demos.sh (the CRIU plugin's kernel-view fallback).
 *
 *   criu_plain_uffd one   one uffd (UFFD_FEATURE_THREAD_ID, O_NONBLOCK) on a
 *                         64-page anonymous region registered MISSING|WP:
 *                         pages 0-31 filled (present), 32-63 never touched
 *                         (missing), pages 8-15 and 20-23 write-protected.
 *                         A handler thread serves MISSING faults with
 *                         UFFDIO_COPY of the page's pattern and WP faults by
 *                         unprotecting the page.  After "ready" it waits for
 *                         SIGUSR1, then checks: the uffd's fdinfo (features,
 *                         flags) is what it was; pages 0-31 hold their data;
 *                         writes to pages 8 and 20 raise WP faults, a write to
 *                         page 0 none; reading pages 32-63 raises exactly 32
 *                         MISSING faults and gives the pattern.  Ends with
 *                         "criu_plain_uffd: OK ..." (exit 0) or "FAIL ..."
 *   criu_plain_uffd two   two uffds, each registering its own region; waits
 *                         (the plugin must refuse to dump it).
 *
 * Without arguments it is a TAP test that skips (make check runs every
 * program built from tests/). */
#include "uffd_compat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NPG 64
#define PG 4096UL

static int uffd;
static char *base;
static volatile unsigned long missing_faults, wp_faults, other;

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("criu_plain_uffd: FAIL %s\n", msg);
	fflush(stdout);
	exit(1);
}

static void fill(char *p, size_t pg)
{
	for (size_t i = 0; i < PG / 8; i++)
		((uint64_t *)p)[i] = 0x5eed0000ULL + pg * 0x10001ULL + i;
}

static int check(const char *p, size_t pg)
{
	for (size_t i = 0; i < PG / 8; i++)
		if (((const uint64_t *)p)[i] != 0x5eed0000ULL + pg * 0x10001ULL + i)
			return -1;
	return 0;
}

static int new_uffd(uint64_t features)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		fail("userfaultfd: %s", strerror(errno));
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		fail("UFFDIO_API: %s", strerror(errno));
	return fd;
}

static void reg(int fd, void *p, size_t len, uint64_t mode)
{
	struct uffdio_register r = {.range = {(uintptr_t)p, len}, .mode = mode};
	if (ioctl(fd, UFFDIO_REGISTER, &r) < 0)
		fail("UFFDIO_REGISTER: %s", strerror(errno));
}

static void wp(int fd, size_t pg0, size_t n, uint64_t mode)
{
	struct uffdio_writeprotect w = {.range = {(uintptr_t)base + pg0 * PG, n * PG}, .mode = mode};
	while (ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0)
		if (errno != EINTR && errno != EAGAIN)
			fail("UFFDIO_WRITEPROTECT: %s", strerror(errno));
}

static void *handler(void *arg)
{
	(void)arg;
	static char buf[PG] __attribute__((aligned(4096)));
	for (;;) {
		struct pollfd p = {uffd, POLLIN, 0};
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			fail("poll: %s", strerror(errno));
		struct uffd_msg m;
		ssize_t n = read(uffd, &m, sizeof(m));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n != sizeof(m))
			fail("read(uffd): %zd %s", n, strerror(errno));
		if (m.event != UFFD_EVENT_PAGEFAULT) {
			other++;
			continue;
		}
		uint64_t a = m.arg.pagefault.address & ~(PG - 1);
		size_t pg = (a - (uintptr_t)base) / PG;
		if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
			wp_faults++;
			wp(uffd, pg, 1, 0);
		} else {
			missing_faults++;
			fill(buf, pg);
			struct uffdio_copy c = {.dst = a, .src = (uintptr_t)buf, .len = PG};
			if (ioctl(uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
				fail("UFFDIO_COPY page %zu: %s", pg, strerror(errno));
		}
	}
	return NULL;
}

static void fdinfo(int fd, char *out, size_t len)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "re");
	out[0] = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags:", 6) || !strncmp(line, "API:", 4))
			strncat(out, line, len - strlen(out) - 1);
	fclose(f);
}

static void wait_usr1(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	int sig;
	while (sigwait(&s, &sig) != 0)
		;
}

int main(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[1], "one") && strcmp(argv[1], "two"))) {
		printf("1..0 # SKIP helper of tests/criu_demos.sh (usage: criu_plain_uffd one|two)\n");
		return 77;
	}
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &s, NULL); /* threads inherit it */
	setvbuf(stdout, NULL, _IOLBF, 0);
	base = mmap(NULL, NPG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	if (!strcmp(argv[1], "two")) {
		int a = new_uffd(0), b = new_uffd(0);
		reg(a, base, 32 * PG, UFFDIO_REGISTER_MODE_MISSING);
		reg(b, base + 32 * PG, 32 * PG, UFFDIO_REGISTER_MODE_MISSING);
		printf("criu_plain_uffd: pid %d ready (two uffds: fd %d and fd %d)\n", getpid(), a, b);
		wait_usr1();
		return 0;
	}
	for (size_t pg = 0; pg < 32; pg++)
		fill(base + pg * PG, pg);
	uffd = new_uffd(UFFD_FEATURE_THREAD_ID);
	reg(uffd, base, NPG * PG, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	wp(uffd, 8, 8, UFFDIO_WRITEPROTECT_MODE_WP);
	wp(uffd, 20, 4, UFFDIO_WRITEPROTECT_MODE_WP);
	char before[256], after[256];
	fdinfo(uffd, before, sizeof(before));
	pthread_t th;
	if (pthread_create(&th, NULL, handler, NULL))
		fail("pthread_create");
	printf("criu_plain_uffd: pid %d ready (uffd fd %d)\n", getpid(), uffd);
	wait_usr1();

	fdinfo(uffd, after, sizeof(after));
	if (strcmp(before, after))
		fail("uffd fdinfo changed: before \"%s\" after \"%s\"", before, after);
	for (size_t pg = 0; pg < 32; pg++)
		if (check(base + pg * PG, pg))
			fail("page %zu lost its contents", pg);
	if (missing_faults || wp_faults)
		fail("faults before any touch: %lu missing, %lu wp", missing_faults, wp_faults);
	volatile char *v = base;
	v[0 * PG + 8] = v[0 * PG + 8];      /* not protected: no fault */
	if (wp_faults)
		fail("a write to unprotected page 0 raised a WP fault");
	v[8 * PG + 8] = v[8 * PG + 8];      /* protected */
	v[20 * PG + 8] = v[20 * PG + 8];    /* protected */
	if (wp_faults != 2)
		fail("%lu WP faults for writes to protected pages 8 and 20, expected 2", wp_faults);
	for (size_t pg = 32; pg < NPG; pg++)
		if (check(base + pg * PG, pg))
			fail("page %zu: wrong contents after its MISSING fault", pg);
	if (missing_faults != 32)
		fail("%lu MISSING faults for the 32 missing pages", missing_faults);
	if (other)
		fail("%lu unexpected uffd events", other);
	printf("criu_plain_uffd: OK (fdinfo kept; 2 WP faults on protected pages, none on page 0; "
	       "32 MISSING faults served; 32 restored pages intact)\n");
	return 0;
}
