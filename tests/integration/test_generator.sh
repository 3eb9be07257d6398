#!/bin/bash
# kmscrypt-generator (agent/generator/generator.c) on the host, into a scratch generator dir:
#   - /etc/kmscrypt/volumes: one drop-in per volume for kmscrypt-unlock@<instance>.service, the
#     instance being the LUKS UUID or the device path escaped as `systemd-escape --path` does;
#     Wants= symlinks into cryptsetup.target (local provider) or remote-fs.target (network KMS, or
#     one not known), none for noauto; hostile lines (quotes, '%', '$', spaces, backslashes, an
#     option-like name) ignored with a warning and never copied into a unit file;
#   - state records only while kmscrypt-unlock.service is enabled; never an image file;
#   - the all-in-one kmscrypt-unlock.service is skipped (a drop-in) exactly when units were written;
#   - the template with the generated drop-ins passes `systemd-analyze verify`;
#   - the template unit has the all-in-one unit's hardening;
#   - `unlock --all` leaves out an image file recorded in the state dir; `unlock UUID=` looks at
#     block devices only.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=$(cd "$here/../.." && pwd)
K=$(realpath -- "${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}")
B=$(realpath -- "${KMSCRYPT_BUILD_DIR:-$(dirname "$K")}")
G=$(realpath -- "${KMSCRYPT_GENERATOR:-$B/kmscrypt-generator}")
[[ -x $G ]] || { echo "FATAL: no generator at $G" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export KMSCRYPT_CONFIG_DIR=$tmp/etc KMSCRYPT_STATE_DIR=$tmp/state
export KMSCRYPT_SYSTEMD_CONFIG_DIR=$tmp/sd KMSCRYPT_UNIT_DIR=/usr/local/lib/systemd/system
mkdir -p "$tmp/sd"
"$K" kms create lab --provider local --key-file "$tmp/lab.key" --generate >/dev/null ||
	failed "kms create lab"

U1=0b1c2d3e-0000-4000-8000-000000000001 U2=0b1c2d3e-0000-4000-8000-000000000002
U3=0b1c2d3e-0000-4000-8000-000000000003
gen() { # run the generator into a fresh $tmp/out; its stderr in $tmp/gen.err
	rm -rf "$tmp/out"
	mkdir "$tmp/out"
	"$G" "$tmp/out" "$tmp/out.early" "$tmp/out.late" 2>"$tmp/gen.err"
}
dropin() { echo "$tmp/out/kmscrypt-unlock@$1.service.d/50-kmscrypt-generator.conf"; }
key() { sed -n "s/^$1=//p" "$2" | tr '\n' ' ' | sed 's/ $//'; } # KEY FILE

# ---- no list, no state: nothing at all
expect_rc 0 "generator with nothing to do" -- gen
expect_eq "$(find "$tmp/out" -mindepth 1 | wc -l)" 0 "nothing generated (the all-in-one unit runs as before)"

# ---- the operator's list
cat >"$tmp/etc/volumes" <<EOF
# kmscrypt(8): VOLUME [NAME|-] [OPTIONS]
UUID=${U1^^}   data
/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0-part1 - noauto,_netdev
/dev/disk/by-path/pci-0000:00:1f.2-ata-1	logs	nofail,frob

/dev/x%i
/dev/x\$(reboot)
/dev/x\x2dy
"/dev/quoted"
/dev/disk/by-label/a'b
/dev/../etc/shadow
UUID=$U2 --config-dir=/tmp
UUID=$U2 x%n
UUID=not-a-uuid
UUID=$U2 name noauto extra
relative/path
EOF
expect_rc 0 "generator with a list" -- gen
esc_nvme=$(systemd-escape --path /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0-part1)
esc_pci=$(systemd-escape --path /dev/disk/by-path/pci-0000:00:1f.2-ata-1)
esc_dev1=$(systemd-escape --path "/dev/disk/by-uuid/$U1")
expect_eq "$(cd "$tmp/out" && find . -name '*.conf' | sort | tr '\n' ' ')" \
	"$(printf './%s.d/50-kmscrypt-generator.conf\n' kmscrypt-unlock.service "kmscrypt-unlock@$U1.service" \
		"kmscrypt-unlock@$esc_pci.service" "kmscrypt-unlock@$esc_nvme.service" | sort | tr '\n' ' ')" \
	"one drop-in per valid line (UUID lowercased, paths escaped as systemd-escape --path), one for the all-in-one unit"
d=$(dropin "$U1")
expect_eq "$(key Environment "$d")" "KMSCRYPT_VOLUME=UUID=$U1 KMSCRYPT_UNLOCK_OPTIONS=--name=data" \
	"UUID= line: unlock UUID=<uuid> --name=data"
expect_eq "$(key BindsTo "$d")" "$esc_dev1.device" "BindsTo= its /dev/disk/by-uuid device"
expect_eq "$(key After "$d")" "$esc_dev1.device network-online.target" \
	"KMS not known from the state dir: After= its device and network-online.target"
expect_eq "$(key Wants "$d")" network-online.target "... Wants= network-online.target"
expect_eq "$(key Before "$d")" "remote-fs-pre.target remote-cryptsetup.target" \
	"... Before= remote-fs-pre.target remote-cryptsetup.target"
expect_eq "$(key SourcePath "$d")" "$tmp/etc/volumes" "SourcePath= the list"
expect_eq "$(readlink "$tmp/out/remote-fs.target.wants/kmscrypt-unlock@$U1.service")" \
	/usr/local/lib/systemd/system/kmscrypt-unlock@.service "wanted by remote-fs.target (-> the template)"
d=$(dropin "$esc_nvme")
expect_eq "$(key Environment "$d")" \
	"KMSCRYPT_VOLUME=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0-part1" \
	"device path line: unlock that path, no --name for '-'"
expect_eq "$(key BindsTo "$d")" "$esc_nvme.device" "BindsTo= the listed device"
expect_eq "$(find "$tmp/out" -name "kmscrypt-unlock@$esc_nvme.service" -type l | wc -l)" 0 \
	"noauto: the unit exists but no target wants it"
d=$(dropin "$esc_pci")
expect_eq "$(key Environment "$d")" \
	"KMSCRYPT_VOLUME=/dev/disk/by-path/pci-0000:00:1f.2-ata-1 KMSCRYPT_UNLOCK_OPTIONS=--name=logs" \
	"tab-separated line with a mapping name"
expect_eq "$(grep -c "unknown option 'frob' ignored" "$tmp/gen.err")" 1 "unknown option: a warning"
expect_eq "$(grep -c 'line ignored' "$tmp/gen.err")" 11 "eleven hostile or malformed lines ignored, each with a warning"
for bad in '%' '$(' 'x2dy' 'quoted' 'by-label' 'shadow' 'config-dir' 'not-a-uuid' 'extra' 'relative'; do
	expect_eq "$(grep -rlF -- "$bad" "$tmp/out" | wc -l)" 0 "nothing of '$bad' reaches a generated file"
done
expect_eq "$(sed -n 's/^After=//p' "$tmp/out/kmscrypt-unlock.service.d/50-kmscrypt-generator.conf" | sort | tr '\n' ' ')" \
	"$(printf 'kmscrypt-unlock@%s.service\n' "$U1" "$esc_nvme" "$esc_pci" | sort | tr '\n' ' ')" \
	"the all-in-one unit is ordered after every per-volume unit"
expect_eq "$(grep -c "^ConditionPathExists=!$tmp/out/kmscrypt-unlock.service.d/50-kmscrypt-generator.conf\$" \
	"$tmp/out/kmscrypt-unlock.service.d/50-kmscrypt-generator.conf")" 1 \
	"... and skipped (its condition names its own drop-in)"

# ---- state records: used only while kmscrypt-unlock.service is enabled; never image files
truncate -s 20M "$tmp/v.img"
"$K" -q format "$tmp/v.img" --kms lab --no-recovery-key >/dev/null || failed "format v.img"
img_uuid=$(cryptsetup luksUUID "$tmp/v.img")
[[ -f $tmp/state/volumes/$img_uuid.json ]] || failed "format records the image file in the state dir"
mkdir -p "$tmp/state/volumes"
printf '{"uuid":"%s","device":"/dev/disk/by-id/gone-%s","kms":"lab","revoked":false}\n' "$U3" "$U3" \
	>"$tmp/state/volumes/$U3.json"
printf '{"uuid":"%s","device":"/dev/disk/by-id/other","kms":"lab","revoked":false}\n' "$U1" \
	>"$tmp/state/volumes/$U1.json"
chmod 0600 "$tmp/state/volumes/"*.json
expect_rc 0 "generator, all-in-one unit not enabled" -- gen
expect_eq "$(find "$tmp/out" -name "*$U3*" | wc -l)" 0 "state records unused while kmscrypt-unlock.service is not enabled"
expect_eq "$(key Before "$(dropin "$U1")")" cryptsetup.target \
	"the list's UUID with a state record on KMS 'lab' (local): Before= cryptsetup.target"
expect_eq "$(grep -c network-online "$(dropin "$U1")")" 0 "... and no network-online.target"
expect_eq "$(readlink "$tmp/out/cryptsetup.target.wants/kmscrypt-unlock@$U1.service" | sed 's,.*/,,')" \
	kmscrypt-unlock@.service "... wanted by cryptsetup.target"
expect_eq "$(key Environment "$(dropin "$U1")")" "KMSCRYPT_VOLUME=UUID=$U1 KMSCRYPT_UNLOCK_OPTIONS=--name=data" \
	"the list's entry wins over the state record"
mkdir -p "$tmp/sd/remote-fs.target.wants"
ln -s /lib/systemd/system/kmscrypt-unlock.service "$tmp/sd/remote-fs.target.wants/"
expect_rc 0 "generator, all-in-one unit enabled" -- gen
expect_eq "$(key Environment "$(dropin "$U3")")" "KMSCRYPT_VOLUME=UUID=$U3" "state record of a block device: a unit"
expect_eq "$(key SourcePath "$(dropin "$U3")")" "$tmp/state/volumes/$U3.json" "... SourcePath= the record"
expect_eq "$(readlink "$tmp/out/cryptsetup.target.wants/kmscrypt-unlock@$U3.service" | sed 's,.*/,,')" \
	kmscrypt-unlock@.service "... wanted by cryptsetup.target (local provider)"
expect_eq "$(find "$tmp/out" -name "*$img_uuid*" | wc -l)" 0 "the image file recorded in state gets no unit"
expect_eq "$(find "$tmp/out" -path "*$U1*.conf" | wc -l)" 1 "a UUID in the list and in state: one unit"
rm "$tmp/etc/volumes"
expect_rc 0 "generator, state records only" -- gen
expect_eq "$(find "$tmp/out" -name '*.conf' | wc -l)" 3 "two volumes from state + the all-in-one drop-in"
# A hostile record: not a UUID in the record, a device path with a newline and quotes.
printf '{"uuid":"../../x\\"y","device":"/dev/a\\"\\nb","kms":"lab","revoked":false}\n' \
	>"$tmp/state/volumes/bad.json"
chmod 0600 "$tmp/state/volumes/bad.json"
expect_rc 0 "generator with a hostile state record" -- gen
expect_eq "$(find "$tmp/out" -name '*.conf' | wc -l)" 3 "the hostile record gets no unit"
rm -f "$tmp/state/volumes/bad.json" "$tmp/sd/remote-fs.target.wants/kmscrypt-unlock.service"

# ---- usage
expect_rc 2 "generator without a directory" -- "$G"

# ---- systemd-analyze verify: the template + the generated drop-ins, in a root like cmake --install
if command -v systemd-analyze >/dev/null; then
	printf 'UUID=%s data\n/dev/disk/by-id/nvme-x-y - _netdev\n' "$U1" >"$tmp/etc/volumes"
	gen
	root=$tmp/root
	mkdir -p "$root/usr/local/sbin" "$root/usr/local/lib/systemd/system" "$root/usr/lib/systemd/system" "$root/etc/systemd"
	cp "$K" "$root/usr/local/sbin/kmscrypt"
	cp "$src/unit/kmscrypt-unlock@.service" "$src/unit/kmscrypt-unlock.service" "$root/usr/local/lib/systemd/system/"
	for t in sysinit.target basic.target shutdown.target umount.target network-online.target multi-user.target \
		cryptsetup.target cryptsetup-pre.target remote-cryptsetup.target remote-fs.target remote-fs-pre.target \
		local-fs.target; do
		cp "/usr/lib/systemd/system/$t" "$root/usr/lib/systemd/system/" 2>/dev/null
	done
	cp -a "$tmp/out" "$root/etc/systemd/system"
	for u in "kmscrypt-unlock@$U1.service" "kmscrypt-unlock@$(systemd-escape --path /dev/disk/by-id/nvme-x-y).service" \
		kmscrypt-unlock.service; do
		expect_rc 0 "systemd-analyze verify $u with the generated drop-in" -- \
			systemd-analyze verify --root="$root" --man=no "$u"
		expect_eq "$OUT" "" "verify $u prints nothing"
	done
else
	echo "# systemd-analyze not found: verify skipped"
fi

# ---- the template unit: what it runs, and the all-in-one unit's hardening
t=$src/unit/kmscrypt-unlock@.service
expect_eq "$(key Environment "$t")" 'KMSCRYPT_VOLUME=UUID=%i' "the template unlocks UUID=<instance> by default"
expect_eq "$(key ExecStart "$t")" 'kmscrypt unlock ${KMSCRYPT_VOLUME} --wait-kms 60 $KMSCRYPT_UNLOCK_OPTIONS' \
	"ExecStart= unlock of one volume"
expect_eq "$(key SuccessExitStatus "$t")" "" "no SuccessExitStatus=: a denied volume fails its unit"
expect_eq "$(key ExecStop "$t")" '-kmscrypt lock ${KMSCRYPT_VOLUME}' "ExecStop= locks that volume"
hardening() { sed -n '/^NoNewPrivileges=/,/^UMask=/p' "$1" | grep -v '^#' | sort; }
expect_eq "$(hardening "$t")" "$(hardening "$src/unit/kmscrypt-unlock.service")" \
	"the template has kmscrypt-unlock.service's hardening"
expect_eq "$(hardening "$t" | grep -cx -e NoNewPrivileges=yes -e UMask=0077)" 2 "... the whole block compared"

# ---- unlock: block devices only
expect_rc 0 "unlock --all with only an image file recorded in state" -- "$K" unlock --all
expect_eq "$OUT" "No kmscrypt volumes found." "unlock --all leaves the image file alone"
expect_rc 6 "unlock UUID=<uuid of the image file>" -- "$K" unlock "UUID=$img_uuid"
expect_out "No block device holds kmscrypt volume $img_uuid" "unlock UUID= says no block device holds it"
expect_rc 2 "unlock UUID=garbage" -- "$K" unlock UUID=garbage
expect_out "is not a LUKS UUID" "a malformed UUID is named"
expect_rc 6 "lock UUID=<uuid of the image file>" -- "$K" lock "UUID=$img_uuid"
finish
