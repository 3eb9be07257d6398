#!/bin/bash
# `kms delete NAME --forget-missing`: a configuration whose volumes are all gone (device missing, or
# no longer that LUKS volume) can be deleted after forgetting their records, and the plain refusal
# says so; with a volume that still exists it is refused either way.  Local provider, image files.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

"$K" kms create l --provider local --key-file l.key --generate >/dev/null 2>&1 || failed "kms create l"
for v in a b; do
	truncate -s 24M $v.img
	"$K" -q format $v.img --kms l --no-recovery-key >/dev/null 2>&1 || failed "format $v.img"
done
ua=$(cryptsetup luksUUID a.img) ub=$(cryptsetup luksUUID b.img)
[[ -f state/volumes/$ua.json && -f state/volumes/$ub.json ]] && pass "format left state records" ||
	failed "no state records after format"

# ---- both volumes exist: refused, with or without the option
expect_rc 7 "delete with two existing volumes is refused" -- "$K" kms delete l
expect_out "2 volumes were bound to it" "the refusal counts the volumes"
expect_not_out "--forget-missing" "no --forget-missing hint while the volumes exist"
expect_rc 7 "--forget-missing with existing volumes is refused" -- "$K" kms delete l --forget-missing
expect_out "2 of them still exist" "and says why"
[[ -f etc/kms/l.conf && -f state/volumes/$ua.json ]] && pass "nothing was changed" || failed "something changed"

# ---- one gone (its file now holds something else), one still there: still refused
dd if=/dev/zero of=b.img bs=1M count=1 conv=notrunc status=none
expect_rc 7 "delete with one volume left is refused" -- "$K" kms delete l --forget-missing
expect_out "$ub (" "the list names the missing volume"
expect_out ", not found" "and marks it not found"
expect_out "1 of them still exists" "one still exists"

# ---- both gone: the refusal offers --forget-missing, which forgets and deletes
rm a.img
expect_rc 7 "delete with every volume gone is still refused without the option" -- "$K" kms delete l
expect_out "kmscrypt kms delete l --forget-missing" "the refusal names --forget-missing"
[[ -f etc/kms/l.conf ]] && pass "the configuration is still there" || failed "configuration removed"
expect_rc 0 "delete --forget-missing" -- "$K" kms delete l --forget-missing
expect_out "Forgot volume $ua ($tmp/a.img): not found; its state record is removed." "lists volume a"
expect_out "Forgot volume $ub ($tmp/b.img)" "lists volume b"
expect_out "Deleted KMS configuration 'l'." "and deletes the configuration"
[[ ! -e etc/kms/l.conf ]] && pass "configuration file removed" || failed "configuration file left"
[[ ! -e state/volumes/$ua.json && ! -e state/volumes/$ub.json ]] && pass "state records removed" ||
	failed "state records left: $(ls state/volumes)"
[[ ! -e state/kms-usage/l ]] && pass "usage record removed" || failed "usage record left"
expect_eq "$(grep -c '"action":"kms-forget"' state/audit.log)" 2 "each forgotten volume is audited"

# ---- --json lists what was forgotten
"$K" kms create m --provider local --key-file m.key --generate >/dev/null 2>&1 || failed "kms create m"
truncate -s 24M c.img
"$K" -q format c.img --kms m --no-recovery-key >/dev/null 2>&1 || failed "format c.img"
uc=$(cryptsetup luksUUID c.img)
rm c.img
expect_rc 0 "delete --forget-missing --json" -- "$K" kms delete m --forget-missing --json
expect_eq "$(json_get "$OUT" "j['forgotten']")" "['$uc']" "JSON lists the forgotten volume"
expect_rc 2 "an unknown option is still named" -- "$K" kms delete m --forget-everything
expect_out "--forget-everything" "the unknown option is named"
finish
