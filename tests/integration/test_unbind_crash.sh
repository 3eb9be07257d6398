#!/bin/bash
# `kmscrypt unbind` killed between its two header writes (keyslot and token) must never leave an
# openable kmscrypt keyslot without its token: nothing would show it, and a second unbind could not
# find it.  The crash is a SIGKILL from an LD_PRELOAD shim at the start of the second header write
# (crypt_keyslot_destroy or crypt_token_json_set(..., NULL), whichever comes second), on LUKS2
# image files.  Afterwards the bound keyslot is gone or still assigned to the kmscrypt token, and
# a second unbind finishes the job.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

cat >crash.c <<'C'
/* Passes the first header-changing unbind call through and kills the process at the second. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>
struct crypt_device;
static int calls;

static void step(void)
{
	if (++calls == 2)
		kill(getpid(), SIGKILL);
}

int crypt_keyslot_destroy(struct crypt_device *cd, int keyslot)
{
	int (*real)(struct crypt_device *, int) = dlsym(RTLD_NEXT, "crypt_keyslot_destroy");

	step();
	return real(cd, keyslot);
}

int crypt_token_json_set(struct crypt_device *cd, int token, const char *json)
{
	int (*real)(struct crypt_device *, int, const char *) =
		dlsym(RTLD_NEXT, "crypt_token_json_set");

	if (!json)
		step();
	return real(cd, token, json);
}
C
${CC:-cc} -shared -fPIC -o crash.so crash.c -ldl ||
	{ echo "FATAL: cannot build the LD_PRELOAD shim" >&2; exit 1; }

# keyslot_state IMAGE KEYSLOT: "gone", "token" (assigned to a kmscrypt token) or "ORPHAN"
keyslot_state() {
	cryptsetup luksDump --dump-json-metadata "$1" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
ks = sys.argv[1]
if ks not in j["keyslots"]:
    print("gone")
elif any(t["type"] == "kmscrypt" and ks in t["keyslots"] for t in j["tokens"].values()):
    print("token")
else:
    print("ORPHAN")' "$2"
}
n_tokens() {
	cryptsetup luksDump --dump-json-metadata "$1" |
		/usr/bin/python3 -c 'import json, sys; print(len(json.load(sys.stdin)["tokens"]))'
}

"$K" kms create lab --provider local --key-file lab.key --generate >/dev/null || exit 1
printf 'correct horse' >pass.txt

# A passphrase in keyslot 0, kmscrypt bound into keyslot 1.
truncate -s 40M p.img
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file pass.txt p.img
expect_rc 0 "bind" -- "$K" bind p.img --kms lab --key-file pass.txt
expect_eq "$(keyslot_state p.img 1)" token "the bound keyslot 1 has its token"

# With ASan the shim cannot come first in the library list; that does not matter here.
expect_rc 137 "unbind killed between its two header writes" -- \
	env LD_PRELOAD="$tmp/crash.so" ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
	"$K" -q unbind p.img
expect_eq "$(keyslot_state p.img 1)" gone \
	"after the crash the kmscrypt keyslot is gone (the token, now pointing at nothing, stays)"
expect_rc 0 "the passphrase still opens" -- \
	cryptsetup open --test-passphrase --key-slot 0 --key-file pass.txt p.img

# The token left behind is found again and a second unbind finishes.
expect_rc 0 "a second unbind removes what the crash left" -- "$K" -q unbind p.img
expect_eq "$(n_tokens p.img)" 0 "no token left"
expect_eq "$(keyslot_state p.img 1)" gone "no kmscrypt keyslot left"
expect_rc 6 "check: no kmscrypt token" -- "$K" check p.img
expect_rc 0 "bind again" -- "$K" bind p.img --kms lab --key-file pass.txt
expect_rc 0 "check after bind again" -- "$K" check p.img

finish
