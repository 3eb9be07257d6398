#!/usr/bin/env bash
# Prove the Google Cloud KMS fake (tests/fakes/fake_gcp_kms.py) speaks Google's protocols: drive it with
# google-auth (Debian python3-google-auth): service-account JWT bearer grant (the fake verifies the RS256
# assertion with google-auth's own verifier), GCE metadata credentials, then authorized Cloud KMS
# encrypt/decrypt/get with the CRC32C fields; restart on the same --state and open an old ciphertext.
# Loopback only; the fake is stopped on exit (tests/fakes/lib.sh).
set -euo pipefail

src=${KMSCRYPT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
here=$src/tests/integration
# shellcheck source=tests/fakes/lib.sh
. "$src/tests/fakes/lib.sh"
py=$FAKES_PY

for mod in google.auth google.oauth2 cryptography requests crcmod; do
	if ! "$py" -c "import $mod" 2>/dev/null; then
		echo "FAIL: $py cannot import $mod (install python3-google-auth, python3-crcmod)"
		exit 1
	fi
done

fakes_setup
work=$FAKES_WORK
unset GOOGLE_APPLICATION_CREDENTIALS GCE_METADATA_HOST
key=projects/kmscrypt-test/locations/global/keyRings/ring/cryptoKeys/vol
args=(--state "$work/gcp-state.json" --metadata-portfile "$work/gcp.mport" --service-account-file "$work/sa.json"
	--key "$key")

fake_start gcp fake_gcp_kms.py "${args[@]}"
rc=0
"$py" "$here/fakes_gcp_check.py" --port "$(fake_port gcp)" --control-port "$(fake_cport gcp)" \
	--metadata-port "$(cat "$work/gcp.mport")" --sa-file "$work/sa.json" --key "$key" \
	--blob-out "$work/blob.json" || rc=1
fake_stop gcp

fake_start gcp fake_gcp_kms.py "${args[@]}"
"$py" "$here/fakes_gcp_check.py" --port "$(fake_port gcp)" --control-port "$(fake_cport gcp)" \
	--metadata-port "$(cat "$work/gcp.mport")" --sa-file "$work/sa.json" --key "$key" \
	--blob-in "$work/blob.json" || rc=1
if ((rc)); then
	echo "--- server log"
	cat "$work/gcp.log"
	echo "FAIL: the Google Cloud KMS fake does not pass google-auth's checks"
	exit 1
fi
echo "PASS: google-auth accepts the Google Cloud KMS fake"
