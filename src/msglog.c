/* msglog.c -- the durable message log: schema, append, read-after-cursor,
 * idempotency, retention.
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
 * RESETS.  Each database gets a random epoch when it is created; migrations
 * keep it.  A client cursor from another epoch, or above the head, cannot be
 * interpreted: the batch says reset=1 and carries the head, so the client
 * reloads.
 *
 * IDEMPOTENCY (schema 2).  `idem(channel, key, msg_id, time_ms, digest)`,
 * UNIQUE(channel, key), remembers every idempotency key apart from the
 * message it produced, so compaction (which deletes messages) cannot make a
 * retry publish twice.  digest is FNV-1a 64 over the length-prefixed content
 * type, compaction key and body, computed in C.  A repeat of (channel, key)
 * with the same digest is answered with the original id and time
 * (replayed=1); with another digest it is refused (-EEXIST) and writes
 * nothing.  Retention deletes a channel's idem rows with msg_id <= the
 * pruned_through it sets -- compaction never does -- so THE IDEMPOTENCY
 * WINDOW IS THE RETENTION: a key is honoured as long as retention has not
 * passed its message, and forever on a channel without retention.
 *
 * COUNTS (schema 2).  Triggers on message and channel keep `counts` (one
 * row: messages, bytes, channels) and channel.messages exact inside every
 * transaction that changes them, whoever writes, so /stats reads one row and
 * retention skips a channel under its count limit without touching
 * `message`.  The migration initialises them from the data.
 *
 * RETENTION.  A channel keeps the newest retain_messages and drops a prefix
 * (in id order) of rows older than retain_seconds.  One incremental pass
 * (after every prune_every appends) is bounded twice: at most `budget` rows
 * and at most MSGLOG_PRUNE_VISIT_MAX channels -- those this handle appended
 * to since the last pass, then the next MSGLOG_PRUNE_ROUND in round-robin
 * order from where the previous pass stopped (remembered in the handle) --
 * so its cost does not grow with the number of channels ever created.
 * `holdfast prune` (budget 0) walks every channel.
 *
 * OUTBOX.  Other programs on the host publish with one statement,
 *     INSERT INTO publish(channel, body) VALUES ('news', 'hello');
 * through an INSTEAD OF trigger on the `publish` view, which applies the
 * rules msglog_append applies: channel name, content type (length and bytes;
 * the full syntax is checked in C only), idempotency through the same `idem`
 * table and compaction.  SQL cannot compute the digest, so a row the trigger
 * adds has digest NULL, and the trigger tells a different message from a
 * repeat by comparing with the original message while it is held; once that
 * is compacted away a repeat through the view is taken as a replay.  C does
 * the same for a NULL digest (it digests the held original).
 *
 * STORAGE FAULTS.  Every SQLite failure maps to one negative errno and a
 * sentence naming the file (msglog_sqlfail); a failed append rolls back and
 * leaves the handle usable.  An append first checks that the file at the
 * path is still the one open: a commit into a file that was removed (with
 * its directory) or replaced would be acknowledged and lost (-ESTALE).
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

#include "clock.h"

#define MSGLOG_DEFAULT_BUSY_MS 5000
#define MSGLOG_DEFAULT_PRUNE_EVERY 256
#define MSGLOG_PRUNE_BUDGET 2000
#define MSGLOG_FALLBACK_TYPE "application/octet-stream"

#define MSGLOG_STR_(x) #x
#define MSGLOG_STR(x) MSGLOG_STR_(x)

/* SQL, true when the content type x would break an answer: longer than
 * MSGLOG_TYPE_MAX bytes, a NUL, or a character other than tab and visible
 * ASCII or space (GLOB sees a control or non-ASCII byte as outside ' '-'~'). */
#define MSGLOG_SQL_TYPE_UNSAFE(x)                                                     \
    "(length(CAST(" x " AS BLOB)) > " MSGLOG_STR(MSGLOG_TYPE_MAX)                     \
    " OR instr(CAST(" x " AS BLOB), X'00') > 0"                                       \
    " OR CAST(" x " AS TEXT) GLOB ('*[^' || char(9) || ' -~]*'))"

#define MSGLOG_SQL_NOW "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
#define MSGLOG_SQL_CHAN "(SELECT id FROM channel WHERE name = NEW.channel)"

/* Schema migrations: entry v brings user_version v-1 to v.  Migration 2
 * calls holdfast_digest(), which msglog_setup registers on the connection. */
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
    /* 2: idempotency apart from messages, counts kept by triggers, content
     * types checked.  message.idem is no longer written (v1 rows keep their
     * value; the idem table is the truth). */
    "CREATE TABLE idem(channel INTEGER NOT NULL REFERENCES channel(id), key TEXT NOT NULL,"
    "  msg_id INTEGER NOT NULL, time_ms INTEGER NOT NULL, digest INTEGER,"
    "  UNIQUE(channel, key));"
    "CREATE INDEX idem_channel_msg ON idem(channel, msg_id);"
    "INSERT INTO idem(channel, key, msg_id, time_ms, digest)"
    "  SELECT channel, idem, id, time_ms, holdfast_digest(type, key, body)"
    "  FROM message WHERE idem IS NOT NULL;"
    "DROP INDEX message_channel_idem;"
    /* A type no proxy can carry made every raw answer fail: keep the body. */
    "UPDATE message SET type = '" MSGLOG_FALLBACK_TYPE "'"
    "  WHERE " MSGLOG_SQL_TYPE_UNSAFE("type") ";"
    "ALTER TABLE channel ADD COLUMN messages INTEGER NOT NULL DEFAULT 0;"
    "UPDATE channel SET messages = (SELECT count(*) FROM message m WHERE m.channel = channel.id);"
    "CREATE TABLE counts(id INTEGER PRIMARY KEY CHECK (id = 1), messages INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL, channels INTEGER NOT NULL);"
    "INSERT INTO counts SELECT 1, count(*), coalesce(sum(length(CAST(body AS BLOB))), 0),"
    "  (SELECT count(*) FROM channel) FROM message;"
    "CREATE TRIGGER message_counts_insert AFTER INSERT ON message BEGIN"
    "  UPDATE counts SET messages = messages + 1, bytes = bytes + length(CAST(NEW.body AS BLOB));"
    "  UPDATE channel SET messages = messages + 1 WHERE id = NEW.channel;"
    "END;"
    "CREATE TRIGGER message_counts_delete AFTER DELETE ON message BEGIN"
    "  UPDATE counts SET messages = messages - 1, bytes = bytes - length(CAST(OLD.body AS BLOB));"
    "  UPDATE channel SET messages = messages - 1 WHERE id = OLD.channel;"
    "END;"
    "CREATE TRIGGER message_counts_update AFTER UPDATE OF channel, body ON message BEGIN"
    "  UPDATE counts SET bytes = bytes - length(CAST(OLD.body AS BLOB))"
    "                              + length(CAST(NEW.body AS BLOB));"
    "  UPDATE channel SET messages = messages - 1 WHERE id = OLD.channel;"
    "  UPDATE channel SET messages = messages + 1 WHERE id = NEW.channel;"
    "END;"
    "CREATE TRIGGER channel_counts_insert AFTER INSERT ON channel BEGIN"
    "  UPDATE counts SET channels = channels + 1;"
    "END;"
    "CREATE TRIGGER channel_counts_delete AFTER DELETE ON channel BEGIN"
    "  UPDATE counts SET channels = channels - 1;"
    "END;"
    "DROP TRIGGER publish_insert;"
    "CREATE TRIGGER publish_insert INSTEAD OF INSERT ON publish BEGIN"
    "  SELECT RAISE(ABORT, 'holdfast: invalid channel name')"
    "   WHERE NEW.channel IS NULL OR length(CAST(NEW.channel AS BLOB)) NOT BETWEEN 1 AND 128"
    "      OR NEW.channel GLOB '*[^A-Za-z0-9._:@-]*';"
    "  SELECT RAISE(ABORT, 'holdfast: body is NULL') WHERE NEW.body IS NULL;"
    "  SELECT RAISE(ABORT, 'holdfast: invalid content type')"
    "   WHERE NEW.type IS NOT NULL AND (" MSGLOG_SQL_TYPE_UNSAFE("NEW.type")
    "      OR CAST(NEW.type AS TEXT) NOT GLOB '?*/?*');"
    "  SELECT RAISE(ABORT, 'holdfast: Idempotency-Key reused with a different message')"
    "   WHERE NEW.idem IS NOT NULL AND EXISTS (SELECT 1 FROM idem i"
    "     JOIN message m ON m.id = i.msg_id"
    "     WHERE i.channel = " MSGLOG_SQL_CHAN " AND i.key = NEW.idem"
    "       AND (m.type IS NOT coalesce(NEW.type, '" MSGLOG_DEFAULT_TYPE "')"
    "            OR m.key IS NOT NEW.key"
    "            OR CAST(m.body AS BLOB) IS NOT CAST(NEW.body AS BLOB)));"
    "  INSERT OR IGNORE INTO channel(name) VALUES (NEW.channel);"
    "  DELETE FROM message WHERE NEW.key IS NOT NULL AND key = NEW.key"
    "   AND channel = " MSGLOG_SQL_CHAN
    "   AND NOT EXISTS (SELECT 1 FROM idem i WHERE NEW.idem IS NOT NULL"
    "     AND i.channel = " MSGLOG_SQL_CHAN " AND i.key = NEW.idem);"
    "  INSERT INTO message(channel, time_ms, type, body, key)"
    "   SELECT c.id, " MSGLOG_SQL_NOW ", coalesce(NEW.type, '" MSGLOG_DEFAULT_TYPE "'),"
    "          NEW.body, NEW.key"
    "   FROM channel c WHERE c.name = NEW.channel"
    "    AND NOT EXISTS (SELECT 1 FROM idem i WHERE NEW.idem IS NOT NULL"
    "      AND i.channel = c.id AND i.key = NEW.idem);"
    /* The message just added is its channel's newest; a replay added none
     * and finds its idem row. */
    "  INSERT INTO idem(channel, key, msg_id, time_ms, digest)"
    "   SELECT m.channel, NEW.idem, m.id, m.time_ms, NULL FROM message m"
    "   WHERE NEW.idem IS NOT NULL"
    "     AND m.id = (SELECT max(id) FROM message WHERE channel = " MSGLOG_SQL_CHAN ")"
    "     AND NOT EXISTS (SELECT 1 FROM idem i WHERE i.channel = m.channel"
    "       AND i.key = NEW.idem);"
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
    ST_INSERT,
    ST_COMPACT,
    ST_READ_ONE,
    ST_READ_MANY,
    ST_NTH_NEWEST_ONE,
    ST_NTH_NEWEST_MANY,
    ST_DATA_VERSION,
    ST_CHANGED,
    /* From here on, statements need schema 2 (a read-only handle on an
     * older file does without them). */
    ST_IDEM_FIND,
    ST_IDEM_ADD,
    ST_COUNTS,
    ST_PRUNE_PAGE,
    ST_PRUNE_CHANNEL,
    ST_AGE_WALK,
    ST_PRUNE_UPTO,
    ST_PRUNE_DELETE,
    ST_PRUNE_IDEM,
    ST_PRUNE_MARK,
    ST__COUNT
};
#define ST__V2_FIRST ST_IDEM_FIND

static const char *const msglog_sql[ST__COUNT] = {
    [ST_BEGIN_READ] = "BEGIN",
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_HEAD] = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name='message'), 0)",
    [ST_CHANNEL_GET] = "SELECT id, pruned_through FROM channel WHERE name = ?1",
    [ST_CHANNEL_ADD] = "INSERT INTO channel(name) VALUES (?1)",
    [ST_INSERT] = "INSERT INTO message(channel, time_ms, type, body, key)"
                  " VALUES (?1, ?2, ?3, ?4, ?5)",
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
    [ST_IDEM_FIND] = "SELECT i.msg_id, i.time_ms, i.digest, m.type, m.key, m.body"
                     " FROM idem i LEFT JOIN message m ON m.id = i.msg_id"
                     " WHERE i.channel = ?1 AND i.key = ?2",
    [ST_IDEM_ADD] = "INSERT INTO idem(channel, key, msg_id, time_ms, digest)"
                    " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_COUNTS] = "SELECT messages, bytes, channels FROM counts",
    [ST_PRUNE_PAGE] = "SELECT id, name, messages FROM channel WHERE id > ?1"
                      " ORDER BY id LIMIT ?2",
    [ST_PRUNE_CHANNEL] = "SELECT id, name, messages FROM channel WHERE id = ?1",
    [ST_AGE_WALK] = "SELECT id, time_ms FROM message WHERE channel = ?1 AND id >= ?2"
                    " ORDER BY id LIMIT ?3",
    [ST_PRUNE_UPTO] = "SELECT max(id) FROM (SELECT id FROM message WHERE channel = ?1"
                      " AND id < ?2 ORDER BY id LIMIT ?3)",
    [ST_PRUNE_DELETE] = "DELETE FROM message WHERE channel = ?1 AND id <= ?2",
    [ST_PRUNE_IDEM] = "DELETE FROM idem WHERE channel = ?1 AND msg_id <= ?2",
    [ST_PRUNE_MARK] = "UPDATE channel SET pruned_through = max(pruned_through, ?2)"
                      " WHERE id = ?1",
};

struct msglog {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    sqlite3_stmt *st_stream; /* msglog_is_stream, prepared on first use */
    sqlite3_stmt *st_stream_name; /* msglog_stream_named, likewise */
    char epoch[MSGLOG_EPOCH_LEN + 1];
    char path[PATH_MAX];
    int readonly;
    int64_t schema; /* user_version of the open file */
    msglog_retention_fn retention;
    void *retention_ud;
    int prune_every;
    int appends_since_prune;
    int64_t prune_cursor;           /* round robin: the next pass starts after this id */
    int64_t hot[MSGLOG_PRUNE_HOT];  /* channels appended to since the last pass */
    size_t nhot;
    int64_t prune_visited;
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

/* Map an SQLite result code to a negative errno and record what happened
 * in words, SQLite's own message and the file. */
static int msglog_sqlfail(msglog *log, int rc, const char *what) {
    int code = -EIO;
    const char *why = "SQLite failed";
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        code = -EBUSY;
        why = "the database is locked by another writer beyond the busy timeout";
        break;
    case SQLITE_NOMEM: code = -ENOMEM; why = "out of memory"; break;
    case SQLITE_READONLY:
        code = rc == SQLITE_READONLY_DBMOVED ? -ESTALE : -EROFS;
        why = rc == SQLITE_READONLY_DBMOVED ? "the database file was removed or replaced"
                                            : "the database cannot be written";
        break;
    case SQLITE_FULL: code = -ENOSPC; why = "the disk is full"; break;
    case SQLITE_CONSTRAINT: code = -EINVAL; why = "refused by the schema"; break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        code = -EILSEQ;
        why = "the database file is corrupt or truncated";
        break;
    case SQLITE_CANTOPEN: code = -ENOENT; why = "cannot open the database file"; break;
    case SQLITE_IOERR: why = "I/O error"; break;
    }
    return msglog_fail(log, code, "%s: %s: %s (%s)", what, why, sqlite3_errmsg(log->db),
                       log->path);
}

struct sqlite3 *msglog_sqlite(msglog *log) {
    return log->db;
}

int msglog_sqlite_fail(msglog *log, int rc, const char *what) {
    return msglog_sqlfail(log, rc, what);
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

/* Step a statement expected to give at most one row: 1 and *out = column 0
 * (0 when NULL), 0 for no row, <0 on error. */
static int msglog_step_int(msglog *log, sqlite3_stmt *s, const char *what, int64_t *out) {
    int rc = sqlite3_step(s);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, what);
    return rc == SQLITE_ROW;
}

static void msglog_rollback(msglog *log) {
    if (!sqlite3_get_autocommit(log->db))
        sqlite3_step(msglog_stmt(log, ST_ROLLBACK));
    sqlite3_reset(log->st[ST_ROLLBACK]);
}

int64_t msglog_now_ms(void) {
    return msglog_clock ? msglog_clock() : clock_real_ms();
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

/* ---- content types ------------------------------------------------------ */

/* RFC 9110 tchar. */
static int msglog_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static size_t msglog_token_len(const char *s) {
    size_t n = 0;
    while (msglog_tchar((unsigned char)s[n]))
        n++;
    return n;
}

static size_t msglog_ows_len(const char *s) {
    size_t n = 0;
    while (s[n] == ' ' || s[n] == '\t')
        n++;
    return n;
}

/* Length of the quoted-string at s (s[0] == '"'), or 0 if malformed. */
static size_t msglog_quoted_len(const char *s) {
    size_t i = 1;
    for (; s[i] != '"'; i++) {
        if (s[i] == '\\')
            i++;
        unsigned char c = (unsigned char)s[i];
        if (!(c == '\t' || (c >= 0x20 && c < 0x7f)))
            return 0; /* a control byte, non-ASCII, or the end of the string */
    }
    return i + 1;
}

int msglog_type_valid(const char *type) {
    if (!type || strnlen(type, MSGLOG_TYPE_MAX + 1) > MSGLOG_TYPE_MAX)
        return 0;
    size_t n = msglog_token_len(type);
    if (n == 0 || type[n] != '/')
        return 0;
    const char *p = type + n + 1;
    if ((n = msglog_token_len(p)) == 0)
        return 0;
    for (p += n;;) { /* parameters: *( OWS ";" OWS [ name "=" value ] ) */
        p += msglog_ows_len(p);
        if (*p == '\0')
            return 1;
        if (*p++ != ';')
            return 0;
        p += msglog_ows_len(p);
        if (*p == '\0' || *p == ';')
            continue;
        if ((n = msglog_token_len(p)) == 0 || p[n] != '=')
            return 0;
        p += n + 1;
        n = *p == '"' ? msglog_quoted_len(p) : msglog_token_len(p);
        if (n == 0)
            return 0;
        p += n;
    }
}

/* ---- digests -------------------------------------------------------------- */

/* FNV-1a 64 of one field, length first (UINT64_MAX for an absent field), so
 * that ("ab", "c") and ("a", "bc") differ. */
static uint64_t msglog_fnv_field(uint64_t h, const void *p, size_t n) {
    uint64_t len = p ? (uint64_t)n : UINT64_MAX;
    for (int i = 0; i < 8; i++)
        h = (h ^ ((len >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
    for (size_t i = 0; p && i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ULL;
    return h;
}

/* The digest idempotency compares: content type, compaction key, body. */
static int64_t msglog_digest(const char *type, size_t tlen, const char *key, size_t klen,
                             const void *body, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL;
    h = msglog_fnv_field(h, type, tlen);
    h = msglog_fnv_field(h, key, klen);
    h = msglog_fnv_field(h, body ? body : "", len);
    int64_t d;
    memcpy(&d, &h, sizeof d);
    return d;
}

/* holdfast_digest(type, key, body) for the schema 2 migration. */
static void msglog_sql_digest(sqlite3_context *cx, int argc, sqlite3_value **v) {
    (void)argc;
    const char *type = (const char *)sqlite3_value_text(v[0]);
    size_t tlen = (size_t)sqlite3_value_bytes(v[0]);
    const char *key = sqlite3_value_type(v[1]) == SQLITE_NULL
                          ? NULL
                          : (const char *)sqlite3_value_text(v[1]);
    size_t klen = key ? (size_t)sqlite3_value_bytes(v[1]) : 0;
    const void *body = sqlite3_value_blob(v[2]);
    size_t blen = (size_t)sqlite3_value_bytes(v[2]);
    sqlite3_result_int64(cx, msglog_digest(type ? type : "", tlen, key, klen, body, blen));
}

const char *msglog_errmsg(const msglog *log) {
    return log ? log->err : "out of memory";
}

const char *msglog_epoch(const msglog *log) {
    return log->epoch;
}

/* ---- open, schema ----------------------------------------------------- */

/* Explain why the file cannot be opened, before SQLite gives a vaguer error.
 * Mode bits count even for root: a 0444 file or a 0555 directory is meant to
 * stay as it is. */
static int msglog_check_path(msglog *log, const msglog_options *opt) {
    struct stat st;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", opt->path);
    const char *d = dirname(dir);
    if (stat(opt->path, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return msglog_fail(log, -EINVAL, "%s is not a regular file", opt->path);
        if (!opt->readonly && (access(opt->path, W_OK) != 0 || !(st.st_mode & 0222)))
            return msglog_fail(log, -EROFS, "database %s is read-only (its permissions)",
                               opt->path);
    } else if (errno != ENOENT) {
        return msglog_fail(log, -errno, "cannot open %s: %s", opt->path, strerror(errno));
    } else if (!opt->create || opt->readonly) {
        return msglog_fail(log, -ENOENT, "no database at %s (publishing creates it)",
                           opt->path);
    }
    if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode))
        return msglog_fail(log, -ENOENT, "cannot open database %s: directory %s does not exist",
                           opt->path, d);
    if (!opt->readonly && (access(d, W_OK) != 0 || !(st.st_mode & 0222)))
        return msglog_fail(log, -EACCES,
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
        sqlite3_free(msg);
        return code;
    }
    return 0;
}

/* The first column of the first row of an ad-hoc query (0 if no row). */
static int msglog_select_int(msglog *log, const char *sql, int64_t *out) {
    sqlite3_stmt *s = NULL;
    *out = 0;
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
        uint64_t x = (uint64_t)clock_real_ms() ^ ((uint64_t)getpid() << 32);
        memcpy(r, &x, sizeof r < sizeof x ? sizeof r : sizeof x);
    }
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* Is this file ours?  An empty file (no schema objects) may become ours. */
/* THE STREAMS' TABLES.  Durable streams (dstore.c) keep their metadata
 * beside the schema: created on every writable open with IF NOT EXISTS, not
 * as a numbered migration, because a worker of the previous release
 * refuses a user_version above its own -- and such workers keep running
 * while a site upgrades.  The trigger makes a closed (or deleted) stream
 * refuse every later row, whoever writes it (HTTP, the CLI, the SQL
 * outbox, an older worker), except the row that marks the close. */
static const char msglog_streams_schema[] =
    "CREATE TABLE IF NOT EXISTS ds_stream(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE, channel INTEGER NOT NULL, type TEXT NOT NULL,"
    "  base INTEGER NOT NULL, ttl_s INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    "  touched_ms INTEGER NOT NULL, closed INTEGER NOT NULL DEFAULT 0,"
    "  src INTEGER NOT NULL DEFAULT 0, cut_len INTEGER NOT NULL DEFAULT -1,"
    "  fork_from TEXT, fork_at INTEGER NOT NULL DEFAULT -1,"
    "  fork_sub INTEGER NOT NULL DEFAULT 0, refs INTEGER NOT NULL DEFAULT 0,"
    "  deleted INTEGER NOT NULL DEFAULT 0, close_pid TEXT, close_epoch INTEGER,"
    "  close_seq INTEGER, last_seq TEXT);"
    "CREATE INDEX IF NOT EXISTS ds_stream_channel ON ds_stream(channel);"
    "CREATE INDEX IF NOT EXISTS ds_stream_ended ON ds_stream(channel) WHERE closed OR deleted;"
    "CREATE TABLE IF NOT EXISTS ds_producer(stream INTEGER NOT NULL, producer TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(stream, producer));"
    "CREATE TRIGGER IF NOT EXISTS ds_stream_closed BEFORE INSERT ON message"
    "  WHEN NEW.key IS NOT '" MSGLOG_STREAM_MARK "' AND EXISTS (SELECT 1 FROM ds_stream s"
    "    WHERE s.channel = NEW.channel AND (s.closed OR s.deleted))"
    "  BEGIN SELECT RAISE(ABORT, 'holdfast: the stream is closed'); END;";

static int msglog_check_identity(msglog *log, int64_t version) {
    int64_t objects = 0;
    int rc = msglog_select_int(log, "SELECT count(*) FROM sqlite_schema", &objects);
    if (rc)
        return rc;
    if (version == 0 && objects == 0)
        return 0;
    int64_t ours = 0;
    rc = msglog_select_int(log,
                           "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='meta'",
                           &ours);
    if (rc)
        return rc;
    if (ours)
        rc = msglog_select_int(log, "SELECT count(*) FROM meta WHERE key='app' AND value='holdfast'",
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

/* Bring the schema to MSGLOG_SCHEMA_VERSION inside one write transaction
 * (another process may have done it first: the version is read again). */
static int msglog_migrate(msglog *log) {
    int64_t version = 0;
    int rc = msglog_exec(log, "BEGIN IMMEDIATE");
    if (rc)
        return rc;
    if ((rc = msglog_select_int(log, "PRAGMA user_version", &version)) ||
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
    if (sqlite3_create_function(log->db, "holdfast_digest", 3,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, msglog_sql_digest,
                                NULL, NULL) != SQLITE_OK)
        return msglog_sqlfail(log, sqlite3_errcode(log->db), "registering holdfast_digest");
    /* The first read tells a garbage file from a database, and a foreign
     * database is refused before anything (even journal_mode) is changed. */
    if ((rc = msglog_select_int(log, "PRAGMA user_version", &version)))
        goto notadb;
    if ((rc = msglog_check_identity(log, version)))
        goto notadb;
    log->schema = version;
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
        if ((rc = msglog_exec(log, msglog_streams_schema)))
            return rc;
        log->schema = MSGLOG_SCHEMA_VERSION;
    }
    return msglog_load_epoch(log);
notadb:
    if (rc == -EILSEQ)
        return msglog_fail(log, rc, "%s is not an SQLite database, or it is corrupt or "
                                    "truncated (%s)", log->path, sqlite3_errmsg(log->db));
    return rc;
}

static int msglog_prepare_all(msglog *log) {
    int n = log->schema >= 2 ? ST__COUNT : ST__V2_FIRST;
    for (int i = 0; i < n; i++) {
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
    log->readonly = opt->readonly;
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
    sqlite3_finalize(log->st_stream);
    sqlite3_finalize(log->st_stream_name);
    sqlite3_close(log->db);
    free(log);
}

void msglog_set_busy_timeout(msglog *log, int ms) {
    sqlite3_busy_timeout(log->db, ms > 0 ? ms : 0);
}

int msglog_synchronous(msglog *log) {
    int64_t v = 0;
    int rc = msglog_select_int(log, "PRAGMA synchronous", &v);
    return rc ? rc : (int)v;
}

/* ---- append ------------------------------------------------------------ */

/* The head as the current transaction (or, outside one, the last commit)
 * sees it; -1 on error. */
static int64_t msglog_head_query(msglog *log) {
    sqlite3_stmt *s = msglog_stmt(log, ST_HEAD);
    int64_t head = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    return head;
}

int64_t msglog_head(msglog *log) {
    return msglog_head_query(log);
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

/* The digest an idem row should have: its own, else (a row the outbox
 * trigger added) the held original's; 0 in *known if neither exists. */
static int64_t msglog_idem_digest(sqlite3_stmt *s, int *known) {
    *known = 1;
    if (sqlite3_column_type(s, 2) != SQLITE_NULL)
        return sqlite3_column_int64(s, 2);
    if (sqlite3_column_type(s, 3) == SQLITE_NULL) {
        *known = 0; /* compacted away: nothing to compare with */
        return 0;
    }
    const char *type = (const char *)sqlite3_column_text(s, 3);
    size_t tlen = (size_t)sqlite3_column_bytes(s, 3);
    const char *key = sqlite3_column_type(s, 4) == SQLITE_NULL
                          ? NULL
                          : (const char *)sqlite3_column_text(s, 4);
    size_t klen = key ? (size_t)sqlite3_column_bytes(s, 4) : 0;
    const void *body = sqlite3_column_blob(s, 5);
    size_t blen = (size_t)sqlite3_column_bytes(s, 5);
    return msglog_digest(type ? type : "", tlen, key, klen, body, blen);
}

/* Look (channel, idem) up: 1 and the original ack if it was used for the
 * same message, 0 if unused, -EEXIST if used for a different one. */
static int msglog_idem_find(msglog *log, int64_t chan, const char *idem, int64_t digest,
                            msglog_ack *ack) {
    sqlite3_stmt *s = msglog_stmt(log, ST_IDEM_FIND);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_text(s, 2, idem, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s), known = 0, same = 1;
    if (rc == SQLITE_ROW) {
        ack->id = sqlite3_column_int64(s, 0);
        ack->time_ms = sqlite3_column_int64(s, 1);
        ack->replayed = 1;
        int64_t d = msglog_idem_digest(s, &known);
        same = !known || d == digest;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "checking the idempotency key");
    if (!same) {
        memset(ack, 0, sizeof *ack);
        return msglog_fail(log, -EEXIST, "Idempotency-Key reused with a different message");
    }
    return rc == SQLITE_ROW;
}

static int msglog_idem_add(msglog *log, int64_t chan, const char *idem, const msglog_ack *ack,
                           int64_t digest) {
    sqlite3_stmt *s = msglog_stmt(log, ST_IDEM_ADD);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_text(s, 2, idem, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, ack->id);
    sqlite3_bind_int64(s, 4, ack->time_ms);
    sqlite3_bind_int64(s, 5, digest);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : msglog_sqlfail(log, rc, "recording the idempotency key");
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

/* Remember a channel for the next incremental retention pass (a full list
 * drops it: the round robin reaches it). */
static void msglog_hot_add(msglog *log, int64_t chan) {
    for (size_t i = 0; i < log->nhot; i++)
        if (log->hot[i] == chan)
            return;
    if (log->nhot < MSGLOG_PRUNE_HOT)
        log->hot[log->nhot++] = chan;
}

/* Insert one entry inside the caller's write transaction. */
static int msglog_insert(msglog *log, const msglog_entry *e, msglog_ack *ack) {
    const char *type = e->type ? e->type : MSGLOG_DEFAULT_TYPE;
    const void *body = e->len ? e->body : "";
    int64_t chan = 0;
    int rc;
    memset(ack, 0, sizeof *ack);
    if (!e->channel || !msglog_channel_valid(e->channel, strlen(e->channel)))
        return msglog_fail(log, -EINVAL, "invalid channel name (1-%d bytes of A-Za-z0-9._:@-)",
                           MSGLOG_CHANNEL_MAX);
    if (!msglog_type_valid(type))
        return msglog_fail(log, -EINVAL,
                           "invalid content type (a media type such as text/plain;charset=utf-8:"
                           " at most %d bytes of visible ASCII, no control characters)",
                           MSGLOG_TYPE_MAX);
    if ((rc = msglog_channel_id(log, e->channel, 1, &chan, NULL)) < 0)
        return rc;
    int64_t digest = msglog_digest(type, strlen(type), e->key, e->key ? strlen(e->key) : 0,
                                   body, e->len);
    if (e->idem && (rc = msglog_idem_find(log, chan, e->idem, digest, ack)) != 0)
        return rc < 0 ? rc : 0;
    ack->time_ms = msglog_now_ms();
    sqlite3_stmt *s = msglog_stmt(log, ST_INSERT);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_int64(s, 2, ack->time_ms);
    sqlite3_bind_text(s, 3, type, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(s, 4, body, e->len, SQLITE_STATIC);
    if (e->key)
        sqlite3_bind_text(s, 5, e->key, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return msglog_sqlfail(log, rc, "appending a message");
    ack->id = sqlite3_last_insert_rowid(log->db);
    if ((e->idem && (rc = msglog_idem_add(log, chan, e->idem, ack, digest))) ||
        (e->key && (rc = msglog_compact(log, chan, e->key, ack->id))))
        return rc;
    if (log->retention)
        msglog_hot_add(log, chan);
    return 0;
}

/* Refuse to write where a commit would be lost or cannot happen. */
static int msglog_check_writable(msglog *log) {
    int moved = 0;
    if (log->readonly)
        return msglog_fail(log, -EROFS, "the log %s was opened read-only", log->path);
    if (sqlite3_file_control(log->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK &&
        moved)
        return msglog_fail(log, -ESTALE,
                           "the database %s was removed or replaced since it was opened"
                           " (reopen it)", log->path);
    return 0;
}

int msglog_append_batch(msglog *log, const msglog_entry *e, size_t n, msglog_ack *acks) {
    int rc = msglog_check_writable(log);
    if (rc || (rc = msglog_exec_stmt(log, ST_BEGIN_WRITE)))
        return rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = msglog_insert(log, &e[i], &acks[i])))
            goto fail;
    if ((rc = msglog_exec_stmt(log, ST_COMMIT)))
        goto fail;
    log->appends_since_prune += (int)n;
    if (log->retention && log->prune_every > 0 && log->appends_since_prune >= log->prune_every) {
        int64_t deleted;
        char keep[sizeof log->err];
        log->appends_since_prune = 0;
        /* Retention is housekeeping: the messages are committed whatever it
         * says, and the caller must not see its error text. */
        memcpy(keep, log->err, sizeof keep);
        msglog_prune(log, MSGLOG_PRUNE_BUDGET, &deleted);
        memcpy(log->err, keep, sizeof keep);
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

/* Set *start just below the newest `last` messages of the set (0 if fewer). */
static int msglog_last_start(msglog *log, const msglog_chan *ch, size_t nch, int64_t last,
                             char *json, size_t jsonlen, int64_t *start) {
    sqlite3_stmt *s = msglog_bind_channels(log, ST_NTH_NEWEST_ONE, ST_NTH_NEWEST_MANY, ch, nch,
                                           json, jsonlen);
    sqlite3_bind_int64(s, 2, last - 1);
    int rc = msglog_step_int(log, s, "finding the newest messages", start);
    if (rc < 0)
        return rc;
    *start = rc ? *start - 1 : 0;
    return 0;
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
            if (!m) {
                sqlite3_reset(s);
                return msglog_fail(log, -ENOMEM, "out of memory");
            }
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
        if (t < 0 || bo < 0 || (k < 0 && sqlite3_column_type(s, 5) != SQLITE_NULL)) {
            sqlite3_reset(s);
            return msglog_fail(log, -ENOMEM, "out of memory");
        }
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
    b->head = msglog_head_query(log);
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
    if (q->last > 0) {
        if ((rc = msglog_last_start(log, ch, nch, q->last, json, sizeof json, &start)))
            return rc;
    } else
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
    int rc = msglog_exec_stmt(log, ST_BEGIN_READ);
    if (rc)
        return rc; /* nothing allocated yet, and no transaction of ours to end */
    msglog_arena *a = calloc(1, sizeof *a);
    if (!a) {
        msglog_rollback(log);
        return msglog_fail(log, -ENOMEM, "out of memory");
    }
    b->arena_ = a;
    rc = msglog_read_locked(log, q, b, a, ch);
    msglog_rollback(log); /* a read transaction: nothing to commit */
    if (rc) {
        msglog_batch_free(b);
        return rc;
    }
    msglog_fixup(b, a);
    return 0;
}


/* ---- retention --------------------------------------------------------- */

_Static_assert(MSGLOG_PRUNE_HOT <= MSGLOG_PRUNE_ROUND, "a pass reuses one item array");

/* One channel and its rule, as a pass sees it. */
typedef struct {
    int64_t id;
    int64_t messages; /* channel.messages, kept by the schema's triggers */
    msglog_retention r;
} msglog_prune_item;

/* now - max_age_s seconds, saturating: a rule longer than the clock's range
 * keeps everything instead of overflowing into "delete everything". */
static int64_t msglog_age_cutoff(int64_t now_ms, int64_t max_age_s) {
    if (max_age_s > INT64_MAX / 1000)
        return INT64_MIN;
    int64_t age_ms = max_age_s * 1000;
    return now_ms < INT64_MIN + age_ms ? INT64_MIN : now_ms - age_ms;
}

/* 1 if channel id is a durable stream's: retention never prunes one (it
 * keeps its data until deleted or expired; THE STREAMS' TABLES). */
static int msglog_is_stream(msglog *log, int64_t id) {
    if (!log->st_stream &&
        sqlite3_prepare_v2(log->db, "SELECT 1 FROM ds_stream WHERE channel = ?1", -1,
                           &log->st_stream, NULL) != SQLITE_OK)
        return 0; /* no streams' tables: no streams */
    sqlite3_reset(log->st_stream);
    sqlite3_bind_int64(log->st_stream, 1, id);
    int is = sqlite3_step(log->st_stream) == SQLITE_ROW;
    sqlite3_reset(log->st_stream);
    return is;
}

int msglog_stream_named(msglog *log, const char *channel) {
    if (!log->st_stream_name &&
        sqlite3_prepare_v2(log->db, "SELECT 1 FROM ds_stream WHERE name = ?1", -1,
                           &log->st_stream_name, NULL) != SQLITE_OK)
        return 0;
    sqlite3_reset(log->st_stream_name);
    sqlite3_bind_text(log->st_stream_name, 1, channel, -1, SQLITE_STATIC);
    int is = sqlite3_step(log->st_stream_name) == SQLITE_ROW;
    sqlite3_reset(log->st_stream_name);
    return is;
}

/* Fill *it from a row (id, name, messages); 1 if the channel has a rule. */
static int msglog_prune_row(msglog *log, sqlite3_stmt *s, msglog_prune_item *it) {
    it->id = sqlite3_column_int64(s, 0);
    it->messages = sqlite3_column_int64(s, 2);
    it->r = log->retention((const char *)sqlite3_column_text(s, 1), log->retention_ud);
    if ((it->r.max_messages > 0 || it->r.max_age_s > 0) && msglog_is_stream(log, it->id))
        it->r = (msglog_retention){0, 0};
    return it->r.max_messages > 0 || it->r.max_age_s > 0;
}

/* Read the channels with id > after, at most cap, into it[] (only those
 * with a rule: *n).  *nread counts every row read, *last is the last id. */
static int msglog_prune_page(msglog *log, int64_t after, size_t cap, msglog_prune_item *it,
                             size_t *n, size_t *nread, int64_t *last) {
    sqlite3_stmt *s = msglog_stmt(log, ST_PRUNE_PAGE);
    int rc;
    sqlite3_bind_int64(s, 1, after);
    sqlite3_bind_int64(s, 2, (int64_t)cap);
    *n = *nread = 0;
    *last = after;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        (*nread)++;
        *last = sqlite3_column_int64(s, 0);
        *n += (size_t)msglog_prune_row(log, s, &it[*n]);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : msglog_sqlfail(log, rc, "listing channels for retention");
}

/* The channels this handle appended to since the last pass, into it[]. */
static int msglog_prune_hot(msglog *log, msglog_prune_item *it, size_t *n, size_t *nread) {
    *n = *nread = 0;
    for (size_t i = 0; i < log->nhot; i++) {
        sqlite3_stmt *s = msglog_stmt(log, ST_PRUNE_CHANNEL);
        sqlite3_bind_int64(s, 1, log->hot[i]);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            (*nread)++;
            *n += (size_t)msglog_prune_row(log, s, &it[*n]);
        }
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return msglog_sqlfail(log, rc, "looking up a channel for retention");
    }
    log->nhot = 0;
    return 0;
}

/* The first id the rule keeps (0: nothing to prune).  Count: the newest
 * max_messages, skipped without a query while channel.messages is within
 * the limit.  Age: the prefix of rows older than the cutoff, looking at
 * most at `left` rows (0 = no cap), so a pass costs what it deletes. */
static int msglog_keep_from(msglog *log, const msglog_prune_item *it, int64_t now,
                            int64_t left, int64_t *keep) {
    int rc;
    *keep = 0;
    if (it->r.max_messages > 0 && it->messages > it->r.max_messages) {
        sqlite3_stmt *s = msglog_stmt(log, ST_NTH_NEWEST_ONE);
        sqlite3_bind_int64(s, 1, it->id);
        sqlite3_bind_int64(s, 2, it->r.max_messages - 1);
        if ((rc = msglog_step_int(log, s, "retention by count", keep)) < 0)
            return rc;
    }
    if (it->r.max_age_s > 0) {
        int64_t cutoff = msglog_age_cutoff(now, it->r.max_age_s), last = 0;
        int young = 0;
        sqlite3_stmt *s = msglog_stmt(log, ST_AGE_WALK);
        sqlite3_bind_int64(s, 1, it->id);
        sqlite3_bind_int64(s, 2, *keep);
        sqlite3_bind_int64(s, 3, left > 0 ? left : -1);
        while (!young && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            last = sqlite3_column_int64(s, 0);
            young = sqlite3_column_int64(s, 1) >= cutoff;
        }
        sqlite3_reset(s);
        if (!young && rc != SQLITE_DONE)
            return msglog_sqlfail(log, rc, "retention by age");
        if (last)
            *keep = young ? last : last + 1;
    }
    return 0;
}

/* Delete the oldest rows (at most `left`, 0 = no cap) below keep_from, the
 * idem rows of the messages deleted, and raise pruned_through.  Opens the
 * write transaction (*in_txn) when there is something to delete. */
static int msglog_prune_below(msglog *log, int64_t chan, int64_t keep_from, int64_t left,
                              int *in_txn, int64_t *deleted) {
    int64_t upto = 0;
    sqlite3_stmt *s = msglog_stmt(log, ST_PRUNE_UPTO);
    sqlite3_bind_int64(s, 1, chan);
    sqlite3_bind_int64(s, 2, keep_from);
    sqlite3_bind_int64(s, 3, left > 0 ? left : -1);
    int rc = msglog_step_int(log, s, "retention", &upto);
    if (rc < 0 || upto == 0)
        return rc < 0 ? rc : 0;
    if (!*in_txn && (rc = msglog_exec_stmt(log, ST_BEGIN_WRITE)))
        return rc;
    *in_txn = 1;
    static const int steps[] = {ST_PRUNE_DELETE, ST_PRUNE_IDEM, ST_PRUNE_MARK};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        s = msglog_stmt(log, steps[i]);
        sqlite3_bind_int64(s, 1, chan);
        sqlite3_bind_int64(s, 2, upto);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return msglog_sqlfail(log, rc, "retention");
        if (steps[i] == ST_PRUNE_DELETE)
            *deleted += sqlite3_changes(log->db);
    }
    return 0;
}

/* Apply the rules of it[0..n) in one write transaction (opened only if
 * something is deleted).  *resume is the id of the last channel finished
 * (unchanged if none): a channel the budget cut short is not. */
static int msglog_prune_items(msglog *log, const msglog_prune_item *it, size_t n, int64_t now,
                              int64_t budget, int64_t *deleted, int64_t *resume, int *finished) {
    int rc = 0, in_txn = 0;
    size_t i = 0;
    for (; i < n && (budget <= 0 || *deleted < budget); i++) {
        int64_t left = budget > 0 ? budget - *deleted : 0, keep = 0, d = 0;
        if ((rc = msglog_keep_from(log, &it[i], now, left, &keep)) ||
            (keep > 0 && (rc = msglog_prune_below(log, it[i].id, keep, left, &in_txn, &d))))
            break;
        *deleted += d;
        if (budget > 0 && d >= left)
            break; /* maybe more to do here: the next pass starts with it */
        *resume = it[i].id;
    }
    *finished = !rc && i == n;
    if (in_txn && !rc)
        rc = msglog_exec_stmt(log, ST_COMMIT);
    if (in_txn && rc)
        msglog_rollback(log);
    return rc;
}

/* One incremental pass: the hot channels, then the next round. */
static int msglog_prune_pass(msglog *log, int64_t budget, int64_t now, int64_t *deleted) {
    msglog_prune_item it[MSGLOG_PRUNE_ROUND];
    size_t n, nread;
    int64_t resume = 0, last;
    int finished;
    int rc = msglog_prune_hot(log, it, &n, &nread);
    log->prune_visited += (int64_t)nread;
    if (rc || (rc = msglog_prune_items(log, it, n, now, budget, deleted, &resume, &finished)))
        return rc;
    int64_t after = log->prune_cursor;
    if ((rc = msglog_prune_page(log, after, MSGLOG_PRUNE_ROUND, it, &n, &nread, &last)))
        return rc;
    log->prune_visited += (int64_t)nread;
    resume = after;
    rc = msglog_prune_items(log, it, n, now, budget, deleted, &resume, &finished);
    if (!rc && finished)
        resume = nread < MSGLOG_PRUNE_ROUND ? 0 : last; /* 0: the end, start over */
    log->prune_cursor = resume;
    return rc;
}

/* Every channel, page by page (no statement stays open across writes). */
static int msglog_prune_all(msglog *log, int64_t now, int64_t *deleted) {
    msglog_prune_item it[MSGLOG_PRUNE_ROUND];
    size_t n, nread;
    int64_t after = 0, last, resume = 0;
    int finished, rc;
    log->nhot = 0;
    do {
        if ((rc = msglog_prune_page(log, after, MSGLOG_PRUNE_ROUND, it, &n, &nread, &last)) ||
            (rc = msglog_prune_items(log, it, n, now, 0, deleted, &resume, &finished)))
            return rc;
        log->prune_visited += (int64_t)nread;
        after = last;
    } while (nread == MSGLOG_PRUNE_ROUND);
    return 0;
}

int msglog_prune(msglog *log, int64_t budget, int64_t *deleted) {
    *deleted = 0;
    log->prune_visited = 0;
    if (!log->retention)
        return 0;
    if (log->readonly || log->schema < 2)
        return msglog_fail(log, -EROFS, "the log %s was opened read-only", log->path);
    int64_t now = msglog_now_ms();
    return budget > 0 ? msglog_prune_pass(log, budget, now, deleted)
                      : msglog_prune_all(log, now, deleted);
}

int64_t msglog_prune_visited(const msglog *log) {
    return log->prune_visited;
}

/* ---- stats and change tracking ----------------------------------------- */

/* The counts before schema 2 kept them (a read-only handle on an old file). */
static int msglog_stats_scan(msglog *log, msglog_stats *st) {
    int rc;
    if ((rc = msglog_select_int(log, "SELECT count(*) FROM message", &st->messages)) ||
        (rc = msglog_select_int(log, "SELECT count(*) FROM channel", &st->channels)))
        return rc;
    return msglog_select_int(log,
                             "SELECT coalesce(sum(length(CAST(body AS BLOB))), 0) FROM message",
                             &st->bytes);
}

int msglog_stats_get(msglog *log, msglog_stats *st) {
    memset(st, 0, sizeof *st);
    snprintf(st->epoch, sizeof st->epoch, "%s", log->epoch);
    int rc = msglog_exec_stmt(log, ST_BEGIN_READ);
    if (rc)
        return rc;
    if ((st->head = msglog_head_query(log)) < 0) {
        rc = msglog_sqlfail(log, sqlite3_errcode(log->db), "reading the head");
    } else if (log->schema < 2) {
        rc = msglog_stats_scan(log, st);
    } else {
        sqlite3_stmt *s = msglog_stmt(log, ST_COUNTS);
        if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            st->messages = sqlite3_column_int64(s, 0);
            st->bytes = sqlite3_column_int64(s, 1);
            st->channels = sqlite3_column_int64(s, 2);
        }
        sqlite3_reset(s);
        rc = rc == SQLITE_ROW ? 0 : msglog_sqlfail(log, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc,
                                                   "reading the counts");
    }
    msglog_rollback(log);
    return rc;
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


int msglog_changed_channels(msglog *log, int64_t since, int64_t *head,
                            void (*fn)(const char *channel, void *ud), void *ud) {
    int rc = msglog_exec_stmt(log, ST_BEGIN_READ);
    if (rc)
        return rc;
    *head = msglog_head_query(log);
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
