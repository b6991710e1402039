/* plugin_abi.h - our own statement of the CRIU plugin ABI that the uffdshim
 * plugin implements (CRIU 4.x, plugin interface version 0.2.0).  Written from
 * the documented behaviour of CRIU's plugin loader, not taken from CRIU's
 * headers:
 *
 *  - CRIU dlopen()s every "*.so" of --libdir / $CRIU_LIBS_DIR and looks up one
 *    data symbol, CR_PLUGIN_DESC: a descriptor with a name, init and exit
 *    callbacks, the interface version the plugin was written for, how many
 *    hook slots it has, and a table of hook function pointers indexed by hook
 *    id.  A version newer than CRIU's, or more hook slots than CRIU knows,
 *    makes CRIU refuse the plugin (and the whole dump/restore).
 *  - init(stage) runs in the criu process right after loading (non-zero
 *    aborts); exit(stage, ret) runs when CRIU is done (ret != 0: failed).
 *  - A hook returns -ENOTSUP for objects that are not its own; the first
 *    other value wins.
 *
 * The hook ids, stage numbers and the descriptor layout below are part of
 * that binary interface and must not change. */
#ifndef UFFDSHIM_CRIU_PLUGIN_ABI_H
#define UFFDSHIM_CRIU_PLUGIN_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* Interface version: (major << 16) + (minor << 8) + sublevel. */
#define UCR_ABI_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + (c))
#define UCR_ABI_PLUGIN_VERSION UCR_ABI_VERSION(0, 2, 0)

/* Hook ids (index into the descriptor's hook table) and their signatures. */
enum ucr_hook {
	UCR_HOOK_DUMP_UNIX_SK = 0,       /* int (int fd, int ino): a unix socket whose
					  * peer is outside the dump; 0 claims it */
	UCR_HOOK_RESTORE_UNIX_SK = 1,    /* int (int ino): in the task, returns a socket */
	UCR_HOOK_DUMP_EXT_FILE = 2,      /* int (int fd, int id): fd is criu's copy */
	UCR_HOOK_RESTORE_EXT_FILE = 3,   /* int (int id): returns a new fd */
	UCR_HOOK_DUMP_EXT_MOUNT = 4,
	UCR_HOOK_RESTORE_EXT_MOUNT = 5,
	UCR_HOOK_DUMP_EXT_LINK = 6,
	UCR_HOOK_HANDLE_DEVICE_VMA = 7,
	UCR_HOOK_UPDATE_VMA_MAP = 8,
	UCR_HOOK_RESUME_DEVICES_LATE = 9, /* int (int pid), criu master, tasks stopped */
	UCR_HOOK_PAUSE_DEVICES = 10,     /* int (int pid), before the task is seized */
	UCR_HOOK_CHECKPOINT_DEVICES = 11,/* int (int pid), every task seized */
	UCR_HOOK_POST_FORKING = 12,      /* int (void) */
	UCR_HOOK_COUNT = 13,
};

/* The stage passed to init and exit. */
enum ucr_stage {
	UCR_STAGE_DUMP = 0,
	UCR_STAGE_PRE_DUMP = 1,
	UCR_STAGE_RESTORE = 2,
};

struct ucr_plugin_desc {
	const char *name;
	int (*init)(int stage);
	void (*exit)(int stage, int ret);
	unsigned int version;    /* UCR_ABI_PLUGIN_VERSION */
	unsigned int max_hooks;  /* UCR_HOOK_COUNT */
	void *hooks[UCR_HOOK_COUNT];
};

/* The symbol CRIU looks up; it must have exactly this name. */
#define UCR_DESC_SYMBOL CR_PLUGIN_DESC
extern struct ucr_plugin_desc UCR_DESC_SYMBOL;

/* Functions the criu executable exports to plugins (it is linked with
 * -rdynamic).  Weak, so that the plugin also loads outside criu (a test
 * harness), where they are NULL. */
extern int criu_get_image_dir(void) __attribute__((weak));
/* Log levels: 0 always, 1 error, 2 warning, 3 info, 4 debug. */
extern void print_on_level(unsigned int loglevel, const char *format, ...)
	__attribute__((weak, format(printf, 2, 3)));
/* Dump: name a plugin the restore must load (written to inventory.img). */
extern int add_inventory_plugin(const char *name) __attribute__((weak));
/* Restore: a loaded plugin takes its name off the inventory's list; names
 * left over fail the restore ("Missing required plugin"). n bytes compared. */
extern bool check_and_remove_inventory_plugin(const char *name, size_t n)
	__attribute__((weak));

#endif
