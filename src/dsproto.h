/* dsproto.h -- the Durable Streams protocol's values, parsed and printed:
 * offsets, Stream-TTL, Stream-Expires-At, producer numbers, JSON-mode
 * batches, SSE data lines and the live cursor.
 *
 * Pure: no I/O, no storage (request.c and the fuzzers use it); everything
 * here is a function of its arguments.
 */
#ifndef HOLDFAST_DSPROTO_H
#define HOLDFAST_DSPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* A stream's name (the path after /v1/stream/) is the channel of that
 * name, so it obeys the channel alphabet and length (MSGLOG_CHANNEL_MAX). */
#define DSPROTO_NAME_MAX 128
#define DSPROTO_OFFSET_LEN 33 /* 16 digits, '_', 16 digits */
#define DSPROTO_SEQ_MAX 200   /* bytes of a Stream-Seq or Producer-Id */
#define DSPROTO_INT_MAX 9007199254740991LL /* 2^53 - 1 */

/* What an offset parameter says. */
typedef enum {
    DSPROTO_OFFSET_BAD = 0, /* malformed: 400 */
    DSPROTO_OFFSET_START,   /* -1, or absent */
    DSPROTO_OFFSET_NOW,     /* now: the tail */
    DSPROTO_OFFSET_AT       /* a position (*pos) */
} dsproto_offset;

/* Parse an offset token s[0..n). */
dsproto_offset dsproto_offset_parse(const char *s, size_t n, int64_t *pos);

/* Print position pos as the offset token into out (DSPROTO_OFFSET_LEN + 1
 * bytes): offsets sort as strings exactly as positions sort as numbers. */
void dsproto_offset_format(int64_t pos, char out[DSPROTO_OFFSET_LEN + 1]);

/* A decimal integer as the protocol wants it: digits only, no sign, no
 * leading zero (except "0"), at most DSPROTO_INT_MAX.  0 or -1. */
int dsproto_uint_parse(const char *s, int64_t *out);

/* An RFC 3339 timestamp ("2026-12-04T10:00:00Z", fractions and numeric
 * offsets allowed) to Unix milliseconds: 0 or -1. */
int dsproto_time_parse(const char *s, int64_t *ms);

/* Unix milliseconds as RFC 3339 UTC with milliseconds, into out (64 bytes). */
void dsproto_time_format(int64_t ms, char out[64]);

/* 1 when a Stream-Closed header value means "closed" (exactly "true",
 * any case); absent or anything else is 0. */
int dsproto_closed(const char *v);

/* 1 when the type is JSON mode (application/json, parameters ignored). */
int dsproto_type_json(const char *type);
/* 1 when SSE carries this type's bytes as text (text/... or JSON mode). */
int dsproto_type_text(const char *type);
/* 1 when two content types name the same media type: type/subtype
 * compared without case, parameters ignored. */
int dsproto_type_same(const char *a, const char *b);

/* Split a JSON-mode body into its messages (one level of an array
 * flattened; any other value is one message): fn(ud, start, len) for each,
 * the bytes of each element as sent, surrounding blanks trimmed.
 * Returns the count, or -1 when body is not valid JSON.  `[]` gives 0. */
int dsproto_json_split(const char *body, size_t len,
                       void (*fn)(void *ud, const char *s, size_t n), void *ud);

/* The live cursor (protocol 10.1): the 20-second interval since
 * 2024-10-09T00:00:00Z at now_ms, or -- when the client echoed one at or
 * past it -- the client's plus jitter (1..180 intervals, from `noise`), so
 * a cursor never repeats. */
int64_t dsproto_cursor(int64_t now_ms, int64_t client, uint64_t noise);

#endif
