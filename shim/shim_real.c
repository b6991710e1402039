/* shim_real.c - the next definitions of every function the shim wraps. */
#include <dlfcn.h>

#include "shim.h"

struct shim_real real;

#define RESOLVE(field, name) real.field = (__typeof__(real.field))dlsym(RTLD_NEXT, name)

void shim_real_resolve(void)
{
	RESOLVE(syscall, "syscall");
	RESOLVE(ioctl, "ioctl");
	RESOLVE(read, "read");
	RESOLVE(read_chk, "__read_chk");
	RESOLVE(readv, "readv");
	RESOLVE(close, "close");
	RESOLVE(dup, "dup");
	RESOLVE(dup2, "dup2");
	RESOLVE(dup3, "dup3");
	RESOLVE(fcntl, "fcntl");
	RESOLVE(fcntl64, "fcntl64");
	RESOLVE(open, "open");
	RESOLVE(open64, "open64");
	RESOLVE(openat, "openat");
	RESOLVE(openat64, "openat64");
	RESOLVE(open_2, "__open_2");
	RESOLVE(open64_2, "__open64_2");
	RESOLVE(openat_2, "__openat_2");
	RESOLVE(openat64_2, "__openat64_2");
	RESOLVE(fork, "fork");
	RESOLVE(clone, "clone");
	RESOLVE(execve, "execve");
	RESOLVE(execveat, "execveat");
	RESOLVE(fexecve, "fexecve");
	RESOLVE(execvpe, "execvpe");
	RESOLVE(posix_spawn, "posix_spawn");
	RESOLVE(posix_spawnp, "posix_spawnp");
	RESOLVE(sendmsg, "sendmsg");
	RESOLVE(recvmsg, "recvmsg");
	if (!real.fcntl64)
		real.fcntl64 = real.fcntl;
}
