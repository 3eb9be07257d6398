/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "codec/base64.h"
#include "codec/kms_error.h"
#include "kms/local/local_codec.h"
#include "util/cleanup.h"
#include "util/secret.h"

int local_key_parse(const struct secret *file, struct secret **ret_key)
{
	size_t len = file->len;
	const char *p = (const char *)file->buf;

	if (len == LOCAL_KEY_BYTES)
		return secret_from(file->buf, len, ret_key);
	/* base64 text: 44 characters, optionally followed by one newline */
	if (len > 0 && p[len - 1] == '\n')
		len--;
	if (len > 0 && p[len - 1] == '\r')
		len--;
	if (len == 44) {
		struct secret *k;
		int r = base64_decode_secret(p, len, 0, &k);
		if (r < 0)
			return -EBADMSG;
		if (k->len != LOCAL_KEY_BYTES) {
			secret_free(k);
			return -EBADMSG;
		}
		*ret_key = k;
		return 0;
	}
	return -EBADMSG;
}

int local_key_id(const struct secret *key, char *buf, size_t n)
{
	static const char label[] = "kmscrypt-local-key-id";
	uint8_t md[32];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, label, sizeof(label) - 1) &&
	     EVP_DigestUpdate(ctx, key->buf, key->len) && EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	if (!ok || n < 40)
		return -EINVAL;
	memcpy(buf, "sha256:", 7);
	for (int i = 0; i < 16; i++)
		snprintf(buf + 7 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int local_seal(const struct secret *key, const uint8_t nonce[LOCAL_NONCE_BYTES], const char *aad,
	       const struct secret *plain, uint8_t **ret_blob, size_t *ret_len)
{
	size_t len = LOCAL_NONCE_BYTES + plain->len + LOCAL_TAG_BYTES;
	_cleanup_free_ uint8_t *blob = NULL;
	EVP_CIPHER_CTX *ctx;
	int outl = 0, finl = 0, ok;

	if (key->len != LOCAL_KEY_BYTES)
		return -EINVAL;
	blob = malloc(len);
	if (!blob)
		return -ENOMEM;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	memcpy(blob, nonce, LOCAL_NONCE_BYTES);
	ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, LOCAL_NONCE_BYTES, NULL) &&
	     EVP_EncryptInit_ex(ctx, NULL, NULL, key->buf, nonce) &&
	     EVP_EncryptUpdate(ctx, NULL, &outl, (const uint8_t *)aad, (int)strlen(aad)) &&
	     EVP_EncryptUpdate(ctx, blob + LOCAL_NONCE_BYTES, &outl, plain->buf, (int)plain->len) &&
	     EVP_EncryptFinal_ex(ctx, blob + LOCAL_NONCE_BYTES + outl, &finl) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, LOCAL_TAG_BYTES,
				 blob + LOCAL_NONCE_BYTES + plain->len);
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		return -EIO;
	*ret_blob = TAKE_PTR(blob);
	*ret_len = len;
	return 0;
}

int local_open(const struct secret *key, const char *aad, const uint8_t *blob, size_t len,
	       struct secret **ret_plain)
{
	_cleanup_secret_ struct secret *plain = NULL;
	size_t ctlen;
	EVP_CIPHER_CTX *ctx;
	int outl = 0, finl = 0, ok, r;
	uint8_t tag[LOCAL_TAG_BYTES];

	if (key->len != LOCAL_KEY_BYTES)
		return -EINVAL;
	if (len < LOCAL_NONCE_BYTES + LOCAL_TAG_BYTES + 1 || len > 4096)
		return -EBADMSG;
	ctlen = len - LOCAL_NONCE_BYTES - LOCAL_TAG_BYTES;
	r = secret_new(ctlen, &plain);
	if (r < 0)
		return r;
	memcpy(tag, blob + len - LOCAL_TAG_BYTES, LOCAL_TAG_BYTES);
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, LOCAL_NONCE_BYTES, NULL) &&
	     EVP_DecryptInit_ex(ctx, NULL, NULL, key->buf, blob) &&
	     EVP_DecryptUpdate(ctx, NULL, &outl, (const uint8_t *)aad, (int)strlen(aad)) &&
	     EVP_DecryptUpdate(ctx, plain->buf, &outl, blob + LOCAL_NONCE_BYTES, (int)ctlen) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, LOCAL_TAG_BYTES, tag);
	if (ok)
		ok = EVP_DecryptFinal_ex(ctx, plain->buf + outl, &finl) > 0;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		return -EACCES;
	plain->len = ctlen;
	*ret_plain = TAKE_PTR(plain);
	return 0;
}

int local_open_volume(const struct secret *key, const struct kms_aad *aad, const uint8_t *blob,
		      size_t len, struct secret **ret_plain, struct kms_error *err)
{
	char aadbuf[128], slot[16];
	int r;

	r = kms_aad_format(aad, aadbuf, sizeof(aadbuf));
	if (r < 0)
		return r;
	r = local_open(key, aadbuf, blob, len, ret_plain);
	if (r == -EACCES)
		return kms_error_reject(err, r, "InvalidCiphertext",
					"wrapped secret does not authenticate for volume %s keyslot "
					"%s (token tampered with, or copied from another volume)",
					aad->uuid, kms_aad_slot(aad, slot));
	if (r == -EBADMSG)
		return kms_error_reject(err, r, "InvalidCiphertext",
					"wrapped secret has a bad length");
	return r;
}
