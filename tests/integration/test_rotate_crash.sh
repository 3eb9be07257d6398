#!/bin/bash
# Crash safety of rotation, bind and unbind (issue 11, item 4): each command is killed with SIGKILL,
# RUNS times (default 50) per command, at a random point: half of the runs at a named step
# (KMSCRYPT_TEST_CRASH_AT, core/rotate.c), half after a random 0-250 ms.  After EVERY run the volume
# opens through its recovery key (cryptsetup --test-passphrase) and, for the rotations, through
# kmscrypt (`kmscrypt check`: the binding unwraps and opens its keyslot); a re-run of the command
# completes; then the header holds one kmscrypt token, no pending-change marker, the same number of
# keyslots as before, and the data segment's hash is unchanged.  Local provider, a 20 MiB image
# file, no device-mapper.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
RUNS=${RUNS:-50}
# memory-backed when possible: the commands fsync the header, state and audit log
tmp=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
SECONDS=0

# setup: a fresh config dir, state dir and volume (with its recovery key) in the current dir
setup() {
export KMSCRYPT_CONFIG_DIR=$PWD/etc KMSCRYPT_STATE_DIR=$PWD/state
"$K" kms create lab --provider local --key-file lab.key --generate >/dev/null || failed "kms create lab"
"$K" kms create lab2 --provider local --key-file lab2.key --generate >/dev/null || failed "kms create lab2"
truncate -s 20M a.img
"$K" -q format a.img --kms lab --recovery-key-file a.rec >/dev/null || failed "format"
off=$(cryptsetup luksDump a.img | awk '/^Data segments:/ {d = 1} d && /offset:/ {print $2; exit}')
[ -n "$off" ] || failed "no data segment offset in luksDump"
# the data area: random bytes, hashed after every run
dd if=/dev/urandom of=a.img bs=1M seek=$((off / 1048576)) count=$(((20971520 - off) / 1048576)) \
	conv=notrunc status=none
data_hash() { tail -c +$((off + 1)) a.img | sha256sum | cut -d' ' -f1; }
H0=$(data_hash)
}
dump() { cryptsetup luksDump a.img >dump.txt; }
keyslots() { grep -cE '^  [0-9]+: luks2$' dump.txt; }
tokens() { grep -cE "^  [0-9]+: $1\$" dump.txt; }
recovery_opens() { cryptsetup open --test-passphrase a.img --key-file a.rec >/dev/null 2>&1; }
ms_sleep() { sleep "0.$(printf %03d $((RANDOM % 250)))"; }

KILLED=0
# run_killed POINTS -- ARGS: run kmscrypt ARGS, killed at a random one of POINTS (odd runs) or after
# a random delay (even runs; every run when POINTS is "-"); sets KILLED+1 when it died by SIGKILL
run_killed() {
	local points=$1 rc=0 pid
	shift 2
	if [ $((RUN % 2)) = 1 ] && [ "$points" != - ]; then
		local arr=($points)
		KMSCRYPT_TEST_CRASH_AT=${arr[$((RANDOM % ${#arr[@]}))]} "$K" "$@" >/dev/null 2>&1 || rc=$?
	else
		"$K" "$@" >/dev/null 2>&1 &
		pid=$!
		ms_sleep
		kill -9 "$pid" 2>/dev/null
		wait "$pid" || rc=$?
	fi
	[ "$rc" = 137 ] && KILLED=$((KILLED + 1))
	return 0
}

# after_run WHAT RERUN_OK...: the invariants after a killed run and its re-run
bad=0
problem() {
	bad=$((bad + 1))
	failed "$1 (run $RUN): $2"
}
check_opens() {
	recovery_opens || problem "$1" "the recovery key does not open the volume"
	"$K" check a.img >/dev/null 2>err.txt || problem "$1" "kmscrypt check fails: $(cat err.txt)"
}
check_clean() { # WHAT KEYSLOTS
	dump
	[ "$(tokens kmscrypt)" = 1 ] || problem "$1" "$(tokens kmscrypt) kmscrypt tokens"
	[ "$(tokens kmscrypt-pending)" = 0 ] || problem "$1" "a pending-change marker is left"
	[ "$(keyslots)" = "$2" ] || problem "$1" "$(keyslots) keyslots, expected $2"
	[ "$(data_hash)" = "$H0" ] || problem "$1" "the data segment changed"
}

# ---- rotate-master, alternating between two configurations
loop_rotate_master() {
KILLED=0 bad=0
for RUN in $(seq 1 "$RUNS"); do
	target=lab$([ $((RUN % 2)) = 0 ] && echo 2)
	[ "$target" = lab2 ] || target=lab
	run_killed "rotate-master:recorded rotate-master:token-added rotate-master:old-token-removed" \
		-- rotate-master a.img --kms "$target"
	check_opens rotate-master
	# the re-run proves its new token itself (unwrap, keyslot opens) before it says so
	"$K" rotate-master a.img --kms "$target" >out.txt 2>err.txt ||
		problem rotate-master "the re-run fails: $(cat err.txt)"
	grep -qF -- "-> KMS '$target'" out.txt || problem rotate-master "not bound to $target after the re-run: $(cat out.txt)"
	check_clean rotate-master 2
done
[ "$bad" = 0 ] && pass "rotate-master: $RUNS runs ($KILLED killed mid-way): always opens (kmscrypt, recovery key), re-run completes, data unchanged"
}

# ---- rotate-secret
loop_rotate_secret() {
KILLED=0 bad=0
points="rotate-secret:marked rotate-secret:keyslot-added rotate-secret:token-added"
points+=" rotate-secret:old-token-removed rotate-secret:old-keyslot-destroyed"
for RUN in $(seq 1 "$RUNS"); do
	run_killed "$points" -- rotate-secret a.img
	check_opens rotate-secret
	"$K" rotate-secret a.img >out.txt 2>err.txt || problem rotate-secret "the re-run fails: $(cat err.txt)"
	grep -qF "proven to open" out.txt || problem rotate-secret "the re-run proved nothing: $(cat out.txt)"
	check_clean rotate-secret 2
done
[ "$bad" = 0 ] && pass "rotate-secret: $RUNS runs ($KILLED killed mid-way): always opens (kmscrypt, recovery key), re-run completes, keyslot count stays 2, data unchanged"
}

# ---- bind and unbind (the recovery key authorises bind); a re-run either completes or says
# there is nothing left to do
loop_bind() {
KILLED=0 bad=0
"$K" -q unbind a.img >/dev/null 2>&1 || failed "unbind before the bind loop"
for RUN in $(seq 1 "$RUNS"); do
	run_killed "bind:marked bind:bound" -- bind a.img --kms lab --key-file a.rec
	recovery_opens || problem bind "the recovery key does not open the volume"
	rc=0
	"$K" bind a.img --kms lab --key-file a.rec >/dev/null 2>err.txt || rc=$?
	[ "$rc" = 0 ] || { [ "$rc" = 7 ] && grep -q "already bound" err.txt; } ||
		problem bind "the re-run fails ($rc): $(cat err.txt)"
	"$K" check a.img >/dev/null 2>err.txt || problem bind "check after the re-run: $(cat err.txt)"
	check_clean bind 2
	"$K" -q unbind a.img >/dev/null 2>&1 || problem bind "unbind for the next run"
	dump
	[ "$(keyslots)" = 1 ] || problem bind "$(keyslots) keyslots after unbind, expected 1 (a keyslot leaked)"
done
[ "$bad" = 0 ] && pass "bind: $RUNS runs ($KILLED killed mid-way): recovery key always opens, re-run completes, no keyslot leaks"
}

loop_unbind() {
"$K" -q unbind a.img >/dev/null 2>&1 || failed "unbind before the unbind loop"
KILLED=0 bad=0
for RUN in $(seq 1 "$RUNS"); do
	"$K" bind a.img --kms lab --key-file a.rec >/dev/null 2>err.txt || problem unbind "bind for the run: $(cat err.txt)"
	run_killed "-" -- -q unbind a.img
	recovery_opens || problem unbind "the recovery key does not open the volume"
	# either still bound (the binding opens) or on its way out; the re-run finishes it
	rc=0
	"$K" -q unbind a.img >/dev/null 2>err.txt || rc=$?
	[ "$rc" = 0 ] || { [ "$rc" = 6 ] && grep -q "no kmscrypt token" err.txt; } ||
		problem unbind "the re-run fails ($rc): $(cat err.txt)"
	dump
	[ "$(tokens kmscrypt)" = 0 ] || problem unbind "a kmscrypt token is left"
	[ "$(keyslots)" = 1 ] || problem unbind "$(keyslots) keyslots, expected 1"
	[ "$(data_hash)" = "$H0" ] || problem unbind "the data segment changed"
done
[ "$bad" = 0 ] && pass "unbind: $RUNS runs ($KILLED killed mid-way): recovery key always opens, re-run completes, data unchanged"
}

# The four loops run side by side, each on its own volume, configuration and state dir.
for loop in rotate_master rotate_secret bind unbind; do
	mkdir "$tmp/$loop"
	(
		cd "$tmp/$loop" && setup && "loop_$loop"
		echo "$T_PASS $T_FAIL" >counts
	) >"$tmp/$loop.log" 2>&1 &
done
wait
for loop in rotate_master rotate_secret bind unbind; do
	grep -vE '^(.*line [0-9]+: +[0-9]+ Killed .*)$' "$tmp/$loop.log"
	read -r p f <"$tmp/$loop/counts" 2>/dev/null || { p=0 f=1; echo "FAIL - $loop: did not finish"; }
	T_PASS=$((T_PASS + p)) T_FAIL=$((T_FAIL + f))
done
echo "# $((4 * RUNS)) runs in ${SECONDS}s"
finish
