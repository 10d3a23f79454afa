/* lphist.h -- a fixed-size latency histogram (log-linear buckets, better
 * than 0.1% relative precision) for percentiles over millions of samples.
 *
 * Lifecycle: lphist_init(&h) (allocates ~230 KiB), lphist_add() per sample,
 * lphist_percentile() at the end, lphist_free(&h).
 */
#ifndef HOLDFAST_LPHIST_H
#define HOLDFAST_LPHIST_H

#include <stdint.h>

typedef struct {
    uint32_t *bucket;
    uint64_t count;
    uint64_t max;
} lphist;

/* Returns 0 or -1 (out of memory). */
int lphist_init(lphist *h);
void lphist_free(lphist *h);

/* Record one value (e.g. microseconds); values above 2^40 are clamped. */
void lphist_add(lphist *h, uint64_t v);

/* The smallest recorded value v such that at least p (0 < p <= 1) of the
 * samples are <= v, to bucket precision; 0 when empty.  p = 1 gives max. */
uint64_t lphist_percentile(const lphist *h, double p);

#endif
