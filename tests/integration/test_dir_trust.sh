#!/bin/bash
# The state and configuration directories are trusted only when root alone can change them (issue 8,
# item 10), as OpenSSH's StrictModes does for what it trusts: owned by root, not writable by group or
# others, not a symbolic link; otherwise every command refuses (exit 1) and names the fix.  Only the
# directory itself is checked: a sticky world-writable parent such as /tmp is fine.  The lock and
# audit.log are opened relative to the state dir with O_NOFOLLOW: a symbolic link planted as either
# is refused and its target left alone.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
state2=
trap 'rm -rf "$tmp" ${state2:+"$state2"}' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

expect_rc 0 "kms create (creates the config and state dirs)" -- "$K" kms create lab --provider local \
	--key-file "$tmp/lab.key" --generate
expect_eq "$(stat -c '%a %u' state etc etc/kms)" "700 0
700 0
700 0" "dirs created mode 0700, owned by root"

# ---- state dir writable by others or group, or owned by someone else
chmod 0777 state
expect_rc 1 "state dir mode 0777: refused" -- "$K" status
expect_out "State dir '$tmp/state' is writable by group or others (mode 0777)" "message says what is wrong"
expect_out "run 'chmod go-w $tmp/state'" "message names the fix"
expect_rc 1 "kms list refused too" -- "$K" kms list
expect_rc 1 "kms create refused too" -- "$K" kms create other --provider local --key-file "$tmp/lab.key"
expect_rc 1 "nothing was created" -- test -e etc/kms/other.conf
chmod 1777 state
expect_rc 1 "state dir mode 1777 (sticky): still refused" -- "$K" status
chmod 0770 state
expect_rc 1 "state dir mode 0770: refused" -- "$K" status
expect_out "(mode 0770)" "group write named"
chmod 0755 state
expect_rc 0 "state dir mode 0755: fine" -- "$K" status
chmod 0700 state
chown 65534 state
expect_rc 1 "state dir owned by uid 65534: refused" -- "$K" status
expect_out "is owned by uid 65534, not root" "owner named"
expect_out "chown root:root $tmp/state" "owner fix named"
chown 0 state

# ---- configuration dir and its kms/
chmod 0777 etc
expect_rc 1 "config dir mode 0777: refused" -- "$K" kms show lab
expect_out "Configuration dir '$tmp/etc' is writable by group or others" "config dir named"
chmod 0700 etc
chmod 0722 etc/kms
expect_rc 1 "kms/ mode 0722: refused" -- "$K" kms show lab
expect_out "KMS configuration dir '$tmp/etc/kms' is writable by group or others (mode 0722)" "kms dir named"
expect_out "chmod go-w $tmp/etc/kms" "kms dir fix named"
chmod 0700 etc/kms
expect_rc 0 "fixed: kms show works" -- "$K" kms show lab

# ---- symbolic links: the dir itself, the lock, audit.log
mv state real-state
ln -s real-state state
expect_rc 1 "state dir that is a symbolic link: refused" -- "$K" status
expect_out "is a symbolic link" "message says so"
rm state
mv real-state state

ln -s "$tmp/lock-target" state/lock.new
rm -f state/lock
mv state/lock.new state/lock
expect_rc 1 "lock that is a symbolic link: refused" -- "$K" kms create l2 --provider local --key-file "$tmp/lab.key"
expect_out "'$tmp/state/lock' is a symbolic link" "message names the lock"
expect_rc 1 "the link's target was not created" -- test -e lock-target
expect_rc 1 "nothing was created" -- test -e etc/kms/l2.conf
rm state/lock

printf 'precious\n' >victim
sum=$(sha256sum <victim)
ln -s "$tmp/victim" state/audit.log.new
rm -f state/audit.log
mv state/audit.log.new state/audit.log
"$K" kms create l3 --provider local --key-file "$tmp/lab.key" >/dev/null 2>&1
expect_eq "$(sha256sum <victim)" "$sum" "audit.log that is a symbolic link: its target is untouched"
expect_eq "$(stat -c %F state/audit.log)" "symbolic link" "the link is left as it was"
rm state/audit.log
expect_rc 0 "kms create with a regular audit.log" -- "$K" kms create l4 --provider local --key-file "$tmp/lab.key"
expect_rc 0 "the record is there" -- grep -q '"action":"kms-create","kms":"l4"' state/audit.log
expect_eq "$(stat -c %a state/audit.log)" 600 "audit.log mode 0600"

# ---- parents are not checked: a sticky world-writable parent (as /tmp) is fine
mkdir -m 1777 sticky
expect_rc 0 "state dir in a mode 1777 parent" -- env KMSCRYPT_STATE_DIR="$tmp/sticky/state" "$K" kms create s1 \
	--provider local --key-file "$tmp/lab.key"
state2=$(mktemp -d /tmp/kmscrypt-state.XXXXXX)
expect_rc 0 "state dir directly in /tmp" -- env KMSCRYPT_STATE_DIR="$state2" "$K" kms create s2 \
	--provider local --key-file "$tmp/lab.key"
expect_rc 0 "its audit record" -- grep -q '"kms":"s2"' "$state2/audit.log"

finish
