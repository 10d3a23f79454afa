/* waiters.h -- parked subscribers: an index by channel and a deadline heap.
 *
 * Pure bookkeeping (no I/O, no locks): owned by one dispatcher thread.
 * Lifecycle: waiter_new() -> waiters_add() -> (waiters_each_on() /
 * waiters_first_due()) -> waiters_remove() -> waiter_free().
 */
#ifndef HOLDFAST_WAITERS_H
#define HOLDFAST_WAITERS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "msglog.h"

#define WAITER_CLIENT_MAX 63 /* == REQUEST_CLIENT_MAX */

typedef struct waiter waiter;
typedef struct waiters_chan waiters_chan;

/* One of a waiter's channel memberships (a node of that channel's list). */
typedef struct waiter_link {
    struct waiter_link *prev, *next;
    waiters_chan *chan;
    waiter *w;
} waiter_link;

struct waiter {
    int fd;              /* the web server's connection */
    uint16_t reqid;      /* FastCGI request id */
    uint8_t format;      /* request_format */
    uint8_t nchannels;
    uint8_t state;       /* owner's: where the connection is in its life */
    uint8_t linger;      /* input may be left unread: drain before closing */
    uint8_t counted;     /* counted against its client's cap (limits_park) */
    uint8_t keep;        /* the web server keeps the connection (FCGI_KEEP_CONN) */
    uint8_t rerun;       /* owner's: on its list of streams to read again */
    uint8_t behind;      /* owner's: a stream whose reads wait for its output to drain */
    uint8_t wantout;     /* owner's: a parked stream waits for room to write */
    uint8_t told;        /* a durable stream's event stream sent its first control */
    uint32_t mark;       /* dispatcher scratch: dedupe within one pass */
    size_t heap_idx;     /* position in the deadline heap */
    int64_t deadline_ms; /* monotonic clock: the poll's end, or the write's */
    uint64_t seq;        /* arrival order: ties on deadline go first-come */
    int64_t cursor;      /* nothing of these channels is unread at or below */
    int64_t end_ms;      /* an event stream's end (monotonic clock) */
    int64_t ds_cursor;   /* a durable stream's read: the Stream-Cursor it echoed, -1 */
    uint64_t sent;       /* an event stream's bytes written so far */
    uint64_t sent_seen;  /* ... at its last ping: no progress since means stuck */
    char epoch[MSGLOG_EPOCH_LEN + 1];
    size_t limit;
    const char *cors;    /* CORS header lines (config-owned) */
    char client[WAITER_CLIENT_MAX + 1]; /* the client's address, for limits_unpark */
    buf *pending;        /* the answer being written once it is not parked; an
                            event stream's output not yet taken while it is */
    size_t pending_off;
    struct waiter *out_prev, *out_next; /* owner's list while reading/writing/draining */
    void *intake;        /* the front's state of a request still arriving */
    const char **channels; /* nchannels names, inside this allocation */
    size_t names_len;      /* bytes of the NUL-separated names block */
    waiter_link links[];   /* one per channel */
};

typedef struct waiters waiters;

/* A waiter for these channels (copied in), all other fields zeroed except
 * fd = -1.  NULL when out of memory. */
waiter *waiter_new(const char *const *channels, size_t n);
void waiter_free(waiter *w);

/* The names block, for comparing channel sets: *len bytes. */
const char *waiter_names(const waiter *w, size_t *len);

waiters *waiters_new(void);
/* Frees the registry (not the waiters still in it). */
void waiters_free(waiters *ws);

/* Index w by its channels and deadline: 0 or -ENOMEM. */
int waiters_add(waiters *ws, waiter *w);
void waiters_remove(waiters *ws, waiter *w);

/* Move w (in the registry) to a new deadline: only the heap changes. */
void waiters_reschedule(waiters *ws, waiter *w, int64_t deadline_ms);

size_t waiters_count(const waiters *ws);

/* The waiter with the earliest deadline, or NULL. */
waiter *waiters_first_due(const waiters *ws);

/* The i-th waiter in no particular order (0 <= i < count), for sweeps. */
waiter *waiters_at(const waiters *ws, size_t i);

/* Call fn for each waiter parked on channel `name`; fn must not add or
 * remove waiters. */
void waiters_each_on(const waiters *ws, const char *name, void (*fn)(waiter *, void *),
                     void *ud);

#endif
