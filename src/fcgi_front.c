/* fcgi_front.c -- the FastCGI front: accepting threads, and the one path
 * every connection takes from accept to close.
 *
 * THE CONNECTION PATH.  A thread accepts (EPOLLEXCLUSIVE: one thread per
 * connection wakes), checks FCGI_WEB_SERVER_ADDRS, and reads the request
 * itself, non-blocking, through fcgi_proto.c -- under ONE deadline for the
 * whole request (FCGI_FRONT_REQUEST_MS from accept), not one per read, so
 * a peer trickling a byte at a time holds a thread at most that long.
 * Then exactly one of:
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
#define FCGI_FRONT_PARAMS_MAX (64 * 1024) /* bytes of params (431 beyond) */

typedef struct {
    const config *cfg;
    int listen_fd;
    int stop_fd;
    worker *wk;
    handler_counters *counters;
    const char *web_addrs; /* FCGI_WEB_SERVER_ADDRS, or NULL */
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

/* How a request's intake ended (see THE CONNECTION PATH). */
typedef enum {
    FCGI_FRONT_WHOLE,   /* arrived whole: answer or park it */
    FCGI_FRONT_REFUSED, /* answered before its end (resp is built): drain the rest */
    FCGI_FRONT_LATE,    /* not whole by the deadline */
    FCGI_FRONT_BROKEN   /* not FastCGI, aborted, or the web server left */
} fcgi_front_intake;

typedef struct {
    fcgi_front *f;
    handler h;
    fcgi_proto p;
    request r;
    int parsed;  /* r holds this request (its params are complete) */
    int clean;   /* every byte the web server sent was read */
    buf out, resp;
    unsigned char in[16384];
} fcgi_front_thread;

/* Write b now, waiting for the socket at most until deadline: 0 when all
 * of it went out. */
static int fcgi_front_write_by(int fd, const buf *b, int64_t deadline) {
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(fd, b->p + off, b->len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        int64_t left = deadline - clock_mono_ms();
        if (n == 0 || (errno != EAGAIN && errno != EINTR) || left <= 0)
            return -1;
        struct pollfd pfd = {fd, POLLOUT, 0};
        poll(&pfd, 1, (int)left);
    }
    return 0;
}

/* The params are complete: parse them, or refuse the request now. */
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
        return FCGI_FRONT_WHOLE; /* so far: the body is still to come */
    handler_run(&t->h, &t->r, NULL, 0, &t->resp, NULL, NULL);
    return FCGI_FRONT_REFUSED;
}

/* Feed got bytes of t->in to the reader; FCGI_FRONT_WHOLE with *more set
 * when it wants more. */
static fcgi_front_intake fcgi_front_feed(fcgi_front_thread *t, int fd, size_t got,
                                         int64_t deadline, int *more) {
    fcgi_proto *p = &t->p;
    *more = 0;
    for (size_t off = 0; off < got;) {
        size_t used;
        fcgi_proto_event ev = fcgi_proto_feed(p, t->in + off, got - off, &used);
        off += used;
        if (p->reply.len) { /* management answers: small, and rare */
            fcgi_front_write_by(fd, &p->reply, deadline);
            buf_reset(&p->reply);
        }
        if (ev == FCGI_PROTO_PARAMS && fcgi_front_params(t) == FCGI_FRONT_REFUSED)
            return FCGI_FRONT_REFUSED;
        if (ev == FCGI_PROTO_ABORT || ev == FCGI_PROTO_ERROR)
            return FCGI_FRONT_BROKEN;
        if (p->body_over) { /* before DONE: a handler never sees a cut body */
            reply_error(&t->resp, 413, reply_cors(t->f->cfg, t->r.origin), "body_too_large",
                        "the body exceeds max_body", 0);
            t->clean = ev == FCGI_PROTO_DONE && off == got;
            return FCGI_FRONT_REFUSED;
        }
        if (ev == FCGI_PROTO_DONE) {
            t->clean = off == got;
            return FCGI_FRONT_WHOLE;
        }
    }
    *more = 1;
    return FCGI_FRONT_WHOLE;
}

/* Read the request until it is whole, refused, late or broken. */
static fcgi_front_intake fcgi_front_read(fcgi_front_thread *t, int fd, int64_t deadline) {
    for (;;) {
        ssize_t got = read(fd, t->in, sizeof t->in);
        if (got > 0) {
            int more;
            fcgi_front_intake res = fcgi_front_feed(t, fd, (size_t)got, deadline, &more);
            if (!more)
                return res;
            continue;
        }
        if (got == 0 || (errno != EAGAIN && errno != EINTR))
            return FCGI_FRONT_BROKEN;
        int64_t left = deadline - clock_mono_ms();
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || (poll(&pfd, 1, (int)left) == 0 && clock_mono_ms() >= deadline))
            return FCGI_FRONT_LATE;
    }
}

/* Park a subscriber; 0, or -1 when the dispatcher is full (answer 503). */
static int fcgi_front_park(fcgi_front *f, const request *r, int fd, uint16_t reqid,
                           int64_t cursor, const char *epoch) {
    waiter *w = waiter_new(r->channels, r->nchannels);
    if (!w)
        return -1;
    w->fd = fd;
    w->reqid = reqid;
    w->format = (uint8_t)r->format;
    w->cursor = cursor;
    memcpy(w->epoch, epoch, sizeof w->epoch);
    w->limit = r->limit;
    w->cors = reply_cors(f->cfg, r->origin);
    w->deadline_ms = clock_mono_ms() + r->timeout_s * 1000LL;
    if (worker_park(f->wk, w) == 0)
        return 0;
    waiter_free(w);
    return -1;
}

/* Send t->resp and close: at once when the socket takes it all and the
 * input was read to its end, else through the dispatcher. */
static void fcgi_front_answer(fcgi_front_thread *t, int fd) {
    buf_reset(&t->out);
    fcgi_proto_frame(&t->out, t->p.reqid, t->resp.p, t->resp.len);
    ssize_t n = t->out.oom ? -1 : write(fd, t->out.p, t->out.len);
    size_t off = n > 0 ? (size_t)n : 0;
    if (off == t->out.len && t->clean) {
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
    if (worker_adopt(t->f->wk, w) != 0) {
        buf_free(pending);
        free(pending);
        waiter_free(w);
        close(fd);
    }
}

/* One connection, from accept to close (or to the dispatcher). */
static void fcgi_front_serve(fcgi_front_thread *t, int fd) {
    fcgi_front *f = t->f;
    int64_t deadline = clock_mono_ms() + FCGI_FRONT_REQUEST_MS;
    fcgi_proto_init(&t->p, FCGI_FRONT_PARAMS_MAX, (size_t)f->cfg->max_body);
    t->parsed = t->clean = 0;
    buf_reset(&t->resp);
    fcgi_front_intake res = fcgi_front_read(t, fd, deadline);
    const char *cors = t->parsed ? reply_cors(f->cfg, t->r.origin) : NULL;
    int64_t cursor = 0;
    char epoch[MSGLOG_EPOCH_LEN + 1];
    if (res == FCGI_FRONT_BROKEN || (res == FCGI_FRONT_LATE && !t->p.begun)) {
        close(fd);
    } else if (res == FCGI_FRONT_LATE) {
        reply_error(&t->resp, 408, cors, "request_timeout",
                    "the request did not arrive whole within 10 s", 0);
        fcgi_front_answer(t, fd);
    } else if (res == FCGI_FRONT_REFUSED) {
        fcgi_front_answer(t, fd);
    } else if (handler_run(&t->h, &t->r, t->p.body.p, t->p.body.len, &t->resp, &cursor,
                           epoch) == HANDLER_DONE) {
        fcgi_front_answer(t, fd);
    } else if (fcgi_front_park(f, &t->r, fd, t->p.reqid, cursor, epoch) != 0) {
        reply_error(&t->resp, 503, cors, "full", "this worker holds max_parked subscribers", 1);
        fcgi_front_answer(t, fd);
    }
    fcgi_proto_free(&t->p); /* r pointed into it: done with both */
}

/* Wait for a connection or the stop signal.  Each thread has its own epoll
 * set with the listen socket added EPOLLEXCLUSIVE, so a new connection
 * wakes one thread, not all of them (poll() would wake every thread of
 * every process on the socket).  Returns 1 when a connection may be
 * waiting, 0 to stop. */
static int fcgi_front_wait(int ep) {
    struct epoll_event ev[2];
    for (;;) {
        int n = epoll_wait(ep, ev, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 0;
        for (int i = 0; i < n; i++)
            if (ev[i].data.u32 == 1)
                return 0;
        return 1;
    }
}

static void *fcgi_front_thread_main(void *arg) {
    fcgi_front_thread *t = arg;
    fcgi_front *f = t->f;
    struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = 0};
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = 1};
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, f->listen_fd, &lev) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, f->stop_fd, &sev) != 0) {
        perror("holdfast: epoll");
        if (ep >= 0)
            close(ep);
        return NULL;
    }
    while (fcgi_front_wait(ep)) {
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                poll(NULL, 0, 20); /* out of descriptors: let some go */
            continue;             /* EAGAIN: another thread or process won */
        }
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

/* Start the accepting threads; returns how many started. */
static int fcgi_front_start_threads(fcgi_front *f, fcgi_front_thread *ts, pthread_t *tids,
                                    int n) {
    char err[512];
    int started = 0;
    for (int i = 0; i < n; i++) {
        fcgi_front_thread *t = &ts[i];
        t->f = f;
        buf_init(&t->out);
        buf_init(&t->resp);
        /* A log that cannot be opened yet is not fatal: the handler says
         * 503 and tries again (the dispatcher has logged why). */
        handler_open(&t->h, f->cfg, f->counters, err, sizeof err);
        if (pthread_create(&tids[i], NULL, fcgi_front_thread_main, t) != 0) {
            handler_close(&t->h);
            break;
        }
        started++;
    }
    return started;
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
    if (wake_open(wk, cfg->db, err, sizeof err) == 0)
        *slot = wake_slot_claim(*wk);
    return *slot ? handler_counters_of(*slot) : &private_counters;
}

int fcgi_front_run(const config *cfg, int listen_fd, int ready_fd) {
    char err[1024];
    wake *slot_wake = NULL;
    wake_slot *slot;
    handler_counters *counters = fcgi_front_counters(cfg, &slot_wake, &slot);
    fcgi_front f = {.cfg = cfg, .listen_fd = listen_fd, .counters = counters,
                    .web_addrs = getenv("FCGI_WEB_SERVER_ADDRS")};
    f.stop_fd = fcgi_front_stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f.stop_fd < 0)
        return 1;
    fcgi_front_raise_nofile();
    fcgi_front_signals();
    fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
    if (worker_start(&f.wk, cfg, counters, fcgi_front_frame_waiter, err, sizeof err)) {
        fprintf(stderr, "holdfast[%d]: %s\n", (int)getpid(), err);
        wake_slot_release(slot);
        wake_close(slot_wake);
        return 1;
    }
    if (cfg->npublish_keys == 0)
        fprintf(stderr, "holdfast[%d]: warning: no publish_key is set: anyone who can reach "
                        "this server may publish\n", (int)getpid());
    int n = cfg->threads;
    fcgi_front_thread *ts = calloc((size_t)n, sizeof *ts);
    pthread_t *tids = calloc((size_t)n, sizeof *tids);
    int started = ts && tids ? fcgi_front_start_threads(&f, ts, tids, n) : 0;
    /* Serve until stopped; say ready once the dispatcher has the log. */
    for (struct pollfd p = {f.stop_fd, POLLIN, 0}; started > 0;) {
        if (ready_fd >= 0 && worker_ready(f.wk)) {
            char one = 1;
            if (write(ready_fd, &one, 1) < 0)
                perror("holdfast: ready");
            close(ready_fd);
            ready_fd = -1;
        }
        int rc = poll(&p, 1, ready_fd >= 0 ? 100 : -1);
        if (rc > 0 || (rc < 0 && errno != EINTR))
            break;
    }
    if (ready_fd >= 0)
        close(ready_fd);
    for (int i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
        handler_close(&ts[i].h);
        buf_free(&ts[i].out);
        buf_free(&ts[i].resp);
    }
    worker_stop(f.wk); /* answers every parked subscriber */
    free(ts);
    free(tids);
    close(f.stop_fd);
    fcgi_front_stop_fd = -1;
    wake_slot_release(slot);
    wake_close(slot_wake);
    return started > 0 ? 0 : 1;
}
