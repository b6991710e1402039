#!/usr/bin/env python3
"""layout.py PID - what the kernel shows of a process's uffd-registered memory.

One line per VMA that has a uffd flag in /proc/PID/smaps (um = MISSING,
uw = WP, ui = MINOR): its range, permissions, flags, and from
/proc/PID/pagemap the runs of pages (as page offsets in the VMA) that have
the uffd-wp bit (57) and that are present or swapped (63, 62).  Two
snapshots of the same state print the same text, so a test can diff the
layout before a checkpoint and after the restore.  Exit 2 if /proc cannot
be read."""
import struct
import sys

UFFD_FLAGS = ("um", "uw", "ui")


def vmas(pid):
    out, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if not parts[0].endswith(":") and "-" in parts[0] and len(parts) >= 5:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                cur = [start, end, parts[1], []]
                out.append(cur)
            elif parts[0] == "VmFlags:" and cur is not None:
                cur[3] = sorted(x for x in parts[1:] if x in UFFD_FLAGS)
    return [v for v in out if v[3]]


def runs(entries, test):
    res, start = [], None
    for i, e in enumerate(entries + [None]):
        on = e is not None and test(e)
        if on and start is None:
            start = i
        elif not on and start is not None:
            res.append(f"{start}" if i - start == 1 else f"{start}-{i - 1}")
            start = None
    return ",".join(res) or "none"


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: layout.py PID\n")
        return 2
    pid = sys.argv[1]
    try:
        vs = vmas(pid)
        with open(f"/proc/{pid}/pagemap", "rb") as pm:
            for start, end, perms, flags in vs:
                n = (end - start) // 4096
                pm.seek(start // 4096 * 8)
                data = pm.read(n * 8)
                if len(data) != n * 8:
                    raise OSError(f"short pagemap read at {start:#x}")
                ents = list(struct.unpack(f"{n}Q", data))
                wp = runs(ents, lambda e: e >> 57 & 1)
                present = runs(ents, lambda e: (e >> 63 & 1) or (e >> 62 & 1))
                print(f"{start:x}-{end:x} {perms} {'+'.join(flags)} wp={wp} present={present}")
    except OSError as e:
        sys.stderr.write(f"layout.py: pid {pid}: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
