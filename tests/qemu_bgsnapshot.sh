#!/bin/bash
# qemu_bgsnapshot.sh - background snapshot of an unmodified QEMU (TCG),
# natively and with the snapshotted QEMU under the shim (uffd-record run).
#
# The source saves itself with the background-snapshot capability to an
# "exec:" URI writing FILE (QEMU 7.2 has no file: URI): its guest RAM stays
# write-protected through a uffd while the snapshot runs. QEMU 7.2 ignores
# max-bandwidth for background snapshots, so the exec: command is a reader
# throttled to SNAP_BW, which gives a window of several seconds; in the shim
# run "uffd-record status PID --verify" must exit 0 then, and again after
# the snapshot. The snapshot is then loaded in a new QEMU (-incoming
# "exec:cat FILE") whose guest must run and pass its memory check.
#
# TAP. Exit 77 (SKIP) without QEMU or when the guest cannot be built; only
# the native part runs while build/libuffdshim.so or build/uffd-record is
# missing.
# shellcheck source=tests/qemu/qemu-lib.sh
. "$(dirname "$0")/qemu/qemu-lib.sh"

# ~220 MiB of snapshot at 32 MiB/s: a write-protect window of ~7 s.
SNAP_BW=${UFFDSHIM_SNAPSHOT_BW:-$((32 * 1024 * 1024))}

ql_setup "${UFFDSHIM_QEMU_DEADLINE:-300}"

MODES=(native)
if ql_have_shim; then
    MODES+=(shim)
else
    ql_diag "build/libuffdshim.so or build/uffd-record missing: native run only"
fi
per_mode() { if [ "$1" = native ]; then echo 5; else echo 7; fi; }
N=0
for m in "${MODES[@]}"; do N=$((N + $(per_mode "$m"))); done
ql_plan "$N"
ql_diag "guest: $(cat "$QL_GUEST_DIR/kernel-package"), ${QL_MEM_MB} MiB, $QEMU $($QEMU --version | head -n1)"

OKRE='GUEST: .*CHECK pass=[0-9]+ .* OK'

run_once() {
    local mode=$1 src=snap-$1 ld=load-$1 t0 tws st rc n ok0 okc
    local w=$QL_WORK file=$QL_WORK/snapshot-$1.bin
    ql_diag "=== background snapshot, snapshotted QEMU $mode ==="
    t0=$(ql_now)

    # 1. the QEMU to snapshot boots and its guest passes one memory check
    rc=1
    if ql_qemu_start "$src" "$mode" && ql_wait_serial "$src" "$OKRE" 1 120; then rc=0; fi
    ql_ok $rc "$mode: guest booted and its memory check passed"
    ql_diag "$src: guest ready after $(ql_since "$t0")s: $(grep -a 'READY' "$w/$src.serial" | tr -d '\r')"
    [ $rc = 0 ] || { ql_dump "$src"; return 1; }

    # 2. background snapshot into a file
    qmp "$w/$src.qmp" migrate-set-capabilities \
        '{"capabilities":[{"capability":"background-snapshot","state":true}]}' >/dev/null ||
        ql_diag "$src: migrate-set-capabilities background-snapshot failed"
    ok0=$(ql_serial_count "$src" "$OKRE")
    qmp "$w/$src.qmp" migrate "{\"uri\":\"exec:python3 '$w/throttle.py' $SNAP_BW '$file'\"}" >/dev/null ||
        ql_diag "migrate failed"
    st=$(ql_wait_status "$src" 20 active completed)
    tws=$(ql_now)
    # the bg_snapshot thread write-protects the RAM right after it starts
    n=0
    for _ in $(seq 1 30); do
        n=$(ql_uffd_vmas "${QL_QEMU_PID[$src]}" uw)
        [ "$n" -gt 0 ] && break
        sleep 0.1
    done
    ql_diag "$src: status $st, $n VMAs registered WP (uw) during the snapshot"
    rc=1; [ "$st" = active ] && [ "$n" -gt 0 ] && rc=0
    ql_ok $rc "$mode: snapshot running with guest RAM write-protected through a uffd"

    # 3. shim: verify the model while the WP registration is active
    if [ "$mode" = shim ]; then
        local vrc=0 still
        ql_verify "$src" "snapshot start, $n uw VMAs" || vrc=1
        sleep 1
        n=$(ql_uffd_vmas "${QL_QEMU_PID[$src]}" uw)
        ql_verify "$src" "snapshot, $(ql_since "$tws")s in, $n uw VMAs" || vrc=1
        still=$(QMP_TIMEOUT=5 qmp "$w/$src.qmp" query-migrate "" status)
        ql_diag "status after verify: $still ($(ql_since "$tws")s after the snapshot started)"
        [ "$still" = active ] || ql_diag "WARNING: the snapshot ended before the verify runs finished"
        ql_ok $vrc "$mode: uffd-record status --verify exits 0 during the snapshot"
    fi

    # 4. the snapshot completes
    st=$(ql_wait_status "$src" 120 completed)
    ql_diag "$src: status $st after ~$(ql_since "$tws")s; file $(stat -c %s "$file" 2>/dev/null) bytes; $(qmp "$w/$src.qmp" query-migrate "" ram |
        python3 -c 'import json,sys; r=json.load(sys.stdin) or {}; print("ram transferred %d MiB, %d normal pages, %d duplicate" % (r.get("transferred",0)>>20, r.get("normal",0), r.get("duplicate",0)))' 2>/dev/null)"
    rc=1; [ "$st" = completed ] && [ -s "$file" ] && rc=0
    ql_ok $rc "$mode: background snapshot completed"

    # 5. the snapshotted guest keeps running and checking its memory
    rc=1
    local rs
    rs=$(ql_run_state "$src")
    # two more OK lines: at least one whole pass after the snapshot completed
    okc=$(ql_serial_count "$src" "$OKRE")
    if [ "$rs" = running ] && ql_wait_serial "$src" "$OKRE" $((okc + 2)) 90 &&
       [ "$(ql_serial_count "$src" 'FAIL|MISMATCH|Kernel panic|Oops')" = 0 ]; then
        rc=0
    fi
    ql_diag "$src: run state $rs; checks OK: $((okc - ok0)) during the snapshot, $(($(ql_serial_count "$src" "$OKRE") - okc)) after it; last: $(grep -a 'GUEST:' "$w/$src.serial" | tail -n1 | tr -d '\r')"
    ql_ok $rc "$mode: guest keeps running and its memory check passes after the snapshot"

    # 6. shim: verify again after the snapshot (RAM unregistered)
    if [ "$mode" = shim ]; then
        n=$(ql_uffd_vmas "${QL_QEMU_PID[$src]}" uw)
        ql_diag "$src: $n VMAs registered WP after the snapshot"
        rc=0; ql_verify "$src" "after the snapshot" || rc=1
        ql_ok $rc "$mode: uffd-record status --verify exits 0 after the snapshot"
    fi
    ql_qemu_quit "$src"
    [ "$mode" = shim ] && ql_diag "uffd-record run exited ${QL_WRAP_RC[$src]:-?}; its output:" &&
        ql_diag "$(tail -n 20 "$w/$src.out" | sed 's/^/  /')"
    [ $rc = 0 ] || ql_dump "$src"

    # 7. load the snapshot in a new QEMU: the guest resumes and checks memory
    local tl
    tl=$(ql_now)
    rc=1
    if ql_qemu_start "$ld" native -incoming "exec:cat '$file'"; then
        st=$(ql_wait_status "$ld" 60 completed)
        rs=$(ql_run_state "$ld")
        ql_diag "$ld: incoming $st, run state $rs after $(ql_since "$tl")s"
        if [ "$st" = completed ] && ql_wait_serial "$ld" "$OKRE" 2 90 &&
           [ "$(ql_serial_count "$ld" 'FAIL|MISMATCH|Kernel panic|Oops')" = 0 ] &&
           [ "$(ql_run_state "$ld")" = running ]; then
            rc=0
        fi
        ql_diag "$ld: $(ql_serial_count "$ld" "$OKRE") checks OK, $(ql_serial_count "$ld" 'FAIL|MISMATCH') bad; first: $(grep -a 'GUEST:' "$w/$ld.serial" | head -n1 | tr -d '\r'); last: $(grep -a 'GUEST:' "$w/$ld.serial" | tail -n1 | tr -d '\r')"
    fi
    ql_ok $rc "$mode: snapshot loads in a new QEMU; the guest runs and its memory check passes"
    [ $rc = 0 ] || ql_dump "$ld"
    ql_qemu_quit "$ld"
    rm -f "$file"
    ql_diag "$mode run took $(ql_since "$t0")s"
    return 0
}

for m in "${MODES[@]}"; do
    base=$QL_N
    run_once "$m"
    ql_stop_all
    # A run that stopped early leaves assertions unreported: they fail.
    while [ "$QL_N" -lt $((base + $(per_mode "$m"))) ]; do
        ql_ok 1 "$m: not reached (an earlier step failed)"
    done
done
ql_finish
