#!/usr/bin/env python3
"""watch.py PID OUT - watch the threads of PID for time spent blocked in a
userfaultfd fault (wchan handle_userfault), sampling every 50 ms, until PID
ends or this script gets SIGTERM/SIGINT.  Then writes OUT: one line per
thread that was ever seen in a fault,

    TID COMM longest=SECONDS samples=N first=T last=T

(T: seconds since the watch started), then "max SECONDS TID COMM" (max 0
when no thread was seen in a fault).  A thread "stuck" in one fault shows
as a long `longest`.  A stopped process (SIGSTOP, state T) does not count:
its threads do not run anyway."""
import os, signal, sys, time

pid, out = int(sys.argv[1]), sys.argv[2]
period = 0.05
stop = False


def on_sig(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_sig)
signal.signal(signal.SIGINT, on_sig)

t0 = time.monotonic()
since = {}   # tid -> start of the current run of fault samples
info = {}    # tid -> [comm, longest, samples, first, last]


def read(p):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return None


while not stop:
    now = time.monotonic() - t0
    st = read("/proc/%d/stat" % pid)
    if st is None or st.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        break
    stopped = st.rsplit(")", 1)[-1].split()[0] in ("T", "t")
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        break
    seen = set()
    for t in tids:
        w = read("/proc/%d/task/%s/wchan" % (pid, t))
        if w != "handle_userfault" or stopped:
            continue
        tid = int(t)
        seen.add(tid)
        if tid not in since:
            since[tid] = now
        i = info.setdefault(tid, [read("/proc/%d/task/%s/comm" % (pid, t)) or "?", 0.0, 0, now, now])
        i[1] = max(i[1], now - since[tid])
        i[2] += 1
        i[4] = now
    for tid in list(since):
        if tid not in seen:
            del since[tid]
    time.sleep(period)

with open(out, "w") as f:
    best = (0.0, 0, "-")
    for tid, (comm, longest, n, first, last) in sorted(info.items()):
        f.write("%d %s longest=%.2f samples=%d first=%.2f last=%.2f\n"
                % (tid, comm, longest, n, first, last))
        if longest > best[0]:
            best = (longest, tid, comm)
    f.write("max %.2f %d %s\n" % best)
