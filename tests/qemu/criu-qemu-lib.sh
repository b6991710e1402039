# shellcheck shell=bash
# criu-qemu-lib.sh - helpers for tests/criu_qemu.sh: CRIU dump/restore of a
# QEMU (with its exec: migration writer) under the shim.  Sourced after
# tests/qemu/qemu-lib.sh and tests/criu_lib.sh (uses cl_* and ql_*).
#
#   cq_setup DEADLINE        cl_setup (CRIU or skip) + ql_setup (QEMU, guest)
#                            with one EXIT trap for both
#   cq_qemu_start NAME MODE ARGS...
#                            ql_qemu_start with the soft RLIMIT_NOFILE that
#                            leaves CRIU room for its service fds
#   cq_dump PID DIR          criu dump of PID's tree with the plugin and the
#                            options QEMU needs (DIR/img, DIR/img/dump.log)
#   cq_restore DIR           criu restore -d of DIR/img
#   cq_track PIDS...         kill PIDS at exit too (restored processes)
#   cq_fds PID               one line: PID's fds by kind (diagnostics)

CQ_EXTRA_PIDS=()

cq_cleanup() {
	local rc=$? p
	for p in "${CQ_EXTRA_PIDS[@]}"; do
		ql_alive "$p" && kill -KILL "$p" 2>/dev/null
	done
	[ -n "${CL_WORK:-}" ] && [ -d "$CL_WORK" ] && rm -rf "$CL_WORK"
	# ql_cleanup kills QEMU and the wrappers, removes QL_WORK, exits
	(exit "$rc")
	ql_cleanup
}

cq_setup() {
	cl_setup                  # skips (77) without root, CRIU, a passing `criu check`
	ql_have_shim || cl_skip_all "build/libuffdshim.so or build/uffd-record missing"
	ql_setup "$1"             # skips without QEMU or guest; sets its own traps
	trap cq_cleanup EXIT
}

cq_track() { CQ_EXTRA_PIDS+=("$@"); }

cq_qemu_start() {
	local old rc
	old=$(ulimit -S -n)
	[ -n "${CL_APP_NOFILE:-}" ] && ulimit -S -n "$CL_APP_NOFILE"
	ql_qemu_start "$@"
	rc=$?
	ulimit -S -n "$old"
	return $rc
}

# The options a QEMU under the shim needs:
#   --shell-job   QEMU shares the test's session and process group
#   --file-locks  QEMU holds a lock on its -pidfile
# Its eventfds, signalfd, listening QMP unix socket, regular files and the
# pipes to its exec: writer (dumped with it: it is QEMU's child) need none.
CQ_CRIU_OPTS=(--shell-job --file-locks)

cq_dump() {
	local pid=$1 dir=$2 try rc
	cl_action_script "$dir"
	for try in 1 2 3 4 5; do
		rm -rf "$dir/img" "$dir/before.txt"
		mkdir -p "$dir/img"
		timeout -k 5 120 "$CL_CRIU" dump -t "$pid" -D "$dir/img" --libdir "$CL_PLUGIN_DIR" \
			"${CQ_CRIU_OPTS[@]}" -o dump.log -v4 \
			--action-script "$dir/snap.sh" >"$dir/dump.out" 2>&1
		rc=$?
		[ $rc = 0 ] && return 0
		grep -q 'transient:' "$dir/img/dump.log" 2>/dev/null || return $rc
		cl_diag "dump attempt $try refused as transient, retrying:" "$(cl_log_lines "$dir/img/dump.log" | grep -m3 Error)"
		sleep 0.2
	done
	return $rc
}

cq_restore() {
	local dir=$1
	timeout -k 5 120 "$CL_CRIU" restore -D "$dir/img" --libdir "$CL_PLUGIN_DIR" \
		"${CQ_CRIU_OPTS[@]}" -d -o restore.log -v4 \
		--action-script "$dir/snap.sh" >"$dir/restore.out" 2>&1
}

cq_fds() {
	local f t
	for f in /proc/"$1"/fd/*; do
		t=$(readlink "$f" 2>/dev/null) || continue
		case $t in
		/*) echo file ;;
		anon_inode:*) t=${t#anon_inode:}; t=${t#[}; echo "${t%]}" ;;
		*) echo "${t%%:*}" ;;
		esac
	done | sort | uniq -c | awk '{ printf "%s%s x%d", (NR > 1 ? ", " : ""), $2, $1 }'
	echo
}
