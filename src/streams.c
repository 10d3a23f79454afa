/* streams.c -- the Durable Streams routes: PUT creates (or forks), POST
 * appends (and closes), GET reads (catch-up, long-poll, SSE), HEAD says
 * the metadata, DELETE removes.  The protocol is the public Durable
 * Streams PROTOCOL.md; what holdfast chose where it leaves a choice:
 *   - a stream NAME is the channel NAME (dstore.c's LAYOUT): names are
 *     channel names, /sub/NAME reads it, /pub/NAME appends to it (one
 *     message, its body as sent: handler.c);
 *   - THE ACCESS RULE (handler.c) applies to that channel: writes (PUT,
 *     POST, DELETE) are publishes, reads (GET, HEAD) subscribes;
 *   - Stream-Seq is scoped per stream; a long-poll waits
 *     streams_poll_timeout; an answer carries at most STREAMS_CHUNK bytes
 *     (more: no Stream-Up-To-Date, read on from Stream-Next-Offset);
 *   - Stream-TTL and Stream-Expires-At together are refused (400);
 *   - an expired stream answers 404 and is removed when its name is
 *     created again.
 * Every answer says where the reader is (Stream-Next-Offset); a stream
 * at its tail says Stream-Up-To-Date, a closed one at its tail
 * Stream-Closed.  Appends wake the live readers through the log's own
 * wake (wake_publish), like publishes.
 */
#include "streams.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dstore.h"
#include "reply.h"

#define STREAMS_CHUNK (1u << 20)

/* A stream's bytes are its writers', served in the site's origin under
 * their own type: never a page that runs (THE RAW RULE in reply.c). */
#define STREAMS_SANDBOX "Content-Security-Policy: sandbox\r\n"

static void streams_offset_line(buf *out, const char *header, int64_t pos) {
    char off[DSPROTO_OFFSET_LEN + 1];
    dsproto_offset_format(pos, off);
    buf_printf(out, "%s: %s\r\n", header, off);
}

static int64_t streams_cursor(int64_t client) {
    return dsproto_cursor(clock_real_ms(), client, (uint64_t)random());
}

/* ---- messages of a body ---------------------------------------------------- */

typedef struct {
    const char **msgs;
    size_t *lens;
    size_t n, cap;
    int oom;
} streams_msgs;

static void streams_msgs_add(void *ud, const char *s, size_t n) {
    streams_msgs *m = ud;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        const char **a = realloc(m->msgs, cap * sizeof *a);
        if (a)
            m->msgs = a;
        size_t *l = a ? realloc(m->lens, cap * sizeof *l) : NULL;
        if (!a || !l) {
            m->oom = 1;
            return;
        }
        m->lens = l;
        m->cap = cap;
    }
    m->msgs[m->n] = s;
    m->lens[m->n++] = n;
}

static void streams_msgs_free(streams_msgs *m) {
    free(m->msgs);
    free(m->lens);
}

/* The messages of body: JSON mode splits it (-1: not JSON), else one
 * message unless empty.  0, -1, or -2 when out of memory. */
static int streams_split(int json, const void *body, size_t len, streams_msgs *m) {
    memset(m, 0, sizeof *m);
    if (json && len) {
        if (dsproto_json_split(body, len, streams_msgs_add, m) < 0)
            return -1;
    } else if (len) {
        streams_msgs_add(m, body, len);
    }
    return m->oom ? -2 : 0;
}

/* ---- refusals ---------------------------------------------------------------- */

/* Answer a store refusal (or failure) with its status and headers. */
static void streams_refuse(handler *h, buf *out, const char *cors, const request *r,
                           dstore_status ds, const dstore_result *res) {
    buf hd;
    buf_init(&hd);
    switch (ds) {
    case DSTORE_NOT_FOUND:
        reply_error(out, 404, cors, "not_found", "no such stream", 0);
        break;
    case DSTORE_GONE:
        reply_error(out, 410, cors, "gone",
                    r ? "the stream was deleted"
                      : "the stream was deleted, or data after this offset was pruned", 0);
        break;
    case DSTORE_CLOSED:
        buf_puts(&hd, "Stream-Closed: true\r\n");
        streams_offset_line(&hd, "Stream-Next-Offset", res->tail);
        reply_error_with(out, 409, cors, "stream_closed", "the stream is closed", 0, hd.p);
        break;
    case DSTORE_STALE_EPOCH:
        buf_printf(&hd, "Producer-Epoch: %lld\r\n", (long long)res->epoch);
        reply_error_with(out, 403, cors, "stale_epoch",
                         "a newer epoch of this producer has written", 0, hd.p);
        break;
    case DSTORE_SEQ_GAP:
        buf_printf(&hd, "Producer-Expected-Seq: %lld\r\nProducer-Received-Seq: %lld\r\n",
                   (long long)(res->seq + 1), (long long)r->ds.pseq);
        reply_error_with(out, 409, cors, "sequence_gap", "Producer-Seq skips ahead", 0, hd.p);
        break;
    case DSTORE_BAD_EPOCH_SEQ:
        reply_error(out, 400, cors, "bad_producer", "a new epoch starts at Producer-Seq 0", 0);
        break;
    case DSTORE_BAD_FORK:
        reply_error(out, 400, cors, "bad_fork",
                    "the fork offset or sub-offset is beyond the source's data", 0);
        break;
    case DSTORE_SOURCE_GONE:
        reply_error(out, 409, cors, "source_gone", "the source stream was deleted", 0);
        break;
    case DSTORE_SOURCE_MISSING:
        reply_error(out, 404, cors, "not_found", "no such source stream", 0);
        break;
    case DSTORE_CONFLICT:
        reply_error(out, 409, cors, "conflict",
                    "the stream exists otherwise, or the type or Stream-Seq does not fit", 0);
        break;
    default:
        fprintf(stderr, "holdfast[%d]: stream %s: %s\n", (int)getpid(), r ? r->channel : "",
                msglog_errmsg(h->log));
        reply_error(out, 503, cors, "unavailable", "the log could not take the change", 1);
        break;
    }
    buf_free(&hd);
}

/* ---- reading ---------------------------------------------------------------- */

typedef struct {
    buf *b;
    int json;
    size_t n;
} streams_body;

static void streams_body_add(void *ud, int64_t pos, const void *p, size_t n) {
    streams_body *sb = ud;
    (void)pos;
    if (sb->json && sb->n)
        buf_putc(sb->b, ',');
    buf_put(sb->b, p, n);
    sb->n++;
}

/* Read s after pos into body (a JSON array in JSON mode). */
static dstore_status streams_read(handler *h, const dstore_stream *s, int64_t pos, buf *body,
                                  size_t *count, int64_t *next, int *more) {
    streams_body sb = {body, dsproto_type_json(s->type), 0};
    if (sb.json)
        buf_putc(body, '[');
    dstore_status ds = dstore_read(h->log, s, pos, STREAMS_CHUNK, streams_body_add, &sb, next,
                                   more);
    if (sb.json)
        buf_putc(body, ']');
    *count = sb.n;
    return ds;
}

/* Read stream s after pos into b: 1 when there is something to answer,
 * 0 when a live read (not final) should wait on. */
static int streams_batch_read(handler *h, const dstore_stream *s, int64_t pos, int live,
                              int final, streams_batch *b) {
    memset(b, 0, sizeof *b);
    buf_init(&b->body);
    b->s = *s;
    b->pos = pos;
    b->live = live;
    b->ds = streams_read(h, s, pos, &b->body, &b->count, &b->next, &b->more);
    if (b->ds != DSTORE_OK)
        return !live || final;
    b->at_tail = !b->more && b->next >= s->tail;
    return b->count > 0 || !live || s->closed || final;
}

void streams_batch_reply(handler *h, const streams_batch *b, const char *cors, int64_t cursor,
                         const char *inm, buf *out) {
    const dstore_stream *s = &b->s;
    if (b->ds != DSTORE_OK) {
        streams_refuse(h, out, cors, NULL, b->ds, NULL);
        return;
    }
    char etag[128];
    snprintf(etag, sizeof etag, "\"%lld:%lld:%lld%s\"", (long long)s->id, (long long)b->pos,
             (long long)b->next, s->closed && b->at_tail ? ":c" : "");
    int status = b->count == 0 && b->live ? 204 : 200;
    if (status == 200 && !b->live && inm && !strcmp(inm, etag))
        status = 304;
    reply_start(out, status, status == 200 ? s->type : NULL, cors);
    buf_puts(out, STREAMS_SANDBOX);
    streams_offset_line(out, "Stream-Next-Offset", b->next);
    if (b->at_tail)
        buf_puts(out, "Stream-Up-To-Date: true\r\n");
    if (s->closed && b->at_tail)
        buf_puts(out, "Stream-Closed: true\r\n");
    else if (b->live)
        buf_printf(out, "Stream-Cursor: %lld\r\n", (long long)streams_cursor(cursor));
    if (status != 204)
        buf_printf(out, "ETag: %s\r\n", etag);
    reply_end(out, status == 200 ? b->body.p : "", status == 200 ? b->body.len : 0);
    atomic_fetch_add(&h->counters->answered, 1);
    atomic_fetch_add(&h->counters->deliveries, (int64_t)b->count);
}

void streams_batch_free(streams_batch *b) {
    buf_free(&b->body);
}

/* The metadata lines of HEAD (and the create answers). */
static void streams_meta_lines(buf *out, const dstore_stream *s) {
    streams_offset_line(out, "Stream-Next-Offset", s->tail);
    if (s->ttl_s >= 0)
        buf_printf(out, "Stream-TTL: %lld\r\n", (long long)s->ttl_s);
    if (s->expires_ms >= 0) {
        char t[64];
        dsproto_time_format(s->expires_ms, t);
        buf_printf(out, "Stream-Expires-At: %s\r\n", t);
    }
    if (s->closed)
        buf_puts(out, "Stream-Closed: true\r\n");
}

static handler_result streams_get(handler *h, const request *r, buf *out, const char *cors,
                                  int64_t *pos) {
    dstore_stream s;
    int head = !strcmp(r->method, "HEAD");
    dstore_status ds = dstore_get(h->log, r->ds.name, !head, &s);
    if (ds != DSTORE_OK) {
        streams_refuse(h, out, cors, r, ds, NULL);
        return HANDLER_DONE;
    }
    if (head) {
        reply_start(out, 200, s.type, cors);
        streams_meta_lines(out, &s);
        reply_end(out, "", 0);
        return HANDLER_DONE;
    }
    int64_t at = r->ds.offset == DSPROTO_OFFSET_AT ? r->ds.pos
                 : r->ds.offset == DSPROTO_OFFSET_NOW ? s.tail : 0;
    if (r->ds.live == FORMAT_DS_SSE) {
        *pos = at;
        return HANDLER_PARK;
    }
    if (r->ds.offset == DSPROTO_OFFSET_NOW && !r->ds.live) {
        int json = dsproto_type_json(s.type);
        reply_start(out, 200, s.type, cors);
        buf_puts(out, STREAMS_SANDBOX);
        streams_offset_line(out, "Stream-Next-Offset", s.tail);
        buf_puts(out, "Stream-Up-To-Date: true\r\n");
        if (s.closed)
            buf_puts(out, "Stream-Closed: true\r\n");
        reply_end(out, json ? "[]" : "", json ? 2 : 0);
        return HANDLER_DONE;
    }
    streams_batch b;
    int answer = streams_batch_read(h, &s, at, r->ds.live, r->timeout_s == 0, &b);
    if (answer)
        streams_batch_reply(h, &b, cors, r->ds.cursor, r->ds.if_none_match, out);
    streams_batch_free(&b);
    if (answer)
        return HANDLER_DONE;
    *pos = at > s.tail ? at : s.tail;
    return HANDLER_PARK;
}

int streams_poll_read(handler *h, const char *channel, int64_t pos, int final,
                      streams_batch *b) {
    dstore_stream s;
    dstore_status ds = dstore_get(h->log, channel, 0, &s);
    if (ds != DSTORE_OK) {
        memset(b, 0, sizeof *b);
        buf_init(&b->body);
        b->ds = ds;
        return ds != DSTORE_ERR || final; /* gone: say so; a failing read waits on */
    }
    return streams_batch_read(h, &s, pos, FORMAT_DS_POLL, final, b);
}

int streams_poll(handler *h, const char *channel, const char *cors, int64_t pos,
                 int64_t cursor, int final, buf *out) {
    streams_batch b;
    int answer = streams_poll_read(h, channel, pos, final, &b);
    if (answer)
        streams_batch_reply(h, &b, cors, cursor, NULL, out);
    streams_batch_free(&b);
    return answer;
}

/* ---- event streams ------------------------------------------------------------ */

void streams_sse_head(handler *h, const char *channel, const char *cors, buf *out) {
    dstore_stream s;
    int base64 = 0;
    if (dstore_get(h->log, channel, 0, &s) == DSTORE_OK)
        base64 = !dsproto_type_text(s.type);
    reply_stream_sse_head(out, cors, base64);
}

streams_sse_result streams_sse(handler *h, const char *channel, int64_t *pos, int64_t cursor,
                               int first, buf *out) {
    dstore_stream s;
    dstore_status ds = dstore_get(h->log, channel, 0, &s);
    if (ds == DSTORE_ERR)
        return STREAMS_SSE_FAILED;
    if (ds != DSTORE_OK)
        return STREAMS_SSE_END;
    buf body;
    size_t count;
    int64_t next;
    int more;
    buf_init(&body);
    if (streams_read(h, &s, *pos, &body, &count, &next, &more) != DSTORE_OK) {
        buf_free(&body);
        return STREAMS_SSE_FAILED;
    }
    int at_tail = !more && next >= s.tail, closed = s.closed && at_tail;
    if (count) {
        buf_puts(out, "event: data\n");
        if (dsproto_type_text(s.type)) {
            reply_sse_data(out, body.p, body.len, 1);
        } else {
            buf enc;
            buf_init(&enc);
            jsonenc_base64(&enc, (const unsigned char *)body.p, body.len);
            reply_sse_data(out, enc.p ? enc.p : "", enc.len, 1);
            buf_free(&enc);
        }
        buf_putc(out, '\n');
        atomic_fetch_add(&h->counters->deliveries, (int64_t)count);
    }
    if (count || first || closed) {
        char off[DSPROTO_OFFSET_LEN + 1];
        dsproto_offset_format(next, off);
        buf_printf(out, "event: control\ndata:{\"streamNextOffset\":\"%s\"", off);
        if (!closed)
            buf_printf(out, ",\"streamCursor\":\"%lld\"", (long long)streams_cursor(cursor));
        if (at_tail)
            buf_puts(out, ",\"upToDate\":true");
        if (closed)
            buf_puts(out, ",\"streamClosed\":true");
        buf_puts(out, "}\n\n");
    }
    *pos = next;
    buf_free(&body);
    return closed ? STREAMS_SSE_END : more ? STREAMS_SSE_MORE : STREAMS_SSE_CAUGHT_UP;
}

/* ---- writing ------------------------------------------------------------------ */

static void streams_woke(handler *h, const dstore_result *res, size_t n) {
    if (res->last_id)
        wake_publish(h->wk, res->last_id);
    if (n)
        atomic_fetch_add(&h->counters->publishes, (int64_t)n);
}

static handler_result streams_put(handler *h, const request *r, const void *body, size_t len,
                                  buf *out, const char *cors) {
    const char *type = r->content_type;
    dstore_stream s;
    if (!type && r->ds.fork_from[0] && dstore_get(h->log, r->ds.fork_from, 0, &s) == DSTORE_OK)
        type = s.type; /* a fork's body is of its source's type */
    streams_msgs m;
    int rc = streams_split(dsproto_type_json(type), body, len, &m);
    if (rc) {
        streams_msgs_free(&m);
        if (rc == -1)
            reply_error(out, 400, cors, "invalid_json", "the body is not valid JSON", 0);
        else
            reply_error(out, 503, cors, "unavailable", "out of memory", 1);
        return HANDLER_DONE;
    }
    dstore_config c = {.type = r->content_type,
                       .ttl_s = r->ds.ttl_s,
                       .expires_ms = r->ds.expires_ms,
                       .closed = r->ds.closed,
                       .fork_from = r->ds.fork_from[0] ? r->ds.fork_from : NULL,
                       .fork_at = r->ds.fork_at,
                       .fork_sub = r->ds.fork_sub};
    dstore_append_req a = {.msgs = m.msgs, .lens = m.lens, .n = m.n};
    dstore_result res;
    dstore_status ds = dstore_create(h->log, r->ds.name, &c, &a, &s, &res);
    if (ds != DSTORE_OK && ds != DSTORE_EXISTS_SAME) {
        streams_refuse(h, out, cors, r, ds == DSTORE_GONE ? DSTORE_CONFLICT : ds, &res);
        streams_msgs_free(&m);
        return HANDLER_DONE;
    }
    if (ds == DSTORE_OK)
        streams_woke(h, &res, m.n);
    reply_start(out, ds == DSTORE_OK ? 201 : 200, s.type, cors);
    if (ds == DSTORE_OK)
        buf_printf(out, "Location: %s://%s%s/v1/stream/%s\r\n", r->ds.https ? "https" : "http",
                   r->ds.host, r->ds.script, r->ds.name);
    streams_meta_lines(out, &s);
    reply_end(out, "", 0);
    streams_msgs_free(&m);
    return HANDLER_DONE;
}

static handler_result streams_post(handler *h, const request *r, const void *body, size_t len,
                                   buf *out, const char *cors) {
    dstore_stream s;
    if (len == 0 && !r->ds.closed) {
        reply_error(out, 400, cors, "empty_body",
                    "an append needs a body (or Stream-Closed: true to close)", 0);
        return HANDLER_DONE;
    }
    if (len && !r->content_type) {
        reply_error(out, 400, cors, "bad_content_type", "an append needs a Content-Type", 0);
        return HANDLER_DONE;
    }
    dstore_status ds = dstore_get(h->log, r->ds.name, 0, &s);
    if (ds != DSTORE_OK) {
        streams_refuse(h, out, cors, r, ds, NULL);
        return HANDLER_DONE;
    }
    int json = len && dsproto_type_json(s.type) && dsproto_type_same(r->content_type, s.type);
    streams_msgs m;
    int rc = streams_split(json, body, len, &m);
    if (rc || (json && m.n == 0)) {
        streams_msgs_free(&m);
        if (rc == -2)
            reply_error(out, 503, cors, "unavailable", "out of memory", 1);
        else
            reply_error(out, 400, cors, "invalid_json",
                        rc ? "the body is not valid JSON" : "an empty JSON array appends nothing",
                        0);
        return HANDLER_DONE;
    }
    dstore_append_req a = {.msgs = m.msgs, .lens = m.lens, .n = m.n, .close = r->ds.closed,
                           .type = len ? r->content_type : NULL, .seq = r->ds.seq,
                           .prod = {r->ds.pid, r->ds.pepoch, r->ds.pseq}};
    dstore_result res;
    ds = dstore_append(h->log, r->ds.name, &a, &res);
    if (ds != DSTORE_OK && ds != DSTORE_DUPLICATE) {
        streams_refuse(h, out, cors, r, ds, &res);
        streams_msgs_free(&m);
        return HANDLER_DONE;
    }
    if (ds == DSTORE_OK)
        streams_woke(h, &res, m.n);
    /* 200 says "your data is in" to a producer; a close-only is 204 */
    reply_start(out, ds == DSTORE_OK && r->ds.pid && m.n ? 200 : 204, NULL, cors);
    streams_offset_line(out, "Stream-Next-Offset", res.tail);
    if (res.closed)
        buf_puts(out, "Stream-Closed: true\r\n");
    if (r->ds.pid)
        buf_printf(out, "Producer-Epoch: %lld\r\nProducer-Seq: %lld\r\n", (long long)res.epoch,
                   (long long)res.seq);
    reply_end(out, "", 0);
    streams_msgs_free(&m);
    return HANDLER_DONE;
}

int streams_refuse_publish(handler *h, const request *r, const char *cors, buf *out) {
    dstore_stream s;
    char why[MSGLOG_TYPE_MAX + 64];
    if (!msglog_stream_named(h->log, r->channel))
        return 0; /* most publishes: a plain channel */
    dstore_status ds = dstore_get(h->log, r->channel, 0, &s);
    if (ds == DSTORE_NOT_FOUND)
        return 0;
    if (ds == DSTORE_OK && !s.closed) {
        const char *type = r->content_type ? r->content_type : MSGLOG_DEFAULT_TYPE;
        if (!r->key && dsproto_type_same(type, s.type))
            return 0;
        snprintf(why, sizeof why, r->key ? "a stream's data is never compacted: no Holdfast-Key"
                                         : "this channel is a stream of type %s", s.type);
        reply_error(out, 409, cors, "conflict", why, 0);
        return 1;
    }
    dstore_result res = {.tail = s.tail};
    streams_refuse(h, out, cors, r, ds == DSTORE_OK ? DSTORE_CLOSED : ds, &res);
    return 1;
}

handler_result streams_run(handler *h, const request *r, const void *body, size_t len,
                           buf *out, int64_t *pos) {
    const char *cors = reply_cors(h->cfg, r->origin);
    int write = strcmp(r->method, "GET") && strcmp(r->method, "HEAD");
    int key;
    if (handler_admit(h, r, write, cors, out, &key) != AUTH_OK)
        return HANDLER_DONE;
    if (!write)
        return streams_get(h, r, out, cors, pos);
    handler_check_db(h, 1);
    if (!strcmp(r->method, "PUT"))
        return streams_put(h, r, body, len, out, cors);
    if (!strcmp(r->method, "POST"))
        return streams_post(h, r, body, len, out, cors);
    dstore_status ds = dstore_delete(h->log, r->ds.name);
    if (ds == DSTORE_OK) {
        reply_start(out, 204, NULL, cors);
        reply_end(out, "", 0);
    } else {
        streams_refuse(h, out, cors, r, ds, NULL);
    }
    return HANDLER_DONE;
}
