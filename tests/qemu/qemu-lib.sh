# qemu-lib.sh - shared shell functions for the QEMU tests (sourced by bash).
#
# Provides: TAP output (ql_plan, ql_ok, ql_diag), a work dir removed on exit,
# a watchdog that ends the test after a deadline, QEMU start/stop with every
# started process killed on exit, a tiny QMP client (python3, stdlib only),
# and helpers to wait on guest serial output and migration status.
#
# Env: UFFDSHIM_BUILD (build dir, default <repo>/build), UFFDSHIM_SRC (repo
# root), UFFDSHIM_KEEP=1 keeps the work dir, QEMU (default
# qemu-system-x86_64), UFFDSHIM_QEMU_STRACE=DIR runs every QEMU under strace
# (uffd-related syscalls) writing DIR/NAME.strace, UFFDSHIM_QEMU_VERBOSE=1
# prints the whole "uffd-record status" output even when verify passes,
# UFFDSHIM_QEMU_TRACE=1 runs shimmed QEMUs with "uffd-record run --trace" and
# prints "uffd-record report" of the trace (diagnostics only).

QL_LIBDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${UFFDSHIM_SRC:=$(cd "$QL_LIBDIR/../.." && pwd)}"
: "${UFFDSHIM_BUILD:=$UFFDSHIM_SRC/build}"
: "${QEMU:=qemu-system-x86_64}"
QL_GUEST_DIR=$UFFDSHIM_BUILD/qemu-guest
QL_MEM_MB=256

QL_N=0            # assertions so far
QL_FAILED=0
QL_PIDS=()        # processes we started (wrapper pids and qemu pids)
QL_WORK=""
QL_WATCHDOG=""
QL_T0=$(date +%s.%N)

# ---- TAP -------------------------------------------------------------------
# Diagnostics go to stdout (TAP); since the last passing test they are also
# kept, and a failing test writes them to stderr, where a non-verbose prove
# (make check, CI) shows them, as it does every diagnostic after a failure.
QL_DIAGBUF=""
QL_LOUD=0
ql_diag() {
    local l
    while IFS= read -r l; do
        echo "# $l"
        if [ "$QL_LOUD" = 1 ]; then echo "# $l" >&2; else QL_DIAGBUF+="# $l"$'\n'; fi
    done <<<"$*"
}
ql_plan() { echo "1..$1"; }
# Skip the whole test. prove counts any non-zero exit as a failure, even
# with a "1..0 # SKIP" plan (exit 77 shows as "Non-zero exit status: 77",
# Result: FAIL); tests/tap-exec.sh, which make check uses, maps 77 to a pass. UFFDSHIM_SKIP_STATUS=0 for an
# automake-style harness.
ql_skip_all() { echo "1..0 # SKIP $*"; exit "${UFFDSHIM_SKIP_STATUS:-77}"; }
# ql_ok COND DESC: COND is 0 (pass) or anything else (fail)
ql_ok() {
    QL_N=$((QL_N + 1))
    if [ "$1" = 0 ]; then
        echo "ok $QL_N - $2"
    else
        echo "not ok $QL_N - $2"
        printf '%s# ^ before: not ok %s - %s\n' "$QL_DIAGBUF" "$QL_N" "$2" >&2
        QL_LOUD=1
        QL_FAILED=$((QL_FAILED + 1))
    fi
    QL_DIAGBUF=""
}
ql_elapsed() { awk -v a="$QL_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
ql_now() { date +%s.%N; }
ql_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# ---- setup / cleanup -------------------------------------------------------
# ql_have_shim: true when the shim and recorder exist
ql_have_shim() { [ -f "$UFFDSHIM_BUILD/libuffdshim.so" ] && [ -x "$UFFDSHIM_BUILD/uffd-record" ]; }

# ql_setup DEADLINE_SECONDS: work dir, traps, watchdog, guest build (or SKIP)
ql_setup() {
    local deadline=${1:-240}
    command -v "$QEMU" >/dev/null 2>&1 || ql_skip_all "$QEMU not installed"
    command -v python3 >/dev/null 2>&1 || ql_skip_all "python3 not installed (QMP client)"
    QL_WORK=$(mktemp -d "${TMPDIR:-/tmp}/uffdshim-qemu.XXXXXX") || ql_skip_all "mktemp failed"
    trap ql_cleanup EXIT
    trap 'ql_diag "interrupted"; exit 1' INT TERM HUP
    ql_write_qmp_client
    ql_write_throttle
    if ! ql_build_guest > "$QL_WORK/build-guest.log" 2>&1; then
        local why
        why=$(tail -n 1 "$QL_WORK/build-guest.log")
        ql_diag "$(cat "$QL_WORK/build-guest.log")"
        ql_skip_all "cannot build the guest: $why"
    fi
    # Watchdog: TERM this script after the deadline (the EXIT trap kills
    # QEMU). It polls so that it dies by itself soon after we exit; its
    # output goes nowhere so it never holds prove's pipe open.
    local me=$$
    ( trap - EXIT INT TERM HUP
      i=0
      while [ $i -lt "$deadline" ]; do
          sleep 1; kill -0 "$me" 2>/dev/null || exit 0; i=$((i + 1))
      done
      echo "watchdog: deadline ${deadline}s passed" > "$QL_WORK/watchdog"
      kill -TERM "$me" 2>/dev/null ) >/dev/null 2>&1 </dev/null &
    QL_WATCHDOG=$!
}

ql_build_guest() {
    # Serialize concurrent builders (prove -j) on a lock next to the guest.
    mkdir -p "$UFFDSHIM_BUILD"
    if command -v flock >/dev/null 2>&1; then
        flock -w 600 "$UFFDSHIM_BUILD/.qemu-guest.lock" \
            timeout 300 bash "$QL_LIBDIR/build-guest.sh" "$QL_GUEST_DIR"
    else
        timeout 300 bash "$QL_LIBDIR/build-guest.sh" "$QL_GUEST_DIR"
    fi
}

# ql_alive PID: the process exists and is not a zombie
ql_alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ]
}

ql_kill_pid() {  # TERM, wait up to 5 s, then KILL
    local p=$1 i
    ql_alive "$p" || return 0
    kill -TERM "$p" 2>/dev/null
    for i in $(seq 1 50); do
        ql_alive "$p" || return 0
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null
}

# ql_forget PID: drop an exited (and reaped) process from QL_PIDS, so that
# cleanup never signals a later process that reuses its pid
ql_forget() {
    local -a keep=()
    local p
    for p in "${QL_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    QL_PIDS=("${keep[@]}")
}

# ql_stop_all: end every process still running from earlier ql_qemu_start
# calls (after a run that stopped early)
ql_stop_all() {
    local i p
    for ((i = ${#QL_PIDS[@]} - 1; i >= 0; i--)); do ql_kill_pid "${QL_PIDS[$i]}"; done
    for p in "${QL_WRAP_PID[@]}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
    QL_PIDS=()
    QL_WRAP_PID=()
}

ql_cleanup() {
    local rc=$? i p
    trap - EXIT INT TERM HUP
    if [ -n "$QL_WATCHDOG" ]; then
        kill "$QL_WATCHDOG" 2>/dev/null
        wait "$QL_WATCHDOG" 2>/dev/null
        [ -f "$QL_WORK/watchdog" ] && { ql_diag "$(cat "$QL_WORK/watchdog")"; rc=1; }
    fi
    # newest first: QEMU before the uffd-record wrapper that started it
    for ((i = ${#QL_PIDS[@]} - 1; i >= 0; i--)); do ql_kill_pid "${QL_PIDS[$i]}"; done
    for p in "${QL_WRAP_PID[@]}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
    if [ -n "$QL_WORK" ] && [ -d "$QL_WORK" ]; then
        if [ "${UFFDSHIM_KEEP:-0}" = 1 ]; then
            ql_diag "work dir kept: $QL_WORK"
        else
            rm -rf "$QL_WORK"
        fi
    fi
    exit "$rc"
}

# ql_finish: end of test; exit status 1 if any assertion failed
ql_finish() {
    ql_diag "total $(ql_elapsed)s"
    [ "$QL_FAILED" = 0 ]
    exit $?
}

# ---- QMP -------------------------------------------------------------------
ql_write_qmp_client() {
    cat > "$QL_WORK/qmp.py" <<'PYEOF'
# qmp.py SOCKET COMMAND [ARGS-JSON] [FIELD]
# Connects (retrying until QMP_TIMEOUT), negotiates, runs COMMAND, prints its
# "return" as JSON, or the value of FIELD (dotted path) in it as text ("" if
# absent). Exit 1 on a QMP error (printed to stderr), 2 on a connection error.
import json, os, socket, sys, time
def main():
    path, cmd = sys.argv[1], sys.argv[2]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
    field = sys.argv[4] if len(sys.argv) > 4 else None
    timeout = float(os.environ.get("QMP_TIMEOUT", "20"))
    end = time.time() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(max(1.0, end - time.time()))
            s.connect(path)
            break
        except OSError as e:
            s.close()
            if time.time() > end:
                print("qmp: connect %s: %s" % (path, e), file=sys.stderr)
                return 2
            time.sleep(0.1)
    f = s.makefile("rwb")
    def recv():
        while True:
            line = f.readline()
            if not line:
                raise OSError("QMP connection closed")
            msg = json.loads(line)
            if "event" in msg:
                continue
            return msg
    def call(c, a=None):
        req = {"execute": c}
        if a is not None:
            req["arguments"] = a
        f.write((json.dumps(req) + "\n").encode())
        f.flush()
        return recv()
    try:
        greeting = recv()
        if "QMP" not in greeting:
            print("qmp: bad greeting %r" % greeting, file=sys.stderr)
            return 2
        call("qmp_capabilities")
        r = call(cmd, args)
    except (OSError, ValueError) as e:
        print("qmp: %s: %s" % (cmd, e), file=sys.stderr)
        return 2
    if "error" in r:
        print("qmp: %s: %s" % (cmd, r["error"].get("desc", r["error"])), file=sys.stderr)
        return 1
    ret = r.get("return")
    if field:
        for k in field.split("."):
            ret = ret.get(k) if isinstance(ret, dict) else None
        if ret is None:
            ret = ""
        print(ret if isinstance(ret, str) else json.dumps(ret))
    else:
        print(json.dumps(ret))
    return 0
sys.exit(main())
PYEOF
}

# throttle.py RATE FILE: copy stdin to FILE at most RATE bytes/s. A slow
# reader for "exec:" migration URIs: QEMU 7.2's background snapshot ignores
# max-bandwidth (bg_migration_thread sets the rate limit to 0), so a slow
# pipe is the way to hold the snapshot (and its WP registration) open.
ql_write_throttle() {
    cat > "$QL_WORK/throttle.py" <<'PYEOF'
import os, sys, time
rate = float(sys.argv[1])
out = open(sys.argv[2], "wb")
t0 = time.monotonic()
total = 0
while True:
    b = os.read(0, 65536)
    if not b:
        break
    out.write(b)
    total += len(b)
    ahead = total / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
out.close()
PYEOF
}

# qmp SOCK COMMAND [ARGS-JSON] [FIELD]
qmp() { python3 "$QL_WORK/qmp.py" "$@"; }

# ---- QEMU ------------------------------------------------------------------
# ql_qemu_start NAME MODE [extra qemu args...]
#   MODE: native | shim (shim = under "uffd-record run --")
#   Files: $QL_WORK/NAME.{qmp,pid,serial,out}. Sets QL_QEMU_PID[NAME] once
#   the pidfile appears (waits up to 30 s). Returns 1 if QEMU did not start.
declare -A QL_QEMU_PID QL_WRAP_PID QL_WRAP_RC
ql_qemu_start() {
    local name=$1 mode=$2; shift 2
    local w=$QL_WORK i
    local -a cmd=("$QEMU" -name "$name" -machine pc -accel tcg -smp 1 -m "$QL_MEM_MB"
        -nographic -monitor none -serial "file:$w/$name.serial" -no-reboot
        -kernel "$QL_GUEST_DIR/vmlinuz" -initrd "$QL_GUEST_DIR/initrd.cpio"
        -append "console=ttyS0 panic=-1 quiet"
        -qmp "unix:$w/$name.qmp,server=on,wait=off" -pidfile "$w/$name.pid" "$@")
    rm -f "$w/$name.pid" "$w/$name.qmp"
    : > "$w/$name.serial"
    if [ -n "${UFFDSHIM_QEMU_STRACE:-}" ]; then  # debugging: strace QEMU's uffd use
        mkdir -p "$UFFDSHIM_QEMU_STRACE"
        cmd=(strace -f -tt -e "trace=userfaultfd,ioctl,close,read,poll,ppoll"
             -o "$UFFDSHIM_QEMU_STRACE/$name.strace" "${cmd[@]}")
    fi
    if [ "$mode" = shim ]; then
        if [ "${UFFDSHIM_QEMU_TRACE:-0}" = 1 ]; then
            cmd=("$UFFDSHIM_BUILD/uffd-record" run --trace "$w/$name.trace" -- "${cmd[@]}")
        else
            cmd=("$UFFDSHIM_BUILD/uffd-record" run -- "${cmd[@]}")
        fi
    fi
    echo "${cmd[*]}" > "$w/$name.cmd"
    ( cd "$w" && exec "${cmd[@]}" ) </dev/null >"$w/$name.out" 2>&1 &
    QL_WRAP_PID[$name]=$!
    QL_PIDS+=("$!")
    for i in $(seq 1 300); do
        if [ -s "$w/$name.pid" ] && [ -S "$w/$name.qmp" ]; then
            QL_QEMU_PID[$name]=$(tr -dc 0-9 < "$w/$name.pid")
            QL_PIDS+=("${QL_QEMU_PID[$name]}")
            return 0
        fi
        ql_alive "${QL_WRAP_PID[$name]}" || break
        sleep 0.1
    done
    ql_diag "$name: QEMU did not start; output:"
    ql_diag "$(tail -n 20 "$w/$name.out")"
    return 1
}

# ql_qemu_quit NAME: ask QEMU to quit, then make sure it is gone
ql_qemu_quit() {
    local name=$1 i p=${QL_QEMU_PID[$1]:-} wp=${QL_WRAP_PID[$1]:-}
    QMP_TIMEOUT=3 qmp "$QL_WORK/$name.qmp" quit >/dev/null 2>&1
    for i in $(seq 1 50); do
        { [ -z "$p" ] || ! ql_alive "$p"; } && break
        sleep 0.1
    done
    [ -n "$p" ] && ql_kill_pid "$p"
    if [ -n "$wp" ]; then
        for i in $(seq 1 50); do ql_alive "$wp" || break; sleep 0.1; done
        ql_kill_pid "$wp"
        wait "$wp" 2>/dev/null
        # shellcheck disable=SC2034  # read by the test scripts
        QL_WRAP_RC[$name]=$?
        ql_forget "$wp"
        QL_WRAP_PID[$name]=""
    fi
    # QEMU is gone (a grandchild under uffd-record is reaped by its parent)
    [ -n "$p" ] && ! ql_alive "$p" && ql_forget "$p"
    if [ -e "$QL_WORK/$name.trace" ]; then
        ql_diag "--- uffd-record report $name.trace ($(stat -c %s "$QL_WORK/$name.trace") bytes):"
        ql_diag "$(timeout 60 "$UFFDSHIM_BUILD/uffd-record" report "$QL_WORK/$name.trace" 2>&1 |
                   head -n 40 | sed 's/^/  /')"
    fi
}

# ql_serial_count NAME REGEX: number of serial lines matching
ql_serial_count() { grep -a -c -E "$2" "$QL_WORK/$1.serial" 2>/dev/null || true; }

# ql_wait_serial NAME REGEX COUNT TIMEOUT: wait until COUNT lines match
ql_wait_serial() {
    local name=$1 re=$2 want=$3 t=$4 end n
    end=$(( $(date +%s) + t ))
    while :; do
        n=$(ql_serial_count "$name" "$re")
        [ "${n:-0}" -ge "$want" ] && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        if [ -n "${QL_QEMU_PID[$name]:-}" ] && ! ql_alive "${QL_QEMU_PID[$name]}"; then
            return 1
        fi
        sleep 0.2
    done
}

# ql_wait_status NAME TIMEOUT STATUS...: poll query-migrate until its status
# is one of STATUS (or failed, cancelled, postcopy-paused: the ends of a
# failed migration); prints the final status.
ql_wait_status() {
    local name=$1 t=$2; shift 2
    local end st s
    end=$(( $(date +%s) + t ))
    while :; do
        st=$(QMP_TIMEOUT=5 qmp "$QL_WORK/$name.qmp" query-migrate "" status 2>/dev/null)
        for s in "$@" failed cancelled postcopy-paused; do
            [ "$st" = "$s" ] && { echo "$st"; return 0; }
        done
        if [ "$(date +%s)" -ge "$end" ]; then echo "${st:-none}"; return 1; fi
        if [ -n "${QL_QEMU_PID[$name]:-}" ] && ! ql_alive "${QL_QEMU_PID[$name]}"; then
            echo "qemu-exited"; return 1
        fi
        sleep 0.1
    done
}

# ql_run_state NAME: "running", "inmigrate", "postmigrate", ...
ql_run_state() { QMP_TIMEOUT=5 qmp "$QL_WORK/$1.qmp" query-status "" status 2>/dev/null; }

# ql_uffd_vmas PID FLAG: number of VMAs whose VmFlags has FLAG (um, uw, ui)
ql_uffd_vmas() {
    awk -v f="$2" '/^VmFlags:/ { for (i = 2; i <= NF; i++) if ($i == f) { n++; break } }
                   END { print n + 0 }' "/proc/$1/smaps" 2>/dev/null || echo 0
}

# ql_verify NAME LABEL: run "uffd-record status PID --verify" on QEMU NAME;
# prints its output as diagnostics; returns its exit status.
ql_verify() {
    local name=$1 label=$2 rc out
    out=$(timeout 30 "$UFFDSHIM_BUILD/uffd-record" status "${QL_QEMU_PID[$name]}" --verify 2>&1)
    rc=$?
    ql_diag "uffd-record status ${QL_QEMU_PID[$name]} --verify ($label): exit $rc"
    if [ $rc = 0 ] && [ "${UFFDSHIM_QEMU_VERBOSE:-0}" != 1 ]; then
        # summary: the per-uffd headlines, counters and the verdict
        out=$(printf '%s\n' "$out" |
              grep -E '^pid |^ *uffd [0-9]|ranges:|write-protected:|pending faults:|counters:|verify' |
              head -n 30)
    else
        out=$(printf '%s\n' "$out" | head -n 200)
    fi
    ql_diag "$(printf '%s\n' "$out" | sed 's/^/  /')"
    return $rc
}

# ql_dump NAME: serial tail and QEMU output as diagnostics
ql_dump() {
    local name=$1
    ql_diag "--- $name: $(cat "$QL_WORK/$name.cmd" 2>/dev/null)"
    ql_diag "--- $name serial (last 15 lines):"
    ql_diag "$(tr -d '\r' < "$QL_WORK/$name.serial" | grep -a -v '^$' | tail -n 15 | sed 's/^/  /')"
    if [ -s "$QL_WORK/$name.out" ]; then
        ql_diag "--- $name stdout/stderr (last 15 lines):"
        ql_diag "$(tail -n 15 "$QL_WORK/$name.out" | sed 's/^/  /')"
    fi
}
