/* SPDX-License-Identifier: MIT */
/* Making a binding's token (core/core.h, core_wrap_token()): the keyslot secret wrapped by one KMS
 * (version 1), by each of several (version 2, any-of), or split with Shamir's scheme and each share
 * wrapped by a different KMS (version 2, k of n; include/kmscrypt/token.h).  format, bind,
 * rotate-master and rotate-secret all wrap through here; and the binding as audit and history name
 * it (core_binding_json()). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "codec/shamir.h"
#include "codec/token.h"
#include "core/core.h"
#include "kmscrypt/token.h"
#include "util/cleanup.h"
#include "util/secret.h"

int core_wrap_token(struct kms_handle *const *hs, size_t n, unsigned k, bool multi,
		    const char *uuid, int keyslot, const struct secret *secret, char **ret_json,
		    char *why, size_t why_len)
{
	_cleanup_secret_ struct secret *rnd = NULL, *shares = NULL;
	struct kmscrypt_wrap wraps[KMSCRYPT_TOKEN_MAX_WRAPS] = {};
	struct kms_wrapped w[KMSCRYPT_TOKEN_MAX_WRAPS] = {};
	struct kmscrypt_token t = {.version = multi ? KMSCRYPT_TOKEN_VERSION_MULTI
						    : KMSCRYPT_TOKEN_VERSION,
				   .keyslot = keyslot,
				   .threshold = k,
				   .n_wraps = n,
				   .wraps = wraps};
	struct kms_aad aad = {.uuid = uuid, .keyslot = keyslot};
	int r = 0;

	if (n < 1 || n > KMSCRYPT_TOKEN_MAX_WRAPS || k < 1 || k > n || (!multi && n != 1)) {
		snprintf(why, why_len, "invalid binding: %u of %zu KMSs", k, n);
		return -EINVAL;
	}
	if (k > 1) {
		/* the coefficients come from the CSPRNG into locked memory, wiped when freed */
		r = secret_random((k - 1) * KMSCRYPT_SECRET_BYTES, &rnd);
		if (r == 0)
			r = secret_new(n * KMSCRYPT_SECRET_BYTES, &shares);
		if (r == 0)
			r = shamir_split(secret->buf, KMSCRYPT_SECRET_BYTES, k, (unsigned)n, rnd->buf,
					 shares->buf);
		if (r < 0) {
			snprintf(why, why_len, "cannot split the new secret: %s", strerror(-r));
			return r;
		}
		shares->len = n * KMSCRYPT_SECRET_BYTES;
		rnd = secret_free(rnd);
	}
	for (size_t i = 0; i < n && r >= 0; i++) {
		_cleanup_secret_ struct secret *one = NULL;
		struct kms_error err = {};
		char buf[384];

		if (k > 1)
			r = secret_from(shares->buf + i * KMSCRYPT_SECRET_BYTES, KMSCRYPT_SECRET_BYTES,
					&one);
		if (r < 0) {
			snprintf(why, why_len, "cannot copy a share: %s", strerror(-r));
			break;
		}
		if (hs[i]->open_r < 0) {
			err = hs[i]->open_err;
			r = hs[i]->open_r;
		} else {
			r = hs[i]->cfg.provider->wrap(hs[i]->ctx, &aad, k > 1 ? one : secret, &w[i],
						      &err);
		}
		if (r < 0) {
			kms_error_describe(&err, buf, sizeof(buf));
			snprintf(why, why_len, "KMS '%s' (%s) could not wrap the new %s: %s; %s",
				 hs[i]->cfg.name, hs[i]->cfg.provider->name,
				 k > 1 ? "share" : "secret", buf, core_hint_for_error(r, &err));
			break;
		}
		wraps[i] = (struct kmscrypt_wrap){.kms = hs[i]->cfg.name,
						  .provider = (char *)hs[i]->cfg.provider->name,
						  .key_id = w[i].key_id,
						  .key_version = w[i].key_version,
						  .alg = w[i].alg,
						  .blob = w[i].blob,
						  .blob_len = w[i].blob_len,
						  .share = k > 1 ? (unsigned)i + 1 : 0};
	}
	if (r >= 0 && !multi) {
		/* version 1: the fields of the one wrap at the top level */
		t.kms = wraps[0].kms;
		t.provider = wraps[0].provider;
		t.key_id = wraps[0].key_id;
		t.key_version = wraps[0].key_version;
		t.alg = wraps[0].alg;
		t.blob = wraps[0].blob;
		t.blob_len = wraps[0].blob_len;
		t.wraps = NULL;
		t.n_wraps = 0;
	}
	if (r >= 0) {
		r = token_format(&t, time(NULL), ret_json);
		if (r < 0)
			snprintf(why, why_len, "cannot format the new token: %s", strerror(-r));
	}
	for (size_t i = 0; i < n; i++)
		kms_wrapped_done(&w[i]);
	return r;
}

json_object *core_binding_json(const struct kmscrypt_token *t)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "kms", json_object_new_string(t->kms ?: ""));
	json_object_object_add(o, "provider", json_object_new_string(t->provider ?: ""));
	json_object_object_add(o, "key_id", json_object_new_string(t->key_id ?: ""));
	json_object_object_add(o, "key_version", json_object_new_string(t->key_version ?: ""));
	json_object_object_add(o, "keyslot", json_object_new_int(t->keyslot));
	if (t->version >= KMSCRYPT_TOKEN_VERSION_MULTI) {
		json_object *arr = json_object_new_array();

		json_object_object_add(o, "threshold", json_object_new_int((int)t->threshold));
		for (size_t i = 0; i < t->n_wraps; i++) {
			const struct kmscrypt_wrap *w = &t->wraps[i];
			json_object *e = json_object_new_object();

			json_object_object_add(e, "kms", json_object_new_string(w->kms ?: ""));
			json_object_object_add(e, "provider", json_object_new_string(w->provider ?: ""));
			json_object_object_add(e, "key_id", json_object_new_string(w->key_id ?: ""));
			json_object_object_add(e, "key_version",
					       json_object_new_string(w->key_version ?: ""));
			json_object_object_add(e, "share", json_object_new_int((int)w->share));
			json_object_array_add(arr, e);
		}
		json_object_object_add(o, "wraps", arr);
	}
	return o;
}

json_object *core_binding_json_text(const char *token_json)
{
	struct kmscrypt_token t = {};
	json_object *o;

	if (!token_json || token_parse(token_json, &t, NULL, 0) < 0)
		return NULL;
	o = core_binding_json(&t);
	token_done(&t);
	return o;
}

void core_binding_desc(const struct kmscrypt_token *t, char *buf, size_t len)
{
	size_t o = 0;

	if (t->n_wraps <= 1 && t->version < KMSCRYPT_TOKEN_VERSION_MULTI) {
		snprintf(buf, len, "KMS '%s'", t->kms ?: "");
		return;
	}
	o += (size_t)snprintf(buf, len, "KMSs");
	for (size_t i = 0; i < t->n_wraps && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s '%s'", i ? "," : "", t->wraps[i].kms);
	if (o < len)
		snprintf(buf + o, len - o, " (%u of %zu)", t->threshold, t->n_wraps);
}
