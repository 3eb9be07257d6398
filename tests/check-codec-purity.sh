#!/bin/bash
# The pure codec library must not reach for I/O, the environment or the clock (STYLE.md section 1).
set -euo pipefail
lib=$1
banned='^(curl_.*|socket|connect|getenv|secure_getenv|time|open|open64|fopen|fopen64|read|write|rand|random|clock_gettime|gettimeofday|crypt_.*|dm_.*|add_key|keyctl.*)$'
bad=$(nm -u "$lib" | awk '{print $2}' | sed 's/@.*//' | grep -E "$banned" | sort -u || true)
if [ -n "$bad" ]; then
	echo "codec library $lib uses banned symbols:" $bad >&2
	exit 1
fi
echo "codec purity: $(nm -u "$lib" | wc -l) undefined symbols, none banned"
