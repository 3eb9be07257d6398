#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel with the Azure Key Vault provider against the fake (token endpoint,
# IMDS managed identity, Key Vault with real RSA-OAEP-256), started inside the guest on 127.0.0.1:
# unlock, revoke, restore refused while the key is disabled and accepted once it is enabled again
# (data intact, blocked I/O released), a revoked permission denies unlock, and a volume wrapped
# before the key rotated still unlocks.
# Runs as root inside the VM:  scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_azure.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
SRC=${KMSCRYPT_SOURCE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)}

# ---- the fake, once for all cases (the guest's loopback is down until we bring it up)
ip link set lo up
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
FK=$(mktemp -d /tmp/kmscrypt-fake-azure.XXXXXX)
t_certs "$FK/certs" # the host-made test PKI (tests/fakes/mkcerts.sh)
CA=$FK/certs/ca.pem
TENANT=72f988bf-0000-4000-8000-00000000aaaa
CID=11111111-2222-4333-8444-555555555555
/usr/bin/python3 "$SRC/tests/fakes/fake_azure_kv.py" --certs "$FK/certs" --portfile "$FK/port" \
	--control-portfile "$FK/cport" --imds-portfile "$FK/iport" --tenant "$TENANT" \
	--client "$CID:vm-e2e-client-secret" >"$FK/log" 2>&1 &
FAKE_PID=$!
trap 'kill "$FAKE_PID" 2>/dev/null || true; t_global_cleanup' EXIT
for ((i = 0; i < 1200; i++)); do # python + cryptography start slowly under TCG
	[[ -s $FK/port && -s $FK/cport && -s $FK/iport ]] && break
	kill -0 "$FAKE_PID" 2>/dev/null || { cat "$FK/log" >&2; echo "FATAL: fake exited" >&2; exit 1; }
	sleep 0.25
done
[[ -s $FK/port ]] || { cat "$FK/log" >&2; echo "FATAL: fake did not start in 300 s" >&2; exit 1; }
VAULT=https://127.0.0.1:$(<"$FK/port")
IMDS=http://127.0.0.1:$(<"$FK/iport")
CPORT=$(<"$FK/cport")
printf %s vm-e2e-client-secret >"$FK/secret"
echo "fake Azure Key Vault at $VAULT (control $CPORT, IMDS $IMDS)"

fctl() {
	if (($# > 1)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$CPORT$1"
	fi
}

case_revoke_restore_azure() {
	local dev uuid dev2 uuid2 dev3 uuid3 reader
	kc 0 "kms create 'az' (client secret; the key is created)" -- kms create az --provider azure \
		--tenant-id "$TENANT" --client-id "$CID" --client-secret-file "$FK/secret" \
		--identity-platform-endpoint "$VAULT" --vault-url "$VAULT" --ca-file "$CA" --key-name vm-vol
	kc 0 "kms create 'azm' (managed identity)" -- kms create azm --provider azure --managed-identity \
		--imds-endpoint "$IMDS" --vault-url "$VAULT" --ca-file "$CA" --key-name vm-vol
	t_volume dev uuid az1 az kv-az1
	t_volume dev2 uuid2 az2 azm kv-az2
	t_log "client secret: $dev ($uuid); managed identity: $dev2 ($uuid2)"
	kc 0 "unlock --all" -- unlock --all
	assert_eq ACTIVE "$(t_dm_state kv-az1)" "kv-az1 after unlock --all"
	assert_eq ACTIVE "$(t_dm_state kv-az2)" "kv-az2 (managed identity) after unlock --all"
	assert_table_uses_keyring kv-az1
	assert_status "$uuid" active keyring
	t_write_data kv-az1 z1
	t_write_data kv-az2 z2

	kc 0 "revoke --all" -- revoke --all --reason "azure e2e"
	assert_eq SUSPENDED "$(t_dm_state kv-az1)" "kv-az1 after revoke"
	assert_eq SUSPENDED "$(t_dm_state kv-az2)" "kv-az2 after revoke"
	assert_table_key_wiped kv-az1
	assert_table_key_wiped kv-az2
	assert_no_key_in_proc_keys "$uuid"
	assert_no_key_in_proc_keys "$uuid2"
	t_reader kv-az1 3000
	reader=$T_READER
	assert_blocked "$reader" 2

	fctl /control '{"op":"disable_key","name":"vm-vol"}' >/dev/null
	kc 3 "restore is refused while the key is disabled" -- restore kv-az1
	assert_match 'disabled key' "$(cat "$T_ERR")" "restore names Key Vault's error"
	assert_eq SUSPENDED "$(t_dm_state kv-az1)" "kv-az1 after the refused restore"
	assert_table_key_wiped kv-az1
	kill -0 "$reader" 2>/dev/null || t_fail "reader still blocked" "running" "exited"

	fctl /control '{"op":"enable_key","name":"vm-vol"}' >/dev/null
	kc 0 "restore once the key is enabled again" -- restore kv-az1
	assert_reader_done "$reader" 30
	assert_eq ACTIVE "$(t_dm_state kv-az1)" "kv-az1 after restore"
	assert_table_uses_keyring kv-az1
	t_check_data kv-az1 z1
	kc 0 "restore --all (managed identity volume)" -- restore --all
	assert_eq ACTIVE "$(t_dm_state kv-az2)" "kv-az2 after restore --all"
	t_check_data kv-az2 z2

	# the key rotates: a volume wrapped under the old version still unlocks, a new one uses the new
	fctl /control '{"op":"rotate_key","name":"vm-vol"}' >/dev/null
	t_volume dev3 uuid3 az3 az kv-az3
	t_log "formatted after the rotation: $dev3 ($uuid3)"
	kc 0 "lock --all" -- lock --all
	fctl /control "{\"op\":\"deny\",\"who\":\"$CID\",\"ops\":[\"unwrapKey\"]}" >/dev/null
	kc 3 "unlock is denied once unwrapKey is revoked" -- unlock "$dev"
	assert_match 'unwrapKey permission' "$(cat "$T_ERR")" "unlock names the missing permission"
	assert_eq absent "$(t_dm_state kv-az1)" "kv-az1 stays closed"
	fctl /control "{\"op\":\"allow\",\"who\":\"$CID\"}" >/dev/null
	kc 0 "unlock --all after the permission is restored (old and new key versions)" -- unlock --all
	t_check_data kv-az1 z1
	assert_eq ACTIVE "$(t_dm_state kv-az3)" "kv-az3 (new key version) is open"
	kc 0 "lock --all" -- lock --all
}

t_case revoke-restore-azure case_revoke_restore_azure
t_finish
