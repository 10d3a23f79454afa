/* fcgiclient.h -- a small FastCGI client for tests and benchmarks: encode one
 * responder request, parse the records that come back, split the CGI answer.
 *
 * Blocking use:
 *   fcgi_params_init(&p); fcgi_params_add_http(&p, &rq);   build the params
 *   fcgi_call(&c, addr, &p, body, len, timeout_ms);        send, wait, parse
 *   fcgi_conn_status(c), fcgi_conn_header(c, "X"), fcgi_conn_body(c, &n)
 *   fcgi_conn_free(c); fcgi_params_free(&p);
 *
 * Asynchronous use (the caller owns the event loop, e.g. epoll):
 *   fcgi_conn_start(&c, addr, &p, body, len)  non-blocking connect, first write
 *   while fcgi_conn_want_write(c): on EPOLLOUT call fcgi_conn_flush(c)
 *   on EPOLLIN: n = read(fcgi_conn_fd(c), ...); fcgi_conn_feed(c, buf, n)
 *               (n == 0 means EOF) until it returns FCGI_CONN_DONE or _ERROR
 *   the accessors, then fcgi_conn_free(c)
 *
 * One request per connection, request id 1, BEGIN_REQUEST flags 0 (no
 * FCGI_KEEP_CONN): the server closes the connection after END_REQUEST, as
 * with nginx's default and lighttpd.  The record parser accepts records split
 * at any byte, padding, management records (id 0) and records of other ids
 * (ignored).  Nothing here needs libfcgi; fastcgi.h only supplies constants.
 */
#ifndef HOLDFAST_FCGICLIENT_H
#define HOLDFAST_FCGICLIENT_H

#include <stddef.h>
#include <sys/socket.h>

/* Largest STDOUT or STDERR a connection collects before it gives up. */
#define FCGI_CLIENT_MAX_OUTPUT (64u * 1024u * 1024u)

/* Encoded FastCGI name-value pairs (the body of the PARAMS stream). */
typedef struct {
    unsigned char *buf;
    size_t len;
    size_t cap;
    int oom; /* set when growing failed; later adds are ignored */
} fcgi_params;

/* What a web server would know about an HTTP request, for
 * fcgi_params_add_http().  Every pointer may be NULL unless noted. */
typedef struct {
    const char *method;          /* NULL = "GET" */
    const char *uri;             /* required: PATH_INFO[?QUERY_STRING] */
    const char *script_name;     /* the mount point; NULL = "" */
    const char *const *headers;  /* nheaders strings "Name: value" */
    size_t nheaders;
    int has_body;                /* 1 = send CONTENT_LENGTH = body_len */
    size_t body_len;
} fcgi_http_request;

typedef enum {
    FCGI_CONN_ERROR = -1, /* see fcgi_conn_error() / fcgi_conn_errmsg() */
    FCGI_CONN_MORE = 0,   /* feed more bytes */
    FCGI_CONN_DONE = 1    /* END_REQUEST seen; the response is parsed */
} fcgi_conn_result;

typedef struct fcgi_conn fcgi_conn;

/* ---- params ---------------------------------------------------------- */

/* Start an empty list (no allocation until the first add). */
void fcgi_params_init(fcgi_params *p);

/* Release the buffer; the list may be initialised again. */
void fcgi_params_free(fcgi_params *p);

/* Append one pair; lengths above 127 use the 4-byte encoding.  Returns 0 or
 * -ENOMEM (then p->oom stays set), -EINVAL for a length >= 2^31. */
int fcgi_params_addn(fcgi_params *p, const char *name, size_t nlen,
                     const char *value, size_t vlen);

/* fcgi_params_addn() for NUL-terminated strings. */
int fcgi_params_add(fcgi_params *p, const char *name, const char *value);

/* The value of the first pair called name (exact, case-sensitive), not
 * NUL-terminated, with its length in *vlen; NULL if absent.  The pointer
 * lives as long as p is not changed. */
const char *fcgi_params_find(const fcgi_params *p, const char *name, size_t *vlen);

/* Add the CGI variables a web server sends for rq: GATEWAY_INTERFACE,
 * SERVER_PROTOCOL, SERVER_SOFTWARE, SERVER_NAME, SERVER_ADDR, SERVER_PORT,
 * REMOTE_ADDR, REMOTE_PORT, HTTP_HOST, REQUEST_METHOD, REQUEST_URI (raw),
 * DOCUMENT_URI, SCRIPT_NAME, SCRIPT_FILENAME, PATH_INFO (percent-decoded, as
 * nginx and lighttpd pass it), QUERY_STRING (raw, "" if none),
 * CONTENT_LENGTH (if rq->has_body),
 * CONTENT_TYPE (from a "Content-Type:" header) and HTTP_<NAME> for every
 * other header (upper case, '-' -> '_'; a "Content-Length:" header is
 * dropped, the length comes from body_len).  A variable that p already
 * holds is not added again, so add overrides first.  Returns 0, -ENOMEM or
 * -EINVAL (no uri, or a header without ':'). */
int fcgi_params_add_http(fcgi_params *p, const fcgi_http_request *rq);

/* ---- addresses ------------------------------------------------------- */

/* Parse "unix:/path", "/path" or "./path" (AF_UNIX), "A.B.C.D:port",
 * "localhost:port", ":port" (127.0.0.1) or "[v6]:port".  No name lookup.
 * Returns 0 or -EINVAL. */
int fcgi_addr_parse(const char *addr, struct sockaddr_storage *ss, socklen_t *len);

/* 1 if the parsed address is a unix socket or a loopback IP, else 0. */
int fcgi_addr_is_local(const struct sockaddr_storage *ss);

/* ---- connections ----------------------------------------------------- */

/* Open a non-blocking connection to addr, encode the whole request
 * (BEGIN_REQUEST, PARAMS, empty PARAMS, STDIN in records of at most 65535
 * bytes, empty STDIN) and write as much as the socket takes.  body may be
 * NULL when body_len is 0.  On success *out owns the fd; the caller frees it
 * with fcgi_conn_free().  Returns 0, or a negative errno with *out = NULL
 * (-ECONNREFUSED, -ENOENT for a missing unix socket, -EAGAIN for a full unix
 * backlog, -EINVAL for a bad address, -ENOMEM). */
int fcgi_conn_start(fcgi_conn **out, const char *addr, const fcgi_params *params,
                    const void *body, size_t body_len);

/* A connection object with no socket (fd -1, nothing to write), to replay
 * recorded answer bytes through fcgi_conn_feed(): for parser tests.
 * Returns NULL when out of memory; free with fcgi_conn_free(). */
fcgi_conn *fcgi_conn_detached(void);

/* The connection's socket, for the caller's poll/epoll set. */
int fcgi_conn_fd(const fcgi_conn *c);

/* 1 while request bytes remain to be written (wait for POLLOUT), else 0. */
int fcgi_conn_want_write(const fcgi_conn *c);

/* Write pending request bytes after POLLOUT (this also completes a
 * non-blocking connect).  Returns 0 (possibly with bytes still pending) or
 * a negative errno, which is also kept for fcgi_conn_error().  A peer that
 * closes early may have answered already: keep reading after an -EPIPE. */
int fcgi_conn_flush(fcgi_conn *c);

/* Feed n bytes read from the socket; n == 0 means EOF.  Returns
 * FCGI_CONN_DONE once END_REQUEST for our request has arrived (further
 * bytes are ignored), FCGI_CONN_MORE while it has not, FCGI_CONN_ERROR on a
 * malformed record (-EPROTO), output over FCGI_CLIENT_MAX_OUTPUT (-EFBIG)
 * or EOF before END_REQUEST (-ECONNABORTED).  Errors are sticky. */
fcgi_conn_result fcgi_conn_feed(fcgi_conn *c, const void *buf, size_t n);

/* Read everything the non-blocking socket has now and feed it.  Returns as
 * fcgi_conn_feed(); a read error is FCGI_CONN_ERROR. */
fcgi_conn_result fcgi_conn_pump(fcgi_conn *c);

/* Blocking: write the whole request, waiting up to timeout_ms (< 0 = no
 * limit).  Returns 0, -ETIMEDOUT or the write error. */
int fcgi_conn_send_wait(fcgi_conn *c, int timeout_ms);

/* Blocking request: start, send, read until END_REQUEST or timeout_ms
 * (< 0 = no limit) for the whole exchange.  Returns 0 with *out done,
 * -ETIMEDOUT, -ECONNABORTED (EOF before END_REQUEST), -EPROTO (malformed
 * record), -EFBIG (output too large) or another connection errno.  *out is set whenever a connection was made, even on
 * error (partial output and fcgi_conn_errmsg() stay readable); the caller
 * always calls fcgi_conn_free(*out). */
int fcgi_call(fcgi_conn **out, const char *addr, const fcgi_params *params,
              const void *body, size_t body_len, int timeout_ms);

/* Close the socket and free everything; NULL is a no-op. */
void fcgi_conn_free(fcgi_conn *c);

/* ---- the answer (valid once fcgi_conn_feed() returned DONE) ----------- */

/* 1 after END_REQUEST, else 0. */
int fcgi_conn_done(const fcgi_conn *c);

/* The HTTP status: the Status: header, else 302 with a Location:, else
 * 200; 0 if the STDOUT had no header block ending in a blank line. */
int fcgi_conn_status(const fcgi_conn *c);

/* Number of CGI headers (the Status: header included) and the i-th one;
 * name and value are NUL-terminated, owned by c. */
size_t fcgi_conn_header_count(const fcgi_conn *c);
void fcgi_conn_header_at(const fcgi_conn *c, size_t i, const char **name,
                         const char **value);

/* Value of the first header called name (case-insensitive), or NULL. */
const char *fcgi_conn_header(const fcgi_conn *c, const char *name);

/* The body after the header block (all of STDOUT if it had none), its length
 * in *len; NUL-terminated, owned by c. */
const char *fcgi_conn_body(const fcgi_conn *c, size_t *len);

/* Everything received on STDERR (NUL-terminated), its length in *len. */
const char *fcgi_conn_stderr(const fcgi_conn *c, size_t *len);

/* appStatus and protocolStatus from END_REQUEST. */
int fcgi_conn_app_status(const fcgi_conn *c);
int fcgi_conn_protocol_status(const fcgi_conn *c);

/* The first error (negative errno, 0 if none) and a description of it. */
int fcgi_conn_error(const fcgi_conn *c);
const char *fcgi_conn_errmsg(const fcgi_conn *c);

#endif
