#!/bin/sh
# run-demos.sh - run every demo program under uffd-record (make demo).
#
#   UFFDSHIM_BUILD=/abs/path/to/build sh demo/run-demos.sh [NAME...]
#
# Each demo runs as `uffd-record run --trace T -- build/demo/NAME`, writing its
# trace to $UFFDSHIM_BUILD/demo-traces/NAME.trace.  lazy_loader runs with
# --pause-ms 2 in the background; once it prints "pid N ready", the script
# shows `uffd-record status N` and `uffd-record status N --verify` while it
# runs.  wp_snapshot then runs once more, tracked by `uffd-record track`
# (uffd-WP dirty tracking into an image chain, verified against its memory).
# At the end `uffd-record report` is printed for every trace.
# Exit status: 0 if every demo passed (or skipped with 77), 1 otherwise.
# UFFDSHIM_DEMO_TIMEOUT (seconds, default 300) bounds each demo run.

set -u

B=${UFFDSHIM_BUILD:?set UFFDSHIM_BUILD to the absolute path of build/}
REC=$B/uffd-record
TRACES=$B/demo-traces
TIMEOUT=${UFFDSHIM_DEMO_TIMEOUT:-300}
DEMOS=${*:-lazy_loader wp_snapshot minor_shmem fork_events scm_handoff}

passed=
skipped=
failed=
traces=

if [ ! -x "$REC" ]; then
	echo "run-demos: $REC does not exist: build it first (make)" >&2
	exit 1
fi
mkdir -p "$TRACES" || exit 1

# Bound a command's run time if coreutils timeout is there (it signals the
# whole process group, so the demo dies with uffd-record).
bounded() {
	if command -v timeout >/dev/null 2>&1; then
		timeout -k 10 "$TIMEOUT" "$@"
	else
		"$@"
	fi
}

# note WHAT STATUS: file the outcome of one step.
note() {
	case $2 in
	0) passed="$passed $1"; echo "=== $1: PASS" ;;
	77) skipped="$skipped $1"; echo "=== $1: SKIP (exit 77)" ;;
	124) failed="$failed $1(timeout)"; echo "=== $1: FAIL (timed out after ${TIMEOUT}s)" ;;
	*) failed="$failed $1($2)"; echo "=== $1: FAIL (exit $2)" ;;
	esac
}

# fresh_trace NAME: print the trace path for NAME, old trace and segments removed.
fresh_trace() {
	rm -f "$TRACES/$1.trace" "$TRACES/$1.trace".*
	echo "$TRACES/$1.trace"
}

run_plain() {
	name=$1
	trace=$(fresh_trace "$name")
	traces="$traces $name"
	echo "=== $name: uffd-record run --trace $trace -- $B/demo/$name"
	bounded "$REC" run --trace "$trace" -- "$B/demo/$name"
	note "$name" $?
}

# run_observed NAME STEP ACTION RUNARGS...: run demo NAME as `uffd-record run
# RUNARGS -- demo/NAME --pause-ms ...` in the background and call ACTION PID
# once it prints "NAME: pid PID ready".  Its output comes through a fifo so
# that ACTION runs exactly then (no polling).  The demo's outcome is noted as
# STEP; a demo that never got ready fails (unless it skipped).
run_observed() {
	name=$1 step=$2 action=$3
	shift 3
	fifo=$TRACES/.$step.out.$$
	rm -f "$fifo"
	mkfifo "$fifo" || { note "$step" 1; return; }
	echo "=== $name: uffd-record run $* (in the background)"
	bounded "$REC" run "$@" >"$fifo" 2>&1 &
	bg=$!
	seen=
	while IFS= read -r line; do
		printf '%s\n' "$line"
		case $line in
		"$name: pid "*" ready")
			[ -n "$seen" ] && continue
			seen=1
			pid=${line#"$name: pid "}
			pid=${pid%" ready"}
			"$action" "$pid"
			;;
		esac
	done <"$fifo"
	wait "$bg"
	rc=$?
	rm -f "$fifo"
	if [ -z "$seen" ] && [ "$rc" -ne 77 ]; then
		echo "=== $name: never printed its 'pid N ready' line: nothing shown mid-run"
		[ "$rc" -eq 0 ] && rc=1
	fi
	note "$step" "$rc"
}

# lazy_loader, observed mid-run: status and status --verify while it loads.
show_status() {
	echo "=== lazy_loader: uffd-record status $1 (mid-run)"
	"$REC" status "$1"
	note "lazy_loader-status" $?
	echo "=== lazy_loader: uffd-record status $1 --verify (mid-run)"
	"$REC" status "$1" --verify
	note "lazy_loader-status-verify" $?
}
run_lazy_loader() {
	trace=$(fresh_trace lazy_loader)
	traces="$traces lazy_loader"
	run_observed lazy_loader lazy_loader show_status --trace "$trace" -- \
		"$B/demo/lazy_loader" --pause-ms 2
}

for name in $DEMOS; do
	if [ ! -x "$B/demo/$name" ]; then
		echo "=== $name: $B/demo/$name is missing"
		note "$name" 1
		continue
	fi
	case $name in
	lazy_loader) run_lazy_loader ;;
	*) run_plain "$name" ;;
	esac
done

# Dirty tracking mid-run: wp_snapshot (its own uffd-WP snapshot running) is
# tracked with uffd-WP by the shim for 5 epochs of 100 ms; the last epoch is
# taken with the demo stopped and --verify compares the whole chain with its
# memory; then the chain is validated.
track_it() {
	chain=$B/demo-chain
	rm -rf "$chain"
	echo "=== wp_snapshot: uffd-record track $1 -D $chain --iterations 5 --interval 100 --verify"
	"$REC" track "$1" -D "$chain" --iterations 5 --interval 100 --verify
	note "wp_snapshot-track" $?
	echo "=== wp_snapshot: uffd-replay check $chain"
	"$B/uffd-replay" check "$chain"
	note "wp_snapshot-chain-check" $?
}
run_tracked() {
	run_observed wp_snapshot wp_snapshot-tracked track_it -- "$B/demo/wp_snapshot" --pause-ms 10
}
if [ -z "${*:-}" ] && [ -x "$B/demo/wp_snapshot" ]; then
	run_tracked
fi

# One report per trace (a demo appears once even if named twice above).
reported=
for name in $traces; do
	case " $reported " in *" $name "*) continue ;; esac
	reported="$reported $name"
	trace=$TRACES/$name.trace
	case " $skipped " in *" $name "*) [ -e "$trace" ] || continue ;; esac
	echo "=== $name: uffd-record report $trace"
	"$REC" report "$trace"
	note "$name-report" $?
done

echo "=== summary"
echo "passed: ${passed:- none}"
[ -n "$skipped" ] && echo "skipped:$skipped"
if [ -n "$failed" ]; then
	echo "FAILED:$failed"
	exit 1
fi
echo "all demos passed"
exit 0
