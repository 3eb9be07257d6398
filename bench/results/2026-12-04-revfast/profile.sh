#!/bin/bash
# Profile of `kmscrypt revoke --all` at N volumes (default 32), inside the test VM:
#   KMSCRYPT=$B/kmscrypt KMSCRYPT_PROFILE_OUT=$B/profile bash scripts/vm/run.sh --build-dir $B \
#     --smp 2 --mem 2048 --timeout 840 -- bash bench/results/2026-12-04-revfast/profile.sh
# KMSCRYPT_PROFILE_N volumes (32), KMSCRYPT_PROFILE_REPS plain runs (3).  Writes to
# $KMSCRYPT_PROFILE_OUT: wall times of the plain runs (wall.txt), strace -f -c of one run
# (strace-c.txt), and the dm ioctls, fsyncs and opens of another, counted by kind (counts.txt).
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/../../../tests/vm/lib.sh"
N=${KMSCRYPT_PROFILE_N:-32}
OUT=${KMSCRYPT_PROFILE_OUT:?}
mkdir -p "$OUT"

case_profile() {
	local i dev t0 t1
	t_kms_local pf
	# as bench/guest.sh: one PBKDF2 template, copies with their own UUID, bound by kmscrypt
	printf %s pw >"$WORK/pw"
	truncate -s 16M "$WORK/tpl.img"
	cryptsetup luksFormat -q --type luks2 --luks2-metadata-size 16k --luks2-keyslots-size 2m \
		--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$WORK/pw" "$WORK/tpl.img"
	for ((i = 1; i <= N; i++)); do
		cp --sparse=always "$WORK/tpl.img" "$WORK/v$i.img"
		t_loop dev "v$i" 16M # attaches the copy ($WORK/v$i.img)
		cryptsetup luksUUID -q --uuid "$(</proc/sys/kernel/random/uuid)" "$dev"
		cryptsetup config --label "kv-pf$i" "$dev"
		kc 0 "bind $dev" -- -q bind "$dev" --kms pf --key-file "$WORK/pw"
	done
	kc 0 "unlock --all" -- unlock --all
	for ((rep = 1; rep <= ${KMSCRYPT_PROFILE_REPS:-3}; rep++)); do
		t0=${EPOCHREALTIME/./}
		kc 0 "revoke --all" -- -q revoke --all --reason prof
		t1=${EPOCHREALTIME/./}
		echo "plain revoke --all N=$N rep $rep: $(((t1 - t0) / 1000)) ms" | tee -a "$OUT/wall.txt"
		kc 0 "restore --all" -- -q restore --all
	done
	strace -f -c -o "$OUT/strace-c.txt" "$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" -q \
		revoke --all --reason prof
	kc 0 "restore --all" -- -q restore --all
	strace -f -e trace=ioctl,fsync,fdatasync,openat -o "$OUT/strace-io.txt" "$KMSCRYPT" \
		--config-dir "$CFG" --state-dir "$STATE" -q revoke --all --reason prof
	{
		echo "revoke --all of N=$N, whole command (parent + workers), syscalls by kind:"
		for k in DM_LIST_DEVICES DM_TABLE_STATUS DM_DEV_STATUS DM_DEV_SUSPEND DM_TARGET_MSG; do
			printf '  %-16s %5d\n' "$k" "$(grep -c "$k" "$OUT/strace-io.txt" || true)"
		done
		printf '  %-16s %5d\n' fsync "$(grep -c 'fsync(' "$OUT/strace-io.txt" || true)"
		printf '  %-16s %5d\n' "open /sys" "$(grep -c 'openat([^"]*"/sys/' "$OUT/strace-io.txt" || true)"
		printf '  %-16s %5d\n' "open /dev/loop" "$(grep -c 'openat([^"]*"/dev/loop' "$OUT/strace-io.txt" || true)"
	} | tee "$OUT/counts.txt"
	rm -f "$OUT/strace-io.txt"
	kc 0 "restore --all" -- -q restore --all
	t_ok profiled
}
t_case profile case_profile
t_finish
