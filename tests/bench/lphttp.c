/* lphttp.c -- incremental HTTP/1.x response parsing (see lphttp.h).
 *
 * States: HEAD accumulates bytes until the blank line, then the status line
 * and the few headers we need (Content-Length, Transfer-Encoding,
 * Connection, Retry-After) pick the body mode: a known length, chunks
 * (size line, data, CRLF, ..., a zero size line, trailers, blank line), or
 * everything until the peer closes.  1xx interim answers are skipped;
 * 204/304 have no body.  HTTP/1.1 keeps the connection unless
 * "Connection: close"; HTTP/1.0 closes it unless "Connection: keep-alive".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "lphttp.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { S_HEAD, S_BODY_CL, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER,
       S_BODY_EOF, S_DONE, S_ERROR };

void lphttp_resp_init(lphttp_resp *r)
{
    memset(r, 0, sizeof *r);
    r->retry_after = -1;
}

void lphttp_resp_reset(lphttp_resp *r)
{
    if (r->head_cap > LPHTTP_KEEP_MAX) {
        free(r->head);
        r->head = NULL;
        r->head_cap = 0;
    }
    if (r->body_cap > LPHTTP_KEEP_MAX) {
        free(r->body);
        r->body = NULL;
        r->body_cap = 0;
    }
    r->status = r->keep_alive = r->chunked = 0;
    r->retry_after = -1;
    r->body_len = r->head_len = r->remaining = r->line_len = 0;
    r->error = NULL;
    r->state = S_HEAD;
}

void lphttp_resp_free(lphttp_resp *r)
{
    free(r->head);
    free(r->body);
    lphttp_resp_init(r);
}

int lphttp_resp_empty(const lphttp_resp *r)
{
    return r->state == S_HEAD && r->head_len == 0;
}

static int head_get(const char *head, const char *name, char *v, size_t vcap);

int lphttp_resp_header(const lphttp_resp *r, const char *name, char *v, size_t cap)
{
    if (!r->head || !r->head_len || cap == 0)
        return 0;
    return head_get(r->head, name, v, cap);
}

static lphttp_result resp_fail(lphttp_resp *r, const char *why)
{
    r->state = S_ERROR;
    r->error = why;
    return LPHTTP_ERROR;
}

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    char *q = realloc(*p, c);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int body_put(lphttp_resp *r, const char *s, size_t n)
{
    if (r->body_len + n > LPHTTP_BODY_MAX ||
        grow(&r->body, &r->body_cap, r->body_len + n + 1))
        return -1;
    memcpy(r->body + r->body_len, s, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

/* Value of header name in the NUL-terminated head, copied into v. */
static int head_get(const char *head, const char *name, char *v, size_t vcap)
{
    size_t nl = strlen(name);
    for (const char *l = strchr(head, '\n'); l; l = strchr(l, '\n')) {
        l++;
        if (strncasecmp(l, name, nl) != 0 || l[nl] != ':')
            continue;
        const char *s = l + nl + 1;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t k = 0;
        while (s[k] && s[k] != '\r' && s[k] != '\n' && k + 1 < vcap) {
            v[k] = s[k];
            k++;
        }
        while (k && (v[k - 1] == ' ' || v[k - 1] == '\t'))
            k--;
        v[k] = '\0';
        return 1;
    }
    return 0;
}

/* Parse the complete head; choose the body mode. */
static lphttp_result head_parse(lphttp_resp *r)
{
    char v[64];
    int minor;
    r->head[r->head_len] = '\0';
    if (sscanf(r->head, "HTTP/1.%d %d", &minor, &r->status) != 2 || r->status < 100 ||
        r->status > 999)
        return resp_fail(r, "malformed status line");
    if (r->status < 200) { /* interim answer: wait for the real one */
        r->head_len = 0;
        return LPHTTP_MORE;
    }
    r->keep_alive = minor >= 1;
    if (head_get(r->head, "Connection", v, sizeof v))
        r->keep_alive = strcasestr(v, "close") ? 0 : strcasestr(v, "keep-alive") ? 1 : r->keep_alive;
    if (head_get(r->head, "Retry-After", v, sizeof v))
        r->retry_after = atoi(v);
    if (r->status == 204 || r->status == 304) {
        r->state = S_DONE;
        return LPHTTP_DONE;
    }
    if (head_get(r->head, "Transfer-Encoding", v, sizeof v) && strcasestr(v, "chunked")) {
        r->chunked = 1;
        r->state = S_CHUNK_SIZE;
    } else if (head_get(r->head, "Content-Length", v, sizeof v)) {
        char *end;
        unsigned long long cl = strtoull(v, &end, 10);
        if (end == v || *end || cl > LPHTTP_BODY_MAX)
            return resp_fail(r, "bad or too large Content-Length");
        r->remaining = (size_t)cl;
        r->state = S_BODY_CL;
    } else {
        r->keep_alive = 0;
        r->state = S_BODY_EOF;
    }
    if (r->state == S_BODY_CL && r->remaining == 0) {
        r->state = S_DONE;
        return LPHTTP_DONE;
    }
    return LPHTTP_MORE;
}

/* HEAD: take bytes up to and including the blank line. */
static size_t step_head(lphttp_resp *r, const char *s, size_t n, lphttp_result *res)
{
    size_t i = 0;
    while (i < n) {
        if (r->head_len + 2 > LPHTTP_HEAD_MAX) {
            *res = resp_fail(r, "response head too large");
            return i;
        }
        if (grow(&r->head, &r->head_cap, r->head_len + 2)) {
            *res = resp_fail(r, "out of memory");
            return i;
        }
        char ch = s[i++];
        r->head[r->head_len++] = ch;
        size_t h = r->head_len;
        if (ch == '\n' && ((h >= 2 && r->head[h - 2] == '\n') ||
                           (h >= 4 && memcmp(r->head + h - 4, "\r\n\r\n", 4) == 0))) {
            *res = head_parse(r);
            return i;
        }
    }
    return i;
}

/* Read one CRLF- or LF-terminated line into r->line; 1 when complete. */
static int line_take(lphttp_resp *r, const char *s, size_t n, size_t *i)
{
    while (*i < n) {
        char ch = s[(*i)++];
        if (ch == '\n') {
            if (r->line_len && r->line[r->line_len - 1] == '\r')
                r->line_len--;
            r->line[r->line_len] = '\0';
            return 1;
        }
        if (r->line_len + 1 < sizeof r->line)
            r->line[r->line_len++] = ch; /* long extensions are cut: harmless */
    }
    return 0;
}

static lphttp_result chunk_size_line(lphttp_resp *r)
{
    char *end;
    r->line_len = 0;
    if (!isxdigit((unsigned char)r->line[0]))
        return resp_fail(r, "malformed chunk size");
    unsigned long long sz = strtoull(r->line, &end, 16);
    if ((*end && *end != ';' && *end != ' ' && *end != '\t') || sz > LPHTTP_BODY_MAX)
        return resp_fail(r, "malformed chunk size");
    r->remaining = (size_t)sz;
    r->state = sz ? S_CHUNK_DATA : S_TRAILER;
    return LPHTTP_MORE;
}

/* One step of the body states; returns bytes consumed. */
static size_t step_body(lphttp_resp *r, const char *s, size_t n, lphttp_result *res)
{
    size_t i = 0, take;
    switch (r->state) {
    case S_BODY_CL:
    case S_CHUNK_DATA:
        take = r->remaining < n ? r->remaining : n;
        if (body_put(r, s, take)) {
            *res = resp_fail(r, "body too large or out of memory");
            return 0;
        }
        r->remaining -= take;
        if (r->remaining == 0)
            r->state = r->state == S_BODY_CL ? S_DONE : S_CHUNK_CRLF;
        if (r->state == S_DONE)
            *res = LPHTTP_DONE;
        return take;
    case S_BODY_EOF:
        if (body_put(r, s, n))
            *res = resp_fail(r, "body too large or out of memory");
        return n;
    case S_CHUNK_SIZE:
        if (line_take(r, s, n, &i))
            *res = chunk_size_line(r);
        return i;
    case S_CHUNK_CRLF:
        if (line_take(r, s, n, &i)) {
            if (r->line_len)
                *res = resp_fail(r, "missing CRLF after chunk data");
            r->line_len = 0;
            r->state = S_CHUNK_SIZE;
        }
        return i;
    case S_TRAILER:
        if (line_take(r, s, n, &i)) {
            int blank = r->line_len == 0;
            r->line_len = 0;
            if (blank) {
                r->state = S_DONE;
                *res = LPHTTP_DONE;
            }
        }
        return i;
    default:
        *res = resp_fail(r, "parser misuse");
        return 0;
    }
}

lphttp_result lphttp_resp_feed(lphttp_resp *r, const char *buf, size_t n, size_t *used)
{
    size_t off = 0;
    lphttp_result res = r->state == S_DONE ? LPHTTP_DONE : LPHTTP_MORE;
    if (r->state == S_ERROR)
        res = LPHTTP_ERROR;
    while (off < n && res == LPHTTP_MORE) {
        if (r->state == S_HEAD)
            off += step_head(r, buf + off, n - off, &res);
        else
            off += step_body(r, buf + off, n - off, &res);
    }
    if (used)
        *used = off;
    return res;
}

lphttp_result lphttp_resp_eof(lphttp_resp *r)
{
    if (r->state == S_DONE)
        return LPHTTP_DONE;
    if (r->state == S_BODY_EOF) {
        r->state = S_DONE;
        r->keep_alive = 0;
        return LPHTTP_DONE;
    }
    return resp_fail(r, lphttp_resp_empty(r) ? "connection closed before any answer"
                                             : "connection closed in the middle of an answer");
}

/* The first occurrence of needle[0..nl) in h[0..n), or NULL. */
static const char *mem_find(const char *h, size_t n, const char *needle, size_t nl)
{
    return nl == 0 ? h : memmem(h, n, needle, nl);
}

int lphttp_multipart_each(const char *body, size_t n, const char *boundary, lphttp_part_fn fn,
                          void *ud)
{
    char delim[128];
    int dl = snprintf(delim, sizeof delim, "--%s", boundary);
    if (dl < 3 || (size_t)dl >= sizeof delim || n < (size_t)dl || memcmp(body, delim, (size_t)dl))
        return -1;
    const char *p = body + dl, *end = body + n;
    int parts = 0;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return parts; /* the close delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return -1;
        p += 2;
        const char *hend = mem_find(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *data;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
            data = p + 2; /* a part without headers */
        else if (hend)
            data = hend + 4;
        else
            return -1;
        char d2[132]; /* the delimiter after data is CRLF "--B" */
        int d2l = snprintf(d2, sizeof d2, "\r\n--%s", boundary);
        const char *next = mem_find(data, (size_t)(end - data), d2, (size_t)d2l);
        if (!next)
            return -1;
        fn(ud, data, (size_t)(next - data));
        parts++;
        p = next + d2l;
    }
}

int lphttp_resp_in_body(const lphttp_resp *r)
{
    return r->state != S_HEAD && r->state != S_ERROR;
}

void lphttp_resp_consume(lphttp_resp *r, size_t n)
{
    if (n >= r->body_len) {
        r->body_len = 0;
    } else {
        memmove(r->body, r->body + n, r->body_len - n);
        r->body_len -= n;
    }
    if (r->body)
        r->body[r->body_len] = '\0';
}

size_t lphttp_sse_next(const char *s, size_t n, lphttp_event *ev)
{
    size_t i = 0;
    memset(ev, 0, sizeof *ev);
    ev->comment_only = 1;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '\n')
            j++;
        if (j == n)
            return 0; /* the line is not complete */
        size_t end = j > i && s[j - 1] == '\r' ? j - 1 : j;
        if (end == i)
            return j + 1; /* the blank line: the event is complete */
        const char *line = s + i;
        size_t len = end - i;
        if (line[0] != ':') {
            ev->comment_only = 0;
            const char *colon = memchr(line, ':', len);
            size_t nl = colon ? (size_t)(colon - line) : len;
            const char *v = colon ? colon + 1 : line + len;
            size_t vl = colon ? len - nl - 1 : 0;
            if (vl && *v == ' ') {
                v++;
                vl--;
            }
            if (nl == 2 && !memcmp(line, "id", 2)) {
                ev->id = v;
                ev->id_len = vl;
            } else if (nl == 4 && !memcmp(line, "data", 4) && !ev->data) {
                ev->data = v;
                ev->data_len = vl;
            }
        }
        i = j + 1;
    }
    return 0;
}
