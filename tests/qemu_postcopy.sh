#!/bin/bash
# qemu_postcopy.sh - post-copy live migration of an unmodified QEMU (TCG)
# between two local QEMU processes, natively and with the destination QEMU
# under the shim (uffd-record run). The guest (tests/qemu/build-guest.sh)
# fills most of its RAM with a pattern and keeps checking it.
#
# During the post-copy phase (slowed by max-postcopy-bandwidth so that there
# is a window of several seconds) the destination's guest RAM is registered
# MISSING with its uffd; in the shim run "uffd-record status PID --verify"
# must exit 0 then, and again after the migration.
#
# TAP. Exit 77 (SKIP) without QEMU or when the guest cannot be built; only
# the native part runs while build/libuffdshim.so or build/uffd-record is
# missing.
# shellcheck source=tests/qemu/qemu-lib.sh
. "$(dirname "$0")/qemu/qemu-lib.sh"

# Post-copy bandwidth: ~190 MiB of guest RAM left at 24 MiB/s gives a
# window of ~7 s, leaving room for the verify runs.
POSTCOPY_BW=${UFFDSHIM_POSTCOPY_BW:-$((24 * 1024 * 1024))}
PRECOPY_BW=$((32 * 1024 * 1024))
PRECOPY_SECS=1

ql_setup "${UFFDSHIM_QEMU_DEADLINE:-300}"

MODES=(native)
if ql_have_shim; then
    MODES+=(shim)
else
    ql_diag "build/libuffdshim.so or build/uffd-record missing: native run only"
fi
N=0
for m in "${MODES[@]}"; do
    if [ "$m" = native ]; then N=$((N + 4)); else N=$((N + 6)); fi
done
ql_plan "$N"
ql_diag "guest: $(cat "$QL_GUEST_DIR/kernel-package"), ${QL_MEM_MB} MiB, $QEMU $($QEMU --version | head -n1)"

run_once() {
    local mode=$1 src=src-$1 dst=dst-$1 t0 tpc st rc n
    local w=$QL_WORK sock=$QL_WORK/mig-$1.sock
    ql_diag "=== post-copy, destination $mode ==="
    t0=$(ql_now)

    # 1. source boots and its guest passes one memory check
    rc=1
    if ql_qemu_start "$src" native &&
       ql_wait_serial "$src" 'GUEST: .*CHECK pass=[0-9]+ .* OK' 1 120; then rc=0; fi
    ql_ok $rc "$mode: source guest booted and its memory check passed"
    ql_diag "$src: guest ready after $(ql_since "$t0")s: $(grep -a 'READY' "$w/$src.serial" | tr -d '\r')"
    [ $rc = 0 ] || { ql_dump "$src"; return 1; }

    # 2. destination waits for the incoming migration
    if ! ql_qemu_start "$dst" "$mode" -incoming "unix:$sock"; then
        ql_dump "$dst"; return 1
    fi
    for q in "$src" "$dst"; do
        qmp "$w/$q.qmp" migrate-set-capabilities \
            '{"capabilities":[{"capability":"postcopy-ram","state":true}]}' >/dev/null ||
            ql_diag "$q: migrate-set-capabilities failed"
    done
    qmp "$w/$src.qmp" migrate-set-parameters \
        "{\"max-bandwidth\":$PRECOPY_BW,\"max-postcopy-bandwidth\":$POSTCOPY_BW}" >/dev/null ||
        ql_diag "$src: migrate-set-parameters failed"

    # 3. migrate: a little pre-copy, then switch to post-copy
    qmp "$w/$src.qmp" migrate "{\"uri\":\"unix:$sock\"}" >/dev/null || ql_diag "migrate failed"
    st=$(ql_wait_status "$src" 20 active)
    sleep "$PRECOPY_SECS"
    qmp "$w/$src.qmp" migrate-start-postcopy >/dev/null || ql_diag "migrate-start-postcopy failed"
    st=$(ql_wait_status "$dst" 30 postcopy-active)
    tpc=$(ql_now)
    n=$(ql_uffd_vmas "${QL_QEMU_PID[$dst]}" um)
    ql_diag "$dst: status $st, $n VMAs registered MISSING (um) at post-copy start"
    rc=1; [ "$st" = postcopy-active ] && [ "$n" -gt 0 ] && rc=0
    ql_ok $rc "$mode: migration entered post-copy with guest RAM registered on the destination"

    # 4. shim: verify the model while the RAM is registered
    if [ "$mode" = shim ]; then
        local vrc=0 still
        ql_verify "$dst" "post-copy start" || vrc=1
        sleep 1
        n=$(ql_uffd_vmas "${QL_QEMU_PID[$dst]}" um)
        ql_verify "$dst" "post-copy, $(ql_since "$tpc")s in, $n um VMAs" || vrc=1
        still=$(QMP_TIMEOUT=5 qmp "$w/$src.qmp" query-migrate "" status)
        ql_diag "source status after verify: $still ($(ql_since "$tpc")s after post-copy start)"
        [ "$still" = postcopy-active ] || ql_diag "WARNING: post-copy ended before the verify runs finished"
        ql_ok $vrc "$mode: uffd-record status --verify exits 0 during post-copy"
    fi

    # 5. migration completes
    st=$(ql_wait_status "$src" 120 completed)
    ql_diag "$src: status $st, post-copy phase lasted ~$(ql_since "$tpc")s; $(qmp "$w/$src.qmp" query-migrate "" ram |
        python3 -c 'import json,sys; r=json.load(sys.stdin) or {}; print("ram transferred %d MiB, %d pages, postcopy-requests %d" % (r.get("transferred",0)>>20, r.get("normal",0), r.get("postcopy-requests",0)))' 2>/dev/null)"
    rc=1; [ "$st" = completed ] && rc=0
    ql_ok $rc "$mode: source reports migration completed"

    # 6. destination runs and the guest's memory is intact
    rc=1
    local rs
    rs=$(ql_run_state "$dst")
    if [ "$rs" = running ] &&
       ql_wait_serial "$dst" 'GUEST: .*CHECK pass=[0-9]+ .* OK' 2 90 &&
       [ "$(ql_serial_count "$dst" 'FAIL|MISMATCH|Kernel panic|Oops')" = 0 ]; then
        rc=0
    fi
    ql_diag "$dst: run state $rs, $(ql_serial_count "$dst" 'CHECK.* OK') checks OK, $(ql_serial_count "$dst" 'FAIL|MISMATCH') bad; last: $(grep -a 'GUEST:' "$w/$dst.serial" | tail -n1 | tr -d '\r')"
    ql_ok $rc "$mode: guest runs on the destination and its memory check passes"
    [ $rc = 0 ] || { ql_dump "$src"; ql_dump "$dst"; }

    # 7. shim: verify again once the RAM is unregistered
    if [ "$mode" = shim ]; then
        n=$(ql_uffd_vmas "${QL_QEMU_PID[$dst]}" um)
        ql_diag "$dst: $n VMAs registered MISSING after migration"
        rc=0; ql_verify "$dst" "after migration" || rc=1
        ql_ok $rc "$mode: uffd-record status --verify exits 0 after migration"
    fi

    ql_qemu_quit "$src"
    ql_qemu_quit "$dst"
    [ "$mode" = shim ] && ql_diag "uffd-record run exited ${QL_WRAP_RC[$dst]:-?}; its output:" &&
        ql_diag "$(tail -n 20 "$w/$dst.out" | sed 's/^/  /')"
    ql_diag "$mode run took $(ql_since "$t0")s"
    return 0
}

for m in "${MODES[@]}"; do
    base=$QL_N
    run_once "$m"
    ql_stop_all
    # A run that stopped early leaves assertions unreported: they fail.
    want=4; [ "$m" = shim ] && want=6
    while [ "$QL_N" -lt $((base + want)) ]; do ql_ok 1 "$m: not reached (an earlier step failed)"; done
done
ql_finish
