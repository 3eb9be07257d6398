#!/bin/bash
# A/B in one guest: kmscrypt before/after interleaved, same volumes (prevoke, issue 13).
set -euo pipefail
[[ ${KMSCRYPT_IN_VM:-} == 1 ]] || exit 1
B=$KMSCRYPT_BUILD_DIR
OUT=$B/ab-raw.csv
export DM_DISABLE_UDEV=1
W=$(mktemp -d /tmp/ab.XXXXXX); mount -t tmpfs -o size=1g tmpfs "$W"
CFG=$W/etc STATE=$W/state; mkdir -p "$CFG" "$STATE"
K() { "$B/kmscrypt.after" --config-dir "$CFG" --state-dir "$STATE" -q "$@"; }
K kms create l --provider local --key-file "$W/l.key" --generate >/dev/null
printf %s pw >"$W/pw"
truncate -s 20M "$W/tpl.img"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$W/pw" "$W/tpl.img"
NMAX=16
for ((i = 1; i <= NMAX; i++)); do
	cp --sparse=always "$W/tpl.img" "$W/v$i.img"
	dev=$(losetup --find --show "$W/v$i.img")
	cryptsetup luksUUID -q --uuid "$(</proc/sys/kernel/random/uuid)" "$dev"
	cryptsetup config --label "ab$i" "$dev"
	K bind "$dev" --kms l --key-file "$W/pw" >/dev/null
	losetup -d "$dev"
done
echo "images ready $(date +%T)" >&2
us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
zero() { dmsetup table --showkeys 2>/dev/null | awk '$4=="crypt" && $6 ~ /^0+$/' | wc -l; }
echo "rep,n,bin,op,seconds,rss_kb" >"$OUT"
for rep in 1 2; do
for n in 16; do
	losetup -D
	for ((i = 1; i <= n; i++)); do losetup --find --show "$W/v$i.img" >/dev/null; done
	for bin in before after; do
		X() { "$B/kmscrypt.$bin" --config-dir "$CFG" --state-dir "$STATE" -q "$@"; }
		t0=$(us); /usr/bin/time -f %M -o "$W/rss" "$B/kmscrypt.$bin" --config-dir "$CFG" --state-dir "$STATE" -q unlock --all >/dev/null; t1=$(us)
		echo "$rep,$n,$bin,unlock,$(((t1 - t0) / 1000)),$(tail -n1 "$W/rss")" >>"$OUT"
		t0=$(us); /usr/bin/time -f %M -o "$W/rss" "$B/kmscrypt.$bin" --config-dir "$CFG" --state-dir "$STATE" -q revoke --all >/dev/null
		while (($(zero) != n)); do sleep 0.05; done; t1=$(us)
		echo "$rep,$n,$bin,revoke,$(((t1 - t0) / 1000)),$(tail -n1 "$W/rss")" >>"$OUT"
		t0=$(us); /usr/bin/time -f %M -o "$W/rss" "$B/kmscrypt.$bin" --config-dir "$CFG" --state-dir "$STATE" -q restore --all >/dev/null; t1=$(us)
		echo "$rep,$n,$bin,restore,$(((t1 - t0) / 1000)),$(tail -n1 "$W/rss")" >>"$OUT"
		t0=$(us); /usr/bin/time -f %M -o "$W/rss" "$B/kmscrypt.$bin" --config-dir "$CFG" --state-dir "$STATE" -q lock --all >/dev/null; t1=$(us)
		echo "$rep,$n,$bin,lock,$(((t1 - t0) / 1000)),$(tail -n1 "$W/rss")" >>"$OUT"
		echo "rep $rep n $n $bin done $(date +%T)" >&2
	done
done
done
cat "$OUT"
