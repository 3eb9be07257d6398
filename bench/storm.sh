#!/bin/bash
# bench/storm.sh: a fleet boot storm, simulated on this host (issue 13 item 7). Not a test: it
# reports; it fails only when an agent failed or the fake saw more requests than the bounds allow.
# N agents, one process each, start at once; each runs `kmscrypt check` over its V volume images
# (LUKS2 image files: the secret is unwrapped by the KMS and opens a keyslot, no device-mapper,
# no root needed) against ONE AWS KMS fake on 127.0.0.1 that enforces a request quota (token
# bucket: RATE requests/s, BURST at most) and answers requests over it with AWS's HTTP 400
# ThrottlingException. Every agent has its own state directory and its own hard links to the V
# images (a check only reads them); all share one KMS configuration. The agents run at nice +10
# so that the fake, which stands for a KMS on its own machines, and the driver that starts them
# keep a share of this host's CPUs. Each agent costs about 50 ms of CPU (process start, TLS
# handshake, keyslot check): on a small host the CPUs, not the quota, can become the limit, and
# hundreds of agents at once can starve the fake's TLS handshakes (see README, Performance).
#
#   bash bench/storm.sh [--agents 500] [--volumes 1] [--quota 50] [--burst 50] [--timeout 30]
#                       [--spread 0] [--out DIR] [--build-dir DIR] [--kmscrypt BIN]
#
# --timeout is each agent's kmscrypt --timeout (the deadline of one KMS operation, retries
# included); --spread SEC starts agent i at a random offset in [0, SEC] instead of all at once.
# It prints: did every agent succeed, the time until 50/90/100 % of them were done, the requests
# the fake saw (accepted, throttled) against the quota times the span of the storm plus the burst
# and the clients' retry budget (agents x volumes x 9 more attempts while throttled), and a table
# of completions per second; --out DIR (default BUILD/bench/storm-<time>) gets summary.txt,
# summary.json, completions.csv, storm.png (gnuplot: bench/install-deps.sh), agents.csv (per
# agent: start, end, exit, attempts, throttled replies) and quota.jsonl (one line per request at
# the fake). Needs a built kmscrypt and the test fakes' packages (scripts/install-deps.sh).
set -euo pipefail

prog=bench/storm.sh
src=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
agents=500
volumes=1
quota=50
burst=50
timeout_s=30
spread=0
out=
build_dir=$src/build
kmscrypt=
# KMS_REMOTE_THROTTLED_ATTEMPTS in agent/kms/remote.c: the retry budget per request
attempts=10

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}
die() {
	echo "$prog: error: $*" >&2
	exit 1
}

while (($#)); do
	case $1 in
	--agents) agents=${2:?--agents needs a value}; shift 2 ;;
	--volumes) volumes=${2:?--volumes needs a value}; shift 2 ;;
	--quota) quota=${2:?--quota needs a value}; shift 2 ;;
	--burst) burst=${2:?--burst needs a value}; shift 2 ;;
	--timeout) timeout_s=${2:?--timeout needs a value}; shift 2 ;;
	--spread) spread=${2:?--spread needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--build-dir) build_dir=${2:?--build-dir needs a value}; shift 2 ;;
	--kmscrypt) kmscrypt=${2:?--kmscrypt needs a value}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
posint='^[1-9][0-9]*$'
[[ $agents =~ $posint && $volumes =~ $posint && $timeout_s =~ $posint ]] ||
	{ echo "$prog: --agents, --volumes and --timeout must be positive numbers" >&2; exit 2; }
((agents <= 2000 && volumes <= 16)) ||
	{ echo "$prog: at most 2000 agents and 16 volumes per agent" >&2; exit 2; }
num='^[0-9]+([.][0-9]+)?$'
if [[ ! $quota =~ $num || ! $burst =~ $num || ! $spread =~ $num || $quota =~ ^0+([.]0+)?$ ]]; then
	echo "$prog: --quota must be a positive number, --burst and --spread numbers" >&2
	exit 2
fi
[[ ! $burst =~ ^0+([.]0+)?$ ]] || burst=$quota

if [[ -z $kmscrypt ]]; then
	build_dir=$(cd -- "$build_dir" 2>/dev/null && pwd -P) ||
		die "no build directory '$build_dir' (cmake -S . -B build && cmake --build build, or --build-dir)"
	kmscrypt=$build_dir/kmscrypt
fi
[[ -x $kmscrypt ]] || die "'$kmscrypt' not found: build kmscrypt first (cmake --build $build_dir)"
kmscrypt=$(cd -- "$(dirname -- "$kmscrypt")" && pwd -P)/$(basename -- "$kmscrypt")
for t in /usr/bin/python3 curl openssl; do
	command -v "$t" >/dev/null || die "'$t' not found (scripts/install-deps.sh)"
done
/usr/bin/python3 -c 'import botocore, cryptography' 2>/dev/null ||
	die "the AWS KMS fake needs python3-botocore and python3-cryptography (scripts/install-deps.sh)"
stamp=$(date -u +%Y%m%d-%H%M%S)
if [[ -z $out ]]; then
	[[ -d $build_dir ]] || die "give --out DIR (no build directory for the default)"
	out=$build_dir/bench/storm-$stamp
fi
mkdir -p "$out"
out=$(cd -- "$out" && pwd -P)
# 500 agents keep 500 descriptors open at the fake, and one per agent here
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# shellcheck source=/dev/null
. "$src/tests/fakes/lib.sh"
fakes_setup >/dev/null # $FAKES_WORK, removed on exit (the fake is stopped too)
work=$FAKES_WORK
export KMSCRYPT_CONFIG_DIR=$work/agents/etc KMSCRYPT_STATE_DIR=$work/setup-state
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE

# ---- set-up, without a quota: a key, one configuration, V formatted images
echo "$prog: setting up $agents agents x $volumes volume(s) in $work" >&2
fake_start aws fake_aws_kms.py --state "$work/aws.json" || die "the AWS KMS fake did not start"
port=$(fake_port aws)
key=$(fake_ctl aws /control '{"op":"create_key","description":"boot storm"}' |
	/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["KeyId"])') ||
	die "cannot create a key at the fake"
printf %s fakeSecretKeyForKmscryptTests0000000001 >"$work/sk"
"$kmscrypt" -q kms create storm --provider aws --region us-east-1 --endpoint "https://127.0.0.1:$port" \
	--ca-file "$FAKES_CA" --key-id "$key" --access-key-id AKIAFAKEKMS000000001 \
	--secret-access-key-file "$work/sk" >/dev/null || die "kms create failed"
mkdir -p "$work/images"
for ((v = 0; v < volumes; v++)); do
	truncate -s 20M "$work/images/vol$v.img"
	"$kmscrypt" -q format "$work/images/vol$v.img" --kms storm --no-recovery-key >/dev/null ||
		die "format of image $v failed"
done
fake_stop aws
# one process for all the directories and hard links (a loop of mkdir and ln takes a minute)
/usr/bin/python3 - "$work" "$agents" "$volumes" <<'EOF' || die "cannot make the agents' directories"
import os, sys
work, agents, volumes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(agents):
    d = os.path.join(work, "agents", str(i))
    os.makedirs(os.path.join(d, "state"))
    for v in range(volumes):
        os.link(os.path.join(work, "images", "vol%d.img" % v), os.path.join(d, "vol%d.img" % v))
EOF

# ---- the storm: the same fake (state, port) with the quota
fake_start aws fake_aws_kms.py --state "$work/aws.json" --port "$port" --idle-timeout 60 \
	--quota-rate "$quota" --quota-burst "$burst" --quota-stats "$work/quota.jsonl" ||
	die "the AWS KMS fake did not start with the quota"
{
	echo "# kmscrypt boot storm, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# command: bash bench/storm.sh --agents $agents --volumes $volumes --quota $quota" \
		"--burst $burst --timeout $timeout_s --spread $spread"
	echo "# kmscrypt: $kmscrypt, $("$kmscrypt" --version 2>&1 | head -n 1)"
	echo "# host: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
		"$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), load average" \
		"$(cut -d' ' -f1-3 /proc/loadavg) before the run; agents and fake (Python, one process)" \
		"on the same host, 127.0.0.1"
} >"$out/info.txt"
echo "$prog: $agents agents start now (quota $quota/s, burst $burst, --timeout $timeout_s)" >&2
unset KMSCRYPT_STATE_DIR KMSCRYPT_CONFIG_DIR # each agent passes --config-dir and its own --state-dir
/usr/bin/python3 "$src/bench/storm.py" run --kmscrypt "$kmscrypt" --agents-dir "$work/agents" \
	--agents "$agents" --timeout "$timeout_s" --spread "$spread" --raw "$out/agents.csv" ||
	die "the agents could not be started"
fake_ctl aws /counters >"$out/fake-counters.json" || true
fake_stop aws
cp "$work/quota.jsonl" "$out/quota.jsonl"
# one failed agent's log, if any, for the reader
first_failed=$(awk -F, 'NR > 1 && $4 != 0 {print $1; exit}' "$out/agents.csv")
[[ -z $first_failed ]] || cp "$work/agents/$first_failed/log" "$out/failed-agent-$first_failed.log"

set +e
/usr/bin/python3 "$src/bench/storm.py" report --raw "$out/agents.csv" --quota-stats "$out/quota.jsonl" \
	--rate "$quota" --burst "$burst" --volumes "$volumes" --attempts "$attempts" --out "$out" \
	--info "$out/info.txt"
rc=$?
set -e
echo "$prog: results in $out (summary.txt, summary.json, completions.csv, storm.png, agents.csv)" >&2
exit "$rc"
