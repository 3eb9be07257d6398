#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# The libcryptsetup token plugin (libcryptsetup-token-kmscrypt.so) on a real kernel: `cryptsetup open
# --token-only`, `cryptsetup luksDump` and systemd-cryptsetup open kmscrypt volumes through the KMS;
# a missing master key or a revoked volume does not open.
# Runs as root inside the VM (ctest does this):
#   scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_token_plugin.sh
# libcryptsetup 2.6 loads plugins from one compiled-in directory only, so the test installs the built
# plugin there: that write goes into the VM's throw-away overlay.
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

: "${KMSCRYPT_BUILD_DIR:?KMSCRYPT_BUILD_DIR must name the build dir (ctest sets it)}"
PLUGIN=$KMSCRYPT_BUILD_DIR/libcryptsetup-token-kmscrypt.so
[[ -f $PLUGIN ]] || { echo "FATAL: $PLUGIN not built (make kmscrypt_token_plugin)" >&2; exit 1; }
[[ $(findmnt -n -o FSTYPE /) == overlay || ${KMSCRYPT_VM_TEST_NATIVE:-} == 1 ]] ||
	{ echo "FATAL: / is not the VM's throw-away overlay; not installing into it" >&2; exit 1; }
PLUGIN_DIR=/lib/x86_64-linux-gnu/cryptsetup
mkdir -p "$PLUGIN_DIR"
install -m 0644 "$PLUGIN" "$PLUGIN_DIR/libcryptsetup-token-kmscrypt.so"
# libcryptsetup takes the plugin directory from its build, not from us: make sure it is this one.
mkdir -p /run/cryptsetup

# C ARGS...: cryptsetup with the plugin seeing this case's config and state dirs; exit code in
# T_RC, output in $T_OUT / $T_ERR (the plugin logs through libcryptsetup, on stderr).
C() {
	T_NCMD=$((T_NCMD + 1))
	T_OUT=$WORK/cs.$T_NCMD.out
	T_ERR=$WORK/cs.$T_NCMD.err
	set +e
	KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE timeout 120 cryptsetup "$@" \
		>"$T_OUT" 2>"$T_ERR"
	T_RC=$?
	set -e
}

show() { # what the last C command printed, for a failure message
	tr '\n' ' ' <"$T_OUT"
	tr '\n' ' ' <"$T_ERR"
}

# open --token-only through the local KMS: keyring-backed table, the data written through kmscrypt
# read back; luksDump shows the plugin's lines and never the blob.
case_open_and_dump() {
	local dev uuid tok blob
	t_kms_local pl
	t_volume dev uuid tp pl kv-tp
	kc 0 "unlock with kmscrypt" -- unlock "$dev"
	t_write_data kv-tp tp
	kc 0 "lock" -- lock kv-tp

	C open --token-only "$dev" tp-plugin
	[[ $T_RC == 0 ]] || t_fail "cryptsetup open --token-only $dev" "exit 0" "exit $T_RC: $(show)"
	t_ok "cryptsetup open --token-only opened $dev through the plugin"
	assert_eq ACTIVE "$(t_dm_state tp-plugin)" "dm state of tp-plugin"
	assert_table_uses_keyring tp-plugin
	t_check_data tp-plugin tp
	C close tp-plugin
	assert_eq 0 "$T_RC" "cryptsetup close"
	assert_eq absent "$(t_dm_state tp-plugin)" "tp-plugin after close"

	C luksDump "$dev"
	assert_eq 0 "$T_RC" "cryptsetup luksDump exit code"
	local dump
	dump=$(<"$T_OUT")
	sed -n '/^Tokens:/,/^Digests:/p' "$T_OUT" | sed 's/^/      | /'
	assert_match $'[0-9]+: kmscrypt\n' "$dump" "luksDump lists the kmscrypt token"
	assert_match $'\tkms: +pl\n' "$dump" "luksDump: plugin dump line 'kms: pl'"
	assert_match $'\tprovider: +local\n' "$dump" "luksDump: plugin dump line 'provider: local'"
	assert_match $'\tkey id: +[^\n]+' "$dump" "luksDump: plugin dump line 'key id'"
	assert_match $'\talg: +[A-Za-z0-9-]+\n' "$dump" "luksDump: plugin dump line 'alg'"
	assert_match $'\tcreated: +20[0-9]{2}-[0-9]{2}-[0-9]{2}T' "$dump" \
		"luksDump: plugin dump line 'created'"
	tok=$(t_token_id "$dev")
	blob=$(cryptsetup token export --token-id "$tok" "$dev" | jq -r .blob)
	[[ ${#blob} -gt 16 ]] || t_fail "token has a blob" "a base64 string" "'$blob'"
	assert_no_match "${blob:0:16}" "$dump" "luksDump does not print the wrapped blob"
	# Without the plugin (--disable-external-tokens) the same lines are absent: they are ours.
	C luksDump --disable-external-tokens "$dev"
	assert_no_match $'\tprovider: +local' "$(<"$T_OUT")" \
		"luksDump without external tokens has no plugin lines"
}

# The master key file moved away: the open fails, nothing is mapped; moved back, it opens.
case_key_missing() {
	local dev uuid
	t_kms_local pm
	t_volume dev uuid tm pm kv-tm
	mv "$WORK/pm.key" "$WORK/pm.key.away"
	C open --token-only "$dev" tm-plugin
	assert_ne 0 "$T_RC" "cryptsetup open --token-only without the master key"
	assert_match "kmscrypt: " "$(<"$T_ERR")" "the plugin says why (stderr: $(show))"
	assert_eq absent "$(t_dm_state tm-plugin)" "nothing mapped after the failed open"
	assert_eq "" "$(dmsetup ls --target crypt 2>/dev/null | grep -v '^No devices' || true)" \
		"no crypt mapping at all"
	mv "$WORK/pm.key.away" "$WORK/pm.key"
	C open --token-only "$dev" tm-plugin
	assert_eq 0 "$T_RC" "open with the key back ($(show))"
	assert_eq ACTIVE "$(t_dm_state tm-plugin)" "tm-plugin mapped with the key back"
}

# A volume opened by the plugin is seen and revoked by kmscrypt; a volume revoked with kmscrypt
# stays shut for the plugin; after `kmscrypt restore` + lock it opens again.
case_revoked() {
	local dev uuid
	t_kms_local pr
	t_volume dev uuid tr pr kv-tr
	C open --token-only "$dev" kv-tr
	assert_eq 0 "$T_RC" "cryptsetup open --token-only ($(show))"
	assert_status "$uuid" active keyring
	kc 0 "kmscrypt revoke of the plugin-opened volume" -- revoke kv-tr --reason "plugin test"
	assert_eq SUSPENDED "$(t_dm_state kv-tr)" "plugin-opened volume suspended by revoke"
	assert_table_key_wiped kv-tr
	kc 0 "restore" -- restore kv-tr
	assert_eq ACTIVE "$(t_dm_state kv-tr)" "resumed by restore"
	kc 0 "lock" -- lock kv-tr
	assert_eq absent "$(t_dm_state kv-tr)" "closed by kmscrypt lock"
	local audit
	audit=$(grep -c '"action":"token-unwrap".*"result":"ok"' "$STATE/audit.log" || true)
	assert_eq 1 "$audit" "the plugin's unwrap is in the audit log"

	kc 0 "unlock" -- unlock "$dev"
	kc 0 "revoke" -- revoke kv-tr --reason "plugin test"
	kc 0 "lock the revoked volume" -- lock kv-tr
	assert_eq absent "$(t_dm_state kv-tr)" "kv-tr closed"
	assert_eq revoked-closed "$(t_status "$uuid" state)" "status says revoked-closed"

	C open --token-only "$dev" tr-plugin
	assert_ne 0 "$T_RC" "cryptsetup open --token-only of a revoked volume"
	assert_match "revoked" "$(<"$T_ERR")" "the plugin logs that the volume is revoked"
	assert_eq absent "$(t_dm_state tr-plugin)" "revoked volume not mapped"

	kc 0 "restore" -- restore "$dev"
	kc 0 "lock again" -- lock kv-tr
	C open --token-only "$dev" tr-plugin
	assert_eq 0 "$T_RC" "open after restore ($(show))"
	assert_eq ACTIVE "$(t_dm_state tr-plugin)" "tr-plugin mapped after restore"
}

# systemd-cryptsetup (252: no token-only option; it tries every token first, and headless=true
# keeps it from asking for a passphrase afterwards) unlocks through the plugin.
case_systemd_cryptsetup() {
	local dev uuid sc=/lib/systemd/systemd-cryptsetup rc
	[[ -x $sc ]] || t_fail "systemd-cryptsetup installed" "$sc" "absent"
	t_kms_local ps
	t_volume dev uuid ts ps kv-ts
	set +e
	KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE SYSTEMD_LOG_TARGET=console \
		timeout 120 "$sc" attach ts-plugin "$dev" - headless=true,tries=1 \
		>"$WORK/sc.out" 2>"$WORK/sc.err" </dev/null
	rc=$?
	set -e
	assert_eq 0 "$rc" "systemd-cryptsetup attach ($(tr '\n' ' ' <"$WORK/sc.err"))"
	assert_eq ACTIVE "$(t_dm_state ts-plugin)" "ts-plugin mapped by systemd-cryptsetup"
	assert_table_uses_keyring ts-plugin
	timeout 60 "$sc" detach ts-plugin >/dev/null 2>&1 || true
	assert_eq absent "$(t_dm_state ts-plugin)" "ts-plugin detached"

	# Same with the master key gone: systemd-cryptsetup fails (headless: no prompt), nothing mapped.
	mv "$WORK/ps.key" "$WORK/ps.key.away"
	set +e
	KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE SYSTEMD_LOG_TARGET=console \
		timeout 120 "$sc" attach ts-plugin "$dev" - headless=true,tries=1 \
		>"$WORK/sc.out" 2>"$WORK/sc.err" </dev/null
	rc=$?
	set -e
	assert_ne 0 "$rc" "systemd-cryptsetup attach without the master key"
	assert_eq absent "$(t_dm_state ts-plugin)" "nothing mapped"
}

# /etc/crypttab: systemd-cryptsetup-generator turns the documented line into a unit (ordered under
# remote-cryptsetup.target by _netdev: the KMS is on the network); its ExecStart, run as systemd
# would (no PID 1 here), opens the volume through the plugin with the default config dir.
case_crypttab() {
	local dev uuid gen=$WORK/gen unit exec args rc
	t_kms_local pc
	t_volume dev uuid tc pc kv-tc
	# The plugin under systemd sees no KMSCRYPT_* variables: /etc/kmscrypt (in the overlay).
	mkdir -p /etc/kmscrypt/kms
	cp "$CFG/kms/pc.conf" /etc/kmscrypt/kms/pc.conf
	mkdir -p /dev/disk/by-uuid "$gen"
	ln -sf "$dev" "/dev/disk/by-uuid/$uuid" # no udev in the VM
	printf 'tccrypt UUID=%s none luks,headless=true,_netdev\n' "$uuid" >"$WORK/crypttab"
	SYSTEMD_CRYPTTAB=$WORK/crypttab /lib/systemd/system-generators/systemd-cryptsetup-generator \
		"$gen" "$gen" "$gen" 2>"$WORK/gen.err" ||
		t_fail "systemd-cryptsetup-generator" "exit 0" "$(cat "$WORK/gen.err")"
	unit=$gen/systemd-cryptsetup@tccrypt.service
	[[ -f $unit ]] || t_fail "generator writes the unit" "$unit" "$(ls -R "$gen")"
	[[ -e $gen/remote-cryptsetup.target.requires/systemd-cryptsetup@tccrypt.service ||
		-e $gen/remote-cryptsetup.target.wants/systemd-cryptsetup@tccrypt.service ]] ||
		t_fail "_netdev puts it under remote-cryptsetup.target" "a .requires/.wants link" \
			"$(ls "$gen")"
	t_ok "the crypttab line becomes systemd-cryptsetup@tccrypt.service under remote-cryptsetup.target"
	exec=$(sed -n 's/^ExecStart=//p' "$unit")
	assert_match "^/lib/systemd/systemd-cryptsetup attach 'tccrypt'" "$exec" "ExecStart of the unit"
	eval "args=($exec)"
	set +e
	env -u KMSCRYPT_CONFIG_DIR -u KMSCRYPT_STATE_DIR timeout 120 "${args[@]}" \
		>"$WORK/sc.out" 2>&1 </dev/null
	rc=$?
	set -e
	assert_eq 0 "$rc" "the unit's ExecStart ($(tr '\n' ' ' <"$WORK/sc.out"))"
	assert_eq ACTIVE "$(t_dm_state tccrypt)" "tccrypt opened from crypttab"
	assert_table_uses_keyring tccrypt
	rm -f /etc/kmscrypt/kms/pc.conf "/dev/disk/by-uuid/$uuid"
}

t_case open_and_dump case_open_and_dump
t_case key_missing case_key_missing
t_case revoked case_revoked
t_case systemd_cryptsetup case_systemd_cryptsetup
t_case crypttab case_crypttab
t_finish
