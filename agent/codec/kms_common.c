/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmscrypt/token.h"
#include "codec/kms_error.h"
#include "util/cleanup.h"
#include "util/escape.h"
#include "util/secret.h"

static void sanitize_field(char *f, size_t n)
{
	char buf[sizeof(((struct kms_error *)0)->message)];

	/* whitespace a vendor put in a message is folded; anything else is shown as an escape */
	for (char *p = f; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	if (!cescape_needed(f))
		return;
	cescape_buf(f, buf, MIN(n, sizeof(buf))); /* cut to the field's size, ending in "..." */
	snprintf(f, n, "%s", buf);
}

void kms_error_sanitize(struct kms_error *e)
{
	if (!e)
		return;
	sanitize_field(e->code, sizeof(e->code));
	sanitize_field(e->message, sizeof(e->message));
	sanitize_field(e->request_id, sizeof(e->request_id));
}

static int kms_error_vset(struct kms_error *e, int r, bool rejected, const char *code,
			  const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static int kms_error_vset(struct kms_error *e, int r, bool rejected, const char *code,
			  const char *fmt, va_list ap)
{
	if (!e)
		return r;
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	/* one printable line: vendor messages and token fields may carry anything */
	kms_error_sanitize(e);
	if (rejected)
		e->token_rejected = true;
	return r;
}

int kms_error_set(struct kms_error *e, int r, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	r = kms_error_vset(e, r, false, code, fmt, ap);
	va_end(ap);
	return r;
}

int kms_error_reject(struct kms_error *e, int r, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	r = kms_error_vset(e, r, true, code, fmt, ap);
	va_end(ap);
	return r;
}

const char *kms_aad_slot(const struct kms_aad *aad, char buf[16])
{
	if (aad->purpose)
		return aad->purpose;
	snprintf(buf, 16, "%d", aad->keyslot);
	return buf;
}

int kms_aad_format(const struct kms_aad *aad, char *buf, size_t n)
{
	char slot[16];
	int k = snprintf(buf, n, KMSCRYPT_AAD_PREFIX "%s:%s", aad->uuid, kms_aad_slot(aad, slot));

	if (k < 0 || (size_t)k >= n)
		return -ENOBUFS;
	return k;
}

void kms_wrapped_done(struct kms_wrapped *w)
{
	if (!w)
		return;
	free(w->key_id);
	free(w->key_version);
	free(w->alg);
	free(w->blob);
	memset(w, 0, sizeof(*w));
}

