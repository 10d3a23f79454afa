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
    case 409: return "Conflict";
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
static void reply_head(buf *out, int status, const char *ctype, const char *cors) {
    buf_printf(out, "Status: %d %s\r\n", status, reply_reason(status));
    if (ctype)
        buf_printf(out, "Content-Type: %s\r\n", ctype);
    buf_puts(out, "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
    if (cors)
        buf_puts(out, cors);
}

/* Content-Length, the blank line and the body. */
static void reply_finish(buf *out, const void *body, size_t len) {
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
    reply_head(out, status, ctype, cors);
    reply_finish(out, body, len);
}

void reply_json(buf *out, int status, const char *cors, const char *body, size_t len) {
    reply_body(out, status, cors, "application/json", body, len);
}

void reply_raw(buf *out, const msglog_batch *b, const char *cors, const config *cfg) {
    if (b->n == 0) {
        reply_head(out, 204, NULL, cors);
        buf_printf(out, "Holdfast-Cursor: %lld\r\nHoldfast-Epoch: %s\r\n\r\n",
                   (long long)b->cursor, b->epoch);
        return;
    }
    const msglog_msg *m = &b->msgs[0];
    int valid = m->type && msglog_type_valid(m->type);
    int as_itself = valid && config_raw_type_allowed(cfg, m->type);
    reply_head(out, 200, as_itself ? m->type : "application/octet-stream", cors);
    buf_puts(out, "Content-Security-Policy: sandbox\r\n");
    if (!as_itself) {
        buf_puts(out, "Content-Disposition: attachment\r\n");
        if (valid)
            buf_printf(out, "Holdfast-Type: %s\r\n", m->type);
    }
    buf_printf(out, "Holdfast-Id: %lld\r\nHoldfast-Epoch: %s\r\n", (long long)m->id, b->epoch);
    reply_finish(out, m->body, m->len);
}

void reply_sse_head(buf *out, const char *cors, int retry_ms) {
    reply_head(out, 200, "text/event-stream", cors);
    /* nginx streams an answer that says so, whatever its proxy buffering */
    buf_puts(out, "X-Accel-Buffering: no\r\n\r\n");
    buf_printf(out, "retry: %d\n\n", retry_ms);
}

/* `data:` lines for s[0..n): one per line of s (CR, LF or CRLF ends one). */
static void reply_sse_data(buf *out, const char *s, size_t n) {
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && s[j] != '\n' && s[j] != '\r')
            j++;
        buf_puts(out, "data: ");
        buf_put(out, s + i, j - i);
        buf_putc(out, '\n');
        if (j >= n)
            break;
        i = j + (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n' ? 2 : 1);
        if (i == n)
            break; /* a trailing line break adds no empty line */
    }
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
        reply_sse_data(out, one.p, one.len);
        buf_putc(out, '\n');
    }
    if (one.oom)
        out->oom = 1;
    buf_free(&one);
}

void reply_error(buf *out, int status, const char *cors, const char *error,
                 const char *detail, int retry_after) {
    buf body;
    buf_init(&body);
    buf_puts(&body, "{\"error\":");
    jsonenc_cstring(&body, error);
    buf_puts(&body, ",\"detail\":");
    jsonenc_cstring(&body, detail ? detail : "");
    buf_puts(&body, "}\n");
    reply_head(out, status, "application/json", cors);
    if (retry_after > 0)
        buf_printf(out, "Retry-After: %d\r\n", retry_after);
    reply_finish(out, body.p, body.len);
    buf_free(&body);
}

void reply_preflight(buf *out, const char *cors) {
    reply_head(out, 204, NULL, cors);
    if (cors)
        buf_puts(out, "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                      "Access-Control-Allow-Headers: Content-Type, Authorization, "
                      "Idempotency-Key, Holdfast-Key, Last-Event-ID\r\n"
                      "Access-Control-Max-Age: 600\r\n");
    buf_puts(out, "\r\n");
}
