#!/bin/bash
# The systemd units in unit/: `systemd-analyze verify` must be clean, `systemd-analyze security`
# is recorded (and must not regress past a threshold), and the ordering rules of
# shared/notes/real-kernel-tests.md hold. The units run for real in the VM: tests/vm/boot_*.sh.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
K=$(realpath -- "${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}")
src=$(cd "$here/../.." && pwd)
command -v systemd-analyze >/dev/null || { echo "FATAL: systemd-analyze not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
# Exposure score above which the test fails (measured 3.3 with systemd 252 on 2026-11-30).
max_exposure=4.0

# A root laid out like `cmake --install` with the default prefix: the units name `kmscrypt`
# without a path, which systemd resolves in its fixed search path (/usr/local/sbin, /usr/sbin...).
root=$tmp/root
mkdir -p "$root/usr/local/sbin" "$root/usr/local/lib/systemd/system"
cp "$K" "$root/usr/local/sbin/kmscrypt"
# What a unit with default dependencies (kmscrypt-watch.service) needs from the OS: the targets
# it is ordered against, and /bin/kill of its ExecReload=.
mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
for t in sysinit.target basic.target shutdown.target network-online.target multi-user.target; do
	cp "/usr/lib/systemd/system/$t" "$root/usr/lib/systemd/system/" ||
		{ echo "FATAL: /usr/lib/systemd/system/$t missing" >&2; exit 1; }
done
cp /bin/kill "$root/bin/kill" || { echo "FATAL: /bin/kill missing (procps)" >&2; exit 1; }
units=()
for u in "$src"/unit/*.service; do
	cp "$u" "$root/usr/local/lib/systemd/system/"
	units+=("${u##*/}")
done
expect_eq "$((${#units[@]} > 0))" 1 "unit/ has service units (${units[*]})"
for u in kmscrypt-unlock.service kmscrypt-watch.service; do
	expect_eq "$(printf '%s\n' "${units[@]}" | grep -cxF "$u")" 1 "unit/ has $u"
done

# --man=no: the man page is not installed into this root (man/kmscrypt.8 is checked by the build).
for u in "${units[@]}"; do
	expect_rc 0 "systemd-analyze verify $u" -- systemd-analyze verify --root="$root" --man=no "$u"
	expect_eq "$OUT" "" "systemd-analyze verify $u prints nothing (no warning)"
done

# The checks above can fail: a unit with an unknown key and one whose binary is missing.
cp "$root/usr/local/lib/systemd/system/kmscrypt-unlock.service" \
	"$root/usr/local/lib/systemd/system/kmscrypt-broken.service"
echo 'NoSuchKey=1' >>"$root/usr/local/lib/systemd/system/kmscrypt-broken.service"
systemd-analyze verify --root="$root" --man=no kmscrypt-broken.service >broken.out 2>&1
expect_eq "$(grep -c "Unknown key 'NoSuchKey'" broken.out)" 1 "verify reports an unknown key"
rm -f "$root/usr/local/lib/systemd/system/kmscrypt-broken.service"
mv "$root/usr/local/sbin/kmscrypt" "$root/kmscrypt.away"
expect_rc 1 "verify fails when kmscrypt is not installed" -- \
	systemd-analyze verify --root="$root" --man=no kmscrypt-unlock.service
mv "$root/kmscrypt.away" "$root/usr/local/sbin/kmscrypt"

# ---- kmscrypt-unlock.service
u=$src/unit/kmscrypt-unlock.service
prop() { # KEY: the values of KEY= lines, space-joined
	sed -n "s/^$1=//p" "$u" | tr '\n' ' ' | sed 's/ $//'
}
expect_eq "$(prop Type)" oneshot "unlock unit is a oneshot"
expect_eq "$(prop RemainAfterExit)" yes "unlock unit stays active (ExecStop at shutdown)"
expect_eq "$(grep -c '^ExecStart=kmscrypt unlock --all --wait-kms [0-9]' "$u")" 1 \
	"ExecStart runs 'kmscrypt unlock --all --wait-kms N'"
expect_eq "$(prop SuccessExitStatus)" "3 4 5 6 8" \
	"per-volume failure classes do not fail the unit (nofail)"
expect_eq "$(prop ExecStop)" "-kmscrypt lock --all" "ExecStop closes the volumes at shutdown"
for kv in NoNewPrivileges=yes ProtectSystem=strict StateDirectory=kmscrypt ProtectHome=yes \
	PrivateTmp=yes LimitCORE=0 MemoryDenyWriteExecute=yes \
	"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_ALG" \
	"CapabilityBoundingSet=CAP_SYS_ADMIN CAP_IPC_LOCK" "Conflicts=umount.target shutdown.target"; do
	expect_eq "$(grep -cxF "$kv" "$u")" 1 "unlock unit has $kv"
done
expect_out_of() { grep -qw -- "$1" <<<"$2"; }
after=$(prop After) before=$(prop Before) wants=$(prop Wants)
expect_eq "$(expect_out_of network-online.target "$after" && echo y)" y "After= network-online.target"
expect_eq "$(expect_out_of network-online.target "$wants" && echo y)" y "Wants= network-online.target"
for t in remote-fs-pre.target cryptsetup.target remote-cryptsetup.target umount.target; do
	expect_eq "$(expect_out_of $t "$before" && echo y)" y "Before= $t"
done
# The documented ordering cycle: PrivateTmp= orders the unit after systemd-tmpfiles-setup
# (after local-fs.target); being before local-fs-pre.target or local-fs.target closes a cycle.
for t in local-fs-pre.target local-fs.target sysinit.target; do
	expect_eq "$(expect_out_of $t "$before" || echo n)" n "not Before= $t (ordering cycle)"
done

# The unit with this machine's units (network-online.target, remote-fs-pre.target, tmpfiles...):
# verify builds its start transaction, which fails on an ordering cycle.
mkdir -p host
sed "s|^ExecStart=kmscrypt |ExecStart=$K |; s|^ExecStop=-kmscrypt |ExecStop=-$K |" "$u" \
	>host/kmscrypt-unlock.service
expect_rc 0 "systemd-analyze verify against this machine's units" -- \
	systemd-analyze verify --man=no host/kmscrypt-unlock.service
expect_not_out "cycle" "no ordering cycle reported"
expect_eq "$OUT" "" "verify against this machine's units prints nothing"

# ---- kmscrypt-watch.service (notes/watch-contract.md)
u=$src/unit/kmscrypt-watch.service
expect_eq "$(prop Type)" notify "watch unit is Type=notify (READY=1 after the first round)"
expect_eq "$(prop NotifyAccess)" main "only the watcher's main process may notify"
expect_eq "$(prop ExecStart)" \
	"kmscrypt watch --metrics-file /var/lib/prometheus/node-exporter/kmscrypt.prom" \
	"ExecStart runs the watcher with node_exporter's textfile directory"
expect_eq "$(prop ExecReload)" '/bin/kill -HUP $MAINPID' "reload is SIGHUP"
expect_eq "$(prop WatchdogSec)" 120 "WatchdogSec=120 (pings at 60 s, half of it)"
expect_eq "$(prop Restart)" on-failure "Restart=on-failure"
expect_eq "$(prop WantedBy)" multi-user.target "WantedBy=multi-user.target"
after=$(prop After) wants=$(prop Wants)
for t in kmscrypt-unlock.service network-online.target; do
	expect_eq "$(expect_out_of $t "$after" && echo y)" y "watch unit After= $t"
done
expect_eq "$(expect_out_of network-online.target "$wants" && echo y)" y \
	"watch unit Wants= network-online.target"
expect_eq "$(prop ReadWritePaths)" "-/run/cryptsetup -/var/lib/prometheus/node-exporter" \
	"watch unit may write the LUKS2 locks and the metrics directory, both optional"
# Hardened exactly like the unlock unit: the same settings from NoNewPrivileges= to UMask=, but
# for ReadWritePaths= (checked above).
hardening() { # UNIT: its hardening settings, comments and ReadWritePaths= left out, sorted
	sed -n '/^NoNewPrivileges=/,/^UMask=/p' "$1" | grep -v -e '^#' -e '^ReadWritePaths=' | sort
}
expect_eq "$(hardening "$u")" "$(hardening "$src/unit/kmscrypt-unlock.service")" \
	"watch unit has the unlock unit's hardening"
expect_eq "$(hardening "$u" | grep -cx -e NoNewPrivileges=yes -e UMask=0077)" 2 \
	"... and the comparison saw the whole block (NoNewPrivileges= to UMask=)"

mkdir -p host
sed "s|^ExecStart=kmscrypt |ExecStart=$K |" "$u" >host/kmscrypt-watch.service
expect_rc 0 "systemd-analyze verify kmscrypt-watch.service against this machine's units" -- \
	systemd-analyze verify --man=no host/kmscrypt-watch.service
expect_eq "$OUT" "" "verify of the watch unit against this machine's units prints nothing"

# ---- security score (recorded in the test log)
for u in kmscrypt-unlock.service kmscrypt-watch.service; do
	systemd-analyze security --offline=yes --root="$root" --no-pager "$u" >security.out 2>&1
	score=$(sed -n "s/.*Overall exposure level for $u: \([0-9.]*\).*/\1/p" security.out)
	echo "# systemd-analyze security $u: exposure $score (lower is better)"
	grep '✗' security.out | sed 's/^/#   /'
	expect_eq "$(awk -v s="$score" -v m="$max_exposure" 'BEGIN { print (s != "" && s <= m) }')" \
		1 "$u: exposure level $score <= $max_exposure"
done

finish
