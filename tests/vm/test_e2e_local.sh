#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel with the local provider: format, unlock, lock, revoke, restore,
# simulated reboot, denied restore, KMS delete while in use, and what `status --json` says.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_local.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# kms create/list/show/check, format (and its refusal), unlock, the live table, lock, unlock again.
case_lifecycle() {
	local dev uuid
	t_kms_local kl
	kc 0 "kms list" -- kms list --json
	jq -e . <"$T_OUT" >/dev/null || t_fail "kms list --json is JSON" "JSON" "$(cat "$T_OUT")"
	assert_match '"kl"' "$(cat "$T_OUT")" "kms list names 'kl'"
	kc 0 "kms show" -- kms show kl --json
	assert_match '"local"' "$(cat "$T_OUT")" "kms show says provider local"
	kc 0 "kms check" -- kms check kl

	t_volume dev uuid life kl kv-life
	assert_status "$uuid" inactive none
	assert_eq "$dev" "$(t_status "$uuid" device)" "status: device"
	assert_eq kv-life "$(t_status "$uuid" label)" "status: label"
	assert_eq kl "$(t_status "$uuid" kms)" "status: kms"
	assert_eq local "$(t_status "$uuid" provider)" "status: provider"
	kc 0 "check DEVICE unwraps and tests the keyslot" -- check "$dev"
	assert_eq absent "$(t_dm_state kv-life)" "check does not activate"

	kc 1,2,5,7 "format refuses a device that has a LUKS header" -- \
		format "$dev" --kms kl --label other
	assert_eq "$uuid" "$(t_uuid "$dev")" "LUKS UUID after the refused format"

	kc 0 "unlock" -- unlock "$dev"
	assert_eq ACTIVE "$(t_dm_state kv-life)" "dm state of kv-life (default name = label)"
	assert_table_uses_keyring kv-life
	assert_status "$uuid" active keyring
	assert_eq kv-life "$(t_status "$uuid" mapping)" "status: mapping"
	t_write_data kv-life life

	kc 0 "lock" -- lock kv-life
	assert_eq absent "$(t_dm_state kv-life)" "mapping after lock"
	assert_no_key_in_proc_keys "$uuid"
	assert_status "$uuid" inactive none

	kc 0 "unlock again" -- unlock "$dev"
	assert_table_uses_keyring kv-life
	t_check_data kv-life life
	kc 0 "lock" -- lock kv-life

	kc 0 "unlock under another name" -- unlock "$dev" --name kv-other
	assert_eq ACTIVE "$(t_dm_state kv-other)" "dm state of kv-other"
	t_check_data kv-other life
	kc 0 "lock by that name" -- lock kv-other
	assert_eq absent "$(t_dm_state kv-other)" "kv-other after lock"
	kc 0 "revoke --all with nothing open" -- revoke --all
	assert_match "No open kmscrypt volumes to revoke." "$(cat "$T_OUT")" \
		"revoke --all says that nothing was open"
}

# revoke: suspended, key wiped in dm-crypt and gone from the keyring, I/O blocks (not fails);
# restore: the blocked read completes, data intact. Then the same with --all, and the audit log.
case_revoke_restore() {
	local dev uuid reader
	t_kms_local kr
	t_volume dev uuid rr kr kv-rr
	kc 0 "unlock" -- unlock "$dev"
	t_write_data kv-rr rr

	kc 0 "revoke" -- revoke kv-rr --reason "vm test"
	assert_eq SUSPENDED "$(t_dm_state kv-rr)" "dm state after revoke"
	assert_table_key_wiped kv-rr
	assert_no_key_in_proc_keys "$uuid"
	assert_status "$uuid" revoked-suspended wiped

	t_reader kv-rr 3000
	reader=$T_READER
	assert_blocked "$reader" 3

	kc 0 "restore" -- restore kv-rr
	assert_reader_done "$reader" 30
	assert_eq ACTIVE "$(t_dm_state kv-rr)" "dm state after restore"
	assert_table_uses_keyring kv-rr
	assert_status "$uuid" active keyring
	t_check_data kv-rr rr

	kc 0 "revoke --all" -- revoke --all --reason "vm test all"
	assert_eq SUSPENDED "$(t_dm_state kv-rr)" "dm state after revoke --all"
	assert_table_key_wiped kv-rr
	assert_status "$uuid" revoked-suspended wiped
	kc 0 "restore --all" -- restore --all
	assert_eq ACTIVE "$(t_dm_state kv-rr)" "dm state after restore --all"
	assert_status "$uuid" active keyring
	t_check_data kv-rr rr

	[[ -s $STATE/volumes/$uuid.json ]] || t_fail "state file" "$STATE/volumes/$uuid.json" \
		"$(ls -R "$STATE")"
	jq -e . <"$STATE/volumes/$uuid.json" >/dev/null ||
		t_fail "state file is JSON" "JSON" "$(cat "$STATE/volumes/$uuid.json")"
	t_ok "state file $STATE/volumes/$uuid.json"
	[[ -s $STATE/audit.log ]] || t_fail "audit log" "$STATE/audit.log" "$(ls "$STATE")"
	jq -e . <"$STATE/audit.log" >/dev/null ||
		t_fail "every audit.log line is JSON" "JSON lines" "$(cat "$STATE/audit.log")"
	assert_match 'revoke' "$(cat "$STATE/audit.log")" "audit.log records the revoke"
	assert_match 'vm test' "$(cat "$STATE/audit.log")" "audit.log records the reason"
	assert_match 'restore' "$(cat "$STATE/audit.log")" "audit.log records the restore"
	kc 0 "lock" -- lock kv-rr
}

# A revoked volume stays revoked across a reboot (lock --all; unlock --all) until restore.
case_revoke_reboot() {
	local deva uuida devb uuidb
	t_kms_local kb
	t_volume deva uuida rb-a kb kv-ra
	t_volume devb uuidb rb-b kb kv-rb
	kc 0 "unlock a" -- unlock "$deva"
	kc 0 "unlock b" -- unlock "$devb"
	t_write_data kv-ra ra
	t_write_data kv-rb rb

	kc 0 "revoke a" -- revoke kv-ra --reason "before reboot"
	assert_status "$uuida" revoked-suspended wiped
	assert_status "$uuidb" active keyring

	kc 0 "lock --all (shutdown)" -- lock --all
	assert_eq absent "$(t_dm_state kv-ra)" "revoked a after lock --all"
	assert_eq absent "$(t_dm_state kv-rb)" "b after lock --all"
	assert_no_key_in_proc_keys "$uuida"
	assert_no_key_in_proc_keys "$uuidb"
	assert_eq revoked-closed "$(t_status "$uuida" state)" "status of a: state"
	assert_in "none|wiped" "$(t_status "$uuida" key)" "status of a: key"
	assert_status "$uuidb" inactive none

	kc 0,7 "unlock --all (boot)" -- unlock --all
	t_log "unlock --all exited $T_RC with a revoked volume present"
	assert_eq absent "$(t_dm_state kv-ra)" "revoked a after unlock --all"
	assert_eq ACTIVE "$(t_dm_state kv-rb)" "b after unlock --all"
	assert_eq revoked-closed "$(t_status "$uuida" state)" "status of a: state"
	assert_status "$uuidb" active keyring
	t_check_data kv-rb rb

	kc 7 "unlock of the revoked volume is refused" -- unlock "$deva"
	assert_eq absent "$(t_dm_state kv-ra)" "a after the refused unlock"

	kc 0 "restore a (revoked-closed -> active)" -- restore "$deva"
	assert_eq ACTIVE "$(t_dm_state kv-ra)" "a after restore"
	assert_table_uses_keyring kv-ra
	assert_status "$uuida" active keyring
	t_check_data kv-ra ra
	t_check_data kv-rb rb
	kc 0 "lock --all" -- lock --all
}

# Restore while the KMS refuses (master key file gone): exit 3, still suspended, then it works.
case_restore_denied() {
	local dev uuid
	t_kms_local kd
	t_volume dev uuid rd kd kv-rd
	kc 0 "unlock" -- unlock "$dev"
	t_write_data kv-rd rd
	kc 0 "revoke" -- revoke kv-rd
	mv "$WORK/kd.key" "$WORK/kd.key.away"
	kc 3 "restore without the master key is denied" -- restore kv-rd
	assert_match '.' "$(cat "$T_ERR")" "restore explains the denial: $(head -n 1 "$T_ERR")"
	assert_eq SUSPENDED "$(t_dm_state kv-rd)" "dm state after the denied restore"
	assert_table_key_wiped kv-rd
	assert_status "$uuid" revoked-suspended wiped
	mv "$WORK/kd.key.away" "$WORK/kd.key"
	kc 0 "restore with the master key back" -- restore kv-rd
	assert_eq ACTIVE "$(t_dm_state kv-rd)" "dm state after restore"
	assert_status "$uuid" active keyring
	t_check_data kv-rd rd
	kc 0 "lock" -- lock kv-rd
}

# A KMS configuration cannot be deleted while a volume uses it, nor created twice.
case_kms_delete_in_use() {
	local dev uuid
	t_kms_local kx
	t_volume dev uuid kx kx kv-kx
	kc 0 "unlock" -- unlock "$dev"
	kc 7 "kms delete of a KMS in use is refused" -- kms delete kx
	kc 0 "the KMS is still there" -- kms show kx
	[[ -s $WORK/kx.key ]] || t_fail "master key file after refused delete" "present" "gone"
	kc 7 "kms create of an existing name is refused" -- \
		kms create kx --provider local --key-file "$WORK/kx2.key" --generate
	assert_status "$uuid" active keyring
	kc 0 "lock" -- lock kv-kx

	t_kms_local ky
	kc 0 "kms delete of an unused KMS" -- kms delete ky
	kc 6 "kms show of a deleted KMS" -- kms show ky
}

t_case lifecycle case_lifecycle
t_case revoke-restore case_revoke_restore
t_case revoke-reboot case_revoke_reboot
t_case restore-denied case_restore_denied
t_case kms-delete-in-use case_kms_delete_in_use
t_finish
