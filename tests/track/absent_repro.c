/* absent_repro.c - reproduces a bug of uffd-record track (recorder/track_pages.c,
 * consider()): in a range tracked "all" (the app registered it MISSING), every
 * present page is queued in a read batch each epoch; a page dropped with
 * MADV_DONTNEED gets its ABSENT run appended at once, before the queued lower
 * pages are flushed, so the epoch's runs are out of order and uffd-replay
 * check rejects the chain.  Not part of the test suite; see the report of
 * tests/track_demos.sh.  Build: cc -O1 -o absent_repro absent_repro.c */
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>
#define N 64
int main(void)
{
	long pg = 4096;
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = {.api = UFFD_API};
	ioctl(uffd, UFFDIO_API, &api);
	char *p = mmap(NULL, N * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = {.range = {(unsigned long)p, N * pg}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("register"); return 1; }
	static char src[4096];
	for (int i = 0; i < N; i++) {
		memset(src, i + 1, sizeof(src));
		struct uffdio_copy c = {.dst = (unsigned long)(p + i * pg), .src = (unsigned long)src, .len = pg};
		if (ioctl(uffd, UFFDIO_COPY, &c)) { perror("copy"); return 1; }
	}
	printf("absent: pid %d ready %p\n", getpid(), p); fflush(stdout);
	sleep(1);
	madvise(p + 10 * pg, pg, MADV_DONTNEED);   /* page 10 absent; pages 0-9 present */
	printf("absent: dropped page 10\n"); fflush(stdout);
	pause();
	return 0;
}
