#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# First-boot provisioning on a real kernel: scripts/cloud-init/kmscrypt-provision run directly and
# under real cloud-init (NoCloud seed, no systemd: the stages are run by hand in the VM's chroot).
# A blank disk is formatted, unlocked, given a filesystem, put in fstab and mounted; a second run, and
# a run after a simulated reboot (unmount + lock), leave the LUKS header, the filesystem and the
# data untouched; a disk carrying a filesystem or a partition table is never formatted.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_cloud_init.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

: "${KMSCRYPT_SOURCE_DIR:?KMSCRYPT_SOURCE_DIR must name the source dir (ctest sets it)}"
HOOK=$KMSCRYPT_SOURCE_DIR/scripts/cloud-init/kmscrypt-provision
[[ -x $HOOK ]] || { echo "FATAL: $HOOK is not executable" >&2; exit 1; }
[[ $(findmnt -n -o FSTYPE /) == overlay || ${KMSCRYPT_VM_TEST_NATIVE:-} == 1 ]] ||
	{ echo "FATAL: / is not the VM's throw-away overlay" >&2; exit 1; }
mkdir -p /run/cryptsetup
# The guest's initramfs loads only what the dm tests need; ext4 comes from the shared root's modules.
grep -qw ext4 /proc/filesystems || modprobe ext4 ||
	{ echo "FATAL: no ext4 in the guest kernel (modprobe ext4 failed)" >&2; exit 1; }

# The unit the hook enables: the real one when the tree has it, else a stand-in (enable only needs
# a unit file with an [Install] section).  Written into the throw-away overlay.
UNIT=kmscrypt-unlock.service
if [[ -f $KMSCRYPT_SOURCE_DIR/unit/$UNIT ]]; then
	install -m 0644 "$KMSCRYPT_SOURCE_DIR/unit/$UNIT" "/etc/systemd/system/$UNIT"
else
	printf '[Unit]\nDescription=stand-in\n[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n' \
		>"/etc/systemd/system/$UNIT"
fi

# What the hook prints when it changes a disk or a configuration (not its "not formatting it").
DID_FORMAT=": formatting '|: creating a [a-z0-9]+ filesystem|: creating KMS"

# hook ARGS...: run the hook with this case's dirs; exit code in T_RC, output in $T_OUT.
hook() {
	T_NCMD=$((T_NCMD + 1))
	T_OUT=$WORK/hook.$T_NCMD.out
	set +e
	KMSCRYPT=$KMSCRYPT KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE timeout 300 \
		"$HOOK" "$@" >"$T_OUT" 2>&1
	T_RC=$?
	set -e
}

# fingerprint DEV MAPPING: LUKS UUID, filesystem UUID and the test file's checksum, one line.
fingerprint() {
	local luks fs sum=none
	luks=$(cryptsetup luksUUID "$1" 2>/dev/null || echo none)
	fs=$(blkid -p -o value -s UUID "/dev/mapper/$2" 2>/dev/null || echo none)
	[[ -f $3/marker ]] && read -r sum _ < <(sha256sum "$3/marker")
	echo "luks=$luks fs=$fs marker=$sum"
}

# The hook by itself: provision, re-run, simulated reboot, re-run.
case_hook() {
	local dev mnt=$WORK/mnt/cidata fstab=$WORK/fstab before
	t_loop dev hook 64M
	: >"$fstab"
	hook --recovery-key-file "$WORK/escrow/k$T_NCMD.key" --device "$dev" --kms cik --mount "$mnt" --fstab "$fstab" -- \
		--provider local --key-file "$WORK/cik.key" --generate
	assert_eq 0 "$T_RC" "first run of the hook ($(tr '\n' ' ' <"$T_OUT"))"
	assert_match "$DID_FORMAT" "$(<"$T_OUT")" "first run formats the blank disk"
	assert_eq cidata "$(cryptsetup luksDump "$dev" | sed -n 's/^Label:[[:space:]]*//p')" \
		"LUKS label = mapping name"
	assert_eq ACTIVE "$(t_dm_state cidata)" "mapping cidata"
	assert_table_uses_keyring cidata
	assert_eq ext4 "$(blkid -p -o value -s TYPE /dev/mapper/cidata)" "ext4 on the volume"
	findmnt -n "$mnt" >/dev/null || t_fail "mounted" "$mnt mounted" "$(findmnt 2>&1 | tail -3)"
	t_ok "$mnt is mounted"
	assert_eq /dev/mapper/cidata "$(findmnt -n -o SOURCE "$mnt")" "mount source"
	local line
	line=$(grep -v '^#' "$fstab")
	assert_match "^UUID=$(blkid -p -o value -s UUID /dev/mapper/cidata)[[:space:]]+${mnt}[[:space:]]+ext4[[:space:]]+[^[:space:]]*nofail" \
		"$line" "fstab line by filesystem UUID with nofail"
	assert_match "x-systemd.requires=$UNIT" "$line" "fstab line requires $UNIT"
	assert_eq enabled "$(systemctl is-enabled "$UNIT" 2>&1)" "$UNIT enabled"
	head -c 100000 /dev/urandom >"$mnt/marker"
	sync
	before=$(fingerprint "$dev" cidata "$mnt")

	hook --recovery-key-file "$WORK/escrow/k$T_NCMD.key" --device "$dev" --kms cik --mount "$mnt" --fstab "$fstab" -- \
		--provider local --key-file "$WORK/cik.key" --generate
	assert_eq 0 "$T_RC" "second run ($(tr '\n' ' ' <"$T_OUT"))"
	assert_no_match "$DID_FORMAT" "$(<"$T_OUT")" \
		"second run formats nothing and creates nothing"
	assert_eq "$before" "$(fingerprint "$dev" cidata "$mnt")" "header, filesystem and data unchanged"
	assert_eq 1 "$(grep -vc '^#' "$fstab")" "still one fstab line"

	# Simulated reboot: unmounted and locked; the hook unlocks and mounts, formats nothing.
	umount "$mnt"
	kc 0 "lock (simulated reboot)" -- lock cidata
	hook --recovery-key-file "$WORK/escrow/k$T_NCMD.key" --device "$dev" --kms cik --mount "$mnt" --fstab "$fstab"
	assert_eq 0 "$T_RC" "run after reboot ($(tr '\n' ' ' <"$T_OUT"))"
	assert_match "unlocking" "$(<"$T_OUT")" "it unlocks the volume"
	assert_no_match "$DID_FORMAT" "$(<"$T_OUT")" "it formats nothing"
	assert_eq "$before" "$(fingerprint "$dev" cidata "$mnt")" "same header, filesystem and data"
	umount "$mnt"
}

# Disks with a filesystem or a partition table are refused, byte for byte untouched.
case_foreign() {
	local dev dev2 sum sum2 mnt=$WORK/mnt/foreign
	t_loop dev fs 64M
	mkfs.ext4 -q "$dev"
	read -r sum _ < <(head -c 8M "$dev" | sha256sum)
	t_kms_local cif
	hook --recovery-key-file "$WORK/escrow/k$T_NCMD.key" --device "$dev" --kms cif --mount "$mnt" --fstab "$WORK/fstab" --no-enable
	assert_ne 0 "$T_RC" "the hook on a disk with ext4"
	assert_match "ext4" "$(<"$T_OUT")" "the refusal names what is there"
	assert_eq "$sum" "$(head -c 8M "$dev" | sha256sum | cut -d' ' -f1)" "ext4 disk unchanged"

	t_loop dev2 pt 64M
	printf 'label: gpt\n,\n' | sfdisk -q "$dev2" >/dev/null 2>&1 ||
		t_fail "sfdisk writes a partition table" "exit 0" "failed"
	read -r sum2 _ < <(head -c 8M "$dev2" | sha256sum)
	hook --recovery-key-file "$WORK/escrow/k$T_NCMD.key" --device "$dev2" --kms cif --mount "$mnt" --fstab "$WORK/fstab" --no-enable
	assert_ne 0 "$T_RC" "the hook on a disk with a partition table"
	assert_eq "$sum2" "$(head -c 8M "$dev2" | sha256sum | cut -d' ' -f1)" "GPT disk unchanged"
	assert_eq absent "$(t_dm_state foreign)" "nothing mapped"
	assert_eq "" "$(cat "$WORK/fstab" 2>/dev/null)" "fstab untouched"
}

# cloud_init_run SEEDDIR: the stages of a boot, by hand (no systemd in the chroot), NoCloud only.
cloud_init_run() {
	local stage
	for stage in "init" "modules --mode config" "modules --mode final"; do
		# shellcheck disable=SC2086
		if ! KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE PATH=$PATH \
			timeout 300 cloud-init $stage >>"$WORK/cloud-init.out" 2>&1; then
			tail -n 30 "$WORK/cloud-init.out" >&2
			tail -n 30 /var/log/cloud-init-output.log >&2 || true
			t_fail "cloud-init $stage" "exit 0" "failed"
		fi
	done
	t_ok "cloud-init init + modules config + modules final"
}

# Real cloud-init with a NoCloud seed, the test variant of the example user-data (local provider).
case_cloud_init() {
	local dev mnt=$WORK/mnt/cloud before result
	command -v cloud-init >/dev/null || t_fail "cloud-init installed" "cloud-init" "absent"
	t_loop dev cloud 64M
	mkdir -p /var/lib/cloud/seed/nocloud /etc/cloud/cloud.cfg.d "$WORK/bin"
	ln -sf "$HOOK" "$WORK/bin/kmscrypt-provision"
	ln -sf "$KMSCRYPT" "$WORK/bin/kmscrypt"
	cat >/etc/cloud/cloud.cfg.d/99-kmscrypt-test.cfg <<EOF
datasource_list: [NoCloud]
network: {config: disabled}
cloud_init_modules: [write_files]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts_user]
EOF
	printf 'instance-id: kmscrypt-vm-1\nlocal-hostname: kmscrypt-vm\n' \
		>/var/lib/cloud/seed/nocloud/meta-data
	cat >/var/lib/cloud/seed/nocloud/user-data <<EOF
#cloud-config
write_files:
  - path: $WORK/written-by-cloud-init
    permissions: "0600"
    content: |
      hello from write_files
runcmd:
  - - env
    - PATH=$WORK/bin:/usr/sbin:/usr/bin:/sbin:/bin
    - kmscrypt-provision
    - --device
    - $dev
    - --kms
    - lab
    - --mount
    - $mnt
    - --recovery-key-file
    - $WORK/escrow/cloud.key
    - --
    - --provider
    - local
    - --key-file
    - $WORK/lab.key
    - --generate
EOF
	cloud-init schema --config-file /var/lib/cloud/seed/nocloud/user-data >/dev/null ||
		t_fail "test user-data is valid cloud-config" "valid" "invalid"
	cloud_init_run
	assert_eq "hello from write_files" "$(cat "$WORK/written-by-cloud-init" 2>&1)" \
		"write_files ran"
	result=$(cat /var/log/cloud-init-output.log "$WORK/cloud-init.out" 2>/dev/null || true)
	assert_match "kmscrypt-provision: done" "$result" "the hook ran to the end under cloud-init"
	assert_eq ACTIVE "$(t_dm_state cloud)" "volume unlocked as 'cloud'"
	assert_eq /dev/mapper/cloud "$(findmnt -n -o SOURCE "$mnt")" "mounted on $mnt"
	assert_match "[[:space:]]${mnt}[[:space:]]+ext4[[:space:]].*nofail" "$(cat /etc/fstab)" \
		"/etc/fstab has the mount"
	echo "written between the runs" >"$mnt/marker"
	sync
	before=$(fingerprint "$dev" cloud "$mnt")

	# A new instance from the same disk (cloud-init clean): runcmd runs again, formats nothing.
	umount "$mnt"
	kc 0 "lock (reboot)" -- lock cloud
	cloud-init clean >/dev/null 2>&1 || t_fail "cloud-init clean" "exit 0" "failed"
	: >/var/log/cloud-init-output.log
	: >"$WORK/cloud-init.out"
	cloud_init_run
	result=$(cat /var/log/cloud-init-output.log "$WORK/cloud-init.out" 2>/dev/null || true)
	assert_match "already a kmscrypt volume" "$result" "second boot sees the kmscrypt volume"
	assert_no_match "$DID_FORMAT" "$result" "second boot formats nothing"
	assert_eq "$before" "$(fingerprint "$dev" cloud "$mnt")" "header, filesystem and file unchanged"
	assert_eq 1 "$(grep -c "[[:space:]]${mnt}[[:space:]]" /etc/fstab)" "one fstab line for $mnt"
	umount "$mnt"
}

t_case hook case_hook
t_case foreign case_foreign
t_case cloud_init case_cloud_init
t_finish
