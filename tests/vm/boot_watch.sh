#!/bin/bash
# kmscrypt-watch.service with systemd as PID 1 (scripts/vm/run.sh --systemd), against the fake
# AWS KMS running in the guest as a unit on fixed ports (its keys persisted in the build dir):
#   - the unit starts at boot and reaches active through sd_notify READY (Type=notify); its status
#     text says "watching N volume(s) on M KMS"; the sandbox leaves the metrics file writable;
#   - a volume unlocked after boot, then a new KMS configuration with a volume of its own, are
#     picked up by `systemctl reload` (SIGHUP: same main PID, no restart): status text and the
#     metrics file (parsed with prometheus_client) show them;
#   - disabling the first key at the fake wipes that volume's key under the unit (dm table all
#     zero, journal line, audit record) and leaves the other KMS configuration's volume alone;
#   - with WatchdogSec=8 (a drop-in) it is still the same process after 3 periods (WATCHDOG=1);
#   - `systemctl stop` ends it cleanly (SIGTERM, exit 0); no ordering cycle in the journal.
# Nothing the unit uses lives in the checkout (its sandbox hides /tmp and /home, where a checkout
# may be): the binary goes to /usr/local/sbin, CA and secret to /etc/kmscrypt.
#
# Run on the host (ctest registers tests/vm/boot_*.sh so): bash tests/vm/boot_watch.sh
# The same file is the guest's --setup (`setup`) and test command (`check`).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary}"
KMSCRYPT=$(realpath -- "$KMSCRYPT")
export KMSCRYPT
build=$(realpath -- "${KMSCRYPT_BUILD_DIR:-$(dirname "$KMSCRYPT")}")
export KMSCRYPT_BUILD_DIR=$build
P=$build/vm/boot/boot_watch
PORT=18453 CPORT=18454
AKID=AKIAFAKEKMS000000001
IV=2                                                  # watch interval of both configurations
PROM=/var/lib/prometheus/node-exporter/kmscrypt.prom  # the unit's --metrics-file
UNIT=kmscrypt-watch.service
WD=8                                                  # WatchdogSec= of the test's drop-in

fake_cmd=(/usr/bin/python3 "$src/tests/fakes/fake_aws_kms.py" --certs "$P/certs" --state "$P/aws.json"
	--port "$PORT" --control-port "$CPORT" --portfile "$P/port")
fctl() { # PATH JSON
	curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
}
wait_port() { # SEC
	local i
	for ((i = 0; i < $1 * 4; i++)); do
		[[ -s $P/port ]] && return 0
		sleep 0.25
	done
	return 1
}
kms_create() { # NAME KEY
	kmscrypt kms create "$1" --provider aws --region us-east-1 \
		--endpoint "https://127.0.0.1:$PORT" --ca-file /etc/kmscrypt/aws-ca.pem --key-id "$2" \
		--access-key-id $AKID --secret-access-key-file /etc/kmscrypt/aws-sk --interval $IV
}

# ---- in the guest, before switch_root (no udev): fake KMS, configuration, volumes, units
setup() {
	set -e
	local dev1 dev2 key1 key2 fake_pid
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
	ip link set lo up
	install -m 0755 "$KMSCRYPT" /usr/local/sbin/kmscrypt
	mkdir -p /etc/kmscrypt
	install -m 0644 "$P/certs/ca.pem" /etc/kmscrypt/aws-ca.pem
	install -m 0600 "$P/aws-sk" /etc/kmscrypt/aws-sk
	"${fake_cmd[@]}" >>"$P/fake.log" 2>&1 &
	fake_pid=$!
	wait_port 300 || { cat "$P/fake.log" >&2; echo "FATAL: the fake did not start" >&2; exit 1; }
	key1=$(fctl /control '{"op":"create_key"}' | jq -r .KeyId)
	key2=$(fctl /control '{"op":"create_key"}' | jq -r .KeyId)
	echo "$key1 $key2" >"$P/keys"
	kms_create aws1 "$key1"
	truncate -s 32M "$P/vol1.img" "$P/vol2.img"
	dev1=$(losetup --find --show "$P/vol1.img")
	dev2=$(losetup --find --show "$P/vol2.img")
	echo "$dev1 $dev2" >"$P/loops"
	kmscrypt format "$dev1" --kms aws1 --label volw1
	kill "$fake_pid"
	wait "$fake_pid" 2>/dev/null || true
	rm -f "$P/port"
	# node_exporter's textfile directory (the unit's ReadWritePaths= names it with "-")
	mkdir -p "${PROM%/*}"
	install -m 0644 "$src/unit/$UNIT" /etc/systemd/system/
	systemctl enable "$UNIT"
	# A short watchdog, so that the test outlives several periods: missing WATCHDOG=1 pings
	# would get the watcher killed and restarted (checked through MainPID and NRestarts).
	mkdir -p "/etc/systemd/system/$UNIT.d"
	printf '[Service]\nWatchdogSec=%s\n' "$WD" >"/etc/systemd/system/$UNIT.d/watchdog.conf"
	cat >/etc/systemd/system/kmscrypt-vm-fakeaws.service <<EOF
[Unit]
Description=fake AWS KMS
DefaultDependencies=no
[Service]
ExecStart=${fake_cmd[*]}
EOF
	ln -s ../kmscrypt-vm-fakeaws.service /etc/systemd/system/sysinit.target.wants/
}

# ---- in the guest, after multi-user.target
. "$src/tests/lib/assert.sh"
prop() { systemctl show -P "$1" "$UNIT"; }
dm_state() { dmsetup info "$1" 2>/dev/null | sed -n 's/^State: *//p'; } # ACTIVE, SUSPENDED or ''
table_key() { dmsetup table --showkeys "$1" 2>/dev/null | awk '$3 == "crypt" { print $5 }'; }
# wait_for SEC DESCRIPTION CMD...: CMD succeeds within SEC seconds (polled every 0.5 s)
wait_for() {
	local sec=$1 desc=$2 t0=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - t0 >= sec)); then
			failed "$desc (not within $sec s)"
			return 1
		fi
		sleep 0.5
	done
	pass "$desc (after $((SECONDS - t0)) s)"
}
status_text_matches() { [[ $(prop StatusText) =~ $1 ]]; }
show_status() { echo "# status text now: '$(prop StatusText)'"; }
show_prom() { sed 's/^/# metrics: /' "$PROM" 2>&1 | grep -v '^# metrics: #'; }
prom_value() { # NAME LABEL-SUBSTRING...: first value of NAME whose line holds every substring
	local line s ok
	while read -r line; do
		[[ $line == "$1{"* || $line == "$1 "* ]] || continue
		ok=1
		for s in "${@:2}"; do [[ $line == *"$s"* ]] || ok=0; done
		((ok)) && { echo "${line##* }"; return 0; }
	done <"$PROM"
	return 1
}
prom_ge() { # MIN NAME LABEL-SUBSTRING...
	local v
	v=$(prom_value "${@:2}") || return 1
	((${v%%.*} >= $1))
}
wiped() { [[ $(table_key "$1") =~ ^0{64,}$ ]]; }
audit_has() { # ACTION MAPPING
	jq -e --arg a "$1" --arg m "$2" 'select(.action == $a and .mapping == $m)' \
		/var/lib/kmscrypt/audit.log 2>/dev/null | grep -q .
}

check() {
	local dev1 dev2 key1 key2 pid J=$P/journal parsed
	read -r dev1 dev2 <"$P/loops"
	read -r key1 key2 <"$P/keys"
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
	expect_eq "$(systemctl is-active multi-user.target)" active "multi-user.target reached"
	expect_eq "$(journalctl -b --no-pager | grep -ci 'ordering cycle')" 0 \
		"no ordering cycle in the journal"
	expect_eq "$({ systemctl cat "$UNIT"; cat /etc/kmscrypt/kms/*.conf; } |
		grep -cF -e "$src" -e "$build")" 0 \
		"the unit and the KMS configurations name nothing in the checkout or build dir"

	# --- started at boot, READY through sd_notify
	expect_eq "$(prop Type)" notify "Type=notify"
	expect_eq "$(prop ActiveState)/$(prop SubState)" active/running \
		"$UNIT is active (READY=1 received)"
	expect_eq "$(systemctl is-enabled "$UNIT")" enabled "$UNIT is enabled"
	expect_eq "$(grep -c '^WatchdogSec=[1-9]' "/etc/systemd/system/$UNIT")" 1 "the unit sets WatchdogSec="
	expect_eq "$(prop WatchdogUSec)" "${WD}s" "WatchdogSec= of the test's drop-in"
	wait_for 30 "status text 'watching N volume(s) on M KMS'" \
		status_text_matches '^watching [0-9]+ volumes? on [0-9]+ KMS' || show_status
	echo "# status text at boot: $(prop StatusText)"
	pid=$(prop MainPID)
	wait_for 30 "metrics file $PROM written" test -s "$PROM"
	expect_eq "$(prom_value kmscrypt_watch_up)" 1 "kmscrypt_watch_up 1"

	# --- a volume unlocked after boot: picked up after a reload
	wait_port 300 || { failed "the fake AWS KMS started"; finish; return; }
	expect_rc 0 "kmscrypt unlock volw1" -- kmscrypt unlock "$dev1"
	expect_rc 0 "systemctl reload $UNIT (SIGHUP)" -- timeout 60 systemctl reload "$UNIT"
	wait_for 30 "status text 'watching 1 volume on 1 KMS'" \
		status_text_matches '^watching 1 volumes? on 1 KMS' || show_status
	wait_for 30 "metrics: volw1 active with verdict usable" \
		prom_value kmscrypt_volume_probe_verdict 'mapping="volw1"' 'verdict="usable"' || show_prom

	# --- a new KMS configuration with a volume: picked up by SIGHUP
	expect_rc 0 "kms create aws2" -- kms_create aws2 "$key2"
	expect_rc 0 "format volw2 (KMS aws2)" -- kmscrypt format "$dev2" --kms aws2 --label volw2
	expect_rc 0 "unlock volw2" -- kmscrypt unlock "$dev2"
	echo "# before the reload: $(prop StatusText); aws2 in the metrics: $(grep -c 'kms="aws2"' "$PROM")"
	expect_rc 0 "systemctl reload $UNIT (SIGHUP)" -- timeout 60 systemctl reload "$UNIT"
	wait_for 30 "status text 'watching 2 volumes on 2 KMS'" \
		status_text_matches '^watching 2 volumes on 2 KMS' || show_status
	wait_for 30 "metrics: KMS aws2 probed" prom_ge 1 kmscrypt_kms_probes_total 'kms="aws2"' || show_prom
	wait_for 30 "metrics: volw2 verdict usable" \
		prom_value kmscrypt_volume_probe_verdict 'mapping="volw2"' 'verdict="usable"' || show_prom
	expect_eq "$(prop MainPID)" "$pid" "the reloads kept the main process (PID $pid)"
	expect_eq "$(prop NRestarts)" 0 "no restart"
	expect_eq "$(prop ActiveState)" active "$UNIT still active after the reloads"
	parsed=$(/usr/bin/python3 -c 'import sys
from prometheus_client.parser import text_string_to_metric_families as p
print(sum(len(f.samples) for f in p(open(sys.argv[1]).read())))' "$PROM" 2>&1)
	expect_eq "$([[ $parsed =~ ^[0-9]+$ ]] && echo ok || echo "$parsed")" ok \
		"the metrics file parses with prometheus_client ($parsed samples)"
	echo "# metrics file mode: $(stat -c %a "$PROM")"

	# --- the KMS disables aws1's key: wiped under the unit, aws2's volume untouched
	expect_eq "$(fctl /control "{\"op\":\"disable_key\",\"key_id\":\"$key1\"}" >/dev/null &&
		echo ok)" ok "disable aws1's key at the fake"
	wait_for $((3 * IV * 11 / 10 + 10)) "volw1's key wiped by the unit" wiped volw1
	expect_eq "$(dm_state volw1)" SUSPENDED "volw1 suspended"
	wait_for 10 "audit: watch-wipe record for volw1" audit_has watch-wipe volw1
	wait_for $((2 * IV + 10)) "metrics: volw1 revoked-suspended" \
		prom_value kmscrypt_volume_state 'mapping="volw1"' 'state="revoked-suspended"' || show_prom
	journalctl -b --no-pager -o cat -u "$UNIT" >"$J"
	sed 's/^/# journal: /' "$J"
	expect_eq "$(grep -c "^KMS 'aws1' (aws) denied access .*; wiped key of 'volw1'" "$J")" 1 \
		"one journal line says KMS aws1 denied access and volw1 was wiped"
	expect_eq "$(dm_state volw2)" ACTIVE "volw2 (KMS aws2) is untouched"
	expect_eq "$(table_key volw2 | grep -c '^:64:logon:')" 1 "volw2's table still names its keyring key"

	# --- the watchdog: alive, same process, several WatchdogSec= periods after the start
	local up=$(($(date +%s) - $(date -d "$(prop ActiveEnterTimestamp)" +%s)))
	((up >= 3 * WD)) || sleep $((3 * WD - up))
	expect_eq "$(prop MainPID)/$(prop NRestarts)" "$pid/0" \
		"still the first process after $((up >= 3 * WD ? up : 3 * WD)) s (WatchdogSec=$WD: WATCHDOG=1 pings arrive)"

	# --- stop: SIGTERM, clean exit
	expect_rc 0 "systemctl stop $UNIT" -- timeout 60 systemctl stop "$UNIT"
	expect_eq "$(prop ActiveState)" inactive "$UNIT stopped"
	expect_eq "$(prop Result)" success "$UNIT result after stop (exit 0 on SIGTERM)"
	fctl /control "{\"op\":\"enable_key\",\"key_id\":\"$key1\"}" >/dev/null
	expect_rc 0 "kmscrypt restore volw1 (key enabled again)" -- kmscrypt restore volw1
	expect_eq "$(dm_state volw1)" ACTIVE "volw1 active after restore"
	finish
}

# ---- on the host
drive() {
	rm -rf "$P"
	mkdir -p "$P"
	bash "$src/tests/fakes/mkcerts.sh" "$P/certs" >/dev/null 2>&1 ||
		{ echo "FAIL: mkcerts.sh" >&2; return 1; }
	printf %s fakeSecretKeyForKmscryptTests0000000001 >"$P/aws-sk"
	chmod 0600 "$P/aws-sk"
	bash "$src/scripts/vm/run.sh" --build-dir "$build" --systemd --timeout 600 \
		--boot-deadline 300 --setup "bash $here/boot_watch.sh setup" \
		-- bash "$here/boot_watch.sh" check
}

case ${1:-} in
setup) setup ;;
check) check ;;
"") drive ;;
*) echo "usage: $0 [setup|check]" >&2; exit 2 ;;
esac
