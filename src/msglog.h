/* msglog.h -- the durable message log over SQLite (see msglog.c for the rules).
 *
 * Lifecycle:
 *   msglog_open()            open or create the database, migrate the schema
 *   msglog_append[_batch]()  publish; returns the committed id(s)
 *   msglog_read()            everything after a cursor, with gap/reset/head
 *   msglog_prune()           apply retention (count and age) incrementally
 *   msglog_close()
 *
 * A msglog handle is one SQLite connection: use it from one thread at a time.
 * Functions return 0 or a negative errno-style code; msglog_errmsg() describes
 * the last failure in words fit for a log line or a CLI error.
 */
#ifndef HOLDFAST_MSGLOG_H
#define HOLDFAST_MSGLOG_H

#include <stddef.h>
#include <stdint.h>

#define MSGLOG_SCHEMA_VERSION 1
#define MSGLOG_CHANNEL_MAX 128
#define MSGLOG_EPOCH_LEN 16 /* hex characters */
#define MSGLOG_DEFAULT_TYPE "text/plain;charset=utf-8"

typedef struct msglog msglog;

typedef enum {
    MSGLOG_DURABILITY_NORMAL = 0, /* synchronous=NORMAL: survives a process crash */
    MSGLOG_DURABILITY_FULL = 1    /* synchronous=FULL: survives power loss */
} msglog_durability;

/* One retention rule; 0 means "no limit" for either field. */
typedef struct {
    int64_t max_messages; /* keep at most this many per channel */
    int64_t max_age_s;    /* drop messages older than this */
} msglog_retention;

/* Maps a channel name to its retention rule; NULL = keep everything. */
typedef msglog_retention (*msglog_retention_fn)(const char *channel, void *ud);

typedef struct {
    const char *path;
    msglog_durability durability;
    int busy_timeout_ms;             /* 0 = default (5000) */
    int create;                      /* create the file if missing */
    int readonly;                    /* open read-only (no migrations) */
    msglog_retention_fn retention;   /* may be NULL */
    void *retention_ud;
    int prune_every;                 /* appends between incremental prunes
                                        (0 = default 256, <0 = never) */
} msglog_options;

/* A message to publish. type NULL = MSGLOG_DEFAULT_TYPE; key/idem may be NULL. */
typedef struct {
    const char *channel;
    const char *type;
    const void *body;
    size_t len;
    const char *key;  /* compaction key: older messages with it are dropped */
    const char *idem; /* idempotency key: a repeat returns the first id */
} msglog_entry;

typedef struct {
    int64_t id;
    int64_t time_ms;
    int replayed; /* 1 when idem matched an earlier message */
} msglog_ack;

/* A message as read back; all pointers are owned by the enclosing batch. */
typedef struct {
    int64_t id;
    int64_t time_ms;
    const char *channel;
    const char *type;
    const unsigned char *body;
    size_t len;
    const char *key; /* NULL if none */
} msglog_msg;

/* What to read. since < 0 means "from the head" (only new messages), unless
 * last > 0, which starts with the newest `last` retained messages. */
typedef struct {
    const char *const *channels;
    size_t nchannels;
    int64_t since;
    int64_t last;
    const char *epoch; /* the client's epoch, or NULL */
    size_t limit;      /* 0 = no limit */
} msglog_query;

typedef struct {
    msglog_msg *msgs;
    size_t n;
    int64_t cursor; /* the client adopts this: nothing of these channels is
                       unread at or below it (unless `more`) */
    int64_t head;   /* highest id ever committed in the log */
    int64_t oldest; /* with gap: oldest id still held after the cursor (0 if none) */
    int gap;        /* messages after the request's cursor were pruned */
    int reset;      /* epoch mismatch or cursor ahead of head: reload */
    int more;       /* limit reached; more messages are waiting */
    char epoch[MSGLOG_EPOCH_LEN + 1];
    void *arena_; /* private: backing storage */
} msglog_batch;

typedef struct {
    int64_t head;
    int64_t messages;
    int64_t channels;
    int64_t bytes;
    char epoch[MSGLOG_EPOCH_LEN + 1];
} msglog_stats;

/* Open (and with opt->create, create) the log at opt->path; migrates older
 * schemas.  On failure returns a negative code, sets *out to NULL and, if
 * err is not NULL, writes a one-line reason to err. */
int msglog_open(msglog **out, const msglog_options *opt, char *err, size_t errlen);

/* Close the connection; NULL is a no-op. */
void msglog_close(msglog *log);

/* Describe the last error of this handle (never NULL). */
const char *msglog_errmsg(const msglog *log);

/* 1 if name is a valid channel name (1..128 bytes of [A-Za-z0-9._:@-]). */
int msglog_channel_valid(const char *name, size_t len);

/* Append one message and COMMIT.  -EINVAL for a bad channel name. */
int msglog_append(msglog *log, const msglog_entry *e, msglog_ack *ack);

/* Append n messages in one transaction (one fsync); acks[i] for each.  All
 * or nothing: on failure no message of the batch is in the log. */
int msglog_append_batch(msglog *log, const msglog_entry *e, size_t n, msglog_ack *acks);

/* Read per q into *out (which the caller frees with msglog_batch_free, also
 * after an error).  Never writes to the database. */
int msglog_read(msglog *log, const msglog_query *q, msglog_batch *out);
void msglog_batch_free(msglog_batch *b);

/* Current head (highest id committed, 0 for an empty log). */
int64_t msglog_head(msglog *log);

/* The database's epoch, 16 hex characters. */
const char *msglog_epoch(const msglog *log);

/* 1 if another connection committed since the previous call, else 0, <0 on
 * error (PRAGMA data_version). */
int msglog_changed(msglog *log);

/* Apply retention to every channel, at most `budget` rows deleted per call
 * (0 = no cap); stores the number deleted in *deleted.  Advances
 * channel.pruned_through for every pruned message. */
int msglog_prune(msglog *log, int64_t budget, int64_t *deleted);

int msglog_stats_get(msglog *log, msglog_stats *st);

/* In one snapshot: set *head, and call fn once for each channel that has a
 * message with since < id <= *head (how a dispatcher learns whom a batch of
 * commits concerns without reading the messages). */
int msglog_changed_channels(msglog *log, int64_t since, int64_t *head,
                            void (*fn)(const char *channel, void *ud), void *ud);

/* Wall clock in milliseconds, as stored in message.time_ms. */
int64_t msglog_now_ms(void);

/* For tests: override the clock (0 restores the real one). */
void msglog_set_clock(int64_t (*now_ms)(void));

#endif
