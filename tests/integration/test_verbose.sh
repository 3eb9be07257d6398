#!/bin/bash
# -v/--verbose logs each KMS request on stderr (method, URL without query, status, latency, request
# id, attempt, the wait before a retry) and never a body or a secret; --debug adds libcryptsetup's
# debug output, which -v alone does not print.  Against the fake AWS KMS (request ids, injected 503s)
# and the local provider, on LUKS2 image files.
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

fake_start aws fake_aws_kms.py || exit 1
EP=https://127.0.0.1:$(fake_port aws)
SK=fakeSecretKeyForKmscryptTests0000000001
printf %s "$SK" >sk
OUT=$(fake_ctl aws /control '{"op":"create_key","description":"verbose"}')
KEY=$(json_get "$OUT" "j['KeyId']")

expect_rc 0 "kms create (AWS fake)" -- "$K" kms create a --provider aws --region us-east-1 \
	--endpoint "$EP" --ca-file "$FAKES_CA" --key-id "$KEY" --access-key-id AKIAFAKEKMS000000001 \
	--secret-access-key-file sk
truncate -s 24M v.img
expect_rc 0 "format on AWS" -- "$K" -q format v.img --kms a --no-recovery-key

# ---- without -v: no request lines
expect_rc 0 "check without -v" -- "$K" check v.img
expect_not_out "kms: POST" "no request log without -v"

# ---- -v: one line per attempt; a 503 is retried and its backoff announced
fake_ctl aws /faults '{"error5xx":1,"status":503,"action":"Decrypt"}' >/dev/null
expect_rc 0 "check -v with one 503 on Decrypt" -- "$K" -v check v.img
re_retry="^kms: POST $EP/ -> 503 in [0-9]+ ms \(request id [0-9a-f-]{36}, attempt 1\); retrying in [0-9]+ ms$"
re_ok="^kms: POST $EP/ -> 200 in [0-9]+ ms \(request id [0-9a-f-]{36}, attempt 2\)$"
if grep -qE "$re_retry" <<<"$OUT"; then pass "the 503 attempt is logged with its request id and backoff"
else failed "no retry line like '$re_retry'; output: $OUT"; fi
if grep -qE "$re_ok" <<<"$OUT"; then pass "the retried attempt is logged as attempt 2 with status 200"
else failed "no line like '$re_ok'; output: $OUT"; fi
expect_eq "$(grep -c '^kms: POST' <<<"$OUT")" 2 "one line per attempt"
expect_not_out "$SK" "no secret access key in the log"
expect_not_out "Authorization" "no header but the request id in the log"
expect_not_out "CiphertextBlob" "no body in the log"

# ---- a KMS that cannot be reached: the failure and its backoff
fake_stop aws
expect_rc 4 "check -v with the KMS down" -- "$K" -v --timeout 3 check v.img
expect_out "kms: POST $EP/ -> failed in" "a transport failure is logged"
expect_out "could not connect to '127.0.0.1:" "the failure says why"
expect_out "(attempt 1); retrying in" "its backoff is announced"

# ---- --debug: libcryptsetup's debug output; -v alone does not print it
"$K" kms create l --provider local --key-file l.key --generate >/dev/null 2>&1 || failed "kms create l"
truncate -s 24M w.img
expect_rc 0 "format on local" -- "$K" -q format w.img --kms l --no-recovery-key
expect_rc 0 "check -v" -- "$K" -v check w.img
expect_not_out "libcryptsetup: Allocating context for crypt device" \
	"-v alone prints no libcryptsetup debug output"
expect_rc 0 "check --debug" -- "$K" --debug check w.img
expect_out "libcryptsetup: Allocating context for crypt device w.img." \
	"--debug passes libcryptsetup's debug messages through"
expect_out "libcryptsetup: Releasing crypt device w.img context." "... each as libcryptsetup writes it"
finish
