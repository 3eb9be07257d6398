#!/bin/bash
# Files the agent keeps trusting must be private, as ssh(1) requires of private keys: the local
# provider's master key file, the KMIP client key and a configuration file that holds a secret
# itself are refused when group or others have any permission on them (exit 2), with a message
# naming the 'chmod' that fixes it; mode 0600 is accepted.  The mode is checked on the opened file.
# No KMS server (the KMIP check comes before any connection).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
umask 022

# ---- local provider: at create
head -c 32 /dev/urandom >open.key # 0644 by the umask
expect_rc 2 "a 0644 key file is refused at create" -- "$K" kms create lab --provider local --key-file open.key
expect_out "run 'chmod 600 $tmp/open.key'" "the message names the chmod"
expect_out "mode 0644" "the message names the mode"
expect_rc 1 "nothing saved" -- test -e etc/kms/lab.conf
chmod 640 open.key
expect_rc 2 "group-readable is refused too" -- "$K" kms create lab --provider local --key-file open.key
chmod 604 open.key
expect_rc 2 "other-readable is refused too" -- "$K" kms create lab --provider local --key-file open.key
chmod 600 open.key
expect_rc 0 "a 0600 key file is accepted" -- "$K" kms create lab --provider local --key-file open.key
chmod 400 open.key
expect_rc 0 "0400 is private too" -- "$K" kms check lab

# ---- local provider: at use (kms check, volume check: the same open as unlock)
truncate -s 40M a.img
expect_rc 0 "format" -- "$K" format a.img --kms lab --recovery-key-file a.rec
expect_rc 0 "check with a private key file" -- "$K" check a.img
chmod 644 open.key
expect_rc 2 "kms check refuses a key file turned 0644" -- "$K" kms check lab
expect_out "chmod 600 $tmp/open.key" "kms check names the chmod"
expect_rc 2 "volume check refuses it (not 'denied')" -- "$K" check a.img
expect_out "chmod 600 $tmp/open.key" "volume check names the chmod"
chmod 600 open.key
expect_rc 0 "check again after chmod 600" -- "$K" check a.img

# ---- configuration files: written 0600; one that holds a secret must stay private
expect_eq "$(stat -c %a etc/kms/lab.conf)" 600 "kmscrypt writes configurations 0600"
chmod 644 etc/kms/lab.conf
expect_rc 0 "a 0644 configuration without a secret is accepted" -- "$K" kms show lab
printf '[KMS]\nProvider=vault\nAddress=https://127.0.0.1:1\nKeyName=disks\nToken=s.fakeVaultToken\n' \
	>etc/kms/vt.conf
chmod 644 etc/kms/vt.conf
expect_rc 2 "a 0644 configuration holding a token is refused" -- "$K" kms show vt
expect_out "run 'chmod 600 $tmp/etc/kms/vt.conf'" "the message names the chmod"
expect_not_out "fakeVaultToken" "the message does not show the secret"
expect_rc 2 "kms check refuses it too" -- "$K" kms check vt
expect_rc 2 "kms list reports it" -- "$K" kms list
expect_out "chmod 600" "kms list names the chmod"
chmod 600 etc/kms/vt.conf
expect_rc 0 "the same file at 0600 is accepted" -- "$K" kms show vt
expect_not_out "fakeVaultToken" "kms show masks the token"
# a credential reference is not the secret itself
printf '[KMS]\nProvider=vault\nAddress=https://127.0.0.1:1\nKeyName=disks\nTokenCredential=vault-token\n' \
	>etc/kms/vc.conf
chmod 644 etc/kms/vc.conf
expect_rc 0 "a 0644 configuration naming a credential is accepted" -- "$K" kms show vc
# deleting is one way to fix a refused file
cp etc/kms/vt.conf etc/kms/vd.conf
chmod 644 etc/kms/vd.conf
expect_rc 0 "kms delete removes a refused configuration" -- "$K" kms delete vd
expect_rc 1 "it is gone" -- test -e etc/kms/vd.conf

# ---- KMIP client key: refused before any connection (port 1 is never contacted)
bash "$src/tests/fakes/mkcerts.sh" certs >/dev/null
cp certs/client.key loose.key
chmod 644 loose.key
expect_rc 2 "a 0644 KMIP client key is refused" -- "$K" kms create km --provider kmip \
	--endpoint 127.0.0.1:1 --client-cert certs/client.pem --client-key loose.key --ca-file certs/ca.pem
expect_out "run 'chmod 600 $tmp/loose.key'" "the message names the chmod"
chmod 660 loose.key
expect_rc 2 "a group-writable KMIP client key is refused" -- "$K" kms create km --provider kmip \
	--endpoint 127.0.0.1:1 --client-cert certs/client.pem --client-key loose.key --ca-file certs/ca.pem
chmod 600 loose.key
expect_rc 4 "a 0600 client key passes (then the server is unreachable)" -- "$K" kms create km \
	--provider kmip --endpoint 127.0.0.1:1 --client-cert certs/client.pem --client-key loose.key \
	--ca-file certs/ca.pem --timeout 2
expect_not_out "chmod" "no mode complaint for 0600"

finish
