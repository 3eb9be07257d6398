#!/bin/bash
# bench/run.sh: the kmscrypt benchmark (issue 13). Not a test: nothing here passes or fails on a
# number. It boots the QEMU guest of scripts/vm/run.sh (real dm-crypt on loop devices, as root),
# starts the AWS KMS fake with injected latency and tang on loopback, and measures in the same run,
# interleaved per repetition:
#   kmscrypt   unlock --all (wall, per volume, peak RSS, KMS requests, TLS handshakes at the fake),
#              revoke --all until every table shows the zero key, restore --all, lock --all
#   floor      one process, libcryptsetup, serial opens from a PBKDF2 keyslot (bench/floor.c),
#              and its serial close
#   luks-suspend-resume  a `cryptsetup luksSuspend` loop until every table shows the zero key,
#              then a `luksResume` loop
#   clevis-tang  `clevis luks unlock` loop against tang on 127.0.0.1
#   cryptsetup-argon2id  `cryptsetup open` loop from a default (benchmarked) argon2id keyslot
# then writes medians and ratios (summary.txt, summary.csv, summary.json), the raw samples
# (raw.csv) and a plot of time against N per tool (unlock.png, gnuplot: opening and revoking).
#
#   bash bench/run.sh [--sizes 1,8,32,128] [--latency 0,20,100] [--reps 3] [--out DIR]
#                     [--build-dir DIR] [--kmscrypt BIN] [--anchors floor,suspend,clevis,argon2]
#                     [--anchor-sizes LIST] [--anchor-reps R] [--budget MIN]
#                     [--smp 2] [--mem 2048] [--timeout SEC]
#
# The slow anchors (clevis + tang, about 8 s per volume under TCG, and argon2id, about 2 s) run
# at every N of --sizes in every repetition unless --anchor-sizes (e.g. 1,8,32) names the N they
# run at and --anchor-reps R limits them to the first R repetitions; summary.txt lists the cells
# so left out. --budget MIN: no measurement starts later than MIN minutes after the start (a cell
# under way finishes, and the guest is stopped 7 minutes later whatever happens); the run then
# ends early, successfully, and summary.txt lists the samples it did not reach. Every repetition
# covers every N in turn, so what is cut is the last repetitions' largest N.
# The default matrix with every anchor everywhere takes well over an hour on a 2-core host; the
# command that fits in about 40 minutes there and still measures every target of issue 13
# (clevis at N = 32, N = 128, 20 ms):
#
#   bash bench/run.sh --build-dir build --anchor-sizes 1,8,32 --anchor-reps 1 --budget 38
#
# --build-dir holds the VM's cache and the results (it is the guest's read-write share); the binary
# measured is BUILD/kmscrypt unless --kmscrypt names another (e.g. a build of a clean checkout).
# Needs: a built kmscrypt (--build-dir, default ./build), scripts/install-deps.sh, and for the
# anchors and the plot bench/install-deps.sh (clevis, clevis-luks, tang, gnuplot-nox).
set -euo pipefail

prog=bench/run.sh
src=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
sizes=1,8,32,128
latency=0,20,100
reps=3
out=
build_dir=$src/build
anchors=floor,suspend,clevis,argon2
anchor_sizes=
anchor_reps=
budget=
smp=2
mem=2048
timeout_sec=
kmscrypt=

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}
die() {
	echo "$prog: error: $*" >&2
	exit 1
}
list_ok() { # VALUE: comma-separated non-negative integers
	[[ $1 =~ ^[0-9]+(,[0-9]+)*$ ]]
}

while (($#)); do
	case $1 in
	--sizes) sizes=${2:?--sizes needs a value}; shift 2 ;;
	--latency) latency=${2:?--latency needs a value}; shift 2 ;;
	--reps) reps=${2:?--reps needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--build-dir) build_dir=${2:?--build-dir needs a value}; shift 2 ;;
	--kmscrypt) kmscrypt=${2:?--kmscrypt needs a value}; shift 2 ;;
	--anchors) anchors=${2?--anchors needs a value}; shift 2 ;;
	--anchor-sizes) anchor_sizes=${2:?--anchor-sizes needs a value}; shift 2 ;;
	--anchor-reps) anchor_reps=${2:?--anchor-reps needs a value}; shift 2 ;;
	--budget) budget=${2:?--budget needs a value}; shift 2 ;;
	--smp) smp=${2:?--smp needs a value}; shift 2 ;;
	--mem) mem=${2:?--mem needs a value}; shift 2 ;;
	--timeout) timeout_sec=${2:?--timeout needs a value}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
if ! list_ok "$sizes" || [[ ,$sizes, =~ ,0+, ]]; then
	echo "$prog: --sizes must be positive integers separated by commas, e.g. 1,8,32" >&2
	exit 2
fi
list_ok "$latency" ||
	{ echo "$prog: --latency must be milliseconds separated by commas, e.g. 0,20,100" >&2; exit 2; }
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "$prog: --reps must be a positive number" >&2; exit 2; }
[[ $anchors =~ ^((floor|suspend|clevis|argon2)(,|$))*$ ]] ||
	{ echo "$prog: --anchors takes floor,suspend,clevis,argon2 (or an empty list)" >&2; exit 2; }
[[ -n $anchor_sizes ]] || anchor_sizes=$sizes
[[ -n $anchor_reps ]] || anchor_reps=$reps
if ! list_ok "$anchor_sizes" ||
	[[ -n $(comm -23 <(tr , '\n' <<<"$anchor_sizes" | sort -u) <(tr , '\n' <<<"$sizes" | sort -u)) ]]; then
	echo "$prog: --anchor-sizes must be some of the --sizes ($sizes), separated by commas" >&2
	exit 2
fi
if ! [[ $anchor_reps =~ ^[1-9][0-9]*$ ]] || ((anchor_reps > reps)); then
	echo "$prog: --anchor-reps must be a positive number, at most --reps ($reps)" >&2
	exit 2
fi
[[ -z $budget || $budget =~ ^[1-9][0-9]*$ ]] ||
	{ echo "$prog: --budget must be a positive number of minutes" >&2; exit 2; }
[[ $smp =~ ^[1-9][0-9]*$ && $mem =~ ^[1-9][0-9]*$ ]] ||
	{ echo "$prog: --smp and --mem must be positive numbers" >&2; exit 2; }
nmax=0
IFS=, read -r -a _s <<<"$sizes"
for n in "${_s[@]}"; do ((n > nmax)) && nmax=$n; done
((nmax <= 200)) || die "at most 200 volumes (the guest's image tmpfs is 1 GiB)"
if [[ -z $timeout_sec && -n $budget ]]; then
	# the budget plus the longest cell (N = 128, about 2 min on an idle host) and the teardown:
	# if something hangs the guest is stopped, and the samples so far still make the report
	timeout_sec=$((budget * 60 + 420))
elif [[ -z $timeout_sec ]]; then
	# generous: clevis costs seconds per volume under TCG
	IFS=, read -r -a _l <<<"$latency"
	timeout_sec=$((900 + nmax * 20 + reps * (${sizes//,/+}) * (20 + 10 * ${#_l[@]}) +
		anchor_reps * (${anchor_sizes//,/+}) * 20))
fi

build_dir=$(cd -- "$build_dir" 2>/dev/null && pwd -P) ||
	die "no build directory '$build_dir' (cmake -S . -B build && cmake --build build, or --build-dir)"
[[ -n $kmscrypt ]] || kmscrypt=$build_dir/kmscrypt
[[ -x $kmscrypt ]] || die "'$kmscrypt' not found: build kmscrypt first (cmake --build $build_dir)"
for t in cc pkg-config /usr/bin/python3 /usr/bin/time; do
	command -v "$t" >/dev/null || die "'$t' not found (scripts/install-deps.sh)"
done
if [[ ,$anchors, == *,clevis,* ]]; then
	for t in clevis /usr/libexec/tangd; do
		command -v "$t" >/dev/null ||
			die "'$t' not found: run bench/install-deps.sh (or --anchors without clevis)"
	done
fi

# The guest writes only under the build dir (shared read-write); the rest of its root vanishes.
stamp=$(date -u +%Y%m%d-%H%M%S)
work=$build_dir/bench/run-$stamp
mkdir -p "$work"
[[ -n $out ]] || out=$build_dir/bench/results-$stamp
mkdir -p "$out"
out=$(cd -- "$out" && pwd -P)

floor=$work/floor
# shellcheck disable=SC2046  # pkg-config prints several words
cc -O2 -Wall -Wextra -std=c11 -o "$floor" "$src/bench/floor.c" \
	$(pkg-config --cflags --libs libcryptsetup) || die "cannot build bench/floor.c"

raw=$work/raw.csv
echo "rep,n,latency_ms,tool,op,seconds,rss_kb,kms_requests,tls_handshakes" >"$raw"
{
	echo "# kmscrypt benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "# command: bash bench/run.sh --sizes $sizes --latency $latency --reps $reps" \
		"--anchors ${anchors:-''} --anchor-sizes $anchor_sizes --anchor-reps $anchor_reps" \
		"${budget:+--budget $budget }--smp $smp --mem $mem"
	# what report.py compares the samples with, to list the cells not measured
	printf '# plan: {"sizes": [%s], "latency_ms": [%s], "reps": %d, "anchors": "%s", ' \
		"$sizes" "$latency" "$reps" "$anchors"
	printf '"anchor_sizes": [%s], "anchor_reps": %d}\n' "$anchor_sizes" "$anchor_reps"
	echo "# kmscrypt: $kmscrypt, $("$kmscrypt" --version 2>&1 | head -n 1)"
	echo "# packages: $(dpkg-query -W -f='${Package} ${Version}\n' cryptsetup-bin \
		libcryptsetup12 clevis tang qemu-system-x86 2>/dev/null | paste -sd, | sed 's/,/, /g')"
	echo "# host: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
	echo "# guest: QEMU TCG (no KVM), $smp vCPUs, $mem MiB, Debian's kernel booted by" \
		"scripts/vm/run.sh, 16 MiB sparse loop images on tmpfs"
} >"$raw.info"

slow_at=
[[ ,$anchors, != *,clevis,* && ,$anchors, != *,argon2,* ]] ||
	slow_at=" (clevis, argon2 at N = $anchor_sizes in $anchor_reps reps)"
echo "$prog: sizes $sizes, latency $latency ms, $reps reps, anchors '${anchors:-none}'$slow_at;" \
	"guest timeout ${timeout_sec}s${budget:+, budget $budget min}; samples in $raw" >&2
t_start=$SECONDS
deadline=
[[ -z $budget ]] || deadline=$(($(date +%s) + budget * 60))
set +e
KMSCRYPT=$kmscrypt KMSCRYPT_BENCH_SIZES=$sizes KMSCRYPT_BENCH_LATENCY=$latency \
	KMSCRYPT_BENCH_REPS=$reps KMSCRYPT_BENCH_FLOOR=$floor KMSCRYPT_BENCH_RAW=$raw \
	KMSCRYPT_BENCH_ANCHORS=$anchors KMSCRYPT_BENCH_ANCHOR_SIZES=$anchor_sizes \
	KMSCRYPT_BENCH_ANCHOR_REPS=$anchor_reps KMSCRYPT_BENCH_DEADLINE=$deadline \
	bash "$src/scripts/vm/run.sh" --build-dir "$build_dir" --smp "$smp" --mem "$mem" \
	--timeout "$timeout_sec" -- bash "$src/bench/guest.sh"
rc=$?
set -e
echo "# wall time of the whole run (boot, setup, measurements): $(((SECONDS - t_start) / 60)) min" \
	"$(((SECONDS - t_start) % 60)) s" >>"$raw.info"
if ((rc != 0)); then
	echo "# INCOMPLETE: the guest run failed (exit $rc); the samples taken before are kept" >>"$raw.info"
fi
cp -f "$raw" "$raw.info" "$out/"
if (($(wc -l <"$raw") > 1)); then
	/usr/bin/python3 "$src/bench/report.py" "$out/raw.csv" "$out" ||
		echo "$prog: report.py failed; the samples are in $out/raw.csv" >&2
fi
((rc == 0)) || die "the guest run failed (exit $rc); partial results in $out"
echo "$prog: results in $out (summary.txt, summary.csv, summary.json, unlock.png, raw.csv)" >&2
