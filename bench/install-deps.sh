#!/bin/bash
# bench/install-deps.sh: what the benchmark (bench/run.sh) needs beyond scripts/install-deps.sh,
# from Debian 12 packages only: the clevis + tang anchor and gnuplot for the plot. Kept apart so
# that the test suite's dependencies do not grow. Idempotent.
set -euo pipefail

packages=(clevis clevis-luks tang gnuplot-nox)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "bench/install-deps: all ${#packages[@]} packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "bench/install-deps: missing packages: ${missing[*]}; run as root (or with sudo)" >&2
	exit 1
fi
echo "bench/install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "bench/install-deps: done"
