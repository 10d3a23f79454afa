/* fcgi_proto.c -- FastCGI records in and out, for one request at a time.
 *
 * THE WIRE.  Every record is an 8-byte header (version 1, type, request id,
 * content length, padding length) followed by its content and padding.  A
 * responder request is FCGI_BEGIN_REQUEST (role, flags), a PARAMS stream of
 * name-value pairs ended by an empty PARAMS record, and a STDIN stream ended
 * by an empty STDIN record.  The answer is STDOUT records, an empty STDOUT
 * and FCGI_END_REQUEST.  Records with request id 0 are management records:
 * FCGI_GET_VALUES is answered, any other type gets FCGI_UNKNOWN_TYPE.
 *
 * THE RULES this reader keeps, so a hostile or broken peer costs bounded
 * memory and never a crash:
 *   - one request per connection (FCGI_MPXS_CONNS is 0): a second
 *     BEGIN_REQUEST for another id is refused with FCGI_CANT_MPX_CONN;
 *   - params are kept up to max_params bytes and FCGI_PROTO_MAX_PARAMS
 *     pairs; beyond that the request is marked params_over (the caller
 *     answers 431) but the records are still read through, so the
 *     connection stays in step;
 *   - stdin is kept up to max_body bytes and counted beyond (body_over:
 *     the caller answers 413), again read through;
 *   - a name-value pair whose lengths run past its stream, a record of
 *     another version, or STDIN before the end of PARAMS is an error.
 * Nothing here reads a socket or a clock: fcgi_front.c does.
 */
#include "fcgi_proto.h"

#include <stdlib.h>
#include <string.h>

/* Record types and values (the FastCGI specification, section 8). */
enum {
    FCGI_BEGIN_REQUEST = 1,
    FCGI_ABORT_REQUEST = 2,
    FCGI_END_REQUEST = 3,
    FCGI_PARAMS = 4,
    FCGI_STDIN = 5,
    FCGI_STDOUT = 6,
    FCGI_GET_VALUES = 9,
    FCGI_GET_VALUES_RESULT = 10,
    FCGI_UNKNOWN_TYPE = 11
};
enum { FCGI_RESPONDER = 1, FCGI_KEEP_CONN_FLAG = 1 };
enum { FCGI_REQUEST_COMPLETE = 0, FCGI_CANT_MPX_CONN = 1, FCGI_UNKNOWN_ROLE = 3 };

#define FCGI_PROTO_RECORD_MAX 65528 /* a multiple of 8 below 65535 */

void fcgi_proto_init(fcgi_proto *p, size_t max_params, size_t max_body) {
    memset(p, 0, sizeof *p);
    p->max_params = max_params;
    p->max_body = max_body;
}

void fcgi_proto_free(fcgi_proto *p) {
    free(p->envp);
    buf_free(&p->body);
    buf_free(&p->reply);
    buf_free(&p->rec);
    buf_free(&p->params);
    p->envp = NULL;
    p->nenv = 0;
}

static void fcgi_proto_record(buf *out, int type, uint16_t reqid, const void *data,
                              size_t len) {
    unsigned char h[8] = {1, (unsigned char)type, (unsigned char)(reqid >> 8),
                          (unsigned char)reqid, (unsigned char)(len >> 8),
                          (unsigned char)len, 0, 0};
    buf_put(out, h, sizeof h);
    buf_put(out, data, len);
}

static void fcgi_proto_end(buf *out, uint16_t reqid, int protocol_status) {
    unsigned char body[8] = {0, 0, 0, 0, (unsigned char)protocol_status, 0, 0, 0};
    fcgi_proto_record(out, FCGI_END_REQUEST, reqid, body, sizeof body);
}

void fcgi_proto_stdout(buf *out, uint16_t reqid, const char *data, size_t len) {
    for (size_t off = 0; off < len; off += FCGI_PROTO_RECORD_MAX) {
        size_t n = len - off < FCGI_PROTO_RECORD_MAX ? len - off : FCGI_PROTO_RECORD_MAX;
        fcgi_proto_record(out, FCGI_STDOUT, reqid, data + off, n);
    }
}

void fcgi_proto_frame(buf *out, uint16_t reqid, const char *data, size_t len) {
    fcgi_proto_stdout(out, reqid, data, len);
    fcgi_proto_record(out, FCGI_STDOUT, reqid, NULL, 0);
    fcgi_proto_end(out, reqid, FCGI_REQUEST_COMPLETE);
}

static fcgi_proto_event fcgi_proto_fail(fcgi_proto *p, const char *why) {
    p->error = why;
    return FCGI_PROTO_ERROR;
}

/* Read one name-value length at s[*off] (1 byte, or 4 with the top bit
 * set); -1 when it runs past n. */
static int64_t fcgi_proto_nvlen(const unsigned char *s, size_t n, size_t *off) {
    if (*off >= n)
        return -1;
    if (!(s[*off] & 0x80))
        return s[(*off)++];
    if (n - *off < 4)
        return -1;
    int64_t v = (int64_t)(s[*off] & 0x7f) << 24 | (int64_t)s[*off + 1] << 16 |
                (int64_t)s[*off + 2] << 8 | s[*off + 3];
    *off += 4;
    return v;
}

/* Decode the name-value pairs of s[0..n) and call fn for each; -1 if a
 * pair runs past the end. */
static int fcgi_proto_pairs(const unsigned char *s, size_t n,
                            void (*fn)(const unsigned char *, size_t, const unsigned char *,
                                       size_t, void *),
                            void *ud) {
    size_t off = 0;
    while (off < n) {
        int64_t nl = fcgi_proto_nvlen(s, n, &off);
        int64_t vl = nl < 0 ? -1 : fcgi_proto_nvlen(s, n, &off);
        if (vl < 0 || (uint64_t)nl + (uint64_t)vl > n - off)
            return -1;
        fn(s + off, (size_t)nl, s + off + nl, (size_t)vl, ud);
        off += (size_t)(nl + vl);
    }
    return 0;
}

typedef struct {
    buf strings;   /* "NAME=value\0" one after another */
    size_t offs[FCGI_PROTO_MAX_PARAMS]; /* where each starts (a value may hold NUL) */
    size_t count;
    int over;      /* more than FCGI_PROTO_MAX_PARAMS pairs */
} fcgi_proto_env;

/* A pair whose name is empty or holds '=' or NUL could pose as another
 * variable: such a pair is dropped. */
static void fcgi_proto_env_add(const unsigned char *name, size_t nl, const unsigned char *val,
                               size_t vl, void *ud) {
    fcgi_proto_env *e = ud;
    if (nl == 0 || memchr(name, '=', nl) || memchr(name, '\0', nl))
        return;
    if (e->count == FCGI_PROTO_MAX_PARAMS) {
        e->over = 1;
        return;
    }
    e->offs[e->count] = e->strings.len;
    buf_put(&e->strings, name, nl);
    buf_putc(&e->strings, '=');
    buf_put(&e->strings, val, vl);
    buf_putc(&e->strings, '\0');
    e->count++;
}

/* The PARAMS stream ended: build envp from it. */
static fcgi_proto_event fcgi_proto_params_end(fcgi_proto *p) {
    fcgi_proto_env e; /* offs[] is written before it is read */
    buf_init(&e.strings);
    e.count = 0;
    e.over = 0;
    p->params_done = 1;
    if (!p->params_over &&
        fcgi_proto_pairs((const unsigned char *)p->params.p, p->params.len,
                         fcgi_proto_env_add, &e) != 0) {
        buf_free(&e.strings);
        return fcgi_proto_fail(p, "a name-value pair runs past the end of the params");
    }
    p->params_over |= e.over;
    if (p->params_over)
        e.count = 0;
    p->envp = malloc((e.count + 1) * sizeof *p->envp);
    if (!p->envp || e.strings.oom) {
        buf_free(&e.strings);
        return fcgi_proto_fail(p, "out of memory");
    }
    /* The strings move into p->params, which the envp pointers index. */
    buf_free(&p->params);
    p->params = e.strings;
    for (size_t i = 0; i < e.count; i++)
        p->envp[i] = p->params.p + e.offs[i];
    p->envp[e.count] = NULL;
    p->nenv = e.count;
    return FCGI_PROTO_PARAMS;
}

static void fcgi_proto_value_add(const unsigned char *name, size_t nl, const unsigned char *val,
                                 size_t vl, void *ud) {
    static const struct {
        const char *name, *value;
    } known[] = {{"FCGI_MAX_CONNS", "10000"}, {"FCGI_MAX_REQS", "10000"},
                 {"FCGI_MPXS_CONNS", "0"}};
    buf *out = ud;
    (void)val;
    (void)vl;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t kl = strlen(known[i].name), kv = strlen(known[i].value);
        if (kl != nl || memcmp(known[i].name, name, nl))
            continue;
        unsigned char lens[2] = {(unsigned char)kl, (unsigned char)kv};
        buf_put(out, lens, 2);
        buf_put(out, known[i].name, kl);
        buf_put(out, known[i].value, kv);
    }
}

/* A management record (request id 0) is complete in p->rec. */
static fcgi_proto_event fcgi_proto_management(fcgi_proto *p) {
    if (p->type != FCGI_GET_VALUES) {
        unsigned char body[8] = {(unsigned char)p->type, 0, 0, 0, 0, 0, 0, 0};
        fcgi_proto_record(&p->reply, FCGI_UNKNOWN_TYPE, 0, body, sizeof body);
        return FCGI_PROTO_MORE;
    }
    buf values;
    buf_init(&values);
    int rc = fcgi_proto_pairs((const unsigned char *)p->rec.p, p->rec.len,
                              fcgi_proto_value_add, &values);
    if (rc == 0)
        fcgi_proto_record(&p->reply, FCGI_GET_VALUES_RESULT, 0, values.p, values.len);
    buf_free(&values);
    return rc == 0 ? FCGI_PROTO_MORE : fcgi_proto_fail(p, "malformed FCGI_GET_VALUES");
}

/* A BEGIN_REQUEST record is complete in p->rec. */
static fcgi_proto_event fcgi_proto_begin(fcgi_proto *p) {
    const unsigned char *b = (const unsigned char *)p->rec.p;
    if (p->rec.len < 8)
        return fcgi_proto_fail(p, "FCGI_BEGIN_REQUEST is too short");
    if (p->begun) {
        if (p->rec_id == p->reqid)
            return fcgi_proto_fail(p, "FCGI_BEGIN_REQUEST twice for one request");
        fcgi_proto_end(&p->reply, p->rec_id, FCGI_CANT_MPX_CONN);
        return FCGI_PROTO_MORE;
    }
    if ((b[0] << 8 | b[1]) != FCGI_RESPONDER) {
        fcgi_proto_end(&p->reply, p->rec_id, FCGI_UNKNOWN_ROLE);
        return fcgi_proto_fail(p, "only the responder role is served");
    }
    p->begun = 1;
    p->reqid = p->rec_id;
    p->keep_conn = b[2] & FCGI_KEEP_CONN_FLAG;
    return FCGI_PROTO_MORE;
}

/* Content bytes of the current record's stream (PARAMS or STDIN). */
static void fcgi_proto_stream(fcgi_proto *p, const unsigned char *s, size_t n) {
    if (p->type == FCGI_PARAMS) {
        if (p->params.len + n > p->max_params)
            p->params_over = 1;
        if (!p->params_over)
            buf_put(&p->params, s, n);
        return;
    }
    size_t keep = p->body.len < p->max_body ? p->max_body - p->body.len : 0;
    buf_put(&p->body, s, n < keep ? n : keep);
    p->stdin_len += n;
    p->body_over |= p->stdin_len > p->max_body;
}

/* Does the current record's content go to a stream (not buffered)? */
static int fcgi_proto_streamed(const fcgi_proto *p) {
    return p->begun && p->rec_id == p->reqid &&
           (p->type == FCGI_PARAMS || p->type == FCGI_STDIN);
}

/* The header of a record is complete: check it and set up its reading. */
static fcgi_proto_event fcgi_proto_header(fcgi_proto *p) {
    const unsigned char *h = p->hdr;
    if (h[0] != 1)
        return fcgi_proto_fail(p, "not FastCGI version 1");
    p->type = h[1];
    p->rec_id = (uint16_t)(h[2] << 8 | h[3]);
    p->content_left = (size_t)(h[4] << 8 | h[5]);
    p->padding_left = h[6];
    buf_reset(&p->rec);
    if (fcgi_proto_streamed(p)) {
        if (p->type == FCGI_STDIN && !p->params_done)
            return fcgi_proto_fail(p, "FCGI_STDIN before the end of FCGI_PARAMS");
        if ((p->type == FCGI_PARAMS && p->params_done) ||
            (p->type == FCGI_STDIN && p->stdin_done))
            return fcgi_proto_fail(p, "a record after the end of its stream");
    }
    return FCGI_PROTO_MORE;
}

/* The content of the current record has been read: act on it. */
static fcgi_proto_event fcgi_proto_record_end(fcgi_proto *p, size_t content_len) {
    if (p->rec_id == 0)
        return fcgi_proto_management(p);
    if (p->type == FCGI_BEGIN_REQUEST)
        return fcgi_proto_begin(p);
    if (!p->begun || p->rec_id != p->reqid)
        return FCGI_PROTO_MORE; /* another request's record: not ours */
    if (p->type == FCGI_ABORT_REQUEST) {
        p->aborted = 1;
        return FCGI_PROTO_ABORT;
    }
    if (content_len > 0)
        return FCGI_PROTO_MORE;
    if (p->type == FCGI_PARAMS)
        return fcgi_proto_params_end(p);
    if (p->type == FCGI_STDIN) {
        p->stdin_done = 1;
        return FCGI_PROTO_DONE;
    }
    return FCGI_PROTO_MORE;
}

fcgi_proto_event fcgi_proto_feed(fcgi_proto *p, const unsigned char *data, size_t len,
                                 size_t *used) {
    size_t off = 0;
    fcgi_proto_event ev = FCGI_PROTO_MORE;
    while (off < len && ev == FCGI_PROTO_MORE && !p->error && !p->stdin_done && !p->aborted) {
        if (p->hdr_have < sizeof p->hdr) {
            size_t n = sizeof p->hdr - p->hdr_have;
            n = n < len - off ? n : len - off;
            memcpy(p->hdr + p->hdr_have, data + off, n);
            p->hdr_have += n;
            off += n;
            if (p->hdr_have == sizeof p->hdr)
                ev = fcgi_proto_header(p);
            if (ev != FCGI_PROTO_MORE || p->hdr_have < sizeof p->hdr || p->content_left)
                continue;
        }
        size_t content_len = (size_t)(p->hdr[4] << 8 | p->hdr[5]);
        if (p->content_left) {
            size_t n = p->content_left < len - off ? p->content_left : len - off;
            if (fcgi_proto_streamed(p))
                fcgi_proto_stream(p, data + off, n);
            else if (p->type == FCGI_BEGIN_REQUEST || p->rec_id == 0)
                buf_put(&p->rec, data + off, n);
            p->content_left -= n;
            off += n;
            if (p->content_left)
                continue;
        }
        if (p->padding_left) {
            size_t n = p->padding_left < len - off ? p->padding_left : len - off;
            p->padding_left -= n;
            off += n;
            if (p->padding_left)
                continue;
        }
        p->hdr_have = 0; /* the next record starts */
        ev = fcgi_proto_record_end(p, content_len);
        if (p->rec.oom || p->params.oom || p->body.oom || p->reply.oom)
            ev = fcgi_proto_fail(p, "out of memory");
    }
    *used = off;
    return ev;
}
