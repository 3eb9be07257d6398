#!/bin/bash
# /etc/crypttab at boot, with systemd as PID 1 (scripts/vm/run.sh --systemd): systemd-cryptsetup
# opens a kmscrypt volume through the token plugin (libcryptsetup-token-kmscrypt.so, the agent's own
# provider code) and fstab mounts it; a second crypttab volume whose KMS denies access ("nofail")
# stays locked without holding up the boot.
#
# Run on the host (ctest registers tests/vm/boot_*.sh so): bash tests/vm/boot_crypttab.sh
# The same file is the guest's --setup (`setup`) and test command (`check`).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary}"
KMSCRYPT=$(realpath -- "$KMSCRYPT")
export KMSCRYPT
build=$(realpath -- "${KMSCRYPT_BUILD_DIR:-$(dirname "$KMSCRYPT")}")
export KMSCRYPT_BUILD_DIR=$build
P=$build/vm/boot/boot_crypttab
export KMSCRYPT_BOOT_DIR=$P
plugin=$build/libcryptsetup-token-kmscrypt.so

# ---- in the guest, before switch_root
setup() {
	set -e
	local l dev kms uuid
	modprobe ext4
	install -m 0755 "$KMSCRYPT" /usr/local/sbin/kmscrypt
	# libcryptsetup only looks in its own directory (this overlay is thrown away at power-off)
	install -m 0644 "$plugin" "$(pkg-config --variable=libdir libcryptsetup)/cryptsetup/"
	mkdir -p /etc/kmscrypt/keys
	kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/keys/lab.key --generate
	kmscrypt kms create gone --provider local --key-file /etc/kmscrypt/keys/gone.key --generate
	for l in ct ctd; do
		truncate -s 32M "$P/$l.img"
		dev=$(losetup --find --show "$P/$l.img")
		kms=lab
		[[ $l == ctd ]] && kms=gone
		kmscrypt format "$dev" --kms "$kms" --label "$l"
		kmscrypt unlock "$dev"
		mkfs.ext4 -q "/dev/mapper/$l"
		mkdir -p /mnt/tmp "/mnt/$l"
		mount "/dev/mapper/$l" /mnt/tmp
		echo "data of $l" >/mnt/tmp/marker
		umount /mnt/tmp
		kmscrypt lock "$l"
		uuid=$(cryptsetup luksUUID "$dev")
		echo "$l UUID=$uuid none luks,headless=true,nofail" >>/etc/crypttab
		echo "/dev/mapper/$l /mnt/$l ext4 nofail,x-systemd.device-timeout=60 0 0" >>/etc/fstab
		echo "$l $dev $uuid" >>"$P/vols"
	done
	rm /etc/kmscrypt/keys/gone.key # KMS "gone" now denies access
}

# ---- in the guest, after multi-user.target
. "$src/tests/lib/assert.sh"
check() {
	local l dev uuid table
	expect_eq "$(systemctl is-active multi-user.target)" active "multi-user.target reached"
	expect_eq "$(journalctl -b --no-pager | grep -ci 'ordering cycle')" 0 \
		"no ordering cycle in the journal"
	read -r l dev uuid < <(grep '^ct ' "$P/vols")
	expect_eq "$(systemctl is-active systemd-cryptsetup@ct.service)" active \
		"systemd-cryptsetup@ct.service opened the volume at boot"
	table=$(dmsetup table --showkeys ct 2>&1)
	expect_eq "$(grep -c ":64:logon:cryptsetup:$uuid-d0" <<<"$table")" 1 \
		"the dm table names the logon key ($table)"
	expect_eq "$(findmnt -n -o SOURCE /mnt/ct)" /dev/mapper/ct "/mnt/ct mounted through fstab"
	expect_eq "$(cat /mnt/ct/marker 2>&1)" "data of ct" "data intact"
	expect_eq "$(grep -c '"action":"token-unwrap".*"result":"ok"' /var/lib/kmscrypt/audit.log)" 1 \
		"the plugin's unwrap is in the audit log"
	expect_eq "$(kmscrypt status ct --json | jq -r '.volumes[0].state')" active \
		"kmscrypt status sees the crypttab volume"
	expect_eq "$(dmsetup info ctd 2>/dev/null | wc -l)" 0 "ctd stays locked (its KMS denies)"
	expect_eq "$(findmnt -n -o SOURCE /mnt/ctd)" "" "ctd not mounted"
	expect_eq "$(journalctl -b --no-pager -o cat -u systemd-cryptsetup@ctd.service | grep -c "gone.key' cannot be read")" 1 \
		"the journal says why ctd stayed locked"
	finish
}

drive() {
	rm -rf "$P"
	mkdir -p "$P"
	[[ -f $plugin ]] || { echo "FAIL: $plugin not built" >&2; return 1; }
	bash "$src/scripts/vm/run.sh" --build-dir "$build" --systemd --timeout 400 \
		--boot-deadline 240 --setup "bash $here/boot_crypttab.sh setup" \
		-- bash "$here/boot_crypttab.sh" check
}

case ${1:-} in
setup) setup ;;
check) check ;;
"") drive ;;
*) echo "usage: $0 [setup|check]" >&2; exit 2 ;;
esac
