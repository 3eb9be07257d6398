#!/bin/bash
# The libcryptsetup token plugin (libcryptsetup-token-kmscrypt.so) on the host, without device-mapper
# and without installing anything into system directories:
#   - the ELF exports exactly the cryptsetup_token_* symbols, versioned CRYPTSETUP_TOKEN_1.0 (without
#     that version libcryptsetup ignores the plugin), and `cmake --install` puts it into
#     KMSCRYPT_TOKEN_PLUGIN_DIR (default: under the prefix; checked with DESTDIR); libcryptsetup
#     loads plugins from $(pkg-config --variable=libdir libcryptsetup)/cryptsetup, where the Debian
#     package puts it (tests/integration/test_deb.sh);
#   - loaded with dlopen (python ctypes) next to libcryptsetup on a LUKS2 image file: version,
#     validate and dump, and open, whose secret must open the kmscrypt keyslot of the header
#     (crypt_activate_by_passphrase with no name: a header-only check), no stdout output, no thread or
#     fd left behind; open refuses a revoked volume and a missing master key.
# `cryptsetup open --token-only`, luksDump and systemd-cryptsetup run in the VM:
# tests/vm/test_token_plugin.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
B=${KMSCRYPT_BUILD_DIR:?set KMSCRYPT_BUILD_DIR to the build dir}
P=$B/libcryptsetup-token-kmscrypt.so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

[ -f "$P" ] || { echo "FATAL: $P not built" >&2; exit 1; }

# ---- exported symbols and their version
syms=$(nm -D --defined-only "$P" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sort | tr '\n' ' ')
expect_eq "$syms" "cryptsetup_token_buffer_free@@CRYPTSETUP_TOKEN_1.0 \
cryptsetup_token_dump@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_open@@CRYPTSETUP_TOKEN_1.0 \
cryptsetup_token_validate@@CRYPTSETUP_TOKEN_1.0 cryptsetup_token_version@@CRYPTSETUP_TOKEN_1.0 " \
	"only the cryptsetup_token_* functions are exported, all versioned CRYPTSETUP_TOKEN_1.0"
n_ver=$(objdump -T "$P" | grep -c ' CRYPTSETUP_TOKEN_1\.0 *cryptsetup_token_')
expect_eq "$n_ver" 5 "objdump -T: five cryptsetup_token_* symbols of version CRYPTSETUP_TOKEN_1.0"
expect_eq "$(objdump -T "$P" | grep -v '\*UND\*' | grep -cE ' (http|kms|token|secret|log|state)_')" \
	0 "no agent symbol (http_*, kms_*, token_*, secret_*, log_*, state_*) leaks out"
expect_rc 0 "no text relocations, linked with -z now" -- \
	sh -c "readelf -d '$P' | grep -q BIND_NOW && ! readelf -d '$P' | grep -q TEXTREL"

# ---- cmake --install destination (DESTDIR: nothing is written outside $tmp)
cache_get() { sed -n "s/^$1:[A-Z]*=//p" "$B/CMakeCache.txt"; }
inst_dir=$(cache_get KMSCRYPT_TOKEN_PLUGIN_DIR)
[[ $inst_dir == /* ]] || inst_dir=$(cache_get CMAKE_INSTALL_PREFIX)/$inst_dir
expect_rc 0 "cmake --install into a DESTDIR" -- env DESTDIR="$tmp/dest" cmake --install "$B"
expect_rc 0 "plugin installed into KMSCRYPT_TOKEN_PLUGIN_DIR ($inst_dir)" -- \
	test -f "$tmp/dest$inst_dir/libcryptsetup-token-kmscrypt.so"
want_dir=$(pkg-config --variable=libdir libcryptsetup)/cryptsetup
ext_dir=$(/usr/bin/python3 -c 'import ctypes
l = ctypes.CDLL("libcryptsetup.so.12")
l.crypt_token_external_path.restype = ctypes.c_char_p
print((l.crypt_token_external_path() or b"(disabled)").decode())')
expect_eq "$(readlink -f "$ext_dir")" "$(readlink -f "$want_dir")" \
	"libcryptsetup's plugin dir ($ext_dir) is \$(pkg-config --variable=libdir libcryptsetup)/cryptsetup"

# ---- the ABI driven through libcryptsetup on an image file
cat >drive.py <<'EOF'
# drive.py PLUGIN IMAGE CMD [ARG]: call the plugin like libcryptsetup does.
import ctypes, os, sys
plugin, image, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
cs = ctypes.CDLL("libcryptsetup.so.12")
pl = ctypes.CDLL(plugin)
cd = ctypes.c_void_p()
def load():
    if cs.crypt_init(ctypes.byref(cd), image.encode()) < 0: sys.exit("crypt_init failed")
    if cs.crypt_load(cd, b"LUKS2", None) < 0: sys.exit("crypt_load failed")
if cmd == "version":
    pl.cryptsetup_token_version.restype = ctypes.c_char_p
    print(pl.cryptsetup_token_version().decode())
elif cmd == "validate":
    print(pl.cryptsetup_token_validate(None, sys.argv[4].encode()))
elif cmd == "dump":
    load(); sys.stdout.flush()
    pl.cryptsetup_token_dump(cd, sys.argv[4].encode())
elif cmd == "open":
    load()
    tok = int(sys.argv[4])
    fds = len(os.listdir("/proc/self/fd"))
    buf, n = ctypes.c_void_p(), ctypes.c_size_t()
    sys.stdout.flush()
    r = pl.cryptsetup_token_open(cd, tok, ctypes.byref(buf), ctypes.byref(n), None)
    libc = ctypes.CDLL(None); libc.fflush(None)
    threads = len(os.listdir("/proc/self/task"))
    fds_after = len(os.listdir("/proc/self/fd"))
    slot = "-"
    if r == 0:
        slot = cs.crypt_activate_by_passphrase(cd, None, -1, ctypes.cast(buf, ctypes.c_char_p),
                                               n, 0)
        pl.cryptsetup_token_buffer_free(buf, n)
    print("open=%d len=%d keyslot=%s threads=%d fds=%+d" % (r, n.value, slot, threads,
                                                             fds_after - fds))
cs.crypt_free(cd)
EOF
# A sanitizer build (KMSCRYPT_SANITIZE): the ASan runtime must be loaded first, and python's own
# allocations are not ours to report.
san_env=()
if readelf -d "$P" | grep -q 'NEEDED.*libasan'; then
	san_env=("LD_PRELOAD=$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
fi
drive() { env "${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" "$@"; }

expect_rc 0 "kms create" -- "$K" kms create lab --provider local --key-file "$tmp/lab.key" --generate
truncate -s 40M a.img
expect_rc 0 "format an image file" -- "$K" format a.img --kms lab --label alpha
tok=$(cryptsetup luksDump --dump-json-metadata a.img |
	/usr/bin/python3 -c 'import json,sys; t=json.load(sys.stdin)["tokens"]
print([k for k, v in t.items() if v["type"] == "kmscrypt"][0])')
json=$(cryptsetup token export --token-id "$tok" a.img)
slot=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["keyslots"][0])' "$json")

expect_rc 0 "version" -- drive a.img version
expect_eq "$OUT" "$("$K" --version | awk '{print $2}')" "plugin version is the agent's"
expect_rc 0 "validate" -- drive a.img validate "$json"
expect_eq "$OUT" 0 "validate accepts the token kmscrypt format wrote"
bad=$(/usr/bin/python3 -c 'import json,sys; j=json.loads(sys.argv[1]); del j["blob"]; print(json.dumps(j))' "$json")
expect_rc 0 "validate (no blob)" -- drive a.img validate "$bad"
expect_eq "$OUT" -22 "validate rejects a token without blob (-EINVAL)"
expect_rc 0 "validate (not JSON)" -- drive a.img validate "{"
expect_eq "$OUT" -22 "validate rejects text that is not JSON"

expect_rc 0 "dump" -- drive a.img dump "$json"
expect_out "	kms:        lab" "dump: kms"
expect_out "	provider:   local" "dump: provider"
expect_out "	key id:     sha256:" "dump: key id"
expect_out "	alg:        " "dump: alg"
expect_out "	created:    20" "dump: created"
blob=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["blob"])' "$json")
expect_not_out "${blob:0:12}" "dump does not print the blob"

expect_rc 0 "open" -- drive a.img open "$tok"
expect_eq "$OUT" "open=0 len=32 keyslot=$slot threads=1 fds=+0" \
	"open: 32-byte secret that opens keyslot $slot; no stdout output, threads or fds left behind"
expect_eq "$(grep -c '"action":"token-unwrap".*"result":"ok"' state/audit.log)" 1 \
	"the unwrap is in the audit log"

# A header with the token copied onto another volume does not open (AAD binds the UUID).
truncate -s 40M b.img
expect_rc 0 "format b" -- "$K" format b.img --kms lab --label beta
tokb=$(cryptsetup luksDump --dump-json-metadata b.img |
	/usr/bin/python3 -c 'import json,sys; t=json.load(sys.stdin)["tokens"]
print([k for k, v in t.items() if v["type"] == "kmscrypt"][0])')
expect_rc 0 "remove b's own token" -- cryptsetup token remove --token-id "$tokb" b.img
expect_rc 0 "import a's token into b" -- cryptsetup token import --json-file - --token-id "$tokb" \
	b.img <<<"$json"
expect_rc 0 "open of a copied token" -- drive b.img open "$tokb"
expect_eq "${OUT##*open=}" "-1 len=0 keyslot=- threads=1 fds=+0" \
	"a token copied onto another volume is denied (-EPERM)"
expect_out "rejected the token" "the plugin says the token was rejected"
expect_out "recovery key" "and points to the recovery key, not to the KMS"

# Missing master key: -EPERM ("denied": permanent), message through crypt_log on stderr.
mv lab.key lab.key.away
expect_rc 0 "open without the master key" -- drive a.img open "$tok"
expect_eq "${OUT##*open=}" "-1 len=0 keyslot=- threads=1 fds=+0" \
	"open without the master key fails with -EPERM and leaves nothing behind"
expect_out "kmscrypt: KMS 'lab' (local)" "the failure names the KMS configuration"
expect_eq "$(grep -c '"action":"token-unwrap".*"result":"master key file' state/audit.log)" 1 \
	"the failed unwrap is in the audit log with its reason"
mv lab.key.away lab.key

# Missing KMS configuration: -ENOENT, the message says where it looked.
expect_rc 0 "open with another config dir" -- env KMSCRYPT_CONFIG_DIR="$tmp/none" \
	"${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" a.img open "$tok"
expect_eq "${OUT##*open=}" "-2 len=0 keyslot=- threads=1 fds=+0" "no configuration: -ENOENT"
expect_out "$tmp/none/kms/lab.conf" "the message names the file it looked for"

# A configuration holding a secret that group or others can read is refused, as by the CLI.
mkdir -p cfg-open/kms
printf '[KMS]\nProvider=vault\nAddress=https://127.0.0.1:1\nKeyName=disks\nToken=s.fakeVaultToken\n' \
	>cfg-open/kms/lab.conf
chmod 644 cfg-open/kms/lab.conf
expect_rc 0 "open with a 0644 configuration holding a token" -- env KMSCRYPT_CONFIG_DIR="$tmp/cfg-open" \
	"${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" a.img open "$tok"
expect_eq "${OUT##*open=}" "-22 len=0 keyslot=- threads=1 fds=+0" "refused (-EINVAL)"
expect_out "chmod 600 $tmp/cfg-open/kms/lab.conf" "the message names the chmod"
expect_not_out "fakeVaultToken" "the message does not show the secret"

# Revoked (kmscrypt revoke of a closed volume only marks it): -EPERM, and the log says revoked.
expect_rc 0 "revoke the closed volume" -- "$K" revoke "$tmp/a.img" --reason drill
expect_rc 0 "open of a revoked volume" -- drive a.img open "$tok"
expect_eq "${OUT##*open=}" "-1 len=0 keyslot=- threads=1 fds=+0" "revoked: -EPERM"
expect_out "is revoked (its LUKS2 header is marked since" "the message says revoked"
expect_out "'drill'" "the message gives the reason"
expect_out "kmscrypt restore" "the message names kmscrypt restore"
expect_eq "$(grep -c '"action":"token-unwrap".*"result":"refused: revoked' state/audit.log)" 1 \
	"the refusal is in the audit log"
# The mark is in the volume's header too: another (or a lost) state dir does not lift it.
expect_rc 0 "open with another state dir" -- env \
	KMSCRYPT_STATE_DIR="$tmp/state2" "${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" a.img \
	open "$tok"
expect_eq "${OUT##*open=}" "-1 len=0 keyslot=- threads=1 fds=+0" \
	"the header's mark refuses without the state dir that holds the other"
expect_rc 1 "the plugin does not create a missing state dir" -- test -e state2
# Only the state mark (the header's removed by hand, as root could): still refused.
cryptsetup token export --token-id "$tok" a.img >tok.json
/usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); del j["revoked"]; json.dump(j, open(sys.argv[1], "w"))' tok.json
cryptsetup token import --token-replace --token-id "$tok" --json-file tok.json a.img
expect_rc 0 "open with only the state dir's mark" -- drive a.img open "$tok"
expect_eq "${OUT##*open=}" "-1 len=0 keyslot=- threads=1 fds=+0" "the state dir's mark refuses too"
expect_out "is revoked ('drill')" "the message gives the state's reason"
expect_rc 0 "open with neither mark" -- env \
	KMSCRYPT_STATE_DIR="$tmp/state2" "${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" a.img \
	open "$tok"
expect_eq "${OUT##*open=}" "0 len=32 keyslot=$slot threads=1 fds=+0" \
	"KMSCRYPT_STATE_DIR selects the state dir"
# A corrupt state file fails closed.
uuid=$(cryptsetup luksUUID a.img)
mkdir -p state2/volumes
echo '{' >"state2/volumes/$uuid.json"
expect_rc 0 "open with a corrupt state file" -- env \
	KMSCRYPT_STATE_DIR="$tmp/state2" "${san_env[@]}" /usr/bin/python3 "$tmp/drive.py" "$P" a.img \
	open "$tok"
expect_eq "${OUT##*open=}" "-1 len=0 keyslot=- threads=1 fds=+0" "corrupt state: -EPERM (fail closed)"

finish
