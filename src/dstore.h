/* dstore.h -- durable streams' metadata and data in the message log.
 *
 * Lifecycle: every call takes the msglog handle of the calling thread;
 * dstore_get() reads a stream's metadata, dstore_create() / dstore_append()
 * / dstore_delete() change one stream in one transaction, dstore_read()
 * returns its bytes after an offset.  Functions return a dstore_status;
 * DSTORE_ERR leaves the reason in msglog_errmsg(log).  See dstore.c for the
 * layout and its rules.
 */
#ifndef HOLDFAST_DSTORE_H
#define HOLDFAST_DSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "dsproto.h"
#include "msglog.h"

#define DSTORE_FORK_DEPTH 32 /* sources followed from a fork, at most */

typedef enum {
    DSTORE_OK = 0,
    DSTORE_NOT_FOUND,     /* no such stream (or it expired) */
    DSTORE_GONE,          /* soft-deleted (its forks still read it); a read: the
                             data after the offset was pruned */
    DSTORE_EXISTS_SAME,   /* create: it exists with this configuration */
    DSTORE_CONFLICT,      /* create: it exists otherwise; append: type or seq */
    DSTORE_CLOSED,        /* append: the stream is closed */
    DSTORE_DUPLICATE,     /* append: a producer's retry, already applied */
    DSTORE_STALE_EPOCH,   /* producer fenced: 403 */
    DSTORE_SEQ_GAP,       /* producer sequence gap: 409 */
    DSTORE_BAD_EPOCH_SEQ, /* a new epoch that does not start at 0: 400 */
    DSTORE_BAD_FORK,      /* fork offset or sub-offset out of range: 400 */
    DSTORE_SOURCE_GONE,   /* fork of a soft-deleted stream: 409 */
    DSTORE_SOURCE_MISSING,/* fork of a stream that does not exist: 404 */
    DSTORE_ERR            /* storage failure: msglog_errmsg */
} dstore_status;

/* A stream's metadata. */
typedef struct {
    int64_t id;          /* internal id (ETags) */
    int64_t channel;     /* its channel's id */
    char type[MSGLOG_TYPE_MAX + 1];
    int64_t base;        /* positions <= base are inherited (or before it) */
    int64_t tail;        /* the position after its last byte */
    int64_t ttl_s;       /* -1: none */
    int64_t expires_ms;  /* -1: none (Unix ms) */
    int64_t touched_ms;  /* last read or write */
    int closed;
    int64_t src;         /* the stream forked from, 0: none */
    int64_t cut_len;     /* a fork's last inherited message keeps this many
                            bytes (sub-offset), -1: all of it */
    char fork_from[DSPROTO_NAME_MAX + 1]; /* as created, for idempotent PUTs */
    int64_t fork_at;     /* requested fork offset, -1 when defaulted */
    int64_t fork_sub;
    int refs;            /* forks of it still existing */
    int deleted;         /* soft-deleted */
    /* who closed it: a producer's (id, epoch, seq), or none */
    char close_pid[DSPROTO_SEQ_MAX + 1];
    int64_t close_epoch, close_seq;
} dstore_stream;

/* A producer's claim on an append (all three headers, or none: pid NULL). */
typedef struct {
    const char *pid;
    int64_t epoch, seq;
} dstore_producer;

/* What to create. */
typedef struct {
    const char *type;
    int64_t ttl_s, expires_ms;  /* -1: none */
    int closed;
    const char *fork_from;      /* NULL: not a fork */
    int64_t fork_at;            /* -1: the source's tail */
    int64_t fork_sub;           /* 0: none */
} dstore_config;

/* An append: the messages (JSON mode: one per element), close, writer. */
typedef struct {
    const char *const *msgs;
    const size_t *lens;
    size_t n;
    int close;
    const char *type;   /* the request's Content-Type, NULL when the body is empty */
    const char *seq;    /* Stream-Seq, or NULL */
    dstore_producer prod;
} dstore_append_req;

/* What an append did. */
typedef struct {
    int64_t tail;       /* the stream's tail after it */
    int64_t first_id;   /* the id of its first message (waking), 0: none */
    int64_t last_id;    /* the highest id it committed (waking), 0: none */
    int closed;         /* the stream is closed now */
    int64_t epoch, seq; /* a producer's state after it (echoed) */
} dstore_result;

/* The metadata of stream name into *s (refreshing a sliding TTL when
 * touch): DSTORE_OK, _NOT_FOUND, _GONE, _ERR. */
dstore_status dstore_get(msglog *log, const char *name, int touch, dstore_stream *s);

/* Create name per c with its first messages: DSTORE_OK (created),
 * _EXISTS_SAME, _CONFLICT, _GONE (soft-deleted path), _SOURCE_*,
 * _BAD_FORK, _ERR.  *s is the stream after it (also when it existed). */
dstore_status dstore_create(msglog *log, const char *name, const dstore_config *c,
                            const dstore_append_req *a, dstore_stream *s, dstore_result *res);

/* Append to name per a; see dstore_status for the refusals.  On
 * DSTORE_CLOSED, _DUPLICATE, _STALE_EPOCH and _SEQ_GAP, *res says the
 * stream's tail and the producer's state (expected seq = res->seq + 1). */
dstore_status dstore_append(msglog *log, const char *name, const dstore_append_req *a,
                            dstore_result *res);

/* Delete name: gone at once, or soft-deleted while forks read it (their
 * deletion collects it): DSTORE_OK, _NOT_FOUND, _GONE, _ERR. */
dstore_status dstore_delete(msglog *log, const char *name);

/* Stream s's messages after position `after`, oldest first, at most `max`
 * bytes (but at least one message): each as (position, bytes).  Fills
 * *next with the position after the last one returned and *more when
 * messages remain.  The callback's bytes live until it returns.
 * DSTORE_GONE when something after `after` was pruned (by an older
 * release's retention), never a short answer. */
typedef void (*dstore_msg_fn)(void *ud, int64_t pos, const void *p, size_t n);
dstore_status dstore_read(msglog *log, const dstore_stream *s, int64_t after, size_t max,
                          dstore_msg_fn fn, void *ud, int64_t *next, int *more);

#endif
