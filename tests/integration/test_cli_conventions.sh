#!/bin/bash
# CLI conventions shared with cryptsetup (issue 12, items 3 and 4), on image files:
#   - destructive commands ask first: `format --force` over a signature and `unbind` type-YES
#     questions through a pseudo-terminal; -q/--batch-mode answers yes; without a terminal and
#     without -q they refuse (exit 2) and change nothing;
#   - format refuses a device too small for the 16 MiB LUKS2 header plus 1 MiB of data;
#   - -V, per-subcommand help for `kms`, unknown options and missing values named by kmscrypt
#     (not glibc's getopt messages), `revoke --all` with nothing open says so, a label that cannot
#     be a mapping name says which name unlock will use.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
hdr_sum() { head -c 16777216 "$1" | sha256sum | cut -d' ' -f1; }

# on_tty ANSWER CMD ARGS...: run CMD on a pseudo-terminal (stdin, stdout and stderr), type ANSWER
# and Enter once it asks "Are you sure?"; exit code and the whole transcript in $OUT.
on_tty() {
	local want=$1 desc=$2 answer=$3
	shift 4
	local rc=0
	OUT=$(/usr/bin/python3 - "$answer" "$@" <<'EOF'
import os, pty, sys, time
answer = sys.argv[1].encode() + b"\n"
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out, asked, deadline = b"", False, time.time() + 60
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not asked and b"Are you sure? (Type 'yes' in capital letters): " in out:
        os.write(fd, answer)
        asked = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
EOF
	) || rc=$?
	if [ "$rc" = "$want" ]; then
		pass "$desc (exit $rc)"
	else
		failed "$desc: expected exit $want, got $rc; output: $OUT"
	fi
}

expect_rc 0 "kms create" -- "$K" kms create lab --provider local --key-file lab.key --generate

# ---- format --force over a signature asks first
truncate -s 40M fs.img
mkfs.ext4 -q -F fs.img
sum=$(hdr_sum fs.img)
expect_rc 2 "format --force without a terminal and without -q is refused" -- \
	"$K" format fs.img --kms lab --force --no-recovery-key </dev/null
expect_out "stdin is not a terminal" "the refusal says there is no terminal"
expect_out "-q (--batch-mode)" "the refusal says how to confirm from a script"
expect_eq "$(hdr_sum fs.img)" "$sum" "the ext4 image is untouched after the refusal"
on_tty 1 "format --force answered 'yes' (lower case) on a terminal" yes -- \
	"$K" format fs.img --kms lab --force --no-recovery-key
expect_out "This will overwrite ext4" "the question names what is overwritten"
expect_out "Are you sure? (Type 'yes' in capital letters):" "cryptsetup's question"
expect_out "not confirmed; nothing was changed" "a wrong answer says nothing changed"
expect_eq "$(hdr_sum fs.img)" "$sum" "the ext4 image is untouched after 'yes'"
on_tty 0 "format --force answered YES on a terminal" YES -- \
	"$K" format fs.img --kms lab --force --no-recovery-key
expect_eq "$(blkid -p -o value -s TYPE fs.img)" crypto_LUKS "the image is LUKS after YES"
mkfs.ext4 -q -F fs.img
expect_rc 0 "-q answers yes for format --force" -- \
	"$K" -q format fs.img --kms lab --force --no-recovery-key </dev/null
expect_eq "$(blkid -p -o value -s TYPE fs.img)" crypto_LUKS "the image is LUKS after -q"
mkfs.ext4 -q -F fs.img
expect_rc 0 "--batch-mode answers yes for format --force" -- \
	"$K" --batch-mode format fs.img --kms lab --force --no-recovery-key </dev/null
truncate -s 40M blank.img
expect_rc 0 "format --force of a blank device asks nothing" -- \
	"$K" format blank.img --kms lab --force --no-recovery-key </dev/null

# ---- unbind asks first (it removes the KMS way to the data)
truncate -s 40M p.img
printf 'correct horse' >pass.txt
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file pass.txt p.img
expect_rc 0 "bind" -- "$K" bind p.img --kms lab --key-file pass.txt
sum=$(hdr_sum p.img)
expect_rc 2 "unbind without a terminal and without -q is refused" -- "$K" unbind p.img </dev/null
expect_out "stdin is not a terminal" "the unbind refusal says there is no terminal"
expect_eq "$(hdr_sum p.img)" "$sum" "header unchanged after the refused unbind"
on_tty 1 "unbind answered 'no' on a terminal" no -- "$K" unbind p.img
expect_out "1 other keyslot" "the question says how many keyslots remain"
expect_eq "$(hdr_sum p.img)" "$sum" "header unchanged after 'no'"
on_tty 0 "unbind answered YES on a terminal" YES -- "$K" unbind p.img
expect_rc 6 "no kmscrypt token after YES" -- "$K" check p.img
expect_rc 0 "bind again" -- "$K" bind p.img --kms lab --key-file pass.txt
expect_rc 0 "-q answers yes for unbind" -- "$K" -q unbind p.img </dev/null
expect_rc 6 "no kmscrypt token after -q unbind" -- "$K" check p.img
# the only keyslot: refused before any question
truncate -s 40M only.img
expect_rc 0 "format without a recovery key" -- "$K" format only.img --kms lab --no-recovery-key
on_tty 5 "unbind of the only keyslot is refused without a question" YES -- "$K" unbind only.img
expect_not_out "Are you sure" "no question for a refused unbind"

# ---- too small for a LUKS2 header plus data
truncate -s 17M small.img
truncate -s -1 small.img
expect_rc 5 "format refuses 17 MiB - 1 byte" -- "$K" format small.img --kms lab --no-recovery-key
expect_out "too small" "the refusal says the device is too small"
expect_out "17 MiB" "the refusal names the minimum"
expect_eq "$(tr -d '\0' <small.img | wc -c)" 0 "the small image is untouched"
expect_eq "$(stat -c %s small.img)" 17825791 "the small image keeps its size"
truncate -s 17M just.img
expect_rc 0 "format accepts 17 MiB" -- "$K" format just.img --kms lab --no-recovery-key
expect_rc 0 "and the result checks" -- "$K" check just.img

# ---- -V, help per kms subcommand
expect_rc 0 "-V" -- "$K" -V
expect_out "kmscrypt " "-V prints the version"
v=$OUT
expect_rc 0 "--version" -- "$K" --version
expect_eq "$OUT" "$v" "-V and --version print the same"
expect_rc 0 "kms create --help" -- "$K" kms create --help
expect_out "Usage: kmscrypt kms create NAME --provider" "kms create --help shows create's usage"
expect_out "--generate" "kms create --help lists the local provider's options"
expect_out "Provider aws" "kms create --help lists the remote providers' options"
expect_not_out "kmscrypt kms delete" "kms create --help is not the whole kms help"
for sub in list show edit delete check; do
	expect_rc 0 "kms $sub --help" -- "$K" kms "$sub" --help
	expect_out "Usage: kmscrypt kms $sub" "kms $sub --help shows its usage"
	expect_not_out "kmscrypt kms create NAME" "kms $sub --help is not the whole kms help"
done
expect_rc 0 "kms --help still shows every subcommand" -- "$K" kms --help
expect_out "kmscrypt kms delete NAME" "kms --help lists delete"
expect_rc 0 "format --help" -- "$K" format --help
expect_out "--no-recovery-key" "format --help documents --no-recovery-key"
expect_rc 0 "--help" -- "$K" --help
expect_out "-q, --batch-mode" "the overview documents -q as --batch-mode"
expect_out "-V, --version" "the overview documents -V"

# ---- unknown options and missing values are named, by kmscrypt
for cmd in "format x.img --kms lab" "bind x.img --kms lab --key-file k" "unbind x.img" \
	"check x.img" "unlock x.img" "lock x" "revoke x" "restore x" "status" "kms list" \
	"kms show lab" "kms delete lab" "kms check lab"; do
	# shellcheck disable=SC2086  # split on purpose
	expect_rc 2 "$cmd --frob" -- "$K" $cmd --frob
	expect_out "nknown option '--frob'" "$cmd: the unknown option is named"
	expect_not_out "unrecognized option" "$cmd: no getopt message from glibc"
done
expect_rc 2 "format --frob=1" -- "$K" format x.img --kms lab --frob=1
expect_out "nknown option '--frob'" "an unknown --opt=value is named without its value"
expect_rc 2 "kms create --frob" -- "$K" kms create x --provider local --key-file k --frob
expect_out "nknown option '--frob'" "kms create: the unknown option is named"
expect_rc 2 "format --kms without its value" -- "$K" format x.img --kms
expect_out "Option '--kms' of 'format' needs a value" "the option lacking a value is named"
expect_not_out "requires an argument" "no getopt message from glibc for a missing value"
expect_rc 2 "unlock --name without its value" -- "$K" unlock x.img --name
expect_out "Option '--name' of 'unlock' needs a value" "unlock names the option lacking a value"
expect_rc 2 "kms edit --description without its value" -- "$K" kms edit lab --description
expect_out "'--description' needs a value" "kms edit names the option lacking a value"
expect_rc 2 "lock --name (an option of unlock only)" -- "$K" lock x --name y
expect_out "Option '--name' does not apply to 'lock'" "an option of another command is named"

# ---- revoke --all with nothing open; a label that cannot be a mapping name
if [ -e /dev/mapper/control ]; then
	expect_rc 0 "revoke --all with nothing open" -- "$K" revoke --all
	expect_out "No open kmscrypt volumes to revoke." "revoke --all says there was nothing"
else
	echo "skip - no device-mapper here: revoke --all is covered in the VM"
fi
truncate -s 40M lab.img
expect_rc 0 "format with a label that is no mapping name" -- \
	"$K" format lab.img --kms lab --label "my data" --no-recovery-key
uuid=$(cryptsetup luksUUID lab.img)
expect_out "will open '$tmp/lab.img' as /dev/mapper/kmscrypt-${uuid:0:8}" \
	"format names the mapping name chosen instead of the label"
truncate -s 40M lab2.img
expect_rc 0 "format with a usable label" -- "$K" format lab2.img --kms lab --label data \
	--no-recovery-key
expect_not_out "cannot be a device-mapper name" "no notice for a usable label"

finish
