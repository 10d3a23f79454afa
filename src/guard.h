/* guard.h -- abuse limits shared by every process on one database:
 * waiting subscribers per client, publish rate per key or client.
 *
 * Lifecycle: guard_open() once per process (it claims this process's row
 * of the shared table), then any thread calls guard_park()/unpark() and
 * guard_rate(); guard_close() at exit.  See guard.c for the file.
 */
#ifndef HOLDFAST_LIMITS_H
#define HOLDFAST_LIMITS_H

#include <stddef.h>
#include <stdint.h>

typedef struct guard guard;

typedef enum { GUARD_OK = 0, GUARD_REFUSED } guard_result;

/* Map "<db_path>-limits" (making it if needed) and claim a row: 0, or
 * -errno with the reason in err. */
int guard_open(guard **out, const char *db_path, char *err, size_t errlen);

/* Give the row back (a forked child's copy leaves its parent's alone);
 * NULL is a no-op. */
void guard_close(guard *l);

/* One more waiting subscriber for client[0..len): GUARD_REFUSED, with
 * nothing counted, when the client would then hold more than max across
 * every process.  max <= 0: no limit.  A process that found no free row
 * never refuses. */
guard_result guard_park(guard *l, const char *client, size_t len, int max);

/* The subscriber a successful guard_park() counted is gone. */
void guard_unpark(guard *l, const char *client, size_t len);

/* The client's count across live processes (for tests). */
int guard_parked(guard *l, const char *client, size_t len);

/* Take one publish from key's token bucket (rate_milli publishes per
 * second x1000, burst tokens at most): GUARD_REFUSED with *retry_after_s
 * (>= 1) until a token is back.  rate_milli <= 0: no limit. */
guard_result guard_rate(guard *l, const char *key, size_t len, int64_t rate_milli, int burst,
                          int *retry_after_s);

#endif
