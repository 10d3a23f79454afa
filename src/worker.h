/* worker.h -- a worker's dispatcher: holds parked subscribers and answers
 * them on wake, deadline or shutdown.
 *
 * Lifecycle: worker_start() spawns the dispatcher thread (and the wake
 * watcher); any thread hands subscribers over with worker_park(), and
 * connections whose answer it could not finish writing with
 * worker_adopt(); worker_stop() answers everyone still parked and joins.  The dispatcher
 * knows nothing of FastCGI: the front gives it a `frame` function that wraps
 * a CGI-style response for the wire.
 */
#ifndef HOLDFAST_WORKER_H
#define HOLDFAST_WORKER_H

#include "config.h"
#include "handler.h"
#include "jsonenc.h"
#include "waiters.h"

typedef struct worker worker;

/* Append the wire form of response resp[0..len) for w's connection to out. */
typedef void (*worker_frame_fn)(buf *out, const waiter *w, const char *resp, size_t len);

int worker_start(worker **out, const config *cfg, handler_counters *counters,
                 worker_frame_fn frame, char *err, size_t errlen);

/* Hand a parked subscriber to the dispatcher, which owns it from now on
 * (fd included).  -EAGAIN when the process already holds max_parked: the
 * caller still owns w and answers 503. */
int worker_park(worker *wk, waiter *w);

/* Hand over a non-blocking connection to finish: w->pending (framed for
 * the wire) is written from w->pending_off on, then the connection is
 * closed -- after draining its input when w->linger is set.  0, or -EAGAIN
 * when the hand-over failed (the caller still owns w and its fd). */
int worker_adopt(worker *wk, waiter *w);

/* 1 once the dispatcher has the log and the wake file open. */
int worker_ready(worker *wk);

/* Answer every parked subscriber (an empty batch: clients re-poll at once),
 * finish pending writes for at most a few seconds, stop the threads. */
void worker_stop(worker *wk);

#endif
