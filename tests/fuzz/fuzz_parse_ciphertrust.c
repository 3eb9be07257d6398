/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: every CipherTrust Manager reply parser on arbitrary bytes.  Byte 0 picks the HTTP
 * status; the rest is the body, also taken as a stored blob (ct_blob_check, ct_build_decrypt).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http_msg.h"
#include "kms/ciphertrust/ciphertrust_codec.h"
#include "kms/provider.h"
#include "util/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int statuses[] = {200, 201, 400, 401, 403, 404, 429, 503};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char aad[] = "kmscrypt:v1:00000000-0000-4000-8000-000000000000:0";
	struct http_response resp = {};
	struct http_request req = {};
	struct kms_error err = {};
	struct secret *s = NULL;
	struct ct_key k = {};
	char ver[24], *blob = NULL;
	size_t blob_len = 0;
	time_t exp = 0;
	bool found = false;

	if (size < 1)
		return 0;
	resp.status = statuses[data[0] % 8];
	if (secret_from(data + 1, size - 1, &resp.body) < 0)
		return 0;
	if (ct_parse_login(&resp, 1000, &s, &exp, &err) == 0)
		s = secret_free(s);
	if (ct_parse_key_list(&resp, "vol", &k, &found, &err) == 0 && found) {
		(void)ct_key_check(&k, &err);
		ct_key_done(&k);
	}
	if (ct_parse_key(&resp, &k, &err) == 0) {
		(void)ct_key_check(&k, &err);
		ct_key_done(&k);
	}
	if (ct_parse_encrypt(&resp, &blob, &blob_len, ver, sizeof(ver), &err) == 0) {
		if (ct_build_decrypt("https://cm.example", "vol", blob, blob_len, aad, strlen(aad),
				     &req) == 0)
			http_request_done(&req);
		free(blob);
	}
	if (ct_parse_decrypt(&resp, &s, &err) == 0)
		s = secret_free(s);
	(void)ct_parse_error(&resp, CT_OP_DECRYPT, &err);
	if (ct_blob_check(data + 1, size - 1, ver, sizeof(ver)) == 0 &&
	    ct_build_decrypt("https://cm.example", "vol", data + 1, size - 1, aad, strlen(aad),
			     &req) == 0)
		http_request_done(&req);
	http_response_done(&resp);
	return 0;
}
