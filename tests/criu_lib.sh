# shellcheck shell=bash
# criu_lib.sh - shell helpers for the CRIU tests (sourced by tests/criu_*.sh;
# executed on its own it is a TAP test that skips).
#
#   cl_setup            find the build, a working CRIU (or skip), a work dir
#   cl_plan N / cl_ok RC DESC / cl_todo RC DESC REASON / cl_diag MSG
#   cl_start NAME OUT CMD...     start CMD in a new session, output to OUT
#   cl_wait_line FILE ERE SECS   wait until a line of FILE matches
#   cl_ready_pid FILE            the N of "...: pid N ready" in FILE
#   cl_dump PID DIR              criu dump with the plugin (retries transient refusals)
#   cl_restore DIR               criu restore -d with the plugin
#   cl_dumped_pids DIR           the processes in an images dir
#   cl_wait_gone SECS PID...     wait until each PID is gone (reaped)
#   cl_log_lines LOG             the plugin's lines and CRIU's errors of a log
#
# CRIU comes from $CRIU, else `criu` on PATH.  The tests skip (exit 77,
# "1..0 # SKIP reason") when it is missing, when `criu check` fails (Debian
# 12's criu 3.17 does on recent kernels) or when not root.  The plugin is
# $UFFDSHIM_BUILD/criu/uffdshim_criu.so; CRIU loads every .so of its
# --libdir, so that directory must hold the plugin alone.

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	echo "1..0 # SKIP library of tests/criu_demos.sh, nothing to run on its own"
	exit 77
fi

CL_N=0
CL_PIDS=()          # processes the test started or restored: killed at exit
CL_KEEP=${UFFDSHIM_CRIU_KEEP:-0} # keep the work dir (set on failure)

cl_diag() { local l; while IFS= read -r l; do echo "# $l"; done <<<"$*"; }
cl_plan() { echo "1..$1"; }
cl_ok() {
	CL_N=$((CL_N + 1))
	if [ "$1" = 0 ]; then echo "ok $CL_N - $2"; else echo "not ok $CL_N - $2"; CL_KEEP=1; fi
}
# A check that fails for a reason known to lie outside what is tested.
cl_todo() {
	CL_N=$((CL_N + 1))
	if [ "$1" = 0 ]; then echo "ok $CL_N - $2"; else echo "not ok $CL_N - $2 # TODO $3"; fi
}
cl_skip() { CL_N=$((CL_N + 1)); echo "ok $CL_N - $1 # SKIP $2"; }
cl_skip_all() { echo "1..0 # SKIP $*"; exit 77; }

cl_setup() {
	CL_B=${UFFDSHIM_BUILD:-}
	if [ -z "$CL_B" ]; then
		CL_B=$(cd "$(dirname "${BASH_SOURCE[0]}")/../build" 2>/dev/null && pwd) || true
	fi
	if [ -z "$CL_B" ] || [ ! -x "$CL_B/uffd-record" ]; then
		cl_skip_all "no build (set UFFDSHIM_BUILD)"
	fi
	CL_PLUGIN_DIR=$CL_B/criu
	[ -f "$CL_PLUGIN_DIR/uffdshim_criu.so" ] ||
		cl_skip_all "$CL_PLUGIN_DIR/uffdshim_criu.so is not built"
	local others='' f
	for f in "$CL_PLUGIN_DIR"/*.so; do
		[ "${f##*/}" = uffdshim_criu.so ] || others="$others ${f##*/}"
	done
	[ -z "$others" ] || cl_skip_all "$CL_PLUGIN_DIR holds other .so files ($others): CRIU would load them as plugins"
	[ "$(id -u)" = 0 ] || cl_skip_all "CRIU needs root"
	CL_CRIU=${CRIU:-$(command -v criu 2>/dev/null)}
	if [ -z "$CL_CRIU" ] || [ ! -x "$CL_CRIU" ]; then
		cl_skip_all "no CRIU (set CRIU= or put criu on PATH)"
	fi
	local out
	if ! out=$("$CL_CRIU" check 2>&1); then
		out=$(grep -m1 -i error <<<"$out" || tail -n1 <<<"$out")
		cl_skip_all "'$CL_CRIU check' fails on this machine: ${out:-(no output)}"
	fi
	# CRIU puts its service fds above the highest fd of the restored task and
	# below its own RLIMIT_NOFILE, which it raises to fs.nr_open when it may.
	# The shim keeps its own fds just under the task's soft limit, so where
	# CRIU may not raise the limit (containers) the programs get half the
	# soft limit, leaving CRIU room (UFFDSHIM_CRIU_APP_NOFILE=N sets it,
	# =keep leaves it alone).
	CL_APP_NOFILE=${UFFDSHIM_CRIU_APP_NOFILE:-}
	if [ -z "$CL_APP_NOFILE" ] && ! (ulimit -Hn "$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)") 2>/dev/null; then
		CL_APP_NOFILE=$(($(ulimit -Sn) / 2))
		cl_diag "CRIU cannot raise RLIMIT_NOFILE here (hard limit $(ulimit -Hn)): programs run with soft limit $CL_APP_NOFILE (the shim's fds sit just under it; CRIU needs room above them)"
	fi
	[ "$CL_APP_NOFILE" = keep ] && CL_APP_NOFILE=
	CL_WORK=$(mktemp -d "${TMPDIR:-/tmp}/uffdshim-criu.XXXXXX") || cl_skip_all "mktemp failed"
	trap cl_cleanup EXIT
	cl_diag "criu: $CL_CRIU ($("$CL_CRIU" --version 2>/dev/null | head -n1)), work dir $CL_WORK"
}

cl_cleanup() {
	local p
	for p in "${CL_PIDS[@]}"; do
		[ -e "/proc/$p" ] && kill -9 "$p" 2>/dev/null
	done
	if [ "$CL_KEEP" = 1 ]; then
		echo "# kept $CL_WORK (images and logs of the failed checks)"
	else
		rm -rf "$CL_WORK"
	fi
}

# cl_start OUT CMD...: run CMD as its own session leader, stdin /dev/null,
# stdout+stderr to OUT.  Sets CL_LAST (the session leader's pid).
cl_start() {
	local out=$1
	shift
	if [ -n "$CL_APP_NOFILE" ]; then
		(ulimit -S -n "$CL_APP_NOFILE" && exec setsid "$@") >"$out" 2>&1 </dev/null &
	else
		setsid "$@" >"$out" 2>&1 </dev/null &
	fi
	CL_LAST=$!
	disown "$CL_LAST" 2>/dev/null # no "Killed" notices from bash at cleanup
	CL_PIDS+=("$CL_LAST")
}

cl_wait_line() {
	local file=$1 re=$2 secs=$3 i
	for ((i = 0; i < secs * 20; i++)); do
		grep -Eq -- "$re" "$file" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

cl_ready_pid() { sed -n 's/.*: pid \([0-9][0-9]*\) ready.*/\1/p' "$1" | head -n1; }

cl_descendants() {
	local p=$1 c
	echo "$p"
	# shellcheck disable=SC2013 # the files hold space-separated pids
	for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do cl_descendants "$c"; done
}

cl_dumped_pids() {
	local f
	for f in "$1"/ids-*.img; do
		[ -e "$f" ] || continue
		f=${f##*/ids-}
		echo "${f%.img}"
	done | sort -n
}

cl_wait_gone() {
	local secs=$1 p i
	shift
	for p in "$@"; do
		for ((i = 0; i < secs * 20; i++)); do
			[ -e "/proc/$p" ] || break
			sleep 0.05
		done
		[ -e "/proc/$p" ] && return 1
	done
	return 0
}

cl_log_lines() { grep -E 'uffdshim|Error' "$1" 2>/dev/null | grep -v 'RLIMIT_NOFILE' | sed 's/^/  /'; }

# The action script: what the kernel shows of the tree's uffd state while
# CRIU holds it frozen after the dump (before.txt) and after the restore,
# before the tasks run (after.txt).
cl_action_script() {
	local dir=$1
	cat >"$dir/snap.sh" <<EOF
#!/bin/sh
case "\$CRTOOLS_SCRIPT_ACTION" in
post-dump) "$CL_B/tests/criu_uffd_snap" "\$CRTOOLS_INIT_PID" >"$dir/before.txt" 2>&1 ;;
pre-resume) "$CL_B/tests/criu_uffd_snap" "\$CRTOOLS_INIT_PID" >"$dir/after.txt" 2>&1 ;;
esac
exit 0
EOF
	chmod +x "$dir/snap.sh"
}

# cl_dump PID DIR: dump the tree of PID into DIR/img (log DIR/img/dump.log).
# A refusal the plugin calls transient (the app was inside a uffd call the
# shim had not recorded yet) is retried, up to 5 attempts.
cl_dump() {
	local pid=$1 dir=$2 try rc
	cl_action_script "$dir"
	for try in 1 2 3 4 5; do
		rm -rf "$dir/img" "$dir/before.txt"
		mkdir -p "$dir/img"
		timeout -k 5 60 "$CL_CRIU" dump -t "$pid" -D "$dir/img" --libdir "$CL_PLUGIN_DIR" \
			--shell-job --ghost-limit 64M -o dump.log -v4 \
			--action-script "$dir/snap.sh" >"$dir/dump.out" 2>&1
		rc=$?
		[ $rc = 0 ] && return 0
		grep -q 'transient:' "$dir/img/dump.log" 2>/dev/null || return $rc
		cl_diag "dump attempt $try refused as transient, retrying:" "$(cl_log_lines "$dir/img/dump.log" | grep -m3 Error)"
		sleep 0.2
	done
	return $rc
}

cl_restore() {
	local dir=$1
	timeout -k 5 60 "$CL_CRIU" restore -D "$dir/img" --libdir "$CL_PLUGIN_DIR" --shell-job -d \
		-o restore.log -v4 --action-script "$dir/snap.sh" >"$dir/restore.out" 2>&1
}
