#!/bin/bash
# The KMIP provider through the real kmscrypt CLI against PyKMIP's real KMIP server on 127.0.0.1
# (tests/fakes/kmip_server.sh: TLS 1.2, client certificates from a test CA, sqlite database):
# kms create (creating the key, or with --key-id; each mode), show, check, format and check of LUKS2
# image files, refused certificates, a revoked key (exit 3), an unreachable server (exit 4), and,
# through tests/unit/test_kmip_provider_live.c, concurrent unwraps through one context and the
# reconnect after a server restart.  No device-mapper, no root (activation: tests/vm/).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
build=${KMSCRYPT_BUILD_DIR:-$(dirname "$K")}
srvsh=$src/tests/fakes/kmip_server.sh

if ! /usr/bin/python3 -c 'import kmip.services.server' 2>/dev/null; then
	echo "FAIL: python3-pykmip is not installed (scripts/install-deps.sh installs it)" >&2
	exit 1
fi
tmp=$(mktemp -d)
cleanup() {
	bash "$srvsh" stop "$tmp/srv" || true
	if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

port=$(bash "$srvsh" start "$tmp/srv") || {
	echo "FAIL: cannot start the PyKMIP server" >&2
	exit 1
}
echo "PyKMIP server on 127.0.0.1:$port"
C=$tmp/srv/certs
conns() { grep -c "Receiving incoming connection" "$tmp/srv/server.log"; }
setting() { json_get "$("$K" kms show "$1" --json)" "j['settings'].get('$2', '')"; }
tls=(--endpoint "127.0.0.1:$port" --client-cert "$C/client.pem" --client-key "$C/client.key"
	--ca-file "$C/ca.pem")

# ---- kms create: the key is created, activated and recorded; the mode is probed and recorded
expect_rc 0 "kms create without --key-id creates a key" -- "$K" kms create kg --provider kmip "${tls[@]}"
expect_out "provider kmip" "create names the provider"
kid=$(setting kg key_id)
[[ -n $kid ]] && pass "KeyId recorded ('$kid')" || failed "no KeyId recorded"
expect_eq "$(setting kg mode)" server "PyKMIP has Encrypt/Decrypt: Mode=server"
expect_eq "$(setting kg cipher)" gcm "PyKMIP has GCM at KMIP 1.4: Cipher=gcm"
expect_rc 0 "kms show" -- "$K" kms show kg
expect_out "Mode         server" "kms show shows the mode"
expect_not_out "Warning" "no warning for kmip"
expect_rc 0 "kms check" -- "$K" kms check kg --json
expect_eq "$(json_get "$OUT" "j['ok']")" True "check ok"
expect_eq "$(json_get "$OUT" "j['key_state']")" Active "check reports the KMIP state"
expect_eq "$(json_get "$OUT" "j['key_id']")" "$kid" "check reports the key id"
expect_rc 0 "kms check (text)" -- "$K" kms check kg
expect_out "mode server (AES-GCM" "check text names mode and cipher"
expect_rc 0 "kms check -v" -- "$K" -v kms check kg
expect_out "kms: Decrypt kmip://127.0.0.1:$port -> reply in" "-v logs each KMIP operation (test_verbose.sh: HTTPS)"

# with --key-id: the existing key, each other mode forced
expect_rc 0 "kms create --key-id --cipher cbc" -- "$K" kms create kc --provider kmip "${tls[@]}" --key-id "$kid" --cipher cbc
expect_eq "$(setting kc key_id)" "$kid" "the given key id is kept"
expect_eq "$(setting kc mode)/$(setting kc cipher)" server/cbc "Mode=server Cipher=cbc"
expect_rc 0 "kms create --key-id --mode local-wrap" -- "$K" kms create kl --provider kmip "${tls[@]}" --key-id "$kid" --mode local-wrap
expect_rc 0 "kms show local-wrap" -- "$K" kms show kl
expect_out "Mode         local-wrap" "kms show shows local-wrap"
expect_not_out "Cipher       " "no Cipher setting for local-wrap"
expect_rc 0 "kms check local-wrap" -- "$K" kms check kl
expect_out "mode local-wrap" "check names local-wrap"
expect_rc 2 "mode is immutable" -- "$K" kms edit kg --mode local-wrap
expect_rc 2 "Cipher with local-wrap is refused" -- "$K" kms create bad1 --provider kmip "${tls[@]}" --key-id "$kid" --mode local-wrap --cipher gcm
expect_rc 2 "unknown mode" -- "$K" kms create bad2 --provider kmip "${tls[@]}" --key-id "$kid" --mode foo
expect_rc 2 "endpoint with a scheme" -- "$K" kms create bad3 --provider kmip --endpoint "https://127.0.0.1:$port" \
	--client-cert "$C/client.pem" --client-key "$C/client.key" --ca-file "$C/ca.pem"
expect_out "is not host[:port]" "endpoint message"
expect_rc 2 "missing --client-key" -- "$K" kms create bad4 --provider kmip --endpoint "127.0.0.1:$port" --client-cert "$C/client.pem"
expect_rc 3 "unknown --key-id is denied" -- "$K" kms create bad5 --provider kmip "${tls[@]}" --key-id no-such-key
expect_out "no-such-key" "unknown key message names the key"
expect_rc 6 "nothing saved after failures" -- "$K" kms show bad5

# client key readable by others
cp "$C/client.key" loose.key
chmod 644 loose.key
expect_rc 2 "group/world-readable client key refused" -- "$K" kms create bad6 --provider kmip \
	--endpoint "127.0.0.1:$port" --client-cert "$C/client.pem" --client-key loose.key --ca-file "$C/ca.pem"
expect_out "chmod 600" "loose key message says what to do"
chmod 600 loose.key
cp "$C/client2.key" mismatch.key
expect_rc 2 "key that does not match the certificate" -- "$K" kms create bad7 --provider kmip \
	--endpoint "127.0.0.1:$port" --client-cert "$C/client.pem" --client-key mismatch.key --ca-file "$C/ca.pem"
expect_out "does not match" "mismatch message"

# ---- certificates
expect_rc 3 "client certificate from another CA is refused" -- "$K" kms create bad8 --provider kmip \
	--endpoint "127.0.0.1:$port" --client-cert "$C/other-client.pem" --client-key "$C/other-client.key" --ca-file "$C/ca.pem"
expect_out "refused the client certificate" "clear message for a refused client certificate"
expect_rc 3 "server certificate from an untrusted CA is refused" -- "$K" kms create bad9 --provider kmip \
	--endpoint "127.0.0.1:$port" --client-cert "$C/client.pem" --client-key "$C/client.key" --ca-file "$C/other-ca.pem"
expect_out "not accepted" "clear message for an untrusted server"
expect_out "--ca-file" "untrusted server message points at --ca-file"
expect_rc 0 "localhost (SAN DNS) is verified by name" -- "$K" kms create kn --provider kmip --endpoint "localhost:$port" \
	--client-cert "$C/client.pem" --client-key "$C/client.key" --ca-file "$C/ca.pem" --key-id "$kid"
expect_rc 3 "another client of the same CA is not the key's owner" -- "$K" kms create bad10 --provider kmip \
	--endpoint "127.0.0.1:$port" --client-cert "$C/client2.pem" --client-key "$C/client2.key" --ca-file "$C/ca.pem" --key-id "$kid"
expect_out "Permission Denied" "the server's reason is in the message"
expect_rc 0 "kms edit to new credentials reaching the same key" -- "$K" kms edit kn --endpoint "127.0.0.1:$port"

# ---- format and check image files, one per mode
truncate -s 40M g.img c.img l.img x.img
for v in g c l; do
	expect_rc 0 "format with Mode=$(setting k$v mode)/$(setting k$v cipher)" -- "$K" format $v.img --kms k$v --recovery-key-file $v.rec
	expect_rc 0 "check $v.img" -- "$K" check $v.img --json
	expect_eq "$(json_get "$OUT" "j['volumes'][0]['ok']")" True "check $v.img ok"
done
cryptsetup token export --token-id 0 g.img >tok-g.json
expect_eq "$(json_get "$(cat tok-g.json)" "j['alg']")" KMIP-AES-GCM "gcm token alg"
expect_eq "$(json_get "$(cat tok-g.json)" "j['key_id']")" "$kid" "token records the KMIP key id"
expect_eq "$(json_get "$(cat tok-g.json)" "j['provider']")" kmip "token provider"
cryptsetup token export --token-id 0 c.img >tok-c.json
expect_eq "$(json_get "$(cat tok-c.json)" "j['alg']")" KMIP-AES-CBC-AAD "cbc token alg"
cryptsetup token export --token-id 0 l.img >tok-l.json
expect_eq "$(json_get "$(cat tok-l.json)" "j['alg']")" KMIP-LOCAL-A256GCM "local-wrap token alg"

# tokens copied onto another volume are refused in every mode (the AAD binds them to the volume)
for v in g c l; do
	cp x.img x$v.img
	"$K" format x$v.img --kms k$v --recovery-key-file x$v.rec >/dev/null 2>&1 || failed "format x$v.img"
	cryptsetup token remove --token-id 0 x$v.img
	cryptsetup token import --token-id 0 --json-file tok-$v.json x$v.img
	expect_rc 3 "token of $v.img on another volume is denied" -- "$K" check x$v.img
done
# a flipped ciphertext byte: denied, never a wrong secret
for v in g c l; do
	/usr/bin/python3 - tok-$v.json flip-$v.json <<-'PY'
		import base64, json, sys
		t = json.load(open(sys.argv[1]))
		b = bytearray(base64.b64decode(t["blob"])); b[-1] ^= 1
		t["blob"] = base64.b64encode(bytes(b)).decode()
		json.dump(t, open(sys.argv[2], "w"))
	PY
	cp $v.img f$v.img
	cryptsetup token remove --token-id 0 f$v.img
	cryptsetup token import --token-id 0 --json-file flip-$v.json f$v.img
	expect_rc 3 "flipped blob ($v) is denied" -- "$K" check f$v.img
done
expect_out "does not authenticate" "local-wrap flip message"

# ---- concurrency and reconnect inside one process (test_kmip_provider_live.c)
for cipher in gcm cbc; do
	before=$(conns)
	KMIP_TEST_PORT=$port KMIP_TEST_CERTS=$C KMIP_TEST_CIPHER=$cipher \
		KMIP_TEST_RESTART="bash '$srvsh' stop '$tmp/srv' && bash '$srvsh' start '$tmp/srv' $port >/dev/null" \
		expect_rc 0 "provider ($cipher): 8 threads through one context, reconnect after restart" -- \
		"$build/test_kmip_provider_live"
	expect_out "[  PASSED  ] 1 test" "live provider test ran (not skipped)"
	# provision (1) + the shared context's pool (1 to 4) + one reconnect after the restart (1):
	# after the restart the sequential unwraps keep to one connection (test_kmip_pool.sh: overlap)
	n=$(($(conns) - before))
	((n >= 3 && n <= 6)) && pass "($cipher) 80 requests from 8 threads used at most 4 connections, then one new one ($n)" ||
		failed "($cipher) $n connections (expected 3..6)"
done
expect_rc 0 "check after server restart (same database)" -- "$K" check g.img

# ---- server down: unavailable (4), then fine again
bash "$srvsh" stop "$tmp/srv"
expect_rc 4 "check with the server stopped is unavailable" -- "$K" --timeout 3 check g.img
expect_out "could not connect" "unavailable message"
bash "$srvsh" start "$tmp/srv" "$port" >/dev/null || failed "restart server"
expect_rc 0 "check after the server is back" -- "$K" check g.img

# ---- revoke the key on the server: denied (3), with the server's reason
bash "$srvsh" revoke "$tmp/srv" "$kid" >/dev/null || failed "revoke $kid with PyKMIP's client"
expect_rc 3 "kms check of a revoked key is denied" -- "$K" kms check kg
expect_out "Deactivated" "check says the key is not Active"
expect_rc 3 "check of a volume with a revoked key (gcm) is denied" -- "$K" check g.img
expect_out "Permission Denied" "server's reason in the message"
expect_rc 3 "check (cbc) denied" -- "$K" check c.img
expect_rc 3 "check (local-wrap) denied" -- "$K" check l.img
expect_out "not Active" "local-wrap checks the state before Get"
expect_rc 0 "recovery key still opens the volume" -- cryptsetup open --test-passphrase --key-file g.rec g.img

finish
