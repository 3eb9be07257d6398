/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "codec/base64.h"
#include "codec/token.h"
#include "kmscrypt/token.h"
#include "util/cleanup.h"

#define TOKEN_MAX_BLOB 8192   /* wrapped 32-byte secrets are far smaller; RSA-4096 wraps are 512 */
#define TOKEN_MAX_STRING 2048

int token_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static void wrap_done(struct kmscrypt_wrap *w)
{
	free(w->kms);
	free(w->provider);
	free(w->key_id);
	free(w->key_version);
	free(w->alg);
	free(w->blob);
	memset(w, 0, sizeof(*w));
}

void token_done(struct kmscrypt_token *t)
{
	if (!t)
		return;
	free(t->kms);
	free(t->provider);
	free(t->key_id);
	free(t->key_version);
	free(t->alg);
	free(t->created);
	free(t->revoked_at);
	free(t->revoked_reason);
	free(t->blob);
	for (size_t i = 0; i < t->n_wraps; i++)
		wrap_done(&t->wraps[i]);
	free(t->wraps);
	memset(t, 0, sizeof(*t));
}

static int get_string(json_object *o, const char *key, int required, char **ret, char *err,
		      size_t errlen)
{
	json_object *v;
	const char *s;

	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
		if (required)
			return token_fail(err, errlen, "field '%s' is missing", key);
		*ret = strdup("");
		return *ret ? 0 : -ENOMEM;
	}
	if (!json_object_is_type(v, json_type_string))
		return token_fail(err, errlen, "field '%s' is not a string", key);
	s = json_object_get_string(v);
	if (strlen(s) > TOKEN_MAX_STRING)
		return token_fail(err, errlen, "field '%s' is too long", key);
	/* Header fields reach terminals and the journal (unlock --all reads every attached disk):
	 * a control character is never legitimate in them. */
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return token_fail(err, errlen, "field '%s' contains a control character",
					  key);
	if (required && !*s)
		return token_fail(err, errlen, "field '%s' is empty", key);
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* The fields of one wrap: the top level of a v1 token, or one object of a v2 token's "wraps". */
static int parse_wrap(json_object *o, struct kmscrypt_wrap *w, char *err, size_t errlen)
{
	json_object *v;
	const char *s;
	int r;

	if ((r = get_string(o, "kms", 1, &w->kms, err, errlen)) < 0 ||
	    (r = get_string(o, "provider", 1, &w->provider, err, errlen)) < 0 ||
	    (r = get_string(o, "key_id", 1, &w->key_id, err, errlen)) < 0 ||
	    (r = get_string(o, "key_version", 0, &w->key_version, err, errlen)) < 0 ||
	    (r = get_string(o, "alg", 1, &w->alg, err, errlen)) < 0)
		return r;
	if (!json_object_object_get_ex(o, "blob", &v) || !json_object_is_type(v, json_type_string))
		return token_fail(err, errlen, "field 'blob' is missing");
	s = json_object_get_string(v);
	if (strlen(s) == 0 || strlen(s) > TOKEN_MAX_BLOB * 4 / 3 + 4)
		return token_fail(err, errlen, "field 'blob' is empty or too large");
	r = base64_decode(s, strlen(s), 0, &w->blob, &w->blob_len);
	if (r < 0)
		return token_fail(err, errlen, "field 'blob' is not valid base64");
	return 0;
}

static int dup_into(char **dst, const char *src)
{
	*dst = strdup(src ? src : "");
	return *dst ? 0 : -ENOMEM;
}

/* The v1 fields of @t are copies of its first wrap. */
static int mirror_first_wrap(struct kmscrypt_token *t)
{
	const struct kmscrypt_wrap *w = &t->wraps[0];

	if (dup_into(&t->kms, w->kms) < 0 || dup_into(&t->provider, w->provider) < 0 ||
	    dup_into(&t->key_id, w->key_id) < 0 || dup_into(&t->key_version, w->key_version) < 0 ||
	    dup_into(&t->alg, w->alg) < 0)
		return -ENOMEM;
	t->blob = malloc(w->blob_len);
	if (!t->blob)
		return -ENOMEM;
	memcpy(t->blob, w->blob, w->blob_len);
	t->blob_len = w->blob_len;
	return 0;
}

/* The rules of include/kmscrypt/token.h for @k of @n wraps; shared by parse and format. */
static int check_wraps(const struct kmscrypt_wrap *w, size_t n, unsigned k, char *err,
		       size_t errlen)
{
	if (n < 1 || n > TOKEN_MAX_WRAPS)
		return token_fail(err, errlen, "field 'wraps' must hold 1 to %d wraps, not %zu",
				  TOKEN_MAX_WRAPS, n);
	if (k < 1 || k > n)
		return token_fail(err, errlen, "threshold %u is not between 1 and the %zu wraps", k,
				  n);
	for (size_t i = 0; i < n; i++) {
		if (k == 1 && w[i].share != 0)
			return token_fail(err, errlen,
					  "wrap %zu has share %u, but threshold 1 wraps the whole "
					  "secret (share 0)",
					  i, w[i].share);
		if (k > 1 && (w[i].share < 1 || w[i].share > 255))
			return token_fail(err, errlen, "wrap %zu has share %u, not 1 to 255", i,
					  w[i].share);
		for (size_t j = 0; j < i; j++) {
			if (k > 1 && w[j].share == w[i].share)
				return token_fail(err, errlen, "wraps %zu and %zu hold the same share %u",
						  j, i, w[i].share);
			if (w[j].kms && w[i].kms && strcmp(w[j].kms, w[i].kms) == 0)
				return token_fail(err, errlen,
						  "wraps %zu and %zu name the same KMS '%s'", j, i,
						  w[i].kms);
		}
	}
	return 0;
}

static int parse_wraps_v2(json_object *o, struct kmscrypt_token *t, char *err, size_t errlen)
{
	json_object *v, *arr;
	size_t n;
	int64_t k;
	int r;

	if (!json_object_object_get_ex(o, "threshold", &v) || !json_object_is_type(v, json_type_int))
		return token_fail(err, errlen, "field 'threshold' is missing or not a number");
	k = json_object_get_int64(v);
	if (!json_object_object_get_ex(o, "wraps", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return token_fail(err, errlen, "field 'wraps' is missing or not an array");
	n = json_object_array_length(arr);
	if (n < 1 || n > TOKEN_MAX_WRAPS)
		return token_fail(err, errlen, "field 'wraps' must hold 1 to %d wraps, not %zu",
				  TOKEN_MAX_WRAPS, n);
	if (k < 1 || k > (int64_t)n)
		return token_fail(err, errlen, "threshold %lld is not between 1 and the %zu wraps",
				  (long long)k, n);
	t->threshold = (unsigned)k;
	t->wraps = calloc(n, sizeof(*t->wraps));
	if (!t->wraps)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *w = json_object_array_get_idx(arr, i), *sv;
		int64_t share;
		if (!json_object_is_type(w, json_type_object))
			return token_fail(err, errlen, "wrap %zu is not an object", i);
		t->n_wraps = i + 1; /* token_done() frees what was parsed */
		r = parse_wrap(w, &t->wraps[i], err, errlen);
		if (r < 0)
			return r;
		if (!json_object_object_get_ex(w, "share", &sv) ||
		    !json_object_is_type(sv, json_type_int))
			return token_fail(err, errlen, "wrap %zu: field 'share' is missing or not a "
					  "number", i);
		share = json_object_get_int64(sv);
		if (share < 0 || share > 255)
			return token_fail(err, errlen, "wrap %zu has share %lld, not 0 to 255", i,
					  (long long)share);
		t->wraps[i].share = (unsigned)share;
	}
	return check_wraps(t->wraps, t->n_wraps, t->threshold, err, errlen);
}

int token_parse(const char *json, struct kmscrypt_token *ret, char *err, size_t errlen)
{
	struct kmscrypt_token t = {.keyslot = -1};
	json_tokener *tok;
	json_object *o = NULL, *v, *slot;
	const char *s;
	char *end;
	long ks;
	int r;

	tok = json_tokener_new_ex(16);
	if (!tok)
		return -ENOMEM;
	o = json_tokener_parse_ex(tok, json, (int)strlen(json));
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != strlen(json)) {
		json_tokener_free(tok);
		json_object_put(o);
		return token_fail(err, errlen, "token is not valid JSON");
	}
	json_tokener_free(tok);
	if (!json_object_is_type(o, json_type_object)) {
		r = token_fail(err, errlen, "token is not a JSON object");
		goto fail;
	}
	if (!json_object_object_get_ex(o, "type", &v) || !json_object_is_type(v, json_type_string) ||
	    strcmp(json_object_get_string(v), KMSCRYPT_TOKEN_TYPE) != 0) {
		r = token_fail(err, errlen, "token type is not '%s'", KMSCRYPT_TOKEN_TYPE);
		goto fail;
	}
	if (!json_object_object_get_ex(o, "version", &v) || !json_object_is_type(v, json_type_int)) {
		r = token_fail(err, errlen, "field 'version' is missing or not a number");
		goto fail;
	}
	t.version = json_object_get_int(v);
	if (t.version != KMSCRYPT_TOKEN_VERSION && t.version != KMSCRYPT_TOKEN_VERSION_MULTI) {
		r = token_fail(err, errlen, "token version %d is not supported (this kmscrypt reads %d "
			       "and %d)",
			       t.version, KMSCRYPT_TOKEN_VERSION, KMSCRYPT_TOKEN_VERSION_MULTI);
		goto fail;
	}
	if (!json_object_object_get_ex(o, "keyslots", &v) || !json_object_is_type(v, json_type_array) ||
	    json_object_array_length(v) != 1) {
		r = token_fail(err, errlen, "field 'keyslots' must list exactly one keyslot");
		goto fail;
	}
	slot = json_object_array_get_idx(v, 0);
	if (!json_object_is_type(slot, json_type_string)) {
		r = token_fail(err, errlen, "keyslot is not a string");
		goto fail;
	}
	s = json_object_get_string(slot);
	errno = 0;
	ks = strtol(s, &end, 10);
	if (errno || end == s || *end || ks < 0 || ks > 31) {
		r = token_fail(err, errlen, "keyslot '%s' is not a number from 0 to 31", s);
		goto fail;
	}
	t.keyslot = (int)ks;
	if ((r = get_string(o, "created", 0, &t.created, err, errlen)) < 0)
		goto fail;
	if (json_object_object_get_ex(o, "revoked", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_object)) {
			r = token_fail(err, errlen, "field 'revoked' is not an object");
			goto fail;
		}
		t.revoked = true;
		if ((r = get_string(v, "at", 0, &t.revoked_at, err, errlen)) < 0 ||
		    (r = get_string(v, "reason", 0, &t.revoked_reason, err, errlen)) < 0)
			goto fail;
	}
	if (t.version == KMSCRYPT_TOKEN_VERSION) {
		/* v1: one wrap at the top level */
		t.wraps = calloc(1, sizeof(*t.wraps));
		if (!t.wraps) {
			r = -ENOMEM;
			goto fail;
		}
		t.n_wraps = 1;
		t.threshold = 1;
		r = parse_wrap(o, &t.wraps[0], err, errlen);
	} else {
		r = parse_wraps_v2(o, &t, err, errlen);
	}
	if (r < 0)
		goto fail;
	r = mirror_first_wrap(&t);
	if (r < 0)
		goto fail;
	json_object_put(o);
	*ret = t;
	return 0;
fail:
	json_object_put(o);
	token_done(&t);
	return r;
}

int format_rfc3339(time_t t, char *buf, size_t n)
{
	static const char invalid[] = "(invalid time)";
	struct tm tm;

	/* RFC 3339 has four-digit years; gmtime_r() fails for times a 32-bit year cannot hold, and
	 * strftime() leaves the buffer undefined when the text does not fit. */
	if (n == 0)
		return -EINVAL;
	if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900 ||
	    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		snprintf(buf, n, "%s", invalid);
		return -ERANGE;
	}
	return 0;
}

int token_json_set_revoked(const char *json, time_t at, const char *reason, char **ret_json)
{
	json_object *o, *rv = NULL;
	char when[32];
	const char *s;

	if (reason) {
		if (strlen(reason) > TOKEN_MAX_STRING)
			return -EINVAL;
		for (const unsigned char *p = (const unsigned char *)reason; *p; p++)
			if (*p < 0x20 || *p == 0x7f)
				return -EINVAL;
	}
	o = json_tokener_parse(json);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return -EBADMSG;
	}
	/* Edit the header's own JSON, so fields this version does not know survive. */
	json_object_object_del(o, "revoked");
	if (at > 0) {
		if (format_rfc3339(at, when, sizeof(when)) < 0) {
			json_object_put(o);
			return -ERANGE;
		}
		rv = json_object_new_object();
		if (!rv) {
			json_object_put(o);
			return -ENOMEM;
		}
		json_object_object_add(rv, "at", json_object_new_string(when));
		if (reason && *reason)
			json_object_object_add(rv, "reason", json_object_new_string(reason));
		json_object_object_add(o, "revoked", rv);
	}
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	*ret_json = s ? strdup(s) : NULL;
	json_object_put(o);
	return *ret_json ? 0 : -ENOMEM;
}

static int token_format_v2(const struct kmscrypt_token *t, time_t now, char **ret_json)
{
	json_object *o, *slots, *wraps;
	char slot[16], created[32];
	const char *s;
	int r = 0;

	if (t->keyslot < 0 || !t->wraps || check_wraps(t->wraps, t->n_wraps, t->threshold, NULL, 0) < 0)
		return -EINVAL;
	for (size_t i = 0; i < t->n_wraps; i++) {
		const struct kmscrypt_wrap *w = &t->wraps[i];
		if (!w->kms || !w->provider || !w->key_id || !w->alg || !w->blob_len)
			return -EINVAL;
	}
	snprintf(slot, sizeof(slot), "%d", t->keyslot);
	if (t->created)
		snprintf(created, sizeof(created), "%s", t->created);
	else
		format_rfc3339(now, created, sizeof(created));
	o = json_object_new_object();
	slots = json_object_new_array();
	wraps = json_object_new_array();
	if (!o || !slots || !wraps) {
		json_object_put(o);
		json_object_put(slots);
		json_object_put(wraps);
		return -ENOMEM;
	}
	json_object_array_add(slots, json_object_new_string(slot));
	json_object_object_add(o, "type", json_object_new_string(KMSCRYPT_TOKEN_TYPE));
	json_object_object_add(o, "keyslots", slots);
	json_object_object_add(o, "version", json_object_new_int(KMSCRYPT_TOKEN_VERSION_MULTI));
	json_object_object_add(o, "threshold", json_object_new_int((int)t->threshold));
	json_object_object_add(o, "wraps", wraps);
	for (size_t i = 0; i < t->n_wraps && r == 0; i++) {
		const struct kmscrypt_wrap *w = &t->wraps[i];
		char *blob = NULL;
		json_object *jw = json_object_new_object();
		if (!jw || base64_encode(w->blob, w->blob_len, 0, &blob) < 0) {
			json_object_put(jw);
			r = -ENOMEM;
			break;
		}
		json_object_object_add(jw, "kms", json_object_new_string(w->kms));
		json_object_object_add(jw, "provider", json_object_new_string(w->provider));
		json_object_object_add(jw, "key_id", json_object_new_string(w->key_id));
		json_object_object_add(jw, "key_version",
				       json_object_new_string(w->key_version ? w->key_version : ""));
		json_object_object_add(jw, "alg", json_object_new_string(w->alg));
		json_object_object_add(jw, "blob", json_object_new_string(blob));
		json_object_object_add(jw, "share", json_object_new_int((int)w->share));
		json_object_array_add(wraps, jw);
		free(blob);
	}
	json_object_object_add(o, "created", json_object_new_string(created));
	s = r == 0 ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							  JSON_C_TO_STRING_NOSLASHESCAPE)
		   : NULL;
	*ret_json = s ? strdup(s) : NULL;
	json_object_put(o);
	if (r < 0)
		return r;
	return *ret_json ? 0 : -ENOMEM;
}

int token_format(const struct kmscrypt_token *t, time_t now, char **ret_json)
{
	_cleanup_free_ char *blob = NULL;
	json_object *o, *slots;
	char slot[16], created[32];
	const char *s;
	int r;

	if (t->version == KMSCRYPT_TOKEN_VERSION_MULTI)
		return token_format_v2(t, now, ret_json);
	if (t->keyslot < 0 || !t->kms || !t->provider || !t->key_id || !t->alg || !t->blob_len)
		return -EINVAL;
	r = base64_encode(t->blob, t->blob_len, 0, &blob);
	if (r < 0)
		return r;
	snprintf(slot, sizeof(slot), "%d", t->keyslot);
	if (t->created)
		snprintf(created, sizeof(created), "%s", t->created);
	else
		format_rfc3339(now, created, sizeof(created));
	o = json_object_new_object();
	slots = json_object_new_array();
	if (!o || !slots) {
		json_object_put(o);
		json_object_put(slots);
		return -ENOMEM;
	}
	json_object_array_add(slots, json_object_new_string(slot));
	json_object_object_add(o, "type", json_object_new_string(KMSCRYPT_TOKEN_TYPE));
	json_object_object_add(o, "keyslots", slots);
	json_object_object_add(o, "version", json_object_new_int(KMSCRYPT_TOKEN_VERSION));
	json_object_object_add(o, "kms", json_object_new_string(t->kms));
	json_object_object_add(o, "provider", json_object_new_string(t->provider));
	json_object_object_add(o, "key_id", json_object_new_string(t->key_id));
	json_object_object_add(o, "key_version",
			       json_object_new_string(t->key_version ? t->key_version : ""));
	json_object_object_add(o, "alg", json_object_new_string(t->alg));
	json_object_object_add(o, "blob", json_object_new_string(blob));
	json_object_object_add(o, "created", json_object_new_string(created));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	*ret_json = s ? strdup(s) : NULL;
	json_object_put(o);
	return *ret_json ? 0 : -ENOMEM;
}
