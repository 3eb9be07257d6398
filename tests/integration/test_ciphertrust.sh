#!/bin/bash
# kmscrypt CLI with the CipherTrust Manager provider against the fake (tests/fakes/fake_ciphertrust.py):
# password and refresh-token logins, key creation and the key rules of seed 000, image files, key
# rotation, a token moved to another volume, throttling, outage, JWT expiry and renewal in a run,
# revoked refresh token and kms edit.  Image files only (no device-mapper).
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
PW=kmscrypt-Fake-Password-1
fake_start ct fake_ciphertrust.py --state "$tmp/ct.json" --user "kmscrypt:$PW" --user "ops:ops-pw-1:eng" || exit 1
URL=https://127.0.0.1:$(fake_port ct)

ctl() { fake_ctl ct /control "$1"; }
counters() { fake_ctl ct /counters; }
counter() { json_get "$(counters)" "$1"; }
reset_counters() { fake_ctl ct /counters/reset '{}' >/dev/null; }
state() { fake_ctl ct /state; }
printf %s "$PW" >pw
printf %s wrong-password >wrong.pw
printf %s ops-pw-1 >ops.pw
json_get "$(ctl '{"op":"issue_refresh_token","username":"kmscrypt"}')" "j['refresh_token']" | tr -d '\n' >rt
printf %s not-a-refresh-token >bad.rt

common=(--provider ciphertrust --url "$URL" --ca-file "$FAKES_CA")
pwauth=(--username kmscrypt --password-file pw)

# ---- kms create: a missing key is created (AES-256, usageMask 12); an existing one is used
expect_rc 0 "kms create (password; creates the key)" -- "$K" kms create cp "${common[@]}" "${pwauth[@]}" --key-name vol
expect_eq "$(json_get "$(state)" "[k['usageMask'] for k in j['keys'].values() if k['name']=='vol']")" "[12]" "created key allows Encrypt and Decrypt"
expect_eq "$(json_get "$(state)" "[(k['size'], k['state']) for k in j['keys'].values() if k['name']=='vol']")" "[(256, 'Active')]" "created key: AES-256, Active"
expect_eq "$(stat -c %a etc/kms/cp.conf)" 600 "configuration file is mode 0600"
expect_rc 0 "kms create (refresh token; uses the existing key)" -- "$K" kms create cr "${common[@]}" --refresh-token-file rt --key-name vol
expect_eq "$(json_get "$(state)" "len([k for k in j['keys'].values() if k['name']=='vol'])")" 1 "no second key of that name"
expect_rc 0 "kms create (128-bit key, domain)" -- "$K" kms create cd "${common[@]}" --username ops --password-file ops.pw --domain eng \
	--key-name small --key-algorithm aes --key-size 128
expect_eq "$(json_get "$(state)" "[k['size'] for k in j['keys'].values() if k['name']=='small']")" "[128]" "--key-size 128 honoured"
expect_rc 0 "kms show" -- "$K" kms show cp
expect_out "********" "show masks the password"
expect_not_out "$PW" "show output holds no password"
expect_rc 0 "kms show (refresh token)" -- "$K" kms show cr
expect_not_out "$(cat rt)" "show output holds no refresh token"
expect_rc 0 "kms check" -- "$K" kms check cr
expect_out "Active" "check shows the key state"
expect_rc 0 "kms policy" -- "$K" kms policy cp
expect_out '"usageMask": 12' "policy: the key usage mask (Encrypt + Decrypt)"
for perm in ReadKey UseKey EncryptWithKey DecryptWithKey; do
	expect_out "\"$perm\": [\"kmscrypt-cp\"]" "policy: $perm for the user's group"
done
expect_out "user 'kmscrypt'" "policy names the user"

# ---- failures at create: nothing saved
expect_rc 3 "wrong password is denied" -- "$K" kms create cw "${common[@]}" --username kmscrypt --password-file wrong.pw --key-name vol
expect_out "refused the login of user 'kmscrypt'" "message names the refused user"
expect_out "kmscrypt kms edit cw" "message says how to fix it"
expect_rc 1 "nothing saved" -- test -e etc/kms/cw.conf
expect_rc 3 "unknown refresh token is denied" -- "$K" kms create cb "${common[@]}" --refresh-token-file bad.rt --key-name vol
expect_out "--refresh-token-file" "message tells to give a new refresh token"
ctl '{"op":"create_key","name":"inactive","state":"Deactivated"}' >/dev/null
expect_rc 3 "a Deactivated key is refused" -- "$K" kms create ci "${common[@]}" "${pwauth[@]}" --key-name inactive
expect_out "is Deactivated, not Active" "message names the key state"
ctl '{"op":"create_key","name":"noenc","usageMask":8}' >/dev/null
expect_rc 3 "a key without Encrypt usage is refused" -- "$K" kms create cn "${common[@]}" "${pwauth[@]}" --key-name noenc
expect_out "does not allow Encrypt" "message names Encrypt"
ctl '{"op":"create_key","name":"nodec","usageMask":4}' >/dev/null
expect_rc 3 "a key without Decrypt usage is refused" -- "$K" kms create cx "${common[@]}" "${pwauth[@]}" --key-name nodec
expect_out "does not allow Decrypt" "message names Decrypt"
expect_rc 2 "no credentials" -- "$K" kms create cc "${common[@]}" --key-name vol
expect_rc 2 "both credential kinds" -- "$K" kms create cc "${common[@]}" "${pwauth[@]}" --refresh-token-file rt --key-name vol
expect_rc 2 "an RSA key cannot be created" -- "$K" kms create cc "${common[@]}" "${pwauth[@]}" --key-name new1 --key-algorithm rsa
expect_rc 2 "key size 512 is refused" -- "$K" kms create cc "${common[@]}" "${pwauth[@]}" --key-name new1 --key-size 512
expect_rc 2 "plain http URL is refused" -- "$K" kms create cc --provider ciphertrust --url "http://127.0.0.1:$(fake_port ct)" "${pwauth[@]}" --key-name vol
expect_rc 3 "certificate from another CA is refused" -- "$K" kms create co --provider ciphertrust --url "$URL" \
	--ca-file "$tmp/certs/other-ca.pem" "${pwauth[@]}" --key-name vol

# ---- format and check image files; every reply field and the key version are kept
truncate -s 40M a.img r.img
expect_rc 0 "format a.img (password)" -- "$K" format a.img --kms cp
expect_rc 0 "format r.img (refresh token)" -- "$K" format r.img --kms cr
expect_rc 0 "check a.img" -- "$K" check a.img
expect_rc 0 "check r.img" -- "$K" check r.img
tok_field() { cryptsetup token export --token-id 0 "$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
expect_eq "$(tok_field a.img key_version)" 0 "token records key version 0 (a new key)"
expect_eq "$(tok_field a.img alg)" ciphertrust:aes-gcm+aad "token algorithm"
expect_eq "$(tok_field a.img key_id)" vol "token names the key"
reset_counters
expect_rc 0 "check a.img again" -- "$K" check a.img
REQ=$(fake_ctl ct "/requests")
expect_eq "$(json_get "$REQ" "sorted(k for k in [r for r in j['requests'] if r['action']=='crypto.decrypt'][0]['body'])")" \
	"['aad', 'ciphertext', 'id', 'iv', 'mode', 'tag', 'version']" "decrypt sends back every field of the encrypt reply"
ctl '{"op":"rotate_key","name":"vol"}' >/dev/null
truncate -s 40M b.img
expect_rc 0 "format b.img after rotation" -- "$K" format b.img --kms cp
expect_eq "$(tok_field b.img key_version)" 1 "token records key version 1"
expect_rc 0 "the version 0 volume still opens" -- "$K" check a.img
ctl '{"op":"reply_style","version":"string","duration":"string"}' >/dev/null
truncate -s 40M s.img
expect_rc 0 "format with string versions and durations" -- "$K" format s.img --kms cp
expect_eq "$(tok_field s.img key_version)" 1 "a string version is recorded"
expect_rc 0 "check s.img" -- "$K" check s.img
ctl '{"op":"reply_style","version":"int","duration":"int"}' >/dev/null

# a token moved to another volume does not decrypt there (aad binds the UUID and keyslot)
cryptsetup token export --token-id 0 a.img >a.tok
cp b.img b-swapped.img
cryptsetup token remove --token-id 0 b-swapped.img
cryptsetup token import --token-id 0 --json-file a.tok b-swapped.img
expect_rc 3 "a token moved to another volume is denied" -- "$K" check b-swapped.img
expect_out "message authentication failed" "message names CipherTrust's error"

# ---- key rules at use: usage mask without Decrypt, Deactivated key
ctl '{"op":"set_usage_mask","name":"vol","usageMask":4}' >/dev/null
expect_rc 3 "a key that no longer allows Decrypt is denied" -- "$K" check a.img
expect_out "does not allow Decrypt" "message explains the key usage, not the token"
ctl '{"op":"set_usage_mask","name":"vol","usageMask":12}' >/dev/null
ctl '{"op":"deactivate_key","name":"vol"}' >/dev/null
expect_rc 3 "kms check of a Deactivated key is denied" -- "$K" kms check cp
expect_out "not Active" "message names the state"
# KMIP lets a Deactivated key decrypt (so does the fake): kmscrypt refuses it, deactivation revokes
expect_rc 3 "a volume of a Deactivated key is denied" -- "$K" check a.img
expect_out "is Deactivated, not Active" "message names the state, not the token"
ctl '{"op":"activate_key","name":"vol"}' >/dev/null

# ---- 429 with Retry-After, outage
reset_counters
fake_ctl ct /faults '{"throttle":2,"action":"crypto.decrypt"}' >/dev/null
expect_rc 0 "two 429 replies, then success" -- "$K" check a.img
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action']['crypto.decrypt']")" 3 "decrypt sent three times"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('429',0)")" 2 "two 429 replies"
fake_ctl ct /faults '{"error5xx":100,"status":503}' >/dev/null
expect_rc 4 "CipherTrust answering 503 is unavailable" -- "$K" --timeout 3 check a.img
fake_ctl ct /faults/reset '{}' >/dev/null
fake_ctl ct /faults '{"malformed":1,"action":"crypto.decrypt","mode":"garbage"}' >/dev/null
expect_rc 8 "a malformed decrypt reply is invalid" -- "$K" check a.img
expect_out "malformed CipherTrust reply" "message says malformed"
fake_ctl ct /faults/reset '{}' >/dev/null

# ---- JWT expiry in the middle of a run: one 401, one more login, every volume opens
for i in 1 2 3 4; do
	truncate -s 20M "w$i.img"
	"$K" -q format "w$i.img" --kms cr >/dev/null 2>&1 || failed "format w$i.img"
done
reset_counters
fake_ctl ct /faults '{"latency_ms":400,"action":"crypto.decrypt"}' >/dev/null
"$K" check w*.img >run.out 2>&1 &
run=$!
for _ in $(seq 200); do
	[ "$(counter "j['requests_by_action'].get('crypto.decrypt',0)")" -ge 1 ] && break
	sleep 0.05
done
ctl '{"op":"expire_jwts"}' >/dev/null
rc=0
wait $run || rc=$?
fake_ctl ct /faults/reset '{}' >/dev/null
if [ "$rc" = 0 ]; then pass "4 volumes checked although the JWT expired mid-run"; else failed "mid-run expiry: rc $rc: $(cat run.out)"; fi
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('auth.tokens',0)")" 2 "a second login with the refresh token"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('401',0)")" 1 "one 401 for the expired JWT"

# short-lived JWTs (2 s) are renewed before they expire: a 3 s run needs more than one login
ctl '{"op":"jwt_duration","seconds":2}' >/dev/null
reset_counters
fake_ctl ct /faults '{"latency_ms":800,"action":"crypto.decrypt"}' >/dev/null
expect_rc 0 "4 volumes with 2 s JWTs" -- "$K" check w*.img
fake_ctl ct /faults/reset '{}' >/dev/null
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('auth.tokens',0) >= 2")" True "JWT renewed during the run"
ctl '{"op":"jwt_duration","seconds":300}' >/dev/null

# ---- a revoked refresh token: denied, with the kms edit command; kms edit restores access
ctl "{\"op\":\"revoke_refresh_token\",\"refresh_token\":\"$(cat rt)\"}" >/dev/null
expect_rc 3 "revoked refresh token is denied" -- "$K" check r.img
expect_out "kmscrypt kms edit cr --refresh-token-file" "message tells the administrator what to run"
json_get "$(ctl '{"op":"issue_refresh_token","username":"kmscrypt"}')" "j['refresh_token']" | tr -d '\n' >rt2
cp etc/kms/cr.conf before.conf
expect_rc 3 "kms edit with a bad refresh token is refused" -- "$K" kms edit cr --refresh-token-file bad.rt
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/cr.conf
expect_rc 0 "kms edit with a new refresh token" -- "$K" kms edit cr --refresh-token-file rt2
expect_rc 0 "check works with the new refresh token" -- "$K" check r.img
expect_rc 2 "key name cannot be edited" -- "$K" kms edit cr --key-name small
ctl '{"op":"disable_user","username":"kmscrypt"}' >/dev/null
expect_rc 3 "a disabled user is denied" -- "$K" check a.img
ctl '{"op":"enable_user","username":"kmscrypt"}' >/dev/null

# ---- 5 volumes in one run share one login and one TLS connection
for i in $(seq -w 1 5); do
	truncate -s 20M "v$i.img"
	"$K" -q format "v$i.img" --kms cp >/dev/null 2>&1 || failed "format v$i.img"
done
reset_counters
expect_rc 0 "check of 5 volumes in one run" -- "$K" check v*.img
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('crypto.decrypt',0)")" 5 "5 decrypt requests"
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('auth.tokens',0)")" 1 "one login"
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('keys.list',0)")" 1 "one key read for 5 volumes"
expect_eq "$(json_get "$OUT" "j['tls_handshakes']")" 1 "one TLS handshake for 5 volumes"

finish
