#!/bin/bash
# bench/guest.sh: the measuring half of the benchmark; bench/run.sh runs it as root inside the
# QEMU guest of scripts/vm/run.sh (real dm-crypt, loop devices, a throw-away root). Never run it
# on a machine you care about: it removes every dm device and loop device it made.
#
# Inputs (environment, passed through run.sh because of the KMSCRYPT_ prefix):
#   KMSCRYPT                  the kmscrypt binary
#   KMSCRYPT_BENCH_SIZES      volume counts, comma-separated (e.g. 1,8,32,128)
#   KMSCRYPT_BENCH_LATENCY    injected KMS latency in ms, comma-separated (e.g. 0,20,100)
#   KMSCRYPT_BENCH_REPS       repetitions
#   KMSCRYPT_BENCH_FLOOR      the bench/floor.c binary
#   KMSCRYPT_BENCH_RAW        CSV file to append one line per measurement to (in the shared dir)
#   KMSCRYPT_BENCH_ANCHORS    anchors to run, comma-separated: floor,suspend,clevis,argon2
#                             (default all)
#   KMSCRYPT_BENCH_ANCHOR_SIZES  the volume counts at which the slow anchors (clevis, argon2) run
#                             (default all of KMSCRYPT_BENCH_SIZES)
#   KMSCRYPT_BENCH_ANCHOR_REPS   the slow anchors run in the first this many repetitions only
#                             (default all)
#   KMSCRYPT_BENCH_DEADLINE   optional: a time (seconds since the epoch) after which no new
#                             measurement starts; the run then ends early and successfully
# Output: KMSCRYPT_BENCH_RAW gets
#   rep,n,latency_ms,tool,op,seconds,rss_kb,kms_requests,tls_handshakes
# (empty fields where a value does not apply). Progress goes to stderr.
set -euo pipefail

die() {
	echo "bench/guest.sh: error: $*" >&2
	exit 1
}
note() {
	echo "bench: [$(date +%T)] $*" >&2
}

[[ ${KMSCRYPT_IN_VM:-} == 1 ]] ||
	die "run this inside the VM through bench/run.sh (it removes every dm and loop device)"
[[ $(id -u) == 0 ]] || die "needs root"
: "${KMSCRYPT:?}" "${KMSCRYPT_BENCH_SIZES:?}" "${KMSCRYPT_BENCH_LATENCY:?}"
: "${KMSCRYPT_BENCH_REPS:?}" "${KMSCRYPT_BENCH_FLOOR:?}" "${KMSCRYPT_BENCH_RAW:?}"
ANCHORS=,${KMSCRYPT_BENCH_ANCHORS-floor,suspend,clevis,argon2},
SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
IFS=, read -r -a SIZES <<<"$KMSCRYPT_BENCH_SIZES"
IFS=, read -r -a LATS <<<"$KMSCRYPT_BENCH_LATENCY"
REPS=$KMSCRYPT_BENCH_REPS
ANCHOR_SIZES=,${KMSCRYPT_BENCH_ANCHOR_SIZES:-$KMSCRYPT_BENCH_SIZES},
ANCHOR_REPS=${KMSCRYPT_BENCH_ANCHOR_REPS:-$REPS}
FLOOR=$KMSCRYPT_BENCH_FLOOR
RAW=$KMSCRYPT_BENCH_RAW
NMAX=0
for n in "${SIZES[@]}"; do ((n > NMAX)) && NMAX=$n; done
has() { [[ $ANCHORS == *",$1,"* ]]; }
# slow ANCHOR REP N: whether the clevis or argon2id anchor runs in this repetition at this N
slow() { has "$1" && (($2 <= ANCHOR_REPS)) && [[ $ANCHOR_SIZES == *",$3,"* ]]; }
if has clevis; then
	for t in clevis jose /usr/libexec/tangd /usr/libexec/tangd-keygen; do
		command -v "$t" >/dev/null ||
			die "'$t' not found: run bench/install-deps.sh, or --anchors without clevis"
	done
fi
for t in cryptsetup dmsetup losetup jq curl /usr/bin/time; do
	command -v "$t" >/dev/null || die "'$t' not found (scripts/install-deps.sh)"
done
export DM_DISABLE_UDEV=1
echo "# guest kernel $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) MiB" >>"$RAW.info"

W=$(mktemp -d /tmp/kmscrypt-bench.XXXXXX)
mount -t tmpfs -o size=1g,mode=0700 tmpfs "$W"
CFG=$W/etc STATE=$W/state
mkdir -p "$CFG" "$STATE"
PIDS=()
cleanup() {
	local name _r pid
	# nothing may stay suspended: I/O on it would block in D state
	while read -r name _r; do
		[[ -n $name && $name != No ]] || continue
		timeout 10 dmsetup resume "$name" 2>/dev/null || true
		timeout 30 dmsetup remove --force "$name" 2>/dev/null || true
	done < <(dmsetup ls 2>/dev/null)
	losetup -D 2>/dev/null || true
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# ---- the AWS KMS fake on loopback
ip link set lo up
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
FK=$W/fake
mkdir -p "$FK"
bash "$SRC/tests/fakes/mkcerts.sh" "$FK/certs" >/dev/null 2>&1
# --h2: the fake offers HTTP/2 by ALPN, so the requests of a run share one TLS connection
# (the counters show the handshakes); without python3-h2 it serves HTTP/1.1 only
H2=(--h2)
/usr/bin/python3 -c 'import h2' 2>/dev/null || { H2=(); note "python3-h2 missing: the fake serves HTTP/1.1 only"; }
/usr/bin/python3 "$SRC/tests/fakes/fake_aws_kms.py" --certs "$FK/certs" --portfile "$FK/port" \
	--control-portfile "$FK/cport" --imds-portfile "$FK/iport" "${H2[@]}" >"$FK/log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 1200; i++)); do
	[[ -s $FK/port && -s $FK/cport ]] && break
	kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$FK/log" >&2; die "the AWS fake exited"; }
	sleep 0.25
done
[[ -s $FK/port ]] || die "the AWS fake did not start in 300 s"
CPORT=$(<"$FK/cport")
printf %s fakeSecretKeyForKmscryptTests0000000001 >"$FK/sk"
fctl() { # PATH [JSON]
	if (($# > 1)); then
		curl -sS --fail --noproxy '*' -X POST --data-binary "$2" "http://127.0.0.1:$CPORT$1"
	else
		curl -sS --fail --noproxy '*' "http://127.0.0.1:$CPORT$1"
	fi
}
# A hung kmscrypt must not hang the run, but `timeout 600 kmscrypt` in a timed command would time
# one process start more than the anchors pay (/usr/bin/timeout's own exec: tens of ms in a TCG
# guest, as much as a one-volume close): a watchdog outside the timed commands kills any kmscrypt
# process older than 600 s instead (the command then fails, and the run stops with its exit code).
(
	while sleep 10; do
		ps -eo pid=,etimes=,comm= | awk '$3 == "kmscrypt" && $2 > 600 {print $1}' |
			xargs -r kill -KILL 2>/dev/null
	done
) &
PIDS+=($!)
K() { "$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" -q "$@"; }
KEY=$(fctl /control '{"op":"create_key","description":"bench"}' | jq -r .KeyId)
K kms create bk --provider aws --region us-east-1 --endpoint "https://127.0.0.1:$(<"$FK/port")" \
	--ca-file "$FK/certs/ca.pem" --key-id "$KEY" --access-key-id AKIAFAKEKMS000000001 \
	--secret-access-key-file "$FK/sk" >/dev/null
note "AWS KMS fake up (control port $CPORT)"

# ---- tang on loopback (busybox nc forks one tangd per connection, as systemd's socket does)
TANG_PORT=8777
if has clevis; then
	mkdir -p "$W/tang"
	/usr/libexec/tangd-keygen "$W/tang" >/dev/null
	printf '#!/bin/sh\nexec /usr/libexec/tangd %s 2>/dev/null\n' "$W/tang" >"$W/tangd.sh"
	chmod 755 "$W/tangd.sh"
	busybox nc -ll -p "$TANG_PORT" -e "$W/tangd.sh" &
	PIDS+=($!)
	for ((i = 0; i < 100; i++)); do
		curl -sf --noproxy '*' "http://127.0.0.1:$TANG_PORT/adv" >/dev/null && break
		sleep 0.2
	done
	curl -sf --noproxy '*' "http://127.0.0.1:$TANG_PORT/adv" >/dev/null ||
		die "tang did not answer on 127.0.0.1:$TANG_PORT"
	note "tang up on 127.0.0.1:$TANG_PORT"
fi

# ---- NMAX images, each with four keyslots: a PBKDF2 passphrase (the floor and the suspend/resume
# loop), kmscrypt's, clevis's, and a default argon2id passphrase (plain `cryptsetup open`).
# One template gets the passphrase, clevis and argon2id keyslots (clevis luks bind costs tens of
# seconds under TCG); each image is a copy with its own UUID and label, then bound by kmscrypt
# (whose wrapped secret is tied to the UUID). The shared volume key changes no timing.
printf %s 'bench-pbkdf2-passphrase' >"$W/pw"
printf %s 'bench-argon2id-passphrase' >"$W/pw2"
ARGON_SLOT=9
note "preparing the template image"
truncate -s 16M "$W/tpl.img"
dev=$(losetup --find --show "$W/tpl.img")
cryptsetup luksFormat -q --type luks2 --luks2-metadata-size 16k --luks2-keyslots-size 2m \
	--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-slot 0 --key-file "$W/pw" "$dev" >/dev/null
if has clevis; then
	clevis luks bind -y -d "$dev" -k "$W/pw" tang "{\"url\":\"http://127.0.0.1:$TANG_PORT\"}" \
		>/dev/null 2>"$W/clevis.err" || { cat "$W/clevis.err" >&2; die "clevis luks bind failed"; }
fi
if has argon2; then
	# cryptsetup's default (benchmarked in this guest) argon2id cost
	cryptsetup luksAddKey -q --key-file "$W/pw" --key-slot 0 --new-key-slot "$ARGON_SLOT" \
		--pbkdf argon2id "$dev" "$W/pw2"
	read -r t m p < <(cryptsetup luksDump --dump-json-metadata "$dev" |
		jq -r ".keyslots.\"$ARGON_SLOT\".kdf | \"\\(.time) \\(.memory) \\(.cpus)\"")
	avail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
	note "default argon2id keyslot: time cost $t, memory $m KiB, $p threads ($avail KiB available)"
	echo "# argon2id keyslot (cryptsetup's default, benchmarked in the guest): time=$t memory_kib=$m threads=$p" >>"$RAW.info"
	# cryptsetup caps the default at half the RAM; the opens run one at a time, but the images and
	# the guest's tmpfs root share that RAM: rather than be OOM-killed half-way, the run goes on
	# without this anchor (and says so); --mem gives the guest more
	if ((m + 262144 >= avail)); then
		note "the argon2id keyslot needs $m KiB and only $avail KiB are available: no argon2id anchor"
		echo "# argon2id anchor dropped: its keyslot needs $m KiB, the guest had $avail KiB available (raise --mem)" >>"$RAW.info"
		ANCHORS=${ANCHORS//,argon2,/,}
	fi
fi
losetup -d "$dev"
prep_one() { # I: bind image I (its own UUID and label already) with kmscrypt
	local dev
	dev=$(losetup --find --show "$W/v$1.img")
	# binds wait for each other on the state lock (120 s); the rest overlaps
	K bind "$dev" --kms bk --key-file "$W/pw" >/dev/null
	losetup -d "$dev"
}
# one job per vCPU: at N = 128 the images cost minutes under TCG, and nothing is timed here
PREP_JOBS=$(nproc)
note "preparing $NMAX images ($PREP_JOBS at a time)"
t_prep=$SECONDS
imgs=()
for ((i = 1; i <= NMAX; i++)); do
	cp --sparse=always "$W/tpl.img" "$W/v$i.img"
	imgs+=("$W/v$i.img")
done
# a new random UUID and the label kv-b<i> for every image, in one process
"$FLOOR" relabel kv-b "${imgs[@]}" || die "cannot give the images their UUIDs and labels"
# worker J binds images J, J + PREP_JOBS, ...; each worker is waited for by its PID (`wait -n`
# misses a job that ended before it was called, and would then wait for the fake forever)
workers=()
for ((j = 1; j <= PREP_JOBS; j++)); do
	(
		set -e
		for ((i = j; i <= NMAX; i += PREP_JOBS)); do prep_one "$i"; done
	) &
	workers+=($!)
done
for pid in "${workers[@]}"; do
	wait "$pid" || die "preparing the images failed"
done
note "images ready ($((SECONDS - t_prep)) s)"
echo "# setup: $NMAX images bound in $((SECONDS - t_prep)) s" >>"$RAW.info"

DEVS=()
attach() { # N: loop devices for the first N images only (what --all sees)
	losetup -D
	DEVS=()
	local i
	for ((i = 1; i <= $1; i++)); do
		DEVS+=("$(losetup --find --show "$W/v$i.img")")
	done
}

us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
secs() { printf '%d.%06d' "$(($1 / 1000000))" "$(($1 % 1000000))"; }
# rec REP N LAT TOOL OP MICROSECONDS [RSS_KB [REQUESTS [HANDSHAKES]]]
rec() {
	echo "$1,$2,$3,$4,$5,$(secs "$6"),${7:-},${8:-},${9:-}" >>"$RAW"
}
# crypt_count PREFIX WHAT: how many dm-crypt tables named PREFIX<digits> have WHAT (zero: an
# all-zero key, live: any key); one dmsetup call, and no key is ever printed.
crypt_count() {
	local name _s _l type _c key _r c=0
	while read -r name _s _l type _c key _r; do
		[[ $type == crypt && $name =~ ^$1[0-9]+:$ ]] || continue
		if [[ $2 == zero ]]; then
			[[ $key =~ ^0+$ ]] && c=$((c + 1))
		else
			c=$((c + 1))
		fi
	done < <(dmsetup table --showkeys 2>/dev/null)
	echo "$c"
}
# masked_tables: every dm table, each key field replaced by its shape (never the key itself)
masked_tables() {
	dmsetup table --showkeys 2>&1 | sed -E 's/ 0{16,} / <zero key> /; s/ [0-9a-fA-F]{16,} / <hex key> /'
}
# wait_wiped PREFIX N: until N tables named PREFIX* show the zero key (60 s at most)
wait_wiped() {
	local end=$((SECONDS + 60))
	while (($(crypt_count "$1" zero) != $2)); do
		if ((SECONDS > end)); then
			masked_tables >&2
			die "$2 tables $1* did not show the zero key within 60 s"
		fi
		sleep 0.05
	done
}
expect_open() { # PREFIX N WHAT
	local c
	c=$(crypt_count "$1" live)
	((c == $2)) || die "$3: $c of $2 mappings $1* are open"
}
counters() { fctl /counters | jq -r '"\(.requests) \(.tls_handshakes)"'; }

bench_kmscrypt() { # REP N LAT
	local rep=$1 n=$2 lat=$3 t0 t1 rss req hs
	if ((lat > 0)); then
		fctl /faults "{\"latency_ms\":$lat}" >/dev/null
	else
		fctl /faults/reset '{}' >/dev/null
	fi
	fctl /counters/reset '{}' >/dev/null
	t0=$(us)
	/usr/bin/time -f %M -o "$W/rss" "$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" -q \
		unlock --all >/dev/null
	t1=$(us)
	rss=$(tail -n 1 "$W/rss")
	read -r req hs < <(counters)
	expect_open kv-b "$n" "kmscrypt unlock --all"
	rec "$rep" "$n" "$lat" kmscrypt unlock $((t1 - t0)) "$rss" "$req" "$hs"

	fctl /counters/reset '{}' >/dev/null
	t0=$(us)
	K revoke --all --reason bench >/dev/null || die "kmscrypt revoke --all failed (exit $?)"
	wait_wiped kv-b "$n"
	t1=$(us)
	read -r req hs < <(counters)
	rec "$rep" "$n" "$lat" kmscrypt revoke $((t1 - t0)) "" "$req" "$hs"

	fctl /counters/reset '{}' >/dev/null
	t0=$(us)
	K restore --all >/dev/null || die "kmscrypt restore --all failed (exit $?)"
	t1=$(us)
	read -r req hs < <(counters)
	(($(crypt_count kv-b zero) == 0)) || die "kmscrypt restore --all left a zero key"
	rec "$rep" "$n" "$lat" kmscrypt restore $((t1 - t0)) "" "$req" "$hs"

	t0=$(us)
	K lock --all >/dev/null || die "kmscrypt lock --all failed (exit $?)"
	t1=$(us)
	expect_open kv-b 0 "kmscrypt lock --all"
	rec "$rep" "$n" "$lat" kmscrypt lock $((t1 - t0))
}

names() { # PREFIX N
	local i
	for ((i = 1; i <= $2; i++)); do echo "$1$i"; done
}

bench_floor_and_suspend() { # REP N
	local rep=$1 n=$2 t0 t1 rss i
	t0=$(us)
	/usr/bin/time -f %M -o "$W/rss" "$FLOOR" open "$W/pw" 0 fl- "${DEVS[@]}"
	t1=$(us)
	rss=$(tail -n 1 "$W/rss")
	expect_open fl- "$n" "floor open"
	rec "$rep" "$n" "" floor open $((t1 - t0)) "$rss"
	if has suspend; then
		t0=$(us)
		for ((i = 1; i <= n; i++)); do cryptsetup luksSuspend "fl-$i"; done
		wait_wiped fl- "$n"
		t1=$(us)
		rec "$rep" "$n" "" luks-suspend-resume suspend $((t1 - t0))
		t0=$(us)
		for ((i = 1; i <= n; i++)); do
			cryptsetup luksResume --key-file "$W/pw" --key-slot 0 "fl-$i"
		done
		t1=$(us)
		(($(crypt_count fl- zero) == 0)) || die "luksResume left a zero key"
		rec "$rep" "$n" "" luks-suspend-resume resume $((t1 - t0))
	fi
	mapfile -t nm < <(names fl- "$n")
	t0=$(us)
	"$FLOOR" close "${nm[@]}"
	t1=$(us)
	expect_open fl- 0 "floor close"
	rec "$rep" "$n" "" floor close $((t1 - t0))
}

bench_clevis() { # REP N
	local rep=$1 n=$2 t0 t1 i
	t0=$(us)
	for ((i = 1; i <= n; i++)); do
		clevis luks unlock -d "${DEVS[i - 1]}" -n "cl-$i"
	done
	t1=$(us)
	expect_open cl- "$n" "clevis luks unlock"
	rec "$rep" "$n" "" clevis-tang unlock $((t1 - t0))
	mapfile -t nm < <(names cl- "$n")
	"$FLOOR" close "${nm[@]}"
}

bench_argon2() { # REP N
	local rep=$1 n=$2 t0 t1 i
	t0=$(us)
	for ((i = 1; i <= n; i++)); do
		cryptsetup open --key-file "$W/pw2" --key-slot "$ARGON_SLOT" "${DEVS[i - 1]}" "ar-$i"
	done
	t1=$(us)
	expect_open ar- "$n" "cryptsetup open (argon2id)"
	rec "$rep" "$n" "" cryptsetup-argon2id open $((t1 - t0))
	mapfile -t nm < <(names ar- "$n")
	"$FLOOR" close "${nm[@]}"
}

# in_time WHAT: whether the deadline still allows starting WHAT; records the first refusal
STOPPED=
in_time() {
	[[ -z $STOPPED ]] || return 1
	if [[ -z ${KMSCRYPT_BENCH_DEADLINE:-} ]] || (($(date +%s) < KMSCRYPT_BENCH_DEADLINE)); then
		return 0
	fi
	STOPPED=$1
	note "the time budget is spent: stopping before $1"
	echo "# BUDGET: the time budget (--budget) ended the run before $1" >>"$RAW.info"
	return 1
}

# ---- the measurements: every repetition runs every tool, interleaved, for every N
for ((rep = 1; rep <= REPS; rep++)); do
	for n in "${SIZES[@]}"; do
		in_time "rep $rep N=$n" || break 2
		attach "$n"
		for lat in "${LATS[@]}"; do
			in_time "rep $rep N=$n kmscrypt at $lat ms" || break 3
			note "rep $rep/$REPS N=$n: kmscrypt at ${lat} ms"
			bench_kmscrypt "$rep" "$n" "$lat"
		done
		fctl /faults/reset '{}' >/dev/null
		if has floor || has suspend; then
			in_time "rep $rep N=$n floor and suspend loop" || break 2
			note "rep $rep/$REPS N=$n: floor and suspend/resume loop"
			bench_floor_and_suspend "$rep" "$n"
		fi
		if slow clevis "$rep" "$n"; then
			in_time "rep $rep N=$n clevis" || break 2
			note "rep $rep/$REPS N=$n: clevis + tang"
			bench_clevis "$rep" "$n"
		fi
		if slow argon2 "$rep" "$n"; then
			in_time "rep $rep N=$n argon2id" || break 2
			note "rep $rep/$REPS N=$n: cryptsetup open (argon2id)"
			bench_argon2 "$rep" "$n"
		fi
	done
done
note "done"
