#!/bin/bash
# revoke stops a running `kmscrypt reencrypt` of the same volume (it holds the state lock for its
# whole run and would load the keys again): the run is recorded in <state>/reencrypt.run; revoke
# sends it SIGTERM, SIGKILL after 10 s, and goes on once it is gone.  A stale record (dead PID,
# PID reused) is ignored.  Here a process holding the state lock stands in for the re-encryption
# (image files, no device-mapper); the real one: tests/vm/test_revoke_reencrypt.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
holder=
kids=()
trap '[ -n "$holder" ] && kill -9 "$holder" 2>/dev/null; kill "${kids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

"$K" kms create lab --provider local --key-file lab.key --generate >/dev/null
truncate -s 20M a.img b.img c.img
for i in a b c; do "$K" format $i.img --kms lab --no-recovery-key >/dev/null; done
auuid=$(cryptsetup luksUUID a.img)
buuid=$(cryptsetup luksUUID b.img)
cuuid=$(cryptsetup luksUUID c.img)

starttime() { local f; read -r -a f <"/proc/$1/stat"; echo "${f[21]}"; }
# record PID UUID DEVICE: what `kmscrypt reencrypt` writes while it runs
record() { echo "$1 $(starttime "$1") $2 kv $3" >state/reencrypt.run; }
# hold [ignore-term]: a process holding the state lock (flock -o: only flock itself holds it)
hold() {
	if [ "${1:-}" = ignore-term ]; then
		(trap '' TERM; exec flock -o state/lock sleep 300) >/dev/null 2>&1 &
	else
		flock -o state/lock sleep 300 >/dev/null 2>&1 &
	fi
	holder=$!
	for _ in $(seq 50); do grep -q ":$(stat -c %i state/lock) " /proc/locks && break; sleep 0.1; done
	read -r -a k <"/proc/$holder/task/$holder/children" || true
	kids+=("${k[@]}")
}

# ---- SIGTERM: it stops, revoke goes on at once
hold
record "$holder" "$auuid" "$tmp/a.img"
t0=$SECONDS
expect_rc 0 "revoke while a re-encryption of it holds the lock" -- "$K" revoke "$tmp/a.img"
expect_out "Stopping the re-encryption" "revoke says it stops the re-encryption"
expect_out "Revoked" "and revokes"
expect_eq "$((SECONDS - t0 < 20))" 1 "well before the 120 s lock timeout ($((SECONDS - t0)) s)"
expect_rc 1 "the re-encryption process is gone" -- kill -0 "$holder"
wait "$holder" 2>/dev/null
holder=

# ---- a stale record (PID gone, or reused by another process) is left alone
sleep 300 >/dev/null 2>&1 &
p=$!
echo "$p 1 $buuid kv $tmp/b.img" >state/reencrypt.run # start time does not match: reused
expect_rc 0 "revoke with a stale record" -- "$K" revoke b.img
expect_not_out "Stopping" "a process whose start time differs is not signalled"
expect_rc 0 "that process lives on" -- kill -0 "$p"
kill "$p"

# ---- SIGTERM ignored: SIGKILL after 10 s (the real one is crash-safe and resumable)
hold ignore-term
record "$holder" "$cuuid" "$tmp/c.img"
expect_rc 0 "revoke when the re-encryption ignores SIGTERM" -- "$K" revoke "$tmp/c.img"
expect_out "killing it" "revoke says it kills it"
expect_rc 1 "the re-encryption process is gone" -- kill -0 "$holder"
wait "$holder" 2>/dev/null
holder=
finish
