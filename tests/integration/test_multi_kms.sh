#!/bin/bash
# Multi-KMS bindings (token version 2, include/kmscrypt/token.h) on LUKS2 image files: any-of and
# k of n over several local key files (several configurations) and the fake Vault, check's report of
# each KMS's answer, unavailable vs denied, version-1 volumes untouched, a copied token refused.
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
ctl() { fake_ctl vault /control "$1"; }
ctl '{"op":"create_key","name":"vol"}' >/dev/null
printf %s "$ROOT" >root.tok
chmod 600 root.tok
tok() { cryptsetup token export --token-id "${2:-0}" "$1"; }
gone() { mv "$1.key" "$1.key.gone"; }
back() { mv "$1.key.gone" "$1.key"; }
# schema_ok COMMAND JSON DESCRIPTION: JSON is valid for man/kmscrypt-json.schema.json's COMMAND
schema_ok() {
	local why
	why=$(/usr/bin/python3 - "$src/man/kmscrypt-json.schema.json" "$1" "$2" <<'PY'
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.loads(sys.argv[3])
V = jsonschema.Draft202012Validator
sub = V({"$defs": schema["$defs"], "$ref": "#/$defs/" + schema["x-commands"][sys.argv[2]]})
for e in list(V(schema).iter_errors(doc)) + list(sub.iter_errors(doc)):
    print(e.message)
PY
)
	if [ -z "$why" ]; then pass "$3"; else failed "$3: $why"; fi
}

for n in a b c; do
	expect_rc 0 "kms create $n" -- "$K" kms create "$n" --provider local --key-file "$n.key" --generate
done
expect_rc 0 "kms create v (vault)" -- "$K" kms create v --provider vault \
	--address "https://127.0.0.1:$(fake_port vault)" --ca-file "$FAKES_CA" --key-name vol --token-file root.tok
truncate -s 40M any.img thr.img v1.img vt.img bind.img copy.img

# ---- usage
expect_rc 2 "--threshold above the number of --kms" -- "$K" format thr.img --kms a --kms b --threshold 3 --no-recovery-key -q
expect_rc 2 "--threshold 0" -- "$K" format thr.img --kms a --kms b --threshold 0 --no-recovery-key -q
expect_rc 2 "--threshold with one --kms" -- "$K" format thr.img --kms a --threshold 1 --no-recovery-key -q
expect_rc 2 "the same --kms twice" -- "$K" format thr.img --kms a --kms a --no-recovery-key -q
expect_out "given twice" "names the repeated KMS"
expect_rc 0 "nothing was written by refused formats" -- sh -c '! cryptsetup isLuks thr.img'

# ---- version 1 stays version 1
expect_rc 0 "format with one KMS" -- "$K" format v1.img --kms a --no-recovery-key -q
expect_eq "$(json_get "$(tok v1.img)" "(j['version'], j['kms'], 'wraps' in j)")" "(1, 'a', False)" "one KMS writes a version-1 token"
expect_rc 0 "check v1" -- "$K" check v1.img
expect_out "KMS 'a' unwrapped its secret" "v1 check message unchanged"

# ---- any-of
expect_rc 0 "format any-of a, b" -- "$K" format any.img --kms a --kms b --no-recovery-key
expect_out "any one of which opens it" "format says any one opens it"
T=$(tok any.img)
expect_eq "$(json_get "$T" "(j['version'], j['threshold'], [(w['kms'], w['share']) for w in j['wraps']])")" \
	"(2, 1, [('a', 0), ('b', 0)])" "any-of token: version 2, threshold 1, whole-secret wraps"
expect_rc 0 "check any-of" -- "$K" check any.img
expect_out "2 of its 2 KMSs answered (1 needed)" "check counts the answers"
expect_out "1 more may fail" "check says how many more may fail"
gone a
expect_rc 0 "any-of opens with KMS a gone" -- "$K" check any.img
expect_out "KMS 'a' denied access" "check names the KMS that failed"
expect_out "0 more may fail" "no KMS to spare"
gone b
expect_rc 3 "any-of with both gone is denied" -- "$K" check any.img
expect_out "0 of its 2 KMSs answered, 1 needed" "message counts the answers"
back a
back b

# ---- 2 of 3
expect_rc 0 "format 2-of-3" -- "$K" format thr.img --kms a --kms b --kms c --threshold 2 --no-recovery-key --json
OUT=$(sed -n '/^{/,/^}/p' <<<"$OUT") # the JSON document, without the warning on stderr
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['threshold'], j['volumes'][0]['kms_list'])")" "(2, ['a', 'b', 'c'])" "format --json names the binding"
schema_ok format "$OUT" "format --json of a 2-of-3 volume fits the schema"
T=$(tok thr.img)
expect_eq "$(json_get "$T" "(j['threshold'], sorted(w['share'] for w in j['wraps']), len({w['blob'] for w in j['wraps']}))")" \
	"(2, [1, 2, 3], 3)" "2-of-3 token: shares 1..3, three different wraps"
expect_rc 0 "check 2-of-3" -- "$K" check thr.img --json
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['kms_spare'], [a['result'] for a in j['volumes'][0]['kms_answers']])")" \
	"(1, ['answered', 'answered', 'answered'])" "check --json: every KMS answered, one to spare"
schema_ok check "$OUT" "check --json of a 2-of-3 volume fits the schema"
gone b
expect_rc 0 "2-of-3 opens with one KMS gone" -- "$K" check thr.img --json
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['kms_spare'], [a['result'] for a in j['volumes'][0]['kms_answers']])")" \
	"(0, ['answered', 'denied', 'answered'])" "check --json: b denied, none to spare"
gone c
expect_rc 3 "2-of-3 with two denied fails (denied)" -- "$K" check thr.img --json
OUT=$(sed -n '/^{/,/^}/p' <<<"$OUT")
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['exit'], j['volumes'][0]['kms_spare'])")" "(3, -1)" "check --json: denied, cannot open"
schema_ok check "$OUT" "failed check --json fits the schema"
expect_rc 3 "2-of-3 with two denied fails (denied)" -- "$K" check thr.img
expect_out "1 of its 3 KMSs answered, 2 needed" "message: how many answered and needed"
expect_out "KMS 'b' denied access" "message lists b's answer"
expect_out "KMS 'c' denied access" "message lists c's answer"
expect_out "KMS 'a' answered" "message lists a's answer"
expect_out "recovery key" "message says what to do"
back b
back c
expect_rc 7 "kms delete refuses a KMS a threshold volume needs" -- "$K" -q kms delete c
expect_out "thr.img" "delete names the volume"

# ---- unavailable vs denied (fake Vault sealed = unavailable)
expect_rc 0 "format 2-of-3 over local a, b and Vault" -- "$K" format vt.img --kms a --kms b --kms v --threshold 2 --no-recovery-key -q
expect_rc 0 "check a+b+vault" -- "$K" check vt.img
ctl '{"op":"seal"}' >/dev/null
expect_rc 0 "opens with Vault sealed (a, b answer)" -- "$K" --timeout 3 check vt.img
expect_out "KMS 'v' could not be reached" "Vault reported unreachable"
gone a
expect_rc 4 "a denied + Vault sealed: unavailable (k can still answer later)" -- "$K" --timeout 3 check vt.img
expect_out "retry when enough are reachable" "unavailable message says retry"
gone b
expect_rc 3 "a, b denied + Vault sealed: denied (k can never answer)" -- "$K" --timeout 3 check vt.img
ctl '{"op":"unseal"}' >/dev/null
back a
back b
expect_rc 0 "all back: opens" -- "$K" check vt.img

# ---- unlock stops as soon as enough answered; check waits for every answer (to report it)
fake_ctl vault /faults '{"latency_ms":4000,"action":"transit.decrypt"}' >/dev/null
OUT=$("$K" unlock vt.img --json 2>/dev/null)
# exit 5 here without device-mapper: the volume's own time covers the unwrap and the activation
ms=$(json_get "$OUT" "int(j['volumes'][0]['duration_ms'])")
expect_eq "$(json_get "$OUT" "'KMS' in j['volumes'][0].get('error', '')")" False "unlock got past the KMSs (a failure, if any, is the activation's)"
if ((ms < 3000)); then pass "unlock went on after a and b answered ($ms ms < 4000 ms of Vault latency)"
else failed "unlock waited for the slow Vault: $ms ms"; fi
"$K" -q lock --all >/dev/null 2>&1
t0=$(date +%s%N)
expect_rc 0 "check with a slow Vault" -- "$K" check vt.img
ms=$((($(date +%s%N) - t0) / 1000000))
expect_out "3 of its 3 KMSs answered" "check waited for the slow Vault's answer"
if ((ms >= 4000)); then pass "check took the Vault latency ($ms ms)"; else failed "check returned in $ms ms"; fi
fake_ctl vault /faults/reset '{}' >/dev/null

# ---- bind an existing volume to 2 of 3
head -c 24 /dev/urandom | base64 -w0 >pass
chmod 600 pass
cryptsetup luksFormat --type luks2 -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file pass bind.img
expect_rc 0 "bind 2-of-3" -- "$K" bind bind.img --kms c --kms v --kms a --threshold 2 --key-file pass
expect_out "2 of which open it" "bind says k of n"
expect_rc 0 "check the bound volume" -- "$K" check bind.img
expect_rc 0 "status lists the binding" -- "$K" status bind.img
expect_out "2 of c, v, a" "status shows threshold and KMSs"
expect_rc 0 "status --json" -- "$K" status bind.img --json
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['threshold'], j['volumes'][0]['kms_list'])")" "(2, ['c', 'v', 'a'])" "status --json: threshold and kms_list"
schema_ok status "$OUT" "status --json fits the schema"

# ---- a token copied onto another volume does not unwrap (each wrap is bound to its volume)
cryptsetup luksFormat --type luks2 -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file pass copy.img
tok thr.img >thr.json
expect_rc 0 "token import onto another volume" -- cryptsetup token import --json-file thr.json copy.img
expect_rc 3 "copied 2-of-3 token is refused" -- "$K" check copy.img
expect_out "rejected the token" "each KMS rejects the copied wrap"

finish
