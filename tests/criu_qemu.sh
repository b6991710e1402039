#!/bin/bash
# criu_qemu.sh - CRIU checkpoint/restore of an unmodified QEMU (TCG) under
# the shim in the middle of a background snapshot, with the uffdshim CRIU
# plugin (build/criu/uffdshim_criu.so).  TAP.
#
#   1. QEMU runs under "uffd-record run --" and its guest passes a memory
#      check;
#   2. a background snapshot (uffd-WP on guest RAM) is started to an "exec:"
#      URI whose writer (sh + throttle.py, QEMU's children) copies the stream
#      to FILE at SNAP_BW, so that the RAM stays write-protected for a while;
#   3. criu dump -t QEMU --shell-job --file-locks --libdir build/criu dumps
#      QEMU with its writer (the pipe between them is inside the dump) while
#      the snapshot is active; the processes are then gone;
#   4. criu restore -d brings them back;
#   5. "uffd-record status QEMU --verify" exits 0 right after the restore and
#      the RAM is still registered for WP;
#   6. the smaps uffd flags and pagemap uffd-wp/present bits of the
#      registered ranges after the restore (before the tasks run) equal the
#      dump's (criu_uffd_snap from an action script);
#   7. the snapshot completes (query-migrate: completed);
#   8. the restored guest keeps running and passing its memory check;
#   9. the snapshot FILE loads in a new QEMU (-incoming "exec:cat FILE"),
#      whose guest runs and passes its memory check.
#
# Skips (exit 77, "1..0 # SKIP reason") without root, CRIU or a passing
# `criu check` ($CRIU, else criu on PATH), QEMU, the guest, or the shim.
# Env: UFFDSHIM_SNAPSHOT_BW (bytes/s, default 16 MiB/s), UFFDSHIM_CRIU_DUMP_AFTER
# (seconds into the snapshot, default 2), UFFDSHIM_QEMU_DEADLINE (default
# 400 s), UFFDSHIM_KEEP=1 keeps the work dir (images, logs).
# shellcheck source=tests/qemu/qemu-lib.sh
. "$(dirname "$0")/qemu/qemu-lib.sh"
# shellcheck source=tests/criu_lib.sh
. "$(dirname "$0")/criu_lib.sh"
# shellcheck source=tests/qemu/criu-qemu-lib.sh
. "$(dirname "$0")/qemu/criu-qemu-lib.sh"

# ~220 MiB of snapshot at 16 MiB/s: a write-protect window of ~14 s.
SNAP_BW=${UFFDSHIM_SNAPSHOT_BW:-$((16 * 1024 * 1024))}
DUMP_AFTER=${UFFDSHIM_CRIU_DUMP_AFTER:-2}
OKRE='GUEST: .*CHECK pass=[0-9]+ .* OK'
BADRE='FAIL|MISMATCH|Kernel panic|Oops'

cq_setup "${UFFDSHIM_QEMU_DEADLINE:-400}"
N=9
ql_plan $N
ql_diag "guest: $(cat "$QL_GUEST_DIR/kernel-package"), ${QL_MEM_MB} MiB, $QEMU $($QEMU --version | head -n1)"
ql_diag "criu: $CL_CRIU $("$CL_CRIU" --version | head -n1), options ${CQ_CRIU_OPTS[*]}"

W=$QL_WORK
SRC=src
FILE=$W/snapshot.bin
D=$W/criu
mkdir -p "$D"

run() {
	local t0 tws td tr st rc n pid pids okc rs
	t0=$(ql_now)

	# 1. QEMU under the shim boots; its guest passes a memory check
	rc=1
	if cq_qemu_start "$SRC" shim && ql_wait_serial "$SRC" "$OKRE" 1 120; then rc=0; fi
	ql_ok $rc "QEMU under the shim: guest booted and its memory check passed"
	[ $rc = 0 ] || { ql_dump "$SRC"; return 1; }
	pid=${QL_QEMU_PID[$SRC]}
	ql_diag "$SRC: pid $pid ready after $(ql_since "$t0")s; fds: $(cq_fds "$pid")"

	# 2. background snapshot through the throttled exec: writer
	qmp "$W/$SRC.qmp" migrate-set-capabilities \
		'{"capabilities":[{"capability":"background-snapshot","state":true}]}' >/dev/null ||
		ql_diag "migrate-set-capabilities background-snapshot failed"
	qmp "$W/$SRC.qmp" migrate "{\"uri\":\"exec:python3 '$W/throttle.py' $SNAP_BW '$FILE'\"}" >/dev/null ||
		ql_diag "migrate failed"
	st=$(ql_wait_status "$SRC" 20 active completed)
	tws=$(ql_now)
	n=0
	for _ in $(seq 1 30); do
		n=$(ql_uffd_vmas "$pid" uw)
		[ "$n" -gt 0 ] && break
		sleep 0.1
	done
	rc=1; [ "$st" = active ] && [ "$n" -gt 0 ] && rc=0
	ql_ok $rc "background snapshot running, guest RAM write-protected through a uffd ($n uw VMAs)"
	[ $rc = 0 ] || { ql_dump "$SRC"; return 1; }
	sleep "$DUMP_AFTER"
	ql_verify "$SRC" "before the dump, $(ql_since "$tws")s into the snapshot"
	pids=$(cl_descendants "$pid" | xargs)
	ql_diag "tree to dump: $pids; QEMU fds: $(cq_fds "$pid")"
	ql_diag "snapshot file before the dump: $(stat -c %s "$FILE" 2>/dev/null) bytes, status $(QMP_TIMEOUT=5 qmp "$W/$SRC.qmp" query-migrate "" status)"

	# 3. criu dump of QEMU and its writer, mid-snapshot
	td=$(ql_now)
	cq_dump "$pid" "$D"
	rc=$?
	local dumped
	dumped=$(cl_dumped_pids "$D/img" | xargs)
	ql_diag "criu dump exit $rc in $(ql_since "$td")s; images $(du -sh "$D/img" 2>/dev/null | cut -f1); dumped pids: $dumped"
	ql_diag "$(cl_log_lines "$D/img/dump.log" | grep -E 'file id|Error|agrees|quiesced' | head -n 20)"
	ql_ok $rc "criu dump of QEMU's tree ($dumped) mid-snapshot with the plugin"
	if [ $rc != 0 ]; then
		ql_diag "$(grep -E 'Error|Can.t' "$D/img/dump.log" | head -n 20)" "$(tail -n 5 "$D/dump.out")"
		return 1
	fi

	# 4. restore once every dumped process is gone
	# shellcheck disable=SC2086
	cl_wait_gone 30 $dumped || ql_diag "dumped processes still alive: $dumped"
	# the wrapper (uffd-record run) ends with its child QEMU
	ql_qemu_quit_wrapper_only
	tr=$(ql_now)
	cq_restore "$D"
	rc=$?
	# shellcheck disable=SC2086
	cq_track $dumped
	ql_diag "criu restore exit $rc in $(ql_since "$tr")s"
	ql_diag "$(cl_log_lines "$D/img/restore.log" | grep -E 'uffdshim: (pid|file|uffd|restor)|Error' | head -n 20)"
	local alive=0 p
	for p in $dumped; do ql_alive "$p" && alive=$((alive + 1)); done
	[ $rc = 0 ] && [ "$alive" = "$(wc -w <<<"$dumped")" ] || rc=1
	ql_ok $rc "criu restore -d of QEMU's tree ($alive of $(wc -w <<<"$dumped") processes alive)"
	if [ $rc != 0 ]; then
		ql_diag "$(grep -E 'Error|Can.t' "$D/img/restore.log" | head -n 20)" "$(tail -n 5 "$D/restore.out")"
		return 1
	fi

	# 5. the shim's model agrees with the kernel right after the restore
	n=$(ql_uffd_vmas "$pid" uw)
	rc=0
	ql_verify "$SRC" "right after restore, $n uw VMAs" || rc=1
	[ "$n" -gt 0 ] || { rc=1; ql_diag "guest RAM no longer registered for WP after restore"; }
	ql_ok $rc "uffd-record status --verify exits 0 right after restore; RAM still WP-registered ($n uw VMAs)"
	ql_diag "restored QEMU fds: $(cq_fds "$pid"); status $(QMP_TIMEOUT=5 qmp "$W/$SRC.qmp" query-migrate "" status 2>&1)"

	# 6. kernel view at dump == kernel view at restore
	rc=0
	if [ ! -s "$D/before.txt" ] || [ ! -s "$D/after.txt" ] || ! grep -q ' vma ' "$D/before.txt"; then
		rc=1
		ql_diag "missing records: before.txt $(wc -l <"$D/before.txt" 2>/dev/null) lines, after.txt $(wc -l <"$D/after.txt" 2>/dev/null) lines"
	elif ! diff -u "$D/before.txt" "$D/after.txt" >"$D/snap.diff"; then
		rc=1
		ql_diag "$(head -n 30 "$D/snap.diff")"
	fi
	ql_ok $rc "smaps uffd flags and pagemap uffd-wp/present bits after restore equal the dump's ($(grep -c ' vma ' "$D/before.txt" 2>/dev/null) ranges, $(grep -c ' wp ' "$D/before.txt" 2>/dev/null) wp runs)"

	# 7. the snapshot completes
	st=$(ql_wait_status "$SRC" 180 completed)
	ql_diag "$SRC: status $st $(ql_since "$tws")s after the snapshot started ($(ql_since "$tr")s after the restore); file $(stat -c %s "$FILE" 2>/dev/null) bytes"
	rc=1; [ "$st" = completed ] && [ -s "$FILE" ] && rc=0
	ql_ok $rc "background snapshot completes after the restore"
	[ $rc = 0 ] || ql_dump "$SRC"

	# 8. the restored guest keeps running and checking its memory
	rc=1
	rs=$(ql_run_state "$SRC")
	okc=$(ql_serial_count "$SRC" "$OKRE")
	if [ "$rs" = running ] && ql_wait_serial "$SRC" "$OKRE" $((okc + 2)) 90 &&
		[ "$(ql_serial_count "$SRC" "$BADRE")" = 0 ]; then
		rc=0
	fi
	ql_diag "$SRC: run state $rs; last: $(grep -a 'GUEST:' "$W/$SRC.serial" | tail -n1 | tr -d '\r')"
	ql_ok $rc "restored guest keeps running and its memory check passes"
	[ $rc = 0 ] || ql_dump "$SRC"
	ql_verify "$SRC" "after the snapshot"
	QMP_TIMEOUT=3 qmp "$W/$SRC.qmp" quit >/dev/null 2>&1
	# shellcheck disable=SC2086
	cl_wait_gone 10 $dumped || ql_diag "restored processes still alive after quit"

	# 9. the snapshot loads in a new QEMU
	local tl ld=load
	tl=$(ql_now)
	rc=1
	if ql_qemu_start "$ld" native -incoming "exec:cat '$FILE'"; then
		st=$(ql_wait_status "$ld" 60 completed)
		rs=$(ql_run_state "$ld")
		ql_diag "$ld: incoming $st, run state $rs after $(ql_since "$tl")s"
		if [ "$st" = completed ] && ql_wait_serial "$ld" "$OKRE" 2 90 &&
			[ "$(ql_serial_count "$ld" "$BADRE")" = 0 ] &&
			[ "$(ql_run_state "$ld")" = running ]; then
			rc=0
		fi
		ql_diag "$ld: $(ql_serial_count "$ld" "$OKRE") checks OK; first: $(grep -a 'GUEST:' "$W/$ld.serial" | head -n1 | tr -d '\r'); last: $(grep -a 'GUEST:' "$W/$ld.serial" | tail -n1 | tr -d '\r')"
	fi
	ql_ok $rc "snapshot written across the checkpoint loads in a new QEMU; its guest runs and its memory check passes"
	[ $rc = 0 ] || ql_dump "$ld"
	ql_qemu_quit "$ld"
	ql_diag "run took $(ql_since "$t0")s"
}

# The uffd-record wrapper of SRC exits when the dump kills QEMU: reap it.
ql_qemu_quit_wrapper_only() {
	local wp=${QL_WRAP_PID[$SRC]:-} i
	[ -n "$wp" ] || return 0
	for i in $(seq 1 50); do ql_alive "$wp" || break; sleep 0.1; done
	ql_kill_pid "$wp"
	wait "$wp" 2>/dev/null
	ql_diag "uffd-record run (pid $wp) exited $? after the dump: $(tail -n 3 "$W/$SRC.out" | tr '\n' ' ')"
	ql_forget "$wp"
	QL_WRAP_PID[$SRC]=""
}

run
while [ "$QL_N" -lt "$N" ]; do
	ql_ok 1 "not reached (an earlier step failed)"
done
ql_finish
