/* worker.h -- a worker's dispatcher: holds parked subscribers and answers
 * them on wake, deadline or shutdown -- or, for an event stream, delivers
 * to them and keeps them until the stream's end.
 *
 * Lifecycle: worker_start() spawns the dispatcher thread (and the wake
 * watcher); any thread hands subscribers over with worker_park(), and
 * connections whose answer it could not finish writing with
 * worker_adopt(), and requests still arriving slowly with worker_read();
 * worker_stop() answers everyone still parked and joins.  The dispatcher
 * knows nothing of FastCGI: the front gives it functions (worker_front)
 * that frame a CGI-style response for the wire and read a request.
 */
#ifndef HOLDFAST_WORKER_H
#define HOLDFAST_WORKER_H

#include "config.h"
#include "handler.h"
#include "jsonenc.h"
#include "waiters.h"

typedef struct worker worker;

/* What the front does for the dispatcher. */
typedef struct {
    /* Append the wire form of response resp[0..len) for w's connection to
     * out: the end of w's answer. */
    void (*frame)(buf *out, const waiter *w, const char *resp, size_t len);
    /* Append the wire form of data[0..len), a part of w's answer that goes
     * on (an event stream). */
    void (*part)(buf *out, const waiter *w, const char *data, size_t len);
    /* A request handed over with worker_read() is readable: read what is
     * there; 1 once it is done arriving (whole, refused or broken), 0 to
     * wait for more.  Runs on the dispatcher thread. */
    int (*read)(void *ud, waiter *w);
    /* The dispatcher lets go of such a request: it is done (late = 0), or
     * its deadline passed or the worker stops (late = 1).  The front owns
     * w and its fd again.  Runs on the dispatcher thread. */
    void (*done)(void *ud, waiter *w, int late);
    /* w's answer is out and the web server keeps the connection (w->keep):
     * set w->intake up for its next request; 0, or -1 to close instead.
     * Runs on the dispatcher thread. */
    int (*again)(void *ud, waiter *w);
    /* How long a kept connection may wait for its next request's first
     * byte, and then for the rest of it. */
    int64_t idle_ms, request_ms;
    void *ud;
} worker_front;

/* Start the dispatcher (front is copied); 0, or a negative errno with the
 * reason in err.  Storage that cannot be opened is not an error (see
 * worker.c, STORAGE). */
int worker_start(worker **out, const config *cfg, handler_counters *counters, guard *lim,
                 const worker_front *front, char *err, size_t errlen);

/* What worker_park() did. */
typedef enum {
    WORKER_PARK_OK = 0,  /* the dispatcher owns w */
    WORKER_PARK_FULL,    /* the process holds max_parked (or memory ran out): 503 */
    WORKER_PARK_CLIENT   /* w's client holds max_parked_per_client everywhere: 429 */
} worker_park_result;

/* Hand a parked subscriber to the dispatcher, which owns it from now on
 * (fd included), counting it against w->client's cap.  On a refusal the
 * caller still owns w and answers it. */
worker_park_result worker_park(worker *wk, waiter *w);

/* Hand over a non-blocking connection to finish: w->pending (framed for
 * the wire) is written from w->pending_off on, then the connection is
 * closed -- after draining its input when w->linger is set -- or, with
 * w->keep, waits for the web server's next request (KEPT CONNECTIONS).  0, or -EAGAIN
 * when the hand-over failed (the caller still owns w and its fd). */
int worker_adopt(worker *wk, waiter *w);

/* Hand over a connection whose request is still arriving (slowly): the
 * dispatcher waits for it without holding a thread, calling front->read
 * as bytes come, and front->done when it is whole or w->deadline_ms has
 * passed.  0, or -EAGAIN when the hand-over failed (the caller still owns
 * w and its fd). */
int worker_read(worker *wk, waiter *w);

/* On the dispatcher thread only: the head up to which every parked waiter
 * has been served (THE WAKE RULE's processed_head) and the log's epoch
 * into h's settled hint; 1 when known, else 0 (h->settled cleared). */
int worker_settled(worker *wk, handler *h);

/* 1 once the dispatcher has the log and the wake file open. */
int worker_ready(worker *wk);

/* Answer every parked subscriber (an empty batch: clients re-poll at once),
 * finish pending writes for at most a few seconds, stop the threads. */
void worker_stop(worker *wk);

#endif
