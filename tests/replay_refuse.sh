#!/bin/bash
# replay_refuse.sh - uffd-replay refuses images it cannot restore: with a
# clear message, a non-zero exit, and without running the program's main().
#
# The program restored into is `sh -c 'echo ran > MARKER'`: MARKER exists iff
# its main ran.  A control run first restores the good image into it (it must
# run).  The good image is wp_snapshot's, checkpointed while it holds at "mid"
# (two ranges, write-protected pages, page contents); every case copies it
# and breaks one thing:
#   corrupt-state    a byte of the state section flipped
#   trunc-state      uffd-state.img cut in half
#   trunc-pages      uffd-pages.img one page short
#   corrupt-pages    a byte of uffd-pages.img flipped (refused by the shim,
#                    which checks each run's checksum while filling)
#   bad-magic        the header magic changed (checksum fixed)
#   version          header version 2 (checksum fixed: tests/image_tool.c)
#   arch             header architecture 183, aarch64 (checksum fixed)
#   features         uffd 1 asks UFFDIO_API for bit 20, beyond 0x1ffff
#   range-taken      range 0 moved onto the text of the program (run under
#                    setarch -R, so that the text is at a known address)
#   fd-in-use        the program starts with the uffd's fd number open
#   foreign          fork_events checkpointed while the FORK event's uffd
#                    (serving the child's memory) is open
# Each refusal: exit status non-zero (and not a crash), the message names the
# problem, MARKER absent.  For the defects of the files themselves the shim
# alone (LD_PRELOAD + UFFDSHIM_RESTORE, no uffd-replay check first) must
# refuse too.  `uffd-record show` and `uffd-replay check` must explain a
# broken file and must not crash on any of the images.
#
# TAP.  Exit 77 (SKIP) without the build, python3, or userfaultfd.
. "$(dirname "$0")/replay/lib.sh"

rl_setup
TOOL=$RL_B/tests/image_tool
[ -x "$TOOL" ] || rl_skip_all "$TOOL is missing (run make)"
command -v setarch >/dev/null || rl_skip_all "setarch (util-linux) is needed"
ARCH=$(uname -m)

# ---- the good images ----
# checkpoint NAME POINT DIR: the demo held at POINT, dumped with memory.
checkpoint() {
	local out=$RL_W/$1.$2.out
	rl_run "$out" "$1" --hold "$2"
	rl_held "$out" "$1" "$2" "$RL_JOB" &&
		rl_dump "$RL_PID" "$3" "$out.dump" "$RL_JOB" ||
		{ rl_diag_file "$out"; rl_diag_file "$out.dump"; return 1; }
}
GOOD=$RL_W/good
checkpoint wp_snapshot mid "$GOOD"
rl_ok $? "good image: wp_snapshot checkpointed at mid" || rl_done
INFO=$("$TOOL" info "$GOOD")
UFFD_FD=$(sed -n 's/^fd=\([0-9]*\) .*/\1/p' <<<"$INFO")
rl_note "good image: $INFO"

# The program restored into; its one argument is MARKER.
PROG=(/bin/sh -c 'echo ran >"$0"')

# control: the good image restores and the program runs
m=$RL_W/control.ran
"$RL_B/uffd-replay" -D "$GOOD" -- "${PROG[@]}" "$m" >"$RL_W/control.out" 2>&1 \
	3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
rc=$?
[ $rc -eq 0 ] && [ -e "$m" ]
rl_ok $? "control: the good image restores into sh and its main runs" ||
	{ rl_diag "exit status $rc"; rl_diag_file "$RL_W/control.out"; }

# ---- the defects ----
flip() { # FILE OFFSET: invert one byte
	python3 -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1)
f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))' "$1" "$2"
}

# make_case NAME DIR: DIR gets the good image with defect NAME.
make_case() {
	local d=$2 sz
	mkdir -p "$d" && cp "$GOOD"/* "$d"/ || return 1
	case $1 in
	corrupt-state) flip "$d/uffd-state.img" 200 ;; # inside the state section
	trunc-state)
		sz=$(stat -c %s "$d/uffd-state.img")
		truncate -s $((sz / 2)) "$d/uffd-state.img"
		;;
	trunc-pages)
		sz=$(stat -c %s "$d/uffd-pages.img")
		truncate -s $((sz - 4096)) "$d/uffd-pages.img"
		;;
	corrupt-pages) flip "$d/uffd-pages.img" 5000 ;;
	bad-magic) "$TOOL" set "$d" magic NOTANIMG ;;
	version) "$TOOL" set "$d" version 2 ;;
	arch) "$TOOL" set "$d" arch 183 ;;
	features) "$TOOL" set "$d" features $((0x1 | 1 << 20)) ;;
	range-taken) "$TOOL" set "$d" range-addr "$TEXT" ;;
	fd-in-use) ;;
	foreign) rm -f "$d"/* && checkpoint fork_events child-exited "$d" ;;
	esac
}

# The program's text under setarch -R (no address randomization).
TEXT=0x$(setarch "$ARCH" -R /bin/sh -c 'cat /proc/$$/maps' | awk '$2 ~ /x/ {print $1; exit}' |
	cut -d- -f1)
rl_note "sh's text under setarch -R starts at $TEXT"

# restore_into CASE DIR MARKER OUT: relaunch sh from DIR the way CASE needs.
restore_into() {
	local c=$1 d=$2 m=$3 out=$4
	case $c in
	range-taken)
		setarch "$ARCH" -R "$RL_B/uffd-replay" -D "$d" -- "${PROG[@]}" "$m" >"$out" 2>&1 \
			3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
		;;
	fd-in-use)
		(
			exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
			eval "exec $UFFD_FD</dev/null"
			exec "$RL_B/uffd-replay" -D "$d" -- "${PROG[@]}" "$m"
		) >"$out" 2>&1
		;;
	*)
		"$RL_B/uffd-replay" -D "$d" -- "${PROG[@]}" "$m" >"$out" 2>&1 \
			3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
		;;
	esac
}

# shim_alone DIR MARKER OUT: the shim restoring without uffd-replay's check.
shim_alone() {
	LD_PRELOAD=$RL_B/libuffdshim.so UFFDSHIM_RESTORE=$1 "${PROG[@]}" "$2" >"$3" 2>&1 \
		3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
}

# refuse CASE KEYWORD FILE_DEFECT SHOW CHECK
#   KEYWORD      what the message must say (grep -E)
#   FILE_DEFECT  yes: the files are broken (the shim alone must refuse too)
#   SHOW, CHECK  what `uffd-record show` / `uffd-replay check` must do:
#                explain (exit non-zero naming KEYWORD), ok (exit 0), note
#                (exit 0 and say KEYWORD), runs (any status but not a crash),
#                todo-explain (explain; a known gap, reported as TODO)
refuse() {
	local c=$1 kw=$2 filedef=$3 show=$4 check=$5 d=$RL_W/$1 m=$RL_W/$1.ran rc
	if ! make_case "$c" "$d" >"$d.make" 2>&1; then
		rl_ok 1 "$c: the image could be made"
		rl_diag_file "$d.make"
		return
	fi
	restore_into "$c" "$d" "$m" "$d.out"
	rc=$?
	[ $rc -ne 0 ] && [ $rc -lt 128 ]
	rl_ok $? "$c: uffd-replay exits non-zero (status $rc), no crash" || rl_diag_file "$d.out"
	grep -qE "$kw" "$d.out"
	rl_ok $? "$c: the message says what is wrong: $(head -n1 "$d.out" | cut -c1-140)" ||
		rl_diag_file "$d.out"
	[ ! -e "$m" ]
	rl_ok $? "$c: the program's main did not run"
	if [ "$filedef" = yes ]; then
		rm -f "$m"
		shim_alone "$d" "$m" "$d.shim.out"
		rc=$?
		[ $rc -eq 1 ] && [ ! -e "$m" ] && grep -qE "$kw" "$d.shim.out"
		rl_ok $? "$c: the shim alone refuses too: $(head -n1 "$d.shim.out" | cut -c1-120)" ||
			{ rl_diag "exit status $rc"; rl_diag_file "$d.shim.out"; }
	fi
	tool_says "$c" show "$show" "$kw" "$RL_B/uffd-record" show "$d"
	tool_says "$c" check "$check" "$kw" "$RL_B/uffd-replay" check "$d"
}

# tool_says CASE WHAT EXPECT KEYWORD CMD...
tool_says() {
	local c=$1 what=$2 expect=$3 kw=$4 out=$RL_W/$1.$2.out rc r=1 todo=
	shift 4
	"$@" >"$out" 2>&1
	rc=$?
	case $expect in
	explain | todo-explain) [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qE "$kw" "$out" && r=0 ;;
	ok) [ $rc -eq 0 ] && r=0 ;;
	note) [ $rc -eq 0 ] && grep -qE "$kw" "$out" && r=0 ;;
	runs) [ $rc -lt 128 ] && r=0 ;;
	esac
	[ "$expect" = todo-explain ] &&
		todo=" # TODO $what does not compare the image with this kernel"
	RL_N=$((RL_N + 1))
	if [ $r -eq 0 ]; then
		echo "ok $RL_N - $c: $what: $expect (status $rc)$todo"
	else
		echo "not ok $RL_N - $c: $what: $expect (status $rc)$todo"
		if [ -z "$todo" ]; then
			RL_FAILED=$((RL_FAILED + 1))
			rl_diag_file "$out"
		else
			sed 's/^/#   /' "$out"
		fi
	fi
}

refuse corrupt-state 'corrupt' yes explain explain
refuse trunc-state 'truncated' yes explain explain
refuse trunc-pages 'truncated' yes explain explain
refuse corrupt-pages 'corrupt' yes runs explain
refuse bad-magic 'bad magic' yes explain explain
refuse version 'version 2 is newer than this build' yes explain explain
refuse arch 'architecture 183' yes explain explain
refuse features 'feature' no ok explain
refuse range-taken 'already taken in the new process' no ok ok
refuse fd-in-use "fd $UFFD_FD of uffd [0-9]+ is already in use" no ok ok
refuse foreign 'another process|will refuse' no ok note

rl_done
