/* fcgi_front.c -- the libfcgi adapter.
 *
 * A few accepting threads share the listen socket.  Each accepts a
 * connection itself (so it can stop on SIGTERM and check
 * FCGI_WEB_SERVER_ADDRS), then lets libfcgi read the params and body by
 * handing the fd to FCGX_Accept_r (an FCGX_Request whose ipcFd is already
 * set reads from it; keepConnection=1 stops libfcgi from closing it first).
 *
 * Then libfcgi lets go: FCGX_Free(req, 0) releases its buffers and params
 * (~17 KiB) without closing the connection, and holdfast writes the answer
 * itself as FastCGI records -- at once for most requests, or later from the
 * dispatcher for a parked subscriber, which keeps only its fd, request id
 * and parsed fields (a few hundred bytes).  libfcgi's own close, which can
 * wait 2 s for the peer, is never used.
 */
#include "fcgi_front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fastcgi.h>
#include <fcgiapp.h>
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
#include <time.h>
#include <unistd.h>

#include "handler.h"
#include "reply.h"
#include "request.h"
#include "worker.h"

#define FCGI_FRONT_IO_TIMEOUT_S 10
#define FCGI_FRONT_RECORD_MAX 65528 /* a multiple of 8 below 65535 */
#define FCGI_FRONT_DRAIN_MAX (1 << 20)

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

static void fcgi_front_record(buf *out, int type, uint16_t reqid, const void *data,
                              size_t len) {
    FCGI_Header h = {.version = FCGI_VERSION_1,
                     .type = (unsigned char)type,
                     .requestIdB1 = (unsigned char)(reqid >> 8),
                     .requestIdB0 = (unsigned char)reqid,
                     .contentLengthB1 = (unsigned char)(len >> 8),
                     .contentLengthB0 = (unsigned char)len};
    buf_put(out, &h, sizeof h);
    buf_put(out, data, len);
}

void fcgi_front_frame(buf *out, uint16_t reqid, const char *data, size_t len) {
    for (size_t off = 0; off < len; off += FCGI_FRONT_RECORD_MAX) {
        size_t n = len - off < FCGI_FRONT_RECORD_MAX ? len - off : FCGI_FRONT_RECORD_MAX;
        fcgi_front_record(out, FCGI_STDOUT, reqid, data + off, n);
    }
    fcgi_front_record(out, FCGI_STDOUT, reqid, NULL, 0);
    FCGI_EndRequestBody end = {.protocolStatus = FCGI_REQUEST_COMPLETE};
    fcgi_front_record(out, FCGI_END_REQUEST, reqid, &end, sizeof end);
}

static void fcgi_front_frame_waiter(buf *out, const waiter *w, const char *resp, size_t len) {
    fcgi_front_frame(out, w->reqid, resp, len);
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

/* Blocking write of a whole answer (the socket has a send timeout). */
static void fcgi_front_write_all(int fd, const buf *out) {
    size_t off = 0;
    while (off < out->len) {
        ssize_t n = write(fd, out->p + off, out->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

/* Read the body into body (at most max_body; -1 if larger, -2 on error). */
static int fcgi_front_read_body(FCGX_Request *req, buf *body, int64_t max) {
    char tmp[8192];
    int n;
    buf_reset(body);
    while ((n = FCGX_GetStr(tmp, sizeof tmp, req->in)) > 0) {
        if ((int64_t)(body->len + (size_t)n) > max)
            return -1;
        buf_put(body, tmp, (size_t)n);
    }
    return FCGX_GetError(req->in) || body->oom ? -2 : 0;
}

/* Read and discard stdin up to its end, so closing never resets the peer. */
static void fcgi_front_drain(FCGX_Request *req) {
    char tmp[4096];
    int n, total = 0;
    while (total < FCGI_FRONT_DRAIN_MAX && (n = FCGX_GetStr(tmp, sizeof tmp, req->in)) > 0)
        total += n;
}

/* Park a subscriber; 0, or -1 when the dispatcher is full (answer 503). */
static int fcgi_front_park(fcgi_front *f, const request *r, int fd, uint16_t reqid,
                           int64_t cursor, const char *epoch) {
    struct timespec ts;
    waiter *w = waiter_new(r->channels, r->nchannels);
    if (!w)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    w->fd = fd;
    w->reqid = reqid;
    w->format = (uint8_t)r->format;
    w->cursor = cursor;
    memcpy(w->epoch, epoch, sizeof w->epoch);
    w->limit = r->limit;
    w->cors = reply_cors(f->cfg, r->origin);
    w->deadline_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + r->timeout_s * 1000LL;
    if (worker_park(f->wk, w) == 0)
        return 0;
    waiter_free(w);
    return -1;
}

typedef struct {
    fcgi_front *f;
    handler h;
    FCGX_Request req; /* never moved: libfcgi's streams point back at it */
    request r;
    buf out, body, resp;
} fcgi_front_thread;

/* One connection: read the request, answer or park it. */
static void fcgi_front_serve(fcgi_front_thread *t, int fd) {
    fcgi_front *f = t->f;
    request_limits lim = handler_limits(f->cfg);
    FCGX_InitRequest(&t->req, f->listen_fd, 0);
    t->req.ipcFd = fd;
    t->req.keepConnection = 1;
    if (FCGX_Accept_r(&t->req) < 0) {
        FCGX_Free(&t->req, 1); /* libfcgi closed or will close the fd */
        return;
    }
    uint16_t reqid = (uint16_t)t->req.requestId;
    int64_t cursor = 0;
    char epoch[MSGLOG_EPOCH_LEN + 1];
    request_route route = request_parse(&t->r, t->req.envp, &lim);
    buf_reset(&t->resp);
    int got = 0;
    if (route == ROUTE_PUB)
        got = fcgi_front_read_body(&t->req, &t->body, f->cfg->max_body);
    else
        fcgi_front_drain(&t->req);
    handler_result res = HANDLER_DONE;
    const char *cors = reply_cors(f->cfg, t->r.origin);
    if (got == -1)
        reply_error(&t->resp, 413, cors, "body_too_large", "the body exceeds max_body", 0);
    else if (got < 0)
        reply_error(&t->resp, 400, cors, "bad_body", "the body could not be read", 0);
    else
        res = handler_run(&t->h, &t->r, t->body.p, t->body.len, &t->resp, &cursor, epoch);
    if (res == HANDLER_PARK && fcgi_front_park(f, &t->r, fd, reqid, cursor, epoch) != 0) {
        res = HANDLER_DONE;
        reply_error(&t->resp, 503, cors, "full", "this worker holds max_parked subscribers", 1);
    }
    /* Let libfcgi go without closing: the fd is ours (or the dispatcher's). */
    FCGX_Free(&t->req, 0);
    t->req.ipcFd = -1;
    if (res == HANDLER_PARK)
        return;
    buf_reset(&t->out);
    fcgi_front_frame(&t->out, reqid, t->resp.p, t->resp.len);
    fcgi_front_write_all(fd, &t->out);
    close(fd);
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
    struct timeval tv = {FCGI_FRONT_IO_TIMEOUT_S, 0};
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
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                poll(NULL, 0, 20); /* out of descriptors: let some go */
            continue;             /* EAGAIN: another thread or process won */
        }
        if (!fcgi_front_peer_ok(f, fd)) {
            close(fd);
            continue;
        }
        /* A web server that stalls mid-request holds a thread at most this
         * long (unix sockets do not inherit these from the listener). */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        fcgi_front_serve(t, fd);
    }
    close(ep);
    return NULL;
}

static void fcgi_front_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fcgi_front_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* what libfcgi would treat as shutdown */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
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
        buf_init(&t->body);
        buf_init(&t->resp);
        if (handler_open(&t->h, f->cfg, f->counters, err, sizeof err)) {
            fprintf(stderr, "holdfast[%d]: %s\n", (int)getpid(), err);
            break;
        }
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
    fcgi_front_signals(); /* before FCGX_Init, which keeps handlers it finds */
    FCGX_Init();
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
    if (started > 0 && ready_fd >= 0) {
        char one = 1;
        if (write(ready_fd, &one, 1) < 0)
            perror("holdfast: ready");
    }
    if (ready_fd >= 0)
        close(ready_fd);
    if (started > 0) {
        struct pollfd p = {f.stop_fd, POLLIN, 0};
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
        handler_close(&ts[i].h);
        buf_free(&ts[i].out);
        buf_free(&ts[i].body);
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
