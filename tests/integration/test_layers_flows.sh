#!/bin/bash
# Front ends own no flow (STYLE.md section 1): the header changes, KMS wraps and state/usage
# records of format, bind and unbind happen in core/ (core/format.c), so no cli/ file calls the
# functions that make or remove a binding.  Nor those of check and 'kms check' (core/check.c):
# no cli/ file unwraps through a KMS handle or a provider's vtable, and check's volume_cmd.c and
# kms_cmd.c do not test a secret against a keyslot or open KMS handles themselves.  (The audit
# records of the kms/recovery-key commands are not flows of a volume and are left out.)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/assert.sh"
src=${KMSCRYPT_SOURCE_DIR:-$here/../..}

calls='\b(core_wrap_token|core_bind_marked|volume_format|volume_bind|volume_unbind'
calls+='|volume_free_keyslot|usage_record|state_save|core_escrow_seal)[[:space:]]*\('
bad=$(grep -HnE "$calls" "$src"/agent/cli/*.c | grep -vE ':[0-9]+:[[:space:]]*(/\*|\*)')
expect_eq "$bad" "" "cli/ calls no binding flow function (format/bind/unbind live in core/format.c)"
bad=$(grep -HoE '#include "kms/[^"]+"' "$src"/agent/cli/volume_cmd.c \
	"$src"/agent/cli/recovery_cmd.c)
expect_eq "$bad" "" "volume_cmd.c and recovery_cmd.c include no KMS provider internals"

# check and 'kms check': the KMS round trips and the keyslot test are core_check_volume()'s and
# core_kms_prove()'s
calls='\b(kms_handle_unwrap|kms_handle_open|core_unwrap|core_unwrap_fallback|core_token_unwrap)'
calls+='[[:space:]]*\(|->[[:space:]]*(open|describe|wrap|unwrap|close)[[:space:]]*\('
bad=$(grep -HnE "$calls" "$src"/agent/cli/*.c | grep -vE ':[0-9]+:[[:space:]]*(/\*|\*)')
expect_eq "$bad" "" "cli/ unwraps through no KMS handle or provider (check is core/check.c's)"
calls='\b(volume_test_secret|kms_set_get|vol_from_device|vol_refusal|vol_audit)[[:space:]]*\('
bad=$(grep -HnE "$calls" "$src"/agent/cli/volume_cmd.c "$src"/agent/cli/kms_cmd.c |
      grep -vE ':[0-9]+:[[:space:]]*(/\*|\*)')
expect_eq "$bad" "" "volume_cmd.c and kms_cmd.c run no check flow of their own (core_check_volume)"
bad=$(grep -cE '\bcore_(check_volume|kms_check)[[:space:]]*\(' "$src"/agent/cli/volume_cmd.c \
	"$src"/agent/cli/kms_cmd.c | grep -c ':0$')
expect_eq "$bad" 0 "check and 'kms check' call their core flows"
finish
