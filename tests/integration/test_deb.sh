#!/bin/bash
# The Debian package (debian/): built from a copy of the source tree (the files git knows, tracked
# or new and not ignored, as they are on disk, so uncommitted changes count and a CI clone works)
# with `dpkg-buildpackage -us -uc -b` (DEB_BUILD_OPTIONS=nocheck), then:
#   - the .deb ships the binary, the token plugin in libcryptsetup's plugin directory, both units in
#     /lib/systemd/system, the man page, the logrotate file, the cloud-init hook and its examples;
#     no test program, nothing under /usr/local; Depends comes from shlibs;
#   - the maintainer scripts never enable, start, stop or restart kmscrypt-unlock.service, and never
#     enable or start kmscrypt-watch.service (debian/rules says why);
#   - lintian reports no error and no warning;
#   - `cmake --install --prefix P` (the CMake default, no KMSCRYPT_TOKEN_PLUGIN_DIR) puts the plugin
#     under P, and nothing outside P.
# The .deb is left in $KMSCRYPT_BUILD_DIR/deb/ for tests/vm/test_deb_install.sh (a ctest fixture).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
S=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
B=${KMSCRYPT_BUILD_DIR:?set KMSCRYPT_BUILD_DIR to the build dir}
for t in git dpkg-buildpackage dpkg-deb lintian dh cmake pkg-config; do
	command -v "$t" >/dev/null ||
		{ echo "FATAL: '$t' not found; run scripts/install-deps.sh" >&2; exit 1; }
done
git -C "$S" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
	{ echo "FATAL: $S is not a git work tree (the copy is taken from git ls-files)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)

# ---- the copy: tracked and untracked-not-ignored files that exist (a deleted file is skipped)
mkdir "$tmp/kmscrypt"
git -C "$S" ls-files -co --exclude-standard -z | (cd "$S" && while IFS= read -r -d '' f; do
	[[ -f $f || -L $f ]] && printf '%s\0' "$f"
done) | (cd "$S" && cpio -0 -pdm --quiet "$tmp/kmscrypt") ||
	{ echo "FATAL: copying the source tree failed" >&2; exit 1; }
[[ -x $tmp/kmscrypt/debian/rules ]] || { echo "FATAL: no debian/rules in the copy" >&2; exit 1; }

# ---- build
start=$(date +%s)
(cd "$tmp/kmscrypt" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
	dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1
rc=$?
secs=$(($(date +%s) - start))
[[ $rc == 0 ]] || tail -40 "$tmp/build.log" >&2
expect_eq "$rc" 0 "dpkg-buildpackage -us -uc -b (nocheck) in ${secs}s"
expect_eq "$(grep -h '^BUILD_TESTING:BOOL=' "$tmp"/kmscrypt/obj-*/CMakeCache.txt)" BUILD_TESTING:BOOL=OFF \
	"the package is configured with -DBUILD_TESTING=OFF"
expect_eq "$(ctest --test-dir "$(ls -d "$tmp"/kmscrypt/obj-* | head -1)" -N 2>/dev/null | grep -c '^ *Test *#')" 0 \
	"the package build registers no test"
expect_eq "$(grep -c '^CMOCKA_FOUND' "$tmp"/kmscrypt/obj-*/CMakeCache.txt)" 0 "the package build does not look for cmocka"
deb=$(ls "$tmp"/kmscrypt_*_"$arch".deb 2>/dev/null | head -1)
changes=$(ls "$tmp"/kmscrypt_*_"$arch".changes 2>/dev/null | head -1)
[[ -f $deb && -f $changes ]] || { echo "FATAL: no .deb/.changes in $tmp" >&2; ls "$tmp" >&2; finish; exit 1; }

# ---- contents
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's,^\./,/,; s,/$,,' >"$tmp/files"
plugin_dir=/usr/lib/$ma/cryptsetup
for f in /usr/sbin/kmscrypt /usr/sbin/kmscrypt-provision \
	"$plugin_dir/libcryptsetup-token-kmscrypt.so" \
	/lib/systemd/system/kmscrypt-unlock.service /lib/systemd/system/kmscrypt-watch.service \
	/lib/systemd/system/kmscrypt-unlock@.service /lib/systemd/system-generators/kmscrypt-generator \
	/usr/share/man/man8/kmscrypt.8.gz /usr/share/man/man8/kmscrypt-provision.8.gz \
	/etc/logrotate.d/kmscrypt \
	/usr/share/doc/kmscrypt/examples/cloud-config.example.yaml \
	/usr/share/doc/kmscrypt/examples/cloud-config.aws.example.yaml \
	/usr/share/doc/kmscrypt/copyright; do
	expect_eq "$(grep -cxF "$f" "$tmp/files")" 1 "the .deb ships $f"
done
# Shell completion arrives with another change: once the tree has one, the package must ship it.
if git -C "$S" ls-files -co --exclude-standard | grep -qi 'completion'; then
	expect_eq "$(grep -cx '/usr/share/bash-completion/completions/kmscrypt' "$tmp/files")" 1 \
		"the .deb ships the bash completion"
fi
expect_eq "$(grep -cE '/test_|/usr/local|^/usr/lib/systemd/system' "$tmp/files")" 0 \
	"no test program, nothing under /usr/local or /usr/lib/systemd/system"
ext_dir=$(/usr/bin/python3 -c 'import ctypes
l = ctypes.CDLL("libcryptsetup.so.12")
l.crypt_token_external_path.restype = ctypes.c_char_p
print((l.crypt_token_external_path() or b"(disabled)").decode())')
expect_eq "$(readlink -f "$plugin_dir")" "$(readlink -f "$ext_dir")" \
	"the package's plugin dir $plugin_dir is libcryptsetup's ($ext_dir)"
expect_eq "$(readlink -f "$(pkg-config --variable=libdir libcryptsetup)/cryptsetup")" \
	"$(readlink -f "$plugin_dir")" "and \$(pkg-config --variable=libdir libcryptsetup)/cryptsetup"
depends=$(dpkg-deb -f "$deb" Depends)
# shellcheck disable=SC2034  # OUT is read by expect_out
expect_out_in() { OUT=$1; expect_out "$2" "$3"; }
expect_out_in "$depends" "libcryptsetup12" "Depends (from shlibs) names libcryptsetup12: $depends"
expect_out_in "$depends" "libcurl4" "Depends names libcurl4"
expect_not_out "libcmocka" "Depends does not name cmocka"
mkdir "$tmp/x"
dpkg-deb -e "$deb" "$tmp/x/DEBIAN"
dpkg-deb -x "$deb" "$tmp/x"
expect_eq "$(stat -c %a "$tmp/x/usr/sbin/kmscrypt")" 755 "/usr/sbin/kmscrypt mode 0755"
expect_eq "$(strings "$tmp/x/lib/systemd/system-generators/kmscrypt-generator" | grep -cx '/lib/systemd/system')" 1 \
	"the generator links its units to the package's unit dir /lib/systemd/system"
expect_eq "$(grep -c '^/var/lib/kmscrypt/audit.log {' "$tmp/x/etc/logrotate.d/kmscrypt")" 1 \
	"logrotate rotates /var/lib/kmscrypt/audit.log"
expect_eq "$(grep -cE '^[[:space:]]*(copytruncate|create 0600 root root)$' "$tmp/x/etc/logrotate.d/kmscrypt")" 1 \
	"logrotate: create 0600 root root, no copytruncate"
expect_rc 0 "logrotate accepts the file (debug run, nothing rotated)" -- \
	sh -c "! command -v logrotate >/dev/null || logrotate -d -s '$tmp/lr.state' '$tmp/x/etc/logrotate.d/kmscrypt'"
# Maintainer scripts: the unlock unit is never started/stopped/restarted/enabled, the watcher never
# enabled nor started (only try-restart on upgrade, and stopped on removal).
scripts=$(cat "$tmp"/x/DEBIAN/{preinst,postinst,prerm,postrm} 2>/dev/null)
expect_eq "$(grep -E 'deb-systemd-invoke|systemctl (start|stop|restart)' <<<"$scripts" |
	grep -c 'kmscrypt-unlock')" 0 "no maintainer script starts, stops or restarts kmscrypt-unlock.service"
expect_eq "$(grep -cE 'deb-systemd-invoke (start|restart) ' <<<"$scripts")" 0 \
	"no maintainer script starts a unit"
expect_eq "$(grep -c 'deb-systemd-helper enable' <<<"$scripts")" 2 \
	"units re-enabled on upgrade only when they were enabled (was-enabled guard, one per unit)"
expect_eq "$(grep -B3 'deb-systemd-helper enable' <<<"$scripts" | grep -c 'was-enabled')" 2 \
	"each enable is under 'deb-systemd-helper --quiet was-enabled'"
expect_eq "$(grep -c 'deb-systemd-invoke try-restart .kmscrypt-watch.service' <<<"$scripts")" 1 \
	"an upgrade restarts the watcher only if it runs (try-restart)"
expect_eq "$(grep -c 'deb-systemd-invoke stop kmscrypt-watch.service' "$tmp/x/DEBIAN/prerm")" 1 \
	"removal stops the watcher"

# ---- lintian: no error, no warning (overrides, if any, each justified in debian/)
lintian --fail-on error,warning --display-info "$changes" >"$tmp/lintian.out" 2>&1
rc=$?
sed 's/^/  lintian: /' "$tmp/lintian.out"
expect_eq "$rc" 0 "lintian --fail-on error,warning on the .changes (.deb and .buildinfo)"
expect_eq "$(grep -cE '^[EW]: ' "$tmp/lintian.out")" 0 "lintian: no E: or W: line"

# ---- cmake --install with a prefix, CMake defaults (no -DKMSCRYPT_TOKEN_PLUGIN_DIR): reuse the
# package's build tree with the package's install options dropped (nothing to recompile).
obj=$(ls -d "$tmp"/kmscrypt/obj-* 2>/dev/null | head -1)
if [[ -d $obj ]]; then
	expect_rc 0 "reconfigure the package build tree with the default install dirs" -- \
		cmake -S "$tmp/kmscrypt" -B "$obj" -UKMSCRYPT_TOKEN_PLUGIN_DIR -UKMSCRYPT_SYSTEMD_UNIT_DIR \
		-UKMSCRYPT_SYSTEMD_GENERATOR_DIR
	expect_rc 0 "build (nothing to compile)" -- cmake --build "$obj" -j "$(nproc)"
	expect_rc 0 "cmake --install --prefix /opt/kx (DESTDIR: nothing written outside $tmp)" -- \
		env DESTDIR="$tmp/dest" cmake --install "$obj" --prefix /opt/kx
	(cd "$tmp/dest" && find . -type f | sed 's,^\.,,') >"$tmp/installed"
	expect_eq "$(grep -c '/cryptsetup/libcryptsetup-token-kmscrypt\.so$' "$tmp/installed")" 1 \
		"cmake --install installs the plugin once"
	expect_eq "$(grep -c '^/opt/kx/lib/\([^/]*/\)\{0,1\}cryptsetup/libcryptsetup-token-kmscrypt\.so$' "$tmp/installed")" 1 \
		"the plugin goes under the prefix: $(grep token-kmscrypt "$tmp/installed")"
	expect_eq "$(grep -vc '^/opt/kx/' "$tmp/installed")" 0 \
		"nothing installed outside the prefix: $(grep -v '^/opt/kx/' "$tmp/installed" | tr '\n' ' ')"
else
	failed "the package build left no obj-* build tree in $tmp/kmscrypt"
fi

# ---- leave the package for the VM test
if [[ $T_FAIL == 0 ]]; then
	rm -rf "$B/deb"
	mkdir -p "$B/deb"
	cp "$deb" "$B/deb/"
	echo "package: $B/deb/$(basename "$deb") (built in ${secs}s)"
fi
finish
