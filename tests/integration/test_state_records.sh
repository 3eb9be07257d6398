#!/bin/bash
# Listing volumes (status, and every --all command) does not open a block device again for each
# saved state record: the scan of /sys/class/block has looked at every non-empty block device, so a
# record whose device is a block device adds nothing but a libcryptsetup open (and its lock file)
# per record -- on a host that bound many volumes over time, most of them detached loop devices.
# Counted with strace: the opens of one block device are the same with 0 and with 64 records naming
# it; lock --all, revoke --all and unlock --all read no record at all.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
command -v strace >/dev/null || { echo "FATAL: strace not found (scripts/install-deps.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A block device node: our own (as root: loop minor 250, detached or not, the count compares), else
# the first one /dev has.
blk=
if [ "$(id -u)" = 0 ] && mknod "$tmp/blk" b 7 250 2>/dev/null; then
	blk=$tmp/blk
else
	for b in /sys/class/block/*; do
		[ -b "/dev/${b##*/}" ] && { blk=/dev/${b##*/}; break; }
	done
fi
[ -n "$blk" ] || { echo "FATAL: no block device node to name in the records" >&2; exit 1; }
echo "# block device named by the records: $blk"

mkdir -p "$tmp/cfg" "$tmp/empty/volumes" "$tmp/many/volumes"
for i in $(seq 1 64); do
	u=$(cat /proc/sys/kernel/random/uuid)
	printf '{"uuid":"%s","device":"%s"}\n' "$u" "$blk" >"$tmp/many/volumes/$u.json"
done

opens() { # STATE_DIR: openat calls of $blk during `status --json`
	# (LeakSanitizer cannot run under ptrace: the ASan stage's leak check is off for this one)
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
		strace -f -qq -e trace=openat,open -o "$tmp/trace" \
		"$K" --config-dir "$tmp/cfg" --state-dir "$1" status --json >"$tmp/out" 2>"$tmp/err"
	echo "rc=$?" >>"$tmp/err"
	grep -cF "\"$blk\"" "$tmp/trace" || true
}
base=$(opens "$tmp/empty")
grep -q "rc=0" "$tmp/err" && pass "status with no records" || failed "status with no records: $(cat "$tmp/err")"
many=$(opens "$tmp/many")
grep -q "rc=0" "$tmp/err" && pass "status with 64 records" || failed "status with 64 records: $(cat "$tmp/err")"
expect_eq "$base" "$many" "opens of $blk with 0 and with 64 records naming it"

# lock --all and revoke --all act on what is open (found by the scan and the live mappings), and
# unlock --all on block devices, all of which the scan has seen: none of them reads a saved record
# (a host keeps one per volume it ever saw; at N = 1 reading 128 of them was most of the
# difference between `lock --all` and a plain close). status still lists them all.
records_read() { # CMD...: state records opened by `kmscrypt CMD` with the 64 records
	ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
		strace -f -qq -e trace=openat,open -o "$tmp/trace" \
		"$K" --config-dir "$tmp/cfg" --state-dir "$tmp/many" "$@" >"$tmp/out" 2>"$tmp/err"
	echo "rc=$?" >>"$tmp/err"
	grep -cE 'volumes/[0-9a-f-]{36}\.json"' "$tmp/trace" || true
}
for cmd in "lock --all" "revoke --all" "unlock --all"; do
	# shellcheck disable=SC2086 # the words of the command
	n=$(records_read $cmd)
	grep -q "rc=0" "$tmp/err" && pass "$cmd with 64 records" || failed "$cmd with 64 records: $(cat "$tmp/err")"
	expect_eq "$n" 0 "state records read by $cmd"
done
n=$(records_read status)
expect_eq "$n" 64 "state records read by status (each listed)"
finish
