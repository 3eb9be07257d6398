#!/bin/bash
# The benchmark's plan (bench/, issue 13), without booting anything or timing anything:
# bench/run.sh takes --anchor-sizes, --anchor-reps and --budget and refuses bad values;
# `floor relabel` gives LUKS2 images their own UUID and label in one process; bench/report.py
# lists the cells of the planned matrix that were not measured (and why) and checks the issue's
# targets; bench/readme-table.py prints the README block and replaces it between its markers.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
B=$src/bench

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- run.sh: the new options pass validation (and stop at the missing build dir, exit 1)
expect_rc 1 "run.sh takes --anchor-sizes, --anchor-reps and --budget" -- bash "$B/run.sh" \
	--sizes 1,8,32 --reps 3 --anchor-sizes 1,8 --anchor-reps 1 --budget 38 --build-dir "$tmp/none"
expect_out "no build directory" "it then stops at the build directory"
expect_rc 2 "run.sh refuses --anchor-sizes not among --sizes" -- bash "$B/run.sh" \
	--sizes 1,8 --anchor-sizes 32 --build-dir "$tmp/none"
expect_out "some of the --sizes" "the error says what --anchor-sizes may be"
expect_rc 2 "run.sh refuses --anchor-reps above --reps" -- bash "$B/run.sh" \
	--reps 2 --anchor-reps 3 --build-dir "$tmp/none"
expect_rc 2 "run.sh refuses --budget 0" -- bash "$B/run.sh" --budget 0 --build-dir "$tmp/none"
expect_rc 0 "run.sh --help" -- bash "$B/run.sh" --help
expect_out "--anchor-sizes" "the help names --anchor-sizes"
expect_out "--budget" "the help names --budget"

# ---- floor relabel: a new UUID and the label PREFIX<i> per image, on image files
# shellcheck disable=SC2046
expect_rc 0 "bench/floor.c compiles" -- cc -O2 -Wall -Wextra -Werror -std=c11 -o "$tmp/floor" \
	"$B/floor.c" $(pkg-config --cflags --libs libcryptsetup)
printf pw >"$tmp/pw"
truncate -s 16M "$tmp/a.img"
if cryptsetup luksFormat -q --type luks2 --luks2-metadata-size 16k --luks2-keyslots-size 2m \
	--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$tmp/pw" "$tmp/a.img" 2>/dev/null; then
	cp --sparse=always "$tmp/a.img" "$tmp/b.img"
	expect_rc 0 "floor relabel" -- "$tmp/floor" relabel kv-t "$tmp/a.img" "$tmp/b.img"
	ua=$(cryptsetup luksUUID "$tmp/a.img") ub=$(cryptsetup luksUUID "$tmp/b.img")
	[[ -n $ua && $ua != "$ub" ]] && pass "the copies have different UUIDs" ||
		failed "UUIDs '$ua' and '$ub'"
	expect_eq "$(cryptsetup luksDump "$tmp/b.img" | sed -n 's/^Label:[[:space:]]*//p')" kv-t2 \
		"the second image is labelled kv-t2"
	expect_rc 1 "floor relabel of a non-LUKS file fails" -- "$tmp/floor" relabel kv-t "$tmp/pw"
	expect_out "cannot relabel" "it says which file"
else
	echo "# cryptsetup cannot format an image file here: floor relabel not checked"
fi

# ---- report.py on a partial matrix: the plan says what was asked for
r=$tmp/raw.csv
{
	echo "rep,n,latency_ms,tool,op,seconds,rss_kb,kms_requests,tls_handshakes"
	for rep in 1 2; do
		for n in 1 32; do
			for lat in 0 100; do
				echo "$rep,$n,$lat,kmscrypt,unlock,$((n / 8 + 1)).5,15000,$n,1"
				echo "$rep,$n,$lat,kmscrypt,revoke,1.0,,0,0"
				echo "$rep,$n,$lat,kmscrypt,restore,2.0,,$n,1"
				echo "$rep,$n,$lat,kmscrypt,lock,1.0,,,"
			done
			echo "$rep,$n,,floor,open,$((n / 4 + 1)).0,8000,,"
			echo "$rep,$n,,floor,close,2.0,,,"
			echo "$rep,$n,,luks-suspend-resume,suspend,$((n / 4 + 1)).0,,,"
			echo "$rep,$n,,luks-suspend-resume,resume,3.0,,,"
		done
	done
	echo "1,1,,clevis-tang,unlock,8.0,,,"
	echo "1,32,,clevis-tang,unlock,100.0,,,"
	# N = 128 at 0 ms only, in repetition 1, before the budget ran out; 17 MiB
	echo "1,128,0,kmscrypt,unlock,20.0,17408,128,1"
} >"$r"
{
	echo "# made-up samples"
	printf '# plan: {"sizes": [1,32,128], "latency_ms": [0,100], "reps": 3, '
	printf '"anchors": "floor,suspend,clevis", "anchor_sizes": [1,32], "anchor_reps": 1}\n'
	echo "# BUDGET: the time budget (--budget) ended the run before rep 1 N=128 kmscrypt at 100 ms"
} >"$r.info"
mkdir -p "$tmp/out"
expect_rc 0 "report.py on a partial matrix" -- /usr/bin/python3 "$B/report.py" "$r" "$tmp/out"
j=$tmp/out/summary.json
expect_eq "$(jq -r '[.not_measured[] | select(.tool == "clevis-tang" and .n == 128)][0].why' "$j")" \
	"not run at N = 128 (--anchor-sizes 1,32)" "clevis at N = 128: left out by --anchor-sizes"
expect_eq "$(jq -r '[.not_measured[] | select(.tool == "clevis-tang" and .n == 32)][0].why' "$j")" \
	"1 of 3 repetitions (--anchor-reps)" "clevis at N = 32: one repetition by --anchor-reps"
expect_eq "$(jq -r '[.not_measured[] | select(.tool == "kmscrypt" and .op == "unlock" and .n == 128
	and .latency_ms == 100)][0].why' "$j")" "--budget ended the run before it: 0 of 3" \
	"unlock N = 128 at 100 ms: ended by the budget"
expect_eq "$(jq -r '[.not_measured[] | select(.tool == "kmscrypt" and .op == "unlock" and .n == 32
	and .latency_ms == 0)][0].why' "$j")" "--budget ended the run before it: 2 of 3" \
	"unlock N = 32 at 0 ms: two of three"
expect_eq "$(jq -r '[.not_measured[] | select(.tool == "argon2")][0].why' "$j")" \
	"anchor not asked for (--anchors)" "argon2id: not asked for"
target() { jq -r --arg t "$1" '.targets[] | select(.target | startswith($t)) | .met' "$j"; }
expect_eq "$(target "unlock --all of 32 at 0 ms")" true "unlock of 32 beats the floor (5.5 < 9)"
expect_eq "$(target "unlock --all >= 20x")" false "clevis 100 / unlock 5.5 is under 20x"
expect_eq "$(target "revoke --all >= 5x")" true "suspend 9 / revoke 1 is 9x"
expect_eq "$(target "peak RSS")" false "17 MiB at N = 128 is over 16 MiB"
expect_eq "$(target "1 KMS request per volume")" true "one request per volume"
OUT=$(cat "$tmp/out/summary.txt")
expect_out "clevis-tang unlock N = 128: not run at N = 128" "summary.txt lists the cells left out"
expect_out "100.000 (1)" "a median of fewer samples says how many"

# ---- readme-table.py: the block between the markers, the plot linked relative to the README
mkdir -p "$tmp/repo/bench/results"
cp -r "$tmp/out" "$tmp/repo/bench/results/run1"
printf 'intro\n<!-- bench:latest-run begin -->\nold\n<!-- bench:latest-run end -->\nafter\n' \
	>"$tmp/repo/README.md"
expect_rc 0 "readme-table.py --write" -- /usr/bin/python3 "$B/readme-table.py" \
	"$tmp/repo/bench/results/run1" --note "Idle host." --write "$tmp/repo/README.md"
OUT=$(cat "$tmp/repo/README.md")
expect_out "![time against N per tool, medians](bench/results/run1/unlock.png)" "the plot link"
expect_out "Idle host." "the note"
expect_out "after" "the text after the block stays"
grep -q '^old$' "$tmp/repo/README.md" && failed "the old block stayed" || pass "the old block went"
expect_rc 1 "readme-table.py --write refuses a README without markers" -- /usr/bin/python3 \
	"$B/readme-table.py" "$tmp/repo/bench/results/run1" --write "$tmp/pw"
expect_out "needs one" "it says what is missing"
finish
