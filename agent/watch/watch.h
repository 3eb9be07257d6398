/* SPDX-License-Identifier: MIT */
/* `kmscrypt watch` (watch/watch.c): the revocation watcher, a front end over core/. */
#pragma once
#include "core/core.h"

/* Run the watcher with its arguments (argv[0] is "watch"): --once, --metrics-file PATH.  Returns the
 * process exit code (0 after SIGTERM or --once). */
int watch_main(const struct core_ctx *c, int argc, char **argv);
