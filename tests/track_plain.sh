#!/bin/bash
# track_plain.sh - dirty tracking of a shimmed process that uses no
# userfaultfd at all: `uffd-record run` opens the shim's control socket from
# the start (UFFDSHIM_CONTROL=1), so `uffd-record track` can attach to any
# program it runs.  The program (python3) writes pages of a bytearray for a
# few seconds; the tracker takes 3 epochs and a frozen last one, and --verify
# compares the chain with the live memory page by page.  Then the program
# finishes as it would untracked, and status shows tracking gone.
# TAP.  Exit 77 (SKIP) without the build, python3, or userfaultfd.
. "$(dirname "$0")/replay/lib.sh"
rl_setup
REC=$RL_B/uffd-record

cat >"$RL_W/writer.py" <<'PY'
import os, time
b = bytearray(8 * 1024 * 1024)
print("writer: pid %d ready" % os.getpid(), flush=True)
t, i = time.time(), 0
while time.time() - t < 4:
    b[(i * 4096 * 7) % len(b)] = i & 255
    i += 1
print("writer: done %d writes" % i, flush=True)
PY
timeout -k 5 "$RL_TIMEOUT" "$REC" run -- python3 "$RL_W/writer.py" >"$RL_W/run.out" 2>&1 \
	3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
job=$!
rl_wait_line "$RL_W/run.out" '^writer: pid [0-9]+ ready' "$job"
pid=$(rl_line_pid "$RL_W/run.out" '^writer: pid')
"$REC" status "$pid" >"$RL_W/status0.out" 2>&1
rl_ok $? "status answers for a shimmed process without any uffd (control socket from the start)"

"$REC" track "$pid" -D "$RL_W/chain" --iterations 3 --interval 200 --verify >"$RL_W/track.out" 2>&1
s=$?
rl_diag_file "$RL_W/track.out"
grep -q 'verify: the chain matches the live memory' "$RL_W/track.out"
rl_ok $(( s | $? )) "uffd-record track: 4 epochs of a program that never made a uffd; the chain matches its memory"
grep -qE '^epoch 3: .*frozen' "$RL_W/track.out" && grep -qE 'async' "$RL_W/track.out"
rl_ok $? "the last epoch is frozen; the memory is tracked async (the shim's WP_ASYNC uffd)"
"$RL_B/uffd-replay" check "$RL_W/chain" >"$RL_W/check.out" 2>&1
rl_ok $? "uffd-replay check validates the chain"
wait "$job"
s=$?
grep -q '^writer: done' "$RL_W/run.out"
rl_ok $(( s | $? )) "the program finishes as it would untracked"
rl_done
