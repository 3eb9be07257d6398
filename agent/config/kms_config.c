/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/kms_config.h"
#include "util/cleanup.h"

#define CONFIG_MAX_SETTINGS 64
#define CONFIG_MAX_VALUE 4096

/* Settings every configuration may have besides the provider's own. */
static const char *const generic_keys[] = {"Provider", "Created", "Description", NULL};

static int cfg_fail(struct config_error *err, unsigned line, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int cfg_fail(struct config_error *err, unsigned line, int r, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		err->line = line;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return r;
}

int kms_config_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 64 || !isalnum((unsigned char)name[0]))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return 0;
	return 1;
}

const struct kms_option *kms_config_option(const struct kms_provider *p, const char *key)
{
	if (!p)
		return NULL;
	for (const struct kms_option *o = p->options; o->key; o++)
		if (strcmp(o->key, key) == 0)
			return o;
	return NULL;
}

#define CREDENTIAL_SUFFIX "Credential"

const struct kms_option *kms_config_credential_option(const struct kms_provider *p, const char *key)
{
	size_t kl = strlen(key), sl = strlen(CREDENTIAL_SUFFIX);

	if (!p || kl <= sl || strcmp(key + kl - sl, CREDENTIAL_SUFFIX) != 0)
		return NULL;
	for (const struct kms_option *o = p->options; o->key; o++)
		if ((o->flags & KMS_OPT_SECRET) && strlen(o->key) == kl - sl &&
		    strncmp(o->key, key, kl - sl) == 0)
			return o;
	return NULL;
}

int kms_config_credential_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 255 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return 0;
	return 1;
}

/* The credential name configured for secret option @o, NULL when none. */
static const char *credential_of(const struct kms_config *c, const struct kms_option *o)
{
	char key[128];

	snprintf(key, sizeof(key), "%s" CREDENTIAL_SUFFIX, o->key);
	return kms_config_get(c, key);
}

static int is_generic(const char *key)
{
	for (size_t i = 0; generic_keys[i]; i++)
		if (strcmp(generic_keys[i], key) == 0)
			return 1;
	return 0;
}

static int is_secret(const struct kms_config *c, const char *key)
{
	const struct kms_option *o = kms_config_option(c->provider, key);

	return o && (o->flags & KMS_OPT_SECRET);
}

void kms_config_done(struct kms_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_settings; i++) {
		if (c->settings[i].value) {
			if (is_secret(c, c->settings[i].key))
				explicit_bzero(c->settings[i].value, strlen(c->settings[i].value));
			free(c->settings[i].value);
		}
		free(c->settings[i].key);
	}
	free(c->settings);
	free(c->name);
	memset(c, 0, sizeof(*c));
}

static int add_setting(struct kms_config *c, const char *key, size_t klen, const char *value,
		       size_t vlen, unsigned line)
{
	struct kms_setting *n;

	if (c->n_settings >= CONFIG_MAX_SETTINGS)
		return -E2BIG;
	n = realloc(c->settings, (c->n_settings + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	c->settings = n;
	n = &c->settings[c->n_settings];
	n->key = strndup(key, klen);
	n->value = strndup(value, vlen);
	n->line = line;
	if (!n->key || !n->value) {
		free(n->key);
		free(n->value);
		return -ENOMEM;
	}
	c->n_settings++;
	return 0;
}

int kms_config_set(struct kms_config *c, const char *key, const char *value)
{
	for (size_t i = 0; i < c->n_settings; i++) {
		if (strcmp(c->settings[i].key, key) != 0)
			continue;
		char *v = strdup(value);
		if (!v)
			return -ENOMEM;
		if (is_secret(c, key))
			explicit_bzero(c->settings[i].value, strlen(c->settings[i].value));
		free(c->settings[i].value);
		c->settings[i].value = v;
		return 0;
	}
	return add_setting(c, key, strlen(key), value, strlen(value), 0);
}

int kms_config_unset(struct kms_config *c, const char *key)
{
	for (size_t i = 0; i < c->n_settings; i++) {
		if (strcmp(c->settings[i].key, key) != 0)
			continue;
		if (is_secret(c, key))
			explicit_bzero(c->settings[i].value, strlen(c->settings[i].value));
		free(c->settings[i].value);
		free(c->settings[i].key);
		memmove(&c->settings[i], &c->settings[i + 1],
			(c->n_settings - i - 1) * sizeof(c->settings[i]));
		c->n_settings--;
		return 0;
	}
	return 0;
}

static const char *trim(const char *s, const char *end, const char **ret_end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*ret_end = end;
	return s;
}

int kms_config_parse(const char *name, const char *text, size_t len,
		     const struct kms_provider *const *providers, struct kms_config *ret,
		     struct config_error *err)
{
	struct kms_config c = {};
	const char *p = text, *end = text + len;
	unsigned line = 0;
	int in_section = 0, r;

	if (!kms_config_name_valid(name))
		return cfg_fail(err, 0, -EINVAL, "invalid configuration name '%s'", name);
	if (memchr(text, 0, len))
		return cfg_fail(err, 0, -EBADMSG, "file contains a NUL byte");
	c.name = strdup(name);
	if (!c.name)
		return -ENOMEM;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p)), *le, *s, *eq, *ke, *vs, *ve;

		if (!eol)
			eol = end;
		line++;
		s = trim(p, eol, &le);
		p = eol < end ? eol + 1 : end;
		if (s == le || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			if (le - s != 5 || memcmp(s, "[KMS]", 5) != 0) {
				r = cfg_fail(err, line, -EBADMSG, "unknown section '%.*s' (expected [KMS])",
					     (int)MIN(le - s, 64), s);
				goto fail;
			}
			if (in_section) {
				r = cfg_fail(err, line, -EBADMSG, "[KMS] section repeated");
				goto fail;
			}
			in_section = 1;
			continue;
		}
		if (!in_section) {
			r = cfg_fail(err, line, -EBADMSG, "setting outside the [KMS] section");
			goto fail;
		}
		eq = memchr(s, '=', (size_t)(le - s));
		if (!eq) {
			r = cfg_fail(err, line, -EBADMSG, "expected Key=Value");
			goto fail;
		}
		s = trim(s, eq, &ke);
		vs = trim(eq + 1, le, &ve);
		if (ke == s) {
			r = cfg_fail(err, line, -EBADMSG, "empty key");
			goto fail;
		}
		if (ve - vs > CONFIG_MAX_VALUE) {
			r = cfg_fail(err, line, -EBADMSG, "value too long");
			goto fail;
		}
		for (size_t i = 0; i < c.n_settings; i++)
			if (strlen(c.settings[i].key) == (size_t)(ke - s) &&
			    memcmp(c.settings[i].key, s, (size_t)(ke - s)) == 0) {
				r = cfg_fail(err, line, -EBADMSG, "'%.*s' set twice (first on line %u)",
					     (int)(ke - s), s, c.settings[i].line);
				goto fail;
			}
		r = add_setting(&c, s, (size_t)(ke - s), vs, (size_t)(ve - vs), line);
		if (r < 0) {
			r = cfg_fail(err, line, r, "too many settings");
			goto fail;
		}
	}

	{
		const char *prov = kms_config_get(&c, "Provider");
		if (!prov) {
			r = cfg_fail(err, 0, -EBADMSG, "Provider= is missing");
			goto fail;
		}
		for (size_t i = 0; providers[i] && !c.provider; i++)
			if (strcmp(providers[i]->name, prov) == 0)
				c.provider = providers[i];
		if (!c.provider) {
			unsigned l = 0;
			for (size_t i = 0; i < c.n_settings; i++)
				if (strcmp(c.settings[i].key, "Provider") == 0)
					l = c.settings[i].line;
			r = cfg_fail(err, l, -EBADMSG, "unknown provider '%s'", prov);
			goto fail;
		}
	}
	for (size_t i = 0; i < c.n_settings; i++)
		if (kms_config_credential_option(c.provider, c.settings[i].key)) {
			if (!kms_config_credential_name_valid(c.settings[i].value)) {
				r = cfg_fail(err, c.settings[i].line, -EBADMSG,
					     "%s= is not a valid credential name", c.settings[i].key);
				goto fail;
			}
		} else if (!is_generic(c.settings[i].key) &&
			   !kms_config_option(c.provider, c.settings[i].key)) {
			r = cfg_fail(err, c.settings[i].line, -EBADMSG,
				     "unknown setting '%s' for provider %s", c.settings[i].key,
				     c.provider->name);
			goto fail;
		}
	for (const struct kms_option *o = c.provider->options; o->key; o++)
		if ((o->flags & KMS_OPT_SECRET) && kms_config_get(&c, o->key) && credential_of(&c, o)) {
			r = cfg_fail(err, 0, -EBADMSG,
				     "set either %s= or %s" CREDENTIAL_SUFFIX "=, not both", o->key,
				     o->key);
			goto fail;
		}
	r = kms_config_validate(&c, err);
	if (r < 0)
		goto fail;
	*ret = c;
	return 0;
fail:
	kms_config_done(&c);
	return r;
}

int kms_config_validate(const struct kms_config *c, struct config_error *err)
{
	for (const struct kms_option *o = c->provider->options; o->key; o++) {
		const char *v = kms_config_get(c, o->key);
		if ((o->flags & KMS_OPT_SECRET) && (!v || !*v))
			v = credential_of(c, o); /* resolved at use */
		if ((o->flags & KMS_OPT_REQUIRED) && (!v || !*v))
			return cfg_fail(err, 0, -EBADMSG, "%s= is required for provider %s (--%s)",
					o->key, c->provider->name, o->flag);
		if (v && (o->flags & KMS_OPT_PATH) && v[0] != '/')
			return cfg_fail(err, 0, -EBADMSG, "%s= must be an absolute path", o->key);
	}
	return 0;
}

static int append(char **buf, size_t *len, const char *key, const char *value)
{
	size_t need = strlen(key) + strlen(value) + 2;
	char *n = realloc(*buf, *len + need + 1);

	if (!n)
		return -ENOMEM;
	*buf = n;
	*len += (size_t)sprintf(n + *len, "%s=%s\n", key, value);
	return 0;
}

int kms_config_format(const struct kms_config *c, char **ret)
{
	char *buf = NULL;
	size_t len = 0;
	int r;

	if (asprintf(&buf,
		     "# kmscrypt KMS configuration '%s'. Managed by 'kmscrypt kms'; see kmscrypt(8).\n"
		     "[KMS]\n",
		     c->name) < 0)
		return -ENOMEM;
	len = strlen(buf);
	r = append(&buf, &len, "Provider", c->provider->name);
	for (const struct kms_option *o = c->provider->options; r >= 0 && o->key; o++) {
		const char *v = kms_config_get(c, o->key), *cred = NULL;
		char key[128];

		/* a secret taken from a credential (even once resolved) is never written out */
		if ((o->flags & KMS_OPT_SECRET) && (cred = credential_of(c, o))) {
			snprintf(key, sizeof(key), "%s" CREDENTIAL_SUFFIX, o->key);
			r = append(&buf, &len, key, cred);
		} else if (v)
			r = append(&buf, &len, o->key, v);
	}
	for (size_t i = 0; r >= 0 && i < c->n_settings; i++)
		if (is_generic(c->settings[i].key) && strcmp(c->settings[i].key, "Provider") != 0)
			r = append(&buf, &len, c->settings[i].key, c->settings[i].value);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	return 0;
}

const char *kms_config_get(const struct kms_config *c, const char *key)
{
	for (size_t i = 0; i < c->n_settings; i++)
		if (strcmp(c->settings[i].key, key) == 0)
			return c->settings[i].value;
	return NULL;
}
