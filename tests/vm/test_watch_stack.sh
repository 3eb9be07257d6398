#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# `kmscrypt watch` on a volume whose re-encryption runs or was killed, on a real kernel. Access is
# revoked at the "KMS" by taking the local provider's master key file away (KeyFileUnavailable:
# a denial, as a disabled key), given back by putting it back; --revoke-after 1 and `watch --once`
# make one round act.
#   pending  `kmscrypt reencrypt` killed with SIGKILL mid-way: no plain crypt mapping is left, the
#            volume is held only by libcryptsetup's re-encryption dm stack (a linear top over
#            "-overlay", "-hotzone-*"), whose crypt targets hold the keys. The watcher must still
#            probe it and, denied, wipe EVERY crypt target of the stack (status, audit, journal
#            line; no key in /proc/keys); after access is back `restore` brings the keys back,
#            data intact, and `reencrypt --resume` finishes.
#   running  the same with the re-encryption running: the watcher stops it (SIGTERM, resumable)
#            before it wipes; then restore, --resume, data intact.
# Keys never reach the log: tables are matched against patterns, only their kind is printed.
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_watch_stack.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

t_sum_mapping() { # MAPPING: sha256 of the whole mapping (O_DIRECT)
	local sum
	read -r sum _ < <(dd if="/dev/mapper/$1" bs=1M iflag=direct status=none | sha256sum)
	echo "$sum"
}

# t_stack UUID: the dm devices of LUKS volume UUID (dm uuid CRYPT-<type>-<hex>-<name>), one a line.
t_stack() {
	local hex=${1//-/} name uuid
	while read -r name uuid; do
		[[ ${uuid,,} == crypt-*-"${hex,,}"-* ]] && echo "$name"
	done < <(dmsetup info -c --noheadings --separator ' ' -o name,uuid 2>/dev/null)
	return 0
}

key_kind() { # KEY FIELD: its kind, never the key
	if [[ $1 =~ ^0+$ ]]; then
		echo "zero"
	elif [[ $1 == :* ]]; then
		echo "keyring reference"
	else
		echo "a ${#1}-character key (not zero)"
	fi
}

# assert_stack_keys UUID ERE WHAT: every crypt target of every dm device of UUID has a key field
# matching ERE, and there are two or more (a plain mapping has one; a killed re-encryption leaves
# three devices, a stopped one a top with one crypt target per segment).
assert_stack_keys() {
	local name start type key n=0 nd=0 devs=""
	while read -r name; do
		nd=$((nd + 1))
		devs+="$name($(t_dm_state "$name")) "
		while read -r start _ type _ key _; do
			[[ $type == crypt ]] || continue
			n=$((n + 1))
			[[ $key =~ $2 ]] || t_fail "crypt target of $name at sector $start: $3" \
				"a key field matching /$2/" "$(key_kind "$key")"
		done < <(dmsetup table --showkeys "$name")
	done < <(t_stack "$1")
	((n > 1)) || t_fail "the re-encryption stack of ${1:0:8}" "2 or more crypt targets" \
		"$nd devices, $n crypt targets ($devs)"
	t_ok "all $n crypt targets of ${1:0:8} ($3): $devs"
}

# t_sj UUID JQ: JQ applied to this volume's object in `kmscrypt status --json` (whatever the exit
# code: status says so when a re-encryption is pending).
t_sj() {
	local out
	out=$(K status --json 2>"$WORK/status.err") || true
	jq -r --arg u "$1" "[.volumes[] | select(.uuid == \$u)] | if length == 0 then \"(volume not listed)\" else .[0] | $2 end" \
		<<<"$out" 2>/dev/null || echo "(not JSON: ${out:0:200}; $(head -c 200 "$WORK/status.err"))"
}

audit_find() { # ACTION UUID: compact JSON lines
	[[ -r $STATE/audit.log ]] || return 0
	jq -c --arg a "$1" --arg u "$2" 'select(.action == $a and ((.uuid // .volume) == $u))' \
		"$STATE/audit.log" 2>/dev/null || true
}

# t_setup NAME SIZE: local KMS k$NAME (--revoke-after 1), volume on an image of SIZE (16 MiB of
# header, the rest data: 8 MiB a step) open as kv-NAME, filled with random data (sha256 in
# $WORK/NAME.full); DEV, UUID.
t_setup() {
	kc 0 "create local KMS 'k$1' (--revoke-after 1)" -- kms create "k$1" --provider local \
		--key-file "$WORK/k$1.key" --generate --revoke-after 1
	t_loop DEV "$1" "$2"
	kc 0 "format $DEV" -- format "$DEV" --kms "k$1" --label "kv-$1"
	UUID=$(t_uuid "$DEV")
	T_UUID=$UUID
	kc 0 "unlock" -- unlock "$DEV"
	dd if=/dev/urandom of="/dev/mapper/kv-$1" bs=1M oflag=direct status=none 2>/dev/null || true
	t_sum_mapping "kv-$1" >"$WORK/$1.full"
}

# t_reencrypt_bg MAPPING: `kmscrypt reencrypt` in the background (PID in T_RPID), returns once its
# dm stack exists and it still runs.
t_reencrypt_bg() {
	local i
	"$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" -q reencrypt "$1" --remove-other-keyslots \
		>"$WORK/reenc.out" 2>"$WORK/reenc.err" </dev/null &
	T_RPID=$!
	T_BG+=("$T_RPID")
	for ((i = 0; i < 600; i++)); do
		[[ $(t_dm_state "$1-overlay") != absent ]] && break
		kill -0 "$T_RPID" 2>/dev/null ||
			t_fail "reencrypt running" "a -overlay device" "it exited: $(cat "$WORK/reenc.err")"
		sleep 0.1
	done
	[[ $(t_dm_state "$1-overlay") != absent ]] || t_fail "reencrypt running" "$1-overlay" "absent"
	sleep 0.3
	kill -0 "$T_RPID" 2>/dev/null || t_fail "reencrypt mid-way" "still running" \
		"it finished: $(cat "$WORK/reenc.err")"
	t_ok "reencrypt of $1 running (PID $T_RPID): $(t_stack "$T_UUID" | tr '\n' ' ')"
}

kms_deny() { mv "$WORK/$1.key" "$WORK/$1.key.away"; t_ok "access revoked at KMS '$1' (key file away)"; }
kms_grant() { mv "$WORK/$1.key.away" "$WORK/$1.key"; t_ok "access back at KMS '$1'"; }

# What the watcher must have done to kv-NAME (UUID): journal line, audit record, status, tables.
assert_watch_wiped() { # NAME
	local log=$T_ERR
	assert_match "denied access once: .*KeyFileUnavailable.*; wiped key of 'kv-$1'" "$(cat "$log")" \
		"the watcher's journal line: denied, wiped key of kv-$1"
	assert_match '"result":"ok"' "$(audit_find watch-wipe "$UUID")" "audit: watch-wipe ok for kv-$1"
	assert_match 'kms-denied: KeyFileUnavailable' "$(audit_find watch-wipe "$UUID")" \
		"audit: watch-wipe reason"
	# libcryptsetup refuses LUKS2 header changes while a re-encryption is pending: the mark is
	# in the state dir only, and the operator is told so
	assert_match "wiped key of 'kv-$1'\\. A re-encryption is pending, so the revoked mark is in the state dir only" \
		"$(cat "$log")" "the journal line says the mark is in the state dir only"
	assert_eq "revoked-suspended false" "$(t_sj "$UUID" '"\(.state) \(.header_revoked)"')" \
		"status --json: state (open through its stack, wiped), header_revoked"
	assert_eq "true true denied" \
		"$(t_sj "$UUID" '"\(.revoked) \(.watch.wiped_by_watcher) \(.watch.verdict)"')" \
		"status --json: revoked, watch.wiped_by_watcher, watch.verdict"
	assert_stack_keys "$UUID" '^0{64,}$' "all-zero key after the watcher's wipe"
	assert_eq SUSPENDED "$(t_dm_state "kv-$1")" "top device kv-$1 suspended"
	assert_no_key_in_proc_keys "$UUID"
}

# After access is back: restore, data; unless NO_RESUME, --resume and data again.
assert_restore_resume() { # NAME [NO_RESUME]
	local susp='' name when="after restore"
	kms_grant "k$1"
	kc 0 "restore after access is back" -- restore "$DEV"
	assert_stack_keys "$UUID" '^:64:logon:cryptsetup:' "named logon keys again after restore"
	assert_no_key_in_proc_keys "$UUID"
	while read -r name; do
		[[ $(t_dm_state "$name") == SUSPENDED ]] && susp+="$name "
	done < <(t_stack "$UUID")
	if [[ -n $susp ]]; then
		# a SIGKILL can land inside a step and leave that step's device suspended (its I/O
		# waits for crash recovery), not revoke's doing: as after any such kill, a
		# reboot-equivalent and unlock (tests/vm/test_reencrypt.sh)
		t_log "left suspended by the kill, not by revoke: $susp"
		for name in "kv-$1" "kv-$1-overlay" $(t_stack "$UUID"); do
			timeout 30 dmsetup remove --force "$name" 2>/dev/null || true
		done
		assert_eq "" "$(t_stack "$UUID")" "no dm device of ${UUID:0:8} left"
		kc 0 "unlock after the 'reboot'" -- unlock "$DEV"
		when="after restore and the 'reboot'"
	fi
	assert_eq "$(cat "$WORK/$1.full")" "$(t_sum_mapping "kv-$1")" "sha256 $when"
	[[ -z ${2:-} ]] || return 0
	kc 0 "reencrypt --resume" -- reencrypt --resume "$DEV" --json
	assert_eq resumed "$(jq -r '.volumes[0].result' "$T_OUT")" "reencrypt --resume --json: result"
	assert_eq "$(cat "$WORK/$1.full")" "$(t_sum_mapping "kv-$1")" "sha256 after --resume"
	assert_eq "kv-$1" "$(t_stack "$UUID" | tr '\n' ' ' | sed 's/ $//')" \
		"only the plain mapping is left after --resume"
	assert_table_uses_keyring "kv-$1"
	assert_eq "false active" "$(t_sj "$UUID" '"\(.revoked) \(.state)"')" \
		"status --json after restore and --resume: revoked, state"
}

case_pending() {
	t_setup p 40M # three steps: killed in one
	t_reencrypt_bg kv-p
	kill -9 "$T_RPID"
	wait "$T_RPID" 2>/dev/null || true
	t_ok "reencrypt killed (SIGKILL): $(dmsetup info -c --noheadings -o name,suspended | tr '\n' ' ')"
	assert_stack_keys "$UUID" '^:64:logon:cryptsetup:' "keys loaded in the killed stack"

	kms_deny kp
	kc 0 "watch --once (KMS denies)" -- watch --once
	assert_watch_wiped p
	# a second round: denied again, nothing more to do, no second wipe
	kc 0 "watch --once again" -- watch --once
	assert_eq 1 "$(audit_find watch-wipe "$UUID" | wc -l)" "one watch-wipe record after two rounds"
	assert_stack_keys "$UUID" '^0{64,}$' "still all zero after a second round"
	assert_restore_resume p
}

case_running() {
	local i
	t_setup r 64M # six steps: still running when the watcher acts
	t_reencrypt_bg kv-r
	kms_deny kr
	kc 0 "watch --once (KMS denies, re-encryption runs)" -- watch --once
	for ((i = 0; i < 50; i++)); do
		kill -0 "$T_RPID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$T_RPID" 2>/dev/null && t_fail "reencrypt stopped by the watcher" "gone" "alive"
	assert_match 'stopped at [0-9]+%' "$(cat "$WORK/reenc.err")" \
		"reencrypt was stopped mid-way (SIGTERM, resumable)"
	assert_match 'Stopping the re-encryption' "$(cat "$T_ERR")" "the watcher says it stopped it"
	assert_watch_wiped r
	# (--resume after a revoke of a running re-encryption: tests/vm/test_revoke_reencrypt.sh)
	assert_restore_resume r no-resume
}

t_case pending case_pending
t_case running case_running
t_finish
