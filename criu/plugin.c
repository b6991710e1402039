/* plugin.c - the descriptor CRIU looks up in build/criu/uffdshim_criu.so,
 * init/exit, and the hook table.  The work is in dump.c and restore.c. */
#include <errno.h>
#include <string.h>

#include "plugin_abi.h"
#include "ucr.h"

int ucr_stage = -1;

static int ucr_init(int stage)
{
	ucr_stage = stage;
	if (stage == UCR_STAGE_RESTORE && check_and_remove_inventory_plugin)
		check_and_remove_inventory_plugin(UCR_PLUGIN_NAME, sizeof(UCR_PLUGIN_NAME));
	ucr_debug("plugin loaded (stage %d)", stage);
	return 0;
}

static void ucr_exit(int stage, int ret)
{
	if (stage == UCR_STAGE_DUMP)
		ucr_dump_fini(ret);
	else if (stage == UCR_STAGE_RESTORE)
		ucr_restore_fini(ret);
	ucr_stage = -1;
}

static int hook_pause_devices(int pid)
{
	return ucr_pause_devices(pid);
}

static int hook_checkpoint_devices(int pid)
{
	return ucr_checkpoint_devices(pid);
}

static int hook_dump_ext_file(int fd, int id)
{
	return ucr_dump_ext_file(fd, id);
}

static int hook_dump_unix_sk(int fd, int ino)
{
	return ucr_dump_unix_sk(fd, ino);
}

static int hook_restore_unix_sk(int ino)
{
	return ucr_restore_unix_sk(ino);
}

static int hook_restore_ext_file(int id)
{
	return ucr_restore_ext_file(id);
}

static int hook_resume_devices_late(int pid)
{
	return ucr_resume_devices_late(pid);
}

__attribute__((visibility("default"))) struct ucr_plugin_desc UCR_DESC_SYMBOL = {
	.name = UCR_PLUGIN_NAME,
	.init = ucr_init,
	.exit = ucr_exit,
	.version = UCR_ABI_PLUGIN_VERSION,
	.max_hooks = UCR_HOOK_COUNT,
	.hooks = {
		[UCR_HOOK_DUMP_UNIX_SK] = (void *)hook_dump_unix_sk,
		[UCR_HOOK_RESTORE_UNIX_SK] = (void *)hook_restore_unix_sk,
		[UCR_HOOK_DUMP_EXT_FILE] = (void *)hook_dump_ext_file,
		[UCR_HOOK_RESTORE_EXT_FILE] = (void *)hook_restore_ext_file,
		[UCR_HOOK_RESUME_DEVICES_LATE] = (void *)hook_resume_devices_late,
		[UCR_HOOK_PAUSE_DEVICES] = (void *)hook_pause_devices,
		[UCR_HOOK_CHECKPOINT_DEVICES] = (void *)hook_checkpoint_devices,
	},
};
