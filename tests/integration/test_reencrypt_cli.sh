#!/bin/bash
# kmscrypt reencrypt (issue 11, item 3) on the host, without device-mapper: its argument and refusal
# paths, each leaving the header as it was (image files, local provider). The re-encryption itself
# runs in the VM (tests/vm/test_reencrypt.sh).
#   - usage errors (exit 2), an unknown device (6), a LUKS2 volume without kmscrypt (6);
#   - a volume that is not open is refused (7) and named so, the header unchanged;
#   - --resume with nothing pending succeeds and says so;
#   - a pending re-encryption (kmscrypt's journal token) is shown by status and check, and
#     --resume of a plan that never began removes it and says to start again.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
hdrsum() { cryptsetup luksDump --dump-json-metadata "$1" | sha256sum; }

expect_rc 0 "kms create" -- "$K" kms create lab --provider local --key-file lab.key --generate
truncate -s 40M a.img
expect_rc 0 "format" -- "$K" -q format a.img --kms lab --recovery-key-file a.rec

# ---- usage
expect_rc 2 "no device" -- "$K" reencrypt
expect_out "Usage: kmscrypt reencrypt" "the usage is shown"
expect_rc 2 "two devices" -- "$K" reencrypt a.img a.img
expect_rc 2 "unknown option" -- "$K" reencrypt a.img --frob
expect_out "--frob" "the unknown option is named"
expect_rc 2 "--resume with --recovery-key-file" -- "$K" reencrypt --resume a.img \
	--recovery-key-file a.rec
expect_rc 2 "--recovery-key-file without a value" -- "$K" reencrypt a.img --recovery-key-file
expect_rc 0 "help" -- "$K" reencrypt --help
expect_out "--remove-other-keyslots" "help names --remove-other-keyslots"
expect_out "--resume" "help names --resume"

# ---- not found
expect_rc 6 "unknown device" -- "$K" reencrypt nosuch.img
expect_rc 6 "unknown mapping name" -- "$K" reencrypt nosuch
truncate -s 40M plain.img
printf 'pw' >pw.txt
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file pw.txt plain.img
expect_rc 6 "a LUKS2 volume without kmscrypt" -- "$K" reencrypt plain.img
expect_rc 6 "recovery key file missing" -- "$K" reencrypt a.img --recovery-key-file nosuch.rec
expect_out "nosuch.rec" "the missing file is named"

# ---- refusals change nothing
before=$(hdrsum a.img)
expect_rc 7 "an image file that is not open" -- "$K" reencrypt a.img --recovery-key-file a.rec
expect_out "is not open" "the refusal says it is not open"
expect_out "kmscrypt unlock" "and what to do"
expect_rc 7 "not open, without the recovery key" -- "$K" reencrypt a.img
expect_eq "$(hdrsum a.img)" "$before" "the header is unchanged by the refusals"

# ---- --resume with nothing pending
expect_rc 0 "--resume with nothing pending" -- "$K" reencrypt --resume a.img
expect_out "No re-encryption" "it says nothing is pending"
expect_eq "$(hdrsum a.img)" "$before" "the header is unchanged by --resume"

# ---- a pending plan (the journal token of a run killed before the new keyslot was written)
printf '{"type":"kmscrypt-reencrypt","keyslots":[],"kmscrypt_keyslot":0,"new_keyslot":5,"recovery_new_keyslot":-1,"done":false}' >j.json
cryptsetup token import --json-file j.json a.img
expect_rc 0 "status of a volume with a pending re-encryption" -- "$K" status a.img
expect_out "reencrypt --resume" "status says how to finish it"
expect_eq "$("$K" status a.img --json 2>/dev/null | jq -r '.volumes[0].reencrypt_pending')" true \
	"status --json: reencrypt_pending"
expect_rc 0 "check of a volume with a pending re-encryption" -- "$K" check a.img
expect_out "reencrypt --resume" "check says how to finish it"
expect_rc 7 "--resume of a plan that never began" -- "$K" reencrypt --resume a.img
expect_out "before it began" "it says nothing was changed"
expect_out "again" "and to start again"
expect_eq "$(hdrsum a.img)" "$before" "the journal is gone: the header is as before"
expect_eq "$("$K" status a.img --json 2>/dev/null | jq -r '.volumes[0].reencrypt_pending')" false \
	"status --json: nothing pending any more"

finish
