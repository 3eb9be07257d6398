#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel: tampered or foreign kmscrypt tokens are refused with a clear error,
# the LUKS2 header is left exactly as it was, and the recovery key still opens the volume.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_tamper.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# t_token_replace DEVICE FILE: put FILE in place of DEVICE's kmscrypt token (same token id).
t_token_replace() {
	local tid
	tid=$(t_token_id "$1")
	cryptsetup token import --token-id "$tid" --token-replace "$1" <"$2" ||
		t_fail "cryptsetup token import of the test token" "success" "failure"
}

# Refused with 3 (denied) or 8 (invalid) and a message; no mapping, no key left, header unchanged.
assert_unlock_refused() { # DEVICE UUID LABEL HEADER_SUM
	kc 3,8 "unlock refuses the token" -- unlock "$1"
	assert_match '[A-Za-z]' "$(cat "$T_ERR")" "unlock explains why: $(head -n 1 "$T_ERR")"
	assert_eq absent "$(t_dm_state "$3")" "no mapping after the refused unlock"
	assert_no_key_in_proc_keys "$2"
	kc 3,8 "check refuses the token" -- check "$1"
	assert_eq "$4" "$(t_header_sum "$1")" "header checksum after the refused unlock"
}

# One byte of the wrapped blob flipped.
case_tampered_blob() {
	local dev uuid tid blob sum off ch
	t_kms_local kt
	t_volume dev uuid tb kt kv-tb --recovery-key-file "$WORK/rec"
	tid=$(t_token_id "$dev")
	assert_match '^[0-9]+$' "$tid" "the header has a kmscrypt token (id '$tid')"
	cryptsetup token export --token-id "$tid" "$dev" >"$WORK/tok.json"
	blob=$(jq -r .blob "$WORK/tok.json")
	assert_match '^[A-Za-z0-9+/=_-]{16,}$' "$blob" "token has a base64 blob"
	# Change one base64 character in the middle (fully significant bits): the decoded blob
	# differs in one byte, whatever alphabet (standard or url-safe) the token uses.
	off=$((${#blob} / 2))
	ch=${blob:off:1}
	if [[ $ch == A ]]; then ch=B; else ch=A; fi
	jq --arg b "${blob:0:off}$ch${blob:off+1}" '.blob = $b' "$WORK/tok.json" >"$WORK/bad.json"
	assert_ne "$blob" "$(jq -r .blob "$WORK/bad.json")" \
		"tampered blob (base64 char $off of ${#blob}: '${blob:off:1}' -> '$ch')"
	t_token_replace "$dev" "$WORK/bad.json"
	sum=$(t_header_sum "$dev")

	assert_unlock_refused "$dev" "$uuid" kv-tb "$sum"
	assert_eq inactive "$(t_status "$uuid" state)" "status after the refused unlock"
	assert_recovery_opens "$dev" "$WORK/rec"
}

# The blob is not base64 at all: invalid (8), not a crash.
case_malformed_token() {
	local dev uuid tid sum
	t_kms_local km
	t_volume dev uuid mt km kv-mt --recovery-key-file "$WORK/rec"
	tid=$(t_token_id "$dev")
	cryptsetup token export --token-id "$tid" "$dev" >"$WORK/tok.json"
	jq '.blob = "%%% not base64 %%%"' "$WORK/tok.json" >"$WORK/bad.json"
	t_token_replace "$dev" "$WORK/bad.json"
	sum=$(t_header_sum "$dev")
	kc 8 "unlock with a malformed token is invalid" -- unlock "$dev"
	assert_eq absent "$(t_dm_state kv-mt)" "no mapping after the refused unlock"
	assert_eq "$sum" "$(t_header_sum "$dev")" "header checksum after the refused unlock"
	assert_recovery_opens "$dev" "$WORK/rec"
}

# A valid token of another volume (same KMS, same master key) copied over this volume's.
case_foreign_token() {
	local dev1 uuid1 dev2 uuid2 sum
	t_kms_local kf
	t_volume dev1 uuid1 ft1 kf kv-ft1 --recovery-key-file "$WORK/rec1"
	t_volume dev2 uuid2 ft2 kf kv-ft2
	cryptsetup token export --token-id "$(t_token_id "$dev2")" "$dev2" >"$WORK/tok2.json"
	t_token_replace "$dev1" "$WORK/tok2.json"
	sum=$(t_header_sum "$dev1")

	assert_unlock_refused "$dev1" "$uuid1" kv-ft1 "$sum"
	assert_recovery_opens "$dev1" "$WORK/rec1"

	kc 0 "the other volume still unlocks with its own token" -- unlock "$dev2"
	assert_eq active "$(t_status "$uuid2" state)" "status of the other volume"
	assert_eq ACTIVE "$(t_dm_state kv-ft2)" "dm state of the other volume"
	kc 0 "lock" -- lock kv-ft2
}

t_case tampered-blob case_tampered_blob
t_case malformed-token case_malformed_token
t_case foreign-token case_foreign_token
t_finish
