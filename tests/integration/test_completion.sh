#!/bin/bash
# Bash completion (completion/kmscrypt.bash) driven as bash drives it: COMP_WORDS/COMP_CWORD set,
# _kmscrypt called, COMPREPLY checked.  Commands, kms subcommands and options (from the binary's
# help), KMS configuration names (from the config dir, also --config-dir on the line), providers,
# mapping names (LUKS2 crypt mappings in sysfs: a fake sysfs tree here), device paths.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=${KMSCRYPT_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
K=${KMSCRYPT:?set KMSCRYPT to the kmscrypt binary}
C=$src/completion/kmscrypt.bash

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
[[ -f $C ]] && pass "completion/kmscrypt.bash exists" || { failed "no $C"; finish; exit 1; }
# shellcheck source=/dev/null
. "$C"
expect_eq "$(complete -p kmscrypt 2>/dev/null)" "complete -F _kmscrypt kmscrypt" "registered for kmscrypt"

# comp WORD... : complete the last word of "kmscrypt WORD..." (the binary under test as argv[0])
comp() {
	COMP_WORDS=("$K" "$@")
	COMP_CWORD=$(($# ))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_kmscrypt
	printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}

mkdir -p etc/kms other/kms sys/block/dm-0/dm sys/block/dm-1/dm sys/block/dm-2/dm
touch etc/kms/prod.conf etc/kms/lab.conf other/kms/elsewhere.conf
echo CRYPT-LUKS2-3f2a9c0b6a2e4a3f8f7c1d2e3f4a5b6c-data >sys/block/dm-0/dm/uuid
echo data >sys/block/dm-0/dm/name
echo CRYPT-LUKS2-0000000000000000000000000000aaaa-dbvol >sys/block/dm-1/dm/uuid
echo dbvol >sys/block/dm-1/dm/name
echo LVM-abcdef >sys/block/dm-2/dm/uuid
echo vg-root >sys/block/dm-2/dm/name
export KMSCRYPT_CONFIG_DIR=$tmp/etc _KMSCRYPT_SYSFS=$tmp/sys
truncate -s 1M disk1.img disk2.img

cmds=" $(comp "") "
for s in bind check format help kms lock reencrypt restore revoke rotate-master rotate-secret status unbind unlock watch; do
	[[ $cmds == *" $s "* ]] && pass "command $s" || failed "command $s not in:$cmds"
done
expect_eq "$(comp res)" "restore" "commands by prefix"
expect_eq "$(comp rev)" "revoke" "commands by prefix (another)"
expect_eq "$(comp ro)" "rotate-master rotate-secret" "hyphenated commands by prefix"
expect_eq "$(comp --js)" "--json" "a global option"
expect_eq "$(comp --de)" "--debug" "--debug is offered"
expect_eq "$(comp -v --json k)" "kms" "a command after global options"
# (other subcommands may come: `kms policy`; they come from the help, so every one is offered)
subs=" $(comp kms "") "
for s in check create delete edit list show; do
	[[ $subs == *" $s "* ]] && pass "kms subcommand $s" || failed "kms subcommand $s not in:$subs"
done
[[ $subs != *" kms "* && $subs != *" lab "* ]] && pass "nothing but subcommands" ||
	failed "more than subcommands:$subs"
expect_eq "$(comp kms delete "")" "lab prod" "kms delete: configuration names"
expect_eq "$(comp kms show p)" "prod" "kms show: configuration names by prefix"
expect_eq "$(comp --config-dir "$tmp/other" kms check "")" "elsewhere" "--config-dir on the line is honoured"
expect_eq "$(comp kms delete --f)" "--forget-missing" "kms delete: its option"
expect_eq "$(comp format disk1.img --kms "")" "lab prod" "--kms: configuration names"
expect_eq "$(comp kms create x --provider lo)" "local" "--provider: provider names"
expect_eq "$(comp kms create x --provider aws --secret-access-key-f)" "--secret-access-key-file" \
	"kms create: provider options"
expect_eq "$(comp format --no-rec)" "--no-recovery-key" "format: its options"
expect_eq "$(comp unlock --wa)" "--wait-kms" "unlock: its options"
expect_eq "$(comp format disk)" "disk1.img disk2.img" "format: device paths"
expect_eq "$(comp revoke "")" "data dbvol" "revoke: LUKS2 mappings, not other dm devices"
expect_eq "$(comp lock d)" "data dbvol" "lock: mapping names"
expect_eq "$(comp status db)" "dbvol" "status: mapping names by prefix"
expect_eq "$(comp unlock disk1.img --name "")" "data dbvol" "--name: mapping names"
expect_eq "$(comp kms create x --on-revoke "")" "alert close wipe" "--on-revoke values"
expect_eq "$(comp help res)" "restore" "help: commands"
expect_eq "$(comp revoke --a)" "--all" "revoke --all"

if command -v shellcheck >/dev/null; then
	expect_rc 0 "shellcheck" -- shellcheck -s bash "$C"
fi
finish
