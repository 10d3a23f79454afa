/* lphttp.h -- an incremental HTTP/1.x response parser for the load tool:
 * status line, Content-Length / chunked / until-close bodies, keep-alive.
 *
 * Lifecycle, per connection:
 *   lphttp_resp_init(&r)
 *   per response: lphttp_resp_feed(&r, bytes, n, &used) until DONE or ERROR
 *                 (lphttp_resp_eof(&r) when the peer closed), read the
 *                 fields, then lphttp_resp_reset(&r) before the next one
 *   lphttp_resp_free(&r)
 *
 * Pure: no I/O, no clock.  The caller does not pipeline, so bytes after a
 * complete response are not consumed (used < n) and are the caller's error.
 */
#ifndef HOLDFAST_LPHTTP_H
#define HOLDFAST_LPHTTP_H

#include <stddef.h>

#define LPHTTP_HEAD_MAX (32 * 1024)
#define LPHTTP_BODY_MAX (64u * 1024u * 1024u)
/* reset() frees buffers larger than this, so idle connections stay small */
#define LPHTTP_KEEP_MAX (16 * 1024)

typedef enum { LPHTTP_MORE = 0, LPHTTP_DONE = 1, LPHTTP_ERROR = -1 } lphttp_result;

typedef struct {
    /* the answer, valid after DONE */
    int status;
    int keep_alive;     /* 1 if the connection may carry another request */
    int chunked;        /* the body came with Transfer-Encoding: chunked */
    int retry_after;    /* seconds from Retry-After, -1 if absent */
    char *body;         /* decoded body, NUL-terminated (NULL if empty) */
    size_t body_len;
    const char *error;  /* why the parse failed, for a log line */

    /* parser state */
    int state;
    char *head;
    size_t head_len, head_cap;
    size_t body_cap;
    size_t remaining;   /* Content-Length or chunk bytes still to come */
    char line[40];      /* chunk-size or trailer line being read */
    size_t line_len;
} lphttp_resp;

/* Zero the parser; no allocation. */
void lphttp_resp_init(lphttp_resp *r);

/* Forget the last response so the connection can carry the next one; keeps
 * buffers up to LPHTTP_KEEP_MAX bytes, frees larger ones. */
void lphttp_resp_reset(lphttp_resp *r);

/* Free the buffers; the parser may be initialised again. */
void lphttp_resp_free(lphttp_resp *r);

/* 1 if no byte of a response has been fed since init/reset. */
int lphttp_resp_empty(const lphttp_resp *r);

/* Feed n bytes; *used tells how many were consumed (all of them unless the
 * response completed earlier in the buffer).  Returns LPHTTP_DONE when the
 * response is complete, LPHTTP_MORE, or LPHTTP_ERROR (r->error says why:
 * malformed status line or chunk, head or body too large, out of memory). */
lphttp_result lphttp_resp_feed(lphttp_resp *r, const char *buf, size_t n, size_t *used);

/* The value of response header name (case-insensitive) after DONE, copied
 * into v (cap bytes, NUL-terminated); 1 if present, else 0. */
int lphttp_resp_header(const lphttp_resp *r, const char *name, char *v, size_t cap);

/* Split a multipart body (RFC 2046: "--B" CRLF part-headers CRLF CRLF data
 * CRLF "--B" ... "--B--") and call fn with each part's data in order.
 * Returns the number of parts, or -1 if the body is not well formed. */
typedef void (*lphttp_part_fn)(void *ud, const char *data, size_t n);
int lphttp_multipart_each(const char *body, size_t n, const char *boundary, lphttp_part_fn fn,
                          void *ud);

/* 1 once the head is parsed and body bytes are being taken (a stream can
 * be read as it comes: r->body holds what arrived and was not consumed). */
int lphttp_resp_in_body(const lphttp_resp *r);

/* Drop the first n bytes of the decoded body (events already handled). */
void lphttp_resp_consume(lphttp_resp *r, size_t n);

/* One Server-Sent Event: its `id:` and first `data:` line (pointers into
 * the text given; NULL/0 when absent), and whether it was only comments. */
typedef struct {
    const char *id, *data;
    size_t id_len, data_len;
    int comment_only;
} lphttp_event;

/* The first complete event of s[0..n) (ended by a blank line, LF or CRLF)
 * into ev; returns the bytes it spans, or 0 when no event is complete. */
size_t lphttp_sse_next(const char *s, size_t n, lphttp_event *ev);

/* The peer closed the connection: DONE if the body was delimited by the
 * close (then keep_alive = 0), else ERROR. */
lphttp_result lphttp_resp_eof(lphttp_resp *r);

#endif
