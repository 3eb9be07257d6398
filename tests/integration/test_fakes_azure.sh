#!/usr/bin/env bash
# Prove the Azure fake (tests/fakes/fake_azure_kv.py) speaks Azure's real protocols: Microsoft's own
# clients (Debian python3-azure: azure-identity with MSAL, azure-keyvault-keys) drive its token
# endpoint, managed identity endpoint and Key Vault keys API (fakes_azure_check.py), then the fake
# restarts on the same --state and still unwraps.  Loopback only.
set -euo pipefail

src=${KMSCRYPT_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
here=$src/tests/integration
# shellcheck source=tests/fakes/lib.sh
. "$src/tests/fakes/lib.sh"
py=$FAKES_PY

for mod in azure.identity azure.keyvault.keys cryptography; do
	if ! "$py" -c "import $mod" 2>/dev/null; then
		echo "FAIL: $py cannot import $mod (install the Debian package python3-azure)"
		exit 1
	fi
done

fakes_setup
work=$FAKES_WORK
# keep the SDK away from real Azure settings and endpoints
unset AZURE_CLIENT_ID AZURE_TENANT_ID AZURE_CLIENT_SECRET AZURE_AUTHORITY_HOST IDENTITY_ENDPOINT \
	IDENTITY_HEADER MSI_ENDPOINT MSI_SECRET AZURE_POD_IDENTITY_AUTHORITY_HOST
export AZ_CHECK_STATE=$work/check.json
TENANT=72f988bf-0000-4000-8000-00000000aaaa
CID=11111111-2222-4333-8444-555555555555
SECRET='fakeAzureClientSecret~0000000001'
args=(--state "$work/az.json" --imds-portfile "$work/az.iport" --tenant "$TENANT" --client "$CID:$SECRET")

fake_start az fake_azure_kv.py "${args[@]}"
rc=0
"$py" "$here/fakes_azure_check.py" "$(fake_port az)" "$(cat "$work/az.iport")" "$(fake_cport az)" \
	"$FAKES_CA" "$work/certs/other-ca.pem" "$TENANT" "$CID" "$SECRET" || rc=1
fake_stop az
fake_start az fake_azure_kv.py "${args[@]}"
"$py" "$here/fakes_azure_check.py" "$(fake_port az)" "$(cat "$work/az.iport")" "$(fake_cport az)" \
	"$FAKES_CA" "$work/certs/other-ca.pem" "$TENANT" "$CID" "$SECRET" restart || rc=1
if ((rc)); then
	echo "--- fake log"
	cat "$work/az.log"
	echo "FAIL: the Azure SDK disagrees with the fake"
	exit 1
fi
echo "PASS: azure-identity and azure-keyvault-keys accept the fake"
