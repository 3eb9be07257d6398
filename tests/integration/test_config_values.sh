#!/bin/bash
# Configuration values cannot inject lines: a value with CR, LF (or, from a secret file, NUL) is
# refused by kms_config_set(), the one place settings are stored, whatever option carries it (path,
# plain value, description, secret file, credential name), at `kms create` and `kms edit`: exit 2,
# a message naming the option, no file written or changed.  No KMS server: the refusal comes first.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
nl=$'\n'
cr=$'\r'

# ---- kms create: nothing saved
expect_rc 2 "--key-file with a newline" -- "$K" kms create inj --provider local \
	--key-file "$tmp/x${nl}Description=injected" --generate
expect_out "--key-file: the value must not contain CR, LF or NUL" "message names --key-file"
expect_rc 1 "no configuration written" -- test -e etc/kms/inj.conf
expect_rc 1 "no key file generated" -- test -e "$tmp/x${nl}Description=injected"
expect_rc 2 "relative --key-file with a carriage return" -- "$K" kms create inj --provider local \
	--key-file "k${cr}.key" --generate
expect_out "--key-file" "message names --key-file"
expect_rc 1 "no key file generated (CR)" -- test -e "k${cr}.key"

# AWS: a CaFile line break would add Endpoint= and send signed requests elsewhere
printf 'fakeSecretKey\n' >sk
expect_rc 2 "AWS --ca-file with a newline" -- "$K" kms create aws1 --provider aws --region eu-west-1 \
	--key-id alias/x --access-key-id AKIAFAKE000000000001 --secret-access-key-file sk \
	--ca-file "/ca.pem${nl}Endpoint=https://elsewhere.example"
expect_out "--ca-file: the value must not contain CR, LF or NUL" "message names --ca-file"
expect_rc 2 "AWS --region with a newline" -- "$K" kms create aws1 --provider aws \
	--region "eu-west-1${nl}Endpoint=https://elsewhere.example" --key-id alias/x \
	--access-key-id AKIAFAKE000000000001 --secret-access-key-file sk
expect_out "--region:" "message names --region"
expect_rc 2 "--description with a carriage return" -- "$K" kms create aws1 --provider aws \
	--region eu-west-1 --key-id alias/x --access-key-id AKIAFAKE000000000001 \
	--secret-access-key-file sk --description "a${cr}b"
expect_out "--description:" "message names --description"
printf 'fake\nSecret\n' >sk2
expect_rc 2 "secret file of two lines" -- "$K" kms create aws1 --provider aws --region eu-west-1 \
	--key-id alias/x --access-key-id AKIAFAKE000000000001 --secret-access-key-file sk2
expect_out "--secret-access-key-file 'sk2'" "message names the secret file option"
printf 'fake\0Secret' >sk3
expect_rc 2 "secret file with a NUL" -- "$K" kms create aws1 --provider aws --region eu-west-1 \
	--key-id alias/x --access-key-id AKIAFAKE000000000001 --secret-access-key-file sk3
printf 'fake\rSecret\n' >sk4
expect_rc 2 "secret file with a CR" -- "$K" kms create aws1 --provider aws --region eu-west-1 \
	--key-id alias/x --access-key-id AKIAFAKE000000000001 --secret-access-key-file sk4
expect_rc 1 "nothing saved for aws1" -- test -e etc/kms/aws1.conf

# ---- kms edit: the file stays as it was
expect_rc 0 "kms create lab" -- "$K" kms create lab --provider local --key-file lab.key --generate
cp etc/kms/lab.conf before.conf
expect_rc 2 "edit --key-file with a newline" -- "$K" kms edit lab \
	--key-file "$tmp/lab.key${nl}Description=injected"
expect_out "--key-file: the value must not contain CR, LF or NUL" "edit message names --key-file"
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/lab.conf
expect_rc 2 "edit --description with a newline" -- "$K" kms edit lab \
	--description "lab${nl}KeyFile=/elsewhere"
expect_out "--description:" "edit message names --description"
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/lab.conf
expect_rc 0 "a one-line description is fine" -- "$K" kms edit lab --description "lab key"
expect_eq "$(grep -c '^Description=lab key$' etc/kms/lab.conf)" 1 "description saved as one line"

# ---- the parser never yields a value with a CR inside (a trailing CR of a CRLF file is trimmed)
printf '[KMS]\r\nProvider=local\r\nKeyFile=%s/lab.key\r\n' "$tmp" >etc/kms/crlf.conf
expect_rc 0 "CRLF line ends are accepted" -- "$K" kms show crlf
printf '[KMS]\nProvider=local\nKeyFile=%s/lab.key\nDescription=a\rKeyFile=/x\n' "$tmp" >etc/kms/cr.conf
expect_rc 8 "a CR inside a line is refused" -- "$K" kms show cr
expect_out "cr.conf:4" "the error names the line"

finish
