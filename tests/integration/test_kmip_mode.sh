#!/bin/bash
# KMIP unwrap obeys the configured mode (issue 8, item 8).  The token's "alg" is header text that
# whoever can write the disk can edit; unwrap used to dispatch on it, so a token edited to
# KMIP-LOCAL-A256GCM made a Mode=server configuration Get the master key into host memory.  Now a
# token whose alg is not the one the configuration's Mode=/Cipher= writes is invalid (exit 8), told
# as a modified token, and refused before any connection: the "server" here is a plain TCP listener
# that counts connections (no KMIP server needed).  A token with the configured alg does connect
# (the control that makes "no connection" meaningful).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
tmp=$(mktemp -d)
lpid=
cleanup() {
	[ -n "$lpid" ] && kill "$lpid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

bash "$src/tests/fakes/mkcerts.sh" "$tmp/certs" >/dev/null 2>&1 || {
	echo "FAIL: cannot make test certificates" >&2
	exit 1
}
# the listener: accepts, records, closes (a TLS handshake against it fails: "unavailable")
/usr/bin/python3 -c '
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept()
    with open(sys.argv[2], "a") as f:
        f.write("connection\n")
    c.close()
' "$tmp/port" "$tmp/conns" &
lpid=$!
for _ in $(seq 50); do [ -s port ] && break; sleep 0.1; done
port=$(cat port)
: >conns
conns() { wc -l <conns | tr -d ' '; }

# configurations as `kms create` records them (it would probe a real server)
mkdir -p etc/kms
kmsconf() { # NAME MODE [CIPHER]
	{
		printf '[KMS]\nProvider=kmip\nEndpoint=127.0.0.1:%s\n' "$port"
		printf 'ClientCert=%s\nClientKey=%s\nCAFile=%s\n' "$tmp/certs/client.pem" \
			"$tmp/certs/client.key" "$tmp/certs/ca.pem"
		printf 'KeyId=key-1\nMode=%s\n' "$2"
		[ -n "${3:-}" ] && printf 'Cipher=%s\n' "$3"
	} >"etc/kms/$1.conf"
	chmod 600 "etc/kms/$1.conf"
}
kmsconf kgcm server gcm
kmsconf kcbc server cbc
kmsconf kloc local-wrap

# a LUKS2 volume (local provider), whose token is then rewritten as a KMIP one
expect_rc 0 "kms create lab" -- "$K" kms create lab --provider local --key-file "$tmp/lab.key" --generate
truncate -s 40M a.img
expect_rc 0 "format" -- "$K" format a.img --kms lab --recovery-key-file a.rec
cryptsetup token export --token-id 0 a.img >tok.json
with_token() { # IMAGE KMS ALG
	/usr/bin/python3 - tok.json "$2" "$3" <<-'PY'
		import base64, json, os, sys
		t = json.load(open(sys.argv[1]))
		# a blob in the server modes' layout: iv_len, iv, tag_len, tag, ciphertext
		blob = bytes([12]) + os.urandom(12) + bytes([16]) + os.urandom(16) + os.urandom(32)
		t.update(provider="kmip", kms=sys.argv[2], key_id="key-1", alg=sys.argv[3],
			 blob=base64.b64encode(blob).decode())
		json.dump(t, open("t.json", "w"))
	PY
	cp a.img "$1"
	cryptsetup token remove --token-id 0 "$1"
	cryptsetup token import --token-id 0 --json-file t.json "$1"
}

# ---- Mode=server: a token edited to the local-wrap algorithm never fetches the key
with_token s-local.img kgcm KMIP-LOCAL-A256GCM
expect_rc 8 "Mode=server, token alg KMIP-LOCAL-A256GCM: invalid" -- "$K" --timeout 3 check s-local.img
expect_out "KMIP-LOCAL-A256GCM" "the message names the token's algorithm"
expect_out "KMIP-AES-GCM" "the message names the one the configuration allows"
expect_out "edited" "the message says the header may have been edited"
expect_out "recovery key" "the hint points to the recovery key"
expect_eq "$(conns)" 0 "no connection to the KMIP server"
expect_rc 8 "unlock of it: invalid" -- "$K" --timeout 3 unlock s-local.img
expect_eq "$(conns)" 0 "still no connection"

# Cipher is part of the mode: a gcm configuration does not decrypt a token edited to cbc, nor the
# reverse
with_token s-cbc.img kgcm KMIP-AES-CBC-AAD
expect_rc 8 "Mode=server Cipher=gcm, token alg KMIP-AES-CBC-AAD: invalid" -- "$K" --timeout 3 check s-cbc.img
with_token c-gcm.img kcbc KMIP-AES-GCM
expect_rc 8 "Mode=server Cipher=cbc, token alg KMIP-AES-GCM: invalid" -- "$K" --timeout 3 check c-gcm.img
# unknown or missing algorithm
with_token s-junk.img kgcm A256GCM
expect_rc 8 "Mode=server, token alg A256GCM: invalid" -- "$K" --timeout 3 check s-junk.img
expect_eq "$(conns)" 0 "no connection for any of them"

# ---- Mode=local-wrap: a server-mode token is refused the same way
with_token l-gcm.img kloc KMIP-AES-GCM
expect_rc 8 "Mode=local-wrap, token alg KMIP-AES-GCM: invalid" -- "$K" --timeout 3 check l-gcm.img
expect_out "Mode=local-wrap" "the message names the configured mode"
expect_eq "$(conns)" 0 "no connection"

# ---- control: the configured algorithm does reach the server (here: a listener that is no KMIP
# server, so "unavailable")
with_token s-gcm.img kgcm KMIP-AES-GCM
expect_rc 4 "Mode=server, token alg KMIP-AES-GCM: sent to the server" -- "$K" --timeout 2 check s-gcm.img
n=$(conns)
if [ "$n" -ge 1 ]; then pass "the matching algorithm connected ($n)"; else failed "the control did not connect"; fi

finish
