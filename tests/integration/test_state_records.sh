#!/bin/bash
# Listing volumes (status, and every --all command) does not open a block device again for each
# saved state record: the scan of /sys/class/block has looked at every non-empty block device, so a
# record whose device is a block device adds nothing but a libcryptsetup open (and its lock file)
# per record -- on a host that bound many volumes over time, most of them detached loop devices.
# Counted with strace: the opens of one block device are the same with 0 and with 64 records naming
# it.
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
finish
