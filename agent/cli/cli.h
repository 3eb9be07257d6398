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
	bool quiet;
	unsigned timeout_sec;    /* --timeout: overall deadline of one KMS operation */
};

/* -errno -> exit code (the table in kmscrypt(8)). */
int cli_exit_code(int r);
const char *cli_exit_name(int code);

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
