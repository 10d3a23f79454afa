/* msglog.h -- the durable message log over SQLite (see msglog.c for the rules).
 *
 * Lifecycle:
 *   msglog_open()            open or create the database, migrate the schema
 *   msglog_append[_batch]()  publish; returns the committed id(s)
 *   msglog_read()            everything after a cursor, with gap/reset/head
 *   msglog_prune()           apply retention (count and age) incrementally
 *   msglog_close()
 *
 * A msglog handle is one SQLite connection: use it from one thread at a time,
 * and never from inside a msglog_changed_channels() callback.  Functions
 * return 0 or a negative errno-style code; msglog_errmsg() describes the last
 * failure in words fit for a log line or a CLI error.  Storage faults have
 * codes of their own: -EBUSY (the write lock was held beyond the busy
 * timeout), -EROFS (read-only file), -EACCES (directory not writable),
 * -ENOENT (no file or directory), -ESTALE (the open file was removed or
 * replaced), -EILSEQ (not a database, corrupt or truncated), -ENOSPC (disk
 * full), -EIO (other I/O errors).  After any failed call the handle stays
 * usable: the next call succeeds once the cause is gone.
 *
 * Idempotency: an entry with an idem key is remembered per channel with a
 * digest of its type, compaction key and body.  A repeat of the same
 * message answers the original id and time (replayed = 1), even after
 * compaction dropped it; a different message under the same key is refused
 * with -EEXIST.  The key is forgotten when retention prunes past the
 * original's id, so the idempotency window is the channel's retention.
 */
#ifndef HOLDFAST_MSGLOG_H
#define HOLDFAST_MSGLOG_H

#include <stddef.h>
#include <stdint.h>

#define MSGLOG_SCHEMA_VERSION 2
#define MSGLOG_CHANNEL_MAX 128
#define MSGLOG_TYPE_MAX 255   /* bytes of a content type */
#define MSGLOG_EPOCH_LEN 16 /* hex characters */
#define MSGLOG_DEFAULT_TYPE "text/plain;charset=utf-8"
/* The compaction key of the row that marks a durable stream's close: the
 * one row a closed stream still takes (msglog.c, THE STREAMS' TABLES). */
#define MSGLOG_STREAM_MARK "ds:closed"

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

/* The most channels one incremental pass (msglog_prune with a budget)
 * looks at: the next MSGLOG_PRUNE_ROUND in round-robin order, plus up to
 * MSGLOG_PRUNE_HOT this handle appended to since the previous pass. */
#define MSGLOG_PRUNE_ROUND 128
#define MSGLOG_PRUNE_HOT 32
#define MSGLOG_PRUNE_VISIT_MAX (MSGLOG_PRUNE_ROUND + MSGLOG_PRUNE_HOT)

/* A message to publish. type NULL = MSGLOG_DEFAULT_TYPE, else it must pass
 * msglog_type_valid(); key/idem may be NULL. */
typedef struct {
    const char *channel;
    const char *type;
    const void *body;
    size_t len;
    const char *key;  /* compaction key: older messages with it are dropped */
    const char *idem; /* idempotency key: a repeat returns the first id (see above) */
} msglog_entry;

typedef struct {
    int64_t id;
    int64_t time_ms;
    int replayed; /* 1 when idem matched an earlier message: id and time_ms
                     are the original's */
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

/* 1 if type is a content type the log stores: at most MSGLOG_TYPE_MAX bytes
 * of a media type, token "/" token, then parameters `; name=value` (value a
 * token or a quoted-string), visible ASCII with spaces and tabs, no control
 * bytes.  0 otherwise, and for NULL. */
int msglog_type_valid(const char *type);

/* Append one message and COMMIT.  -EINVAL for a bad channel name or content
 * type, -EEXIST when e->idem was used for a different message. */
int msglog_append(msglog *log, const msglog_entry *e, msglog_ack *ack);

/* Append n messages in one transaction (one fsync); acks[i] for each.  All
 * or nothing: on failure no message of the batch is in the log. */
int msglog_append_batch(msglog *log, const msglog_entry *e, size_t n, msglog_ack *acks);

/* Read per q into *out, which the caller frees with msglog_batch_free.  On
 * error *out holds nothing (freeing it again is a harmless no-op).  Never
 * writes to the database. */
int msglog_read(msglog *log, const msglog_query *q, msglog_batch *out);

/* Free what a batch holds and empty it; safe to call twice. */
void msglog_batch_free(msglog_batch *b);

/* Current head (highest id committed, 0 for an empty log). */
int64_t msglog_head(msglog *log);

/* The database's epoch, 16 hex characters. */
const char *msglog_epoch(const msglog *log);

/* 1 if another connection committed since the previous call, else 0, <0 on
 * error (PRAGMA data_version). */
int msglog_changed(msglog *log);

/* Apply retention.  budget 0: every channel, no cap (`holdfast prune`).
 * budget > 0: one incremental pass, at most `budget` rows deleted and at
 * most MSGLOG_PRUNE_VISIT_MAX channels looked at, continuing the round
 * robin where the previous pass of this handle stopped.  Stores the number
 * deleted in *deleted; advances channel.pruned_through for every pruned
 * message and forgets the idempotency keys of pruned messages. */
int msglog_prune(msglog *log, int64_t budget, int64_t *deleted);

/* How many channels the last msglog_prune call of this handle looked at. */
int64_t msglog_prune_visited(const msglog *log);

/* Head, epoch and the message, channel and byte counts, from a table the
 * schema's triggers keep exact (no scan; a read-only handle on a schema 1
 * file, which it does not migrate, scans). */
int msglog_stats_get(msglog *log, msglog_stats *st);

/* Set SQLite's busy timeout (how long a statement waits for a lock) for the
 * next statements of this handle; ms <= 0 means do not wait. */
void msglog_set_busy_timeout(msglog *log, int ms);

/* PRAGMA synchronous as SQLite reports it for this connection (1 NORMAL,
 * 2 FULL), or a negative code. */
int msglog_synchronous(msglog *log);

/* In one snapshot: set *head, and call fn once for each channel that has a
 * message with since < id <= *head (how a dispatcher learns whom a batch of
 * commits concerns without reading the messages). */
int msglog_changed_channels(msglog *log, int64_t since, int64_t *head,
                            void (*fn)(const char *channel, void *ud), void *ud);

/* 1 if a durable stream (dstore.h) has this channel's name: one cached
 * indexed lookup, what a publish pays to learn it is an append. */
int msglog_stream_named(msglog *log, const char *channel);

/* For dstore.c, which keeps durable streams in the same file and the same
 * transactions: this handle's connection, and the mapping of an SQLite
 * result code to the codes above (the reason, naming `what`, goes to
 * msglog_errmsg). */
struct sqlite3 *msglog_sqlite(msglog *log);
int msglog_sqlite_fail(msglog *log, int rc, const char *what);

/* Wall clock in milliseconds, as stored in message.time_ms. */
int64_t msglog_now_ms(void);

/* For tests: override the clock (0 restores the real one). */
void msglog_set_clock(int64_t (*now_ms)(void));

#endif
