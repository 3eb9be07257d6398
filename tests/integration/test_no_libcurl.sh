#!/bin/bash
# libcurl is loaded only when a remote KMS is used (transport/http.c, dlopen; issue 13): the binary
# does not link it, commands that need no HTTPS client (status, lock, the local provider's format and
# check) never map it or its dependencies, and a command that talks to a remote KMS (the AWS fake)
# loads it and works.  The dynamic loader's own trace (LD_DEBUG=files) says what was mapped.
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
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE

# loaded DESCRIPTION -- CMD...: the shared objects CMD opened, one soname a line (in $LOADED);
# the command's own output stays in $OUT and its exit status is checked to be 0
loaded() {
	local desc=$1
	shift 2
	expect_rc 0 "$desc" -- env LD_DEBUG=files LD_DEBUG_OUTPUT="$tmp/ld" "$@"
	LOADED=$(cat "$tmp"/ld.* 2>/dev/null | sed -n 's/.*file=\([^ ]*\) \[0\];  \(needed\|dynamically loaded\) by.*/\1/p' |
		sort -u)
	rm -f "$tmp"/ld.*
}

expect_rc 1 "the binary does not link libcurl" -- grep -q libcurl <(readelf -d "$K")

head -c 32 /dev/urandom >lab.key
chmod 600 lab.key
loaded "kms create (local)" -- "$K" kms create lab --provider local --key-file lab.key
expect_rc 0 "the loader trace lists the linked libraries" -- grep -q '^libcryptsetup' <<<"$LOADED"
expect_rc 1 "kms create (local) does not load libcurl" -- grep -q '^libcurl' <<<"$LOADED"
truncate -s 40M a.img
loaded "format (local)" -- "$K" format a.img --kms lab --batch-mode
expect_rc 1 "format (local) does not load libcurl" -- grep -q '^libcurl' <<<"$LOADED"
loaded "check (local)" -- "$K" check a.img
expect_rc 1 "check (local) does not load libcurl" -- grep -q '^libcurl' <<<"$LOADED"
loaded "status" -- "$K" status a.img
expect_rc 1 "status does not load libcurl" -- grep -q '^libcurl' <<<"$LOADED"
loaded "lock of a volume that is not open" -- "$K" lock a.img
expect_rc 1 "lock does not load libcurl" -- grep -q '^libcurl' <<<"$LOADED"
expect_rc 1 "nor any of its dependencies" -- grep -qE '^lib(nghttp2|ssh2|gssapi_krb5|ldap)' <<<"$LOADED"

# a remote KMS: libcurl is loaded on first use, and works
fake_start aws fake_aws_kms.py || exit 1
OUT=$(fake_ctl aws /control '{"op":"create_key","description":"kmscrypt volumes"}')
KEY=$(json_get "$OUT" "j['KeyId']")
printf %s fakeSecretKeyForKmscryptTests0000000001 >sk
loaded "kms create (aws)" -- "$K" kms create aws --provider aws --region us-east-1 \
	--endpoint "https://127.0.0.1:$(fake_port aws)" --ca-file "$FAKES_CA" --key-id "$KEY" \
	--access-key-id AKIAFAKEKMS000000001 --secret-access-key-file sk
expect_rc 0 "kms create (aws) loads libcurl" -- grep -q '^libcurl.so.4$' <<<"$LOADED"
truncate -s 40M b.img
expect_rc 0 "format (aws)" -- "$K" format b.img --kms aws --batch-mode
loaded "check (aws)" -- "$K" check b.img
expect_rc 0 "check (aws) loads libcurl" -- grep -q '^libcurl.so.4$' <<<"$LOADED"

# a libcurl that cannot be used (here: one without its functions) is an error that says so
mkdir nocurl
echo 'int not_libcurl;' | cc -shared -fPIC -o nocurl/libcurl.so.4 -x c - || failed "build a fake libcurl"
expect_rc 1 "check (aws) without a usable libcurl fails" -- env LD_LIBRARY_PATH="$tmp/nocurl" "$K" check b.img
expect_out "cannot load libcurl (libcurl.so.4" "the message names libcurl"

finish
