#!/bin/bash
# shellcheck disable=SC2034  # OUT is read by expect_out (tests/lib/assert.sh)
# scripts/cloud-init on the host (no device-mapper needed):
#   - every example cloud-config passes cloud-init's own schema check, and a broken one does not;
#   - the examples call kmscrypt-provision with options it knows, and the KMS options after "--" are
#     options of `kmscrypt kms create` for that provider;
#   - kmscrypt-provision: shellcheck-clean, usage errors exit 2, and it never formats a device that
#     is not blank (an image file with ext4 behind a loop device, when loop devices are available).
# The full first-boot flow under real cloud-init runs in the VM: tests/vm/test_cloud_init.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
src=$(cd "$here/../.." && pwd)
dir=$src/scripts/cloud-init
hook=$dir/kmscrypt-provision
tmp=$(mktemp -d)
loopdev=
cleanup() {
	[ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state

command -v cloud-init >/dev/null || { echo "FATAL: cloud-init not installed (scripts/install-deps.sh)" >&2; exit 1; }

# ---- schema
examples=("$dir"/*.yaml)
expect_eq "$((${#examples[@]} >= 2))" 1 "at least two example cloud-configs"
for f in "${examples[@]}"; do
	expect_rc 0 "cloud-init schema: ${f##*/}" -- cloud-init schema --config-file "$f"
	expect_out "Valid cloud-config" "${f##*/} is valid cloud-config"
	expect_eq "$(head -n 1 "$f")" "#cloud-config" "${f##*/} starts with #cloud-config"
done
sed 's/^runcmd:$/runcmd: 42\nbogus_runcmd:/' "$dir/cloud-config.example.yaml" >"$tmp/broken.yaml"
expect_rc 1 "cloud-init schema rejects runcmd: 42" -- cloud-init schema --config-file "$tmp/broken.yaml"

# ---- what the examples call: known hook options, known `kms create` options for the provider
for f in "${examples[@]}"; do
	cmd=$(/usr/bin/python3 - "$f" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cmds = [c for c in cfg.get("runcmd", []) if isinstance(c, list) and "kmscrypt-provision" in c[0]]
assert len(cmds) == 1, "exactly one kmscrypt-provision command"
print("\n".join(cmds[0]))
EOF
	)
	expect_eq "$?" 0 "${f##*/}: one kmscrypt-provision runcmd entry"
	mapfile -t argv <<<"$cmd"
	hook_opts=() kms_opts=() after=0 provider=
	for ((i = 1; i < ${#argv[@]}; i++)); do
		a=${argv[i]}
		if [ "$a" = -- ]; then after=1; continue; fi
		[ "${a#--}" != "$a" ] || continue
		if ((after)); then
			kms_opts+=("$a")
			[ "$a" = --provider ] && provider=${argv[i + 1]}
		else
			hook_opts+=("$a")
		fi
	done
	usage=$("$hook" --help)
	for o in "${hook_opts[@]}"; do
		OUT=$usage
		expect_out "  $o " "${f##*/}: kmscrypt-provision knows $o"
	done
	expect_eq "${provider:+set}" set "${f##*/}: names a provider"
	help=$("$K" kms create --help 2>&1)
	section=$(awk -v p="$provider" '/^Provider / { on = ($2 == p) } on' <<<"$help")
	for o in "${kms_opts[@]}"; do
		[ "$o" = --provider ] && continue
		OUT=$section
		expect_out "  $o" "${f##*/}: 'kmscrypt kms create --provider $provider' knows $o"
	done
done

# ---- the hook itself
if command -v shellcheck >/dev/null; then
	expect_rc 0 "shellcheck kmscrypt-provision" -- shellcheck "$hook"
fi
expect_rc 0 "hook is executable" -- test -x "$hook"
expect_rc 2 "no arguments: usage error" -- "$hook"
expect_rc 2 "missing --mount" -- "$hook" --device /dev/null --kms x
expect_rc 2 "option without value" -- "$hook" --device /dev/null --kms x --mount
expect_rc 2 "relative mount point" -- "$hook" --device /dev/null --kms x --mount data
expect_rc 2 "unknown option" -- "$hook" --device /dev/null --kms x --mount /d --frobnicate
expect_rc 1 "device that never appears" -- env KMSCRYPT="$K" "$hook" --device "$tmp/nodev" \
	--kms x --mount /srv/x --wait 0 --fstab "$tmp/fstab" --no-recovery-key -- --provider local \
	--key-file "$tmp/x.key" --generate
expect_out "did not appear" "says the device did not appear"
expect_rc 1 "no configuration and no create args" -- env KMSCRYPT="$K" "$hook" \
	--device /dev/null --kms nosuch --mount /srv/x --wait 0 --no-recovery-key
expect_out "no KMS configuration 'nosuch'" "says the configuration is missing"

# A disk with a filesystem (an ext4 image behind a loop device) is refused and left untouched.
if [ "$(id -u)" = 0 ] && truncate -s 40M "$tmp/fs.img" && mkfs.ext4 -q -F "$tmp/fs.img" &&
	loopdev=$(losetup --find --show "$tmp/fs.img" 2>/dev/null); then
	sum=$(head -c 8M "$loopdev" | sha256sum)
	expect_rc 1 "hook refuses a disk with ext4" -- env KMSCRYPT="$K" "$hook" --device "$loopdev" \
		--kms lab --mount "$tmp/mnt/lab" --fstab "$tmp/fstab" --no-enable \
		--recovery-key-file "$tmp/escrow/lab.key" -- --provider local \
		--key-file "$tmp/lab.key" --generate
	expect_out "ext4" "the refusal names the filesystem"
	expect_eq "$(head -c 8M "$loopdev" | sha256sum)" "$sum" "the ext4 disk is unchanged"
	expect_rc 1 "no fstab written" -- test -s "$tmp/fstab"
	expect_rc 1 "no recovery key file left behind" -- test -e "$tmp/escrow/lab.key"
else
	echo "skip - no loop device here: the refusal is covered by tests/vm/test_cloud_init.sh"
fi

finish
