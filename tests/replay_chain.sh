#!/bin/bash
# replay_chain.sh - an incremental image chain (DIR/epoch-0000 ...) is
# checked, shown, flattened and relaunch-restored.
#
# The chain is the synthetic one of tests/chain_gen.h, written by
# `image_tool chain` (four epochs: new ranges, dirty pages, ABSENT pages, a
# range removed and re-created NEW, a read-only range, a [heap] range a
# relaunch must skip; no uffd).  The program restored into is `image_tool
# probe`, which maps nothing itself: it reports, page by page, what it finds
# at the recorded addresses (0x7e0000000000, free in a fresh process): the
# epoch whose data a page holds, "none" (mapped, never populated), or
# "unmapped", and each range's protection.  `image_tool chain-expect` prints
# what it must find.  Cases:
#   check / show / flatten    the tools accept the chain; flatten writes 0600
#   flat                      uffd-replay -D FLAT restores the exact pages
#   chain                     uffd-replay -D CHAIN flattens into a private
#                             temporary directory, restores the same, names the
#                             skipped [heap] range, removes the directory
#   shim alone                LD_PRELOAD + UFFDSHIM_RESTORE=FLAT: the same
#   status                    PROG's exit status comes back through uffd-replay
#   uffd                      the chain with a uffd (fd 9) whose registered
#                             range lies inside a tracked range: those pages
#                             come back through the uffd restore, the rest of
#                             the range around it through the tracked restore
#                             (skipped without userfaultfd)
#   missing epoch, epoch alone, bad link: refused, PROG's main never runs
# TAP.  Exit 77 (SKIP) without the build.
. "$(dirname "$0")/replay/lib.sh"

[ -n "$RL_B" ] || rl_skip_all "UFFDSHIM_BUILD is not set"
TOOL=$RL_B/tests/image_tool
for t in uffd-record uffd-replay libuffdshim.so tests/image_tool; do
	[ -e "$RL_B/$t" ] || rl_skip_all "$RL_B/$t is missing (run make)"
done
RL_W=$(mktemp -d "${TMPDIR:-/tmp}/uffdshim-chain.XXXXXX") || exit 1
trap rl_cleanup EXIT
# uffd-replay's own temporary directories go here: they must be gone after.
export TMPDIR=$RL_W/tmp
mkdir -p "$TMPDIR"

CHAIN=$RL_W/chain
FLAT=$RL_W/flat
"$TOOL" chain "$CHAIN" >"$RL_W/gen.out" 2>&1
rl_ok $? "image_tool writes a synthetic 4-epoch chain" || { rl_diag_file "$RL_W/gen.out"; rl_done; }
"$TOOL" chain-expect >"$RL_W/expect"

# run_ok NAME CMD...: CMD exits 0; its output in $RL_W/NAME.out
run_ok() {
	local n=$1
	shift
	timeout -k 5 "$RL_TIMEOUT" "$@" >"$RL_W/$n.out" 2>&1
	rl_ok $? "$n: $(basename "$1") ${2:-} exits 0" || rl_diag_file "$RL_W/$n.out"
}

run_ok check "$RL_B/uffd-replay" check "$CHAIN"
grep -q "4 epochs" "$RL_W/check.out" && grep -q "epoch 3: " "$RL_W/check.out"
rl_ok $? "check: summary names 4 epochs and each epoch" || rl_diag_file "$RL_W/check.out"
run_ok show "$RL_B/uffd-record" show "$CHAIN"
grep -q "epoch 2: .*3 tracked ranges" "$RL_W/show.out"
rl_ok $? "show: one line per epoch (epoch 2 has 3 ranges)" || rl_diag_file "$RL_W/show.out"
run_ok show-epoch "$RL_B/uffd-record" show "$CHAIN/epoch-0001"
grep -q "absent (1 pages)" "$RL_W/show-epoch.out" && grep -q "heap .*\[heap\]" "$RL_W/show-epoch.out"
rl_ok $? "show of one epoch: run counts by kind, tracked ranges" || rl_diag_file "$RL_W/show-epoch.out"

run_ok flatten "$RL_B/uffd-replay" flatten "$CHAIN" -o "$FLAT"
[ "$(stat -c %a "$FLAT/uffd-state.img" "$FLAT/uffd-pages.img" | sort -u)" = 600 ]
rl_ok $? "flatten: image files are 0600"
run_ok check-flat "$RL_B/uffd-replay" check "$FLAT"

# restored NAME: the probe's output matches what the chain holds.
restored() {
	diff "$RL_W/expect" "$RL_W/$1.probe" >"$RL_W/$1.diff" 2>&1
	rl_ok $? "$1: every page is back with its newest content, zero and absent pages unpopulated, heap skipped" ||
		{ rl_diag_file "$RL_W/$1.diff"; rl_diag_file "$RL_W/$1.err"; }
}

timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-replay" -D "$FLAT" -- "$TOOL" probe >"$RL_W/flat.probe" 2>"$RL_W/flat.err"
rl_ok $? "flat: uffd-replay -D FLAT -- image_tool probe exits 0" || rl_diag_file "$RL_W/flat.err"
restored flat

timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-replay" -D "$CHAIN" -- "$TOOL" probe >"$RL_W/chain.probe" 2>"$RL_W/chain.err"
rl_ok $? "chain: uffd-replay -D CHAIN -- image_tool probe exits 0" || rl_diag_file "$RL_W/chain.err"
restored chain
[ "$(grep -c 'not recreated' "$RL_W/chain.err")" = 1 ] && grep -q 'heap 0x7e0000300000' "$RL_W/chain.err"
rl_ok $? "chain: one line names the skipped [heap] range" || rl_diag_file "$RL_W/chain.err"
[ -z "$(ls -A "$TMPDIR")" ]
rl_ok $? "chain: the temporary flattened image is removed after the program exits" ||
	rl_diag "left: $(ls -A "$TMPDIR")"

timeout -k 5 "$RL_TIMEOUT" env LD_PRELOAD="$RL_B/libuffdshim.so" UFFDSHIM_RESTORE="$FLAT" "$TOOL" probe \
	>"$RL_W/shim.probe" 2>"$RL_W/shim.err"
rl_ok $? "shim alone restores the flattened image" || rl_diag_file "$RL_W/shim.err"
restored shim

timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-replay" -D "$CHAIN" -- /bin/sh -c 'exit 3' 2>/dev/null
rc=$?
[ $rc -eq 3 ] && [ -z "$(ls -A "$TMPDIR")" ]
rl_ok $? "status: PROG's exit status 3 comes back (got $rc), temporary image removed"

# ---- with a uffd ----
UCHAIN=$RL_W/uchain
"$TOOL" chain "$UCHAIN" uffd && "$TOOL" chain-expect uffd >"$RL_W/expect-u"
rl_ok $? "image_tool writes the chain with a uffd"
timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-replay" -D "$UCHAIN" -- "$TOOL" probe >"$RL_W/uffd.probe" \
	2>"$RL_W/uffd.err" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
rc=$?
if [ $rc -ne 0 ] && grep -qE "cannot create a userfaultfd|does not offer" "$RL_W/uffd.err"; then
	rl_skip 2 "no userfaultfd here: $(head -n1 "$RL_W/uffd.err")"
else
	rl_ok $rc "uffd: uffd-replay -D CHAIN (with a uffd) -- image_tool probe exits 0" ||
		rl_diag_file "$RL_W/uffd.err"
	diff "$RL_W/expect-u" "$RL_W/uffd.probe" >"$RL_W/uffd.diff" 2>&1
	rl_ok $? "uffd: pages of the registered range and around it are back" ||
		{ rl_diag_file "$RL_W/uffd.diff"; rl_diag_file "$RL_W/uffd.err"; }
fi

# ---- refusals: PROG is sh writing a marker ----
# refused NAME KEYWORD DIR [shim]: uffd-replay (or the shim alone) refuses.
refused() {
	local n=$1 kw=$2 d=$3 m=$RL_W/$1.ran rc
	if [ "${4:-}" = shim ]; then
		timeout -k 5 "$RL_TIMEOUT" env LD_PRELOAD="$RL_B/libuffdshim.so" UFFDSHIM_RESTORE="$d" \
			/bin/sh -c 'echo ran >"$0"' "$m" >"$RL_W/$n.out" 2>&1
	else
		timeout -k 5 "$RL_TIMEOUT" "$RL_B/uffd-replay" -D "$d" -- /bin/sh -c 'echo ran >"$0"' "$m" \
			>"$RL_W/$n.out" 2>&1
	fi
	rc=$?
	[ $rc -ne 0 ] && [ $rc -lt 128 ] && [ ! -e "$m" ] && grep -qE "$kw" "$RL_W/$n.out"
	rl_ok $? "$n: refused (status $rc), main not run: $(head -n1 "$RL_W/$n.out" | cut -c1-120)" ||
		rl_diag_file "$RL_W/$n.out"
}

cp -r "$CHAIN" "$RL_W/missing" && rm -rf "$RL_W/missing/epoch-0001"
refused missing-epoch "epoch-0001 is missing" "$RL_W/missing"
refused epoch-alone "restore the chain directory" "$CHAIN/epoch-0002"
refused epoch-alone-shim "restore the chain directory" "$CHAIN/epoch-0002" shim
cp -r "$CHAIN" "$RL_W/relinked" && cp "$CHAIN/epoch-0001/uffd-state.img" "$RL_W/relinked/epoch-0002/"
refused bad-link "epoch 2" "$RL_W/relinked"
"$RL_B/uffd-replay" check "$RL_W/relinked" >"$RL_W/check-bad.out" 2>&1
[ $? -eq 1 ] && grep -q "epoch 2" "$RL_W/check-bad.out"
rl_ok $? "check: names the epoch that is wrong: $(head -n1 "$RL_W/check-bad.out" | cut -c1-120)" ||
	rl_diag_file "$RL_W/check-bad.out"

rl_done
