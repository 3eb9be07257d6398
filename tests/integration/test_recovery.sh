#!/bin/bash
# A way back when the KMS is gone (issue 12, item 2), on image files with the local provider:
#   - format adds a recovery keyslot by default: a 256-bit key in modhex (8 groups of 8), printed
#     once on stdout with a warning on stderr, or in --json, or written to --recovery-key-file;
#     it opens the volume (cryptsetup open --test-passphrase); --no-recovery-key leaves one keyslot;
#   - the runbook of kmscrypt(8) RECOVERY: KMS key destroyed -> unbind -> bind to a new KMS with
#     the recovery key; a changed LUKS UUID breaks the binding and is re-bound the same way;
#   - kmscrypt-provision requires a recovery key destination and escrows the key to that file.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
hook=$(cd "$here/../.." && pwd)/scripts/cloud-init/kmscrypt-provision
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
modhex='[cbdefghijklnrtuv]'
keyre="^($modhex{8}-){7}$modhex{8}\$"
nslots() { cryptsetup luksDump "$1" | grep -cE '^  [0-9]+: luks2'; }
opens() { # DEVICE KEYSLOT KEY: does KEY (typed as a passphrase) open KEYSLOT?
	printf '%s' "$3" | cryptsetup open --test-passphrase --key-slot "$2" --key-file - "$1"
}

expect_rc 0 "kms create" -- "$K" kms create lab --provider local --key-file lab.key --generate
expect_rc 0 "kms create (the new KMS)" -- "$K" kms create new --provider local --key-file new.key \
	--generate

# ---- printed once on stdout, by default
truncate -s 40M a.img
rc=0
"$K" format a.img --kms lab >a.out 2>a.err </dev/null || rc=$?
expect_eq "$rc" 0 "format without recovery options"
key=$(sed -n 's/^    //p' a.out)
expect_eq "$(grep -cE "$keyre" <<<"$key")" 1 "stdout holds one recovery key: 8 groups of 8 modhex"
OUT=$(<a.err)
expect_out "Store the recovery key" "stderr warns to store it"
expect_not_out "$key" "the key is not on stderr"
expect_eq "$(nslots a.img)" 2 "two keyslots: kmscrypt and recovery"
expect_rc 0 "the printed recovery key opens keyslot 1" -- opens a.img 1 "$key"
expect_rc 2 "it does not open keyslot 0" -- opens a.img 0 "$key"
expect_rc 0 "and the KMS still opens keyslot 0" -- "$K" check a.img
OUT=$(cat state/audit.log 2>/dev/null)
expect_not_out "$key" "the recovery key is not in the audit log"

# with -q (batch mode, errors only) the key is still printed: it is the only copy
truncate -s 40M q.img
OUT=$("$K" -q format q.img --kms lab 2>/dev/null </dev/null)
expect_eq "$(sed -n 's/^    //p' <<<"$OUT" | grep -cE "$keyre")" 1 "-q still prints the recovery key"

# ---- --json
truncate -s 40M j.img
expect_rc 0 "format --json" -- "$K" format j.img --kms lab --json
truncate -s 40M j2.img
json=$("$K" format j2.img --kms lab --json 2>/dev/null)
jkey=$(json_get "$json" "j['volumes'][0]['recovery_key']")
expect_eq "$(grep -cE "$keyre" <<<"$jkey")" 1 "--json carries recovery_key"
expect_eq "$(json_get "$json" "j['volumes'][0]['recovery_keyslot']")" 1 "--json names the recovery keyslot"
expect_rc 0 "the JSON recovery key opens keyslot 1" -- opens j2.img 1 "$jkey"

# ---- --recovery-key-file
truncate -s 40M f.img
expect_rc 0 "format --recovery-key-file" -- "$K" format f.img --kms lab --recovery-key-file f.rec
expect_eq "$(stat -c %a f.rec)" 600 "recovery key file mode 0600"
expect_eq "$(grep -cE "$keyre" f.rec)" 1 "the file holds one modhex recovery key"
expect_not_out "$(<f.rec)" "the key in the file is not printed"
expect_rc 0 "the file's key opens keyslot 1" -- \
	cryptsetup open --test-passphrase --key-slot 1 --key-file f.rec f.img

# ---- --no-recovery-key
truncate -s 40M n.img
expect_rc 0 "format --no-recovery-key" -- "$K" format n.img --kms lab --no-recovery-key
expect_out "has no recovery key" "--no-recovery-key warns"
expect_eq "$(nslots n.img)" 1 "--no-recovery-key leaves one keyslot"
truncate -s 40M x.img
expect_rc 2 "--no-recovery-key with --recovery-key-file" -- \
	"$K" format x.img --kms lab --no-recovery-key --recovery-key-file x.rec
expect_eq "$(tr -d '\0' <x.img | wc -c)" 0 "device untouched after the usage error"

# ---- runbook: the KMS key is destroyed -> unbind -> bind to a new KMS with the recovery key
mv lab.key lab.key.destroyed
expect_rc 3 "the KMS key is gone: check is denied" -- "$K" check f.img
expect_rc 0 "runbook: unbind the dead binding (-q)" -- "$K" -q unbind f.img
expect_rc 0 "runbook: bind to the new KMS with the recovery key" -- \
	"$K" bind f.img --kms new --key-file f.rec
expect_rc 0 "runbook: the new KMS opens the volume" -- "$K" check f.img
expect_rc 0 "runbook: the recovery key still opens it" -- \
	cryptsetup open --test-passphrase --key-file f.rec f.img
mv lab.key.destroyed lab.key

# ---- a changed LUKS UUID (cryptsetup luksUUID, cloning) breaks the binding; re-bind
cp f.img clone.img
expect_rc 0 "the clone gets a new UUID" -- cryptsetup luksUUID -q --uuid "$(cat /proc/sys/kernel/random/uuid)" clone.img
expect_rc 3 "the old token does not authenticate under the new UUID" -- "$K" check clone.img
expect_rc 0 "re-bind: unbind" -- "$K" -q unbind clone.img
expect_rc 0 "re-bind: bind with the recovery key" -- "$K" bind clone.img --kms new --key-file f.rec
expect_rc 0 "the re-bound clone checks" -- "$K" check clone.img

# ---- migrating an existing LUKS volume: bind with its passphrase
truncate -s 40M m.img
printf 'correct horse' >pass.txt
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file pass.txt m.img
expect_rc 0 "migrate: bind an existing LUKS2 volume with its passphrase" -- \
	"$K" bind m.img --kms new --key-file pass.txt
expect_rc 0 "migrate: the KMS opens it" -- "$K" check m.img

# ---- the provisioning hook names where the recovery key goes
expect_rc 2 "hook without --recovery-key-file or --no-recovery-key" -- \
	"$hook" --device /dev/null --kms lab --mount /srv/x
expect_out "--recovery-key-file" "the hook says which option is missing"
expect_rc 2 "hook with a relative recovery key path" -- \
	"$hook" --device /dev/null --kms lab --mount /srv/x --recovery-key-file rel.key
# a failing kmscrypt is loud, not taken for "nothing there" (a stand-in that fails with exit 5)
printf '#!/bin/sh\necho "kmscrypt: boom" >&2\nexit 5\n' >fail.sh
chmod +x fail.sh
expect_rc 1 "hook stops when kmscrypt fails" -- env KMSCRYPT="$tmp/fail.sh" "$hook" \
	--device /dev/null --kms lab --mount /srv/x --wait 0 --no-recovery-key
expect_out "kmscrypt: boom" "the hook shows kmscrypt's error"
expect_out "failed (exit 5)" "the hook says what failed"
if [ "$(id -u)" = 0 ] && truncate -s 40M hook.img &&
	loopdev=$(losetup --find --show hook.img 2>/dev/null); then
	trap 'losetup -d "$loopdev"; rm -rf "$tmp"' EXIT
	# everything up to unlock (no device-mapper needed for format): stop the hook at unlock
	# shellcheck disable=SC2016  # $1 and $@ belong to the stand-in script
	printf '#!/bin/sh\n[ "$1" = unlock ] && { echo "stop at unlock" >&2; exit 1; }\nexec "%s" "$@"\n' \
		"$K" >k.sh
	chmod +x k.sh
	expect_rc 1 "hook formats (stopped at unlock by the test)" -- env KMSCRYPT="$tmp/k.sh" "$hook" \
		--device "$loopdev" --kms lab --mount "$tmp/mnt" --fstab "$tmp/fstab" --no-enable \
		--recovery-key-file "$tmp/escrow/dir/hook.key"
	expect_out "written to '$tmp/escrow/dir/hook.key'" "the hook says where the key went"
	expect_eq "$(stat -c %a "$tmp/escrow/dir")" 700 "the escrow directory is mode 0700"
	expect_eq "$(stat -c %a "$tmp/escrow/dir/hook.key")" 600 "the escrowed key is mode 0600"
	expect_rc 0 "the escrowed key opens the provisioned disk" -- cryptsetup open --test-passphrase \
		--key-slot 1 --key-file "$tmp/escrow/dir/hook.key" "$loopdev"
else
	echo "skip - no loop device here: escrow by the hook is covered by tests/vm/test_cloud_init.sh"
fi

finish
