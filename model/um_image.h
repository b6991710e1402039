/* um_image.h - the checkpoint image: a versioned, self-describing container
 * for one process's uffd state and (optionally) the contents of the pages in
 * its registered ranges.  Byte-by-byte layout: docs/image-format.md.
 *
 * An image directory holds
 *   uffd-state.img   header + sections (state blob, memory index, process)
 *   uffd-pages.img   page contents, 4 KiB aligned, referenced by the index
 * Pure C like the rest of the model: the writer works on caller buffers and
 * the reader validates everything before anyone uses it, so the shim (restore
 * before main) and the tools share this code. */
#ifndef UFFDSHIM_UM_IMAGE_H
#define UFFDSHIM_UM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "um_model.h"

#define UMI_MAGIC "UFFDIMG\0"
#define UMI_VERSION 1
#define UMI_STATE_FILE "uffd-state.img"
#define UMI_PAGES_FILE "uffd-pages.img"
#define UMI_ARCH_X86_64 62 /* ELF e_machine */

/* Section types.  A reader skips a section it does not know when the
 * section's UMI_SEC_OPTIONAL flag is set, and refuses the image otherwise. */
enum umi_section_type {
	UMI_SEC_STATE = 1,   /* the state blob (um_serialize) */
	UMI_SEC_MEMORY = 2,  /* array of struct umi_run */
	UMI_SEC_PROCESS = 3, /* struct umi_process */
	UMI_SEC_EPOCH = 4,   /* struct umi_epoch + umi_tracked[] (a chain's image) */
};
#define UMI_SEC_OPTIONAL 1u

struct umi_header {
	char magic[8];          /* UMI_MAGIC */
	uint32_t version;       /* UMI_VERSION */
	uint32_t header_size;   /* sizeof(struct umi_header) */
	uint32_t arch;          /* UMI_ARCH_X86_64 */
	uint32_t page_size;     /* 4096 */
	uint32_t nsections;
	uint32_t flags;         /* reserved, 0 */
	uint64_t created_ns;    /* CLOCK_REALTIME at dump */
	int32_t pid;            /* the dumped process */
	uint32_t header_crc;    /* crc32 of this header with header_crc = 0 */
	char comm[16];
};

struct umi_section {
	uint32_t type;          /* enum umi_section_type */
	uint32_t flags;         /* UMI_SEC_OPTIONAL */
	uint64_t length;        /* payload bytes that follow (then padding to 8) */
	uint32_t crc;           /* crc32 of the payload */
	uint32_t reserved;
};

/* A run of pages of one uffd's registered memory. */
enum umi_run_kind {
	UMI_RUN_DATA = 1,       /* contents in uffd-pages.img at offset */
	UMI_RUN_ZERO = 2,       /* present, all zero: not stored */
	UMI_RUN_ABSENT = 3,     /* no longer present (epoch images only) */
};
struct umi_run {
	uint64_t addr;          /* page aligned */
	uint64_t npages;
	uint64_t offset;        /* in uffd-pages.img (DATA), 0 for ZERO */
	uint32_t kind;          /* enum umi_run_kind */
	uint32_t crc;           /* umi_run_hash of the run's bytes (DATA) */
	uint32_t uffd_id;       /* the uffd whose range holds it */
	uint32_t reserved;
};

struct umi_process {
	int32_t pid;
	uint32_t flags;         /* UMI_PROC_* */
	char exe[256];          /* /proc/PID/exe at dump time */
};
#define UMI_PROC_WITH_MEMORY 1u /* the memory section lists every present page */

/* The epoch section: this image is epoch `epoch` of an incremental chain
 * (DIR/epoch-0000, DIR/epoch-0001, ...; docs/image-format.md), or a chain
 * flattened into one image (UMI_EPOCH_FLAT).  With it, memory runs may lie
 * outside registered ranges: a run with uffd_id 0 lies inside one tracked
 * range.  Followed by nranges struct umi_tracked, sorted, page aligned,
 * non-overlapping. */
struct umi_epoch {
	uint32_t epoch;             /* 0 = the base */
	uint32_t nranges;           /* struct umi_tracked that follow */
	uint64_t chain_id;          /* random, the same in every epoch of a chain */
	uint64_t parent_created_ns; /* created_ns of epoch - 1's header; 0 for epoch 0 */
	uint32_t flags;             /* UMI_EPOCH_* */
	uint32_t reserved;          /* 0 */
};
#define UMI_EPOCH_FROZEN 1u /* taken with the process stopped: one point in time */
#define UMI_EPOCH_FLAT 2u   /* a flattened chain: a complete image */
#define UMI_EPOCH_KNOWN (UMI_EPOCH_FROZEN | UMI_EPOCH_FLAT)

/* A tracked mapping: private writable memory whose dirty pages the epoch
 * images record. */
struct umi_tracked {
	uint64_t start, end;        /* page aligned, start < end */
	uint32_t prot;              /* PROT_* */
	uint32_t kind;              /* enum umi_tracked_kind */
	uint32_t mode;              /* enum umi_tracked_mode */
	uint32_t flags;             /* UMI_TR_* */
	char name[64];              /* path or [heap]/[stack]/[anon:...], NUL-terminated */
};
enum umi_tracked_kind {
	UMI_TK_ANON = 1,            /* anonymous private mapping */
	UMI_TK_HEAP = 2,            /* [heap] */
	UMI_TK_STACK = 3,           /* [stack] */
	UMI_TK_FILE = 4,            /* private file mapping (e.g. .data) */
	UMI_TK_OTHER = 5,
};
enum umi_tracked_mode {
	UMI_TM_ASYNC = 1,           /* WP_ASYNC uffd of the shim + PAGEMAP_SCAN */
	UMI_TM_SYNC = 2,            /* sync WP carried by the app's own uffd */
	UMI_TM_ALL = 3,             /* not write-protectable: every present page, each epoch */
};
/* New (or re-created) at this epoch: every present page of it is in this
 * epoch's runs; a page of it not in the runs is absent. */
#define UMI_TR_NEW 1u

uint32_t umi_crc32(uint32_t crc, const void *buf, size_t len);
/* The checksum of page data (struct umi_run.crc): umi_page_hash chained page
 * by page from 0, h = umi_page_hash(h, page, 4096).  umi_run_hash does the
 * whole run. */
uint32_t umi_page_hash(uint32_t seed, const void *buf, size_t len);
uint32_t umi_run_hash(const void *buf, uint64_t npages);

/* A parsed, validated state file. Pointers point into the caller's buffer. */
struct umi_image {
	struct umi_header hdr;
	const void *state;      /* the state blob */
	size_t state_len;
	const struct umi_run *runs;
	size_t nruns;
	const struct umi_process *proc; /* NULL if absent */
	const struct umi_epoch *epoch;  /* NULL if absent (not part of a chain) */
	const struct umi_tracked *tracked; /* epoch->nranges of them */
};

/* Validate buf (the whole uffd-state.img) and fill img.  Returns 0, or -1
 * with a reason in err.  pages_size is the size of uffd-pages.img (or
 * (uint64_t)-1 if it is not to be checked). */
int umi_parse(const void *buf, size_t len, uint64_t pages_size, struct umi_image *img,
	      char *err, size_t errlen);

/* The runs of img against its parsed state: a run with uffd_id X != 0 lies
 * inside one registered range of uffd X; without an epoch section, every
 * run has a uffd.  0, or -1 with the first offending run in err. */
int umi_check_runs(const struct umi_image *img, const struct um_state *st, char *err,
		   size_t errlen);

/* Writer: sizes, then one call that lays out header + sections into buf. */
size_t umi_state_file_size(size_t state_len, size_t nruns, int with_process);
size_t umi_write_state_file(void *buf, size_t cap, int32_t pid, const char *comm,
			    uint64_t created_ns, const void *state, size_t state_len,
			    const struct umi_run *runs, size_t nruns,
			    const struct umi_process *proc);
/* The same with an optional epoch section (epoch NULL: none; else
 * epoch->nranges entries of tracked follow it).  The *2 forms with epoch NULL
 * are the forms above. */
size_t umi_state_file_size2(size_t state_len, size_t nruns, int with_process,
			    const struct umi_epoch *epoch);
size_t umi_write_state_file2(void *buf, size_t cap, int32_t pid, const char *comm,
			     uint64_t created_ns, const void *state, size_t state_len,
			     const struct umi_run *runs, size_t nruns,
			     const struct umi_process *proc, const struct umi_epoch *epoch,
			     const struct umi_tracked *tracked);

#endif
