#!/bin/sh
# run-benches.sh - run every benchmark program in $UFFDSHIM_BUILD/bench with its
# defaults (fault_bench first, then the others in name order) and print their
# output.  `make bench` runs this with UFFDSHIM_BUILD=<absolute build dir>.
# The loop below is the invocation of each: dump_restore_bench, then
# track_bench (dirty tracking: untracked vs async/sync tracked phases, the
# protocol and `uffd-record track`, then the cost of a cut; about 80 s).
#
# The benchmarks compare native and shimmed runs themselves and find the shim
# at $UFFDSHIM_LIB (default: $UFFDSHIM_BUILD/libuffdshim.so).  Their verdicts
# against the overhead budget are printed, never turned into a failure (the
# machine is noisy); this script exits non-zero only if a benchmark itself
# failed (a workload broke, natively or under the shim) or none was found.
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=${UFFDSHIM_BUILD:-$here/../build}
if [ ! -d "$build/bench" ]; then
	echo "run-benches: no $build/bench (build first: make)" >&2
	exit 2
fi
build=$(cd "$build" && pwd)
UFFDSHIM_BUILD=$build
UFFDSHIM_LIB=${UFFDSHIM_LIB:-$build/libuffdshim.so}
export UFFDSHIM_BUILD UFFDSHIM_LIB

is_prog() { [ -f "$1" ] && [ -x "$1" ]; }

# fault_bench first, then every other executable regular file in name order
# (not the compiler's .d dependency files or anything else not a program).
count=0
for f in "$build"/bench/*; do
	is_prog "$f" && count=$((count + 1))
done
if [ "$count" -eq 0 ]; then
	echo "run-benches: no benchmark programs in $build/bench" >&2
	exit 2
fi

echo "run-benches: $(uname -r), $(nproc 2>/dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
if [ -f "$UFFDSHIM_LIB" ]; then
	echo "run-benches: shim $UFFDSHIM_LIB"
else
	echo "run-benches: shim $UFFDSHIM_LIB not found: benchmarks run native only"
fi

failed=
run_one() {
	name=$(basename "$1")
	echo
	echo "=== $name ==="
	start=$(date +%s)
	"$1"
	rc=$?
	end=$(date +%s)
	if [ "$rc" -eq 0 ]; then
		echo "=== $name: ok ($((end - start)) s) ==="
	else
		echo "=== $name: FAILED (exit status $rc, $((end - start)) s) ==="
		failed="$failed $name"
	fi
}

first=$build/bench/fault_bench
is_prog "$first" && run_one "$first"
for f in "$build"/bench/*; do
	[ "$f" = "$first" ] && continue
	is_prog "$f" && run_one "$f"
done

echo
if [ -n "$failed" ]; then
	echo "run-benches: FAILED:$failed"
	exit 1
fi
echo "run-benches: all benchmarks ran"
exit 0
