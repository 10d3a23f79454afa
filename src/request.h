/* request.h -- turn a CGI/FastCGI parameter set into a validated request.
 *
 * Pure: no I/O, no allocation beyond the struct, so it can be unit-tested
 * and fuzzed.  request_parse() either fills a route with its fields, or sets
 * route = ROUTE_ERROR with the HTTP status and a message for reply.c.
 */
#ifndef HOLDFAST_REQUEST_H
#define HOLDFAST_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "dsproto.h"
#include "msglog.h"
#include "token.h"

#define REQUEST_MAX_CHANNELS 64
#define REQUEST_TOKEN_MAX 200 /* idempotency key, compaction key */
#define REQUEST_CLIENT_MAX 63 /* bytes of a client address kept */

typedef enum {
    ROUTE_ERROR = 0,
    ROUTE_SUB,
    ROUTE_PUB,
    ROUTE_HEALTH,
    ROUTE_STATS,
    ROUTE_METRICS,
    ROUTE_STREAM,   /* /v1/stream/NAME: the Durable Streams protocol */
    ROUTE_PREFLIGHT /* OPTIONS on any route */
} request_route;

/* How a subscriber is answered.  FORMAT_DS_POLL and FORMAT_DS_SSE are a
 * durable stream's live reads (streams.c). */
typedef enum {
    FORMAT_JSON = 0,
    FORMAT_RAW,
    FORMAT_SSE,
    FORMAT_DS_POLL,
    FORMAT_DS_SSE
} request_format;

/* A Durable Streams request's fields, each checked (400 otherwise). */
typedef struct {
    char name[DSPROTO_NAME_MAX + 1];
    dsproto_offset offset; /* DSPROTO_OFFSET_START when absent */
    int64_t pos;           /* with DSPROTO_OFFSET_AT */
    int live;              /* 0, or FORMAT_DS_POLL / FORMAT_DS_SSE */
    int64_t cursor;        /* the echoed Stream-Cursor, -1: none */
    int64_t ttl_s, expires_ms; /* -1: none */
    int closed;            /* Stream-Closed: true */
    const char *seq;       /* Stream-Seq */
    const char *pid;       /* Producer-Id (with pepoch, pseq), NULL: none */
    int64_t pepoch, pseq;
    char fork_from[DSPROTO_NAME_MAX + 1]; /* "" when not a fork */
    int64_t fork_at;       /* -1: the source's tail */
    int64_t fork_sub;
    const char *if_none_match;
    const char *script;    /* SCRIPT_NAME: where holdfast is mounted, "" if unknown */
    const char *host;      /* Host (or SERVER_NAME), "localhost" if unknown */
    int https;             /* HTTPS=on or REQUEST_SCHEME=https */
    char hostbuf[216];     /* host:SERVER_PORT when Host had no port */
} request_stream;

/* Limits the parser enforces (from config). */
typedef struct {
    int max_channels;
    int64_t max_body;
    int poll_timeout_s;     /* used when the request names none */
    int max_poll_timeout_s; /* cap */
    int streams_poll_timeout_s; /* a durable stream's long-poll */
    int batch_limit;        /* cap and default for ?limit= */
    const char *token_cookie; /* cookie that may carry a token, NULL or "" = none */
    const char *client_param; /* trusted header naming the client (HTTP_X_REAL_IP), or NULL */
} request_limits;

/* Where a subscribe's token came from. */
typedef enum {
    REQUEST_TOKEN_NONE = 0,
    REQUEST_TOKEN_BEARER, /* Authorization: Bearer */
    REQUEST_TOKEN_QUERY,  /* ?token= (EventSource cannot set headers) */
    REQUEST_TOKEN_COOKIE  /* the cookie named token_cookie */
} request_token_source;

typedef struct {
    request_route route;
    /* errors */
    int status;         /* HTTP status for ROUTE_ERROR */
    const char *error;  /* short machine-readable reason */
    char detail[160];   /* human-readable detail */
    /* subscribe */
    char chanbuf[REQUEST_MAX_CHANNELS * (MSGLOG_CHANNEL_MAX + 1)];
    const char *channels[REQUEST_MAX_CHANNELS];
    size_t nchannels;
    int64_t since; /* -1 = not given */
    int64_t last;  /* 0 = not given */
    char epoch[MSGLOG_EPOCH_LEN + 1];
    int has_epoch;
    int timeout_s;
    size_t limit;
    request_format format;
    /* publish */
    const char *channel; /* == channels[0] */
    const char *content_type; /* NULL or msglog_type_valid() */
    int64_t content_length;
    const char *idem;
    const char *key;
    const char *bearer; /* Authorization: Bearer value, or NULL (every route) */
    /* credentials of a subscribe: the bearer, else ?token=, else the cookie */
    const char *token;  /* NUL-terminated, or NULL */
    request_token_source token_from;
    int token_over;     /* a token was presented but is longer than TOKEN_MAX */
    char tokbuf[TOKEN_MAX + 1];
    request_stream ds; /* ROUTE_STREAM */
    /* every route */
    const char *method;
    const char *origin; /* Origin header, or NULL */
    const char *client; /* the client's address (or the trusted header's), "" if unknown */
    char clientbuf[REQUEST_CLIENT_MAX + 1];
    char pathbuf[1024]; /* the decoded path when PATH_INFO is absent */
} request;

/* Look up NAME in a NULL-terminated "NAME=value" array; NULL if absent. */
const char *request_param(char *const *envp, const char *name);

/* Parse the request described by envp (FastCGI params or CGI environment).
 * Pointers in r point into envp or into r itself: keep envp alive as long as
 * r is used, or copy what is needed (waiters do).  Always returns r->route;
 * ROUTE_ERROR comes with status/error/detail set. */
request_route request_parse(request *r, char *const *envp, const request_limits *lim);

/* Parse a decimal cursor/count: 0 on success. */
int request_parse_i64(const char *s, size_t n, int64_t *out);

#endif
