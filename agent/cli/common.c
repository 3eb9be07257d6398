/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "codec/token.h"
#include "config/kms_config.h"
#include "kmscrypt/exit.h"
#include "state/state.h"
#include "util/cleanup.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/safedir.h"
#include "util/secret.h"
#include "volume/volume.h"

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

struct json_object *json_ms(double ms)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%.3f", ms);
	return json_object_new_double_s(ms, buf);
}

void cli_print_json(struct json_object *o)
{
	fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							JSON_C_TO_STRING_SPACED |
							JSON_C_TO_STRING_NOSLASHESCAPE),
	      stdout);
	fputc('\n', stdout);
	json_object_put(o);
}
