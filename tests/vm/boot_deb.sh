#!/bin/bash
# The Debian package at boot, with systemd as PID 1 (scripts/vm/run.sh --systemd): the .deb that
# tests/integration/test_deb.sh left in the build dir (ctest fixture "deb") is installed with dpkg
# in the guest root before switch_root, a volume is bound to a local KMS with the installed
# /usr/sbin/kmscrypt, and kmscrypt-unlock.service is enabled the way kmscrypt-provision does it;
# after boot the PACKAGED unit (its own file, no drop-in) has unlocked the volume with the packaged
# binary, and the journal has no ordering cycle.
# Run on the host (ctest registers tests/vm/boot_*.sh so): bash tests/vm/boot_deb.sh
# The same file is the guest's --setup (`setup`) and test command (`check`).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary}"
build=$(realpath -- "${KMSCRYPT_BUILD_DIR:-$(dirname "$KMSCRYPT")}")
export KMSCRYPT_BUILD_DIR=$build
P=$build/vm/boot/boot_deb
UNIT=kmscrypt-unlock.service

setup() {
	set -e
	local debs dev
	[[ $(findmnt -n -o FSTYPE /) == overlay ]] || { echo "setup: / is not the throw-away overlay" >&2; exit 1; }
	debs=("$build"/deb/kmscrypt_*.deb)
	[[ -f ${debs[0]} ]] || { echo "setup: no $build/deb/kmscrypt_*.deb (run integration/test_deb)" >&2; exit 1; }
	[[ ! -e /usr/sbin/kmscrypt && ! -e /usr/local/sbin/kmscrypt ]] ||
		{ echo "setup: a kmscrypt binary exists before the install" >&2; exit 1; }
	dpkg -i "${debs[0]}" </dev/null
	# This test boots the all-in-one unit: mask the packaged kmscrypt-generator, which would
	# replace it once it is enabled (the documented opt-out; tests/vm/boot_generator.sh boots the
	# generator).
	mkdir -p /etc/systemd/system-generators
	ln -sfn /dev/null /etc/systemd/system-generators/kmscrypt-generator
	truncate -s 32M "$P/vol.img"
	dev=$(losetup --find --show "$P/vol.img")
	echo "$dev" >"$P/loop"
	mkdir -p /etc/kmscrypt/keys
	/usr/sbin/kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/keys/lab.key --generate
	/usr/sbin/kmscrypt format "$dev" --kms lab --label dvol
	systemctl enable "$UNIT"
}

. "$src/tests/lib/assert.sh"
unit_prop() { systemctl show -P "$1" "$UNIT"; }
dm_state() { dmsetup info "$1" 2>/dev/null | sed -n 's/^State: *//p'; }
check() {
	local dev
	dev=$(<"$P/loop")
	expect_eq "$(systemctl is-active multi-user.target)" active "multi-user.target reached"
	expect_eq "$(journalctl -b --no-pager | grep -ci 'ordering cycle')" 0 "no ordering cycle in the journal"
	expect_eq "$(dpkg-query -W -f='${Status}' kmscrypt)" "install ok installed" "kmscrypt package installed"
	expect_eq "$(unit_prop FragmentPath | sed 's,^/usr/lib/,/lib/,')" "/lib/systemd/system/$UNIT" \
		"the unit is the packaged file"
	expect_eq "$(unit_prop DropInPaths)" "" "no drop-in"
	local exec
	exec=$(unit_prop ExecStart)
	# systemd looks a bare name up in its fixed search path when it starts the command; the setup
	# checked that no kmscrypt existed before dpkg -i.
	expect_eq "$(grep -c 'path=kmscrypt ; argv\[\]=kmscrypt unlock --all' <<<"$exec")" 1 \
		"ExecStart is the packaged command line ($exec)"
	expect_eq "$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v kmscrypt)" \
		/usr/sbin/kmscrypt "'kmscrypt' in systemd's search path is the packaged binary"
	expect_eq "$(unit_prop ActiveState)" active "$UNIT is active"
	expect_eq "$(unit_prop Result)" success "$UNIT result"
	expect_eq "$(unit_prop ExecMainStatus)" 0 "unlock --all exit status"
	expect_eq "$(dm_state dvol)" ACTIVE "/dev/mapper/dvol unlocked at boot"
	expect_eq "$(journalctl -b --no-pager -o cat -u "$UNIT" | grep -c "^Unlocked '$dev' (UUID .*) as /dev/mapper/dvol through KMS")" 1 \
		"one journal line says dvol was unlocked"
	journalctl -b --no-pager -o cat -u "$UNIT" | sed 's/^/# journal: /'
	finish
}

drive() {
	local rc=0
	rm -rf "$P"
	mkdir -p "$P"
	bash "$src/scripts/vm/run.sh" --build-dir "$build" --systemd --timeout 400 \
		--boot-deadline 240 --setup "bash $here/boot_deb.sh setup" \
		-- bash "$here/boot_deb.sh" check || rc=$?
	((rc == 0)) || { echo "FAIL: boot (exit $rc)" >&2; return "$rc"; }
	echo "boot_deb: passed"
}

case ${1:-} in
setup) setup ;;
check) check ;;
"") drive ;;
*) echo "usage: $0 [setup|check]" >&2; exit 2 ;;
esac
