#!/usr/bin/env bash
# Prove the fake KMS servers speak the vendors' real protocols: drive each fake with the vendor's own
# client library (boto3/botocore for AWS KMS + IMDSv2, hvac for Vault) and check every answer.
# Loopback only; every server started here is stopped on exit (tests/fakes/lib.sh).
set -euo pipefail

src=${KMSCRYPT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
here=$src/tests/integration
# shellcheck source=tests/fakes/lib.sh
. "$src/tests/fakes/lib.sh"
py=$FAKES_PY

for mod in boto3 botocore hvac cryptography requests; do
	if ! "$py" -c "import $mod" 2>/dev/null; then
		echo "SKIP: $py cannot import $mod (install the Debian package python3-$mod)"
		exit 1
	fi
done

fakes_setup
work=$FAKES_WORK
# Keep botocore away from real credential and config sources.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_REGION AWS_REGION

fail=0
run_check() { # label command...
	local label=$1
	shift
	echo "=== $label"
	if "$@"; then
		echo "=== $label: PASS"
	else
		echo "=== $label: FAIL"
		fail=1
	fi
}

show_log_on_failure() {
	if ((fail)); then
		echo "--- $1 server log"
		cat "$work/$1.log"
	fi
}

# ---- the AWS fake's SigV4 verifier against AWS's official test suite
# (the copy kept with the tests: tests/vectors/README.md)
vectors=$src/tests/vectors/aws-sig-v4-test-suite
run_check "SigV4 verifier vs aws-sig-v4-test-suite" "$py" "$here/fakes_sigv4_vectors_check.py" "$src" "$vectors"

# ---- AWS KMS + IMDSv2, checked with boto3/botocore
aws_args=(--state "$work/aws-state.json" --imds-portfile "$work/aws.iport")
fake_start aws fake_aws_kms.py "${aws_args[@]}" --record "$work/aws-requests.jsonl"
run_check "AWS KMS fake vs boto3" "$py" "$here/fakes_boto3_check.py" --port "$(fake_port aws)" \
	--control-port "$(fake_cport aws)" --imds-port "$(cat "$work/aws.iport")" \
	--ca "$FAKES_CA" --other-ca "$work/certs/other-ca.pem" --blob-out "$work/aws-blob.json"
fake_stop aws
n=$(grep -c '"action": "Decrypt"' "$work/aws-requests.jsonl" || true)
if ((n > 10)); then
	echo "ok   --record wrote $n Decrypt requests"
else
	echo "FAIL --record wrote $n Decrypt requests"
	fail=1
fi
if [[ -s $work/aws-blob.json ]]; then
	fake_start aws fake_aws_kms.py "${aws_args[@]}"
	run_check "AWS KMS fake restart keeps keys" "$py" "$here/fakes_boto3_check.py" \
		--port "$(fake_port aws)" --control-port "$(fake_cport aws)" \
		--imds-port "$(cat "$work/aws.iport")" --ca "$FAKES_CA" --blob-in "$work/aws-blob.json"
	fake_stop aws
fi
show_log_on_failure aws

# ---- Vault (transit, token, AppRole, sys), checked with hvac
root_token=hvs.kmscryptTestRoot$RANDOM$RANDOM
fake_start vault fake_vault.py --state "$work/vault-state.json" --root-token "$root_token"
run_check "Vault fake vs hvac" "$py" "$here/fakes_hvac_check.py" --port "$(fake_port vault)" \
	--control-port "$(fake_cport vault)" --ca "$FAKES_CA" \
	--other-ca "$work/certs/other-ca.pem" --root-token "$root_token" --blob-out "$work/vault-blob.json"
fake_stop vault
if [[ -s $work/vault-blob.json ]]; then
	fake_start vault fake_vault.py --state "$work/vault-state.json" --root-token "$root_token"
	run_check "Vault fake restart keeps keys and tokens" "$py" "$here/fakes_hvac_check.py" \
		--port "$(fake_port vault)" --control-port "$(fake_cport vault)" \
		--ca "$FAKES_CA" --root-token "$root_token" --blob-in "$work/vault-blob.json"
	fake_stop vault
fi
show_log_on_failure vault

# ---- the control API through curl (what shell tests of the C client use)
fake_start aws fake_aws_kms.py
kid=$(fake_ctl aws /control '{"op":"create_key"}' | "$py" -c 'import json,sys; print(json.load(sys.stdin)["KeyId"])')
if [[ $kid =~ ^[0-9a-f-]{36}$ ]] && fake_ctl aws /control "{\"op\":\"disable_key\",\"key_id\":\"$kid\"}" >/dev/null &&
	fake_ctl aws /state | grep -q '"state": "Disabled"' && fake_ctl aws /counters | grep -q tcp_connections; then
	echo "ok   control API via curl (create_key, disable_key, state, counters)"
else
	echo "FAIL control API via curl"
	fail=1
fi
fake_stop aws

if ((fail)); then
	echo "FAIL: a fake server disagrees with its vendor's client"
	exit 1
fi
echo "PASS: fakes agree with boto3/botocore and hvac"
