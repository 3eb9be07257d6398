/* SPDX-License-Identifier: MIT */
/* argv -> command; process hardening; the only place that calls exit(). */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "watch/watch.h"
#include "kms/provider.h"
#include "kmscrypt/exit.h"
#include "kmscrypt/version.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "volume/volume.h"

/* The watcher is a front end of its own (watch/); main() only dispatches to it. */
static int cmd_watch(struct cli *c, int argc, char **argv)
{
	/* watch/ parses its own options and does not name a bad one: let glibc's getopt do it
	 * there (main() turns opterr off for the commands that name it themselves). */
	opterr = 1;
	return watch_main(&c->core, argc, argv);
}

static const struct {
	const char *name;
	int (*fn)(struct cli *, int, char **);
} commands[] = {
	{"kms", cmd_kms},       {"format", cmd_format}, {"bind", cmd_bind},
	{"unbind", cmd_unbind}, {"check", cmd_check},   {"unlock", cmd_unlock},
	{"lock", cmd_lock},     {"revoke", cmd_revoke}, {"restore", cmd_restore},
	{"status", cmd_status}, {"watch", cmd_watch},
	{"rotate-master", cmd_rotate_master}, {"rotate-secret", cmd_rotate_secret},
	{"reencrypt", cmd_reencrypt}, {"recovery-key", cmd_recovery_key},
};

static void harden(void)
{
	/* No core dumps, no ptrace by other users: key material passes through this process. */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	(void)setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0});
	umask(077);
}

/* Flat memory (issue 13): the threads of a run (--all) share one malloc arena instead of one
 * each (a second arena stayed resident at about 0.65 MiB, and how many arenas a run created
 * depended on thread timing; the threads wait on the KMS, not on malloc), and blocks of 64 KiB or
 * more (libcryptsetup's keyslot material, TLS and HTTP buffers) are mapped and unmapped rather
 * than kept in the arena after use. */
static void flat_memory(void)
{
	(void)mallopt(M_ARENA_MAX, 1);
	(void)mallopt(M_MMAP_THRESHOLD, 64 * 1024);
}

static int parse_uint(const char *s, unsigned max, unsigned *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v == 0 || v > max)
		return -EINVAL;
	*ret = (unsigned)v;
	return 0;
}

/* --json: a run that failed before printing its document prints the error object (cli.h). */
static int json_finish(const struct cli *c, int code)
{
	if (c->json)
		cli_json_finish(c, code);
	return code;
}

/* Take the global options out of argv (they may stand anywhere before "--"). */
static int parse_globals(struct cli *c, int *argc, char **argv, bool *help, bool *version)
{
	int out = 1;

	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		const char **dst = NULL;
		const char *val = NULL;

		if (strcmp(a, "--") == 0) {
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (!strcmp(a, "--json")) {
			c->json = true;
			continue;
		}
		/* -q is cryptsetup's --batch-mode: scripts that pass it expect no question (and,
		 * as kmscrypt's -q always did, errors only); --quiet alone still asks. */
		if (!strcmp(a, "-q") || !strcmp(a, "--batch-mode")) {
			c->batch = true;
			c->quiet = true;
			continue;
		}
		if (!strcmp(a, "--quiet")) {
			c->quiet = true;
			continue;
		}
		if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			c->verbose = true;
			continue;
		}
		if (!strcmp(a, "--debug")) {
			c->verbose = c->debug = true;
			continue;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			*help = true;
			continue;
		}
		if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			*version = true;
			continue;
		}
		if (!strncmp(a, "--config-dir", 12))
			dst = &c->core.config_dir;
		else if (!strncmp(a, "--state-dir", 11))
			dst = &c->core.state_dir;
		if (dst || !strncmp(a, "--timeout", 9)) {
			const char *eq = strchr(a, '=');
			size_t flen = eq ? (size_t)(eq - a) : strlen(a);
			if (flen != (dst == &c->core.config_dir ? 12u : dst ? 11u : 9u)) {
				argv[out++] = argv[i];
				continue;
			}
			if (eq)
				val = eq + 1;
			else if (i + 1 < *argc)
				val = argv[++i];
			else
				return log_error_errno(EINVAL, "Option '%s' needs a value.", a);
			if (!*val)
				return log_error_errno(EINVAL, "Option '%.*s' needs a value.", (int)flen,
						       a);
			if (dst)
				*dst = val;
			else if (parse_uint(val, 3600, &c->timeout_sec) < 0)
				return log_error_errno(EINVAL, "--timeout takes seconds, 1 to 3600.");
			continue;
		}
		argv[out++] = argv[i];
	}
	argv[out] = NULL;
	*argc = out;
	return 0;
}

int main(int argc, char **argv)
{
	struct cli c = {
		.core = {
			.config_dir = "/etc/kmscrypt",
			.state_dir = "/var/lib/kmscrypt",
			.lock_timeout_sec = 120,
		},
		.timeout_sec = 30,
	};
	bool help = false, version = false;
	const char *e;
	int r;

	harden();
	flat_memory();
	log_setup();
	opterr = 0; /* commands name a bad option themselves (cli_option_error()) */
	if ((e = secure_getenv("KMSCRYPT_CONFIG_DIR")) && *e)
		c.core.config_dir = e;
	if ((e = secure_getenv("KMSCRYPT_STATE_DIR")) && *e)
		c.core.state_dir = e;
	if (parse_globals(&c, &argc, argv, &help, &version) < 0) {
		for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
			c.json = c.json || !strcmp(argv[i], "--json");
		return json_finish(&c, KMSCRYPT_EXIT_USAGE);
	}
	if (c.verbose) {
		/* -v: each KMS request on stderr; --debug: libcryptsetup's debug output too */
		log_max_level = LOG_DEBUG;
		c.core.rt.http_observer = cli_http_observer;
		if (c.debug)
			volume_set_debug(true);
	}
	log_set_quiet(c.quiet);
	c.core.rt.config_dir = c.core.config_dir;
	c.core.rt.timeout_ms = (int)c.timeout_sec * 1000;

	if (version) {
		printf("kmscrypt %s\n", KMSCRYPT_VERSION);
		return 0;
	}
	if (argc < 2) {
		cli_help(NULL, help ? stdout : stderr);
		return help ? 0 : json_finish(&c, KMSCRYPT_EXIT_USAGE);
	}
	if (!strcmp(argv[1], "help")) {
		if (argc > 2 && cli_help(argv[2], stdout) < 0) {
			log_error("No help for '%s'.", argv[2]);
			return json_finish(&c, KMSCRYPT_EXIT_USAGE);
		}
		if (argc <= 2)
			cli_help(NULL, stdout);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(argv[1], commands[i].name) != 0)
			continue;
		if (help) {
			char sub[32];
			/* "kms create --help": that subcommand's help, not the whole kms page */
			snprintf(sub, sizeof(sub), "%s %s", commands[i].name, argc > 2 ? argv[2] : "");
			if (argc <= 2 || cli_help(sub, stdout) < 0)
				cli_help(commands[i].name, stdout);
			return 0;
		}
		/* Every command reads or changes root's files (KMS configurations are mode 0600,
		 * the state dir 0700) or devices: as another user it could only fail later, as a
		 * misleading "KMS denied" or "not found". */
		if (geteuid() != 0) {
			log_error("kmscrypt must run as root (it manages dm-crypt mappings, LUKS2 "
				  "headers and %s).",
				  c.core.config_dir);
			return json_finish(&c, KMSCRYPT_EXIT_FAILURE);
		}
		if (core_check_dirs(&c.core) < 0)
			return json_finish(&c, KMSCRYPT_EXIT_FAILURE);
		r = json_finish(&c, commands[i].fn(&c, argc - 1, argv + 1));
		fflush(stdout);
		return r;
	}
	log_error("Unknown command '%s'. See 'kmscrypt --help'.", argv[1]);
	return json_finish(&c, KMSCRYPT_EXIT_USAGE);
}
