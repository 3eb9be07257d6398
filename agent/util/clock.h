/* SPDX-License-Identifier: MIT */
/* The monotonic clock, for durations and deadlines (never for wall-clock times). */
#pragma once

/* CLOCK_MONOTONIC in milliseconds (microsecond precision). */
double now_ms(void);
