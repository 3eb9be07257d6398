#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel with the Thales CipherTrust Manager provider against the fake
# (tests/fakes/fake_ciphertrust.py), started inside the guest on 127.0.0.1: unlock, revoke, restore
# refused while the refresh token is revoked (the message names the kms edit command) and accepted
# after `kms edit --refresh-token-file` (data intact, blocked I/O released); unlock denied while the
# key's usage mask lacks Decrypt and allowed once it is back.
# Runs as root inside the VM:  scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_ciphertrust.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
SRC=${KMSCRYPT_SOURCE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)}

# ---- the fake, once for all cases (the guest's loopback is down until we bring it up)
ip link set lo up
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
FK=$(mktemp -d /tmp/kmscrypt-fake-ct.XXXXXX)
t_certs "$FK/certs" # the host-made test PKI (tests/fakes/mkcerts.sh)
CA=$FK/certs/ca.pem
/usr/bin/python3 "$SRC/tests/fakes/fake_ciphertrust.py" --certs "$FK/certs" --portfile "$FK/port" \
	--control-portfile "$FK/cport" >"$FK/log" 2>&1 &
FAKE_PID=$!
trap 'kill "$FAKE_PID" 2>/dev/null || true; t_global_cleanup' EXIT
for ((i = 0; i < 1200; i++)); do # python starts slowly under TCG
	[[ -s $FK/port && -s $FK/cport ]] && break
	kill -0 "$FAKE_PID" 2>/dev/null || { cat "$FK/log" >&2; echo "FATAL: fake exited" >&2; exit 1; }
	sleep 0.25
done
[[ -s $FK/port ]] || { cat "$FK/log" >&2; echo "FATAL: fake did not start in 300 s" >&2; exit 1; }
URL=https://127.0.0.1:$(<"$FK/port")
CPORT=$(<"$FK/cport")
echo "fake CipherTrust Manager at $URL (control $CPORT)"

fctl() {
	if (($# > 1)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$CPORT$1"
	fi
}
new_refresh_token() { # FILE
	fctl /control '{"op":"issue_refresh_token","username":"kmscrypt"}' | jq -j .refresh_token >"$1"
}

case_revoke_restore_ciphertrust() {
	local dev uuid reader
	new_refresh_token "$WORK/rt"
	kc 0 "kms create (refresh token; the key is created)" -- kms create cm --provider ciphertrust \
		--url "$URL" --ca-file "$CA" --refresh-token-file "$WORK/rt" --key-name vm-disks
	t_volume dev uuid ct1 cm kv-ct1
	t_log "volume $dev ($uuid)"
	kc 0 "unlock --all" -- unlock --all
	assert_eq ACTIVE "$(t_dm_state kv-ct1)" "kv-ct1 after unlock --all"
	assert_table_uses_keyring kv-ct1
	assert_status "$uuid" active keyring
	t_write_data kv-ct1 c1

	kc 0 "revoke --all" -- revoke --all --reason "ciphertrust e2e"
	assert_eq SUSPENDED "$(t_dm_state kv-ct1)" "kv-ct1 after revoke"
	assert_table_key_wiped kv-ct1
	assert_no_key_in_proc_keys "$uuid"
	t_reader kv-ct1 3000
	reader=$T_READER
	assert_blocked "$reader" 2

	fctl /control "{\"op\":\"revoke_refresh_token\",\"refresh_token\":\"$(cat "$WORK/rt")\"}" >/dev/null
	kc 3 "restore is refused while the refresh token is revoked" -- restore kv-ct1
	assert_match 'kmscrypt kms edit cm --refresh-token-file' "$(cat "$T_ERR")" \
		"restore says which command gives a new refresh token"
	assert_eq SUSPENDED "$(t_dm_state kv-ct1)" "kv-ct1 after the refused restore"
	assert_table_key_wiped kv-ct1
	kill -0 "$reader" 2>/dev/null || t_fail "reader still blocked" "running" "exited"

	new_refresh_token "$WORK/rt2"
	kc 0 "kms edit with a new refresh token" -- kms edit cm --refresh-token-file "$WORK/rt2"
	kc 0 "restore with the new refresh token" -- restore kv-ct1
	assert_reader_done "$reader" 30
	assert_eq ACTIVE "$(t_dm_state kv-ct1)" "kv-ct1 after restore"
	assert_table_uses_keyring kv-ct1
	assert_status "$uuid" active keyring
	t_check_data kv-ct1 c1

	kc 0 "lock --all" -- lock --all
	fctl /control '{"op":"set_usage_mask","name":"vm-disks","usageMask":4}' >/dev/null
	kc 3 "unlock is denied while the key does not allow Decrypt" -- unlock "$dev"
	assert_match 'does not allow Decrypt' "$(cat "$T_ERR")" "unlock names the key usage"
	assert_eq absent "$(t_dm_state kv-ct1)" "kv-ct1 stays closed"
	fctl /control '{"op":"set_usage_mask","name":"vm-disks","usageMask":12}' >/dev/null
	kc 0 "unlock once Decrypt is allowed again" -- unlock "$dev"
	t_check_data kv-ct1 c1
	kc 0 "lock" -- lock kv-ct1
}

t_case revoke-restore-ciphertrust case_revoke_restore_ciphertrust
t_finish
