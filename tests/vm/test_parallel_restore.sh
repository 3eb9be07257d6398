#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# restore --all resumes in worker processes (issue 13; agent/volume/pool.c, agent/core/all.c), on a
# real kernel. Eight open volumes with data, revoked; the KMS of the eighth then denies (its local
# key file is moved away). restore --all: the seven others are ACTIVE with logon-key tables and
# their data intact, the denied one is reported on its own, stays SUSPENDED with the zero key and
# marked revoked; no key is left in any keyring; the resumes were done by worker processes whose
# [start, end] intervals overlap (their --debug lines: PID, start and end on the monotonic clock;
# no timing threshold). KMSCRYPT_TEST_WORKERS=4 asks for four workers whatever the CPU count.
# Once the key file is back, restore resumes the eighth too.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_parallel_restore.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

NV=8

# No kmscrypt or cryptsetup key in the session and user keyrings nor anywhere in /proc/keys.
assert_no_keys_anywhere() {
	local line seen='' k i
	for k in @s @u; do
		seen=$(keyctl show "$k" 2>&1 | grep -E 'kmscrypt:|cryptsetup:' || true)
		[[ -z $seen ]] || t_fail "no kmscrypt/cryptsetup key in $k" "none" "$seen"
		t_ok "keyctl show $k lists no kmscrypt/cryptsetup key"
	done
	for ((i = 0; i < 50; i++)); do
		seen=
		while read -r line; do
			[[ $line =~ (kmscrypt|cryptsetup): ]] && seen+="$line; "
		done </proc/keys
		[[ -z $seen ]] && break
		sleep 0.1
	done
	[[ -z $seen ]] || t_fail "no kmscrypt/cryptsetup key in /proc/keys" "no line" "$seen"
	t_ok "no kmscrypt/cryptsetup key in /proc/keys"
}

# WANT resumes done by workers, two of them (different PIDs) overlapping in time, from the --debug
# lines "Activation worker PID: resuming 'NAME' from T ms." / "... 'NAME' resumed until T ms."
assert_resumes_overlap() { # STDERR-FILE WANT
	local line pid t n=0 pids=() starts=() ends=() i j overlap=''
	declare -A start=()
	while read -r line; do
		if [[ $line =~ Activation\ worker\ ([0-9]+):\ resuming\ .*\ from\ ([0-9.]+)\ ms ]]; then
			start[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
		elif [[ $line =~ Activation\ worker\ ([0-9]+):\ .*\ resumed\ until\ ([0-9.]+)\ ms ]]; then
			pid=${BASH_REMATCH[1]}
			t=${BASH_REMATCH[2]}
			[[ -n ${start[$pid]:-} ]] || continue
			pids+=("$pid")
			starts+=("${start[$pid]/./}")
			ends+=("${t/./}")
			unset "start[$pid]"
			n=$((n + 1))
		fi
	done <"$1"
	assert_eq "$2" "$n" "resumes done by worker processes (one per restored volume)"
	for ((i = 0; i < n; i++)); do
		for ((j = i + 1; j < n; j++)); do
			[[ ${pids[i]} != "${pids[j]}" ]] || continue
			if ((10#${starts[i]} < 10#${ends[j]} && 10#${starts[j]} < 10#${ends[i]})); then
				overlap="worker ${pids[i]} and worker ${pids[j]}"
				break 2
			fi
		done
	done
	[[ -n $overlap ]] || t_fail "two resumes in different workers overlap in time" \
		"an overlapping pair" "$(grep 'Activation worker' "$1" | tr '\n' ' ')"
	t_ok "resumes overlapped: $overlap"
	t_ok "$(printf '%s\n' "${pids[@]}" | sort -u | wc -l) distinct worker PIDs (at most 4)"
}

result_of() { # JSON UUID
	jq -r --arg u "$2" '[.. | objects | select(.uuid? == $u and has("result"))][0].result' <<<"$1"
}

case_parallel_restore() {
	local i dev uuid devs=() uuids=() kms out
	t_kms_local pr
	t_kms_local pd
	for ((i = 1; i <= NV; i++)); do
		kms="pr"
		((i == NV)) && kms="pd"
		t_volume dev uuid "pr$i" "$kms" "kv-pr$i"
		devs+=("$dev")
		uuids+=("$uuid")
	done
	kc 0 "unlock --all" -- unlock --all
	for ((i = 1; i <= NV; i++)); do
		t_write_data "kv-pr$i" "pr$i"
	done
	kc 0 "revoke --all" -- revoke --all --reason "parallel restore"
	for ((i = 1; i <= NV; i++)); do
		assert_table_key_wiped "kv-pr$i"
	done

	# The eighth volume's KMS now denies: its key file is gone.
	mv "$WORK/pd.key" "$WORK/pd.key.away"
	KMSCRYPT_TEST_WORKERS=4 kc 3 "restore --all: one volume's KMS denies" -- \
		--debug restore --all --json
	out=$(<"$T_OUT")
	for ((i = 1; i < NV; i++)); do
		assert_eq ACTIVE "$(t_dm_state "kv-pr$i")" "kv-pr$i resumed"
		assert_table_uses_keyring "kv-pr$i"
		t_check_data "kv-pr$i" "pr$i"
		assert_eq restored "$(result_of "$out" "${uuids[i - 1]}")" "JSON result of kv-pr$i"
		assert_eq false "$(jq -r ".revoked // false" "$STATE/volumes/${uuids[i - 1]}.json")" \
			"kv-pr$i no longer marked revoked"
	done
	assert_eq SUSPENDED "$(t_dm_state "kv-pr$NV")" "kv-pr$NV (denied) stays suspended"
	assert_table_key_wiped "kv-pr$NV"
	assert_eq error "$(result_of "$out" "${uuids[NV - 1]}")" "JSON result of kv-pr$NV"
	assert_eq true "$(jq -r ".revoked // false" "$STATE/volumes/${uuids[NV - 1]}.json")" \
		"kv-pr$NV still marked revoked"
	assert_match "denied" "$(grep -F "${uuids[NV - 1]}" "$T_ERR")" \
		"the denied volume's own error on stderr"
	assert_eq 1 "$(grep -c "^Cannot restore .*denied" "$T_ERR")" "one volume reports a denial"
	assert_no_keys_anywhere
	assert_resumes_overlap "$T_ERR" $((NV - 1))

	# Access is back: the eighth resumes, its data intact.
	mv "$WORK/pd.key.away" "$WORK/pd.key"
	kc 0 "restore --all once the KMS answers again" -- restore --all
	assert_eq ACTIVE "$(t_dm_state "kv-pr$NV")" "kv-pr$NV resumed"
	assert_table_uses_keyring "kv-pr$NV"
	t_check_data "kv-pr$NV" "pr$NV"
	assert_no_keys_anywhere

	kc 0 "lock --all" -- lock --all
	for ((i = 1; i <= NV; i++)); do
		assert_eq absent "$(t_dm_state "kv-pr$i")" "kv-pr$i closed"
	done
}

t_case parallel-restore case_parallel_restore
t_finish
