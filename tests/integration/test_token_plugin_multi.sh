#!/bin/bash
# The token plugin on a multi-KMS volume (issue 11): it hands the secret on as soon as k KMSs
# answered, as `kmscrypt unlock` does, instead of waiting for every KMS of the binding.  A 1-of-2
# volume over a local key file and Vault (the fake, which wraps at format time); then Vault's
# address is pointed at a server that accepts connections and never answers.  The plugin, loaded
# next to libcryptsetup (python ctypes, as tests/integration/test_token_plugin.sh; no device-mapper,
# no install into system directories), must return the secret quickly (well under its 30 s KMS
# timeout), and that secret must open the kmscrypt keyslot.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
. "$here/../lib/assert.sh"
. "$src/tests/fakes/lib.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
B=${KMSCRYPT_BUILD_DIR:?set KMSCRYPT_BUILD_DIR to the build dir}
P=$B/libcryptsetup-token-kmscrypt.so
[ -f "$P" ] || { echo "FATAL: $P not built" >&2; exit 1; }

fakes_setup >/dev/null
tmp=$FAKES_WORK
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
ROOT=hvs.kmscrypt-test-root
fake_start vault fake_vault.py --root-token $ROOT --state "$tmp/vault.json" || exit 1
fake_ctl vault /control '{"op":"create_key","name":"vol"}' >/dev/null
printf %s "$ROOT" >root.tok
chmod 600 root.tok

# A server that accepts every connection and never answers (not even the TLS handshake).
cat >hang.py <<'PY'
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
/usr/bin/python3 hang.py hang.port &
FAKES_PIDS[hang]=$!
for _ in $(seq 50); do [ -s hang.port ] && break; sleep 0.1; done
HANG=$(cat hang.port)

cat >drive.py <<'PY'
# drive.py PLUGIN IMAGE: cryptsetup_token_open on the first kmscrypt token, timed.
import ctypes, json, subprocess, sys, time
plugin, image = sys.argv[1], sys.argv[2]
meta = json.loads(subprocess.check_output(["cryptsetup", "luksDump", "--dump-json-metadata", image]))
tok = [int(k) for k, v in meta["tokens"].items() if v["type"] == "kmscrypt"][0]
cs = ctypes.CDLL("libcryptsetup.so.12")
pl = ctypes.CDLL(plugin)
cd = ctypes.c_void_p()
if cs.crypt_init(ctypes.byref(cd), image.encode()) < 0 or cs.crypt_load(cd, b"LUKS2", None) < 0:
    sys.exit("cannot load " + image)
buf, n = ctypes.c_void_p(), ctypes.c_size_t()
t0 = time.monotonic()
r = pl.cryptsetup_token_open(cd, tok, ctypes.byref(buf), ctypes.byref(n), None)
ms = int((time.monotonic() - t0) * 1000)
slot = "-"
if r == 0:
    slot = cs.crypt_activate_by_passphrase(cd, None, -1, ctypes.cast(buf, ctypes.c_char_p), n, 0)
    pl.cryptsetup_token_buffer_free(buf, n)
sys.stdout.flush()
print("open=%d len=%d keyslot=%s ms=%d" % (r, n.value, slot, ms), flush=True)
# leave at once: a request to the hanging KMS may still be running on its thread
import os; os._exit(0)
PY
san_env=()
if readelf -d "$P" | grep -q 'NEEDED.*libasan'; then
	san_env=("LD_PRELOAD=$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
fi
drive() { env "${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" "$@"; }

expect_rc 0 "kms create a (local)" -- "$K" kms create a --provider local --key-file a.key --generate
expect_rc 0 "kms create v (vault)" -- "$K" kms create v --provider vault \
	--address "https://127.0.0.1:$(fake_port vault)" --ca-file "$FAKES_CA" --key-name vol --token-file root.tok
truncate -s 20M any.img
expect_rc 0 "format 1 of 2 (a, v)" -- "$K" -q format any.img --kms a --kms v --no-recovery-key
slot=$(cryptsetup luksDump --dump-json-metadata any.img | /usr/bin/python3 -c 'import json,sys
print([v for v in json.load(sys.stdin)["tokens"].values() if v["type"] == "kmscrypt"][0]["keyslots"][0])')

expect_rc 0 "both KMSs answer: the plugin opens" -- drive any.img
expect_out "open=0 len=32 keyslot=$slot " "the secret opens keyslot $slot"

# Vault now hangs: its address is a server that never answers.
sed -i "s|^Address=.*|Address=https://127.0.0.1:$HANG|" etc/kms/v.conf
expect_rc 0 "Vault hangs: the plugin opens through a alone" -- drive any.img
expect_out "open=0 len=32 keyslot=$slot " "1 of 2: the secret from KMS a opens keyslot $slot"
ms=$(sed -n 's/.* ms=\([0-9]*\).*/\1/p' <<<"$OUT")
if [ -n "$ms" ] && ((ms < 5000)); then
	pass "the plugin returned after KMS a answered ($ms ms), without waiting for the hanging KMS"
else
	failed "the plugin waited for the hanging KMS (${ms:-?} ms)"
fi
expect_eq "$(grep -c '"action":"token-unwrap".*"result":"ok"' state/audit.log)" 2 "both opens are in the audit log"

finish
