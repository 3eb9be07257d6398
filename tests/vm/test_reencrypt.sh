#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# kmscrypt reencrypt on a real kernel: a new volume key while the volume stays open and serves I/O
# (a writer and a reader run meanwhile), the data hash intact, the volume key changed (compared by
# hash only: no key is ever printed), the kmscrypt keyslot and the recovery key still open it;
# then SIGKILL mid-way, a reboot-equivalent (mappings closed, reopened through kmscrypt while the
# re-encryption is pending) and `reencrypt --resume` finishes with the data hash intact.
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_reencrypt.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# t_sum_mapping MAPPING: sha256 of the whole mapping (O_DIRECT).
t_sum_mapping() {
	local sum
	read -r sum _ < <(dd if="/dev/mapper/$1" bs=1M iflag=direct status=none | sha256sum)
	echo "$sum"
}

# t_sum_rest MAPPING: sha256 of the mapping after its first 4 MiB.
t_sum_rest() {
	local sum
	read -r sum _ < <(dd if="/dev/mapper/$1" bs=1M skip=4 iflag=direct status=none | sha256sum)
	echo "$sum"
}

# t_fill MAPPING NAME: random data over the whole mapping; its sha256 in $WORK/NAME.full.
t_fill() {
	local sum
	dd if=/dev/urandom of="/dev/mapper/$1" bs=1M oflag=direct status=none 2>/dev/null || true
	sum=$(t_sum_mapping "$1")
	echo "$sum" >"$WORK/$2.full"
}

# t_vk_sum DEVICE KEYFILE: sha256 of the volume key (opened by KEYFILE); the key goes to a file
# on the case's tmpfs and is removed at once; only its hash is ever shown.
t_vk_sum() {
	local sum
	rm -f "$WORK/vk.tmp"
	cryptsetup luksDump -q --dump-volume-key --volume-key-file "$WORK/vk.tmp" \
		--key-file "$2" "$1" >/dev/null 2>"$WORK/vk.err" ||
		t_fail "luksDump --dump-volume-key with the recovery key" "exit 0" \
			"$(tr '\n' ' ' <"$WORK/vk.err")"
	read -r sum _ < <(sha256sum <"$WORK/vk.tmp")
	rm -f "$WORK/vk.tmp"
	echo "$sum"
}

# t_layout DEVICE: "TYPE:KEYSLOTS ..." for every token, then the keyslot numbers.
t_layout() {
	cryptsetup luksDump --dump-json-metadata "$1" | jq -r '
		([.tokens[] | "\(.type):\(.keyslots | join(","))"] | join(" ")) + " | keyslots " +
		([.keyslots | keys[]] | join(","))'
}

assert_reencrypted_layout() { # DEVICE
	local layout
	layout=$(t_layout "$1")
	assert_match '^kmscrypt:0 \| keyslots 0,[0-9]+$' "$layout" \
		"kmscrypt token on keyslot 0, one recovery keyslot, no journal ($layout)"
}

# Online: a writer and a reader run while the volume is re-encrypted.
case_online() {
	local dev uuid vk0 vk1 hdr0 writer reader rk rest0
	t_kms_local kr
	t_volume dev uuid on kr kv-on --recovery-key-file "$WORK/on.rec"
	kc 0 "unlock" -- unlock "$dev"
	t_fill kv-on on
	rest0=$(t_sum_rest kv-on)
	vk0=$(t_vk_sum "$dev" "$WORK/on.rec")
	hdr0=$(t_header_sum "$dev")

	# Refusals change nothing: the recovery keyslot would be lost without its key.
	kc 7 "reencrypt without the recovery key is refused" -- reencrypt kv-on
	assert_match 'recovery-key-file' "$(cat "$T_ERR")" "the refusal names --recovery-key-file"
	kc 2 "--remove-other-keyslots needs a confirmation (no terminal, no -q)" -- \
		reencrypt kv-on --remove-other-keyslots </dev/null
	head -c 64 /dev/urandom >"$WORK/wrong.rec"
	kc 5 "a wrong recovery key is refused" -- \
		reencrypt kv-on --recovery-key-file "$WORK/wrong.rec"
	kc 0 "resume with nothing pending" -- reencrypt --resume kv-on
	assert_eq "$hdr0" "$(t_header_sum "$dev")" "header unchanged by the refusals"

	# I/O goes on meanwhile: a writer rewrites the first 4 MiB, a reader reads it all.
	head -c 4M /dev/urandom >"$WORK/w.data"
	(
		while [[ ! -e $WORK/stop ]]; do
			dd if="$WORK/w.data" of=/dev/mapper/kv-on bs=1M oflag=direct conv=fsync \
				status=none || exit 1
		done
	) &
	writer=$!
	T_BG+=("$writer")
	(
		while [[ ! -e $WORK/stop ]]; do
			dd if=/dev/mapper/kv-on of=/dev/null bs=1M iflag=direct status=none || exit 1
		done
	) &
	reader=$!
	T_BG+=("$reader")

	kc 0 "reencrypt online" -- reencrypt kv-on --recovery-key-file "$WORK/on.rec" --json
	touch "$WORK/stop"
	wait "$writer" || t_fail "writer during the re-encryption" "exit 0" "failed"
	wait "$reader" || t_fail "reader during the re-encryption" "exit 0" "failed"
	t_ok "writer and reader ran through the re-encryption"
	jq -e . <"$T_OUT" >/dev/null || t_fail "reencrypt --json" "JSON" "$(cat "$T_OUT")"
	assert_eq reencrypted "$(jq -r '.volumes[0].result' "$T_OUT")" "--json: result"
	assert_eq 100 "$(jq -r '.volumes[0].progress.percent | floor' "$T_OUT")" "--json: percent"
	rk=$(jq -r '.volumes[0].recovery_keyslot' "$T_OUT")
	assert_match '^[0-9]+$' "$rk" "--json: recovery_keyslot"
	assert_match 'keeps working' "$(cat "$T_ERR")" "the plan was told before it started"

	assert_eq ACTIVE "$(t_dm_state kv-on)" "mapping still active"
	assert_table_uses_keyring kv-on
	assert_no_key_in_proc_keys "$uuid"
	assert_reencrypted_layout "$dev"
	vk1=$(t_vk_sum "$dev" "$WORK/on.rec")
	assert_ne "$vk0" "$vk1" "sha256 of the volume key after reencrypt"
	# the writer's last pass covers the first 4 MiB; the rest is what t_fill wrote
	assert_eq "$rest0" "$(t_sum_rest kv-on)" "sha256 of the mapping after its first 4 MiB"
	cmp -s "$WORK/w.data" <(dd if=/dev/mapper/kv-on bs=1M count=4 iflag=direct status=none) ||
		t_fail "the writer's data" "read back as written" "differs"
	t_ok "the writer's last 4 MiB read back as written"
	kc 0 "check after reencrypt" -- check "$dev"
	kc 0 "lock" -- lock kv-on
	kc 0 "unlock through kmscrypt after reencrypt" -- unlock "$dev"
	cmp -s "$WORK/w.data" <(dd if=/dev/mapper/kv-on bs=1M count=4 iflag=direct status=none) ||
		t_fail "data after reopening" "as written" "differs"
	t_ok "data intact after reopening"
	kc 0 "lock" -- lock kv-on
	assert_recovery_opens "$dev" "$WORK/on.rec"
	cryptsetup open --key-file "$WORK/on.rec" "$dev" kv-rec
	cmp -s "$WORK/w.data" <(dd if=/dev/mapper/kv-rec bs=1M count=4 iflag=direct status=none) ||
		t_fail "data through the recovery key" "as written" "differs"
	t_ok "the recovery key opens the re-encrypted volume and the data is intact"
	cryptsetup close kv-rec
}

# SIGKILL mid-way, close everything (a reboot), reopen through kmscrypt, --resume.
case_kill_resume() {
	local dev uuid vk0 spid kpid i pct line
	t_kms_local kk
	t_volume dev uuid kr kk kv-kr --recovery-key-file "$WORK/kr.rec"
	kc 0 "unlock" -- unlock "$dev"
	t_fill kv-kr kr
	vk0=$(t_vk_sum "$dev" "$WORK/kr.rec")

	# On a terminal (script(1)) kmscrypt draws its progress line; kill it once it shows > 0 %.
	script -qfec "exec '$KMSCRYPT' --config-dir '$CFG' --state-dir '$STATE' reencrypt kv-kr \
		--recovery-key-file '$WORK/kr.rec'" "$WORK/tty.log" >/dev/null 2>&1 </dev/null &
	spid=$!
	T_BG+=("$spid")
	kpid=
	pct=
	for ((i = 0; i < 600; i++)); do
		if [[ -z $kpid ]]; then
			read -r kpid _ <"/proc/$spid/task/$spid/children" 2>/dev/null || true
		fi
		[[ -s $WORK/tty.log ]] || { sleep 0.1; continue; }
		line=$(tr '\r' '\n' <"$WORK/tty.log" | grep -o 'Re-encrypting: *[0-9.]*%' | tail -n 1) ||
			true
		pct=${line##* }
		pct=${pct%\%}
		[[ -n $pct && ${pct%.*} -ge 1 && -n $kpid ]] && break
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.1
	done
	[[ -n $kpid && -n $pct && ${pct%.*} -ge 1 ]] ||
		t_fail "a progress line on the terminal" "Re-encrypting: N% (N >= 1)" \
			"$(tr '\r' '\n' <"$WORK/tty.log" | tail -n 3)"
	[[ ${pct%.*} -lt 100 ]] || t_fail "kill mid-way" "progress < 100%" "$pct%"
	kill -9 "$kpid"
	wait "$spid" 2>/dev/null || true
	t_ok "kmscrypt reencrypt killed (SIGKILL) at $pct%"

	kc 0,7 "status says a re-encryption is pending" -- status "$dev"
	assert_match 'reencrypt --resume' "$(cat "$T_OUT" "$T_ERR")" "status names --resume"
	kc 7 "a new reencrypt is refused while one is pending" -- \
		reencrypt kv-kr --recovery-key-file "$WORK/kr.rec"
	assert_match 'reencrypt --resume' "$(cat "$T_ERR")" "the refusal names --resume"

	# Reboot-equivalent: every device of the stack goes away as at power-off, without a flush
	# (a killed step may leave one suspended: a close would wait for it forever). --force
	# swaps in an error table first: nothing more reaches the disk.
	t_log "dm devices after the kill: $(dmsetup info -c --noheadings -o name,suspended,open \
		2>/dev/null | tr '\n' ' ')"
	local name
	for name in kv-kr $(dmsetup ls 2>/dev/null | awk '$1 ~ /^kv-kr-/ {print $1}'); do
		timeout 30 dmsetup remove --force "$name" 2>/dev/null || true
	done
	t_dm_cleanup
	assert_eq absent "$(t_dm_state kv-kr)" "mapping gone after the 'reboot'"
	kc 0 "unlock while the re-encryption is pending (old and new key)" -- unlock "$dev"
	assert_table_uses_keyring kv-kr 2>/dev/null || true
	assert_eq "$(cat "$WORK/kr.full")" "$(t_sum_mapping kv-kr)" \
		"sha256 of the whole mapping, half re-encrypted"

	kc 0 "reencrypt --resume" -- reencrypt --resume kv-kr --json
	assert_eq resumed "$(jq -r '.volumes[0].result' "$T_OUT")" "--json: result"
	assert_eq "$(cat "$WORK/kr.full")" "$(t_sum_mapping kv-kr)" "sha256 after --resume"
	assert_table_uses_keyring kv-kr
	assert_no_key_in_proc_keys "$uuid"
	assert_reencrypted_layout "$dev"
	assert_ne "$vk0" "$(t_vk_sum "$dev" "$WORK/kr.rec")" "sha256 of the volume key after --resume"
	kc 0 "status after --resume" -- status "$dev"
	assert_no_match 'pending' "$(cat "$T_OUT" "$T_ERR")" "status no longer says pending"
	kc 0 "lock" -- lock kv-kr
	kc 0 "unlock after --resume" -- unlock "$dev"
	assert_eq "$(cat "$WORK/kr.full")" "$(t_sum_mapping kv-kr)" "sha256 after reopening"
	kc 0 "lock" -- lock kv-kr
	assert_recovery_opens "$dev" "$WORK/kr.rec"
}

t_case online case_online
t_case kill-resume case_kill_resume
t_finish
