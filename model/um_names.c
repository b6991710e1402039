/* um_names.c - names for the model's numbers, for people and JSON. */
#include <stdio.h>
#include <string.h>

#include "uffd_compat.h"
#include "um_model.h"

const char *um_origin_name(uint32_t origin)
{
	switch (origin) {
	case UM_ORIGIN_SYSCALL: return "syscall";
	case UM_ORIGIN_DEVICE: return "/dev/userfaultfd";
	case UM_ORIGIN_FORK_EVENT: return "fork-event";
	case UM_ORIGIN_RECEIVED: return "received";
	case UM_ORIGIN_INHERITED: return "inherited";
	case UM_ORIGIN_EXEC: return "survived-exec";
	case UM_ORIGIN_RESTORED: return "restored";
	case UM_ORIGIN_MONITOR: return "monitor";
	default: return "unknown";
	}
}

const char *um_backing_name(uint32_t backing)
{
	switch (backing) {
	case UM_BACKING_ANON: return "anon";
	case UM_BACKING_SHMEM: return "shmem";
	case UM_BACKING_HUGETLB: return "hugetlb";
	case UM_BACKING_FILE: return "file";
	default: return "unknown";
	}
}

static const char *const counter_names[UM_C__MAX] = {
	[UM_C_IOC_API] = "api", [UM_C_IOC_REGISTER] = "register",
	[UM_C_IOC_UNREGISTER] = "unregister", [UM_C_IOC_WAKE] = "wake",
	[UM_C_IOC_COPY] = "copy", [UM_C_IOC_ZEROPAGE] = "zeropage",
	[UM_C_IOC_WRITEPROTECT] = "writeprotect", [UM_C_IOC_CONTINUE] = "continue",
	[UM_C_IOC_POISON] = "poison", [UM_C_IOC_MOVE] = "move",
	[UM_C_IOC_ERRORS] = "ioctl_errors",
	[UM_C_FAULT_MISSING] = "faults_missing", [UM_C_FAULT_WP] = "faults_wp",
	[UM_C_FAULT_MINOR] = "faults_minor",
	[UM_C_EV_FORK] = "events_fork", [UM_C_EV_REMAP] = "events_remap",
	[UM_C_EV_REMOVE] = "events_remove", [UM_C_EV_UNMAP] = "events_unmap",
	[UM_C_BYTES_COPIED] = "bytes_filled", [UM_C_PENDING_DROPPED] = "pending_dropped",
};

const char *um_counter_name(int c)
{
	return (c >= 0 && c < UM_C__MAX && counter_names[c]) ? counter_names[c] : "?";
}

static void bits_str(uint64_t v, const char *const *names, int n, char *buf, size_t len)
{
	size_t off = 0;
	buf[0] = 0;
	for (int i = 0; i < 64; i++) {
		if (!(v & (1ULL << i)))
			continue;
		char tmp[24];
		const char *nm = (i < n && names[i]) ? names[i] : NULL;
		if (!nm) {
			snprintf(tmp, sizeof(tmp), "bit%d", i);
			nm = tmp;
		}
		int w = snprintf(buf + off, len > off ? len - off : 0, "%s%s", off ? "|" : "", nm);
		if (w < 0 || (size_t)w >= len - off)
			return;
		off += (size_t)w;
	}
	if (!off)
		snprintf(buf, len, "0");
}

void um_modes_str(uint64_t modes, char *buf, size_t len)
{
	static const char *const n[] = {"MISSING", "WP", "MINOR"};
	bits_str(modes, n, 3, buf, len);
}

void um_features_str(uint64_t f, char *buf, size_t len)
{
	static const char *const n[] = {
		"PAGEFAULT_FLAG_WP", "EVENT_FORK", "EVENT_REMAP", "EVENT_REMOVE",
		"MISSING_HUGETLBFS", "MISSING_SHMEM", "EVENT_UNMAP", "SIGBUS", "THREAD_ID",
		"MINOR_HUGETLBFS", "MINOR_SHMEM", "EXACT_ADDRESS", "WP_HUGETLBFS_SHMEM",
		"WP_UNPOPULATED", "POISON", "WP_ASYNC", "MOVE"};
	bits_str(f, n, 17, buf, len);
}

void um_ioctls_str(uint64_t ioctls, char *buf, size_t len)
{
	static const char *n[64];
	if (!n[0]) {
		n[_UFFDIO_REGISTER] = "REGISTER";
		n[_UFFDIO_UNREGISTER] = "UNREGISTER";
		n[_UFFDIO_WAKE] = "WAKE";
		n[_UFFDIO_COPY] = "COPY";
		n[_UFFDIO_ZEROPAGE] = "ZEROPAGE";
		n[_UFFDIO_MOVE] = "MOVE";
		n[_UFFDIO_WRITEPROTECT] = "WRITEPROTECT";
		n[_UFFDIO_CONTINUE] = "CONTINUE";
		n[_UFFDIO_POISON] = "POISON";
		n[_UFFDIO_API] = "API";
	}
	bits_str(ioctls, n, 64, buf, len);
}
