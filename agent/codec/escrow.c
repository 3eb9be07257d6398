/* SPDX-License-Identifier: MIT */
/* The recovery key escrow envelope (codec/escrow.h).  Pure: text in, struct out. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "codec/base64.h"
#include "codec/escrow.h"
#include "codec/json_util.h"
#include "codec/kms_error.h"
#include "codec/token.h"
#include "util/cleanup.h"

void escrow_done(struct escrow *e)
{
	if (!e)
		return;
	free(e->uuid);
	free(e->purpose);
	free(e->kms);
	free(e->provider);
	free(e->key_id);
	free(e->key_version);
	free(e->alg);
	free(e->created);
	free(e->device);
	free(e->label);
	free(e->blob);
	*e = (struct escrow){};
}

/* A string member without control characters; "" for an optional one that is absent. */
static int get_str(json_object *o, const char *key, bool required, char **ret, char *err,
		   size_t errlen)
{
	json_object *v;
	const char *s;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
		if (required)
			return token_fail(err, errlen, "\"%s\" is missing", key);
		*ret = NULL;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return token_fail(err, errlen, "\"%s\" is not a string", key);
	s = json_object_get_string(v);
	if (strlen(s) != (size_t)json_object_get_string_len(v) || strlen(s) > 4096)
		return token_fail(err, errlen, "\"%s\" is too long or holds a NUL", key);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return token_fail(err, errlen, "\"%s\" holds a control character", key);
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

static bool uuid_valid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (size_t i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
			return false;
	}
	return true;
}

static bool name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("._-", s[i])))
			return false;
	return true;
}

int escrow_parse(const char *json, size_t len, struct escrow *ret, char *err, size_t errlen)
{
	json_object *o = NULL, *v;
	struct escrow e = {};
	_cleanup_free_ char *type = NULL, *b64 = NULL;
	int r;

	r = json_parse_buf(json, len, &o);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || !json_object_is_type(o, json_type_object)) {
		r = token_fail(err, errlen, "not a JSON object");
		goto out;
	}
	r = get_str(o, "type", true, &type, err, errlen);
	if (r < 0)
		goto out;
	if (strcmp(type, ESCROW_TYPE) != 0) {
		r = token_fail(err, errlen, "\"type\" is not \"" ESCROW_TYPE "\"");
		goto out;
	}
	if (!json_object_object_get_ex(o, "version", &v) ||
	    !json_object_is_type(v, json_type_int)) {
		r = token_fail(err, errlen, "\"version\" is missing or not a number");
		goto out;
	}
	e.version = json_object_get_int(v);
	if (e.version != ESCROW_VERSION) {
		r = token_fail(err, errlen, "version %d is not one this kmscrypt reads (%d)",
				e.version, ESCROW_VERSION);
		goto out;
	}
	if ((r = get_str(o, "uuid", true, &e.uuid, err, errlen)) < 0 ||
	    (r = get_str(o, "purpose", true, &e.purpose, err, errlen)) < 0 ||
	    (r = get_str(o, "kms", true, &e.kms, err, errlen)) < 0 ||
	    (r = get_str(o, "provider", true, &e.provider, err, errlen)) < 0 ||
	    (r = get_str(o, "key_id", true, &e.key_id, err, errlen)) < 0 ||
	    (r = get_str(o, "key_version", true, &e.key_version, err, errlen)) < 0 ||
	    (r = get_str(o, "alg", true, &e.alg, err, errlen)) < 0 ||
	    (r = get_str(o, "blob", true, &b64, err, errlen)) < 0 ||
	    (r = get_str(o, "created", false, &e.created, err, errlen)) < 0 ||
	    (r = get_str(o, "device", false, &e.device, err, errlen)) < 0 ||
	    (r = get_str(o, "label", false, &e.label, err, errlen)) < 0)
		goto out;
	if (!e.created && !(e.created = strdup(""))) {
		r = -ENOMEM;
		goto out;
	}
	if (!uuid_valid(e.uuid)) {
		r = token_fail(err, errlen, "\"uuid\" is not a UUID");
		goto out;
	}
	if (strcmp(e.purpose, KMS_AAD_PURPOSE_RECOVERY) != 0) {
		r = token_fail(err, errlen, "\"purpose\" is not \"" KMS_AAD_PURPOSE_RECOVERY "\"");
		goto out;
	}
	if (!name_valid(e.kms)) {
		r = token_fail(err, errlen, "\"kms\" is not a KMS configuration name");
		goto out;
	}
	r = base64_decode(b64, strlen(b64), 0, &e.blob, &e.blob_len);
	if (r == -ENOMEM)
		goto out;
	if (r < 0 || e.blob_len == 0) {
		r = token_fail(err, errlen, "\"blob\" is not base64");
		goto out;
	}
	*ret = e;
	e = (struct escrow){};
	r = 0;
out:
	json_object_put(o);
	escrow_done(&e);
	return r;
}

int escrow_format(const struct escrow *e, time_t now, char **ret_json)
{
	_cleanup_free_ char *b64 = NULL;
	char created[32];
	json_object *o;
	int r;

	if (!e->uuid || !e->kms || !e->provider || !e->key_id || !e->alg || !e->blob)
		return -EINVAL;
	r = base64_encode(e->blob, e->blob_len, 0, &b64);
	if (r < 0)
		return r;
	(void)format_rfc3339(now, created, sizeof(created));
	o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	json_object_object_add(o, "type", json_object_new_string(ESCROW_TYPE));
	json_object_object_add(o, "version", json_object_new_int(ESCROW_VERSION));
	json_object_object_add(o, "uuid", json_object_new_string(e->uuid));
	json_object_object_add(o, "purpose", json_object_new_string(KMS_AAD_PURPOSE_RECOVERY));
	json_object_object_add(o, "kms", json_object_new_string(e->kms));
	json_object_object_add(o, "provider", json_object_new_string(e->provider));
	json_object_object_add(o, "key_id", json_object_new_string(e->key_id));
	json_object_object_add(o, "key_version", json_object_new_string(e->key_version ?: ""));
	json_object_object_add(o, "alg", json_object_new_string(e->alg));
	json_object_object_add(o, "blob", json_object_new_string(b64));
	json_object_object_add(o, "created", json_object_new_string(created));
	if (e->device)
		json_object_object_add(o, "device", json_object_new_string(e->device));
	if (e->label && *e->label)
		json_object_object_add(o, "label", json_object_new_string(e->label));
	*ret_json = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
								 JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return *ret_json ? 0 : -ENOMEM;
}
