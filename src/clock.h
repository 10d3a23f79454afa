/* clock.h -- holdfast's one pair of clocks, in milliseconds.
 *
 * Deadlines (polls, writes, back-offs) use the monotonic clock, which no
 * one can set; message times (message.time_ms) use the wall clock. */
#ifndef HOLDFAST_CLOCK_H
#define HOLDFAST_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in ms: for deadlines and intervals. */
int64_t clock_mono_ms(void);

/* CLOCK_REALTIME in ms since the Unix epoch: for timestamps. */
int64_t clock_real_ms(void);

#endif
