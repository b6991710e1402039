/* um_wire.h - fixed-size little-endian records of the state blob
 * (um_serialize.c).  Changing any of these is a format version change:
 * see docs/image-format.md. */
#ifndef UFFDSHIM_UM_WIRE_H
#define UFFDSHIM_UM_WIRE_H

#include <stdint.h>

#define UMW_STATE_MAGIC 0x54534d55u /* "UMST" */
#define UMW_STATE_VERSION 1
#define UMW_MAX_COUNTERS 32

struct umw_state_hdr {
	uint32_t magic, version;
	uint32_t hdr_size, uffd_size, range_size, page_size;
	int32_t pid;
	uint32_t nuffds, next_id, ncounters;
	uint32_t missed_updates, reserved;
};

struct umw_uffd {
	uint32_t id, origin;
	uint64_t ino;
	uint32_t create_flags;
	int32_t mm_pid, parent_id;
	uint32_t nfds;
	int32_t fds[8];
	uint32_t fd_flags[8];
	uint32_t file_flags, api_done;
	uint64_t features_requested, features, ioctls;
	uint32_t nranges, nwpchunks, npending, reserved;
	uint64_t last_change_ns;
	uint64_t counters[UMW_MAX_COUNTERS];
};

struct umw_mapping {
	uint64_t start, end;
	uint32_t prot, shared;
	uint64_t offset, dev, ino;
	uint32_t backing, pagesize;
	char name[64];
};

struct umw_range {
	uint64_t start, end, modes, ioctls;
	struct umw_mapping map;
};

struct umw_wpchunk {
	uint64_t base;
	uint64_t bits[8];
};

struct umw_fault {
	uint64_t address, flags;
	uint32_t ptid, reserved;
	uint64_t t_ns;
};

#endif
