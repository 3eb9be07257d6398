#!/usr/bin/env bash
# The KMIP test server is real and behaves as the KMIP provider will need: PyKMIP's server on
# 127.0.0.1 (tests/fakes/kmip_server.sh), checked with PyKMIP's own client
# (tests/fakes/pykmip_selftest.py):
# AES-256 create/activate/locate/get-attributes, AES-CBC encrypt with a server IV and decrypt,
# revoke -> decrypt refused, destroy -> get refused, mutual TLS with certificates from the right CA
# only.  When the build has test_kmip_live (tests/unit/test_kmip_live.c), the same server is then
# driven by kmscrypt's own KMIP codec over TLS.
set -euo pipefail
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
fakes=$src/tests/fakes

if ! /usr/bin/python3 -c 'import kmip.services.server' 2>/dev/null; then
	echo "FAIL: python3-pykmip is not installed (scripts/install-deps.sh installs it)" >&2
	exit 1
fi

tmp=$(mktemp -d)
cleanup() {
	bash "$fakes/kmip_server.sh" stop "$tmp/srv" || true
	if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

port=$(bash "$fakes/kmip_server.sh" start "$tmp/srv")
echo "PyKMIP server on 127.0.0.1:$port"

/usr/bin/python3 "$fakes/pykmip_selftest.py" --port "$port" --certs "$tmp/srv/certs" \
	2>"$tmp/client.err" || {
	cat "$tmp/client.err" >&2
	tail -n 40 "$tmp/srv/server.log" >&2
	exit 1
}

# Every request got a reply, and PyKMIP spoke TLS 1.2 with our client certificate only.
req=$(grep -c '^REQ ' "$tmp/srv/record.txt")
rsp=$(grep -c '^RSP ' "$tmp/srv/record.txt")
[[ $req -ge 10 && $req -eq $rsp ]] || {
	echo "FAIL: $req requests, $rsp responses recorded" >&2
	exit 1
}

# The same server, driven by kmscrypt's codec (built from tests/unit/test_kmip_live.c).
live=${KMSCRYPT_BUILD_DIR:-}/test_kmip_live
if [[ -n ${KMSCRYPT_BUILD_DIR:-} && -x $live ]]; then
	KMIP_TEST_PORT=$port KMIP_TEST_CERTS=$tmp/srv/certs "$live"
	echo "ok kmscrypt KMIP codec against PyKMIP"
else
	echo "FAIL: test_kmip_live not found in KMSCRYPT_BUILD_DIR='${KMSCRYPT_BUILD_DIR:-}'" >&2
	exit 1
fi
echo "PASS"
