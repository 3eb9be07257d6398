#!/bin/bash
# The example cloud-configs (scripts/cloud-init/*.yaml) leave no credential file behind: a file that
# write_files fills with a secret (a path naming a secret, token or key) lives on /run (tmpfs) and a
# runcmd entry after kmscrypt-provision removes it, once `kms create` has copied it into the
# configuration.  And the comments promise only the auth flows kmscrypt implements (Vault: token and
# AppRole; no response-wrapped secret_id unwrapping, no use-limited secret_id: kmscrypt logs in
# again at every boot).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}

for f in "$src"/scripts/cloud-init/*.yaml; do
	OUT=$(/usr/bin/python3 - "$f" <<'PY'
import re, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
run = [c if isinstance(c, list) else ["sh", "-c", c] for c in doc.get("runcmd", [])]
prov = [i for i, c in enumerate(run) if "kmscrypt-provision" in c]
for w in doc.get("write_files", []):
    p = w["path"]
    if not re.search(r"secret|token|password|\.key$", p):
        continue
    print("secret file", p)
    if not p.startswith("/run/"):
        print("  NOT-ON-RUN", p)
    rm = [i for i, c in enumerate(run) if c[:1] == ["rm"] and p in c]
    if not rm or not prov or min(rm) < max(prov):
        print("  NOT-REMOVED", p)
PY
)
	expect_not_out "NOT-ON-RUN" "${f##*/}: credential files go to /run"
	expect_not_out "NOT-REMOVED" "${f##*/}: credential files are removed after kmscrypt-provision"
	OUT=$(grep '^#' "$f")
	expect_not_out "response-wrapped" "${f##*/}: no response-wrapped secret_id (not implemented)"
	expect_not_out "use-limited" "${f##*/}: no use-limited secret_id (kmscrypt logs in at every boot)"
done
OUT=$(/usr/bin/python3 -c 'import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))["write_files"][0]["path"])' \
	"$src/scripts/cloud-init/cloud-config.example.yaml")
expect_out "secret-id" "the Vault example writes an AppRole secret_id (what this test is about)"
finish
