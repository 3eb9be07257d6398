#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# revoke --all, restore --all and lock --all across many volumes at once (issue 13), on a real
# kernel:
#   - 8 open volumes with data; revoke --all: when it returns, every table shows the zero key and
#     every volume is marked revoked; the per-volume work overlapped (worker processes, seen in
#     --debug; KMSCRYPT_TEST_ALL_MEET makes each worker wait for a second one, so no timing);
#   - one volume whose revoke cannot complete (its disk became read-only: the revoked mark cannot
#     be written to its LUKS2 header) is reported on its own, its key still wiped, the others
#     revoked;
#   - restore --all brings every volume back with its data intact; lock --all closes them all.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_parallel_revoke.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

NV=8

# The "at most K at once" of a --debug run of WHAT --all: K >= 2, from >= 2 worker processes.
assert_overlap() { # WHAT KIND
	local err pids at
	err=$(<"$T_ERR")
	[[ $err =~ $1\ --all:\ $NV\ volumes\ in\ [0-9]+\ $2,\ at\ most\ ([0-9]+)\ at\ once ]] ||
		t_fail "$1 --all says how it ran (--debug)" "'$1 --all: $NV volumes in K $2, at most M at once'" \
			"$(grep -- "--all" "$T_ERR" | head -n 3)"
	at=${BASH_REMATCH[1]}
	((at >= 2)) || t_fail "$1 --all worked on several volumes at once" "at most >= 2" "$at"
	t_ok "$1 --all worked on up to $at volumes at once ($2)"
	if [[ $2 == "worker processes" ]]; then
		pids=$(grep -oE "$1 --all: worker [0-9]+ took" "$T_ERR" | sort -u | wc -l)
		((pids >= 2)) || t_fail "$1 --all used several worker processes" ">= 2" "$pids"
		t_ok "$1 --all: $pids worker processes took volumes"
	fi
}

case_parallel_all() {
	local i devs=() uuids=() dev uuid key js n
	t_kms_local pa
	for ((i = 1; i <= NV; i++)); do
		t_volume dev uuid "pa$i" pa "kv-pa$i"
		devs+=("$dev")
		uuids+=("$uuid")
	done
	kc 0 "unlock --all" -- unlock --all
	for ((i = 1; i <= NV; i++)); do
		assert_eq ACTIVE "$(t_dm_state "kv-pa$i")" "kv-pa$i open"
		t_write_data "kv-pa$i" "pa$i"
	done

	# The last volume's disk turns read-only: its header cannot take the revoked mark.
	blockdev --setro "${devs[NV - 1]}"
	KMSCRYPT_TEST_ALL_MEET=1 kc 5 "revoke --all (one disk read-only)" -- \
		--debug --json revoke --all --reason "parallel"
	for ((i = 1; i <= NV; i++)); do
		key=$(t_table_key "kv-pa$i")
		[[ $key =~ ^0{64,}$ ]] ||
			t_fail "kv-pa$i shows the zero key when revoke --all returned" "0...0" \
				"${key:0:12}..."
	done
	t_ok "all $NV tables show the zero key when revoke --all returned"
	assert_overlap revoke "worker processes"
	js=$(<"$T_OUT")
	n=$(jq '[.volumes[] | select(.result == "revoked" and .exit == 0 and
		.dm_key_wiped == true)] | length' <<<"$js")
	assert_eq $((NV - 1)) "$n" "volumes revoked in the --json result"
	assert_eq "error 5 ${devs[NV - 1]}" "$(jq -r --arg d "${devs[NV - 1]}" \
		'.volumes[] | select(.device == $d) | "\(.result) \(.exit) \(.device)"' <<<"$js")" \
		"the read-only volume is reported on its own"
	assert_match "mark could not be saved in its LUKS2 header" "$(<"$T_ERR")" \
		"the error says the header mark is missing"
	for ((i = 1; i <= NV; i++)); do
		assert_eq true "$(jq -r ".revoked // false" "$STATE/volumes/${uuids[i - 1]}.json")" \
			"kv-pa$i marked revoked in the state dir"
		((i == NV)) && continue
		assert_eq true "$(cryptsetup token export --token-id "$(t_token_id "${devs[i - 1]}")" \
			"${devs[i - 1]}" | jq -r 'has("revoked")')" "kv-pa$i marked revoked in its header"
	done
	n=$(grep -c '"action":"revoke"' "$STATE/audit.log")
	assert_eq "$NV" "$n" "one revoke audit record per volume"
	blockdev --setrw "${devs[NV - 1]}"

	KMSCRYPT_TEST_ALL_MEET=1 kc 0 "restore --all" -- --debug restore --all
	assert_overlap restore threads
	for ((i = 1; i <= NV; i++)); do
		assert_eq ACTIVE "$(t_dm_state "kv-pa$i")" "kv-pa$i resumed"
		t_check_data "kv-pa$i" "pa$i"
		assert_eq false "$(jq -r ".revoked // false" "$STATE/volumes/${uuids[i - 1]}.json")" \
			"kv-pa$i no longer marked revoked"
	done

	KMSCRYPT_TEST_ALL_MEET=1 kc 0 "lock --all" -- --debug lock --all
	assert_overlap lock "worker processes"
	for ((i = 1; i <= NV; i++)); do
		assert_eq absent "$(t_dm_state "kv-pa$i")" "kv-pa$i closed"
	done
	n=$(grep -c '"action":"lock"' "$STATE/audit.log")
	assert_eq "$NV" "$n" "one lock audit record per volume"
}

t_case parallel_all case_parallel_all
t_finish
