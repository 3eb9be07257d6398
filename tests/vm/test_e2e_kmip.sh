#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel with the KMIP provider against PyKMIP's real KMIP server, started
# inside the guest on 127.0.0.1 (tests/fakes/kmip_server.sh; mutual TLS, sqlite database):
# unlock --all over one KMIP connection, revoke, restore refused while the server is down (exit 4,
# still suspended), accepted once it is back (same database; data intact, blocked I/O released);
# and a key revoked on the server (a KMIP revoke is permanent) denies unlock and restore (exit 3).
# Runs as root inside the VM:  scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_kmip.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
SRC=${KMSCRYPT_SOURCE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)}
SRV=$SRC/tests/fakes/kmip_server.sh
export KMIP_SERVER_START_TIMEOUT=300 # python + PyKMIP import slowly under TCG

# ---- the server, once for all cases (the guest's loopback is down until we bring it up)
ip link set lo up
KD=$(mktemp -d /tmp/kmscrypt-kmip.XXXXXX)
trap 'bash "$SRV" stop "$KD" >/dev/null 2>&1 || true; t_global_cleanup' EXIT
# the host-made test PKI: kmip_server.sh's mkcerts.sh then keeps it (~15 openssl runs less in the guest)
t_certs "$KD/certs"
PORT=$(bash "$SRV" start "$KD") || {
	tail -n 30 "$KD/stdout.log" "$KD/server.log" >&2 2>/dev/null
	echo "FATAL: PyKMIP server did not start" >&2
	exit 1
}
C=$KD/certs
echo "PyKMIP server on 127.0.0.1:$PORT"

conns() { grep -c "Receiving incoming connection" "$KD/server.log" || true; }

# t_kms_kmip NAME: a configuration with a key created (and activated) by `kms create`.
t_kms_kmip() {
	kc 0 "kms create '$1' (kmip, new key)" -- kms create "$1" --provider kmip \
		--endpoint "127.0.0.1:$PORT" --client-cert "$C/client.pem" --client-key "$C/client.key" \
		--ca-file "$C/ca.pem"
	kc 0 "kms show '$1'" -- kms show "$1" --json
	assert_eq server "$(jq -r .settings.mode "$T_OUT")" "Mode of '$1'"
	KEYID=$(jq -r .settings.key_id "$T_OUT")
	assert_match '^.+$' "$KEYID" "KeyId recorded for '$1'"
}

# unlock --all (one connection per request in flight at most: the KMIP pool, never more
# connections than volumes), revoke, restore refused while the server is down, then accepted.
case_revoke_restore_kmip() {
	local deva uuida devb uuidb reader before
	t_kms_kmip kk
	t_volume deva uuida ka kk kv-ka
	t_volume devb uuidb kb kk kv-kb
	before=$(conns)
	kc 0 "unlock --all" -- unlock --all
	local opened=$(($(conns) - before))
	((opened >= 1 && opened <= 2)) ||
		t_fail "KMIP connections for unlock --all of 2 volumes" "1 or 2" "$opened"
	t_ok "KMIP connections for unlock --all of 2 volumes: $opened"
	assert_eq ACTIVE "$(t_dm_state kv-ka)" "kv-ka after unlock --all"
	assert_eq ACTIVE "$(t_dm_state kv-kb)" "kv-kb after unlock --all"
	assert_table_uses_keyring kv-ka
	assert_status "$uuida" active keyring
	assert_eq kmip "$(t_status "$uuida" provider)" "status: provider"
	t_write_data kv-ka ka
	t_write_data kv-kb kb

	kc 0 "revoke --all" -- revoke --all --reason "kmip e2e"
	assert_eq SUSPENDED "$(t_dm_state kv-ka)" "kv-ka after revoke"
	assert_eq SUSPENDED "$(t_dm_state kv-kb)" "kv-kb after revoke"
	assert_table_key_wiped kv-ka
	assert_table_key_wiped kv-kb
	assert_no_key_in_proc_keys "$uuida"
	assert_no_key_in_proc_keys "$uuidb"
	assert_status "$uuida" revoked-suspended wiped
	t_reader kv-ka 3000
	reader=$T_READER
	assert_blocked "$reader" 2

	bash "$SRV" stop "$KD"
	kc 4 "restore with the KMIP server down is unavailable" -- --timeout 5 restore kv-ka
	assert_match 'could not connect' "$(cat "$T_ERR")" "restore says it could not connect"
	assert_eq SUSPENDED "$(t_dm_state kv-ka)" "kv-ka stays suspended"
	assert_status "$uuida" revoked-suspended wiped
	kill -0 "$reader" 2>/dev/null || t_fail "reader still blocked" "running" "exited"
	t_ok "reader still blocked while the server is down"

	bash "$SRV" start "$KD" "$PORT" >/dev/null
	kc 0 "restore --all once the server is back (same database)" -- restore --all
	assert_reader_done "$reader" 30
	assert_eq ACTIVE "$(t_dm_state kv-ka)" "kv-ka after restore"
	assert_eq ACTIVE "$(t_dm_state kv-kb)" "kv-kb after restore"
	assert_table_uses_keyring kv-ka
	assert_status "$uuida" active keyring
	t_check_data kv-ka ka
	t_check_data kv-kb kb
	kc 0 "lock --all" -- lock --all
}

# A key revoked on the KMIP server: restore of a revoked volume and unlock of a second volume are
# denied (exit 3) with the server's reason; the device stays suspended, data intact.
case_revoked_key_kmip() {
	local deva uuida devb uuidb
	t_kms_kmip kr
	t_volume deva uuida ra kr kv-ra --recovery-key-file "$WORK/ra.rec"
	t_volume devb uuidb rb kr kv-rb
	kc 0 "unlock a" -- unlock "$deva"
	t_write_data kv-ra ra
	kc 0 "revoke a" -- revoke kv-ra --reason "key revoked at the KMS"
	assert_eq SUSPENDED "$(t_dm_state kv-ra)" "kv-ra after revoke"

	bash "$SRV" revoke "$KD" "$KEYID" >/dev/null
	t_ok "key $KEYID revoked on the KMIP server (PyKMIP client)"
	kc 3 "restore with the key revoked is denied" -- restore kv-ra
	assert_match 'Permission Denied' "$(cat "$T_ERR")" "restore gives the server's reason"
	assert_eq SUSPENDED "$(t_dm_state kv-ra)" "kv-ra stays suspended"
	assert_status "$uuida" revoked-suspended wiped
	kc 3 "unlock of a second volume with the revoked key is denied" -- unlock "$devb"
	assert_match 'Permission Denied' "$(cat "$T_ERR")" "unlock gives the server's reason"
	assert_eq absent "$(t_dm_state kv-rb)" "kv-rb not opened"
	kc 3 "kms check reports the key Deactivated" -- kms check kr
	assert_match 'Deactivated' "$(cat "$T_ERR")" "kms check names the state"
	assert_recovery_opens "$deva" "$WORK/ra.rec"
}

t_case revoke-restore-kmip case_revoke_restore_kmip
t_case revoked-key-kmip case_revoked_key_kmip
t_finish
