/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kmscrypt/token.h"
#include "kms/provider.h"
#include "util/secret.h"

int kms_error_set(struct kms_error *e, int r, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return r;
	snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	/* one line: vendor messages may carry newlines */
	for (char *p = e->message; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return r;
}

int kms_aad_format(const struct kms_aad *aad, char *buf, size_t n)
{
	int k = snprintf(buf, n, KMSCRYPT_AAD_PREFIX "%s:%d", aad->uuid, aad->keyslot);

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

