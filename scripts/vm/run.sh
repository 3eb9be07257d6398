#!/bin/bash
# scripts/vm/run.sh: run one command as root inside a throw-away QEMU guest that boots the host's
# Debian kernel (with device-mapper) over the host's own root file system.
#
#   scripts/vm/run.sh [--build-dir DIR] [--timeout SEC] [--mem MB] [--smp N] [--kvm] \
#                     -- CMD [ARGS...]
#   scripts/vm/run.sh --systemd [--setup SHELL-CMD] [--boot-deadline SEC] [--unmask UNIT]... \
#                     [OPTIONS] -- CMD [ARGS...]
#
# How (see shared/notes/real-kernel-tests.md for the measured facts behind each choice):
# - the uncompressed ELF vmlinux is extracted once from /boot/vmlinuz-KVER and booted through
#   QEMU's PVH entry; a tiny busybox initramfs insmods the modules we need in dependency order;
# - the host's / is mounted read-only over virtio-9p under a tmpfs overlay (writes vanish at
#   power-off) and the build dir is shared read-write at the same path, so logs come back;
# - the command runs in a chroot with the caller's cwd and KMSCRYPT_* environment; its stdout and
#   stderr stream to our stdout through the second serial port; its exit status comes back through
#   the third; the guest then powers off (`reboot -f` with QEMU's -no-reboot).
# A guest that fails to boot or times out is a failure (non-zero), never a skip.
#
# --systemd: the same root, but init runs `systemd-prep.sh` in it (the masks and overrides of
# shared/notes/real-kernel-tests.md, then the caller's --setup command, e.g. loop devices, units,
# fstab), and `exec switch_root /newroot /lib/systemd/systemd`. CMD runs as the test unit
# kmscrypt-vm-test.service, ordered after multi-user.target; it writes the exit status to the
# status port and calls `systemctl reboot -ff`. A deadline unit dumps the jobs, failed units and
# the journal tail if CMD has not started --boot-deadline seconds after boot.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd -- "$script_dir/../.." && pwd)

build_dir=
timeout_sec=600
mem_mb=1024
# One vCPU unless the host has more than two CPUs: on a 2-CPU host a second vCPU thread competes
# with QEMU's 9p/IO thread and with a parallel ctest (measured ~10% slower, boot +0.5 s).
smp=1
(($(nproc) > 2)) && smp=2
use_kvm=0
use_systemd=0
setup_cmd=
boot_deadline=150
unmask=()
keep_run=${KMSCRYPT_VM_KEEP:-0}

usage() {
	cat <<EOF
Usage: $prog [OPTIONS] -- CMD [ARGS...]
Run CMD as root inside a QEMU guest booting the host's kernel with device-mapper.

  --build-dir DIR   cache (DIR/vm) and read-write share; default: $source_dir/build
  --timeout SEC     kill the guest after SEC seconds (default $timeout_sec); exit 124
  --mem MB          guest memory (default $mem_mb)
  --smp N           guest vCPUs (default $smp)
  --kvm             use KVM instead of TCG (needs a working /dev/kvm)
  --systemd         boot systemd as PID 1; CMD runs as a unit after multi-user.target
  --setup SHELL-CMD (--systemd) run SHELL-CMD (bash -c) in the guest's root before
                    switch_root, in the caller's cwd, with the same environment as CMD and
                    DM_DISABLE_UDEV=1 (no udev yet); a failure stops the run (exit 1)
  --boot-deadline SEC  (--systemd) dump jobs, failed units and the journal and fail if CMD
                    has not started SEC seconds after boot (default $boot_deadline)
  --unmask UNIT     (--systemd) do not mask UNIT (a unit or generator name), repeatable
  -h, --help        this text

CMD runs in the caller's cwd with the caller's KMSCRYPT and KMSCRYPT_* variables,
KMSCRYPT_IN_VM=1, DM_DISABLE_UDEV=1 and a fresh session keyring; its stdout and stderr come
to our stdout. The exit status is CMD's; 124 if the guest timed out; 1 if it did not run CMD
(the guest console, DIR/vm/runs/run.*/console.log, is then shown and kept).

Environment:
  KMSCRYPT_VM_KERNEL=KVER  boot /boot/vmlinuz-KVER (default: the newest with 9p modules)
  KMSCRYPT_VM_KEEP=1       keep DIR/vm/runs/run.* (console log, status, guest script)
  KMSCRYPT_VM_APPEND=...   more kernel parameters (e.g. "loglevel=8 initcall_debug")
  KMSCRYPT_VM_CPU=MODEL    QEMU -cpu model for TCG (default: max)
EOF
}

die() {
	echo "$prog: error: $*" >&2
	exit 1
}

msg() {
	echo "$prog: $*" >&2
}

while (($#)); do
	case $1 in
	--build-dir) build_dir=${2:?--build-dir needs a value}; shift 2 ;;
	--build-dir=*) build_dir=${1#*=}; shift ;;
	--timeout) timeout_sec=${2:?--timeout needs a value}; shift 2 ;;
	--timeout=*) timeout_sec=${1#*=}; shift ;;
	--mem) mem_mb=${2:?--mem needs a value}; shift 2 ;;
	--mem=*) mem_mb=${1#*=}; shift ;;
	--smp) smp=${2:?--smp needs a value}; shift 2 ;;
	--smp=*) smp=${1#*=}; shift ;;
	--kvm) use_kvm=1; shift ;;
	--systemd) use_systemd=1; shift ;;
	--setup) setup_cmd=${2:?--setup needs a value}; shift 2 ;;
	--boot-deadline) boot_deadline=${2:?--boot-deadline needs a value}; shift 2 ;;
	--unmask) unmask+=("${2:?--unmask needs a value}"); shift 2 ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) usage >&2; exit 2 ;;
	esac
done
(($#)) || { usage >&2; exit 2; }
for v in "$timeout_sec" "$mem_mb" "$smp" "$boot_deadline"; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || { echo "$prog: not a positive number: '$v'" >&2; exit 2; }
done
if ((!use_systemd)) && [[ -n $setup_cmd || ${#unmask[@]} -gt 0 ]]; then
	echo "$prog: --setup and --unmask need --systemd" >&2
	exit 2
fi

[[ -n $build_dir ]] || build_dir=$source_dir/build
mkdir -p -- "$build_dir"
build_dir=$(cd -- "$build_dir" && pwd -P)
caller_cwd=$(pwd -P)

for tool in qemu-system-x86_64 busybox cpio modprobe xz timeout sha256sum flock; do
	command -v "$tool" >/dev/null || die "'$tool' not found (run scripts/install-deps.sh)"
done
busybox_bin=$(command -v busybox)
[[ $(ldd "$busybox_bin" 2>&1 || true) == *"not a dynamic executable"* ]] ||
	die "'$busybox_bin' is not statically linked (install busybox-static)"

# ---- pick the kernel -------------------------------------------------------------------------
# The newest /boot/vmlinuz-* whose modules include 9p (the -cloud flavour has none).
pick_kernel() {
	local k kver best=
	if [[ -n ${KMSCRYPT_VM_KERNEL:-} ]]; then
		echo "$KMSCRYPT_VM_KERNEL"
		return
	fi
	for k in /boot/vmlinuz-*; do
		[[ -e $k ]] || continue
		kver=${k#/boot/vmlinuz-}
		[[ -n $(find "/lib/modules/$kver/kernel/fs/9p" -name '9p.ko*' 2>/dev/null) ]] ||
			continue
		best+="$kver"$'\n'
	done
	[[ -n $best ]] || return 1
	printf '%s' "$best" | sort -V | tail -n 1
}
kver=$(pick_kernel) || die "no kernel in /boot with 9p modules (apt-get install linux-image-amd64)"
kimage=/boot/vmlinuz-$kver
[[ -r $kimage ]] || die "kernel image '$kimage' not readable"
[[ -d /lib/modules/$kver ]] || die "no modules for kernel $kver in /lib/modules"

# Modules in dependency order. Optional ones only speed things up or feed entropy.
required_modules=(virtio_pci 9pnet_virtio 9p overlay loop dm-mod dm-crypt xts ecb cbc
	algif_skcipher algif_hash)
optional_modules=(virtio_rng aesni_intel)

cache_dir=$build_dir/vm/$kver
mkdir -p -- "$cache_dir" "$build_dir/vm/runs"

# ---- the guest's /init (busybox sh, PID 1) ------------------------------------------------------
read -r -d '' init_script <<'INIT' || true
#!/bin/sh
# Generated by scripts/vm/run.sh.  ttyS0: console, ttyS1: command output, ttyS2: status.
export PATH=/bin
log() { echo "vm-init: [$(cut -d' ' -f1 /proc/uptime)] $*" >/dev/ttyS0; }
finish() {
	# -n: no global sync (it would block forever on a suspended dm device)
	reboot -n -f
	sleep 5
	poweroff -n -f
}
fail() {
	log "FAILED: $*"
	echo "init-error $*" >/dev/ttyS2
	finish
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log "init started"
while read -r m; do
	insmod "/modules/$m" || fail "insmod $m"
done </modules.order
log "modules loaded"
run=$(sed -n 's/.*kmscrypt\.run=\([A-Za-z0-9._-]*\).*/\1/p' /proc/cmdline)
[ -n "$run" ] || fail "no kmscrypt.run= on the kernel command line"
o9p=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /lower /rw /newroot /share
mount -t 9p -o "$o9p,ro,cache=loose" hostroot /lower || fail "mount host root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fail "mount overlay"
mount -t 9p -o "$o9p,cache=mmap" build /share || fail "mount build dir over 9p"
rundir=/share/vm/runs/$run
[ -r "$rundir/builddir" ] || fail "no $rundir/builddir"
builddir=$(cat "$rundir/builddir")
mkdir -p "/newroot$builddir" && mount -o bind /share "/newroot$builddir" ||
	fail "bind build dir at $builddir"
log "root and build dir mounted"
r=/newroot
mount -t proc proc $r/proc
mount -t sysfs sysfs $r/sys
mount -t devtmpfs devtmpfs $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $r/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $r/dev/shm
ln -sf /proc/self/fd $r/dev/fd
ln -sf /proc/self/fd/0 $r/dev/stdin
ln -sf /proc/self/fd/1 $r/dev/stdout
ln -sf /proc/self/fd/2 $r/dev/stderr
mount -t tmpfs -o mode=0755 tmpfs $r/run
mkdir -p $r/run/cryptsetup $r/run/lock $r/run/kmscrypt
rm -f $r/.dockerenv $r/run/.containerenv
ip link set lo up 2>/dev/null  # 127.0.0.1 for fake KMS servers; no other network
echo 0 >/proc/sys/kernel/printk
stty -F /dev/ttyS1 raw -echo 2>/dev/null
if grep -q 'kmscrypt\.systemd=1' /proc/cmdline; then
	# run.sh --systemd: prepare the root (masks, the test unit, the caller's --setup), then hand
	# over to systemd. The API file systems move into the new root with it.
	chroot $r /usr/bin/env -i /bin/bash "$builddir/vm/runs/$run/systemd-prep.sh" </dev/null \
		>/dev/ttyS1 2>&1 || fail "systemd-prep.sh or --setup failed (exit $?)"
	echo "switch-root $(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS2
	log "switch_root to systemd"
	umount /proc /sys 2>/dev/null
	exec switch_root /newroot /lib/systemd/systemd
	fail "switch_root"
fi
echo "start $(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS2
chroot $r /usr/bin/env -i /bin/bash "$builddir/vm/runs/$run/guest.sh" </dev/null >/dev/ttyS1 2>&1
rc=$?
echo "end $(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS2
echo "rc $rc" >/dev/ttyS2
finish
INIT

# ---- cache: vmlinux + initramfs, rebuilt when the kernel or this script's init changes ------
extract_vmlinux() {
	local img=$1 out=$2 off
	# The bzImage payload is an xz stream; try each xz magic until one yields an ELF file.
	while read -r off; do
		tail -c +"$((off + 1))" "$img" | xz -dc --single-stream >"$out.tmp" 2>/dev/null ||
			true
		if [[ $(head -c 4 "$out.tmp" | od -An -c | tr -d ' ') == '177ELF' ]]; then
			mv -f "$out.tmp" "$out"
			return 0
		fi
	done < <(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$img" | cut -d: -f1)
	rm -f "$out.tmp"
	return 1
}

resolve_modules() {
	local m line out seen=" " path
	for m in "${required_modules[@]}" "${optional_modules[@]}"; do
		if ! out=$(modprobe -S "$kver" --show-depends "$m" 2>/dev/null); then
			if [[ " ${required_modules[*]} " == *" $m "* ]]; then
				die "module '$m' not found for kernel $kver"
			fi
			continue
		fi
		while read -r line; do
			[[ $line == insmod\ * ]] || continue   # "builtin X" needs nothing
			path=$(awk '{print $2}' <<<"$line")
			[[ $seen == *" $path "* ]] && continue
			seen+="$path "
			echo "$path"
		done <<<"$out"
	done
}

build_initramfs() {
	local out=$1 tmp path base
	tmp=$(mktemp -d "$cache_dir/initramfs.XXXXXX")
	mkdir -p "$tmp"/{bin,dev,proc,sys,modules}
	cp "$busybox_bin" "$tmp/bin/busybox"
	"$tmp/bin/busybox" --list | while read -r a; do
		[[ $a == busybox ]] || ln -s busybox "$tmp/bin/$a"
	done
	printf '%s\n' "$init_script" >"$tmp/init"
	chmod 755 "$tmp/init"
	: >"$tmp/modules.order"
	while read -r path; do
		base=${path##*/}
		case $base in
		*.ko) cp "$path" "$tmp/modules/$base" ;;
		*.ko.xz) xz -dc "$path" >"$tmp/modules/${base%.xz}"; base=${base%.xz} ;;
		*.ko.gz) gzip -dc "$path" >"$tmp/modules/${base%.gz}"; base=${base%.gz} ;;
		*.ko.zst) zstd -qdc "$path" >"$tmp/modules/${base%.zst}"; base=${base%.zst} ;;
		*) die "unexpected module file '$path'" ;;
		esac
		echo "$base" >>"$tmp/modules.order"
	done < <(resolve_modules)
	(cd "$tmp" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --quiet --owner=0:0) >"$out.tmp"
	rm -rf "$tmp"
	mv -f "$out.tmp" "$out"
}

stamp="$(stat -c '%s %Y' "$kimage") $( (printf '%s' "$init_script"
	printf '%s\n' "${required_modules[@]}" "${optional_modules[@]}") | sha256sum | cut -c1-16)"
vmlinux=$cache_dir/vmlinux
initramfs=$cache_dir/initramfs.cpio
(
	flock 9
	old_stamp=$(cat "$cache_dir/stamp" 2>/dev/null || true)
	if [[ ! -s $vmlinux || ! -s $initramfs || $old_stamp != "$stamp" ]]; then
		msg "building guest kernel and initramfs for $kver in $cache_dir"
		rm -rf "$cache_dir/stamp" "$cache_dir"/initramfs.*/
		if ! extract_vmlinux "$kimage" "$vmlinux"; then
			msg "warning: cannot extract an ELF vmlinux; booting the bzImage" \
				"(~3 s slower)"
			cp -f "$kimage" "$vmlinux"
		fi
		build_initramfs "$initramfs"
		echo "$stamp" >"$cache_dir/stamp"
	fi
) 9>"$cache_dir/.lock"

# ---- --systemd: the guest root's preparation, the test unit and the deadline unit ---------------
# Units and generators that cost seconds under TCG, fight for the console, or need what the guest
# has not (shared/notes/real-kernel-tests.md, "Booting systemd as PID 1"); the integritysetup,
# veritysetup, rc-local, system-update and run generators find nothing to do in the guest (no
# integritytab, veritytab, rc.local, /system-update, systemd.run=) but each is a process.
systemd_masks=(getty.target getty@.service serial-getty@.service console-getty.service
	container-getty@.service cloud-init.target cloud-init-local.service cloud-init.service
	cloud-config.service cloud-final.service cloud-init-hotplugd.socket cloud-config.target
	postgresql.service postgresql@.service tangd.socket timers.target systemd-logind.service
	dbus.service dbus.socket systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
	systemd-sysusers.service systemd-update-utmp.service systemd-update-utmp-runlevel.service
	systemd-timesyncd.service systemd-pstore.service e2scrub_reap.service systemd-firstboot.service
	apt-daily.service apt-daily-upgrade.service man-db.service fstrim.service
	systemd-tmpfiles-clean.service systemd-hwdb-update.service ldconfig.service
	systemd-journal-catalog-update.service)
systemd_generator_masks=(systemd-sysv-generator systemd-gpt-auto-generator
	systemd-hibernate-resume-generator cloud-init-generator postgresql-generator
	systemd-getty-generator systemd-integritysetup-generator systemd-veritysetup-generator
	systemd-rc-local-generator systemd-system-update-generator systemd-run-generator)

write_systemd_files() {
	local u m skip
	{
		echo '#!/bin/bash'
		echo '# generated by scripts/vm/run.sh --systemd: run by the guest init in the new root'
		echo 'set -eu'
		echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
		echo 'echo "run.sh: preparing the root for systemd" >/dev/ttyS0'
		# systemd would think it is in a container and ignore the kernel command line
		echo 'rm -f /.dockerenv /run/.containerenv'
		echo 'tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id'
		# Debian's "D /tmp" empties /tmp over 9p (~50 s) and deletes what tests put there
		echo 'mkdir -p /etc/tmpfiles.d /etc/systemd/journald.conf.d /etc/systemd/system-generators'
		echo "echo 'd /tmp 1777 root root -' >/etc/tmpfiles.d/tmp.conf"
		echo "printf '[Journal]\\nStorage=volatile\\nRateLimitBurst=0\\n' >/etc/systemd/journald.conf.d/vm.conf"
		echo "echo '# run.sh --systemd: tests append their entries' >/etc/fstab"
		echo 'rm -f /etc/crypttab'
		# The masks (symlinks to /dev/null) are made here on the host and copied by one `cp` per
		# directory: an `ln` per unit in the guest cost ~40 processes of 0.1-0.3 s each per boot.
		mkdir -p "$run_dir/masks/system" "$run_dir/masks/system-generators"
		for m in "${systemd_masks[@]}"; do
			skip=0
			for u in "${unmask[@]}"; do [[ $u == "$m" ]] && skip=1; done
			((skip)) || ln -sfn /dev/null "$run_dir/masks/system/$m"
		done
		for m in "${systemd_generator_masks[@]}"; do
			skip=0
			for u in "${unmask[@]}"; do [[ $u == "$m" ]] && skip=1; done
			((skip)) || ln -sfn /dev/null "$run_dir/masks/system-generators/$m"
		done
		for m in system system-generators; do
			[[ -n $(ls -A "$run_dir/masks/$m") ]] || continue
			printf 'cp -dR --remove-destination -- %q/* /etc/systemd/%s/\n' \
				"$run_dir/masks/$m" "$m"
		done
		# udev coldplug of block devices only (dm device units, fstab UUID= of dm devices)
		echo 'mkdir -p /etc/systemd/system/systemd-udev-trigger.service.d'
		echo "cat >/etc/systemd/system/systemd-udev-trigger.service.d/vm.conf <<'EOF'"
		echo '[Service]'
		echo 'ExecStart='
		echo 'ExecStart=-udevadm trigger --type=subsystems --action=add --subsystem-match=block'
		echo 'ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=block'
		echo 'EOF'
		echo "mkdir -p /etc/kmscrypt-vm /etc/systemd/system/multi-user.target.wants /etc/systemd/system/sysinit.target.wants"
		echo "cat >/etc/systemd/system/kmscrypt-vm-test.service <<'EOF'"
		echo '[Unit]'
		echo 'Description=run.sh --systemd: the test command'
		echo 'After=multi-user.target'
		echo '[Service]'
		echo 'Type=oneshot'
		echo 'StandardInput=null'
		echo 'TimeoutStartSec=infinity'
		echo 'ExecStart=/bin/bash /etc/kmscrypt-vm/test.sh'
		echo 'EOF'
		echo 'ln -sfn ../kmscrypt-vm-test.service /etc/systemd/system/multi-user.target.wants/'
		echo "cat >/etc/systemd/system/kmscrypt-vm-deadline.service <<'EOF'"
		echo '[Unit]'
		echo 'Description=run.sh --systemd: fail the run if the test has not started in time'
		echo 'DefaultDependencies=no'
		echo '[Service]'
		echo 'Type=simple'
		echo 'ExecStart=/bin/bash /etc/kmscrypt-vm/deadline.sh'
		echo 'EOF'
		echo 'ln -sfn ../kmscrypt-vm-deadline.service /etc/systemd/system/sysinit.target.wants/'
		echo "cat >/etc/kmscrypt-vm/test.sh <<'EOF'"
		echo '#!/bin/bash'
		echo ': >/run/kmscrypt-vm-test-started'
		echo 'echo "start $(cut -d" " -f1 /proc/uptime)" >/dev/ttyS2'
		echo 'stty -F /dev/ttyS1 raw -echo 2>/dev/null'
		printf '/bin/bash %q </dev/null >/dev/ttyS1 2>&1\n' "$build_dir/vm/runs/$run_id/guest.sh"
		echo 'rc=$?'
		echo 'echo "end $(cut -d" " -f1 /proc/uptime)" >/dev/ttyS2'
		echo 'echo "rc $rc" >/dev/ttyS2'
		# -ff: reboot(2) at once, no sync (a suspended dm device would block it forever)
		echo 'systemctl reboot -ff'
		echo 'EOF'
		echo "cat >/etc/kmscrypt-vm/deadline.sh <<'EOF'"
		echo '#!/bin/bash'
		printf 'sleep %d\n' "$boot_deadline"
		echo '[[ -e /run/kmscrypt-vm-test-started ]] && exit 0'
		echo '{'
		printf 'echo "=== run.sh --systemd: the test did not start within %d s of boot ==="\n' \
			"$boot_deadline"
		echo 'echo "--- systemctl list-jobs"; systemctl list-jobs --no-pager'
		echo 'echo "--- systemctl --failed"; systemctl --failed --no-pager'
		echo 'echo "--- journal tail"; journalctl -b --no-pager -n 150 -o short-monotonic'
		echo '} >/dev/ttyS1 2>&1'
		printf 'echo "init-error boot deadline: the test did not start within %d s" >/dev/ttyS2\n' \
			"$boot_deadline"
		echo 'systemctl reboot -ff'
		echo 'EOF'
		if [[ -n $setup_cmd ]]; then
			echo '# the caller'"'"'s --setup, with the environment CMD gets (and no udev yet)'
			echo 'export HOME=/root TERM=dumb LANG=C.UTF-8 DM_DISABLE_UDEV=1 KMSCRYPT_IN_VM=1'
			while read -r u; do
				printf 'export %s=%q\n' "$u" "${!u}"
			done < <(compgen -e | grep -E '^KMSCRYPT(_[A-Za-z0-9_]*)?$' || true)
			printf 'cd -- %q\n' "$caller_cwd"
			echo 'echo "run.sh: --setup"'
			printf 'if ! /bin/bash -c %q; then echo "run.sh: --setup failed" >&2; exit 1; fi\n' \
				"$setup_cmd"
		fi
	} >"$run_dir/systemd-prep.sh"
}

# ---- per-run directory in the shared build dir ---------------------------------------------------
run_dir=$(mktemp -d "$build_dir/vm/runs/run.XXXXXXXX")
run_id=${run_dir##*/}
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
	if [[ $keep_run == 1 ]]; then
		msg "kept $run_dir"
	else
		rm -rf -- "$run_dir"
	fi
}
trap cleanup EXIT
printf '%s\n' "$build_dir" >"$run_dir/builddir"

host_tty=0
[[ -t 1 ]] && host_tty=1
# guest.sh: run by the guest's init in the chroot, with an empty environment.
{
	echo '#!/bin/bash'
	echo '# generated by scripts/vm/run.sh'
	echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
	echo 'export HOME=/root TERM=dumb LANG=C.UTF-8'
	# no udev in the chroot; under systemd, udev runs and creates the dm nodes
	((use_systemd)) || echo 'export DM_DISABLE_UDEV=1'
	echo '# a fresh session keyring for the command (new_session installs it in this shell)'
	echo 'command -v keyctl >/dev/null && keyctl new_session >/dev/null'
	while read -r name; do
		printf 'export %s=%q\n' "$name" "${!name}"
	done < <(compgen -e | grep -E '^KMSCRYPT(_[A-Za-z0-9_]*)?$' || true)
	# tests/vm/lib.sh refuses to run (and remove dm devices) without this
	echo 'export KMSCRYPT_IN_VM=1'
	# The command's stdout is a serial port, a tty either way: say whether ours is one.
	((host_tty)) && echo 'export KMSCRYPT_VM_HOST_TTY=1'
	printf 'cd -- %q || exit 125\n' "$caller_cwd"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$run_dir/guest.sh"
chmod 755 "$run_dir/guest.sh"
if ((use_systemd)); then
	write_systemd_files
fi
: >"$run_dir/status"
: >"$run_dir/console.log"

# ---- boot -------------------------------------------------------------------------------------
if ((use_kvm)); then
	[[ -w /dev/kvm ]] || die "--kvm: /dev/kvm is not usable"
	accel=(-accel kvm -cpu host)
else
	accel=(-accel "tcg,thread=multi,tb-size=256" -cpu "${KMSCRYPT_VM_CPU:-max}")
fi
# cryptomgr.notests skips the boot-time crypto self-tests (~0.4 s under TCG); the rest trims probes.
append="console=ttyS0 quiet loglevel=4 panic=-1 random.trust_cpu=on 8250.nr_uarts=4"
append+=" cryptomgr.notests i8042.noaux i8042.nokbd i8042.nopnp nowatchdog audit=0"
append+=" rdinit=/init kmscrypt.run=$run_id${KMSCRYPT_VM_APPEND:+ $KMSCRYPT_VM_APPEND}"
if ((use_systemd)); then
	append+=" kmscrypt.systemd=1 systemd.unit=multi-user.target systemd.show_status=1"
	append+=" systemd.firstboot=0"
fi
fsopts=security_model=none,multidevs=remap
qemu=(qemu-system-x86_64 "${accel[@]}" -M q35 -m "$mem_mb" -smp "$smp"
	-nodefaults -no-user-config -display none -no-reboot
	-kernel "$vmlinux" -initrd "$initramfs" -append "$append"
	-chardev "file,id=con,path=$run_dir/console.log" -serial chardev:con
	-chardev "stdio,id=out,signal=off" -serial chardev:out
	-chardev "file,id=st,path=$run_dir/status" -serial chardev:st
	-fsdev "local,id=hostroot,path=/,readonly=on,$fsopts"
	-device "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"
	-fsdev "local,id=build,path=$build_dir,$fsopts"
	-device "virtio-9p-pci,fsdev=build,mount_tag=build"
	-device virtio-rng-pci)

# QEMU runs in the background so that an interrupt of this script (Ctrl-C, ctest, CI) stops the
# guest too: `timeout` puts itself in its own process group, out of reach of the terminal's SIGINT.
# shellcheck disable=SC2317  # invoked by the trap
on_signal() {
	trap - INT TERM HUP
	msg "interrupted: stopping the guest"
	kill -TERM "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
	exit 130
}
t0=$(date +%s.%N)
timeout -k 10 "$timeout_sec" "${qemu[@]}" </dev/null 2>"$run_dir/qemu.err" &
qpid=$!
trap on_signal INT TERM HUP
set +e
wait "$qpid"
qrc=$?
set -e
trap - INT TERM HUP
t1=$(date +%s.%N)

show_console() {
	if [[ -s $run_dir/qemu.err ]]; then
		msg "qemu stderr:"
		sed 's/^/  /' "$run_dir/qemu.err" >&2
	fi
	msg "last guest console lines ($run_dir/console.log):"
	tail -n 40 "$run_dir/console.log" | tr -d '\r' | sed 's/^/  /' >&2
}

status=$(tr -d '\r' <"$run_dir/status")
start=$(sed -n 's/^start //p' <<<"$status")
end=$(sed -n 's/^end //p' <<<"$status")
rc=$(sed -n 's/^rc \([0-9]*\)$/\1/p' <<<"$status")
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')

if [[ $qrc == 124 || $qrc == 137 ]]; then
	msg "FAILED: the guest timed out after ${timeout_sec}s (wall ${wall}s;" \
		"${start:+the command started at ${start}s}${start:-the command never started})"
	show_console
	keep_run=1
	exit 124
fi
if [[ -z $rc ]]; then
	init_err=$(sed -n 's/^init-error //p' <<<"$status")
	msg "FAILED: the guest did not run the command (qemu exit $qrc, wall ${wall}s)" \
		"${init_err:+: $init_err}"
	show_console
	keep_run=1
	exit 1
fi
if [[ $qrc != 0 ]]; then
	msg "warning: qemu exited with $qrc after the command finished"
	show_console
fi
awk -v s="$start" -v e="$end" -v w="$wall" -v rc="$rc" -v p="$prog" 'BEGIN {
	printf "%s: boot %.2fs (guest uptime at command start), command %.2fs, ", p, s, e - s
	printf "total %.2fs wall, exit %d\n", w, rc }' >&2
exit "$rc"
