/* lprun.c -- the load tool's run: build requests, drive non-blocking HTTP
 * and FastCGI connections from one epoll loop, check every answer, and step
 * the phases (see lpload.c for the phases and the bookkeeping).
 *
 * A connection is in exactly one of these states: idle (fd open and kept
 * alive, or closed), queued in one FIFO (connect tokens, back-off, or
 * "backlog full, try soon"), or busy with one request in flight.  Every
 * request ends in conn_answer() or conn_fail(), which pick the role's next
 * step: re-poll, back off, retry once, or stay idle.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "lpload.h"

int64_t lprun_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void lp_err(lp *L, int role, int code)
{
    if (code < 0 || code >= LP_STATUS_MAX)
        code = ERR_BADANSWER;
    L->errs[role][code]++;
}

/* ---- small utilities -------------------------------------------------- */

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(int pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static long rss_total(const int *pids, int npids)
{
    long sum = 0;
    for (int i = 0; i < npids; i++) {
        long k = rss_kib(pids[i]);
        if (k < 0)
            return -1;
        sum += k;
    }
    return sum;
}

/* Append s to out with anything outside [A-Za-z0-9._~-] percent-encoded. */
static void url_encode(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = strlen(out);
    for (; *s && j + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            strchr("._~-", ch)) {
            out[j++] = (char)ch;
        } else {
            out[j++] = '%';
            out[j++] = hex[ch >> 4];
            out[j++] = hex[ch & 15];
        }
    }
    out[j] = '\0';
}

/* ---- building requests --------------------------------------------------- */

typedef struct {
    const char *method;
    char uri[512];       /* relative to the prefix */
    char body[64];
    size_t body_len;
    const char *headers[4];
    size_t nheaders;
    char hbuf[2][160];
} lp_req;

/* nchan: the next poll sends back the position of the last answer. */
static void req_build_sub_nchan(lp *L, lp_sub *s, lp_req *r)
{
    r->method = "GET";
    snprintf(r->uri, sizeof r->uri, "/sub/%s", L->o.channel);
    if (L->o.sse) { /* eventsource: resume after the last event's id */
        if (s->etag[0]) {
            snprintf(r->hbuf[0], sizeof r->hbuf[0], "Last-Event-ID: %s", s->etag);
            r->headers[r->nheaders++] = r->hbuf[0];
        }
        return;
    }
    if (s->lm[0]) {
        snprintf(r->hbuf[0], sizeof r->hbuf[0], "If-Modified-Since: %s", s->lm);
        snprintf(r->hbuf[1], sizeof r->hbuf[1], "If-None-Match: %s", s->etag);
        r->headers[r->nheaders++] = r->hbuf[0];
        r->headers[r->nheaders++] = r->hbuf[1];
    }
}

static void req_build_sub(lp *L, lp_sub *s, lp_req *r)
{
    r->method = "GET";
    if (L->o.nchan) {
        req_build_sub_nchan(L, s, r);
        return;
    }
    snprintf(r->uri, sizeof r->uri, "/sub/%s?", L->o.channel);
    if (s->has_cursor)
        snprintf(r->uri + strlen(r->uri), sizeof r->uri - strlen(r->uri),
                 "since=%" PRId64 "&", s->cursor);
    if (s->epoch[0]) {
        strcat(r->uri, "epoch=");
        url_encode(r->uri, sizeof r->uri - 16, s->epoch);
        strcat(r->uri, "&");
    }
    if (L->o.sse) { /* a stream from the cursor: the last event's id */
        r->uri[strlen(r->uri) - 1] = '\0';
        return;
    }
    snprintf(r->uri + strlen(r->uri), sizeof r->uri - strlen(r->uri), "timeout=%d",
             L->o.poll_timeout);
}

static void req_build_pub(lp *L, int seq, lp_req *r)
{
    r->method = "POST";
    snprintf(r->uri, sizeof r->uri, "/pub/%s", L->o.channel);
    r->body_len = (size_t)snprintf(r->body, sizeof r->body, "seq=%d t=%" PRId64, seq,
                                   lprun_clock_ns());
    r->headers[r->nheaders++] = "Content-Type: text/plain";
    snprintf(r->hbuf[0], sizeof r->hbuf[0], "Idempotency-Key: lpload-%d-%" PRId64 "-%d",
             (int)getpid(), L->t_start, seq);
    r->headers[r->nheaders++] = r->hbuf[0];
    if (L->o.publish_key) {
        snprintf(r->hbuf[1], sizeof r->hbuf[1], "Authorization: Bearer %s", L->o.publish_key);
        r->headers[r->nheaders++] = r->hbuf[1];
    }
}

static void req_build(lp *L, lp_conn *c, lp_req *r)
{
    memset(r, 0, sizeof *r);
    if (c->role == ROLE_SUB) {
        req_build_sub(L, &L->subs[c->idx], r);
    } else if (c->role == ROLE_PUB) {
        req_build_pub(L, L->pub_seq[c->idx], r);
    } else if (L->o.nchan) {
        r->method = "GET"; /* the channel's info: "subscribers" */
        snprintf(r->uri, sizeof r->uri, "/pub/%s", L->o.channel);
    } else {
        r->method = "GET";
        strcpy(r->uri, "/stats");
    }
}

static int out_reserve(lp_conn *c, size_t n)
{
    if (n <= c->out_cap)
        return 0;
    char *p = realloc(c->out, n);
    if (!p)
        return -1;
    c->out = p;
    c->out_cap = n;
    return 0;
}

/* Encode r as HTTP/1.1 into c->out. */
static int req_http(lp *L, lp_conn *c, const lp_req *r)
{
    if (out_reserve(c, 1024 + r->body_len))
        return -1;
    /* nchan answers a subscriber in the message's own type, whatever it asks */
    const char *accept = c->role == ROLE_SUB && L->o.sse ? "Accept: text/event-stream\r\n"
                         : L->o.nchan && c->role == ROLE_SUB ? ""
                                                             : "Accept: application/json\r\n";
    int n = snprintf(c->out, c->out_cap, "%s %s%s HTTP/1.1\r\nHost: %s\r\n"
                                         "Connection: keep-alive\r\n%s",
                     r->method, L->o.prefix, r->uri, L->host, accept);
    for (size_t i = 0; i < r->nheaders; i++)
        n += snprintf(c->out + n, c->out_cap - (size_t)n, "%s\r\n", r->headers[i]);
    if (r->body_len || !strcmp(r->method, "POST"))
        n += snprintf(c->out + n, c->out_cap - (size_t)n, "Content-Length: %zu\r\n",
                      r->body_len);
    n += snprintf(c->out + n, c->out_cap - (size_t)n, "\r\n");
    memcpy(c->out + n, r->body, r->body_len);
    c->out_len = (size_t)n + r->body_len;
    c->out_off = 0;
    return 0;
}

/* Start r as one FastCGI connection in c->fc. */
static int req_fcgi(lp *L, lp_conn *c, const lp_req *r)
{
    const char *hdrs[6];
    size_t nh = 0;
    hdrs[nh++] = "Accept: application/json";
    for (size_t i = 0; i < r->nheaders; i++)
        hdrs[nh++] = r->headers[i];
    fcgi_http_request rq = {.method = r->method, .uri = r->uri, .script_name = L->o.prefix,
                            .headers = hdrs, .nheaders = nh,
                            .has_body = !strcmp(r->method, "POST"), .body_len = r->body_len};
    fcgi_params p;
    fcgi_params_init(&p);
    int rc = fcgi_params_add_http(&p, &rq);
    if (rc == 0)
        rc = fcgi_conn_start(&c->fc, L->o.addr, &p, r->body, r->body_len);
    fcgi_params_free(&p);
    return rc;
}

/* ---- waiting lines ------------------------------------------------------ */

int lprun_fifo_init(lp_fifo *f, size_t cap, int64_t delay_ns)
{
    f->v = calloc(cap, sizeof *f->v);
    f->cap = cap;
    f->head = f->len = 0;
    f->delay_ns = delay_ns;
    return f->v ? 0 : -1;
}

static void fifo_push(lp *L, lp_fifo *f, lp_conn *c)
{
    assert(!c->queued && f->len < f->cap);
    c->queued = 1;
    c->busy = 1;
    c->ready_at = L->now + f->delay_ns;
    f->v[(f->head + f->len++) % f->cap] = c;
}

/* The first entry if its time has come (removed), else NULL. */
static lp_conn *fifo_pop_ready(lp *L, lp_fifo *f)
{
    if (!f->len || f->v[f->head]->ready_at > L->now)
        return NULL;
    lp_conn *c = f->v[f->head];
    f->head = (f->head + 1) % f->cap;
    f->len--;
    c->queued = 0;
    return c;
}

/* Milliseconds until the first entry is ready (0 if now), or dflt if empty. */
static int64_t fifo_wait_ms(const lp *L, const lp_fifo *f, int64_t dflt)
{
    if (!f->len)
        return dflt;
    int64_t d = (f->v[f->head]->ready_at - L->now + 999999) / 1000000;
    return d < 0 ? 0 : d;
}

/* ---- connections ------------------------------------------------------- */

static void conn_events(lp *L, lp_conn *c, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (c->want_out == want_out)
        return;
    c->want_out = want_out;
    epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int conn_add(lp *L, lp_conn *c, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    c->want_out = want_out;
    return epoll_ctl(L->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0 ? -errno : 0;
}

void lprun_conn_close(lp_conn *c)
{
    if (c->fc) {
        fcgi_conn_free(c->fc); /* closes fd, which leaves the epoll set */
        c->fc = NULL;
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->want_out = 0;
    lphttp_resp_reset(&c->hr);
}

static int http_connect(lp *L, lp_conn *c)
{
    int fd = socket(L->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (L->ss.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, (struct sockaddr *)&L->ss, L->slen) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    c->fd = fd;
    return 0;
}

static void on_written(lp *L, lp_conn *c)
{
    if (c->role != ROLE_SUB)
        return;
    lp_sub *s = &L->subs[c->idx];
    if (!s->first_done) {
        s->first_done = 1;
        L->first_done++;
    }
}

static void conn_fail(lp *L, lp_conn *c, int code);

/* Write what c still has to send; on completion stop waiting for EPOLLOUT. */
static void conn_flush(lp *L, lp_conn *c)
{
    if (c->fc) {
        if (fcgi_conn_want_write(c->fc) && fcgi_conn_flush(c->fc)) {
            conn_fail(L, c, ERR_CONN); /* refused, reset: our requests are tiny */
            return;
        }
        conn_events(L, c, fcgi_conn_want_write(c->fc));
        if (!fcgi_conn_want_write(c->fc))
            on_written(L, c);
        return;
    }
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) {
            conn_events(L, c, 1);
            return;
        }
        if (n < 0) {
            conn_fail(L, c, ERR_CONN);
            return;
        }
        c->out_off += (size_t)n;
    }
    conn_events(L, c, 0);
    on_written(L, c);
}

/* Send the role's next request on c's live keep-alive connection, or open a
 * new connection (ready: a connect token was taken). */
static void conn_send(lp *L, lp_conn *c)
{
    lp_req r;
    int rc = 0;
    req_build(L, c, &r);
    c->busy = 1;
    c->sent_ns = L->now;
    lphttp_resp_reset(&c->hr);
    if (L->o.fcgi) {
        rc = req_fcgi(L, c, &r);
        c->fd = rc ? -1 : fcgi_conn_fd(c->fc);
        c->reused = 0;
        rc = rc ? rc : conn_add(L, c, 1);
    } else {
        c->reused = c->fd >= 0;
        if (c->fd < 0)
            rc = http_connect(L, c);
        rc = rc ? rc : req_http(L, c, &r);
        if (rc == 0 && !c->reused)
            rc = conn_add(L, c, 1);
    }
    if (rc == -EAGAIN) { /* a unix listen backlog is full: try again soon */
        L->connect_eagain++;
        lprun_conn_close(c);
        c->busy = 0;
        fifo_push(L, &L->soon, c);
        return;
    }
    if (rc) {
        conn_fail(L, c, ERR_CONN);
        return;
    }
    conn_flush(L, c);
}

/* Ask for c's next request: at once on a kept connection, else queued for a
 * connect token (--connect-rate). */
static void conn_begin(lp *L, lp_conn *c)
{
    if (c->fd >= 0 && !L->o.fcgi) {
        conn_send(L, c);
        return;
    }
    if (!c->queued)
        fifo_push(L, &L->connq, c);
}

static void queue_pump(lp *L)
{
    double per_ns = L->o.connect_rate / 1e6;
    L->tokens += (double)(L->now - L->tokens_ns) * per_ns;
    if (L->tokens > L->o.connect_rate)
        L->tokens = L->o.connect_rate;
    L->tokens_ns = L->now;
    lp_conn *c;
    while (L->tokens >= 1 && (c = fifo_pop_ready(L, &L->connq)) != NULL) {
        L->tokens -= 1;
        conn_send(L, c);
    }
}

/* ---- answers ------------------------------------------------------------ */

typedef struct {
    lp *L;
    lp_sub *s;
} msg_ctx;

static void sub_on_msg(void *ud, const lpjson_msg *m)
{
    msg_ctx *x = ud;
    lp *L = x->L;
    lp_sub *s = x->s;
    unsigned seq;
    long long t;
    if (!m->data_is_string || m->id < 0 || sscanf(m->data, "seq=%u t=%lld", &seq, &t) != 2 ||
        seq >= (unsigned)L->o.nmsgs) {
        L->foreign++;
        return;
    }
    if (s->seen[seq >> 3] & (1u << (seq & 7))) {
        L->duplicates++;
        return;
    }
    s->seen[seq >> 3] |= (uint8_t)(1u << (seq & 7));
    if (m->id <= s->last_id)
        L->out_of_order++;
    else
        s->last_id = m->id;
    s->got++;
    L->deliveries++;
    L->t_last_delivery = L->now;
    lphist_add(&L->hist, (uint64_t)(L->now > t ? (L->now - t) / 1000 : 0));
    if (s->got == (uint32_t)L->o.nmsgs) {
        s->complete = 1;
        L->complete++;
    }
}

static int sub_answer(lp *L, lp_sub *s, int status, const char *body, size_t blen)
{
    lpjson_poll pr;
    msg_ctx x = {L, s};
    if (status != 200) {
        lp_err(L, ROLE_SUB, status);
        return NEXT_BACKOFF;
    }
    if (lpjson_poll_parse(body, blen, &pr, sub_on_msg, &x) || !pr.has_cursor) {
        lp_err(L, ROLE_SUB, ERR_BADANSWER);
        return NEXT_BACKOFF;
    }
    L->polls++;
    L->empty_polls += pr.nmessages == 0;
    L->gaps += pr.gap != 0;
    L->resets += pr.reset != 0;
    s->cursor = pr.cursor;
    s->has_cursor = 1;
    if (pr.epoch[0])
        memcpy(s->epoch, pr.epoch, sizeof s->epoch);
    return s->complete ? NEXT_IDLE : NEXT_REPOLL;
}

/* nchan's position as one ordered number: Last-Modified's seconds, then the
 * Etag (a counter within that second); -1 if either is malformed. */
static int64_t nchan_key(const char *lm, const char *etag)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(lm, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char *eend;
    long long tag = strtoll(etag, &eend, 10);
    if (!end || *end || eend == etag || *eend || tag < 0 || tag >= 1000000)
        return -1;
    return (int64_t)timegm(&tm) * 1000000 + tag;
}

static void nchan_on_part(void *ud, const char *data, size_t n)
{
    msg_ctx *x = ud;
    /* parts come in nchan's order: number them so sub_on_msg sees them grow */
    lpjson_msg m = {.id = x->s->last_id + 1, .data = data, .data_len = n, .data_is_string = 1};
    sub_on_msg(ud, &m);
}

/* --sse: the complete events that arrived on s's stream, each a message:
 * its id the `id:` (holdfast: the message id; nchan: "seconds:tag", taken
 * as one ordered number), its payload the "seq=" text inside `data:`. */
static void sub_stream_events(lp *L, lp_sub *s, lphttp_resp *hr)
{
    msg_ctx x = {L, s};
    size_t off = 0, k;
    lphttp_event ev;
    while ((k = lphttp_sse_next(hr->body + off, hr->body_len - off, &ev)) > 0) {
        off += k;
        if (!ev.data || !ev.id)
            continue; /* comments, retry:, named control events */
        char id[LP_NCHAN_ETAG_MAX] = "";
        long long a = -1, b = 0;
        if (ev.id_len < sizeof id)
            memcpy(id, ev.id, ev.id_len);
        if (sscanf(id, "%lld:%lld", &a, &b) < 1)
            a = -1;
        const char *seq = memmem(ev.data, ev.data_len, "seq=", 4);
        char payload[64] = "";
        if (seq) {
            size_t n = ev.data_len - (size_t)(seq - ev.data);
            memcpy(payload, seq, n < sizeof payload - 1 ? n : sizeof payload - 1);
        }
        lpjson_msg m = {.id = L->o.nchan ? a * 1000000 + b : a, .data = payload,
                        .data_len = strlen(payload), .data_is_string = 1};
        if (L->o.nchan)
            memcpy(s->etag, id, sizeof s->etag);
        else if (a >= 0) {
            s->cursor = a;
            s->has_cursor = 1;
        }
        L->polls++;
        sub_on_msg(&x, &m);
    }
    lphttp_resp_consume(hr, off);
}

/* An nchan subscriber's answer: 200 with one message or a multipart batch,
 * 304/408 when the poll timed out. */
static int sub_answer_nchan(lp *L, lp_sub *s, const lphttp_resp *hr)
{
    char lm[LP_NCHAN_DATE_MAX], etag[LP_NCHAN_ETAG_MAX], ct[256];
    msg_ctx x = {L, s};
    if (hr->status == 304 || hr->status == 408) {
        L->polls++;
        L->empty_polls++;
        return NEXT_REPOLL;
    }
    if (hr->status != 200) {
        lp_err(L, ROLE_SUB, hr->status);
        return NEXT_BACKOFF;
    }
    int64_t key = -1;
    if (lphttp_resp_header(hr, "Last-Modified", lm, sizeof lm) &&
        lphttp_resp_header(hr, "Etag", etag, sizeof etag))
        key = nchan_key(lm, etag);
    if (key < 0) {
        lp_err(L, ROLE_SUB, ERR_BADANSWER);
        return NEXT_BACKOFF;
    }
    if (key <= s->nchan_key)
        L->out_of_order++;
    s->nchan_key = key;
    memcpy(s->lm, lm, sizeof lm);
    memcpy(s->etag, etag, sizeof etag);
    const char *body = hr->body ? hr->body : "";
    const char *b = NULL;
    if (lphttp_resp_header(hr, "Content-Type", ct, sizeof ct) &&
        !strncasecmp(ct, "multipart/mixed", 15) && (b = strstr(ct, "boundary=")) != NULL) {
        if (lphttp_multipart_each(body, hr->body_len, b + 9, nchan_on_part, &x) < 0) {
            lp_err(L, ROLE_SUB, ERR_BADANSWER);
            return NEXT_BACKOFF;
        }
    } else {
        nchan_on_part(&x, body, hr->body_len);
    }
    L->polls++;
    return s->complete ? NEXT_IDLE : NEXT_REPOLL;
}

static void pub_release(lp *L, lp_conn *c)
{
    c->retried = 0;
    L->pub_inflight--;
    L->pub_free[L->npub_free++] = c->idx;
}

static int pub_answer(lp *L, lp_conn *c, int status)
{
    if (status == 200 || status == 201 || (L->o.nchan && status == 202)) {
        L->pub_ok++;
    } else {
        lp_err(L, ROLE_PUB, status);
        L->pub_failed++;
    }
    pub_release(L, c);
    return NEXT_IDLE;
}

static void ctl_answer(lp *L, int status, const char *body)
{
    int64_t v;
    if (L->o.nchan && status == 404) { /* no channel yet: nobody waits */
        L->parked_known = 1;
        L->parked_last = 0;
        return;
    }
    if (status != 200 || !body) {
        if (L->ph != PH_INIT)
            lp_err(L, ROLE_CTL, status);
        return;
    }
    if (L->ph == PH_INIT) {
        L->stats_ok = 1;
        L->head_known = lpjson_int_sum(body, L->o.head_key, &L->head) > 0;
        L->parked_known = lpjson_int_sum(body, L->o.parked_key, &L->parked0) > 0;
        lpjson_str_find(body, "epoch", L->epoch0, sizeof L->epoch0);
    } else if (lpjson_int_sum(body, L->o.parked_key, &v) > 0) {
        L->parked_last = v;
    }
}

static void next_apply(lp *L, lp_conn *c, int next)
{
    if (next == NEXT_REPOLL || next == NEXT_RETRY)
        conn_begin(L, c);
    else if (next == NEXT_BACKOFF)
        fifo_push(L, &L->backoff, c);
}

/* A request on c ended without an answer (code: ERR_CONN or ERR_TIMEOUT). */
static void conn_fail(lp *L, lp_conn *c, int code)
{
    int silent = code == ERR_CONN && c->reused && lphttp_resp_empty(&c->hr);
    int next = NEXT_IDLE;
    lprun_conn_close(c);
    c->busy = 0;
    if (silent && !(c->role == ROLE_PUB && c->retried)) {
        /* the server closed a kept-alive connection as we reused it */
        L->reconnects++;
        c->retried = c->role == ROLE_PUB;
        next_apply(L, c, NEXT_RETRY);
        return;
    }
    if (!(c->role == ROLE_CTL && L->ph == PH_INIT)) /* /stats is optional */
        lp_err(L, c->role, code);
    if (c->role == ROLE_SUB) {
        next = NEXT_BACKOFF;
    } else if (c->role == ROLE_PUB) {
        L->pub_failed++;
        pub_release(L, c);
    }
    next_apply(L, c, next);
}

/* A complete answer arrived on c. */
static void conn_answer(lp *L, lp_conn *c, int status, const char *body, size_t blen,
                        int keep)
{
    int next = NEXT_IDLE;
    c->busy = 0;
    if (c->role == ROLE_SUB && L->o.nchan)
        next = sub_answer_nchan(L, &L->subs[c->idx], &c->hr);
    else if (c->role == ROLE_SUB)
        next = sub_answer(L, &L->subs[c->idx], status, body ? body : "", blen);
    else if (c->role == ROLE_PUB)
        next = pub_answer(L, c, status);
    else
        ctl_answer(L, status, body);
    if (keep)
        lphttp_resp_reset(&c->hr);
    else
        lprun_conn_close(c);
    next_apply(L, c, next);
}

static void http_readable(lp *L, lp_conn *c)
{
    static char buf[65536];
    for (int round = 0; round < LP_READ_ROUNDS; round++) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                      errno == ENOTCONN))
            return;
        if (!c->busy || c->queued) { /* idle keep-alive: EOF or junk, close */
            lprun_conn_close(c);
            return;
        }
        if (n < 0) {
            conn_fail(L, c, ERR_CONN);
            return;
        }
        size_t used = 0;
        lphttp_result r = n == 0 ? lphttp_resp_eof(&c->hr)
                                 : lphttp_resp_feed(&c->hr, buf, (size_t)n, &used);
        if (r == LPHTTP_ERROR) {
            conn_fail(L, c, lphttp_resp_empty(&c->hr) ? ERR_CONN : ERR_BADANSWER);
            return;
        }
        if (L->o.sse && c->role == ROLE_SUB && lphttp_resp_in_body(&c->hr) &&
            c->hr.status == 200) {
            c->sent_ns = L->now; /* a stream times out on silence, not on length */
            sub_stream_events(L, &L->subs[c->idx], &c->hr);
            if (r == LPHTTP_DONE) { /* the stream ended: a new one from the cursor */
                lprun_conn_close(c);
                c->busy = 0;
                L->reconnects++;
                next_apply(L, c, L->subs[c->idx].complete ? NEXT_IDLE : NEXT_REPOLL);
                return;
            }
            if (n == 0)
                return;
            continue;
        }
        if (r == LPHTTP_DONE) {
            int keep = c->hr.keep_alive && n > 0 && used == (size_t)n;
            conn_answer(L, c, c->hr.status, c->hr.body, c->hr.body_len, keep);
            return;
        }
        if (n == 0)
            return;
    }
}

static void fcgi_readable(lp *L, lp_conn *c)
{
    fcgi_conn_result r = fcgi_conn_pump(c->fc);
    if (r == FCGI_CONN_ERROR) {
        conn_fail(L, c, ERR_CONN);
    } else if (r == FCGI_CONN_DONE) {
        size_t blen;
        const char *body = fcgi_conn_body(c->fc, &blen);
        int status = fcgi_conn_status(c->fc);
        conn_answer(L, c, status ? status : ERR_BADANSWER, body, blen, 0);
    }
}

static void conn_event(lp *L, lp_conn *c, uint32_t events)
{
    if (c->fd < 0)
        return; /* stale event for a connection closed in this batch */
    if ((events & EPOLLOUT) && c->busy && !c->queued)
        conn_flush(L, c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        if (c->fc)
            fcgi_readable(L, c);
        else
            http_readable(L, c);
    }
}

/* ---- phases and timers ------------------------------------------------ */

static void phase_enter(lp *L, lp_phase ph)
{
    L->ph = ph;
    L->t_phase = L->now;
    if (ph == PH_CONNECT) {
        L->rss_before_kib = L->o.npids ? rss_total(L->o.pids, L->o.npids) : -1;
        L->own_before_kib = L->o.nown_pids ? rss_total(L->o.own_pids, L->o.nown_pids) : -1;
        for (int i = 0; i < L->o.nsubs; i++) {
            lp_sub *s = &L->subs[i];
            s->has_cursor = L->head_known;
            s->cursor = L->head;
            memcpy(s->epoch, L->epoch0, sizeof s->epoch);
            conn_begin(L, &s->c);
        }
    } else if (ph == PH_PUBLISH) {
        L->rss_after_kib = L->o.npids ? rss_total(L->o.pids, L->o.npids) : -1;
        L->own_after_kib = L->o.nown_pids ? rss_total(L->o.own_pids, L->o.nown_pids) : -1;
        L->t_pub_first = L->now;
        L->setup_ms = (L->now - L->t_start) / 1000000;
    } else if (ph == PH_DRAIN) {
        L->t_pub_done = L->now;
    }
}

static void settle_step(lp *L)
{
    int64_t waited_ms = (L->now - L->t_phase) / 1000000;
    if (!L->parked_known) {
        if (waited_ms >= L->o.settle_ms)
            phase_enter(L, PH_PUBLISH);
        return;
    }
    if (L->parked_last - L->parked0 >= L->o.nsubs) {
        phase_enter(L, PH_PUBLISH);
        return;
    }
    if (waited_ms >= (L->o.settle_ms > LP_SETTLE_CAP_MS ? L->o.settle_ms : LP_SETTLE_CAP_MS)) {
        L->settle_timed_out = 1;
        phase_enter(L, PH_PUBLISH);
        return;
    }
    if (!L->ctl.busy && L->now >= L->t_next_stats) {
        L->t_next_stats = L->now + LP_STATS_EVERY_NS;
        conn_begin(L, &L->ctl);
    }
}

static void publish_step(lp *L)
{
    while (L->next_seq < L->o.nmsgs && L->pub_inflight < L->o.inflight && L->npub_free) {
        if (L->o.rate > 0) {
            int64_t due = L->t_pub_first + (int64_t)((double)L->next_seq * 1e9 / L->o.rate);
            if (L->now < due)
                break;
        }
        int slot = L->pub_free[--L->npub_free];
        L->pub_seq[slot] = L->next_seq++;
        L->pub_inflight++;
        conn_begin(L, &L->pubs[slot]);
    }
    if (L->pub_ok + L->pub_failed == L->o.nmsgs)
        phase_enter(L, PH_DRAIN);
}

static void drain_step(lp *L)
{
    int64_t quiet_since = L->t_last_delivery > L->t_pub_done ? L->t_last_delivery : L->t_pub_done;
    if (L->complete == L->o.nsubs) {
        L->stopped_by = "complete";
        L->ph = PH_STOP;
    } else if (L->now - quiet_since > (int64_t)L->o.drain_ms * 1000000) {
        L->stopped_by = "drain-timeout";
        L->ph = PH_STOP;
    }
}

/* Connections whose wait is over ask again (through the connect queue). */
static void retry_pump(lp *L)
{
    lp_conn *c;
    while ((c = fifo_pop_ready(L, &L->backoff)) != NULL)
        conn_begin(L, c);
    while ((c = fifo_pop_ready(L, &L->soon)) != NULL)
        conn_begin(L, c);
}

/* Requests that outlived their deadline fail as timeouts. */
static void timeouts_sweep(lp *L)
{
    int64_t sub_limit = ((int64_t)L->o.poll_timeout + 15) * 1000000000LL;
    for (int i = 0; i < L->o.nsubs; i++) {
        lp_conn *c = &L->subs[i].c;
        if (c->busy && !c->queued && L->now - c->sent_ns > sub_limit)
            conn_fail(L, c, ERR_TIMEOUT);
    }
    for (int i = 0; i < L->o.inflight; i++) {
        lp_conn *c = &L->pubs[i];
        if (c->busy && !c->queued && L->now - c->sent_ns > LP_PUB_TIMEOUT_NS)
            conn_fail(L, c, ERR_TIMEOUT);
    }
    if (L->ctl.busy && !L->ctl.queued && L->now - L->ctl.sent_ns > LP_CTL_TIMEOUT_NS)
        conn_fail(L, &L->ctl, ERR_TIMEOUT);
}

/* Milliseconds epoll may sleep before the next timed action. */
static int wait_ms(lp *L)
{
    if (L->connq.len)
        return 1;
    int64_t ms = fifo_wait_ms(L, &L->backoff, 100);
    int64_t soon = fifo_wait_ms(L, &L->soon, 100);
    ms = soon < ms ? soon : ms;
    if (L->ph == PH_PUBLISH && L->o.rate > 0 && L->next_seq < L->o.nmsgs) {
        int64_t due = L->t_pub_first + (int64_t)((double)L->next_seq * 1e9 / L->o.rate);
        int64_t d = (due - L->now + 999999) / 1000000;
        ms = d < ms ? d : ms;
    }
    if (L->ph == PH_SETTLE || L->ph == PH_INIT)
        ms = ms < 10 ? ms : 10;
    return ms < 0 ? 0 : (int)ms;
}

static void phase_step(lp *L)
{
    if (L->ph == PH_INIT && !L->ctl.busy)
        phase_enter(L, PH_CONNECT);
    if (L->ph == PH_CONNECT && L->first_done == L->o.nsubs) {
        phase_enter(L, PH_SETTLE);
        L->t_next_stats = L->now;
    }
    if (L->ph == PH_SETTLE)
        settle_step(L);
    if (L->ph == PH_PUBLISH)
        publish_step(L);
    if (L->ph == PH_DRAIN)
        drain_step(L);
}

void lprun_loop(lp *L)
{
    struct epoll_event evs[512];
    int64_t limit = L->t_start + (int64_t)(L->o.duration_limit * 1e9);
    int64_t next_sweep = L->t_start + 1000000000LL;
    L->now = lprun_clock_ns();
    conn_begin(L, &L->ctl); /* INIT: GET /stats */
    while (L->ph != PH_STOP) {
        int n = epoll_wait(L->ep, evs, 512, wait_ms(L));
        L->now = lprun_clock_ns();
        for (int i = 0; i < n; i++)
            conn_event(L, evs[i].data.ptr, evs[i].events);
        L->now = lprun_clock_ns();
        queue_pump(L);
        retry_pump(L);
        phase_step(L);
        if (L->now >= next_sweep) {
            timeouts_sweep(L);
            next_sweep = L->now + 1000000000LL;
        }
        if (L->now >= limit && L->ph != PH_STOP) {
            L->stopped_by = "duration-limit";
            L->ph = PH_STOP;
        }
    }
}

/* ---- setup -------------------------------------------------------------- */

void lprun_conn_init(lp_conn *c, int role, int idx)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->role = role;
    c->idx = idx;
    lphttp_resp_init(&c->hr);
}
