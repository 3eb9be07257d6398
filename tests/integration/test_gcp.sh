#!/bin/bash
# kmscrypt CLI with the Google Cloud KMS provider against the fake (tests/fakes/fake_gcp_kms.py):
# service account key file, email + private key (PEM and seed 004's bare base64), GCE metadata;
# create/check/policy, format and check image files, denied/unavailable/invalid with their exit
# codes, token expiry mid-run, throttling with Retry-After, CRC32C corruption, key rotation.
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
P=kmscrypt-test
KEY=projects/$P/locations/global/keyRings/ring/cryptoKeys/vol
fake_start gcp fake_gcp_kms.py --state "$tmp/gcp.json" --metadata-portfile "$tmp/gcp.mport" \
	--service-account-file "$tmp/sa.json" --key "$KEY" \
	--key "projects/$P/locations/global/keyRings/ring/cryptoKeys/other" || exit 1
PORT=$(fake_port gcp)
MD=http://127.0.0.1:$(cat "$tmp/gcp.mport")

ctl() { fake_ctl gcp /control "$1"; }
counters() { fake_ctl gcp /counters; }
counter() { json_get "$(counters)" "$1"; }
reset_counters() { fake_ctl gcp /counters/reset '{}' >/dev/null; }
EMAIL=$(json_get "$(cat sa.json)" "j['client_email']")
# the same account as --email + --private-key-file: PEM, and seed 004's bare base64 of the DER
json_get "$(cat sa.json)" "j['private_key']" >key.pem
grep -v -- ----- key.pem | tr -d '\n' >key.b64
chmod 600 key.pem key.b64

common=(--provider gcp --project-id "$P" --location global --key-ring ring --endpoint "127.0.0.1:$PORT"
	--ca-file "$FAKES_CA")

# ---- kms create / check / show / policy for every credential source
expect_rc 0 "kms create (service account file)" -- "$K" kms create gsa "${common[@]}" --key-name vol \
	--service-account-file sa.json
expect_rc 0 "kms check (service account file)" -- "$K" kms check gsa
expect_out "ENABLED" "check reports the primary version's state"
expect_rc 0 "kms show" -- "$K" kms show gsa
expect_not_out "PRIVATE KEY" "show prints no private key"
expect_rc 0 "kms create (email + PEM private key)" -- "$K" kms create gpem "${common[@]}" --key-name vol \
	--email "$EMAIL" --private-key-file key.pem --token-endpoint "127.0.0.1:$PORT"
expect_rc 0 "kms create (email + bare base64 DER, seed 004)" -- "$K" kms create gb64 "${common[@]}" \
	--key-name vol --email "$EMAIL" --private-key-file key.b64 --token-endpoint "https://127.0.0.1:$PORT/token"
expect_rc 0 "kms create (GCE metadata server)" -- "$K" kms create gmd "${common[@]}" --key-name vol \
	--credentials metadata --metadata-endpoint "$MD"
expect_rc 0 "kms create (pinned key version)" -- "$K" kms create gpin "${common[@]}" --key-name vol \
	--key-version 1 --service-account-file sa.json
reset_counters
expect_rc 0 "kms check (metadata)" -- "$K" kms check gmd
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['metadata']['requests']")" 1 "one metadata token request"
expect_rc 0 "kms policy (service account)" -- "$K" kms policy gsa
expect_out "--member 'serviceAccount:$EMAIL' --role roles/cloudkms.cryptoKeyEncrypterDecrypter" \
	"policy binds the encrypter/decrypter role to the account"
expect_out "cloudkms.cryptoKeys.get" "policy names cloudkms.cryptoKeys.get for describe"

# ---- failures at create: nothing saved, exit code by class
expect_rc 3 "missing key is denied" -- "$K" kms create gx "${common[@]}" --key-name nosuch \
	--service-account-file sa.json
expect_out "NOT_FOUND" "message names NOT_FOUND"
expect_rc 1 "nothing saved" -- test -e etc/kms/gx.conf
expect_rc 2 "no credentials" -- "$K" kms create gc "${common[@]}" --key-name vol
expect_out "no credentials" "message says what is missing"
chmod 644 key.pem
expect_rc 2 "a private key readable by others is refused" -- "$K" kms create gm "${common[@]}" \
	--key-name vol --email "$EMAIL" --private-key-file key.pem --token-endpoint "127.0.0.1:$PORT"
expect_out "chmod 600" "message says how to fix the mode"
chmod 600 key.pem
ctl "{\"op\":\"add_service_account\",\"key_file\":\"$tmp/other-sa.json\"}" >/dev/null
json_get "$(cat other-sa.json)" "j['private_key']" >other.pem
chmod 600 other.pem
expect_rc 3 "a key that is not the account's is denied (RS256 signature checked)" -- "$K" kms create gf \
	"${common[@]}" --key-name vol --email "$EMAIL" --private-key-file other.pem --token-endpoint "127.0.0.1:$PORT"
expect_out "Invalid JWT Signature" "message names the token endpoint's error"
ctl '{"op":"create_key","name":"projects/kmscrypt-test/locations/global/keyRings/ring/cryptoKeys/sign","purpose":"ASYMMETRIC_SIGN"}' >/dev/null
expect_rc 2 "a key of another purpose is refused" -- "$K" kms create gs "${common[@]}" --key-name sign \
	--service-account-file sa.json
expect_out "ENCRYPT_DECRYPT" "message names the purpose needed"
expect_rc 3 "certificate from another CA is refused" -- "$K" kms create go --provider gcp --project-id "$P" \
	--location global --key-ring ring --key-name vol --endpoint "127.0.0.1:$PORT" \
	--ca-file "$tmp/certs/other-ca.pem" --service-account-file sa.json

# ---- format and check image files
truncate -s 40M a.img p.img b64.img md.img
expect_rc 0 "format a.img (service account)" -- "$K" format a.img --kms gsa
expect_rc 0 "format p.img (pinned version)" -- "$K" format p.img --kms gpin
expect_rc 0 "format b64.img (base64 DER key)" -- "$K" format b64.img --kms gb64
expect_rc 0 "format md.img (metadata)" -- "$K" format md.img --kms gmd
for i in a p b64 md; do
	expect_rc 0 "check $i.img" -- "$K" check $i.img
done
tok_field() { cryptsetup token export --token-id 0 "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
expect_eq "$(tok_field a.img key_version)" 1 "token records key version 1"
expect_eq "$(tok_field a.img key_id)" "$KEY" "token records the key's resource name"
expect_eq "$(tok_field a.img alg)" gcp-kms:aad "bound by additionalAuthenticatedData"
OUT=$(fake_ctl gcp '/requests?since=0')
expect_eq "$(json_get "$OUT" "sum(1 for e in j['requests'] if e['action']=='encrypt' and isinstance(e['body'],dict) and 'plaintextCrc32c' in e['body'] and 'additionalAuthenticatedDataCrc32c' in e['body'])>0")" True "encrypt sends both CRC32C fields"
expect_eq "$(json_get "$OUT" "all('ciphertextCrc32c' in e['body'] for e in j['requests'] if e['action']=='decrypt' and isinstance(e['body'],dict))")" True "decrypt sends ciphertextCrc32c"

# ---- rotation at the KMS after format: old volumes still open, new ones record version 2
ctl "{\"op\":\"rotate\",\"name\":\"$KEY\"}" >/dev/null
truncate -s 40M b.img
expect_rc 0 "format b.img after rotation" -- "$K" format b.img --kms gsa
expect_eq "$(tok_field b.img key_version)" 2 "token records key version 2"
expect_rc 0 "the volume formatted before rotation still opens" -- "$K" check a.img
truncate -s 40M p2.img
expect_rc 0 "format with the pinned version after rotation" -- "$K" format p2.img --kms gpin
expect_eq "$(tok_field p2.img key_version)" 1 "pinned configuration still encrypts with version 1"

# a token moved to another volume does not decrypt there (the AAD binds the UUID)
cryptsetup token export --token-id 0 a.img >a.tok
cp b.img b-swapped.img
cryptsetup token remove --token-id 0 b-swapped.img
cryptsetup token import --token-id 0 --json-file a.tok b-swapped.img
expect_rc 3 "a token moved to another volume is denied" -- "$K" check b-swapped.img
expect_out "Decryption failed" "message names Cloud KMS's error"

# ---- disabled / destroyed version, revoked and disabled account
ctl "{\"op\":\"disable_version\",\"name\":\"$KEY\",\"version\":1}" >/dev/null
expect_rc 3 "a disabled key version is denied" -- "$K" check a.img
expect_out "DISABLED" "message names the state"
expect_rc 0 "the current version still opens" -- "$K" check b.img
ctl "{\"op\":\"enable_version\",\"name\":\"$KEY\",\"version\":1}" >/dev/null
ctl "{\"op\":\"disable_version\",\"name\":\"$KEY\",\"version\":2}" >/dev/null
expect_rc 3 "kms check refuses a disabled primary version" -- "$K" kms check gsa
expect_out "not ENABLED" "message says the primary version is not enabled"
ctl "{\"op\":\"enable_version\",\"name\":\"$KEY\",\"version\":2}" >/dev/null
ctl "{\"op\":\"revoke\",\"email\":\"$EMAIL\"}" >/dev/null
expect_rc 3 "revoked IAM permissions are denied" -- "$K" check a.img
expect_out "PERMISSION_DENIED" "message names PERMISSION_DENIED"
ctl "{\"op\":\"restore\",\"email\":\"$EMAIL\"}" >/dev/null
ctl "{\"op\":\"revoke\",\"email\":\"$EMAIL\",\"permissions\":[\"cloudkms.cryptoKeys.get\"]}" >/dev/null
expect_rc 0 "unlocking does not need cloudkms.cryptoKeys.get" -- "$K" check a.img
expect_rc 3 "kms check needs cloudkms.cryptoKeys.get" -- "$K" kms check gsa
expect_out "kms policy" "message points at kms policy"
ctl "{\"op\":\"restore\",\"email\":\"$EMAIL\"}" >/dev/null
ctl "{\"op\":\"disable_account\",\"email\":\"$EMAIL\"}" >/dev/null
expect_rc 3 "a disabled service account is denied" -- "$K" check a.img
expect_out "invalid_grant" "message names the OAuth error"
ctl "{\"op\":\"enable_account\",\"email\":\"$EMAIL\"}" >/dev/null

# ---- unavailable and invalid replies
reset_counters
fake_ctl gcp /faults '{"throttle":2,"action":"decrypt"}' >/dev/null
expect_rc 0 "two 429 RESOURCE_EXHAUSTED replies (Retry-After: 1), then success" -- "$K" check a.img
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action']['decrypt']")" 3 "decrypt sent three times"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('429',0)")" 2 "two 429 replies"
fake_ctl gcp /faults '{"throttle":20,"action":"decrypt"}' >/dev/null
expect_rc 4 "throttled beyond the retries is unavailable" -- "$K" --timeout 4 check a.img
fake_ctl gcp /faults/reset '{}' >/dev/null
fake_ctl gcp /faults '{"error5xx":20,"status":503,"action":"decrypt"}' >/dev/null
expect_rc 4 "503 UNAVAILABLE is unavailable" -- "$K" --timeout 3 check a.img
fake_ctl gcp /faults/reset '{}' >/dev/null
fake_ctl gcp /faults '{"malformed":5,"action":"decrypt"}' >/dev/null
expect_rc 8 "a malformed reply is invalid" -- "$K" check a.img
fake_ctl gcp /faults/reset '{}' >/dev/null
ctl '{"op":"corrupt","field":"plaintextCrc32c","n":10}' >/dev/null
expect_rc 8 "a plaintextCrc32c mismatch is invalid" -- "$K" check a.img
expect_out "plaintextCrc32c" "message names the integrity field"
ctl '{"op":"corrupt","field":"plaintextCrc32c","n":0}' >/dev/null
ctl '{"op":"corrupt","field":"plaintextCrc32c","n":1}' >/dev/null
expect_rc 0 "one corrupted reply is retried" -- "$K" check a.img
ctl '{"op":"corrupt","field":"plaintextCrc32c","n":0}' >/dev/null
truncate -s 20M c.img
ctl '{"op":"corrupt","field":"verifiedPlaintextCrc32c","n":10}' >/dev/null
expect_rc 8 "an encrypt reply without verifiedPlaintextCrc32c is invalid" -- "$K" format c.img --kms gsa
ctl '{"op":"corrupt","field":"verifiedPlaintextCrc32c","n":0}' >/dev/null
ctl '{"op":"corrupt","field":"ciphertextCrc32c","n":10}' >/dev/null
expect_rc 8 "a ciphertextCrc32c mismatch is invalid" -- "$K" format c.img --kms gsa
ctl '{"op":"corrupt","field":"ciphertextCrc32c","n":0}' >/dev/null
fake_ctl gcp /faults '{"error5xx":20,"status":503}' >/dev/null
fake_ctl gcp /faults '{"error5xx":20,"status":503,"server":"metadata"}' >/dev/null
expect_rc 4 "metadata server down is unavailable" -- "$K" --timeout 3 kms check gmd
fake_ctl gcp /faults/reset '{}' >/dev/null

# ---- an expired access token is replaced in the middle of a run (401 -> one new assertion)
for i in 1 2 3 4 5 6; do
	truncate -s 20M "w$i.img"
	"$K" -q format "w$i.img" --kms gsa >/dev/null 2>&1 || failed "format w$i.img"
done
reset_counters
fake_ctl gcp /faults '{"latency_ms":400,"action":"decrypt"}' >/dev/null
"$K" check w*.img >run.out 2>&1 &
run=$!
for _ in $(seq 200); do
	[ "$(counter "j['responses_by_status'].get('200',0)")" -ge 2 ] && break
	sleep 0.05
done
ctl '{"op":"expire_tokens"}' >/dev/null
rc=0
wait $run || rc=$?
fake_ctl gcp /faults/reset '{}' >/dev/null
if [ "$rc" = 0 ]; then pass "6 volumes checked although the token expired mid-run"; else failed "mid-run expiry: rc $rc: $(cat run.out)"; fi
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('token',0)")" 2 "a second token request in the same run"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('401',0)")" 1 "one 401 for the expired token"
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('decrypt',0)")" 7 "6 volumes, one decrypt repeated"
expect_eq "$(json_get "$OUT" "j['tls_handshakes']")" 1 "one TLS connection for tokens and KMS"

finish
