#!/bin/bash
# Exit codes by cause, advice by cause (issue 8, item 11):
#   - not root: "must run as root", exit 1, not "KMS denied" (3) or "not found" (6); help and
#     --version still work;
#   - a local key file that exists but cannot be read for lack of permission (here: root without
#     CAP_DAC_OVERRIDE, as under kmscrypt-unlock.service's CapabilityBoundingSet) names the file,
#     exit 1; a missing key file stays "denied" (3: the key is gone);
#   - a tampered or copied token says so and points to the recovery key, not to the KMS.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
# root, without the capabilities that let root read anyone's files
nodac=(setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-dac_override,-dac_read_search)

expect_rc 0 "kms create" -- "$K" kms create lab --provider local --key-file "$tmp/lab.key" --generate
truncate -s 40M a.img b.img
expect_rc 0 "format a" -- "$K" format a.img --kms lab --recovery-key-file a.rec
expect_rc 0 "format b" -- "$K" format b.img --kms lab

# ---- not root
for cmd in "status" "kms list" "kms show lab" "check $tmp/a.img" "unlock --all" "revoke --all"; do
	# shellcheck disable=SC2086
	expect_rc 1 "as uid 65534: $cmd" -- "${nobody[@]}" "$K" $cmd
	expect_out "kmscrypt must run as root" "as uid 65534: $cmd says why"
done
expect_rc 0 "as uid 65534: --help" -- "${nobody[@]}" "$K" --help
expect_rc 0 "as uid 65534: --version" -- "${nobody[@]}" "$K" --version
expect_rc 0 "as uid 65534: status --help" -- "${nobody[@]}" "$K" status --help
expect_rc 0 "as uid 65534: help kms" -- "${nobody[@]}" "$K" help kms
expect_rc 2 "as uid 65534: an unknown command is still a usage error" -- "${nobody[@]}" "$K" frobnicate

# ---- a key file root may not read (owned by another user, mode 0600, no CAP_DAC_OVERRIDE)
expect_rc 0 "as root without CAP_DAC_OVERRIDE, a root-owned key: check works" -- "${nodac[@]}" "$K" check a.img
chown 65534 lab.key
expect_rc 1 "unreadable key file: check fails, not 'denied'" -- "${nodac[@]}" "$K" check a.img
expect_out "cannot read master key file '$tmp/lab.key': Permission denied" "the message names the file and the cause"
expect_out "readable by root" "the hint is about the file"
expect_not_out "restore access" "no advice to restore access at the KMS"
expect_rc 1 "unreadable key file: kms check" -- "${nodac[@]}" "$K" kms check lab
expect_out "cannot read master key file '$tmp/lab.key'" "kms check names the file"
chown 0 lab.key
mv lab.key lab.key.away
expect_rc 3 "missing key file: still denied (the key is gone)" -- "$K" check a.img
mv lab.key.away lab.key

# ---- a tampered or copied token: the recovery key, not the KMS
cryptsetup token export --token-id 0 a.img >tok.json
/usr/bin/python3 - tok.json <<'PY'
import json, sys, base64
t = json.load(open(sys.argv[1]))
b = bytearray(base64.b64decode(t["blob"])); b[20] ^= 1
t["blob"] = base64.b64encode(bytes(b)).decode()
json.dump(t, open("tok-flipped.json", "w"))
PY
cp a.img flipped.img
cryptsetup token remove --token-id 0 flipped.img
cryptsetup token import --token-id 0 --json-file tok-flipped.json flipped.img
expect_rc 3 "flipped blob: denied (as documented)" -- "$K" check flipped.img
expect_out "does not belong to this volume or was modified" "the hint says the token was modified or copied"
expect_out "recovery key" "the hint points to the recovery key"
expect_not_out "restore access" "no advice to restore access at the KMS"
cp b.img copied.img
cryptsetup token remove --token-id 0 copied.img
cryptsetup token import --token-id 0 --json-file tok.json copied.img
expect_rc 3 "token copied from another volume: denied" -- "$K" check copied.img
expect_out "does not belong to this volume or was modified" "the hint says so"
expect_not_out "restore access" "no advice to restore access at the KMS"
# a real denial keeps its advice
mv lab.key lab.key.away
expect_rc 3 "missing key: denied" -- "$K" check a.img
expect_out "restore access" "a real denial still says to restore access at the KMS"
mv lab.key.away lab.key

finish
