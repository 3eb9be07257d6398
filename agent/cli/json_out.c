/* SPDX-License-Identifier: MIT */
/* --json: one document on stdout per run (cli.h; the shapes: man/kmscrypt-json.schema.json). */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cli/cli.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secret.h"

/* Set once the run's document is out: main() then adds nothing (cli_json_finish()). */
static bool json_printed;

bool cli_json_printed(void)
{
	return json_printed;
}

static const char *json_text(struct json_object *o)
{
	return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
						     JSON_C_TO_STRING_NOSLASHESCAPE);
}

void cli_print_json(struct json_object *o)
{
	fputs(json_text(o), stdout);
	fputc('\n', stdout);
	json_object_put(o);
	json_printed = true;
}

int cli_print_json_secret(struct json_object *o, const char *placeholder, const struct secret *key)
{
	const char *js = json_text(o), *at;
	size_t pl = strlen(placeholder);
	int r = 0;

	/* the placeholder is printed by json-c as it is ("@...@" needs no escaping) */
	for (at = strstr(js, placeholder); at; at = strstr(at + 1, placeholder))
		if (at > js && at[-1] == '"' && at[pl] == '"')
			break;
	if (!at) {
		log_error("Internal error: cannot place the secret in the JSON output.");
		json_object_put(o);
		return -EINVAL;
	}
	/* the key by write(2): stdout's buffer is not wiped and would keep a copy */
	printf("%.*s", (int)(at - js), js);
	if (fflush(stdout) != 0 || fd_write_all(STDOUT_FILENO, key->buf, key->len) < 0)
		r = -EIO;
	printf("%s\n", at + pl);
	json_object_put(o);
	json_printed = true;
	return r;
}

struct json_object *json_str_or_null(const char *s)
{
	return s && *s ? json_object_new_string(s) : NULL;
}

struct json_object *json_ms(double ms)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%.3f", ms);
	return json_object_new_double_s(ms, buf);
}

const char *cli_exit_hint(int code)
{
	static const char *const hints[] = {
	    [1] = "fix what the error names (a file, its permissions, the state or configuration "
		  "directory), then retry",
	    [2] = "see 'kmscrypt COMMAND --help' and kmscrypt(8)",
	    [3] = "restore access to the key at the KMS, or fix the credentials with 'kmscrypt "
		  "kms edit', then retry",
	    [4] = "the KMS could not be reached in time: check the network and the endpoint, "
		  "then retry (unlock --wait-kms retries by itself)",
	    [5] = "check the device, its LUKS2 header and device-mapper (dm_crypt) as the error "
		  "says",
	    [6] = "check the name: 'kmscrypt status' lists the volumes, 'kmscrypt kms list' the "
		  "KMS configurations",
	    [7] = "the volume or configuration exists, is busy or is revoked: see 'kmscrypt "
		  "status' and the error",
	    [8] = "the token, the KMS reply or a configuration is malformed: see 'kmscrypt "
		  "check'; the recovery key opens the volume without the KMS",
	};

	if (code == 0)
		return NULL;
	return code > 0 && code < (int)(sizeof(hints) / sizeof(hints[0])) ? hints[code] : hints[1];
}

void cli_json_add_outcome(struct json_object *o, int exit, const char *error)
{
	char buf[96];

	json_object_object_add(o, "exit", json_object_new_int(exit));
	if (exit == 0)
		return;
	if (!error || !*error) {
		snprintf(buf, sizeof(buf), "failed with exit status %d (%s)", exit,
			 cli_exit_name(exit));
		error = buf;
	}
	json_object_object_add(o, "error", json_object_new_string(error));
	json_object_object_add(o, "hint", json_object_new_string(cli_exit_hint(exit)));
}

struct json_object *cli_json_volume(const char *device, const char *uuid, int exit,
				    const char *error)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "device", json_object_new_string(device ? device : ""));
	json_object_object_add(o, "uuid", json_str_or_null(uuid));
	cli_json_add_outcome(o, exit, error ? error : log_last_error());
	return o;
}

void cli_print_volume(struct json_object *item)
{
	struct json_object *o = json_object_new_object(), *arr = json_object_new_array();

	json_object_array_add(arr, item);
	json_object_object_add(o, "volumes", arr);
	cli_print_json(o);
}

void cli_snake_case(const char *name, char *buf, size_t n)
{
	size_t k = 0;

	if (n == 0)
		return;
	for (size_t i = 0; name[i] && k + 2 < n; i++) {
		unsigned char ch = (unsigned char)name[i],
			      prev = i ? (unsigned char)name[i - 1] : 0,
			      next = (unsigned char)name[i + 1];

		if (isupper(ch) && i > 0 &&
		    (islower(prev) || isdigit(prev) || (isupper(prev) && islower(next))))
			buf[k++] = '_';
		buf[k++] = isalnum(ch) ? (char)tolower(ch) : '_';
	}
	buf[k] = 0;
}

void cli_json_target(struct cli *c, const char *device, const char *uuid)
{
	snprintf(c->json_device, sizeof(c->json_device), "%s", device ? device : "");
	if (uuid)
		snprintf(c->json_uuid, sizeof(c->json_uuid), "%s", uuid);
}

void cli_json_finish(const struct cli *c, int code)
{
	struct json_object *o;

	if (!c->json || json_printed || code == 0)
		return;
	if (c->json_device[0]) {
		cli_print_volume(
		    cli_json_volume(c->json_device, c->json_uuid, code, log_first_error()));
		return;
	}
	o = json_object_new_object();
	cli_json_add_outcome(o, code, log_first_error());
	cli_print_json(o);
}
