#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# Revoke that cannot lie, on a real kernel:
#   - revoke against an unlock in flight (through the token plugin, `cryptsetup open --token-only`,
#     and through `kmscrypt unlock`), many times at random offsets: whenever revoke exits 0, no
#     mapping of the volume holds a key, then or after the unlock finished;
#   - the mark in the LUKS2 header: with the state dir lost, `unlock --all` (block-device scan) and
#     the plugin leave the volume locked; restore clears both marks and the data is intact;
#   - unlock --all fails closed on a state file it cannot read.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_revoke_race.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

: "${KMSCRYPT_BUILD_DIR:?KMSCRYPT_BUILD_DIR must name the build dir (ctest sets it)}"
PLUGIN=$KMSCRYPT_BUILD_DIR/libcryptsetup-token-kmscrypt.so
[[ -f $PLUGIN ]] || { echo "FATAL: $PLUGIN not built (make kmscrypt_token_plugin)" >&2; exit 1; }
[[ $(findmnt -n -o FSTYPE /) == overlay || ${KMSCRYPT_VM_TEST_NATIVE:-} == 1 ]] ||
	{ echo "FATAL: / is not the VM's throw-away overlay; not installing into it" >&2; exit 1; }
PLUGIN_DIR=/lib/x86_64-linux-gnu/cryptsetup
mkdir -p "$PLUGIN_DIR" /run/cryptsetup
install -m 0644 "$PLUGIN" "$PLUGIN_DIR/libcryptsetup-token-kmscrypt.so"
RACE_RUNS=${KMSCRYPT_RACE_RUNS:-50}

# Every dm mapping of LUKS volume UUID, one "name key" line each (key field of the live table).
# The names and dm UUIDs of all mappings come from sysfs (/sys/block/dm-N/dm/{name,uuid}, the
# same as `dmsetup ls` and `dmsetup info -o uuid`) with bash builtins: this runs five times per
# race and each process costs 0.1-0.6 s in the emulated guest. One `dmsetup table` per mapping
# of the volume reads its key.
mappings_of() {
	local hex=${1//-/} d name uuid _start _len type _args key _rest
	for d in /sys/block/dm-*/dm; do
		{ read -r name <"$d/name" && read -r uuid <"$d/uuid"; } 2>/dev/null || continue
		[[ $uuid == CRYPT-LUKS2-$hex-* ]] || continue
		key=
		read -r _start _len type _args key _rest < <(dmsetup table --showkeys "$name") || true
		echo "$name $key"
	done
}

# The contract: no mapping of UUID holds a key (absent, or an all-zero key after the wipe).
assert_no_live_key() { # UUID WHEN
	local name key bad=
	while read -r name key; do
		[[ -z $name ]] && continue
		[[ $key =~ ^0+$ ]] || bad+="$name:$key "
	done < <(mappings_of "$1")
	[[ -z $bad ]] || t_fail "no mapping of $1 holds a key $2" "none" "$bad"
}

# file_has FILE TEXT: a line of FILE contains TEXT (as grep -qF, without a process).
file_has() {
	local line
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line == *"$2"* ]] && return 0
	done <"$1"
	return 1
}

# Bring the volume back to "closed, not revoked" for the next run.
reset_volume() { # DEV UUID
	local name key
	kc 0 "restore (reset)" -- restore "$1"
	while read -r name key; do
		[[ -n $name ]] && kc 0 "close $name (reset)" -- lock "$name"
	done < <(mappings_of "$2")
	[[ -z $(mappings_of "$2") ]] || t_fail "reset closes every mapping" "none" "$(mappings_of "$2")"
}

# KIND is "plugin" (cryptsetup open --token-only) or "cli" (kmscrypt unlock).
race() { # KIND RUNS
	local kind=$1 runs=$2 dev uuid i delay pid rc refused=0 wiped=0 before=0 failed=0
	t_kms_local "r$kind"
	t_volume dev uuid "r$kind" "r$kind" "kv-r$kind"
	for ((i = 1; i <= runs; i++)); do
		if [[ $kind == plugin ]]; then
			KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE \
				cryptsetup open --token-only "$dev" "rr-$kind" >"$WORK/open.out" 2>&1 &
		else
			K unlock "$dev" --name "rr-$kind" >"$WORK/open.out" 2>&1 &
		fi
		pid=$!
		# 0-599 ms: before the check, during the unwrap, between hand-over and activation, or
		# after the mapping is live.
		delay=$((RANDOM % 600))
		sleep "$(printf '0.%03d' "$delay")"
		set +e
		K revoke "$dev" --reason "race $i" >"$WORK/revoke.out" 2>&1
		rc=$?
		set -e
		if [[ $rc == 0 ]]; then
			assert_no_live_key "$uuid" "right after revoke exited 0 (run $i, +${delay} ms)"
		else
			failed=$((failed + 1))
			t_log "run $i: revoke exited $rc: $(tr '\n' ' ' <"$WORK/revoke.out")"
		fi
		set +e
		wait "$pid"
		set -e
		[[ $rc == 0 ]] && assert_no_live_key "$uuid" "after the unlock finished (run $i)"
		if [[ -z $(mappings_of "$uuid") ]]; then
			refused=$((refused + 1))
		elif file_has "$WORK/revoke.out" "dm-crypt key wiped"; then
			wiped=$((wiped + 1))
		else
			before=$((before + 1))
		fi
		reset_volume "$dev" "$uuid"
	done
	t_log "$kind race: $runs runs: $refused unlocks refused, $wiped opened then wiped by" \
		"revoke, $before other, $failed revokes exited non-zero"
	# A revoke that cannot finish must say so, but here nothing stops it: all must succeed.
	assert_eq 0 "$failed" "revokes that failed against an unlock in flight"
	((refused > 0 && wiped > 0)) ||
		t_log "note: the random offsets did not cover both orders ($refused/$wiped)"
	t_ok "$kind: in $runs races, no revoke that exited 0 left a key in dm-crypt"
}

case_race_plugin() { race plugin "$RACE_RUNS"; }
case_race_cli() { race cli 10; }

# The header's mark survives a lost state dir: a "reboot" (lock --all, state dir re-imaged)
# leaves the volume locked for unlock --all and the plugin; restore clears both marks.
case_header_mark() {
	local dev uuid other ouuid
	t_kms_local hm
	t_volume dev uuid hm hm kv-hm
	t_volume other ouuid ho hm kv-ho
	kc 0 "unlock" -- unlock "$dev"
	t_write_data kv-hm hm
	kc 0 "revoke" -- revoke kv-hm --reason "header test"
	assert_table_key_wiped kv-hm
	kc 0 "lock --all" -- lock --all
	rm -rf "$STATE" # re-imaged /var/lib/kmscrypt
	kc 0 "unlock --all after the state dir is lost" -- unlock --all --json
	assert_eq absent "$(t_dm_state kv-hm)" "the revoked volume stays locked"
	assert_eq ACTIVE "$(t_dm_state kv-ho)" "the other volume unlocks"
	assert_match "marked revoked" "$(<"$T_OUT")$(<"$T_ERR")" "unlock --all says the header is marked"
	kc 7 "unlock of the revoked volume" -- unlock "$dev"
	assert_match "kmscrypt restore" "$(<"$T_ERR")" "the refusal names kmscrypt restore"
	set +e
	KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE cryptsetup open --token-only "$dev" hm-p \
		>"$WORK/p.out" 2>&1
	rc=$?
	set -e
	assert_ne 0 "$rc" "cryptsetup open --token-only of a header-marked volume"
	assert_eq absent "$(t_dm_state hm-p)" "the plugin did not open it"
	kc 0 "restore" -- restore "$dev"
	assert_eq ACTIVE "$(t_dm_state kv-hm)" "restored"
	t_check_data kv-hm hm
	assert_eq False "$(cryptsetup token export --token-id 0 "$dev" | jq -r 'has("revoked")' |
		sed 's/false/False/;s/true/True/')" "restore removed the header's mark"
	assert_eq active "$(t_status "$uuid" state)" "status: active"
	kc 0 "lock" -- lock kv-hm
	kc 0 "unlock after restore" -- unlock "$dev"
	t_check_data kv-hm hm
}

# unlock --all fails closed on a state file it cannot read (not only a corrupt one).
case_unreadable_state() {
	local dev uuid
	t_kms_local us
	t_volume dev uuid us us kv-us
	kc 0 "unlock" -- unlock "$dev"
	kc 0 "lock" -- lock kv-us
	rm -f "$STATE/volumes/$uuid.json"
	mkdir "$STATE/volumes/$uuid.json"
	kc 8 "unlock --all with a directory as state file" -- unlock --all
	assert_eq absent "$(t_dm_state kv-us)" "the volume stays locked"
	assert_match "cannot be read" "$(<"$T_ERR")" "the refusal says the state cannot be read"
}

t_case race_plugin case_race_plugin
t_case race_cli case_race_cli
t_case header_mark case_header_mark
t_case unreadable_state case_unreadable_state
t_finish
