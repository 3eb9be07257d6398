#!/bin/bash
# The revoked mark on image files (no device-mapper needed): revoke persists or fails, the mark lives
# in the LUKS2 header as well as in the state dir, unlock/check refuse either mark and fail closed on
# any unreadable state file, check audits its unwraps.  (Live mappings: tests/vm/test_revoke_race.sh.)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
token() { cryptsetup token export --token-id 0 "$1"; }
jq_tok() { token "$1" | /usr/bin/python3 -c "import json,sys; j=json.load(sys.stdin); print($2)"; }

"$K" kms create lab --provider local --key-file lab.key --generate >/dev/null
truncate -s 40M a.img b.img c.img d.img e.img
for i in a b c d e; do "$K" format $i.img --kms lab --recovery-key-file $i.rec >/dev/null; done

# ---- item 2: revoke writes the mark into the header and the state dir
expect_rc 0 "revoke a closed volume" -- "$K" revoke a.img --reason "incident 7"
expect_eq "$(jq_tok a.img "j['revoked']['reason']")" "incident 7" "the header carries the mark and the reason"
expect_eq "$(jq_tok a.img "j['revoked']['at'][:2]")" "20" "the mark says when (RFC 3339)"
expect_eq "$(jq_tok a.img "sorted(k for k in j if k != 'revoked') == sorted(['type','keyslots','version','kms','provider','key_id','key_version','alg','blob','created'])")" True \
	"the token keeps every other field"
auuid=$(cryptsetup luksUUID a.img)
expect_rc 0 "the state dir carries the mark" -- grep -q '"revoked": *true' "state/volumes/$auuid.json"

# The state dir is lost (re-imaged, not mounted yet, disk attached to another host).
mv state state.lost
expect_rc 7 "unlock refuses the header's mark without the state dir" -- "$K" unlock a.img
expect_out "marked revoked" "the refusal says the header is marked"
expect_out "incident 7" "the refusal gives the reason"
expect_out "kmscrypt restore" "the refusal names kmscrypt restore"
expect_rc 7 "check refuses the header's mark" -- "$K" check a.img
expect_out "kmscrypt restore" "check names kmscrypt restore"
expect_rc 7 "check --json of a revoked volume" -- "$K" check a.img --json
expect_eq "$(json_get "$(sed -n '/^{/,$p' <<<"$OUT")" "j['volumes'][0]['revoked']")" True "check --json says revoked"
expect_rc 0 "status shows the header's mark" -- "$K" status a.img --json
expect_eq "$(json_get "$OUT" "j['volumes'][0]['state']")" revoked-closed "status: revoked-closed"
rm -rf state
mv state.lost state

# ---- item 5: check honours the state's mark alone and audits its unwraps
expect_rc 0 "revoke b" -- "$K" revoke b.img --reason drill
token b.img | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); del j["revoked"]; print(json.dumps(j))' >b.json
cryptsetup token import --token-replace --token-id 0 --json-file b.json b.img
expect_rc 7 "check refuses the state's mark alone" -- "$K" check b.img
expect_out "drill" "the refusal gives the state's reason"
expect_rc 7 "unlock refuses the state's mark alone" -- "$K" unlock b.img
n0=$(grep -c '"action":"check"' state/audit.log)
expect_rc 0 "check of an open-able volume" -- "$K" check c.img
expect_eq "$(grep -c '"action":"check"' state/audit.log)" $((n0 + 1)) "check is audited"
expect_rc 0 "the audit record names the volume" -- grep -q "\"action\":\"check\".*$(cryptsetup luksUUID c.img)" state/audit.log
mv lab.key lab.key.away
expect_rc 3 "check with the key gone" -- "$K" check c.img
expect_eq "$(grep -c '"action":"check"' state/audit.log)" $((n0 + 2)) "a failed check is audited too"
mv lab.key.away lab.key

# ---- item 1: revoke persists or fails
mkdir st2
: >st2/volumes # a file where the volumes directory should be
expect_rc 1 "revoke whose state cannot be written" -- env KMSCRYPT_STATE_DIR=$tmp/st2 "$K" revoke c.img
expect_out "could not be saved" "the error says the mark was not saved"
expect_out "kmscrypt revoke" "and what to run again"
expect_not_out "Revoked '$tmp/c.img' (UUID $(cryptsetup luksUUID c.img)): it is not open" "no success line"
expect_rc 0 "the failure is audited" -- grep -q '"action":"revoke".*"result":"Revoked.*could not be saved' st2/audit.log
expect_eq "$(jq_tok c.img "'revoked' in j")" True "the header mark was still written"
expect_rc 1 "revoke --json whose state cannot be written" -- env KMSCRYPT_STATE_DIR=$tmp/st2 "$K" revoke c.img --json
expect_eq "$(json_get "$(sed -n '/^{/,$p' <<<"$OUT")" "j['volumes'][0]['exit']")" 1 "--json: exit 1 for the volume"

# ---- item 4: only a missing state file means "no mark"; every other error refuses
duuid=$(cryptsetup luksUUID d.img)
cp "state/volumes/$duuid.json" d-state.json
rm "state/volumes/$duuid.json" && mkdir "state/volumes/$duuid.json"
expect_rc 8 "unlock with a directory as state file" -- "$K" unlock d.img
expect_out "cannot be read" "the refusal says the state cannot be read"
expect_rc 8 "check with a directory as state file" -- "$K" check d.img
rmdir "state/volumes/$duuid.json"
{ printf '{"uuid": "%s", "revoked": false}' "$duuid"; head -c 70000 /dev/zero | tr '\0' ' '; } >"state/volumes/$duuid.json"
expect_rc 8 "unlock with a padded (too large) state file" -- "$K" unlock d.img
expect_out "cannot be read" "the refusal names the state file"
cp d-state.json "state/volumes/$duuid.json"

# ---- item 6 (tokens): control characters in token fields make the token invalid
token e.img | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); j["kms"]="lab\n<0>kmscrypt: FORGED"; print(json.dumps(j))' >e.json
cryptsetup token import --token-replace --token-id 0 --json-file e.json e.img
expect_rc 8 "a token with a newline in a field is invalid" -- "$K" check e.img
expect_out "control character" "the error says why"
if grep -q '^<0>' <<<"$OUT"; then failed "a forged record: $OUT"; else pass "no forged record"; fi

finish
