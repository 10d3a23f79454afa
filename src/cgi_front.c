/* cgi_front.c -- the one-request CGI path, for hosts without FastCGI.
 *
 * Same routes and answers as the FastCGI front (handler.c builds them); the
 * difference is the wait: with no dispatcher to park in, a subscribe sleeps
 * on the wake file in this process until a message or its deadline, and
 * re-reads the log on every wake and every data_version_ms tick (rows other
 * programs insert do not touch the wake file).  An event stream is the same
 * loop that writes each read's events and stays until sse_max. */
#include "cgi_front.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "handler.h"
#include "reply.h"
#include "request.h"
#include "streams.h"

extern char **environ;

#define CGI_FRONT_DRAIN_MAX (64LL << 20)
#define CGI_FRONT_SSE_RETRY_MS 1000 /* EventSource's reconnect delay */

/* Read the body from stdin: 0, -1 if over max, -2 on a read error. */
static int cgi_front_body(const request *r, int64_t max, buf *body) {
    char tmp[8192];
    size_t n;
    int64_t want = r->content_length >= 0 ? r->content_length : max + 1;
    while (want > 0 && (n = fread(tmp, 1, want < (int64_t)sizeof tmp ? (size_t)want
                                                                       : sizeof tmp,
                                  stdin)) > 0) {
        if ((int64_t)(body->len + n) > max)
            return -1;
        buf_put(body, tmp, n);
        want -= (int64_t)n;
    }
    return ferror(stdin) || body->oom ? -2 : 0;
}

/* Read and drop what is left of the body: a CGI program that exits with
 * unread input makes mod_cgid reset the connection and lose the answer. */
static void cgi_front_drain(const request *r) {
    char tmp[8192];
    int64_t left = r->content_length > 0 ? r->content_length : 0;
    if (left > CGI_FRONT_DRAIN_MAX)
        left = CGI_FRONT_DRAIN_MAX;
    size_t n;
    while (left > 0 &&
           (n = fread(tmp, 1, left < (int64_t)sizeof tmp ? (size_t)left : sizeof tmp, stdin)) > 0)
        left -= (int64_t)n;
}

/* Block until the subscriber has an answer or its deadline passes. */
static void cgi_front_wait(handler *h, const request *r, int64_t cursor, const char *epoch,
                           buf *out) {
    int64_t deadline = clock_mono_ms() + r->timeout_s * 1000LL;
    for (;;) {
        uint32_t seq = wake_seq(h->wk);
        int64_t left = deadline - clock_mono_ms();
        if (handler_poll(h, r, &cursor, epoch, left <= 0, out))
            return;
        int slice = left < h->cfg->data_version_ms ? (int)left : h->cfg->data_version_ms;
        wake_wait(h->wk, seq, slice < 0 ? 0 : slice);
    }
}

/* An event stream, in this process: the head, then the events of every
 * read as they come, a comment line when sse_ping passes without one (a
 * failed write says the client left), until sse_max ends it; 0, or 1 when
 * the client went away. */
static int cgi_front_stream(handler *h, const request *r, int64_t cursor, char *epoch) {
    const config *cfg = h->cfg;
    buf out;
    int64_t now = clock_mono_ms(), end = now + cfg->sse_max_s * 1000LL;
    int64_t ping = now + cfg->sse_ping_s * 1000LL;
    int rc = 0;
    /* A client that left must fail the write, not kill the process: the
     * caller still has to give back its place (guard_unpark). */
    signal(SIGPIPE, SIG_IGN);
    int ds = r->format == FORMAT_DS_SSE, first = 1;
    buf_init(&out);
    if (ds)
        streams_sse_head(h, r->channel, reply_cors(cfg, r->origin), &out);
    else
        reply_sse_head(&out, reply_cors(cfg, r->origin), CGI_FRONT_SSE_RETRY_MS);
    for (;;) {
        uint32_t seq = wake_seq(h->wk);
        int more;
        if (ds) {
            streams_sse_result sr = streams_sse(h, r->channel, &cursor, r->ds.cursor, first, &out);
            first &= sr == STREAMS_SSE_FAILED;
            more = sr == STREAMS_SSE_MORE;
            if (sr == STREAMS_SSE_END)
                end = clock_mono_ms(); /* its last events go out, then it ends */
        } else {
            more = handler_stream(h, r, &cursor, epoch, &out);
        }
        now = clock_mono_ms();
        if (out.len == 0 && now >= ping)
            buf_puts(&out, ": ping\n\n");
        if (out.len) {
            if (fwrite(out.p, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
                rc = 1;
                break;
            }
            ping = now + cfg->sse_ping_s * 1000LL;
            buf_reset(&out);
        }
        if (now >= end)
            break;
        if (more == 1)
            continue;
        int64_t next = ping < end ? ping : end;
        int slice = next - now < cfg->data_version_ms ? (int)(next - now) : cfg->data_version_ms;
        wake_wait(h->wk, seq, slice < 0 ? 0 : slice);
    }
    buf_free(&out);
    return rc;
}

int cgi_front_run(const config *cfg) {
    static handler_counters counters;
    request_limits lim = handler_limits(cfg);
    char err[1024], epoch[MSGLOG_EPOCH_LEN + 1];
    request *r = malloc(sizeof *r);
    handler h;
    buf out, body;
    int64_t cursor = 0;
    int streamed = 0, gone = 0;
    buf_init(&out);
    buf_init(&body);
    if (!r)
        return 1;
    request_parse(r, environ, &lim);
    const char *cors = reply_cors(cfg, r->origin);
    int has_body = r->route == ROUTE_PUB || r->route == ROUTE_STREAM;
    int got = has_body ? cgi_front_body(r, cfg->max_body, &body) : 0;
    if (!has_body || got != 0)
        cgi_front_drain(r);
    if (got == -1) {
        reply_error(&out, 413, cors, "body_too_large", "the body exceeds max_body", 0);
    } else if (got < 0) {
        reply_error(&out, 400, cors, "bad_body", "the body could not be read", 0);
    } else {
        /* A log that cannot be opened is answered 503 by handler_run; the
         * limits are enforced when their file can be had. */
        guard *g = NULL;
        if (guard_open(&g, cfg->db, err, sizeof err))
            g = NULL;
        if (handler_open(&h, cfg, &counters, g, err, sizeof err))
            fprintf(stderr, "holdfast: %s\n", err);
        if (handler_run(&h, r, body.p, body.len, &out, &cursor, epoch) == HANDLER_PARK) {
            /* A blocked CGI process is a waiting subscriber like a parked one. */
            size_t cl = strlen(r->client);
            if (g && cl && guard_park(g, r->client, cl, cfg->max_parked_per_client) ==
                                 GUARD_REFUSED) {
                reply_error(&out, 429, cors, "too_many_subscribers",
                            "this client already holds max_parked_per_client waiting subscribes",
                            HANDLER_CLIENT_RETRY_S);
            } else if (r->format == FORMAT_SSE || r->format == FORMAT_DS_SSE) {
                streamed = 1;
                gone = cgi_front_stream(&h, r, cursor, epoch);
                if (g && cl)
                    guard_unpark(g, r->client, cl);
            } else {
                cgi_front_wait(&h, r, cursor, epoch, &out);
                if (g && cl)
                    guard_unpark(g, r->client, cl);
            }
        }
        handler_close(&h);
        guard_close(g);
    }
    int rc = streamed ? gone
                      : fwrite(out.p, 1, out.len, stdout) == out.len && fflush(stdout) == 0 ? 0
                                                                                             : 1;
    buf_free(&out);
    buf_free(&body);
    free(r);
    return rc;
}
