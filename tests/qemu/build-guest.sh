#!/bin/bash
# build-guest.sh OUTDIR - build the QEMU test guest into OUTDIR:
#   OUTDIR/vmlinuz      a Debian cloud kernel (from linux-image-*-cloud-amd64)
#   OUTDIR/initrd.cpio  a busybox-static initramfs whose /init fills most of
#                       guest RAM with a known pattern (tmpfs chunks), then
#                       loops forever: check every chunk, rewrite a few.
#   OUTDIR/kernel-package  the package the kernel came from
# Progress goes to the serial console (ttyS0) as lines starting "GUEST:".
#
# Cached: does nothing when OUTDIR already holds a guest built by this same
# script (the stamp records a hash of this file). Needs: apt-get (lists
# present, or root to run apt-get update), dpkg, busybox-static, and cpio
# (or the cpio applet of busybox). Guest needs no network.
#
# Kernel choice (deterministic): $UFFDSHIM_GUEST_KERNEL_PKG if set, else what
# the metapackage linux-image-cloud-amd64 depends on (its candidate version),
# else the highest version among linux-image-*-cloud-amd64 in the apt lists.
set -euo pipefail

OUT=${1:?usage: build-guest.sh OUTDIR}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
STAMP_WANT=$(sha256sum "$SELF" | cut -d' ' -f1)

if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$STAMP_WANT" ] &&
   [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.cpio" ]; then
    exit 0
fi

say() { echo "build-guest: $*" >&2; }
die() { say "$*"; exit 1; }

BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || [ ! -x "$BUSYBOX" ]; then
    die "busybox not found (apt-get install busybox-static)"
fi
# The guest needs a static busybox.
if LC_ALL=C ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked (apt-get install busybox-static)"
fi
command -v dpkg >/dev/null || die "dpkg not found"
command -v apt-get >/dev/null || die "apt-get not found"

pick_kernel() {
    local pkg=""
    if [ -n "${UFFDSHIM_GUEST_KERNEL_PKG:-}" ]; then
        echo "$UFFDSHIM_GUEST_KERNEL_PKG"; return 0
    fi
    pkg=$(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
          sed -n 's/^Depends:.*\(linux-image-[^ ,]*-cloud-amd64\).*/\1/p' | head -n1 || true)
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache search --names-only '^linux-image-[0-9].*-cloud-amd64$' 2>/dev/null |
              awk '{print $1}' | grep -v -- '-dbg' | sort -V | tail -n1 || true)
    fi
    echo "$pkg"
}

KPKG=$(pick_kernel)
if [ -z "$KPKG" ] && [ "$(id -u)" = 0 ]; then
    say "no cloud kernel in the apt lists; running apt-get update"
    apt-get update -qq >&2 || true
    KPKG=$(pick_kernel)
fi
[ -n "$KPKG" ] || die "no linux-image-*-cloud-amd64 package found in the apt lists"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/uffdshim-guest.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"   # let apt-get download drop privileges to _apt

say "kernel package: $KPKG"
if ! ( cd "$TMP" && apt-get download -q "$KPKG" >&2 ); then
    # stale apt lists name a version the mirror no longer has: refresh once
    [ "$(id -u)" = 0 ] || die "apt-get download $KPKG failed"
    say "apt-get download $KPKG failed; running apt-get update and retrying"
    apt-get update -qq >&2 || true
    KPKG=$(pick_kernel)
    [ -n "$KPKG" ] || die "no linux-image-*-cloud-amd64 package found in the apt lists"
    say "kernel package: $KPKG"
    ( cd "$TMP" && apt-get download -q "$KPKG" >&2 ) || die "apt-get download $KPKG failed"
fi
DEB=$(find "$TMP" -maxdepth 1 -name "*.deb" | head -n1)
[ -n "$DEB" ] || die "apt-get download left no .deb"
dpkg -x "$DEB" "$TMP/kpkg"
VMLINUZ=$(find "$TMP/kpkg/boot" -maxdepth 1 -name "vmlinuz-*" 2>/dev/null | sort | head -n1)
[ -n "$VMLINUZ" ] || die "no /boot/vmlinuz-* in $DEB"

# --- initramfs -------------------------------------------------------------
R=$TMP/root
mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/mem "$R"/sums "$R"/tmp
cp "$BUSYBOX" "$R/bin/busybox"
for a in sh mount umount cat echo dd md5sum awk sleep mkdir rm ls cut head \
         poweroff sync uname free seq test expr date; do
    ln -s busybox "$R/bin/$a"
done

cat > "$R/init" <<'EOF'
#!/bin/sh
# uffdshim test guest. Fills most of RAM with chunks of a random base pattern
# (each chunk a different window of it), then loops: check all chunks
# against their recorded md5, rewrite a few chunks (so memory keeps getting
# dirty), print a line per pass on the serial console.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
log() { read up _ < /proc/uptime; echo "GUEST: [$up] $*"; }

PAGES=1024                 # 4 MiB chunks
RESERVE_MB=${guest_reserve_mb:-48}
REWRITE=${guest_rewrite:-4}
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
fill_mb=$(( avail_kb / 1024 - RESERVE_MB ))
[ "$fill_mb" -lt 8 ] && fill_mb=8
n=$(( fill_mb / 4 ))
log "boot ok kernel=$(uname -r) avail_kb=$avail_kb chunks=$n chunk_kb=$((PAGES*4))"

# random base pattern: 2*PAGES pages; chunk windows start at page offsets
dd if=/dev/urandom of=/base bs=4096 count=$((PAGES * 2)) 2>/dev/null
mount -t tmpfs -o size=$(( n * 4 + 4 ))m tmpfs /mem

write_chunk() {  # $1 = chunk, $2 = generation
    off=$(( ($1 * 37 + $2 * 101) % PAGES ))
    dd if=/base of=/mem/c$1 bs=4096 skip=$off count=$PAGES 2>/dev/null
    md5sum < /mem/c$1 > /sums/c$1
}

i=0
while [ $i -lt $n ]; do write_chunk $i 0; i=$((i + 1)); done
log "READY chunks=$n mb=$((n * 4))"

pass=1
next=0
while :; do
    bad=0
    i=0
    while [ $i -lt $n ]; do
        s=$(md5sum < /mem/c$i)
        if [ "$s" != "$(cat /sums/c$i)" ]; then
            bad=$((bad + 1))
            log "MISMATCH pass=$pass chunk=$i"
        fi
        i=$((i + 1))
    done
    if [ $bad -eq 0 ]; then
        log "CHECK pass=$pass chunks=$n OK"
    else
        log "CHECK pass=$pass chunks=$n FAIL bad=$bad"
    fi
    k=0
    while [ $k -lt $REWRITE ]; do
        write_chunk $next $pass
        next=$(( (next + 1) % n ))
        k=$((k + 1))
    done
    pass=$((pass + 1))
done
EOF
chmod 755 "$R/init"

if command -v cpio >/dev/null; then
    CPIO=(cpio)
else
    CPIO=("$BUSYBOX" cpio)
fi
( cd "$R" && find . | LC_ALL=C sort | "${CPIO[@]}" -o -H newc 2>"$TMP/cpio.err" ) \
    > "$TMP/initrd.cpio" || { cat "$TMP/cpio.err" >&2; die "cpio failed"; }

mkdir -p "$OUT"
rm -f "$OUT/.stamp"
cp "$VMLINUZ" "$OUT/vmlinuz"
cp "$TMP/initrd.cpio" "$OUT/initrd.cpio"
echo "$KPKG" > "$OUT/kernel-package"
echo "$STAMP_WANT" > "$OUT/.stamp"
say "built $OUT (kernel $(basename "$VMLINUZ"), initrd $(stat -c %s "$OUT/initrd.cpio") bytes)"
