/* msglog.c -- the durable message log: schema, append, read-after-cursor,
 * retention.
 *
 * THE CURSOR RULE.  Every message is a row of `message` whose id comes from
 * INTEGER PRIMARY KEY AUTOINCREMENT.  SQLite assigns it under the database's
 * single write lock and AUTOINCREMENT never hands out an id twice, even after
 * the newest rows are deleted (sqlite_sequence remembers the high-water mark).
 * So ids are strictly increasing in commit order, and the "head" -- the
 * sqlite_sequence value -- read inside a read transaction is a line below
 * which every id is committed and visible in that snapshot.  A reader that
 * returns every row of its channels with since < id <= head, and hands back
 * head as the cursor, can never skip a row that commits later: that row's id
 * is > head.  (SQLite's wal.c has the same rule for frames after mxFrame.)
 *
 * GAPS.  Retention deletes the oldest rows of a channel and raises
 * channel.pruned_through to the highest id it deleted.  A reader whose cursor
 * is below pruned_through of any requested channel lost something: the batch
 * says gap=1 and oldest = the first id still held.  Compaction by key (a newer
 * message with the same key replaces an older one) is not a gap: the state it
 * represents is still complete.
 *
 * RESETS.  Each database gets a random epoch when it is created.  A client
 * cursor from another epoch, or above the head, cannot be interpreted: the
 * batch says reset=1 and carries the head, so the client reloads.
 *
 * OUTBOX.  Other programs on the host publish with one statement,
 *     INSERT INTO publish(channel, body) VALUES ('news', 'hello');
 * through an INSTEAD OF trigger on the `publish` view (schema below).
 */
#include "msglog.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MSGLOG_DEFAULT_BUSY_MS 5000
#define MSGLOG_DEFAULT_PRUNE_EVERY 256
#define MSGLOG_PRUNE_BUDGET 2000

/* Schema migrations: entry v brings user_version v-1 to v. */
static const char *const msglog_migrations[] = {
    NULL,
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE channel(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
    "  pruned_through INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE message(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  channel INTEGER NOT NULL REFERENCES channel(id), time_ms INTEGER NOT NULL,"
    "  type TEXT NOT NULL, body BLOB NOT NULL, key TEXT, idem TEXT);"
    "CREATE INDEX message_channel_id ON message(channel, id);"
    "CREATE UNIQUE INDEX message_channel_idem ON message(channel, idem)"
    "  WHERE idem IS NOT NULL;"
    "CREATE INDEX message_channel_key ON message(channel, key) WHERE key IS NOT NULL;"
    "CREATE VIEW publish(channel, type, body, key, idem) AS"
    "  SELECT NULL, NULL, NULL, NULL, NULL WHERE 0;"
    "CREATE TRIGGER publish_insert INSTEAD OF INSERT ON publish BEGIN"
    "  SELECT RAISE(ABORT, 'holdfast: invalid channel name')"
    "   WHERE NEW.channel IS NULL OR length(CAST(NEW.channel AS BLOB)) NOT BETWEEN 1 AND 128"
    "      OR NEW.channel GLOB '*[^A-Za-z0-9._:@-]*';"
    "  SELECT RAISE(ABORT, 'holdfast: body is NULL') WHERE NEW.body IS NULL;"
    "  INSERT OR IGNORE INTO channel(name) VALUES (NEW.channel);"
    "  DELETE FROM message WHERE NEW.key IS NOT NULL AND key = NEW.key"
    "   AND channel = (SELECT id FROM channel WHERE name = NEW.channel)"
    "   AND NOT EXISTS (SELECT 1 FROM message m WHERE NEW.idem IS NOT NULL AND m.idem = NEW.idem"
    "     AND m.channel = (SELECT id FROM channel WHERE name = NEW.channel));"
    "  INSERT INTO message(channel, time_ms, type, body, key, idem)"
    "   SELECT c.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),"
    "          coalesce(NEW.type, '" MSGLOG_DEFAULT_TYPE "'), NEW.body, NEW.key, NEW.idem"
    "   FROM channel c WHERE c.name = NEW.channel"
    "    AND NOT EXISTS (SELECT 1 FROM message m WHERE NEW.idem IS NOT NULL"
    "      AND m.channel = c.id AND m.idem = NEW.idem);"
    "END;",
};

enum {
    ST_BEGIN_READ,
    ST_BEGIN_WRITE,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_HEAD,
    ST_CHANNEL_GET,
    ST_CHANNEL_ADD,
    ST_IDEM_FIND,
    ST_INSERT,
    ST_COMPACT,
    ST_READ_ONE,
    ST_READ_MANY,
    ST_NTH_NEWEST_ONE,
    ST_NTH_NEWEST_MANY,
    ST_DATA_VERSION,
    ST_CHANGED,
    ST__COUNT
};

static const char *const msglog_sql[ST__COUNT] = {
    [ST_BEGIN_READ] = "BEGIN",
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_HEAD] = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name='message'), 0)",
    [ST_CHANNEL_GET] = "SELECT id, pruned_through FROM channel WHERE name = ?1",
    [ST_CHANNEL_ADD] = "INSERT INTO channel(name) VALUES (?1)",
    [ST_IDEM_FIND] = "SELECT id, time_ms FROM message WHERE channel = ?1 AND idem = ?2",
    [ST_INSERT] = "INSERT INTO message(channel, time_ms, type, body, key, idem)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_COMPACT] = "DELETE FROM message WHERE channel = ?1 AND key = ?2 AND id < ?3",
    [ST_READ_ONE] = "SELECT id, channel, time_ms, type, body, key FROM message"
                    " WHERE channel = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [ST_READ_MANY] = "SELECT id, channel, time_ms, type, body, key FROM message"
                     " WHERE channel IN (SELECT value FROM json_each(?1)) AND id > ?2"
                     " ORDER BY id LIMIT ?3",
    [ST_NTH_NEWEST_ONE] = "SELECT id FROM message WHERE channel = ?1"
                          " ORDER BY id DESC LIMIT 1 OFFSET ?2",
    [ST_NTH_NEWEST_MANY] = "SELECT id FROM message"
                           " WHERE channel IN (SELECT value FROM json_each(?1))"
                           " ORDER BY id DESC LIMIT 1 OFFSET ?2",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_CHANGED] = "SELECT DISTINCT c.name FROM message m JOIN channel c ON c.id = m.channel"
                   " WHERE m.id > ?1 AND m.id <= ?2",
};

struct msglog {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    char epoch[MSGLOG_EPOCH_LEN + 1];
    char path[PATH_MAX];
    msglog_retention_fn retention;
    void *retention_ud;
    int prune_every;
    int appends_since_prune;
    int64_t data_version;
    char err[512];
};

static int64_t (*msglog_clock)(void);

/* ---- small helpers ---------------------------------------------------- */

static int msglog_fail(msglog *log, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int msglog_fail(msglog *log, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log->err, sizeof log->err, fmt, ap);
    va_end(ap);
    return code;
}

/* Map an SQLite result code to a negative errno and record the message. */
static int msglog_sqlfail(msglog *log, int rc, const char *what) {
    int code = -EIO;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: code = -EBUSY; break;
    case SQLITE_NOMEM: code = -ENOMEM; break;
    case SQLITE_READONLY: code = -EROFS; break;
    case SQLITE_FULL: code = -ENOSPC; break;
    case SQLITE_CONSTRAINT: code = -EINVAL; break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: code = -EILSEQ; break;
    case SQLITE_CANTOPEN: code = -ENOENT; break;
    }
    return msglog_fail(log, code, "%s: %s (%s)", what, sqlite3_errmsg(log->db),
                       log->path);
}

static sqlite3_stmt *msglog_stmt(msglog *log, int which) {
    sqlite3_stmt *s = log->st[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Run a statement that returns no rows. */
static int msglog_exec_stmt(msglog *log, int which) {
    sqlite3_stmt *s = msglog_stmt(log, which);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, msglog_sql[which]);
    return 0;
}

static void msglog_rollback(msglog *log) {
    if (!sqlite3_get_autocommit(log->db))
        sqlite3_step(msglog_stmt(log, ST_ROLLBACK));
    sqlite3_reset(log->st[ST_ROLLBACK]);
}

static int64_t msglog_real_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t msglog_now_ms(void) {
    return msglog_clock ? msglog_clock() : msglog_real_clock();
}

void msglog_set_clock(int64_t (*now_ms)(void)) {
    msglog_clock = now_ms;
}

int msglog_channel_valid(const char *name, size_t len) {
    if (len < 1 || len > MSGLOG_CHANNEL_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}

const char *msglog_errmsg(const msglog *log) {
    return log ? log->err : "out of memory";
}

const char *msglog_epoch(const msglog *log) {
    return log->epoch;
}

/* ---- open, schema ----------------------------------------------------- */

/* Explain why the file cannot be opened, before SQLite gives a vaguer error. */
static int msglog_check_path(msglog *log, const msglog_options *opt) {
    struct stat st;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", opt->path);
    const char *d = dirname(dir);
    if (stat(opt->path, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return msglog_fail(log, -EINVAL, "%s is not a regular file", opt->path);
        /* Mode bits count even for root: a 0444 file is meant to stay as it is. */
        if (!opt->readonly && (access(opt->path, W_OK) != 0 || !(st.st_mode & 0222)))
            return msglog_fail(log, -EROFS, "database %s is read-only", opt->path);
    } else if (errno != ENOENT) {
        return msglog_fail(log, -errno, "cannot open %s: %s", opt->path, strerror(errno));
    } else if (!opt->create || opt->readonly) {
        return msglog_fail(log, -ENOENT, "no database at %s (publishing creates it)",
                           opt->path);
    }
    if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode))
        return msglog_fail(log, -ENOENT, "cannot open database %s: directory %s does not exist",
                           opt->path, d);
    if (!opt->readonly && access(d, W_OK) != 0)
        return msglog_fail(log, -EROFS,
                           "cannot open database %s: directory %s is not writable"
                           " (SQLite's WAL mode creates files beside the database)",
                           opt->path, d);
    return 0;
}

static int msglog_exec(msglog *log, const char *sql) {
    char *msg = NULL;
    int rc = sqlite3_exec(log->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int code = msglog_sqlfail(log, rc, "schema");
        if (msg)
            msglog_fail(log, code, "%s (%s)", msg, log->path);
        sqlite3_free(msg);
        return code;
    }
    return 0;
}

static int msglog_pragma_int(msglog *log, const char *sql, int64_t *out) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(log->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(s, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_OK && rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, sql);
    return 0;
}

static void msglog_new_epoch(char out[MSGLOG_EPOCH_LEN + 1]) {
    unsigned char r[MSGLOG_EPOCH_LEN / 2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        uint64_t x = (uint64_t)msglog_real_clock() ^ ((uint64_t)getpid() << 32);
        memcpy(r, &x, sizeof r < sizeof x ? sizeof r : sizeof x);
    }
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* Is this file ours?  An empty file (no schema objects) may become ours. */
static int msglog_check_identity(msglog *log, int64_t version) {
    int64_t objects = 0;
    int rc = msglog_pragma_int(log, "SELECT count(*) FROM sqlite_schema", &objects);
    if (rc)
        return rc;
    if (version == 0 && objects == 0)
        return 0;
    int64_t ours = 0;
    rc = msglog_pragma_int(log,
                           "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='meta'",
                           &ours);
    if (rc)
        return rc;
    if (ours)
        rc = msglog_pragma_int(log, "SELECT count(*) FROM meta WHERE key='app' AND value='holdfast'",
                               &ours);
    if (rc)
        return rc;
    if (!ours)
        return msglog_fail(log, -EINVAL, "%s is an SQLite database but not a holdfast log",
                           log->path);
    if (version > MSGLOG_SCHEMA_VERSION)
        return msglog_fail(log, -EPROTO,
                           "%s has schema version %lld; this holdfast knows up to %d (upgrade it)",
                           log->path, (long long)version, MSGLOG_SCHEMA_VERSION);
    return 0;
}

/* Bring the schema to MSGLOG_SCHEMA_VERSION inside one write transaction. */
static int msglog_migrate(msglog *log) {
    int64_t version = 0;
    int rc = msglog_exec(log, "BEGIN IMMEDIATE");
    if (rc)
        return rc;
    if ((rc = msglog_pragma_int(log, "PRAGMA user_version", &version)) ||
        (rc = msglog_check_identity(log, version)))
        goto fail;
    for (int64_t v = version + 1; v <= MSGLOG_SCHEMA_VERSION; v++)
        if ((rc = msglog_exec(log, msglog_migrations[v])))
            goto fail;
    if (version == 0) {
        char epoch[MSGLOG_EPOCH_LEN + 1], sql[160];
        msglog_new_epoch(epoch);
        snprintf(sql, sizeof sql,
                 "INSERT INTO meta VALUES ('app', 'holdfast'), ('epoch', '%s')", epoch);
        if ((rc = msglog_exec(log, sql)))
            goto fail;
    }
    if (version != MSGLOG_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", MSGLOG_SCHEMA_VERSION);
        if ((rc = msglog_exec(log, sql)))
            goto fail;
    }
    return msglog_exec(log, "COMMIT");
fail:
    sqlite3_exec(log->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int msglog_load_epoch(msglog *log) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(log->db, "SELECT value FROM meta WHERE key='epoch'", -1, &s,
                                NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        snprintf(log->epoch, sizeof log->epoch, "%s", (const char *)sqlite3_column_text(s, 0));
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT;
    }
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? 0 : msglog_sqlfail(log, rc, "reading the epoch");
}

/* Switch to WAL.  The switch takes an exclusive lock without consulting the
 * busy handler, so processes opening a new file together (a pool starting
 * on a fresh database) retry here for up to the busy timeout. */
static int msglog_set_wal(msglog *log, const msglog_options *opt) {
    int waited = 0, limit = opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms
                                                     : MSGLOG_DEFAULT_BUSY_MS;
    for (;;) {
        int rc = msglog_exec(log, "PRAGMA journal_mode=WAL");
        if (rc != -EBUSY || waited >= limit)
            return rc;
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
        waited += 2;
    }
}

static int msglog_setup(msglog *log, const msglog_options *opt) {
    char sql[96];
    int64_t version = -1;
    int rc;
    sqlite3_busy_timeout(log->db, opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms
                                                          : MSGLOG_DEFAULT_BUSY_MS);
    /* The first read tells a garbage file from a database, and a foreign
     * database is refused before anything (even journal_mode) is changed. */
    if ((rc = msglog_pragma_int(log, "PRAGMA user_version", &version)))
        goto notadb;
    if ((rc = msglog_check_identity(log, version)))
        return rc;
    if (opt->readonly) {
        if (version == 0)
            return msglog_fail(log, -EINVAL, "%s is not a holdfast log", log->path);
    } else {
        if ((rc = msglog_set_wal(log, opt)))
            return rc;
        snprintf(sql, sizeof sql, "PRAGMA synchronous=%s",
                 opt->durability == MSGLOG_DURABILITY_FULL ? "FULL" : "NORMAL");
        if ((rc = msglog_exec(log, sql)))
            return rc;
        if (version != MSGLOG_SCHEMA_VERSION && (rc = msglog_migrate(log)))
            return rc;
    }
    return msglog_load_epoch(log);
notadb:
    if (rc == -EILSEQ)
        return msglog_fail(log, rc, "%s is not an SQLite database, or it is corrupt",
                           log->path);
    return rc;
}

static int msglog_prepare_all(msglog *log) {
    for (int i = 0; i < ST__COUNT; i++) {
        int rc = sqlite3_prepare_v3(log->db, msglog_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &log->st[i], NULL);
        if (rc != SQLITE_OK)
            return msglog_sqlfail(log, rc, msglog_sql[i]);
    }
    return 0;
}

int msglog_open(msglog **out, const msglog_options *opt, char *err, size_t errlen) {
    msglog *log = calloc(1, sizeof *log);
    int rc;
    *out = NULL;
    if (!log) {
        if (err)
            snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    snprintf(log->path, sizeof log->path, "%s", opt->path);
    log->retention = opt->retention;
    log->retention_ud = opt->retention_ud;
    log->prune_every = opt->prune_every ? opt->prune_every : MSGLOG_DEFAULT_PRUNE_EVERY;
    if ((rc = msglog_check_path(log, opt)))
        goto fail;
    int flags = opt->readonly ? SQLITE_OPEN_READONLY
                              : SQLITE_OPEN_READWRITE | (opt->create ? SQLITE_OPEN_CREATE : 0);
    rc = sqlite3_open_v2(opt->path, &log->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = msglog_sqlfail(log, rc, "cannot open database");
        goto fail;
    }
    sqlite3_extended_result_codes(log->db, 1);
    if ((rc = msglog_setup(log, opt)) || (rc = msglog_prepare_all(log)))
        goto fail;
    msglog_changed(log);
    *out = log;
    return 0;
fail:
    if (err)
        snprintf(err, errlen, "%s", log->err);
    msglog_close(log);
    return rc;
}

void msglog_close(msglog *log) {
    if (!log)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(log->st[i]);
    sqlite3_close(log->db);
    free(log);
}

/* ---- append ------------------------------------------------------------ */

static int64_t msglog_head_locked(msglog *log) {
    sqlite3_stmt *s = msglog_stmt(log, ST_HEAD);
    int64_t head = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    return head;
}

int64_t msglog_head(msglog *log) {
    return msglog_head_locked(log);
}

/* Find a channel's row id; with create, add the channel if it is new.
 * Returns 1 found, 0 absent, <0 error. */
static int msglog_channel_id(msglog *log, const char *name, int create, int64_t *id,
                             int64_t *pruned) {
    sqlite3_stmt *s = msglog_stmt(log, ST_CHANNEL_GET);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(s, 0);
        if (pruned)
            *pruned = sqlite3_column_int64(s, 1);
        sqlite3_reset(s);
        return 1;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "looking up a channel");
    if (!create)
        return 0;
    s = msglog_stmt(log, ST_CHANNEL_ADD);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "adding a channel");
    *id = sqlite3_last_insert_rowid(log->db);
    if (pruned)
        *pruned = 0;
    return 1;
}

/* 1 and the original ack if (channel, idem) exists already. */
static int msglog_idem_find(msglog *log, int64_t chan, const char *idem, msglog_ack *ack) {
    sqlite3_stmt *s = msglog_stmt(log, ST_IDEM_FIND);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_text(s, 2, idem, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        ack->id = sqlite3_column_int64(s, 0);
        ack->time_ms = sqlite3_column_int64(s, 1);
        ack->replayed = 1;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "checking the idempotency key");
    return rc == SQLITE_ROW;
}

static int msglog_compact(msglog *log, int64_t chan, const char *key, int64_t below) {
    sqlite3_stmt *s = msglog_stmt(log, ST_COMPACT);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, below);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : msglog_sqlfail(log, rc, "compacting by key");
}

/* Insert one entry inside the caller's write transaction. */
static int msglog_insert(msglog *log, const msglog_entry *e, msglog_ack *ack) {
    int64_t chan = 0;
    int rc;
    if (!e->channel || !msglog_channel_valid(e->channel, strlen(e->channel)))
        return msglog_fail(log, -EINVAL, "invalid channel name (1-%d bytes of A-Za-z0-9._:@-)",
                           MSGLOG_CHANNEL_MAX);
    if ((rc = msglog_channel_id(log, e->channel, 1, &chan, NULL)) < 0)
        return rc;
    memset(ack, 0, sizeof *ack);
    if (e->idem && (rc = msglog_idem_find(log, chan, e->idem, ack)) != 0)
        return rc < 0 ? rc : 0;
    ack->time_ms = msglog_now_ms();
    sqlite3_stmt *s = msglog_stmt(log, ST_INSERT);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_int64(s, 2, ack->time_ms);
    sqlite3_bind_text(s, 3, e->type ? e->type : MSGLOG_DEFAULT_TYPE, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(s, 4, e->len ? e->body : "", e->len, SQLITE_STATIC);
    if (e->key)
        sqlite3_bind_text(s, 5, e->key, -1, SQLITE_STATIC);
    if (e->idem)
        sqlite3_bind_text(s, 6, e->idem, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "appending a message");
    ack->id = sqlite3_last_insert_rowid(log->db);
    return e->key ? msglog_compact(log, chan, e->key, ack->id) : 0;
}

int msglog_append_batch(msglog *log, const msglog_entry *e, size_t n, msglog_ack *acks) {
    int rc = msglog_exec_stmt(log, ST_BEGIN_WRITE);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = msglog_insert(log, &e[i], &acks[i])))
            goto fail;
    if ((rc = msglog_exec_stmt(log, ST_COMMIT)))
        goto fail;
    log->appends_since_prune += (int)n;
    if (log->retention && log->prune_every > 0 && log->appends_since_prune >= log->prune_every) {
        int64_t deleted;
        log->appends_since_prune = 0;
        /* Retention is housekeeping: the messages are committed whatever it says. */
        msglog_prune(log, MSGLOG_PRUNE_BUDGET, &deleted);
    }
    return 0;
fail:
    msglog_rollback(log);
    return rc;
}

int msglog_append(msglog *log, const msglog_entry *e, msglog_ack *ack) {
    return msglog_append_batch(log, e, 1, ack);
}

/* ---- read -------------------------------------------------------------- */

/* Batch memory: one block for the msgs array and one growing byte area;
 * pointers into the area are fixed up once reading is done. */
typedef struct {
    char *p;
    size_t len, cap;
} msglog_arena;

static int64_t msglog_arena_put(msglog_arena *a, const void *s, size_t n) {
    if (a->len + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + n + 1)
            cap *= 2;
        char *p = realloc(a->p, cap);
        if (!p)
            return -1;
        a->p = p;
        a->cap = cap;
    }
    int64_t off = (int64_t)a->len;
    if (n)
        memcpy(a->p + a->len, s, n);
    a->p[a->len + n] = '\0';
    a->len += n + 1;
    return off;
}

void msglog_batch_free(msglog_batch *b) {
    if (!b)
        return;
    free(b->msgs);
    if (b->arena_)
        free(((msglog_arena *)b->arena_)->p);
    free(b->arena_);
    b->msgs = NULL;
    b->arena_ = NULL;
    b->n = 0;
}

typedef struct {
    int64_t id;
    int64_t pruned;
    int64_t name_off;
} msglog_chan;

/* Resolve the requested channels (unknown ones are skipped). */
static int msglog_resolve(msglog *log, const msglog_query *q, msglog_arena *a,
                          msglog_chan *ch, size_t *nch) {
    *nch = 0;
    for (size_t i = 0; i < q->nchannels; i++) {
        int64_t id, pruned;
        int rc = msglog_channel_id(log, q->channels[i], 0, &id, &pruned);
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        ch[*nch].id = id;
        ch[*nch].pruned = pruned;
        ch[*nch].name_off = msglog_arena_put(a, q->channels[i], strlen(q->channels[i]));
        if (ch[*nch].name_off < 0)
            return msglog_fail(log, -ENOMEM, "out of memory");
        (*nch)++;
    }
    return 0;
}

/* Bind the channel set to ?1 of a _ONE or _MANY statement. */
static sqlite3_stmt *msglog_bind_channels(msglog *log, int one, int many,
                                          const msglog_chan *ch, size_t nch, char *json,
                                          size_t jsonlen) {
    if (nch == 1) {
        sqlite3_stmt *s = msglog_stmt(log, one);
        sqlite3_bind_int64(s, 1, ch[0].id);
        return s;
    }
    size_t off = 0;
    json[off++] = '[';
    for (size_t i = 0; i < nch && off + 24 < jsonlen; i++)
        off += (size_t)snprintf(json + off, jsonlen - off, "%s%lld", i ? "," : "",
                                (long long)ch[i].id);
    json[off++] = ']';
    json[off] = '\0';
    sqlite3_stmt *s = msglog_stmt(log, many);
    sqlite3_bind_text(s, 1, json, (int)off, SQLITE_STATIC);
    return s;
}

/* The id just below the newest `last` messages of the set (0 if fewer). */
static int64_t msglog_last_start(msglog *log, const msglog_chan *ch, size_t nch, int64_t last,
                                 char *json, size_t jsonlen) {
    sqlite3_stmt *s = msglog_bind_channels(log, ST_NTH_NEWEST_ONE, ST_NTH_NEWEST_MANY, ch, nch,
                                           json, jsonlen);
    sqlite3_bind_int64(s, 2, last - 1);
    int64_t start = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) - 1 : 0;
    sqlite3_reset(s);
    return start;
}

static const char *msglog_chan_name(const msglog_chan *ch, size_t nch, int64_t id) {
    for (size_t i = 0; i < nch; i++)
        if (ch[i].id == id)
            return (const char *)(intptr_t)ch[i].name_off;
    return (const char *)(intptr_t)ch[0].name_off;
}

/* Copy the rows of one SELECT into b (offsets into the arena for now). */
static int msglog_collect(msglog *log, sqlite3_stmt *s, const msglog_chan *ch, size_t nch,
                          size_t limit, msglog_arena *a, msglog_batch *b) {
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (limit && b->n == limit) {
            b->more = 1;
            break;
        }
        if (b->n == cap) {
            cap = cap ? cap * 2 : 16;
            msglog_msg *m = realloc(b->msgs, cap * sizeof *m);
            if (!m)
                return msglog_fail(log, -ENOMEM, "out of memory");
            b->msgs = m;
        }
        msglog_msg *m = &b->msgs[b->n++];
        m->id = sqlite3_column_int64(s, 0);
        m->channel = msglog_chan_name(ch, nch, sqlite3_column_int64(s, 1));
        m->time_ms = sqlite3_column_int64(s, 2);
        const void *body = sqlite3_column_blob(s, 4);
        m->len = (size_t)sqlite3_column_bytes(s, 4);
        int64_t t = msglog_arena_put(a, sqlite3_column_text(s, 3),
                                     (size_t)sqlite3_column_bytes(s, 3));
        int64_t bo = msglog_arena_put(a, body, m->len);
        int64_t k = sqlite3_column_type(s, 5) == SQLITE_NULL
                        ? -1
                        : msglog_arena_put(a, sqlite3_column_text(s, 5),
                                           (size_t)sqlite3_column_bytes(s, 5));
        if (t < 0 || bo < 0 || (k < 0 && sqlite3_column_type(s, 5) != SQLITE_NULL))
            return msglog_fail(log, -ENOMEM, "out of memory");
        m->type = (const char *)(intptr_t)t;
        m->body = (const unsigned char *)(intptr_t)bo;
        m->key = k < 0 ? NULL : (const char *)(intptr_t)k;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "reading messages");
    return 0;
}

/* Turn arena offsets into pointers now that the arena no longer moves. */
static void msglog_fixup(msglog_batch *b, msglog_arena *a) {
    for (size_t i = 0; i < b->n; i++) {
        msglog_msg *m = &b->msgs[i];
        m->channel = a->p + (intptr_t)m->channel;
        m->type = a->p + (intptr_t)m->type;
        m->body = (const unsigned char *)a->p + (intptr_t)m->body;
        if (m->key)
            m->key = a->p + (intptr_t)m->key;
    }
}

/* The body of msglog_read, inside its read transaction. */
static int msglog_read_locked(msglog *log, const msglog_query *q, msglog_batch *b,
                              msglog_arena *a, msglog_chan *ch) {
    char json[24 * 64 + 4];
    size_t nch = 0;
    int rc;
    b->head = msglog_head_locked(log);
    if (b->head < 0)
        return msglog_sqlfail(log, sqlite3_errcode(log->db), "reading the head");
    b->cursor = b->head;
    if ((q->epoch && strcmp(q->epoch, log->epoch) != 0) || q->since > b->head) {
        b->reset = 1;
        return 0;
    }
    if ((q->since < 0 && q->last <= 0) || (rc = msglog_resolve(log, q, a, ch, &nch)) || !nch)
        return q->since < 0 && q->last <= 0 ? 0 : rc;
    int64_t start = q->since;
    if (q->last > 0)
        start = msglog_last_start(log, ch, nch, q->last, json, sizeof json);
    else
        for (size_t i = 0; i < nch; i++)
            b->gap |= ch[i].pruned > start;
    sqlite3_stmt *s = msglog_bind_channels(log, ST_READ_ONE, ST_READ_MANY, ch, nch, json,
                                           sizeof json);
    sqlite3_bind_int64(s, 2, start);
    sqlite3_bind_int64(s, 3, q->limit ? (int64_t)q->limit + 1 : -1);
    if ((rc = msglog_collect(log, s, ch, nch, q->limit, a, b)))
        return rc;
    if (b->gap && b->n)
        b->oldest = b->msgs[0].id;
    if (b->more)
        b->cursor = b->msgs[b->n - 1].id;
    return 0;
}

int msglog_read(msglog *log, const msglog_query *q, msglog_batch *b) {
    msglog_chan ch[64];
    memset(b, 0, sizeof *b);
    snprintf(b->epoch, sizeof b->epoch, "%s", log->epoch);
    if (q->nchannels > sizeof ch / sizeof ch[0])
        return msglog_fail(log, -E2BIG, "too many channels (at most %zu)",
                           sizeof ch / sizeof ch[0]);
    msglog_arena *a = calloc(1, sizeof *a);
    if (!a)
        return msglog_fail(log, -ENOMEM, "out of memory");
    b->arena_ = a;
    int rc = msglog_exec_stmt(log, ST_BEGIN_READ);
    if (rc)
        return rc;
    rc = msglog_read_locked(log, q, b, a, ch);
    msglog_rollback(log); /* a read transaction: nothing to commit */
    if (rc) {
        msglog_batch_free(b);
        return rc;
    }
    msglog_fixup(b, a);
    return 0;
}

int msglog_changed(msglog *log) {
    sqlite3_stmt *s = msglog_stmt(log, ST_DATA_VERSION);
    int rc = sqlite3_step(s);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    if (v < 0)
        return msglog_sqlfail(log, rc, "PRAGMA data_version");
    int changed = v != log->data_version;
    log->data_version = v;
    return changed;
}

/* ---- retention --------------------------------------------------------- */

/* Delete up to `budget` of a channel's rows matching `where` (a condition on
 * id/time_ms with ?2 = threshold), oldest first, and raise pruned_through.
 * Runs inside the caller's write transaction. */
static int msglog_prune_rule(msglog *log, int64_t chan, const char *where, int64_t threshold,
                             int64_t budget, int64_t *deleted) {
    char sql[512];
    sqlite3_stmt *s = NULL;
    int64_t upto = 0;
    snprintf(sql, sizeof sql,
             "SELECT max(id) FROM (SELECT id FROM message WHERE channel = ?1 AND %s"
             " ORDER BY id LIMIT ?3)", where);
    int rc = sqlite3_prepare_v2(log->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, chan);
        sqlite3_bind_int64(s, 2, threshold);
        sqlite3_bind_int64(s, 3, budget > 0 ? budget : -1);
        if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            upto = sqlite3_column_int64(s, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_OK || upto == 0)
        return rc == SQLITE_OK ? 0 : msglog_sqlfail(log, rc, "retention");
    snprintf(sql, sizeof sql,
             "DELETE FROM message WHERE channel = ?1 AND %s AND id <= ?3;"
             , where);
    rc = sqlite3_prepare_v2(log->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, chan);
        sqlite3_bind_int64(s, 2, threshold);
        sqlite3_bind_int64(s, 3, upto);
        rc = sqlite3_step(s);
        *deleted += sqlite3_changes(log->db);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "retention");
    rc = sqlite3_prepare_v2(log->db,
                            "UPDATE channel SET pruned_through = max(pruned_through, ?2)"
                            " WHERE id = ?1", -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, chan);
        sqlite3_bind_int64(s, 2, upto);
        rc = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : msglog_sqlfail(log, rc, "retention");
}

/* Apply one channel's rule in its own short write transaction. */
static int msglog_prune_channel(msglog *log, int64_t chan, msglog_retention r, int64_t budget,
                                int64_t *deleted) {
    int rc = msglog_exec_stmt(log, ST_BEGIN_WRITE);
    if (rc)
        return rc;
    if (r.max_messages > 0) {
        sqlite3_stmt *s = msglog_stmt(log, ST_NTH_NEWEST_ONE);
        sqlite3_bind_int64(s, 1, chan);
        sqlite3_bind_int64(s, 2, r.max_messages - 1);
        int64_t keep_from = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (keep_from > 0 &&
            (rc = msglog_prune_rule(log, chan, "id < ?2", keep_from, budget, deleted)))
            goto fail;
    }
    if (r.max_age_s > 0) {
        int64_t cutoff = msglog_now_ms() - r.max_age_s * 1000;
        int64_t left = budget > 0 ? budget - *deleted : 0;
        if ((budget <= 0 || left > 0) &&
            (rc = msglog_prune_rule(log, chan, "time_ms < ?2", cutoff, left, deleted)))
            goto fail;
    }
    return msglog_exec_stmt(log, ST_COMMIT);
fail:
    msglog_rollback(log);
    return rc;
}

int msglog_prune(msglog *log, int64_t budget, int64_t *deleted) {
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(log->db, "SELECT id, name FROM channel ORDER BY id", -1, &s,
                                NULL);
    *deleted = 0;
    if (rc != SQLITE_OK)
        return msglog_sqlfail(log, rc, "retention");
    /* Collect first: pruning writes, and a statement must not stay open
     * across the write transactions. */
    size_t n = 0, cap = 0;
    struct pr { int64_t id; msglog_retention r; } *list = NULL;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        msglog_retention r = {0, 0};
        if (log->retention)
            r = log->retention((const char *)sqlite3_column_text(s, 1), log->retention_ud);
        if (r.max_messages <= 0 && r.max_age_s <= 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct pr *l = realloc(list, cap * sizeof *l);
            if (!l) {
                rc = SQLITE_NOMEM;
                break;
            }
            list = l;
        }
        list[n].id = sqlite3_column_int64(s, 0);
        list[n++].r = r;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        free(list);
        return rc == SQLITE_NOMEM ? msglog_fail(log, -ENOMEM, "out of memory")
                                  : msglog_sqlfail(log, rc, "retention");
    }
    rc = 0;
    for (size_t i = 0; i < n && !rc && (budget <= 0 || *deleted < budget); i++) {
        int64_t d = 0;
        rc = msglog_prune_channel(log, list[i].id, list[i].r,
                                  budget > 0 ? budget - *deleted : 0, &d);
        *deleted += d;
    }
    free(list);
    return rc;
}

int msglog_stats_get(msglog *log, msglog_stats *st) {
    memset(st, 0, sizeof *st);
    snprintf(st->epoch, sizeof st->epoch, "%s", log->epoch);
    int rc = msglog_exec_stmt(log, ST_BEGIN_READ);
    if (rc)
        return rc;
    st->head = msglog_head_locked(log);
    if (!(rc = msglog_pragma_int(log, "SELECT count(*) FROM message", &st->messages)) &&
        !(rc = msglog_pragma_int(log, "SELECT count(*) FROM channel", &st->channels)))
        rc = msglog_pragma_int(log,
                               "SELECT coalesce(sum(length(CAST(body AS BLOB))), 0) FROM message",
                               &st->bytes);
    msglog_rollback(log);
    return rc;
}

int msglog_changed_channels(msglog *log, int64_t since, int64_t *head,
                            void (*fn)(const char *channel, void *ud), void *ud) {
    int rc = msglog_exec_stmt(log, ST_BEGIN_READ);
    if (rc)
        return rc;
    *head = msglog_head_locked(log);
    if (*head < 0) {
        rc = msglog_sqlfail(log, sqlite3_errcode(log->db), "reading the head");
    } else if (*head > since) {
        sqlite3_stmt *s = msglog_stmt(log, ST_CHANGED);
        sqlite3_bind_int64(s, 1, since);
        sqlite3_bind_int64(s, 2, *head);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            fn((const char *)sqlite3_column_text(s, 0), ud);
        sqlite3_reset(s);
        rc = rc == SQLITE_DONE ? 0 : msglog_sqlfail(log, rc, "finding changed channels");
    }
    msglog_rollback(log);
    return rc;
}
