/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: every Azure reply parser (token endpoint and IMDS, Key Vault key bundle, rotation
 * policy, wrapkey, unwrapkey, errors) on arbitrary bytes, and the unbinding of an unwrapped value.
 * Byte 0 picks the HTTP status; the rest is the body (also fed, NUL-terminated, to the kid and
 * vault URL parsers).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http_msg.h"
#include "kms/azure/azure_codec.h"
#include "kms/provider.h"
#include "util/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int statuses[] = {200, 201, 400, 401, 403, 404, 429, 503};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_response resp = {};
	struct kms_error err = {};
	struct azure_key k = {};
	struct kms_aad aad = {.uuid = "11111111-2222-4333-8444-555555555555", .keyslot = 0};
	struct secret *tok = NULL, *plain = NULL, *out = NULL;
	char *kid = NULL, *name = NULL, *ver = NULL, *base = NULL, *res = NULL, *text;
	uint8_t *v = NULL;
	size_t n = 0;
	time_t exp = 0;
	bool rot = false;

	if (size < 1)
		return 0;
	resp.status = statuses[data[0] % 8];
	if (secret_from(data + 1, size - 1, &resp.body) < 0)
		return 0;
	if (azure_parse_token(&resp, 1700000000, &tok, &exp, &err) == 0)
		tok = secret_free(tok);
	if (azure_parse_key(&resp, &k, &err) == 0) {
		(void)azure_key_check(&k, 1700000000, &err);
		azure_key_done(&k);
	}
	(void)azure_parse_rotation_policy(&resp, &rot, &err);
	if (azure_parse_wrap(&resp, &kid, &v, &n, &err) == 0) {
		free(kid);
		free(v);
	}
	if (azure_parse_unwrap(&resp, &plain, &err) == 0)
		plain = secret_free(plain);
	(void)azure_parse_error(&resp, data[0] & 1, &err);
	if (azure_unbind(&aad, resp.body, &out, &err) == 0)
		out = secret_free(out);
	text = malloc(size);
	if (text) {
		memcpy(text, data + 1, size - 1);
		text[size - 1] = 0;
		if (azure_kid_split(text, &name, &ver) == 0) {
			free(name);
			free(ver);
		}
		if (azure_vault_url_parse(text, &base, &res) == 0) {
			free(base);
			free(res);
		}
		free(text);
	}
	http_response_done(&resp);
	return 0;
}
