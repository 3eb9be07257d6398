#!/bin/bash
# kmscrypt-generator at boot, with systemd as PID 1 (scripts/vm/run.sh --systemd): one
# kmscrypt-unlock@<uuid>.service per volume, so a denied volume is one failed unit.
#   - three volumes on loop devices: vola (KMS "lab") listed in /etc/kmscrypt/volumes as
#     "UUID=<uuid> alpha", volc (KMS "lab") listed with noauto, volb (KMS "labb") known only from
#     the state dir (kmscrypt-unlock.service is enabled, so the generator takes over its records);
#   - the key file of "labb" is moved away before the boot: its KMS denies access.
# After the boot: `systemctl --failed` lists exactly volb's unit (exit 3, the journal says why);
# vola is open as /dev/mapper/alpha and its unit active; volc's unit exists but did not run;
# kmscrypt-unlock.service was skipped; multi-user.target was reached; no ordering cycle; the
# generator's warning about an unusable line of the list is in the journal.  Stopping
# vola's unit closes the mapping (ExecStop=, `lock UUID=`).
#
# Run on the host (ctest registers tests/vm/boot_*.sh so): bash tests/vm/boot_generator.sh
# The same file is the guest's --setup (`setup`) and test command (`check`).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary}"
KMSCRYPT=$(realpath -- "$KMSCRYPT")
export KMSCRYPT
build=$(realpath -- "${KMSCRYPT_BUILD_DIR:-$(dirname "$KMSCRYPT")}")
export KMSCRYPT_BUILD_DIR=$build
GEN=$build/kmscrypt-generator
P=$build/vm/boot/boot_generator

# ---- in the guest, before switch_root (no udev)
setup() {
	set -e
	local l dev kms
	# installed as `cmake --install` does (prefix /usr/local): the generator's Wants= symlinks
	# point at /usr/local/lib/systemd/system/kmscrypt-unlock@.service
	install -m 0755 "$KMSCRYPT" /usr/local/sbin/kmscrypt
	install -D -m 0755 "$GEN" /usr/local/lib/systemd/system-generators/kmscrypt-generator
	install -D -m 0644 "$src/unit/kmscrypt-unlock@.service" "$src/unit/kmscrypt-unlock.service" \
		-t /usr/local/lib/systemd/system/
	systemctl enable kmscrypt-unlock.service
	mkdir -p /etc/kmscrypt/keys
	kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/keys/lab.key --generate
	kmscrypt kms create labb --provider local --key-file /etc/kmscrypt/keys/labb.key --generate
	: >/etc/kmscrypt/volumes
	for l in vola volb volc; do
		truncate -s 24M "$P/$l.img"
		dev=$(losetup --find --show "$P/$l.img")
		kms=lab
		[[ $l == volb ]] && kms=labb
		kmscrypt -q format "$dev" --kms "$kms" --label "$l" --no-recovery-key
		cryptsetup luksUUID "$dev" >"$P/$l.uuid"
	done
	printf '# the test: vola as "alpha", volc not at boot; volb from the state dir\n' >>/etc/kmscrypt/volumes
	printf 'UUID=%s alpha\nUUID=%s - noauto\n' "$(<"$P/vola.uuid")" "$(<"$P/volc.uuid")" \
		>>/etc/kmscrypt/volumes
	printf '/dev/x%%i\n' >>/etc/kmscrypt/volumes # ignored, with a warning in the journal
	mv /etc/kmscrypt/keys/labb.key /etc/kmscrypt/labb.key.away # KMS "labb" now denies access
}

# ---- in the guest, after multi-user.target
. "$src/tests/lib/assert.sh"
dm_state() { dmsetup info "$1" 2>/dev/null | sed -n 's/^State: *//p'; } # ACTIVE, SUSPENDED or ''
prop() { systemctl show -P "$1" "$2"; }
check() {
	local ua ub uc i
	ua=$(<"$P/vola.uuid") ub=$(<"$P/volb.uuid") uc=$(<"$P/volc.uuid")
	# The volume units are wanted by cryptsetup.target, which multi-user.target is not after.
	for i in $(seq 1 90); do
		systemctl list-jobs --no-legend --plain 2>/dev/null | grep -q 'kmscrypt-unlock@' || break
		sleep 1
	done
	expect_eq "$(systemctl is-active multi-user.target)" active "multi-user.target reached"
	expect_eq "$(journalctl -b --no-pager | grep -ci 'ordering cycle')" 0 "no ordering cycle in the journal"
	echo "# systemctl --failed:"
	systemctl --failed --no-legend --plain --no-pager | sed 's/^/#   /'
	expect_eq "$(systemctl --failed --no-legend --plain --no-pager | awk '{print $1}')" \
		"kmscrypt-unlock@$ub.service" "systemctl --failed lists exactly the denied volume's unit"
	expect_eq "$(prop ExecMainStatus "kmscrypt-unlock@$ub.service")" 3 "... which exited 3 (denied)"
	expect_eq "$(journalctl -b -u "kmscrypt-unlock@$ub.service" -o cat --no-pager |
		grep -Ec "Cannot unlock '.*' \(UUID $ub\): KMS 'labb' \(local\) denied access")" 1 \
		"its journal says KMS 'labb' denied access"
	expect_eq "$(dm_state volb)" "" "volb stays locked"
	expect_eq "$(prop ActiveState "kmscrypt-unlock@$ua.service")" active "vola's unit is active"
	expect_eq "$(dm_state alpha)" ACTIVE "vola is open as /dev/mapper/alpha (the list's name)"
	expect_eq "$(prop LoadState "kmscrypt-unlock@$uc.service")/$(prop ActiveState "kmscrypt-unlock@$uc.service")" \
		loaded/inactive "noauto: volc's unit exists and did not run"
	expect_eq "$(dm_state volc)" "" "volc stays locked"
	expect_eq "$(prop ConditionResult kmscrypt-unlock.service)/$(prop ActiveState kmscrypt-unlock.service)" \
		no/inactive "the all-in-one kmscrypt-unlock.service was skipped"
	expect_eq "$(ls /run/systemd/generator/cryptsetup.target.wants/ | sort | tr '\n' ' ')" \
		"$(printf 'kmscrypt-unlock@%s.service\n' "$ua" "$ub" | sort | tr '\n' ' ')" \
		"cryptsetup.target wants vola's and volb's units (local provider), not volc's"
	expect_eq "$(journalctl -b --no-pager -o cat -t kmscrypt-generator | grep -c "^/etc/kmscrypt/volumes:4: '/dev/x%i' is neither")" 1 \
		"the generator's warning about the unusable line is in the journal (kernel log)"
	journalctl -b --no-pager -o cat -u "kmscrypt-unlock@*" | sed 's/^/# journal: /'
	expect_rc 0 "systemctl stop vola's unit" -- timeout 60 systemctl stop "kmscrypt-unlock@$ua.service"
	expect_eq "$(dm_state alpha)" "" "ExecStop= (lock UUID=) closed /dev/mapper/alpha"
	finish
}

# ---- on the host: one boot
drive() {
	[[ -x $GEN ]] || { echo "FAIL: no generator at $GEN" >&2; return 1; }
	rm -rf "$P"
	mkdir -p "$P"
	bash "$src/scripts/vm/run.sh" --build-dir "$build" --systemd --timeout 300 \
		--boot-deadline 150 --setup "bash $here/boot_generator.sh setup" \
		-- bash "$here/boot_generator.sh" check
}

case ${1:-} in
setup) setup ;;
check) check ;;
"") drive ;;
*) echo "usage: $0 [setup|check]" >&2; exit 2 ;;
esac
