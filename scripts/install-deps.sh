#!/bin/bash
# Install what kmscrypt needs to build, test and run its real-kernel VM tests, from Debian 12
# packages only.  Idempotent: does nothing when everything is already installed.
set -euo pipefail

packages=(
	# build
	build-essential cmake pkg-config clang libclang-rt-14-dev
	libcryptsetup-dev libdevmapper-dev libkeyutils-dev libblkid-dev libcurl4-openssl-dev
	libssl-dev libjson-c-dev libcmocka-dev
	# tools used by tests and the demo
	cryptsetup-bin dmsetup keyutils util-linux e2fsprogs openssl procps jq
	# boot integration: systemd-cryptsetup (token plugin test), cloud-init (schema check and the
	# provisioning test), sfdisk (partition tables the provisioning hook must refuse)
	systemd cloud-init fdisk
	# the Debian package (tests/integration/test_deb.sh: copy with git and cpio, build, lintian;
	# tests/vm/test_deb_install.sh: logrotate rotates the audit log)
	debhelper dpkg-dev lintian git logrotate
	# the real-kernel VM
	qemu-system-x86 linux-image-amd64 busybox-static cpio kmod xz-utils
	# KMS servers and vendor clients for the fakes (run with /usr/bin/python3)
	python3 python3-pykmip python3-boto3 python3-botocore python3-hvac python3-google-auth
	python3-azure python3-cryptography
	# HTTP/2 in the HTTPS fakes (--h2: tests/unit/test_kms_concurrency.c, bench/)
	python3-h2
	# the Prometheus text-format parser that reads the watcher's metrics file back
	python3-prometheus-client
	# the JSON Schema validator of every command's --json output (tests/integration/test_json_schema.sh)
	python3-jsonschema
	# counting dm ioctls in the guest (tests/vm/test_revoke_scaling.sh)
	strace
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#packages[@]} packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run as root (or with sudo)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
