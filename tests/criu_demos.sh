#!/bin/bash
# criu_demos.sh - checkpoint and restore the demos with CRIU and the uffdshim
# CRIU plugin (build/criu/uffdshim_criu.so).  TAP.
#
# For each demo (lazy_loader wp_snapshot minor_shmem fork_events scm_handoff):
#   1. run it under the shim (uffd-record run -- demo --pause-ms 5, setsid,
#      output to a file; 50 and 15 ms for the short fork_events and
#      scm_handoff) and wait for "NAME: pid N ready" (and, for those two,
#      for their second process);
#   2. criu dump -t N --libdir build/criu --shell-job (its process tree: the
#      forked child of fork_events if alive, the exec'd handler of
#      scm_handoff); a post-dump action script records, while the tasks are
#      frozen, the smaps uffd flags (um/uw/ui, merged ranges) and the pagemap
#      uffd-wp and present bits of the registered ranges (criu_uffd_snap);
#   3. wait until every dumped process is reaped, criu restore -d; a
#      pre-resume action script records the same after the plugin re-applied
#      the registrations, before the tasks run;
#   4. uffd-record status PID --verify exits 0 for every restored process
#      (TODO for a process whose verify failed before the dump too, or whose
#      only disagreement is memory served by a uffd another process holds);
#   5. the two records are identical;
#   6. the demo ends with "NAME: OK".
# Then a process NOT under the shim (tests/criu_plain_uffd.c): with one uffd
# (MISSING|WP, some pages write-protected, some missing) it is dumped through
# the plugin's kernel-view fallback, restored, the records match and it
# checks its own faults; with two uffds the dump is refused with the reason
# in CRIU's log and the process keeps running.
#
# Environment: CRIU (else criu on PATH), UFFDSHIM_BUILD, UFFDSHIM_CRIU_PAUSE_MS
# (one --pause-ms for all demos), UFFDSHIM_CRIU_DEMOS (subset, space separated),
# UFFDSHIM_CRIU_DUMP_DELAY_MS (dump a random 0..N ms after "ready" instead of
# at once), UFFDSHIM_CRIU_KEEP=1 (keep the work dir).
# shellcheck source=tests/criu_lib.sh
. "$(dirname "$0")/criu_lib.sh"

cl_setup
read -r -a DEMOS <<<"${UFFDSHIM_CRIU_DEMOS:-lazy_loader wp_snapshot minor_shmem fork_events scm_handoff}"
# --pause-ms per demo: 5, or more for the short ones, so that each runs for
# seconds after "ready" and the dump lands while it works.
pause_of() {
	if [ -n "${UFFDSHIM_CRIU_PAUSE_MS:-}" ]; then echo "$UFFDSHIM_CRIU_PAUSE_MS"; return; fi
	case $1 in
	fork_events) echo 50 ;;  # 88 page touches
	scm_handoff) echo 15 ;;  # 192 page touches
	*) echo 5 ;;             # 600 to 1792 page touches
	esac
}
PER_DEMO=6
cl_plan $((${#DEMOS[@]} * PER_DEMO + 7))

skip_rest() { # N REASON
	local i
	for ((i = 0; i < $1; i++)); do cl_skip "$3 step $((PER_DEMO - $1 + i + 1))" "$2"; done
}

kill_tree() {
	local p
	for p in "$@"; do [ -e "/proc/$p" ] && kill -9 "$p" 2>/dev/null; done
}

# Processes whose memory a uffd held by another process serves (from the
# plugin's dump log lines "... (pid:fd HOLDERS) serves pid P: ...").
served_elsewhere() {
	sed -n 's/.*uffdshim: file id [^(]*(pid:fd \([0-9:,]*\)) serves pid \([0-9]*\):.*/\1 \2/p' "$1" |
		while read -r holders p; do
			case ",$holders" in *",$p:"*) ;; *) echo "$p" ;; esac
		done
}

# verify_all DIR PIDS...: uffd-record status --verify for each pid, sets
# V_BAD and V_TODO (failed, but it failed before the dump too, or its only
# disagreements are memory registered with a uffd that another process
# holds, which status --verify of this process cannot see).
verify_all() {
	local dir=$1 p elsewhere
	shift
	V_BAD='' V_TODO=''
	elsewhere=$(served_elsewhere "$dir/img/dump.log")
	for p in "$@"; do
		"$CL_B/uffd-record" status "$p" --verify >"$dir/verify.$p" 2>&1 && continue
		if [ -f "$dir/pre-verify.$p" ] && ! grep -q '^verify: OK' "$dir/pre-verify.$p"; then
			V_TODO="$V_TODO $p"
		elif grep -qx "$p" <<<"$elsewhere" &&
			! grep '^verify: \[' "$dir/verify.$p" | grep -vq 'model: not registered by any uffd of this process'; then
			V_TODO="$V_TODO $p"
		else
			V_BAD="$V_BAD $p"
		fi
	done
}

run_demo() {
	local name=$1 d=$CL_WORK/$1 pid pids p rc
	mkdir -p "$d"
	if [ ! -x "$CL_B/demo/$name" ]; then
		skip_rest $PER_DEMO "build/demo/$name is not built" "$name:"
		return
	fi
	cl_start "$d/out" "$CL_B/uffd-record" run -- "$CL_B/demo/$name" --pause-ms "$(pause_of "$name")"
	local leader=$CL_LAST
	cl_wait_line "$d/out" ": pid [0-9]+ ready|SKIP|FAIL" 30
	if grep -q "^$name: SKIP" "$d/out"; then
		skip_rest $PER_DEMO "$(grep -m1 SKIP "$d/out")" "$name:"
		return
	fi
	pid=$(cl_ready_pid "$d/out")
	[ -n "$pid" ]
	cl_ok $? "$name: runs under the shim (pid ${pid:-?})"
	if [ -z "$pid" ]; then
		cl_diag "$(cat "$d/out")"
		kill_tree "$leader"
		skip_rest $((PER_DEMO - 1)) "the demo did not get ready" "$name:"
		return
	fi

	# The two-process demos are dumped while the second process lives: the
	# forked child (its memory served by the FORK-event uffd its parent
	# holds) or the exec'd handler (holding the parent's uffd).
	case $name in
	fork_events | scm_handoff)
		local i
		for ((i = 0; i < 200; i++)); do
			[ "$(cl_descendants "$pid" | wc -l)" -ge 2 ] && break
			sleep 0.02
		done
		;;
	esac
	if [ "${UFFDSHIM_CRIU_DUMP_DELAY_MS:-0}" -gt 0 ]; then
		local ms=$((RANDOM % (UFFDSHIM_CRIU_DUMP_DELAY_MS + 1)))
		cl_diag "$name: dump after $ms ms"
		sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
	fi
	for p in $(cl_descendants "$pid"); do
		"$CL_B/uffd-record" status "$p" --verify >"$d/pre-verify.$p" 2>&1
	done
	cl_dump "$pid" "$d"
	rc=$?
	pids=$(cl_dumped_pids "$d/img")
	if [ $rc != 0 ] && { [ ! -e "/proc/$pid" ] || grep -q "^$name: OK" "$d/out"; }; then
		cl_skip "$name: criu dump" "the demo ended before the dump could take it (dump delay too long?)"
		cl_diag "$(cl_log_lines "$d/img/dump.log" | grep Error)"
		kill_tree "$leader"
		skip_rest $((PER_DEMO - 2)) "no dump" "$name:"
		return
	fi
	cl_ok $rc "$name: criu dump of pid $pid's tree (${pids//$'\n'/ }) with the plugin"
	if [ $rc != 0 ]; then
		cl_diag "$(cl_log_lines "$d/img/dump.log")"
		# shellcheck disable=SC2046 # one pid a word
		kill_tree $(cl_descendants "$pid") "$leader"
		skip_rest $((PER_DEMO - 2)) "the dump failed" "$name:"
		return
	fi
	cl_diag "$(cl_log_lines "$d/img/dump.log" | grep 'file id')"

	rc=0
	# shellcheck disable=SC2086
	cl_wait_gone 30 $pids || rc=1
	[ $rc = 0 ] && { cl_restore "$d" || rc=$?; }
	# shellcheck disable=SC2206
	CL_PIDS+=($pids)
	cl_ok $rc "$name: criu restore -d after the dumped processes were reaped"
	if [ $rc != 0 ]; then
		cl_diag "$(cl_log_lines "$d/img/restore.log")" "$(cat "$d/restore.out" 2>/dev/null)"
		skip_rest $((PER_DEMO - 3)) "the restore failed" "$name:"
		return
	fi

	# shellcheck disable=SC2086
	verify_all "$d" $pids
	if [ -n "$V_BAD" ]; then
		cl_ok 1 "$name: uffd-record status --verify right after restore (${pids//$'\n'/ })"
		for p in $V_BAD $V_TODO; do cl_diag "pid $p:" "$(tail -n 5 "$d/verify.$p")"; done
	elif [ -n "$V_TODO" ]; then
		cl_todo 1 "$name: uffd-record status --verify right after restore (${pids//$'\n'/ })" \
			"pid$V_TODO: its memory is registered with a uffd another process holds, which its status --verify does not account for (as before the dump): $(grep -m1 '^verify: \[' "$d/verify.${V_TODO# }" | cut -c1-160)"
	else
		cl_ok 0 "$name: uffd-record status --verify exits 0 right after restore (${pids//$'\n'/ })"
	fi

	rc=0
	if [ ! -s "$d/before.txt" ] || [ ! -s "$d/after.txt" ] || ! grep -q ' vma ' "$d/before.txt"; then
		rc=1
		cl_diag "missing records: before.txt $(wc -l <"$d/before.txt" 2>/dev/null) lines, after.txt $(wc -l <"$d/after.txt" 2>/dev/null) lines"
	elif ! diff -u "$d/before.txt" "$d/after.txt" >"$d/snap.diff"; then
		rc=1
		cl_diag "$(head -n 30 "$d/snap.diff")"
	fi
	cl_ok $rc "$name: smaps uffd flags and pagemap uffd-wp/present bits of the registered ranges equal the dump's ($(grep -c ' vma ' "$d/before.txt" 2>/dev/null) ranges, $(grep -c ' wp ' "$d/before.txt" 2>/dev/null) wp runs)"

	cl_wait_line "$d/out" "^$name: (OK|FAIL)|FAIL" 180
	# shellcheck disable=SC2086
	cl_wait_gone 30 $pids
	rc=1
	grep -q "^$name: OK" "$d/out" && ! grep -q "FAIL" "$d/out" && rc=0
	cl_ok $rc "$name: finishes with OK after the restore"
	[ $rc = 0 ] || cl_diag "$(tail -n 5 "$d/out")"
	# shellcheck disable=SC2086
	kill_tree $pids
}

for n in "${DEMOS[@]}"; do
	run_demo "$n"
done

# ---- a process not under the shim ----
plain_one() {
	local d=$CL_WORK/plain-one pid rc pids
	mkdir -p "$d"
	cl_start "$d/out" env -u LD_PRELOAD "$CL_B/tests/criu_plain_uffd" one
	cl_wait_line "$d/out" "ready|FAIL" 10
	pid=$(cl_ready_pid "$d/out")
	rc=1
	if [ -n "$pid" ]; then
		cl_dump "$pid" "$d"
		rc=$?
		[ $rc = 0 ] && ! grep -q 'taken from the kernel' "$d/img/dump.log" && rc=1
	fi
	cl_ok $rc "not shimmed, one uffd: criu dump through the kernel-view fallback"
	if [ $rc != 0 ]; then
		cl_diag "$(cat "$d/out")" "$(cl_log_lines "$d/img/dump.log")"
		kill_tree "$pid"
		for _ in 1 2 3; do cl_skip "not shimmed, one uffd" "the dump failed"; done
		return
	fi
	pids=$(cl_dumped_pids "$d/img")
	rc=0
	# shellcheck disable=SC2086
	cl_wait_gone 30 $pids && cl_restore "$d" || rc=1
	# shellcheck disable=SC2206
	CL_PIDS+=($pids)
	cl_ok $rc "not shimmed, one uffd: criu restore -d"
	if [ $rc != 0 ]; then
		cl_diag "$(cl_log_lines "$d/img/restore.log")"
		for _ in 1 2; do cl_skip "not shimmed, one uffd" "the restore failed"; done
		return
	fi
	rc=0
	diff -u "$d/before.txt" "$d/after.txt" >"$d/snap.diff" && grep -q ' wp ' "$d/before.txt" || rc=1
	cl_ok $rc "not shimmed, one uffd: smaps flags and uffd-wp/present bits equal the dump's"
	[ $rc = 0 ] || cl_diag "$(cat "$d/snap.diff" "$d/before.txt")"
	kill -USR1 "$pid"
	cl_wait_line "$d/out" "OK|FAIL" 20
	grep -q "criu_plain_uffd: OK" "$d/out"
	cl_ok $? "not shimmed, one uffd: after restore its WP and MISSING faults come as before"
	grep -q OK "$d/out" || cl_diag "$(cat "$d/out")"
	kill_tree "$pid"
}

plain_two() {
	local d=$CL_WORK/plain-two pid rc
	mkdir -p "$d"
	cl_start "$d/out" env -u LD_PRELOAD "$CL_B/tests/criu_plain_uffd" two
	cl_wait_line "$d/out" "ready|FAIL" 10
	pid=$(cl_ready_pid "$d/out")
	rc=1
	[ -n "$pid" ] && ! cl_dump "$pid" "$d" && rc=0
	cl_ok $rc "not shimmed, two uffds: criu dump is refused"
	grep -q 'holds 2 userfaultfds.*does not run under uffdshim' "$d/img/dump.log" 2>/dev/null
	rc=$?
	cl_ok $rc "not shimmed, two uffds: CRIU's log gives the reason"
	cl_diag "$(grep -m1 'Error (uffdshim)' "$d/img/dump.log" 2>/dev/null | cut -c1-300)"
	[ -n "$pid" ] && [ -e "/proc/$pid" ] && grep -q "^State:.*[SR]" "/proc/$pid/status"
	cl_ok $? "not shimmed, two uffds: the process keeps running after the refused dump"
	kill_tree "$pid"
}

if [ -x "$CL_B/tests/criu_plain_uffd" ] && [ -x "$CL_B/tests/criu_uffd_snap" ]; then
	plain_one
	plain_two
else
	for _ in 1 2 3 4 5 6 7; do cl_skip "not shimmed" "build/tests/criu_plain_uffd is not built"; done
fi
