#!/bin/bash
# `kmscrypt unlock --wait-kms SECONDS` against the fake AWS KMS on image files (no device-mapper
# here: a volume whose unwrap succeeds then fails activation, exit 5, which proves the retry
# reached the KMS): an unavailable KMS (exit class 4) is retried with exponential backoff until
# the deadline; a KMS that comes back within the deadline is used; a denial is never retried.
# Also: secret settings from systemd credentials (--secret-access-key-credential) end to end.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
. "$here/../fakes/lib.sh"
K=$(realpath -- "${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}")
fakes_setup >/dev/null 2>&1
W=$FAKES_WORK
cd "$W" || exit 1
export KMSCRYPT_CONFIG_DIR=$W/etc KMSCRYPT_STATE_DIR=$W/state

fake_start aws fake_aws_kms.py --state "$W/aws.json" || exit 1
PORT=$(fake_port aws)
key=$(fake_ctl aws /control '{"op":"create_key"}' | jq -r .KeyId)
mkdir -p creds
printf 'fakeSecretKeyForKmscryptTests0000000001\n' >creds/aws-sk

# ---- credentials: the configuration holds the reference only
expect_rc 6 "kms create with a credential but no \$CREDENTIALS_DIRECTORY" -- \
	env -u CREDENTIALS_DIRECTORY "$K" kms create aws1 --provider aws --region us-east-1 \
	--endpoint "https://127.0.0.1:$PORT" --ca-file "$FAKES_CA" --key-id "$key" \
	--access-key-id AKIAFAKEKMS000000001 --secret-access-key-credential aws-sk
expect_out "CREDENTIALS_DIRECTORY is not set" "the error says how to deliver the credential"
expect_rc 2 "an invalid credential name" -- "$K" kms create aws1 --provider aws \
	--region us-east-1 --endpoint "https://127.0.0.1:$PORT" --key-id "$key" \
	--access-key-id AKIAFAKEKMS000000001 --secret-access-key-credential ../x
expect_rc 0 "kms create with --secret-access-key-credential" -- \
	env CREDENTIALS_DIRECTORY="$W/creds" "$K" kms create aws1 --provider aws --region us-east-1 \
	--endpoint "https://127.0.0.1:$PORT" --ca-file "$FAKES_CA" --key-id "$key" \
	--access-key-id AKIAFAKEKMS000000001 --secret-access-key-credential aws-sk
expect_eq "$(grep -c '^SecretAccessKeyCredential=aws-sk$' etc/kms/aws1.conf)" 1 \
	"the file references the credential"
expect_eq "$(grep -c 'fakeSecretKey\|^SecretAccessKey=' etc/kms/aws1.conf)" 0 \
	"the file holds no secret"
expect_rc 0 "kms show" -- "$K" kms show aws1
expect_out "credential:aws-sk" "kms show shows credential:NAME"
expect_rc 0 "kms show --json" -- "$K" --json kms show aws1
expect_eq "$(json_get "$OUT" 'j["settings"]["secret_access_key"]')" "credential:aws-sk" \
	"kms show --json shows credential:NAME"
expect_rc 0 "kms check with the credential" -- env CREDENTIALS_DIRECTORY="$W/creds" "$K" kms check aws1
printf 'wrong-secret\n' >creds/bad-sk
mkdir -p creds2 && cp creds/bad-sk creds2/aws-sk
expect_rc 3 "kms check with a wrong secret in the credential is denied" -- \
	env CREDENTIALS_DIRECTORY="$W/creds2" "$K" kms check aws1

# ---- volumes: one AWS, one local
export CREDENTIALS_DIRECTORY=$W/creds
truncate -s 20M aws.img aws-r.img local.img
expect_rc 0 "format aws.img" -- "$K" format aws.img --kms aws1
expect_rc 0 "format aws-r.img" -- "$K" format aws-r.img --kms aws1
expect_rc 0 "kms create lab (local)" -- "$K" kms create lab --provider local --key-file "$W/lab.key" --generate
expect_rc 0 "format local.img" -- "$K" format local.img --kms lab

# A denial is final: no retry, no waiting.
mv lab.key lab.key.away
t0=$(date +%s%N)
expect_rc 3 "unlock of a denied volume with --wait-kms 5" -- "$K" unlock local.img --wait-kms 5
ms=$((($(date +%s%N) - t0) / 1000000))
expect_eq "$((ms < 2500))" 1 "a denial is not retried (${ms} ms)"
expect_not_out "KMS unavailable for" "no retry logged for a denial"
mv lab.key.away lab.key

# Unavailable until the deadline: retried with backoff 1, 2, ... s, then exit 4.
fake_stop aws
t0=$(date +%s%N)
expect_rc 4 "unlock with the KMS down, --wait-kms 4" -- "$K" unlock aws.img --wait-kms 4
ms=$((($(date +%s%N) - t0) / 1000000))
expect_eq "$((ms >= 3500 && ms < 15000))" 1 "waited until the deadline (${ms} ms)"
expect_out "retry 1 in 1.0 s" "first retry after 1 s"
expect_out "retry 2 in 2.0 s" "second retry after 2 s (exponential backoff)"
expect_out "could not be reached" "the last error says the KMS could not be reached"
expect_rc 4 "unlock with the KMS down and no --wait-kms fails at once" -- "$K" unlock aws.img

# --wait-kms does not hold the state lock while it waits: a revoke during a slow boot goes through
# at once, and the waiting unlock then sees the mark and leaves the volume locked.
"$K" unlock aws-r.img --wait-kms 10 >wait.out 2>&1 &
waiter=$!
sleep 1.5
t0=$(date +%s%N)
expect_rc 0 "revoke while an unlock waits for the KMS" -- "$K" revoke aws-r.img --reason boot
ms=$((($(date +%s%N) - t0) / 1000000))
expect_eq "$((ms < 4000))" 1 "revoke did not wait for the waiting unlock (${ms} ms)"
wait "$waiter"
expect_eq "$?" 7 "the waiting unlock refuses the volume revoked meanwhile (exit 7)"
OUT=$(cat wait.out)
expect_out "kmscrypt restore" "and says to restore it"
expect_not_out "Cannot activate" "it never got to activation"

# The KMS comes back within the deadline: the retry reaches it (the unwrap succeeds; activation
# then fails here, exit 5, because this kernel has no device-mapper; the VM tests activate).
( sleep 2; exec "$FAKES_PY" "$FAKES_DIR/fake_aws_kms.py" --certs "$W/certs" --state "$W/aws.json" \
	--port "$PORT" --portfile "$W/aws2.port" >"$W/aws2.log" 2>&1 ) &
restart=$!
expect_rc 5 "unlock while the KMS comes back, --wait-kms 30" -- "$K" unlock aws.img --wait-kms 30
expect_out "retry 1 in 1.0 s" "retried while the KMS was down"
expect_not_out "could not be reached" "the final attempt reached the KMS"
expect_out "Cannot activate" "the final attempt got to activation"
kill "$restart" 2>/dev/null
wait "$restart" 2>/dev/null

finish
