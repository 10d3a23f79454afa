/* handler.h -- what each route does, independent of the front (FastCGI or
 * CGI) that carried the request.
 *
 * Lifecycle: handler_open() per thread (it owns one SQLite connection),
 * handler_run() per request, handler_close().  A handler whose storage
 * (the log and the wake file) cannot be opened still answers: 503 with
 * the reason and Retry-After, trying again at most once a second, so a
 * worker outlives a full disk, a read-only or missing database, and
 * serves again by itself once the cause is gone.  A subscribe with nothing to
 * deliver returns HANDLER_PARK with the concrete cursor to wait from; the
 * caller parks it (worker.c) or blocks on it (cgi_front.c).  An event
 * stream (Accept: text/event-stream) is always HANDLER_PARK: its caller
 * sends the head and streams from the cursor.
 */
#ifndef HOLDFAST_HANDLER_H
#define HOLDFAST_HANDLER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "jsonenc.h"
#include "guard.h"
#include "msglog.h"
#include "request.h"
#include "wake.h"

/* Per-process counters, shown by /stats and /metrics.  A worker keeps them
 * in its slot of the wake file (handler_counters_of), so that any worker
 * can report all of them. */
typedef struct {
    _Atomic int64_t parked;     /* subscribers waiting now */
    _Atomic int64_t publishes;  /* messages appended by this process */
    _Atomic int64_t deliveries; /* messages sent, counted per subscriber */
    _Atomic int64_t answered;   /* subscribe answers sent */
    _Atomic int64_t timeouts;   /* subscribe answers with no message */
    _Atomic int64_t left;       /* parked subscribers whose client left */
    _Atomic int64_t refused;    /* refused by a limit: 503 full, 429 client or rate */
} handler_counters;

typedef enum { HANDLER_DONE, HANDLER_PARK } handler_result;

/* Retry-After of a 429 for a client at max_parked_per_client. */
#define HANDLER_CLIENT_RETRY_S 5

/* The counters living in a wake-file slot. */
handler_counters *handler_counters_of(wake_slot *slot);

/* Bit k set when counter k is a total that must survive its process (the
 * mask wake_fold_dead() takes). */
uint32_t handler_cumulative_mask(void);

typedef struct {
    const config *cfg;
    handler_counters *counters;
    guard *lim;      /* the process's shared abuse limits, NULL = none enforced */
    msglog *log;      /* NULL while the storage is unavailable */
    wake *wk;         /* NULL exactly when log is */
    dev_t dev;
    ino_t ino;
    int64_t checked_ms;
    int64_t retry_ms;  /* when the storage may be tried again */
    char err[384];     /* why the storage is unavailable */
    /* THE SETTLED HINT (the dispatcher's context only, see worker.c's WAKE
     * RULE): when `settled`, nothing above settled_head in settled_epoch
     * escapes the dispatcher's next pass, so a subscribe exactly there
     * parks without a read. */
    int settled;
    int64_t settled_head;
    char settled_epoch[MSGLOG_EPOCH_LEN + 1];
} handler;

typedef enum {
    AUTH_OK = 0,
    AUTH_KEY_MISSING,  /* 401: a key channel, no Authorization: Bearer */
    AUTH_KEY_WRONG,    /* 403: a bearer that is no publish key */
    AUTH_CLOSED,       /* 403: publishing needs a key and none is configured */
    AUTH_TOKEN,        /* 401: the token is missing or invalid (token_status says how) */
    AUTH_NOT_GRANTED   /* 403: a valid token that does not grant every channel */
} handler_auth;

/* THE ACCESS RULE (handler.c) for request r as a publish (publish = 1) or
 * a subscribe of its channels: AUTH_OK when it may go on (*key: the
 * publish key it used, or -1); otherwise the refusal is already in out. */
handler_auth handler_admit(const handler *h, const request *r, int publish, const char *cors,
                           buf *out, int *key);

/* What handler_check_db found. */
typedef enum {
    HANDLER_DB_SAME = 0,  /* the file open is the one at cfg->db */
    HANDLER_DB_REOPENED,  /* it was replaced: the new one is open now */
    HANDLER_DB_FAILED     /* replaced or gone, and cannot be opened */
} handler_db;

/* The request limits of a configuration. */
request_limits handler_limits(const config *cfg);

/* Set up h and open this thread's log connection and wake mapping: 0, or
 * a negative errno with the reason in err -- h is usable either way (see
 * above) and must be closed with handler_close(). */
int handler_open(handler *h, const config *cfg, handler_counters *counters, guard *lim,
                 char *err, size_t errlen);
void handler_close(handler *h);

/* 0 when the log and the wake file are open, trying to open them if they
 * are not and a second has passed since the last try; else a negative
 * errno, with the reason in h->err. */
int handler_storage(handler *h);

/* Reopen the log if the file at cfg->db was replaced or removed (checked
 * at most once a second unless force). */
handler_db handler_check_db(handler *h, int force);

/* Answer r into out (a complete CGI-style response), or return HANDLER_PARK
 * with *cursor and epoch set to where the subscriber waits from. */
handler_result handler_run(handler *h, const request *r, const void *body, size_t len, buf *out,
                           int64_t *cursor, char epoch[MSGLOG_EPOCH_LEN + 1]);

/* Run a subscribe's read from `cursor` for a parked or blocked subscriber
 * and, if there is something to say (messages, reset, or final), build the
 * answer into out and return 1; 0 if it should keep waiting.  *cursor
 * advances to the safe point either way. */
int handler_poll(handler *h, const request *r, int64_t *cursor, const char *epoch, int final,
                 buf *out);

/* An event stream's next read from *cursor in epoch (both advance): its
 * events appended to out (reply_sse_batch).  1 when the read stopped at
 * its limit (read again), 0 when it reached the head, -1 when it failed. */
int handler_stream(handler *h, const request *r, int64_t *cursor, char *epoch, buf *out);

/* Count the messages of b sent on one event stream. */
void handler_count_stream(handler_counters *counters, const msglog_batch *b);

/* Count one subscribe answer carrying b in the counters. */
void handler_count_answer(handler_counters *counters, const msglog_batch *b,
                          request_format fmt);

/* Answer a subscribe from a batch already read (JSON or raw). */
void handler_answer(const config *cfg, buf *out, const msglog_batch *b, request_format fmt,
                    const char *cors,
                    handler_counters *counters);

#endif
