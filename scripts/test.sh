#!/bin/bash
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. install dependencies (Debian packages),
#   2. build and run unit + integration + real-kernel VM tests,
#   3. build again with ASan/UBSan and run the unit and integration tests,
#   4. build the libFuzzer targets with clang and run each for a bounded time.
# Usage: scripts/test.sh [--quick]   (--quick: skip the sanitizer and fuzz builds)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc)

bash "$src/scripts/install-deps.sh"

echo "== build (RelWithDebInfo) and all tests: unit, integration, vm"
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$src/build" -j "$jobs"
# The Python fakes' byte code, made once here: the VM tests start first (the longest first, by
# COST) and each guest would otherwise compile the fakes' modules again under TCG.
/usr/bin/python3 -m compileall -q "$src/tests/fakes" >/dev/null || true
ctest --test-dir "$src/build" --output-on-failure -j "$jobs" --timeout 900

if [ "$quick" = 0 ]; then
	echo "== ASan/UBSan build: unit and integration tests"
	# (test_deb builds the package from the source tree, and the test_fakes_* and bench checks run
	# only Python and shell: once, in the main run, is enough.  The crash loops run 10 times per
	# command here, for the memory checks; the main run makes the 50-run proof.)
	cmake -S "$src" -B "$src/build-asan" -DCMAKE_BUILD_TYPE=Debug -DKMSCRYPT_SANITIZE=ON \
		-DKMSCRYPT_VM_TESTS=OFF >/dev/null
	cmake --build "$src/build-asan" -j "$jobs"
	RUNS=10 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		ctest --test-dir "$src/build-asan" --output-on-failure -j "$jobs" -L 'unit|integration' \
		-E 'integration/(test_deb|test_fakes_.*|test_bench_scripts)$'

	echo "== libFuzzer targets (clang), bounded time each"
	CC=clang cmake -S "$src" -B "$src/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DKMSCRYPT_FUZZ=ON \
		-DKMSCRYPT_VM_TESTS=OFF >/dev/null
	cmake --build "$src/build-fuzz" -j "$jobs" --target fuzz
	if ctest --test-dir "$src/build-fuzz" -N -L fuzz | grep -q "Total Tests: 0"; then
		echo "no fuzz targets"
	else
		ctest --test-dir "$src/build-fuzz" --output-on-failure -j "$jobs" -L fuzz
	fi
fi
echo "== all tests passed"
