#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# Multi-KMS bindings on a real kernel (token version 2): a 2-of-3 volume over three local KMS
# configurations unlocks with one KMS gone and stays locked with two gone; revoke and restore go
# through the same threshold unwrap; the token plugin (cryptsetup open --token-only) combines the
# shares; `watch --once` calls the volume denied only when fewer than 2 KMSs remain usable.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_multi_kms.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

gone() { mv "$WORK/$1.key" "$WORK/$1.key.gone"; }
back() { mv "$WORK/$1.key.gone" "$WORK/$1.key"; }

case_threshold() {
	local dev uuid
	t_kms_local ma
	t_kms_local mb
	t_kms_local mc
	t_volume dev uuid m23 ma kv-m23 --kms mb --kms mc --threshold 2 --no-recovery-key
	assert_eq 2 "$(t_status "$uuid" threshold)" "status --json: threshold"

	kc 0 "unlock 2-of-3" -- unlock "$dev"
	assert_table_uses_keyring kv-m23
	t_write_data kv-m23 m23
	kc 0 "lock" -- lock kv-m23

	gone mb
	kc 0 "unlock with KMS mb gone" -- unlock "$dev"
	t_check_data kv-m23 m23
	kc 0 "lock" -- lock kv-m23
	gone mc
	kc 3 "unlock with mb and mc gone is denied" -- unlock "$dev"
	assert_match "1 of its 3 KMSs answered, 2 needed" "$(cat "$T_ERR")" \
		"the error counts the answers"
	assert_eq absent "$(t_dm_state kv-m23)" "the volume stays locked"
	back mb
	back mc

	# revoke and restore (restore unwraps through the threshold path), with one KMS gone
	kc 0 "unlock" -- unlock "$dev"
	kc 0 "revoke" -- revoke kv-m23 --reason "vm multi"
	assert_table_key_wiped kv-m23
	gone ma
	kc 0 "restore with KMS ma gone" -- restore kv-m23
	assert_eq ACTIVE "$(t_dm_state kv-m23)" "dm state after restore"
	t_check_data kv-m23 m23

	# the watcher: one KMS gone leaves 2 usable (usable); two gone is denied
	kc 0 "watch --once with ma gone" -- watch --once
	assert_eq usable "$(t_status "$uuid" watch | jq -r .verdict 2>/dev/null || echo '?')" \
		"watcher verdict with 2 of 3 usable"
	gone mb
	kc 0 "watch --once with ma and mb gone" -- watch --once
	assert_eq denied "$(t_status "$uuid" watch | jq -r .verdict 2>/dev/null || echo '?')" \
		"watcher verdict with 1 of 3 usable"
	assert_eq ACTIVE "$(t_dm_state kv-m23)" "one denial (RevokeAfter=2) wipes nothing"
	back ma
	back mb
	kc 0 "watch --once with all back" -- watch --once
	assert_eq usable "$(t_status "$uuid" watch | jq -r .verdict 2>/dev/null || echo '?')" \
		"watcher verdict usable again"
	kc 0 "lock" -- lock kv-m23

	# the token plugin combines the shares too
	local plugin=$KMSCRYPT_BUILD_DIR/libcryptsetup-token-kmscrypt.so
	if [[ -f $plugin && $(findmnt -n -o FSTYPE /) == overlay ]]; then
		mkdir -p /lib/x86_64-linux-gnu/cryptsetup /run/cryptsetup
		install -m 0644 "$plugin" /lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-kmscrypt.so
		gone mc
		if KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE \
			cryptsetup open --token-only "$dev" kv-m23p 2>"$WORK/plugin.err"; then
			t_ok "cryptsetup open --token-only of a 2-of-3 volume with one KMS gone"
		else
			t_fail "cryptsetup open --token-only (2-of-3, one gone)" "exit 0" \
				"$(cat "$WORK/plugin.err")"
		fi
		t_check_data kv-m23p m23
		cryptsetup close kv-m23p
		back mc
	fi
}

t_case threshold case_threshold
t_finish
