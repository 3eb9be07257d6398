/* SPDX-License-Identifier: MIT */
/* kmscrypt kms create|list|show|edit|delete|check|policy: named KMS configurations (the proof of
 * one, a wrap/unwrap round trip, is core/check.c's). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "codec/base64.h"
#include "core/check.h"
#include "core/vol.h"
#include "codec/token.h"
#include "config/kms_config.h"
#include "kmscrypt/exit.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/escape.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"

#define KMS_SECRET_MAX 16384

/* Settings of every configuration, whatever its provider: --flag VALUE -> Key=VALUE (a switch
 * stores its fixed value). */
static const struct generic_flag {
	const char *flag, *key, *fixed;
} generic_flags[] = {
	{"description", "Description", NULL},
	{"interval", "WatchInterval", NULL},
	{"on-revoke", "OnRevoke", NULL},
	{"revoke-after", "RevokeAfter", NULL},
	{"auto-restore", "AutoRestore", "yes"},
	{"no-auto-restore", "AutoRestore", "no"},
};

struct kms_args {
	const char *name;
	const char *provider;
	/* generic settings seen on the command line */
	const struct generic_flag *gen[ARRAY_SIZE(generic_flags)];
	const char *gval[ARRAY_SIZE(generic_flags)];
	size_t ng;
	bool generate;
	/* provider options seen on the command line, in order */
	const struct kms_option *opt[32];
	const char *val[32];
	bool cred[32]; /* --<flag>-credential NAME of a secret option */
	size_t n;
};

static const struct kms_option *find_flag(const struct kms_provider *p, const char *flag,
					  bool *ret_is_file, bool *ret_is_cred)
{
	size_t fl = strlen(flag);

	for (const struct kms_option *o = p->options; o->key; o++) {
		size_t ol = strlen(o->flag);
		if (o->flags & KMS_OPT_SECRET) {
			if (fl == ol + 5 && strncmp(flag, o->flag, ol) == 0 &&
			    strcmp(flag + ol, "-file") == 0) {
				*ret_is_file = true;
				return o;
			}
			if (fl == ol + 11 && strncmp(flag, o->flag, ol) == 0 &&
			    strcmp(flag + ol, "-credential") == 0) {
				*ret_is_cred = true;
				return o;
			}
		} else if (strcmp(flag, o->flag) == 0) {
			*ret_is_file = false;
			return o;
		}
	}
	return NULL;
}

static void print_provider_options(const struct kms_provider *p, FILE *f)
{
	fprintf(f, "Options of provider %s (%s):\n", p->name, p->description);
	for (const struct kms_option *o = p->options; o->key; o++) {
		fprintf(f, "  --%s%s%s  %s%s\n", o->flag, (o->flags & KMS_OPT_SECRET) ? "-file" : "",
			(o->flags & KMS_OPT_BOOL)     ? ""
			: (o->flags & KMS_OPT_SECRET) ? " FILE"
						      : " VALUE",
			o->help, (o->flags & KMS_OPT_REQUIRED) ? " (required)" : "");
		if (o->flags & KMS_OPT_SECRET)
			fprintf(f, "  --%s-credential NAME  or read it at use from the systemd "
				   "credential NAME\n", o->flag);
	}
}

/* Parse "NAME --provider P --flag V ..." (create: @need_provider) or "NAME --flag V" (edit). */
static int parse_kms_args(int argc, char **argv, const struct kms_provider *edit_provider,
			  struct kms_args *a, const struct kms_provider **ret_provider)
{
	const struct kms_provider *p = edit_provider;

	/* --provider first: it decides which flags exist */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--provider") == 0 && i + 1 < argc)
			a->provider = argv[++i];
		else if (strncmp(argv[i], "--provider=", 11) == 0)
			a->provider = argv[i] + 11;
	}
	if (!p) {
		if (!a->provider)
			return log_error_errno(EINVAL, "Missing --provider. Known providers: see "
						       "'kmscrypt kms create --help'.");
		p = kms_provider_find(a->provider);
		if (!p)
			return log_error_errno(EINVAL,
					       "Unknown provider '%s'. See 'kmscrypt kms create --help'.",
					       a->provider);
	} else if (a->provider && strcmp(a->provider, p->name) != 0) {
		return log_error_errno(EINVAL, "The provider of a configuration cannot be changed; "
					       "create a new configuration instead.");
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *val = NULL, *eq;
		char flag[96];
		const struct kms_option *o;
		bool is_file = false, is_cred = false;

		if (strncmp(arg, "--", 2) != 0) {
			if (a->name)
				return log_error_errno(EINVAL, "Unexpected argument '%s'.", arg);
			a->name = arg;
			continue;
		}
		eq = strchr(arg, '=');
		snprintf(flag, sizeof(flag), "%.*s", eq ? (int)(eq - arg - 2) : (int)strlen(arg + 2),
			 arg + 2);
		if (strcmp(flag, "provider") == 0) {
			if (!eq)
				i++;
			continue;
		}
		if (strcmp(flag, "generate") == 0 && !edit_provider && strcmp(p->name, "local") == 0) {
			a->generate = true;
			continue;
		}
		o = find_flag(p, flag, &is_file, &is_cred);
		const struct generic_flag *g = NULL;
		for (size_t k = 0; !o && k < ARRAY_SIZE(generic_flags); k++)
			if (strcmp(flag, generic_flags[k].flag) == 0)
				g = &generic_flags[k];
		if (!o && !g) {
			log_error("Unknown option '--%s' for provider %s.", flag, p->name);
			print_provider_options(p, stderr);
			return -EINVAL;
		}
		if (o && (o->flags & KMS_OPT_BOOL)) {
			val = "yes";
		} else if (g && g->fixed) {
			val = g->fixed;
		} else if (eq) {
			val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return log_error_errno(EINVAL, "Option '--%s' needs a value.", flag);
			val = argv[++i];
		}
		if (!o) {
			size_t k;
			for (k = 0; k < a->ng && strcmp(a->gen[k]->key, g->key) != 0; k++)
				;
			if (k == a->ng)
				a->ng++;
			a->gen[k] = g; /* the last of --auto-restore/--no-auto-restore wins */
			a->gval[k] = val;
			continue;
		}
		if (a->n >= ARRAY_SIZE(a->opt))
			return log_error_errno(EINVAL, "Too many options.");
		a->opt[a->n] = o;
		a->val[a->n] = val;
		a->cred[a->n] = is_cred;
		a->n++;
	}
	if (!a->name)
		return log_error_errno(EINVAL, "Missing the configuration NAME.");
	if (!kms_config_name_valid(a->name))
		return log_error_errno(EINVAL,
				       "Invalid configuration name '%s': use letters, digits, '.', '_' "
				       "and '-' (at most 64, starting with a letter or digit).",
				       a->name);
	*ret_provider = p;
	return 0;
}

/* kms_config_set(), the one place settings are stored, refuses what would break the line format
 * (-EINVAL); say which option carried it. */
static int set_option(struct kms_config *cfg, const char *key, const char *flag, const char *value)
{
	int r = kms_config_set(cfg, key, value);

	if (r == -EINVAL)
		return log_error_errno(r, "--%s: the value must not contain CR, LF or NUL.", flag);
	return r;
}

/* Apply parsed options to @cfg: paths made absolute, secrets read from their files. */
static int apply_options(struct kms_config *cfg, const struct kms_args *a)
{
	for (size_t i = 0; i < a->n; i++) {
		const struct kms_option *o = a->opt[i];
		int r;

		if (a->cred[i]) {
			char key[128], flag[128];

			if (!kms_config_credential_name_valid(a->val[i]))
				return log_error_errno(EINVAL,
						       "--%s-credential: '%s' is not a credential name.",
						       o->flag, a->val[i]);
			snprintf(key, sizeof(key), "%sCredential", o->key);
			snprintf(flag, sizeof(flag), "%s-credential", o->flag);
			r = kms_config_unset(cfg, o->key);
			if (r >= 0)
				r = set_option(cfg, key, flag, a->val[i]);
			if (r < 0)
				return r;
		} else if (o->flags & KMS_OPT_SECRET) {
			_cleanup_secret_ struct secret *s = NULL;
			char key[128];

			snprintf(key, sizeof(key), "%sCredential", o->key);
			r = kms_config_unset(cfg, key);
			if (r < 0)
				return r;

			r = read_file_secret(a->val[i], KMS_SECRET_MAX, 1, &s);
			if (r < 0)
				return log_error_errno(r, "Cannot read --%s-file '%s': %m", o->flag,
						       a->val[i]);
			/* straight from locked memory into locked memory: no heap copy */
			r = kms_config_set_secret(cfg, o->key, s);
			if (r == -EINVAL)
				return log_error_errno(r,
						       "--%s-file '%s': the value must be one line "
						       "without CR, LF or NUL.",
						       o->flag, a->val[i]);
			if (r < 0)
				return r;
		} else if (o->flags & KMS_OPT_PATH) {
			_cleanup_free_ char *abs = NULL;

			if (a->val[i][0] == '/')
				abs = strdup(a->val[i]);
			else {
				char cwd[4096];
				if (!getcwd(cwd, sizeof(cwd)))
					return -errno;
				if (asprintf(&abs, "%s/%s", cwd, a->val[i]) < 0)
					abs = NULL;
			}
			if (!abs)
				return -ENOMEM;
			r = set_option(cfg, o->key, o->flag, abs);
			if (r < 0)
				return r;
		} else {
			r = set_option(cfg, o->key, o->flag, a->val[i]);
			if (r < 0)
				return r;
		}
	}
	for (size_t i = 0; i < a->ng; i++) {
		int r = set_option(cfg, a->gen[i]->key, a->gen[i]->flag, a->gval[i]);
		if (r < 0)
			return r;
	}
	if (a->ng > 0) {
		struct config_error err = {};
		int r = kms_config_watch_settings(cfg, NULL, &err);
		if (r < 0)
			return log_error_errno(r, "%s.", err.message);
	}
	return 0;
}

static int generate_key_file(const char *path)
{
	_cleanup_secret_ struct secret *key = NULL;
	_cleanup_close_ int fd = -1;
	int r;

	r = secret_random(32, &key);
	if (r < 0)
		return log_error_errno(r, "Cannot get random bytes: %m");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		if (errno == EEXIST)
			return log_error_errno(EEXIST,
					       "Key file '%s' already exists; --generate never "
					       "overwrites a key. Drop --generate to use it, or choose "
					       "another path.",
					       path);
		return log_error_errno(errno, "Cannot create key file '%s': %m", path);
	}
	if (write(fd, key->buf, key->len) != (ssize_t)key->len || fsync(fd) < 0) {
		r = -errno;
		(void)unlink(path);
		return log_error_errno(r, "Cannot write key file '%s': %m", path);
	}
	return 0;
}

static int write_config(const struct cli *c, const struct kms_config *cfg, bool create)
{
	_cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
	int r;

	if (asprintf(&dir, "%s/kms", c->core.config_dir) < 0)
		return -ENOMEM;
	r = mkdir_p(dir, 0700);
	if (r < 0)
		return log_error_errno(r, "Cannot create '%s': %m", dir);
	r = core_kms_path(&c->core, cfg->name, &path);
	if (r < 0)
		return r;
	r = kms_config_format(cfg, &text);
	if (r < 0)
		return r;
	r = write_file_atomic(path, text, strlen(text), 0600, create);
	explicit_bzero(text, strlen(text));
	if (r == -EEXIST)
		return log_error_errno(r, "KMS configuration '%s' already exists (%s).", cfg->name,
				       path);
	if (r < 0)
		return log_error_errno(r, "Cannot write '%s': %m", path);
	return 0;
}

static int kms_create(struct cli *c, int argc, char **argv)
{
	struct kms_args a = {};
	const struct kms_provider *p;
	_cleanup_free_ char *path = NULL;
	struct kms_config cfg = {};
	struct kms_key_info info = {};
	struct kms_error err = {};
	struct config_error cerr = {};
	char created[32], buf[512];
	double ms;
	int r, lock = -1;

	r = parse_kms_args(argc, argv, NULL, &a, &p);
	if (r < 0)
		return KMSCRYPT_EXIT_USAGE;
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	r = core_kms_path(&c->core, a.name, &path);
	if (r < 0)
		goto out;
	if (access(path, F_OK) == 0) {
		r = log_error_errno(EEXIST,
				    "KMS configuration '%s' already exists. Show it with 'kmscrypt kms "
				    "show %s', change credentials with 'kmscrypt kms edit'.",
				    a.name, a.name);
		goto out;
	}
	cfg.name = strdup(a.name);
	cfg.provider = p;
	if (!cfg.name) {
		r = -ENOMEM;
		goto out;
	}
	r = apply_options(&cfg, &a);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < a.n; i++)
		if ((a.opt[i]->flags & KMS_OPT_KEY_IDENTITY) && strcmp(p->name, "local") == 0) {
			r = log_error_errno(EINVAL, "--%s is computed from the key file; do not give "
						    "it.",
					    a.opt[i]->flag);
			goto out;
		}
	r = kms_config_validate(&cfg, &cerr);
	if (r < 0) {
		r = log_error_errno(EINVAL, "%s.", cerr.message);
		goto out;
	}
	if (a.generate) {
		r = generate_key_file(kms_config_get(&cfg, "KeyFile"));
		if (r < 0)
			goto out;
	}
	r = core_kms_resolve_credentials(&cfg);
	if (r < 0)
		goto out;
	if (p->provision) {
		r = p->provision(&cfg, &c->core.rt, &err);
		if (r < 0) {
			kms_error_describe(&err, buf, sizeof(buf));
			log_error_errno(r, "Cannot set up KMS configuration '%s' (%s): %s.", a.name,
					p->name, buf);
			goto out;
		}
	}
	r = core_kms_prove(&c->core, &cfg, &info, &ms, &err);
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		log_error_errno(r, "KMS configuration '%s' (%s) does not work: %s. Nothing was saved; "
				   "%s.",
				a.name, p->name, buf, core_hint_for(r));
		goto out;
	}
	/* Record the key identity the KMS reported, so later use can be checked against it. */
	if (p->identity_key && !kms_config_get(&cfg, p->identity_key) && info.key_id[0]) {
		r = kms_config_set(&cfg, p->identity_key, info.key_id);
		if (r == -EINVAL)
			r = log_error_errno(EBADMSG, "The KMS reported a key id with a line break; "
						     "nothing was saved.");
		if (r < 0)
			goto out;
	}
	format_rfc3339(time(NULL), created, sizeof(created));
	r = kms_config_set(&cfg, "Created", created);
	if (r < 0)
		goto out;
	r = write_config(c, &cfg, true);
	if (r < 0)
		goto out;
	(void)audit_append(c->core.state_dir, &(struct audit_record){.action = "kms-create",
								 .kms = a.name,
								 .result = "ok",
								 .duration_ms = -1});
	if (c->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(a.name));
		json_object_object_add(o, "provider", json_object_new_string(p->name));
		json_object_object_add(o, "key_id", json_object_new_string(info.key_id));
		json_object_object_add(o, "path", json_object_new_string(path));
		json_object_object_add(o, "duration_ms", json_ms(ms));
		cli_print_json(o);
	} else if (!c->quiet) {
		char ek[sizeof(info.key_id)]; /* the KMS's text: escaped (util/escape.h) */

		printf("Created KMS configuration '%s' (provider %s, key %s), checked in %.0f ms.\n",
		       a.name, p->name, cescape_buf(info.key_id, ek, sizeof(ek)), ms);
		if (p->warning)
			printf("Warning: %s.\n", p->warning);
	}
	if (info.warning[0]) /* the KMS's text (escaped by the logger) */
		log_warning("Warning: %s.", info.warning);
out:
	if (lock >= 0)
		close(lock);
	kms_config_done(&cfg);
	return cli_exit_code(r);
}

static int list_names(const struct cli *c, char ***ret)
{
	_cleanup_free_ char *dir = NULL;
	char **l = calloc(1, sizeof(*l));
	size_t n = 0;
	struct dirent **ents = NULL;
	int k;

	if (!l)
		return -ENOMEM;
	if (asprintf(&dir, "%s/kms", c->core.config_dir) < 0) {
		free(l);
		return -ENOMEM;
	}
	k = scandir(dir, &ents, NULL, alphasort);
	if (k < 0) {
		*ret = l;
		return errno == ENOENT ? 0 : -errno;
	}
	for (int i = 0; i < k; i++) {
		size_t len = strlen(ents[i]->d_name);
		if (len > 5 && strcmp(ents[i]->d_name + len - 5, ".conf") == 0) {
			char **nl = realloc(l, (n + 2) * sizeof(*l));
			if (nl) {
				l = nl;
				l[n] = strndup(ents[i]->d_name, len - 5);
				if (l[n])
					n++;
				l[n] = NULL;
			}
		}
		free(ents[i]);
	}
	free(ents);
	*ret = l;
	return 0;
}

static int kms_list(struct cli *c, int argc, char **argv)
{
	char **names = NULL;
	json_object *arr = NULL;
	int r, worst = 0;
	if (cli_reject_options("kms list", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;

	if (argc > 1)
		return log_error_errno(EINVAL, "Usage: kmscrypt kms list [--json]"),
		       KMSCRYPT_EXIT_USAGE;
	r = list_names(c, &names);
	if (r < 0) {
		log_error_errno(r, "Cannot list '%s/kms': %m", c->core.config_dir);
		strv_free(names);
		return cli_exit_code(r);
	}
	if (c->json)
		arr = json_object_new_array();
	else if (names[0] && !c->quiet)
		printf("%-24s %-8s %-44s %s\n", "NAME", "PROVIDER", "KEY", "VOLUMES");
	for (size_t i = 0; names[i]; i++) {
		struct kms_config cfg = {};
		char **uses = NULL;
		size_t nuse = 0;
		const char *key;

		r = core_kms_load(&c->core, names[i], &cfg);
		if (r < 0) {
			worst = worst ? worst : r;
			if (arr) { /* logged by core_kms_load() */
				json_object *o = json_object_new_object();
				json_object_object_add(o, "name", json_object_new_string(names[i]));
				cli_json_add_outcome(o, cli_exit_code(r), log_last_error());
				json_object_array_add(arr, o);
			}
			continue;
		}
		(void)usage_list(c->core.state_dir, names[i], &uses);
		while (uses && uses[nuse])
			nuse++;
		key = kms_config_get(&cfg, "KeyId");
		if (!key)
			key = "";
		if (arr) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "name", json_object_new_string(names[i]));
			json_object_object_add(o, "provider",
					       json_object_new_string(cfg.provider->name));
			json_object_object_add(o, "key_id", json_object_new_string(key));
			json_object_object_add(o, "volumes", json_object_new_int((int)nuse));
			json_object_array_add(arr, o);
		} else {
			char ek[256];

			printf("%-24s %-8s %-44s %zu\n", names[i], cfg.provider->name,
			       cescape_buf(key, ek, sizeof(ek)), nuse);
		}
		strv_free(uses);
		kms_config_done(&cfg);
	}
	if (arr) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "configurations", arr);
		cli_print_json(o);
	} else if (!names[0] && !c->quiet) {
		printf("No KMS configurations in '%s/kms'. Create one with 'kmscrypt kms create'.\n",
		       c->core.config_dir);
	}
	strv_free(names);
	return cli_exit_code(worst);
}

static int kms_show(struct cli *c, int argc, char **argv)
{
	struct kms_config cfg = {};
	char **uses = NULL;
	json_object *o = NULL, *settings = NULL, *vols = NULL;
	int r;
	if (cli_reject_options("kms show", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;

	if (argc != 2)
		return log_error_errno(EINVAL, "Usage: kmscrypt kms show NAME [--json]"),
		       KMSCRYPT_EXIT_USAGE;
	r = core_kms_load(&c->core, argv[1], &cfg);
	if (r < 0)
		return cli_exit_code(r);
	(void)usage_list(c->core.state_dir, cfg.name, &uses);
	if (c->json) {
		o = json_object_new_object();
		settings = json_object_new_object();
		vols = json_object_new_array();
		json_object_object_add(o, "name", json_object_new_string(cfg.name));
		json_object_object_add(o, "provider", json_object_new_string(cfg.provider->name));
	} else {
		printf("Name:        %s\nProvider:    %s (%s)\n", cfg.name, cfg.provider->name,
		       cfg.provider->description);
	}
	for (size_t i = 0; i < cfg.n_settings; i++) {
		const struct kms_option *opt = kms_config_option(cfg.provider, cfg.settings[i].key);
		const struct kms_option *copt =
			kms_config_credential_option(cfg.provider, cfg.settings[i].key);
		const char *v = cfg.settings[i].value, *k = cfg.settings[i].key;
		char cv[300], ev[600];

		if (strcmp(cfg.settings[i].key, "Provider") == 0)
			continue;
		if (opt && (opt->flags & KMS_OPT_SECRET))
			v = "********";
		if (copt) { /* "SecretAccessKey credential:aws-sk" */
			snprintf(cv, sizeof(cv), "credential:%s", v);
			k = copt->key;
			v = cv;
		}
		if (settings) {
			char sk[128]; /* "KeyFile" -> "key_file": snake_case keys everywhere (cli.h) */
			cli_snake_case(k, sk, sizeof(sk));
			json_object_object_add(settings, sk, json_object_new_string(v));
		} else
			printf("%-12s %s\n", k, cescape_buf(v, ev, sizeof(ev)));
	}
	for (size_t i = 0; uses && uses[i]; i++) {
		char eu[600];

		if (vols)
			json_object_array_add(vols, json_object_new_string(uses[i]));
		else
			printf("%-12s %s\n", i == 0 ? "UsedBy" : "", cescape_buf(uses[i], eu, sizeof(eu)));
	}
	struct kms_watch_settings ws = {};
	(void)kms_config_watch_settings(&cfg, &ws, NULL); /* validated when loaded */
	if (o) {
		json_object *w = json_object_new_object();
		json_object_object_add(w, "interval", json_object_new_int((int)ws.interval_sec));
		json_object_object_add(w, "on_revoke",
				       json_object_new_string(kms_on_revoke_name(ws.on_revoke)));
		json_object_object_add(w, "revoke_after", json_object_new_int((int)ws.revoke_after));
		json_object_object_add(w, "auto_restore", json_object_new_boolean(ws.auto_restore));
		json_object_object_add(o, "watch", w);
		json_object_object_add(o, "settings", settings);
		json_object_object_add(o, "used_by", vols);
		if (cfg.provider->warning)
			json_object_object_add(o, "warning",
					       json_object_new_string(cfg.provider->warning));
		cli_print_json(o);
	} else {
		if (!uses || !uses[0])
			printf("UsedBy       (no volume yet)\n");
		/* what `kmscrypt watch` does for this configuration's volumes */
		printf("watch interval: %u s\non revoke: %s\nrevoke after: %u denial%s\n"
		       "auto-restore: %s\n",
		       ws.interval_sec, kms_on_revoke_name(ws.on_revoke), ws.revoke_after,
		       ws.revoke_after == 1 ? "" : "s", ws.auto_restore ? "yes" : "no");
		if (cfg.provider->warning)
			printf("Warning:     %s.\n", cfg.provider->warning);
	}
	strv_free(uses);
	kms_config_done(&cfg);
	return 0;
}

static int kms_edit(struct cli *c, int argc, char **argv)
{
	struct kms_config cfg = {}, old = {};
	struct kms_args a = {};
	const struct kms_provider *p;
	struct kms_key_info info = {};
	struct kms_error err = {};
	char buf[512];
	double ms;
	int r, lock = -1;

	if (argc < 2 || strncmp(argv[1], "--", 2) == 0)
		return log_error_errno(EINVAL, "Usage: kmscrypt kms edit NAME --OPTION VALUE..."),
		       KMSCRYPT_EXIT_USAGE;
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	r = core_kms_load(&c->core, argv[1], &cfg);
	if (r < 0)
		goto out;
	r = core_kms_load(&c->core, argv[1], &old);
	if (r < 0)
		goto out;
	r = parse_kms_args(argc, argv, cfg.provider, &a, &p);
	if (r < 0)
		goto out;
	if (a.n == 0 && a.ng == 0) {
		log_error("Nothing to change. Options that 'kms edit' accepts for %s:", p->name);
		for (const struct kms_option *o = p->options; o->key; o++)
			if (o->flags & KMS_OPT_CREDENTIAL)
				fprintf(stderr, "  --%s%s\n", o->flag,
					(o->flags & KMS_OPT_SECRET) ? "-file FILE" : " VALUE");
		r = -EINVAL;
		goto out;
	}
	for (size_t i = 0; i < a.n; i++)
		if (!(a.opt[i]->flags & KMS_OPT_CREDENTIAL)) {
			r = log_error_errno(EINVAL,
					    "--%s cannot be changed: '%s' names the master key, and "
					    "volumes wrapped with it need it as it is. Create a new "
					    "configuration for another key.",
					    a.opt[i]->flag, a.opt[i]->key);
			goto out;
		}
	r = apply_options(&cfg, &a);
	if (r < 0)
		goto out;
	if (a.n == 0) {
		/* Only settings of kmscrypt's own (description, watch): no KMS round trip. */
		ms = 0;
		goto save;
	}
	/* The new credentials must reach the same key: prove it before saving. */
	r = core_kms_resolve_credentials(&cfg);
	if (r < 0)
		goto out;
	r = core_kms_prove(&c->core, &cfg, &info, &ms, &err);
	if (r < 0) {
		kms_error_describe(&err, buf, sizeof(buf));
		log_error_errno(r, "The new settings for '%s' do not work: %s. Nothing was changed.",
				cfg.name, buf);
		goto out;
	}
	{
		const char *want = p->identity_key ? kms_config_get(&old, p->identity_key) : NULL;
		if (want && *info.key_id && strcmp(want, info.key_id) != 0) {
			r = log_error_errno(EACCES,
					    "The new settings for '%s' reach key %s, not key %s that "
					    "this configuration is for. Nothing was changed.",
					    cfg.name, info.key_id, want);
			goto out;
		}
	}
save:
	r = write_config(c, &cfg, false);
	if (r < 0)
		goto out;
	(void)audit_append(c->core.state_dir, &(struct audit_record){.action = "kms-edit",
								 .kms = cfg.name,
								 .result = "ok",
								 .duration_ms = -1});
	if (c->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(cfg.name));
		json_object_object_add(o, "provider", json_object_new_string(p->name));
		json_object_object_add(o, "updated", json_object_new_boolean(true));
		/* a KMS round trip proved new credentials; kmscrypt's own settings need none */
		json_object_object_add(o, "checked", json_object_new_boolean(a.n > 0));
		if (a.n > 0) {
			json_object_object_add(o, "key_id", json_object_new_string(info.key_id));
			json_object_object_add(o, "duration_ms", json_ms(ms));
		}
		cli_print_json(o);
	} else if (!c->quiet && a.n == 0)
		printf("Updated KMS configuration '%s'.\n", cfg.name);
	else if (!c->quiet && !c->json)
		printf("Updated KMS configuration '%s'; checked in %.0f ms.\n", cfg.name, ms);
out:
	if (lock >= 0)
		close(lock);
	kms_config_done(&cfg);
	kms_config_done(&old);
	return r == -EINVAL ? KMSCRYPT_EXIT_USAGE : cli_exit_code(r);
}

/* usage_list() items are "uuid (device)": the UUID and, in @dev, the device ("?": unknown). */
static void usage_item_split(const char *item, char *uuid, size_t n_uuid, char *dev, size_t n_dev)
{
	const char *sp = strchr(item, ' ');
	size_t k = sp ? (size_t)(sp - item) : strlen(item);

	snprintf(uuid, n_uuid, "%.*s", (int)k, item);
	if (sp && sp[1] == '(' && strlen(sp) >= 3)
		snprintf(dev, n_dev, "%.*s", (int)(strlen(sp) - 3), sp + 2);
	else
		snprintf(dev, n_dev, "?");
}

/* --forget-missing: every volume of @uses is gone; drop their state records (those that name
 * @name) and the usage record, saying what is forgotten. */
static int forget_missing(struct cli *c, const char *name, char **uses, json_object *forgotten)
{
	int r;

	for (size_t i = 0; uses[i]; i++) {
		char uuid[64], dev[512];
		struct volume_state st = {};
		bool drop;

		usage_item_split(uses[i], uuid, sizeof(uuid), dev, sizeof(dev));
		r = state_load(c->core.state_dir, uuid, &st);
		drop = r == 0 && (!st.kms || strcmp(st.kms, name) == 0);
		volume_state_done(&st);
		if (drop) {
			r = state_remove(c->core.state_dir, uuid);
			if (r < 0)
				return log_error_errno(r, "Cannot remove the state record of "
							  "volume %s: %m",
						       uuid);
		}
		(void)audit_append(c->core.state_dir,
				   &(struct audit_record){.action = "kms-forget",
							  .uuid = uuid,
							  .device = strcmp(dev, "?") ? dev : NULL,
							  .kms = name,
							  .result = "ok",
							  .duration_ms = -1});
		if (forgotten)
			json_object_array_add(forgotten, json_object_new_string(uuid));
		else if (!c->quiet)
			printf("Forgot volume %s (%s): not found%s.\n", uuid, dev,
			       drop ? "; its state record is removed" : "");
	}
	r = usage_forget(c->core.state_dir, name);
	if (r < 0)
		return log_error_errno(r, "Cannot remove the usage record of '%s': %m", name);
	return 0;
}

static int kms_delete(struct cli *c, int argc, char **argv)
{
	struct kms_config cfg = {};
	_cleanup_free_ char *path = NULL;
	char **uses = NULL;
	json_object *forgotten = NULL;
	bool forget = false;
	int r, lock, kept = 1;

	/* --forget-missing is the one option: take it out, then refuse any other */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--forget-missing") == 0)
			forget = true;
		else
			argv[kept++] = argv[i];
	}
	argc = kept;
	if (cli_reject_options("kms delete", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;

	if (argc != 2)
		return log_error_errno(EINVAL,
				       "Usage: kmscrypt kms delete NAME [--forget-missing]"),
		       KMSCRYPT_EXIT_USAGE;
	if (!kms_config_name_valid(argv[1]))
		return log_error_errno(EINVAL,
				       "Invalid KMS configuration name '%s': use letters, digits, '.', "
				       "'_' and '-' (at most 64).",
				       argv[1]),
		       KMSCRYPT_EXIT_USAGE;
	lock = core_lock(&c->core);
	if (lock < 0)
		return cli_exit_code(lock);
	/* a file that does not parse, or whose mode is refused, may still be deleted */
	r = core_kms_load(&c->core, argv[1], &cfg);
	if (r < 0 && r != -EBADMSG && r != -EINVAL)
		goto out;
	r = usage_list(c->core.state_dir, argv[1], &uses);
	if (r < 0) {
		log_error_errno(r, "Cannot read the usage record of '%s': %m", argv[1]);
		goto out;
	}
	if (uses[0]) {
		size_t n = 0, n_missing = 0;
		bool *missing;

		while (uses[n])
			n++;
		missing = calloc(n, sizeof(*missing));
		if (!missing) {
			r = log_error_errno(ENOMEM, "Out of memory.");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			char uuid[64], dev[512];

			usage_item_split(uses[i], uuid, sizeof(uuid), dev, sizeof(dev));
			missing[i] = !vol_present(uuid, dev);
			n_missing += missing[i];
		}
		if (forget && n_missing == n) {
			free(missing);
			forgotten = c->json ? json_object_new_array() : NULL;
			r = forget_missing(c, argv[1], uses, forgotten);
			if (r < 0)
				goto out;
		} else {
			log_error("Refusing to delete KMS configuration '%s': %zu volume%s "
				  "bound to it, and their headers and backups may still need it:",
				  argv[1], n, n == 1 ? " was" : "s were");
			for (size_t i = 0; uses[i]; i++)
				log_error("  %s%s", uses[i], missing[i] ? ", not found" : "");
			free(missing);
			if (n_missing == n)
				log_error("None of them exists any more: 'kmscrypt kms delete %s "
					  "--forget-missing' forgets their records and deletes the "
					  "configuration.",
					  argv[1]);
			else if (forget)
				log_error("--forget-missing forgets only volumes that no "
					  "longer exist, and %zu of them still exist%s: nothing was "
					  "changed.",
					  n - n_missing, n - n_missing == 1 ? "s" : "");
			r = -EBUSY;
			goto out;
		}
	}
	r = core_kms_path(&c->core, argv[1], &path);
	if (r < 0)
		goto out;
	if (unlink(path) < 0) {
		r = log_error_errno(errno, "Cannot remove '%s': %m", path);
		goto out;
	}
	(void)audit_append(c->core.state_dir, &(struct audit_record){.action = "kms-delete",
								 .kms = argv[1],
								 .result = "ok",
								 .duration_ms = -1});
	if (c->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(argv[1]));
		json_object_object_add(o, "provider",
				       json_str_or_null(cfg.provider ? cfg.provider->name : NULL));
		json_object_object_add(o, "deleted", json_object_new_boolean(true));
		if (forgotten) {
			json_object_object_add(o, "forgotten", forgotten);
			forgotten = NULL;
		}
		cli_print_json(o);
	} else if (!c->quiet) {
		printf("Deleted KMS configuration '%s'.\n", argv[1]);
	}
out:
	close(lock);
	json_object_put(forgotten);
	strv_free(uses);
	kms_config_done(&cfg);
	return cli_exit_code(r);
}

/* `kms check NAME`: the round trip is core_kms_check()'s; this prints what it found. */
static int kms_check(struct cli *c, int argc, char **argv)
{
	struct core_kms_check k;
	int r;
	if (cli_reject_options("kms check", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;

	if (argc != 2)
		return log_error_errno(EINVAL, "Usage: kmscrypt kms check NAME [--json]"),
		       KMSCRYPT_EXIT_USAGE;
	r = core_kms_check(&c->core, argv[1], &k);
	if (!k.proved) { /* logged; nothing else to say */
		core_kms_check_done(&k);
		return cli_exit_code(r);
	}
	if (c->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(k.cfg.name));
		json_object_object_add(o, "provider", json_object_new_string(k.cfg.provider->name));
		json_object_object_add(o, "ok", json_object_new_boolean(r == 0));
		json_object_object_add(o, "result",
				       json_object_new_string(cli_exit_name(cli_exit_code(r))));
		if (r == 0) {
			json_object_object_add(o, "key_id", json_object_new_string(k.info.key_id));
			json_object_object_add(o, "key_state", json_object_new_string(k.info.state));
		} else {
			json_object_object_add(o, "error_code", json_object_new_string(k.err.code));
		}
		/* "error": the KMS's own message when it gave one, else the one logged */
		cli_json_add_outcome(o, cli_exit_code(r),
				     k.err.message[0] ? k.err.message : log_last_error());
		json_object_object_add(o, "duration_ms", json_ms(k.ms));
		cli_print_json(o);
	} else if (r == 0 && !c->quiet) {
		/* key id, state and description are the KMS's text: escaped (util/escape.h) */
		char ek[sizeof(k.info.key_id)], es[sizeof(k.info.state)];
		char ed[sizeof(k.info.description)];

		printf("KMS configuration '%s' works: key %s (%s%s%s) wrapped and unwrapped a test "
		       "secret in %.0f ms.\n",
		       k.cfg.name, cescape_buf(k.info.key_id, ek, sizeof(ek)),
		       cescape_buf(k.info.state, es, sizeof(es)), k.info.description[0] ? ", " : "",
		       cescape_buf(k.info.description, ed, sizeof(ed)), k.ms);
	}
	if (r == 0 && k.info.warning[0])
		log_warning("Warning: %s.", k.info.warning);
	core_kms_check_done(&k);
	return cli_exit_code(r);
}

/* `kms policy NAME`: the provider's least-privilege permissions, from the settings alone. */
static int kms_policy(struct cli *c, int argc, char **argv)
{
	struct kms_config cfg = {};
	struct kms_error err = {};
	char *text = NULL;
	int r;
	if (cli_reject_options("kms policy", argc, argv) < 0)
		return KMSCRYPT_EXIT_USAGE;

	if (argc != 2)
		return log_error_errno(EINVAL, "Usage: kmscrypt kms policy NAME [--json]"),
		       KMSCRYPT_EXIT_USAGE;
	r = core_kms_load(&c->core, argv[1], &cfg);
	if (r < 0)
		return cli_exit_code(r);
	if (!cfg.provider->policy) {
		log_error("Provider '%s' of KMS configuration '%s' cannot print a policy: grant the "
			  "permissions its documentation lists (see kmscrypt(8)).",
			  cfg.provider->name, cfg.name);
		kms_config_done(&cfg);
		return KMSCRYPT_EXIT_USAGE;
	}
	r = cfg.provider->policy(&cfg, &text, &err);
	if (r < 0) {
		log_error_errno(r, "Cannot make the policy of KMS configuration '%s': %s; fix it "
				   "with 'kmscrypt kms edit' or recreate it.",
				cfg.name, err.message[0] ? err.message : strerror(-r));
	} else if (c->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(cfg.name));
		json_object_object_add(o, "provider", json_object_new_string(cfg.provider->name));
		json_object_object_add(o, "policy", json_object_new_string(text));
		cli_json_add_outcome(o, 0, NULL);
		cli_print_json(o);
	} else {
		fputs(text, stdout);
	}
	free(text);
	kms_config_done(&cfg);
	return cli_exit_code(r);
}

int cmd_kms(struct cli *c, int argc, char **argv)
{
	static const struct {
		const char *verb;
		int (*fn)(struct cli *, int, char **);
	} verbs[] = {
		{"create", kms_create}, {"list", kms_list},     {"show", kms_show},
		{"edit", kms_edit},     {"delete", kms_delete}, {"check", kms_check},
		{"policy", kms_policy},
	};

	if (argc < 2) {
		cli_help("kms", stderr);
		return KMSCRYPT_EXIT_USAGE;
	}
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		if (strcmp(argv[1], verbs[i].verb) == 0)
			return verbs[i].fn(c, argc - 1, argv + 1);
	log_error("Unknown command 'kms %s'. See 'kmscrypt kms --help'.", argv[1]);
	return KMSCRYPT_EXIT_USAGE;
}
