#!/bin/bash
# KMIP requests of one run overlap (issue 13 item 4): PyKMIP's real server (tests/fakes/kmip_server.sh)
# with 100 ms before each request is processed, and tests/unit/test_kmip_provider_live.c's 8 threads
# unwrapping through one provider context.  The server's TTLV record (REQ/RSP lines in the order they
# happen) shows more than one request in flight at once, over at most the pool's 4 connections for
# that context (1 for provisioning + at most 4).
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
export KMIP_SERVER_DELAY_MS=100
port=$(bash "$srvsh" start "$tmp/srv") || {
	echo "FAIL: cannot start the PyKMIP server" >&2
	exit 1
}
echo "PyKMIP server on 127.0.0.1:$port (100 ms per request)"
conns() { grep -c "Receiving incoming connection" "$tmp/srv/server.log"; }
# the most requests in flight at once: +1 per REQ line, -1 per RSP line, in the order recorded
in_flight_max() { awk '$1 == "REQ" {n++} $1 == "RSP" {n--} n > m {m = n} END {print m + 0}' "$tmp/srv/record.txt"; }

before=$(conns)
KMIP_TEST_PORT=$port KMIP_TEST_CERTS=$tmp/srv/certs KMIP_TEST_CIPHER=gcm \
	KMIP_TEST_RESTART=true expect_rc 0 "8 threads unwrap through one context" -- \
	"$build/test_kmip_provider_live"
expect_out "[  PASSED  ] 1 test" "live provider test ran (not skipped)"
m=$(in_flight_max)
((m > 1)) && pass "KMIP requests overlapped: $m in flight at most" ||
	failed "KMIP requests never overlapped ($m in flight at most): one connection serialises them"
((m <= 4)) && pass "at most the pool's 4 requests in flight ($m)" || failed "$m requests in flight (pool of 4)"
n=$(($(conns) - before))
((n >= 2 && n <= 5)) && pass "$n connections: provisioning 1, the pool at most 4" ||
	failed "$n connections (expected 2..5: provisioning 1, the pool at most 4)"
finish
