# shellcheck shell=bash
# lib.sh - what the replay_*.sh tests share: TAP output, demos started under
# uffd-record and held at a point (--hold, see demo/demo_common.h), dumps,
# relaunches under uffd-replay.  Sourced; needs UFFDSHIM_BUILD (absolute).
#
# Handshake with a demo: it is started with --hold POINT, prints
# "NAME: pid N hold POINT" when it gets there and waits for SIGUSR1; the test
# waits for that line (rl_wait_line: it also notices the process ending),
# inspects or dumps the process, then sends SIGUSR1.  Nothing depends on a
# fixed delay.  Every program started here runs under timeout(1), which
# makes a process group of it and what it starts; at exit, the timeout
# processes still running (our own children, so their pids cannot have been
# reused) get SIGTERM, which they pass on to their whole group, so a hung
# step cannot outlive the test.

RL_B=${UFFDSHIM_BUILD:-}
RL_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RL_N=0
RL_FAILED=0
RL_TIMEOUT=${UFFDSHIM_REPLAY_TIMEOUT:-120} # seconds, per process started
RL_WAIT=30                                  # seconds, per line waited for

# ---- TAP ----
rl_ok() { # STATUS DESCRIPTION
	RL_N=$((RL_N + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $RL_N - $2"
	else
		echo "not ok $RL_N - $2"
		RL_FAILED=$((RL_FAILED + 1))
	fi
	return "$1"
}
rl_skip() { # COUNT REASON
	local i
	for ((i = 0; i < $1; i++)); do
		RL_N=$((RL_N + 1))
		echo "ok $RL_N # SKIP $2"
	done
}
# Diagnostics (why a test failed) go to stderr, which prove shows; notes go
# to stdout (prove -v).
rl_diag() { printf '# %s\n' "$*" >&2; }
rl_note() { printf '# %s\n' "$*"; }
rl_diag_file() { # FILE: its lines as diagnostics
	[ -s "$1" ] && sed 's/^/#   /' "$1" >&2
	return 0
}
rl_skip_all() {
	echo "1..0 # SKIP $*"
	exit 77
}
rl_done() {
	echo "1..$RL_N"
	[ "$RL_FAILED" -eq 0 ] && exit 0
	exit 1
}

# ---- setup ----
rl_cleanup() {
	local p
	for p in $(jobs -p); do
		kill -TERM "$p" 2>/dev/null
	done
	wait 2>/dev/null
	if [ -n "${UFFDSHIM_KEEP:-}" ]; then
		echo "# work files kept in $RL_W"
	else
		rm -rf "$RL_W"
	fi
}

rl_setup() {
	[ -n "$RL_B" ] || rl_skip_all "UFFDSHIM_BUILD is not set"
	local t
	for t in uffd-record uffd-replay libuffdshim.so demo/lazy_loader demo/wp_snapshot \
		demo/minor_shmem demo/fork_events demo/scm_handoff; do
		[ -e "$RL_B/$t" ] || rl_skip_all "$RL_B/$t is missing (run make)"
	done
	command -v python3 >/dev/null || rl_skip_all "python3 is needed (tests/replay/layout.py)"
	command -v timeout >/dev/null || rl_skip_all "timeout (coreutils) is needed"
	RL_W=$(mktemp -d "${TMPDIR:-/tmp}/uffdshim-replay.XXXXXX") || exit 1
	trap rl_cleanup EXIT
	# Can this machine make uffds at all?  A demo exits 77 when it cannot.
	"$RL_B/demo/scm_handoff" >"$RL_W/probe.out" 2>&1
	[ $? -eq 77 ] && rl_skip_all "$(tail -n1 "$RL_W/probe.out")"
	return 0
}

# ---- waiting ----

# rl_wait_line FILE REGEX PID: wait until a line of FILE matches REGEX (ERE).
# Fails when PID ends first or after RL_WAIT seconds.
rl_wait_line() {
	local f=$1 re=$2 pid=$3 i=0
	while ! grep -qE "$re" "$f" 2>/dev/null; do
		if ! kill -0 "$pid" 2>/dev/null; then
			grep -qE "$re" "$f" 2>/dev/null
			return
		fi
		[ $i -ge $((RL_WAIT * 20)) ] && return 1
		sleep 0.05
		i=$((i + 1))
	done
}

# rl_wait_gone PID: wait (at most RL_WAIT s) until PID no longer exists.
rl_wait_gone() {
	local i=0
	while kill -0 "$1" 2>/dev/null; do
		[ $i -ge $((RL_WAIT * 20)) ] && return 1
		sleep 0.05
		i=$((i + 1))
	done
}

# rl_line_pid FILE REGEX: the pid in the first "NAME: pid N ..." line matching.
rl_line_pid() {
	grep -E "$2" "$1" | head -n1 | sed -n 's/^[^:]*: pid \([0-9][0-9]*\) .*/\1/p'
}

# ---- starting, dumping, relaunching ----
# fds 3-9 are closed for the programs started: a relaunch must find the
# checkpointed fd numbers free, and the demos should get the same numbers
# from run to run.

# rl_run OUT NAME ARGS...: start demo NAME under uffd-record run in the
# background.  Sets RL_JOB.
rl_run() {
	local out=$1 name=$2
	shift 2
	timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-record" run -- "$RL_B/demo/$name" "$@" \
		>"$out" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	RL_JOB=$!
}

# rl_relaunch OUT DIR NAME ARGS...: start demo NAME under uffd-replay -D DIR
# in the background.  Sets RL_JOB.
rl_relaunch() {
	local out=$1 dir=$2 name=$3
	shift 3
	timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-replay" -D "$dir" -- "$RL_B/demo/$name" "$@" \
		>"$out" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	RL_JOB=$!
}

# rl_held OUT NAME POINT JOB: wait until demo NAME says it holds at POINT;
# sets RL_PID to its pid.
rl_held() {
	RL_PID=
	rl_wait_line "$1" "^$2: pid [0-9]+ hold $3\$" "$4" || return 1
	RL_PID=$(rl_line_pid "$1" "^$2: pid [0-9]+ hold $3\$")
	[ -n "$RL_PID" ]
}

# rl_dump PID DIR OUT JOB: dump --kill --with-memory, then wait until the
# process and the job that ran it are gone.
rl_dump() {
	"$RL_B/uffd-record" dump "$1" -D "$2" --kill --with-memory >"$3" 2>&1 || return 1
	wait "$4" 2>/dev/null
	rl_wait_gone "$1"
}

# rl_layout PID OUT: the kernel's view of its uffd-registered memory.
rl_layout() {
	python3 "$RL_HERE/layout.py" "$1" >"$2"
}

# rl_finish PID JOB: release a held demo (SIGUSR1) and wait for it.
# Sets RL_RC to its exit status.
rl_finish() {
	kill -USR1 "$1" 2>/dev/null
	wait "$2"
	RL_RC=$?
}
