# shellcheck shell=bash
# lib.sh - what tests/track_demos.sh needs on top of tests/replay/lib.sh (TAP,
# demos started under uffd-record run, waiting on their lines): dirty
# trackers (`uffd-record track`) started and stopped around a running demo,
# a watch for threads stuck in a uffd fault, and checks of the result.
# Sourced after tests/replay/lib.sh.

TK_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TK_WAIT=${UFFDSHIM_TRACK_WAIT:-30} # seconds, per thing waited for
# A thread blocked in one uffd fault for this long counts as stuck.
TK_STUCK=${UFFDSHIM_TRACK_STUCK:-1.0}
# `uffd-record status --timeout` while a tracker runs.
TK_STATUS_TIMEOUT=${UFFDSHIM_TRACK_STATUS_TIMEOUT:-2}
# The per-epoch line of uffd-record track (recorder/cmd_track.c).
TK_EPOCH_RE='^epoch [0-9]+: [0-9]+ changed pages \([0-9]+ data, [0-9]+ zero, [0-9]+ absent\) in [0-9]+ ranges \([0-9]+ new; [0-9]+ async, [0-9]+ sync, [0-9]+ all\)(, frozen)?; shim [0-9.]+ ms, total [0-9.]+ ms$'

# tk_alive PID: exists and is not a zombie
tk_alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st%% *}" != Z ]
}

# tk_track OUT DIR PID ARGS...: start `uffd-record track PID -D DIR ARGS...`
# in the background (a child of this shell, so that its pid is its own and
# kill -9 hits the tracker itself).  Sets TK_TPID.
tk_track() {
	local out=$1 dir=$2 pid=$3
	shift 3
	"$RL_B/uffd-record" track "$pid" -D "$dir" "$@" >"$out" 2>&1 \
		3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- </dev/null &
	TK_TPID=$!
}

# tk_epochs OUT: number of per-epoch lines printed so far
tk_epochs() { grep -c '^epoch [0-9]*:' "$1" 2>/dev/null || true; }

# tk_wait_epochs OUT N TPID: wait until the tracker printed N epoch lines
tk_wait_epochs() {
	local i=0
	while [ "$(tk_epochs "$1")" -lt "$2" ]; do
		tk_alive "$3" || { [ "$(tk_epochs "$1")" -ge "$2" ]; return; }
		[ $i -ge $((TK_WAIT * 20)) ] && return 1
		sleep 0.05
		i=$((i + 1))
	done
}

# tk_reap PID: wait (at most TK_WAIT s) for a background child to end, KILL it
# after that; sets TK_RC to its exit status (TK_HUNG=1 if it had to be killed)
tk_reap() {
	local i=0
	TK_HUNG=0
	while tk_alive "$1"; do
		if [ $i -ge $((TK_WAIT * 20)) ]; then
			TK_HUNG=1
			kill -KILL "$1" 2>/dev/null
			break
		fi
		sleep 0.05
		i=$((i + 1))
	done
	wait "$1"
	TK_RC=$?
}

# tk_watch PID OUT: watch PID's threads for stuck uffd faults (watch.py) in
# the background; sets TK_WPID.  tk_unwatch WPID: stop it and wait.
tk_watch() {
	python3 "$TK_HERE/watch.py" "$1" "$2" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- </dev/null &
	TK_WPID=$!
}
tk_unwatch() {
	kill -TERM "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}
# tk_stuck OUT: true when a thread was stuck (see TK_STUCK); prints the
# summary line "max SECONDS TID COMM"
tk_stuck() {
	local m
	m=$(grep '^max ' "$1" 2>/dev/null)
	[ -n "$m" ] || m="max ? (the watch wrote nothing)"
	echo "$m"
	awk -v lim="$TK_STUCK" '/^max / { exit !($2 >= lim) } END { if (NR == 0) exit 1 }' "$1" 2>/dev/null
}

# tk_epoch_summary OUT: the first two and last two epoch lines, as notes
tk_epoch_summary() {
	local n
	n=$(tk_epochs "$1")
	rl_note "$2: $n epochs; first and last:"
	{ grep '^epoch [0-9]*:' "$1" | head -n 2
	  [ "$n" -gt 4 ] && echo "..."
	  grep '^epoch [0-9]*:' "$1" | tail -n "$(( n > 4 ? 2 : (n > 2 ? n - 2 : 0) ))"
	} | sed 's/^/  /' | while IFS= read -r l; do rl_note "$l"; done
}

# tk_epoch_lines_ok OUT: every epoch line has the documented form, there are
# at least 3, numbered 0.., the last one (only) frozen
tk_epoch_lines_ok() {
	local n bad
	n=$(tk_epochs "$1")
	[ "$n" -ge 3 ] || return 1
	bad=$(grep '^epoch [0-9]*:' "$1" | grep -vcE "$TK_EPOCH_RE")
	[ "$bad" = 0 ] || return 1
	grep '^epoch [0-9]*:' "$1" | awk '{ sub(":", "", $2); if ($2 != NR - 1) exit 1 }' || return 1
	grep '^epoch [0-9]*:' "$1" | tail -n1 | grep -q ', frozen;' || return 1
	[ "$(grep -c ', frozen;' "$1")" = 1 ]
}

# tk_last_epoch DIR: path of the newest epoch directory of a chain
tk_last_epoch() {
	find "$1" -maxdepth 1 -name 'epoch-*' -type d 2>/dev/null | sort | tail -n1
}

# tk_app_wp_ranges PID: "START-END" of every WP range of PID's own uffds (from
# `uffd-record status PID`): where the application itself may hold WP
tk_app_wp_ranges() {
	"$RL_B/uffd-record" status "$1" --timeout 5 2>/dev/null | awk '
		/^ *memory:/ { own = ($0 ~ /this process/) }
		own && /^ *\[0x[0-9a-f]+, 0x[0-9a-f]+\)/ {
			line = $0; sub(/^ *\[/, "", line)
			split(line, f, /[,) ]+/)
			for (i = 3; i <= 6; i++) if (f[i] ~ /(^|\|)WP(\||$)/) { print f[1] "-" f[2]; break }
		}'
}

# tk_wpcheck PID OUTFILE: nothing of PID write-protected (smaps uw, pagemap
# uffd-wp) outside the application's own WP ranges
tk_wpcheck() {
	# shellcheck disable=SC2046
	python3 "$TK_HERE/wpcheck.py" "$1" $(tk_app_wp_ranges "$1") >"$2" 2>&1
}

# tk_uw_count PID: VMAs whose VmFlags has uw
tk_uw_count() {
	awk '/^VmFlags:/ { for (i = 2; i <= NF; i++) if ($i == "uw") { n++; break } }
	     END { print n + 0 }' "/proc/$1/smaps" 2>/dev/null || echo 0
}
