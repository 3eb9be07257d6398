#!/bin/bash
# kmscrypt CLI with the Vault Transit provider against the fake Vault (transit, tokens, AppRole, ACL,
# namespaces, seal), on LUKS2 image files (no device-mapper needed).
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
ROOT=hvs.kmscrypt-test-root
fake_start vault fake_vault.py --root-token $ROOT --state "$tmp/vault.json" || exit 1
ADDR=https://127.0.0.1:$(fake_port vault)

ctl() { fake_ctl vault /control "$1"; }
counters() { fake_ctl vault /counters; }
counter() { json_get "$(counters)" "$1"; }
reset_counters() { fake_ctl vault /counters/reset '{}' >/dev/null; }
# token_for POLICY: a token limited to that policy, written to FILE
token_for() { json_get "$(ctl "{\"op\":\"create_token\",\"policies\":[\"$1\"],\"ttl\":\"1h\"}")" "j['token']" | tr -d '\n' >"$2"; }

ctl '{"op":"create_key","name":"vol"}' >/dev/null
ctl '{"op":"create_key","name":"dvol","derived":true}' >/dev/null
ctl '{"op":"create_key","name":"team","mount":"team/transit","type":"chacha20-poly1305"}' >/dev/null
ctl '{"op":"set_policy","name":"agent","rules":{"transit/encrypt/*":["update"],"transit/decrypt/*":["update"],"transit/keys/*":["read"],"team/transit/*":["read","update"]}}' >/dev/null
ctl '{"op":"set_policy","name":"encrypt-only","rules":{"transit/encrypt/*":["update"],"transit/keys/*":["read"]}}' >/dev/null
token_for agent agent.tok
token_for encrypt-only enc.tok
printf %s "$ROOT" >root.tok
printf %s hvs.not-a-token >bad.tok
AR=$(ctl '{"op":"create_approle","name":"kmscrypt","policies":["agent"],"token_ttl":"1h"}')
ROLE=$(json_get "$AR" "j['role_id']")
json_get "$AR" "j['secret_id']" | tr -d '\n' >sid
printf %s 00000000-0000-0000-0000-000000000000 >wrong.sid

common=(--provider vault --address "$ADDR" --ca-file "$FAKES_CA")

# ---- kms create / check / show for token and AppRole auth
expect_rc 0 "kms create (token file)" -- "$K" kms create vt "${common[@]}" --key-name vol --token-file agent.tok
expect_eq "$(stat -c %a etc/kms/vt.conf)" 600 "configuration file is mode 0600"
expect_rc 0 "kms show" -- "$K" kms show vt --json
expect_eq "$(json_get "$OUT" "j['settings']['token']")" "********" "show masks the token"
expect_not_out "$(cat agent.tok)" "show output holds no token"
expect_eq "$(json_get "$OUT" "j['settings']['key_name']")" vol "key name kept"
expect_rc 0 "kms check (token)" -- "$K" kms check vt --json
expect_eq "$(json_get "$OUT" "j['ok']")" True "check reports ok"
expect_rc 0 "kms create (AppRole)" -- "$K" kms create va "${common[@]}" --key-name vol --role-id "$ROLE" --secret-id-file sid
expect_rc 0 "kms show (AppRole)" -- "$K" kms show va
expect_out "SecretId     ********" "show masks the secret id"
expect_not_out "$(cat sid)" "show output holds no secret id"
expect_rc 0 "kms check (AppRole)" -- "$K" kms check va
expect_rc 0 "kms create (derived key, context binding)" -- "$K" kms create vd "${common[@]}" --key-name dvol --token-file agent.tok
expect_rc 0 "kms check (derived key)" -- "$K" kms check vd
expect_out "(derived)" "check describes the derived key"
expect_rc 0 "kms create (other mount, chacha20)" -- "$K" kms create vm "${common[@]}" --mount team/transit --key-name team --token-file agent.tok

ctl '{"op":"create_namespace","name":"tenant1"}' >/dev/null
ctl '{"op":"create_key","name":"nsvol","namespace":"tenant1"}' >/dev/null
json_get "$(ctl '{"op":"create_token","policies":["root"],"namespace":"tenant1"}')" "j['token']" | tr -d '\n' >ns.tok
expect_rc 0 "kms create (namespace)" -- "$K" kms create vn "${common[@]}" --namespace tenant1 --key-name nsvol --token-file ns.tok
expect_rc 3 "the key is not visible outside its namespace" -- "$K" kms create vn2 "${common[@]}" --key-name nsvol --token-file ns.tok

# ---- failures at create: nothing saved
expect_rc 3 "wrong AppRole secret id is denied" -- "$K" kms create vw "${common[@]}" --key-name vol --role-id "$ROLE" --secret-id-file wrong.sid
expect_out "invalid role or secret ID" "message names Vault's error"
expect_rc 1 "nothing saved" -- test -e etc/kms/vw.conf
expect_rc 3 "unknown token is denied" -- "$K" kms create vb "${common[@]}" --key-name vol --token-file bad.tok
expect_out "permission denied" "message says permission denied"
expect_rc 3 "missing key is denied" -- "$K" kms create vx "${common[@]}" --key-name nosuch --token-file root.tok
expect_out "transit key 'nosuch' not found" "message names the missing key"
expect_rc 3 "policy without decrypt is denied" -- "$K" kms create ve "${common[@]}" --key-name vol --token-file enc.tok
expect_out "permission denied" "message says permission denied"
expect_rc 2 "plain http address is refused" -- "$K" kms create vh --provider vault --address "http://127.0.0.1:$(fake_port vault)" --key-name vol --token-file agent.tok
expect_rc 2 "no credentials" -- "$K" kms create vc "${common[@]}" --key-name vol
expect_rc 3 "certificate from another CA is refused" -- "$K" kms create vo --provider vault --address "$ADDR" \
	--ca-file "$tmp/certs/other-ca.pem" --key-name vol --token-file agent.tok

# ---- format and check image files; the key version is recorded
truncate -s 40M a.img d.img m.img n.img
expect_rc 0 "format a.img (AppRole, AEAD key)" -- "$K" format a.img --kms va
expect_rc 0 "format d.img (derived key)" -- "$K" format d.img --kms vd
expect_rc 0 "format m.img (other mount)" -- "$K" format m.img --kms vm
expect_rc 0 "format n.img (namespace)" -- "$K" format n.img --kms vn
for i in a d m n; do
	expect_rc 0 "check $i.img" -- "$K" check $i.img
done
tok_field() { cryptsetup token export --token-id 0 "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
expect_eq "$(tok_field a.img key_version)" 1 "token records key version 1"
expect_eq "$(tok_field a.img alg)" vault-transit:aad "AEAD key: bound by associated_data"
expect_eq "$(tok_field d.img alg)" vault-transit:aad+context "derived AEAD key: associated_data and context"
ctl '{"op":"rotate_key","name":"vol"}' >/dev/null
truncate -s 40M b.img
expect_rc 0 "format b.img after rotation" -- "$K" format b.img --kms va
expect_eq "$(tok_field b.img key_version)" 2 "token records key version 2"
expect_rc 0 "old version still opens" -- "$K" check a.img

# a token moved to another volume does not decrypt there (associated_data binds the UUID)
cryptsetup token export --token-id 0 a.img >a.tok
cp b.img b-swapped.img
cryptsetup token remove --token-id 0 b-swapped.img
cryptsetup token import --token-id 0 --json-file a.tok b-swapped.img
expect_rc 3 "a token moved to another volume is denied" -- "$K" check b-swapped.img
expect_out "message authentication failed" "message names Vault's error"

ctl '{"op":"key_config","name":"vol","min_decryption_version":2}' >/dev/null
expect_rc 3 "a disallowed (too old) key version is denied" -- "$K" check a.img
expect_out "disallowed" "message names the disallowed version"
expect_rc 0 "the current version still opens" -- "$K" check b.img
ctl '{"op":"key_config","name":"vol","min_decryption_version":1}' >/dev/null

# ---- 429, sealed, denial
reset_counters
fake_ctl vault /faults '{"throttle":2,"action":"transit.decrypt"}' >/dev/null
expect_rc 0 "two 429 replies, then success" -- "$K" check a.img
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action']['transit.decrypt']")" 3 "decrypt sent three times"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('429',0)")" 2 "two 429 replies"
fake_ctl vault /faults/reset '{}' >/dev/null
ctl '{"op":"seal"}' >/dev/null
expect_rc 4 "sealed Vault is unavailable" -- "$K" --timeout 3 check a.img
expect_out "sealed" "message says sealed"
ctl '{"op":"unseal"}' >/dev/null
expect_rc 0 "unsealed Vault works again" -- "$K" check a.img

expect_rc 0 "format c.img (token auth)" -- bash -c "truncate -s 40M c.img && '$K' format c.img --kms vt"
ctl "{\"op\":\"revoke_token\",\"token\":\"$(cat agent.tok)\"}" >/dev/null
expect_rc 3 "revoked token is denied" -- "$K" check c.img
expect_out "invalid token" "message names the invalid token"
ctl '{"op":"revoke_secret_ids","name":"kmscrypt"}' >/dev/null
expect_rc 3 "revoked AppRole secret id is denied" -- "$K" check a.img
expect_out "invalid role or secret ID" "message names Vault's error"
AR=$(ctl '{"op":"create_approle","name":"kmscrypt","policies":["agent"],"token_ttl":"1h"}')
json_get "$AR" "j['secret_id']" | tr -d '\n' >new.sid
expect_eq "$(json_get "$AR" "j['role_id']")" "$ROLE" "same role id after new secret id"

# ---- kms edit: a new secret id, refused when wrong
cp etc/kms/va.conf before.conf
expect_rc 3 "kms edit with a wrong secret id is refused" -- "$K" kms edit va --secret-id-file wrong.sid
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/va.conf
expect_rc 0 "kms edit with the new secret id" -- "$K" kms edit va --secret-id-file new.sid
expect_rc 0 "check works with the new secret id" -- "$K" check a.img
expect_rc 2 "key name cannot be edited" -- "$K" kms edit va --key-name dvol

# ---- an expired AppRole token is replaced by a fresh login in the middle of a run
for i in 1 2 3 4 5 6; do
	truncate -s 20M "w$i.img"
	"$K" -q format "w$i.img" --kms va >/dev/null 2>&1 || failed "format w$i.img"
done
reset_counters
fake_ctl vault /faults '{"latency_ms":500,"action":"transit.decrypt"}' >/dev/null
"$K" check w*.img >run.out 2>&1 &
run=$!
# once the first decrypt was answered (the run holds its token), expire every token
for _ in $(seq 200); do
	[ "$(counter "j['responses_by_status'].get('200',0)")" -ge 1 ] && break
	sleep 0.05
done
ctl '{"op":"expire_tokens"}' >/dev/null
rc=0
wait $run || rc=$?
fake_ctl vault /faults/reset '{}' >/dev/null
if [ "$rc" = 0 ]; then pass "6 volumes checked although the token expired mid-run"; else failed "mid-run expiry: rc $rc: $(cat run.out)"; fi
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('approle.login',0)")" 2 "a second AppRole login in the same run"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('403',0)")" 1 "one 403 for the expired token"
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('transit.decrypt',0)")" 7 "6 volumes, one decrypt repeated"

# ---- 50 volumes in one run share one TLS connection
for i in $(seq -w 1 50); do
	truncate -s 20M "v$i.img"
	"$K" -q format "v$i.img" --kms va >/dev/null 2>&1 || failed "format v$i.img"
done
reset_counters
expect_rc 0 "check of 50 volumes in one run" -- "$K" check v*.img --json
expect_eq "$(json_get "$OUT" "sum(1 for v in j['volumes'] if v['ok'])")" 50 "all 50 volumes checked"
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('transit.decrypt',0)")" 50 "50 decrypt requests"
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('approle.login',0)")" 1 "one AppRole login"
expect_eq "$(json_get "$OUT" "j['tls_handshakes']")" 1 "one TLS handshake for 50 volumes"
expect_eq "$(json_get "$OUT" "j['tcp_connections']")" 1 "one TCP connection for 50 volumes"

finish
