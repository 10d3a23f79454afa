/* streams.h -- the Durable Streams protocol's routes (/v1/stream/NAME) on
 * top of the message log (dstore.h).
 *
 * Lifecycle: handler_run() hands ROUTE_STREAM here (streams_run); a live
 * read with nothing to send parks like a subscribe (format FORMAT_DS_POLL
 * or FORMAT_DS_SSE, on the stream's channel), and whoever holds it --
 * the dispatcher (worker.c) or a CGI process (cgi_front.c) -- calls
 * streams_poll() / streams_sse() on every wake and at its deadline.
 */
#ifndef HOLDFAST_STREAMS_H
#define HOLDFAST_STREAMS_H

#include <stdint.h>

#include "dstore.h"
#include "handler.h"

/* Answer r into out, or return HANDLER_PARK with *pos the position a live
 * read waits after. */
handler_result streams_run(handler *h, const request *r, const void *body, size_t len,
                           buf *out, int64_t *pos);

/* A publish (POST /pub/CHANNEL) to a channel that is a stream is an
 * append to it: 1 when the stream's rules refuse it (deleted: 410; closed:
 * 409 with Stream-Closed; another content type, or a Holdfast-Key -- a
 * stream's data is never compacted: 409), with the answer in out; 0 to
 * publish (also when no stream has the name). */
int streams_refuse_publish(handler *h, const request *r, const char *cors, buf *out);

/* A parked long-poll on channel (the stream's) after pos: 1 with the
 * answer in out (its data; 204 when final or closed; 404 when the stream
 * went away), 0 to keep waiting. */
int streams_poll(handler *h, const char *channel, const char *cors, int64_t pos,
                 int64_t cursor, int final, buf *out);

/* The same in two steps, so that long-polls waiting at the same place
 * share one read: streams_poll_read() fills b (1: answer each waiter with
 * streams_batch_reply(), its own CORS lines and echoed cursor; 0: they
 * wait on), then streams_batch_free(). */
typedef struct {
    dstore_status ds;     /* DSTORE_OK, or the refusal to answer */
    dstore_stream s;
    int64_t pos, next;
    size_t count;
    int more, at_tail, live;
    buf body;
} streams_batch;

int streams_poll_read(handler *h, const char *channel, int64_t pos, int final,
                      streams_batch *b);
void streams_batch_reply(handler *h, const streams_batch *b, const char *cors, int64_t cursor,
                         const char *if_none_match, buf *out);
void streams_batch_free(streams_batch *b);

/* The head of an event stream on channel. */
void streams_sse_head(handler *h, const char *channel, const char *cors, buf *out);

/* What one event-stream read did. */
typedef enum {
    STREAMS_SSE_FAILED = -1, /* storage: try again on the next wake */
    STREAMS_SSE_CAUGHT_UP,   /* everything up to the tail went out */
    STREAMS_SSE_MORE,        /* a chunk went out, more is waiting */
    STREAMS_SSE_END          /* closed (or gone): the last event went out; end it */
} streams_sse_result;

/* The next events of an event stream on channel after *pos (advanced):
 * `data` + `control` pairs; with `first`, a control event even when there
 * is nothing new, so the reader learns the tail at once. */
streams_sse_result streams_sse(handler *h, const char *channel, int64_t *pos, int64_t cursor,
                               int first, buf *out);

#endif
