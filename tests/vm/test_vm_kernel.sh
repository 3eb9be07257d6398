#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# The real-kernel facts kmscrypt relies on, checked with cryptsetup/dmsetup/keyctl alone (no
# kmscrypt): if this fails, the VM or the kernel is the problem, not the agent.
# - LUKS2 open hands the key over through the keyring; suspend wipes it; I/O on a suspended
#   device blocks (not fails) and completes after resume.
# - Plain dm-crypt with an agent-owned logon key: the table names the key, `key wipe` zeroes it,
#   resume without a key is refused, `key set` + resume brings the device back.
set -euo pipefail
T_NO_KMSCRYPT=1
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

case_modules() {
	local m
	for m in dm_mod dm_crypt loop xts; do
		[[ -d /sys/module/$m ]] || t_fail "module $m loaded" "/sys/module/$m" "absent"
	done
	t_ok "dm_mod dm_crypt loop xts loaded"
	[[ -c /dev/mapper/control ]] || t_fail "/dev/mapper/control" "a char device" "absent"
	assert_match '^[0-9]' "$(keyctl show @s | awk 'NR == 2 { print $1 }')" "a session keyring"
	[[ -d /run/cryptsetup ]] || t_fail "/run/cryptsetup" "a directory" "absent"
	[[ -e /dev/fd/0 ]] || t_fail "/dev/fd" "/dev/fd/0 exists" "absent"
	t_ok "/run/cryptsetup and /dev/fd exist"
}

case_luks2_suspend() {
	local dev uuid reader
	t_loop dev luks
	head -c 32 /dev/urandom >"$WORK/key"
	cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
		--key-file "$WORK/key" "$dev"
	uuid=$(t_uuid "$dev")
	cryptsetup open --key-file "$WORK/key" "$dev" vt-luks
	assert_eq ACTIVE "$(t_dm_state vt-luks)" "dm state after open"
	assert_match "^:64:logon:cryptsetup:$uuid-d0\$" "$(t_table_key vt-luks)" \
		"LUKS2 table names the keyring key"
	assert_no_key_in_proc_keys "$uuid"
	t_write_data vt-luks luks

	cryptsetup luksSuspend vt-luks
	assert_eq SUSPENDED "$(t_dm_state vt-luks)" "dm state after luksSuspend"
	assert_table_key_wiped vt-luks
	t_reader vt-luks 5000
	reader=$T_READER
	assert_blocked "$reader" 2
	cryptsetup luksResume --key-file "$WORK/key" vt-luks
	assert_reader_done "$reader" 20
	t_check_data vt-luks luks
	cryptsetup close vt-luks
	assert_eq absent "$(t_dm_state vt-luks)" "dm state after close"
}

case_plain_logon_key() {
	local dev size key desc reader
	t_loop dev plain 16M
	size=$(blockdev --getsz "$dev")
	desc=kmscrypt:vm-test-$$
	head -c 64 /dev/urandom >"$WORK/pkey"
	key=$(keyctl padd logon "$desc" @s <"$WORK/pkey")
	dmsetup create vt-plain --table "0 $size crypt aes-xts-plain64 :64:logon:$desc 0 $dev 0"
	assert_eq ":64:logon:$desc" "$(t_table_key vt-plain)" "plain table names the logon key"
	t_write_data vt-plain plain

	# revoke: suspend, wipe dm-crypt's copy, drop ours
	dmsetup suspend vt-plain
	dmsetup message vt-plain 0 key wipe
	keyctl invalidate "$key"
	assert_table_key_wiped vt-plain
	assert_eq "" "$(grep -F "$desc" /proc/keys || true)" \
		"logon key gone after invalidate (GC is async)"
	t_reader vt-plain 1000
	reader=$T_READER
	if dmsetup resume vt-plain 2>/dev/null; then
		t_fail "resume without a key" "refused" "resumed"
	fi
	t_ok "resume without a key refused"
	assert_eq SUSPENDED "$(t_dm_state vt-plain)" "still suspended after the refused resume"
	assert_blocked "$reader" 2

	# restore: the key again, `key set`, resume
	keyctl padd logon "$desc" @s <"$WORK/pkey" >/dev/null
	dmsetup message vt-plain 0 key set ":64:logon:$desc"
	dmsetup resume vt-plain
	assert_reader_done "$reader" 20
	assert_eq ACTIVE "$(t_dm_state vt-plain)" "dm state after key set + resume"
	t_check_data vt-plain plain
	dmsetup remove vt-plain
}

t_case modules case_modules
t_case luks2-suspend case_luks2_suspend
t_case plain-logon-key case_plain_logon_key
t_finish
