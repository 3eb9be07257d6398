/* SPDX-License-Identifier: MIT */
/* Command implementations.  Each cmd_*() returns a process exit code (include/kmscrypt/exit.h) and
 * logs its errors once, naming the volume, the cause and what to do next. */
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "core/core.h"
#include "util/clock.h"

struct config_error;
struct json_object;
struct kmscrypt_token;
struct volume_header;

struct cli {
	struct core_ctx core;    /* config/state dirs, lock timeout, KMS runtime (core/core.h) */
	bool json;               /* --json: machine output on stdout */
	bool quiet;              /* --quiet (and -q): print errors only */
	bool batch;              /* -q, --batch-mode: never ask, answer yes (cryptsetup's -q) */
	unsigned timeout_sec;    /* --timeout: overall deadline of one KMS operation */
};

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

/* Print a JSON object on stdout (pretty) and free it. */
void cli_print_json(struct json_object *o);

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

/* Help texts (cli/help.c); cli_help() prints the one for @cmd (NULL: overview). */
int cli_help(const char *cmd, FILE *f);
