# shellcheck shell=bash
# Helpers for integration tests that run the fake KMS servers. Source it from a test:
#
#   . "$KMSCRYPT_SOURCE_DIR/tests/fakes/lib.sh"
#   fakes_setup                       # $FAKES_WORK (temp dir, removed on exit), certs, CA env vars
#   fake_start aws fake_aws_kms.py --state "$FAKES_WORK/aws.json" --imds-portfile "$FAKES_WORK/aws.iport"
#   port=$(fake_port aws); fake_ctl aws /control '{"op":"disable_key","key_id":"alias/vol"}'
#   fake_stop aws                     # optional: every started fake is stopped on exit
#
# fakes_setup installs an EXIT trap that calls fakes_cleanup (1 when a fake ignored SIGTERM and
# was killed: the test then fails); a test with its own EXIT trap must call fakes_cleanup from it. Only loopback addresses are used.

FAKES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FAKES_PY=/usr/bin/python3 # Debian's python sees python3-botocore, python3-cryptography, python3-hvac
declare -gA FAKES_PIDS=()

fakes_cleanup() {
	local name i alive rc=0
	for name in "${!FAKES_PIDS[@]}"; do
		kill -TERM "${FAKES_PIDS[$name]}" 2>/dev/null || true
	done
	# Bounded: a fake that ignores SIGTERM is killed after 10 s instead of holding the test's
	# output open until ctest's timeout (and is reported: that is a bug in the fake).
	for ((i = 0; i < 200; i++)); do
		alive=0
		for name in "${!FAKES_PIDS[@]}"; do
			kill -0 "${FAKES_PIDS[$name]}" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.05
	done
	for name in "${!FAKES_PIDS[@]}"; do
		if kill -0 "${FAKES_PIDS[$name]}" 2>/dev/null; then
			echo "FAIL: fake $name ignored SIGTERM for 10 s; killed" >&2
			kill -KILL "${FAKES_PIDS[$name]}" 2>/dev/null || true
			rc=1
		fi
		wait "${FAKES_PIDS[$name]}" 2>/dev/null || true
	done
	FAKES_PIDS=()
	[[ -n ${FAKES_WORK:-} && -d $FAKES_WORK ]] && rm -rf "$FAKES_WORK"
	return $rc
}

# fakes_setup: temp dir, test PKI in $FAKES_WORK/certs, and the CA environment for client processes.
fakes_setup() {
	FAKES_WORK=$(mktemp -d "${TMPDIR:-/tmp}/kmscrypt-fakes.XXXXXX")
	trap 'fakes_cleanup || exit 1' EXIT # a fake that would not stop fails the test
	trap 'exit 130' INT TERM
	bash "$FAKES_DIR/mkcerts.sh" "$FAKES_WORK/certs"
	FAKES_CA=$FAKES_WORK/certs/ca.pem
	# The environment points these at the system bundle; they override a client's own CA setting.
	export REQUESTS_CA_BUNDLE=$FAKES_CA CURL_CA_BUNDLE=$FAKES_CA AWS_CA_BUNDLE=$FAKES_CA SSL_CERT_FILE=$FAKES_CA
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY SSL_CERT_DIR
	export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
}

# fake_start NAME SCRIPT [ARGS...]: start tests/fakes/SCRIPT, wait until its port files exist.
fake_start() {
	local name=$1 script=$2 pid i
	shift 2
	rm -f "$FAKES_WORK/$name.port" "$FAKES_WORK/$name.cport"
	"$FAKES_PY" "$FAKES_DIR/$script" --certs "$FAKES_WORK/certs" --portfile "$FAKES_WORK/$name.port" \
		--control-portfile "$FAKES_WORK/$name.cport" "$@" >"$FAKES_WORK/$name.log" 2>&1 &
	pid=$!
	FAKES_PIDS[$name]=$pid
	for ((i = 0; i < 400; i++)); do
		[[ -s $FAKES_WORK/$name.port && -s $FAKES_WORK/$name.cport ]] && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "FAIL: fake $name exited during start-up:" >&2
			cat "$FAKES_WORK/$name.log" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "FAIL: fake $name wrote no port files in 20 s" >&2
	cat "$FAKES_WORK/$name.log" >&2
	return 1
}

# fake_stop NAME: SIGTERM, wait up to 10 s.
fake_stop() {
	local name=$1 pid i
	pid=${FAKES_PIDS[$name]:-}
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "FAIL: fake $name ignored SIGTERM" >&2
		return 1
	fi
	wait "$pid" 2>/dev/null || true
	unset "FAKES_PIDS[$name]"
}

fake_port() { cat "$FAKES_WORK/$1.port"; }
fake_cport() { cat "$FAKES_WORK/$1.cport"; }

# fake_ctl NAME PATH [JSON]: call the control API (GET without JSON, POST with it); prints the reply.
fake_ctl() {
	local name=$1 path=$2
	if (($# > 2)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$3" "http://127.0.0.1:$(fake_cport "$name")$path"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$(fake_cport "$name")$path"
	fi
}
