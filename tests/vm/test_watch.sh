#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# `kmscrypt watch` on a real kernel against the fake AWS KMS (started inside the guest on
# 127.0.0.1), each case asserting the live dm tables:
#   wipe          key disabled at the KMS: the watcher wipes within (revoke_after + 1) x interval
#                 x 1.1 (+ slack), measured and printed; audit, status and metrics say so; the
#                 volume stays suspended after the key is enabled again (no --auto-restore) until
#                 `kmscrypt restore`, data intact
#   outage        5xx and dropped connections for several rounds wipe nothing (verdict
#                 unavailable, then usable again); an outage between two denials does not reset
#                 the denial count
#   alert         --on-revoke alert: nothing wiped, audit watch-alert
#   auto-restore  --auto-restore: wiped, then resumed once the key is enabled (a blocked reader
#                 finishes, data intact); a volume revoked by hand is not auto-restored
#   close         --on-revoke close: wiped, and the mapping removed once nothing holds it open
#   metrics       the metrics file parses with prometheus_client and has the series of the
#                 contract (one-hot state and verdict per volume, counters)
#   once          `watch --once`: one round over every configuration, then exit 0
# Runs as root inside the VM:  scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_watch.sh
set -euo pipefail
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
SRC=${KMSCRYPT_SOURCE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)}
# Seconds on top of the contract's bounds: under TCG on a busy host a process costs up to 0.5 s and
# a round of two volumes up to 3 s (the next round is due one interval after a round ends).
SLACK=${KMSCRYPT_VM_WATCH_SLACK:-8}

# ---- the fake, once for all cases (as tests/vm/test_e2e_aws.sh)
ip link set lo up
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
FK=$(mktemp -d /tmp/kmscrypt-fake-aws.XXXXXX)
t_certs "$FK/certs" # the host-made test PKI (tests/fakes/mkcerts.sh)
CA=$FK/certs/ca.pem
/usr/bin/python3 "$SRC/tests/fakes/fake_aws_kms.py" --certs "$FK/certs" --portfile "$FK/port" \
	--control-portfile "$FK/cport" >"$FK/log" 2>&1 &
FAKE_PID=$!
trap 'kill "$FAKE_PID" 2>/dev/null || true; t_global_cleanup' EXIT
for ((i = 0; i < 1200; i++)); do # python + botocore start slowly under TCG
	[[ -s $FK/port && -s $FK/cport ]] && break
	kill -0 "$FAKE_PID" 2>/dev/null || { cat "$FK/log" >&2; echo "FATAL: fake exited" >&2; exit 1; }
	sleep 0.25
done
[[ -s $FK/port ]] || { cat "$FK/log" >&2; echo "FATAL: fake did not start in 300 s" >&2; exit 1; }
EP=https://127.0.0.1:$(<"$FK/port")
CPORT=$(<"$FK/cport")
printf %s fakeSecretKeyForKmscryptTests0000000001 >"$FK/sk"
echo "fake AWS KMS at $EP (control $CPORT)"

# The Prometheus text-format parser of Debian's python3-prometheus-client: one line per sample,
# "TYPE NAME{k="v",...} VALUE" with the labels sorted; exit 1 with the parser's error otherwise.
cat >"$FK/promparse.py" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
try:
    fams = list(text_string_to_metric_families(text))
except Exception as e:
    print("parse error: %s: %s" % (type(e).__name__, e))
    sys.exit(1)
for f in fams:
    for s in f.samples:
        lab = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("%s %s{%s} %s" % (f.type, s.name, lab, repr(s.value)))
PY

# fctl PATH [JSON]: the fake's control API
fctl() {
	if (($# > 1)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$CPORT$1"
	fi
}
key_disable() { fctl /control "{\"op\":\"disable_key\",\"key_id\":\"$1\"}" >/dev/null; }
key_enable() { fctl /control "{\"op\":\"enable_key\",\"key_id\":\"$1\"}" >/dev/null; }

# t_kms_aws NAME KEYVAR: a fresh key at the fake and a static-credential configuration for it.
t_kms_aws() {
	local _out
	_out=$(fctl /control '{"op":"create_key","description":"vm watch"}')
	printf -v "$2" '%s' "$(jq -r .KeyId <<<"$_out")"
	kc 0 "kms create '$1' (aws)" -- kms create "$1" --provider aws --region us-east-1 \
		--endpoint "$EP" --ca-file "$CA" --key-id "${!2}" \
		--access-key-id AKIAFAKEKMS000000001 --secret-access-key-file "$FK/sk"
}

# ---- the watcher in the background ------------------------------------------------------------

now_us() { echo "${EPOCHREALTIME/./}"; }
fmt_s() { printf '%d.%03d' $(($1 / 1000000)) $(($1 % 1000000 / 1000)); } # MICROSECONDS

# watch_start ARGS...: `kmscrypt watch ARGS` in the background, log in $W_LOG, pid in $W_PID.
# The case's exit trap stops it (and clears the fake's faults) before lib.sh's cleanup.
watch_start() {
	W_LOG=$WORK/watch.log
	"$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" watch "$@" >"$W_LOG" 2>&1 &
	W_PID=$!
	T_BG+=("$W_PID")
	trap 'w_case_exit $?' EXIT
	t_ok "kmscrypt watch $* started (pid $W_PID)"
}

watch_kill() {
	local i
	[[ -n ${W_PID:-} ]] || return 0
	kill -TERM "$W_PID" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$W_PID" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$W_PID" 2>/dev/null || true
}

w_case_exit() { # RC
	watch_kill
	fctl /faults/reset '{}' >/dev/null 2>&1 || true
	if (($1 != 0)) && [[ -s ${W_LOG:-} ]]; then
		echo "    --- last lines of the watcher's output ($W_LOG):" >&2
		tail -n 40 "$W_LOG" | sed 's/^/    watch: /' >&2
	fi
	t_case_cleanup
}

# The watcher still runs (a dead watcher fails the case at once, with its output).
watch_alive() {
	kill -0 "$W_PID" 2>/dev/null && return 0
	local rc=0
	wait "$W_PID" || rc=$?
	t_fail "kmscrypt watch keeps running" "running" "exited with status $rc"
}

# watch_stop: SIGTERM stops the watcher cleanly (exit 0) within 10 s.
watch_stop() {
	local i rc=0
	watch_alive
	kill -TERM "$W_PID"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$W_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$W_PID" 2>/dev/null && t_fail "kmscrypt watch stops on SIGTERM" "exit within 10 s" \
		"still running"
	wait "$W_PID" || rc=$?
	W_PID=
	assert_eq 0 "$rc" "exit status of kmscrypt watch after SIGTERM"
}

# ---- what the watcher says --------------------------------------------------------------------

# t_watch UUID FIELD...: fields of the volume's "watch" object in `kmscrypt status --json`.
t_watch() {
	local out rc uuid=$1
	shift
	set +e
	out=$("$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" status --json \
		2>"$WORK/status.err")
	rc=$?
	set -e
	if ((rc != 0)); then
		echo "(status failed: exit $rc: $(head -n 1 "$WORK/status.err"))"
		return 0
	fi
	jq -r --arg u "$uuid" '[.volumes[] | select(.uuid == $u)] as $v | $ARGS.positional[] as $f |
		if ($v | length) == 0 then "(volume not listed)"
		elif ($v[0].watch | type) != "object" then "(no watch object: \($v[0].watch | tostring))"
		elif ($v[0].watch | has($f)) then $v[0].watch[$f] | tostring
		else "(no \($f))" end' --args "$@" <<<"$out" 2>/dev/null ||
		echo "(not JSON: ${out:0:200})"
}

# audit_find ACTION UUID: the audit records (compact JSON lines) of ACTION for UUID. The contract
# names the volume's key "uuid"; the audit log of the other commands names it "volume".
audit_find() {
	[[ -r $STATE/audit.log ]] || return 0
	jq -c --arg a "$1" --arg u "$2" 'select(.action == $a and ((.uuid // .volume) == $u))' \
		"$STATE/audit.log" 2>/dev/null || true
}

# m_get FILE NAME [LABEL=VALUE...]: the value of the first sample of NAME with these labels in a
# Prometheus text file ("(absent)" / "(no file)" otherwise). Bash only: it runs in poll loops.
m_get() {
	local file=$1 name=$2 line lab val kv ok needle
	shift 2
	[[ -r $file ]] || { echo "(no file)"; return 0; }
	while IFS= read -r line; do
		if [[ $line == "$name{"* ]]; then
			lab=${line#"$name"}
			lab=${lab%\}*}
			val=${line##*\} }
		elif [[ $line == "$name "* ]]; then
			lab=
			val=${line#"$name "}
		else
			continue
		fi
		ok=1
		for kv in "$@"; do
			needle="${kv%%=*}=\"${kv#*=}\""
			[[ $lab == *"{$needle"* || $lab == *",$needle"* ]] || { ok=0; break; }
		done
		((ok)) && { echo "${val%% *}"; return 0; }
	done <"$file"
	echo "(absent)"
}

# prom_parse FILE: parse FILE with prometheus_client into $WORK/prom.parsed, or fail the case.
prom_parse() {
	[[ -s $1 ]] || t_fail "metrics file $1 written" "a non-empty file" "$(ls -l "$1" 2>&1)"
	/usr/bin/python3 "$FK/promparse.py" "$1" >"$WORK/prom.parsed" 2>&1 ||
		t_fail "metrics file $1 parses with prometheus_client" "no parse error" \
			"$(cat "$WORK/prom.parsed"); file: $(head -c 2000 "$1")"
	t_ok "metrics file parses with prometheus_client ($(wc -l <"$WORK/prom.parsed") samples)"
}

# prom_has ERE WHAT: a parsed sample line ("TYPE NAME{labels} VALUE") matches ERE.
prom_has() {
	[[ $(prom_count "$1") != 0 ]] ||
		t_fail "$2" "a sample matching /$1/" "$(cat "$WORK/prom.parsed")"
	t_ok "$2"
}

# prom_count ERE: how many parsed sample lines match ERE (bash only: no process per check).
prom_count() {
	local line n=0
	while IFS= read -r line; do
		[[ $line =~ $1 ]] && n=$((n + 1))
	done <"$WORK/prom.parsed"
	echo "$n"
}

# ---- waiting ----------------------------------------------------------------------------------

# t_wait SEC WHAT COND ARGS...: poll COND (a function that sets W_SEEN) every 0.2 s until it
# succeeds; fail with the last W_SEEN after SEC seconds. The elapsed time goes to W_WAITED (us).
t_wait() {
	local sec=$1 what=$2 t0
	shift 2
	t0=$(now_us)
	W_SEEN=
	until "$@"; do
		[[ -n ${W_PID:-} ]] && watch_alive
		(($(now_us) - t0 < sec * 1000000)) ||
			t_fail "$what" "within $sec s" "after $(fmt_s $(($(now_us) - t0))) s: '$W_SEEN'"
		sleep 0.2
	done
	W_WAITED=$(($(now_us) - t0))
	t_ok "$what (after $(fmt_s "$W_WAITED") s: '$W_SEEN')"
}

c_verdict() { # UUID VERDICT
	W_SEEN=$(t_watch "$1" verdict)
	[[ $W_SEEN == "$2" ]]
}
c_denials() { # UUID N
	W_SEEN=$(t_watch "$1" consecutive_denials)
	[[ $W_SEEN == "$2" ]]
}
c_m_denials() { # MAPPING N: the metrics file counts at least N consecutive denials for MAPPING
	W_SEEN=$(m_get "$WORK/m.prom" kmscrypt_volume_consecutive_denials mapping="$1")
	[[ $W_SEEN =~ ^[0-9]+ ]] && ((${W_SEEN%%.*} >= $2)) && W_SEEN=${W_SEEN%%.*}
}
# m_state FILE MAPPING: the state label of MAPPING's kmscrypt_volume_state sample in FILE.
m_state() {
	local line
	while IFS= read -r line; do
		[[ $line == "kmscrypt_volume_state{"*"mapping=\"$2\""* ]] || continue
		line=${line#*state=\"}
		echo "${line%%\"*}"
		return 0
	done <"$1"
	echo "(absent)"
}
c_wiped() { # MAPPING
	W_SEEN=$(t_table_key "$1")
	[[ $W_SEEN =~ ^0{64,}$ ]]
}
c_dm() { # MAPPING STATE
	W_SEEN=$(t_dm_state "$1")
	[[ $W_SEEN == "$2" ]]
}
c_audit() { # ACTION UUID
	W_SEEN=$(audit_find "$1" "$2")
	[[ -n $W_SEEN ]]
}
c_metric_ge() { # FILE MIN NAME LABEL=VALUE...
	local f=$1 min=$2
	shift 2
	W_SEEN=$(m_get "$f" "$@")
	[[ $W_SEEN =~ ^[0-9]+(\.0*)?$ ]] && ((${W_SEEN%%.*} >= min))
}

# rounds FILE: kmscrypt_watch_rounds_total (0 while absent).
rounds() {
	local v
	v=$(m_get "$1" kmscrypt_watch_rounds_total)
	[[ $v =~ ^[0-9]+ ]] && echo "${BASH_REMATCH[0]}" || echo 0
}

# wait_rounds FILE N SEC: N more rounds than now (the watcher did look N more times).
wait_rounds() {
	local r0
	r0=$(rounds "$1")
	t_wait "$3" "$2 more watch round(s) (from $r0)" c_metric_ge "$1" $((r0 + $2)) \
		kmscrypt_watch_rounds_total
}

# assert_still_open MAPPING: active, keyring-backed table (nothing wiped).
assert_still_open() {
	assert_eq ACTIVE "$(t_dm_state "$1")" "$1 is active (not suspended)"
	assert_table_uses_keyring "$1"
}

# ---- cases --------------------------------------------------------------------------------------

# a. The KMS disables the key: wiped within the contract's bound, measured; stays wiped without
#    --auto-restore even once the key is enabled again; restore brings it back with its data.
case_wipe() {
	local key dev uuid iv=5 ra=2 bound_us t_before t_after t_prev t_seen rec audit_us kms_show
	t_kms_aws wa key
	kc 0 "kms edit --interval $iv" -- kms edit wa --interval "$iv"
	kc 0 "kms show --json" -- kms show wa --json
	kms_show=$(jq -c .watch "$T_OUT" 2>/dev/null || echo "(not JSON)")
	assert_eq "{\"interval\":$iv,\"on_revoke\":\"wipe\",\"revoke_after\":$ra,\"auto_restore\":false}" \
		"$kms_show" "kms show --json: watch settings after 'kms edit --interval $iv'"
	t_volume dev uuid wa1 wa kv-wa
	kc 0 "unlock" -- unlock "$dev"
	t_write_data kv-wa wa

	watch_start --metrics-file "$WORK/m.prom"
	t_wait $((iv * 2 + SLACK)) "first probe: verdict usable" c_verdict "$uuid" usable
	assert_still_open kv-wa

	bound_us=$(((ra + 1) * iv * 1100000 + SLACK * 1000000))
	t_before=$(now_us)
	key_disable "$key"
	t_after=$(now_us)
	t_prev=$t_after
	t_seen=
	while (($(now_us) - t_before < bound_us)); do
		if c_wiped kv-wa; then
			t_seen=$(now_us)
			break
		fi
		t_prev=$(now_us)
		watch_alive
		sleep 0.2
	done
	[[ -n $t_seen ]] || t_fail "key wiped within (revoke_after + 1) x interval x 1.1 + $SLACK s" \
		"all-zero key within $(fmt_s "$bound_us") s of disable_key" \
		"'$(t_table_key kv-wa)' after $(fmt_s $(($(now_us) - t_before))) s"
	rec=$(audit_find watch-wipe "$uuid" | head -n 1)
	audit_us=
	if [[ -n $rec ]]; then
		audit_us=$(date -d "$(jq -r .time <<<"$rec")" +%s%6N 2>/dev/null) || audit_us=
	fi
	echo "MEASURED (interval $iv s, revoke-after $ra): key disabled at the KMS -> all-zero key in" \
		"the dm table after $(fmt_s $((t_seen - t_before))) s (the wipe happened between" \
		"$(fmt_s $((t_prev - t_before))) s and $(fmt_s $((t_seen - t_before))) s after disable_key;" \
		"disable_key itself took $(fmt_s $((t_after - t_before))) s)${audit_us:+; audit watch-wipe record at $(fmt_s $((audit_us - t_before))) s}"
	t_ok "key wiped $(fmt_s $((t_seen - t_before))) s after disable_key (bound $(fmt_s "$bound_us") s)"
	assert_eq SUSPENDED "$(t_dm_state kv-wa)" "kv-wa suspended by the watcher"
	assert_table_key_wiped kv-wa
	assert_no_key_in_proc_keys "$uuid"
	# The metrics file of the round that wiped (the first with ra denials; the next round is
	# $iv s away): it already says revoked-suspended, not the state read before the wipe.
	t_wait $((iv + SLACK)) "metrics: the wiping round's file (consecutive_denials >= $ra)" \
		c_m_denials kv-wa "$ra"
	cp "$WORK/m.prom" "$WORK/m.wipe-round.prom"
	if [[ $W_SEEN == "$ra" ]]; then
		assert_eq revoked-suspended "$(m_state "$WORK/m.wipe-round.prom" kv-wa)" \
			"metrics of the wiping round: kv-wa state"
	else
		echo "    (the wiping round's metrics file was replaced before it was read: denials $W_SEEN)"
	fi

	t_wait 5 "audit: watch-wipe record for kv-wa" c_audit watch-wipe "$uuid"
	assert_match '"kms":"wa"' "$W_SEEN" "watch-wipe record names the KMS"
	assert_match '"mapping":"kv-wa"' "$W_SEEN" "watch-wipe record names the mapping"
	assert_match '"reason":"kms-denied: [^"]*DisabledException' "$W_SEEN" \
		"watch-wipe reason is kms-denied: <vendor code>"
	assert_eq revoked-suspended "$(t_status "$uuid" state)" "status: state after the wipe"
	assert_match '^kms-denied: .*DisabledException' "$(t_status "$uuid" revoke_reason)" \
		"status: revoke reason"
	assert_eq denied "$(t_watch "$uuid" verdict)" "status --json: watch.verdict"
	assert_eq true "$(t_watch "$uuid" wiped_by_watcher)" "status --json: watch.wiped_by_watcher"
	assert_match '^[0-9]+$' "$(t_watch "$uuid" consecutive_denials)" "watch.consecutive_denials"
	(($(t_watch "$uuid" consecutive_denials) >= ra)) ||
		t_fail "watch.consecutive_denials >= revoke-after" ">= $ra" \
			"$(t_watch "$uuid" consecutive_denials)"
	assert_match '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$(t_watch "$uuid" last_probe)" \
		"watch.last_probe is RFC 3339"
	kc 0 "status (text)" -- status kv-wa
	assert_match 'watcher:[[:space:]]+denied at [0-9]{4}-' "$(cat "$T_OUT")" \
		"status text: 'watcher: denied at <time>'"
	assert_match "KMS 'wa' \(aws\)[^"$'\n'"]*DisabledException[^"$'\n'"]*wiped[^"$'\n'"]*'kv-wa'" "$(cat "$W_LOG")" \
		"the watcher's log line says which KMS denied, why, and which volume it wiped"
	prom_parse "$WORK/m.prom"
	prom_has "^gauge kmscrypt_volume_state\{kms=\"wa\",mapping=\"kv-wa\",state=\"revoked-suspended\",uuid=\"$uuid\"\} 1\.0$" \
		"metrics: kv-wa in state revoked-suspended"
	prom_has "^gauge kmscrypt_volume_probe_verdict\{kms=\"wa\",mapping=\"kv-wa\",uuid=\"$uuid\",verdict=\"denied\"\} 1\.0$" \
		"metrics: kv-wa verdict denied"

	# Without --auto-restore the volume stays suspended after access returns.
	key_enable "$key"
	t_wait $((iv * 2 + SLACK)) "the watcher probes kv-wa again: usable" c_verdict "$uuid" usable
	wait_rounds "$WORK/m.prom" 1 $((iv * 2 + SLACK))
	assert_eq SUSPENDED "$(t_dm_state kv-wa)" \
		"kv-wa stays suspended after the key is enabled (no --auto-restore)"
	assert_table_key_wiped kv-wa
	assert_eq "" "$(audit_find watch-restore "$uuid")" "no watch-restore record"

	kc 0 "restore once the key is enabled again" -- restore kv-wa
	assert_still_open kv-wa
	t_check_data kv-wa wa
	assert_status "$uuid" active keyring
	t_wait $((iv * 2 + SLACK)) "the watcher sees the restored volume as usable" \
		c_verdict "$uuid" usable
	assert_eq 0 "$(t_watch "$uuid" consecutive_denials)" "watch.consecutive_denials after restore"
	assert_eq false "$(t_watch "$uuid" wiped_by_watcher)" "watch.wiped_by_watcher after restore"
	assert_still_open kv-wa
	watch_stop
}

# b. An outage (5xx, then dropped connections) over several rounds wipes nothing; verdict
#    unavailable, then usable. Then: one denial, an outage, one more denial = two in a row: wiped
#    (an outage resets nothing).
case_outage() {
	local key dev uuid iv=3 t0 e0 M=$WORK/m.prom
	t_kms_aws wb key
	kc 0 "kms edit --interval $iv" -- kms edit wb --interval "$iv"
	t_volume dev uuid wb1 wb kv-wb
	kc 0 "unlock" -- unlock "$dev"
	t_write_data kv-wb wb
	watch_start --metrics-file "$M"
	t_wait $((iv * 2 + SLACK)) "first probe: verdict usable" c_verdict "$uuid" usable

	t0=$(now_us)
	fctl /faults '{"error5xx": 1000000}' >/dev/null
	t_log "outage 1: every request to the fake answers HTTP 500"
	t_wait $((iv * 6 + SLACK)) "verdict unavailable during the outage" c_verdict "$uuid" unavailable
	t_wait $((iv * 6 + SLACK)) "3 unavailable probes during the 5xx outage" \
		c_metric_ge "$M" 3 kmscrypt_kms_probe_errors_total kms=wb class=unavailable
	assert_still_open kv-wb
	t_check_data kv-wb wb
	fctl /faults/reset '{}' >/dev/null
	e0=$(m_get "$M" kmscrypt_kms_probe_errors_total kms=wb class=unavailable)
	e0=${e0%%.*}
	fctl /faults '{"drop": 1000000}' >/dev/null
	t_log "outage 2: the fake closes every connection without a reply"
	t_wait $((iv * 4 + SLACK)) "1 more unavailable probe while connections are dropped" \
		c_metric_ge "$M" $((e0 + 1)) kmscrypt_kms_probe_errors_total kms=wb class=unavailable
	assert_eq unavailable "$(t_watch "$uuid" verdict)" "status: verdict during the outage"
	assert_eq 0 "$(t_watch "$uuid" consecutive_denials)" "no denial counted during the outage"
	(($(now_us) - t0 >= 3 * iv * 1000000)) ||
		t_fail "the outage lasted at least 3 intervals" ">= $((3 * iv)) s" \
			"$(fmt_s $(($(now_us) - t0))) s"
	t_log "the outage lasted $(fmt_s $(($(now_us) - t0))) s ($((3 * iv)) s = 3 intervals)"
	assert_still_open kv-wb
	assert_eq "" "$(audit_find watch-wipe "$uuid")" "no watch-wipe record after the outage"
	t_wait 5 "audit: a watch-verdict record says unavailable" c_audit watch-verdict "$uuid"
	assert_match 'unavailable' "$(audit_find watch-verdict "$uuid")" \
		"a watch-verdict record says unavailable"
	assert_match "KMS 'wb' \(aws\)" "$(cat "$W_LOG")" "the watcher's log names the KMS"
	fctl /faults/reset '{}' >/dev/null
	t_wait $((iv * 2 + SLACK)) "verdict usable again after the outage" c_verdict "$uuid" usable
	assert_still_open kv-wb
	t_check_data kv-wb wb

	# denied, unavailable x2, denied: the second denial completes revoke-after 2.
	key_disable "$key"
	t_wait $((iv * 2 + SLACK)) "one denial" c_denials "$uuid" 1
	fctl /faults '{"error5xx": 1000000}' >/dev/null
	e0=$(m_get "$M" kmscrypt_kms_probe_errors_total kms=wb class=unavailable)
	e0=${e0%%.*}
	t_wait $((iv * 4 + SLACK)) "2 unavailable probes after the first denial" \
		c_metric_ge "$M" $((e0 + 2)) kmscrypt_kms_probe_errors_total kms=wb class=unavailable
	assert_eq 1 "$(t_watch "$uuid" consecutive_denials)" "the outage keeps the denial count"
	assert_still_open kv-wb
	fctl /faults/reset '{}' >/dev/null
	t_wait $((iv * 2 + SLACK)) "the next denial wipes (1 before the outage + 1 after)" c_wiped kv-wb
	t_wait 5 "audit: watch-wipe record" c_audit watch-wipe "$uuid"
	watch_stop
	key_enable "$key"
	kc 0 "restore" -- restore kv-wb
	t_check_data kv-wb wb
}

# c. --on-revoke alert: denied, logged and audited, nothing wiped.
case_alert() {
	local key dev uuid iv=2 M=$WORK/m.prom
	t_kms_aws wc key
	kc 0 "kms edit --interval $iv --on-revoke alert" -- kms edit wc --interval "$iv" --on-revoke alert
	kc 0 "kms show" -- kms show wc
	assert_match 'on revoke: alert' "$(cat "$T_OUT")" "kms show: 'on revoke: alert'"
	t_volume dev uuid wc1 wc kv-wc
	kc 0 "unlock" -- unlock "$dev"
	t_write_data kv-wc wc
	watch_start --metrics-file "$M"
	t_wait $((iv * 2 + SLACK)) "first probe: verdict usable" c_verdict "$uuid" usable
	key_disable "$key"
	t_wait $((3 * iv * 11 / 10 + SLACK)) "audit: watch-alert record" c_audit watch-alert "$uuid"
	wait_rounds "$M" 1 $((iv * 2 + SLACK))
	assert_still_open kv-wc
	t_check_data kv-wc wc
	assert_eq active "$(t_status "$uuid" state)" "status: state"
	assert_eq denied "$(t_watch "$uuid" verdict)" "status: watch.verdict"
	assert_eq false "$(t_watch "$uuid" wiped_by_watcher)" "status: watch.wiped_by_watcher"
	assert_eq "" "$(audit_find watch-wipe "$uuid")" "no watch-wipe record"
	assert_eq "" "$(audit_find revoke "$uuid")" "no revoke record"
	assert_match "KMS 'wc' \(aws\)[^"$'\n'"]*'kv-wc'" "$(cat "$W_LOG")" \
		"the watcher's log names the KMS and the volume"
	key_enable "$key"
	watch_stop
}

# d. --auto-restore: the watcher's wipe is undone once access returns; a revoke by hand is not.
case_auto_restore() {
	local key dev uuid dev2 uuid2 iv=2 reader t0 M=$WORK/m.prom
	t_kms_aws wd key
	kc 0 "kms edit --interval $iv --auto-restore" -- kms edit wd --interval "$iv" --auto-restore
	kc 0 "kms show --json" -- kms show wd --json
	assert_eq true "$(jq -r .watch.auto_restore "$T_OUT")" "kms show --json: watch.auto_restore"
	t_volume dev uuid wd1 wd kv-wd1
	t_volume dev2 uuid2 wd2 wd kv-wd2
	kc 0 "unlock --all" -- unlock --all
	t_write_data kv-wd1 d1
	t_write_data kv-wd2 d2
	watch_start --metrics-file "$M"
	t_wait $((iv * 2 + SLACK)) "first probe: kv-wd1 usable" c_verdict "$uuid" usable
	t_wait $((iv * 2 + SLACK)) "first probe: kv-wd2 usable" c_verdict "$uuid2" usable
	kc 0 "revoke kv-wd2 by hand while the watcher runs" -- revoke kv-wd2 --reason "by hand"
	assert_table_key_wiped kv-wd2

	key_disable "$key"
	t_wait $((3 * iv * 11 / 10 + SLACK)) "the watcher wipes kv-wd1" c_wiped kv-wd1
	assert_eq SUSPENDED "$(t_dm_state kv-wd1)" "kv-wd1 suspended"
	t_reader kv-wd1 100
	reader=$T_READER
	assert_blocked "$reader" 1

	t0=$(now_us)
	key_enable "$key"
	t_wait $((2 * iv * 11 / 10 + SLACK)) "kv-wd1 resumed by the watcher once the key is enabled" \
		c_dm kv-wd1 ACTIVE
	echo "MEASURED (interval $iv s): key enabled -> kv-wd1 resumed after $(fmt_s "$W_WAITED") s"
	assert_reader_done "$reader" 10
	assert_table_uses_keyring kv-wd1
	t_check_data kv-wd1 d1
	t_wait 5 "audit: watch-restore record for kv-wd1" c_audit watch-restore "$uuid"
	assert_eq active "$(t_status "$uuid" state)" "status: kv-wd1 state"
	t_wait $((iv * 2 + SLACK)) "status: kv-wd1 verdict usable" c_verdict "$uuid" usable
	assert_eq false "$(t_watch "$uuid" wiped_by_watcher)" "status: kv-wd1 no longer wiped by the watcher"

	wait_rounds "$M" 1 $((iv * 2 + SLACK))
	assert_eq SUSPENDED "$(t_dm_state kv-wd2)" "kv-wd2 (revoked by hand) stays suspended"
	assert_table_key_wiped kv-wd2
	assert_eq revoked-suspended "$(t_status "$uuid2" state)" "status: kv-wd2 state"
	assert_eq "by hand" "$(t_status "$uuid2" revoke_reason)" "status: kv-wd2 keeps its reason"
	assert_eq "" "$(audit_find watch-restore "$uuid2")" "no watch-restore record for kv-wd2"
	watch_stop
	kc 0 "restore kv-wd2 by hand" -- restore kv-wd2
	assert_still_open kv-wd2
	t_check_data kv-wd2 d2
}

# e. `watch --once` writes a metrics file that prometheus_client parses, with the contract's series.
case_metrics() {
	local key key2 dev uuid dev2 uuid2 n now ts
	t_kms_aws we1 key
	t_kms_aws we2 key2
	kc 0 "kms show --json (defaults)" -- kms show we1 --json
	assert_eq '{"interval":60,"on_revoke":"wipe","revoke_after":2,"auto_restore":false}' \
		"$(jq -c .watch "$T_OUT" 2>/dev/null || echo "(not JSON)")" "kms show --json: default watch settings"
	kc 0 "kms edit --interval 2" -- kms edit we1 --interval 2
	kc 0 "kms edit --revoke-after 1 --interval 2" -- kms edit we2 --revoke-after 1 --interval 2
	kc 0 "kms show --json" -- kms show we2 --json
	assert_eq '{"interval":2,"on_revoke":"wipe","revoke_after":1,"auto_restore":false}' \
		"$(jq -c .watch "$T_OUT" 2>/dev/null || echo "(not JSON)")" \
		"kms show --json: the edited watch settings"
	t_volume dev uuid we1 we1 kv-we1
	t_volume dev2 uuid2 we2 we2 kv-we2
	kc 0 "unlock --all" -- unlock --all
	t_log "kv-we1 on $dev (KMS we1), kv-we2 on $dev2 (KMS we2, revoke-after 1)"
	mkdir "$WORK/prom"
	watch_start --metrics-file "$WORK/prom/kmscrypt.prom"
	t_wait $((2 * 2 + SLACK)) "first probe: kv-we1 usable" c_verdict "$uuid" usable
	t_wait $((2 * 2 + SLACK)) "first probe: kv-we2 usable" c_verdict "$uuid2" usable
	key_disable "$key2"
	t_wait $((2 * 2 + SLACK)) "kv-we2 wiped at the first denial (revoke-after 1)" c_wiped kv-we2
	wait_rounds "$WORK/prom/kmscrypt.prom" 1 $((2 * 2 + SLACK))
	assert_still_open kv-we1
	assert_eq "kmscrypt.prom" "$(shopt -s nullglob dotglob; cd "$WORK/prom" && f=(*) && echo "${f[*]}")" \
		"only the metrics file in its directory (no temporary file left)"

	prom_parse "$WORK/prom/kmscrypt.prom"
	assert_eq 0 "$(prom_count '^unknown ')" "every sample has a # TYPE"
	prom_has '^gauge kmscrypt_watch_up\{\} 1\.0$' "kmscrypt_watch_up 1"
	prom_has '^counter kmscrypt_watch_rounds_total\{\} [1-9]' "kmscrypt_watch_rounds_total >= 1"
	prom_has '^gauge kmscrypt_watch_round_duration_seconds\{\} [0-9]' \
		"kmscrypt_watch_round_duration_seconds"
	prom_has '^gauge kmscrypt_watch_last_round_timestamp_seconds\{\} [0-9]' \
		"kmscrypt_watch_last_round_timestamp_seconds"
	now=$(date +%s)
	ts=$(m_get "$WORK/prom/kmscrypt.prom" kmscrypt_watch_last_round_timestamp_seconds)
	ts=${ts%%.*}
	if ! [[ $ts =~ ^[0-9]+$ ]] || ((ts > now || ts <= now - 300)); then
		t_fail "last round timestamp is a Unix time of the last minutes" "within 300 s of $now" "$ts"
	fi
	t_ok "kmscrypt_watch_last_round_timestamp_seconds = $ts (now $now)"

	prom_has "^gauge kmscrypt_volume_state\{kms=\"we1\",mapping=\"kv-we1\",state=\"active\",uuid=\"$uuid\"\} 1\.0$" \
		"volume_state: kv-we1 active"
	prom_has "^gauge kmscrypt_volume_state\{kms=\"we2\",mapping=\"kv-we2\",state=\"revoked-suspended\",uuid=\"$uuid2\"\} 1\.0$" \
		"volume_state: kv-we2 revoked-suspended"
	prom_has "^gauge kmscrypt_volume_probe_verdict\{kms=\"we1\",mapping=\"kv-we1\",uuid=\"$uuid\",verdict=\"usable\"\} 1\.0$" \
		"probe_verdict: kv-we1 usable"
	prom_has "^gauge kmscrypt_volume_probe_verdict\{kms=\"we2\",mapping=\"kv-we2\",uuid=\"$uuid2\",verdict=\"denied\"\} 1\.0$" \
		"probe_verdict: kv-we2 denied"
	for u in "$uuid" "$uuid2"; do
		n=$(prom_count "^gauge kmscrypt_volume_state\{.*uuid=\"$u\".*\} 1\.0$")
		assert_eq 1 "$n" "volume_state is one-hot for ${u:0:8} (one series with value 1)"
		n=$(prom_count "^gauge kmscrypt_volume_state\{.*uuid=\"$u\".*\} ")
		assert_eq 1 "$n" "volume_state has only the current state for ${u:0:8}"
		n=$(prom_count "^gauge kmscrypt_volume_probe_verdict\{.*uuid=\"$u\".*\} 1\.0$")
		assert_eq 1 "$n" "probe_verdict is one-hot for ${u:0:8}"
		prom_has "^gauge kmscrypt_volume_last_probe_timestamp_seconds\{.*uuid=\"$u\"\} [1-9]" \
			"last_probe_timestamp for ${u:0:8}"
	done
	prom_has "^gauge kmscrypt_volume_consecutive_denials\{kms=\"we1\",mapping=\"kv-we1\",uuid=\"$uuid\"\} 0\.0$" \
		"consecutive_denials kv-we1 = 0"
	prom_has "^gauge kmscrypt_volume_consecutive_denials\{kms=\"we2\",mapping=\"kv-we2\",uuid=\"$uuid2\"\} [1-9]" \
		"consecutive_denials kv-we2 >= 1"
	for k in we1 we2; do
		prom_has "^gauge kmscrypt_kms_probe_duration_seconds\{kms=\"$k\",provider=\"aws\"\} [0-9]" \
			"kms_probe_duration_seconds for $k"
		prom_has "^counter kmscrypt_kms_probes_total\{kms=\"$k\",provider=\"aws\"\} [1-9]" \
			"kms_probes_total for $k"
	done
	prom_has '^counter kmscrypt_kms_probe_errors_total\{class="denied",kms="we2",provider="aws"\} [1-9]' \
		"kms_probe_errors_total{class=denied} for we2"
	assert_eq 0 "$(prom_count '^counter kmscrypt_kms_probe_errors_total\{[^}]*kms="we1"[^}]*\} [1-9]')" \
		"no probe errors counted for we1"
	watch_stop
	key_enable "$key2"
	kc 0 "restore kv-we2" -- restore kv-we2
	assert_still_open kv-we2
	# the contract's text lines of `kms show` (last: a mismatch does not hide the metrics checks)
	kc 0 "kms show (text)" -- kms show we2
	assert_match '[Ww]atch interval:[[:space:]]+2 s' "$(cat "$T_OUT")" \
		"kms show: 'watch interval: 2 s'"
	assert_match '[Oo]n revoke:[[:space:]]+wipe' "$(cat "$T_OUT")" "kms show: 'on revoke: wipe'"
}

# f. --on-revoke close: wiped, and the mapping removed once nothing holds it (here an open file
#    descriptor; a mounted file system is frozen by the suspend and holds the device until resume,
#    even after umount, so a mounted volume is only wiped).
case_close() {
	local key dev uuid dev2 uuid2 iv=2 holder M=$WORK/m.prom
	t_kms_aws wf key
	kc 0 "kms edit --interval $iv --on-revoke close --revoke-after 1" -- \
		kms edit wf --interval "$iv" --on-revoke close --revoke-after 1
	t_volume dev uuid wf1 wf kv-wf1
	t_volume dev2 uuid2 wf2 wf kv-wf2
	kc 0 "unlock --all" -- unlock --all
	watch_start --metrics-file "$M"
	# the holder: a process of its own, started after the watcher (which must not inherit it)
	# shellcheck disable=SC2217  # the open file descriptor is the point
	sleep 600 </dev/mapper/kv-wf2 &
	holder=$!
	T_BG+=("$holder")
	t_log "kv-wf2 held open by pid $holder"
	t_wait $((iv * 2 + SLACK)) "first probe: kv-wf1 usable" c_verdict "$uuid" usable
	key_disable "$key"
	t_wait $((2 * iv * 11 / 10 + SLACK)) "kv-wf1 (unused) wiped and closed" c_dm kv-wf1 absent
	t_wait 5 "audit: watch-close record for kv-wf1" c_audit watch-close "$uuid"
	assert_match . "$(audit_find watch-wipe "$uuid")" "audit: watch-wipe record for kv-wf1 first"
	assert_eq revoked-closed "$(t_status "$uuid" state)" "status: kv-wf1 state"
	t_wait $((2 * iv * 11 / 10 + SLACK)) "kv-wf2 (held open) wiped" c_wiped kv-wf2
	wait_rounds "$M" 1 $((iv * 2 + SLACK))
	assert_eq SUSPENDED "$(t_dm_state kv-wf2)" "kv-wf2 stays (suspended, wiped) while held open"
	assert_table_key_wiped kv-wf2
	kill "$holder"
	wait "$holder" 2>/dev/null || true
	t_wait $((2 * iv * 11 / 10 + SLACK)) "kv-wf2 closed once its holder is gone" c_dm kv-wf2 absent
	t_wait 5 "audit: watch-close record for kv-wf2" c_audit watch-close "$uuid2"
	watch_stop
	key_enable "$key"
	kc 0 "restore kv-wf1 (reopens a closed volume)" -- restore kv-wf1
	assert_still_open kv-wf1
}

# g. `watch --once`: one round over every configuration (a denial with revoke-after 1 wipes), exit 0.
case_once() {
	local key dev uuid
	t_kms_aws wo key
	kc 0 "kms edit --revoke-after 1" -- kms edit wo --revoke-after 1
	t_volume dev uuid wo wo kv-wo
	kc 0 "unlock" -- unlock "$dev"
	key_disable "$key"
	kc 0 "watch --once" -- watch --once --metrics-file "$WORK/once.prom"
	t_log "watch --once said: $(tr '\n' '|' <"$T_ERR")"
	assert_eq SUSPENDED "$(t_dm_state kv-wo)" "kv-wo wiped by the one round (revoke-after 1)"
	assert_table_key_wiped kv-wo
	assert_match . "$(audit_find watch-wipe "$uuid")" "audit: watch-wipe record for kv-wo"
	prom_parse "$WORK/once.prom"
	prom_has '^counter kmscrypt_watch_rounds_total\{\} 1\.0$' "kmscrypt_watch_rounds_total 1"
	prom_has "^gauge kmscrypt_volume_probe_verdict\{kms=\"wo\",mapping=\"kv-wo\",uuid=\"$uuid\",verdict=\"denied\"\} 1\.0$" \
		"probe_verdict: kv-wo denied"
	key_enable "$key"
	kc 0 "restore kv-wo" -- restore kv-wo
}

# KMSCRYPT_VM_WATCH_CASES="wipe metrics" runs only those cases (debugging); default: all.
for c in wipe outage alert auto-restore close metrics once; do
	if [[ " ${KMSCRYPT_VM_WATCH_CASES:-$c} " == *" $c "* ]]; then
		t_case "$c" "case_${c//-/_}"
	fi
done
t_finish
