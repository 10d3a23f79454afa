/* lphist.c -- log-linear latency histogram (see lphist.h).
 *
 * Values below 2048 get a bucket each.  Above, a value with its top bit at
 * position e (e >= 11) keeps its 11 leading bits: bucket
 * 2048 + (e - 11) * 1024 + (the 10 bits after the leading one).  A bucket
 * is reported as its midpoint, so the error is below 1/2048 of the value.
 */
#include "lphist.h"

#include <stdlib.h>

#define LINEAR 2048u
#define SUB 1024u
#define TOP_BIT 40u
#define NBUCKETS (LINEAR + (TOP_BIT - 11u + 1u) * SUB)

int lphist_init(lphist *h)
{
    h->bucket = calloc(NBUCKETS, sizeof *h->bucket);
    h->count = 0;
    h->max = 0;
    return h->bucket ? 0 : -1;
}

void lphist_free(lphist *h)
{
    free(h->bucket);
    h->bucket = NULL;
}

static unsigned top_bit(uint64_t v)
{
    unsigned e = 0;
    while (v >>= 1)
        e++;
    return e;
}

static size_t bucket_of(uint64_t v)
{
    if (v < LINEAR)
        return (size_t)v;
    unsigned e = top_bit(v);
    uint64_t frac = (v >> (e - 10)) & (SUB - 1);
    return LINEAR + (size_t)(e - 11) * SUB + (size_t)frac;
}

static uint64_t bucket_mid(size_t b)
{
    if (b < LINEAR)
        return b;
    size_t k = b - LINEAR;
    unsigned e = (unsigned)(k / SUB) + 11;
    uint64_t lo = ((uint64_t)(SUB + k % SUB)) << (e - 10);
    return lo + (((uint64_t)1 << (e - 10)) >> 1);
}

void lphist_add(lphist *h, uint64_t v)
{
    uint64_t cap = ((uint64_t)1 << TOP_BIT) - 1;
    if (v > cap)
        v = cap;
    h->bucket[bucket_of(v)]++;
    h->count++;
    if (v > h->max)
        h->max = v;
}

uint64_t lphist_percentile(const lphist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 1.0)
        return h->max;
    double want = p * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++; /* ceil without libm */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t b = 0; b < NBUCKETS; b++) {
        seen += h->bucket[b];
        if (seen >= rank) {
            uint64_t v = bucket_mid(b);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}
