#!/bin/bash
# The volume layer's device-mapper tests (tests/unit/test_volume_dm.c) on the real kernel, as root.
# KMSCRYPT_REQUIRE_DM=1 makes a missing device-mapper a failure, not a skip.
set -euo pipefail
KMSCRYPT_REQUIRE_DM=1 exec "${KMSCRYPT_BUILD_DIR:?}/test_volume_dm"
