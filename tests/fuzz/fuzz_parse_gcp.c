/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: every Google Cloud KMS / OAuth reply parser on arbitrary bytes, plus the service
 * account key file and private key loaders.  Byte 0 picks the HTTP status; the rest is the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http_msg.h"
#include "kms/gcp/gcp_codec.h"
#include "kms/provider.h"
#include "util/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int statuses[] = {200, 400, 401, 403, 404, 429, 500, 503};
#define KEYNAME "projects/p/locations/global/keyRings/r/cryptoKeys/k"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_response resp = {};
	struct kms_error err = {};
	struct gcp_ciphertext c = {};
	struct gcp_key_info k = {};
	struct gcp_service_account sa = {};
	struct secret *s = NULL;
	EVP_PKEY *key = NULL;
	uint32_t exp;

	if (size < 1)
		return 0;
	resp.status = statuses[data[0] % 8];
	if (secret_from(data + 1, size - 1, &resp.body) < 0)
		return 0;
	if (gcp_parse_encrypt(&resp, KEYNAME, data[0] & 8, &c, &err) == 0)
		gcp_ciphertext_done(&c);
	if (gcp_parse_decrypt(&resp, &s, &err) == 0)
		s = secret_free(s);
	if (gcp_parse_key(&resp, &k, &err) == 0) {
		(void)gcp_check_key(&k, &err);
		gcp_key_info_done(&k);
	}
	if (gcp_parse_token(&resp, data[0] & 8, &s, &exp, &err) == 0)
		s = secret_free(s);
	(void)gcp_parse_error(&resp, &err);
	if (gcp_parse_service_account(data + 1, size - 1, &sa, &err) == 0)
		gcp_service_account_done(&sa);
	if (size < 4096 && gcp_load_private_key(data + 1, size - 1, &key) == 0)
		gcp_pkey_free(key);
	http_response_done(&resp);
	return 0;
}
