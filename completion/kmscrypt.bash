# bash completion for kmscrypt(8)                                  -*- shell-script -*-
# SPDX-License-Identifier: MIT
#
# Commands, kms subcommands and options come from kmscrypt's own help ('kmscrypt CMD --help' needs
# no root), so they follow the binary; KMS configuration names from CONFIG_DIR/kms/*.conf
# (--config-dir on the line, $KMSCRYPT_CONFIG_DIR, else /etc/kmscrypt: readable by root only);
# mapping names from the device-mapper's LUKS2 crypt mappings in sysfs (no root needed).
# Installed as share/bash-completion/completions/kmscrypt.

# _kmscrypt_help PROGRAM WORDS...: the help text of a command.
_kmscrypt_help()
{
	local prog=$1
	shift
	"$prog" "$@" --help 2>/dev/null
}

# The commands of the overview help ("  format DEVICE ..." between "KMS configurations:" and
# "Options:"), and help.
_kmscrypt_commands()
{
	{
		_kmscrypt_help "$1" | sed -n '/^KMS configurations:/,/^Options:/s/^  \([a-z][a-z-]*\) .*/\1/p'
		echo help
	} | sort -u
}

_kmscrypt_options()
{
	_kmscrypt_help "$@" | grep -oE -- '--[a-z][a-z0-9-]*[a-z0-9]' | sort -u
}

_kmscrypt_configs()
{
	local dir=$1 f
	for f in "$dir"/kms/*.conf; do
		[[ -f $f ]] || continue
		f=${f##*/}
		printf '%s\n' "${f%.conf}"
	done 2>/dev/null
}

# LUKS2 crypt mappings (what kmscrypt opens): dm uuid "CRYPT-LUKS2-<hex>-<name>".
_kmscrypt_mappings()
{
	local sys=${_KMSCRYPT_SYSFS:-/sys} d uuid
	for d in "$sys"/block/dm-*/dm; do
		[[ -r $d/uuid && -r $d/name ]] || continue
		read -r uuid <"$d/uuid" || continue
		[[ $uuid == CRYPT-LUKS2-* ]] && cat "$d/name"
	done 2>/dev/null
}

_kmscrypt()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=''
	local prog=${COMP_WORDS[0]} cfgdir=${KMSCRYPT_CONFIG_DIR:-/etc/kmscrypt}
	local cmd='' sub='' i w words=()
	local globals="--config-dir --state-dir --json --timeout -q --batch-mode --quiet -v --verbose
		--debug -h --help -V --version"

	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	command -v "$prog" >/dev/null 2>&1 || prog=kmscrypt
	COMPREPLY=()

	# the command and kms subcommand, skipping global options (and their values)
	for ((i = 1; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		--config-dir | --state-dir | --timeout)
			[[ $w == --config-dir ]] && cfgdir=${COMP_WORDS[i + 1]}
			((i++))
			continue
			;;
		--config-dir=*) cfgdir=${w#*=}; continue ;;
		-*) continue ;;
		esac
		if [[ -z $cmd ]]; then
			cmd=$w
		elif [[ $cmd == kms && -z $sub ]]; then
			sub=$w
		else
			words+=("$w")
		fi
	done
	cfgdir=${cfgdir/#\~/$HOME}

	# values of options
	case $prev in
	--config-dir | --state-dir)
		mapfile -t COMPREPLY < <(compgen -d -- "$cur")
		return
		;;
	--kms | --recovery-key-escrow)
		mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_configs "$cfgdir")" -- "$cur")
		return
		;;
	--provider)
		mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_help "$prog" kms create |
			sed -n 's/^Provider \([a-z0-9_-]*\).*/\1/p')" -- "$cur")
		return
		;;
	--on-revoke)
		mapfile -t COMPREPLY < <(compgen -W "wipe close alert" -- "$cur")
		return
		;;
	--name)
		mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_mappings)" -- "$cur")
		return
		;;
	--*-file | --*-cert | --*-key | --device | --output)
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		return
		;;
	--timeout | --label | --sector-size | --reason | --wait-kms | --description | --interval | --threshold | \
		--revoke-after | --*-credential)
		return # a value only the operator knows
		;;
	esac

	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			mapfile -t COMPREPLY < <(compgen -W "$globals" -- "$cur")
		else
			mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_commands "$prog")" -- "$cur")
		fi
		return
	fi
	if [[ $cmd == kms && -z $sub ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_help "$prog" kms |
			sed -n 's/^ *\(Usage:\)\? *kmscrypt kms \([a-z]\+\).*/\2/p' | sort -u)" -- "$cur")
		return
	fi
	if [[ $cur == -* ]]; then
		if [[ $cmd == kms ]]; then
			mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_options "$prog" kms "$sub") $globals" -- "$cur")
		else
			mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_options "$prog" "$cmd") $globals" -- "$cur")
		fi
		return
	fi
	case $cmd in
	help)
		((${#words[@]} == 0)) && mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_commands "$prog")" -- "$cur")
		;;
	kms)
		case $sub in
		show | edit | delete | check | policy)
			((${#words[@]} == 0)) &&
				mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_configs "$cfgdir")" -- "$cur")
			;;
		esac
		;;
	lock | revoke | restore | status)
		# a mapping (or a device path)
		mapfile -t COMPREPLY < <(compgen -W "$(_kmscrypt_mappings)" -- "$cur")
		[[ $cur == /* || $cur == .* ]] && mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur")
		;;
	format | bind | unbind | check | unlock | rotate-master | rotate-secret)
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		;;
	recovery-key)
		# recovery-key show ESCROW_FILE
		if ((${#words[@]} == 0)); then
			mapfile -t COMPREPLY < <(compgen -W "show" -- "$cur")
		else
			mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		fi
		;;
	esac
} &&
	complete -F _kmscrypt kmscrypt

# ex: filetype=sh
