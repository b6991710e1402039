#!/bin/bash
# track_qemu.sh - dirty tracking (uffd-record track) of an unmodified QEMU
# (TCG) under the shim while QEMU itself uses userfaultfd on its guest RAM:
#
# (a) post-copy migration, tracking the DESTINATION: a native source, a
#     destination under `uffd-record run`; `uffd-record track QEMU_PID -D DIR
#     --interval 200 --verify` starts on the destination as soon as it waits
#     for the migration, so the epochs cover pre-copy (pages written into
#     guest RAM: the shim's own WP_ASYNC uffd), post-copy (the RAM registered
#     MISSING with QEMU's uffd, to which the shim adds WP: "sync", exact dirty
#     sets; no range may be tracked "all") and the guest running after it.
#     It is stopped (SIGINT: last epoch frozen, verify) once the
#     destination's guest has passed its memory check.
# (b) background snapshot, tracking the SOURCE: a QEMU under the shim is
#     tracked from before the snapshot starts (its RAM registered WP with
#     QEMU's own uffd: "sync") until its guest has passed its check after the
#     snapshot; the snapshot must then load in a new (native) QEMU whose guest
#     runs and passes its check.
#
# Asserted as in tests/qemu_postcopy.sh and tests/qemu_bgsnapshot.sh (whose
# library this uses): the migration / snapshot completes and the guests'
# memory checks pass; and the tracker exits 0 with "verify: the chain
# matches the live memory", and `uffd-replay check` accepts the chain.  The
# tracker's epoch lines (modes, dirty counts) and a watch of QEMU's threads
# blocked in uffd faults (tests/track/watch.py) are printed as diagnostics.
#
# TAP.  Exit 77 (SKIP) without QEMU, the guest, python3, or the shim build.
# shellcheck source=tests/qemu/qemu-lib.sh
. "$(dirname "$0")/qemu/qemu-lib.sh"
TQ_HERE=$(cd "$(dirname "$0")" && pwd)/track

POSTCOPY_BW=${UFFDSHIM_POSTCOPY_BW:-$((24 * 1024 * 1024))}
PRECOPY_BW=$((32 * 1024 * 1024))
PRECOPY_SECS=1
SNAP_BW=${UFFDSHIM_SNAPSHOT_BW:-$((32 * 1024 * 1024))}
INTERVAL=${UFFDSHIM_TRACK_INTERVAL:-200}
OKRE='GUEST: .*CHECK pass=[0-9]+ .* OK'
BADRE='FAIL|MISMATCH|Kernel panic|Oops'

ql_setup "${UFFDSHIM_QEMU_DEADLINE:-600}"
ql_have_shim || ql_skip_all "build/libuffdshim.so or build/uffd-record missing (run make)"
[ -x "$UFFDSHIM_BUILD/uffd-replay" ] || ql_skip_all "build/uffd-replay missing (run make)"
"$UFFDSHIM_BUILD/uffd-record" track --help 2>/dev/null | grep -q 'uffd-record track' ||
    ql_skip_all "$UFFDSHIM_BUILD/uffd-record has no track command"
PER_A=8
PER_B=7
ql_plan $((PER_A + PER_B))
ql_diag "guest: $(cat "$QL_GUEST_DIR/kernel-package"), ${QL_MEM_MB} MiB, $QEMU $($QEMU --version | head -n1)"

declare -A TQ_TPID TQ_WPID TQ_CHECKED
# tq_track NAME: start the tracker (and a fault watch) on QEMU NAME
tq_track() {
    local name=$1 pid=${QL_QEMU_PID[$1]}
    # TQ_TRACK_ARGS: more tracker options (e.g. --no-augment-missing), to investigate
    # shellcheck disable=SC2086
    "$UFFDSHIM_BUILD/uffd-record" track "$pid" -D "$QL_WORK/$name.chain" --interval "$INTERVAL" \
        --verify ${TQ_TRACK_ARGS:-} >"$QL_WORK/$name.track" 2>&1 </dev/null &
    TQ_TPID[$name]=$!
    QL_PIDS+=("$!")
    python3 "$TQ_HERE/watch.py" "$pid" "$QL_WORK/$name.watch" </dev/null >/dev/null 2>&1 &
    TQ_WPID[$name]=$!
    QL_PIDS+=("$!")
}
# tq_wait_socket NAME: wait (10 s at most) for the shim's control socket
tq_wait_socket() {
    local i
    for i in $(seq 1 100); do
        grep -q "@uffdshim\.${QL_QEMU_PID[$1]}\$" /proc/net/unix && return 0
        sleep 0.1
    done
    ql_diag "$1: no control socket @uffdshim.${QL_QEMU_PID[$1]} after 10 s"
    return 1
}
tq_epochs() { grep -c '^epoch [0-9]*:' "$QL_WORK/$1.track" 2>/dev/null || true; }
# tq_wait_epochs NAME N TIMEOUT
tq_wait_epochs() {
    local end=$(( $(date +%s) + $3 ))
    while [ "$(tq_epochs "$1")" -lt "$2" ]; do
        ql_alive "${TQ_TPID[$1]}" || return 1
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}
# tq_epoch_mark NAME LABEL: note where in the epoch sequence an event falls
tq_epoch_mark() { ql_diag "$1: $2 during epoch $(( $(tq_epochs "$1") ))"; }
# tq_stop NAME: SIGINT the tracker, wait for it (at most 120 s: a frozen last
# epoch reads the whole guest RAM), print its epoch lines; returns 0 when it
# exited 0 and verified
tq_stop() {
    local name=$1 tp=${TQ_TPID[$1]} i rc hung=0 t0
    t0=$(ql_now)
    kill -INT "$tp" 2>/dev/null
    for i in $(seq 1 1200); do ql_alive "$tp" || break; sleep 0.1; done
    if ql_alive "$tp"; then hung=1; kill -KILL "$tp" 2>/dev/null; fi
    wait "$tp"
    rc=$?
    ql_forget "$tp"
    kill -TERM "${TQ_WPID[$name]}" 2>/dev/null
    wait "${TQ_WPID[$name]}" 2>/dev/null
    ql_forget "${TQ_WPID[$name]}"
    ql_diag "$name: tracker exit $rc$([ $hung = 1 ] && echo ' (HUNG: killed after 120 s)') $(ql_since "$t0")s after SIGINT; its output ($(tq_epochs "$name") epochs):"
    ql_diag "$(sed 's/^/  /' "$QL_WORK/$name.track")"
    ql_diag "$name: threads seen blocked in a uffd fault (watch.py; longest=seconds in one fault):"
    ql_diag "$(sed 's/^/  /' "$QL_WORK/$name.watch" 2>/dev/null)"
    [ $rc = 0 ] && [ $hung = 0 ] &&
        grep -q '^verify: the chain matches the live memory' "$QL_WORK/$name.track"
}
# tq_check NAME: uffd-replay check of the chain
tq_check() {
    local out rc
    out=$(timeout 300 "$UFFDSHIM_BUILD/uffd-replay" check "$QL_WORK/$1.chain" 2>&1)
    rc=$?
    ql_diag "uffd-replay check $1.chain: exit $rc, $(du -sh "$QL_WORK/$1.chain" 2>/dev/null | cut -f1); $(printf '%s\n' "$out" | head -n1)"
    [ $rc = 0 ] || ql_diag "$(printf '%s\n' "$out" | head -n 40)"
    [ $rc = 0 ] && printf '%s\n' "$out" | grep -q 'OK: image chain'
    TQ_CHECKED[$1]=$?
    return "${TQ_CHECKED[$1]}"
}

# tq_drop_chain NAME: remove the chain (GBs of guest RAM) unless it failed
# its check or UFFDSHIM_KEEP=1
tq_drop_chain() {
    if [ "${TQ_CHECKED[$1]:-1}" = 0 ] && [ "${UFFDSHIM_KEEP:-0}" != 1 ]; then
        rm -rf "$QL_WORK/$1.chain"
    else
        ql_diag "chain kept: $QL_WORK/$1.chain (the work dir is kept too)"
        UFFDSHIM_KEEP=1
    fi
}

# ---- (a) post-copy, destination tracked ----------------------------------
run_postcopy() {
    local src=pc-src dst=pc-dst t0 tpc st rc n rs
    local w=$QL_WORK sock=$QL_WORK/mig.sock
    ql_diag "=== (a) post-copy migration, destination under the shim and tracked ==="
    t0=$(ql_now)
    rc=1
    if ql_qemu_start "$src" native &&
       ql_wait_serial "$src" "$OKRE" 1 120; then rc=0; fi
    ql_ok $rc "postcopy: source guest booted and its memory check passed"
    [ $rc = 0 ] || { ql_dump "$src"; return 1; }

    if ! ql_qemu_start "$dst" shim -incoming "unix:$sock"; then
        ql_dump "$dst"; return 1
    fi
    for q in "$src" "$dst"; do
        qmp "$w/$q.qmp" migrate-set-capabilities \
            '{"capabilities":[{"capability":"postcopy-ram","state":true}]}' >/dev/null ||
            ql_diag "$q: migrate-set-capabilities failed"
    done
    # The shim opens its control socket at the process's first uffd: QEMU
    # makes one when postcopy-ram is set (its host support probe).
    tq_wait_socket "$dst"
    tq_track "$dst"
    rc=1; tq_wait_epochs "$dst" 2 30 && rc=0
    ql_ok $rc "postcopy: uffd-record track --interval $INTERVAL --verify cuts epochs on the destination QEMU (pid ${QL_QEMU_PID[$dst]}) waiting for the migration"
    [ $rc = 0 ] || { ql_diag "$(cat "$w/$dst.track")"; return 1; }
    qmp "$w/$src.qmp" migrate-set-parameters \
        "{\"max-bandwidth\":$PRECOPY_BW,\"max-postcopy-bandwidth\":$POSTCOPY_BW}" >/dev/null ||
        ql_diag "$src: migrate-set-parameters failed"
    tq_epoch_mark "$dst" "migrate"
    qmp "$w/$src.qmp" migrate "{\"uri\":\"unix:$sock\"}" >/dev/null || ql_diag "migrate failed"
    st=$(ql_wait_status "$src" 20 active)
    sleep "$PRECOPY_SECS"
    tq_epoch_mark "$dst" "migrate-start-postcopy"
    qmp "$w/$src.qmp" migrate-start-postcopy >/dev/null || ql_diag "migrate-start-postcopy failed"
    st=$(ql_wait_status "$dst" 30 postcopy-active)
    tpc=$(ql_now)
    n=$(ql_uffd_vmas "${QL_QEMU_PID[$dst]}" um)
    ql_diag "$dst: status $st, $n VMAs registered MISSING (um) at post-copy start; tracker at epoch $(tq_epochs "$dst")"
    rc=1; [ "$st" = postcopy-active ] && [ "$n" -gt 0 ] && rc=0
    ql_ok $rc "postcopy: migration entered post-copy with guest RAM registered on the tracked destination"

    st=$(ql_wait_status "$src" 180 completed)
    tq_epoch_mark "$dst" "migration $st"
    ql_diag "$src: status $st, post-copy phase lasted ~$(ql_since "$tpc")s; $(qmp "$w/$src.qmp" query-migrate "" ram |
        python3 -c 'import json,sys; r=json.load(sys.stdin) or {}; print("ram transferred %d MiB, %d pages, postcopy-requests %d" % (r.get("transferred",0)>>20, r.get("normal",0), r.get("postcopy-requests",0)))' 2>/dev/null)"
    rc=1; [ "$st" = completed ] && rc=0
    ql_ok $rc "postcopy: source reports migration completed"

    rc=1
    rs=$(ql_run_state "$dst")
    if [ "$rs" = running ] &&
       ql_wait_serial "$dst" "$OKRE" 2 120 &&
       [ "$(ql_serial_count "$dst" "$BADRE")" = 0 ]; then
        rc=0
    fi
    ql_diag "$dst: run state $rs, $(ql_serial_count "$dst" 'CHECK.* OK') checks OK, $(ql_serial_count "$dst" 'FAIL|MISMATCH') bad; last: $(grep -a 'GUEST:' "$w/$dst.serial" | tail -n1 | tr -d '\r')"
    ql_ok $rc "postcopy: guest runs on the tracked destination and its memory check passes"
    [ $rc = 0 ] || { ql_dump "$src"; ql_dump "$dst"; }

    rc=1; tq_stop "$dst" && rc=0
    ql_ok $rc "postcopy: tracker stopped (SIGINT) exits 0 after a frozen last epoch: 'verify: the chain matches the live memory'"
    # Exact: QEMU's MISSING-only RAM registration is tracked "sync" (WP
    # added), never "all" (every present page each epoch).
    local nsync nall
    nsync=$(grep -c '^epoch [0-9]*:.* [1-9][0-9]* sync' "$w/$dst.track")
    nall=$(grep -c '^epoch [0-9]*:.* [1-9][0-9]* all)' "$w/$dst.track")
    ql_diag "$dst: $nsync epochs with sync ranges, $nall with ranges tracked all"
    rc=1
    case " ${TQ_TRACK_ARGS:-} " in
    *" --no-augment-missing "*) rc=0 ;;
    *) [ "$nsync" -gt 0 ] && [ "$nall" = 0 ] && rc=0 ;;
    esac
    ql_ok $rc "postcopy: the destination's RAM registered MISSING by QEMU is tracked with WP through QEMU's uffd (sync: exact dirty sets), no range saved whole each epoch (all)"
    rc=1; tq_check "$dst" && rc=0
    ql_ok $rc "postcopy: uffd-replay check validates the destination's chain"

    ql_qemu_quit "$src"
    ql_qemu_quit "$dst"
    ql_diag "uffd-record run exited ${QL_WRAP_RC[$dst]:-?}; its output:"
    ql_diag "$(tail -n 20 "$w/$dst.out" | sed 's/^/  /')"
    tq_drop_chain "$dst"
    ql_diag "(a) took $(ql_since "$t0")s"
}

# ---- (b) background snapshot, source tracked -----------------------------
run_bgsnapshot() {
    local src=bg-src ld=bg-load t0 tws st rc n ok0 okc rs tl
    local w=$QL_WORK file=$QL_WORK/snapshot.bin
    ql_diag "=== (b) background snapshot, snapshotted QEMU under the shim and tracked ==="
    t0=$(ql_now)
    rc=1
    if ql_qemu_start "$src" shim && ql_wait_serial "$src" "$OKRE" 1 120; then rc=0; fi
    ql_ok $rc "bgsnapshot: guest booted under the shim and its memory check passed"
    [ $rc = 0 ] || { ql_dump "$src"; return 1; }

    qmp "$w/$src.qmp" migrate-set-capabilities \
        '{"capabilities":[{"capability":"background-snapshot","state":true}]}' >/dev/null ||
        ql_diag "$src: migrate-set-capabilities background-snapshot failed"
    # The shim opens its control socket at the process's first uffd: QEMU
    # makes one when background-snapshot is set (its WP support probe).
    tq_wait_socket "$src"
    tq_track "$src"
    rc=1; tq_wait_epochs "$src" 2 60 && rc=0
    ql_ok $rc "bgsnapshot: uffd-record track --interval $INTERVAL --verify cuts epochs on QEMU (pid ${QL_QEMU_PID[$src]})"
    [ $rc = 0 ] || { ql_diag "$(cat "$w/$src.track")"; return 1; }
    ok0=$(ql_serial_count "$src" "$OKRE")
    tq_epoch_mark "$src" "migrate (background snapshot)"
    qmp "$w/$src.qmp" migrate "{\"uri\":\"exec:python3 '$w/throttle.py' $SNAP_BW '$file'\"}" >/dev/null ||
        ql_diag "migrate failed"
    st=$(ql_wait_status "$src" 20 active completed)
    tws=$(ql_now)
    n=0
    for _ in $(seq 1 30); do
        n=$(ql_uffd_vmas "${QL_QEMU_PID[$src]}" uw)
        [ "$n" -gt 0 ] && break
        sleep 0.1
    done
    ql_diag "$src: status $st, $n VMAs registered WP (uw) during the snapshot (the tracker's included)"

    st=$(ql_wait_status "$src" 180 completed)
    tq_epoch_mark "$src" "snapshot $st"
    ql_diag "$src: status $st after ~$(ql_since "$tws")s; file $(stat -c %s "$file" 2>/dev/null) bytes; $(qmp "$w/$src.qmp" query-migrate "" ram |
        python3 -c 'import json,sys; r=json.load(sys.stdin) or {}; print("ram transferred %d MiB, %d normal pages, %d duplicate" % (r.get("transferred",0)>>20, r.get("normal",0), r.get("duplicate",0)))' 2>/dev/null)"
    rc=1; [ "$st" = completed ] && [ -s "$file" ] && rc=0
    ql_ok $rc "bgsnapshot: background snapshot of the tracked QEMU completed"

    rc=1
    rs=$(ql_run_state "$src")
    okc=$(ql_serial_count "$src" "$OKRE")
    if [ "$rs" = running ] && ql_wait_serial "$src" "$OKRE" $((okc + 2)) 120 &&
       [ "$(ql_serial_count "$src" "$BADRE")" = 0 ]; then
        rc=0
    fi
    ql_diag "$src: run state $rs; checks OK: $((okc - ok0)) during the snapshot, $(($(ql_serial_count "$src" "$OKRE") - okc)) after it; last: $(grep -a 'GUEST:' "$w/$src.serial" | tail -n1 | tr -d '\r')"
    ql_ok $rc "bgsnapshot: guest keeps running and its memory check passes after the snapshot"
    [ $rc = 0 ] || ql_dump "$src"

    rc=1; tq_stop "$src" && rc=0
    ql_ok $rc "bgsnapshot: tracker stopped (SIGINT) exits 0 after a frozen last epoch: 'verify: the chain matches the live memory'"
    rc=1; tq_check "$src" && rc=0
    ql_ok $rc "bgsnapshot: uffd-replay check validates the chain"
    ql_qemu_quit "$src"
    ql_diag "uffd-record run exited ${QL_WRAP_RC[$src]:-?}; its output:"
    ql_diag "$(tail -n 20 "$w/$src.out" | sed 's/^/  /')"
    tq_drop_chain "$src"

    tl=$(ql_now)
    rc=1
    if ql_qemu_start "$ld" native -incoming "exec:cat '$file'"; then
        st=$(ql_wait_status "$ld" 60 completed)
        rs=$(ql_run_state "$ld")
        ql_diag "$ld: incoming $st, run state $rs after $(ql_since "$tl")s"
        if [ "$st" = completed ] && ql_wait_serial "$ld" "$OKRE" 2 90 &&
           [ "$(ql_serial_count "$ld" "$BADRE")" = 0 ] &&
           [ "$(ql_run_state "$ld")" = running ]; then
            rc=0
        fi
        ql_diag "$ld: $(ql_serial_count "$ld" "$OKRE") checks OK, $(ql_serial_count "$ld" 'FAIL|MISMATCH') bad; last: $(grep -a 'GUEST:' "$w/$ld.serial" | tail -n1 | tr -d '\r')"
    fi
    ql_ok $rc "bgsnapshot: the snapshot taken while tracked loads in a new QEMU; its guest runs and its memory check passes"
    [ $rc = 0 ] || ql_dump "$ld"
    ql_qemu_quit "$ld"
    rm -f "$file"
    ql_diag "(b) took $(ql_since "$t0")s"
}

base=$QL_N
run_postcopy
ql_stop_all
while [ "$QL_N" -lt $((base + PER_A)) ]; do ql_ok 1 "postcopy: not reached (an earlier step failed)"; done
base=$QL_N
run_bgsnapshot
ql_stop_all
while [ "$QL_N" -lt $((base + PER_B)) ]; do ql_ok 1 "bgsnapshot: not reached (an earlier step failed)"; done
ql_finish
