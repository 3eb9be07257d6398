/* SPDX-License-Identifier: MIT */
/*
 * The service manager's notification protocol (sd_notify(3)), without libsystemd: one datagram
 * of "KEY=VALUE\n..." lines to the AF_UNIX socket named by $NOTIFY_SOCKET.  The watcher sends
 * READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 (notes/watch-contract.md); the unit has
 * Type=notify and NotifyAccess=main, so only the main process may send.
 */
#pragma once
#include <stdint.h>

/** notify_send() - send @state, e.g. "READY=1\nSTATUS=watching 2 volumes on 1 KMS", to the
 *  service manager.  $NOTIFY_SOCKET is a file system path ("/run/systemd/notify") or, starting
 *  with "@", a name in the abstract namespace.  The variable is left set, so later calls
 *  (WATCHDOG=1) reach the same socket.
 *  Return: 0 when sent, and when $NOTIFY_SOCKET is unset or empty (not run by systemd, a no-op);
 *  -EINVAL for an empty @state or a $NOTIFY_SOCKET that is neither form or too long for
 *  sockaddr_un; else -errno of socket()/sendto() (-ENOENT, -ECONNREFUSED: nobody listens). */
int notify_send(const char *state);

/** notify_watchdog_usec() - the watchdog timeout the service manager expects pings within
 *  ($WATCHDOG_USEC, set by WatchdogSec=), for this process only: when $WATCHDOG_PID is set it
 *  must be our PID (a child that inherited the environment must not ping).  Ping every half of
 *  it (sd_watchdog_enabled(3)).
 *  Return: microseconds > 0; 0 when there is no watchdog, it is meant for another process, or a
 *  variable is not a plain decimal number (nothing to ping; never a guess). */
uint64_t notify_watchdog_usec(void);
