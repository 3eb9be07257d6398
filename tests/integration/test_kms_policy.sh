#!/bin/bash
# `kmscrypt kms policy NAME`: the least-privilege permissions of a configuration, per provider.
# AWS: a valid JSON key policy with exactly the actions kmscrypt calls on the key ARN and the
# EncryptionContext condition (the fake does not evaluate key policies: structure only).  Vault:
# the HCL is applied to the fake (its ACL engine) and a token holding only that policy does
# kms check, format and check; with any one capability less, the operation that needs it fails.
# Local and KMIP: their requirements in text.  No KMS request is made to print a policy.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
. "$here/../lib/assert.sh"
. "$src/tests/fakes/lib.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
PY=/usr/bin/python3

fakes_setup >/dev/null
tmp=$FAKES_WORK
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE

# ---- local
expect_rc 0 "kms create (local)" -- "$K" kms create lab --provider local --key-file "$tmp/lab.key" --generate
expect_rc 0 "kms policy (local)" -- "$K" kms policy lab
expect_out "needs no KMS permissions" "local: no KMS permissions"
expect_out "chmod 600 $tmp/lab.key" "local: names the key file's mode"
expect_rc 0 "kms policy --json (local)" -- "$K" kms policy lab --json
expect_eq "$(json_get "$OUT" "j['provider'] + ' ' + str(j['exit'])")" "local 0" "JSON names the provider, exit 0"
expect_rc 0 "JSON policy is the text policy" -- test "$(json_get "$OUT" "j['policy']")" = "$("$K" kms policy lab)"
expect_rc 6 "unknown configuration" -- "$K" kms policy nosuch
expect_rc 2 "usage: no name" -- "$K" kms policy
expect_rc 0 "help" -- "$K" kms policy --help
expect_out "kms policy NAME" "help names the subcommand"

# ---- KMIP: a configuration file written by hand (no server needed to print a policy)
mkdir -p etc/kms
cat >etc/kms/km.conf <<EOF
[KMS]
Provider=kmip
Endpoint=kmip.example:5696
ClientCert=/etc/kmscrypt/kmip-client.pem
ClientKey=/etc/kmscrypt/kmip-client.key
KeyId=4f1c2a
Mode=server
Cipher=gcm
EOF
chmod 600 etc/kms/km.conf
expect_rc 0 "kms policy (KMIP, server mode)" -- "$K" kms policy km
for op in "Get Attributes" "Encrypt" "Decrypt" "Unique Identifier 4f1c2a" "/etc/kmscrypt/kmip-client.pem"; do
	expect_out "$op" "KMIP policy names $op"
done
expect_not_out "#   Get       every" "server mode does not need Get (the key never leaves)"
sed -i 's/^Mode=server/Mode=local-wrap/; /^Cipher=/d' etc/kms/km.conf
expect_rc 0 "kms policy (KMIP, local-wrap)" -- "$K" kms policy km
expect_out "#   Get       every wrap and unwrap" "local-wrap needs Get"
expect_not_out "#   Encrypt   format" "local-wrap needs no Encrypt"

# ---- AWS
fake_start aws fake_aws_kms.py || exit 1
EP=https://127.0.0.1:$(fake_port aws)
printf %s fakeSecretKeyForKmscryptTests0000000001 >sk
OUT=$(fake_ctl aws /control '{"op":"create_key","description":"kmscrypt volumes"}')
KEY=$(json_get "$OUT" "j['KeyId']")
ARN=$(json_get "$OUT" "j['Arn']")
fake_ctl aws /control "{\"op\":\"create_alias\",\"alias\":\"alias/kmscrypt\",\"key_id\":\"$KEY\"}" >/dev/null
awsc=(--provider aws --region us-east-1 --endpoint "$EP" --ca-file "$FAKES_CA" --access-key-id AKIAFAKEKMS000000001
	--secret-access-key-file sk)
expect_rc 0 "kms create (AWS, key id)" -- "$K" kms create ak "${awsc[@]}" --key-id "$KEY"
expect_rc 0 "kms create (AWS, alias)" -- "$K" kms create aa "${awsc[@]}" --key-id alias/kmscrypt
fake_ctl aws /counters/reset '{}' >/dev/null
expect_rc 0 "kms policy (AWS, key id)" -- "$K" kms policy ak
echo "$OUT" >ak.json
# aws_check FILE WANT-ACTIONS: prints what is wrong, nothing when the policy is right
aws_check() {
	$PY - "$1" "$2" "$ARN" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
want, arn = set(sys.argv[2].split()), sys.argv[3]
bad = []
if doc.get("Version") != "2012-10-17":
    bad.append("Version")
acts, wrap = set(), None
for st in doc["Statement"]:
    a = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
    acts |= set(a)
    if st["Effect"] != "Allow" or "AWS" not in st["Principal"]:
        bad.append("effect/principal of " + st["Sid"])
    if "kms:ListAliases" in a:
        if st["Resource"] != "*":
            bad.append("ListAliases resource")
    elif st["Resource"] != arn:
        bad.append("resource of %s: %s" % (st["Sid"], st["Resource"]))
    if "kms:Encrypt" in a or "kms:Decrypt" in a:
        wrap = st
    elif "Condition" in st:
        bad.append("condition on " + st["Sid"])
if acts != want:
    bad.append("actions %s" % sorted(acts))
if not wrap or set(wrap["Action"]) != {"kms:Encrypt", "kms:Decrypt"}:
    bad.append("no Encrypt+Decrypt statement")
else:
    c = wrap.get("Condition", {})
    if sorted(c.get("ForAllValues:StringEquals", {}).get("kms:EncryptionContextKeys", [])) != \
            ["kmscrypt:keyslot", "kmscrypt:volume"]:
        bad.append("EncryptionContextKeys condition: %s" % c)
    if c.get("Null", {}).get("kms:EncryptionContextKeys") != "false":
        bad.append("no Null condition: a request without context would pass")
    if len(c) != 2:
        bad.append("extra conditions %s" % c)
if "arn:aws:iam::111122223333:" not in json.dumps(doc):
    bad.append("principal placeholder not in the key's account")
print("; ".join(bad))
EOF
}
expect_eq "$(aws_check ak.json "kms:Encrypt kms:Decrypt kms:DescribeKey")" "" \
	"AWS policy: valid JSON, exactly Encrypt/Decrypt (context-bound) and DescribeKey on the key ARN"
expect_rc 0 "kms policy (AWS, alias)" -- "$K" kms policy aa
echo "$OUT" >aa.json
expect_eq "$(aws_check aa.json "kms:Encrypt kms:Decrypt kms:DescribeKey kms:ListAliases")" "" \
	"AWS policy with an alias adds ListAliases (resource *)"
expect_eq "$(fake_ctl aws /counters | $PY -c 'import json,sys; print(json.load(sys.stdin)["requests"])')" 0 \
	"printing policies made no KMS request"
# the encryption context the policy allows is the one kmscrypt sends
truncate -s 20M a.img
expect_rc 0 "format with AWS" -- "$K" -q format a.img --kms ak
OUT=$(fake_ctl aws "/requests?since=0")
expect_eq "$(json_get "$OUT" "sorted({k for r in j['requests'] if r.get('action') in ('Encrypt','Decrypt') for k in r['body']['EncryptionContext']})")" \
	"['kmscrypt:keyslot', 'kmscrypt:volume']" "Encrypt/Decrypt send exactly the context keys the policy allows"
expect_rc 0 "kms check with AWS" -- "$K" kms check ak
OUT=$(fake_ctl aws "/requests?since=0")
expect_eq "$(json_get "$OUT" "sorted({r.get('action') for r in j['requests']})")" "['Decrypt', 'DescribeKey', 'Encrypt']" \
	"format and kms check call only actions the policy grants"

# ---- Vault: the policy applied to the fake's ACL engine
ROOT=hvs.kmscrypt-test-root
fake_start vault fake_vault.py --root-token $ROOT || exit 1
ADDR=https://127.0.0.1:$(fake_port vault)
vctl() { fake_ctl vault /control "$1"; }
vctl '{"op":"create_key","name":"vol"}' >/dev/null
vctl '{"op":"create_namespace","name":"tenant1"}' >/dev/null
vctl '{"op":"create_key","name":"nsvol","mount":"team/transit","namespace":"tenant1"}' >/dev/null
# hcl_rules FILE [DROP]: Vault's JSON form of the HCL paths (the fake parses no HCL), without the
# capability DROP ("path:cap")
hcl_rules() {
	$PY - "$1" "${2:-}" <<'EOF'
import json, re, sys
text, drop = open(sys.argv[1]).read(), sys.argv[2]
rules = {}
for path, caps in re.findall(r'^path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}', text, re.M):
    caps = [c.strip().strip('"') for c in caps.split(",") if c.strip()]
    rules[path] = [c for c in caps if "%s:%s" % (path, c) != drop]
print(json.dumps(rules))
EOF
}
set_policy() { vctl "{\"op\":\"set_policy\",\"name\":\"kmscrypt\",\"rules\":$1${2:+,\"namespace\":\"$2\"}}" >/dev/null; }
# a configuration first made with the root token; then the token is swapped for one that holds
# only the printed policy
printf %s "$ROOT" >root.tok
vaultc=(--provider vault --address "$ADDR" --ca-file "$FAKES_CA")
expect_rc 0 "kms create (Vault)" -- "$K" kms create vp "${vaultc[@]}" --key-name vol --token-file root.tok
fake_ctl vault /counters/reset '{}' >/dev/null
expect_rc 0 "kms policy (Vault)" -- "$K" kms policy vp
echo "$OUT" >vp.hcl
expect_eq "$(fake_ctl vault /counters | $PY -c 'import json,sys; print(json.load(sys.stdin)["requests"])')" 0 \
	"printing the Vault policy made no request"
expect_eq "$(hcl_rules vp.hcl)" \
	'{"transit/encrypt/vol": ["update"], "transit/decrypt/vol": ["update"], "transit/keys/vol": ["read"]}' \
	"Vault HCL: update on encrypt/vol and decrypt/vol, read on keys/vol, nothing else"
expect_out "vault token create -policy=kmscrypt-vp" "token notes"
set_policy "$(hcl_rules vp.hcl)"
json_get "$(vctl '{"op":"create_token","policies":["kmscrypt"],"ttl":"1h"}')" "j['token']" | tr -d '\n' >pol.tok
expect_rc 0 "kms edit: the token with only that policy" -- "$K" kms edit vp --token-file pol.tok
expect_rc 0 "kms check with exactly the policy" -- "$K" kms check vp
truncate -s 20M v.img
expect_rc 0 "format with exactly the policy" -- "$K" -q format v.img --kms vp
expect_rc 0 "check (unwrap) with exactly the policy" -- "$K" check v.img
# one capability less: the operation that needs it is denied (exit 3)
set_policy "$(hcl_rules vp.hcl transit/keys/vol:read)"
expect_rc 3 "without read on keys/vol: kms check is denied" -- "$K" kms check vp
expect_rc 0 "... while unlock (decrypt only) still works" -- "$K" check v.img
set_policy "$(hcl_rules vp.hcl transit/decrypt/vol:update)"
expect_rc 3 "without update on decrypt/vol: check is denied" -- "$K" check v.img
set_policy "$(hcl_rules vp.hcl transit/encrypt/vol:update)"
truncate -s 20M w.img
expect_rc 3 "without update on encrypt/vol: format is denied" -- "$K" -q format w.img --kms vp
set_policy "$(hcl_rules vp.hcl)"
expect_rc 0 "the full policy again: format works" -- "$K" -q format w.img --kms vp

# namespace: the policy is written in the configuration's namespace, paths relative to it
json_get "$(vctl '{"op":"create_token","policies":["root"],"namespace":"tenant1"}')" "j['token']" | tr -d '\n' >ns.tok
expect_rc 0 "kms create (Vault namespace, other mount)" -- "$K" kms create vn "${vaultc[@]}" --namespace tenant1 \
	--mount team/transit --key-name nsvol --token-file ns.tok
expect_rc 0 "kms policy (namespace)" -- "$K" kms policy vn
echo "$OUT" >vn.hcl
expect_out "vault policy write -namespace=tenant1 kmscrypt-vn" "names the namespace to write it in"
expect_out 'path "team/transit/decrypt/nsvol"' "paths relative to the namespace and mount"
set_policy "$(hcl_rules vn.hcl)" tenant1
json_get "$(vctl '{"op":"create_token","policies":["kmscrypt"],"ttl":"1h","namespace":"tenant1"}')" "j['token']" |
	tr -d '\n' >nspol.tok
expect_rc 0 "kms edit (namespace): token with only that policy" -- "$K" kms edit vn --token-file nspol.tok
expect_rc 0 "kms check in the namespace with exactly the policy" -- "$K" kms check vn

# AppRole: the note names the auth mount
AR=$(vctl '{"op":"create_approle","name":"kmscrypt","policies":["kmscrypt"],"token_ttl":"1h"}')
json_get "$AR" "j['secret_id']" | tr -d '\n' >sid
expect_rc 0 "kms create (AppRole, the policy only)" -- "$K" kms create vr "${vaultc[@]}" --key-name vol \
	--role-id "$(json_get "$AR" "j['role_id']")" --secret-id-file sid
expect_rc 0 "kms policy (AppRole)" -- "$K" kms policy vr
expect_out "vault write auth/approle/role/ROLE_NAME token_policies=kmscrypt-vr" "AppRole notes"

finish
