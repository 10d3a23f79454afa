/* request.c -- CGI/FastCGI parameters to a validated holdfast request.
 *
 * The route comes from PATH_INFO (what the program is mounted under is not
 * ours), falling back to REQUEST_URI minus SCRIPT_NAME for servers that
 * leave PATH_INFO empty.  Every limit is checked here, so a handler never
 * sees an out-of-range value: channels per subscribe (400), body size (413),
 * timeout (capped, not refused: a client cannot know the server's cap),
 * a publish's Content-Type (400 bad_content_type: what msglog would refuse).
 * Unknown query parameters are ignored (cache busters such as `_=123`).
 * Credentials are only found here (Authorization: Bearer, ?token=, the
 * token cookie); handler.c decides what they grant.
 */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REQUEST_STR_(x) #x
#define REQUEST_STR(x) REQUEST_STR_(x)

const char *request_param(char *const *envp, const char *name) {
    size_t n = strlen(name);
    for (; envp && *envp; envp++)
        if (!strncmp(*envp, name, n) && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

int request_parse_i64(const char *s, size_t n, int64_t *out) {
    int64_t v = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Set an error; the detail is `what` followed by `arg` (may be NULL). */
static request_route request_fail(request *r, int status, const char *error, const char *what,
                                  const char *arg) {
    r->route = ROUTE_ERROR;
    r->status = status;
    r->error = error;
    snprintf(r->detail, sizeof r->detail, "%s%s", what, arg ? arg : "");
    return ROUTE_ERROR;
}

static int request_unescape(const char *s, size_t n, char *out, size_t cap, size_t *outlen,
                            int plus_is_space);

/* The path below the mount point.  PATH_INFO comes decoded; the fallback
 * (REQUEST_URI minus SCRIPT_NAME) is decoded into r->pathbuf. */
static const char *request_path(request *r, char *const *envp, size_t *len) {
    const char *p = request_param(envp, "PATH_INFO");
    if (p && *p) {
        *len = strlen(p);
        return p;
    }
    const char *uri = request_param(envp, "REQUEST_URI");
    const char *script = request_param(envp, "SCRIPT_NAME");
    if (!uri) {
        *len = 0;
        return "";
    }
    size_t n = strcspn(uri, "?");
    size_t s = script ? strlen(script) : 0;
    if (s && s <= n && !strncmp(uri, script, s))
        uri += s, n -= s;
    if (request_unescape(uri, n, r->pathbuf, sizeof r->pathbuf, len, 0) != 0) {
        *len = 0; /* malformed or too long: no route matches */
        return "";
    }
    return r->pathbuf;
}

static int request_hex(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode s[0..n) into out (cap bytes), '+' as a space in a query;
 * -1 if malformed or too long. */
static int request_unescape(const char *s, size_t n, char *out, size_t cap, size_t *outlen,
                            int plus_is_space) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? request_hex(s[i + 1]) : -1;
            int lo = i + 2 < n ? request_hex(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    *outlen = o;
    return 0;
}

/* Split "a,b,c" into r->channels (validated, duplicates dropped). */
static request_route request_channels(request *r, const char *s, size_t n,
                                      const request_limits *lim) {
    size_t used = 0;
    r->nchannels = 0;
    while (n > 0) {
        const char *comma = memchr(s, ',', n);
        size_t len = comma ? (size_t)(comma - s) : n;
        if (!msglog_channel_valid(s, len))
            return request_fail(r, 400, "bad_channel",
                                "channel names are 1-128 bytes of A-Za-z0-9._:@-", NULL);
        int dup = 0;
        for (size_t i = 0; i < r->nchannels; i++)
            dup |= strlen(r->channels[i]) == len && !memcmp(r->channels[i], s, len);
        if (!dup) {
            if ((int)r->nchannels >= lim->max_channels || r->nchannels >= REQUEST_MAX_CHANNELS) {
                char max[16];
                snprintf(max, sizeof max, "%d", lim->max_channels);
                return request_fail(r, 400, "too_many_channels",
                                    "channels in one subscribe, at most: ", max);
            }
            memcpy(r->chanbuf + used, s, len);
            r->chanbuf[used + len] = '\0';
            r->channels[r->nchannels++] = r->chanbuf + used;
            used += len + 1;
        }
        if (!comma)
            break;
        s = comma + 1;
        n -= len + 1;
        if (n == 0)
            return request_fail(r, 400, "bad_channel", "empty channel name in the list", NULL);
    }
    if (r->nchannels == 0)
        return request_fail(r, 400, "bad_channel", "no channel named", NULL);
    r->channel = r->channels[0];
    return r->route;
}

/* Apply one query parameter of a subscribe. */
static int request_query_param(request *r, const char *name, size_t nlen, const char *val,
                               size_t vlen, const request_limits *lim) {
    int64_t v;
#define IS(lit) (nlen == sizeof(lit) - 1 && !memcmp(name, lit, nlen))
    if (IS("since")) {
        if (request_parse_i64(val, vlen, &r->since))
            return request_fail(r, 400, "bad_cursor", "since must be an integer >= 0", NULL);
    } else if (IS("last")) {
        if (request_parse_i64(val, vlen, &r->last))
            return request_fail(r, 400, "bad_parameter", "last must be an integer >= 0",
                                NULL);
    } else if (IS("timeout")) {
        if (request_parse_i64(val, vlen, &v))
            return request_fail(r, 400, "bad_parameter", "timeout must be whole seconds >= 0",
                                NULL);
        r->timeout_s = v > lim->max_poll_timeout_s ? lim->max_poll_timeout_s : (int)v;
    } else if (IS("limit")) {
        if (request_parse_i64(val, vlen, &v) || v < 1)
            return request_fail(r, 400, "bad_parameter", "limit must be an integer >= 1",
                                NULL);
        r->limit = v > lim->batch_limit ? (size_t)lim->batch_limit : (size_t)v;
    } else if (IS("epoch")) {
        if (vlen < 1 || vlen > MSGLOG_EPOCH_LEN)
            return request_fail(r, 400, "bad_parameter", "epoch is at most 16 characters",
                                NULL);
        for (size_t i = 0; i < vlen; i++)
            if (request_hex(val[i]) < 0)
                return request_fail(r, 400, "bad_parameter", "epoch is hexadecimal", NULL);
        memcpy(r->epoch, val, vlen);
        r->epoch[vlen] = '\0';
        r->has_epoch = 1;
    } else if (IS("format")) {
        if (vlen == 3 && !memcmp(val, "raw", 3))
            r->format = FORMAT_RAW;
        else if (vlen == 4 && !memcmp(val, "json", 4))
            r->format = FORMAT_JSON;
        else
            return request_fail(r, 400, "bad_parameter", "format is json or raw", NULL);
    }
#undef IS
    return 0;
}

/* 1 if a query parameter name is one a subscribe uses. */
static int request_known_param(const char *name, size_t n) {
    static const char *const known[] = {"since", "last", "timeout", "limit", "epoch", "format"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == n && !memcmp(known[i], name, n))
            return 1;
    return 0;
}

/* Keep a presented token (value s[0..n), percent-decoded when `escaped`)
 * unless one came from a stronger source already. */
static void request_keep_token(request *r, const char *s, size_t n, int escaped,
                               request_token_source from) {
    size_t len;
    if (r->token || r->token_over || n == 0)
        return;
    if (n > TOKEN_MAX * 3 ||
        (escaped ? request_unescape(s, n, r->tokbuf, sizeof r->tokbuf, &len, 0)
                 : (n > TOKEN_MAX ? -1 : (memcpy(r->tokbuf, s, n), r->tokbuf[n] = '\0', 0)))) {
        r->token_over = 1; /* too long (or malformed): refused as a malformed token */
        r->token_from = from;
        return;
    }
    r->token = r->tokbuf;
    r->token_from = from;
}

/* The value of cookie `name` in a Cookie header ("a=b; c=d"). */
static const char *request_cookie(const char *h, const char *name, size_t *len) {
    size_t n = strlen(name);
    while (h && *h) {
        while (*h == ' ' || *h == ';')
            h++;
        size_t item = strcspn(h, ";");
        if (item > n && !strncmp(h, name, n) && h[n] == '=') {
            *len = item - n - 1;
            const char *v = h + n + 1;
            if (*len >= 2 && v[0] == '"' && v[*len - 1] == '"') { /* a quoted value */
                v++;
                *len -= 2;
            }
            return v;
        }
        h += item;
    }
    return NULL;
}

static request_route request_query(request *r, const char *q, const request_limits *lim) {
    char name[32], val[64];
    while (q && *q) {
        size_t len = strcspn(q, "&"), nlen, vlen;
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        if (klen == 5 && !memcmp(q, "token", 5)) {
            if (eq)
                request_keep_token(r, eq + 1, len - klen - 1, 1, REQUEST_TOKEN_QUERY);
            q += len + (q[len] == '&');
            continue;
        }
        /* Names we know are short; a long, malformed or unknown one is not
         * ours (cache busters, tracking parameters) and is ignored. */
        if (request_unescape(q, klen, name, sizeof name, &nlen, 1) == 0 &&
            request_known_param(name, nlen)) {
            if (request_unescape(eq ? eq + 1 : q + len, eq ? len - klen - 1 : 0, val, sizeof val,
                                 &vlen, 1))
                return request_fail(r, 400, "bad_parameter",
                                    "a query parameter is malformed or too long: ", name);
            if (request_query_param(r, name, nlen, val, vlen, lim))
                return ROUTE_ERROR;
        }
        q += len + (q[len] == '&');
    }
    return r->route;
}

/* A header token (idempotency or compaction key): visible ASCII only. */
static request_route request_token(request *r, const char *name, const char **dst,
                                   const char *v) {
    if (!v)
        return r->route;
    size_t n = strlen(v);
    int ok = n >= 1 && n <= REQUEST_TOKEN_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] > 0x20 && v[i] < 0x7f;
    if (!ok)
        return request_fail(r, 400, "bad_header",
                            "must be 1-200 visible ASCII characters: ", name);
    *dst = v;
    return r->route;
}

static request_route request_sub(request *r, char *const *envp, const request_limits *lim) {
    const char *accept = request_param(envp, "HTTP_ACCEPT");
    const char *leid = request_param(envp, "HTTP_LAST_EVENT_ID");
    r->timeout_s = lim->poll_timeout_s;
    r->limit = (size_t)lim->batch_limit;
    if (accept && strstr(accept, "text/event-stream"))
        r->format = FORMAT_SSE;
    if (request_query(r, request_param(envp, "QUERY_STRING"), lim) == ROUTE_ERROR)
        return ROUTE_ERROR;
    /* An explicit ?since= wins over Last-Event-ID -- except on an event
     * stream, whose URL EventSource never changes: there Last-Event-ID is
     * the newer cursor (the URL's would replay on every reconnect). */
    if ((r->since < 0 || r->format == FORMAT_SSE) && leid && *leid &&
        request_parse_i64(leid, strlen(leid), &r->since))
        return request_fail(r, 400, "bad_cursor", "Last-Event-ID must be a cursor", NULL);
    if (r->since >= 0)
        r->last = 0; /* an explicit cursor wins over the starting point */
    if (lim->token_cookie && *lim->token_cookie && !r->token && !r->token_over) {
        size_t n;
        const char *v = request_cookie(request_param(envp, "HTTP_COOKIE"), lim->token_cookie, &n);
        if (v)
            request_keep_token(r, v, n, 0, REQUEST_TOKEN_COOKIE);
    }
    return r->route;
}

static request_route request_pub(request *r, char *const *envp, const request_limits *lim) {
    const char *cl = request_param(envp, "CONTENT_LENGTH");
    r->content_type = request_param(envp, "CONTENT_TYPE");
    if (r->content_type && !*r->content_type)
        r->content_type = NULL;
    if (r->content_type && !msglog_type_valid(r->content_type))
        return request_fail(r, 400, "bad_content_type",
                            "Content-Type must be a media type (type/subtype, then ; name=value"
                            " parameters) of at most " REQUEST_STR(MSGLOG_TYPE_MAX)
                            " bytes of visible ASCII", NULL);
    r->content_length = -1;
    if (cl && *cl && request_parse_i64(cl, strlen(cl), &r->content_length))
        return request_fail(r, 400, "bad_header", "Content-Length is not a number", NULL);
    if (r->content_length > lim->max_body)
        return request_fail(r, 413, "body_too_large", "the body exceeds max_body", NULL);
    if (request_token(r, "Idempotency-Key", &r->idem,
                      request_param(envp, "HTTP_IDEMPOTENCY_KEY")) == ROUTE_ERROR)
        return ROUTE_ERROR;
    return request_token(r, "Holdfast-Key", &r->key, request_param(envp, "HTTP_HOLDFAST_KEY"));
}

/* ---- Durable Streams ------------------------------------------------------- */

/* A stream name (or a Stream-Forked-From path, its /v1/stream/ prefix and
 * the mount point before it removed) into out: 0 or -1. */
static int request_stream_name(const char *s, size_t n, char *out) {
    static const char prefix[] = "/v1/stream/";
    const char *at = NULL;
    for (size_t i = 0; i + sizeof prefix - 1 <= n; i++)
        if (!memcmp(s + i, prefix, sizeof prefix - 1))
            at = s + i;
    if (at) {
        n -= (size_t)(at - s) + sizeof prefix - 1;
        s = at + sizeof prefix - 1;
    }
    if (n == 0 || n > DSPROTO_NAME_MAX || !msglog_channel_valid(s, n))
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

/* One query parameter of a stream read. */
static request_route request_stream_param(request *r, const char *name, size_t nlen,
                                          const char *val, size_t vlen, int *offsets) {
#define IS(lit) (nlen == sizeof(lit) - 1 && !memcmp(name, lit, nlen))
    if (IS("offset")) {
        if (++*offsets > 1)
            return request_fail(r, 400, "bad_offset", "offset is given more than once", NULL);
        r->ds.offset = dsproto_offset_parse(val, vlen, &r->ds.pos);
        if (r->ds.offset == DSPROTO_OFFSET_BAD)
            return request_fail(r, 400, "bad_offset",
                                "offset is -1, now, or a Stream-Next-Offset value", NULL);
    } else if (IS("live")) {
        if (vlen == 9 && !memcmp(val, "long-poll", 9))
            r->ds.live = FORMAT_DS_POLL;
        else if (vlen == 3 && !memcmp(val, "sse", 3))
            r->ds.live = FORMAT_DS_SSE;
        else
            return request_fail(r, 400, "bad_parameter", "live is long-poll or sse", NULL);
    } else if (IS("cursor")) {
        int64_t v;
        if (request_parse_i64(val, vlen, &v) == 0)
            r->ds.cursor = v; /* anything else is not one of ours: a fresh cursor */
    }
#undef IS
    return r->route;
}

static request_route request_stream_query(request *r, const char *q) {
    char name[16], val[64];
    int offsets = 0;
    while (q && *q) {
        size_t len = strcspn(q, "&"), nlen, vlen;
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        if (request_unescape(q, klen, name, sizeof name, &nlen, 1) == 0) {
            int known = (nlen == 6 && (!memcmp(name, "offset", 6) || !memcmp(name, "cursor", 6))) ||
                        (nlen == 4 && !memcmp(name, "live", 4));
            if (known && request_unescape(eq ? eq + 1 : q + len, eq ? len - klen - 1 : 0, val,
                                          sizeof val, &vlen, 1))
                return request_fail(r, 400, "bad_parameter",
                                    "a query parameter is malformed or too long: ", name);
            if (known && request_stream_param(r, name, nlen, val, vlen, &offsets) == ROUTE_ERROR)
                return ROUTE_ERROR;
        }
        q += len + (q[len] == '&');
    }
    if (r->ds.live && !offsets)
        return request_fail(r, 400, "bad_offset", "a live read needs ?offset=", NULL);
    return r->route;
}

/* A producer's three headers: all or none. */
static request_route request_stream_producer(request *r, char *const *envp) {
    const char *id = request_param(envp, "HTTP_PRODUCER_ID");
    const char *ep = request_param(envp, "HTTP_PRODUCER_EPOCH");
    const char *sq = request_param(envp, "HTTP_PRODUCER_SEQ");
    if (!id && !ep && !sq)
        return r->route;
    if (!id || !ep || !sq)
        return request_fail(r, 400, "bad_producer",
                            "Producer-Id, Producer-Epoch and Producer-Seq go together", NULL);
    if (request_token(r, "Producer-Id", &r->ds.pid, id) == ROUTE_ERROR)
        return ROUTE_ERROR;
    if (dsproto_uint_parse(ep, &r->ds.pepoch) || dsproto_uint_parse(sq, &r->ds.pseq))
        return request_fail(r, 400, "bad_producer",
                            "Producer-Epoch and Producer-Seq are integers 0..2^53-1", NULL);
    return r->route;
}

/* Stream-Forked-From and its offsets. */
static request_route request_stream_fork(request *r, char *const *envp) {
    const char *from = request_param(envp, "HTTP_STREAM_FORKED_FROM");
    const char *at = request_param(envp, "HTTP_STREAM_FORK_OFFSET");
    const char *sub = request_param(envp, "HTTP_STREAM_FORK_SUB_OFFSET");
    r->ds.fork_at = -1;
    if (!from) {
        if (at || sub)
            return request_fail(r, 400, "bad_fork", "a fork offset needs Stream-Forked-From",
                                NULL);
        return r->route;
    }
    if (request_stream_name(from, strlen(from), r->ds.fork_from))
        return request_fail(r, 400, "bad_fork", "Stream-Forked-From is not a stream path", NULL);
    if (at) {
        dsproto_offset k = dsproto_offset_parse(at, strlen(at), &r->ds.fork_at);
        if (k == DSPROTO_OFFSET_BAD)
            return request_fail(r, 400, "bad_fork", "Stream-Fork-Offset is not an offset", NULL);
        if (k == DSPROTO_OFFSET_START)
            r->ds.fork_at = 0;
        else if (k == DSPROTO_OFFSET_NOW)
            r->ds.fork_at = -1;
    }
    if (sub && dsproto_uint_parse(sub, &r->ds.fork_sub))
        return request_fail(r, 400, "bad_fork",
                            "Stream-Fork-Sub-Offset is an integer 0..2^53-1", NULL);
    if (r->ds.fork_sub > 0 && !at)
        return request_fail(r, 400, "bad_fork", "a sub-offset needs Stream-Fork-Offset", NULL);
    return r->route;
}

static request_route request_stream_route(request *r, char *const *envp, const char *arg,
                                          size_t alen, const request_limits *lim) {
    static const char *const methods[] = {"GET", "HEAD", "PUT", "POST", "DELETE"};
    int ok = 0;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        ok |= !strcmp(r->method, methods[i]);
    if (!ok)
        return request_fail(r, 405, "method_not_allowed",
                            "streams take GET, HEAD, PUT, POST and DELETE", NULL);
    if (request_stream_name(arg, alen, r->ds.name))
        return request_fail(r, 400, "bad_stream",
                            "stream names are channel names: 1-128 bytes of A-Za-z0-9._:@-", NULL);
    r->channels[0] = r->channel = r->ds.name; /* the stream is the channel */
    r->nchannels = 1;
    r->ds.offset = DSPROTO_OFFSET_START;
    r->ds.cursor = r->ds.ttl_s = r->ds.expires_ms = -1;
    if (request_stream_query(r, request_param(envp, "QUERY_STRING")) == ROUTE_ERROR)
        return ROUTE_ERROR;
    if (request_pub(r, envp, lim) == ROUTE_ERROR)
        return ROUTE_ERROR;
    const char *ttl = request_param(envp, "HTTP_STREAM_TTL");
    const char *exp = request_param(envp, "HTTP_STREAM_EXPIRES_AT");
    if (ttl && dsproto_uint_parse(ttl, &r->ds.ttl_s))
        return request_fail(r, 400, "bad_ttl", "Stream-TTL is whole seconds, no sign or zeros",
                            NULL);
    if (exp && dsproto_time_parse(exp, &r->ds.expires_ms))
        return request_fail(r, 400, "bad_expires", "Stream-Expires-At is an RFC 3339 time",
                            NULL);
    if (ttl && exp)
        return request_fail(r, 400, "bad_expires",
                            "give Stream-TTL or Stream-Expires-At, not both", NULL);
    r->ds.closed = dsproto_closed(request_param(envp, "HTTP_STREAM_CLOSED"));
    r->ds.script = request_param(envp, "SCRIPT_NAME");
    if (!r->ds.script)
        r->ds.script = "";
    r->ds.host = request_param(envp, "HTTP_HOST");
    if (!r->ds.host || !*r->ds.host || strpbrk(r->ds.host, "\r\n /"))
        r->ds.host = request_param(envp, "SERVER_NAME");
    if (!r->ds.host || !*r->ds.host || strpbrk(r->ds.host, "\r\n /"))
        r->ds.host = "localhost";
    const char *https = request_param(envp, "HTTPS"), *scheme = request_param(envp, "REQUEST_SCHEME");
    r->ds.https = (https && !strcasecmp(https, "on")) || (scheme && !strcasecmp(scheme, "https"));
    /* nginx's fastcgi_params pass Host as $host, without the port */
    const char *port = request_param(envp, "SERVER_PORT");
    if (port && !strchr(r->ds.host, ':') && strcmp(port, r->ds.https ? "443" : "80") &&
        strlen(port) <= 5 && strspn(port, "0123456789") == strlen(port) && *port) {
        snprintf(r->ds.hostbuf, sizeof r->ds.hostbuf, "%.200s:%s", r->ds.host, port);
        r->ds.host = r->ds.hostbuf;
    }
    r->timeout_s = lim->streams_poll_timeout_s < lim->max_poll_timeout_s
                       ? lim->streams_poll_timeout_s : lim->max_poll_timeout_s;
    if (r->ds.live)
        r->format = (request_format)r->ds.live;
    r->ds.if_none_match = request_param(envp, "HTTP_IF_NONE_MATCH");
    const char *seq = request_param(envp, "HTTP_STREAM_SEQ");
    if (seq && request_token(r, "Stream-Seq", &r->ds.seq, seq) == ROUTE_ERROR)
        return ROUTE_ERROR;
    if (request_stream_producer(r, envp) == ROUTE_ERROR)
        return ROUTE_ERROR;
    return request_stream_fork(r, envp);
}

/* Which route a path names; sets *arg to the rest after "/sub/" or "/pub/". */
static request_route request_route_of(const char *p, size_t n, const char **arg,
                                      size_t *alen) {
    static const struct {
        const char *prefix;
        request_route route;
        int has_arg;
    } routes[] = {{"/sub/", ROUTE_SUB, 1},        {"/pub/", ROUTE_PUB, 1},
                  {"/health", ROUTE_HEALTH, 0},   {"/stats", ROUTE_STATS, 0},
                  {"/metrics", ROUTE_METRICS, 0}, {"/v1/stream/", ROUTE_STREAM, 1}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t k = strlen(routes[i].prefix);
        if (n < k || memcmp(p, routes[i].prefix, k))
            continue;
        if (!routes[i].has_arg && n != k)
            continue;
        *arg = p + k;
        *alen = n - k;
        return routes[i].route;
    }
    return ROUTE_ERROR;
}

/* The client: the last address in the trusted header when one is
 * configured and present (a proxy appends the address it saw), else
 * REMOTE_ADDR; "" when neither says. */
static void request_client(request *r, char *const *envp, const request_limits *lim) {
    const char *v = lim->client_param && *lim->client_param
                        ? request_param(envp, lim->client_param) : NULL;
    if (v) {
        const char *comma = strrchr(v, ',');
        v = comma ? comma + 1 : v;
        while (*v == ' ' || *v == '\t')
            v++;
    }
    if (!v || !*v)
        v = request_param(envp, "REMOTE_ADDR");
    size_t n = v ? strcspn(v, " \t") : 0;
    if (n > REQUEST_CLIENT_MAX)
        n = REQUEST_CLIENT_MAX;
    memcpy(r->clientbuf, v ? v : "", n);
    r->clientbuf[n] = '\0';
    r->client = r->clientbuf;
}

request_route request_parse(request *r, char *const *envp, const request_limits *lim) {
    size_t plen, alen = 0;
    const char *arg = NULL;
    memset(r, 0, sizeof *r);
    r->since = -1;
    r->method = request_param(envp, "REQUEST_METHOD");
    r->origin = request_param(envp, "HTTP_ORIGIN");
    if (!r->method)
        r->method = "GET";
    request_client(r, envp, lim);
    const char *auth = request_param(envp, "HTTP_AUTHORIZATION");
    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        r->bearer = auth + 7;
        while (*r->bearer == ' ')
            r->bearer++;
        request_keep_token(r, r->bearer, strlen(r->bearer), 0, REQUEST_TOKEN_BEARER);
    }
    const char *path = request_path(r, envp, &plen);
    r->route = request_route_of(path, plen, &arg, &alen);
    if (r->route == ROUTE_ERROR)
        return request_fail(r, 404, "not_found",
                            "routes: /sub/CHANNELS, /pub/CHANNEL, /v1/stream/NAME, /health, /stats, /metrics",
                            NULL);
    if (!strcmp(r->method, "OPTIONS")) {
        r->route = ROUTE_PREFLIGHT;
        return r->route;
    }
    if (r->route == ROUTE_STREAM)
        return request_stream_route(r, envp, arg, alen, lim);
    int is_get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
    int is_post = !strcmp(r->method, "POST") || !strcmp(r->method, "PUT");
    if (r->route == ROUTE_PUB ? !is_post : !is_get)
        return request_fail(r, 405, "method_not_allowed",
                            r->route == ROUTE_PUB ? "publish with POST" : "use GET", NULL);
    if (r->route == ROUTE_SUB || r->route == ROUTE_PUB) {
        if (request_channels(r, arg, alen, lim) == ROUTE_ERROR)
            return ROUTE_ERROR;
        if (r->route == ROUTE_PUB && r->nchannels != 1)
            return request_fail(r, 400, "bad_channel", "publish to exactly one channel",
                                NULL);
    }
    if (r->route == ROUTE_SUB)
        return request_sub(r, envp, lim);
    if (r->route == ROUTE_PUB)
        return request_pub(r, envp, lim);
    return r->route;
}
