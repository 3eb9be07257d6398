#!/bin/bash
# scripts/demo-inside.sh: the narrated kmscrypt demo. Needs root and a kernel with dm-crypt;
# scripts/demo.sh runs it natively or inside the test VM (scripts/vm/run.sh).
#
#   KMSCRYPT=build/kmscrypt scripts/demo-inside.sh
#
# Everything lives in a private tmpfs: a 64 MiB disk image on a loop device, the KMS
# configuration, the state dir. Nothing under /etc or /var/lib is touched, and on exit the demo
# restores (or, failing that, removes) its own mapping and detaches its own loop device only.
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
KMSCRYPT=${KMSCRYPT:-$script_dir/../build/kmscrypt}
if [[ ! -x $KMSCRYPT ]]; then
	echo "demo: no kmscrypt binary at '$KMSCRYPT' (build it first)" >&2
	exit 1
fi
[[ $(id -u) == 0 ]] || { echo "demo: needs root (device-mapper, loop devices)" >&2; exit 1; }
for tool in cryptsetup dmsetup losetup sha256sum; do
	command -v "$tool" >/dev/null || { echo "demo: '$tool' not found" >&2; exit 1; }
done
# No udev in the test VM (libdevmapper then makes the /dev/mapper nodes itself); the variable
# counts when merely set, so leave it alone elsewhere.
if [[ ${KMSCRYPT_IN_VM:-} == 1 ]]; then
	export DM_DISABLE_UDEV=1
fi

name=kmscrypt-demo-$$
dir=
loop=
reader=
step=0
bold=$'\e[1m' dim=$'\e[2m' off=$'\e[0m'
# In the VM our stdout is a serial port (a tty either way): run.sh says whether the host's is one.
if [[ ${KMSCRYPT_IN_VM:-} == 1 ]]; then
	[[ ${KMSCRYPT_VM_HOST_TTY:-} == 1 ]] || bold='' dim='' off=''
else
	[[ -t 1 ]] || bold='' dim='' off=''
fi

say() { # a numbered step
	step=$((step + 1))
	printf '\n%s==> %d. %s%s\n' "$bold" "$step" "$*" "$off"
}

note() {
	printf '    %s\n' "$*"
}

run() { # show a command (arguments with blanks in quotes), then run it
	local a line='$'
	for a in "$@"; do
		[[ $a == *[[:space:]]* ]] && a="'$a'"
		line+=" $a"
	done
	printf '%s%s%s\n' "$dim" "$line" "$off"
	"$@"
}

kmscrypt() {
	"$KMSCRYPT" "$@"
}

die() {
	printf '\n%sdemo FAILED: %s%s\n' "$bold" "$*" "$off" >&2
	exit 1
}

dm_state() {
	local s
	s=$(dmsetup info -C --noheadings -o suspended "$name" 2>/dev/null) || true
	s=${s//[[:space:]]/}
	echo "${s:-absent}"
}

cleanup() {
	local rc=$?
	set +e
	# A suspended device blocks all I/O: bring ours back (or tear it down) before anything else.
	if [[ $(dm_state) == Suspended ]]; then
		timeout 60 "$KMSCRYPT" restore "$name" >/dev/null 2>&1 ||
			timeout 30 dmsetup remove --force "$name" 2>/dev/null
	fi
	[[ -n $reader ]] && kill "$reader" 2>/dev/null
	[[ $(dm_state) != absent ]] && { timeout 60 "$KMSCRYPT" lock "$name" >/dev/null 2>&1 ||
		timeout 30 dmsetup remove --force "$name" 2>/dev/null; }
	[[ -n $loop ]] && losetup -d "$loop" 2>/dev/null
	if [[ -n $dir ]]; then
		umount "$dir" 2>/dev/null
		rmdir "$dir" 2>/dev/null
	fi
	exit "$rc"
}
trap cleanup EXIT

dir=$(mktemp -d /tmp/kmscrypt-demo.XXXXXX)
mount -t tmpfs -o size=256m,mode=0700 tmpfs "$dir"
export KMSCRYPT_CONFIG_DIR=$dir/etc KMSCRYPT_STATE_DIR=$dir/state
mkdir -p "$KMSCRYPT_CONFIG_DIR" "$KMSCRYPT_STATE_DIR"

printf '%skmscrypt demo%s (kernel %s%s)\n' "$bold" "$off" "$(uname -r)" \
	"$([[ ${KMSCRYPT_IN_VM:-} == 1 ]] && echo ', inside the test VM')"
note "config: \$KMSCRYPT_CONFIG_DIR=$KMSCRYPT_CONFIG_DIR"
note "state:  \$KMSCRYPT_STATE_DIR=$KMSCRYPT_STATE_DIR"
note "kmscrypt = $KMSCRYPT"

say "A KMS: the 'local' provider keeps a master key in a file (a stand-in for AWS KMS, Vault, KMIP)"
run kmscrypt kms create demo --provider local --key-file "$dir/master.key" --generate
run kmscrypt kms show demo

say "A disk: a 64 MiB image on a loop device"
truncate -s 64M "$dir/disk.img"
loop=$(losetup --find --show "$dir/disk.img")
note "disk: $loop"

say "Format it: LUKS2 with a random volume passphrase, wrapped by the KMS into a header token"
run kmscrypt format "$loop" --kms demo --label "$name" --recovery-key-file "$dir/recovery.key"
note "the token in the LUKS2 header (the blob is the wrapped secret, useless without the KMS):"
tid=$(cryptsetup luksDump "$loop" | awk '/^Tokens:/ { t = 1; next } /^[^ \t]/ { t = 0 }
	t && $2 == "kmscrypt" { sub(":", "", $1); print $1; exit }')
run cryptsetup token export --token-id "${tid:-0}" "$loop"
echo
note "a recovery key for the day the KMS is gone: $dir/recovery.key (keep it offline)"

say "Unlock: the KMS unwraps the secret; the volume key reaches dm-crypt via the kernel keyring"
run kmscrypt unlock "$loop"
run dmsetup table --showkeys "$name"
key=$(dmsetup table --showkeys "$name" | awk '{ print $5 }')
[[ $key == :64:logon:* ]] || die "expected the table to name a logon key, saw '$key'"
note "the table names a keyring key (${key}); no key bytes appear in it"
run kmscrypt status "$name"

say "Write 4 MiB of data"
head -c 4M /dev/urandom >"$dir/data"
run dd if="$dir/data" of="/dev/mapper/$name" bs=1M oflag=direct conv=fsync status=none
sum=$(sha256sum <"$dir/data" | cut -d' ' -f1)
note "sha256 of what we wrote: $sum"

say "Revoke: suspend the device and wipe the key from dm-crypt and the keyring"
run kmscrypt revoke "$name" --reason "demo: key compromise drill"
run dmsetup info "$name"
run dmsetup table --showkeys "$name"
key=$(dmsetup table --showkeys "$name" | awk '{ print $5 }')
[[ $key =~ ^0+$ ]] || die "expected an all-zero key after revoke, saw '$key'"
note "the key in dm-crypt is now all zeros; /proc/keys has no kmscrypt or cryptsetup key:"
sleep 0.5 # key garbage collection is asynchronous
if grep -E 'kmscrypt:|cryptsetup:' /proc/keys; then
	die "a key is still in the kernel keyring"
fi
note "(none)"
run kmscrypt status "$name"
note "a reader now waits (it does not fail) until the key comes back:"
dd if="/dev/mapper/$name" of=/dev/null bs=4k count=1 skip=2000 iflag=direct status=none &
reader=$!
sleep 2
kill -0 "$reader" 2>/dev/null || die "the reader should be blocked on the suspended device"
note "reader pid $reader still waiting after 2 s"

say "Restore: unwrap again through the KMS, hand the key to dm-crypt, resume"
run kmscrypt restore "$name"
for ((i = 0; i < 100; i++)); do
	kill -0 "$reader" 2>/dev/null || break
	sleep 0.1
done
wait "$reader" || die "the blocked reader failed after restore"
reader=
note "the waiting reader completed"
run kmscrypt status "$name"

say "Check the data"
got=$(dd if="/dev/mapper/$name" bs=1M count=4 iflag=direct status=none | sha256sum | cut -d' ' -f1)
note "sha256 now: $got"
[[ $got == "$sum" ]] || die "data changed: expected $sum"
note "identical: nothing was lost while the key was revoked"

say "Lock, and the audit log"
run kmscrypt lock "$name"
run tail -n 5 "$KMSCRYPT_STATE_DIR/audit.log"

printf '\n%sdemo complete.%s\n' "$bold" "$off"
