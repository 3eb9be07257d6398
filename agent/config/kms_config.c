/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/kms_config.h"
#include "util/cleanup.h"
#include "util/secret.h"

#define CONFIG_MAX_SETTINGS 64
#define CONFIG_MAX_VALUE 4096

/* Settings every configuration may have besides the provider's own. */
static const char *const generic_keys[] = {"Provider",    "Created",     "Description",
					   "WatchInterval", "OnRevoke", "RevokeAfter",
					   "AutoRestore", NULL};

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

/* Is @key (@klen bytes) a secret option of @p? */
static bool secret_option(const struct kms_provider *p, const char *key, size_t klen)
{
	if (!p)
		return false;
	for (const struct kms_option *o = p->options; o->key; o++)
		if ((o->flags & KMS_OPT_SECRET) && strlen(o->key) == klen &&
		    memcmp(o->key, key, klen) == 0)
			return true;
	return false;
}

/* The parser meets a value before it knows the provider: a key that is secret for any of them
 * goes straight into locked memory. */
static bool secret_option_any(const struct kms_provider *const *providers, const char *key,
			      size_t klen)
{
	for (size_t i = 0; providers && providers[i]; i++)
		if (secret_option(providers[i], key, klen))
			return true;
	return false;
}

/* CR or LF would start a new line of the file; NUL would cut the value short. */
static bool text_ok(const char *v, size_t n)
{
	return !memchr(v, '\r', n) && !memchr(v, '\n', n) && !memchr(v, 0, n);
}

static bool key_ok(const char *key)
{
	size_t n = strlen(key);

	return n > 0 && text_ok(key, n) && !memchr(key, '=', n);
}

static void setting_value_free(struct kms_setting *s)
{
	if (s->secret)
		s->secret = secret_free(s->secret); /* wipes */
	else
		free(s->value);
	s->value = NULL;
}

/* Replace the value of @s by a copy of @n bytes at @value (in locked memory when @secret). */
static int setting_value_set(struct kms_setting *s, const char *value, size_t n, bool secret)
{
	struct secret *sec = NULL;
	char *v;
	int r;

	if (secret) {
		r = secret_from_cstr(value, n, &sec);
		if (r < 0)
			return r;
		v = (char *)sec->buf;
	} else {
		v = strndup(value, n);
		if (!v)
			return -ENOMEM;
	}
	setting_value_free(s);
	s->value = v;
	s->secret = sec;
	return 0;
}

void kms_config_done(struct kms_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_settings; i++) {
		setting_value_free(&c->settings[i]);
		free(c->settings[i].key);
	}
	free(c->settings);
	free(c->name);
	memset(c, 0, sizeof(*c));
}

static int add_setting(struct kms_config *c, const char *key, size_t klen, const char *value,
		       size_t vlen, bool secret, unsigned line)
{
	struct kms_setting *n;
	int r;

	if (c->n_settings >= CONFIG_MAX_SETTINGS)
		return -E2BIG;
	n = realloc(c->settings, (c->n_settings + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	c->settings = n;
	n = &c->settings[c->n_settings];
	*n = (struct kms_setting){.line = line};
	n->key = strndup(key, klen);
	if (!n->key)
		return -ENOMEM;
	r = setting_value_set(n, value, vlen, secret);
	if (r < 0) {
		free(n->key);
		return r;
	}
	c->n_settings++;
	return 0;
}

/* The one place settings are stored: nothing that would break the line format gets in. */
static int config_set(struct kms_config *c, const char *key, const char *value, size_t n,
		      bool secret)
{
	if (!key_ok(key) || !text_ok(value, n))
		return -EINVAL;
	secret = secret || secret_option(c->provider, key, strlen(key));
	for (size_t i = 0; i < c->n_settings; i++)
		if (strcmp(c->settings[i].key, key) == 0)
			return setting_value_set(&c->settings[i], value, n, secret);
	return add_setting(c, key, strlen(key), value, n, secret, 0);
}

int kms_config_set(struct kms_config *c, const char *key, const char *value)
{
	return config_set(c, key, value, strlen(value), false);
}

int kms_config_set_secret(struct kms_config *c, const char *key, const struct secret *value)
{
	return config_set(c, key, (const char *)value->buf, value->len, true);
}

int kms_config_unset(struct kms_config *c, const char *key)
{
	for (size_t i = 0; i < c->n_settings; i++) {
		if (strcmp(c->settings[i].key, key) != 0)
			continue;
		setting_value_free(&c->settings[i]);
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
		/* lines end at LF and a trailing CR is trimmed: any CR left is inside the line */
		if (memchr(s, '\r', (size_t)(ve - s))) {
			r = cfg_fail(err, line, -EBADMSG, "carriage return inside the line");
			goto fail;
		}
		for (size_t i = 0; i < c.n_settings; i++)
			if (strlen(c.settings[i].key) == (size_t)(ke - s) &&
			    memcmp(c.settings[i].key, s, (size_t)(ke - s)) == 0) {
				r = cfg_fail(err, line, -EBADMSG, "'%.*s' set twice (first on line %u)",
					     (int)(ke - s), s, c.settings[i].line);
				goto fail;
			}
		r = add_setting(&c, s, (size_t)(ke - s), vs, (size_t)(ve - vs),
				secret_option_any(providers, s, (size_t)(ke - s)), line);
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

static int parse_uint_range(const char *v, unsigned lo, unsigned hi, unsigned *ret)
{
	unsigned long n = 0;

	if (!v || !*v || strlen(v) > 6)
		return -EINVAL;
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		n = n * 10 + (unsigned long)(*p - '0');
	}
	if (n < lo || n > hi)
		return -EINVAL;
	*ret = (unsigned)n;
	return 0;
}

const char *kms_on_revoke_name(enum kms_on_revoke a)
{
	return a == KMS_ON_REVOKE_CLOSE ? "close" : a == KMS_ON_REVOKE_ALERT ? "alert" : "wipe";
}

int kms_config_watch_settings(const struct kms_config *c, struct kms_watch_settings *ret,
			      struct config_error *err)
{
	struct kms_watch_settings w = {
		.interval_sec = KMS_WATCH_INTERVAL_DEFAULT,
		.on_revoke = KMS_ON_REVOKE_WIPE,
		.revoke_after = KMS_WATCH_REVOKE_AFTER_DEFAULT,
		.auto_restore = false,
	};
	const char *v;

	if ((v = kms_config_get(c, "WatchInterval")) &&
	    parse_uint_range(v, 1, 86400, &w.interval_sec) < 0)
		return cfg_fail(err, 0, -EINVAL, "WatchInterval= (--interval) takes seconds, 1 to "
						 "86400, not '%s'", v);
	if ((v = kms_config_get(c, "RevokeAfter")) &&
	    parse_uint_range(v, 1, 100, &w.revoke_after) < 0)
		return cfg_fail(err, 0, -EINVAL, "RevokeAfter= (--revoke-after) takes a count of "
						 "denials, 1 to 100, not '%s'", v);
	if ((v = kms_config_get(c, "OnRevoke"))) {
		if (strcmp(v, "wipe") == 0)
			w.on_revoke = KMS_ON_REVOKE_WIPE;
		else if (strcmp(v, "close") == 0)
			w.on_revoke = KMS_ON_REVOKE_CLOSE;
		else if (strcmp(v, "alert") == 0)
			w.on_revoke = KMS_ON_REVOKE_ALERT;
		else
			return cfg_fail(err, 0, -EINVAL, "OnRevoke= (--on-revoke) is wipe, close or "
							 "alert, not '%s'", v);
	}
	if ((v = kms_config_get(c, "AutoRestore"))) {
		if (strcmp(v, "yes") == 0)
			w.auto_restore = true;
		else if (strcmp(v, "no") != 0)
			return cfg_fail(err, 0, -EINVAL, "AutoRestore= is yes or no, not '%s'", v);
	}
	if (ret)
		*ret = w;
	return 0;
}

int kms_config_validate(const struct kms_config *c, struct config_error *err)
{
	int r;

	r = kms_config_watch_settings(c, NULL, err);
	if (r < 0)
		return r == -EINVAL ? -EBADMSG : r;
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

/* The output of kms_config_format(), built in two passes: the first (buf == NULL) only counts. */
struct out {
	char *buf;
	size_t len;
};

static void put(struct out *o, const char *s)
{
	size_t n = strlen(s);

	if (o->buf)
		memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void put_setting(struct out *o, const char *key, const char *suffix, const char *value)
{
	put(o, key);
	put(o, suffix);
	put(o, "=");
	put(o, value);
	put(o, "\n");
}

static void format_into(const struct kms_config *c, struct out *o)
{
	put(o, "# kmscrypt KMS configuration '");
	put(o, c->name ? c->name : "");
	put(o, "'. Managed by 'kmscrypt kms'; see kmscrypt(8).\n[KMS]\n");
	put_setting(o, "Provider", "", c->provider->name);
	for (const struct kms_option *opt = c->provider->options; opt->key; opt++) {
		const char *v = kms_config_get(c, opt->key), *cred = NULL;

		/* a secret taken from a credential (even once resolved) is never written out */
		if ((opt->flags & KMS_OPT_SECRET) && (cred = credential_of(c, opt)))
			put_setting(o, opt->key, CREDENTIAL_SUFFIX, cred);
		else if (v)
			put_setting(o, opt->key, "", v);
	}
	for (size_t i = 0; i < c->n_settings; i++)
		if (is_generic(c->settings[i].key) && strcmp(c->settings[i].key, "Provider") != 0)
			put_setting(o, c->settings[i].key, "", c->settings[i].value);
}

int kms_config_format(const struct kms_config *c, char **ret)
{
	struct out o = {};
	size_t n;

	/* exact size first: a buffer that grows would leave copies of secret values behind */
	format_into(c, &o);
	n = o.len;
	o = (struct out){.buf = malloc(n + 1)};
	if (!o.buf)
		return -ENOMEM;
	format_into(c, &o);
	o.buf[o.len] = 0;
	*ret = o.buf;
	return 0;
}

const char *kms_config_get(const struct kms_config *c, const char *key)
{
	for (size_t i = 0; i < c->n_settings; i++)
		if (strcmp(c->settings[i].key, key) == 0)
			return c->settings[i].value;
	return NULL;
}

const struct secret *kms_config_get_secret(const struct kms_config *c, const char *key)
{
	for (size_t i = 0; i < c->n_settings; i++)
		if (strcmp(c->settings[i].key, key) == 0)
			return c->settings[i].secret;
	return NULL;
}
