#!/bin/bash
# kmscrypt CLI with the AWS KMS provider against the fake AWS KMS (SigV4 checked with botocore) and
# its IMDSv2 server, on LUKS2 image files (no device-mapper needed).  Unlock/revoke/restore of live
# mappings: tests/vm/test_e2e_aws.sh.
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

fake_start aws fake_aws_kms.py --imds-portfile "$tmp/aws.iport" --state "$tmp/aws.json" || exit 1
# a second "account" with an alias of the same name: for `kms edit` reaching another key
fake_start aws2 fake_aws_kms.py --account 444455556666 || exit 1
EP=https://127.0.0.1:$(fake_port aws)
EP2=https://127.0.0.1:$(fake_port aws2)
IMDS=http://127.0.0.1:$(cat "$tmp/aws.iport")
AKID=AKIAFAKEKMS000000001
printf %s fakeSecretKeyForKmscryptTests0000000001 >sk
printf %s wrongSecretKeyForKmscryptTests000000001 >wrong.sk

ctl() { fake_ctl aws /control "$1"; }
counters() { fake_ctl aws /counters; }
counter() { json_get "$(counters)" "$1"; }
reset_counters() { fake_ctl aws /counters/reset '{}' >/dev/null; }

OUT=$(ctl '{"op":"create_key","description":"kmscrypt volumes"}')
KEY=$(json_get "$OUT" "j['KeyId']")
ARN=$(json_get "$OUT" "j['Arn']")
ctl "{\"op\":\"create_alias\",\"alias\":\"alias/kmscrypt\",\"key_id\":\"$KEY\"}" >/dev/null
OUT=$(ctl '{"op":"create_key","description":"other"}')
KEY_B=$(json_get "$OUT" "j['KeyId']")
OUT=$(fake_ctl aws2 /control '{"op":"create_key","description":"account 2"}')
ARN2=$(json_get "$OUT" "j['Arn']")
fake_ctl aws2 /control "{\"op\":\"create_alias\",\"alias\":\"alias/kmscrypt\",\"key_id\":\"$(json_get "$OUT" "j['KeyId']")\"}" >/dev/null

common=(--provider aws --region us-east-1 --endpoint "$EP" --ca-file "$FAKES_CA")

# ---- kms create / check for every credential source
expect_rc 0 "kms create (static keys, alias)" -- "$K" kms create st "${common[@]}" \
	--key-id alias/kmscrypt --access-key-id $AKID --secret-access-key-file sk
expect_out "$ARN" "create reports the resolved key ARN"
expect_eq "$(stat -c %a etc/kms/st.conf)" 600 "configuration file is mode 0600"
expect_eq "$(grep -c '^KeyArn=' etc/kms/st.conf)" 1 "create recorded KeyArn"
expect_rc 0 "kms show" -- "$K" kms show st --json
expect_eq "$(json_get "$OUT" "j['settings']['secret_access_key']")" "********" "show masks the secret access key"
expect_eq "$(json_get "$OUT" "j['settings']['key_arn']")" "$ARN" "show gives the key ARN"
expect_not_out "fakeSecretKey" "show output holds no secret"
expect_rc 0 "kms show (text)" -- "$K" kms show st
expect_not_out "fakeSecretKey" "text show holds no secret"
expect_rc 0 "ListAliases resolved the alias" -- test "$(counter "j['requests_by_action'].get('ListAliases',0)")" -ge 1
expect_rc 0 "kms check (static)" -- "$K" kms check st --json
expect_eq "$(json_get "$OUT" "j['ok']")" True "check reports ok"
expect_eq "$(json_get "$OUT" "j['key_state']")" Enabled "check reports the key state"

reset_counters
expect_rc 0 "kms create (IMDSv2 instance role)" -- "$K" kms create im "${common[@]}" --key-id "$KEY" \
	--credentials imds --imds-endpoint "$IMDS"
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['imds']['requests_by_action'].get('/latest/api/token',0)")" 1 "one IMDSv2 session token"
expect_eq "$(json_get "$OUT" "j['imds']['requests_by_action'].get('/latest/meta-data/iam/security-credentials/kmscrypt-test-role',0)")" 1 \
	"role credentials fetched once for describe+wrap+unwrap"
expect_rc 0 "kms check (IMDSv2)" -- "$K" kms check im
fake_ctl aws /control '{"op":"imds_config","enabled":false}' >/dev/null
expect_rc 3 "no instance role at IMDS is denied" -- "$K" kms check im
expect_out "instance metadata" "message names the metadata service"
fake_ctl aws /control '{"op":"imds_config","enabled":true}' >/dev/null

expect_rc 2 "env credentials without the variables" -- "$K" kms create en "${common[@]}" --key-id "$KEY" --credentials env
expect_out "AWS_ACCESS_KEY_ID" "message names the variable"
expect_rc 0 "kms create (environment)" -- env AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY="$(cat sk)" \
	"$K" kms create en "${common[@]}" --key-id "$KEY" --credentials env
expect_rc 0 "kms check (environment)" -- env AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY="$(cat sk)" "$K" kms check en
expect_rc 3 "kms check (environment, wrong secret) is denied" -- env AWS_ACCESS_KEY_ID=$AKID \
	AWS_SECRET_ACCESS_KEY="$(cat wrong.sk)" "$K" kms check en
expect_rc 2 "unknown credential source" -- "$K" kms create bad "${common[@]}" --key-id "$KEY" --credentials magic

# session token (temporary static credentials)
ctl '{"op":"add_credential","access_key":"ASIAFAKESESSION00001","secret":"sessionSecret0000000000000000000000000001","token":"FQoGZXIvYXdzEFAKEsessiontoken"}' >/dev/null
printf %s sessionSecret0000000000000000000000000001 >sess.sk
printf %s FQoGZXIvYXdzEFAKEsessiontoken >sess.tok
expect_rc 3 "temporary credentials without their session token are denied" -- "$K" kms create se0 "${common[@]}" \
	--key-id "$KEY" --access-key-id ASIAFAKESESSION00001 --secret-access-key-file sess.sk
expect_rc 0 "kms create (static keys with a session token)" -- "$K" kms create se "${common[@]}" \
	--key-id "$KEY" --access-key-id ASIAFAKESESSION00001 --secret-access-key-file sess.sk --session-token-file sess.tok
expect_rc 0 "kms show masks the session token" -- "$K" kms show se
expect_not_out "FQoGZXIvYXdz" "session token not shown"

# ---- failures at create: nothing saved, and the class is right
expect_rc 3 "wrong secret access key is an authentication error (denied)" -- "$K" kms create wr "${common[@]}" \
	--key-id "$KEY" --access-key-id $AKID --secret-access-key-file wrong.sk
expect_out "Signature" "message names the signature error"
expect_rc 1 "nothing saved after a failed create" -- test -e etc/kms/wr.conf
expect_rc 3 "unknown alias is denied" -- "$K" kms create na "${common[@]}" --key-id alias/nosuch \
	--access-key-id $AKID --secret-access-key-file sk
expect_out "NotFoundException" "message names NotFoundException"
expect_rc 3 "a certificate from another CA is refused (TLS always verified)" -- "$K" kms create tl \
	--provider aws --region us-east-1 --endpoint "$EP" --ca-file "$tmp/certs/other-ca.pem" \
	--key-id "$KEY" --access-key-id $AKID --secret-access-key-file sk
expect_rc 2 "plain http endpoint is refused" -- "$K" kms create ht --provider aws --region us-east-1 \
	--endpoint "http://127.0.0.1:$(fake_port aws)" --key-id "$KEY" --access-key-id $AKID --secret-access-key-file sk
closed=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
expect_rc 4 "nothing listening is unavailable" -- "$K" --timeout 3 kms create nl --provider aws --region us-east-1 \
	--endpoint "https://127.0.0.1:$closed" --key-id "$KEY" --access-key-id $AKID --secret-access-key-file sk
ctl "{\"op\":\"disable_key\",\"key_id\":\"$KEY_B\"}" >/dev/null
expect_rc 3 "kms create with a disabled key is denied" -- "$K" kms create dis "${common[@]}" --key-id "$KEY_B" \
	--access-key-id $AKID --secret-access-key-file sk
expect_out "Disabled" "DescribeKey state named"

# ---- format and check image files
truncate -s 40M a.img b.img
expect_rc 0 "format a.img (static)" -- "$K" format a.img --kms st
expect_rc 0 "format b.img (IMDS)" -- "$K" format b.img --kms im
expect_rc 0 "check a.img" -- "$K" check a.img --json
expect_eq "$(json_get "$OUT" "j['volumes'][0]['key_id']")" "$ARN" "token records the key ARN"
expect_rc 0 "check b.img" -- "$K" check b.img
OUT=$(fake_ctl aws "/requests?since=0")
expect_eq "$(json_get "$OUT" "[r['body'].get('EncryptionContext') for r in j['requests'] if r.get('action')=='Decrypt'][-1]['kmscrypt:keyslot']")" 0 \
	"Decrypt carries the keyslot in the EncryptionContext"
expect_eq "$(json_get "$OUT" "[r['body'].get('KeyId') for r in j['requests'] if r.get('action')=='Decrypt'][-1]")" "$ARN" \
	"Decrypt names the key ARN"

# a token copied to another volume does not decrypt there (EncryptionContext binds the UUID)
cryptsetup token export --token-id 0 a.img >a.tok
cryptsetup token export --token-id 0 b.img >b.tok
cp b.img b-swapped.img
cryptsetup token remove --token-id 0 b-swapped.img
cryptsetup token import --token-id 0 --json-file a.tok b-swapped.img
expect_rc 3 "a token moved to another volume is denied" -- "$K" check b-swapped.img
expect_out "InvalidCiphertextException" "message names InvalidCiphertextException"

# ---- throttling, 5xx, denial
reset_counters
fake_ctl aws /faults '{"throttle":2,"action":"Decrypt"}' >/dev/null
expect_rc 0 "two throttled replies, then success" -- "$K" check a.img
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action']['Decrypt']")" 3 "Decrypt sent three times"
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('400',0)")" 2 "two ThrottlingException replies"
fake_ctl aws /faults '{"throttle":10,"action":"Decrypt"}' >/dev/null
expect_rc 4 "throttled on every attempt is unavailable" -- "$K" --timeout 5 check a.img
expect_out "ThrottlingException" "message names ThrottlingException"
fake_ctl aws /faults/reset '{}' >/dev/null
fake_ctl aws /faults '{"error5xx":10,"action":"Decrypt"}' >/dev/null
expect_rc 4 "5xx on every attempt is unavailable" -- "$K" check a.img
fake_ctl aws /faults/reset '{}' >/dev/null

ctl "{\"op\":\"disable_key\",\"key_id\":\"$KEY\"}" >/dev/null
expect_rc 3 "disabled key is denied" -- "$K" check a.img
expect_out "DisabledException" "message names DisabledException"
expect_rc 3 "kms check of a disabled key is denied" -- "$K" kms check st
expect_out "Disabled" "kms check names the key state"
ctl "{\"op\":\"enable_key\",\"key_id\":\"$KEY\"}" >/dev/null
expect_rc 0 "re-enabled key works again" -- "$K" check a.img
ctl "{\"op\":\"set_key_state\",\"key_id\":\"$KEY\",\"state\":\"PendingDeletion\"}" >/dev/null
expect_rc 3 "key pending deletion is denied" -- "$K" check a.img
expect_out "KMSInvalidStateException" "message names KMSInvalidStateException"
ctl "{\"op\":\"set_key_state\",\"key_id\":\"$KEY\",\"state\":\"Enabled\"}" >/dev/null

ctl "{\"op\":\"revoke\",\"access_key\":\"$AKID\"}" >/dev/null
expect_rc 3 "revoked principal is denied" -- "$K" check a.img
expect_out "AccessDeniedException" "message names AccessDeniedException"
ctl "{\"op\":\"restore\",\"access_key\":\"$AKID\"}" >/dev/null
expect_rc 0 "restored principal works again" -- "$K" check a.img

cp etc/kms/im.conf before.conf
expect_rc 4 "IMDS not reachable is unavailable" -- "$K" --timeout 3 kms edit im --imds-endpoint "http://127.0.0.1:$closed"
expect_out "metadata service not reachable" "message names the metadata service"
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/im.conf

# ---- 50 volumes in one run share one TLS connection
for i in $(seq -w 1 50); do
	truncate -s 20M "v$i.img"
	"$K" -q format "v$i.img" --kms st >/dev/null 2>&1 || failed "format v$i.img"
done
reset_counters
expect_rc 0 "check of 50 volumes in one run" -- "$K" check v*.img --json
expect_eq "$(json_get "$OUT" "sum(1 for v in j['volumes'] if v['ok'])")" 50 "all 50 volumes checked"
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('Decrypt',0)")" 50 "50 Decrypt requests"
expect_eq "$(json_get "$OUT" "j['tls_handshakes']")" 1 "one TLS handshake for 50 volumes"
expect_eq "$(json_get "$OUT" "j['tcp_connections']")" 1 "one TCP connection for 50 volumes"
reset_counters
expect_rc 0 "two separate runs" -- bash -c "'$K' check v01.img && '$K' check v02.img"
expect_eq "$(counter "j['tls_handshakes']")" 2 "separate runs each connect (the counter does count)"
ctl "{\"op\":\"disable_key\",\"key_id\":\"$KEY\"}" >/dev/null
expect_rc 3 "several devices: exit status of the first failure" -- "$K" check v01.img b.img
ctl "{\"op\":\"enable_key\",\"key_id\":\"$KEY\"}" >/dev/null

# An endpoint that accepts connections but never answers: the first volume waits out the deadline,
# the others of the same run are answered at once (not 3 more deadlines in the queue).
/usr/bin/python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(64)
open(sys.argv[1],"w").write(str(s.getsockname()[1])); time.sleep(120)' "$tmp/hole.port" &
hole=$!
for _ in $(seq 100); do [ -s "$tmp/hole.port" ] && break; sleep 0.05; done
for i in 01 02 03 04; do cp "v$i.img" "h$i.img"; done
# the tokens name KMS 'st': point it at the black hole for this run (edited by hand: `kms edit`
# would refuse settings that do not work)
cp etc/kms/st.conf st.conf.saved
sed -i "s|^Endpoint=.*|Endpoint=https://127.0.0.1:$(cat "$tmp/hole.port")|" etc/kms/st.conf
t0=$(date +%s%N)
expect_rc 4 "black-holed endpoint is unavailable" -- "$K" --timeout 3 check h01.img h02.img h03.img h04.img
ms=$((($(date +%s%N) - t0) / 1000000))
cp st.conf.saved etc/kms/st.conf
kill $hole 2>/dev/null
expect_out "deadline reached" "message says the deadline was reached"
if [ "$ms" -lt 7000 ]; then pass "4 volumes failed in $ms ms (one 3 s deadline, not four)"; else failed "4 volumes with a black-holed endpoint took $ms ms"; fi

# IMDS credentials that KMS declares expired in the middle of a run (ExpiredTokenException) are
# replaced once from IMDS, which has rotated them by then; no volume of the run fails.
for i in 1 2 3 4 5 6 7 8; do
	truncate -s 20M "w$i.img"
	"$K" -q format "w$i.img" --kms im >/dev/null 2>&1 || failed "format w$i.img"
done
reset_counters
fake_ctl aws /faults '{"latency_ms":500,"action":"Decrypt"}' >/dev/null
"$K" check w*.img >imds-run.out 2>&1 &
run=$!
# once the first Decrypt was answered (the run holds its credentials), expire them; the next
# request is signed ~500 ms later (fault latency), after both control calls
for _ in $(seq 200); do
	[ "$(counter "j['responses_by_status'].get('200',0)")" -ge 1 ] && break
	sleep 0.05
done
ctl '{"op":"imds_expire"}' >/dev/null
ctl '{"op":"imds_rotate"}' >/dev/null
rc=0
wait $run || rc=$?
if [ "$rc" = 0 ]; then pass "8 volumes checked although IMDS credentials expired mid-run"; else failed "mid-run expiry: rc $rc: $(cat imds-run.out)"; fi
fake_ctl aws /faults/reset '{}' >/dev/null
OUT=$(counters)
expect_eq "$(json_get "$OUT" "j['responses_by_status'].get('400',0)")" 1 "KMS answered ExpiredTokenException once"
expect_eq "$(json_get "$OUT" "j['imds']['requests_by_action'].get('/latest/meta-data/iam/security-credentials/kmscrypt-test-role',0)")" 2 \
	"credentials fetched twice in one run"
expect_eq "$(json_get "$OUT" "j['requests_by_action'].get('Decrypt',0)")" 9 "8 volumes, one Decrypt repeated"

# ---- kms edit: rotate the secret access key; refuse credentials that reach another key
ctl '{"op":"add_credential","access_key":"AKIAFAKEROTATED00002","secret":"rotatedSecretKeyForKmscryptTests00000002"}' >/dev/null
printf %s rotatedSecretKeyForKmscryptTests00000002 >new.sk
expect_rc 0 "kms edit rotates the access key" -- "$K" kms edit st --access-key-id AKIAFAKEROTATED00002 --secret-access-key-file new.sk
ctl "{\"op\":\"delete_credential\",\"access_key\":\"$AKID\"}" >/dev/null
expect_rc 0 "check works with the rotated key only" -- "$K" check a.img
expect_eq "$(grep -c AKIAFAKEROTATED00002 etc/kms/st.conf)" 1 "new key id saved"
cp etc/kms/st.conf before.conf
expect_rc 3 "kms edit refuses credentials that reach another key" -- "$K" kms edit st --endpoint "$EP2" \
	--access-key-id $AKID --secret-access-key-file sk
expect_out "$ARN2" "message names the key reached"
expect_out "$ARN" "message names the key of the configuration"
expect_rc 0 "configuration unchanged after the refused edit" -- cmp before.conf etc/kms/st.conf
expect_rc 3 "kms edit with a wrong secret is refused" -- "$K" kms edit st --secret-access-key-file wrong.sk
expect_rc 0 "configuration unchanged" -- cmp before.conf etc/kms/st.conf
expect_rc 2 "the key id cannot be edited" -- "$K" kms edit st --key-id "$KEY_B"
expect_rc 2 "the region cannot be edited" -- "$K" kms edit st --region eu-west-1

finish
