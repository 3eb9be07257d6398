#!/bin/bash
# The kmscrypt binary and the token plugin carry Debian's hardening (dpkg-buildflags
# hardening=+all), read from the ELF files with readelf the way hardening-check does:
#   PIE (ELF type DYN, FLAGS_1 PIE for the executable), full RELRO (a GNU_RELRO segment and
#   BIND_NOW), stack protector (imports __stack_chk_fail), a non-executable stack, and
#   _FORTIFY_SOURCE (imports __*_chk functions).
# _FORTIFY_SOURCE only exists in optimised builds without sanitizers (CMakeLists.txt); for a Debug
# or sanitizer build (scripts/test.sh runs the integration tests again in one) the fortify check is
# skipped and the test says so; everything else is checked in every build.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
B=${KMSCRYPT_BUILD_DIR:?set KMSCRYPT_BUILD_DIR to the build dir}
P=$B/libcryptsetup-token-kmscrypt.so
command -v readelf >/dev/null || { echo "FATAL: readelf (binutils) is not installed" >&2; exit 1; }
[ -f "$P" ] || { echo "FATAL: $P not built" >&2; exit 1; }

cache() { sed -n "s/^$1:[A-Z]*=//p" "$B/CMakeCache.txt"; }
build_type=$(cache CMAKE_BUILD_TYPE)
fortify=1
if [ "$build_type" = Debug ] || [ "$(cache KMSCRYPT_SANITIZE)" = ON ] ||
	[ "$(cache KMSCRYPT_FUZZ)" = ON ]; then
	fortify=0
fi

check_elf() {
	local f=$1 kind=$2 name
	name=$(basename "$f")
	expect_eq "$(readelf -hW "$f" | sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p')" DYN \
		"$name: ELF type DYN (position independent)"
	if [ "$kind" = exec ]; then
		expect_rc 0 "$name: FLAGS_1 has PIE (a PIE executable, not a shared object)" -- \
			sh -c "readelf -dW '$f' | grep -E '\(FLAGS_1\)' | grep -qw PIE"
	fi
	expect_rc 0 "$name: has a GNU_RELRO segment" -- \
		sh -c "readelf -lW '$f' | grep -qw GNU_RELRO"
	expect_rc 0 "$name: BIND_NOW (full RELRO: -z now)" -- \
		sh -c "readelf -dW '$f' | grep -E '\((BIND_NOW|FLAGS)\)' | grep -qw BIND_NOW"
	expect_rc 0 "$name: FLAGS_1 has NOW" -- \
		sh -c "readelf -dW '$f' | grep -E '\(FLAGS_1\)' | grep -qw NOW"
	expect_rc 1 "$name: no text relocations" -- sh -c "readelf -dW '$f' | grep -q TEXTREL"
	expect_rc 0 "$name: stack not executable (GNU_STACK RW)" -- \
		sh -c "readelf -lW '$f' | grep -w GNU_STACK | grep -qw RW"
	# Undefined dynamic symbols: name@version, UND in column 7.
	local und
	und=$(readelf --dyn-syms -W "$f" | awk '$7 == "UND" {sub(/@.*/, "", $8); print $8}' | sort -u)
	expect_rc 0 "$name: stack protector (imports __stack_chk_fail)" -- \
		grep -qx __stack_chk_fail <<<"$und"
	local chk
	chk=$(grep -E '^__.*_chk$' <<<"$und" | grep -vx __stack_chk_fail | xargs)
	if [ "$fortify" = 1 ]; then
		if [ -n "$chk" ]; then
			pass "$name: _FORTIFY_SOURCE (imports $chk)"
		else
			failed "$name: _FORTIFY_SOURCE: imports no __*_chk function"
		fi
	else
		echo "skip - $name: _FORTIFY_SOURCE is not checked in a $build_type/sanitizer build" \
			"(it needs an optimised build without sanitizers)"
	fi
}

check_elf "$K" exec
check_elf "$P" lib
finish
