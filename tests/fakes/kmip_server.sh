#!/usr/bin/env bash
# A real KMIP server for the tests: PyKMIP's (Debian python3-pykmip) on 127.0.0.1, TLS 1.2 with
# client certificates, a sqlite database in DIR.
#
#   kmip_server.sh start DIR [PORT]   certificates (tests/fakes/mkcerts.sh) in DIR/certs, config
#                                     DIR/server.conf, database DIR/pykmip.db, log DIR/server.log,
#                                     TTLV capture DIR/record.txt ("REQ <hex>"/"RSP <hex>" lines);
#                                     PORT 0 or absent: ephemeral.  Prints the port once it listens
#                                     and leaves DIR/port and DIR/pid behind.  KMIP_SERVER_DELAY_MS:
#                                     wait that long before processing each request (default 0).
#   kmip_server.sh revoke DIR UID     revoke key UID (owner: DIR/certs/client.pem) with PyKMIP's
#                                     client (a KMIP revoke is permanent: the key stays Deactivated)
#   kmip_server.sh stop DIR           SIGINT (PyKMIP only checks for SIGTERM between connections),
#                                     then waits up to 15 s for the process to exit.
#
# Certificates: DIR/certs/ca.pem, server.pem (IP:127.0.0.1), client.pem/.key (clientAuth);
# client2.pem/.key: same CA, another CN.  other-ca.pem and other-client.pem/.key come from an
# unrelated CA, for the negative tests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3 # the python3 on PATH may lack Debian's python3-pykmip

# A second client of the same CA with another CN: PyKMIP makes the CN the owner of what it creates.
second_client() {
	local c=$1
	[[ -s $c/client2.pem && $c/client2.pem -nt $c/ca.pem ]] && return 0
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$c/client2.key" \
		-out "$c/client2.csr" -subj "/O=kmscrypt tests/CN=kmscrypt test client 2" 2>/dev/null
	openssl x509 -req -in "$c/client2.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 29 -out "$c/client2.pem" \
		-extfile <(printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n') \
		2>/dev/null
	rm -f "$c/client2.csr"
	chmod 600 "$c/client2.key"
}

start() {
	local dir=$1 port=${2:-0}
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	bash "$here/mkcerts.sh" "$dir/certs"
	second_client "$dir/certs"
	# PyKMIP checks at load time that the port is in 1..65534; pykmip_server.py sets the real one.
	cat >"$dir/server.conf" <<-EOF
		[server]
		hostname=127.0.0.1
		port=5696
		certificate_path=$dir/certs/server.pem
		key_path=$dir/certs/server.key
		ca_path=$dir/certs/ca.pem
		auth_suite=TLS1.2
		enable_tls_client_auth=True
		logging_level=DEBUG
		database_path=$dir/pykmip.db
		policy_path=$dir/policies
	EOF
	mkdir -p "$dir/policies"
	rm -f "$dir/port"
	"$py" "$here/pykmip_server.py" --config "$dir/server.conf" --log "$dir/server.log" \
		--port "$port" --portfile "$dir/port" --record "$dir/record.txt" \
		--delay-ms "${KMIP_SERVER_DELAY_MS:-0}" \
		>"$dir/stdout.log" 2>&1 </dev/null &
	echo $! >"$dir/pid"
	# KMIP_SERVER_START_TIMEOUT (seconds, default 15): PyKMIP imports slowly in an emulated guest
	for _ in $(seq 1 $((${KMIP_SERVER_START_TIMEOUT:-15} * 10))); do
		if [[ -s $dir/port ]]; then
			cat "$dir/port"
			return 0
		fi
		if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
			echo "kmip_server.sh: PyKMIP server exited:" >&2
			tail -n 20 "$dir/stdout.log" "$dir/server.log" >&2 2>/dev/null || true
			return 1
		fi
		sleep 0.1
	done
	echo "kmip_server.sh: PyKMIP server did not listen within ${KMIP_SERVER_START_TIMEOUT:-15} s" >&2
	stop "$dir"
	return 1
}

stop() {
	local dir=$1 pid kids k
	[[ -s $dir/pid ]] || return 0
	pid=$(cat "$dir/pid")
	# PyKMIP's server forks a multiprocessing manager; when the server is killed, or exits
	# without shutting it down, that child lives on (as init's): note it now, end it below
	kids=$(pgrep -P "$pid" 2>/dev/null || true)
	if kill -INT "$pid" 2>/dev/null; then
		for _ in $(seq 1 $((${KMIP_SERVER_START_TIMEOUT:-15} * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "kmip_server.sh: PyKMIP server $pid ignored SIGINT, sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	for k in $kids; do
		kill -KILL "$k" 2>/dev/null || true
	done
	rm -f "$dir/pid"
}

# Revoke key UID (Cessation of Operation) with PyKMIP's own client, as the owner (client.pem).
revoke() {
	local dir=$1 uid=$2 conf
	conf=$(mktemp)
	printf '[client]\n' >"$conf"
	"$py" - "$(cat "$dir/port")" "$dir/certs" "$uid" "$conf" <<-'PY'
		import os, sys
		from kmip.core import enums
		from kmip.pie import client
		port, certs, uid, conf = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
		with client.ProxyKmipClient(
		        hostname="127.0.0.1", port=port, cert=os.path.join(certs, "client.pem"),
		        key=os.path.join(certs, "client.key"), ca=os.path.join(certs, "ca.pem"),
		        ssl_version="PROTOCOL_TLSv1_2", config_file=conf,
		        kmip_version=enums.KMIPVersion.KMIP_1_2) as c:
		    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
		print("revoked %s" % uid)
	PY
	local rc=$?
	rm -f "$conf"
	return $rc
}

case ${1:-} in
revoke) revoke "${2:?usage: kmip_server.sh revoke DIR UID}" "${3:?usage: kmip_server.sh revoke DIR UID}" ;;
start) start "${2:?usage: kmip_server.sh start DIR [PORT]}" "${3:-0}" ;;
stop) stop "${2:?usage: kmip_server.sh stop DIR}" ;;
*)
	echo "usage: kmip_server.sh start DIR [PORT] | stop DIR | revoke DIR UID" >&2
	exit 2
	;;
esac
