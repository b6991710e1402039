#!/bin/bash
# track_demos.sh - dirty tracking (uffd-record track) of the demo programs
# while they use userfaultfd on the same memory (docs/design.md, "Dirty
# tracking"; shim/shim_track.c).
#
# Tracked cases: a demo runs under `uffd-record run`, slowed with --pause-ms
# so that its uffd work lasts several seconds; once it is ready,
# `uffd-record track PID -D DIR --interval 100 --verify` starts on it (for
# scm_handoff two trackers at once: the memory owner, and the handler process
# that got its uffd over SCM_RIGHTS).  While it tracks,
# `uffd-record status PID --verify` must pass; then the tracker gets SIGINT
# (while the demo is still at work), takes its last epoch with the process
# stopped and compares the whole chain with the live memory.  Checked: the
# tracker cut epochs and exits 0 with "verify: the chain matches"; its epoch
# lines have the documented form and name the modes; the uffd ranges of the
# demo are tracked in the mode the design gives them (WP range of its own
# uffd: sync; other ranges: all; shared memory: not tracked;
# tests/track/modes.py); `uffd-replay check` accepts the chain; no thread of
# the demo stays blocked in one uffd fault for a second or more while it is
# tracked (tests/track/watch.py); the demo finishes with its usual OK line and
# exit status 0.  Demos with an "end" hold point hold there after their work
# (--hold end), so the tracker always stops before they exit.
#
# Monitor-death cases: the tracker is killed with SIGKILL mid-run.  Within a
# few seconds nothing of the demo may be left write-protected outside its own
# WP ranges (smaps "uw", pagemap uffd-wp bit; tests/track/wpcheck.py): the shim
# watches the monitor's pidfd and releases everything.  The demo must go on
# (no thread stuck in a fault), reach its end, pass `uffd-record status
# --verify` and finish OK.
#
# TAP.  Exit 77 (SKIP) without the build, python3 or userfaultfd.
# UFFDSHIM_KEEP=1 keeps the work files.
. "$(dirname "$0")/replay/lib.sh"
. "$(dirname "$0")/track/lib.sh"

rl_setup
REC=$RL_B/uffd-record
"$REC" track --help 2>/dev/null | grep -q 'uffd-record track' ||
	rl_skip_all "$REC has no track command"

# TODO directives of assertions that fail because of a known bug the test
# cannot fix (reported to the lead); "" elsewhere.
todo_stuck() {
	:
}

# note_stuck NAME WATCHFILE...: the stuck-thread assertion
note_stuck() {
	local name=$1 what=$2 todo
	shift 2
	local f s bad=0 sum=""
	for f in "$@"; do
		s=$(tk_stuck "$f") && bad=1
		sum="$sum${sum:+; }$s"
	done
	todo=$(todo_stuck "$name")
	if [ $bad = 0 ]; then
		echo "ok $((RL_N + 1)) - $what (longest fault: $sum)$todo"
		RL_N=$((RL_N + 1))
	else
		RL_N=$((RL_N + 1))
		echo "not ok $RL_N - $what (longest fault: $sum)$todo"
		[ -n "$todo" ] || RL_FAILED=$((RL_FAILED + 1))
		for f in "$@"; do rl_diag_file "$f"; done
	fi
}

# tracked NAME PAUSE_MS HOLD: 8 tests, plus 5 per extra target
#   HOLD: "end" (hold there after the work) or "" (no hold point)
tracked() {
	local name=$1 pause=$2 hold=$3
	local d="$RL_W/$name.tracked" c="$name (tracked)" pid job h="" i
	local -a tg=() tpid=() wpid=() trc=()
	mkdir -p "$d"
	if [ -n "$hold" ]; then
		rl_run "$d/run.out" "$name" --pause-ms "$pause" --hold "$hold"
	else
		rl_run "$d/run.out" "$name" --pause-ms "$pause"
	fi
	job=$RL_JOB
	if ! rl_wait_line "$d/run.out" "^$name: pid [0-9]+ ready\$" "$job"; then
		rl_ok 1 "$c: ready under uffd-record run --pause-ms $pause"
		rl_diag_file "$d/run.out"
		rl_skip 7 "$c: never ready"
		kill -TERM "$job" 2>/dev/null; wait "$job" 2>/dev/null
		return
	fi
	pid=$(rl_line_pid "$d/run.out" "^$name: pid [0-9]+ ready\$")
	tg=("$pid")
	if [ "$name" = scm_handoff ]; then
		# the handler: the child of pid exec'd with --handler, once it holds
		# the uffd and its shim listens
		for ((i = 0; i < TK_WAIT * 20; i++)); do
			for h in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
				tr '\0' ' ' <"/proc/$h/cmdline" 2>/dev/null | grep -q -- '--handler' &&
					ls -l "/proc/$h/fd" 2>/dev/null | grep -q userfaultfd &&
					grep -q "@uffdshim\.$h\$" /proc/net/unix && break 2
			done
			h=""
			sleep 0.05
		done
		[ -n "$h" ] && tg+=("$h")
	fi
	rl_ok 0 "$c: ready under uffd-record run --pause-ms $pause (pid $pid${h:+, handler pid $h})"
	if [ "$name" = scm_handoff ] && [ -z "$h" ]; then
		rl_ok 1 "$c: the handler process holds the uffd"
		rl_diag_file "$d/run.out"
	fi

	# start one tracker per target, and a watch of its threads
	for i in "${!tg[@]}"; do
		tk_track "$d/track.$i.out" "$d/chain.$i" "${tg[$i]}" --interval 100 --verify
		tpid[$i]=$TK_TPID
		tk_watch "${tg[$i]}" "$d/watch.$i"
		wpid[$i]=$TK_WPID
	done
	local started=0
	for i in "${!tg[@]}"; do
		tk_wait_epochs "$d/track.$i.out" 3 "${tpid[$i]}" || started=1
	done
	rl_ok $started "$c: uffd-record track --interval 100 --verify cuts epochs on ${tg[*]} while the demo runs" ||
		for i in "${!tg[@]}"; do rl_diag_file "$d/track.$i.out"; done

	# status --verify while tracking is active, one target after the other:
	# a verify holds its process's uffd operations (QUIESCE) and asks the
	# other processes' shims about uffds on its memory; two at once would
	# wait for each other (each shim serves one connection at a time).
	local src=0 s
	for i in "${!tg[@]}"; do
		"$REC" status "${tg[$i]}" --verify --timeout "$TK_STATUS_TIMEOUT" \
			>"$d/status.$i.out" 2>&1
		s=$?
		[ $s = 0 ] || src=1
		rl_note "status ${tg[$i]} --verify while tracked: exit $s ($(tail -n1 "$d/status.$i.out"))"
	done
	rl_ok $src "$c: uffd-record status PID --verify passes while tracking is active" ||
		for i in "${!tg[@]}"; do
			rl_diag "status ${tg[$i]} --verify --timeout $TK_STATUS_TIMEOUT:"
			rl_diag_file "$d/status.$i.out"
		done

	# a little more tracking, then stop the trackers while the demo works
	sleep 1
	local working=0
	tk_alive "$pid" || working=1
	[ -n "$hold" ] && grep -qE "^$name: pid [0-9]+ hold $hold\$" "$d/run.out" && working=1
	kill -INT "${tpid[@]}" 2>/dev/null
	local tok=0 vok
	for i in "${!tg[@]}"; do
		tk_reap "${tpid[$i]}"
		trc[$i]=$TK_RC
		tk_unwatch "${wpid[$i]}"
		vok=1
		grep -q '^verify: the chain matches the live memory' "$d/track.$i.out" && vok=0
		if [ "${trc[$i]}" != 0 ] || [ $vok != 0 ] || [ "$TK_HUNG" = 1 ]; then
			tok=1
			rl_diag "tracker of ${tg[$i]}: exit ${trc[$i]}$([ "$TK_HUNG" = 1 ] && echo ' (hung: killed after '"$TK_WAIT"'s)')"
			rl_diag_file "$d/track.$i.out"
		fi
		tk_epoch_summary "$d/track.$i.out" "tracker of ${tg[$i]}"
		rl_note "  $(grep '^verify:' "$d/track.$i.out")"
	done
	# stopped after the demo's work: not what this checks
	[ $working = 0 ] || { tok=1; rl_diag "the demo had finished its work before the SIGINT"; }
	rl_ok $tok "$c: SIGINT mid-run: the tracker takes a frozen last epoch, exits 0, 'verify: the chain matches the live memory'"

	# the epoch lines, and the modes of the demo's uffd ranges
	local mok=0 last shows=()
	for i in "${!tg[@]}"; do
		tk_epoch_lines_ok "$d/track.$i.out" || { mok=1; rl_diag "tracker of ${tg[$i]}: bad epoch lines"; rl_diag_file "$d/track.$i.out"; }
		last=$(tk_last_epoch "$d/chain.$i")
		"$REC" show "$last" >"$d/show.$i.out" 2>&1 || mok=1
		shows+=("$d/show.$i.out")
	done
	if python3 "$TK_HERE/modes.py" "$pid" "${shows[@]}" >"$d/modes.out" 2>&1; then
		:
	else
		mok=1
		rl_diag_file "$d/modes.out"
	fi
	while IFS= read -r s; do rl_note "  $s"; done <"$d/modes.out"
	rl_ok $mok "$c: epoch lines name the modes (N async, N sync, N all), the last is frozen; the demo's uffd ranges are tracked in their mode"

	# the chains are valid
	local cok=0
	for i in "${!tg[@]}"; do
		if ! "$RL_B/uffd-replay" check "$d/chain.$i" >"$d/check.$i.out" 2>&1 ||
			! grep -q 'OK: image chain' "$d/check.$i.out"; then
			cok=1
			rl_diag_file "$d/check.$i.out"
		fi
		rl_note "  $(head -n1 "$d/check.$i.out")"
	done
	rl_ok $cok "$c: uffd-replay check validates the chain$([ ${#tg[@]} -gt 1 ] && echo 's')"

	# nothing stuck in a fault while tracked
	local -a watches=()
	for i in "${!tg[@]}"; do watches+=("$d/watch.$i"); done
	note_stuck "$name" "$c: no thread of the demo blocked in one uffd fault for ${TK_STUCK}s or more while tracked" "${watches[@]}"

	# the demo finishes as usual
	[ -n "$hold" ] && rl_wait_line "$d/run.out" "^$name: pid [0-9]+ hold $hold\$" "$job" &&
		kill -USR1 "$pid" 2>/dev/null
	tk_reap "$job"
	[ "$TK_RC" = 0 ] && grep -qE "^$name: OK \(" "$d/run.out"
	rl_ok $? "$c: finishes: $(grep -E "^$name: (OK|FAIL|SKIP)" "$d/run.out" | cut -c1-120)" ||
		{ rl_diag "exit status $TK_RC"; rl_diag_file "$d/run.out"; }
}

# killed NAME PAUSE_MS: 6 tests
killed() {
	local name=$1 pause=$2
	local d="$RL_W/$name.killed" c="$name (tracker killed)" pid job tp
	mkdir -p "$d"
	rl_run "$d/run.out" "$name" --pause-ms "$pause" --hold end
	job=$RL_JOB
	if ! rl_wait_line "$d/run.out" "^$name: pid [0-9]+ ready\$" "$job"; then
		rl_ok 1 "$c: ready under uffd-record run"
		rl_diag_file "$d/run.out"
		rl_skip 5 "$c: never ready"
		kill -TERM "$job" 2>/dev/null; wait "$job" 2>/dev/null
		return
	fi
	pid=$(rl_line_pid "$d/run.out" "^$name: pid [0-9]+ ready\$")
	tk_track "$d/track.out" "$d/chain" "$pid" --interval 100
	tp=$TK_TPID
	tk_wait_epochs "$d/track.out" 5 "$tp" && tk_alive "$tp"
	rl_ok $? "$c: tracked (pid $pid, $(tk_uw_count "$pid") VMAs registered WP (uw) while tracked)" ||
		rl_diag_file "$d/track.out"
	kill -KILL "$tp" 2>/dev/null
	{ tk_reap "$tp"; } 2>/dev/null # no "Killed" job notice
	rl_note "tracker killed after $(tk_epochs "$d/track.out") epochs (exit $TK_RC); last: $(grep '^epoch' "$d/track.out" | tail -n1)"
	tk_watch "$pid" "$d/watch"
	local wpid=$TK_WPID

	# the shim releases everything (it watches the monitor's pidfd): poll
	# for up to 3 s; status --verify compares the demo's own WP pages too
	local i wrc=1
	for ((i = 0; i < 30; i++)); do
		if tk_wpcheck "$pid" "$d/wpcheck.out" &&
			"$REC" status "$pid" --verify >"$d/verify0.out" 2>&1; then
			wrc=0
			break
		fi
		sleep 0.1
	done
	rl_ok $wrc "$c: after $((i / 10)).$((i % 10))s, status --verify passes and nothing is write-protected outside the demo's own WP ranges ($(tail -n1 "$d/wpcheck.out" | cut -c1-100))" ||
		{ rl_diag_file "$d/wpcheck.out"; rl_diag_file "$d/verify0.out"; }

	# the demo goes on to the end of its work
	local erc=0
	rl_wait_line "$d/run.out" "^$name: pid [0-9]+ hold end\$" "$job" || erc=1
	tk_unwatch "$wpid"
	rl_ok $erc "$c: the demo keeps running and reaches the end of its work" || rl_diag_file "$d/run.out"
	note_stuck "$name-after-kill" "$c: no thread blocked in one uffd fault for ${TK_STUCK}s or more after the kill" "$d/watch"

	# at its end: verify, no stray protection left
	local vrc
	"$REC" status "$pid" --verify >"$d/verify.out" 2>&1
	vrc=$?
	tk_wpcheck "$pid" "$d/wpcheck2.out" || vrc=1
	rl_ok $vrc "$c: at its end, status --verify passes and no stray uffd-wp ($(tail -n1 "$d/wpcheck2.out" | cut -c1-100))" ||
		{ rl_diag_file "$d/verify.out"; rl_diag_file "$d/wpcheck2.out"; }

	kill -USR1 "$pid" 2>/dev/null
	tk_reap "$job"
	[ "$TK_RC" = 0 ] && grep -qE "^$name: OK \(" "$d/run.out"
	rl_ok $? "$c: finishes: $(grep -E "^$name: (OK|FAIL|SKIP)" "$d/run.out" | cut -c1-120)" ||
		{ rl_diag "exit status $TK_RC"; rl_diag_file "$d/run.out"; }
}

# Each demo's uffd work lasts ~7 s at these pauses.
tracked lazy_loader 4 end     # MISSING on anonymous memory: "sync" (WP added)
tracked wp_snapshot 12 end    # its own WP: "sync"
tracked minor_shmem 9 end     # MINOR on shmem: not tracked (shared)
tracked scm_handoff 40 ""     # the owner ("all": its uffd is held by the handler) + the handler
killed lazy_loader 4
killed wp_snapshot 12

rl_done
