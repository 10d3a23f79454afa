/* reply.h -- every answer holdfast gives, as a CGI-style response (a header
 * block, a blank line, the body): batches, raw messages, errors, CORS.  The
 * one place that chooses status lines and error bodies.  Fronts (FastCGI,
 * CGI) only frame and send what these functions build. */
#ifndef HOLDFAST_REPLY_H
#define HOLDFAST_REPLY_H

#include "config.h"
#include "jsonenc.h"
#include "msglog.h"

/* The CORS header lines for a request's Origin (Allow-Origin, Expose-Headers,
 * Allow-Credentials when configured, Vary): those of cors_origin = * or of
 * the origin when it is listed exactly, NULL otherwise.  The string
 * returned lives in cfg (it outlives the request). */
const char *reply_cors(const config *cfg, const char *origin);

/* Encode a batch as the API's JSON object (shared by every waiter it
 * answers):  {"cursor":..,"epoch":..,"messages":[..],"gap":..[,"oldest":..]
 * [,"reset":true][,"more":true]} */
void reply_batch_body(buf *body, const msglog_batch *b);

/* A complete answer around an encoded body of the given content type. */
void reply_body(buf *out, int status, const char *cors, const char *ctype, const void *body,
                size_t len);

/* reply_body with application/json. */
void reply_json(buf *out, int status, const char *cors, const char *body, size_t len);

/* format=raw: the first message of b with its Holdfast-Id, or 204 when b
 * has none -- under THE RAW RULE (reply.c): as its own type only when that
 * is in cfg's raw_types. */
void reply_raw(buf *out, const msglog_batch *b, const char *cors, const config *cfg);

/* The head of a Server-Sent Events answer (no Content-Length: it goes on)
 * and its first line, the reconnect delay EventSource should use. */
void reply_sse_head(buf *out, const char *cors, int retry_ms);

/* The events of a batch (THE EVENT RULE, reply.c): `reset` and `gap`
 * first when the batch says so, then one event per message. */
void reply_sse_batch(buf *out, const msglog_batch *b);

/* {"error":..,"detail":..} with status; retry_after > 0 adds Retry-After. */
void reply_error(buf *out, int status, const char *cors, const char *error,
                 const char *detail, int retry_after);

/* The parts every answer is made of, for answers built elsewhere
 * (streams.c): the status line, Content-Type when ctype, the caching,
 * sniffing and embedding headers and the CORS lines; then, after the
 * caller's own headers, Content-Length, the blank line and the body. */
void reply_start(buf *out, int status, const char *ctype, const char *cors);
void reply_end(buf *out, const void *body, size_t len);

/* s[0..n) as the `data:` lines of one event: every line break (CR LF, CR
 * or LF) starts a new line, so the payload can neither end the event nor
 * start another field, and EventSource gives back s exactly.  tight
 * writes `data:x` (the Durable Streams form), else `data: x`. */
void reply_sse_data(buf *out, const char *s, size_t n, int tight);

/* The head of a durable stream's event stream (Cache-Control: no-cache,
 * and Stream-SSE-Data-Encoding: base64 when its bytes are not text). */
void reply_stream_sse_head(buf *out, const char *cors, int base64);

/* reply_error with more header lines (each ending in CR LF), or NULL. */
void reply_error_with(buf *out, int status, const char *cors, const char *error,
                      const char *detail, int retry_after, const char *headers);

/* The answer to an OPTIONS preflight. */
void reply_preflight(buf *out, const char *cors);

/* The reason phrase of a status ("Not Found"). */
const char *reply_reason(int status);

#endif
