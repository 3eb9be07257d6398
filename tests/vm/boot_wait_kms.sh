#!/bin/bash
# kmscrypt-unlock.service waits for a KMS that is unavailable at boot, with systemd as PID 1
# (scripts/vm/run.sh --systemd): an AWS-provider volume whose fake AWS KMS starts only after the
# unit (connection refused = unavailable, exit class 4) is unlocked once the fake answers
# (--wait-kms, exponential backoff), while a volume whose local KMS denies access (key file gone)
# is not retried. The AWS secret access key comes from a systemd credential (LoadCredential= in a
# drop-in; the configuration holds only "SecretAccessKeyCredential=aws-sk"). The unit's sandbox
# hides /tmp and /home, where a checkout may be: the CA file and the credential are installed under
# /etc as on a real machine, and the check makes sure the unit names nothing in the checkout.
#
# Run on the host (ctest registers tests/vm/boot_*.sh so): bash tests/vm/boot_wait_kms.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary}"
KMSCRYPT=$(realpath -- "$KMSCRYPT")
export KMSCRYPT
build=$(realpath -- "${KMSCRYPT_BUILD_DIR:-$(dirname "$KMSCRYPT")}")
export KMSCRYPT_BUILD_DIR=$build
P=$build/vm/boot/boot_wait_kms
PORT=18443 CPORT=18444
AKID=AKIAFAKEKMS000000001
FAKE_DELAY=${KMSCRYPT_BOOT_FAKE_DELAY:-8} # seconds after boot before the fake starts

fake_start() { # in the guest
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
	/usr/bin/python3 "$src/tests/fakes/fake_aws_kms.py" --certs "$P/certs" --state "$P/aws.json" \
		--port $PORT --control-port $CPORT --portfile "$P/port" >>"$P/fake.log" 2>&1 &
	FAKE_PID=$!
	for ((i = 0; i < 1200; i++)); do
		[[ -s $P/port ]] && return 0
		kill -0 "$FAKE_PID" 2>/dev/null || break
		sleep 0.25
	done
	cat "$P/fake.log" >&2
	echo "FATAL: the fake AWS KMS did not start" >&2
	return 1
}

setup() {
	set -e
	local dev devl key
	ip link set lo up
	install -m 0755 "$KMSCRYPT" /usr/local/sbin/kmscrypt
	mkdir -p /etc/kmscrypt/keys
	fake_start
	key=$(curl -sS --fail --noproxy '*' -X POST --data-binary '{"op":"create_key"}' \
		"http://127.0.0.1:$CPORT/control" | jq -r .KeyId)
	# The secret access key as a credential (systemd's /etc/credstore); never in /etc/kmscrypt.
	install -d -m 0700 /etc/credstore
	install -m 0600 "$P/creds/aws-sk" /etc/credstore/aws-sk
	install -m 0644 "$P/certs/ca.pem" /etc/kmscrypt/aws-ca.pem
	CREDENTIALS_DIRECTORY=/etc/credstore kmscrypt kms create aws1 --provider aws \
		--region us-east-1 --endpoint "https://127.0.0.1:$PORT" --ca-file /etc/kmscrypt/aws-ca.pem \
		--key-id "$key" --access-key-id $AKID --secret-access-key-credential aws-sk
	kmscrypt kms create lab --provider local --key-file /etc/kmscrypt/keys/lab.key --generate
	truncate -s 32M "$P/aws.img" "$P/local.img"
	dev=$(losetup --find --show "$P/aws.img")
	devl=$(losetup --find --show "$P/local.img")
	echo "$dev $devl" >"$P/loops"
	CREDENTIALS_DIRECTORY=/etc/credstore kmscrypt format "$dev" --kms aws1 --label volaws
	kmscrypt format "$devl" --kms lab --label vollocal
	kill "$FAKE_PID"
	wait "$FAKE_PID" 2>/dev/null || true
	rm -f "$P/port"
	mv /etc/kmscrypt/keys/lab.key "$P/lab.key.away" # KMS "lab" now denies access
	install -m 0644 "$src/unit/kmscrypt-unlock.service" /etc/systemd/system/
	systemctl enable kmscrypt-unlock.service
	mkdir -p /etc/systemd/system/kmscrypt-unlock.service.d
	printf '[Service]\nLoadCredential=aws-sk:/etc/credstore/aws-sk\n' \
		>/etc/systemd/system/kmscrypt-unlock.service.d/credential.conf
	# The KMS comes up only after the unlock unit started (not ordered against it).
	cat >/etc/systemd/system/kmscrypt-vm-fakeaws.service <<UNIT
[Unit]
Description=fake AWS KMS, starting late
DefaultDependencies=no
[Service]
ExecStartPre=/bin/sleep $FAKE_DELAY
ExecStart=/usr/bin/python3 $src/tests/fakes/fake_aws_kms.py --certs $P/certs --state $P/aws.json --port $PORT --control-port $CPORT --portfile $P/port
UNIT
	ln -s ../kmscrypt-vm-fakeaws.service /etc/systemd/system/sysinit.target.wants/
}

. "$src/tests/lib/assert.sh"
check() {
	local dev devl J=$P/journal
	read -r dev devl <"$P/loops"
	expect_eq "$(systemctl is-active multi-user.target)" active "multi-user.target reached"
	expect_eq "$(journalctl -b --no-pager | grep -ci 'ordering cycle')" 0 \
		"no ordering cycle in the journal"
	journalctl -b --no-pager -o cat -u kmscrypt-unlock.service >"$J"
	sed 's/^/# journal: /' "$J"
	expect_eq "$(systemctl show -P Result kmscrypt-unlock.service)" success "unit result"
	expect_eq "$({ systemctl cat kmscrypt-unlock.service; cat /etc/kmscrypt/kms/*.conf; } |
		grep -cF -e "$src" -e "$build")" 0 \
		"the unit, its drop-ins and the KMS configurations name nothing in the checkout or build dir"
	expect_eq "$(systemctl show -P ExecMainStatus kmscrypt-unlock.service)" 3 \
		"unlock --all exits 3: the local volume was denied"
	expect_eq "$(dmsetup info volaws 2>/dev/null | sed -n 's/^State: *//p')" ACTIVE \
		"the AWS volume is unlocked once its KMS answers"
	expect_eq "$(grep -c "^Unlocked '$dev' (UUID .*) as /dev/mapper/volaws through KMS 'aws1'" "$J")" 1 \
		"one journal line says the AWS volume was unlocked"
	local retries
	retries=$(grep -c "^KMS unavailable for 1 volume (first: '$dev'); retry [0-9]* in" "$J")
	expect_eq "$((retries >= 1))" 1 "the unit retried the unavailable KMS ($retries retries)"
	expect_eq "$(grep -c "KMS unavailable for [2-9]" "$J")" 0 "the denied volume is never retried"
	expect_eq "$(dmsetup info vollocal >/dev/null 2>&1 && echo open || echo locked)" locked \
		"the denied volume stays locked"
	expect_eq "$(grep -Ec "^Cannot unlock '$devl' \(UUID .*\): KMS 'lab' \(local\) denied access" "$J")" 1 \
		"one journal line says the local KMS denied access"
	# credentials: only the reference is stored; outside the unit there is no credential
	expect_eq "$(grep -c '^SecretAccessKeyCredential=aws-sk$' /etc/kmscrypt/kms/aws1.conf)" 1 \
		"the configuration references the credential"
	expect_eq "$(grep -c "$(cat "$P/creds/aws-sk")" /etc/kmscrypt/kms/aws1.conf)" 0 \
		"the configuration does not hold the secret"
	expect_rc 0 "kms show aws1" -- kmscrypt kms show aws1
	expect_out "credential:aws-sk" "kms show says where the secret comes from"
	expect_rc 6 "kms check without the credential" -- env -u CREDENTIALS_DIRECTORY kmscrypt kms check aws1
	expect_out "CREDENTIALS_DIRECTORY is not set" "the error says how to provide it"
	expect_rc 0 "kms check with the credential" -- \
		env CREDENTIALS_DIRECTORY="$P/creds" kmscrypt kms check aws1
	finish
}

drive() {
	rm -rf "$P"
	mkdir -p "$P/creds"
	bash "$src/tests/fakes/mkcerts.sh" "$P/certs" >/dev/null 2>&1 ||
		{ echo "FAIL: mkcerts.sh" >&2; return 1; }
	printf %s fakeSecretKeyForKmscryptTests0000000001 >"$P/creds/aws-sk"
	chmod 0600 "$P/creds/aws-sk"
	bash "$src/scripts/vm/run.sh" --build-dir "$build" --systemd --timeout 600 \
		--boot-deadline 300 --setup "bash $here/boot_wait_kms.sh setup" \
		-- bash "$here/boot_wait_kms.sh" check
}

case ${1:-} in
setup) setup ;;
check) check ;;
"") drive ;;
*) echo "usage: $0 [setup|check]" >&2; exit 2 ;;
esac
