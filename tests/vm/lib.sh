#!/bin/bash
# tests/vm/lib.sh: helpers for the real-kernel tests (tests/vm/test_*.sh), sourced, never run.
#
# The tests run as root inside the QEMU guest of scripts/vm/run.sh (real dm-crypt, loop devices and
# the kernel keyring; the guest is thrown away at power-off). Each test file groups several cases:
#
#	t_case "name" case_function  # in a subshell; the first failed assertion ends the case
#	...
#	t_finish                       # prints the summary; exits non-zero if any case failed
#
# A case gets fresh $CFG (config dir), $STATE (state dir) and $WORK (a tmpfs for images) and, on
# exit, a cleanup that restores or force-removes every suspended dm device before anything else
# (I/O on a suspended device blocks in D state until resume), then closes mappings and loop devices.
set -euo pipefail

if [[ ${T_NO_KMSCRYPT:-} != 1 ]]; then
	: "${KMSCRYPT:?KMSCRYPT must name the kmscrypt binary (ctest sets it)}"
	[[ -x $KMSCRYPT ]] || { echo "FATAL: KMSCRYPT='$KMSCRYPT' is not executable" >&2; exit 1; }
else
	KMSCRYPT=/bin/false
fi
if [[ ${KMSCRYPT_IN_VM:-} != 1 && ${KMSCRYPT_VM_TEST_NATIVE:-} != 1 ]]; then
	# The cleanup removes every dm device: only ever do that in the throw-away guest.
	echo "FATAL: run this inside the test VM: scripts/vm/run.sh -- bash $0" >&2
	echo "       (or set KMSCRYPT_VM_TEST_NATIVE=1 on a disposable machine)" >&2
	exit 1
fi
[[ $(id -u) == 0 ]] || { echo "FATAL: the VM tests need root" >&2; exit 1; }
for t_tool in cryptsetup dmsetup losetup jq sha256sum keyctl; do
	command -v "$t_tool" >/dev/null || { echo "FATAL: '$t_tool' not found" >&2; exit 1; }
done
export DM_DISABLE_UDEV=1

T_PASSED=()
T_FAILED=()
T_LOOPS=()
T_BG=()
T_NCMD=0
T_CASE=
T_START=$(date +%s)

# ---- reporting -------------------------------------------------------------------------

t_log() {
	printf '    %s\n' "$*"
}

# t_fail WHAT EXPECTED SEEN: report a failed assertion and end the case.
t_fail() {
	printf 'FAIL [%s]: %s\n      expected: %s\n      seen:     %s\n' \
		"$T_CASE" "$1" "$2" "$3" >&2
	exit 1
}

t_ok() {
	printf '  ok: %s\n' "$*"
}

# ---- assertions -------------------------------------------------------------------------------

assert_eq() { # EXPECTED SEEN WHAT
	[[ $1 == "$2" ]] || t_fail "$3" "'$1'" "'$2'"
	t_ok "$3 = '$2'"
}

assert_ne() { # UNEXPECTED SEEN WHAT
	[[ $1 != "$2" ]] || t_fail "$3" "anything but '$1'" "'$2'"
	t_ok "$3 (≠ '$1')"
}

assert_match() { # ERE TEXT WHAT
	[[ $2 =~ $1 ]] || t_fail "$3" "text matching /$1/" "'$2'"
	t_ok "$3"
}

assert_no_match() { # ERE TEXT WHAT
	[[ ! $2 =~ $1 ]] || t_fail "$3" "no text matching /$1/" "'$2'"
	t_ok "$3"
}

# ---- running kmscrypt ---------------------------------------------------------------------------

# K ARGS...: kmscrypt with this case's config and state dirs.
K() {
	"$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" "$@"
}

# kc CODES WHAT -- ARGS...: run kmscrypt ARGS, expect an exit code in CODES (comma-separated).
# Output goes to $T_OUT (stdout) and $T_ERR (stderr); both are shown when the code is wrong.
kc() {
	local codes=$1 what=$2 rc t0 ms
	shift 3
	T_NCMD=$((T_NCMD + 1))
	T_OUT=$WORK/cmd.$T_NCMD.out
	T_ERR=$WORK/cmd.$T_NCMD.err
	t0=${EPOCHREALTIME/./}
	set +e
	timeout 120 "$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" "$@" >"$T_OUT" 2>"$T_ERR"
	rc=$?
	set -e
	ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
	if [[ ,$codes, != *",$rc,"* ]]; then
		{
			echo "    \$ kmscrypt $*"
			sed 's/^/    stdout: /' "$T_OUT"
			sed 's/^/    stderr: /' "$T_ERR"
		} >&2
		t_fail "$what: exit code of 'kmscrypt $*'" "$codes" "$rc"
	fi
	# shellcheck disable=SC2034  # read by the test files
	T_RC=$rc
	t_ok "$what (kmscrypt $1: exit $rc, $ms ms)"
}

# ---- volumes ------------------------------------------------------------------------------------

# t_loop VAR NAME [SIZE]: a loop device over a fresh image in $WORK, stored in VAR.
# (Not a $(...) function: the cleanup list must live in the case's shell.)
t_loop() {
	local _tl_img=$WORK/$2.img _tl_dev
	truncate -s "${3:-64M}" "$_tl_img"
	_tl_dev=$(losetup --find --show "$_tl_img")
	T_LOOPS+=("$_tl_dev")
	printf -v "$1" '%s' "$_tl_dev"
}

t_uuid() {
	cryptsetup luksUUID "$1"
}

# t_write_data MAPPING NAME: write 4 MiB of random data at the start; remember its sha256.
t_write_data() {
	head -c 4M /dev/urandom >"$WORK/$2.data"
	dd if="$WORK/$2.data" of="/dev/mapper/$1" bs=1M oflag=direct conv=fsync status=none
	local sum
	read -r sum _ < <(sha256sum <"$WORK/$2.data")
	echo "$sum" >"$WORK/$2.sha"
}

# t_check_data MAPPING NAME: the first 4 MiB read back (O_DIRECT) match what t_write_data wrote.
t_check_data() {
	local seen want
	read -r seen _ < <(dd if="/dev/mapper/$1" bs=1M count=4 iflag=direct status=none |
		sha256sum)
	want=$(<"$WORK/$2.sha")
	assert_eq "$want" "$seen" "sha256 of the data on $1"
}

# (Each new process costs 0.05-0.5 s in the emulated guest: the helpers avoid pipelines.)
# t_table_key MAPPING: the key field of the live dm-crypt table (5th field).
t_table_key() {
	local _start _len type _args key _rest
	read -r _start _len type _args key _rest < <(dmsetup table --showkeys "$1" 2>/dev/null) ||
		true
	[[ $type == crypt ]] && echo "$key"
	return 0
}

t_dm_state() { # MAPPING: ACTIVE, SUSPENDED or "absent"
	local s
	s=$(dmsetup info -C --noheadings -o suspended "$1" 2>/dev/null) || true
	s=${s//[[:space:]]/}
	case $s in
	Active) echo ACTIVE ;;
	Suspended) echo SUSPENDED ;;
	*) echo absent ;;
	esac
}

# The key is in the keyring and named by the table; no key hex anywhere in the table.
assert_table_uses_keyring() { # MAPPING
	local table key
	table=$(dmsetup table --showkeys "$1")
	key=$(t_table_key "$1")
	assert_match '^:64:logon:' "$key" "dm table of $1 names a 64-byte logon key ($key)"
	assert_no_match '[0-9a-fA-F]{32}' "$key" "dm table of $1 holds no hex key"
	assert_no_match '(^| )[0-9a-fA-F]{64,}( |$)' "$table" "dm table of $1 has no hex key field"
}

assert_table_key_wiped() { # MAPPING
	local key
	key=$(t_table_key "$1")
	assert_match '^0{64,}$' "$key" "dm table of $1 shows an all-zero key"
}

# The kernel has no kmscrypt/cryptsetup key for UUID; key GC is asynchronous, so poll up to 5 s.
assert_no_key_in_proc_keys() { # UUID
	local i seen line
	for ((i = 0; i < 50; i++)); do
		seen=
		while read -r line; do
			[[ $line =~ (kmscrypt|cryptsetup):$1 ]] && seen+="$line; "
		done </proc/keys
		[[ -z $seen ]] && break
		sleep 0.1
	done
	[[ -z $seen ]] || t_fail "no key for $1 in /proc/keys" "no line" "$seen"
	t_ok "no key for $1 in /proc/keys"
}

# t_status UUID FIELD...: fields of this volume in `kmscrypt status --json`, one per line
# ("(volume not listed)", "(null)", "(status failed: ...)" or "(not JSON: ...)" otherwise).
t_status() {
	local out rc uuid=$1
	shift
	set +e
	out=$("$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" status --json \
		2>"$WORK/status.err")
	rc=$?
	set -e
	if ((rc != 0)); then
		echo "(status failed: exit $rc: $(head -n 1 "$WORK/status.err"))"
		return 0
	fi
	jq -r --arg u "$uuid" '[.volumes[] | select(.uuid == $u)] as $v | $ARGS.positional[] as $f |
		if ($v | length) == 0 then "(volume not listed)"
		else $v[0][$f] // "(null)" | tostring end' --args "$@" <<<"$out" 2>/dev/null ||
		echo "(not JSON: ${out:0:200})"
}

assert_status() { # UUID STATE KEY
	local state key
	{ read -r state; read -r key || key=; } < <(t_status "$1" state key)
	assert_eq "$2" "$state" "status of ${1:0:8}: state"
	assert_eq "$3" "$key" "status of ${1:0:8}: key"
}

# t_reader MAPPING OFFSET_4K: start a background O_DIRECT read of one 4 KiB block; its pid goes
# to T_READER (never call this in $(...): the reader must be a child of the case's shell).
t_reader() {
	dd if="/dev/mapper/$1" of="$WORK/reader.$2" bs=4k count=1 skip="$2" iflag=direct \
		status=none </dev/null >/dev/null 2>"$WORK/reader.$2.err" &
	T_READER=$!
	T_BG+=("$T_READER")
}

# The reader has not finished after SEC seconds and sleeps uninterruptibly (blocked on dm).
assert_blocked() { # PID SEC
	sleep "$2"
	kill -0 "$1" 2>/dev/null || t_fail "reader $1 blocked on the suspended device" \
		"still running after $2 s" "it exited ($(cat "$WORK"/reader.*.err 2>/dev/null))"
	local st='' k v
	while read -r k v _; do
		[[ $k == State: ]] && st=$v
	done <"/proc/$1/status" 2>/dev/null || true
	t_ok "reader $1 still blocked after $2 s (state ${st:-?})"
}

# The reader finishes within SEC seconds and succeeds.
assert_reader_done() { # PID SEC
	local i rc
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$1" 2>/dev/null && t_fail "reader $1 completes after restore" \
		"done within $2 s" "still running"
	set +e
	wait "$1"
	rc=$?
	set -e
	assert_eq 0 "$rc" "exit status of the reader released by restore"
}

# t_header_sum DEVICE: checksum of a LUKS2 header backup (keyslots, tokens, everything).
t_header_sum() {
	rm -f "$WORK/hdr.bak"
	cryptsetup luksHeaderBackup "$1" --header-backup-file "$WORK/hdr.bak"
	local sum
	read -r sum _ < <(sha256sum <"$WORK/hdr.bak")
	echo "$sum"
}

# t_token_id DEVICE: the id of the kmscrypt token in the LUKS2 header.
t_token_id() {
	cryptsetup luksDump --dump-json-metadata "$1" |
		jq -r '[.tokens | to_entries[] | select(.value.type == "kmscrypt") | .key][0] // ""'
}

# ---- case runner and cleanup ---------------------------------------------------------------------

# Bring every dm device back to a state where no I/O blocks, then remove them all. In this
# throw-away guest every dm device is ours.
t_dm_cleanup() {
	local name _rest
	while read -r name _rest; do
		[[ -n $name && $name != "No" ]] || continue
		if [[ $(t_dm_state "$name") == SUSPENDED ]]; then
			# First the product's own restore (KMS still there), then a hard resume; a
			# crypt table without a key refuses to resume, so replace it with an error
			# table (--force) which fails the blocked I/O instead.
			timeout 60 "$KMSCRYPT" --config-dir "$CFG" --state-dir "$STATE" -q \
				restore "$name" >/dev/null 2>&1 || true
			[[ $(t_dm_state "$name") == SUSPENDED ]] &&
				{ timeout 10 dmsetup resume "$name" 2>/dev/null || true; }
			[[ $(t_dm_state "$name") == SUSPENDED ]] &&
				{ timeout 30 dmsetup remove --force "$name" 2>/dev/null || true; }
		fi
	done < <(dmsetup ls 2>/dev/null)
	while read -r name _rest; do
		[[ -n $name && $name != "No" ]] || continue
		timeout 30 dmsetup remove --retry "$name" 2>/dev/null ||
			timeout 30 dmsetup remove --force "$name" 2>/dev/null || true
	done < <(dmsetup ls 2>/dev/null)
}

t_case_cleanup() {
	local pid dev
	t_dm_cleanup
	for pid in "${T_BG[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for dev in "${T_LOOPS[@]}"; do
		losetup -d "$dev" 2>/dev/null || true
	done
	umount -l "$WORK" 2>/dev/null || true
}

# The subshell of one case: fresh dirs and tmpfs, cleanup on exit.
t_case_body() {
	set -euo pipefail
	T_CASE=$1
	local base
	base=$(mktemp -d "/tmp/kmscrypt-vm-$1.XXXXXX")
	WORK=$base/work CFG=$base/etc STATE=$base/state
	mkdir -p "$WORK" "$CFG" "$STATE"
	mount -t tmpfs -o size=512m,mode=0700 tmpfs "$WORK"
	trap 't_case_cleanup' EXIT
	"$2"
}

# t_case NAME FUNCTION: run one case in a subshell with fresh dirs; record pass/fail.
t_case() {
	local name=$1 fn=$2 rc t0
	t0=$(date +%s)
	printf '\n=== case %s\n' "$name"
	set +e
	(t_case_body "$name" "$fn")
	rc=$?
	set -e
	if ((rc == 0)); then
		T_PASSED+=("$name")
		printf '=== PASS %s (%ss)\n' "$name" "$(($(date +%s) - t0))"
	else
		T_FAILED+=("$name")
		printf '=== FAIL %s (exit %s, %ss)\n' "$name" "$rc" "$(($(date +%s) - t0))"
	fi
}

t_finish() {
	printf '\n%s: %d passed, %d failed in %ss\n' "${0##*/}" "${#T_PASSED[@]}" \
		"${#T_FAILED[@]}" "$(($(date +%s) - T_START))"
	if ((${#T_FAILED[@]})); then
		printf 'failed cases: %s\n' "${T_FAILED[*]}"
		exit 1
	fi
	exit 0
}

# The last line of defence: nothing stays suspended when the script exits, however it exits.
t_global_cleanup() {
	CFG=/nonexistent STATE=/nonexistent t_dm_cleanup
}
trap t_global_cleanup EXIT

# ---- more helpers used by several files -----------------------------------------------

assert_in() { # "A|B|C" SEEN WHAT
	[[ "|$1|" == *"|$2|"* ]] || t_fail "$3" "one of $1" "'$2'"
	t_ok "$3 = '$2'"
}

# t_certs DIR: the test PKI of tests/fakes/mkcerts.sh (CA, server and client certificates) in DIR.
# ctest makes it once on the host (test vm/pki, a fixture of every VM test: BUILD/vm/pki) and a
# guest copies it: mkcerts.sh runs ~15 openssl processes, ~10 s under TCG. Run without ctest (or
# with certificates expiring within a day), the guest makes its own, as before.
t_certs() {
	local pki=${KMSCRYPT_BUILD_DIR:-/nonexistent}/vm/pki
	if [[ -s $pki/ca.pem && -s $pki/other-client.key ]] &&
		openssl x509 -in "$pki/server.pem" -noout -checkend 86400 >/dev/null 2>&1; then
		mkdir -p -- "$1" && cp -- "$pki"/* "$1"/
	else
		bash "${BASH_SOURCE[0]%/*}/../fakes/mkcerts.sh" "$1" >/dev/null 2>&1
	fi
}

# t_kms_local NAME: a local-provider KMS with a freshly generated master key in $WORK/NAME.key.
t_kms_local() {
	kc 0 "create local KMS '$1'" -- kms create "$1" --provider local --key-file "$WORK/$1.key" \
		--generate
	[[ -s $WORK/$1.key ]] || t_fail "kms create --generate writes the key file" \
		"a non-empty $WORK/$1.key" "$(ls -l "$WORK/$1.key" 2>&1)"
}

# t_volume DEVVAR UUIDVAR NAME KMS LABEL [FORMAT ARGS...]: loop device + kmscrypt format.
t_volume() {
	local _tv_dev _tv_uuid _tv_devvar=$1 _tv_uuidvar=$2 _tv_kms=$4 _tv_label=$5
	t_loop _tv_dev "$3"
	shift 5
	kc 0 "format $_tv_dev for '$_tv_kms' (label $_tv_label)" -- \
		format "$_tv_dev" --kms "$_tv_kms" --label "$_tv_label" "$@"
	_tv_uuid=$(t_uuid "$_tv_dev") ||
		t_fail "format writes a LUKS2 header on $_tv_dev" "a UUID" "none"
	printf -v "$_tv_devvar" '%s' "$_tv_dev"
	printf -v "$_tv_uuidvar" '%s' "$_tv_uuid"
}

# The recovery key written by `format --recovery-key-file F` opens DEVICE's keyslots.
assert_recovery_opens() { # DEVICE FILE
	[[ -s $2 ]] || t_fail "recovery key file written by format" "non-empty $2" \
		"$(ls -l "$2" 2>&1)"
	if cryptsetup open --test-passphrase --key-file "$2" "$1" 2>"$WORK/rec.err"; then
		t_ok "recovery key file opens $1 (cryptsetup --key-file)"
	elif cryptsetup open --test-passphrase "$1" <"$2" 2>>"$WORK/rec.err"; then
		t_ok "recovery key opens $1 as a typed passphrase (first line of the file;" \
			"--key-file with the whole file does not)"
	else
		t_fail "recovery key opens $1" "cryptsetup open --test-passphrase succeeds" \
			"$(tr '\n' ' ' <"$WORK/rec.err")"
	fi
}
