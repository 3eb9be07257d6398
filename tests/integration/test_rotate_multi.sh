#!/bin/bash
# rotate-master and rotate-secret on multi-KMS bindings (token version 2; issue 11) and the audit
# records of multi-KMS bind, format and rotations.  Local providers on 20 MiB image files, no
# device-mapper.  rotate-master keeps the threshold and the KMSs (k unwrap, every KMS wraps its new
# share under its newest key version), --replace OLD=NEW swaps one KMS, a bare --kms is refused for a
# multi-KMS binding; rotate-secret puts a fresh secret, split afresh, in a new keyslot; both refuse
# when a KMS of the binding cannot wrap, and then the header is byte for byte unchanged.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

for n in a b c d; do
	expect_rc 0 "kms create $n" -- "$K" kms create $n --provider local --key-file $n.key --generate
done
truncate -s 20M t.img any.img
expect_rc 0 "format 2 of 3 (a, b, c)" -- "$K" -q format t.img --kms a --kms b --kms c --threshold 2 --recovery-key-file t.rec
tokjson() { cryptsetup luksDump --dump-json-metadata "$1" | /usr/bin/python3 -c 'import json,sys
t = [v for v in json.load(sys.stdin)["tokens"].values() if v["type"] == "kmscrypt"]
print(len(t), t[0]["version"], t[0]["threshold"], ",".join(w["kms"] for w in t[0]["wraps"]),
      ",".join(str(w["share"]) for w in t[0]["wraps"]), t[0]["keyslots"][0], ",".join(w["blob"] for w in t[0]["wraps"]))'; }
shape() { tokjson "$1" | cut -d' ' -f1-6; }
blobs() { tokjson "$1" | cut -d' ' -f7; }
hdr() { cryptsetup luksDump --dump-json-metadata "$1" | sha256sum; }
last_audit() { grep "\"action\":\"$1\"" state/audit.log | tail -n1; }

# ---- audit of format: every KMS and the threshold
expect_eq "$(last_audit format | json_get "$(cat)" "(j['new']['threshold'], [w['kms'] for w in j['new']['wraps']], [w['share'] for w in j['new']['wraps']])")" \
	"(2, ['a', 'b', 'c'], [1, 2, 3])" "the format record names every KMS, its share and the threshold"

expect_rc 0 "format any of 2 (a, b)" -- "$K" -q format any.img --kms a --kms b --no-recovery-key

# ---- rotate-master in place
b0=$(blobs t.img)
expect_rc 0 "rotate-master of a 2-of-3 volume" -- "$K" rotate-master t.img
expect_out "KMSs 'a', 'b', 'c' (2 of 3) -> KMSs 'a', 'b', 'c' (2 of 3)" "it says old and new binding"
expect_out "proven to open" "and that the new token was proven"
expect_eq "$(shape t.img)" "1 2 2 a,b,c 1,2,3 0" "one token, still version 2, 2 of a, b, c, keyslot 0"
[ "$(blobs t.img)" != "$b0" ] && pass "every wrap is new" || failed "the wraps did not change"
expect_rc 0 "check after rotate-master" -- "$K" check t.img
expect_rc 0 "the recovery key still opens" -- cryptsetup open --test-passphrase t.img --key-file t.rec
rec=$(last_audit rotate-master)
expect_eq "$(json_get "$rec" "(j['kms'], j['old']['threshold'], [w['kms'] for w in j['old']['wraps']], j['new']['threshold'], [w['kms'] for w in j['new']['wraps']])")" \
	"('a,b,c', 2, ['a', 'b', 'c'], 2, ['a', 'b', 'c'])" "the rotate-master record names the old and the new binding (every KMS, threshold)"

# ---- --kms on a multi-KMS binding: refused with a hint; --replace swaps one KMS
h0=$(hdr t.img)
expect_rc 2 "rotate-master --kms d of a 2-of-3 volume" -- "$K" rotate-master t.img --kms d
expect_out "--replace OLD=d" "the refusal points to --replace"
expect_eq "$(hdr t.img)" "$h0" "the refused rotation changed nothing"
expect_rc 2 "--replace of a KMS not in the binding" -- "$K" rotate-master t.img --replace x=d
expect_rc 2 "--replace by a KMS already in the binding" -- "$K" rotate-master t.img --replace a=b
expect_rc 2 "--replace without =" -- "$K" rotate-master t.img --replace c
expect_eq "$(hdr t.img)" "$h0" "the refused replacements changed nothing"
expect_rc 0 "rotate-master --replace c=d" -- "$K" rotate-master t.img --replace c=d --json
expect_eq "$(json_get "$OUT" "(j['volumes'][0]['old']['kms'], j['volumes'][0]['new']['kms'])")" "('a,b,c', 'a,b,d')" \
	"--json: old and new name every KMS"
expect_eq "$(shape t.img)" "1 2 2 a,b,d 1,2,3 0" "KMS c replaced by d, still 2 of 3"
mv c.key c.key.away
expect_rc 0 "check without KMS c" -- "$K" check t.img
expect_out "3 of its 3 KMSs answered" "a, b and d answer"
mv c.key.away c.key
rec=$(last_audit rotate-master)
expect_eq "$(json_get "$rec" "([w['kms'] for w in j['old']['wraps']], [w['kms'] for w in j['new']['wraps']])")" \
	"(['a', 'b', 'c'], ['a', 'b', 'd'])" "the --replace record names both bindings"
expect_rc 7 "kms delete d refuses: the volume needs it" -- "$K" -q kms delete d

# ---- a lost KMS (its key and configuration gone) replaced while k = 2 of the others answer
mv d.key d.key.gone
mv etc/kms/d.conf d.conf.gone
expect_rc 0 "rotate-master --replace d=c with KMS d gone" -- "$K" rotate-master t.img --replace d=c
expect_eq "$(shape t.img)" "1 2 2 a,b,c 1,2,3 0" "d replaced by c"
mv d.key.gone d.key
mv d.conf.gone etc/kms/d.conf
expect_rc 0 "check after replacing the lost KMS" -- "$K" check t.img
expect_out "3 of its 3 KMSs answered" "a, b and c answer"
expect_rc 0 "rotate-master --replace c=d back" -- "$K" -q rotate-master t.img --replace c=d

# ---- rotate-secret
expect_rc 0 "rotate-secret of a 2-of-3 volume" -- "$K" rotate-secret t.img
expect_out "new secret in keyslot" "it says where"
expect_out "split afresh" "the new secret is split"
s=$(shape t.img)
expect_eq "${s% *}" "1 2 2 a,b,d 1,2,3" "one token, version 2, 2 of a, b, d"
[ "${s##* }" != 0 ] && pass "in a new keyslot (${s##* })" || failed "still keyslot 0"
expect_eq "$(cryptsetup luksDump --dump-json-metadata t.img | json_get "$(cat)" "len(j['keyslots'])")" 2 \
	"two keyslots: the kmscrypt one and the recovery key"
expect_rc 0 "check after rotate-secret" -- "$K" check t.img
expect_rc 0 "the recovery key still opens" -- cryptsetup open --test-passphrase t.img --key-file t.rec
expect_eq "$(last_audit rotate-secret | json_get "$(cat)" "(j['old']['keyslot'], j['new']['keyslot'], j['new']['threshold'], len(j['new']['wraps']))")" \
	"(0, ${s##* }, 2, 3)" "the rotate-secret record names both bindings"

# ---- any-of
expect_rc 0 "rotate-secret of an any-of volume" -- "$K" rotate-secret any.img
expect_eq "$(shape any.img | cut -d' ' -f1-5)" "1 2 1 a,b 0,0" "any-of stays any-of"
expect_rc 0 "rotate-master of an any-of volume" -- "$K" rotate-master any.img
expect_rc 0 "check the any-of volume" -- "$K" check any.img

# ---- a KMS that cannot wrap: refused, nothing changed (k = 2 still unwrap: a, d)
mv b.key b.key.away
h0=$(hdr t.img)
expect_rc 3 "rotate-secret with KMS b gone" -- "$K" rotate-secret t.img
expect_out "KMS 'b' (local) could not wrap" "names the KMS that cannot wrap"
expect_out "nothing was changed" "and says nothing changed"
expect_rc 3 "rotate-master with KMS b gone" -- "$K" rotate-master t.img
expect_out "nothing was changed" "nothing changed"
expect_eq "$(hdr t.img)" "$h0" "the header is unchanged"
mv b.key.away b.key
expect_rc 0 "check" -- "$K" check t.img

# ---- bind: the record names every KMS and the threshold
head -c 24 /dev/urandom | base64 -w0 >pass
chmod 600 pass
truncate -s 20M bind.img
cryptsetup luksFormat --type luks2 -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file pass bind.img
expect_rc 0 "bind 2 of 3" -- "$K" -q bind bind.img --kms c --kms a --kms d --threshold 2 --key-file pass
expect_eq "$(last_audit bind | json_get "$(cat)" "(j['kms'], j['new']['threshold'], [w['kms'] for w in j['new']['wraps']], j['new']['keyslot'])")" \
	"('c,a,d', 2, ['c', 'a', 'd'], 1)" "the bind record names every KMS, the threshold and the keyslot"
finish
