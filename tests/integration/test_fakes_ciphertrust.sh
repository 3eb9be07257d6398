#!/usr/bin/env bash
# Prove the CipherTrust Manager fake answers as the vendor documents its REST API: there is no vendor
# client in Debian, so tests/integration/fakes_ciphertrust_check.py is a small client written from the
# CipherTrust Manager documentation (tokens, keys2, crypto encrypt/decrypt).  It also restarts the fake
# on the same --state and decrypts a ciphertext made before.  Loopback only.
set -euo pipefail

src=${KMSCRYPT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# shellcheck source=tests/fakes/lib.sh
. "$src/tests/fakes/lib.sh"
for mod in requests cryptography; do
	if ! "$FAKES_PY" -c "import $mod" 2>/dev/null; then
		echo "FAIL: $FAKES_PY cannot import $mod (install python3-$mod)" >&2
		exit 1
	fi
done
fakes_setup
work=$FAKES_WORK
check=$src/tests/integration/fakes_ciphertrust_check.py
args=(--ca "$FAKES_CA" --other-ca "$work/certs/other-ca.pem" --blob "$work/blob.json")

fake_start ct fake_ciphertrust.py --state "$work/ct.json"
if ! "$FAKES_PY" "$check" --port "$(fake_port ct)" --control-port "$(fake_cport ct)" "${args[@]}"; then
	cat "$work/ct.log"
	exit 1
fi
fake_stop ct
fake_start ct fake_ciphertrust.py --state "$work/ct.json"
"$FAKES_PY" "$check" --port "$(fake_port ct)" --control-port "$(fake_cport ct)" "${args[@]}" --phase restart
echo "PASS: CipherTrust fake"
