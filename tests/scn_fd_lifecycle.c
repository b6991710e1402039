/* scn_fd_lifecycle.c - scenario: the fds of a uffd over its life.  dup,
 * dup2, dup3, fcntl(F_DUPFD[_CLOEXEC]), dup2 over another uffd's only fd,
 * close of one of several fds and of the last one, F_SETFL O_NONBLOCK,
 * F_SETFD, the ioctls FIONBIO/FIOCLEX/FIONCLEX, close_range; then execve of
 * this same program ("phase 2"): a uffd that has an fd without CLOEXEC
 * survives (origin survived-exec, same inode, fd and API features, no
 * ranges: the memory it served was the old image), a CLOEXEC-only uffd is
 * gone.  The TAP stream continues across the exec (phase 2 gets the counts
 * on its command line).  After every step the model must match the kernel
 * (status --verify) and the fd facts in status --json. */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "test_helpers.h"
#include "shim_test.h"

#define PG 4096UL
#define VERIFY(...) do { char l_[160]; snprintf(l_, sizeof(l_), __VA_ARGS__); \
	is_int(shim_verify_self(l_), 0, "verify: %s", l_); } while (0)

#include "scn_common.h"
static int reg_missing(int uffd, void *addr, size_t len)
{
	struct uffdio_register r = {.range = {(uint64_t)addr, len},
				    .mode = UFFDIO_REGISTER_MODE_MISSING};
	return ioctl(uffd, UFFDIO_REGISTER, &r);
}

static uint64_t ino_of(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* The model's fds of the uffd holding fd: want[] (any order) with their
 * CLOEXEC flags cloexec[]. */
static void check_fds(int fd, const char *label, int n, const int *want, const int *cloexec)
{
	struct juffd u;
	if (js_load(label) || !ju_fd(fd, &u)) {
		fail("%s: status --json lists fd %d", label, fd);
		return;
	}
	bool same = u.nfds == n;
	for (int i = 0; same && i < n; i++) {
		bool found = false;
		for (int j = 0; j < u.nfds; j++)
			if (u.fds[j] == want[i] && u.cloexec[j] == cloexec[i])
				found = true;
		same = found;
	}
	char got[200] = "";
	for (int j = 0; j < u.nfds; j++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), " %d%s", u.fds[j],
			 u.cloexec[j] ? "(cloexec)" : "");
	ok(same, "%s: the model lists %d fd(s) with their CLOEXEC flags (model:%s)", label, n, got);
}

static bool fd_cloexec(int fd)
{
	return fcntl(fd, F_GETFD) & FD_CLOEXEC;
}

/* ---- phase 2: the image after execve ---- */
static int phase2(char **argv)
{
	th_state.run = atoi(argv[2]);
	th_state.failed = atoi(argv[3]);
	int keep = atoi(argv[4]), gone_fd = atoi(argv[5]), other = atoi(argv[6]);
	uint64_t ino = strtoull(argv[7], NULL, 10);
	note("phase 2: after execve");
	ok(ino_of(keep) == ino, "exec: fd %d (no CLOEXEC) is still the uffd", keep);
	ok(fcntl(gone_fd, F_GETFD) == -1 && fcntl(other, F_GETFD) == -1,
	   "exec: the CLOEXEC fds %d and %d are closed", gone_fd, other);
	struct juffd u;
	if (js_load("exec") == 0) {
		is_int(js_nuffds(), 1, "exec: the model has 1 uffd (the CLOEXEC-only one is gone)");
		if (ju_fd(keep, &u)) {
			is_str(u.origin, "survived-exec", "exec: origin survived-exec");
			is_u64(u.ino, ino, "exec: same inode");
			ok(u.nfds == 1 && u.fds[0] == keep && !u.cloexec[0],
			   "exec: only fd %d, without CLOEXEC", keep);
			ok(u.api_done, "exec: API done");
			is_u64(u.features_requested, UFFD_FEATURE_THREAD_ID,
			       "exec: requested features kept");
			is_int(u.nranges, 0, "exec: no ranges (the old image's memory is gone)");
		} else {
			fail("exec: the model lists fd %d", keep);
		}
	}
	VERIFY("after exec");
	/* The uffd serves the old image's memory, which no longer exists. */
	char *m = map_anon(4);
	int rc = reg_missing(keep, m, 4 * PG), err = errno;
	ok(rc == -1, "exec: REGISTER of new memory on the surviving uffd fails (errno %s)",
	   strerror(err));
	if (js_load("exec register") == 0 && ju_fd(keep, &u)) {
		is_int(u.nranges, 0, "exec: still no range");
		ok(u.mm_pid != getpid(), "exec: the model does not claim it serves this image's "
		   "memory (mm_pid %d, memory %s)", u.mm_pid, u.mm_pid == getpid() ? "self" : "other");
	}
	VERIFY("after exec, failed REGISTER");
	close(keep);
	if (js_load("exec close") == 0)
		is_int(js_nuffds(), 0, "exec: closing it empties the model");
	VERIFY("after exec, closed");
	return done_testing();
}

int main(int argc, char **argv)
{
	if (argc == 8 && strcmp(argv[1], "phase2") == 0)
		return phase2(argv);
	shim_reexec_if_needed(argv);
	int u1 = uffd_create(O_CLOEXEC);
	if (u1 < 0)
		skip_all("%s", uffd_skip_reason(errno));
	if (uffd_api(u1, UFFD_FEATURE_THREAD_ID, NULL) < 0)
		skip_all("UFFDIO_API: %s", strerror(errno));
	char *mem = map_anon(8);
	is_int(reg_missing(u1, mem, 8 * PG), 0, "REGISTER 8 pages MISSING");
	check_fds(u1, "created", 1, (int[]){u1}, (int[]){1});
	VERIFY("created");

	/* ---- dup family ---- */
	int d1 = dup(u1);
	ok(d1 >= 0 && !fd_cloexec(d1), "dup: fd %d without CLOEXEC", d1);
	check_fds(u1, "dup", 2, (int[]){u1, d1}, (int[]){1, 0});
	VERIFY("dup");
	is_int(dup2(u1, 40), 40, "dup2 to 40");
	is_int(dup3(u1, 41, O_CLOEXEC), 41, "dup3 to 41 with O_CLOEXEC");
	int f50 = fcntl(u1, F_DUPFD, 50), f60 = fcntl(u1, F_DUPFD_CLOEXEC, 60);
	ok(f50 >= 50 && f60 >= 60 && !fd_cloexec(f50) && fd_cloexec(f60),
	   "F_DUPFD %d, F_DUPFD_CLOEXEC %d", f50, f60);
	check_fds(u1, "dup2/dup3/F_DUPFD", 6, (int[]){u1, d1, 40, 41, f50, f60},
		  (int[]){1, 0, 0, 1, 0, 1});
	VERIFY("dup2/dup3/F_DUPFD");
	is_int(dup2(u1, u1), u1, "dup2 of an fd onto itself");
	check_fds(u1, "dup2 onto itself", 6, (int[]){u1, d1, 40, 41, f50, f60},
		  (int[]){1, 0, 0, 1, 0, 1});
	VERIFY("dup2 onto itself");

	/* ---- fd and file flags ---- */
	is_int(fcntl(d1, F_SETFD, FD_CLOEXEC), 0, "F_SETFD FD_CLOEXEC on %d", d1);
	check_fds(u1, "F_SETFD", 6, (int[]){u1, d1, 40, 41, f50, f60}, (int[]){1, 1, 0, 1, 0, 1});
	VERIFY("F_SETFD set");
	is_int(fcntl(d1, F_SETFD, 0), 0, "F_SETFD 0 on %d", d1);
	VERIFY("F_SETFD cleared");
	is_int(fcntl(40, F_SETFL, O_NONBLOCK), 0, "F_SETFL O_NONBLOCK through fd 40");
	struct uffd_msg msg;
	errno = 0;
	ok(read(u1, &msg, sizeof(msg)) == -1 && errno == EAGAIN,
	   "read through another fd does not block: EAGAIN (errno %s)", strerror(errno));
	struct juffd u;
	if (js_load("F_SETFL") == 0 && ju_fd(u1, &u))
		ok(u.nonblock, "F_SETFL: the model says O_NONBLOCK");
	VERIFY("F_SETFL O_NONBLOCK");
	is_int(fcntl(u1, F_SETFL, 0), 0, "F_SETFL 0");
	VERIFY("F_SETFL cleared");
	int on = 1;
	is_int(ioctl(f50, FIONBIO, &on), 0, "ioctl FIONBIO 1 sets O_NONBLOCK");
	if (js_load("FIONBIO") == 0 && ju_fd(u1, &u))
		ok(u.nonblock, "FIONBIO: the model says O_NONBLOCK");
	VERIFY("FIONBIO");
	on = 0;
	ioctl(f50, FIONBIO, &on);
	is_int(ioctl(40, FIOCLEX), 0, "ioctl FIOCLEX on 40");
	is_int(ioctl(41, FIONCLEX), 0, "ioctl FIONCLEX on 41");
	check_fds(u1, "FIOCLEX/FIONCLEX", 6, (int[]){u1, d1, 40, 41, f50, f60},
		  (int[]){1, 0, 1, 0, 0, 1});
	VERIFY("FIOCLEX/FIONCLEX");
	/* Back in step through a call the shim follows, whatever it made of those. */
	fcntl(40, F_SETFD, 0);
	fcntl(41, F_SETFD, FD_CLOEXEC);
	fcntl(f50, F_SETFL, 0);

	/* ---- dup2 over the only fd of another uffd: that uffd is released ---- */
	int u2 = uffd_create(O_CLOEXEC);
	uffd_api(u2, 0, NULL);
	char *mem2 = map_anon(4);
	is_int(reg_missing(u2, mem2, 4 * PG), 0, "second uffd: REGISTER 4 pages");
	if (js_load("two") == 0)
		is_int(js_nuffds(), 2, "the model has 2 uffds");
	VERIFY("second uffd");
	is_int(dup2(u1, u2), u2, "dup2 over the second uffd's only fd %d", u2);
	if (js_load("dup2 over") == 0)
		is_int(js_nuffds(), 1, "dup2 over: the second uffd left the model");
	check_fds(u1, "dup2 over", 7, (int[]){u1, d1, 40, 41, f50, f60, u2},
		  (int[]){1, 0, 0, 1, 0, 1, 0});
	VERIFY("dup2 over another uffd");

	/* ---- a plain fd onto a uffd fd, close, close_range ---- */
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	is_int(dup2(nul, f50), f50, "dup2 of /dev/null onto %d", f50);
	close(nul);
	is_int(close(40), 0, "close 40");
	is_int(close(u2), 0, "close %d", u2);
	check_fds(u1, "dup2 of a file onto, close", 4, (int[]){u1, d1, 41, f60},
		  (int[]){1, 0, 1, 1});
	VERIFY("dup2 /dev/null onto, close");
	close(f50);
	fcntl(41, F_SETFD, 0);
	is_int(close_range(41, 41, CLOSE_RANGE_CLOEXEC), 0, "close_range(41, CLOSE_RANGE_CLOEXEC)");
	ok(fd_cloexec(41), "close_range(CLOSE_RANGE_CLOEXEC) set close-on-exec on 41");
	check_fds(u1, "close_range CLOEXEC", 4, (int[]){u1, d1, 41, f60}, (int[]){1, 0, 1, 1});
	VERIFY("close_range CLOSE_RANGE_CLOEXEC");
	fcntl(41, F_SETFD, FD_CLOEXEC);
	is_int(close_range(41, 41, 0), 0, "close_range(41)");
	check_fds(u1, "close_range", 3, (int[]){u1, d1, f60}, (int[]){1, 0, 1});
	VERIFY("close_range");
	if (fcntl(41, F_GETFD) == -1 && dup2(u1, 41) == 41) /* back in step */
		close(41);

	/* ---- the last fd of a uffd: it and its registration go ---- */
	int u3 = uffd_create(O_CLOEXEC);
	uffd_api(u3, 0, NULL);
	char *mem3 = map_anon(4);
	is_int(reg_missing(u3, mem3, 4 * PG), 0, "third uffd: REGISTER 4 pages");
	int d3 = dup(u3);
	close(u3);
	if (js_load("third, one fd closed") == 0 && ju_fd(d3, &u))
		is_int(u.nranges, 1, "third uffd: still registered with one fd left");
	VERIFY("third uffd, one of two fds closed");
	is_int(close(d3), 0, "close the third uffd's last fd");
	if (js_load("third closed") == 0)
		is_int(js_nuffds(), 1, "the third uffd left the model");
	mem3[0] = 1; /* no longer registered: an ordinary fault */
	VERIFY("third uffd closed");

	/* ---- close_range over everything above the app's fds (the shim's own
	 * fds live up there: it must survive that, as it survives close()) ---- */
	is_int(close_range(100, ~0U, 0), 0, "close_range(100, ~0U)");
	check_fds(u1, "close_range(100, ~0U)", 3, (int[]){u1, d1, f60}, (int[]){1, 0, 1});
	VERIFY("close_range over the shim's fds");

	/* ---- exec: u1 survives through d1 only; a CLOEXEC uffd does not ---- */
	int u4 = uffd_create(O_CLOEXEC);
	uffd_api(u4, 0, NULL);
	close(f60);
	check_fds(u1, "before exec", 2, (int[]){u1, d1}, (int[]){1, 0});
	VERIFY("before exec");
	char a_run[16], a_failed[16], a_keep[16], a_gone[16], a_other[16], a_ino[32];
	snprintf(a_run, sizeof(a_run), "%d", th_state.run + 1);
	snprintf(a_failed, sizeof(a_failed), "%d", th_state.failed);
	snprintf(a_keep, sizeof(a_keep), "%d", d1);
	snprintf(a_gone, sizeof(a_gone), "%d", u1);
	snprintf(a_other, sizeof(a_other), "%d", u4);
	snprintf(a_ino, sizeof(a_ino), "%" PRIu64, ino_of(d1));
	char *args[] = {argv[0], "phase2", a_run, a_failed, a_keep, a_gone, a_other, a_ino, NULL};
	pass("execve into phase 2");
	fflush(NULL);
	execv("/proc/self/exe", args);
	fail("execve: %s", strerror(errno));
	return done_testing();
}
