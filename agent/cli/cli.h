/* SPDX-License-Identifier: MIT */
/* Command implementations.  Each cmd_*() returns a process exit code (include/kmscrypt/exit.h) and
 * logs its errors once, naming the volume, the cause and what to do next. */
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "core/core.h"
#include "util/clock.h"

struct config_error;
struct http_event;
struct json_object;
struct kmscrypt_token;
struct secret;
struct volume_header;

struct cli {
	struct core_ctx core;    /* config/state dirs, lock timeout, KMS runtime (core/core.h) */
	bool json;               /* --json: machine output on stdout */
	bool quiet;              /* --quiet (and -q): print errors only */
	bool batch;              /* -q, --batch-mode: never ask, answer yes (cryptsetup's -q) */
	unsigned timeout_sec;    /* --timeout: overall deadline of one KMS operation */
	bool verbose;            /* -v, --verbose: debug log and one line per KMS request */
	bool debug;              /* --debug: -v and libcryptsetup's debug output */
	/* --json: the one volume a command works on, once known (device as given or resolved,
	 * UUID when read; cli_json_target()): main() reports a failure that printed nothing as its
	 * item */
	char json_device[4096];
	char json_uuid[40];
};

/* -v: one line on stderr per KMS request attempt (kms_runtime.http_observer): method, URL without
 * query, status or failure, latency, request id, attempt and the wait before a retry.  Never a body
 * or a header other than the request id. */
void cli_http_observer(const struct http_event *ev, void *userdata);

/* -errno -> exit code (the table in kmscrypt(8)). */
int cli_exit_code(int r);
const char *cli_exit_name(int code);

/* Ask before destroying a way to the data, as cryptsetup does: @warning (one or more lines) and
 * "Are you sure? (Type 'yes' in capital letters): " on stderr, the answer from a terminal on stdin.
 * 0 when confirmed (or --batch-mode), -ECANCELED when the answer is not YES, -ENOTTY (after
 * logging what to do) when stdin is not a terminal and -q was not given.  @what names the
 * command in the refusal. */
int cli_confirm(const struct cli *c, const char *what, const char *warning);

/* After getopt_long() returned '?' or ':' (optstring starting with ':', opterr 0): log
 * "unknown option '--frob'" or "option '--kms' needs a value" for @cmd and return the usage exit
 * code. */
int cli_option_error(const char *cmd, int opt, char **argv);

/* For commands without options of their own: -EINVAL, after naming it, when an argument of
 * @argv (before "--") looks like an option. */
int cli_reject_options(const char *cmd, int argc, char **argv);

/* --json (cli/json_out.c): one JSON document on stdout per run, whatever happens, in the shapes
 * of man/kmscrypt-json.schema.json ("JSON OUTPUT" in kmscrypt(8)).  Volume commands print
 * {"volumes": [...]} with one item per volume ("device", "uuid", "exit", and "error", "hint"
 * when it failed); kms commands print one object (snake_case keys); a run that fails before it
 * printed anything prints an error object ({"error", "hint", "exit"}) from main(), or, once
 * json_device names the one volume a command works on, a volumes document with that item. */

/* Print a JSON object on stdout (pretty) and free it. */
void cli_print_json(struct json_object *o);
/* The same for a document where the string member whose value is @placeholder stands for the
 * secret @key: the key goes from locked memory straight to stdout, never into json-c's heap.
 * @key must need no JSON escaping (modhex).  0, or -EIO when the key could not be written. */
int cli_print_json_secret(struct json_object *o, const char *placeholder,
			   const struct secret *key);
/* Whether this run printed its JSON document yet. */
bool cli_json_printed(void);
/* Print {"volumes": [@item]} (takes @item). */
void cli_print_volume(struct json_object *item);
/* A volume item: "device", "uuid" (null when empty or NULL), "exit"; when @exit is not 0,
 * "error" (@error, else the last error logged) and "hint" (cli_exit_hint()). */
struct json_object *cli_json_volume(const char *device, const char *uuid, int exit,
				    const char *error);
/* Add "exit" to a finished object, and "error" and "hint" when @exit is not 0. */
void cli_json_add_outcome(struct json_object *o, int exit, const char *error);
/* What to do next after exit status @code, one clause; NULL for 0. */
const char *cli_exit_hint(int code);
/* A configuration setting's name as a JSON key: "SecretAccessKey" -> "secret_access_key",
 * "CAFile" -> "ca_file" (an uppercase letter after a lowercase letter or digit, or one that
 * ends a run of capitals before a lowercase letter, starts a new word). */
void cli_snake_case(const char *name, char *buf, size_t n);
/* Name the one volume the command works on (@uuid may be NULL: not read yet). */
void cli_json_target(struct cli *c, const char *device, const char *uuid);
/* main(), after a command ran with --json and returned @code: when it printed nothing, print
 * the error object (or the failed item of c->json_device). */
void cli_json_finish(const struct cli *c, int code);

/* A JSON string, or null when @s is NULL or empty. */
struct json_object *json_str_or_null(const char *s);
/* A JSON number of milliseconds with microsecond precision. */
struct json_object *json_ms(double ms);

int cmd_kms(struct cli *c, int argc, char **argv);
int cmd_format(struct cli *c, int argc, char **argv);
int cmd_bind(struct cli *c, int argc, char **argv);
int cmd_unbind(struct cli *c, int argc, char **argv);
int cmd_check(struct cli *c, int argc, char **argv);
int cmd_unlock(struct cli *c, int argc, char **argv);
int cmd_lock(struct cli *c, int argc, char **argv);
int cmd_revoke(struct cli *c, int argc, char **argv);
int cmd_restore(struct cli *c, int argc, char **argv);
int cmd_status(struct cli *c, int argc, char **argv);
int cmd_rotate_master(struct cli *c, int argc, char **argv); /* cli/rotate_cmd.c */
int cmd_rotate_secret(struct cli *c, int argc, char **argv);
int cmd_reencrypt(struct cli *c, int argc, char **argv); /* cli/reencrypt_cmd.c */
int cmd_recovery_key(struct cli *c, int argc, char **argv); /* cli/recovery_cmd.c */

/* Help texts (cli/help.c); cli_help() prints the one for @cmd (NULL: overview). */
int cli_help(const char *cmd, FILE *f);
