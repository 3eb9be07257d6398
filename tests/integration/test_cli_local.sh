#!/bin/bash
# kmscrypt CLI with the local provider on LUKS2 image files: everything that needs no device-mapper.
# (Activation, revoke and restore of live mappings run in the VM: tests/vm/.)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
hdr_sum() { head -c 16777216 "$1" | sha256sum | cut -d' ' -f1; }

# ---- usage and help
expect_rc 2 "no command is a usage error" -- "$K"
expect_rc 0 "--help" -- "$K" --help
expect_out "Exit status" "overview documents exit codes"
for cmd in kms format bind unbind check unlock lock revoke restore status; do
	expect_rc 0 "$cmd --help" -- "$K" "$cmd" --help
done
expect_rc 2 "unknown command" -- "$K" frobnicate
expect_rc 2 "format without --kms" -- "$K" format x.img
expect_rc 2 "unlock with both DEVICE and --all" -- "$K" unlock /dev/null --all

# ---- KMS configurations
expect_rc 0 "kms create --generate" -- "$K" kms create lab --provider local --key-file lab.key --generate
expect_eq "$(stat -c %a lab.key)" 600 "generated key file is mode 0600"
expect_eq "$(stat -c %s lab.key)" 32 "generated key is 32 bytes"
expect_eq "$(stat -c %a etc/kms/lab.conf)" 600 "configuration file is mode 0600"
expect_rc 7 "kms create of an existing name" -- "$K" kms create lab --provider local --key-file lab.key
expect_rc 7 "--generate never overwrites a key" -- "$K" kms create lab2 --provider local --key-file lab.key --generate
expect_rc 2 "invalid name" -- "$K" kms create ../evil --provider local --key-file lab.key
expect_rc 2 "unknown provider" -- "$K" kms create x --provider nosuch
expect_rc 2 "unknown option for provider" -- "$K" kms create x --provider local --key-file lab.key --region eu
expect_rc 3 "missing key file is denied" -- "$K" kms create x --provider local --key-file nokey
expect_rc 6 "show unknown" -- "$K" kms show nosuch
head -c 31 /dev/urandom >short.key
chmod 600 short.key # key files must be private (test_file_trust.sh)
expect_rc 8 "key file of the wrong size is invalid" -- "$K" kms create short --provider local --key-file short.key
base64 -w0 lab.key >lab.b64
chmod 600 lab.b64
expect_rc 0 "base64 key file accepted" -- "$K" kms create lab64 --provider local --key-file lab.b64
expect_rc 0 "kms list --json" -- "$K" kms list --json
expect_eq "$(json_get "$OUT" "sorted(k['name'] for k in j['configurations'])")" "['lab', 'lab64']" "list names both"
expect_rc 0 "kms show --json" -- "$K" kms show lab --json
expect_eq "$(json_get "$OUT" "j['settings']['key_file']")" "$tmp/lab.key" "show gives the absolute key path"
expect_out "not for production" "show warns about the local provider"
id=$(json_get "$OUT" "j['settings']['key_id']")
expect_rc 0 "lab64 is the same key" -- "$K" kms show lab64 --json
expect_eq "$(json_get "$OUT" "j['settings']['key_id']")" "$id" "raw and base64 files give one key id"
expect_rc 0 "kms check" -- "$K" kms check lab --json
expect_eq "$(json_get "$OUT" "j['ok']")" True "check reports ok"

# edit: credentials only, same key only
cp lab.key lab-copy.key
expect_rc 0 "kms edit to a copy of the key" -- "$K" kms edit lab --key-file lab-copy.key
head -c 32 /dev/urandom >other.key
chmod 600 other.key
cp etc/kms/lab.conf before.conf
expect_rc 3 "kms edit to another key is refused" -- "$K" kms edit lab --key-file other.key
expect_out "is for key $id" "edit names the key it expected"
expect_rc 0 "config unchanged after refused edit" -- cmp before.conf etc/kms/lab.conf
expect_rc 2 "key id is immutable" -- "$K" kms edit lab --key-id sha256:00
expect_rc 2 "edit without options" -- "$K" kms edit lab

# a broken configuration file names the line
printf '[KMS]\nProvider=local\nKeyFile=/x\nBogus=1\n' >etc/kms/broken.conf
expect_rc 8 "broken config" -- "$K" kms show broken
expect_out "broken.conf:4" "error names file and line"
rm etc/kms/broken.conf

# ---- format
truncate -s 40M a.img b.img c.img
expect_rc 0 "format" -- "$K" format a.img --kms lab --label alpha --recovery-key-file a.rec
expect_out "keyslot 0" "format reports the keyslot"
expect_eq "$(stat -c %a a.rec)" 600 "recovery key file mode 0600"
expect_rc 0 "recovery key opens keyslot 1" -- cryptsetup open --test-passphrase --key-slot 1 --key-file a.rec a.img
expect_rc 0 "luksDump shows the token" -- cryptsetup luksDump a.img
expect_out "kmscrypt" "token type kmscrypt"
expect_out "sector: 4096" "4096-byte sectors"
expect_out "Iterations: 1000" "PBKDF2 with 1000 iterations"
expect_rc 7 "format refuses a LUKS device" -- "$K" format a.img --kms lab
expect_out "crypto_LUKS" "refusal names what is there"
expect_rc 7 "recovery key file never overwritten" -- "$K" format b.img --kms lab --recovery-key-file a.rec
mkfs.ext4 -q -F b.img
expect_rc 7 "format refuses a filesystem" -- "$K" format b.img --kms lab </dev/null
expect_out "ext4" "refusal names the filesystem"
expect_rc 0 "format --force" -- "$K" -q format b.img --kms lab --label beta --force
# the KMS is asked first: a failing KMS leaves the device untouched
mv lab-copy.key lab-copy.key.away
expect_rc 3 "format with the KMS denying" -- "$K" format c.img --kms lab
expect_eq "$(head -c 1048576 c.img | tr -d '\0' | wc -c)" 0 "device untouched after KMS failure"
mv lab-copy.key.away lab-copy.key
expect_rc 6 "format with unknown KMS" -- "$K" format c.img --kms nosuch
expect_rc 6 "format a missing device" -- "$K" format nosuch.img --kms lab

# ---- check
expect_rc 0 "check" -- "$K" check a.img --json
expect_eq "$(json_get "$OUT" "j['volumes'][0]['ok']")" True "check --json ok"
mv lab-copy.key lab-copy.key.away
expect_rc 3 "check with the key file gone is denied" -- "$K" check a.img
expect_out "cannot be read" "denial names the cause"
mv lab-copy.key.away lab-copy.key
expect_rc 6 "check of a non-LUKS file" -- "$K" check c.img

# ---- tampered tokens: clear error, header unchanged, recovery key still opens
cryptsetup token export --token-id 0 a.img >tok.json
/usr/bin/python3 - tok.json <<'PY'
import json, sys, base64
t = json.load(open(sys.argv[1]))
b = bytearray(base64.b64decode(t["blob"])); b[20] ^= 1
t["blob"] = base64.b64encode(bytes(b)).decode()
json.dump(t, open("tok-flipped.json", "w"))
t["keyslots"] = ["0"]; t["blob"] = "!!notbase64"
json.dump(t, open("tok-bad.json", "w"))
PY
cp a.img a2.img
cryptsetup token remove --token-id 0 a2.img
cryptsetup token import --token-id 0 --json-file tok-flipped.json a2.img
sum=$(hdr_sum a2.img)
expect_rc 3 "flipped blob is denied" -- "$K" check a2.img
expect_out "does not authenticate" "flipped blob message"
expect_eq "$(hdr_sum a2.img)" "$sum" "header unchanged after failed check"
expect_rc 0 "recovery key still opens the tampered volume" -- cryptsetup open --test-passphrase --key-file a.rec a2.img
cryptsetup token remove --token-id 0 a2.img
cryptsetup token import --token-id 0 --json-file tok-bad.json a2.img
expect_rc 8 "malformed token is invalid" -- "$K" check a2.img
expect_out "not valid base64" "malformed token message"
# token copied from another volume (b.img's token onto a.img's copy)
cryptsetup token export --token-id 0 b.img >tok-b.json
cp a.img a3.img
cryptsetup token remove --token-id 0 a3.img
cryptsetup token import --token-id 0 --json-file tok-b.json a3.img
expect_rc 3 "token copied from another volume is denied" -- "$K" check a3.img

# ---- bind / unbind
truncate -s 40M p.img
printf 'correct horse' >pass.txt
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file pass.txt p.img
printf 'wrong' >wrong.txt
sum=$(hdr_sum p.img)
expect_rc 5 "bind with a wrong key file" -- "$K" bind p.img --kms lab --key-file wrong.txt
expect_out "opens no keyslot" "bind failure message"
expect_eq "$(hdr_sum p.img)" "$sum" "header unchanged after failed bind"
expect_rc 0 "bind" -- "$K" bind p.img --kms lab --key-file pass.txt
expect_rc 0 "check after bind" -- "$K" check p.img
expect_rc 7 "bind twice" -- "$K" bind p.img --kms lab --key-file pass.txt
expect_rc 0 "unbind" -- "$K" -q unbind p.img
expect_rc 6 "check after unbind" -- "$K" check p.img
expect_rc 0 "passphrase still opens after unbind" -- cryptsetup open --test-passphrase --key-file pass.txt p.img
expect_rc 0 "bind from stdin" -- "$K" bind p.img --kms lab64 --key-file - <pass.txt
expect_rc 0 "check after bind from stdin" -- "$K" check p.img
"$K" format c.img --kms lab --no-recovery-key >/dev/null
expect_rc 5 "unbind refuses to remove the only keyslot" -- "$K" unbind c.img
expect_rc 0 "still opens after refused unbind" -- "$K" check c.img

# ---- KMS configuration deletion guarded by usage
expect_rc 7 "kms delete refused while used" -- "$K" kms delete lab
expect_out "$(cryptsetup luksUUID a.img)" "refusal names the volume"
expect_rc 7 "usage survives unbind" -- "$K" kms delete lab64
"$K" kms create spare --provider local --key-file lab.key >/dev/null
expect_rc 0 "kms delete of an unused configuration" -- "$K" kms delete spare
expect_rc 6 "deleted configuration is gone" -- "$K" kms show spare

# ---- revoke of a closed volume: stays locked
expect_rc 0 "revoke a closed volume" -- "$K" revoke "$tmp/a.img" --reason drill
expect_rc 0 "status --json" -- "$K" status "$tmp/a.img" --json
expect_eq "$(json_get "$OUT" "j['volumes'][0]['state']")" revoked-closed "state revoked-closed"
expect_eq "$(json_get "$OUT" "j['volumes'][0]['revoke_reason']")" drill "reason recorded"
expect_rc 7 "unlock of a revoked volume is refused" -- "$K" unlock a.img
expect_out "kmscrypt restore" "refusal says what to do"
expect_rc 0 "audit log records the revoke" -- grep -q '"action":"revoke".*"reason":"drill"' state/audit.log

# ---- a corrupt state file fails closed: it may hold the revoked mark
buuid=$(cryptsetup luksUUID b.img)
cp "state/volumes/$buuid.json" good-state.json
echo '{"uuid": "garbage' >"state/volumes/$buuid.json"
expect_rc 8 "unlock with a corrupt state file is refused" -- "$K" unlock b.img
expect_out "corrupt" "refusal names the corrupt state file"
cp good-state.json "state/volumes/$buuid.json"

# ---- commands that change things serialise on the state-dir lock
flock -x state/lock -c 'sleep 2' &
holder=$!
sleep 0.3
start=$(date +%s%N)
expect_rc 0 "kms create waits for the lock holder" -- "$K" kms create waited --provider local --key-file lab.key
waited=$(( ($(date +%s%N) - start) / 1000000 ))
wait $holder
if [ "$waited" -ge 1200 ]; then pass "second command waited ${waited} ms for the lock"; else failed "second command did not wait for the lock (${waited} ms)"; fi

# ---- no secret in state, audit, or config files
keyhex=$(od -An -tx1 -v lab.key | tr -d ' \n')
if grep -rqa "$(base64 -w0 lab.key)" etc state || grep -rqa "$keyhex" etc state; then
	failed "master key material found in config or state files"
else
	pass "no key material in config or state files"
fi
finish
