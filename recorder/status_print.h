/* status_print.h - render a struct um_state for people (text) and programs
 * (JSON, written by hand with full string escaping; always valid JSON). */
#ifndef UFFDSHIM_RECORDER_STATUS_PRINT_H
#define UFFDSHIM_RECORDER_STATUS_PRINT_H

#include <stdint.h>
#include <sys/types.h>

#include <glib.h>

#include "um_model.h"
#include "verify.h"

/* Write-protected runs listed per uffd in text output (JSON lists all). */
#define STATUS_MAX_WP_RUNS 20

struct status_info {
	pid_t pid;            /* as the user named it */
	const char *comm;     /* process name, or NULL */
	uint64_t now_ns;      /* CLOCK_MONOTONIC now, for the age of pending faults */
	bool quiesced;        /* the state was taken with the app's uffd ops held */
};

void status_print_text(GString *out, const struct um_state *st,
		       const struct status_info *info);
/* One JSON object.  vr (may be NULL) adds a "verify" member. */
void status_print_json(GString *out, const struct um_state *st,
		       const struct status_info *info, const struct verify_report *vr);

/* The member "verify":{...} (no leading comma). */
void status_print_json_verify(GString *out, const struct verify_report *vr);
/* JSON string literal (with quotes) of s: escapes ", \, control characters
 * and turns bytes that are not valid UTF-8 into \u00XX of the byte. */
void json_string(GString *out, const char *s);
/* "O_CLOEXEC|O_NONBLOCK|UFFD_USER_MODE_ONLY", or "0". */
void status_create_flags_str(uint32_t flags, char *buf, size_t len);
/* The fault kind and access of UFFD_PAGEFAULT_FLAG_* flags: "MISSING|READ",
 * "WP|WRITE", "MINOR|READ" (unknown bits in hex). */
void status_fault_flags_str(uint64_t flags, char *buf, size_t len);
/* "4 KiB", "2 MiB", "1.5 GiB", "123 B". */
void status_size_str(uint64_t bytes, char *buf, size_t len);

#endif
