/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: every Vault reply parser on arbitrary bytes.  Byte 0 picks the HTTP status; the rest is
 * the body (also fed, NUL-terminated, to the ciphertext version parser).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http_msg.h"
#include "codec/json_util.h"
#include "kms/provider.h"
#include "kms/vault/vault_codec.h"
#include "util/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int statuses[] = { 200, 204, 400, 403, 404, 412, 429, 503 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_response resp = {};
	struct kms_error err = {};
	struct vault_ciphertext c = {};
	struct vault_key_info k = {};
	struct vault_auth a = {};
	struct vault_token_info ti = {};
	struct secret *plain = NULL;
	char *text;
	unsigned v;

	if (size < 1)
		return 0;
	resp.status = statuses[data[0] % 8];
	if (secret_from(data + 1, size - 1, &resp.body) < 0)
		return 0;
	if (vault_parse_encrypt(&resp, &c, &err) == 0)
		vault_ciphertext_done(&c);
	if (vault_parse_rewrap(&resp, &c, &err) == 0)
		vault_ciphertext_done(&c);
	if (vault_parse_decrypt(&resp, &plain, &err) == 0)
		plain = secret_free(plain);
	if (vault_parse_key(&resp, &k, &err) == 0)
		vault_key_info_done(&k);
	if (vault_parse_approle_login(&resp, &a, &err) == 0)
		vault_auth_done(&a);
	if (vault_parse_token_lookup_self(&resp, &ti, &err) == 0)
		vault_token_info_done(&ti);
	(void)vault_parse_error(&resp, &err);
	text = malloc(size);
	if (text) {
		memcpy(text, data + 1, size - 1);
		text[size - 1] = 0;
		(void)vault_ciphertext_version(text, &v);
		free(text);
	}
	http_response_done(&resp);
	return 0;
}
