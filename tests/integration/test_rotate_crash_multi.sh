#!/bin/bash
# Crash safety of rotate-master and rotate-secret on a multi-KMS binding (token version 2, 2 of 3;
# issue 11): as tests/integration/test_rotate_crash.sh does for version 1, each command is killed
# with SIGKILL RUNS times (default 50) per command, half of the runs at a named step
# (KMSCRYPT_TEST_CRASH_AT, core/rotate.c), half after a random delay.  After EVERY run the volume
# opens through its recovery key (cryptsetup --test-passphrase) and through kmscrypt (`kmscrypt
# check`: k KMSs unwrap and the combined secret opens its keyslot); a re-run completes; then the
# header holds one kmscrypt token, still version 2 with threshold 2 over three KMSs, no pending-change
# marker, the same number of keyslots, and the data segment's hash is unchanged.  rotate-master
# alternates between rewrapping in place and --replace (KMS c <-> d).  Local providers, a 20 MiB
# image file, no device-mapper.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
RUNS=${RUNS:-50}
tmp=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
SECONDS=0

setup() {
export KMSCRYPT_CONFIG_DIR=$PWD/etc KMSCRYPT_STATE_DIR=$PWD/state
for n in a b c d; do
	"$K" kms create $n --provider local --key-file $n.key --generate >/dev/null || failed "kms create $n"
done
truncate -s 20M a.img
"$K" -q format a.img --kms a --kms b --kms c --threshold 2 --recovery-key-file a.rec >/dev/null ||
	failed "format 2 of 3"
off=$(cryptsetup luksDump a.img | awk '/^Data segments:/ {d = 1} d && /offset:/ {print $2; exit}')
[ -n "$off" ] || failed "no data segment offset in luksDump"
dd if=/dev/urandom of=a.img bs=1M seek=$((off / 1048576)) count=$(((20971520 - off) / 1048576)) \
	conv=notrunc status=none
data_hash() { tail -c +$((off + 1)) a.img | sha256sum | cut -d' ' -f1; }
H0=$(data_hash)
}
dump() { cryptsetup luksDump --dump-json-metadata a.img >dump.json; }
# "keyslots kmscrypt-tokens pending-tokens version:threshold:wraps-of-the-kmscrypt-token"
shape() {
	/usr/bin/python3 - dump.json <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
t = [v for v in j["tokens"].values() if v["type"] == "kmscrypt"]
p = [v for v in j["tokens"].values() if v["type"] == "kmscrypt-pending"]
b = "%s:%s:%s" % (t[0]["version"], t[0].get("threshold"), ",".join(w["kms"] for w in t[0].get("wraps", []))) if t else "-"
print(len(j["keyslots"]), len(t), len(p), b)
PY
}
recovery_opens() { cryptsetup open --test-passphrase a.img --key-file a.rec >/dev/null 2>&1; }
ms_sleep() { sleep "0.$(printf %03d $((RANDOM % 400)))"; }

KILLED=0
run_killed() {
	local points=$1 rc=0 pid
	shift 2
	if [ $((RUN % 2)) = 1 ]; then
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

bad=0
problem() {
	bad=$((bad + 1))
	failed "$1 (run $RUN): $2"
}
check_opens() {
	recovery_opens || problem "$1" "the recovery key does not open the volume"
	"$K" check a.img >/dev/null 2>err.txt || problem "$1" "kmscrypt check fails: $(cat err.txt)"
}
check_clean() { # WHAT
	local s
	dump
	s=$(shape)
	case "$s" in
	"2 1 0 2:2:a,b,c" | "2 1 0 2:2:a,b,d") ;;
	*) problem "$1" "header after the re-run is '$s', expected '2 1 0 2:2:a,b,c|d' (keyslots, kmscrypt tokens, markers, version:threshold:KMSs)" ;;
	esac
	[ "$(data_hash)" = "$H0" ] || problem "$1" "the data segment changed"
}

loop_rotate_master() {
KILLED=0 bad=0
for RUN in $(seq 1 "$RUNS"); do
	dump
	if [ $((RUN % 4)) -lt 2 ]; then
		args=()
	elif shape | grep -q ',c$'; then
		args=(--replace c=d)
	else
		args=(--replace d=c)
	fi
	run_killed "rotate-master:recorded rotate-master:token-added rotate-master:old-token-removed" \
		-- rotate-master a.img "${args[@]}"
	check_opens rotate-master
	"$K" rotate-master a.img >out.txt 2>err.txt ||
		problem rotate-master "the re-run fails: $(cat err.txt)"
	grep -qF "proven to open" out.txt || problem rotate-master "the re-run proved nothing: $(cat out.txt)"
	check_clean rotate-master
done
[ "$bad" = 0 ] && pass "rotate-master (2 of 3): $RUNS runs ($KILLED killed mid-way): always opens (kmscrypt, recovery key), re-run completes, data unchanged"
}

loop_rotate_secret() {
KILLED=0 bad=0
points="rotate-secret:marked rotate-secret:keyslot-added rotate-secret:token-added"
points+=" rotate-secret:old-token-removed rotate-secret:old-keyslot-destroyed"
for RUN in $(seq 1 "$RUNS"); do
	run_killed "$points" -- rotate-secret a.img
	check_opens rotate-secret
	"$K" rotate-secret a.img >out.txt 2>err.txt || problem rotate-secret "the re-run fails: $(cat err.txt)"
	grep -qF "proven to open" out.txt || problem rotate-secret "the re-run proved nothing: $(cat out.txt)"
	check_clean rotate-secret
done
[ "$bad" = 0 ] && pass "rotate-secret (2 of 3): $RUNS runs ($KILLED killed mid-way): always opens (kmscrypt, recovery key), re-run completes, keyslot count stays 2, data unchanged"
}

for loop in rotate_master rotate_secret; do
	mkdir "$tmp/$loop"
	(
		cd "$tmp/$loop" && setup && "loop_$loop"
		echo "$T_PASS $T_FAIL" >counts
	) >"$tmp/$loop.log" 2>&1 &
done
wait
for loop in rotate_master rotate_secret; do
	grep -vE '^(.*line [0-9]+: +[0-9]+ Killed .*)$' "$tmp/$loop.log"
	read -r p f <"$tmp/$loop/counts" 2>/dev/null || { p=0 f=1; echo "FAIL - $loop: did not finish"; }
	T_PASS=$((T_PASS + p)) T_FAIL=$((T_FAIL + f))
done
echo "# $((2 * RUNS)) runs in ${SECONDS}s"
finish
