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

# lazy_loader, observed mid-run.  Its output comes through a fifo so that the
# status commands run exactly when it says it is ready (no polling).
run_lazy_loader() {
	name=lazy_loader
	trace=$(fresh_trace "$name")
	traces="$traces $name"
	fifo=$TRACES/.$name.out.$$
	rm -f "$fifo"
	mkfifo "$fifo" || { note "$name" 1; return; }
	echo "=== $name: uffd-record run --trace $trace -- $B/demo/$name --pause-ms 2 (in the background)"
	bounded "$REC" run --trace "$trace" -- "$B/demo/$name" --pause-ms 2 >"$fifo" 2>&1 &
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
			echo "=== $name: uffd-record status $pid (mid-run)"
			"$REC" status "$pid"
			note "$name-status" $?
			echo "=== $name: uffd-record status $pid --verify (mid-run)"
			"$REC" status "$pid" --verify
			note "$name-status-verify" $?
			;;
		esac
	done <"$fifo"
	wait "$bg"
	rc=$?
	rm -f "$fifo"
	if [ -z "$seen" ] && [ "$rc" -ne 77 ]; then
		echo "=== $name: never printed its 'pid N ready' line: status not shown"
		[ "$rc" -eq 0 ] && rc=1
	fi
	note "$name" "$rc"
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
run_tracked() {
	name=wp_snapshot
	chain=$B/demo-chain
	rm -rf "$chain"
	fifo=$TRACES/.tracked.out.$$
	rm -f "$fifo"
	mkfifo "$fifo" || { note "$name-tracked" 1; return; }
	echo "=== $name (tracked): uffd-record run -- $B/demo/$name --pause-ms 10 (in the background)"
	bounded "$REC" run -- "$B/demo/$name" --pause-ms 10 >"$fifo" 2>&1 &
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
			echo "=== $name: uffd-record track $pid -D $chain --iterations 5 --interval 100 --verify"
			"$REC" track "$pid" -D "$chain" --iterations 5 --interval 100 --verify
			note "$name-track" $?
			echo "=== $name: uffd-replay check $chain"
			"$B/uffd-replay" check "$chain"
			note "$name-chain-check" $?
			;;
		esac
	done <"$fifo"
	wait "$bg"
	note "$name-tracked" $?
	rm -f "$fifo"
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
