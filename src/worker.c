/* worker.c -- the dispatcher: one thread per worker process that owns every
 * parked subscriber.
 *
 * THE WAKE RULE.  `processed_head` is the head of the last snapshot in
 * which the dispatcher looked for changed channels and answered every
 * waiter they concerned.  Invariant: no parked waiter has an unread message
 * at or below max(its cursor, processed_head).  It holds because
 *   - on each wake the dispatcher asks the log which channels have rows in
 *     (processed_head, head] and re-reads exactly the waiters parked on them
 *     (Redis's "mark the key ready, serve it before the next poll");
 *   - a waiter handed over with a cursor below processed_head may have
 *     missed such a pass, so it is re-read at once on arrival.
 * This makes a timeout answer free: its cursor is max(cursor,
 * processed_head), with no query.  The wake file is only a hint that the
 * head moved; the watcher also ticks every data_version_ms so rows that
 * other programs insert are found without it.
 *
 * Waiters that want the same read (same channels, cursor, epoch, format,
 * limit) share one query and one encoded body: thousands of subscribers at
 * the head of one channel cost one read per message burst.
 *
 * Writes never block the loop: a parked fd is non-blocking, and an answer
 * that does not fit the socket buffer waits for EPOLLOUT.
 *
 * THE CLOSING RULE.  Every connection the dispatcher holds -- parked, or
 * handed over by an accepting thread with its answer unwritten -- is
 * closed in worker_drop() and nowhere else (a request still arriving is
 * given back to the front instead), and nothing is held without a
 * deadline: a poll's (the heap), a request's (set by the front), a
 * write's (WORKER_WRITE_MS) or a drain's (WORKER_DRAIN_MS,
 * WORKER_DRAIN_MAX bytes).  The reading, writing and draining lists are
 * FIFOs whose deadlines are entry time plus a constant, so their heads
 * are the earliest.  A connection whose input may still
 * hold unread bytes is never closed straight after its answer (the kernel
 * would reset it and the web server drop the answer): it is shut down for
 * writing and drained until the web server closes.
 *
 * KEPT CONNECTIONS.  When the web server sets FCGI_KEEP_CONN (nginx with
 * fastcgi_keep_conn on; Apache's mod_proxy_fcgi with enablereuse=on), an
 * answer written whole does not close the connection: it goes to the idle
 * list, and its next request is read here like a slow one (the front's
 * read and done), so a re-poll costs nginx no connect and holdfast no
 * accept or close.  An idle connection has front.idle_ms to begin its next
 * request (the web server closes idle ones itself well before: nginx's
 * keepalive_timeout is 60 s) and then front.request_ms to finish it.  A
 * connection that lingers (input left unread) or is answered while the
 * worker stops is closed as before.
 *
 * THE STREAM RULE.  An event stream (format SSE) is a parked waiter that
 * is never answered-and-closed by news: each read's events go out on its
 * connection (framed by front.part), its cursor advances to the read's,
 * and it stays in the registry, so THE WAKE RULE covers it like any
 * waiter and streams wanting the same read share it and its encoded
 * events.  Its output is bounded by the cursor, not by dropping events: a
 * read that hits the limit is read again on the next turn of the loop
 * (the rerun list), and a stream whose unsent output passes half of
 * sse_queue_max is not read (`behind`) until the web server has taken it
 * -- its cursor simply stays where it is.  Its deadline is a ping (a
 * comment line when nothing else went out, so the web server's idle
 * timeout never fires and a client that left is found), then its end at
 * sse_max, when the answer ends like any other and the browser reconnects
 * with Last-Event-ID.  A stream that took none of its output for a whole
 * ping interval is dropped (said in the log, counted as `left`).
 *
 * STORAGE.  A dispatcher whose log or wake file cannot be opened keeps
 * running (the accepting threads answer 503) and tries again every
 * second; once both are open it starts the wake watcher and says ready.
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "reply.h"
#include "streams.h"

#define WORKER_EVENTS 256
#define WORKER_FLUSH_MS 3000
#define WORKER_WRITE_MS 10000          /* for an answer to be taken */
#define WORKER_DRAIN_MS 10000          /* for the web server to close */
#define WORKER_DRAIN_MAX (64u << 20)   /* bytes read while draining */
#define WORKER_STORAGE_RETRY_MS 1000
#define WORKER_SSE_RETRY_MS 1000       /* EventSource's reconnect delay */

typedef struct {
    waiter *head, *tail;
    size_t n;
} worker_fifo;

struct worker {
    const config *cfg;
    handler_counters *counters;
    worker_front front;
    handler h; /* the dispatcher's own log connection and wake mapping */
    waiters *ws;
    int epfd, queue_efd, wake_efd, stop_efd;
    pthread_t thread;
    int started;
    pthread_mutex_t lock; /* guards queue */
    waiter **queue;
    size_t nqueue, capqueue;
    int64_t processed_head;
    uint64_t seq;
    uint32_t mark;
    int stopping;
    int watching;         /* the wake watcher runs (storage is open) */
    _Atomic int ready;    /* storage open: normal service */
    worker_fifo reading;  /* requests still arriving, for the front */
    worker_fifo writing;  /* answers going out */
    worker_fifo draining; /* answered, input still being read */
    worker_fifo idle;     /* kept connections waiting for their next request */
    worker_fifo rerun;    /* parked streams to read again (THE STREAM RULE) */
    waiter **batch; /* waiters to re-read in this pass */
    size_t nbatch, capbatch;
    buf resp, body;
};

static void worker_efd_drain(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof v) > 0)
        ;
}

static void worker_efd_kick(int fd) {
    uint64_t one = 1;
    /* EAGAIN: the counter is already non-zero, the reader will look. */
    if (write(fd, &one, sizeof one) < 0 && errno != EAGAIN)
        perror("holdfast: eventfd");
}

/* A parked waiter stops being one: the one place both counts drop. */
static void worker_unpark(worker *wk, waiter *w) {
    atomic_fetch_sub(&wk->counters->parked, 1);
    if (w->counted && wk->h.lim)
        guard_unpark(wk->h.lim, w->client, strlen(w->client));
    w->counted = 0;
}

/* ---- connections that are not parked --------------------------------------- */

/* Where a connection the dispatcher holds is in its life (waiter.state). */
typedef enum {
    WORKER_PARKED = 0, /* waiting for news or its deadline */
    WORKER_READING,    /* its request is still arriving: the front reads it */
    WORKER_WRITING,    /* its answer is going out */
    WORKER_DRAINING,   /* answered; reading what the web server still sends */
    WORKER_IDLE        /* answered and kept: waiting for the next request */
} worker_state;

static void worker_fifo_push(worker_fifo *f, waiter *w) {
    w->out_next = NULL;
    w->out_prev = f->tail;
    if (f->tail)
        f->tail->out_next = w;
    else
        f->head = w;
    f->tail = w;
    f->n++;
}

static void worker_fifo_remove(worker_fifo *f, waiter *w) {
    if (w->out_prev)
        w->out_prev->out_next = w->out_next;
    else
        f->head = w->out_next;
    if (w->out_next)
        w->out_next->out_prev = w->out_prev;
    else
        f->tail = w->out_prev;
    w->out_prev = w->out_next = NULL;
    f->n--;
}

/* The list w is on, or NULL while it is parked. */
static worker_fifo *worker_fifo_of(worker *wk, waiter *w) {
    return w->state == WORKER_READING    ? &wk->reading
           : w->state == WORKER_WRITING  ? &wk->writing
           : w->state == WORKER_DRAINING ? &wk->draining
           : w->state == WORKER_IDLE     ? &wk->idle
           : w->rerun                    ? &wk->rerun
                                         : NULL;
}

/* Forget w entirely: close its connection and free it.  The one place a
 * connection the dispatcher holds is closed. */
static void worker_drop(worker *wk, waiter *w) {
    worker_fifo *f = worker_fifo_of(wk, w);
    if (f)
        worker_fifo_remove(f, w);
    if (w->pending) {
        buf_free(w->pending);
        free(w->pending);
    }
    close(w->fd); /* also removes it from the epoll set */
    waiter_free(w);
}

static void worker_watch(worker *wk, waiter *w, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(wk->epfd, EPOLL_CTL_MOD, w->fd, &ev) != 0)
        worker_drop(wk, w);
}

/* The answer is out.  If the web server may still be sending (a body we
 * refused unread), closing now would make the kernel reset the connection
 * and the web server lose the answer (nginx: 502): say we are done
 * writing, then read and discard until it closes, within bounds. */
static void worker_written(worker *wk, waiter *w) {
    int keep = w->keep && !w->linger && !wk->stopping && wk->front.again(wk->front.ud, w) == 0;
    if (!w->linger && !keep) {
        worker_drop(wk, w);
        return;
    }
    worker_fifo_remove(&wk->writing, w);
    buf_free(w->pending);
    free(w->pending);
    w->pending = NULL;
    if (keep) { /* KEPT CONNECTIONS: wait for the next request */
        w->keep = 0;
        w->state = WORKER_IDLE;
        w->deadline_ms = clock_mono_ms() + wk->front.idle_ms;
        worker_fifo_push(&wk->idle, w);
        worker_watch(wk, w, EPOLLIN | EPOLLRDHUP);
        return;
    }
    w->pending_off = 0; /* now: bytes drained */
    shutdown(w->fd, SHUT_WR);
    w->state = WORKER_DRAINING;
    w->deadline_ms = clock_mono_ms() + WORKER_DRAIN_MS;
    worker_fifo_push(&wk->draining, w);
    worker_watch(wk, w, EPOLLIN | EPOLLRDHUP);
}

/* Read and discard; close at the end of the input, on an error, or past
 * WORKER_DRAIN_MAX bytes. */
static void worker_drain(worker *wk, waiter *w) {
    char tmp[16384];
    for (;;) {
        ssize_t n = read(w->fd, tmp, sizeof tmp);
        if (n > 0 && (w->pending_off += (size_t)n) <= WORKER_DRAIN_MAX)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        worker_drop(wk, w);
        return;
    }
}

/* Write what is pending; then close, or drain (worker_written). */
static void worker_flush(worker *wk, waiter *w) {
    buf *p = w->pending;
    while (w->pending_off < p->len) {
        ssize_t n = write(w->fd, p->p + w->pending_off, p->len - w->pending_off);
        if (n > 0) {
            w->pending_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            worker_watch(wk, w, EPOLLOUT);
            return;
        } else {
            worker_drop(wk, w); /* the web server is gone: nothing more to do */
            return;
        }
    }
    worker_written(wk, w);
}

/* Start writing w->pending (the connection is in the epoll set). */
static void worker_write(worker *wk, waiter *w) {
    w->state = WORKER_WRITING;
    w->deadline_ms = clock_mono_ms() + WORKER_WRITE_MS;
    worker_fifo_push(&wk->writing, w);
    worker_flush(wk, w);
}

/* Send a complete response to a waiter that is no longer parked. */
static void worker_send(worker *wk, waiter *w, const buf *resp) {
    buf *p = malloc(sizeof *p);
    if (!p) {
        close(w->fd);
        waiter_free(w);
        return;
    }
    buf_init(p);
    wk->front.frame(p, w, resp->p, resp->len);
    w->pending = p;
    w->pending_off = 0;
    if (p->oom) {
        worker_drop(wk, w);
        return;
    }
    worker_write(wk, w);
}

/* Give a request still arriving back to the front: it is whole, or late. */
static void worker_release(worker *wk, waiter *w, int late) {
    worker_fifo_remove(worker_fifo_of(wk, w), w);
    epoll_ctl(wk->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->state = WORKER_PARKED;
    wk->front.done(wk->front.ud, w, late);
}

/* Close what has run out of time: writes the web server does not take,
 * drains it does not end; and hand back requests that did not arrive in
 * time.  Each list is in deadline order (the reading one nearly: entries
 * come within milliseconds of their accept, see fcgi_front.c). */
static void worker_expire_out(worker *wk, int64_t now) {
    while (wk->reading.head && (wk->reading.head->deadline_ms <= now || wk->stopping))
        worker_release(wk, wk->reading.head, 1);
    while (wk->idle.head && (wk->idle.head->deadline_ms <= now || wk->stopping))
        worker_release(wk, wk->idle.head, 1);
    worker_fifo *lists[] = {&wk->writing, &wk->draining};
    for (size_t i = 0; i < 2; i++)
        while (lists[i]->head && lists[i]->head->deadline_ms <= now)
            worker_drop(wk, lists[i]->head);
}

/* Take w out of the registry and answer it with resp. */
static void worker_finish(worker *wk, waiter *w, const buf *resp) {
    waiters_remove(wk->ws, w);
    worker_unpark(wk, w);
    worker_send(wk, w, resp);
}

/* The client left while parked (or its connection failed). */
static void worker_left(worker *wk, waiter *w) {
    waiters_remove(wk->ws, w);
    worker_unpark(wk, w);
    atomic_fetch_add(&wk->counters->left, 1);
    worker_drop(wk, w);
}

/* ---- event streams (THE STREAM RULE) ---------------------------------------- */

static int worker_is_stream(const waiter *w) {
    return w->format == FORMAT_SSE || w->format == FORMAT_DS_SSE;
}

/* Bytes of a stream's output not yet taken by the web server. */
static size_t worker_unsent(const waiter *w) {
    return w->pending ? w->pending->len - w->pending_off : 0;
}

/* Read s again on the next turn of the loop (once). */
static void worker_rerun(worker *wk, waiter *s) {
    if (!s->rerun) {
        s->rerun = 1;
        worker_fifo_push(&wk->rerun, s);
    }
}

/* Write what the stream has; a socket that is full waits for EPOLLOUT.
 * 0, or -1 when the connection failed (s is gone). */
static int worker_stream_flush(worker *wk, waiter *s) {
    buf *p = s->pending;
    int full = 0;
    while (p && s->pending_off < p->len) {
        ssize_t n = write(s->fd, p->p + s->pending_off, p->len - s->pending_off);
        if (n > 0) {
            s->pending_off += (size_t)n;
            s->sent += (uint64_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            full = 1;
            break;
        } else {
            worker_left(wk, s);
            return -1;
        }
    }
    if (p && s->pending_off == p->len) { /* all out: a parked stream holds no buffer */
        buf_free(p);
        free(p);
        s->pending = NULL;
        s->pending_off = 0;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (full ? EPOLLOUT : 0),
                             .data.ptr = s};
    if (full != s->wantout && epoll_ctl(wk->epfd, EPOLL_CTL_MOD, s->fd, &ev) != 0) {
        worker_left(wk, s);
        return -1;
    }
    s->wantout = (uint8_t)full;
    if (s->behind && worker_unsent(s) <= (size_t)wk->cfg->sse_queue_max / 2) {
        s->behind = 0;
        worker_rerun(wk, s);
    }
    return 0;
}

/* Queue data[0..len) on stream s, framed by the front, and write it. */
static int worker_stream_put(worker *wk, waiter *s, const char *data, size_t len) {
    if (!s->pending) {
        if (!(s->pending = malloc(sizeof *s->pending))) {
            worker_left(wk, s);
            return -1;
        }
        buf_init(s->pending);
        s->pending_off = 0;
    } else if (s->pending_off > 0 && s->pending_off >= s->pending->len / 2) {
        memmove(s->pending->p, s->pending->p + s->pending_off, worker_unsent(s));
        s->pending->len -= s->pending_off;
        s->pending_off = 0;
    }
    wk->front.part(s->pending, s, data, len);
    if (s->pending->oom) {
        worker_left(wk, s);
        return -1;
    }
    return worker_stream_flush(wk, s);
}

/* The stream's time is up (or the worker stops): end its answer; the web
 * server closes or keeps the connection as for any answer. */
static void worker_stream_end(worker *wk, waiter *s) {
    waiters_remove(wk->ws, s);
    worker_unpark(wk, s);
    if (s->rerun) {
        worker_fifo_remove(&wk->rerun, s);
        s->rerun = 0;
    }
    if (!s->pending && !(s->pending = calloc(1, sizeof *s->pending))) {
        worker_drop(wk, s);
        return;
    }
    wk->front.frame(s->pending, s, "", 0);
    if (s->pending->oom) {
        worker_drop(wk, s);
        return;
    }
    worker_write(wk, s);
}

/* A stream's deadline: its end, or a ping -- a comment line when nothing
 * went out since the last one, so a client that left is found by the
 * write, and the web server's idle timeout never fires.  A stream that
 * took nothing of its output for a whole ping interval is dropped: it
 * reconnects from its Last-Event-ID and loses nothing. */
static void worker_stream_due(worker *wk, waiter *s) {
    int64_t now = clock_mono_ms();
    if (wk->stopping || now >= s->end_ms) {
        worker_stream_end(wk, s);
        return;
    }
    if (worker_unsent(s) && s->sent == s->sent_seen) {
        fprintf(stderr, "holdfast[%d]: an event stream took none of its %zu bytes in %d s:"
                " dropped (it resumes from its Last-Event-ID)\n", (int)getpid(),
                worker_unsent(s), wk->cfg->sse_ping_s);
        worker_left(wk, s);
        return;
    }
    int64_t next = now + wk->cfg->sse_ping_s * 1000LL;
    waiters_reschedule(wk->ws, s, next < s->end_ms ? next : s->end_ms);
    if (s->sent == s->sent_seen && worker_stream_put(wk, s, ": ping\n\n", 8) != 0)
        return;
    s->sent_seen = s->sent;
}

/* A parked stream's connection has an event: room to write, or the web
 * server closed (the client left). */
static void worker_stream_event(worker *wk, waiter *s, uint32_t events) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        worker_left(wk, s);
    else if (events & EPOLLOUT)
        worker_stream_flush(wk, s);
}

/* Deliver one read's events (body, shared by a group) to stream s. */
static void worker_stream_deliver(worker *wk, waiter *s, const msglog_batch *b,
                                  const buf *body) {
    s->cursor = b->cursor;
    memcpy(s->epoch, b->epoch, sizeof s->epoch);
    handler_count_stream(wk->counters, b);
    if (body->len && worker_stream_put(wk, s, body->p, body->len) != 0)
        return;
    if (worker_unsent(s) > (size_t)wk->cfg->sse_queue_max / 2)
        s->behind = 1; /* read on once the web server took half */
    else if (b->more)
        worker_rerun(wk, s);
}

/* ---- timeouts -------------------------------------------------------------- */

/* Answer w with no messages and the safe cursor (see THE WAKE RULE). */
static void worker_expire(worker *wk, waiter *w) {
    msglog_batch b;
    if (worker_is_stream(w)) {
        worker_stream_due(wk, w);
        return;
    }
    if (w->format == FORMAT_DS_POLL) {
        buf_reset(&wk->resp);
        streams_poll(&wk->h, w->channels[0], w->cors, w->cursor, w->ds_cursor, 1, &wk->resp);
        worker_finish(wk, w, &wk->resp);
        return;
    }
    memset(&b, 0, sizeof b);
    b.cursor = w->cursor > wk->processed_head ? w->cursor : wk->processed_head;
    b.head = b.cursor;
    memcpy(b.epoch, w->epoch, sizeof b.epoch);
    buf_reset(&wk->resp);
    handler_answer(wk->cfg, &wk->resp, &b, (request_format)w->format, w->cors,
                   wk->counters);
    worker_finish(wk, w, &wk->resp);
}

static void worker_expire_due(worker *wk) {
    int64_t now = clock_mono_ms();
    waiter *w;
    while ((w = waiters_first_due(wk->ws)) && (wk->stopping || w->deadline_ms <= now))
        worker_expire(wk, w);
}

/* ---- re-reading on change ---------------------------------------------------- */

/* Start a new pass; 0 is never a pass's mark (it is every new waiter's). */
static void worker_next_mark(worker *wk) {
    if (++wk->mark == 0)
        wk->mark = 1;
}

static void worker_batch_push(worker *wk, waiter *w) {
    if (w->mark == wk->mark)
        return; /* already in this pass */
    if (wk->nbatch == wk->capbatch) {
        size_t cap = wk->capbatch ? wk->capbatch * 2 : 64;
        waiter **b = realloc(wk->batch, cap * sizeof *b);
        if (!b)
            return; /* it stays parked; its deadline still answers it */
        wk->batch = b;
        wk->capbatch = cap;
    }
    w->mark = wk->mark;
    wk->batch[wk->nbatch++] = w;
}

/* Start the streams whose reads the last pass left (a limit reached, or
 * output drained): into a new pass. */
static void worker_take_reruns(worker *wk) {
    while (wk->rerun.head) {
        waiter *s = wk->rerun.head;
        worker_fifo_remove(&wk->rerun, s);
        s->rerun = 0;
        worker_batch_push(wk, s);
    }
}

static void worker_mark_cb(waiter *w, void *ud) {
    worker_batch_push(ud, w);
}

static void worker_changed_cb(const char *channel, void *ud) {
    worker *wk = ud;
    waiters_each_on(wk->ws, channel, worker_mark_cb, wk);
}

/* Order waiters so that those wanting the same read are adjacent. */
static int worker_cmp(const void *pa, const void *pb) {
    const waiter *a = *(waiter *const *)pa, *b = *(waiter *const *)pb;
    size_t la, lb;
    const char *na = waiter_names(a, &la), *nb = waiter_names(b, &lb);
    if (la != lb)
        return la < lb ? -1 : 1;
    int c = memcmp(na, nb, la);
    if (c)
        return c;
    if (a->cursor != b->cursor)
        return a->cursor < b->cursor ? -1 : 1;
    if ((c = strcmp(a->epoch, b->epoch)) != 0)
        return c;
    if (a->format != b->format)
        return a->format < b->format ? -1 : 1;
    if (a->limit != b->limit)
        return a->limit < b->limit ? -1 : 1;
    return (a->cors > b->cors) - (a->cors < b->cors);
}

/* A durable stream's event stream: its own read (the events carry its
 * offsets), then on like any stream -- or its end, once closed. */
static void worker_ds_stream(worker *wk, waiter *s) {
    buf_reset(&wk->body);
    streams_sse_result r = streams_sse(&wk->h, s->channels[0], &s->cursor, s->ds_cursor,
                                       !s->told, &wk->body);
    if (r == STREAMS_SSE_FAILED)
        return; /* the next wake reads again */
    s->told = 1;
    if (wk->body.len && worker_stream_put(wk, s, wk->body.p, wk->body.len) != 0)
        return;
    if (r == STREAMS_SSE_END)
        worker_stream_end(wk, s);
    else if (worker_unsent(s) > (size_t)wk->cfg->sse_queue_max / 2)
        s->behind = 1;
    else if (r == STREAMS_SSE_MORE)
        worker_rerun(wk, s);
}

/* One read for k streams that want the same thing (those behind excepted):
 * its events, encoded once, go to each; they stay parked. */
static void worker_stream_group(worker *wk, waiter **g, size_t k) {
    size_t n = 0;
    for (size_t i = 0; i < k; i++)
        if (!g[i]->behind)
            g[n++] = g[i];
    if (n == 0)
        return;
    if (g[0]->format == FORMAT_DS_SSE) {
        for (size_t i = 0; i < n; i++)
            worker_ds_stream(wk, g[i]);
        return;
    }
    waiter *w0 = g[0];
    msglog_query q = {.channels = w0->channels, .nchannels = w0->nchannels,
                      .since = w0->cursor, .epoch = w0->epoch, .limit = w0->limit};
    msglog_batch b;
    if (msglog_read(wk->h.log, &q, &b)) {
        fprintf(stderr, "holdfast[%d]: read for event streams: %s\n", (int)getpid(),
                msglog_errmsg(wk->h.log));
        return; /* the next wake reads again */
    }
    buf_reset(&wk->body);
    reply_sse_batch(&wk->body, &b);
    for (size_t i = 0; i < n; i++)
        worker_stream_deliver(wk, g[i], &b, &wk->body);
    msglog_batch_free(&b);
}

/* One read for k waiters that want the same thing; answer them if there is
 * news, else advance their cursors and leave them parked. */
static void worker_answer_group(worker *wk, waiter **g, size_t k) {
    waiter *w0 = g[0];
    if (worker_is_stream(w0)) {
        worker_stream_group(wk, g, k);
        return;
    }
    if (w0->format == FORMAT_DS_POLL) { /* one read, each its own Stream-Cursor */
        streams_batch sb;
        if (streams_poll_read(&wk->h, w0->channels[0], w0->cursor, 0, &sb))
            for (size_t i = 0; i < k; i++) {
                buf_reset(&wk->resp);
                streams_batch_reply(&wk->h, &sb, g[i]->cors, g[i]->ds_cursor, NULL, &wk->resp);
                worker_finish(wk, g[i], &wk->resp);
            }
        streams_batch_free(&sb);
        return;
    }
    msglog_query q = {.channels = w0->channels,
                      .nchannels = w0->nchannels,
                      .since = w0->cursor,
                      .epoch = w0->epoch,
                      .limit = w0->format == FORMAT_RAW ? 1 : w0->limit};
    msglog_batch b;
    if (msglog_read(wk->h.log, &q, &b)) {
        fprintf(stderr, "holdfast[%d]: read for parked subscribers: %s\n", (int)getpid(),
                msglog_errmsg(wk->h.log));
        return; /* they stay parked; the next wake or the deadline answers */
    }
    if (b.n == 0 && !b.reset && !b.gap) {
        for (size_t i = 0; i < k; i++)
            g[i]->cursor = b.cursor;
        msglog_batch_free(&b);
        return;
    }
    int shared = w0->format != FORMAT_RAW || b.reset;
    buf_reset(&wk->body);
    if (shared)
        reply_batch_body(&wk->body, &b);
    for (size_t i = 0; i < k; i++) {
        buf_reset(&wk->resp);
        if (shared)
            reply_json(&wk->resp, 200, g[i]->cors, wk->body.p, wk->body.len);
        else
            reply_raw(&wk->resp, &b, g[i]->cors, wk->cfg);
        handler_count_answer(wk->counters, &b, (request_format)g[i]->format);
        worker_finish(wk, g[i], &wk->resp);
    }
    msglog_batch_free(&b);
}

static void worker_answer_batch(worker *wk) {
    if (wk->nbatch == 0) {
        worker_next_mark(wk);
        return;
    }
    qsort(wk->batch, wk->nbatch, sizeof *wk->batch, worker_cmp);
    for (size_t i = 0, j; i < wk->nbatch; i = j) {
        for (j = i + 1; j < wk->nbatch && worker_cmp(&wk->batch[i], &wk->batch[j]) == 0; j++)
            ;
        worker_answer_group(wk, wk->batch + i, j - i);
    }
    wk->nbatch = 0;
    worker_next_mark(wk);
}

/* The log moved (or the slow timer ticked): answer whom it concerns. */
static void worker_process_changes(worker *wk) {
    int64_t head = 0;
    int replaced = handler_check_db(&wk->h, 0) == HANDLER_DB_REOPENED;
    if (msglog_changed_channels(wk->h.log, wk->processed_head, &head, worker_changed_cb, wk)) {
        fprintf(stderr, "holdfast[%d]: checking for new messages: %s\n", (int)getpid(),
                msglog_errmsg(wk->h.log));
        wk->nbatch = 0;
        worker_next_mark(wk);
        return;
    }
    if (replaced || head < wk->processed_head) {
        /* Another database, or this one reset: every cursor is suspect;
         * re-reading answers each waiter with a reset. */
        for (size_t i = 0; i < waiters_count(wk->ws); i++)
            worker_batch_push(wk, waiters_at(wk->ws, i));
    }
    wk->processed_head = head;
    worker_answer_batch(wk);
}

/* ---- taking over parked requests ------------------------------------------- */

static void worker_register(worker *wk, waiter *w) {
    int parked = w->state == WORKER_PARKED, reading = w->state == WORKER_READING;
    struct epoll_event ev = {.events = parked || reading ? EPOLLIN | EPOLLRDHUP : EPOLLOUT,
                             .data.ptr = w};
    w->seq = ++wk->seq;
    if (epoll_ctl(wk->epfd, EPOLL_CTL_ADD, w->fd, &ev) != 0) {
        if (parked)
            worker_unpark(wk, w);
        close(w->fd);
        if (w->pending)
            buf_free(w->pending);
        free(w->pending);
        waiter_free(w);
        return;
    }
    if (reading) {
        worker_fifo_push(&wk->reading, w);
        return;
    }
    if (!parked) {
        worker_write(wk, w);
        return;
    }
    if (waiters_add(wk->ws, w) != 0) {
        buf_reset(&wk->resp);
        reply_error(&wk->resp, 503, w->cors, "unavailable", "out of memory", 1);
        worker_unpark(wk, w);
        worker_send(wk, w, &wk->resp);
        return;
    }
    if (worker_is_stream(w)) { /* its head now, its events from its cursor on */
        buf_reset(&wk->resp);
        if (w->format == FORMAT_DS_SSE)
            streams_sse_head(&wk->h, w->channels[0], w->cors, &wk->resp);
        else
            reply_sse_head(&wk->resp, w->cors, WORKER_SSE_RETRY_MS);
        if (worker_stream_put(wk, w, wk->resp.p, wk->resp.len) != 0)
            return;
        if (wk->stopping)
            worker_stream_end(wk, w);
        else
            worker_batch_push(wk, w);
        return;
    }
    if (wk->stopping)
        worker_expire(wk, w);
    else if (w->cursor < wk->processed_head)
        worker_batch_push(wk, w); /* may have missed a pass: re-read now */
}

static void worker_take_queue(worker *wk) {
    waiter **q;
    size_t n;
    worker_efd_drain(wk->queue_efd);
    pthread_mutex_lock(&wk->lock);
    q = wk->queue;
    n = wk->nqueue;
    wk->queue = NULL;
    wk->nqueue = wk->capqueue = 0;
    pthread_mutex_unlock(&wk->lock);
    for (size_t i = 0; i < n; i++)
        worker_register(wk, q[i]);
    free(q);
    if (wk->nbatch)
        worker_answer_batch(wk);
}

/* The dispatcher this thread runs, if it is one. */
static _Thread_local worker *worker_self;

/* Queue w for the dispatcher -- or, on the dispatcher thread itself (THE
 * INLINE RULE in fcgi_front.c), take it at once: 0, or -ENOMEM. */
static int worker_enqueue(worker *wk, waiter *w) {
    if (worker_self == wk) {
        worker_register(wk, w); /* a re-read it needs is answered after the events */
        return 0;
    }
    pthread_mutex_lock(&wk->lock);
    if (wk->nqueue == wk->capqueue) {
        size_t cap = wk->capqueue ? wk->capqueue * 2 : 64;
        waiter **q = realloc(wk->queue, cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&wk->lock);
            return -ENOMEM;
        }
        wk->queue = q;
        wk->capqueue = cap;
    }
    wk->queue[wk->nqueue++] = w;
    pthread_mutex_unlock(&wk->lock);
    worker_efd_kick(wk->queue_efd);
    return 0;
}

worker_park_result worker_park(worker *wk, waiter *w) {
    if (atomic_fetch_add(&wk->counters->parked, 1) >= wk->cfg->max_parked) {
        atomic_fetch_sub(&wk->counters->parked, 1);
        atomic_fetch_add(&wk->counters->refused, 1);
        return WORKER_PARK_FULL;
    }
    if (wk->h.lim && *w->client) {
        if (guard_park(wk->h.lim, w->client, strlen(w->client),
                        wk->cfg->max_parked_per_client) == GUARD_REFUSED) {
            atomic_fetch_sub(&wk->counters->parked, 1);
            atomic_fetch_add(&wk->counters->refused, 1);
            return WORKER_PARK_CLIENT;
        }
        w->counted = 1;
    }
    w->state = WORKER_PARKED;
    if (worker_enqueue(wk, w) == 0)
        return WORKER_PARK_OK;
    worker_unpark(wk, w);
    return WORKER_PARK_FULL;
}

int worker_read(worker *wk, waiter *w) {
    w->state = WORKER_READING;
    return worker_enqueue(wk, w) == 0 ? 0 : -EAGAIN;
}

int worker_adopt(worker *wk, waiter *w) {
    w->state = WORKER_WRITING;
    return worker_enqueue(wk, w) == 0 ? 0 : -EAGAIN;
}

int worker_settled(worker *wk, handler *h) {
    h->settled = wk->watching && wk->h.log && !wk->stopping;
    if (h->settled) {
        h->settled_head = wk->processed_head;
        snprintf(h->settled_epoch, sizeof h->settled_epoch, "%s", msglog_epoch(wk->h.log));
    }
    return h->settled;
}

int worker_ready(worker *wk) {
    return atomic_load(&wk->ready);
}

/* ---- the loop ----------------------------------------------------------------- */

/* How long the loop may sleep: until the nearest deadline of a poll, a
 * write or a drain (and at most a second while the storage is down). */
static int worker_timeout_ms(worker *wk) {
    waiter *due[] = {waiters_first_due(wk->ws), wk->reading.head, wk->writing.head,
                     wk->draining.head, wk->idle.head};
    int64_t next = wk->watching ? INT64_MAX : clock_mono_ms() + WORKER_STORAGE_RETRY_MS;
    if (wk->stopping)
        return 50;
    if (wk->rerun.head)
        return 0; /* streams with more to read */
    for (size_t i = 0; i < sizeof due / sizeof due[0]; i++)
        if (due[i] && due[i]->deadline_ms < next)
            next = due[i]->deadline_ms;
    if (next == INT64_MAX)
        return -1;
    int64_t left = next - clock_mono_ms();
    return left < 0 ? 0 : left > 60000 ? 60000 : (int)left;
}

/* Storage down: try to open it; once open, watch the wake file. */
static void worker_storage(worker *wk) {
    char err[256];
    if (wk->watching || handler_storage(&wk->h) != 0)
        return;
    wk->processed_head = msglog_head(wk->h.log);
    if (wk->processed_head < 0)
        wk->processed_head = 0;
    int rc = wake_watch_start(wk->h.wk, wk->wake_efd, wk->cfg->data_version_ms);
    if (rc) {
        snprintf(err, sizeof err, "%s", strerror(-rc));
        fprintf(stderr, "holdfast[%d]: cannot watch the wake file: %s\n", (int)getpid(), err);
        return;
    }
    wk->watching = 1;
    atomic_store(&wk->ready, 1);
}

static void worker_event(worker *wk, struct epoll_event *ev, int *changed) {
    void *p = ev->data.ptr;
    if (p == &wk->queue_efd) {
        worker_take_queue(wk);
    } else if (p == &wk->wake_efd) {
        worker_efd_drain(wk->wake_efd);
        *changed = 1;
    } else if (p == &wk->stop_efd) {
        worker_efd_drain(wk->stop_efd);
        wk->stopping = 1;
    } else {
        waiter *w = p;
        if (w->state == WORKER_READING || w->state == WORKER_IDLE) {
            if (wk->front.read(wk->front.ud, w)) {
                worker_release(wk, w, 0);
            } else if (w->state == WORKER_IDLE) { /* it has begun: a request's time */
                worker_fifo_remove(&wk->idle, w);
                w->state = WORKER_READING;
                w->deadline_ms = clock_mono_ms() + wk->front.request_ms;
                worker_fifo_push(&wk->reading, w);
            }
        } else if (w->state == WORKER_WRITING)
            worker_flush(wk, w); /* writable, or failed: flush finds out */
        else if (w->state == WORKER_DRAINING)
            worker_drain(wk, w);
        else if (worker_is_stream(w))
            worker_stream_event(wk, w, ev->events);
        else
            worker_left(wk, w); /* a parked connection spoke or closed */
    }
}

static void *worker_main(void *arg) {
    worker *wk = arg;
    struct epoll_event evs[WORKER_EVENTS];
    int64_t flush_deadline = 0;
    worker_self = wk;
    for (;;) {
        int changed = 0;
        int n = epoll_wait(wk->epfd, evs, WORKER_EVENTS, worker_timeout_ms(wk));
        for (int i = 0; i < n; i++)
            worker_event(wk, &evs[i], &changed);
        worker_take_reruns(wk);
        if (wk->nbatch)
            worker_answer_batch(wk); /* waiters registered above that may have missed a pass */
        if (!wk->watching)
            worker_storage(wk);
        if (changed && wk->watching)
            worker_process_changes(wk);
        worker_expire_due(wk);
        worker_expire_out(wk, clock_mono_ms());
        if (wk->stopping) {
            if (!flush_deadline)
                flush_deadline = clock_mono_ms() + WORKER_FLUSH_MS;
            pthread_mutex_lock(&wk->lock);
            size_t queued = wk->nqueue;
            pthread_mutex_unlock(&wk->lock);
            if ((wk->writing.n == 0 && wk->draining.n == 0 && queued == 0) ||
                clock_mono_ms() > flush_deadline)
                break;
        }
    }
    return NULL;
}

int worker_start(worker **out, const config *cfg, handler_counters *counters, guard *lim,
                 const worker_front *front, char *err, size_t errlen) {
    worker *wk = calloc(1, sizeof *wk);
    *out = NULL;
    if (!wk) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    wk->cfg = cfg;
    wk->counters = counters;
    wk->front = *front;
    wk->epfd = wk->queue_efd = wk->wake_efd = wk->stop_efd = -1;
    pthread_mutex_init(&wk->lock, NULL);
    int rc;
    if (handler_open(&wk->h, cfg, counters, lim, err, errlen) != 0)
        fprintf(stderr, "holdfast[%d]: %s (answering 503 until it can be opened)\n",
                (int)getpid(), err);
    wk->ws = waiters_new();
    wk->epfd = epoll_create1(EPOLL_CLOEXEC);
    wk->queue_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    wk->wake_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    wk->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!wk->ws || wk->epfd < 0 || wk->queue_efd < 0 || wk->wake_efd < 0 || wk->stop_efd < 0) {
        snprintf(err, errlen, "cannot set up the dispatcher: %s", strerror(errno));
        rc = -EMFILE;
        goto fail;
    }
    int *fds[] = {&wk->queue_efd, &wk->wake_efd, &wk->stop_efd};
    for (size_t i = 0; i < 3; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = fds[i]};
        epoll_ctl(wk->epfd, EPOLL_CTL_ADD, *fds[i], &ev);
    }
    wk->mark = 1; /* a new waiter's mark is 0: it must not look already batched */
    buf_init(&wk->resp);
    buf_init(&wk->body);
    worker_storage(wk);
    if ((rc = -pthread_create(&wk->thread, NULL, worker_main, wk))) {
        snprintf(err, errlen, "cannot start the dispatcher: %s", strerror(-rc));
        goto fail;
    }
    wk->started = 1;
    *out = wk;
    return 0;
fail:
    worker_stop(wk);
    return rc;
}

void worker_stop(worker *wk) {
    if (!wk)
        return;
    if (wk->started) {
        worker_efd_kick(wk->stop_efd);
        pthread_join(wk->thread, NULL);
    }
    /* Whatever is left (a hand-over never taken, a write that never
     * finished, a drain) is dropped. */
    for (size_t i = 0; i < wk->nqueue; i++) {
        waiter *w = wk->queue[i];
        if (w->state == WORKER_READING) {
            wk->front.done(wk->front.ud, w, 1); /* not in a list yet */
            continue;
        }
        if (w->state == WORKER_PARKED)
            worker_unpark(wk, w);
        worker_drop(wk, w);
    }
    while (wk->reading.head)
        worker_release(wk, wk->reading.head, 1);
    while (wk->idle.head)
        worker_release(wk, wk->idle.head, 1);
    while (wk->writing.head)
        worker_drop(wk, wk->writing.head);
    while (wk->draining.head)
        worker_drop(wk, wk->draining.head);
    for (size_t n; wk->ws && (n = waiters_count(wk->ws)) > 0;)
        worker_left(wk, waiters_at(wk->ws, n - 1));
    handler_close(&wk->h); /* stops the wake watcher first */
    waiters_free(wk->ws);
    int fds[] = {wk->epfd, wk->queue_efd, wk->wake_efd, wk->stop_efd};
    for (size_t i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(wk->queue);
    free(wk->batch);
    buf_free(&wk->resp);
    buf_free(&wk->body);
    pthread_mutex_destroy(&wk->lock);
    free(wk);
}
