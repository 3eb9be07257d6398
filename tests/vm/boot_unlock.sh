#!/bin/bash
# kmscrypt-unlock.service at boot, with systemd as PID 1 (scripts/vm/run.sh --systemd), over two
# boots that share disk images and a state dir in the build dir (a simulated reboot):
#   boot 1: three volumes (two KMS configurations) are unlocked by the unit and mounted through
#           fstab; the unit's sandbox is what unit/kmscrypt-unlock.service says (a probe runs as
#           ExecStartPost= inside it); stopping the unit unmounts and closes them (ExecStop=);
#           then one volume is revoked.  Nothing the unit uses lives in the checkout (its sandbox
#           hides /tmp and /home, where a checkout may be): binary, probe and keys are installed.
#   between: the key file of the second KMS configuration is moved away (the KMS denies access).
#   boot 2: the revoked volume stays locked, the denied one stays locked and the journal says
#           why, the third is unlocked and mounted, and the boot reaches multi-user.target.
# Every boot: no "ordering cycle" in the journal.
#
# Run on the host (ctest registers tests/vm/boot_*.sh so): bash tests/vm/boot_unlock.sh
# The same file is the guest's --setup (`setup N`) and test command (`check N`).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary}"
KMSCRYPT=$(realpath -- "$KMSCRYPT")
export KMSCRYPT
build=${KMSCRYPT_BUILD_DIR:-$(dirname "$KMSCRYPT")}
build=$(realpath -- "$build")
export KMSCRYPT_BUILD_DIR=$build
P=$build/vm/boot/boot_unlock   # persisted across the boots: images, /etc/kmscrypt, state dir
export KMSCRYPT_BOOT_DIR=$P
vols=(vola volb volc)  # labels = mapping names; vola, volb: KMS "lab"; volc: KMS "labc"

# ---- in the guest, before switch_root (no udev): the disks and the system configuration
setup() {
	set -e
	local boot=$1 l img dev
	modprobe ext4 # no module autoload before switch_root
	for l in "${vols[@]}"; do
		img=$P/$l.img
		[[ $boot == 1 ]] && truncate -s 32M "$img"
		dev=$(losetup --find --show "$img")
		echo "$l $dev" >>"$P/loops.$boot"
	done
	# installed as `cmake --install` does (prefix /usr/local)
	install -m 0755 "$KMSCRYPT" /usr/local/sbin/kmscrypt
	install -m 0644 "$src/unit/kmscrypt-unlock.service" /etc/systemd/system/
	systemctl enable kmscrypt-unlock.service
	# The probe: runs inside the unit's sandbox after `unlock --all`, logs what it sees.  Installed
	# where a real installation keeps programs: PrivateTmp= and ProtectHome= hide a checkout under
	# /tmp or /home from the unit.
	install -d /usr/local/libexec/kmscrypt-test
	{ echo '#!/bin/bash'; declare -f probe; echo probe; } >/usr/local/libexec/kmscrypt-test/probe
	chmod 0755 /usr/local/libexec/kmscrypt-test/probe
	mkdir -p /etc/systemd/system/kmscrypt-unlock.service.d
	printf '[Service]\nExecStartPost=-/usr/local/libexec/kmscrypt-test/probe\n' \
		>/etc/systemd/system/kmscrypt-unlock.service.d/probe.conf
	if [[ $boot == 1 ]]; then
		mkdir -p /etc/kmscrypt/keys
		kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/keys/lab.key --generate
		kmscrypt kms create labc --provider local --key-file /etc/kmscrypt/keys/labc.key --generate
		while read -r l dev; do
			local kms=lab
			[[ $l == volc ]] && kms=labc
			kmscrypt format "$dev" --kms "$kms" --label "$l"
			kmscrypt unlock "$dev"
			mkfs.ext4 -q -L "fs-$l" "/dev/mapper/$l"
			mkdir -p /mnt/tmp && mount "/dev/mapper/$l" /mnt/tmp
			echo "data of $l" >/mnt/tmp/marker
			umount /mnt/tmp
		done <"$P/loops.1"
		kmscrypt lock --all
		cp -a /etc/kmscrypt "$P/etc"
	else
		rm -rf /etc/kmscrypt /var/lib/kmscrypt
		cp -a "$P/etc" /etc/kmscrypt
		cp -a "$P/state" /var/lib/kmscrypt
	fi
	for l in "${vols[@]}"; do
		mkdir -p "/mnt/$l"
		echo "/dev/mapper/$l /mnt/$l ext4 nofail,x-systemd.requires=kmscrypt-unlock.service,x-systemd.device-timeout=300 0 0" >>/etc/fstab
	done
}

# ---- in the unit's sandbox (ExecStartPost=): what the hardening lets through
probe() {
	local s
	s=$(grep -E '^(NoNewPrivs|CapBnd|CapEff)' /proc/self/status | tr '\n\t' '  ')
	echo "probe: $s"
	echo "probe: core-limit=$(ulimit -c)"
	touch /etc/kmscrypt-probe 2>/dev/null && echo "probe: etc-writable" || echo "probe: etc-readonly"
	touch /var/lib/kmscrypt/probe 2>/dev/null && rm -f /var/lib/kmscrypt/probe &&
		echo "probe: state-writable" || echo "probe: state-readonly"
	ls /root >/dev/null 2>&1 && [[ -n $(ls -A /root 2>/dev/null) || -w /root ]] &&
		echo "probe: home-visible" || echo "probe: home-hidden"
	[[ -e /tmp/kmscrypt-host-tmp-marker ]] && echo "probe: tmp-shared" || echo "probe: tmp-private"
	python3 -c 'import mmap; mmap.mmap(-1, 4096, prot=7)' 2>/dev/null &&
		echo "probe: wx-allowed" || echo "probe: wx-denied"
	python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)' 2>/dev/null &&
		echo "probe: af-packet-allowed" || echo "probe: af-packet-denied"
	python3 -c 'import socket; socket.socket(socket.AF_INET6, socket.SOCK_STREAM)' 2>/dev/null &&
		echo "probe: af-inet6-allowed" || echo "probe: af-inet6-denied"
}

# ---- in the guest, after multi-user.target
. "$src/tests/lib/assert.sh"
unit_prop() { systemctl show -P "$1" kmscrypt-unlock.service; }
common_checks() {
	expect_eq "$(systemctl is-active multi-user.target)" active "multi-user.target reached"
	expect_eq "$(journalctl -b --no-pager | grep -ci 'ordering cycle')" 0 \
		"no ordering cycle in the journal"
	expect_eq "$(unit_prop ActiveState)" active "kmscrypt-unlock.service is active"
	expect_eq "$(unit_prop Result)" success "kmscrypt-unlock.service result"
	expect_eq "$({ systemctl cat kmscrypt-unlock.service; cat /etc/kmscrypt/kms/*.conf; } |
		grep -cF -e "$src" -e "$build")" 0 \
		"the unit, its drop-ins and the KMS configurations name nothing in the checkout or build dir"
	journalctl -b --no-pager -o cat -u kmscrypt-unlock.service >"$P/journal.$1"
	sed 's/^/# journal: /' "$P/journal.$1"
}
dm_state() { dmsetup info "$1" 2>/dev/null | sed -n 's/^State: *//p'; } # ACTIVE, SUSPENDED or ''
check_mounted() { # LABEL
	expect_eq "$(findmnt -n -o SOURCE "/mnt/$1")" "/dev/mapper/$1" "/mnt/$1 is mounted from fstab"
	expect_eq "$(cat "/mnt/$1/marker" 2>&1)" "data of $1" "data of $1 intact"
}
check() {
	local boot=$1 l dev
	common_checks "$boot"
	local J=$P/journal.$boot
	if [[ $boot == 1 ]]; then
		: >/tmp/kmscrypt-host-tmp-marker
		expect_eq "$(unit_prop ExecMainStatus)" 0 "unlock --all exit status"
		while read -r l dev; do
			expect_eq "$(dm_state "$l")" ACTIVE "/dev/mapper/$l active (not suspended)"
			expect_eq "$(grep -c "^Unlocked '$dev' (UUID .*) as /dev/mapper/$l through KMS" "$J")" 1 \
				"one journal line says $l was unlocked"
			check_mounted "$l"
		done <"$P/loops.1"
		# the sandbox (ExecStartPost probe, same execution environment as ExecStart)
		expect_eq "$(grep -c '^probe: .*NoNewPrivs: 1' "$J")" 1 "NoNewPrivileges=yes applied"
		expect_eq "$(grep -o 'CapBnd: [0-9a-f]*' "$J")" "CapBnd: 0000000000204000" \
			"CapabilityBoundingSet = CAP_SYS_ADMIN (21) + CAP_IPC_LOCK (14)"
		for w in core-limit=0 etc-readonly state-writable home-hidden tmp-private wx-denied \
			af-packet-denied af-inet6-allowed; do
			expect_eq "$(grep -c "^probe: $w\$" "$J")" 1 "sandbox: $w"
		done
		# ExecStop=: stopping the unit unmounts (the mounts require it) and closes every volume
		expect_rc 0 "systemctl stop kmscrypt-unlock.service" -- \
			timeout 60 systemctl stop kmscrypt-unlock.service
		for l in "${vols[@]}"; do
			expect_eq "$(findmnt -n -o SOURCE "/mnt/$l")" "" "/mnt/$l unmounted before ExecStop"
			expect_eq "$(dm_state "$l")" "" "/dev/mapper/$l closed by ExecStop (lock --all)"
		done
		expect_rc 0 "systemctl start kmscrypt-unlock.service again" -- \
			timeout 60 systemctl start kmscrypt-unlock.service
		expect_eq "$(dm_state vola)" ACTIVE "vola unlocked again"
		# revoke vola: suspended, key wiped, marked revoked in the state dir
		expect_rc 0 "kmscrypt revoke vola" -- kmscrypt revoke vola --reason "boot test"
		expect_eq "$(dm_state vola)" SUSPENDED "vola suspended"
		cp -a /var/lib/kmscrypt "$P/state"
	else
		expect_eq "$(unit_prop ExecMainStatus)" 3 \
			"unlock --all exits 3 (denied) for volc, the unit still succeeds"
		expect_eq "$(dm_state vola)" "" "revoked vola stays locked across the reboot"
		expect_eq "$(grep -c "^Left '.*' (UUID .*) locked: its LUKS2 header is marked revoked since .* ('boot test')" "$J")" 1 \
			"the journal says vola stays locked because it is revoked"
		expect_eq "$(dm_state volc)" "" "volc stays locked (KMS denies access)"
		expect_eq "$(grep -Ec "^(<3>)?Cannot unlock '.*' \(UUID .*\): KMS 'labc' \(local\) denied access" "$J")" 1 \
			"one journal line says volc's KMS denied access"
		expect_eq "$(journalctl -b -u kmscrypt-unlock.service -p err -o cat --no-pager | grep -c "KMS 'labc'")" 1 \
			"the denial is logged at priority err"
		expect_eq "$(dm_state volb)" ACTIVE "volb unlocked at boot"
		check_mounted volb
		expect_eq "$(findmnt -n -o SOURCE /mnt/vola)$(findmnt -n -o SOURCE /mnt/volc)" "" \
			"the locked volumes are not mounted"
	fi
	finish
}

# ---- on the host: two boots
drive() {
	local rc=0 b
	rm -rf "$P"
	mkdir -p "$P"
	for b in 1 2; do
		if [[ $b == 2 ]]; then
			[[ -d $P/state && -s $P/etc/keys/labc.key ]] ||
				{ echo "FAIL: boot 1 left no state dir or key" >&2; return 1; }
			mv "$P/etc/keys/labc.key" "$P/labc.key.away" # KMS "labc" now denies access
		fi
		echo "=== boot $b"
		bash "$src/scripts/vm/run.sh" --build-dir "$build" --systemd --timeout 400 \
			--boot-deadline 240 --setup "bash $here/boot_unlock.sh setup $b" \
			-- bash "$here/boot_unlock.sh" check "$b" || rc=$?
		((rc == 0)) || { echo "FAIL: boot $b (exit $rc)" >&2; return "$rc"; }
	done
	echo "boot_unlock: both boots passed"
}

case ${1:-} in
setup) setup "$2" ;;
check) check "$2" ;;
"") drive ;;
*) echo "usage: $0 [setup N|check N]" >&2; exit 2 ;;
esac
