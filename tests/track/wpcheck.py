#!/usr/bin/env python3
"""wpcheck.py PID [START-END]... - is any memory of PID left write-protected
by userfaultfd outside the given ranges (the ranges the application itself
registered in WP mode)?

Reads /proc/PID/smaps (VMAs whose VmFlags have "uw": registered for WP with
some uffd) and /proc/PID/pagemap (bit 57, the pte's uffd-wp bit) of every
private writable VMA.  Prints what it finds; exit 0 when nothing outside
the ranges is registered WP or has a uffd-wp page, 1 otherwise, 2 on error.
Pages with the bit inside the ranges are counted (informational).  A VMA the
application registered MISSING may keep "uw" (dirty tracking added WP mode to
the app's own registration; only its pages' bits must be gone)."""
import struct, sys

PAGE = 4096
WP_BIT = 1 << 57


def main():
    pid = int(sys.argv[1])
    allow = []
    for a in sys.argv[2:]:
        s, e = a.split("-")
        allow.append((int(s, 0), int(e, 0)))

    def allowed(s, e):  # [s, e) inside one allowed range
        return any(a <= s and e <= b for a, b in allow)

    vmas = []
    cur = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                head = line.split()
                if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                    s, e = head[0].split("-")
                    cur = {"s": int(s, 16), "e": int(e, 16), "perm": head[1],
                           "name": head[5] if len(head) > 5 else "", "flags": []}
                    vmas.append(cur)
                elif line.startswith("VmFlags:") and cur is not None:
                    cur["flags"] = head[1:]
    except OSError as ex:
        print("wpcheck: %s" % ex)
        return 2
    bad = 0
    inside_wp = 0
    try:
        pm = open("/proc/%d/pagemap" % pid, "rb")
    except OSError as ex:
        print("wpcheck: %s" % ex)
        return 2
    with pm:
        for v in vmas:
            uw = "uw" in v["flags"]
            # The app's own MISSING registration: dirty tracking added WP
            # mode to it (docs/design.md); the mode stays after tracking,
            # the protections go (pages are checked below).
            augmented = uw and "um" in v["flags"]
            if uw and not augmented and not allowed(v["s"], v["e"]):
                print("registered WP (uw) outside the app's WP ranges: %x-%x %s %s"
                      % (v["s"], v["e"], v["perm"], v["name"]))
                bad += 1
            if v["perm"][1] != "w" or v["perm"][3] != "p":
                continue
            n = (v["e"] - v["s"]) // PAGE
            pm.seek(v["s"] // PAGE * 8)
            data = pm.read(n * 8)
            outside = 0
            first = None
            for i in range(len(data) // 8):
                (ent,) = struct.unpack_from("<Q", data, i * 8)
                if not ent & WP_BIT:
                    continue
                a = v["s"] + i * PAGE
                if allowed(a, a + PAGE):
                    inside_wp += 1
                    continue
                outside += 1
                if first is None:
                    first = a
            if outside:
                print("%d pages with the uffd-wp bit outside the app's WP ranges in %x-%x "
                      "%s %s (first at %x)" % (outside, v["s"], v["e"], v["perm"], v["name"],
                                               first))
                bad += 1
    print("wpcheck: pid %d: %d VMAs, %d with uw; %d uffd-wp pages inside the app's WP "
          "ranges; %s" % (pid, len(vmas), sum("uw" in v["flags"] for v in vmas), inside_wp,
                          "nothing left outside them" if not bad else "%d problems" % bad))
    return 1 if bad else 0


sys.exit(main())
