#!/bin/bash
# kmscrypt CLI with the Azure Key Vault provider against the fake (identity platform token endpoint,
# managed identity endpoint, Key Vault keys API with real RSA-OAEP-256), on LUKS2 image files.
# Seed 001: key created when missing, the criteria of an existing key, key versions recorded.
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
TENANT=72f988bf-0000-4000-8000-00000000aaaa
CID=11111111-2222-4333-8444-555555555555
SECRET='fakeAzureClientSecret~0000000001'
fake_start az fake_azure_kv.py --state "$tmp/az.json" --imds-portfile "$tmp/az.iport" \
	--tenant "$TENANT" --client "$CID:$SECRET" || exit 1
VAULT=https://127.0.0.1:$(fake_port az)
IMDS=http://127.0.0.1:$(cat "$tmp/az.iport")

ctl() { fake_ctl az /control "$1"; }
counters() { fake_ctl az /counters; }
reset_counters() { fake_ctl az /counters/reset '{}' >/dev/null; }
action_count() { json_get "$(counters)" "j['requests_by_action'].get('$1',0)"; }
key_state() { json_get "$(fake_ctl az /state)" "$1"; }
printf %s "$SECRET" >secret
printf %s 'wrong-secret' >wrong.secret

sp=(--provider azure --tenant-id "$TENANT" --client-id "$CID" --client-secret-file secret
	--identity-platform-endpoint "$VAULT" --vault-url "$VAULT" --ca-file "$FAKES_CA")
mi=(--provider azure --managed-identity --imds-endpoint "$IMDS" --vault-url "$VAULT" --ca-file "$FAKES_CA")

# ---- kms create: a missing key is created (RSA, wrapKey/unwrapKey, size)
expect_rc 0 "kms create creates the missing key" -- "$K" kms create az1 "${sp[@]}" --key-name vol
expect_eq "$(key_state "j['keys']['vol']['versions'][0]['key_size']")" 2048 "created with 2048 bits"
expect_eq "$(key_state "sorted(j['keys']['vol']['versions'][0]['key_ops'])")" "['unwrapKey', 'wrapKey']" \
	"created with wrapKey and unwrapKey only"
expect_eq "$(stat -c %a etc/kms/az1.conf)" 600 "configuration file is mode 0600"
expect_rc 0 "recorded the key id" -- grep -qx "KeyId=$VAULT/keys/vol" etc/kms/az1.conf
expect_rc 0 "kms show" -- "$K" kms show az1
expect_out "ClientSecret" "show lists the client secret setting"
expect_not_out "$SECRET" "show output holds no client secret"
expect_rc 0 "kms check" -- "$K" kms check az1
expect_out "2048 bits" "check describes the key"
expect_rc 0 "kms create --key-size 4096" -- "$K" kms create az4 "${sp[@]}" --key-name big --key-size 4096
expect_eq "$(key_state "j['keys']['big']['versions'][0]['key_size']")" 4096 "created with 4096 bits"
expect_rc 2 "--key-size 1024 is refused" -- "$K" kms create azs "${sp[@]}" --key-name small --key-size 1024
expect_out "2048, 3072, 4096" "message lists the sizes"
expect_rc 2 "--key-size of an existing key must match" -- "$K" kms create azs "${sp[@]}" --key-name big --key-size 2048
expect_out "4096 bits" "message names the key's size"

expect_rc 0 "seed 004 style: vault and identity platform as host:port" -- "$K" kms create azh --provider azure \
	--tenant-id "$TENANT" --client-id "$CID" --client-secret-file secret --identity-platform-endpoint "${VAULT#https://}" \
	--vault-url "${VAULT#https://}" --ca-file "$FAKES_CA" --key-name vol
expect_rc 0 "stored as given, used as https" -- "$K" kms check azh

# ---- managed identity (IMDS; Metadata: true) on an existing key
ctl '{"op":"create_key","name":"mikey","key_ops":["wrapKey","unwrapKey","sign"]}' >/dev/null
expect_rc 0 "kms create (managed identity, existing key)" -- "$K" kms create azm "${mi[@]}" --key-name mikey
OUT=$(fake_ctl az '/requests?server=imds')
expect_eq "$(json_get "$OUT" "[dict(h)['Metadata'] for h in [r['headers'] for r in j['requests']]][-1]")" true \
	"IMDS request carries Metadata: true"
expect_eq "$(json_get "$OUT" "'resource=https%3A%2F%2Fvault.azure.net' in j['requests'][-1]['path']")" True \
	"IMDS request asks for the Key Vault resource"
ctl '{"op":"imds_config","enabled":false}' >/dev/null
expect_rc 3 "a VM without managed identity is denied" -- "$K" kms create azn "${mi[@]}" --key-name mikey
expect_out "Identity not found" "message names the IMDS error"
ctl '{"op":"imds_config","enabled":true}' >/dev/null
expect_rc 4 "no metadata service is unavailable" -- "$K" --timeout 2 kms create azn --provider azure \
	--managed-identity --imds-endpoint http://127.0.0.1:9 --vault-url "$VAULT" --ca-file "$FAKES_CA" --key-name mikey
expect_out "metadata service not reachable" "message names the metadata service"

# ---- an existing key must meet seed 001's criteria, each with its own error; nothing saved
ctl '{"op":"create_key","name":"k-off","enabled":false}' >/dev/null
expect_rc 3 "disabled key" -- "$K" kms create azx "${sp[@]}" --key-name k-off
expect_out "is disabled" "message: disabled"
ctl '{"op":"create_key","name":"k-nbf"}' >/dev/null
ctl '{"op":"set_attributes","name":"k-nbf","nbf_in":86400}' >/dev/null
expect_rc 3 "activation date in the future" -- "$K" kms create azx "${sp[@]}" --key-name k-nbf
expect_out "activation date in the future" "message: activation date"
ctl '{"op":"set_attributes","name":"k-nbf","nbf_in":-86400}' >/dev/null
expect_rc 0 "activation date in the past is fine" -- "$K" kms create azp "${sp[@]}" --key-name k-nbf
ctl '{"op":"create_key","name":"k-exp"}' >/dev/null
ctl '{"op":"set_attributes","name":"k-exp","exp_in":31536000}' >/dev/null
expect_rc 3 "expiration date set" -- "$K" kms create azx "${sp[@]}" --key-name k-exp
expect_out "has an expiration date" "message: expiration date"
ctl '{"op":"create_key","name":"k-ops","key_ops":["encrypt","decrypt","unwrapKey"]}' >/dev/null
expect_rc 3 "wrapKey not permitted" -- "$K" kms create azx "${sp[@]}" --key-name k-ops
expect_out "does not permit wrapKey;" "message: operations"
expect_rc 1 "nothing saved" -- test -e etc/kms/azx.conf
ctl '{"op":"create_key","name":"k-rot"}' >/dev/null
ctl '{"op":"set_rotation_policy","name":"k-rot","rotate":true}' >/dev/null
expect_rc 0 "a rotation policy is only a warning" -- "$K" kms create azr "${sp[@]}" --key-name k-rot
expect_out "Warning: Azure key 'k-rot' has a rotation policy" "create warns about the rotation policy"
expect_rc 0 "kms check warns as well" -- "$K" kms check azr
expect_out "rotates the key automatically" "check warns about the rotation policy"

# ---- credential failures
expect_rc 3 "wrong client secret is denied" -- "$K" kms create azw --provider azure --tenant-id "$TENANT" \
	--client-id "$CID" --client-secret-file wrong.secret --identity-platform-endpoint "$VAULT" --vault-url "$VAULT" \
	--ca-file "$FAKES_CA" --key-name vol
expect_out "AADSTS7000215" "message names the identity platform's error"
expect_out "kms edit NAME --client-secret-file" "message says how to fix it"
expect_not_out "wrong-secret" "message holds no secret"
expect_rc 3 "unknown tenant is denied" -- "$K" kms create azw --provider azure --tenant-id contoso.example \
	--client-id "$CID" --client-secret-file secret --identity-platform-endpoint "$VAULT" --vault-url "$VAULT" \
	--ca-file "$FAKES_CA" --key-name vol
expect_out "AADSTS90002" "message names the missing tenant"
expect_rc 2 "no credentials" -- "$K" kms create azw --provider azure --vault-url "$VAULT" --key-name vol
expect_out "--managed-identity" "message names both credential sources"
expect_rc 2 "plain http vault URL is refused" -- "$K" kms create azw "${sp[@]}" --vault-url "http://127.0.0.1:1" --key-name vol
expect_rc 3 "missing pinned version" -- "$K" kms create azw "${sp[@]}" --key-name vol --key-version 0123456789abcdef0123456789abcdef
expect_out "does not exist" "message: pinned version does not exist"
expect_rc 3 "certificate from another CA is refused" -- "$K" kms create azw "${sp[@]/$FAKES_CA/$tmp/certs/other-ca.pem}" --key-name vol
expect_rc 1 "nothing saved" -- test -e etc/kms/azw.conf

# ---- format and check image files; the key version is recorded and used after rotation
tok_field() { cryptsetup token export --token-id 0 "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
truncate -s 40M a.img m.img
expect_rc 0 "format a.img (client secret)" -- "$K" format a.img --kms az1
expect_rc 0 "format m.img (managed identity)" -- "$K" format m.img --kms azm
expect_rc 0 "check a.img" -- "$K" check a.img
expect_rc 0 "check m.img" -- "$K" check m.img
V1=$(key_state "j['keys']['vol']['versions'][0]['version']")
expect_eq "$(tok_field a.img key_version)" "$V1" "token records the key version"
expect_eq "$(tok_field a.img alg)" "azure-kv:RSA-OAEP-256:aad-prefix" "token records the binding"
ctl '{"op":"rotate_key","name":"vol"}' >/dev/null
V2=$(key_state "j['keys']['vol']['versions'][1]['version']")
truncate -s 40M b.img
expect_rc 0 "format b.img after rotation" -- "$K" format b.img --kms az1
expect_eq "$(tok_field b.img key_version)" "$V2" "new volume uses the new version"
reset_counters
expect_rc 0 "a volume of the old version still opens" -- "$K" check a.img
OUT=$(fake_ctl az /requests)
expect_eq "$(json_get "$OUT" "[r['path'] for r in j['requests'] if r['action']=='keys.unwrapkey'][0].split('?')[0]")" \
	"/keys/vol/$V1/unwrapkey" "unwrap names the recorded version"

# a token moved to another volume or keyslot does not open there
cryptsetup token export --token-id 0 a.img >a.tok
cp b.img b-swapped.img
cryptsetup token remove --token-id 0 b-swapped.img
cryptsetup token import --token-id 0 --json-file a.tok b-swapped.img
expect_rc 3 "a token moved to another volume is refused" -- "$K" check b-swapped.img
expect_out "another volume or keyslot" "message says the token belongs elsewhere"

# ---- throttling, outages, malformed replies, disabled key, revoked access
reset_counters
fake_ctl az /faults '{"throttle":2,"action":"keys.unwrapkey"}' >/dev/null
expect_rc 0 "two 429 replies (Retry-After), then success" -- "$K" check a.img
expect_eq "$(action_count keys.unwrapkey)" 3 "unwrapkey sent three times"
expect_eq "$(json_get "$(counters)" "j['responses_by_status'].get('429',0)")" 2 "two 429 replies"
fake_ctl az /faults '{"error5xx":5,"status":503,"action":"keys.unwrapkey"}' >/dev/null
expect_rc 4 "a vault answering 503 is unavailable" -- "$K" --timeout 3 check a.img
fake_ctl az /faults/reset '{}' >/dev/null
fake_ctl az /faults '{"malformed":1,"mode":"garbage","action":"keys.unwrapkey"}' >/dev/null
expect_rc 8 "a malformed reply is invalid" -- "$K" check a.img
expect_out "malformed Azure reply" "message says malformed"
fake_ctl az /faults/reset '{}' >/dev/null
ctl '{"op":"disable_key","name":"vol"}' >/dev/null
expect_rc 3 "disabled key is denied" -- "$K" check a.img
expect_out "disabled key" "message names Key Vault's error"
ctl '{"op":"enable_key","name":"vol"}' >/dev/null
ctl "{\"op\":\"deny\",\"who\":\"$CID\",\"ops\":[\"unwrapKey\"]}" >/dev/null
expect_rc 3 "revoked unwrapKey permission is denied" -- "$K" check a.img
expect_out "does not have keys unwrapKey permission" "message names the missing permission"
ctl "{\"op\":\"allow\",\"who\":\"$CID\"}" >/dev/null
expect_rc 0 "restored permission works again" -- "$K" check a.img

# ---- kms edit: new secret proven before saving; revoked secret
cp etc/kms/az1.conf before.conf
expect_rc 3 "kms edit with a wrong secret is refused" -- "$K" kms edit az1 --client-secret-file wrong.secret
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/az1.conf
ctl "{\"op\":\"revoke_secret\",\"client_id\":\"$CID\"}" >/dev/null
expect_rc 3 "revoked client secret is denied" -- "$K" check a.img
expect_out "AADSTS7000215" "message names the identity platform's error"
ctl "{\"op\":\"restore_secret\",\"client_id\":\"$CID\"}" >/dev/null
expect_rc 2 "create refuses a client secret and a managed identity together" -- "$K" kms create azw "${sp[@]}" \
	--key-name vol --managed-identity --imds-endpoint "$IMDS"
expect_out "not both" "message says to choose one"
cp etc/kms/az1.conf az1-secret.conf
MI_CID=$(json_get "$(fake_ctl az /state)" "j['imds']['client_id']")
expect_rc 0 "kms edit switches to a user-assigned managed identity" -- "$K" kms edit az1 --managed-identity \
	--client-id "$MI_CID" --imds-endpoint "$IMDS"
expect_rc 0 "volumes open with the managed identity" -- "$K" check a.img
cp az1-secret.conf etc/kms/az1.conf
expect_rc 2 "the vault URL cannot be edited" -- "$K" kms edit az1 --vault-url https://other.vault.azure.net

# ---- one token for many volumes; a token expiring mid-run is renewed once
for i in 1 2 3 4 5 6; do
	truncate -s 20M "w$i.img"
	"$K" -q format "w$i.img" --kms az1 >/dev/null 2>&1 || failed "format w$i.img"
done
reset_counters
expect_rc 0 "check 6 volumes" -- "$K" check w*.img
expect_eq "$(action_count token)" 1 "one token request for 6 volumes"
expect_eq "$(json_get "$(counters)" "j['tls_handshakes']")" 1 "one TLS handshake (token endpoint and vault share it here)"
reset_counters
fake_ctl az /faults '{"latency_ms":300,"action":"keys.unwrapkey"}' >/dev/null
"$K" check w*.img >run.out 2>&1 &
run=$!
for _ in $(seq 200); do
	[ "$(json_get "$(counters)" "j['responses_by_status'].get('200',0)")" -ge 2 ] && break
	sleep 0.05
done
ctl '{"op":"expire_tokens"}' >/dev/null
rc=0
wait $run || rc=$?
fake_ctl az /faults/reset '{}' >/dev/null
if [ "$rc" = 0 ]; then pass "6 volumes checked although the token expired mid-run"; else failed "mid-run expiry: rc $rc: $(cat run.out)"; fi
expect_eq "$(action_count token)" 2 "a second token request in the same run"
expect_eq "$(json_get "$(counters)" "j['responses_by_status'].get('401',0)")" 1 "one 401 for the expired token"
expect_eq "$(action_count keys.unwrapkey)" 7 "6 volumes, one unwrapkey repeated"
# a short-lived token is renewed before it expires (not after a 401)
ctl '{"op":"token_ttl","seconds":8}' >/dev/null
reset_counters
expect_rc 0 "check with 8 s tokens" -- "$K" check w1.img w2.img
expect_eq "$(json_get "$(counters)" "j['responses_by_status'].get('401',0)")" 0 "no 401 with short-lived tokens"
ctl '{"op":"token_ttl","seconds":3599}' >/dev/null

# ---- kms policy, kms delete never touches the vault
if "$K" kms policy az1 >policy.out 2>&1; then
	OUT=$(cat policy.out)
	expect_out "--key-permissions get wrapKey unwrapKey" "policy: access policy permissions"
	expect_out "Key Vault Crypto Service Encryption User" "policy: RBAC role"
	expect_out "Microsoft.KeyVault/vaults/keys/unwrap/action" "policy: custom role dataActions"
elif grep -q "Unknown\|unknown" policy.out; then
	echo "# kms policy not available in this build: skipped"
else
	failed "kms policy az1: $(cat policy.out)"
fi
reset_counters
expect_rc 0 "kms delete of an unused configuration" -- "$K" kms delete azp
expect_eq "$(json_get "$(counters)" "j['requests']")" 0 "kms delete sent nothing to Azure"
expect_eq "$(key_state "'k-nbf' in j['keys']")" True "the key is still in the vault"

finish
