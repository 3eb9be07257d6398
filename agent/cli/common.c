/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <getopt.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "codec/token.h"
#include "config/kms_config.h"
#include "kmscrypt/exit.h"
#include "state/state.h"
#include "transport/http.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/safedir.h"
#include "util/secret.h"

int cli_exit_code(int r)
{
	switch (r) {
	case 0:
		return KMSCRYPT_EXIT_OK;
	case -EACCES:
		return KMSCRYPT_EXIT_DENIED;
	case -EAGAIN:
	case -ETIMEDOUT:
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return KMSCRYPT_EXIT_UNAVAILABLE;
	case -EBADMSG:
		return KMSCRYPT_EXIT_INVALID;
	case -ENOENT:
	case -ENODEV:
	case -ENXIO:
		return KMSCRYPT_EXIT_NOT_FOUND;
	case -EEXIST:
	case -EBUSY:
	case -ENOTEMPTY:
	case -EALREADY:
		return KMSCRYPT_EXIT_CONFLICT;
	case -EINVAL:
	case -ENOTTY: /* a confirmation was needed, no terminal and no -q (cli_confirm()) */
		return KMSCRYPT_EXIT_USAGE;
	case -ENOKEY:  /* a local file cannot be read for lack of permission: not the KMS's answer */
	case -ENOLINK: /* a state or configuration dir others may change (util/safedir.h) */
	case -ELOOP:   /* a symbolic link where kmscrypt follows none (state dir, lock, audit.log) */
		return KMSCRYPT_EXIT_FAILURE;
	case -EPERM:
	case -ENOTSUP:
	case -EIO:
	case -ENOSPC:
		return KMSCRYPT_EXIT_VOLUME;
	default:
		return KMSCRYPT_EXIT_FAILURE;
	}
}

const char *cli_exit_name(int code)
{
	static const char *const names[] = {"ok",        "failure",  "usage",
					    "denied",    "unavailable", "volume",
					    "not-found", "conflict", "invalid"};

	return code >= 0 && code < (int)ARRAY_SIZE(names) ? names[code] : "failure";
}

int cli_confirm(const struct cli *c, const char *what, const char *warning)
{
	char buf[64] = "";

	if (c->batch)
		return 0;
	if (!isatty(STDIN_FILENO)) {
		log_error("%s needs a confirmation and stdin is not a terminal; pass -q (--batch-mode) "
			  "to confirm from a script.",
			  what);
		return -ENOTTY;
	}
	fprintf(stderr, "\nWARNING!\n========\n%s\n\nAre you sure? (Type 'yes' in capital letters): ",
		warning);
	fflush(stderr);
	if (!fgets(buf, sizeof(buf), stdin) || strcmp(buf, "YES\n") != 0) {
		if (!strchr(buf, '\n'))
			fputc('\n', stderr);
		log_error("%s: not confirmed; nothing was changed.", what);
		return -ECANCELED;
	}
	return 0;
}

int cli_option_error(const char *cmd, int opt, char **argv)
{
	const char *arg = argv[optind - 1];
	int len = (int)strcspn(arg, "=");

	/* A short option inside a cluster ("-xy") is named by optopt; a long one by its word. */
	if (opt == ':') {
		if (strncmp(arg, "--", 2) != 0 && optopt)
			log_error("Option '-%c' of '%s' needs a value. See 'kmscrypt %s --help'.",
				  optopt, cmd, cmd);
		else
			log_error("Option '%.*s' of '%s' needs a value. See 'kmscrypt %s --help'.",
				  len, arg, cmd, cmd);
	} else if (strncmp(arg, "--", 2) != 0 && optopt) {
		log_error("Unknown option '-%c' for '%s'. See 'kmscrypt %s --help'.", optopt, cmd,
			  cmd);
	} else {
		log_error("Unknown option '%.*s' for '%s'. See 'kmscrypt %s --help'.", len, arg, cmd,
			  cmd);
	}
	return KMSCRYPT_EXIT_USAGE;
}

int cli_reject_options(const char *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (argv[i][0] == '-' && argv[i][1])
			return log_error_errno(EINVAL, "Unknown option '%.*s' for '%s'. See 'kmscrypt "
						       "%s --help'.",
					       (int)strcspn(argv[i], "="), argv[i], cmd, cmd);
	}
	return 0;
}

void cli_http_observer(const struct http_event *ev, void *userdata)
{
	char id[128] = "", retry[48] = "";

	if (ev->request_id)
		snprintf(id, sizeof(id), "request id %s, ", ev->request_id);
	if (ev->retrying)
		snprintf(retry, sizeof(retry), "; retrying in %u ms", ev->backoff_ms);
	/* LOG_INFO: shown with -v (and hidden by -q); the logger escapes the server's text */
	if (ev->status > 0)
		log_info("kms: %s %s -> %d in %u ms (%sattempt %u)%s", ev->method, ev->url,
			 ev->status, ev->latency_ms, id, ev->attempt, retry);
	else if (ev->error < 0)
		log_info("kms: %s %s -> failed in %u ms: %s (attempt %u)%s", ev->method, ev->url,
			 ev->latency_ms, ev->message && *ev->message ? ev->message : "no reply",
			 ev->attempt, retry);
	else /* KMIP: a reply, which the provider reads next */
		log_info("kms: %s %s -> reply in %u ms (attempt %u)", ev->method, ev->url,
			 ev->latency_ms, ev->attempt);
}
