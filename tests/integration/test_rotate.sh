#!/bin/bash
# rotate-master and rotate-secret (issue 11, items 1, 2, 6): a new master key version on the Vault
# fake (transit rotate) and another configuration with --kms; the history of bindings in the state
# record and the audit log; a header backup taken before the rotation still opens while the KMS
# keeps the old version and stops when it does not; kms delete refuses a configuration a volume was
# ever wrapped under; the unlock path (check) falls back to the second token of an interrupted
# rotation; an invalid version-2 token is refused (valid multi-KMS rotations:
# test_rotate_multi.sh).  Image files, no device-mapper.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
. "$here/../lib/assert.sh"
. "$src/tests/fakes/lib.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}

fakes_setup >/dev/null
tmp=$FAKES_WORK
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
ROOT=hvs.kmscrypt-test-root
fake_start vault fake_vault.py --root-token $ROOT --state "$tmp/vault.json" || exit 1
ADDR=https://127.0.0.1:$(fake_port vault)
ctl() { fake_ctl vault /control "$1"; }
printf %s "$ROOT" >root.tok
state() { cat "state/volumes/$(cryptsetup luksUUID "$1").json"; }
tokens() { cryptsetup luksDump "$1" | grep -cE "^  [0-9]+: kmscrypt\$"; }
# tok DEVICE EXPR: EXPR on the first kmscrypt token (t) of DEVICE's header
tok() { json_get "$(cryptsetup luksDump --dump-json-metadata "$1")" \
	"[$2 for i, t in sorted(j['tokens'].items(), key=lambda x: int(x[0])) if t['type'] == 'kmscrypt'][0]"; }

ctl '{"op":"create_key","name":"vol"}' >/dev/null
expect_rc 0 "kms create (vault)" -- "$K" kms create vt --provider vault --address "$ADDR" --ca-file "$FAKES_CA" \
	--key-name vol --token-file root.tok
expect_rc 0 "kms create lab (local)" -- "$K" kms create lab --provider local --key-file lab.key --generate
truncate -s 20M v.img
expect_rc 0 "format on vault" -- "$K" -q format v.img --kms vt --recovery-key-file v.rec
cryptsetup luksHeaderBackup v.img --header-backup-file v1.hdr

# ---- a new key version at the KMS: rotate-master rewraps under it
ctl '{"op":"rotate_key","name":"vol"}' >/dev/null
expect_rc 0 "rotate-master after the Vault key rotated" -- "$K" rotate-master v.img --json
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['old']['key_version'], j['volumes'][0]['new']['key_version'])")" \
	"('1', '2')" "rotate-master: key version 1 -> 2"
expect_eq "$(tok v.img "t['key_version']")" 2 \
	"the token in the header names version 2"
expect_eq "$(tokens v.img)" 1 "one kmscrypt token after the rotation"
expect_rc 0 "check after rotate-master" -- "$K" check v.img
expect_eq "$(json_get "$(state v.img)" "[(h['kms'], h['key_version'], 'until' in h) for h in j['history']]")" \
	"[('vt', '1', True), ('vt', '2', False)]" "state history: version 1 (ended) and version 2 (current)"
expect_eq "$(grep '"action":"rotate-master"' state/audit.log | tail -n1 | json_get "$(cat)" \
	"(j['old']['key_version'], j['new']['key_version'], j['volume'])")" \
	"('1', '2', '$(cryptsetup luksUUID v.img)')" "audit record: volume, old and new binding"

# ---- the header backup of before: opens while Vault keeps version 1
cp v.img old.img
cryptsetup -q luksHeaderRestore old.img --header-backup-file v1.hdr
expect_rc 0 "the old header backup opens through version 1" -- "$K" check old.img
ctl '{"op":"key_config","name":"vol","min_decryption_version":2}' >/dev/null
expect_rc 3 "... and no longer once Vault refuses version 1" -- "$K" check old.img
expect_rc 0 "the rotated volume still opens (version 2)" -- "$K" check v.img
expect_rc 0 "the old header backup still opens with the recovery key" -- \
	cryptsetup open --test-passphrase old.img --key-file v.rec
rm old.img

# ---- another configuration: --kms
expect_rc 0 "rotate-master --kms lab" -- "$K" rotate-master v.img --kms lab
expect_out "-> KMS 'lab'" "says where it moved"
expect_rc 0 "check through lab" -- "$K" check v.img
expect_out "KMS 'lab'" "bound to lab now"
expect_eq "$(json_get "$(state v.img)" "[h['kms'] for h in j['history']]")" "['vt', 'vt', 'lab']" \
	"history keeps every configuration and version"
expect_rc 7 "kms delete vt refused: a volume was wrapped under it" -- "$K" kms delete vt
expect_out "$(cryptsetup luksUUID v.img)" "the refusal names the volume"
expect_rc 0 "rotate-master --all" -- "$K" rotate-master --all
expect_rc 6 "rotate-master --kms of an unknown configuration" -- "$K" rotate-master v.img --kms nosuch
expect_rc 2 "rotate-master without a target" -- "$K" rotate-master
expect_rc 6 "rotate-master of a missing device" -- "$K" rotate-master nosuch.img

# ---- rotate-secret: a new keyslot, the old one gone, the recovery key untouched
ks_before=$(cryptsetup luksDump v.img | grep -cE '^  [0-9]+: luks2$')
old_ks=$(tok v.img "t['keyslots'][0]")
expect_rc 0 "rotate-secret" -- "$K" rotate-secret v.img --json
new_ks=$(json_get "$OUT" "j['volumes'][0]['new']['keyslot']")
expect_eq "$(json_get "$OUT" "j['volumes'][0]['old']['keyslot']")" "$old_ks" "rotate-secret: the old keyslot"
[ "$new_ks" != "$old_ks" ] && pass "rotate-secret: a new keyslot ($old_ks -> $new_ks)" || failed "same keyslot $new_ks"
expect_eq "$(cryptsetup luksDump v.img | grep -cE '^  [0-9]+: luks2$')" "$ks_before" "the keyslot count does not grow"
expect_rc 0 "check after rotate-secret" -- "$K" check v.img
expect_rc 0 "the recovery key still opens" -- cryptsetup open --test-passphrase v.img --key-file v.rec
expect_eq "$(json_get "$(cryptsetup luksDump --dump-json-metadata v.img)" "'$old_ks' in j['keyslots']")" False \
	"the old keyslot is gone"

# ---- an interrupted rotate-master leaves two tokens; check (the unlock path) uses either
"$K" kms create lab3 --provider local --key-file lab3.key --generate >/dev/null
rc=0
{ KMSCRYPT_TEST_CRASH_AT=rotate-master:token-added "$K" rotate-master v.img --kms lab3 >/dev/null 2>&1 || rc=$?; } 2>/dev/null
expect_eq "$rc" 137 "rotate-master killed after the new token was added"
expect_eq "$(tokens v.img)" 2 "two kmscrypt tokens: old (lab) and new (lab3)"
# the first of the two (by token id) loses its KMS key: check must fall back to the other
first=$(tok v.img "t['kms']")
other=$([ "$first" = lab ] && echo lab3 || echo lab)
mv "$first.key" away.key
expect_rc 0 "with the KMS of the first token ($first) gone, check opens through the other" -- "$K" check v.img
expect_out "KMS '$other'" "... the $other token"
mv away.key "$first.key"
expect_rc 0 "the re-run completes" -- "$K" rotate-master v.img --kms lab3
expect_eq "$(tokens v.img)" 1 "one token left"

# ---- AWS (the fake has no key versions: AWS rotates key material behind the same key id): from
# Vault to an AWS key with --kms, then to another AWS key; the header backup of before needs key A
fake_start aws fake_aws_kms.py --state "$tmp/aws.json" || exit 1
actl() { fake_ctl aws /control "$1"; }
KEY_A=$(json_get "$(actl '{"op":"create_key","description":"a"}')" "j['KeyId']")
KEY_B=$(json_get "$(actl '{"op":"create_key","description":"b"}')" "j['KeyId']")
printf %s fakeSecretKeyForKmscryptTests0000000001 >sk
aws=(--provider aws --region us-east-1 --endpoint "https://127.0.0.1:$(fake_port aws)" --ca-file "$FAKES_CA"
	--access-key-id AKIAFAKEKMS000000001 --secret-access-key-file sk)
expect_rc 0 "kms create awsa" -- "$K" kms create awsa "${aws[@]}" --key-id "$KEY_A"
expect_rc 0 "kms create awsb" -- "$K" kms create awsb "${aws[@]}" --key-id "$KEY_B"
truncate -s 20M w.img
"$K" -q format w.img --kms vt --recovery-key-file w.rec >/dev/null 2>&1
expect_rc 0 "rotate-master from Vault to AWS key A" -- "$K" rotate-master w.img --kms awsa --json
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['old']['kms'], j['volumes'][0]['new']['kms'])")" "('vt', 'awsa')" \
	"old and new configuration"
expect_rc 0 "rotate-master on AWS (same key)" -- "$K" rotate-master w.img
cryptsetup luksHeaderBackup w.img --header-backup-file wa.hdr
expect_rc 0 "rotate-master to AWS key B" -- "$K" rotate-master w.img --kms awsb
expect_eq "$(tok w.img "t['key_id']")" "$(json_get "$(state w.img)" "j['history'][-1]['key_id']")" \
	"the current history entry is the token's key"
expect_eq "$(json_get "$(state w.img)" "[h['kms'] for h in j['history']]")" "['vt', 'awsa', 'awsb']" \
	"history: vt, awsa, awsb"
actl "{\"op\":\"disable_key\",\"key_id\":\"$KEY_A\"}" >/dev/null
expect_rc 0 "key A disabled: the rotated volume opens through key B" -- "$K" check w.img
cp w.img wold.img
cryptsetup -q luksHeaderRestore wold.img --header-backup-file wa.hdr
expect_rc 3 "... the header backup of before needs key A (denied)" -- "$K" check wold.img
expect_rc 7 "kms delete awsa refused" -- "$K" kms delete awsa
rm wold.img
{ KMSCRYPT_TEST_CRASH_AT=rotate-master:token-added "$K" rotate-master w.img >/dev/null 2>&1; } 2>/dev/null
expect_eq "$(tokens w.img)" 2 "an interrupted rotate-master: two tokens"
expect_rc 0 "unbind" -- "$K" -q unbind w.img
expect_eq "$(tokens w.img)" 0 "unbind removes both"
expect_eq "$(grep '"action":"unbind"' state/audit.log | tail -n1 | json_get "$(cat)" "j['old']['kms']")" awsb \
	"the unbind audit record names the old binding"
expect_eq "$(cryptsetup luksDump w.img | grep -cE '^  [0-9]+: luks2$')" 1 "only the recovery keyslot is left"

# ---- a revoked volume and an invalid version-2 token (no threshold, no wraps) are refused
truncate -s 20M m.img
"$K" -q format m.img --kms lab --no-recovery-key >/dev/null 2>&1
cryptsetup token export m.img --token-id 0 | sed 's/"version":1/"version":2/; s/"version": 1/"version": 2/' >v2.json
cryptsetup token remove m.img --token-id 0
cryptsetup token import m.img --json-file v2.json --key-slot 0 --token-id 0
expect_rc 8 "rotate-master refuses an invalid version-2 token" -- "$K" rotate-master m.img
expect_out "is invalid: field 'threshold'" "... and says so"
expect_rc 8 "so does rotate-secret" -- "$K" rotate-secret m.img
hist=$(json_get "$(state v.img)" "len(j['history'])")
expect_rc 0 "revoke" -- "$K" revoke v.img --reason drill
expect_eq "$(json_get "$(state v.img)" "(len(j['history']), j['revoked'])")" "($hist, True)" \
	"the history survives other commands' state saves"
expect_rc 7 "rotate-master refuses a revoked volume" -- "$K" rotate-master v.img
expect_rc 7 "rotate-secret refuses a revoked volume" -- "$K" rotate-secret v.img
finish
