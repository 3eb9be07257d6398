#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# Parallel activation (issue 13) on a real kernel: `unlock --all` activates in worker processes
# (agent/volume/pool.c). Eight volumes, one whose token does not open its keyslot: the seven
# others are ACTIVE with logon-key tables, the bad one has its own error and exit code, no key is
# left in any keyring, and the activations overlapped (the workers' --debug lines: PID, start and
# end on the monotonic clock). The guest may have one vCPU: KMSCRYPT_TEST_WORKERS=4 asks for four
# workers whatever the CPU count.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_parallel_unlock.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# Replace keyslot KS of DEVICE (opened by the recovery key in REC) with one for another
# passphrase and give the kmscrypt token back to it: the token unwraps, the secret does not open
# the keyslot (the activation fails inside a worker).
t_break_keyslot() { # DEVICE REC KS
	head -c 32 /dev/urandom >"$WORK/other.key"
	cryptsetup luksKillSlot -q --key-file "$2" "$1" "$3"
	cryptsetup luksAddKey -q --key-file "$2" --new-key-slot "$3" --pbkdf pbkdf2 \
		--pbkdf-force-iterations 1000 "$1" "$WORK/other.key"
	cryptsetup token export --token-id 0 "$1" | jq -c ".keyslots = [\"$3\"]" >"$WORK/tok.json"
	cryptsetup token remove --token-id 0 "$1"
	cryptsetup token import --token-id 0 --json-file "$WORK/tok.json" "$1"
}

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

# Two worker activations (different PIDs) whose [start, end] intervals overlap, from the --debug
# lines "Activation worker PID: activating 'DEV' as 'NAME' from T ms." / "... until T ms."
assert_activations_overlap() { # STDERR-FILE
	local line pid t n=0 pids=() starts=() ends=() i j overlap=''
	declare -A start=()
	while read -r line; do
		if [[ $line =~ Activation\ worker\ ([0-9]+):\ activating\ .*\ from\ ([0-9.]+)\ ms ]]; then
			start[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
		elif [[ $line =~ Activation\ worker\ ([0-9]+):\ .*\ until\ ([0-9.]+)\ ms ]]; then
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
	assert_eq 8 "$n" "activations done by workers (one per volume)"
	for ((i = 0; i < n; i++)); do
		for ((j = i + 1; j < n; j++)); do
			[[ ${pids[i]} != "${pids[j]}" ]] || continue
			if ((10#${starts[i]} < 10#${ends[j]} && 10#${starts[j]} < 10#${ends[i]})); then
				overlap="worker ${pids[i]} and worker ${pids[j]}"
				break 2
			fi
		done
	done
	[[ -n $overlap ]] || t_fail "two activations in different workers overlap in time" \
		"an overlapping pair" "$(grep 'Activation worker' "$1" | tr '\n' ' ')"
	t_ok "activations overlapped: $overlap"
	t_ok "$(printf '%s\n' "${pids[@]}" | sort -u | wc -l) distinct worker PIDs (at most 4)"
}

case_parallel_unlock() {
	local i dev uuid devs=() uuids=() bad=5 ks out
	t_kms_local kp
	for ((i = 1; i <= 8; i++)); do
		t_volume dev uuid "p$i" kp "kv-p$i" --recovery-key-file "$WORK/rec$i"
		devs+=("$dev")
		uuids+=("$uuid")
	done
	ks=$(cryptsetup luksDump --dump-json-metadata "${devs[bad - 1]}" |
		jq -r '[.tokens[] | select(.type == "kmscrypt")][0].keyslots[0]')
	t_break_keyslot "${devs[bad - 1]}" "$WORK/rec$bad" "$ks"

	KMSCRYPT_TEST_WORKERS=4 kc 8 "unlock --all: one volume's secret does not open its keyslot" \
		-- --debug unlock --all --json
	out=$(cat "$T_OUT")
	for ((i = 1; i <= 8; i++)); do
		if ((i == bad)); then
			assert_eq absent "$(t_dm_state "kv-p$i")" "kv-p$i (bad keyslot) is not open"
			assert_eq error "$(jq -r --arg u "${uuids[i - 1]}" \
				'[.. | objects | select(.uuid? == $u and has("result"))][0].result' \
				<<<"$out")" "JSON result of kv-p$i"
			continue
		fi
		assert_eq ACTIVE "$(t_dm_state "kv-p$i")" "kv-p$i is open"
		assert_table_uses_keyring "kv-p$i"
		assert_eq unlocked "$(jq -r --arg u "${uuids[i - 1]}" \
			'[.. | objects | select(.uuid? == $u and has("result"))][0].result' <<<"$out")" \
			"JSON result of kv-p$i"
	done
	assert_match "does not open keyslot $ks" "$(grep -F "${uuids[bad - 1]}" "$T_ERR")" \
		"the bad volume's own error on stderr"
	assert_eq 1 "$(grep -c 'does not open keyslot' "$T_ERR")" \
		"one volume reports that error"
	assert_no_keys_anywhere
	assert_activations_overlap "$T_ERR"

	kc 0 "lock --all" -- lock --all
	for ((i = 1; i <= 8; i++)); do
		assert_eq absent "$(t_dm_state "kv-p$i")" "kv-p$i after lock --all"
	done
}

t_case parallel-unlock case_parallel_unlock
t_finish
