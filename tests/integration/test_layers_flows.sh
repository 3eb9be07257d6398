#!/bin/bash
# Front ends own no flow (STYLE.md section 1): the header changes, KMS wraps and state/usage
# records of format, bind and unbind happen in core/ (core/format.c), so no cli/ file calls the
# functions that make or remove a binding.  (kms_cmd.c's 'kms test' round trip and the audit
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
finish
