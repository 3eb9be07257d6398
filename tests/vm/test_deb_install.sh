#!/bin/bash
# shellcheck disable=SC2317  # the case functions are called through t_case
# The Debian package on a real kernel: `dpkg -i` of the .deb that tests/integration/test_deb.sh
# built and left in $KMSCRYPT_BUILD_DIR/deb/ (ctest runs that test first: fixture "deb"), then the
# INSTALLED files only, never the build dir's:
#   - /usr/sbin/kmscrypt formats a loop device with a local KMS;
#   - `cryptsetup open --token-only` opens it through the plugin the package put in libcryptsetup's
#     token directory (no plugin was there before the install);
#   - the ExecStart= and ExecStop= command lines of the installed kmscrypt-unlock.service, resolved
#     the way systemd resolves a bare program name, unlock --all and lock --all with the default
#     /etc/kmscrypt and /var/lib/kmscrypt;
#   - dpkg -r removes the binary and the plugin and leaves /etc/kmscrypt and /var/lib/kmscrypt.
# Runs as root inside the VM: scripts/vm/run.sh --build-dir BUILD -- bash tests/vm/test_deb_install.sh
# dpkg writes into the VM's throw-away overlay (checked first), never into the host.
set -euo pipefail
: "${KMSCRYPT_BUILD_DIR:?KMSCRYPT_BUILD_DIR must name the build dir (ctest sets it)}"
[[ $(findmnt -n -o FSTYPE /) == overlay || ${KMSCRYPT_VM_TEST_NATIVE:-} == 1 ]] ||
	{ echo "FATAL: / is not the VM's throw-away overlay; not installing a package into it" >&2; exit 1; }
shopt -s nullglob
debs=("$KMSCRYPT_BUILD_DIR"/deb/kmscrypt_*.deb)
shopt -u nullglob
[[ ${#debs[@]} == 1 ]] || {
	echo "FATAL: want one $KMSCRYPT_BUILD_DIR/deb/kmscrypt_*.deb, found ${#debs[@]}:" \
		"run tests/integration/test_deb.sh first (ctest -R 'test_deb' runs both in order)" >&2
	exit 1
}
DEB=${debs[0]}
MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
PLUGIN=/usr/lib/$MA/cryptsetup/libcryptsetup-token-kmscrypt.so
UNIT=/lib/systemd/system/kmscrypt-unlock.service
for f in /usr/sbin/kmscrypt "$PLUGIN" "$(readlink -f "/lib/$MA/cryptsetup")/libcryptsetup-token-kmscrypt.so" \
	/usr/local/sbin/kmscrypt /usr/local/bin/kmscrypt; do
	[[ ! -e $f ]] || { echo "FATAL: $f exists before the install: the test would not prove anything" >&2; exit 1; }
done
echo "installing $DEB"
dpkg -i "$DEB" </dev/null || { echo "FATAL: dpkg -i $DEB failed" >&2; exit 1; }
export KMSCRYPT=/usr/sbin/kmscrypt
# shellcheck source=tests/vm/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p /run/cryptsetup

case_installed() {
	assert_eq "install ok installed" "$(dpkg-query -W -f='${Status}' kmscrypt)" "dpkg status of kmscrypt"
	assert_eq "" "$(dpkg --verify kmscrypt 2>&1)" "dpkg --verify kmscrypt: files as shipped"
	local f
	for f in /usr/sbin/kmscrypt /usr/sbin/kmscrypt-provision "$PLUGIN" "$UNIT" \
		/lib/systemd/system/kmscrypt-watch.service /etc/logrotate.d/kmscrypt; do
		[[ -f $f ]] || t_fail "$f installed" "a file" "absent"
		t_ok "$f installed"
	done
	assert_eq "" "$(ldd /usr/sbin/kmscrypt "$PLUGIN" | grep 'not found' || true)" \
		"every shared library of the binary and the plugin is installed (Depends)"
	kc 0 "the installed kmscrypt runs" -- --version
	# Neither unit is enabled by the package.
	assert_eq "" "$(find /etc/systemd/system -name 'kmscrypt-*' 2>/dev/null)" \
		"no unit enabled by the package"
}

# `cryptsetup open --token-only` through the installed plugin (libcryptsetup loads it from its own
# directory only; nothing else put one there).
case_plugin() {
	local dev uuid rc
	t_kms_local dp
	t_volume dev uuid dp dp kv-dp
	set +e
	KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE timeout 120 \
		cryptsetup open --token-only "$dev" dp-plugin >"$WORK/cs.out" 2>"$WORK/cs.err"
	rc=$?
	set -e
	assert_eq 0 "$rc" "cryptsetup open --token-only through $PLUGIN ($(tr '\n' ' ' <"$WORK/cs.err"))"
	assert_eq ACTIVE "$(t_dm_state dp-plugin)" "dp-plugin mapped by the installed plugin"
	assert_table_uses_keyring dp-plugin
	cryptsetup close dp-plugin
	# The same without external tokens fails: it was the plugin that opened it.
	set +e
	KMSCRYPT_CONFIG_DIR=$CFG KMSCRYPT_STATE_DIR=$STATE timeout 120 cryptsetup open --token-only \
		--disable-external-tokens "$dev" dp-plugin >/dev/null 2>&1 </dev/null
	rc=$?
	set -e
	assert_ne 0 "$rc" "cryptsetup open --token-only --disable-external-tokens"
	assert_eq absent "$(t_dm_state dp-plugin)" "nothing mapped without the plugin"
}

# The installed unit's ExecStart=/ExecStop=, run as systemd would (no PID 1 here): a bare program
# name is looked up in systemd's fixed search path; no KMSCRYPT_* variables: /etc/kmscrypt and
# /var/lib/kmscrypt (in the overlay).
unit_cmd() { # KEY: the command line of KEY= in the installed unit, without systemd's prefixes
	local line
	line=$(sed -n "s/^$1=//p" "$UNIT")
	[[ -n $line ]] || t_fail "$1= in $UNIT" "a command line" "none"
	line=${line#-}
	printf '%s\n' "$line"
}
case_unit() {
	# shellcheck disable=SC2034  # uuid: set by t_volume
	local dev uuid start stop args prog rc
	t_kms_local du
	t_volume dev uuid du du kv-du
	rm -rf /etc/kmscrypt /var/lib/kmscrypt
	cp -a "$CFG" /etc/kmscrypt
	cp -a "$STATE" /var/lib/kmscrypt
	start=$(unit_cmd ExecStart)
	stop=$(unit_cmd ExecStop)
	assert_match '^kmscrypt unlock --all' "$start" "ExecStart of the installed unit"
	read -r -a args <<<"$start"
	prog=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "${args[0]}")
	assert_eq /usr/sbin/kmscrypt "$prog" "'${args[0]}' resolves to the packaged binary in systemd's search path"
	set +e
	env -u KMSCRYPT_CONFIG_DIR -u KMSCRYPT_STATE_DIR timeout 150 "$prog" "${args[@]:1}" \
		>"$WORK/start.out" 2>&1 </dev/null
	rc=$?
	set -e
	sed 's/^/      | /' "$WORK/start.out"
	assert_eq 0 "$rc" "ExecStart ($start)"
	assert_eq ACTIVE "$(t_dm_state kv-du)" "kv-du unlocked by the unit's ExecStart"
	assert_table_uses_keyring kv-du
	assert_match "Unlocked '$dev'" "$(<"$WORK/start.out")" "one line says kv-du was unlocked"
	assert_eq 1 "$(grep -c '"action":"unlock"' /var/lib/kmscrypt/audit.log || true)" \
		"the unlock is in /var/lib/kmscrypt/audit.log"
	assert_eq 600 "$(stat -c %a /var/lib/kmscrypt/audit.log)" "audit.log mode 0600"
	read -r -a args <<<"$stop"
	set +e
	env -u KMSCRYPT_CONFIG_DIR -u KMSCRYPT_STATE_DIR timeout 60 "$prog" "${args[@]:1}" \
		>"$WORK/stop.out" 2>&1 </dev/null
	rc=$?
	set -e
	assert_eq 0 "$rc" "ExecStop ($stop): $(tr '\n' ' ' <"$WORK/stop.out")"
	assert_eq absent "$(t_dm_state kv-du)" "kv-du closed by the unit's ExecStop"
	# logrotate's configuration rotates this log (state file in $WORK, forced run).
	command -v logrotate >/dev/null || t_fail "logrotate installed" "logrotate" "absent (scripts/install-deps.sh)"
	logrotate -f -s "$WORK/logrotate.state" /etc/logrotate.d/kmscrypt
	[[ -f /var/lib/kmscrypt/audit.log.1 ]] || t_fail "logrotate -f" "audit.log.1" "$(ls /var/lib/kmscrypt)"
	assert_eq "600 0" "$(stat -c '%a %s' /var/lib/kmscrypt/audit.log)" \
		"logrotate created a new empty audit.log, mode 0600"
	env -u KMSCRYPT_CONFIG_DIR -u KMSCRYPT_STATE_DIR "$prog" unlock "$dev" >/dev/null 2>&1 ||
		t_fail "unlock after the rotation" "exit 0" "exit $?"
	assert_eq 1 "$(grep -c '"action":"unlock"' /var/lib/kmscrypt/audit.log || true)" \
		"the next record goes to the new audit.log"
	env -u KMSCRYPT_CONFIG_DIR -u KMSCRYPT_STATE_DIR "$prog" lock kv-du >/dev/null 2>&1 ||
		t_fail "lock after the rotation" "exit 0" "exit $?"
}

# dpkg -r: program and plugin gone, the operator's configuration and state stay.
case_remove() {
	mkdir -p /etc/kmscrypt /var/lib/kmscrypt
	touch /etc/kmscrypt/keep-me /var/lib/kmscrypt/keep-me
	dpkg -r kmscrypt </dev/null >"$WORK/remove.out" 2>&1 ||
		t_fail "dpkg -r kmscrypt" "exit 0" "$(tr '\n' ' ' <"$WORK/remove.out")"
	assert_eq "absent absent" "$([[ -e /usr/sbin/kmscrypt ]] && echo present || echo absent) $(
		[[ -e $PLUGIN ]] && echo present || echo absent)" "binary and plugin removed"
	dpkg --purge kmscrypt </dev/null >"$WORK/purge.out" 2>&1 ||
		t_fail "dpkg --purge kmscrypt" "exit 0" "$(tr '\n' ' ' <"$WORK/purge.out")"
	assert_eq "present present" "$([[ -e /etc/kmscrypt/keep-me ]] && echo present || echo absent) $(
		[[ -e /var/lib/kmscrypt/keep-me ]] && echo present || echo absent)" \
		"purge leaves /etc/kmscrypt and /var/lib/kmscrypt"
	assert_eq "" "$([[ -e /etc/logrotate.d/kmscrypt ]] && echo present)" "purge removes the logrotate conffile"
}

t_case installed case_installed
t_case plugin case_plugin
t_case unit case_unit
t_case remove case_remove
t_finish
