/* fcgi_front.c -- the FastCGI front: accepting threads, and the one path
 * every connection takes from accept to close.
 *
 * THE CONNECTION PATH.  A thread accepts (EPOLLEXCLUSIVE: one thread per
 * connection wakes), checks FCGI_WEB_SERVER_ADDRS, and reads the request
 * itself, non-blocking, through fcgi_proto.c -- under ONE deadline for the
 * whole request (FCGI_FRONT_REQUEST_MS from accept), not one per read.  A
 * request that is not whole within FCGI_FRONT_PATIENCE_MS goes to the
 * dispatcher, which waits for the rest without a thread (worker_read) and
 * hands it back through the ready queue when it is whole or late: slow
 * uploads cannot take every thread.  Then exactly one of:
 *   - the request arrived whole: handler_run() answers it, or it is parked
 *     with the dispatcher (worker.c), which then owns the connection;
 *   - it is refused before its body is read (431 params over
 *     FCGI_FRONT_PARAMS_MAX, 413 body over max_body, any error of the
 *     route): answered at once, the unread rest is drained;
 *   - it is not whole by the deadline: 408 if it had begun;
 *   - it is not FastCGI, was aborted, or the web server left: closed.
 * An answer is written straight away if the socket takes it and the input
 * was read to its end; otherwise the dispatcher finishes the write and
 * drains the input before closing (worker_adopt, THE CLOSING RULE in
 * worker.c): closing with unread input would reset the connection and the
 * web server would lose the answer.  No descriptor is ever read or closed
 * by anyone else: libfcgi, which accepted on its own after a protocol
 * error, is not used.
 *
 * A connection the web server keeps (FCGI_KEEP_CONN, answered whole and
 * read to its end) is not closed: it goes to the dispatcher, which reads
 * its next request (KEPT CONNECTIONS in worker.c) and gives it back through
 * fcgi_front_read_done -- where a poll, a health or stats request, or a
 * refusal is answered at once on the dispatcher thread (THE INLINE RULE:
 * none of them waits for the database's write lock), and anything else
 * (a publish) is queued for the accepting threads.
 */
#include "fcgi_front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "fcgi_proto.h"
#include "handler.h"
#include "reply.h"
#include "request.h"
#include "worker.h"

#define FCGI_FRONT_REQUEST_MS 10000       /* for a whole request to arrive */
#define FCGI_FRONT_PATIENCE_MS 50         /* a thread waits this long, then the dispatcher */
#define FCGI_FRONT_PARAMS_MAX (64 * 1024) /* bytes of params (431 beyond) */
#define FCGI_FRONT_ACCEPT_TICK_MS 500     /* see fcgi_front_wait */
#define FCGI_FRONT_GROW_MS 20             /* see THE THREAD RULE */
#define FCGI_FRONT_SHARE_SLACK 16         /* see THE SHARING RULE */
#define FCGI_FRONT_SHARE_TICK_MS 20       /* a yielding thread looks again this often */
#define FCGI_FRONT_SHARE_LOOK_MS 1        /* the siblings' counts are this fresh */
#define FCGI_FRONT_SHARE_STUCK 5          /* ticks a connection may wait for a sibling */
#define FCGI_FRONT_DRAIN_MAX 64           /* accepts in a row after a lost wake-up */
#define FCGI_FRONT_IDLE_MS (10 * 60000)   /* a kept connection's wait for its next request */

typedef struct {
    const config *cfg;
    int listen_fd;
    int stop_fd;
    worker *wk;
    handler_counters *counters;
    guard *lim;  /* shared abuse limits, NULL when <db>-limits cannot be had */
    const char *web_addrs; /* FCGI_WEB_SERVER_ADDRS, or NULL */
    int patient;           /* accept only once the dispatcher is ready */
    /* The ready queue: requests the dispatcher read whole (or gave up on),
     * for any accepting thread to answer.  Linked through out_next. */
    pthread_mutex_t ready_lock;
    waiter *ready_head, *ready_tail;
    int ready_fd; /* eventfd: readable while the queue may hold some */
    /* THE THREAD RULE.  One accepting thread to start with.  When the last
     * idle thread goes busy it says so on busy_fd; the main thread then
     * looks every FCGI_FRONT_GROW_MS while none is idle, and starts one more
     * (up to `threads`) when a connection is queued with no thread to take
     * it.  So a process that is sent one request at a time (mod_fcgid)
     * keeps one thread and one database connection, and a busy pool grows
     * to what its load needs.  Counts guarded by grow_lock. */
    int busy_fd; /* eventfd */
    /* THE SHARING RULE.  Workers of one pool accept from one socket, and
     * EPOLLEXCLUSIVE wakes the same (most recently idle) one for most
     * connections: left alone, one worker would hold its max_parked and
     * answer 503 while its siblings sat nearly empty.  So before it waits
     * for a connection, a thread of a pool worker (sharing) that holds more
     * than FCGI_FRONT_SHARE_SLACK waiting subscribers above its least
     * loaded live sibling, or max_parked while a sibling has room, takes
     * the listener out of its epoll set until that is no longer so; the
     * least loaded worker always listens, and a connection still queued
     * after FCGI_FRONT_SHARE_STUCK of a yielding thread's ticks is taken
     * by it anyway (a sibling may be alive but not accepting: patient, or
     * stopped), so a connection always has a taker.  A thread woken for a connection
     * takes it whatever the counts say.  Siblings: live processes in the
     * wake file's slots whose parent is this worker's (the supervisor); the
     * least loaded one's count is looked up at most once a millisecond per
     * thread (FCGI_FRONT_SHARE_LOOK_MS). */
    int sharing;
    const wake_slot *slots; /* the wake file's, or NULL */
    pthread_mutex_t grow_lock;
    struct fcgi_front_thread *ts; /* [max] */
    pthread_t *tids;              /* [max] */
    int max, started, idle;       /* idle: threads waiting for an event */
    int stopping;                 /* set before the joins: no more growth */
    struct fcgi_front_thread *disp; /* THE INLINE RULE's context (dispatcher thread) */
} fcgi_front;

/* Written by the signal handler; every accepting thread polls it. */
static int fcgi_front_stop_fd = -1;

static void fcgi_front_on_signal(int sig) {
    uint64_t one = 1;
    int saved = errno;
    (void)sig;
    if (fcgi_front_stop_fd >= 0 && write(fcgi_front_stop_fd, &one, sizeof one) < 0)
        errno = saved; /* nothing more to do in a signal handler */
    errno = saved;
}

static void fcgi_front_frame_waiter(buf *out, const waiter *w, const char *resp, size_t len) {
    fcgi_proto_frame(out, w->reqid, resp, len);
}

static void fcgi_front_part_waiter(buf *out, const waiter *w, const char *data, size_t len) {
    fcgi_proto_stdout(out, w->reqid, data, len);
}

int fcgi_front_is_listener(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

/* Only web servers listed in FCGI_WEB_SERVER_ADDRS may talk to a TCP socket. */
static int fcgi_front_peer_ok(const fcgi_front *f, int fd) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    if (!f->web_addrs || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 1;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
    else
        return 1; /* unix sockets: the file's permissions decide */
    size_t n = strlen(ip);
    for (const char *p = f->web_addrs; *p;) {
        size_t k = strcspn(p, ", ");
        if (k == n && !strncmp(p, ip, n))
            return 1;
        p += k + (p[k] != '\0');
    }
    return 0;
}

/* How a request's intake went (see THE CONNECTION PATH). */
typedef enum {
    FCGI_FRONT_MORE,    /* everything read so far is taken: more is to come */
    FCGI_FRONT_PARAMS,  /* the params are complete (the caller may refuse now) */
    FCGI_FRONT_WHOLE,   /* arrived whole: answer or park it */
    FCGI_FRONT_OVER,    /* the body passed max_body: 413, drain the rest */
    FCGI_FRONT_REFUSED, /* answered before its end (resp is built): drain the rest */
    FCGI_FRONT_PENDING, /* not whole yet: over to the dispatcher */
    FCGI_FRONT_LATE,    /* not whole by the deadline */
    FCGI_FRONT_BROKEN   /* not FastCGI, aborted, or the web server left */
} fcgi_front_intake;

/* A request the dispatcher reads for us (waiter.intake). */
typedef struct {
    fcgi_proto p;
    fcgi_front_intake res; /* how its reading ended */
    int clean;
} fcgi_front_pending;

typedef struct fcgi_front_thread {
    fcgi_front *f;
    handler h;
    fcgi_proto p;
    request r;
    int parsed;  /* r holds this request (its params are complete) */
    int clean;   /* every byte the web server sent was read */
    buf out, resp;
    unsigned char in[16384];
    int32_t seen_pid[WAKE_SLOTS]; /* the pid last classified in each slot */
    char sibling[WAKE_SLOTS];     /* ... and whether it is this worker's sibling */
    int64_t least, least_at;      /* the least loaded sibling's count (-1: none), and when */
    int opened;                   /* h is open (the dispatcher's context opens it late) */
} fcgi_front_thread;

/* Feed in[*off..got) to the reader until an event that matters: MORE when
 * all of it is taken, else PARAMS, WHOLE, OVER or BROKEN (*clean says
 * whether the request ended exactly at the end of what was read).
 * Management answers are written at once (small and rare: best effort). */
static fcgi_front_intake fcgi_front_absorb(fcgi_proto *p, int fd, const unsigned char *in,
                                           size_t got, size_t *off, int *clean) {
    while (*off < got) {
        size_t used;
        fcgi_proto_event ev = fcgi_proto_feed(p, in + *off, got - *off, &used);
        *off += used;
        if (p->reply.len) {
            if (write(fd, p->reply.p, p->reply.len) < 0)
                p->error = "cannot answer a management record";
            buf_reset(&p->reply);
        }
        if (ev == FCGI_PROTO_ABORT || ev == FCGI_PROTO_ERROR || p->error)
            return FCGI_FRONT_BROKEN;
        *clean = ev == FCGI_PROTO_DONE && *off == got;
        if (p->body_over) /* before DONE: a handler never sees a cut body */
            return FCGI_FRONT_OVER;
        if (ev == FCGI_PROTO_DONE)
            return FCGI_FRONT_WHOLE;
        if (ev == FCGI_PROTO_PARAMS)
            return FCGI_FRONT_PARAMS;
    }
    return FCGI_FRONT_MORE;
}

/* The params are complete: parse them, or refuse the request now
 * (REFUSED, resp built); else MORE. */
static fcgi_front_intake fcgi_front_params(fcgi_front_thread *t) {
    request_limits lim = handler_limits(t->f->cfg);
    if (t->p.params_over) {
        reply_error(&t->resp, 431, NULL, "headers_too_large",
                    "the request's headers and parameters exceed 64 KiB", 0);
        return FCGI_FRONT_REFUSED;
    }
    request_parse(&t->r, t->p.envp, &lim);
    t->parsed = 1;
    if (t->r.route != ROUTE_ERROR)
        return FCGI_FRONT_MORE;
    handler_run(&t->h, &t->r, NULL, 0, &t->resp, NULL, NULL);
    return FCGI_FRONT_REFUSED;
}

/* Read the request in this thread for up to FCGI_FRONT_PATIENCE_MS:
 * WHOLE, OVER, REFUSED, BROKEN, or PENDING. */
static fcgi_front_intake fcgi_front_take(fcgi_front_thread *t, int fd) {
    int64_t patience = clock_mono_ms() + FCGI_FRONT_PATIENCE_MS;
    for (;;) {
        ssize_t got = read(fd, t->in, sizeof t->in);
        if (got > 0) {
            size_t off = 0;
            fcgi_front_intake res;
            while ((res = fcgi_front_absorb(&t->p, fd, t->in, (size_t)got, &off,
                                            &t->clean)) == FCGI_FRONT_PARAMS)
                if (fcgi_front_params(t) == FCGI_FRONT_REFUSED)
                    return FCGI_FRONT_REFUSED;
            if (res != FCGI_FRONT_MORE)
                return res;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got == 0 || errno != EAGAIN)
            return FCGI_FRONT_BROKEN;
        int64_t left = patience - clock_mono_ms();
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
            return FCGI_FRONT_PENDING;
    }
}

/* worker_front.read: the dispatcher says a pending request is readable. */
static int fcgi_front_read_more(void *ud, waiter *w) {
    fcgi_front_pending *pd = w->intake;
    unsigned char in[16384];
    (void)ud;
    for (;;) {
        ssize_t got = read(w->fd, in, sizeof in);
        if (got > 0) {
            size_t off = 0;
            fcgi_front_intake res;
            while ((res = fcgi_front_absorb(&pd->p, w->fd, in, (size_t)got, &off,
                                            &pd->clean)) == FCGI_FRONT_PARAMS)
                ; /* parsed by the thread that answers */
            if (res == FCGI_FRONT_MORE)
                continue;
            pd->res = res;
            return 1;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN)
            return 0;
        pd->res = FCGI_FRONT_BROKEN;
        return 1;
    }
}

/* Queue a request the dispatcher read for the accepting threads. */
static void fcgi_front_ready_push(fcgi_front *f, waiter *w) {
    uint64_t one = 1;
    w->out_next = NULL;
    pthread_mutex_lock(&f->ready_lock);
    if (f->ready_tail)
        f->ready_tail->out_next = w;
    else
        f->ready_head = w;
    f->ready_tail = w;
    pthread_mutex_unlock(&f->ready_lock);
    if (write(f->ready_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        perror("holdfast: eventfd");
}

/* The next request of the ready queue, or NULL. */
static waiter *fcgi_front_ready_pop(fcgi_front *f) {
    uint64_t v;
    pthread_mutex_lock(&f->ready_lock);
    waiter *w = f->ready_head;
    if (w && !(f->ready_head = w->out_next))
        f->ready_tail = NULL;
    if (!f->ready_head && read(f->ready_fd, &v, sizeof v) < 0 && errno != EAGAIN)
        perror("holdfast: eventfd");
    pthread_mutex_unlock(&f->ready_lock);
    return w;
}

/* Free a request given back by the dispatcher, closing its connection. */
static void fcgi_front_pending_free(waiter *w) {
    fcgi_front_pending *pd = w->intake;
    fcgi_proto_free(&pd->p);
    free(pd);
    close(w->fd);
    waiter_free(w);
}

/* Over to the dispatcher: it reads the rest without holding this thread. */
static void fcgi_front_defer(fcgi_front_thread *t, int fd, int64_t deadline) {
    waiter *w = waiter_new(NULL, 0);
    fcgi_front_pending *pd = w ? malloc(sizeof *pd) : NULL;
    if (!pd) {
        waiter_free(w);
        fcgi_proto_free(&t->p);
        close(fd);
        return;
    }
    pd->p = t->p; /* the reader moves, buffers and all */
    pd->res = FCGI_FRONT_MORE;
    pd->clean = 0;
    w->fd = fd;
    w->intake = pd;
    w->deadline_ms = deadline;
    fcgi_proto_init(&t->p, 0, 0);
    if (worker_read(t->f->wk, w) != 0)
        fcgi_front_pending_free(w);
}

/* worker_front.again: w's answer is out and its connection kept; read its
 * next request. */
static int fcgi_front_again(void *ud, waiter *w) {
    fcgi_front *f = ud;
    fcgi_front_pending *pd = malloc(sizeof *pd);
    if (!pd)
        return -1;
    fcgi_proto_init(&pd->p, FCGI_FRONT_PARAMS_MAX, (size_t)f->cfg->max_body);
    pd->res = FCGI_FRONT_MORE;
    pd->clean = 0;
    w->intake = pd;
    return 0;
}

/* Park a subscriber; on a refusal the caller answers it. */
static worker_park_result fcgi_front_park(fcgi_front *f, const request *r, int fd,
                                          uint16_t reqid, int keep, int64_t cursor,
                                          const char *epoch) {
    waiter *w = waiter_new(r->channels, r->nchannels);
    if (!w)
        return WORKER_PARK_FULL;
    w->fd = fd;
    w->reqid = reqid;
    w->keep = (uint8_t)keep;
    w->format = (uint8_t)r->format;
    w->cursor = cursor;
    memcpy(w->epoch, epoch, sizeof w->epoch);
    w->limit = r->limit;
    w->cors = reply_cors(f->cfg, r->origin);
    w->ds_cursor = r->ds.cursor;
    if (r->format == FORMAT_SSE || r->format == FORMAT_DS_SSE) { /* first deadline: a ping */
        w->end_ms = clock_mono_ms() + f->cfg->sse_max_s * 1000LL;
        w->deadline_ms = clock_mono_ms() + f->cfg->sse_ping_s * 1000LL;
        if (w->deadline_ms > w->end_ms)
            w->deadline_ms = w->end_ms;
    } else {
        w->deadline_ms = clock_mono_ms() + r->timeout_s * 1000LL;
    }
    snprintf(w->client, sizeof w->client, "%s", r->client);
    worker_park_result res = worker_park(f->wk, w);
    if (res != WORKER_PARK_OK)
        waiter_free(w);
    return res;
}

/* Send t->resp and close: at once when the socket takes it all and the
 * input was read to its end, else through the dispatcher -- which also
 * keeps a connection the web server keeps (KEPT CONNECTIONS). */
static void fcgi_front_answer(fcgi_front_thread *t, int fd) {
    int keep = t->p.keep_conn && t->clean;
    buf_reset(&t->out);
    fcgi_proto_frame(&t->out, t->p.reqid, t->resp.p, t->resp.len);
    ssize_t n = t->out.oom ? -1 : write(fd, t->out.p, t->out.len);
    size_t off = n > 0 ? (size_t)n : 0;
    if (off == t->out.len && t->clean && !keep) {
        close(fd);
        return;
    }
    waiter *w = n < 0 && errno != EAGAIN ? NULL : waiter_new(NULL, 0);
    buf *pending = w ? malloc(sizeof *pending) : NULL;
    if (!pending) {
        waiter_free(w);
        close(fd);
        return;
    }
    *pending = t->out; /* the dispatcher takes the buffer over */
    buf_init(&t->out);
    w->fd = fd;
    w->pending = pending;
    w->pending_off = off;
    w->linger = !t->clean;
    w->keep = (uint8_t)keep;
    if (worker_adopt(t->f->wk, w) != 0) {
        buf_free(pending);
        free(pending);
        waiter_free(w);
        close(fd);
    }
}

/* The request's intake is over: answer it (or park it), or close. */
static void fcgi_front_finish(fcgi_front_thread *t, int fd, fcgi_front_intake res) {
    fcgi_front *f = t->f;
    int64_t cursor = 0;
    char epoch[MSGLOG_EPOCH_LEN + 1];
    if (res != FCGI_FRONT_BROKEN && res != FCGI_FRONT_REFUSED && t->p.params_done &&
        !t->parsed && fcgi_front_params(t) == FCGI_FRONT_REFUSED)
        res = FCGI_FRONT_REFUSED;
    const char *cors = t->parsed ? reply_cors(f->cfg, t->r.origin) : NULL;
    if (res == FCGI_FRONT_BROKEN || (res == FCGI_FRONT_LATE && !t->p.begun)) {
        close(fd);
    } else if (res == FCGI_FRONT_LATE) {
        reply_error(&t->resp, 408, cors, "request_timeout",
                    "the request did not arrive whole within 10 s", 0);
        fcgi_front_answer(t, fd);
    } else if (res == FCGI_FRONT_OVER) {
        reply_error(&t->resp, 413, cors, "body_too_large", "the body exceeds max_body", 0);
        fcgi_front_answer(t, fd);
    } else if (res == FCGI_FRONT_REFUSED) {
        fcgi_front_answer(t, fd);
    } else if (handler_run(&t->h, &t->r, t->p.body.p, t->p.body.len, &t->resp, &cursor,
                           epoch) == HANDLER_DONE) {
        fcgi_front_answer(t, fd);
    } else {
        worker_park_result park = fcgi_front_park(f, &t->r, fd, t->p.reqid,
                                                  t->p.keep_conn && t->clean, cursor, epoch);
        if (park == WORKER_PARK_CLIENT)
            reply_error(&t->resp, 429, cors, "too_many_subscribers",
                        "this client already holds max_parked_per_client waiting subscribes",
                        HANDLER_CLIENT_RETRY_S);
        else if (park == WORKER_PARK_FULL)
            reply_error(&t->resp, 503, cors, "full", "this worker holds max_parked subscribers",
                        1);
        if (park != WORKER_PARK_OK)
            fcgi_front_answer(t, fd);
    }
    fcgi_proto_free(&t->p); /* r pointed into it: done with both */
}

/* A new connection: read it here, or hand it to the dispatcher. */
static void fcgi_front_serve(fcgi_front_thread *t, int fd) {
    int64_t deadline = clock_mono_ms() + FCGI_FRONT_REQUEST_MS;
    fcgi_proto_init(&t->p, FCGI_FRONT_PARAMS_MAX, (size_t)t->f->cfg->max_body);
    t->parsed = t->clean = 0;
    buf_reset(&t->resp);
    fcgi_front_intake res = fcgi_front_take(t, fd);
    if (res == FCGI_FRONT_PENDING)
        fcgi_front_defer(t, fd, deadline);
    else
        fcgi_front_finish(t, fd, res);
}

/* A request the dispatcher read whole (or late): answer it here. */
static void fcgi_front_resume(fcgi_front_thread *t, waiter *w) {
    fcgi_front_pending *pd = w->intake;
    int fd = w->fd;
    fcgi_front_intake res = pd->res;
    t->p = pd->p;
    t->clean = pd->clean;
    t->parsed = 0;
    buf_reset(&t->resp);
    free(pd);
    waiter_free(w);
    fcgi_front_finish(t, fd, res);
}

/* THE INLINE RULE: answer (or park) on the dispatcher thread a request
 * the dispatcher read whole that cannot wait for the write lock; 1 when
 * done, 0 to queue it for the accepting threads. */
static int fcgi_front_inline(fcgi_front *f, waiter *w) {
    fcgi_front_pending *pd = w->intake;
    fcgi_front_thread *t = f->disp;
    char err[512];
    if (!t || pd->res != FCGI_FRONT_WHOLE || !pd->p.params_done || pd->p.params_over)
        return 0;
    request_limits lim = handler_limits(f->cfg);
    request_route route = request_parse(&t->r, pd->p.envp, &lim);
    if (route != ROUTE_SUB && route != ROUTE_HEALTH && route != ROUTE_STATS &&
        route != ROUTE_PREFLIGHT && route != ROUTE_ERROR)
        return 0;
    if (!t->opened) {
        handler_open(&t->h, f->cfg, f->counters, f->lim, err, sizeof err); /* 503s until open */
        t->opened = 1;
    }
    int fd = w->fd;
    t->p = pd->p; /* r points into it: it moves, buffers and all */
    t->clean = pd->clean;
    t->parsed = 1;
    buf_reset(&t->resp);
    free(pd);
    waiter_free(w);
    worker_settled(f->wk, &t->h);
    if (route == ROUTE_ERROR) {
        handler_run(&t->h, &t->r, NULL, 0, &t->resp, NULL, NULL);
        fcgi_front_finish(t, fd, FCGI_FRONT_REFUSED);
    } else {
        fcgi_front_finish(t, fd, FCGI_FRONT_WHOLE);
    }
    return 1;
}

/* worker_front.done: the dispatcher gives a request back: close it if
 * nothing came, answer it here (THE INLINE RULE), or queue it for the
 * threads. */
static void fcgi_front_read_done(void *ud, waiter *w, int late) {
    fcgi_front *f = ud;
    fcgi_front_pending *pd = w->intake;
    if (late)
        pd->res = FCGI_FRONT_LATE;
    if (pd->res == FCGI_FRONT_BROKEN || (pd->res == FCGI_FRONT_LATE && !pd->p.begun)) {
        fcgi_front_pending_free(w); /* the web server left, or never began */
        return;
    }
    if (!fcgi_front_inline(f, w))
        fcgi_front_ready_push(f, w);
}

/* What woke an accepting thread. */
typedef enum {
    FCGI_FRONT_STOP = 1,
    FCGI_FRONT_ACCEPT, /* the listener is readable */
    FCGI_FRONT_READY,  /* the ready queue may hold a request */
    FCGI_FRONT_TICK    /* nothing within the tick */
} fcgi_front_event;

/* Wait for a connection, a request the dispatcher read, or the stop
 * signal.  Each thread has its own epoll set with the listen socket added
 * EPOLLEXCLUSIVE, so a new connection wakes one thread, not all of them
 * (poll() would wake every thread of every process on the socket).  The
 * wait-up can go to a process that is dying and never accepts: so every
 * FCGI_FRONT_ACCEPT_TICK_MS a thread tries accept4() anyway. */
static fcgi_front_event fcgi_front_wait(int ep, int tick_ms) {
    struct epoll_event ev[3];
    for (;;) {
        int n = epoll_wait(ep, ev, 3, tick_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return FCGI_FRONT_STOP;
        if (n == 0)
            return FCGI_FRONT_TICK;
        fcgi_front_event e = FCGI_FRONT_ACCEPT;
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u32 == FCGI_FRONT_STOP)
                return FCGI_FRONT_STOP;
            if (ev[i].data.u32 == FCGI_FRONT_READY)
                e = FCGI_FRONT_READY; /* finish what has waited longest first */
        }
        return e;
    }
}

static int fcgi_front_grow(fcgi_front *f);

/* Wait for the next event, counted as idle meanwhile.  The last idle
 * thread going busy tells the main thread (THE THREAD RULE). */
static fcgi_front_event fcgi_front_next(fcgi_front *f, int ep, int tick_ms) {
    pthread_mutex_lock(&f->grow_lock);
    f->idle++;
    pthread_mutex_unlock(&f->grow_lock);
    fcgi_front_event e = fcgi_front_wait(ep, tick_ms);
    pthread_mutex_lock(&f->grow_lock);
    int tell = --f->idle == 0 && f->started < f->max;
    pthread_mutex_unlock(&f->grow_lock);
    uint64_t one = 1;
    if (tell && write(f->busy_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the eventfd is full, so the main thread knows already */
    }
    return e;
}

/* THE THREAD RULE's test: no thread waits for a connection while one is
 * queued on the listener (and fewer than `threads` run). -1: no thread is
 * busy any more (stop looking), 1: start one, 0: look again later. */
static int fcgi_front_short(fcgi_front *f) {
    pthread_mutex_lock(&f->grow_lock);
    int busy = f->idle == 0 && f->started < f->max && !f->stopping;
    pthread_mutex_unlock(&f->grow_lock);
    if (!busy)
        return -1;
    struct pollfd p = {f->listen_fd, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

/* Whether pid's parent is ours (a worker of the same pool). */
static int fcgi_front_is_sibling(int32_t pid) {
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return 0;
    size_t n = fread(st, 1, sizeof st - 1, fp);
    fclose(fp);
    st[n] = '\0';
    const char *close_paren = strrchr(st, ')');
    int ppid = 0;
    char state;
    return close_paren && sscanf(close_paren + 1, " %c %d", &state, &ppid) == 2 &&
           ppid == (int)getppid();
}

/* The waiting subscribers of the least loaded live sibling, -1 when there
 * is none; looked up at most every FCGI_FRONT_SHARE_LOOK_MS. */
static int64_t fcgi_front_least(fcgi_front_thread *t) {
    fcgi_front *f = t->f;
    int64_t now = clock_mono_ms();
    if (t->least_at && now - t->least_at < FCGI_FRONT_SHARE_LOOK_MS)
        return t->least;
    int64_t least = -1;
    int32_t self = (int32_t)getpid();
    for (size_t i = 0; i < WAKE_SLOTS; i++) {
        int32_t pid = atomic_load(&f->slots[i].pid);
        if (pid <= 0 || pid == self)
            continue;
        if (t->seen_pid[i] != pid) {
            t->seen_pid[i] = pid;
            t->sibling[i] = (char)fcgi_front_is_sibling(pid);
        }
        if (!t->sibling[i] || kill(pid, 0) != 0)
            continue; /* not of this pool, or gone (its slot not yet folded) */
        int64_t v = atomic_load(&handler_counters_of((wake_slot *)&f->slots[i])->parked);
        if (least < 0 || v < least)
            least = v;
    }
    t->least = least;
    t->least_at = now;
    return least;
}

/* THE SHARING RULE's test: 1 when this thread should leave new connections
 * to a sibling for now. */
static int fcgi_front_yields(fcgi_front_thread *t) {
    fcgi_front *f = t->f;
    if (!f->sharing || !f->slots)
        return 0;
    int64_t mine = atomic_load(&f->counters->parked);
    if (mine <= FCGI_FRONT_SHARE_SLACK)
        return 0;
    int64_t least = fcgi_front_least(t); /* -1: no live sibling, take everything */
    return least >= 0 && (mine > least + FCGI_FRONT_SHARE_SLACK ||
                          (mine >= f->cfg->max_parked && least < f->cfg->max_parked));
}

static void *fcgi_front_thread_main(void *arg) {
    fcgi_front_thread *t = arg;
    fcgi_front *f = t->f;
    char err[512];
    /* A log that cannot be opened yet is not fatal: the handler says 503
     * and tries again (the dispatcher has logged why). */
    handler_open(&t->h, f->cfg, f->counters, f->lim, err, sizeof err);
    struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = FCGI_FRONT_ACCEPT};
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = FCGI_FRONT_STOP};
    struct epoll_event rev = {.events = EPOLLIN, .data.u32 = FCGI_FRONT_READY};
    int ep = epoll_create1(EPOLL_CLOEXEC);
    fcgi_front_event e = FCGI_FRONT_TICK;
    struct pollfd stop = {f->stop_fd, POLLIN, 0};
    /* A patient worker leaves the connections to the running ones until
     * it has the log open. */
    while (f->patient && !worker_ready(f->wk) && poll(&stop, 1, 100) == 0)
        ;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, f->listen_fd, &lev) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, f->stop_fd, &sev) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, f->ready_fd, &rev) != 0) {
        perror("holdfast: epoll");
        if (ep >= 0)
            close(ep);
        return NULL;
    }
    for (int listening = 1, queued = 0, drain = 0;;) {
        if (drain == 0) {
            /* A connection left queued FCGI_FRONT_SHARE_STUCK ticks while
             * this thread yields: no sibling is taking them (one not ready
             * yet, or stopped), so this one does -- the rule may delay a
             * connection, never strand it. */
            struct pollfd lp = {f->listen_fd, POLLIN, 0};
            queued = !listening && poll(&lp, 1, 0) > 0 ? queued + 1 : 0;
            int yields = queued < FCGI_FRONT_SHARE_STUCK && fcgi_front_yields(t);
            if (yields == listening) { /* THE SHARING RULE: leave the socket, or come back */
                if (epoll_ctl(ep, yields ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, f->listen_fd,
                              yields ? NULL : &lev) == 0)
                    listening = !yields;
            }
            e = fcgi_front_next(f, ep, listening ? FCGI_FRONT_ACCEPT_TICK_MS
                                                 : FCGI_FRONT_SHARE_TICK_MS);
            if (e == FCGI_FRONT_STOP)
                break;
            if (e == FCGI_FRONT_READY) {
                waiter *w = fcgi_front_ready_pop(f);
                if (w)
                    fcgi_front_resume(t, w);
                continue;
            }
            if (!listening)
                continue; /* a tick: look at the counts again */
        }
        /* A connection found by a tick, or taken over from siblings that do
         * not take theirs: its wake-up went to a process that does not
         * accept, and so may the next ones' -- take what is queued (at
         * most FCGI_FRONT_DRAIN_MAX) before waiting again. */
        int lost = drain > 0 || e == FCGI_FRONT_TICK || queued >= FCGI_FRONT_SHARE_STUCK;
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            drain = 0;
            if (errno == EMFILE || errno == ENFILE)
                poll(NULL, 0, 20); /* out of descriptors: let some go */
            continue;             /* EAGAIN: another thread or process won */
        }
        drain = !lost ? 0 : drain > 0 ? drain - 1 : FCGI_FRONT_DRAIN_MAX;
        if (!fcgi_front_peer_ok(f, fd)) {
            close(fd);
            continue;
        }
        fcgi_front_serve(t, fd);
    }
    close(ep);
    return NULL;
}

/* Handlers first, then let the signals in: a supervisor forks its workers
 * with them blocked, so a SIGTERM sent at once is not lost. */
static void fcgi_front_signals(void) {
    struct sigaction sa;
    sigset_t set;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fcgi_front_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* how mod_fcgid and lighttpd ask for a stop, too */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* Start one more accepting thread unless `threads` run or the front is
 * stopping; 1 when one started. */
static int fcgi_front_grow(fcgi_front *f) {
    int grew = 0;
    pthread_mutex_lock(&f->grow_lock);
    if (!f->stopping && f->started < f->max) {
        fcgi_front_thread *t = &f->ts[f->started];
        t->f = f;
        buf_init(&t->out);
        buf_init(&t->resp);
        if (pthread_create(&f->tids[f->started], NULL, fcgi_front_thread_main, t) == 0) {
            f->started++;
            grew = 1;
        }
    }
    pthread_mutex_unlock(&f->grow_lock);
    return grew;
}

/* Every parked subscriber holds a descriptor: use all the process may have. */
static void fcgi_front_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* This process's counters: its slot in the wake file when one is free (so
 * every worker's /stats can see them), else private ones. */
static handler_counters *fcgi_front_counters(const config *cfg, wake **wk, wake_slot **slot) {
    static handler_counters private_counters;
    char err[512];
    *slot = NULL;
    if (wake_open(wk, cfg->db, err, sizeof err) == 0) {
        wake_fold_dead(*wk, handler_cumulative_mask()); /* the dead keep their totals */
        *slot = wake_slot_claim(*wk);
    }
    return *slot ? handler_counters_of(*slot) : &private_counters;
}

int fcgi_front_run(const config *cfg, int listen_fd, int ready_fd, int patient) {
    char err[1024];
    wake *slot_wake = NULL;
    wake_slot *slot;
    handler_counters *counters = fcgi_front_counters(cfg, &slot_wake, &slot);
    fcgi_front f = {.cfg = cfg, .listen_fd = listen_fd, .counters = counters,
                    .web_addrs = getenv("FCGI_WEB_SERVER_ADDRS"), .patient = patient,
                    .sharing = ready_fd >= 0 && cfg->workers > 1,
                    .slots = slot ? wake_slots(slot_wake) : NULL};
    if (guard_open(&f.lim, cfg->db, err, sizeof err) != 0)
        fprintf(stderr, "holdfast[%d]: warning: %s: max_parked_per_client and publish_rate "
                        "are not enforced\n", (int)getpid(), err);
    f.stop_fd = fcgi_front_stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f.stop_fd < 0)
        return 1;
    fcgi_front_raise_nofile();
    fcgi_front_signals();
    fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
    static fcgi_front_thread disp; /* one front per process */
    memset(&disp, 0, sizeof disp);
    disp.f = &f;
    buf_init(&disp.out);
    buf_init(&disp.resp);
    f.disp = &disp;
    worker_front ops = {.frame = fcgi_front_frame_waiter, .part = fcgi_front_part_waiter,
                        .read = fcgi_front_read_more, .done = fcgi_front_read_done,
                        .again = fcgi_front_again,
                        .idle_ms = FCGI_FRONT_IDLE_MS, .request_ms = FCGI_FRONT_REQUEST_MS,
                        .ud = &f};
    pthread_mutex_init(&f.ready_lock, NULL);
    f.ready_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f.ready_fd < 0 || worker_start(&f.wk, cfg, counters, f.lim, &ops, err, sizeof err)) {
        fprintf(stderr, "holdfast[%d]: %s\n", (int)getpid(),
                f.ready_fd < 0 ? strerror(errno) : err);
        if (f.ready_fd >= 0)
            close(f.ready_fd);
        wake_slot_release(slot);
        wake_close(slot_wake);
        guard_close(f.lim);
        return 1;
    }
    pthread_mutex_init(&f.grow_lock, NULL);
    f.max = cfg->threads;
    f.ts = calloc((size_t)f.max, sizeof *f.ts);
    f.tids = calloc((size_t)f.max, sizeof *f.tids);
    f.busy_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int started = f.ts && f.tids && f.busy_fd >= 0 ? fcgi_front_grow(&f) : 0;
    /* Serve until stopped; say ready once the dispatcher has the log;
     * start threads by THE THREAD RULE. */
    int looking = 0;
    for (struct pollfd p[2] = {{f.stop_fd, POLLIN, 0}, {f.busy_fd, POLLIN, 0}}; started > 0;) {
        if (ready_fd >= 0 && worker_ready(f.wk)) {
            char one = 1;
            if (write(ready_fd, &one, 1) < 0)
                perror("holdfast: ready");
            close(ready_fd);
            ready_fd = -1;
        }
        int rc = poll(p, 2, looking ? FCGI_FRONT_GROW_MS : ready_fd >= 0 ? 100 : -1);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && p[0].revents)
            break;
        uint64_t n;
        if (rc > 0 && p[1].revents && read(f.busy_fd, &n, sizeof n) == (ssize_t)sizeof n)
            looking = 1;
        else if (looking) {
            int short_of = fcgi_front_short(&f);
            looking = short_of >= 0;
            if (short_of > 0)
                fcgi_front_grow(&f);
        }
    }
    if (ready_fd >= 0)
        close(ready_fd);
    pthread_mutex_lock(&f.grow_lock);
    f.stopping = 1;
    started = f.started;
    pthread_mutex_unlock(&f.grow_lock);
    for (int i = 0; i < started; i++) {
        pthread_join(f.tids[i], NULL);
        handler_close(&f.ts[i].h);
        buf_free(&f.ts[i].out);
        buf_free(&f.ts[i].resp);
    }
    worker_stop(f.wk); /* answers every parked subscriber */
    if (disp.opened)
        handler_close(&disp.h);
    buf_free(&disp.out);
    buf_free(&disp.resp);
    for (waiter *w; (w = fcgi_front_ready_pop(&f)) != NULL;)
        fcgi_front_pending_free(w); /* read, but no thread is left to answer */
    close(f.ready_fd);
    pthread_mutex_destroy(&f.ready_lock);
    pthread_mutex_destroy(&f.grow_lock);
    if (f.busy_fd >= 0)
        close(f.busy_fd);
    free(f.ts);
    free(f.tids);
    close(f.stop_fd);
    fcgi_front_stop_fd = -1;
    wake_slot_release(slot);
    wake_close(slot_wake);
    guard_close(f.lim);
    return started > 0 ? 0 : 1;
}
