#!/bin/bash
# shellcheck disable=SC2034  # OUT is read by expect_out (tests/lib/assert.sh)
# The recovery key escrowed through a second KMS configuration (issue 12, item 2), on image files:
#   - format --kms A --recovery-key-escrow B --recovery-key-file F writes to F (new, mode 0600) the
#     documented envelope (codec/escrow.h) of the recovery key wrapped by B, never the key in clear
#     (not in F, stdout, the audit log); B is refused as one of the volume's own --kms, needs
#     --recovery-key-file, and a B that does not exist leaves the device untouched;
#   - B counts as used by the volume: 'kms delete B' is refused;
#   - the runbook: A's key destroyed -> 'recovery-key show F --device DEV --output KEY' through B ->
#     the key opens the volume -> unbind -> bind to a new KMS -> check;
#   - 'recovery-key show' never prints the key into a pipe without --output; --output - does;
#   - a modified envelope, one whose uuid names another volume, and another volume's envelope
#     for --device are refused with a clear error;
#   - kmscrypt-provision --recovery-key-escrow NAME: the envelope on the provisioned disk; a
#     missing NAME fails loudly and leaves the disk untouched;
#   - the same through the fake Vault (derived key: the binding goes in the key context too) and
#     the fake AWS KMS (the binding in the EncryptionContext).
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
modhex='[cbdefghijklnrtuv]'
keyre="^($modhex{8}-){7}$modhex{8}\$"
env_get() { json_get "$(cat "$1")" "$2"; }
# edit_env IN OUT PYTHON: OUT is envelope IN with the python statement applied to `j`
edit_env() { /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); exec(sys.argv[3]); json.dump(j, open(sys.argv[2], "w"))' "$1" "$2" "$3"; }

expect_rc 0 "kms create a (the volume's KMS)" -- "$K" kms create a --provider local --key-file a.key --generate
expect_rc 0 "kms create b (the escrow)" -- "$K" kms create b --provider local --key-file b.key --generate
expect_rc 0 "kms create new (the replacement)" -- "$K" kms create new --provider local --key-file new.key --generate

# ---- usage: refused before anything is written
truncate -s 40M v.img w.img u.img
expect_rc 2 "--recovery-key-escrow needs --recovery-key-file" -- "$K" format u.img --kms a --recovery-key-escrow b
expect_out "needs --recovery-key-file" "the refusal names the missing option"
expect_rc 2 "--recovery-key-escrow with --no-recovery-key" -- "$K" format u.img --kms a --recovery-key-escrow b --no-recovery-key
expect_rc 2 "the escrow cannot be the volume's own KMS" -- "$K" format u.img --kms a --recovery-key-escrow a --recovery-key-file u.esc
expect_out "is also a --kms of the volume" "the refusal says why"
expect_rc 6 "an escrow configuration that does not exist" -- "$K" format u.img --kms a --recovery-key-escrow nosuch --recovery-key-file u.esc
expect_out "No KMS configuration 'nosuch'" "the refusal names it"
expect_rc 2 "the device is untouched" -- blkid -p u.img
expect_rc 1 "no escrow file written" -- test -e u.esc

# ---- format with the escrow
rc=0
"$K" format v.img --kms a --recovery-key-escrow b --recovery-key-file v.esc >v.out 2>v.err </dev/null || rc=$?
expect_eq "$rc" 0 "format --recovery-key-escrow b"
uuid=$(cryptsetup luksUUID v.img)
expect_eq "$(stat -c %a v.esc)" 600 "the escrow file is mode 0600"
expect_eq "$(env_get v.esc "(j['type'], j['version'], j['purpose'])")" "('kmscrypt-recovery-escrow', 1, 'recovery')" \
	"the envelope: type, version, purpose"
expect_eq "$(env_get v.esc "(j['uuid'], j['kms'], j['provider'])")" "('$uuid', 'b', 'local')" \
	"the envelope: volume UUID, configuration and provider of the escrow"
expect_eq "$(env_get v.esc "sorted(j)")" \
	"['alg', 'blob', 'created', 'device', 'key_id', 'key_version', 'kms', 'provider', 'purpose', 'type', 'uuid', 'version']" \
	"the envelope has the documented members"
OUT=$(cat v.out)
expect_out "wrapped by KMS 'b'" "format says the key is wrapped by b"
expect_eq "$(grep -cE "$modhex{8}-$modhex{8}" v.out v.err v.esc | awk -F: '{s += $2} END {print s}')" 0 \
	"no recovery key in clear on stdout, stderr or in the escrow file"
expect_eq "$(cryptsetup luksDump v.img | grep -cE '^  [0-9]+: luks2')" 2 "two keyslots: kmscrypt and recovery"
expect_rc 7 "kms delete b is refused: the volume's escrow needs it" -- "$K" kms delete b
expect_out "$uuid" "the refusal names the volume"
expect_rc 0 "b is still there" -- test -e etc/kms/b.conf

# ---- the recovery key is never printed into a pipe
rc=0
"$K" recovery-key show v.esc >pipe.out 2>pipe.err </dev/null || rc=$?
expect_eq "$rc" 2 "recovery-key show into a pipe without --output is refused"
expect_eq "$(stat -c %s pipe.out)" 0 "nothing on stdout"
OUT=$(cat pipe.err)
expect_out "--output FILE" "the refusal says what to do"
expect_rc 2 "--json without --output is refused" -- "$K" recovery-key show v.esc --json

# ---- A's key is destroyed: recover through B, open, re-bind to a new KMS
head -c 32 /dev/urandom >a.key
expect_rc 3 "KMS a no longer opens the volume" -- "$K" check v.img
expect_rc 0 "recovery-key show --device --output" -- "$K" recovery-key show v.esc --device v.img --output v.key
expect_out "tested on the device" "it says the key was tested on the device"
expect_eq "$(stat -c %a v.key)" 600 "the key file is mode 0600"
expect_eq "$(grep -cE "$keyre" v.key)" 1 "the key file holds one recovery key"
expect_eq "$(stat -c %s v.key)" 71 "verbatim: no trailing newline"
expect_rc 0 "the recovered key opens the volume" -- cryptsetup open --test-passphrase --key-file v.key v.img
OUT=$(cat state/audit.log)
expect_not_out "$(cat v.key)" "the recovery key is not in the audit log"
expect_out '"action":"recovery-key-show"' "the recovery is audited"
expect_rc 7 "the output file is never overwritten" -- "$K" recovery-key show v.esc --output v.key
expect_eq "$("$K" recovery-key show v.esc --output - 2>/dev/null)" "$(cat v.key)" "--output - writes the key to stdout"
expect_rc 0 "--output - into cryptsetup --key-file -" -- \
	bash -c "'$K' recovery-key show v.esc --output - | cryptsetup open --test-passphrase --key-file - v.img"
expect_rc 0 "unbind the dead binding" -- "$K" -q unbind v.img
expect_rc 0 "bind to the new KMS with the recovered key" -- "$K" bind v.img --kms new --key-file v.key
expect_rc 0 "the new KMS opens the volume" -- "$K" check v.img
expect_out "KMS 'new'" "check names the new KMS"
expect_rc 0 "the escrow still opens the volume after the re-bind" -- "$K" recovery-key show v.esc --device v.img --output v2.key

# ---- modified envelopes and other volumes' envelopes are refused
expect_rc 0 "a second volume with its own escrow" -- "$K" format w.img --kms new --recovery-key-escrow b --recovery-key-file w.esc
wuuid=$(cryptsetup luksUUID w.img)
edit_env v.esc t1.esc "b = bytearray(__import__('base64').b64decode(j['blob'])); b[-1] ^= 1; j['blob'] = __import__('base64').b64encode(bytes(b)).decode()"
expect_rc 3 "a modified blob is refused" -- "$K" recovery-key show t1.esc --output t1.key
expect_out "The file was modified, or it is not the escrow of volume $uuid" "a clear error"
expect_rc 1 "no key written" -- test -e t1.key
edit_env v.esc t2.esc "j['uuid'] = '$wuuid'"
expect_rc 3 "an envelope whose uuid was changed to another volume's is refused" -- "$K" recovery-key show t2.esc --device w.img --output t2.key
expect_out "refuses the wrapped key" "the KMS refuses the wrap: the UUID is bound into it"
expect_rc 5 "another volume's envelope for --device is refused before the KMS is asked" -- \
	"$K" recovery-key show w.esc --device v.img --output t3.key
expect_out "holds the recovery key of volume $wuuid, but" "the refusal names both volumes"
edit_env v.esc t4.esc "j['kms'] = 'new'"
expect_rc 3 "an envelope naming another configuration is refused" -- "$K" recovery-key show t4.esc --output t4.key
edit_env v.esc t5.esc "j['version'] = 2"
expect_rc 8 "an unknown envelope version is refused" -- "$K" recovery-key show t5.esc --output t5.key
expect_out "not a kmscrypt recovery key escrow file" "it says what the file is not"
expect_rc 8 "a recovery key in clear is not an envelope" -- "$K" recovery-key show v.key --output t6.key
expect_rc 6 "a missing escrow file" -- "$K" recovery-key show nosuch.esc --output t7.key
expect_rc 2 "usage: no file" -- "$K" recovery-key show
expect_rc 2 "usage: unknown subcommand" -- "$K" recovery-key frob x

# ---- the cloud-init hook escrows through a second configuration, and fails loudly without it
hook=$src/scripts/cloud-init/kmscrypt-provision
expect_rc 2 "hook: --recovery-key-escrow needs --recovery-key-file" -- \
	"$hook" --device /dev/null --kms new --mount /srv/x --recovery-key-escrow b
expect_out "needs --recovery-key-file" "the hook says which option is missing"
expect_rc 2 "hook: the escrow cannot be --kms" -- "$hook" --device /dev/null --kms new --mount /srv/x \
	--recovery-key-file /x/k --recovery-key-escrow new
loopdev=
trap '[ -n "$loopdev" ] && losetup -d "$loopdev"; fakes_cleanup' EXIT
if truncate -s 40M hook.img && loopdev=$(losetup --find --show hook.img 2>/dev/null); then
	# everything up to unlock (no device-mapper needed for format): stop the hook at unlock
	# shellcheck disable=SC2016  # $1 and $@ belong to the stand-in script
	printf '#!/bin/sh\n[ "$1" = unlock ] && { echo "stop at unlock" >&2; exit 1; }\nexec "%s" "$@"\n' \
		"$K" >k.sh
	chmod +x k.sh
	expect_rc 1 "hook with a missing escrow configuration fails" -- env KMSCRYPT="$tmp/k.sh" "$hook" \
		--device "$loopdev" --kms new --mount "$tmp/mnt" --fstab "$tmp/fstab" --no-enable \
		--recovery-key-file "$tmp/escrow/hook.esc" --recovery-key-escrow nosuch
	expect_out "no KMS configuration 'nosuch' for the recovery key escrow" "the hook says why"
	expect_rc 2 "the disk is untouched" -- blkid -p "$loopdev"
	expect_rc 1 "no escrow file" -- test -e "$tmp/escrow/hook.esc"
	expect_rc 1 "hook formats with the escrow (stopped at unlock by the test)" -- env KMSCRYPT="$tmp/k.sh" \
		"$hook" --device "$loopdev" --kms new --mount "$tmp/mnt" --fstab "$tmp/fstab" --no-enable \
		--recovery-key-file "$tmp/escrow/hook.esc" --recovery-key-escrow b
	expect_out "wrapped by KMS 'b' into '$tmp/escrow/hook.esc'" "the hook says where the wrapped key went"
	expect_eq "$(stat -c %a "$tmp/escrow/hook.esc")" 600 "the envelope is mode 0600"
	expect_eq "$(env_get "$tmp/escrow/hook.esc" "(j['type'], j['kms'], j['uuid'])")" \
		"('kmscrypt-recovery-escrow', 'b', '$(cryptsetup luksUUID "$loopdev")')" "the hook wrote the envelope"
	expect_rc 0 "the envelope opens the provisioned disk through b" -- "$K" recovery-key show \
		"$tmp/escrow/hook.esc" --device "$loopdev" --output hook.key
	losetup -d "$loopdev" && loopdev=
else
	failed "no loop device: the hook's escrow is not tested"
fi

# ---- bash completion offers the command, its subcommand and the escrow's configuration names
# shellcheck source=/dev/null
. "$src/completion/kmscrypt.bash"
comp() { # WORD...: complete the last word of "kmscrypt WORD..."
	COMP_WORDS=("$K" "$@")
	COMP_CWORD=$#
	COMPREPLY=()
	_kmscrypt
	printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}
expect_eq "$(comp recovery-)" "recovery-key" "completion: the command"
expect_eq "$(comp recovery-key "")" "show" "completion: its subcommand"
expect_eq "$(comp recovery-key show v.esc --ou)" "--output" "completion: its options"
expect_eq "$(comp format v.img --kms a --recovery-key-es)" "--recovery-key-escrow" "completion: format's option"
expect_eq "$(comp format v.img --recovery-key-escrow "")" "a b new" "completion: configuration names"

# ---- the escrow through the fake Vault (derived transit key)
ROOT=hvs.kmscrypt-test-root
if fake_start vault fake_vault.py --root-token $ROOT --state "$tmp/vault.json"; then
	printf %s "$ROOT" >root.tok
	fake_ctl vault /control '{"op":"create_key","name":"escrow","derived":true}' >/dev/null
	expect_rc 0 "kms create vb (Vault, derived key)" -- "$K" kms create vb --provider vault \
		--address "https://127.0.0.1:$(fake_port vault)" --ca-file "$FAKES_CA" --key-name escrow --token-file root.tok
	truncate -s 40M x.img
	expect_rc 0 "format with the escrow through Vault" -- "$K" format x.img --kms new --recovery-key-escrow vb --recovery-key-file x.esc
	expect_eq "$(env_get x.esc "j['provider']")" vault "the envelope names the Vault provider"
	expect_rc 0 "recovered through Vault" -- "$K" recovery-key show x.esc --device x.img --output x.key
	expect_rc 0 "the key opens the volume" -- cryptsetup open --test-passphrase --key-file x.key x.img
	xuuid=$(cryptsetup luksUUID x.img)
	edit_env x.esc t8.esc "j['uuid'] = '$uuid'"
	expect_rc 3 "Vault refuses the envelope bound to another volume" -- "$K" recovery-key show t8.esc --output t8.key
	expect_out "not the escrow of volume $uuid" "a clear error"
	expect_rc 7 "kms delete vb is refused" -- "$K" kms delete vb
	expect_out "$xuuid" "the refusal names the volume"
else
	failed "the fake Vault did not start"
fi

# ---- the escrow through the fake AWS KMS ("kmscrypt:keyslot": "recovery" in the context)
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE
if fake_start aws fake_aws_kms.py --state "$tmp/aws.json"; then
	printf %s fakeSecretKeyForKmscryptTests0000000001 >sk
	akey=$(json_get "$(fake_ctl aws /control '{"op":"create_key","description":"escrow"}')" "j['KeyId']")
	fake_ctl aws /control "{\"op\":\"create_alias\",\"alias\":\"alias/escrow\",\"key_id\":\"$akey\"}" >/dev/null
	expect_rc 0 "kms create ab (AWS)" -- "$K" kms create ab --provider aws --region us-east-1 \
		--endpoint "https://127.0.0.1:$(fake_port aws)" --ca-file "$FAKES_CA" --key-id alias/escrow \
		--access-key-id AKIAFAKEKMS000000001 --secret-access-key-file sk
	truncate -s 40M y.img
	expect_rc 0 "format with the escrow through AWS" -- "$K" format y.img --kms new --recovery-key-escrow ab --recovery-key-file y.esc
	expect_rc 0 "recovered through AWS" -- "$K" recovery-key show y.esc --device y.img --output y.key
	expect_rc 0 "the key opens the volume" -- cryptsetup open --test-passphrase --key-file y.key y.img
	edit_env y.esc t9.esc "j['uuid'] = '$uuid'"
	expect_rc 3 "AWS refuses the envelope bound to another volume" -- "$K" recovery-key show t9.esc --output t9.key
	expect_out "not the escrow of volume $uuid" "a clear error"
else
	failed "the fake AWS KMS did not start"
fi

finish
