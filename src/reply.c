/* reply.c -- status lines, headers and bodies of every holdfast answer.
 *
 * Every answer carries Cache-Control: no-store (a cached long-poll answer
 * would replay old messages), X-Content-Type-Options: nosniff, a
 * Content-Length (no chunking needed by the web server) and the CORS
 * headers of the request's origin -- timeouts and errors included, or a
 * browser would hide them from the page.
 *
 * THE RAW RULE.  A message served as itself (format=raw) is the
 * publisher's bytes in the site's origin, so it must never become a page:
 * it is sent with Content-Security-Policy: sandbox, and as itself only
 * when its type is valid and in raw_types; anything else is served as
 * application/octet-stream, as an attachment, its type in Holdfast-Type.
 *
 * THE EVENT RULE.  A Server-Sent Events answer has no Content-Length: it
 * is a head, then events as they come.  Each message is one event whose
 * `id:` is the message's id, so EventSource's Last-Event-ID is a cursor
 * and a reconnect resumes after the last event the browser dispatched;
 * its `data:` is the API's message object, split at line breaks (an event
 * ends at a blank line, and SSE joins `data:` lines with LF, so the value
 * a page parses is the same JSON).  Gaps and resets are their own named
 * events, before the messages of the same read. */
#include "reply.h"

#include <stdio.h>
#include <string.h>

const char *reply_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 304: return "Not Modified";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

const char *reply_cors(const config *cfg, const char *origin) {
    for (int i = 0; i < cfg->ncors_origins; i++)
        if (!strcmp(cfg->cors_origins[i], "*") || (origin && !strcmp(cfg->cors_origins[i], origin)))
            return cfg->cors_headers[i];
    return NULL;
}

/* Status, content type, caching and CORS; the caller adds the rest. */
void reply_start(buf *out, int status, const char *ctype, const char *cors) {
    buf_printf(out, "Status: %d %s\r\n", status, reply_reason(status));
    if (ctype)
        buf_printf(out, "Content-Type: %s\r\n", ctype);
    buf_puts(out, "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                  "Cross-Origin-Resource-Policy: cross-origin\r\n");
    if (cors)
        buf_puts(out, cors);
}

/* Content-Length, the blank line and the body. */
void reply_end(buf *out, const void *body, size_t len) {
    buf_printf(out, "Content-Length: %zu\r\n\r\n", len);
    buf_put(out, body, len);
}

void reply_batch_body(buf *body, const msglog_batch *b) {
    buf_puts(body, "{\"cursor\":");
    buf_int(body, b->cursor);
    buf_puts(body, ",\"epoch\":");
    jsonenc_cstring(body, b->epoch);
    buf_puts(body, ",\"messages\":[");
    for (size_t i = 0; i < b->n; i++) {
        if (i)
            buf_putc(body, ',');
        jsonenc_message(body, &b->msgs[i]);
    }
    buf_puts(body, "],\"gap\":");
    buf_puts(body, b->gap ? "true" : "false");
    if (b->gap) {
        buf_puts(body, ",\"oldest\":");
        buf_int(body, b->oldest);
    }
    if (b->reset) {
        buf_puts(body, ",\"reset\":true,\"head\":");
        buf_int(body, b->head);
    }
    if (b->more)
        buf_puts(body, ",\"more\":true");
    buf_puts(body, "}\n");
}

void reply_body(buf *out, int status, const char *cors, const char *ctype, const void *body,
                size_t len) {
    reply_start(out, status, ctype, cors);
    reply_end(out, body, len);
}

void reply_json(buf *out, int status, const char *cors, const char *body, size_t len) {
    reply_body(out, status, cors, "application/json", body, len);
}

void reply_raw(buf *out, const msglog_batch *b, const char *cors, const config *cfg) {
    if (b->n == 0) {
        reply_start(out, 204, NULL, cors);
        buf_printf(out, "Holdfast-Cursor: %lld\r\nHoldfast-Epoch: %s\r\n\r\n",
                   (long long)b->cursor, b->epoch);
        return;
    }
    const msglog_msg *m = &b->msgs[0];
    int valid = m->type && msglog_type_valid(m->type);
    int as_itself = valid && config_raw_type_allowed(cfg, m->type);
    reply_start(out, 200, as_itself ? m->type : "application/octet-stream", cors);
    buf_puts(out, "Content-Security-Policy: sandbox\r\n");
    if (!as_itself) {
        buf_puts(out, "Content-Disposition: attachment\r\n");
        if (valid)
            buf_printf(out, "Holdfast-Type: %s\r\n", m->type);
    }
    buf_printf(out, "Holdfast-Id: %lld\r\nHoldfast-Epoch: %s\r\n", (long long)m->id, b->epoch);
    reply_end(out, m->body, m->len);
}

void reply_sse_head(buf *out, const char *cors, int retry_ms) {
    reply_start(out, 200, "text/event-stream", cors);
    /* nginx streams an answer that says so, whatever its proxy buffering */
    buf_puts(out, "X-Accel-Buffering: no\r\n\r\n");
    buf_printf(out, "retry: %d\n\n", retry_ms);
}

/* One `data:` line for s[0..n).  EventSource drops one space after the
 * colon: a tight line has none unless s starts with one. */
static void reply_sse_line(buf *out, const char *s, size_t n, int tight) {
    buf_puts(out, !tight || (n && s[0] == ' ') ? "data: " : "data:");
    buf_put(out, s, n);
    buf_putc(out, '\n');
}

void reply_sse_data(buf *out, const char *s, size_t n, int tight) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\r' && s[i] != '\n')
            continue;
        reply_sse_line(out, s + run, i - run, tight);
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
            i++;
        run = i + 1;
    }
    reply_sse_line(out, s + run, n - run, tight);
}

void reply_stream_sse_head(buf *out, const char *cors, int base64) {
    buf_puts(out, "Status: 200 OK\r\nContent-Type: text/event-stream\r\n"
                  "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
                  "Cross-Origin-Resource-Policy: cross-origin\r\nX-Accel-Buffering: no\r\n");
    if (cors)
        buf_puts(out, cors);
    if (base64)
        buf_puts(out, "Stream-SSE-Data-Encoding: base64\r\n");
    buf_puts(out, "\r\n");
}

void reply_sse_batch(buf *out, const msglog_batch *b) {
    buf one;
    buf_init(&one);
    if (b->reset) {
        buf_puts(out, "event: reset\n");
        buf_printf(out, "data: {\"epoch\":\"%s\",\"head\":%lld,\"cursor\":%lld}\n\n",
                   b->epoch, (long long)b->head, (long long)b->cursor);
    }
    if (b->gap)
        buf_printf(out, "event: gap\ndata: {\"oldest\":%lld}\n\n", (long long)b->oldest);
    for (size_t i = 0; i < b->n; i++) {
        buf_reset(&one);
        jsonenc_message(&one, &b->msgs[i]);
        buf_printf(out, "id: %lld\n", (long long)b->msgs[i].id);
        reply_sse_data(out, one.p, one.len, 0);
        buf_putc(out, '\n');
    }
    if (one.oom)
        out->oom = 1;
    buf_free(&one);
}

void reply_error_with(buf *out, int status, const char *cors, const char *error,
                      const char *detail, int retry_after, const char *headers) {
    buf body;
    buf_init(&body);
    buf_puts(&body, "{\"error\":");
    jsonenc_cstring(&body, error);
    buf_puts(&body, ",\"detail\":");
    jsonenc_cstring(&body, detail ? detail : "");
    buf_puts(&body, "}\n");
    reply_start(out, status, "application/json", cors);
    if (retry_after > 0)
        buf_printf(out, "Retry-After: %d\r\n", retry_after);
    if (headers)
        buf_puts(out, headers);
    reply_end(out, body.p, body.len);
    buf_free(&body);
}

void reply_error(buf *out, int status, const char *cors, const char *error,
                 const char *detail, int retry_after) {
    reply_error_with(out, status, cors, error, detail, retry_after, NULL);
}

void reply_preflight(buf *out, const char *cors) {
    reply_start(out, 204, NULL, cors);
    if (cors)
        buf_puts(out, "Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n"
                      "Access-Control-Allow-Headers: Content-Type, Authorization, "
                      "Idempotency-Key, Holdfast-Key, Last-Event-ID, If-None-Match, "
                      "Stream-TTL, Stream-Expires-At, Stream-Closed, Stream-Seq, "
                      "Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, "
                      "Producer-Id, Producer-Epoch, Producer-Seq\r\n"
                      "Access-Control-Max-Age: 600\r\n");
    buf_puts(out, "\r\n");
}
