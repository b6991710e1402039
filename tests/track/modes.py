#!/usr/bin/env python3
"""modes.py PID CHAIN_SHOW [SHOW...] - are the uffd ranges registered on
PID's memory tracked in the mode docs/design.md gives them?

CHAIN_SHOW is `uffd-record show DIR/epoch-N` of PID's chain (its "tracked
ranges:" table and PID's uffds); each SHOW adds the uffds of another
process (`uffd-record show` of an image or epoch of it), e.g. a handler
holding a uffd that serves PID's memory ("memory: another process (pid
PID)").  For every registered range on PID's memory:
  - shared memory: not tracked at all (only private writable memory is);
  - a WP range of a uffd PID holds itself: "sync" (WP through the app's
    uffd), and a MISSING-only one too (the shim adds WP: the tracker's
    default, unless --no-augment-missing);
  - any other range: "all" (the kernel takes one uffd per range: the shim's
    own WP_ASYNC uffd cannot register it; every present page each epoch).
Every page of a private range must be in tracked ranges of that mode.
Prints one line per range; exit 0 when all match, 1 otherwise."""
import re, sys

TR = re.compile(r"^\s+0x([0-9a-f]+)-0x([0-9a-f]+) \S+ +\S+ +(async|sync|all)\b")
RG = re.compile(r"^\s+\[0x([0-9a-f]+), 0x([0-9a-f]+)\) \S+ \S+\s+(\S+)\s+(\S+) (\S+) (private|shared)")
MEM = re.compile(r"^\s+memory:\s+(this process|another process) \(pid (\d+)\)")


def main():
    pid = int(sys.argv[1])
    tracked, ranges = [], []
    for k, path in enumerate(sys.argv[2:]):
        mem_pid = None
        own = False
        in_tracked = False
        for line in open(path):
            if line.startswith("tracked ranges:"):
                in_tracked = k == 0
                continue
            if in_tracked:
                m = TR.match(line)
                if m:
                    tracked.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
                    continue
                in_tracked = False
            if re.match(r"^uffd \d+:", line):
                mem_pid, own = None, False
            m = MEM.match(line)
            if m:
                mem_pid = int(m.group(2))
                own = m.group(1) == "this process"
                continue
            m = RG.match(line)
            if m and mem_pid == pid:
                ranges.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3),
                               m.group(6), own))
    if not tracked:
        print("modes: no tracked ranges in %s" % sys.argv[2])
        return 1
    bad = 0
    for s, e, modes, share, own in ranges:
        if share == "shared":
            want = None
        elif own and ("WP" in modes.split("|") or modes == "MISSING"):
            want = "sync"  # WP through the app's uffd (added to a MISSING-only one)
        else:
            want = "all"
        cover = [(max(s, a), min(e, b), m) for a, b, m in tracked if a < e and s < b]
        got = sorted({m for _, _, m in cover})
        covered = sum(b - a for a, b, _ in cover)
        if want is None:
            ok = not cover
            what = "not tracked" if ok else "tracked as %s" % ",".join(got)
        else:
            ok = got == [want] and covered == e - s
            what = "tracked as %s (%d of %d pages)" % (",".join(got) or "nothing",
                                                      covered // 4096, (e - s) // 4096)
        print("%s [%x, %x) %s %s%s: want %s, %s" % ("ok  " if ok else "BAD ", s, e, modes, share,
              "" if own else " (a uffd of another process)", want or "untracked", what))
        bad += not ok
    if not ranges:
        print("modes: no uffd range registered on pid %d's memory" % pid)
    return 1 if bad else 0


sys.exit(main())
