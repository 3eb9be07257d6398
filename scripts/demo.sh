#!/bin/bash
# scripts/demo.sh: from a fresh Debian 12 machine to a narrated kmscrypt demo, in one command.
#
#   sudo scripts/demo.sh [--no-deps] [--build-dir DIR] [--vm | --native]
#
# 1. installs the Debian packages (scripts/install-deps.sh, idempotent);
# 2. builds kmscrypt into build/ with CMake;
# 3. runs the demo (scripts/demo-inside.sh: format, unlock, write, revoke, show the wiped key,
#    restore, check the data) on a loop device with the local provider: natively when this
#    kernel has device-mapper with dm-crypt, otherwise inside a QEMU guest booting Debian's kernel
#    (scripts/vm/run.sh). --vm / --native force the choice.
set -euo pipefail

src=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
build=$src/build
deps=1
mode=auto
args=("$@")

usage() {
	sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

while (($#)); do
	case $1 in
	--no-deps) deps=0; shift ;;
	--build-dir) build=${2:?--build-dir needs a value}; shift 2 ;;
	--vm) mode=vm; shift ;;
	--native) mode=native; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

if [[ $(id -u) != 0 ]]; then
	if command -v sudo >/dev/null; then
		echo "demo: re-running as root with sudo" >&2
		exec sudo -- "$0" "${args[@]}"
	fi
	echo "demo: needs root (packages, device-mapper, loop devices)" >&2
	exit 1
fi

if ((deps)); then
	echo "==> installing dependencies (scripts/install-deps.sh)"
	bash "$src/scripts/install-deps.sh"
fi

echo "==> building kmscrypt in $build"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target kmscrypt
export KMSCRYPT=$build/kmscrypt

# dm-crypt usable here? Try to load the modules first (a no-op when built in or already loaded).
have_dm_crypt() {
	modprobe -q dm_mod 2>/dev/null || true
	modprobe -q dm_crypt 2>/dev/null || true
	[[ -d /sys/module/dm_mod ]] || return 1
	dmsetup targets 2>/dev/null | grep -q '^crypt'
}

if [[ $mode == auto ]]; then
	if have_dm_crypt; then
		mode=native
	else
		mode=vm
	fi
fi

if [[ $mode == native ]]; then
	echo "==> this kernel has dm-crypt: running the demo natively"
	exec bash "$src/scripts/demo-inside.sh"
fi
echo "==> this kernel ($(uname -r)) has no usable device-mapper: running the demo in a QEMU guest"
echo "    booting Debian's kernel (scripts/vm/run.sh; ~3-10 s to boot under emulation)"
exec bash "$src/scripts/vm/run.sh" --build-dir "$build" --timeout 600 -- \
	bash "$src/scripts/demo-inside.sh"
