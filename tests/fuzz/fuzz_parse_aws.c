/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: every AWS KMS / IMDS reply parser and the JSON scanner on arbitrary bytes.
 * Input: byte 0 picks the HTTP status, byte 1 whether an x-amzn-ErrorType header is added (taken from
 * the body's first line), the rest is the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http_msg.h"
#include "codec/json_util.h"
#include "codec/sigv4.h"
#include "kms/aws/aws_codec.h"
#include "kms/provider.h"
#include "util/secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int statuses[] = { 200, 400, 403, 404, 429, 500, 503, 302 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_response resp = {};
	struct kms_error err = {};
	struct aws_ciphertext c = {};
	struct aws_key_metadata m = {};
	struct aws_alias_list l = {};
	struct aws_creds creds = {};
	struct secret *plain = NULL;
	char *s = NULL, *text;
	unsigned ms;

	if (size < 2)
		return 0;
	resp.status = statuses[data[0] % 8];
	if (secret_from(data + 2, size - 2, &resp.body) < 0)
		return 0;
	if (data[1] & 1) {
		size_t n = 0;
		while (n < size - 2 && n < 200 && data[2 + n] != '\n')
			n++;
		(void)http_response_header_add(&resp, "x-amzn-ErrorType", 16, (const char *)data + 2, n);
	}

	if (aws_parse_encrypt(&resp, &c, &err) == 0)
		aws_ciphertext_done(&c);
	if (aws_parse_reencrypt(&resp, &c, &err) == 0)
		aws_ciphertext_done(&c);
	if (aws_parse_decrypt(&resp, &plain, &s, &err) == 0) {
		plain = secret_free(plain);
		free(s);
		s = NULL;
	}
	if (aws_parse_describe_key(&resp, &m, &err) == 0)
		aws_key_metadata_done(&m);
	if (aws_parse_list_aliases(&resp, &l, &err) == 0)
		aws_alias_list_done(&l);
	(void)aws_parse_error(&resp, &err);
	if (aws_imds_parse_token(&resp, &s, &err) == 0) {
		free(s);
		s = NULL;
	}
	if (aws_imds_parse_role(&resp, &s, &err) == 0) {
		free(s);
		s = NULL;
	}
	if (aws_imds_parse_credentials(&resp, &creds, &err) == 0)
		aws_creds_done(&creds);
	(void)json_validate(data + 2, size - 2);

	/* the header/date parsers on a NUL-terminated copy */
	text = malloc(size - 1);
	if (text) {
		time_t t;

		memcpy(text, data + 2, size - 2);
		text[size - 2] = 0;
		(void)http_retry_after_parse(text, 1700000000, 20000, &ms);
		(void)http_parse_rfc3339(text, &t);
		(void)aws_error_class(text);
		free(text);
	}
	http_response_done(&resp);
	return 0;
}
