/* fcgiclient.c -- FastCGI client side: request encoding, record parsing,
 * CGI answer splitting (see fcgiclient.h for the lifecycle).
 *
 * Wire format (FastCGI 1.0): every record is an 8-byte header -- version 1,
 * type, request id (2 bytes, big endian), content length (2 bytes), padding
 * length, reserved -- then content, then padding.  A request is
 * BEGIN_REQUEST, PARAMS records and an empty PARAMS, STDIN records and an
 * empty STDIN.  The answer is STDOUT/STDERR records (a stream: the CGI
 * headers may be split over records), optionally empty ones, then
 * END_REQUEST with appStatus and protocolStatus.
 *
 * The parser is a byte-driven state machine (header, content, padding) so a
 * record can arrive split at any byte, across any number of reads.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "fcgiclient.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fastcgi.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_ID 1
#define STDIN_CHUNK 65535u
#define PARAMS_CHUNK 65528u /* a multiple of 8: no padding on full records */
#define FEED_READ_MAX 65536

typedef struct {
    char *p;
    size_t len;
    size_t cap;
} bytes;

typedef struct {
    char *name;
    char *value;
} header;

typedef enum { REC_HEADER, REC_CONTENT, REC_PADDING } rec_state;

struct fcgi_conn {
    int fd;
    int connecting; /* non-blocking connect not yet confirmed */
    unsigned char *out;
    size_t out_len;
    size_t out_off;

    rec_state state;
    unsigned char hdr[FCGI_HEADER_LEN];
    size_t hdr_have;
    unsigned type;
    unsigned reqid;
    size_t content_left;
    size_t pad_left;
    unsigned char endbody[8];
    size_t end_have;

    bytes sout;
    bytes serr;
    int done;
    int app_status;
    int protocol_status;

    int status;
    header *hdrs;
    size_t nhdrs;
    size_t body_off;

    int err;  /* first read/parse error: the answer is lost */
    int werr; /* first write error: the answer may still arrive */
    char errmsg[160];
};

/* ---- small helpers ---------------------------------------------------- */

static int bytes_put(bytes *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static void conn_fail(fcgi_conn *c, int err, const char *what)
{
    if (c->err)
        return;
    c->err = err ? err : -EPROTO;
    snprintf(c->errmsg, sizeof c->errmsg, "%s", what);
}

static void conn_fail_errno(fcgi_conn *c, int err, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(-err));
    conn_fail(c, err, msg);
}

/* ---- params ----------------------------------------------------------- */

void fcgi_params_init(fcgi_params *p)
{
    memset(p, 0, sizeof *p);
}

void fcgi_params_free(fcgi_params *p)
{
    free(p->buf);
    memset(p, 0, sizeof *p);
}

static int params_reserve(fcgi_params *p, size_t more)
{
    if (p->oom)
        return -ENOMEM;
    if (p->len + more <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap : 512;
    while (cap < p->len + more)
        cap *= 2;
    unsigned char *nb = realloc(p->buf, cap);
    if (!nb) {
        p->oom = 1;
        return -ENOMEM;
    }
    p->buf = nb;
    p->cap = cap;
    return 0;
}

static size_t params_put_len(unsigned char *d, size_t n)
{
    if (n < 128) {
        d[0] = (unsigned char)n;
        return 1;
    }
    d[0] = (unsigned char)(((n >> 24) & 0x7f) | 0x80);
    d[1] = (unsigned char)(n >> 16);
    d[2] = (unsigned char)(n >> 8);
    d[3] = (unsigned char)n;
    return 4;
}

int fcgi_params_addn(fcgi_params *p, const char *name, size_t nlen,
                     const char *value, size_t vlen)
{
    if (nlen > 0x7fffffffu || vlen > 0x7fffffffu)
        return -EINVAL;
    int rc = params_reserve(p, 8 + nlen + vlen);
    if (rc)
        return rc;
    p->len += params_put_len(p->buf + p->len, nlen);
    p->len += params_put_len(p->buf + p->len, vlen);
    memcpy(p->buf + p->len, name, nlen);
    p->len += nlen;
    if (vlen)
        memcpy(p->buf + p->len, value, vlen);
    p->len += vlen;
    return 0;
}

int fcgi_params_add(fcgi_params *p, const char *name, const char *value)
{
    return fcgi_params_addn(p, name, strlen(name), value, strlen(value));
}

/* Decode one length at *pos; returns 0 or -1 when truncated. */
static int params_get_len(const fcgi_params *p, size_t *pos, size_t *n)
{
    if (*pos >= p->len)
        return -1;
    const unsigned char *s = p->buf + *pos;
    if (s[0] < 128) {
        *n = s[0];
        *pos += 1;
        return 0;
    }
    if (*pos + 4 > p->len)
        return -1;
    *n = ((size_t)(s[0] & 0x7f) << 24) | ((size_t)s[1] << 16) | ((size_t)s[2] << 8) | s[3];
    *pos += 4;
    return 0;
}

const char *fcgi_params_find(const fcgi_params *p, const char *name, size_t *vlen)
{
    size_t want = strlen(name), pos = 0, nl, vl;
    while (pos < p->len) {
        if (params_get_len(p, &pos, &nl) || params_get_len(p, &pos, &vl))
            return NULL;
        if (pos + nl + vl > p->len)
            return NULL;
        if (nl == want && memcmp(p->buf + pos, name, nl) == 0) {
            if (vlen)
                *vlen = vl;
            return (const char *)p->buf + pos + nl;
        }
        pos += nl + vl;
    }
    return NULL;
}

/* Add name=value[0..vlen) unless p already has name. */
static int params_default(fcgi_params *p, const char *name, const char *value, size_t vlen)
{
    if (fcgi_params_find(p, name, NULL))
        return 0;
    return fcgi_params_addn(p, name, strlen(name), value, vlen);
}

static int params_default_s(fcgi_params *p, const char *name, const char *value)
{
    return params_default(p, name, value, strlen(value));
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a new string (malformed escapes kept as-is). */
static char *url_decode(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
            (lo = hexval((unsigned char)s[i + 2])) >= 0) {
            d[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    return d;
}

/* Add the variable for one "Name: value" header. */
static int params_add_header(fcgi_params *p, const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return -EINVAL;
    size_t nlen = (size_t)(colon - h);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vlen = strlen(v);
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    if (nlen == 14 && strncasecmp(h, "Content-Length", 14) == 0)
        return 0;
    if (nlen == 12 && strncasecmp(h, "Content-Type", 12) == 0)
        return params_default(p, "CONTENT_TYPE", v, vlen);
    if (nlen > 200)
        return -EINVAL;
    char name[208] = "HTTP_";
    for (size_t i = 0; i < nlen; i++) {
        unsigned char ch = (unsigned char)h[i];
        name[5 + i] = ch == '-' ? '_' : (char)toupper(ch);
    }
    name[5 + nlen] = '\0';
    return params_default(p, name, v, vlen);
}

static int params_add_uri(fcgi_params *p, const char *uri, const char *script)
{
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    char *path = url_decode(uri, plen);
    if (!path)
        return -ENOMEM;
    size_t rlen = strlen(script) + strlen(uri) + 1;
    char *ruri = malloc(rlen), *duri = malloc(rlen);
    int rc = ruri && duri ? 0 : -ENOMEM;
    if (rc == 0) {
        snprintf(ruri, rlen, "%s%s", script, uri);
        snprintf(duri, rlen, "%s%s", script, path);
        rc = params_default_s(p, "PATH_INFO", path);
    }
    rc = rc ? rc : params_default_s(p, "QUERY_STRING", q ? q + 1 : "");
    rc = rc ? rc : params_default_s(p, "REQUEST_URI", ruri);
    rc = rc ? rc : params_default_s(p, "DOCUMENT_URI", duri);
    rc = rc ? rc : params_default_s(p, "SCRIPT_NAME", script);
    rc = rc ? rc : params_default_s(p, "SCRIPT_FILENAME", "/hf-fcgi/holdfast.fcgi");
    free(path);
    free(ruri);
    free(duri);
    return rc;
}

int fcgi_params_add_http(fcgi_params *p, const fcgi_http_request *rq)
{
    if (!rq->uri)
        return -EINVAL;
    int rc = 0;
    for (size_t i = 0; i < rq->nheaders && rc == 0; i++)
        rc = params_add_header(p, rq->headers[i]);
    if (rc == 0 && rq->has_body) {
        char cl[32];
        snprintf(cl, sizeof cl, "%zu", rq->body_len);
        rc = params_default_s(p, "CONTENT_LENGTH", cl);
    }
    rc = rc ? rc : params_add_uri(p, rq->uri, rq->script_name ? rq->script_name : "");
    rc = rc ? rc : params_default_s(p, "REQUEST_METHOD", rq->method ? rq->method : "GET");
    static const char *const fixed[][2] = {
        {"GATEWAY_INTERFACE", "CGI/1.1"}, {"SERVER_PROTOCOL", "HTTP/1.1"},
        {"SERVER_SOFTWARE", "hf-fcgi"},   {"SERVER_NAME", "localhost"},
        {"SERVER_ADDR", "127.0.0.1"},     {"SERVER_PORT", "80"},
        {"REMOTE_ADDR", "127.0.0.1"},     {"REMOTE_PORT", "40000"},
        {"HTTP_HOST", "localhost"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && rc == 0; i++)
        rc = params_default_s(p, fixed[i][0], fixed[i][1]);
    if (rc == 0 && p->oom)
        rc = -ENOMEM;
    return rc;
}

/* ---- addresses -------------------------------------------------------- */

static int addr_parse_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un->sun_path)
        return -EINVAL;
    memset(ss, 0, sizeof *ss);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

static int addr_parse_port(const char *s, unsigned *port)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > 65535)
        return -EINVAL;
    *port = (unsigned)v;
    return 0;
}

static int addr_parse_ip(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    unsigned port;
    if (!colon || addr_parse_port(colon + 1, &port))
        return -EINVAL;
    size_t hlen = (size_t)(colon - addr);
    if (hlen >= sizeof host)
        return -EINVAL;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    memset(ss, 0, sizeof *ss);
    if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -EINVAL;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (hlen == 0 || strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -EINVAL;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return 0;
}

int fcgi_addr_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return addr_parse_unix(addr + 5, ss, len);
    if (addr[0] == '/' || addr[0] == '.')
        return addr_parse_unix(addr, ss, len);
    return addr_parse_ip(addr, ss, len);
}

int fcgi_addr_is_local(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_UNIX)
        return 1;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
    }
    return 0;
}

/* ---- request encoding -------------------------------------------------- */

static void rec_header(unsigned char *d, unsigned type, size_t clen, unsigned pad)
{
    d[0] = FCGI_VERSION_1;
    d[1] = (unsigned char)type;
    d[2] = (unsigned char)(REQUEST_ID >> 8);
    d[3] = (unsigned char)REQUEST_ID;
    d[4] = (unsigned char)(clen >> 8);
    d[5] = (unsigned char)clen;
    d[6] = (unsigned char)pad;
    d[7] = 0;
}

/* Append the stream s[0..n) as records of type (each at most chunk bytes,
 * padded to 8), then the empty record that ends the stream. */
static size_t rec_stream(unsigned char *d, unsigned type, const unsigned char *s,
                         size_t n, size_t chunk)
{
    size_t at = 0, off = 0;
    while (off < n) {
        size_t clen = n - off < chunk ? n - off : chunk;
        unsigned pad = (unsigned)((8 - clen % 8) % 8);
        rec_header(d + at, type, clen, pad);
        memcpy(d + at + FCGI_HEADER_LEN, s + off, clen);
        memset(d + at + FCGI_HEADER_LEN + clen, 0, pad);
        at += FCGI_HEADER_LEN + clen + pad;
        off += clen;
    }
    rec_header(d + at, type, 0, 0);
    return at + FCGI_HEADER_LEN;
}

static size_t stream_size(size_t n, size_t chunk)
{
    size_t records = (n + chunk - 1) / chunk + 1;
    return records * (FCGI_HEADER_LEN + 8) + n;
}

static int conn_encode(fcgi_conn *c, const fcgi_params *p, const void *body, size_t blen)
{
    size_t cap = 16 + stream_size(p->len, PARAMS_CHUNK) + stream_size(blen, STDIN_CHUNK);
    c->out = malloc(cap);
    if (!c->out)
        return -ENOMEM;
    unsigned char *d = c->out;
    rec_header(d, FCGI_BEGIN_REQUEST, 8, 0);
    memset(d + FCGI_HEADER_LEN, 0, 8);
    d[FCGI_HEADER_LEN + 1] = FCGI_RESPONDER; /* roleB0; flags 0 */
    size_t at = 16;
    at += rec_stream(d + at, FCGI_PARAMS, p->buf, p->len, PARAMS_CHUNK);
    at += rec_stream(d + at, FCGI_STDIN, body, blen, STDIN_CHUNK);
    c->out_len = at;
    return 0;
}

/* ---- connections ------------------------------------------------------ */

static int conn_socket(const struct sockaddr_storage *ss, socklen_t slen, int *connecting)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (ss->ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    *connecting = 0;
    if (connect(fd, (const struct sockaddr *)ss, slen) < 0) {
        int e = errno;
        if (e != EINPROGRESS) {
            close(fd);
            return -e;
        }
        *connecting = 1;
    }
    return fd;
}

int fcgi_conn_start(fcgi_conn **out, const char *addr, const fcgi_params *params,
                    const void *body, size_t body_len)
{
    struct sockaddr_storage ss;
    socklen_t slen;
    *out = NULL;
    if (params->oom)
        return -ENOMEM;
    int rc = fcgi_addr_parse(addr, &ss, &slen);
    if (rc)
        return rc;
    fcgi_conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    rc = conn_encode(c, params, body, body_len);
    if (rc == 0) {
        c->fd = conn_socket(&ss, slen, &c->connecting);
        rc = c->fd < 0 ? c->fd : 0;
    }
    if (rc == 0 && !c->connecting)
        rc = fcgi_conn_flush(c);
    if (rc && !c->werr) {
        fcgi_conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

fcgi_conn *fcgi_conn_detached(void)
{
    fcgi_conn *c = calloc(1, sizeof *c);
    if (c)
        c->fd = -1;
    return c;
}

int fcgi_conn_fd(const fcgi_conn *c)
{
    return c->fd;
}

int fcgi_conn_want_write(const fcgi_conn *c)
{
    return (c->out_off < c->out_len || c->connecting) && !c->werr && !c->err;
}

int fcgi_conn_flush(fcgi_conn *c)
{
    if (c->werr || c->err)
        return c->werr ? c->werr : c->err;
    if (c->connecting) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            conn_fail_errno(c, -soerr, "connect"); /* nothing can arrive */
            return -soerr;
        }
        c->connecting = 0;
    }
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
                return 0;
            c->werr = -errno;
            return c->werr;
        }
        c->out_off += (size_t)n;
    }
    return 0;
}

void fcgi_conn_free(fcgi_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->out);
    free(c->sout.p);
    free(c->serr.p);
    free(c->hdrs);
    free(c);
}

/* ---- the CGI answer ---------------------------------------------------- */

/* Find the end of the header block in s[0..n): the offset of the body, or 0
 * if there is no blank line. */
static size_t cgi_header_end(const char *s, size_t n)
{
    size_t line = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\n')
            continue;
        size_t llen = i - line;
        if (llen == 0 || (llen == 1 && s[line] == '\r'))
            return i + 1;
        line = i + 1;
    }
    return 0;
}

static int cgi_header_add(fcgi_conn *c, char *line)
{
    char *colon = strchr(line, ':');
    if (!colon)
        return 0; /* not a header: skip it, as web servers do */
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    header *h = realloc(c->hdrs, (c->nhdrs + 1) * sizeof *h);
    if (!h)
        return -ENOMEM;
    c->hdrs = h;
    c->hdrs[c->nhdrs].name = line;
    c->hdrs[c->nhdrs].value = v;
    c->nhdrs++;
    return 0;
}

/* Split STDOUT into headers (NUL-terminated in place) and body. */
static int cgi_parse(fcgi_conn *c)
{
    if (!c->sout.p && bytes_put(&c->sout, "", 0))
        return -ENOMEM;
    size_t end = cgi_header_end(c->sout.p, c->sout.len);
    if (end == 0)
        return 0; /* status stays 0, the body is everything */
    c->body_off = end;
    char *s = c->sout.p;
    size_t line = 0;
    for (size_t i = 0; i < end; i++) {
        if (s[i] != '\n')
            continue;
        s[i] = '\0';
        if (i > line && s[i - 1] == '\r')
            s[i - 1] = '\0';
        if (s[line] && cgi_header_add(c, s + line))
            return -ENOMEM;
        line = i + 1;
    }
    const char *st = fcgi_conn_header(c, "Status");
    if (st)
        c->status = atoi(st);
    else
        c->status = fcgi_conn_header(c, "Location") ? 302 : 200;
    return 0;
}

/* ---- record parsing ----------------------------------------------------- */

static void rec_begin(fcgi_conn *c)
{
    const unsigned char *h = c->hdr;
    c->type = h[1];
    c->reqid = ((unsigned)h[2] << 8) | h[3];
    c->content_left = ((size_t)h[4] << 8) | h[5];
    c->pad_left = h[6];
    c->end_have = 0;
    if (h[0] != FCGI_VERSION_1)
        conn_fail(c, -EPROTO, "bad record: version is not 1");
    else if (c->type == FCGI_END_REQUEST && c->reqid == REQUEST_ID && c->content_left < 8)
        conn_fail(c, -EPROTO, "bad record: END_REQUEST shorter than 8 bytes");
}

static void rec_end(fcgi_conn *c)
{
    c->state = REC_HEADER;
    c->hdr_have = 0;
    if (c->type != FCGI_END_REQUEST || c->reqid != REQUEST_ID)
        return;
    const unsigned char *b = c->endbody;
    c->app_status = (int)(((unsigned)b[0] << 24) | ((unsigned)b[1] << 16) |
                          ((unsigned)b[2] << 8) | b[3]);
    c->protocol_status = b[4];
    c->done = 1;
    if (cgi_parse(c))
        conn_fail(c, -ENOMEM, "out of memory");
}

static void rec_content(fcgi_conn *c, const unsigned char *s, size_t n)
{
    if (c->reqid != REQUEST_ID)
        return;
    bytes *dst = NULL;
    if (c->type == FCGI_STDOUT)
        dst = &c->sout;
    else if (c->type == FCGI_STDERR)
        dst = &c->serr;
    if (dst) {
        if (dst->len + n > FCGI_CLIENT_MAX_OUTPUT)
            conn_fail(c, -EFBIG, "answer larger than FCGI_CLIENT_MAX_OUTPUT");
        else if (bytes_put(dst, s, n))
            conn_fail(c, -ENOMEM, "out of memory");
    } else if (c->type == FCGI_END_REQUEST) {
        for (size_t i = 0; i < n && c->end_have < sizeof c->endbody; i++)
            c->endbody[c->end_have++] = s[i];
    }
}

/* Consume bytes of s for the current state; returns how many. */
static size_t rec_step(fcgi_conn *c, const unsigned char *s, size_t n)
{
    size_t take;
    switch (c->state) {
    case REC_HEADER:
        take = FCGI_HEADER_LEN - c->hdr_have;
        take = take < n ? take : n;
        memcpy(c->hdr + c->hdr_have, s, take);
        c->hdr_have += take;
        if (c->hdr_have == FCGI_HEADER_LEN) {
            rec_begin(c);
            c->state = REC_CONTENT;
        }
        break;
    case REC_CONTENT:
        take = c->content_left < n ? c->content_left : n;
        rec_content(c, s, take);
        c->content_left -= take;
        break;
    case REC_PADDING:
    default:
        take = c->pad_left < n ? c->pad_left : n;
        c->pad_left -= take;
        break;
    }
    if (c->state == REC_CONTENT && c->content_left == 0)
        c->state = REC_PADDING;
    if (c->state == REC_PADDING && c->pad_left == 0 && !c->err)
        rec_end(c);
    return take;
}

fcgi_conn_result fcgi_conn_feed(fcgi_conn *c, const void *buf, size_t n)
{
    const unsigned char *s = buf;
    if (c->err && !c->done)
        return FCGI_CONN_ERROR;
    if (n == 0 && !c->done) {
        conn_fail(c, -ECONNABORTED, "connection closed before END_REQUEST");
        return FCGI_CONN_ERROR;
    }
    while (n > 0 && !c->done && !c->err) {
        size_t used = rec_step(c, s, n);
        s += used;
        n -= used;
    }
    if (c->done)
        return FCGI_CONN_DONE;
    return c->err ? FCGI_CONN_ERROR : FCGI_CONN_MORE;
}

fcgi_conn_result fcgi_conn_pump(fcgi_conn *c)
{
    unsigned char buf[FEED_READ_MAX];
    for (int i = 0; i < 1024; i++) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return c->done ? FCGI_CONN_DONE : FCGI_CONN_MORE;
        if (n < 0) {
            conn_fail_errno(c, -errno, "read");
            return c->done ? FCGI_CONN_DONE : FCGI_CONN_ERROR;
        }
        fcgi_conn_result r = fcgi_conn_feed(c, buf, (size_t)n);
        if (r != FCGI_CONN_MORE)
            return r;
    }
    return FCGI_CONN_MORE; /* more to read: the caller polls again */
}

/* ---- blocking helpers ---------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on c's fd until the absolute deadline (< 0 = none);
 * returns the poll revents, or 0 on timeout. */
static int conn_wait(fcgi_conn *c, short events, int64_t deadline)
{
    for (;;) {
        int tmo = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return 0;
            tmo = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int n = poll(&pfd, 1, tmo);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return POLLERR;
        if (n > 0)
            return pfd.revents;
    }
}

int fcgi_conn_send_wait(fcgi_conn *c, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    while (fcgi_conn_want_write(c)) {
        if (!conn_wait(c, POLLOUT, deadline))
            return -ETIMEDOUT;
        int rc = fcgi_conn_flush(c);
        if (rc)
            return rc;
    }
    return c->err ? c->err : c->werr;
}

int fcgi_call(fcgi_conn **out, const char *addr, const fcgi_params *params,
              const void *body, size_t body_len, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    int rc = fcgi_conn_start(out, addr, params, body, body_len);
    if (rc)
        return rc;
    fcgi_conn *c = *out;
    for (;;) {
        short ev = (short)(POLLIN | (fcgi_conn_want_write(c) ? POLLOUT : 0));
        int re = conn_wait(c, ev, deadline);
        if (!re) {
            conn_fail(c, -ETIMEDOUT, "timed out waiting for the answer");
            return -ETIMEDOUT;
        }
        if (re & POLLOUT) {
            fcgi_conn_flush(c); /* a write error leaves the answer to read */
            if (c->err)
                return c->err;
        }
        if (re & (POLLIN | POLLHUP | POLLERR)) {
            fcgi_conn_result r = fcgi_conn_pump(c);
            if (r == FCGI_CONN_DONE)
                return 0;
            if (r == FCGI_CONN_ERROR)
                return c->err;
        }
    }
}

/* ---- accessors ---------------------------------------------------------- */

int fcgi_conn_done(const fcgi_conn *c)
{
    return c->done;
}

int fcgi_conn_status(const fcgi_conn *c)
{
    return c->status;
}

size_t fcgi_conn_header_count(const fcgi_conn *c)
{
    return c->nhdrs;
}

void fcgi_conn_header_at(const fcgi_conn *c, size_t i, const char **name, const char **value)
{
    *name = c->hdrs[i].name;
    *value = c->hdrs[i].value;
}

const char *fcgi_conn_header(const fcgi_conn *c, const char *name)
{
    for (size_t i = 0; i < c->nhdrs; i++)
        if (strcasecmp(c->hdrs[i].name, name) == 0)
            return c->hdrs[i].value;
    return NULL;
}

const char *fcgi_conn_body(const fcgi_conn *c, size_t *len)
{
    if (!c->sout.p) {
        *len = 0;
        return "";
    }
    *len = c->sout.len - c->body_off;
    return c->sout.p + c->body_off;
}

const char *fcgi_conn_stderr(const fcgi_conn *c, size_t *len)
{
    *len = c->serr.len;
    return c->serr.p ? c->serr.p : "";
}

int fcgi_conn_app_status(const fcgi_conn *c)
{
    return c->app_status;
}

int fcgi_conn_protocol_status(const fcgi_conn *c)
{
    return c->protocol_status;
}

int fcgi_conn_error(const fcgi_conn *c)
{
    return c->err ? c->err : c->werr;
}

const char *fcgi_conn_errmsg(const fcgi_conn *c)
{
    if (c->err)
        return c->errmsg;
    return c->werr ? strerror(-c->werr) : "";
}
