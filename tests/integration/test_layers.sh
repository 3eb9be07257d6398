#!/bin/bash
# The layering of STYLE.md section 1, checked on the includes: front ends (cli/, plugin/, watch/)
# never include each other; core/ includes no front end; codecs and transports include nothing of
# kms/ (the types they share with providers live in codec/kms_error.h).  And one run opens any
# number of KMS configurations (no fixed-size handle set).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=${KMSCRYPT_SOURCE_DIR:-$here/../..}
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}

includes() { # DIR-or-FILES... -> "file: header" lines
	grep -HoE '#include "[^"]+"' "$@" 2>/dev/null | sed 's/#include "\(.*\)"/\1/'
}
bad=$(includes "$src"/agent/cli/*.[ch] | grep -E ':(plugin|watch)/' ; \
      includes "$src"/agent/plugin/*.[ch] | grep -E ':(cli|watch)/' ; \
      includes "$src"/agent/watch/*.[ch] | grep -E ':(cli|plugin)/')
expect_eq "$bad" "" "front ends do not include each other"
# The generator runs before most of the system is up: state records and util only (no KMS,
# libcryptsetup, curl or device-mapper code).
bad=$(includes "$src"/agent/generator/*.[ch] | grep -vE ':(state|util)/')
expect_eq "$bad" "" "generator/ includes only state/ and util/"
bad=$(includes "$src"/agent/core/*.[ch] | grep -E ':(cli|plugin|watch|generator)/')
expect_eq "$bad" "" "core/ includes no front end"
bad=$(includes "$src"/agent/transport/*.[ch] "$src"/agent/codec/*.[ch] "$src"/agent/kms/*/*_codec.[ch] |
      grep -E ':kms/' | grep -vE ':kms/[a-z]+/[a-z]+_codec\.h$')
expect_eq "$bad" "" "codecs and transports include nothing of kms/ but its pure codecs"
bad=$(includes "$src"/agent/volume/*.[ch] "$src"/agent/state/*.[ch] | grep -E ':(cli|core|plugin|watch)/')
expect_eq "$bad" "" "volume/ and state/ include nothing above them"

# More KMS configurations in one run than the old fixed set (32) held.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
devs=()
for i in $(seq 1 40); do
	"$K" kms create "k$i" --provider local --key-file "k$i.key" --generate >/dev/null || failed "kms create k$i"
	truncate -s 20M "v$i.img"
	"$K" format "v$i.img" --kms "k$i" >/dev/null || failed "format v$i.img"
	devs+=("v$i.img")
done
expect_rc 0 "check of 40 volumes on 40 KMS configurations in one run" -- "$K" check "${devs[@]}" --json
expect_eq "$(json_get "$OUT" "sum(1 for v in j['volumes'] if v['ok'])")" 40 "all 40 unwrapped"
finish
