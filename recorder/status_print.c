/* status_print.c - text and JSON rendering of a uffd model (status_print.h). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "status_print.h"
#include "uffd_compat.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static void join(char *buf, size_t len, size_t *off, const char *s)
{
	int w = snprintf(buf + *off, len > *off ? len - *off : 0, "%s%s", *off ? "|" : "", s);
	if (w > 0 && *off + (size_t)w < len)
		*off += (size_t)w;
}

void status_create_flags_str(uint32_t f, char *buf, size_t len)
{
	size_t off = 0;
	buf[0] = 0;
	if (f & O_CLOEXEC)
		join(buf, len, &off, "O_CLOEXEC");
	if (f & O_NONBLOCK)
		join(buf, len, &off, "O_NONBLOCK");
	if (f & UFFD_USER_MODE_ONLY)
		join(buf, len, &off, "UFFD_USER_MODE_ONLY");
	uint32_t rest = f & ~(uint32_t)(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (rest) {
		char t[24];
		snprintf(t, sizeof(t), "%#o", rest);
		join(buf, len, &off, t);
	}
	if (!off)
		snprintf(buf, len, "0");
}

void status_fault_flags_str(uint64_t f, char *buf, size_t len)
{
	size_t off = 0;
	buf[0] = 0;
	/* The kind of fault, then the access: "MISSING|READ", "WP|WRITE", ... */
	if (f & UFFD_PAGEFAULT_FLAG_WP)
		join(buf, len, &off, "WP");
	if (f & UFFD_PAGEFAULT_FLAG_MINOR)
		join(buf, len, &off, "MINOR");
	if (!(f & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR)))
		join(buf, len, &off, "MISSING");
	join(buf, len, &off, f & UFFD_PAGEFAULT_FLAG_WRITE ? "WRITE" : "READ");
	uint64_t rest = f & ~(uint64_t)(UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP |
					UFFD_PAGEFAULT_FLAG_MINOR);
	if (rest) {
		char t[24];
		snprintf(t, sizeof(t), "%#" PRIx64, rest);
		join(buf, len, &off, t);
	}
}

void status_size_str(uint64_t b, char *buf, size_t len)
{
	static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	int i = 0;
	double v = (double)b;
	while (v >= 1024 && i < 6) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 " B", b);
	else if (v == (double)(uint64_t)v)
		snprintf(buf, len, "%" PRIu64 " %s", (uint64_t)v, u[i]);
	else
		snprintf(buf, len, "%.1f %s", v, u[i]);
}

static void prot_str(uint32_t prot, char out[4])
{
	out[0] = prot & PROT_READ ? 'r' : '-';
	out[1] = prot & PROT_WRITE ? 'w' : '-';
	out[2] = prot & PROT_EXEC ? 'x' : '-';
	out[3] = 0;
}

static void age_str(uint64_t now, uint64_t t, char *buf, size_t len)
{
	if (!t) {
		snprintf(buf, len, "unknown");
		return;
	}
	uint64_t d = now > t ? now - t : 0;
	if (d < 1000000ULL)
		snprintf(buf, len, "%.1f us", (double)d / 1e3);
	else if (d < 1000000000ULL)
		snprintf(buf, len, "%.1f ms", (double)d / 1e6);
	else
		snprintf(buf, len, "%.1f s", (double)d / 1e9);
}

static const char *mem_owner(const struct um_state *st, const struct um_uffd *u,
			     const struct status_info *info, char *buf, size_t len)
{
	pid_t self = st->pid > 0 ? st->pid : info->pid;
	if (!u->mm_pid)
		snprintf(buf, len, "unknown process");
	else if (u->mm_pid == self)
		snprintf(buf, len, "this process (pid %d)", (int)u->mm_pid);
	else
		snprintf(buf, len, "another process (pid %d)", (int)u->mm_pid);
	return buf;
}

static uint64_t wp_runs(const struct um_uffd *u)
{
	uint64_t n = 0, cur = 0, rs, re;
	while (um_wp_next_run(&u->wp, &cur, ~(UM_PAGE_SIZE - 1), &rs, &re))
		n++;
	return n;
}

/* ---- text ---- */

static void text_uffd(GString *o, const struct um_state *st, const struct um_uffd *u,
		      const struct status_info *info)
{
	char a[512], b[64];
	g_string_append_printf(o, "uffd %u: inode %" PRIu64 ", origin %s", u->id, u->ino,
			       um_origin_name(u->origin));
	if (u->origin == UM_ORIGIN_FORK_EVENT && u->parent_id)
		g_string_append_printf(o, " (from uffd %d)", u->parent_id);
	g_string_append(o, "\n  fds:         ");
	if (u->nfds <= 0)
		g_string_append(o, "none");
	for (int j = 0; j < u->nfds && j < UM_MAX_FDS; j++)
		g_string_append_printf(o, "%s%d%s", j ? ", " : "", u->fds[j],
				       u->fd_flags[j] & FD_CLOEXEC ? " (cloexec)" : "");
	status_create_flags_str(u->create_flags, a, sizeof(a));
	g_string_append_printf(o, "\n  created:     %s\n", a);
	g_string_append_printf(o, "  file:        %s\n",
			       u->file_flags & O_NONBLOCK ? "O_NONBLOCK" : "blocking");
	g_string_append_printf(o, "  memory:      %s\n", mem_owner(st, u, info, b, sizeof(b)));
	if (!u->api_done) {
		g_string_append(o, "  API:         not done (no successful UFFDIO_API yet)\n");
	} else {
		um_features_str(u->features_requested, a, sizeof(a));
		g_string_append_printf(o, "  API:         requested %#" PRIx64 " %s\n",
				       u->features_requested, a);
		um_features_str(u->features, a, sizeof(a));
		g_string_append_printf(o, "               granted   %#" PRIx64 " %s\n",
				       u->features, a);
		um_ioctls_str(u->ioctls, a, sizeof(a));
		g_string_append_printf(o, "               ioctls    %#" PRIx64 " %s\n", u->ioctls, a);
	}

	status_size_str(um_registered_bytes(u), b, sizeof(b));
	g_string_append_printf(o, "  ranges:      %u%s%s%s\n", u->nranges,
			       u->nranges ? " (" : "", u->nranges ? b : "",
			       u->nranges ? " registered)" : "");
	for (uint32_t k = 0; k < u->nranges; k++) {
		const struct um_range *r = &u->ranges[k];
		const struct um_mapping *m = &r->map;
		char modes[64], prot[4];
		um_modes_str(r->modes, modes, sizeof(modes));
		status_size_str(r->end - r->start, b, sizeof(b));
		prot_str(m->prot, prot);
		g_string_append_printf(o, "    [%#" PRIx64 ", %#" PRIx64 ") %s  %s  %s %s %s",
				       r->start, r->end, b, modes, um_backing_name(m->backing), prot,
				       m->shared ? "shared" : "private");
		if (m->backing != UM_BACKING_ANON)
			g_string_append_printf(o, " offset %#" PRIx64, m->offset);
		if (m->pagesize && m->pagesize != UM_PAGE_SIZE) {
			status_size_str(m->pagesize, b, sizeof(b));
			g_string_append_printf(o, " pagesize %s", b);
		}
		if (m->name[0]) {
			g_string_append_c(o, ' ');
			json_string(o, m->name); /* quoted, control characters escaped */
		}
		um_ioctls_str(r->ioctls, a, sizeof(a));
		g_string_append_printf(o, "\n      ioctls %s\n", a);
	}

	uint64_t wp = um_wp_count(&u->wp);
	if (!wp) {
		g_string_append(o, "  write-protected: none\n");
	} else {
		uint64_t nruns = wp_runs(u), cur = 0, rs, re;
		status_size_str(wp * UM_PAGE_SIZE, b, sizeof(b));
		g_string_append_printf(o, "  write-protected: %" PRIu64 " page%s (%s) in %" PRIu64
				       " run%s\n", wp, wp == 1 ? "" : "s", b, nruns,
				       nruns == 1 ? "" : "s");
		for (unsigned i = 0; i < STATUS_MAX_WP_RUNS &&
		     um_wp_next_run(&u->wp, &cur, ~(UM_PAGE_SIZE - 1), &rs, &re); i++) {
			uint64_t np = (re - rs) >> UM_PAGE_SHIFT;
			g_string_append_printf(o, "    [%#" PRIx64 ", %#" PRIx64 ") %" PRIu64
					       " page%s\n", rs, re, np, np == 1 ? "" : "s");
		}
		if (nruns > STATUS_MAX_WP_RUNS)
			g_string_append_printf(o, "    ... %" PRIu64 " more\n",
					       nruns - STATUS_MAX_WP_RUNS);
	}

	if (!u->npending) {
		g_string_append(o, "  pending faults: none\n");
	} else {
		g_string_append_printf(o, "  pending faults: %u\n", u->npending);
		for (uint32_t i = 0; i < u->npending; i++) {
			const struct um_fault *f = &u->pending[i];
			char fl[64], age[32];
			status_fault_flags_str(f->flags, fl, sizeof(fl));
			age_str(info->now_ns, f->t_ns, age, sizeof(age));
			g_string_append_printf(o, "    %#" PRIx64 " %s", f->address, fl);
			if (f->ptid)
				g_string_append_printf(o, " ptid %u", f->ptid);
			g_string_append_printf(o, " age %s\n", age);
		}
	}

	bool any = false;
	for (int c = 0; c < UM_C__MAX; c++) {
		if (!u->counters[c])
			continue;
		g_string_append_printf(o, "%s%s %" PRIu64, any ? ", " : "  counters:    ",
				       um_counter_name(c), u->counters[c]);
		any = true;
	}
	g_string_append(o, any ? "\n" : "  counters:    all zero\n");
}

void status_print_text(GString *o, const struct um_state *st, const struct status_info *info)
{
	g_string_append_printf(o, "pid %d", (int)info->pid);
	if (info->comm && info->comm[0])
		g_string_append_printf(o, " (%s)", info->comm);
	g_string_append_printf(o, ": %u uffd%s", st->nuffds, st->nuffds == 1 ? "" : "s");
	if (st->pid > 0 && st->pid != info->pid)
		g_string_append_printf(o, " (the process sees itself as pid %d)", (int)st->pid);
	g_string_append_c(o, '\n');
	for (uint32_t i = 0; i < st->nuffds; i++) {
		g_string_append_c(o, '\n');
		text_uffd(o, st, st->uffds[i], info);
	}
}

/* ---- JSON ---- */

void json_string(GString *o, const char *s)
{
	g_string_append_c(o, '"');
	const char *p = s;
	while (*p) {
		unsigned char ch = (unsigned char)*p;
		if (ch < 0x80) {
			switch (ch) {
			case '"': g_string_append(o, "\\\""); break;
			case '\\': g_string_append(o, "\\\\"); break;
			case '\n': g_string_append(o, "\\n"); break;
			case '\r': g_string_append(o, "\\r"); break;
			case '\t': g_string_append(o, "\\t"); break;
			case '\b': g_string_append(o, "\\b"); break;
			case '\f': g_string_append(o, "\\f"); break;
			default:
				if (ch < 0x20 || ch == 0x7f)
					g_string_append_printf(o, "\\u%04x", ch);
				else
					g_string_append_c(o, (char)ch);
			}
			p++;
			continue;
		}
		gunichar c = g_utf8_get_char_validated(p, -1);
		if (c == (gunichar)-1 || c == (gunichar)-2) {
			g_string_append_printf(o, "\\u%04x", ch); /* a stray byte, as Latin-1 */
			p++;
			continue;
		}
		const char *n = g_utf8_next_char(p);
		g_string_append_len(o, p, n - p);
		p = n;
	}
	g_string_append_c(o, '"');
}

static void json_hex(GString *o, uint64_t v)
{
	g_string_append_printf(o, "\"%#" PRIx64 "\"", v);
}

/* A '|'-joined name list as a JSON array of strings ("0" gives []). */
static void json_names(GString *o, const char *joined)
{
	g_string_append_c(o, '[');
	if (strcmp(joined, "0") != 0) {
		gchar **parts = g_strsplit(joined, "|", -1);
		for (int i = 0; parts[i]; i++) {
			if (i)
				g_string_append_c(o, ',');
			json_string(o, parts[i]);
		}
		g_strfreev(parts);
	}
	g_string_append_c(o, ']');
}

static void json_mask(GString *o, const char *key, uint64_t v,
		      void (*fn)(uint64_t, char *, size_t))
{
	char buf[1024];
	fn(v, buf, sizeof(buf));
	g_string_append_printf(o, "\"%s\":", key);
	json_hex(o, v);
	g_string_append_printf(o, ",\"%s_names\":", key);
	json_names(o, buf);
}

static void json_uffd(GString *o, const struct um_state *st, const struct um_uffd *u,
		      const struct status_info *info)
{
	char a[512];
	pid_t self = st->pid > 0 ? st->pid : info->pid;
	g_string_append_printf(o, "{\"id\":%u,\"ino\":%" PRIu64 ",\"origin\":", u->id, u->ino);
	json_string(o, um_origin_name(u->origin));
	g_string_append_printf(o, ",\"parent_id\":%d,\"fds\":[", u->parent_id);
	for (int j = 0; j < u->nfds && j < UM_MAX_FDS; j++)
		g_string_append_printf(o, "%s{\"fd\":%d,\"cloexec\":%s}", j ? "," : "", u->fds[j],
				       u->fd_flags[j] & FD_CLOEXEC ? "true" : "false");
	status_create_flags_str(u->create_flags, a, sizeof(a));
	g_string_append_printf(o, "],\"create_flags\":%u,\"create_flags_names\":", u->create_flags);
	json_names(o, a);
	g_string_append_printf(o, ",\"user_mode_only\":%s,\"nonblock\":%s",
			       u->create_flags & UFFD_USER_MODE_ONLY ? "true" : "false",
			       u->file_flags & O_NONBLOCK ? "true" : "false");
	g_string_append_printf(o, ",\"mm_pid\":%d,\"memory\":\"%s\"", (int)u->mm_pid,
			       !u->mm_pid ? "unknown" : u->mm_pid == self ? "self" : "other");
	g_string_append_printf(o, ",\"api_done\":%s,", u->api_done ? "true" : "false");
	json_mask(o, "features_requested", u->features_requested, um_features_str);
	g_string_append_c(o, ',');
	json_mask(o, "features", u->features, um_features_str);
	g_string_append_c(o, ',');
	json_mask(o, "ioctls", u->ioctls, um_ioctls_str);
	g_string_append_printf(o, ",\"wp_async\":%s,\"registered_bytes\":%" PRIu64
			       ",\"ranges\":[", u->wp_async ? "true" : "false",
			       um_registered_bytes(u));
	for (uint32_t k = 0; k < u->nranges; k++) {
		const struct um_range *r = &u->ranges[k];
		const struct um_mapping *m = &r->map;
		char prot[4];
		prot_str(m->prot, prot);
		g_string_append_printf(o, "%s{\"start\":%" PRIu64 ",\"end\":%" PRIu64 ",\"size\":%"
				       PRIu64 ",", k ? "," : "", r->start, r->end, r->end - r->start);
		json_mask(o, "modes", r->modes, um_modes_str);
		g_string_append_c(o, ',');
		json_mask(o, "ioctls", r->ioctls, um_ioctls_str);
		g_string_append(o, ",\"backing\":");
		json_string(o, um_backing_name(m->backing));
		g_string_append(o, ",\"name\":");
		json_string(o, m->name);
		g_string_append_printf(o, ",\"prot\":\"%s\",\"shared\":%s,\"offset\":%" PRIu64
				       ",\"dev\":%" PRIu64 ",\"map_ino\":%" PRIu64 ",\"pagesize\":%u}",
				       prot, m->shared ? "true" : "false", m->offset, m->dev, m->ino,
				       m->pagesize);
	}
	uint64_t cur = 0, rs, re;
	g_string_append_printf(o, "],\"wp_pages\":%" PRIu64 ",\"wp_runs\":[", um_wp_count(&u->wp));
	for (bool first = true; um_wp_next_run(&u->wp, &cur, ~(UM_PAGE_SIZE - 1), &rs, &re);
	     first = false)
		g_string_append_printf(o, "%s{\"start\":%" PRIu64 ",\"end\":%" PRIu64 ",\"pages\":%"
				       PRIu64 "}", first ? "" : ",", rs, re,
				       (re - rs) >> UM_PAGE_SHIFT);
	g_string_append(o, "],\"pending\":[");
	for (uint32_t i = 0; i < u->npending; i++) {
		const struct um_fault *f = &u->pending[i];
		char fl[64];
		status_fault_flags_str(f->flags, fl, sizeof(fl));
		g_string_append_printf(o, "%s{\"address\":%" PRIu64 ",\"flags\":%" PRIu64
				       ",\"flags_names\":", i ? "," : "", f->address, f->flags);
		json_names(o, fl);
		g_string_append_printf(o, ",\"ptid\":%u,\"t_ns\":%" PRIu64, f->ptid, f->t_ns);
		if (f->t_ns)
			g_string_append_printf(o, ",\"age_ns\":%" PRIu64,
					       info->now_ns > f->t_ns ? info->now_ns - f->t_ns : 0);
		g_string_append_c(o, '}');
	}
	g_string_append(o, "],\"counters\":{");
	bool any = false;
	for (int c = 0; c < UM_C__MAX; c++) {
		if (!u->counters[c])
			continue;
		g_string_append_printf(o, "%s", any ? "," : "");
		json_string(o, um_counter_name(c));
		g_string_append_printf(o, ":%" PRIu64, u->counters[c]);
		any = true;
	}
	g_string_append_printf(o, "},\"last_change_ns\":%" PRIu64 "}", u->last_change_ns);
}

void status_print_json_verify(GString *o, const struct verify_report *vr)
{
	g_string_append_printf(o, "\"verify\":{\"ok\":%s,\"complete\":%s,\"disagreements\":%u,"
			       "\"uffds\":%u,\"ranges\":%u,\"pages\":%" PRIu64,
			       !vr->failed && !vr->disagreements ? "true" : "false",
			       vr->failed ? "false" : "true", vr->disagreements, vr->nuffds,
			       vr->nranges, vr->npages);
	if (vr->failed) {
		g_string_append(o, ",\"error\":");
		json_string(o, vr->error);
	}
	static const char *const checks[] = {"model", "smaps", "pagemap", "fdinfo", "fds"};
	g_string_append(o, ",\"entries\":[");
	for (size_t i = 0; i < vr->n; i++) {
		const struct verify_entry *e = &vr->e[i];
		const char *kind = e->kind == VK_DISAGREE ? "disagreement" :
				   e->kind == VK_MORE ? "more" : "note";
		g_string_append_printf(o, "%s{\"kind\":\"%s\",\"check\":\"%s\",\"uffd\":%u,"
				       "\"text\":", i ? "," : "", kind,
				       e->check >= 0 && e->check <= 4 ? checks[e->check] : "?",
				       e->uffd);
		json_string(o, e->text);
		g_string_append_c(o, '}');
	}
	g_string_append(o, "]}");
}

void status_print_json(GString *o, const struct um_state *st, const struct status_info *info,
		       const struct verify_report *vr)
{
	g_string_append_printf(o, "{\"pid\":%d,\"shimmed\":true", (int)info->pid);
	if (info->comm) {
		g_string_append(o, ",\"comm\":");
		json_string(o, info->comm);
	}
	g_string_append_printf(o, ",\"state_pid\":%d,\"quiesced\":%s,\"uffds\":[", (int)st->pid,
			       info->quiesced ? "true" : "false");
	for (uint32_t i = 0; i < st->nuffds; i++) {
		if (i)
			g_string_append_c(o, ',');
		json_uffd(o, st, st->uffds[i], info);
	}
	g_string_append_c(o, ']');
	if (vr) {
		g_string_append_c(o, ',');
		status_print_json_verify(o, vr);
	}
	g_string_append(o, "}\n");
}
