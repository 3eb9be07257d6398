#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel with the Google Cloud KMS provider against the fake Cloud KMS (token
# endpoint and GCE metadata server included), started inside the guest on 127.0.0.1: unlock with a
# service account key file and with metadata credentials, revoke, restore refused while the key
# version is disabled and accepted once it is enabled again (data intact, blocked I/O released),
# unlock denied while the account's IAM permissions are revoked.
# Runs as root inside the VM:  scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_gcp.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
SRC=${KMSCRYPT_SOURCE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)}
P=kmscrypt-test
KEY=projects/$P/locations/global/keyRings/ring/cryptoKeys/vm

# ---- the fake, once for all cases (the guest's loopback is down until we bring it up)
ip link set lo up
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
FK=$(mktemp -d /tmp/kmscrypt-fake-gcp.XXXXXX)
t_certs "$FK/certs" # the host-made test PKI (tests/fakes/mkcerts.sh)
CA=$FK/certs/ca.pem
/usr/bin/python3 "$SRC/tests/fakes/fake_gcp_kms.py" --certs "$FK/certs" --portfile "$FK/port" \
	--control-portfile "$FK/cport" --metadata-portfile "$FK/mport" --key "$KEY" >"$FK/log" 2>&1 &
FAKE_PID=$!
trap 'kill "$FAKE_PID" 2>/dev/null || true; t_global_cleanup' EXIT
for ((i = 0; i < 1200; i++)); do # python + google-auth start slowly under TCG
	[[ -s $FK/port && -s $FK/cport && -s $FK/mport ]] && break
	kill -0 "$FAKE_PID" 2>/dev/null || { cat "$FK/log" >&2; echo "FATAL: fake exited" >&2; exit 1; }
	sleep 0.25
done
[[ -s $FK/port ]] || { cat "$FK/log" >&2; echo "FATAL: fake did not start in 300 s" >&2; exit 1; }
PORT=$(<"$FK/port")
MD=http://127.0.0.1:$(<"$FK/mport")
CPORT=$(<"$FK/cport")
echo "fake Cloud KMS at 127.0.0.1:$PORT (control $CPORT, metadata $MD)"

# fctl PATH [JSON]: the fake's control API
fctl() {
	if (($# > 1)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$CPORT$1"
	fi
}

# The test service account of tests/fixtures/gcp (no RSA key generation under TCG): its public
# key registered at the fake, its key file pointed at the fake's token endpoint.
SA_EMAIL=kms-test@kmscrypt-test.iam.gserviceaccount.com
openssl pkey -in "$SRC/tests/fixtures/gcp/sa_key.pem" -pubout -out "$FK/sa_pub.pem"
jq --arg uri "https://127.0.0.1:$PORT/token" '.token_uri = $uri' \
	"$SRC/tests/fixtures/gcp/service_account.json" >"$FK/sa.json"
chmod 600 "$FK/sa.json"
fctl /control "$(jq -n --arg e "$SA_EMAIL" --rawfile p "$FK/sa_pub.pem" \
	--arg k 0123456789abcdef0123456789abcdef01234567 \
	'{op: "add_service_account", email: $e, public_pem: $p, kid: $k}')" >/dev/null

case_revoke_restore_gcp() {
	local dev uuid dev2 uuid2 reader
	kc 0 "kms create (service account key file)" -- kms create kg --provider gcp --project-id "$P" \
		--location global --key-ring ring --key-name vm --endpoint "127.0.0.1:$PORT" \
		--ca-file "$CA" --service-account-file "$FK/sa.json"
	kc 0 "kms create (GCE metadata server)" -- kms create kgm --provider gcp --project-id "$P" \
		--location global --key-ring ring --key-name vm --endpoint "127.0.0.1:$PORT" \
		--ca-file "$CA" --credentials metadata --metadata-endpoint "$MD"
	t_volume dev uuid gcp1 kg kv-gcp1
	t_volume dev2 uuid2 gcp2 kgm kv-gcp2
	t_log "service account: $dev ($uuid); metadata: $dev2 ($uuid2)"
	kc 0 "unlock --all" -- unlock --all
	assert_eq ACTIVE "$(t_dm_state kv-gcp1)" "kv-gcp1 after unlock --all"
	assert_eq ACTIVE "$(t_dm_state kv-gcp2)" "kv-gcp2 (metadata credentials) after unlock --all"
	assert_table_uses_keyring kv-gcp1
	assert_status "$uuid" active keyring
	t_write_data kv-gcp1 g1
	t_write_data kv-gcp2 g2

	kc 0 "revoke --all" -- revoke --all --reason "gcp e2e"
	assert_eq SUSPENDED "$(t_dm_state kv-gcp1)" "kv-gcp1 after revoke"
	assert_eq SUSPENDED "$(t_dm_state kv-gcp2)" "kv-gcp2 after revoke"
	assert_table_key_wiped kv-gcp1
	assert_table_key_wiped kv-gcp2
	assert_no_key_in_proc_keys "$uuid"
	assert_no_key_in_proc_keys "$uuid2"
	t_reader kv-gcp1 3000
	reader=$T_READER
	assert_blocked "$reader" 2

	fctl /control "{\"op\":\"disable_version\",\"name\":\"$KEY\",\"version\":1}" >/dev/null
	kc 3 "restore is refused while the key version is disabled" -- restore kv-gcp1
	assert_match 'FAILED_PRECONDITION' "$(cat "$T_ERR")" "restore names the Cloud KMS status"
	assert_eq SUSPENDED "$(t_dm_state kv-gcp1)" "kv-gcp1 after the refused restore"
	assert_table_key_wiped kv-gcp1
	assert_status "$uuid" revoked-suspended wiped
	kill -0 "$reader" 2>/dev/null || t_fail "reader still blocked" "running" "exited"

	fctl /control "{\"op\":\"enable_version\",\"name\":\"$KEY\",\"version\":1}" >/dev/null
	kc 0 "restore once the key version is enabled again" -- restore kv-gcp1
	assert_reader_done "$reader" 30
	assert_eq ACTIVE "$(t_dm_state kv-gcp1)" "kv-gcp1 after restore"
	assert_table_uses_keyring kv-gcp1
	assert_status "$uuid" active keyring
	t_check_data kv-gcp1 g1
	kc 0 "restore --all (metadata volume)" -- restore --all
	assert_eq ACTIVE "$(t_dm_state kv-gcp2)" "kv-gcp2 after restore --all"
	t_check_data kv-gcp2 g2

	fctl /control "{\"op\":\"revoke\",\"email\":\"$SA_EMAIL\"}" >/dev/null
	kc 0 "lock --all" -- lock --all
	kc 3 "unlock while the account's IAM permissions are revoked is denied" -- unlock "$dev"
	assert_match 'PERMISSION_DENIED' "$(cat "$T_ERR")" "unlock names PERMISSION_DENIED"
	assert_eq absent "$(t_dm_state kv-gcp1)" "kv-gcp1 stays closed"
	fctl /control "{\"op\":\"restore\",\"email\":\"$SA_EMAIL\"}" >/dev/null
	kc 0 "unlock after the permissions are restored" -- unlock "$dev"
	t_check_data kv-gcp1 g1
	kc 0 "lock" -- lock kv-gcp1
}

t_case revoke-restore-gcp case_revoke_restore_gcp
t_finish
