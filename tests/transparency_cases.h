/* transparency_cases.h - the cases of shim_transparency_test.c (included by it
 * once, after its helpers).  Each case does one call or a short sequence and
 * records everything the app can observe with R()/IOC()/CALL()/pstate().
 * Cases leave their fds and mappings for the group's checkpoint (the model
 * is verified with them alive), then the group's cleanup closes them.
 *
 * Cases must be deterministic and never touch memory that could fault into a
 * uffd without a handler (use pstate(), which reads pagemap). */

#define M_MISSING UFFDIO_REGISTER_MODE_MISSING
#define M_WP UFFDIO_REGISTER_MODE_WP
#define M_MINOR UFFDIO_REGISTER_MODE_MINOR

/* ================================================================== */
/* creation                                                            */
/* ================================================================== */

static void c_create_syscall(struct cx *c)
{
	int fd = (int)CALL("userfaultfd", raw_uffd((int)c->arg));
	if (fd < 0)
		return;
	keep_fd(fd);
	fdstate("new", fd);
	struct uffdio_api a = {.api = UFFD_API};
	IOC(c, fd, UFFDIO_API, &a);
	/* The next fd the app opens. */
	int nfd = (int)CALL("open(/dev/null)", open("/dev/null", O_RDONLY | O_CLOEXEC));
	keep_fd(nfd);
}

static int open_dev(void)
{
	return open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
}

static void c_create_dev(struct cx *c)
{
	int dev = (int)CALL("open(/dev/userfaultfd)", open_dev());
	if (dev < 0)
		return;
	keep_fd(dev);
	errno = ERRNO_SENTINEL;
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, (int)c->arg);
	int e = errno;
	R("IOC_NEW=%d/%s", fd, ename(e));
	if (fd < 0)
		return;
	keep_fd(fd);
	fdstate("new", fd);
	struct uffdio_api a = {.api = UFFD_API};
	IOC(c, fd, UFFDIO_API, &a);
	int nfd = (int)CALL("open(/dev/null)", open("/dev/null", O_RDONLY | O_CLOEXEC));
	keep_fd(nfd);
}

static void c_dev_readonly(struct cx *c)
{
	int dev = (int)CALL("open(/dev/userfaultfd,O_RDONLY)",
			    open("/dev/userfaultfd", O_RDONLY | O_CLOEXEC));
	keep_fd(dev);
	int fd = (int)CALL("IOC_NEW", ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC));
	keep_fd(fd);
	if (fd >= 0)
		fdstate("new", fd);
}

static void c_dev_other_ioctls(struct cx *c)
{
	int dev = open_dev();
	keep_fd(dev);
	struct uffdio_api a = {.api = UFFD_API};
	IOC(c, dev, UFFDIO_API, &a);
	struct uffdio_range g = {0x10000, 0x1000};
	IOC(c, dev, UFFDIO_WAKE, &g);
	CALL("FIONREAD", ioctl(dev, FIONREAD, &(int){0}));
	char b[64];
	CALL("read", read(dev, b, sizeof(b)));
	/* IOC_NEW on a uffd instead of the device. */
	int u = raw_uffd(O_CLOEXEC);
	keep_fd(u);
	CALL("IOC_NEW(on uffd)", ioctl(u, USERFAULTFD_IOC_NEW, O_CLOEXEC));
}

static void c_dev_dup_new(struct cx *c)
{
	int dev = open_dev();
	keep_fd(dev);
	int d2 = (int)CALL("dup(dev)", dup(dev));
	keep_fd(d2);
	close(dev);
	forget_fd(dev);
	int fd = (int)CALL("IOC_NEW(via dup)", ioctl(d2, USERFAULTFD_IOC_NEW, O_CLOEXEC));
	keep_fd(fd);
	if (fd >= 0) {
		struct uffdio_api a = {.api = UFFD_API};
		IOC(c, fd, UFFDIO_API, &a);
	}
}

static void c_fdnums(struct cx *c)
{
	/* uffd, uffd, pipe, eventfd, close the first uffd, new uffd, open. */
	int a = (int)CALL("uffd1", raw_uffd(O_CLOEXEC));
	int b = (int)CALL("uffd2", raw_uffd(O_CLOEXEC | O_NONBLOCK));
	int p[2] = {-1, -1};
	CALL("pipe", pipe2(p, O_CLOEXEC));
	R("pipe=%d,%d", p[0], p[1]);
	int e = (int)CALL("eventfd", eventfd(0, EFD_CLOEXEC));
	CALL("close(uffd1)", close(a));
	int d = (int)CALL("uffd3", raw_uffd(O_CLOEXEC));
	int dev = (int)CALL("open(dev)", open_dev());
	int f = (int)CALL("uffd4(dev)", ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC));
	int g = (int)CALL("open(/dev/null)", open("/dev/null", O_RDONLY | O_CLOEXEC));
	CALL("close(uffd2)", close(b));
	CALL("close(dev)", close(dev));
	int h = (int)CALL("open(/dev/null)", open("/dev/null", O_RDONLY | O_CLOEXEC));
	int i = (int)CALL("uffd5", raw_uffd(O_CLOEXEC));
	int fds[] = {p[0], p[1], e, d, f, g, h, i};
	for (size_t k = 0; k < sizeof(fds) / sizeof(fds[0]); k++)
		keep_fd(fds[k]);
}

static void c_fdnums_many(struct cx *c)
{
	/* 40 uffds, every third closed, then 20 files: the numbers the kernel
	 * hands out must come out the same. */
	int fds[40];
	char buf[400];
	size_t off = 0;
	for (int k = 0; k < 40; k++)
		fds[k] = raw_uffd(O_CLOEXEC);
	for (int k = 0; k < 40; k += 3) {
		close(fds[k]);
		fds[k] = -1;
	}
	for (int k = 0; k < 40; k++)
		keep_fd(fds[k]);
	for (int k = 0; k < 20; k++) {
		int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
		keep_fd(f);
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%d,", f);
	}
	R("files=%s", buf);
}

static const struct tcase create_cases[] = {
	{"userfaultfd(0)", c_create_syscall, MEM_NONE, 0, 0},
	{"userfaultfd(O_CLOEXEC)", c_create_syscall, MEM_NONE, 0, O_CLOEXEC},
	{"userfaultfd(O_NONBLOCK)", c_create_syscall, MEM_NONE, 0, O_NONBLOCK},
	{"userfaultfd(O_CLOEXEC|O_NONBLOCK)", c_create_syscall, MEM_NONE, 0, O_CLOEXEC | O_NONBLOCK},
	{"userfaultfd(UFFD_USER_MODE_ONLY)", c_create_syscall, MEM_NONE, 0, UFFD_USER_MODE_ONLY},
	{"userfaultfd(USER_MODE_ONLY|O_CLOEXEC)", c_create_syscall, MEM_NONE, 0,
	 UFFD_USER_MODE_ONLY | O_CLOEXEC},
	{"userfaultfd(USER_MODE_ONLY|O_NONBLOCK|O_CLOEXEC)", c_create_syscall, MEM_NONE, 0,
	 UFFD_USER_MODE_ONLY | O_NONBLOCK | O_CLOEXEC},
	{"userfaultfd(O_RDWR) invalid flag", c_create_syscall, MEM_NONE, 0, O_RDWR},
	{"userfaultfd(0x4) invalid flag", c_create_syscall, MEM_NONE, 0, 0x4},
	{"userfaultfd(O_CLOEXEC|0x100) invalid flag", c_create_syscall, MEM_NONE, 0,
	 O_CLOEXEC | 0x100},
	{"userfaultfd(0x80000000) invalid flag", c_create_syscall, MEM_NONE, 0, (long)0x80000000u},
	{"userfaultfd(-1) invalid flags", c_create_syscall, MEM_NONE, 0, -1},
	{"/dev/userfaultfd IOC_NEW(0)", c_create_dev, MEM_NONE, 0, 0},
	{"/dev/userfaultfd IOC_NEW(O_CLOEXEC)", c_create_dev, MEM_NONE, 0, O_CLOEXEC},
	{"/dev/userfaultfd IOC_NEW(O_NONBLOCK)", c_create_dev, MEM_NONE, 0, O_NONBLOCK},
	{"/dev/userfaultfd IOC_NEW(USER_MODE_ONLY)", c_create_dev, MEM_NONE, 0, UFFD_USER_MODE_ONLY},
	{"/dev/userfaultfd IOC_NEW(all valid flags)", c_create_dev, MEM_NONE, 0,
	 UFFD_USER_MODE_ONLY | O_NONBLOCK | O_CLOEXEC},
	{"/dev/userfaultfd IOC_NEW(O_RDWR) invalid flag", c_create_dev, MEM_NONE, 0, O_RDWR},
	{"/dev/userfaultfd IOC_NEW(0x100) invalid flag", c_create_dev, MEM_NONE, 0, 0x100},
	{"/dev/userfaultfd IOC_NEW(-1) invalid flags", c_create_dev, MEM_NONE, 0, -1},
	{"/dev/userfaultfd opened O_RDONLY", c_dev_readonly, MEM_NONE, 0, 0},
	{"/dev/userfaultfd: other ioctls and read; IOC_NEW on a uffd", c_dev_other_ioctls,
	 MEM_NONE, 0, 0},
	{"/dev/userfaultfd dup'd, IOC_NEW through the dup", c_dev_dup_new, MEM_NONE, 0, 0},
	{"fd numbers of uffds and of files opened after them", c_fdnums, MEM_NONE, 0, 0},
	{"fd numbers: 40 uffds with holes, then 20 files", c_fdnums_many, MEM_NONE, 0, 0},
};

/* ================================================================== */
/* UFFDIO_API                                                          */
/* ================================================================== */

static void c_api(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC | O_NONBLOCK);
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API, .features = (uint64_t)c->arg, .ioctls = 0x77};
	IOC(c, fd, UFFDIO_API, &a);
	/* What a registration answers now (the API may have failed). */
	struct region *r = mk_region_mem(c, "d", MEM_ANON, 1);
	if (r)
		reg_pages(c, fd, r, 0, 1, M_MISSING);
}

static void c_api_bit(struct cx *c)
{
	c->arg = (long)(1ULL << c->arg);
	c_api(c);
}

static void c_api_wrong_version(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC);
	keep_fd(fd);
	struct uffdio_api a = {.api = (uint64_t)c->arg, .features = 0};
	IOC(c, fd, UFFDIO_API, &a);
	/* and then the right one */
	struct uffdio_api b = {.api = UFFD_API, .features = 0};
	IOC(c, fd, UFFDIO_API, &b);
}

static void c_api_twice(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC);
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM};
	IOC(c, fd, UFFDIO_API, &a);
	struct uffdio_api b = {.api = UFFD_API, .features = (uint64_t)c->arg};
	IOC(c, fd, UFFDIO_API, &b);
	struct region *r = mk_region_mem(c, "d", MEM_ANON, 1);
	if (r)
		reg_pages(c, fd, r, 0, 1, M_MISSING | M_WP);
}

static void c_api_unsupported_then_ok(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC);
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API, .features = 1ULL << 40};
	IOC(c, fd, UFFDIO_API, &a);
	struct uffdio_api b = {.api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID};
	IOC(c, fd, UFFDIO_API, &b);
}

static void c_api_badptr(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC);
	keep_fd(fd);
	IOC(c, fd, UFFDIO_API, (void *)c->arg);
	struct uffdio_api b = {.api = UFFD_API};
	IOC(c, fd, UFFDIO_API, &b);
}

static void c_api_readonly_struct(struct cx *c)
{
	/* The kernel reads, then fails to write back: EFAULT after copy_from_user. */
	int fd = raw_uffd(O_CLOEXEC);
	keep_fd(fd);
	struct region *r = mk_region_mem(c, "d", MEM_ANON, 1);
	if (!r)
		return;
	struct uffdio_api *a = (void *)r->base;
	a->api = UFFD_API;
	a->features = 0;
	mprotect(r->base, r->len, PROT_READ);
	IOC(c, fd, UFFDIO_API, a);
	pr_arg(c, UFFDIO_API, a);
	struct uffdio_api b = {.api = UFFD_API};
	IOC(c, fd, UFFDIO_API, &b);
}

static void c_api_umo(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC | UFFD_USER_MODE_ONLY);
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API, .features = (uint64_t)c->arg};
	IOC(c, fd, UFFDIO_API, &a);
}

static void c_api_dev(struct cx *c)
{
	int dev = open_dev();
	keep_fd(dev);
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API, .features = (uint64_t)c->arg};
	IOC(c, fd, UFFDIO_API, &a);
	struct uffdio_api b = {.api = UFFD_API, .features = 0};
	IOC(c, fd, UFFDIO_API, &b);
}

/* Every UFFDIO_* and read() before UFFDIO_API. */
static void c_before_api(struct cx *c)
{
	int fd = raw_uffd(O_CLOEXEC | O_NONBLOCK);
	keep_fd(fd);
	struct region *r = mk_region_mem(c, "d", MEM_ANON, 2);
	struct region *s = mk_region_mem(c, "s", MEM_ANON, 2);
	if (!r || !s)
		return;
	fill(s, 0, 'S', false);
	switch (c->arg) {
	case 0: reg_pages(c, fd, r, 0, 1, M_MISSING); break;
	case 1: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), r->ps); break;
	case 2: range_op(c, fd, UFFDIO_WAKE, PG(r, 0), r->ps); break;
	case 3: copy_op(c, fd, PG(r, 0), PG(s, 0), r->ps, 0); break;
	case 4: zero_op(c, fd, PG(r, 0), r->ps, 0); break;
	case 5: wp_op(c, fd, PG(r, 0), r->ps, UFFDIO_WRITEPROTECT_MODE_WP); break;
	case 6: cont_op(c, fd, PG(r, 0), r->ps, 0); break;
	case 7: poison_op(c, fd, PG(r, 0), r->ps, 0); break;
	case 8: move_op(c, fd, PG(r, 0), PG(s, 0), r->ps, 0); break;
	case 9: {
		struct uffd_msg m;
		CALL("read", read(fd, &m, sizeof(m)));
		break;
	}
	case 10: poll_rec(fd, 0); break;
	}
	pstate(c, r);
	pstate(c, s);
}

static const struct tcase api_cases[] = {
	{"features 0", c_api, MEM_NONE, 0, 0},
	{"feature bit 0 (PAGEFAULT_FLAG_WP)", c_api_bit, MEM_NONE, 0, 0},
	{"feature bit 1 (EVENT_FORK)", c_api_bit, MEM_NONE, 0, 1},
	{"feature bit 2 (EVENT_REMAP)", c_api_bit, MEM_NONE, 0, 2},
	{"feature bit 3 (EVENT_REMOVE)", c_api_bit, MEM_NONE, 0, 3},
	{"feature bit 4 (MISSING_HUGETLBFS)", c_api_bit, MEM_NONE, 0, 4},
	{"feature bit 5 (MISSING_SHMEM)", c_api_bit, MEM_NONE, 0, 5},
	{"feature bit 6 (EVENT_UNMAP)", c_api_bit, MEM_NONE, 0, 6},
	{"feature bit 7 (SIGBUS)", c_api_bit, MEM_NONE, 0, 7},
	{"feature bit 8 (THREAD_ID)", c_api_bit, MEM_NONE, 0, 8},
	{"feature bit 9 (MINOR_HUGETLBFS)", c_api_bit, MEM_NONE, 0, 9},
	{"feature bit 10 (MINOR_SHMEM)", c_api_bit, MEM_NONE, 0, 10},
	{"feature bit 11 (EXACT_ADDRESS)", c_api_bit, MEM_NONE, 0, 11},
	{"feature bit 12 (WP_HUGETLBFS_SHMEM)", c_api_bit, MEM_NONE, 0, 12},
	{"feature bit 13 (WP_UNPOPULATED)", c_api_bit, MEM_NONE, 0, 13},
	{"feature bit 14 (POISON)", c_api_bit, MEM_NONE, 0, 14},
	{"feature bit 15 (WP_ASYNC alone)", c_api_bit, MEM_NONE, 0, 15},
	{"feature bit 16 (MOVE)", c_api_bit, MEM_NONE, 0, 16},
	{"unknown feature bit 17", c_api_bit, MEM_NONE, 0, 17},
	{"unknown feature bit 31 (kernel-internal INITIALIZED)", c_api_bit, MEM_NONE, 0, 31},
	{"unknown feature bit 63", c_api_bit, MEM_NONE, 0, 63},
	{"all known features 0x1ffff", c_api, MEM_NONE, 0, 0x1ffff},
	{"all known features + unknown bit 20", c_api, MEM_NONE, 0, 0x1ffff | (1L << 20)},
	{"features ~0", c_api, MEM_NONE, 0, -1},
	{"wrong api number 0, then UFFD_API", c_api_wrong_version, MEM_NONE, 0, 0},
	{"wrong api number 0xab, then UFFD_API", c_api_wrong_version, MEM_NONE, 0, 0xab},
	{"twice on one fd (same features)", c_api_twice, MEM_NONE, 0, UFFD_FEATURE_MISSING_SHMEM},
	{"twice on one fd (other features)", c_api_twice, MEM_NONE, 0,
	 UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_PAGEFAULT_FLAG_WP},
	{"twice on one fd (second with unknown bit)", c_api_twice, MEM_NONE, 0, 1L << 40},
	{"unknown bit fails, then a valid API", c_api_unsupported_then_ok, MEM_NONE, 0, 0},
	{"bad pointer (void*)1, then valid", c_api_badptr, MEM_NONE, 0, 1},
	{"NULL pointer, then valid", c_api_badptr, MEM_NONE, 0, 0},
	{"read-only struct (write-back fails), then valid", c_api_readonly_struct, MEM_NONE, 0, 0},
	{"on a USER_MODE_ONLY uffd, features 0", c_api_umo, MEM_NONE, 0, 0},
	{"on a USER_MODE_ONLY uffd, all features", c_api_umo, MEM_NONE, 0, 0x1ffff},
	{"on a /dev/userfaultfd uffd, twice", c_api_dev, MEM_NONE, 0, UFFD_FEATURE_THREAD_ID},
	{"REGISTER before API", c_before_api, MEM_NONE, 0, 0},
	{"UNREGISTER before API", c_before_api, MEM_NONE, 0, 1},
	{"WAKE before API", c_before_api, MEM_NONE, 0, 2},
	{"COPY before API", c_before_api, MEM_NONE, 0, 3},
	{"ZEROPAGE before API", c_before_api, MEM_NONE, 0, 4},
	{"WRITEPROTECT before API", c_before_api, MEM_NONE, 0, 5},
	{"CONTINUE before API", c_before_api, MEM_NONE, 0, 6},
	{"POISON before API", c_before_api, MEM_NONE, 0, 7},
	{"MOVE before API", c_before_api, MEM_NONE, 0, 8},
	{"read() before API", c_before_api, MEM_NONE, 0, 9},
	{"poll() before API", c_before_api, MEM_NONE, 0, 10},
};

/* ================================================================== */
/* UFFDIO_REGISTER                                                     */
/* ================================================================== */

/* arg: mode | features-all flag (bit 8) */
static void c_reg_mode(struct cx *c)
{
	uint64_t feat = (c->arg & 0x100) ? feat_std() : 0;
	int fd = mk_uffd(c, feat);
	struct region *r = mk_region(c, "d", 4);
	if (fd < 0 || !r)
		return;
	reg_pages(c, fd, r, 0, 4, (uint64_t)c->arg & 0xff);
}

static void c_reg_bad(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 4);
	if (fd < 0 || !r)
		return;
	size_t ps = r->ps;
	struct uffdio_register g = {.range = {PG(r, 0), 2 * ps}, .mode = M_MISSING};
	switch (c->arg) {
	case 0: g.range.start += 1; break;                  /* unaligned start */
	case 1: g.range.len += 1; break;                    /* unaligned len */
	case 2: g.range.start += 4096 * (ps > 4096); g.range.len = ps + 4096; break; /* sub-page */
	case 3: g.range.len = 0; break;                     /* zero len */
	case 4: g.mode = 0; break;                          /* mode 0 */
	case 5: g.mode = 1 << 3; break;                     /* unknown mode bit */
	case 6: g.mode = M_MISSING | (1ULL << 40); break;   /* known + unknown */
	case 7: g.mode = ~0ULL; break;
	case 8: g.range.len = 6 * ps; break;                /* runs past the mapping */
	case 9: g.range.start = 0x1000; g.range.len = ps; break; /* below mmap_min_addr */
	case 10: g.range.start = 0x7ffffffff000ULL - ps; g.range.len = 4 * ps; break; /* past TASK_SIZE */
	case 11: g.range.len = ~0ULL - g.range.start + 1 - ps; break; /* huge */
	case 12: g.range.len = (uint64_t)0 - ps; break;     /* start+len wraps */
	case 13: g.ioctls = ~0ULL; break;                   /* ioctls is output only */
	}
	IOC(c, fd, UFFDIO_REGISTER, &g);
}

static void c_reg_unmapped(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 4);
	if (fd < 0 || !r)
		return;
	switch (c->arg) {
	case 0: /* wholly unmapped */
		munmap(r->base, r->len);
		forget_map(r->base, r->len);
		reg_pages(c, fd, r, 0, 4, M_MISSING);
		break;
	case 1: /* hole in the middle */
		munmap(r->base + r->ps, r->ps);
		forget_map(r->base + r->ps, r->ps);
		reg_pages(c, fd, r, 0, 4, M_MISSING);
		break;
	case 2: /* hole at the start */
		munmap(r->base, r->ps);
		forget_map(r->base, r->ps);
		reg_pages(c, fd, r, 0, 4, M_MISSING);
		break;
	}
}

static void c_reg_ebusy(struct cx *c)
{
	int fd1 = mk_uffd(c, feat_std());
	int fd2 = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 4);
	if (fd1 < 0 || fd2 < 0 || !r)
		return;
	reg_pages(c, fd1, r, 1, 2, M_MISSING);
	/* overlap of another uffd's range: whole, partial, same range */
	switch (c->arg) {
	case 0: reg_pages(c, fd2, r, 0, 4, M_MISSING); break;
	case 1: reg_pages(c, fd2, r, 2, 2, M_WP); break;
	case 2: reg_pages(c, fd2, r, 1, 2, M_MISSING); break;
	}
	/* the pages next to it are free */
	reg_pages(c, fd2, r, 3, 1, M_MISSING);
}

static void c_reg_again(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 4);
	if (fd < 0 || !r)
		return;
	fill(r, 0, 'A', false);
	fill(r, 1, 'B', false);
	uint64_t m1 = M_MISSING | M_WP, m2 = (uint64_t)c->arg;
	if (c->mem == MEM_ANON && (m2 & M_MINOR))
		m2 &= ~(uint64_t)M_MINOR;
	reg_pages(c, fd, r, 0, 4, m1);
	wp_op(c, fd, PG(r, 0), 2 * r->ps, UFFDIO_WRITEPROTECT_MODE_WP);
	pstate(c, r);
	/* the same range, then a sub-range, with another mode */
	reg_pages(c, fd, r, 0, 4, m2);
	pstate(c, r);
	reg_pages(c, fd, r, 1, 2, m1);
	pstate(c, r);
}

static void c_reg_spans(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 4);
	if (fd < 0 || !r)
		return;
	switch (c->arg) {
	case 0: /* three VMAs: prot differs in the middle */
		CALL("mprotect", mprotect(r->base + r->ps, r->ps, PROT_READ));
		reg_pages(c, fd, r, 0, 4, M_MISSING | (c->mem == MEM_ANON ? M_WP : 0));
		break;
	case 1: /* PROT_NONE mapping */
		CALL("mprotect", mprotect(r->base, r->len, PROT_NONE));
		reg_pages(c, fd, r, 0, 4, M_MISSING);
		break;
	case 2: /* anon and memfd side by side, one call */ {
		char *want = r->base + r->len;
		int mfd = memfd_create("uffdtt-side", MFD_CLOEXEC);
		keep_fd(mfd);
		if (ftruncate(mfd, (off_t)r->ps) == 0) {
			void *p = mmap(want, r->ps, PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_FIXED_NOREPLACE, mfd, 0);
			R("side=%s", p == want ? "adjacent" : "elsewhere");
			if (p != MAP_FAILED)
				keep_map(p, r->ps);
			if (p == want) {
				struct uffdio_register g = {.range = {PG(r, 0), 5 * r->ps},
							    .mode = M_MISSING};
				IOC(c, fd, UFFDIO_REGISTER, &g);
			}
		}
		break;
	}
	case 3: /* a file mapping of a regular file (not uffd-capable) */ {
		int f = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
		keep_fd(f);
		void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, f, 0);
		if (p != MAP_FAILED) {
			keep_map(p, 4096);
			struct uffdio_register g = {.range = {U(p), 4096}, .mode = M_MISSING};
			IOC(c, fd, UFFDIO_REGISTER, &g);
			R("start-was-file");
		}
		break;
	}
	}
}

static void c_reg_ptr(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	IOC(c, fd, UFFDIO_REGISTER, (void *)c->arg);
}

static void c_reg_via(struct cx *c)
{
	struct region *r = mk_region(c, "d", 2);
	if (!r)
		return;
	int fd;
	if (c->arg == 0) { /* a USER_MODE_ONLY uffd */
		fd = mk_uffd_flags(c, feat_std(), O_CLOEXEC | UFFD_USER_MODE_ONLY);
	} else { /* a dup of the uffd, original closed */
		int o = mk_uffd(c, feat_std());
		fd = dup(o);
		keep_fd(fd);
		close(o);
		forget_fd(o);
		R("dup=%d", fd);
	}
	if (fd >= 0)
		reg_pages(c, fd, r, 0, 2, M_MISSING);
}

static void c_reg_readonly_struct(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 2);
	struct region *s = mk_region_mem(c, "s", MEM_ANON, 1);
	if (fd < 0 || !r || !s)
		return;
	struct uffdio_register *g = (void *)s->base;
	g->range.start = PG(r, 0);
	g->range.len = r->ps;
	g->mode = M_MISSING;
	mprotect(s->base, s->len, PROT_READ);
	IOC(c, fd, UFFDIO_REGISTER, g);
	pr_arg(c, UFFDIO_REGISTER, g);
	/* did it register (EFAULT only from writing ioctls back)? */
	reg_pages(c, fd, r, 0, 1, M_MISSING);
}

static const struct tcase register_cases[] = {
	{"mode MISSING (features 0)", c_reg_mode, MEM_ALL, 0, M_MISSING},
	{"mode WP (features 0)", c_reg_mode, MEM_ALL, 0, M_WP},
	{"mode MINOR (features 0)", c_reg_mode, MEM_ALL, 0, M_MINOR},
	{"mode MISSING|WP (features 0)", c_reg_mode, MEM_ALL, 0, M_MISSING | M_WP},
	{"mode MISSING|MINOR (features 0)", c_reg_mode, MEM_ALL, 0, M_MISSING | M_MINOR},
	{"mode WP|MINOR (features 0)", c_reg_mode, MEM_ALL, 0, M_WP | M_MINOR},
	{"mode MISSING|WP|MINOR (features 0)", c_reg_mode, MEM_ALL, 0, M_MISSING | M_WP | M_MINOR},
	{"mode MISSING (features all)", c_reg_mode, MEM_ALL, 0, 0x100 | M_MISSING},
	{"mode WP (features all)", c_reg_mode, MEM_ALL, 0, 0x100 | M_WP},
	{"mode MINOR (features all)", c_reg_mode, MEM_ALL, 0, 0x100 | M_MINOR},
	{"mode MISSING|WP (features all)", c_reg_mode, MEM_ALL, 0, 0x100 | M_MISSING | M_WP},
	{"mode MISSING|MINOR (features all)", c_reg_mode, MEM_ALL, 0, 0x100 | M_MISSING | M_MINOR},
	{"mode WP|MINOR (features all)", c_reg_mode, MEM_ALL, 0, 0x100 | M_WP | M_MINOR},
	{"mode MISSING|WP|MINOR (features all)", c_reg_mode, MEM_ALL, 0,
	 0x100 | M_MISSING | M_WP | M_MINOR},
	{"unaligned start", c_reg_bad, MEM_ALL, 0, 0},
	{"unaligned len", c_reg_bad, MEM_ALL, 0, 1},
	{"4 KiB-aligned but not page-aligned range", c_reg_bad, MEM_ALL, 0, 2},
	{"zero len", c_reg_bad, MEM_ALL, 0, 3},
	{"mode 0", c_reg_bad, MEM_ALL, 0, 4},
	{"unknown mode bit 3", c_reg_bad, MEM_ALL, 0, 5},
	{"MISSING + unknown mode bit 40", c_reg_bad, MEM_ALL, 0, 6},
	{"mode ~0", c_reg_bad, MEM_ALL, 0, 7},
	{"range runs past the mapping (ENOMEM)", c_reg_bad, MEM_ALL, 0, 8},
	{"range at 0x1000, unmapped", c_reg_bad, MEM_ALL, 0, 9},
	{"range past TASK_SIZE", c_reg_bad, MEM_ALL, 0, 10},
	{"huge len", c_reg_bad, MEM_ALL, 0, 11},
	{"start+len wraps", c_reg_bad, MEM_ALL, 0, 12},
	{"ioctls field set on input", c_reg_bad, MEM_ALL, 0, 13},
	{"range wholly unmapped (ENOMEM)", c_reg_unmapped, MEM_ALL, 0, 0},
	{"range with a hole in the middle", c_reg_unmapped, MEM_ALL, 0, 1},
	{"range with a hole at the start", c_reg_unmapped, MEM_ALL, 0, 2},
	{"overlapping another uffd's range: superset (EBUSY)", c_reg_ebusy, MEM_ALL, 0, 0},
	{"overlapping another uffd's range: partial (EBUSY)", c_reg_ebusy, MEM_ALL, 0, 1},
	{"overlapping another uffd's range: same range (EBUSY)", c_reg_ebusy, MEM_ALL, 0, 2},
	{"again on the same uffd: MISSING|WP then MISSING", c_reg_again, MEM_ALL, 0, M_MISSING},
	{"again on the same uffd: MISSING|WP then MINOR", c_reg_again, MEM_ALL, 0, M_MINOR},
	{"again on the same uffd: MISSING|WP then WP", c_reg_again, MEM_ALL, 0, M_WP},
	{"across three VMAs (mprotect in the middle)", c_reg_spans, MEM_ALL, 0, 0},
	{"PROT_NONE mapping", c_reg_spans, MEM_ALL, 0, 1},
	{"mapping then adjacent memfd mapping in one call", c_reg_spans, MEM_ANON, 0, 2},
	{"regular-file mapping (not uffd-capable)", c_reg_spans, MEM_NONE, 0, 3},
	{"bad pointer (void*)1 (EFAULT)", c_reg_ptr, MEM_NONE, 0, 1},
	{"NULL pointer", c_reg_ptr, MEM_NONE, 0, 0},
	{"on a USER_MODE_ONLY uffd", c_reg_via, MEM_ALL, 0, 0},
	{"through a dup of the uffd, original closed", c_reg_via, MEM_ALL, 0, 1},
	{"read-only struct (ioctls write-back fails)", c_reg_readonly_struct, MEM_ALL, 0, 0},
};

/* ================================================================== */
/* UFFDIO_UNREGISTER / UFFDIO_WAKE                                     */
/* ================================================================== */

static void c_unreg(struct cx *c)
{
	uint64_t mode = M_MISSING | (c->mem == MEM_ANON ? M_WP : 0);
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), 0, 6, 0, 0x3);
	if (fd < 0)
		return;
	reg_pages(c, fd, r, 0, 4, mode);
	if (mode & M_WP)
		wp_op(c, fd, PG(r, 0), 2 * r->ps, UFFDIO_WRITEPROTECT_MODE_WP);
	size_t ps = r->ps;
	switch (c->arg) {
	case 0: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 4 * ps); break; /* whole */
	case 1: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 1), 2 * ps); break; /* middle */
	case 2: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), ps); break;     /* head */
	case 3: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 4), 2 * ps); break; /* unregistered */
	case 4: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 2), 4 * ps); break; /* straddles */
	case 5: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0) + 1, ps); break;
	case 6: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), ps + 1); break;
	case 7: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 0); break;
	case 8: range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 8 * ps); break; /* past end */
	case 9: IOC(c, fd, UFFDIO_UNREGISTER, (void *)1); break;
	case 10: /* twice */
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 4 * ps);
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 4 * ps);
		break;
	case 11: /* by a uffd that did not register it */ {
		int o = mk_uffd(c, feat_std());
		range_op(c, o, UFFDIO_UNREGISTER, PG(r, 4), 2 * ps);
		break;
	}
	case 12: /* after munmap of part of the range */
		munmap(r->base + 3 * ps, ps);
		forget_map(r->base + 3 * ps, ps);
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 4 * ps);
		break;
	}
	pstate(c, r);
	/* what is still registered: re-register page by page with another uffd */
	int probe = mk_uffd(c, feat_std());
	char buf[64];
	size_t off = 0;
	for (size_t i = 0; i < 6; i++) {
		struct uffdio_register g = {.range = {PG(r, i), ps}, .mode = M_MISSING};
		errno = 0;
		int rr = ioctl(probe, UFFDIO_REGISTER, &g);
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%c",
					rr == 0 ? 'f' : errno == EBUSY ? 'R' : 'x');
		if (rr == 0) {
			struct uffdio_range u = {PG(r, i), ps};
			ioctl(probe, UFFDIO_UNREGISTER, &u);
		}
	}
	R("registered=%s", buf);
}

static void c_wake(struct cx *c)
{
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), M_MISSING, 4, 2, 0);
	if (fd < 0)
		return;
	size_t ps = r->ps;
	switch (c->arg) {
	case 0: range_op(c, fd, UFFDIO_WAKE, PG(r, 0), 2 * ps); break;
	case 1: range_op(c, fd, UFFDIO_WAKE, PG(r, 2), 2 * ps); break;  /* unregistered */
	case 2: range_op(c, fd, UFFDIO_WAKE, PG(r, 0) + 1, ps); break;
	case 3: range_op(c, fd, UFFDIO_WAKE, PG(r, 0), 0); break;
	case 4: IOC(c, fd, UFFDIO_WAKE, (void *)1); break;
	case 5: range_op(c, fd, UFFDIO_WAKE, 0x1000, ps); break;        /* unmapped */
	case 6: range_op(c, fd, UFFDIO_WAKE, PG(r, 0), (uint64_t)0 - ps); break;
	}
}

static const struct tcase unreg_cases[] = {
	{"UNREGISTER whole range", c_unreg, MEM_ALL, 0, 0},
	{"UNREGISTER middle (splits)", c_unreg, MEM_ALL, 0, 1},
	{"UNREGISTER first page", c_unreg, MEM_ALL, 0, 2},
	{"UNREGISTER unregistered range", c_unreg, MEM_ALL, 0, 3},
	{"UNREGISTER straddling the registration's end", c_unreg, MEM_ALL, 0, 4},
	{"UNREGISTER unaligned start", c_unreg, MEM_ALL, 0, 5},
	{"UNREGISTER unaligned len", c_unreg, MEM_ALL, 0, 6},
	{"UNREGISTER zero len", c_unreg, MEM_ALL, 0, 7},
	{"UNREGISTER running past the mapping", c_unreg, MEM_ALL, 0, 8},
	{"UNREGISTER bad pointer", c_unreg, MEM_ALL, 0, 9},
	{"UNREGISTER twice", c_unreg, MEM_ALL, 0, 10},
	{"UNREGISTER of free pages by another uffd", c_unreg, MEM_ALL, 0, 11},
	{"UNREGISTER after munmap of part of the range", c_unreg, MEM_ALL, 0, 12},
	{"WAKE registered range, no waiter", c_wake, MEM_ALL, 0, 0},
	{"WAKE unregistered range", c_wake, MEM_ALL, 0, 1},
	{"WAKE unaligned", c_wake, MEM_ALL, 0, 2},
	{"WAKE zero len", c_wake, MEM_ALL, 0, 3},
	{"WAKE bad pointer", c_wake, MEM_ALL, 0, 4},
	{"WAKE unmapped range", c_wake, MEM_ALL, 0, 5},
	{"WAKE range that wraps", c_wake, MEM_ALL, 0, 6},
};

/* ================================================================== */
/* UFFDIO_COPY / UFFDIO_ZEROPAGE                                       */
/* ================================================================== */

/* d: 4 pages, [0,3) registered MISSING (|WP on arg bit 8), s: 4 source pages
 * filled 'a'..'d'. */
static void c_copy(struct cx *c)
{
	bool wpreg = (c->arg & 0x100) != 0;
	uint64_t mode = M_MISSING | (wpreg ? M_WP : 0);
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), 0, 4, 0, (c->arg & 0xff) == 2 ? 0x1 : 0);
	struct region *s = fd >= 0 ? mk_region_mem(c, "s", MEM_ANON, 4) : NULL;
	if (!s)
		return;
	/* the source is anon even for shmem/hugetlb destinations, but sized
	 * to the destination's page */
	if (s->ps != r->ps) {
		munmap(s->base, s->len);
		forget_map(s->base, s->len);
		s->len = 4 * r->ps;
		void *p = wmap(s->len, MAP_PRIVATE | MAP_ANONYMOUS, -1);
		if (p == MAP_FAILED) {
			SETUP_FAIL("mmap src");
			return;
		}
		s->base = p;
		s->ps = r->ps;
		keep_map(p, s->len);
	}
	for (size_t i = 0; i < 4; i++)
		memset(s->base + i * s->ps, 'a' + (int)i, s->ps);
	if (reg_pages(c, fd, r, 0, 3, mode) < 0)
		return;
	size_t ps = r->ps;
	switch (c->arg & 0xff) {
	case 0: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 0); break;
	case 1: copy_op(c, fd, PG(r, 0), PG(s, 0), 3 * ps, 0); break;
	case 2: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 0); break;            /* populated */
	case 3: /* second page populated */
		copy_op(c, fd, PG(r, 1), PG(s, 1), ps, 0);
		copy_op(c, fd, PG(r, 0), PG(s, 0), 3 * ps, 0);
		break;
	case 4: copy_op(c, fd, PG(r, 3), PG(s, 0), ps, 0); break;            /* unregistered */
	case 5: copy_op(c, fd, PG(r, 2), PG(s, 0), 2 * ps, 0); break;        /* straddles end */
	case 6: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, UFFDIO_COPY_MODE_WP); break;
	case 7: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, UFFDIO_COPY_MODE_DONTWAKE); break;
	case 8: copy_op(c, fd, PG(r, 0), PG(s, 0), ps,
			UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP); break;
	case 9: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 1ULL << 5); break;    /* unknown mode */
	case 10: copy_op(c, fd, PG(r, 0) + 1, PG(s, 0), ps, 0); break;       /* dst unaligned */
	case 11: copy_op(c, fd, PG(r, 0), PG(s, 0) + 1, ps, 0); break;       /* src unaligned */
	case 12: copy_op(c, fd, PG(r, 0), PG(s, 0), ps + 1, 0); break;       /* len unaligned */
	case 13: copy_op(c, fd, PG(r, 0), PG(s, 0), 0, 0); break;            /* zero len */
	case 14: copy_op(c, fd, PG(r, 0), 0x1000 * (ps / 4096), ps, 0); break; /* src unmapped */
	case 15: /* second source page unmapped: a partial copy */
		munmap(s->base + ps, ps);
		forget_map(s->base + ps, ps);
		copy_op(c, fd, PG(r, 0), PG(s, 0), 2 * ps, 0);
		break;
	case 16: IOC(c, fd, UFFDIO_COPY, (void *)1); break;
	case 17: copy_op(c, fd, PG(r, 0), PG(r, 3), ps, 0); break;           /* src: unregistered page of the dst region */
	case 18: copy_op(c, fd, PG(r, 3), PG(r, 3), ps, 0); break;           /* src == dst, unregistered */
	case 19: copy_op(c, fd, PG(r, 0), PG(s, 0), (uint64_t)0 - ps, 0); break;
	case 20: /* by another uffd */ {
		int o = mk_uffd(c, feat_std());
		copy_op(c, o, PG(r, 0), PG(s, 0), ps, 0);
		break;
	}
	case 21: /* then UNREGISTER and copy again */
		copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 0);
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 3 * ps);
		copy_op(c, fd, PG(r, 1), PG(s, 1), ps, 0);
		break;
	case 22: /* src on a PROT_NONE page */
		mprotect(s->base, ps, PROT_NONE);
		copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 0);
		break;
	case 23: /* after the first copy the second in the same call fails */
		copy_op(c, fd, PG(r, 2), PG(s, 2), ps, 0);
		copy_op(c, fd, PG(r, 1), PG(s, 1), 2 * ps, UFFDIO_COPY_MODE_DONTWAKE);
		break;
	}
	pstate(c, r);
}

static void c_zero(struct cx *c)
{
	bool wpreg = (c->arg & 0x100) != 0;
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), M_MISSING | (wpreg ? M_WP : 0), 4, 3,
			   (c->arg & 0xff) == 2 ? 0x1 : 0);
	if (fd < 0)
		return;
	size_t ps = r->ps;
	switch (c->arg & 0xff) {
	case 0: zero_op(c, fd, PG(r, 0), ps, 0); break;
	case 1: zero_op(c, fd, PG(r, 0), 3 * ps, 0); break;
	case 2: zero_op(c, fd, PG(r, 0), 2 * ps, 0); break;                   /* populated */
	case 3: zero_op(c, fd, PG(r, 0), ps, UFFDIO_ZEROPAGE_MODE_DONTWAKE); break;
	case 4: zero_op(c, fd, PG(r, 0), ps, 1ULL << 1); break;               /* unknown mode */
	case 5: zero_op(c, fd, PG(r, 0) + 1, ps, 0); break;
	case 6: zero_op(c, fd, PG(r, 0), ps + 1, 0); break;
	case 7: zero_op(c, fd, PG(r, 0), 0, 0); break;
	case 8: zero_op(c, fd, PG(r, 3), ps, 0); break;                       /* unregistered */
	case 9: zero_op(c, fd, PG(r, 2), 2 * ps, 0); break;                   /* straddles */
	case 10: IOC(c, fd, UFFDIO_ZEROPAGE, (void *)1); break;
	case 11: /* second page populated by a COPY: partial */
		{
			struct region *s = mk_region_mem(c, "s", MEM_ANON, 1);
			if (s && r->ps == 4096) {
				fill(s, 0, 'Z', false);
				copy_op(c, fd, PG(r, 1), PG(s, 0), ps, 0);
			} else if (s) {
				zero_op(c, fd, PG(r, 1), ps, 0);
			}
			zero_op(c, fd, PG(r, 0), 3 * ps, 0);
		}
		break;
	}
	pstate(c, r);
}

static const struct tcase copy_cases[] = {
	{"COPY one page", c_copy, MEM_ALL, 0, 0},
	{"COPY three pages", c_copy, MEM_ALL, 0, 1},
	{"COPY into a populated page (EEXIST)", c_copy, MEM_ALL, 0, 2},
	{"COPY three pages, the second populated (partial)", c_copy, MEM_ALL, 0, 3},
	{"COPY into an unregistered range", c_copy, MEM_ALL, 0, 4},
	{"COPY straddling the end of the registration", c_copy, MEM_ALL, 0, 5},
	{"COPY MODE_WP into a non-WP range", c_copy, MEM_ALL, 0, 6},
	{"COPY MODE_WP into a MISSING|WP range", c_copy, MEM_ALL, 0, 0x100 | 6},
	{"COPY MODE_DONTWAKE", c_copy, MEM_ALL, 0, 7},
	{"COPY MODE_DONTWAKE|MODE_WP into a MISSING|WP range", c_copy, MEM_ALL, 0, 0x100 | 8},
	{"COPY unknown mode bit", c_copy, MEM_ALL, 0, 9},
	{"COPY unaligned dst", c_copy, MEM_ALL, 0, 10},
	{"COPY unaligned src", c_copy, MEM_ALL, 0, 11},
	{"COPY unaligned len", c_copy, MEM_ALL, 0, 12},
	{"COPY zero len", c_copy, MEM_ALL, 0, 13},
	{"COPY from an unmapped src (EFAULT)", c_copy, MEM_ALL, 0, 14},
	{"COPY two pages, second src page unmapped (partial)", c_copy, MEM_ALL, 0, 15},
	{"COPY bad pointer (void*)1", c_copy, MEM_ALL, 0, 16},
	{"COPY src from an unregistered page of the dst region", c_copy, MEM_ALL, 0, 17},
	{"COPY src == dst (unregistered page)", c_copy, MEM_ALL, 0, 18},
	{"COPY len that wraps", c_copy, MEM_ALL, 0, 19},
	{"COPY by a uffd that did not register the range", c_copy, MEM_ALL, 0, 20},
	{"COPY after UNREGISTER", c_copy, MEM_ALL, 0, 21},
	{"COPY from a PROT_NONE src", c_copy, MEM_ALL, 0, 22},
	{"COPY two pages, the second populated, DONTWAKE", c_copy, MEM_ALL, 0, 23},
	{"COPY one page into a MISSING|WP range", c_copy, MEM_ALL, 0, 0x100 | 0},
	{"ZEROPAGE one page", c_zero, MEM_ALL, 0, 0},
	{"ZEROPAGE three pages", c_zero, MEM_ALL, 0, 1},
	{"ZEROPAGE over a populated page (EEXIST)", c_zero, MEM_ALL, 0, 2},
	{"ZEROPAGE MODE_DONTWAKE", c_zero, MEM_ALL, 0, 3},
	{"ZEROPAGE unknown mode bit", c_zero, MEM_ALL, 0, 4},
	{"ZEROPAGE unaligned start", c_zero, MEM_ALL, 0, 5},
	{"ZEROPAGE unaligned len", c_zero, MEM_ALL, 0, 6},
	{"ZEROPAGE zero len", c_zero, MEM_ALL, 0, 7},
	{"ZEROPAGE unregistered range", c_zero, MEM_ALL, 0, 8},
	{"ZEROPAGE straddling the end", c_zero, MEM_ALL, 0, 9},
	{"ZEROPAGE bad pointer", c_zero, MEM_ALL, 0, 10},
	{"ZEROPAGE three pages, the second populated (partial)", c_zero, MEM_ALL, 0, 11},
	{"ZEROPAGE into a MISSING|WP range", c_zero, MEM_ALL, 0, 0x100 | 0},
};

/* ================================================================== */
/* UFFDIO_WRITEPROTECT                                                 */
/* ================================================================== */

#define WPM UFFDIO_WRITEPROTECT_MODE_WP
#define WPD UFFDIO_WRITEPROTECT_MODE_DONTWAKE

/* d: 4 pages, [0,3) registered MISSING|WP (arg bit 8: WP only), pages 0,1
 * populated; arg bit 9: API without WP_UNPOPULATED. */
static void c_wp(struct cx *c)
{
	uint64_t feat = feat_std();
	if (c->arg & 0x200)
		feat &= ~(uint64_t)UFFD_FEATURE_WP_UNPOPULATED;
	if (c->arg & 0x400)
		feat = 0;
	uint64_t mode = (c->arg & 0x100) ? M_WP : (M_MISSING | M_WP);
	struct region *r;
	int fd = setup_std(c, &r, feat, mode, 4, 3, 0x3);
	if (fd < 0)
		return;
	size_t ps = r->ps;
	switch (c->arg & 0xff) {
	case 0: wp_op(c, fd, PG(r, 0), 2 * ps, WPM); break;
	case 1: /* on, then off */
		wp_op(c, fd, PG(r, 0), 3 * ps, WPM);
		pstate(c, r);
		wp_op(c, fd, PG(r, 0), 3 * ps, 0);
		break;
	case 2: wp_op(c, fd, PG(r, 2), ps, WPM); break;                      /* unpopulated */
	case 3: wp_op(c, fd, PG(r, 0), 3 * ps, WPM | WPD); break;           /* EINVAL */
	case 4: /* off with DONTWAKE */
		wp_op(c, fd, PG(r, 0), 2 * ps, WPM);
		wp_op(c, fd, PG(r, 0), ps, WPD);
		break;
	case 5: wp_op(c, fd, PG(r, 0), ps, 1ULL << 2); break;               /* unknown mode */
	case 6: wp_op(c, fd, PG(r, 0) + 1, ps, WPM); break;
	case 7: wp_op(c, fd, PG(r, 0), ps + 1, WPM); break;
	case 8: wp_op(c, fd, PG(r, 0), 0, WPM); break;
	case 9: wp_op(c, fd, PG(r, 3), ps, WPM); break;                      /* unregistered */
	case 10: wp_op(c, fd, PG(r, 1), 3 * ps, WPM); break;                 /* straddles */
	case 11: IOC(c, fd, UFFDIO_WRITEPROTECT, (void *)1); break;
	case 12: /* twice on, twice off */
		wp_op(c, fd, PG(r, 0), ps, WPM);
		wp_op(c, fd, PG(r, 0), ps, WPM);
		wp_op(c, fd, PG(r, 0), ps, 0);
		wp_op(c, fd, PG(r, 0), ps, 0);
		break;
	case 13: /* part WP-registered, part MISSING-only: may apply in part */
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 2), ps);
		reg_pages(c, fd, r, 2, 2, M_MISSING);
		wp_op(c, fd, PG(r, 0), 4 * ps, WPM);
		break;
	case 14: /* MISSING-only range first, WP range after */
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), ps);
		reg_pages(c, fd, r, 0, 1, M_MISSING);
		wp_op(c, fd, PG(r, 0), 3 * ps, WPM);
		break;
	case 15: /* by a uffd that did not register it */ {
		int o = mk_uffd(c, feat);
		wp_op(c, o, PG(r, 0), ps, WPM);
		break;
	}
	case 16: /* range runs past the mapping */
		wp_op(c, fd, PG(r, 0), 8 * ps, WPM);
		break;
	case 17: /* protect, then UNREGISTER drops it */
		wp_op(c, fd, PG(r, 0), 2 * ps, WPM);
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 3 * ps);
		break;
	case 18: /* protect, then MADV_DONTNEED one page */
		wp_op(c, fd, PG(r, 0), 2 * ps, WPM);
		CALL("madvise(DONTNEED)", madvise(r->base, ps, MADV_DONTNEED));
		break;
	case 19: /* protect, then re-register MISSING only (drops WP) */
		wp_op(c, fd, PG(r, 0), 2 * ps, WPM);
		reg_pages(c, fd, r, 0, 3, M_MISSING);
		break;
	}
	pstate(c, r);
}

static const struct tcase wp_cases[] = {
	{"protect two populated pages", c_wp, MEM_ALL, 0, 0},
	{"protect, then unprotect", c_wp, MEM_ALL, 0, 1},
	{"protect an unpopulated page (WP_UNPOPULATED)", c_wp, MEM_ALL, 0, 2},
	{"protect an unpopulated page (no WP_UNPOPULATED)", c_wp, MEM_ALL, 0, 0x200 | 2},
	{"protect with DONTWAKE (EINVAL)", c_wp, MEM_ALL, 0, 3},
	{"unprotect with DONTWAKE", c_wp, MEM_ALL, 0, 4},
	{"unknown mode bit", c_wp, MEM_ALL, 0, 5},
	{"unaligned start", c_wp, MEM_ALL, 0, 6},
	{"unaligned len", c_wp, MEM_ALL, 0, 7},
	{"zero len", c_wp, MEM_ALL, 0, 8},
	{"unregistered range (ENOENT)", c_wp, MEM_ALL, 0, 9},
	{"straddling the end of the registration", c_wp, MEM_ALL, 0, 10},
	{"bad pointer", c_wp, MEM_ALL, 0, 11},
	{"twice on, twice off", c_wp, MEM_ALL, 0, 12},
	{"WP range then MISSING-only range (partial)", c_wp, MEM_ALL, 0, 13},
	{"MISSING-only range then WP range", c_wp, MEM_ALL, 0, 14},
	{"by a uffd that did not register it", c_wp, MEM_ALL, 0, 15},
	{"range running past the mapping", c_wp, MEM_ALL, 0, 16},
	{"protect, then UNREGISTER", c_wp, MEM_ALL, 0, 17},
	{"protect, then MADV_DONTNEED", c_wp, MEM_ALL, 0, 18},
	{"protect, then re-register MISSING only", c_wp, MEM_ALL, 0, 19},
	{"protect on a WP-only registration", c_wp, MEM_ALL, 0, 0x100 | 0},
	{"protect with API features 0", c_wp, MEM_ANON, 0, 0x400 | 0},
};

/* ================================================================== */
/* UFFDIO_CONTINUE / UFFDIO_POISON                                     */
/* ================================================================== */

/* d: 4 pages registered MINOR (|WP on bit 8) over [0,3); page cache of pages
 * 0,1 filled through the alias; arg bit 9: also MISSING. */
static void c_cont(struct cx *c)
{
	uint64_t mode = M_MINOR | ((c->arg & 0x100) ? M_WP : 0) | ((c->arg & 0x200) ? M_MISSING : 0);
	if (c->mem == MEM_ANON)
		mode = M_MISSING | ((c->arg & 0x100) ? M_WP : 0); /* MINOR is refused there */
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), 0, 4, 0, 0);
	if (fd < 0)
		return;
	if (r->alias) {
		fill(r, 0, 'P', true);
		fill(r, 1, 'Q', true);
	}
	if (reg_pages(c, fd, r, 0, 3, mode) < 0)
		return;
	size_t ps = r->ps;
	switch (c->arg & 0xff) {
	case 0: cont_op(c, fd, PG(r, 0), ps, 0); break;
	case 1: cont_op(c, fd, PG(r, 0), 2 * ps, 0); break;
	case 2: cont_op(c, fd, PG(r, 2), ps, 0); break;                      /* not in cache */
	case 3: cont_op(c, fd, PG(r, 1), 2 * ps, 0); break;                  /* partial */
	case 4: cont_op(c, fd, PG(r, 0), ps, UFFDIO_CONTINUE_MODE_WP); break;
	case 5: cont_op(c, fd, PG(r, 0), ps, UFFDIO_CONTINUE_MODE_DONTWAKE); break;
	case 6: cont_op(c, fd, PG(r, 0), ps, 1ULL << 4); break;
	case 7: /* already mapped */
		cont_op(c, fd, PG(r, 0), ps, 0);
		cont_op(c, fd, PG(r, 0), ps, 0);
		break;
	case 8: cont_op(c, fd, PG(r, 0) + 1, ps, 0); break;
	case 9: cont_op(c, fd, PG(r, 0), ps + 1, 0); break;
	case 10: cont_op(c, fd, PG(r, 0), 0, 0); break;
	case 11: cont_op(c, fd, PG(r, 3), ps, 0); break;                      /* unregistered */
	case 12: IOC(c, fd, UFFDIO_CONTINUE, (void *)1); break;
	case 13: cont_op(c, fd, PG(r, 0), ps, UFFDIO_CONTINUE_MODE_WP | UFFDIO_CONTINUE_MODE_DONTWAKE); break;
	}
	pstate(c, r);
}

static void c_poison(struct cx *c)
{
	uint64_t feat = (c->arg & 0x100) ? feat_std() & ~(uint64_t)UFFD_FEATURE_POISON : feat_std();
	struct region *r;
	int fd = setup_std(c, &r, feat, M_MISSING, 4, 3, (c->arg & 0xff) == 1 ? 0x1 : 0);
	if (fd < 0)
		return;
	size_t ps = r->ps;
	switch (c->arg & 0xff) {
	case 0: poison_op(c, fd, PG(r, 0), ps, 0); break;
	case 1: poison_op(c, fd, PG(r, 0), 2 * ps, 0); break;                /* populated */
	case 2: poison_op(c, fd, PG(r, 0), 3 * ps, UFFDIO_POISON_MODE_DONTWAKE); break;
	case 3: poison_op(c, fd, PG(r, 0), ps, 1ULL << 3); break;
	case 4: poison_op(c, fd, PG(r, 0) + 1, ps, 0); break;
	case 5: poison_op(c, fd, PG(r, 0), 0, 0); break;
	case 6: poison_op(c, fd, PG(r, 3), ps, 0); break;
	case 7: IOC(c, fd, UFFDIO_POISON, (void *)1); break;
	case 8: /* twice */
		poison_op(c, fd, PG(r, 0), ps, 0);
		poison_op(c, fd, PG(r, 0), ps, 0);
		break;
	}
	pstate(c, r);
}

static const struct tcase cont_cases[] = {
	{"CONTINUE one page in the page cache", c_cont, MEM_ALL, 0, 0},
	{"CONTINUE two pages", c_cont, MEM_ALL, 0, 1},
	{"CONTINUE a page not in the page cache", c_cont, MEM_ALL, 0, 2},
	{"CONTINUE two pages, second not in the page cache", c_cont, MEM_ALL, 0, 3},
	{"CONTINUE MODE_WP on a MINOR-only range", c_cont, MEM_ALL, 0, 4},
	{"CONTINUE MODE_WP on a MINOR|WP range", c_cont, MEM_ALL, 0, 0x100 | 4},
	{"CONTINUE MODE_WP|DONTWAKE on a MINOR|WP range", c_cont, MEM_ALL, 0, 0x100 | 13},
	{"CONTINUE MODE_DONTWAKE", c_cont, MEM_ALL, 0, 5},
	{"CONTINUE unknown mode bit", c_cont, MEM_ALL, 0, 6},
	{"CONTINUE an already mapped page", c_cont, MEM_ALL, 0, 7},
	{"CONTINUE unaligned start", c_cont, MEM_ALL, 0, 8},
	{"CONTINUE unaligned len", c_cont, MEM_ALL, 0, 9},
	{"CONTINUE zero len", c_cont, MEM_ALL, 0, 10},
	{"CONTINUE unregistered range", c_cont, MEM_ALL, 0, 11},
	{"CONTINUE bad pointer", c_cont, MEM_ALL, 0, 12},
	{"CONTINUE on a MISSING|MINOR range", c_cont, MEM_ALL, 0, 0x200 | 0},
	{"POISON one page", c_poison, MEM_ALL, 0, 0},
	{"POISON over a populated page", c_poison, MEM_ALL, 0, 1},
	{"POISON three pages DONTWAKE", c_poison, MEM_ALL, 0, 2},
	{"POISON unknown mode bit", c_poison, MEM_ALL, 0, 3},
	{"POISON unaligned", c_poison, MEM_ALL, 0, 4},
	{"POISON zero len", c_poison, MEM_ALL, 0, 5},
	{"POISON unregistered range", c_poison, MEM_ALL, 0, 6},
	{"POISON bad pointer", c_poison, MEM_ALL, 0, 7},
	{"POISON twice", c_poison, MEM_ALL, 0, 8},
	{"POISON without UFFD_FEATURE_POISON", c_poison, MEM_ALL, 0, 0x100 | 0},
};

/* ================================================================== */
/* UFFDIO_MOVE                                                         */
/* ================================================================== */

#define MVH UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES
#define MVD UFFDIO_MOVE_MODE_DONTWAKE

/* d: 4 pages registered MISSING [0,4); s: 4 pages, populated per arg. */
static void c_move(struct cx *c)
{
	uint64_t feat = (c->arg & 0x100) ? feat_std() & ~(uint64_t)UFFD_FEATURE_MOVE : feat_std();
	struct region *r;
	int fd = setup_std(c, &r, feat, M_MISSING, 4, 4, (c->arg & 0xff) == 3 ? 0x1 : 0);
	if (fd < 0)
		return;
	struct region *s = mk_region(c, "s", 4);
	if (!s)
		return;
	unsigned smask = (c->arg & 0xff) == 5 || (c->arg & 0xff) == 6 ? 0x5 : 0xf;
	for (size_t i = 0; i < 4; i++)
		if (smask & (1u << i))
			fill(s, i, (char)('m' + i), false);
	size_t ps = r->ps;
	switch (c->arg & 0xff) {
	case 0: move_op(c, fd, PG(r, 0), PG(s, 0), ps, 0); break;
	case 1: move_op(c, fd, PG(r, 0), PG(s, 0), 4 * ps, 0); break;
	case 2: move_op(c, fd, PG(r, 0), PG(s, 0), ps, MVD); break;
	case 3: move_op(c, fd, PG(r, 0), PG(s, 0), ps, 0); break;           /* dst populated */
	case 4: /* src hole, no ALLOW_SRC_HOLES */
		move_op(c, fd, PG(r, 0), PG(s, 0), ps, 0);
		move_op(c, fd, PG(r, 1), PG(s, 0), ps, 0);
		break;
	case 5: move_op(c, fd, PG(r, 0), PG(s, 0), 4 * ps, 0); break;       /* holes in src */
	case 6: move_op(c, fd, PG(r, 0), PG(s, 0), 4 * ps, MVH); break;     /* holes allowed */
	case 7: move_op(c, fd, PG(r, 0), PG(s, 0), ps, 1ULL << 5); break;
	case 8: move_op(c, fd, PG(r, 0) + 1, PG(s, 0), ps, 0); break;
	case 9: move_op(c, fd, PG(r, 0), PG(s, 0) + 1, ps, 0); break;
	case 10: move_op(c, fd, PG(r, 0), PG(s, 0), ps + 1, 0); break;
	case 11: move_op(c, fd, PG(r, 0), PG(s, 0), 0, 0); break;
	case 12: move_op(c, fd, PG(r, 1), PG(r, 0), 2 * ps, 0); break;      /* overlap */
	case 13: IOC(c, fd, UFFDIO_MOVE, (void *)1); break;
	case 14: /* dst not registered */
		range_op(c, fd, UFFDIO_UNREGISTER, PG(r, 0), 4 * ps);
		move_op(c, fd, PG(r, 0), PG(s, 0), ps, 0);
		break;
	case 15: /* src unmapped */
		munmap(s->base, s->len);
		forget_map(s->base, s->len);
		move_op(c, fd, PG(r, 0), PG(s, 0), ps, 0);
		break;
	case 16: /* src registered with WP and protected (moves the pte marker?) */ {
		int o = mk_uffd(c, feat_std());
		reg_pages(c, o, s, 0, 4, M_WP);
		wp_op(c, o, PG(s, 0), 2 * ps, WPM);
		move_op(c, fd, PG(r, 0), PG(s, 0), 2 * ps, 0);
		pstate(c, s);
		break;
	}
	case 17: /* dst registered MISSING|WP */
		reg_pages(c, fd, r, 0, 4, M_MISSING | M_WP);
		move_op(c, fd, PG(r, 0), PG(s, 0), 2 * ps, 0);
		break;
	}
	pstate(c, r);
	if ((c->arg & 0xff) != 15)
		pstate(c, s);
}

static const struct tcase move_cases[] = {
	{"MOVE one page", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 0},
	{"MOVE four pages", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 1},
	{"MOVE DONTWAKE", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 2},
	{"MOVE into a populated page (EEXIST)", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 3},
	{"MOVE from a hole without ALLOW_SRC_HOLES", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 4},
	{"MOVE four pages with holes, no ALLOW_SRC_HOLES (partial)", c_move, MEM_ANON,
	 UFFD_FEATURE_MOVE, 5},
	{"MOVE four pages with holes, ALLOW_SRC_HOLES", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 6},
	{"MOVE unknown mode bit", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 7},
	{"MOVE unaligned dst", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 8},
	{"MOVE unaligned src", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 9},
	{"MOVE unaligned len", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 10},
	{"MOVE zero len", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 11},
	{"MOVE overlapping src and dst", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 12},
	{"MOVE bad pointer", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 13},
	{"MOVE into an unregistered dst", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 14},
	{"MOVE from an unmapped src", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 15},
	{"MOVE from a write-protected src of another uffd", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 16},
	{"MOVE into a MISSING|WP dst", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 17},
	{"MOVE without UFFD_FEATURE_MOVE", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 0x100 | 0},
	{"MOVE on shared memory (EINVAL)", c_move, MEM_SHMEM | MEM_HUGETLB, UFFD_FEATURE_MOVE, 0},
};

/* ================================================================== */
/* faults, read(), poll()                                              */
/* ================================================================== */

/* A fault of kind arg, read and resolved. */
static void c_fault(struct cx *c)
{
	uint64_t feat = feat_std();
	int kind = (int)(c->arg & 0xff);
	if (c->arg & 0x100)
		feat &= ~(uint64_t)(UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_THREAD_ID);
	uint64_t mode = kind == 1 ? (M_MISSING | M_WP) : kind == 2 ? M_MINOR : M_MISSING;
	struct region *r;
	int fd = setup_std(c, &r, feat, 0, 2, 0, kind == 1 ? 0x1 : 0);
	if (fd < 0)
		return;
	if (kind == 2 && r->alias)
		fill(r, 0, 'K', true);
	if (reg_pages(c, fd, r, 0, 2, mode) < 0)
		return;
	if (kind == 1)
		wp_op(c, fd, PG(r, 0), r->ps, WPM);
	struct region *s = mk_region_mem(c, "s", MEM_ANON, 1);
	if (!s)
		return;
	if (s->ps < r->ps) { /* a big enough source for hugetlb */
		void *p = wmap(r->ps, MAP_PRIVATE | MAP_ANONYMOUS, -1);
		if (p == MAP_FAILED)
			return;
		keep_map(p, r->ps);
		s->base = p;
		s->len = s->ps = r->ps;
	}
	memset(s->base, 'F', s->len);
	poll_rec(fd, 0);
	struct toucher t;
	if (!touch_start(&t, r->base + 123, kind == 1 || kind == 3, 'W'))
		return;
	poll_rec(fd, 2000);
	if (kind == 4) { /* a too-small read while a message is pending */
		char b[31];
		CALL("read(31)", read(fd, b, sizeof(b)));
	}
	read_msgs(c, fd, kind == 5 ? 3 * sizeof(struct uffd_msg) : sizeof(struct uffd_msg));
	poll_rec(fd, 0);
	switch (kind) {
	case 0: case 3: case 4: case 5:
		copy_op(c, fd, PG(r, 0), PG(s, 0), r->ps, 0);
		break;
	case 1:
		wp_op(c, fd, PG(r, 0), r->ps, 0);
		break;
	case 2:
		cont_op(c, fd, PG(r, 0), r->ps, 0);
		break;
	case 6: /* resolve with DONTWAKE, then WAKE */
		copy_op(c, fd, PG(r, 0), PG(s, 0), r->ps, UFFDIO_COPY_MODE_DONTWAKE);
		usleep(20000);
		R("done-before-wake=%d", t.done);
		range_op(c, fd, UFFDIO_WAKE, PG(r, 0), r->ps);
		break;
	}
	touch_join(c, &t, fd, PG(r, 0), 2 * r->ps);
	pstate(c, r);
}

static void c_read_misc(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	if (fd < 0)
		return;
	char b[128];
	switch (c->arg) {
	case 0: CALL("read(31)", read(fd, b, 31)); break;
	case 1: CALL("read(0)", read(fd, b, 0)); break;
	case 2: CALL("read(32,empty,nonblock)", read(fd, b, 32)); break;
	case 3: CALL("read(128,empty,nonblock)", read(fd, b, 128)); break;
	case 4: { void *volatile np = NULL; CALL("read(NULL,32)", read(fd, np, 32)); break; }
	case 5: { /* readv */
		struct iovec iov[2] = {{b, 16}, {b + 16, 16}};
		CALL("readv(16+16)", readv(fd, iov, 2));
		break;
	}
	case 6: poll_rec(fd, 0); break;
	case 7: { /* blocking fd: poll only */
		int bfd = mk_uffd_flags(c, feat_std(), O_CLOEXEC);
		poll_rec(bfd, 10);
		CALL("read(31,blocking)", read(bfd, b, 31));
		break;
	}
	case 8: { /* write() is not supported */
		memset(b, 0, sizeof(b));
		CALL("write(32)", write(fd, b, 32));
		break;
	}
	case 9: CALL("lseek", lseek(fd, 0, SEEK_SET)); break;
	case 10: CALL("pread", pread(fd, b, 32, 0)); break;
	}
}

static const struct tcase fault_cases[] = {
	{"MISSING fault: poll, read, COPY", c_fault, MEM_ALL, 0, 0},
	{"MISSING fault on write: poll, read, COPY", c_fault, MEM_ALL, 0, 3},
	{"MISSING fault without EXACT_ADDRESS/THREAD_ID", c_fault, MEM_ALL, 0, 0x100 | 0},
	{"WP fault: poll, read, unprotect", c_fault, MEM_ALL, 0, 1},
	{"MINOR fault: poll, read, CONTINUE", c_fault, MEM_SHMEM | MEM_HUGETLB, 0, 2},
	{"read(31) with a message pending (EINVAL)", c_fault, MEM_ANON, 0, 4},
	{"read of 3 messages with one pending", c_fault, MEM_ANON, 0, 5},
	{"COPY DONTWAKE then WAKE releases the waiter", c_fault, MEM_ALL, 0, 6},
	{"read(31) (EINVAL)", c_read_misc, MEM_NONE, 0, 0},
	{"read(0)", c_read_misc, MEM_NONE, 0, 1},
	{"read(32) nothing pending, O_NONBLOCK (EAGAIN)", c_read_misc, MEM_NONE, 0, 2},
	{"read(128) nothing pending, O_NONBLOCK", c_read_misc, MEM_NONE, 0, 3},
	{"read(NULL, 32) nothing pending", c_read_misc, MEM_NONE, 0, 4},
	{"readv 16+16 nothing pending", c_read_misc, MEM_NONE, 0, 5},
	{"poll nothing pending", c_read_misc, MEM_NONE, 0, 6},
	{"poll and read(31) on a blocking uffd", c_read_misc, MEM_NONE, 0, 7},
	{"write() to a uffd", c_read_misc, MEM_NONE, 0, 8},
	{"lseek on a uffd", c_read_misc, MEM_NONE, 0, 9},
	{"pread on a uffd", c_read_misc, MEM_NONE, 0, 10},
};

/* ================================================================== */
/* events: fork, mremap, madvise, munmap                               */
/* ================================================================== */

struct evreader {
	pthread_t t;
	int fd;
	int want;
	struct uffd_msg m[4];
	int n;
	volatile int stop;
};

static void *ev_fn(void *p)
{
	struct evreader *e = p;
	/* until the action is over (stop), and at most 3 s */
	for (int i = 0; i < 300 && e->n < e->want && !e->stop; i++) {
		struct pollfd pf = {.fd = e->fd, .events = POLLIN};
		if (poll(&pf, 1, 10) <= 0)
			continue;
		ssize_t r = read(e->fd, &e->m[e->n], sizeof(struct uffd_msg));
		if (r == sizeof(struct uffd_msg))
			e->n++;
	}
	return NULL;
}

static void c_event(struct cx *c)
{
	uint64_t feat = feat_std() | FEAT_EVENTS;
	struct region *r;
	int fd = setup_std(c, &r, feat & avail_features, M_MISSING, 4, 4, 0);
	if (fd < 0)
		return;
	size_t ps = r->ps;
	/* populate page 0 so that the fork child does not fault */
	struct region *s = mk_region_mem(c, "s", MEM_ANON, 1);
	if (!s)
		return;
	struct evreader e = {.fd = fd, .want = 4};
	if (pthread_create(&e.t, NULL, ev_fn, &e) != 0)
		return;
	switch (c->arg) {
	case 0: { /* fork */
		fflush(NULL);
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		R("fork=%s", pid > 0 ? "ok" : "failed");
		if (pid > 0)
			waitpid(pid, NULL, 0);
		break;
	}
	case 1: { /* mremap to a new place */
		void *to = wmap(4 * ps, MAP_PRIVATE | MAP_ANONYMOUS, -1);
		if (to == MAP_FAILED)
			break;
		keep_map(to, 4 * ps);
		struct region *t = &c->reg[c->nreg++];
		*t = (struct region){.tag = "t", .base = to, .len = 4 * ps, .ps = ps, .memfd = -1};
		void *p = mremap(r->base, 4 * ps, 4 * ps, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		R("mremap=%s", p == to ? "t" : p == MAP_FAILED ? "failed" : "?");
		if (p == to)
			forget_map(r->base, 4 * ps);
		break;
	}
	case 2: /* MADV_DONTNEED */
		CALL("madvise(DONTNEED)", madvise(r->base + ps, ps, MADV_DONTNEED));
		break;
	case 3: /* munmap part */
		CALL("munmap", munmap(r->base + 2 * ps, 2 * ps));
		forget_map(r->base + 2 * ps, 2 * ps);
		break;
	case 4: /* MADV_REMOVE (shared memory) */
		CALL("madvise(REMOVE)", madvise(r->base + ps, ps, MADV_REMOVE));
		break;
	}
	usleep(50000); /* events the action queued without waiting for them */
	e.stop = 1;
	pthread_join(e.t, NULL);
	R("events=%d", e.n);
	for (int i = 0; i < e.n; i++) {
		pr_msg(c, &e.m[i]);
		if (e.m[i].event == UFFD_EVENT_FORK) {
			int nfd = (int)e.m[i].arg.fork.ufd;
			keep_fd(nfd);
			fdstate("forked", nfd);
		}
	}
	/* the next fd the app gets */
	int nfd = (int)CALL("open(/dev/null)", open("/dev/null", O_RDONLY | O_CLOEXEC));
	keep_fd(nfd);
}

static const struct tcase event_cases[] = {
	{"EVENT_FORK: fork, the new uffd's fd number", c_event, MEM_ALL, UFFD_FEATURE_EVENT_FORK, 0},
	{"EVENT_REMAP: mremap of the registered range", c_event, MEM_ANON | MEM_SHMEM,
	 UFFD_FEATURE_EVENT_REMAP, 1},
	{"EVENT_REMOVE: MADV_DONTNEED of one page", c_event, MEM_ALL, UFFD_FEATURE_EVENT_REMOVE, 2},
	{"EVENT_UNMAP: munmap of half the range", c_event, MEM_ALL, UFFD_FEATURE_EVENT_UNMAP, 3},
	{"EVENT_REMOVE: MADV_REMOVE of one page", c_event, MEM_SHMEM | MEM_HUGETLB,
	 UFFD_FEATURE_EVENT_REMOVE, 4},
};

/* ================================================================== */
/* fd operations                                                       */
/* ================================================================== */

static void c_fdops(struct cx *c)
{
	int fd = (int)CALL("userfaultfd", raw_uffd(O_CLOEXEC));
	keep_fd(fd);
	struct uffdio_api a = {.api = UFFD_API};
	IOC(c, fd, UFFDIO_API, &a);
	int n = -1;
	switch (c->arg) {
	case 0: n = (int)CALL("dup", dup(fd)); break;
	case 1: n = (int)CALL("dup2(fd,50)", dup2(fd, 50)); break;
	case 2: n = (int)CALL("dup2(fd,fd)", dup2(fd, fd)); break;
	case 3: n = (int)CALL("dup3(fd,51,O_CLOEXEC)", dup3(fd, 51, O_CLOEXEC)); break;
	case 4: n = (int)CALL("dup3(fd,fd,0)", dup3(fd, fd, 0)); break;
	case 5: n = (int)CALL("dup3(fd,52,O_NONBLOCK)", dup3(fd, 52, O_NONBLOCK)); break;
	case 6: n = (int)CALL("F_DUPFD(0)", fcntl(fd, F_DUPFD, 0)); break;
	case 7: n = (int)CALL("F_DUPFD(60)", fcntl(fd, F_DUPFD, 60)); break;
	case 8: n = (int)CALL("F_DUPFD_CLOEXEC(0)", fcntl(fd, F_DUPFD_CLOEXEC, 0)); break;
	case 9: n = (int)CALL("F_DUPFD_CLOEXEC(61)", fcntl(fd, F_DUPFD_CLOEXEC, 61)); break;
	case 10: CALL("F_GETFD", fcntl(fd, F_GETFD)); break;
	case 11:
		CALL("F_SETFD(0)", fcntl(fd, F_SETFD, 0));
		CALL("F_GETFD", fcntl(fd, F_GETFD));
		CALL("F_SETFD(CLOEXEC)", fcntl(fd, F_SETFD, FD_CLOEXEC));
		break;
	case 12: CALL("F_GETFL", fcntl(fd, F_GETFL)); break;
	case 13:
		CALL("F_SETFL(O_NONBLOCK)", fcntl(fd, F_SETFL, O_NONBLOCK));
		CALL("F_GETFL", fcntl(fd, F_GETFL));
		{
			struct uffd_msg m;
			CALL("read(empty)", read(fd, &m, sizeof(m)));
		}
		CALL("F_SETFL(0)", fcntl(fd, F_SETFL, 0));
		break;
	case 14: CALL("F_SETFL(O_APPEND|O_NONBLOCK)", fcntl(fd, F_SETFL, O_APPEND | O_NONBLOCK)); break;
	case 15: CALL("F_DUPFD(-1)", fcntl(fd, F_DUPFD, -1)); break;
	case 16: CALL("fcntl(cmd 9999)", fcntl(fd, 9999, 0)); break;
	case 17: { /* dup2 onto another uffd: the old one is closed */
		int o = raw_uffd(O_CLOEXEC);
		keep_fd(o);
		n = (int)CALL("dup2(fd,other uffd)", dup2(fd, o));
		break;
	}
	case 18: { /* dup2 a pipe onto the uffd */
		int p[2];
		if (pipe2(p, O_CLOEXEC) == 0) {
			keep_fd(p[0]);
			keep_fd(p[1]);
			CALL("dup2(pipe,fd)", dup2(p[0], fd));
			struct uffdio_api b = {.api = UFFD_API};
			IOC(c, fd, UFFDIO_API, &b);
		}
		break;
	}
	case 19: /* close twice */
		CALL("close", close(fd));
		CALL("close", close(fd));
		forget_fd(fd);
		{
			struct uffdio_api b = {.api = UFFD_API};
			IOC(c, fd, UFFDIO_API, &b);
		}
		break;
	case 20: /* close, then the number is reused by open */
		CALL("close", close(fd));
		forget_fd(fd);
		n = (int)CALL("open(/dev/null)", open("/dev/null", O_RDONLY | O_CLOEXEC));
		{
			struct uffdio_api b = {.api = UFFD_API};
			IOC(c, n, UFFDIO_API, &b);
		}
		break;
	case 21: /* dup, close original, use the dup */
		n = (int)CALL("dup", dup(fd));
		CALL("close(orig)", close(fd));
		forget_fd(fd);
		{
			struct region *r = mk_region_mem(c, "d", MEM_ANON, 2);
			if (r)
				reg_pages(c, n, r, 0, 2, M_MISSING);
		}
		break;
	case 22: CALL("dup2(-1,70)", dup2(-1, 70)); CALL("dup2(fd,-1)", dup2(fd, -1)); break;
	case 23: CALL("dup2(fd,1<<20)", dup2(fd, 1 << 20)); break;
	}
	if (n >= 0 && n != fd) {
		keep_fd(n);
		fdstate("new", n);
	}
	fdstate("orig", fd);
}

static void c_misc_ioctl(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	if (fd < 0)
		return;
	int v = 0;
	struct termios tio;
	switch (c->arg) {
	case 0: /* unknown UFFDIO number */
		CALL("_IOWR(UFFDIO,0x3f)", ioctl(fd, _IOWR(UFFDIO, 0x3f, struct uffdio_range),
						 &(struct uffdio_range){0}));
		break;
	case 1: CALL("_IO(UFFDIO,0x00)", ioctl(fd, _IO(UFFDIO, 0x00), 0)); break;
	case 2: /* UFFDIO_REGISTER's number with the wrong size */
		CALL("_IOWR(UFFDIO,_UFFDIO_REGISTER,u64)",
		     ioctl(fd, _IOWR(UFFDIO, _UFFDIO_REGISTER, __u64), &(__u64){0}));
		break;
	case 3: CALL("FIONREAD", ioctl(fd, FIONREAD, &v)); R("v=%d", v); break;
	case 4: CALL("TCGETS", ioctl(fd, TCGETS, &tio)); break;
	case 5: CALL("ioctl(0xdeadbeef)", ioctl(fd, 0xdeadbeefUL, 0)); break;
	case 6: CALL("FIGETBSZ", ioctl(fd, FIGETBSZ, &v)); break;
	case 7: /* UFFDIO_* on a pipe and on /dev/null */ {
		int p[2];
		if (pipe2(p, O_CLOEXEC) == 0) {
			keep_fd(p[0]);
			keep_fd(p[1]);
			struct uffdio_api a = {.api = UFFD_API};
			IOC(c, p[0], UFFDIO_API, &a);
			struct uffdio_register g = {.range = {0x10000, 0x1000}, .mode = M_MISSING};
			IOC(c, p[0], UFFDIO_REGISTER, &g);
			struct uffdio_copy cp = {0x10000, 0x20000, 0x1000, 0, 0x5a5a};
			IOC(c, p[1], UFFDIO_COPY, &cp);
		}
		int n = open("/dev/null", O_RDWR | O_CLOEXEC);
		keep_fd(n);
		struct uffdio_writeprotect w = {.range = {0x10000, 0x1000}, .mode = WPM};
		IOC(c, n, UFFDIO_WRITEPROTECT, &w);
		CALL("IOC_NEW(/dev/null)", ioctl(n, USERFAULTFD_IOC_NEW, 0));
		break;
	}
	case 8: { /* UFFDIO_* on closed and negative fds */
		struct uffdio_api a = {.api = UFFD_API};
		IOC(c, 700, UFFDIO_API, &a);
		IOC(c, -1, UFFDIO_API, &a);
		IOC(c, 1 << 20, UFFDIO_API, &a);
		break;
	}
	case 9: /* FIONBIO */
		v = 0;
		CALL("FIONBIO(0)", ioctl(fd, FIONBIO, &v));
		CALL("F_GETFL", fcntl(fd, F_GETFL));
		break;
	case 10: /* FIOCLEX / FIONCLEX */
		CALL("FIONCLEX", ioctl(fd, FIONCLEX));
		CALL("F_GETFD", fcntl(fd, F_GETFD));
		CALL("FIOCLEX", ioctl(fd, FIOCLEX));
		CALL("F_GETFD", fcntl(fd, F_GETFD));
		break;
	}
}

static const struct tcase fd_cases[] = {
	{"dup", c_fdops, MEM_NONE, 0, 0},
	{"dup2 to 50", c_fdops, MEM_NONE, 0, 1},
	{"dup2 onto itself", c_fdops, MEM_NONE, 0, 2},
	{"dup3 O_CLOEXEC", c_fdops, MEM_NONE, 0, 3},
	{"dup3 onto itself (EINVAL)", c_fdops, MEM_NONE, 0, 4},
	{"dup3 invalid flag (EINVAL)", c_fdops, MEM_NONE, 0, 5},
	{"F_DUPFD 0", c_fdops, MEM_NONE, 0, 6},
	{"F_DUPFD 60", c_fdops, MEM_NONE, 0, 7},
	{"F_DUPFD_CLOEXEC 0", c_fdops, MEM_NONE, 0, 8},
	{"F_DUPFD_CLOEXEC 61", c_fdops, MEM_NONE, 0, 9},
	{"F_GETFD", c_fdops, MEM_NONE, 0, 10},
	{"F_SETFD 0 / FD_CLOEXEC", c_fdops, MEM_NONE, 0, 11},
	{"F_GETFL", c_fdops, MEM_NONE, 0, 12},
	{"F_SETFL O_NONBLOCK, read, F_SETFL 0", c_fdops, MEM_NONE, 0, 13},
	{"F_SETFL O_APPEND|O_NONBLOCK", c_fdops, MEM_NONE, 0, 14},
	{"F_DUPFD -1 (EINVAL)", c_fdops, MEM_NONE, 0, 15},
	{"fcntl unknown cmd", c_fdops, MEM_NONE, 0, 16},
	{"dup2 onto another uffd", c_fdops, MEM_NONE, 0, 17},
	{"dup2 a pipe onto the uffd, then UFFDIO_API", c_fdops, MEM_NONE, 0, 18},
	{"close twice (EBADF), then ioctl", c_fdops, MEM_NONE, 0, 19},
	{"close, number reused by open, UFFDIO_API on it", c_fdops, MEM_NONE, 0, 20},
	{"dup, close the original, REGISTER through the dup", c_fdops, MEM_NONE, 0, 21},
	{"dup2 with bad fds (EBADF)", c_fdops, MEM_NONE, 0, 22},
	{"dup2 beyond RLIMIT_NOFILE", c_fdops, MEM_NONE, 0, 23},
	{"unknown UFFDIO request number", c_misc_ioctl, MEM_NONE, 0, 0},
	{"_IO(UFFDIO, 0)", c_misc_ioctl, MEM_NONE, 0, 1},
	{"REGISTER's number with a wrong size", c_misc_ioctl, MEM_NONE, 0, 2},
	{"FIONREAD on a uffd", c_misc_ioctl, MEM_NONE, 0, 3},
	{"TCGETS on a uffd", c_misc_ioctl, MEM_NONE, 0, 4},
	{"ioctl 0xdeadbeef on a uffd", c_misc_ioctl, MEM_NONE, 0, 5},
	{"FIGETBSZ on a uffd", c_misc_ioctl, MEM_NONE, 0, 6},
	{"UFFDIO_* on a pipe and /dev/null", c_misc_ioctl, MEM_NONE, 0, 7},
	{"UFFDIO_API on closed/negative/huge fds", c_misc_ioctl, MEM_NONE, 0, 8},
	{"FIONBIO on a uffd", c_misc_ioctl, MEM_NONE, 0, 9},
	{"FIONCLEX/FIOCLEX on a uffd", c_misc_ioctl, MEM_NONE, 0, 10},
};

/* ================================================================== */
/* the model must follow fd changes the shim does not wrap             */
/* (transcripts must match; the checkpoint after each case tells)      */
/* ================================================================== */

static void c_model_fd(struct cx *c)
{
	int fd = mk_uffd(c, feat_std());
	if (fd < 0)
		return;
	struct region *r = mk_region_mem(c, "d", MEM_ANON, 2);
	if (r)
		reg_pages(c, fd, r, 0, 2, M_MISSING);
	int v = 0;
	switch (c->arg) {
	case 0: CALL("FIONBIO(0)", ioctl(fd, FIONBIO, &v)); break;
	case 1: CALL("FIONCLEX", ioctl(fd, FIONCLEX)); break;
	case 2: CALL("close_range(fd,fd)", close_range((unsigned)fd, (unsigned)fd, 0));
		forget_fd(fd);
		break;
	case 3: CALL("close_range(fd,fd,CLOEXEC)",
		     close_range((unsigned)fd, (unsigned)fd, CLOSE_RANGE_CLOEXEC)); break;
	case 4: CALL("syscall(SYS_close)", syscall(SYS_close, fd)); forget_fd(fd); break;
	case 5: { /* IOC_NEW through a /proc/self/fd path to the device */
		int dev = open_dev();
		keep_fd(dev);
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", dev);
		int d2 = (int)CALL("open(/proc/self/fd/N)", open(path, O_RDWR | O_CLOEXEC));
		keep_fd(d2);
		int n = (int)CALL("IOC_NEW", ioctl(d2, USERFAULTFD_IOC_NEW, O_CLOEXEC));
		keep_fd(n);
		break;
	}
	case 6: { /* syscall(SYS_dup2) behind the shim's back */
		int n = (int)CALL("syscall(SYS_dup)", syscall(SYS_dup, fd));
		keep_fd(n);
		break;
	}
	case 7: { /* fcntl through syscall() */
		CALL("syscall(SYS_fcntl,F_SETFL,0)", syscall(SYS_fcntl, fd, F_SETFL, 0));
		break;
	}
	case 8: { /* closefrom */
		int n = (int)CALL("dup2(fd,200)", dup2(fd, 200));
		(void)n;
		closefrom(200);
		R("closefrom(200)");
		CALL("F_GETFD(200)", fcntl(200, F_GETFD));
		break;
	}
	}
	fdstate("fd", fd);
}

static const struct tcase model_cases[] = {
	{"FIONBIO changes O_NONBLOCK", c_model_fd, MEM_NONE, 0, 0},
	{"FIONCLEX changes close-on-exec", c_model_fd, MEM_NONE, 0, 1},
	{"close_range closes a uffd", c_model_fd, MEM_NONE, 0, 2},
	{"close_range CLOSE_RANGE_CLOEXEC", c_model_fd, MEM_NONE, 0, 3},
	{"syscall(SYS_close) of a uffd", c_model_fd, MEM_NONE, 0, 4},
	{"IOC_NEW on /dev/userfaultfd reopened via /proc/self/fd", c_model_fd, MEM_NONE, 0, 5},
	{"syscall(SYS_dup) of a uffd", c_model_fd, MEM_NONE, 0, 6},
	{"syscall(SYS_fcntl, F_SETFL) on a uffd", c_model_fd, MEM_NONE, 0, 7},
};

static void c_stale(struct cx *c);

/* Model bugs found by the group checkpoints, one case each so that the
 * failing checkpoint names its cause. */
static const struct tcase model_ops_cases[] = {
	{"API with WP_ASYNC alone (kernel adds WP_UNPOPULATED)", c_api_bit, MEM_NONE, 0, 15},
	{"re-register a MISSING|WP range with MISSING (kernel: no-op)", c_reg_again, MEM_AS, 0,
	 M_MISSING},
	{"re-register a MISSING|WP range with WP (kernel: no-op)", c_reg_again, MEM_AS, 0, M_WP},
	{"protect, then re-register MISSING only", c_wp, MEM_AS, 0, 19},
	{"WRITEPROTECT by a uffd that did not register the range", c_wp, MEM_AS, 0, 15},
	{"MOVE out of another uffd's write-protected range", c_move, MEM_ANON, UFFD_FEATURE_MOVE, 16},
	{"COPY EINVAL (bad mode), stale copy field 0x5a5a", c_stale, MEM_AS, 0, 0},
	{"ZEROPAGE EINVAL (unaligned), stale zeropage field", c_stale, MEM_AS, 0, 1},
	{"MOVE EINVAL (bad mode), stale move field, src write-protected", c_stale, MEM_ANON,
	 UFFD_FEATURE_MOVE, 2},
	{"CONTINUE EINVAL (unaligned len), stale mapped field", c_stale, MEM_AS, 0, 3},
	{"POISON EINVAL (zero len), stale updated field", c_stale, MEM_AS, 0, 4},
	{"COPY EEXIST over a write-protected page", c_stale, MEM_AS, 0, 5},
};

/* A call that fails before the kernel writes its output field (copy,
 * zeropage, mapped, updated, move): the field still holds what the app put
 * there (here 0x5a5a, as stack garbage would).  d: 4 populated pages,
 * MISSING|WP (shmem: MINOR|WP for CONTINUE), all write-protected. */
static void c_stale(struct cx *c)
{
	uint64_t mode = M_MISSING | M_WP;
	if (c->arg == 3 && c->mem != MEM_ANON)
		mode = M_MINOR | M_WP;
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), mode, 6, 4, 0xf);
	if (fd < 0)
		return;
	struct region *s = mk_region_mem(c, "s", MEM_ANON, 4);
	if (!s)
		return;
	wp_op(c, fd, PG(r, 0), 4 * r->ps, WPM);
	size_t ps = r->ps;
	switch (c->arg) {
	case 0: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 1ULL << 7); break;      /* bad mode */
	case 1: zero_op(c, fd, PG(r, 0) + 1, ps, 0); break;                     /* unaligned */
	case 2: move_op(c, fd, PG(r, 4), PG(r, 0), ps, 1ULL << 7); break;      /* src = WP page */
	case 3: cont_op(c, fd, PG(r, 0), ps + 1, 0); break;                     /* unaligned len */
	case 4: poison_op(c, fd, PG(r, 0), 0, 0); break;                        /* zero len */
	case 5: copy_op(c, fd, PG(r, 0), PG(s, 0), ps, 0); break;               /* EEXIST: kernel writes -17 */
	}
	pstate(c, r);
}

/* closefrom() closes the shim's own fds too: a process of its own (part 2). */
static const struct tcase closefrom_cases[] = {
	{"closefrom() over a dup of a uffd", c_model_fd, MEM_NONE, 0, 8},
	{"a uffd created after closefrom()", c_create_syscall, MEM_NONE, 0, O_CLOEXEC},
};

/* ================================================================== */
/* failed calls leave the model unchanged                              */
/* ================================================================== */

/* One uffd U with [0,4) MISSING|WP (anon; shmem: MISSING|WP too, features
 * allow it) and [4,6) MISSING, pages 0,1 populated, page 0 protected; a
 * second uffd V with nothing.  Then only calls that fail. */
static int err_fd_u = -1, err_fd_v = -1;
static char err_json_before[65536];
static int err_json_rc = -1;

/* status --json without the parts that change on every call. */
static void json_strip(char *s)
{
	static const char *const keys[] = {"\"counters\":{", "\"last_change_ns\":",
					   "\"quiesced\":", "\"age_ns\":", NULL};
	for (int k = 0; keys[k]; k++) {
		for (char *p = strstr(s, keys[k]); p; p = strstr(p, keys[k])) {
			char *q = p + strlen(keys[k]);
			if (keys[k][strlen(keys[k]) - 1] == '{') {
				while (*q && *q != '}')
					q++;
				if (*q)
					q++;
			} else {
				while (*q && *q != ',' && *q != '}')
					q++;
			}
			memmove(p, q, strlen(q) + 1);
		}
	}
}

static void c_err_setup(struct cx *c)
{
	err_fd_u = mk_uffd(c, feat_std());
	err_fd_v = mk_uffd(c, feat_std());
	struct region *r = mk_region(c, "d", 8);
	if (err_fd_u < 0 || err_fd_v < 0 || !r)
		return;
	fill(r, 0, 'A', false);
	fill(r, 1, 'B', false);
	reg_pages(c, err_fd_u, r, 0, 4, M_MISSING | M_WP);
	reg_pages(c, err_fd_u, r, 4, 2, M_MISSING);
	wp_op(c, err_fd_u, PG(r, 0), r->ps, WPM);
	pstate(c, r);
	if (is_shim_child) {
		err_json_rc = shim_status_json_self(err_json_before, sizeof(err_json_before));
		json_strip(err_json_before);
	}
}

/* The failing calls, all on the region the setup case made (re-found by the
 * memory type's page size: the setup region is c_err_region). */
static struct region err_region;
static void c_err_setup_keep(struct cx *c)
{
	c_err_setup(c);
	if (c->nreg)
		err_region = c->reg[0];
}

static void c_err_calls(struct cx *c)
{
	struct region *r = &c->reg[c->nreg++];
	*r = err_region;
	int u = err_fd_u, v = err_fd_v;
	if (u < 0 || v < 0 || !r->base) {
		R("SETUP-FAILED(no setup)");
		return;
	}
	size_t ps = r->ps;
	struct region *s = mk_region_mem(c, "s", MEM_ANON, 1);
	if (!s)
		return;
	if (s->ps < ps) {
		void *p = wmap(ps, MAP_PRIVATE | MAP_ANONYMOUS, -1);
		if (p == MAP_FAILED)
			return;
		keep_map(p, ps);
		s->base = p;
		s->len = s->ps = ps;
	}
	memset(s->base, 's', s->len);
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	switch (c->arg) {
	case 0: IOC(c, u, UFFDIO_API, &api); break;
	case 1: api.api = 1; IOC(c, u, UFFDIO_API, &api); break;
	case 2: { struct uffdio_register g = {{PG(r, 0) + 1, ps}, M_MISSING, 0};
		IOC(c, u, UFFDIO_REGISTER, &g); break; }
	case 3: { struct uffdio_register g = {{PG(r, 6), 0}, M_MISSING, 0};
		IOC(c, u, UFFDIO_REGISTER, &g); break; }
	case 4: { struct uffdio_register g = {{PG(r, 6), 2 * ps}, 0, 0};
		IOC(c, u, UFFDIO_REGISTER, &g); break; }
	case 5: { struct uffdio_register g = {{PG(r, 6), 2 * ps}, 1 << 5, 0};
		IOC(c, u, UFFDIO_REGISTER, &g); break; }
	case 6: { struct uffdio_register g = {{PG(r, 12), 4 * ps}, M_MISSING, 0};
		IOC(c, u, UFFDIO_REGISTER, &g); break; }           /* wholly in the gap */
	case 7: { struct uffdio_register g = {{PG(r, 2), 4 * ps}, M_MISSING, 0};
		IOC(c, v, UFFDIO_REGISTER, &g); break; }           /* EBUSY */
	case 8: IOC(c, u, UFFDIO_REGISTER, (void *)1); break;
	case 9: { struct uffdio_register g = {{PG(r, 6), 2 * ps}, M_MINOR | M_MISSING, 0};
		if (r->mem != MEM_ANON) g.mode = 1ULL << 7;
		IOC(c, u, UFFDIO_REGISTER, &g); break; }           /* MINOR on anon */
	case 10: range_op(c, u, UFFDIO_UNREGISTER, PG(r, 0) + 1, ps); break;
	case 11: range_op(c, u, UFFDIO_UNREGISTER, PG(r, 0), 0); break;
	case 12: range_op(c, u, UFFDIO_UNREGISTER, PG(r, 12), 4 * ps); break;   /* in the gap */
	case 13: IOC(c, u, UFFDIO_UNREGISTER, (void *)1); break;
	case 14: copy_op(c, u, PG(r, 0), PG(s, 0), ps, 0); break;               /* EEXIST */
	case 15: copy_op(c, u, PG(r, 2), PG(s, 0), ps, 1 << 7); break;
	case 16: copy_op(c, u, PG(r, 6), PG(s, 0), ps, 0); break;               /* ENOENT */
	case 17: copy_op(c, u, PG(r, 2), 0x1000 * (ps / 4096), ps, 0); break;   /* EFAULT */
	case 18: copy_op(c, u, PG(r, 4), PG(s, 0), ps, UFFDIO_COPY_MODE_WP); break; /* WP on non-WP */
	case 20: zero_op(c, u, PG(r, 1), ps, 0); break;                          /* EEXIST */
	case 21: zero_op(c, u, PG(r, 2) + 1, ps, 0); break;
	case 22: wp_op(c, u, PG(r, 4), 2 * ps, WPM); break;                      /* ENOENT */
	case 23: wp_op(c, u, PG(r, 1), ps, WPM | WPD); break;                    /* EINVAL */
	case 24: wp_op(c, u, PG(r, 6), 2 * ps, WPM); break;                      /* unregistered */
	case 26: wp_op(c, u, PG(r, 0), ps, 1 << 6); break;
	case 27: cont_op(c, u, PG(r, 2), ps, 0); break;
	case 28: poison_op(c, u, PG(r, 1), ps, 0); break;                        /* EEXIST */
	case 29: move_op(c, u, PG(r, 2), PG(r, 0), ps, 1 << 7); break;
	case 30: range_op(c, u, UFFDIO_WAKE, PG(r, 0) + 1, ps); break;
	case 31: CALL("dup3(u,u,0)", dup3(u, u, 0)); break;
	case 32: CALL("F_DUPFD(-1)", fcntl(u, F_DUPFD, -1)); break;
	case 33: { struct uffd_msg m; CALL("read(31)", read(u, &m, 31)); break; }
	case 34: CALL("dup2(u,-1)", dup2(u, -1)); break;
	}
	pstate(c, r);
}

static void err_after(const char *group)
{
	char name[300];
	if (!is_shim_child) {
		snprintf(name, sizeof(name), "%s: status --json identical before and after the failed "
			 "calls (ranges, WP pages, API, fds)", group);
		emit("K\t%s\t1\tn/a natively", name);
		snprintf(name, sizeof(name), "%s: model has 2 ranges and 1 WP page after the failed calls",
			 group);
		emit("K\t%s\t1\tn/a natively", name);
		return;
	}
	static char after[65536];
	int rc = shim_status_json_self(after, sizeof(after));
	long ranges = shim_json_count(after, "\"modes\":");
	long long wp = shim_json_sum(after, "wp_pages");
	json_strip(after);
	snprintf(name, sizeof(name), "%s: status --json identical before and after the failed "
		 "calls (ranges, WP pages, API, fds)", group);
	bool same = rc == 0 && err_json_rc == 0 && !strcmp(after, err_json_before);
	emit("K\t%s\t%d\tbefore (rc %d): %s\nafter (rc %d):  %s", name, same, err_json_rc,
	     err_json_before, rc, after);
	snprintf(name, sizeof(name), "%s: model has 2 ranges and 1 WP page after the failed calls",
		 group);
	emit("K\t%s\t%d\tranges %ld, wp_pages %lld", name, ranges == 2 && wp == 1, ranges, wp);
}

static const struct tcase err_cases[] = {
	{"setup: MISSING|WP [0,4), MISSING [4,6), page 0 protected", c_err_setup_keep, MEM_AS, 0, 0},
	{"API again", c_err_calls, MEM_AS, 0, 0},
	{"API wrong number", c_err_calls, MEM_AS, 0, 1},
	{"REGISTER unaligned", c_err_calls, MEM_AS, 0, 2},
	{"REGISTER zero len", c_err_calls, MEM_AS, 0, 3},
	{"REGISTER mode 0", c_err_calls, MEM_AS, 0, 4},
	{"REGISTER unknown mode", c_err_calls, MEM_AS, 0, 5},
	{"REGISTER of unmapped memory", c_err_calls, MEM_AS, 0, 6},
	{"REGISTER by another uffd (EBUSY)", c_err_calls, MEM_AS, 0, 7},
	{"REGISTER bad pointer", c_err_calls, MEM_AS, 0, 8},
	{"REGISTER MINOR on anon / unknown mode", c_err_calls, MEM_AS, 0, 9},
	{"UNREGISTER unaligned", c_err_calls, MEM_AS, 0, 10},
	{"UNREGISTER zero len", c_err_calls, MEM_AS, 0, 11},
	{"UNREGISTER of unmapped memory", c_err_calls, MEM_AS, 0, 12},
	{"UNREGISTER bad pointer", c_err_calls, MEM_AS, 0, 13},
	{"COPY EEXIST", c_err_calls, MEM_AS, 0, 14},
	{"COPY unknown mode", c_err_calls, MEM_AS, 0, 15},
	{"COPY unregistered", c_err_calls, MEM_AS, 0, 16},
	{"COPY bad src", c_err_calls, MEM_AS, 0, 17},
	{"COPY MODE_WP on a MISSING-only range", c_err_calls, MEM_AS, 0, 18},
	{"ZEROPAGE EEXIST", c_err_calls, MEM_AS, 0, 20},
	{"ZEROPAGE unaligned", c_err_calls, MEM_AS, 0, 21},
	{"WRITEPROTECT on a MISSING-only range (ENOENT)", c_err_calls, MEM_AS, 0, 22},
	{"WRITEPROTECT WP|DONTWAKE", c_err_calls, MEM_AS, 0, 23},
	{"WRITEPROTECT unregistered", c_err_calls, MEM_AS, 0, 24},
	{"WRITEPROTECT unknown mode", c_err_calls, MEM_AS, 0, 26},
	{"CONTINUE on a non-MINOR range", c_err_calls, MEM_AS, 0, 27},
	{"POISON EEXIST", c_err_calls, MEM_AS, 0, 28},
	{"MOVE unknown mode", c_err_calls, MEM_AS, 0, 29},
	{"WAKE unaligned", c_err_calls, MEM_AS, 0, 30},
	{"dup3 onto itself", c_err_calls, MEM_AS, 0, 31},
	{"F_DUPFD -1", c_err_calls, MEM_AS, 0, 32},
	{"read(31)", c_err_calls, MEM_AS, 0, 33},
	{"dup2 to -1", c_err_calls, MEM_AS, 0, 34},
};

/* ================================================================== */
/* the table                                                           */
/* ================================================================== */

#define SECTION(name, arr, mems, each, after) \
	{name, arr, sizeof(arr) / sizeof(arr[0]), mems, each, after, 0}
#define SECTION_PART(name, arr, mems, each, after, part) \
	{name, arr, sizeof(arr) / sizeof(arr[0]), mems, each, after, part}

static const struct tsection sections[] = {
	SECTION("create", create_cases, MEM_NONE, 0, NULL),
	SECTION("UFFDIO_API", api_cases, MEM_NONE, 0, NULL),
	SECTION("UFFDIO_REGISTER", register_cases, MEM_ALL, 0, NULL),
	SECTION("UNREGISTER/WAKE", unreg_cases, MEM_ALL, 0, NULL),
	SECTION("COPY/ZEROPAGE", copy_cases, MEM_ALL, 0, NULL),
	SECTION("WRITEPROTECT", wp_cases, MEM_ALL, 0, NULL),
	SECTION("CONTINUE/POISON", cont_cases, MEM_ALL, 0, NULL),
	SECTION("MOVE", move_cases, MEM_ALL, 0, NULL),
	SECTION("faults/read/poll", fault_cases, MEM_ALL, 0, NULL),
	SECTION("events", event_cases, MEM_ALL, 0, NULL),
	SECTION("fd ops", fd_cases, MEM_NONE, 0, NULL),
	SECTION("model follows", model_cases, MEM_NONE, 1, NULL),
	SECTION("model per call", model_ops_cases, MEM_AS, 1, NULL),
	SECTION("failed calls", err_cases, MEM_AS, 0, err_after),
	SECTION_PART("closefrom", closefrom_cases, MEM_NONE, 1, NULL, 2),
};

/* ================================================================== */
/* last: fd numbers the shim itself uses (900/920/930 and up)          */
/* ================================================================== */

static void final_cases(void)
{
	const char *name = "fd numbers: fds the app can see near the shim's own (900..935)";
	const char *filter = getenv("UFFDSHIM_TT_FILTER");
	if (filter && !strstr(name, filter))
		return;
	struct cx cc = {.mem = MEM_ANON, .ps = 4096}, *c = &cc;
	tlen = 0;
	tline[0] = 0;
	/* a WP round trip makes the shim open its pagemap fd; a uffd its
	 * control socket */
	struct region *r;
	int fd = setup_std(c, &r, feat_std(), M_MISSING | M_WP, 2, 2, 0x1);
	if (fd >= 0)
		wp_op(c, fd, PG(r, 0), r->ps, WPM);
	for (int n = 899; n <= 935; n++) {
		errno = ERRNO_SENTINEL;
		int v = fcntl(n, F_GETFD);
		if (v >= 0 || errno != EBADF)
			R("F_GETFD(%d)=%d/%s", n, v, ename(errno));
	}
	int d = (int)CALL("F_DUPFD(fd,900)", fcntl(fd, F_DUPFD, 900));
	keep_fd(d);
	d = (int)CALL("F_DUPFD_CLOEXEC(fd,920)", fcntl(fd, F_DUPFD_CLOEXEC, 920));
	keep_fd(d);
	CALL("close(930)", close(930));
	CALL("close(925)", close(925));
	emit("C\t%s\t%s", name, tline);

	name = "fd numbers: dup2 of a uffd onto fd 920, then the shim's control socket";
	tlen = 0;
	tline[0] = 0;
	d = (int)CALL("dup2(fd,920)", dup2(fd, 920));
	keep_fd(d);
	d = (int)CALL("dup2(fd,900)", dup2(fd, 900));
	keep_fd(d);
	wp_op(c, fd, PG(r, 0), r->ps, 0);
	emit("C\t%s\t%s", name, tline);
	checkpoint("dup2 onto fds 900 and 920");
	cleanup_group();
}
