#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# The dm work of a revoke does not grow with the other dm devices of the host (issue 13): revoke
# reads the tables of the volume's own devices only (its dm uuid, from sysfs, names the volume),
# never one table per dm device per listing. Counted with strace (DM_TABLE_STATUS ioctls of the
# whole command, libcryptsetup's included), on a real kernel:
#   - revoke of one open volume, once with no other dm device and once beside 16 others (8
#     without a dm uuid, 8 with a CRYPT-LUKS2-/CRYPT-SUBDEV- uuid of other LUKS UUIDs): the same
#     number of table reads; every time the table shows the zero key and restore brings it back;
#   - revoke --all of two open volumes opens neither crypt mapping (the scan skips plaintext) and
#     never looks for an external token plugin;
#   - lock --all of two open volumes (a third closed) reads their two headers only, without
#     libcryptsetup (no OpenSSL provider load, no metadata lock), and closes both;
#   - lock of a mapping another dm device holds is refused at once (exit 7, "in use").
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_revoke_scaling.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

command -v strace >/dev/null || { echo "FATAL: strace not found (apt-get install strace)" >&2; exit 1; }

# table_reads: DM_TABLE_STATUS ioctls of `kmscrypt revoke kv-sc` (named, or the raw number
# _IOWR(0xfd, 12, struct dm_ioctl) when strace does not decode dm ioctls)
table_reads() {
	strace -f -qq -e trace=ioctl -o "$WORK/strace.$1" "$KMSCRYPT" --config-dir "$CFG" \
		--state-dir "$STATE" -q revoke kv-sc --reason "scaling $1" >"$WORK/revoke.$1.out" 2>&1 ||
		t_fail "revoke under strace ($1)" "exit 0" "$(cat "$WORK/revoke.$1.out")"
	grep -cE 'DM_TABLE_STATUS|0xc138fd0c' "$WORK/strace.$1" || true
}

check_revoked() { # WHAT
	local key
	key=$(t_table_key kv-sc)
	[[ $key =~ ^0{64,}$ ]] || t_fail "kv-sc shows the zero key after revoke ($1)" "0...0" "${key:0:12}..."
	assert_eq SUSPENDED "$(t_dm_state kv-sc)" "kv-sc suspended ($1)"
	kc 0 "restore ($1)" -- -q restore kv-sc
	assert_eq ACTIVE "$(t_dm_state kv-sc)" "kv-sc back after restore ($1)"
}

case_revoke_scaling() {
	local dev uuid alone beside i hex # (uuid: set by t_volume)
	t_kms_local sc
	t_volume dev uuid sc sc kv-sc
	t_log "kv-sc is volume $uuid on $dev"
	kc 0 "unlock" -- -q unlock "$dev"
	assert_eq ACTIVE "$(t_dm_state kv-sc)" "kv-sc open"

	alone=$(table_reads alone)
	check_revoked alone
	for ((i = 1; i <= 8; i++)); do
		dmsetup create "other$i" --table "0 8 error"
		hex=$(tr -d - </proc/sys/kernel/random/uuid)
		if ((i % 2)); then
			dmsetup create "crypt$i" --uuid "CRYPT-LUKS2-$hex-crypt$i" --table "0 8 error"
		else
			dmsetup create "sub$i" --uuid "CRYPT-SUBDEV-$hex-sub$i" --table "0 8 error"
		fi
	done
	assert_eq 17 "$(dmsetup ls | wc -l)" "dm devices beside kv-sc"
	beside=$(table_reads beside)
	check_revoked beside
	t_log "DM_TABLE_STATUS ioctls of one revoke: $alone alone, $beside beside 16 other dm devices"
	((alone > 0)) || t_fail "strace sees the table reads" "> 0" "$alone"
	assert_eq "$alone" "$beside" "table reads of a revoke beside 16 other dm devices (as alone)"
}

# What revoke --all opens, with two volumes open (strace, openat of the whole command): the
# listing reads each header once and never the open crypt mappings themselves (plaintext: every
# probe of one decrypts), and kmscrypt never asks libcryptsetup for external token plugins (it
# unwraps its own tokens; each header load would dlopen libcryptsetup-token-kmscrypt.so again).
case_revoke_opens() {
	local dev1 dev2 uuid1 uuid2 dm_opens plugin_opens loop_opens m key
	t_kms_local so
	t_volume dev1 uuid1 so1 so kv-so1
	t_volume dev2 uuid2 so2 so kv-so2
	kc 0 "unlock --all" -- -q unlock --all
	assert_eq ACTIVE "$(t_dm_state kv-so1)" "kv-so1 open"
	assert_eq ACTIVE "$(t_dm_state kv-so2)" "kv-so2 open"
	strace -f -qq -e trace=openat -o "$WORK/strace.opens" "$KMSCRYPT" --config-dir "$CFG" \
		--state-dir "$STATE" -q revoke --all --reason opens >"$WORK/revoke.opens.out" 2>&1 ||
		t_fail "revoke --all under strace" "exit 0" "$(cat "$WORK/revoke.opens.out")"
	for m in kv-so1 kv-so2; do
		key=$(t_table_key "$m")
		[[ $key =~ ^0{64,}$ ]] || t_fail "$m shows the zero key after revoke --all" "0...0" "${key:0:12}..."
		assert_eq SUSPENDED "$(t_dm_state "$m")" "$m suspended by revoke --all"
	done
	dm_opens=$(grep -cE 'openat\(.*"/dev/(dm-[0-9]+|mapper/kv-so[12])"' "$WORK/strace.opens" || true)
	plugin_opens=$(grep -c 'libcryptsetup-token-' "$WORK/strace.opens" || true)
	loop_opens=$(grep -cE "openat\(.*\"($dev1|$dev2)\"" "$WORK/strace.opens" || true)
	t_log "revoke --all of 2 open volumes: $dm_opens opens of their crypt mappings," \
		"$plugin_opens token plugin lookups, $loop_opens opens of their backing devices"
	assert_eq 0 "$dm_opens" "opens of the open crypt mappings (plaintext) by revoke --all"
	assert_eq 0 "$plugin_opens" "external token plugin lookups by revoke --all"
	kc 0 "restore --all" -- -q restore --all
	assert_eq ACTIVE "$(t_dm_state kv-so1)" "kv-so1 back after restore --all"
	assert_eq ACTIVE "$(t_dm_state kv-so2)" "kv-so2 back after restore --all"
}

# What lock --all of two open volumes costs (strace, openat of the whole command): it lists the open
# volumes from device-mapper alone (no scan: no other block device is opened), reads each header
# without libcryptsetup (no crypto backend: OpenSSL's providers are never loaded; no metadata lock
# under /run/cryptsetup) and removes each mapping straight through device-mapper; both are closed
# and /dev/mapper has no trace of them.  A volume on a third loop device that is closed stays
# out of it.
case_lock_opens() {
	local dev1 dev2 dev3 uuid1 uuid2 uuid3 ossl locks others loop_opens
	t_kms_local lo
	t_volume dev1 uuid1 lo1 lo kv-lo1
	t_volume dev2 uuid2 lo2 lo kv-lo2
	t_volume dev3 uuid3 lo3 lo kv-lo3
	kc 0 "unlock kv-lo1" -- -q unlock "$dev1"
	kc 0 "unlock kv-lo2" -- -q unlock "$dev2"
	strace -f -qq -e trace=openat -o "$WORK/strace.lock" "$KMSCRYPT" --config-dir "$CFG" \
		--state-dir "$STATE" --json lock --all >"$WORK/lock.out" 2>"$WORK/lock.err" ||
		t_fail "lock --all under strace" "exit 0" "$(cat "$WORK/lock.err")"
	for m in kv-lo1 kv-lo2; do
		[[ ! -e /dev/mapper/$m ]] || t_fail "$m closed by lock --all" "no /dev/mapper/$m" "present"
		dmsetup info "$m" >/dev/null 2>&1 && t_fail "$m removed" "no dm device" "$(dmsetup info "$m")"
	done
	assert_eq 2 "$(grep -oE '"result": ?"locked"' "$WORK/lock.out" | wc -l)" "volumes reported locked"
	ossl=$(grep -c 'ossl-modules\|openssl.cnf' "$WORK/strace.lock" || true)
	locks=$(grep -c '/run/cryptsetup' "$WORK/strace.lock" || true)
	loop_opens=$(grep -cE "openat\(.*\"($dev1|$dev2)\"" "$WORK/strace.lock" || true)
	others=$(grep -cE 'openat\(.*"/dev/(loop|vd|sd)[a-z]*[0-9]*"' "$WORK/strace.lock" || true)
	others=$((others - loop_opens))
	t_log "lock --all of 2 open volumes: $loop_opens opens of their devices, $others of others," \
		"$ossl OpenSSL provider/config loads, $locks libcryptsetup lock files"
	assert_eq 0 "$ossl" "OpenSSL provider or config loads by lock --all (no libcryptsetup context)"
	assert_eq 0 "$locks" "libcryptsetup metadata locks taken by lock --all"
	assert_eq 0 "$others" "opens of block devices without an open volume by lock --all"
	assert_eq 2 "$loop_opens" "one header read per open volume"
	# and the closed ones open again
	kc 0 "unlock --all after lock --all" -- -q unlock --all
	assert_eq ACTIVE "$(t_dm_state kv-lo1)" "kv-lo1 open again"
	assert_eq ACTIVE "$(t_dm_state kv-lo3)" "kv-lo3 open"
}

# A mapping another device is stacked on (a holder) is refused at once with exit 7 and "in use",
# as cryptsetup close refuses it, not after seconds of removal retries; nothing changes; once the
# holder is gone the same lock closes it.
case_lock_busy() {
	local dev uuid t0 ms
	t_kms_local lb
	t_volume dev uuid lb lb kv-lb
	kc 0 "unlock" -- -q unlock "$dev"
	dmsetup create kv-lb-holder --table "0 8 linear /dev/mapper/kv-lb 0"
	t0=${EPOCHREALTIME/./}
	kc 7 "lock of a mapping with a holder is refused" -- lock kv-lb
	ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
	grep -q "in use" "$T_ERR" || t_fail "the refusal says it is in use" "in use" "$(cat "$T_ERR")"
	((ms < 3000)) || t_fail "refused at once" "< 3000 ms" "$ms ms"
	t_log "lock with a holder refused in $ms ms"
	assert_eq ACTIVE "$(t_dm_state kv-lb)" "kv-lb still open"
	dmsetup remove kv-lb-holder
	kc 0 "lock once the holder is gone" -- -q lock kv-lb
	dmsetup info kv-lb >/dev/null 2>&1 && t_fail "kv-lb closed" "no dm device" "present"
	return 0
}

t_case revoke_scaling case_revoke_scaling
t_case lock_busy case_lock_busy
t_case revoke_opens case_revoke_opens
t_case lock_opens case_lock_opens
t_finish
