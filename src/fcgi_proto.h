/* fcgi_proto.h -- the FastCGI wire format (see fcgi_proto.c): an
 * incremental, pure reader of one request's records, and the writer of the
 * records that carry an answer.
 *
 * Lifecycle: fcgi_proto_init(), then fcgi_proto_feed() with the bytes as
 * they arrive until it returns FCGI_PROTO_DONE (or ABORT / ERROR), reading
 * p->envp after FCGI_PROTO_PARAMS; anything appended to p->reply is for
 * the web server (answers to management records); fcgi_proto_free().
 * No I/O and no global state, so it can be unit-tested and fuzzed.
 */
#ifndef HOLDFAST_FCGI_PROTO_H
#define HOLDFAST_FCGI_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define FCGI_PROTO_MAX_PARAMS 512 /* name-value pairs kept per request */

typedef enum {
    FCGI_PROTO_MORE = 0, /* every byte given was consumed: feed more */
    FCGI_PROTO_PARAMS,   /* the params are complete: envp is ready (once) */
    FCGI_PROTO_DONE,     /* the request's stdin is complete: it is whole */
    FCGI_PROTO_ABORT,    /* the web server gave up on the request */
    FCGI_PROTO_ERROR     /* not FastCGI as we speak it: `error` says why */
} fcgi_proto_event;

typedef struct {
    /* limits (from fcgi_proto_init) */
    size_t max_params; /* bytes of encoded name-value pairs */
    size_t max_body;   /* stdin bytes kept in body */
    /* the request, as far as it has arrived */
    int begun;         /* FCGI_BEGIN_REQUEST seen: reqid is valid */
    uint16_t reqid;
    int keep_conn;     /* FCGI_KEEP_CONN: the web server keeps the connection */
    char **envp;       /* "NAME=value" strings, NULL-terminated, after PARAMS */
    size_t nenv;
    int params_over;   /* the params passed max_params: envp is empty */
    buf body;          /* the first max_body bytes of stdin */
    uint64_t stdin_len; /* every stdin byte seen, kept or not */
    int body_over;     /* stdin_len > max_body */
    int params_done, stdin_done, aborted;
    buf reply;         /* records to send back (management answers) */
    const char *error; /* with FCGI_PROTO_ERROR */
    /* private: the record being read */
    unsigned char hdr[8];
    size_t hdr_have;
    int type;
    uint16_t rec_id;
    size_t content_left, padding_left;
    buf rec;           /* content of a BEGIN / management record */
    buf params;        /* raw PARAMS stream, then the decoded strings */
} fcgi_proto;

/* Ready a reader for one request with these limits. */
void fcgi_proto_init(fcgi_proto *p, size_t max_params, size_t max_body);

/* Release everything the reader holds (envp and body included). */
void fcgi_proto_free(fcgi_proto *p);

/* Consume data[0..len) up to the next event; *used says how many bytes
 * were taken (all of them with FCGI_PROTO_MORE).  After DONE, ABORT or
 * ERROR the reader takes nothing more: bytes left over belong to whatever
 * the web server sends next. */
fcgi_proto_event fcgi_proto_feed(fcgi_proto *p, const unsigned char *data, size_t len,
                                 size_t *used);

/* Append FCGI_STDOUT records carrying data[0..len) for request `reqid`
 * (none when len is 0): part of an answer still going on (a stream). */
void fcgi_proto_stdout(buf *out, uint16_t reqid, const char *data, size_t len);

/* Append the records that carry a CGI-style response for request `reqid`:
 * FCGI_STDOUT records, the empty FCGI_STDOUT, FCGI_END_REQUEST. */
void fcgi_proto_frame(buf *out, uint16_t reqid, const char *data, size_t len);

#endif
