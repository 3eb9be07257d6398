#!/bin/bash
# The benchmark (bench/) is not a test and is never timed here. This only checks that its scripts
# parse (bash -n, shellcheck when installed), that bench/floor.c compiles without warnings, that
# bench/run.sh refuses bad options before booting anything, that bench/guest.sh refuses to run
# outside the VM, and that bench/report.py turns a small made-up raw.csv into the right medians
# and ratios (and a plot when gnuplot is installed).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
B=$src/bench

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for f in run.sh guest.sh install-deps.sh; do
	expect_rc 0 "bash -n bench/$f" -- bash -n "$B/$f"
done
if command -v shellcheck >/dev/null; then
	expect_rc 0 "shellcheck bench/*.sh" -- shellcheck "$B/run.sh" "$B/guest.sh" "$B/install-deps.sh"
else
	echo "# shellcheck not installed: only bash -n"
fi
expect_rc 0 "bench/report.py parses" -- /usr/bin/python3 -c \
	'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$B/report.py"

# shellcheck disable=SC2046
expect_rc 0 "bench/floor.c compiles with -Wall -Wextra -Werror" -- cc -O2 -Wall -Wextra -Werror \
	-std=c11 -o "$tmp/floor" "$B/floor.c" $(pkg-config --cflags --libs libcryptsetup)
expect_rc 2 "floor without arguments is a usage error" -- "$tmp/floor"
expect_out "usage: floor open" "floor prints its usage"

expect_rc 0 "bench/run.sh --help" -- bash "$B/run.sh" --help
expect_out "--sizes" "the help names --sizes"
expect_out "--latency" "the help names --latency"
expect_rc 2 "run.sh refuses --sizes 0" -- bash "$B/run.sh" --sizes 1,0 --build-dir "$tmp"
expect_rc 2 "run.sh refuses --sizes abc" -- bash "$B/run.sh" --sizes abc --build-dir "$tmp"
expect_rc 2 "run.sh refuses --latency -5" -- bash "$B/run.sh" --latency -5 --build-dir "$tmp"
expect_rc 2 "run.sh refuses --reps 0" -- bash "$B/run.sh" --reps 0 --build-dir "$tmp"
expect_rc 2 "run.sh refuses an unknown anchor" -- bash "$B/run.sh" --anchors floor,luks1 \
	--build-dir "$tmp"
expect_rc 1 "run.sh without a built kmscrypt says so" -- bash "$B/run.sh" --build-dir "$tmp/none"
expect_out "no build directory" "the error names the build directory"
expect_rc 1 "guest.sh refuses to run outside the VM" -- env -u KMSCRYPT_IN_VM bash "$B/guest.sh"
expect_out "inside the VM" "guest.sh says where it must run"

# report.py on made-up samples: medians of 3, ratios against the anchors
r=$tmp/raw.csv
{
	echo "rep,n,latency_ms,tool,op,seconds,rss_kb,kms_requests,tls_handshakes"
	for s in 2.0 1.0 9.0; do echo "1,4,0,kmscrypt,unlock,$s,10240,4,1"; done
	for s in 0.5 0.4 0.6; do echo "1,4,0,kmscrypt,revoke,$s,,0,0"; done
	for s in 1.0 1.0 1.0; do echo "1,4,0,kmscrypt,restore,$s,,4,1"; done
	for s in 0.3 0.3 0.3; do echo "1,4,0,kmscrypt,lock,$s,,,"; done
	for s in 4.0 4.0 4.0; do echo "1,4,,floor,open,$s,8192,,"; done
	for s in 0.6 0.6 0.6; do echo "1,4,,floor,close,$s,,,"; done
	for s in 2.0 2.0 2.0; do echo "1,4,,luks-suspend-resume,suspend,$s,,,"; done
	for s in 5.0 5.0 5.0; do echo "1,4,,luks-suspend-resume,resume,$s,,,"; done
	for s in 40 40 40; do echo "1,4,,clevis-tang,unlock,$s,,,"; done
	for s in 8 8 8; do echo "1,4,,cryptsetup-argon2id,open,$s,,,"; done
} >"$r"
echo "# made-up samples" >"$r.info"
mkdir -p "$tmp/out"
expect_rc 0 "report.py on made-up samples" -- /usr/bin/python3 "$B/report.py" "$r" "$tmp/out"
for f in summary.csv summary.json summary.txt; do
	[[ -s $tmp/out/$f ]] && pass "report.py writes $f" || failed "no $tmp/out/$f"
done
cmp_field() { # JQ-PATH EXPECTED
	local seen
	seen=$(jq -r ".comparison[0].$1" "$tmp/out/summary.json" 2>&1)
	expect_eq "$seen" "$2" "comparison $1"
}
cmp_field unlock_s 2                 # median of 2, 1, 9
cmp_field unlock_vs_floor 0.5
cmp_field clevis_vs_unlock 20
cmp_field argon2id_vs_unlock 4
cmp_field revoke_vs_suspend 0.25
cmp_field restore_vs_resume 0.2
cmp_field lock_vs_floor_close 0.5
cmp_field unlock_rss_mb 10
cmp_field floor_rss_mb 8
cmp_field unlock_kms_requests 4
cmp_field unlock_tls_handshakes 1
OUT=$(cat "$tmp/out/summary.txt")
expect_out "| 4 | 0 | 2.000 | 0.500 | 4.000 | 0.5 | 40.000 | 20 |" "summary.txt has the row for N=4"
expect_out "# made-up samples" "summary.txt starts with the run's header lines"
if command -v gnuplot >/dev/null; then
	[[ -s $tmp/out/unlock.png ]] && pass "report.py draws unlock.png" || failed "no unlock.png"
else
	echo "# gnuplot not installed: no plot checked"
fi
finish
