#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# End-to-end on a real kernel with the AWS KMS provider against the fake AWS KMS (and its IMDSv2
# server), started inside the guest on 127.0.0.1: unlock, revoke, restore refused while the key is
# disabled and accepted once it is enabled again (data intact, blocked I/O released), and
# `unlock --all` of 50 loop devices over one TLS connection (counted at the fake).
# Runs as root inside the VM:  scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_e2e_aws.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
SRC=${KMSCRYPT_SOURCE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)}
N_MANY=${KMSCRYPT_VM_AWS_VOLUMES:-50}

# ---- the fake, once for all cases (the guest's loopback is down until we bring it up)
ip link set lo up
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
FK=$(mktemp -d /tmp/kmscrypt-fake-aws.XXXXXX)
t_certs "$FK/certs" # the host-made test PKI (tests/fakes/mkcerts.sh)
CA=$FK/certs/ca.pem
# --h2: the fake offers HTTP/2 (ALPN), as AWS KMS endpoints do; kmscrypt multiplexes a run's
# requests on one TLS connection then (HTTP/1.1 only: a bounded pool, tests/unit/test_kms_concurrency)
/usr/bin/python3 "$SRC/tests/fakes/fake_aws_kms.py" --h2 --certs "$FK/certs" --portfile "$FK/port" \
	--control-portfile "$FK/cport" --imds-portfile "$FK/iport" >"$FK/log" 2>&1 &
FAKE_PID=$!
trap 'kill "$FAKE_PID" 2>/dev/null || true; t_global_cleanup' EXIT
for ((i = 0; i < 1200; i++)); do # python + botocore start slowly under TCG
	[[ -s $FK/port && -s $FK/cport && -s $FK/iport ]] && break
	kill -0 "$FAKE_PID" 2>/dev/null || { cat "$FK/log" >&2; echo "FATAL: fake exited" >&2; exit 1; }
	sleep 0.25
done
[[ -s $FK/port ]] || { cat "$FK/log" >&2; echo "FATAL: fake did not start in 300 s" >&2; exit 1; }
EP=https://127.0.0.1:$(<"$FK/port")
IMDS=http://127.0.0.1:$(<"$FK/iport")
CPORT=$(<"$FK/cport")
printf %s fakeSecretKeyForKmscryptTests0000000001 >"$FK/sk"
echo "fake AWS KMS at $EP (control $CPORT, IMDS $IMDS)"

# fctl PATH [JSON]: the fake's control API
fctl() {
	if (($# > 1)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$CPORT$1"
	fi
}

# t_kms_aws NAME KEYVAR: a fresh key at the fake and a static-credential configuration for it.
t_kms_aws() {
	local _out
	_out=$(fctl /control '{"op":"create_key","description":"vm e2e"}')
	printf -v "$2" '%s' "$(jq -r .KeyId <<<"$_out")"
	kc 0 "kms create '$1' (aws)" -- kms create "$1" --provider aws --region us-east-1 \
		--endpoint "$EP" --ca-file "$CA" --key-id "${!2}" \
		--access-key-id AKIAFAKEKMS000000001 --secret-access-key-file "$FK/sk"
}

# unlock, revoke, restore refused while the key is disabled, then accepted; IMDS credentials too.
case_revoke_restore_aws() {
	local key dev uuid dev2 uuid2 reader
	t_kms_aws ka key
	kc 0 "kms create (IMDSv2 instance role)" -- kms create kai --provider aws --region us-east-1 \
		--endpoint "$EP" --ca-file "$CA" --key-id "$key" --credentials imds --imds-endpoint "$IMDS"
	t_volume dev uuid aws1 ka kv-aws1
	t_volume dev2 uuid2 aws2 kai kv-aws2
	t_log "static credentials: $dev ($uuid); IMDS credentials: $dev2 ($uuid2)"
	kc 0 "unlock --all" -- unlock --all
	assert_eq ACTIVE "$(t_dm_state kv-aws1)" "kv-aws1 after unlock --all"
	assert_eq ACTIVE "$(t_dm_state kv-aws2)" "kv-aws2 (IMDS credentials) after unlock --all"
	assert_table_uses_keyring kv-aws1
	assert_status "$uuid" active keyring
	t_write_data kv-aws1 a1
	t_write_data kv-aws2 a2

	kc 0 "revoke --all" -- revoke --all --reason "aws e2e"
	assert_eq SUSPENDED "$(t_dm_state kv-aws1)" "kv-aws1 after revoke"
	assert_eq SUSPENDED "$(t_dm_state kv-aws2)" "kv-aws2 after revoke"
	assert_table_key_wiped kv-aws1
	assert_table_key_wiped kv-aws2
	assert_no_key_in_proc_keys "$uuid"
	assert_no_key_in_proc_keys "$uuid2"
	t_reader kv-aws1 3000
	reader=$T_READER
	assert_blocked "$reader" 2

	fctl /control "{\"op\":\"disable_key\",\"key_id\":\"$key\"}" >/dev/null
	kc 3 "restore is refused while the key is disabled" -- restore kv-aws1
	assert_match 'DisabledException' "$(cat "$T_ERR")" "restore names the vendor error"
	assert_eq SUSPENDED "$(t_dm_state kv-aws1)" "kv-aws1 after the refused restore"
	assert_table_key_wiped kv-aws1
	assert_status "$uuid" revoked-suspended wiped
	kill -0 "$reader" 2>/dev/null || t_fail "reader still blocked" "running" "exited"
	kc 3 "restore --all is refused too" -- restore --all
	assert_eq SUSPENDED "$(t_dm_state kv-aws2)" "kv-aws2 after the refused restore --all"

	fctl /control "{\"op\":\"enable_key\",\"key_id\":\"$key\"}" >/dev/null
	kc 0 "restore once the key is enabled again" -- restore kv-aws1
	assert_reader_done "$reader" 30
	assert_eq ACTIVE "$(t_dm_state kv-aws1)" "kv-aws1 after restore"
	assert_table_uses_keyring kv-aws1
	assert_status "$uuid" active keyring
	t_check_data kv-aws1 a1
	kc 0 "restore --all (IMDS volume)" -- restore --all
	assert_eq ACTIVE "$(t_dm_state kv-aws2)" "kv-aws2 after restore --all"
	t_check_data kv-aws2 a2

	fctl /control '{"op":"revoke","access_key":"AKIAFAKEKMS000000001"}' >/dev/null
	kc 0 "lock --all" -- lock --all
	kc 3 "unlock of a volume whose principal is revoked is denied" -- unlock "$dev"
	assert_match 'AccessDeniedException' "$(cat "$T_ERR")" "unlock names AccessDeniedException"
	assert_eq absent "$(t_dm_state kv-aws1)" "kv-aws1 stays closed"
	fctl /control '{"op":"restore","access_key":"AKIAFAKEKMS000000001"}' >/dev/null
	kc 0 "unlock after the principal is restored" -- unlock "$dev"
	t_check_data kv-aws1 a1
	kc 0 "lock" -- lock kv-aws1
}

# unlock --all of many loop devices: 8 threads, one KMS configuration, one TLS connection.
case_unlock_all_one_connection() {
	local key i img dev n_ok
	t_kms_aws km key
	printf %s 'vm-e2e-passphrase' >"$WORK/pw"
	# small LUKS2 headers (2 MiB per image instead of 16) so that 50 fit the case's tmpfs; one
	# truncate for all the images (a process costs 0.1-0.5 s in the emulated guest)
	local imgs=()
	for ((i = 1; i <= N_MANY; i++)); do
		imgs+=("$WORK/m$i.img")
	done
	truncate -s 4M "${imgs[@]}"
	for ((i = 1; i <= N_MANY; i++)); do
		img=$WORK/m$i.img
		dev=$(losetup --find --show "$img")
		T_LOOPS+=("$dev")
		cryptsetup luksFormat -q --type luks2 --luks2-metadata-size 16k --luks2-keyslots-size 1m \
			--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --label "kv-m$i" --key-file "$WORK/pw" \
			"$dev" >/dev/null 2>&1
		"$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" -q bind "$dev" --kms km \
			--key-file "$WORK/pw" >/dev/null 2>"$WORK/bind.err" ||
			t_fail "bind $dev" "exit 0" "$(cat "$WORK/bind.err")"
	done
	t_ok "$N_MANY loop devices with LUKS2 headers bound to 'km'"
	fctl /counters/reset '{}' >/dev/null
	kc 0 "unlock --all of $N_MANY volumes" -- unlock --all --json
	n_ok=$(jq '[.volumes[] | select(.result == "unlocked")] | length' "$T_OUT")
	assert_eq "$N_MANY" "$n_ok" "volumes unlocked"
	fctl /counters >"$WORK/counters.json"
	t_log "counters: $(jq -c '{tcp_connections, tls_handshakes, tls_resumed, requests, h2_connections, in_flight_max}' "$WORK/counters.json")"
	assert_eq "$N_MANY" "$(jq '.requests_by_action.Decrypt' "$WORK/counters.json")" "Decrypt requests"
	assert_eq 1 "$(jq .tls_handshakes "$WORK/counters.json")" "TLS handshakes for $N_MANY volumes"
	assert_eq 1 "$(jq .tcp_connections "$WORK/counters.json")" "TCP connections for $N_MANY volumes"
	assert_eq 1 "$(jq .h2_connections "$WORK/counters.json")" "HTTP/2 connections for $N_MANY volumes"
	assert_eq ACTIVE "$(t_dm_state "kv-m$N_MANY")" "kv-m$N_MANY is open"
	kc 0 "lock --all" -- lock --all
}

t_case revoke-restore-aws case_revoke_restore_aws
t_case unlock-all-one-connection case_unlock_all_one_connection
t_finish
