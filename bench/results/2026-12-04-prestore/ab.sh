#!/bin/bash
# A/B of restore --all in one guest (prestore, issue 13): kmscrypt.before (HEAD) and kmscrypt.after
# (HEAD + this lane) on the same 16 volumes, alternating which goes first. Each sample: unlock --all
# and revoke --all (not timed), then restore --all (timed).
#   scripts/vm/run.sh --build-dir BUILD -- bash bench/results/2026-12-04-prestore/ab.sh
set -euo pipefail
[[ ${KMSCRYPT_IN_VM:-} == 1 ]] || exit 1
B=$KMSCRYPT_BUILD_DIR
OUT=$B/ab-prestore.csv
export DM_DISABLE_UDEV=1
W=$(mktemp -d /tmp/ab.XXXXXX); mount -t tmpfs -o size=1g tmpfs "$W"
CFG=$W/etc STATE=$W/state; mkdir -p "$CFG" "$STATE"
K() { "$B/kmscrypt.$1" --config-dir "$CFG" --state-dir "$STATE" -q "${@:2}"; }
K after kms create l --provider local --key-file "$W/l.key" --generate >/dev/null
printf %s pw >"$W/pw"
truncate -s 20M "$W/tpl.img"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$W/pw" "$W/tpl.img"
N=16
for ((i = 1; i <= N; i++)); do
	cp --sparse=always "$W/tpl.img" "$W/v$i.img"
	dev=$(losetup --find --show "$W/v$i.img")
	cryptsetup luksUUID -q --uuid "$(</proc/sys/kernel/random/uuid)" "$dev"
	cryptsetup config --label "ab$i" "$dev"
	K after bind "$dev" --kms l --key-file "$W/pw" >/dev/null
done
echo "images ready $(date +%T), $(nproc) CPUs" >&2
us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
echo "rep,n,bin,op,ms" >"$OUT"
for rep in 1 2 3; do
	order="before after"
	((rep % 2 == 0)) && order="after before"
	for bin in $order; do
		K after unlock --all >/dev/null
		K after revoke --all >/dev/null
		t0=$(us); K "$bin" restore --all >/dev/null; t1=$(us)
		echo "$rep,$N,$bin,restore,$(((t1 - t0) / 1000))" >>"$OUT"
		K after lock --all >/dev/null
		echo "rep $rep $bin done $(date +%T)" >&2
	done
done
cat "$OUT"
