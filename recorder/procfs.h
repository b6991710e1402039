/* procfs.h - read what the kernel says about a process's userfaultfds:
 *   /proc/PID/smaps    VMAs with their VmFlags (um = MISSING, uw = WP, ui = MINOR)
 *   /proc/PID/maps     which libraries are loaded (is the shim there?)
 *   /proc/PID/pagemap  the uffd-wp bit (57) of every page
 *   /proc/PID/fdinfo/N flags, inode and the uffd "API:" line
 *   /proc/PID/fd/N     what an fd is (readlink) and its inode (stat)
 *   /proc/PID/status   process state, Tgid, NSpid
 *
 * Plain C (no GLib) so unit tests can compile it directly.  Every parser has
 * a "parse this text" form that tests feed with synthetic input and a "read
 * this pid" form.  Errors come back as -1 with errno set and, where there is
 * an err buffer, a sentence for people ("cannot read /proc/12/smaps: ..."). */
#ifndef UFFDSHIM_RECORDER_PROCFS_H
#define UFFDSHIM_RECORDER_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* uffd VmFlags as a mask with the same bits as UFFDIO_REGISTER_MODE_*. */
#define PF_VM_UM 0x1u /* "um": VM_UFFD_MISSING */
#define PF_VM_UW 0x2u /* "uw": VM_UFFD_WP */
#define PF_VM_UI 0x4u /* "ui": VM_UFFD_MINOR */
#define PF_VM_UFFD_MASK (PF_VM_UM | PF_VM_UW | PF_VM_UI)

/* One VMA of /proc/PID/smaps (or /proc/PID/maps: then has_vmflags is false). */
struct pf_vma {
	uint64_t start, end;
	uint32_t prot;        /* PROT_READ | PROT_WRITE | PROT_EXEC */
	bool shared;          /* 's' in the perms column */
	uint64_t offset;
	uint32_t dev_major, dev_minor;
	uint64_t ino;
	char name[256];       /* path, [heap], [anon:...] ... ; "" for anonymous */
	bool has_vmflags;
	uint32_t uffd_flags;  /* PF_VM_* found in VmFlags */
	char vmflags[160];    /* the VmFlags value as the kernel wrote it */
	uint64_t kernel_page_size; /* KernelPageSize in bytes, 0 if absent */
};

struct pf_vmas {
	struct pf_vma *v;
	size_t n, cap;
};

void pf_vmas_free(struct pf_vmas *vs);

/* Parse the text of /proc/PID/smaps or /proc/PID/maps (len bytes, need not be
 * NUL-terminated).  Returns 0, or -1 with a reason naming the line. */
int pf_parse_smaps(const char *text, size_t len, struct pf_vmas *out, char *err,
		   size_t errlen);
int pf_read_smaps(pid_t pid, struct pf_vmas *out, char *err, size_t errlen);
int pf_read_maps(pid_t pid, struct pf_vmas *out, char *err, size_t errlen);
/* Parse one header line "start-end perms offset dev inode [name]" (no
 * trailing newline needed).  Returns 0 or -1. */
int pf_parse_vma_header(const char *line, size_t len, struct pf_vma *v);
/* Parse a VmFlags value ("rd wr mr mw me um uw ac") into PF_VM_* bits. */
uint32_t pf_parse_vmflags(const char *value, size_t len);
/* "um|uw", or "none". */
void pf_uffd_flags_str(uint32_t flags, char *buf, size_t len);

/* Is a mapping of a file whose base name is lib_basename loaded?  (" (deleted)"
 * is ignored, so a rebuilt library still counts.)  1 yes, 0 no, -1 error. */
int pf_maps_has_lib(const struct pf_vmas *maps, const char *lib_basename);

/* ---- pagemap ---- */
int pf_pagemap_open(pid_t pid, char *err, size_t errlen);
/* Read the entries of npages pages from start (page aligned) with one pread
 * (looping only on short reads).  out holds npages entries. */
int pf_pagemap_read(int fd, uint64_t start, uint64_t npages, uint64_t *out, char *err,
		    size_t errlen);
/* Does pagemap entry e hold a page whose contents can be read without the
 * read making one: present, or swapped out?  Not a uffd-wp PTE marker
 * (WP_UNPOPULATED: a none PTE that dirty tracking protected), which pagemap
 * shows as a swap entry too; reading it would fault the zero page in.  With
 * the frame visible (CAP_SYS_ADMIN) a marker has swap type 31; without it a
 * swap entry is taken for a marker when the system has no swap at all. */
bool pf_pm_holds_page(uint64_t e);
/* The same, with the two facts given (for tests). */
bool pf_pm_holds_page_given(uint64_t e, bool system_has_swap);
#define PF_PM_UFFD_WP(e) (((e) >> 57) & 1)

/* ---- fdinfo ---- */
struct pf_fdinfo {
	uint64_t pos;
	uint32_t flags;         /* octal "flags:" (O_CLOEXEC reflects FD_CLOEXEC) */
	bool has_flags;
	int mnt_id;
	uint64_t ino;
	bool has_ino;
	bool has_uffd;          /* has the userfaultfd "pending/total/API" lines */
	uint64_t pending, total; /* queued unread faults; queued + read, unwoken */
	uint32_t api;           /* UFFD_API (0xaa) */
	uint64_t api_features;  /* requested features | bit 31 once UFFDIO_API ran */
	uint64_t api_ioctls;
	bool has_api;
};
/* Parse fdinfo text.  Returns 0, or -1 if there is no "flags:" line. */
int pf_parse_fdinfo(const char *text, size_t len, struct pf_fdinfo *out);
int pf_read_fdinfo(pid_t pid, int fd, struct pf_fdinfo *out, char *err, size_t errlen);

/* ---- fds ---- */
#define PF_UFFD_LINK "anon_inode:[userfaultfd]"
/* readlink /proc/PID/fd/FD into buf (NUL-terminated).  0 or -1 (errno). */
int pf_fd_link(pid_t pid, int fd, char *buf, size_t len);
/* stat /proc/PID/fd/FD: the inode of the open file.  0 or -1 (errno). */
int pf_fd_ino(pid_t pid, int fd, uint64_t *ino);
/* Sorted fd numbers of /proc/PID/fd (malloc'd array, caller frees). */
int pf_list_fds(pid_t pid, int **fds, size_t *n, char *err, size_t errlen);

/* ---- the process ---- */
struct pf_status {
	char state;          /* 'R', 'S', 'T', 'Z', ... ; 0 if unknown */
	pid_t tgid;
	pid_t nspid_inner;   /* last NSpid entry (the pid the process sees) */
	uid_t uid, euid;     /* real and effective uid */
	char name[64];
};
int pf_parse_status(const char *text, size_t len, struct pf_status *out);
/* 0, or -1 with errno (ENOENT/ESRCH: no such process). */
int pf_read_status(pid_t pid, struct pf_status *out);

/* Read a whole (proc) file into a malloc'd NUL-terminated buffer. */
char *pf_slurp(const char *path, size_t *len);

#endif
