/* shim_msg.c - a message buffer without stdio, and refusing to start a
 * program (relaunch restore: shim_restore.c, shim_restore_tracked.c). */
#include <sys/syscall.h>

#include "shim.h"
#include "shim_raw.h"

void shim_msg_str(struct shim_msg *m, const char *s)
{
	while (*s && m->n < sizeof(m->b) - 2)
		m->b[m->n++] = *s++;
}

void shim_msg_dec(struct shim_msg *m, uint64_t v)
{
	char t[24];
	shim_utoa(v, t);
	shim_msg_str(m, t);
}

void shim_msg_hex(struct shim_msg *m, uint64_t v)
{
	char t[20];
	int n = 0;
	do {
		t[n++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	shim_msg_str(m, "0x");
	while (n && m->n < sizeof(m->b) - 2)
		m->b[m->n++] = t[--n];
}

void shim_refuse(struct shim_msg *m)
{
	m->b[m->n++] = '\n';
	RAW3(SYS_write, 2, "uffd-replay: restore refused: ", 30);
	RAW3(SYS_write, 2, m->b, m->n);
	RAW1(SYS_exit_group, 1);
	__builtin_unreachable();
}
