#!/bin/bash
# replay_demos.sh - every demo checkpointed while it runs, then finished by a
# relaunch from the image (uffd-replay -D DIR -- build/demo/NAME).
#
# Held cases (exact): the demo runs under `uffd-record run` with --pause-ms 1
# and --hold POINT (demo/demo_common.h).  When it holds there, the kernel's
# view of its registered memory is taken (tests/replay/layout.py: smaps
# um/uw/ui per VMA, pagemap uffd-wp and present bits), it is dumped with
# `dump --kill --with-memory` and must be gone; `uffd-replay check` must
# accept the image.  Relaunched with --hold restored, it must say it was
# restored and hold before it changes anything; then `uffd-record status PID
# --verify` must exit 0 and the layout must be the one taken before the dump.
# Released, it must finish with "NAME: OK (restored ...)".  The points cover
# each demo's run after "ready": mid-run, after the work, inside its final
# checks, between and after its UNREGISTERs; for the multi-process demos,
# before the fork / handoff.  fork_events checkpointed after its mremap is a
# case the demo does not support: it must say so and exit 77.
#
# Free-running cases: the single-process demos run with --pause-ms 2 and no
# hold and are dumped a moment after "ready", wherever they are; the relaunch
# must verify and finish OK.
#
# TAP.  Exit 77 (SKIP) without the build, python3, or userfaultfd.
. "$(dirname "$0")/replay/lib.sh"

rl_setup

# held NAME POINT [ok|unsupported]: 7 tests.
held() {
	local name=$1 point=$2 expect=${3:-ok}
	local c="$name@$point" d="$RL_W/$1.$2" pid job lrc
	mkdir -p "$d"
	rl_run "$d/run.out" "$name" --pause-ms 1 --hold "$point"
	job=$RL_JOB
	if ! rl_held "$d/run.out" "$name" "$point" "$job"; then
		rl_ok 1 "$c: holds at $point under uffd-record run"
		rl_diag_file "$d/run.out"
		rl_skip 6 "$c: never held"
		return
	fi
	pid=$RL_PID
	rl_ok 0 "$c: holds at $point under uffd-record run (pid $pid)"
	rl_layout "$pid" "$d/before.layout"
	lrc=$?
	if ! rl_dump "$pid" "$d/img" "$d/dump.out" "$job"; then
		rl_ok 1 "$c: dump --kill --with-memory, and pid $pid is gone"
		rl_diag_file "$d/dump.out"
		rl_skip 5 "$c: no image"
		return
	fi
	rl_ok 0 "$c: dump --kill --with-memory, and pid $pid is gone"
	"$RL_B/uffd-replay" check "$d/img" >"$d/check.out" 2>&1
	rl_ok $? "$c: uffd-replay check accepts the image" || rl_diag_file "$d/check.out"

	rl_relaunch "$d/replay.out" "$d/img" "$name" --hold restored
	job=$RL_JOB
	if ! rl_held "$d/replay.out" "$name" restored "$job" ||
		! grep -qE "^$name: pid $RL_PID restored \(" "$d/replay.out"; then
		rl_ok 1 "$c: relaunched, says it was restored and holds"
		rl_diag_file "$d/replay.out"
		rl_skip 3 "$c: not restored"
		return
	fi
	pid=$RL_PID
	rl_ok 0 "$c: relaunched, says it was restored and holds (pid $pid)"
	"$RL_B/uffd-record" status "$pid" --verify >"$d/verify.out" 2>&1
	rl_ok $? "$c: uffd-record status --verify right after the restore" ||
		rl_diag_file "$d/verify.out"
	rl_layout "$pid" "$d/after.layout"
	if [ "$lrc" -eq 0 ] && diff -u "$d/before.layout" "$d/after.layout" >"$d/layout.diff"; then
		rl_ok 0 "$c: uffd flags, uffd-wp and present pages as before the dump" \
			"($(wc -l <"$d/before.layout") registered VMAs)"
	else
		rl_ok 1 "$c: uffd flags, uffd-wp and present pages as before the dump"
		rl_diag_file "$d/layout.diff"
	fi
	rl_finish "$pid" "$job"
	if [ "$expect" = ok ]; then
		[ "$RL_RC" -eq 0 ] && grep -qE "^$name: OK \(restored" "$d/replay.out"
		rl_ok $? "$c: finishes: $(tail -n1 "$d/replay.out" | cut -c1-110)" ||
			{ rl_diag "exit status $RL_RC"; rl_diag_file "$d/replay.out"; }
	else
		[ "$RL_RC" -eq 77 ] && grep -qE "^$name: SKIP .*not supported" "$d/replay.out"
		rl_ok $? "$c: says this checkpoint is not supported (exit 77)" ||
			{ rl_diag "exit status $RL_RC"; rl_diag_file "$d/replay.out"; }
	fi
}

# free NAME: 6 tests.
free_running() {
	local name=$1 c="$1 (free-running)" d="$RL_W/$1.free" pid job
	mkdir -p "$d"
	rl_run "$d/run.out" "$name" --pause-ms 2
	job=$RL_JOB
	if ! rl_wait_line "$d/run.out" "^$name: pid [0-9]+ ready\$" "$job"; then
		rl_ok 1 "$c: ready under uffd-record run"
		rl_diag_file "$d/run.out"
		rl_skip 5 "$c: never ready"
		return
	fi
	pid=$(rl_line_pid "$d/run.out" "^$name: pid [0-9]+ ready\$")
	rl_ok 0 "$c: ready under uffd-record run (pid $pid)"
	sleep 0.3 # where the checkpoint falls: any point will do
	if ! rl_dump "$pid" "$d/img" "$d/dump.out" "$job"; then
		rl_ok 1 "$c: dump --kill --with-memory mid-run, and pid $pid is gone"
		rl_diag_file "$d/dump.out"
		rl_diag_file "$d/run.out"
		rl_skip 4 "$c: no image"
		return
	fi
	rl_ok 0 "$c: dump --kill --with-memory mid-run, and pid $pid is gone"
	"$RL_B/uffd-replay" check "$d/img" >"$d/check.out" 2>&1
	rl_ok $? "$c: uffd-replay check accepts the image" || rl_diag_file "$d/check.out"
	rl_relaunch "$d/replay.out" "$d/img" "$name" --hold restored
	job=$RL_JOB
	if ! rl_held "$d/replay.out" "$name" restored "$job"; then
		rl_ok 1 "$c: relaunched, says it was restored and holds"
		rl_diag_file "$d/replay.out"
		rl_skip 2 "$c: not restored"
		return
	fi
	pid=$RL_PID
	rl_ok 0 "$c: relaunched, says it was restored and holds (pid $pid)"
	"$RL_B/uffd-record" status "$pid" --verify >"$d/verify.out" 2>&1
	rl_ok $? "$c: uffd-record status --verify right after the restore" ||
		rl_diag_file "$d/verify.out"
	rl_finish "$pid" "$job"
	[ "$RL_RC" -eq 0 ] && grep -qE "^$name: OK \(restored" "$d/replay.out"
	rl_ok $? "$c: finishes: $(grep -E "^$name: resuming" "$d/replay.out" | cut -c1-100)" ||
		{ rl_diag "exit status $RL_RC"; rl_diag_file "$d/replay.out"; }
}

for p in mid end unregistered; do held lazy_loader "$p"; done
for p in mid end checked unprotected half-unregistered unregistered; do held wp_snapshot "$p"; done
for p in mid end marked unregistered; do held minor_shmem "$p"; done
for p in mid unregistered; do held fork_events "$p"; done
held fork_events moved unsupported
for p in mid handed-off; do held scm_handoff "$p"; done
for n in lazy_loader wp_snapshot minor_shmem; do free_running "$n"; done

rl_done
