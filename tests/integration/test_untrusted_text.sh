#!/bin/bash
# Untrusted text never reaches the terminal or the journal raw (issue 8, item 6).  Token fields come
# from any attached disk's header (`unlock --all` scans every block device); a token whose "kms" held
# "lab\n<0>kmscrypt: FORGED" once made a second, emergency-level journal record.  Here stderr is the
# "journal stream" (JOURNAL_STREAM=dev:ino, as systemd sets it), so every record starts with "<N>":
#   - header fields with a newline and ANSI escapes (refused as an invalid token, or escaped: either
#     way one record per message, no raw control byte on stderr or stdout);
#   - a file name with a newline on the command line;
#   - a KMS error message carrying an ESC (the key file path of a configuration).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
ESC=$'\x1b'

# run_journal CMD...: stdout -> out, stderr -> err (the journal stream); rc in $RC
: >err
JS=$(stat -c '%d:%i' err)
run_journal() {
	: >err
	RC=0
	JOURNAL_STREAM=$JS "$@" >out 2>>err || RC=$?
}

# Every line of err is one record with the logger's own prefix; nothing forged, no raw controls.
expect_safe() { # DESCRIPTION MIN_RECORDS
	local n bad
	n=$(wc -l <err)
	if [ "$n" -ge "$2" ]; then pass "$1: $n record(s)"; else failed "$1: expected >= $2 records, got $n: $(cat -A err)"; fi
	bad=$(grep -cvE '^<[1-7]>' err)
	expect_eq "$bad" 0 "$1: every stderr line is a record with the logger's prefix"
	expect_eq "$(grep -c '^<0>' err)" 0 "$1: no emergency-level record"
	expect_eq "$(grep -c 'FORGED' err | tr -d ' ')" "$(grep -c '^<[34]>.*FORGED' err)" \
		"$1: 'FORGED' only ever inside a genuine record"
	expect_eq "$(LC_ALL=C grep -c "[[:cntrl:]]" err)" 0 "$1: no raw control byte on stderr"
	expect_eq "$(LC_ALL=C grep -c "$ESC" out)" 0 "$1: no raw ESC on stdout"
	# a trailing newline ends every record, and there is no stray carriage return
	expect_eq "$(tr -dc '\r' <err | wc -c)" 0 "$1: no carriage return"
}

expect_rc 0 "kms create" -- "$K" kms create lab --provider local --key-file "$tmp/lab.key" --generate
truncate -s 40M a.img
expect_rc 0 "format" -- "$K" format a.img --kms lab --recovery-key-file a.rec

# ---- a token with a newline and a forged "<0>" record in "kms", ANSI escapes in "key_id" and
# "key_version" (the header is anyone's who can write the disk)
cryptsetup token export --token-id 0 a.img >tok.json
/usr/bin/python3 - tok.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["kms"] = "lab\n<0>kmscrypt: FORGED"
t["key_id"] = "\x1b[31mRED\x1b[0m\x1b]0;title\x07"
t["key_version"] = "\r<1>kmscrypt: FORGED too"
json.dump(t, open("evil.json", "w"))
PY
cp a.img e.img
cryptsetup token remove --token-id 0 e.img
cryptsetup token import --token-id 0 --json-file evil.json e.img

run_journal "$K" check e.img
[ "$RC" != 0 ] && pass "check of the forged token fails (exit $RC)" || failed "check of the forged token succeeded"
expect_safe "check e.img" 1
run_journal "$K" status "$tmp/e.img"
expect_safe "status e.img" 0
run_journal "$K" status
expect_safe "status (all volumes)" 0
run_journal "$K" unlock e.img
expect_safe "unlock e.img" 1
# JSON output escapes control characters itself
run_journal "$K" status "$tmp/e.img" --json
expect_safe "status e.img --json" 0

# the same token read through the "kms" field only (no escapes elsewhere)
/usr/bin/python3 - tok.json <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["kms"] = "nosuch\n<0>kmscrypt: FORGED\x1b[2J"
json.dump(t, open("evil2.json", "w"))
PY
cp a.img e2.img
cryptsetup token remove --token-id 0 e2.img
cryptsetup token import --token-id 0 --json-file evil2.json e2.img
run_journal "$K" check e2.img
expect_safe "check e2.img" 1

# ---- a file name with a newline, as given on the command line
run_journal "$K" check $'/tmp/x\n<0>kmscrypt: FORGED\x1b[2J'
expect_eq "$RC" 6 "check of a missing device with a newline in its name: not found"
expect_safe "check of a file name with a newline" 1
expect_eq "$(wc -l <err)" 1 "the file name error is one record"
if grep -qF '<3>Device '\''/tmp/x\n<0>kmscrypt: FORGED\x1b[2J'\'' does not exist' err; then
	pass "the file name is shown escaped, in the one record"
else
	failed "file name not shown escaped: $(cat -A err)"
fi

# ---- a KMS error message that carries an ESC (the key file path of a configuration)
mkdir -p etc/kms
printf '[KMS]\nProvider=local\nKeyFile=%s/no\033[2Jkey\n' "$tmp" >etc/kms/esc.conf
chmod 600 etc/kms/esc.conf
run_journal "$K" kms check esc
[ "$RC" != 0 ] && pass "kms check with a missing key file fails (exit $RC)" || failed "kms check esc succeeded"
expect_safe "kms check esc" 1
if grep -qF 'no\x1b[2Jkey' err; then pass "the KMS message shows the ESC escaped"; else failed "no escaped ESC: $(cat -A err)"; fi
run_journal "$K" kms show esc
expect_safe "kms show esc" 0
if grep -qF 'no\x1b[2Jkey' out; then pass "kms show prints the path escaped"; else failed "kms show: $(cat -A out)"; fi

finish
