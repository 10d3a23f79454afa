/* dstore.c -- durable streams in the message log: metadata, appends,
 * forks, reads across fork chains.
 *
 * LAYOUT.  A stream `name` is the channel `name`: each append is one row
 * of `message` per message (JSON mode: per array element), so its
 * positions are message ids (dsproto.c's OFFSETS), the dispatchers' wake
 * (worker.c) covers its live readers unchanged, /sub/name reads it and
 * /pub/name appends to it (handler.c checks the stream first).  A stream
 * begins at its creation (`base`, the log's head then): what the channel
 * held before is not its data.  Closing appends an empty row whose key is
 * DSTORE_MARK: it wakes the live readers; reads skip it; a trigger refuses
 * any other row after it.  The metadata tables (ds_stream, ds_producer)
 * and that trigger are msglog.c's THE STREAMS' TABLES.
 *
 * THE FORK RULE.  A fork has its source's positions up to `base` and its
 * own rows above (they are appended later, so their ids are higher); the
 * source row at `base` is cut to cut_len bytes when a byte sub-offset
 * chose a point inside it.  Reading position p onward walks the chain
 * root first: each level gives its channel's rows in (p, cap], where cap
 * is the lowest base below it (and the cut that came with that base), and
 * the stream itself its rows above p.  A source is kept (soft-deleted,
 * 410 to its own URL) while refs > 0; deleting its last fork collects it,
 * and so on up the chain.
 *
 * Every change is one BEGIN IMMEDIATE transaction, so validation and write
 * are serialised per stream and producer across processes, and a
 * producer's state commits with its rows (retries after a crash are still
 * recognised).  Stream-Seq is scoped per stream.
 */
#include "dstore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#define DSTORE_MARK MSGLOG_STREAM_MARK

#define DSTORE_COLS                                                                     \
    "id, channel, type, base, ttl_s, expires_ms, touched_ms, closed, src, cut_len,"     \
    " coalesce(fork_from, ''), fork_at, fork_sub, refs, deleted, coalesce(close_pid, ''),"\
    " coalesce(close_epoch, -1), coalesce(close_seq, -1)"

/* ---- statements ---------------------------------------------------------- */

static sqlite3_stmt *dstore_prep(msglog *log, const char *sql, int *rc) {
    sqlite3_stmt *st = NULL;
    int r = sqlite3_prepare_v2(msglog_sqlite(log), sql, -1, &st, NULL);
    if (r != SQLITE_OK) {
        /* the tables may not exist yet: a read of a log without streams */
        *rc = r;
        return NULL;
    }
    return st;
}

static dstore_status dstore_fail(msglog *log, int rc, const char *what) {
    msglog_sqlite_fail(log, rc, what);
    return DSTORE_ERR;
}

/* Run sql with int64 arguments (up to 4; n of them): SQLITE_DONE or the code. */
static int dstore_exec(msglog *log, const char *sql, int n, int64_t a, int64_t b, int64_t c,
                       int64_t d) {
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log, sql, &rc);
    if (!st)
        return rc;
    int64_t v[4] = {a, b, c, d};
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(st, i + 1, v[i]);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_finalize(st);
    return rc;
}

static int dstore_begin(msglog *log) {
    char *msg = NULL;
    int rc = sqlite3_exec(msglog_sqlite(log), "BEGIN IMMEDIATE", NULL, NULL, &msg);
    sqlite3_free(msg);
    return rc;
}

static int dstore_commit(msglog *log) {
    return sqlite3_exec(msglog_sqlite(log), "COMMIT", NULL, NULL, NULL);
}

static void dstore_rollback(msglog *log) {
    if (!sqlite3_get_autocommit(msglog_sqlite(log)))
        sqlite3_exec(msglog_sqlite(log), "ROLLBACK", NULL, NULL, NULL);
}

static void dstore_copy(char *dst, size_t cap, const unsigned char *s) {
    snprintf(dst, cap, "%s", s ? (const char *)s : "");
}

/* Fill *s from a row of DSTORE_COLS. */
static void dstore_row(sqlite3_stmt *st, dstore_stream *s) {
    memset(s, 0, sizeof *s);
    s->id = sqlite3_column_int64(st, 0);
    s->channel = sqlite3_column_int64(st, 1);
    dstore_copy(s->type, sizeof s->type, sqlite3_column_text(st, 2));
    s->base = sqlite3_column_int64(st, 3);
    s->ttl_s = sqlite3_column_int64(st, 4);
    s->expires_ms = sqlite3_column_int64(st, 5);
    s->touched_ms = sqlite3_column_int64(st, 6);
    s->closed = sqlite3_column_int(st, 7);
    s->src = sqlite3_column_int64(st, 8);
    s->cut_len = sqlite3_column_int64(st, 9);
    dstore_copy(s->fork_from, sizeof s->fork_from, sqlite3_column_text(st, 10));
    s->fork_at = sqlite3_column_int64(st, 11);
    s->fork_sub = sqlite3_column_int64(st, 12);
    s->refs = sqlite3_column_int(st, 13);
    s->deleted = sqlite3_column_int(st, 14);
    dstore_copy(s->close_pid, sizeof s->close_pid, sqlite3_column_text(st, 15));
    s->close_epoch = sqlite3_column_int64(st, 16);
    s->close_seq = sqlite3_column_int64(st, 17);
}

/* The tail: the highest data row of the stream's own channel, else base. */
static int dstore_tail(msglog *log, dstore_stream *s) {
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log,
                                   "SELECT max(id) FROM message WHERE channel = ?1 AND id > ?2"
                                   " AND key IS NOT '" DSTORE_MARK "'", &rc);
    if (!st)
        return rc;
    sqlite3_bind_int64(st, 1, s->channel);
    sqlite3_bind_int64(st, 2, s->base);
    rc = sqlite3_step(st);
    s->tail = s->base;
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        s->tail = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int dstore_expired(const dstore_stream *s, int64_t now) {
    return (s->expires_ms >= 0 && now >= s->expires_ms) ||
           (s->ttl_s >= 0 && now >= s->touched_ms + s->ttl_s * 1000);
}

/* Look up by name (by_id 0) or id: SQLITE_OK with *found, or the code. */
static int dstore_lookup(msglog *log, const char *name, int64_t id, dstore_stream *s,
                         int *found) {
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log, name ? "SELECT " DSTORE_COLS " FROM ds_stream WHERE name = ?1"
                                             : "SELECT " DSTORE_COLS " FROM ds_stream WHERE id = ?1",
                                   &rc);
    *found = 0;
    if (!st)
        return rc == SQLITE_ERROR ? SQLITE_OK : rc; /* no table: no stream */
    if (name)
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        dstore_row(st, s);
        *found = 1;
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK && *found)
        rc = dstore_tail(log, s);
    return rc;
}

dstore_status dstore_get(msglog *log, const char *name, int touch, dstore_stream *s) {
    int found;
    int rc = dstore_lookup(log, name, 0, s, &found);
    if (rc != SQLITE_OK)
        return dstore_fail(log, rc, "reading a stream");
    int64_t now = msglog_now_ms();
    if (!found || dstore_expired(s, now))
        return DSTORE_NOT_FOUND;
    if (s->deleted)
        return DSTORE_GONE;
    if (touch && s->ttl_s >= 0 && now - s->touched_ms >= 1000) {
        rc = dstore_exec(log, "UPDATE ds_stream SET touched_ms = ?2 WHERE id = ?1", 2, s->id, now,
                         0, 0);
        if (rc != SQLITE_DONE)
            return dstore_fail(log, rc, "refreshing a stream's TTL");
        s->touched_ms = now;
    }
    return DSTORE_OK;
}

/* ---- reading ------------------------------------------------------------- */

typedef struct {
    int64_t channel, floor, cap; /* its rows in (floor, cap]; cap INT64_MAX: the stream's own */
    int64_t cut;          /* the row at cap keeps this many bytes, -1: all */
} dstore_seg;

/* The chain of s, root first, into segs: the count, or -1 (*rc set). */
static int dstore_chain(msglog *log, const dstore_stream *s, dstore_seg *segs, int *rc) {
    dstore_seg tmp[DSTORE_FORK_DEPTH + 1];
    int n = 0;
    tmp[n++] = (dstore_seg){s->channel, s->base, INT64_MAX, -1};
    int64_t cap = INT64_MAX, cut = -1, src = s->src;
    int64_t base = s->base, cut_len = s->cut_len;
    while (src && n <= DSTORE_FORK_DEPTH) {
        dstore_stream p;
        int found;
        if ((*rc = dstore_lookup(log, NULL, src, &p, &found)) != SQLITE_OK)
            return -1;
        if (!found)
            break;
        int64_t ncut = -1;
        if (base <= cap) {
            if (base == cap && cut >= 0)
                ncut = cut_len >= 0 && cut_len < cut ? cut_len : cut;
            else
                ncut = cut_len;
            cap = base;
        } else {
            ncut = cut;
        }
        cut = ncut;
        tmp[n++] = (dstore_seg){p.channel, p.base, cap, cut};
        src = p.src;
        base = p.base;
        cut_len = p.cut_len;
    }
    for (int i = 0; i < n; i++)
        segs[i] = tmp[n - 1 - i];
    return n;
}

dstore_status dstore_read(msglog *log, const dstore_stream *s, int64_t after, size_t max,
                          dstore_msg_fn fn, void *ud, int64_t *next, int *more) {
    dstore_seg segs[DSTORE_FORK_DEPTH + 1];
    int rc = SQLITE_OK;
    int n = dstore_chain(log, s, segs, &rc);
    size_t got = 0;
    int count = 0;
    *next = after;
    *more = 0;
    if (n < 0)
        return dstore_fail(log, rc, "reading a stream's sources");
    sqlite3_stmt *st = dstore_prep(log,
                                   "SELECT id, body FROM message WHERE channel = ?1 AND id > ?2"
                                   " AND id <= ?3 AND key IS NOT '" DSTORE_MARK "'"
                                   " ORDER BY id LIMIT 1000", &rc);
    if (!st)
        return dstore_fail(log, rc, "reading a stream");
    sqlite3_stmt *pr = dstore_prep(log, "SELECT pruned_through FROM channel WHERE id = ?1", &rc);
    if (!pr) {
        sqlite3_finalize(st);
        return dstore_fail(log, rc, "reading a stream's retention");
    }
    for (int i = 0; i < n && !*more; i++) {
        int64_t from = after > segs[i].floor ? after : segs[i].floor;
        /* Retention never prunes a stream, but a worker of an older release
         * (during an upgrade) may: a read that would skip pruned data is
         * refused rather than answered short (THE CURSOR RULE's gaps). */
        sqlite3_reset(pr);
        sqlite3_bind_int64(pr, 1, segs[i].channel);
        if (sqlite3_step(pr) == SQLITE_ROW && sqlite3_column_int64(pr, 0) > from &&
            from < segs[i].cap) {
            sqlite3_finalize(pr);
            sqlite3_finalize(st);
            return DSTORE_GONE;
        }
        for (;;) {
            int rows = 0;
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, segs[i].channel);
            sqlite3_bind_int64(st, 2, from);
            sqlite3_bind_int64(st, 3, segs[i].cap);
            while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int64_t id = sqlite3_column_int64(st, 0);
                const void *p = sqlite3_column_blob(st, 1);
                size_t len = (size_t)sqlite3_column_bytes(st, 1);
                if (id == segs[i].cap && segs[i].cut >= 0 && (size_t)segs[i].cut < len)
                    len = (size_t)segs[i].cut;
                rows++;
                from = id;
                if (count > 0 && got + len > max) {
                    *more = 1;
                    break;
                }
                fn(ud, id, p ? p : "", len);
                got += len;
                count++;
                *next = id;
            }
            if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                sqlite3_finalize(pr);
                sqlite3_finalize(st);
                return dstore_fail(log, rc, "reading a stream");
            }
            if (*more || rows < 1000)
                break;
        }
    }
    sqlite3_finalize(pr);
    sqlite3_finalize(st);
    if (!*more && *next < s->tail)
        *next = s->tail;
    if (*next < after)
        *next = after;
    return DSTORE_OK;
}

/* ---- writing --------------------------------------------------------------- */

/* Insert a's messages into channel ch: SQLITE_DONE with *first / *last. */
static int dstore_insert(msglog *log, int64_t ch, const char *type, const dstore_append_req *a,
                         int64_t *first, int64_t *last) {
    int rc = SQLITE_DONE;
    sqlite3_stmt *st = dstore_prep(log,
                                   "INSERT INTO message(channel, time_ms, type, body, key)"
                                   " VALUES (?1, ?2, ?3, ?4, NULL)", &rc);
    if (!st)
        return rc;
    int64_t now = msglog_now_ms();
    for (size_t i = 0; i < a->n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, ch);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, a->lens[i] ? a->msgs[i] : "", (int)a->lens[i], SQLITE_STATIC);
        if ((rc = sqlite3_step(st)) != SQLITE_DONE)
            break;
        *last = sqlite3_last_insert_rowid(msglog_sqlite(log));
        if (!*first)
            *first = *last;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Close s: the flag, who closed it, and the row that wakes its readers. */
static int dstore_close(msglog *log, const dstore_stream *s, const dstore_producer *p,
                        int64_t *last) {
    int rc = SQLITE_DONE;
    sqlite3_stmt *st = dstore_prep(log,
                                   "UPDATE ds_stream SET closed = 1, close_pid = ?2,"
                                   " close_epoch = ?3, close_seq = ?4 WHERE id = ?1", &rc);
    if (!st)
        return rc;
    sqlite3_bind_int64(st, 1, s->id);
    if (p->pid) {
        sqlite3_bind_text(st, 2, p->pid, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, p->epoch);
        sqlite3_bind_int64(st, 4, p->seq);
    }
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return rc;
    rc = dstore_exec(log, "INSERT INTO message(channel, time_ms, type, body, key)"
                          " VALUES (?1, ?2, 'application/octet-stream', X'', '" DSTORE_MARK "')",
                     2, s->channel, msglog_now_ms(), 0, 0);
    if (rc == SQLITE_DONE)
        *last = sqlite3_last_insert_rowid(msglog_sqlite(log));
    return rc;
}

/* The producer's state on stream id: 1 found, 0 none, or -code. */
static int dstore_producer_get(msglog *log, int64_t id, const char *pid, int64_t *epoch,
                               int64_t *seq) {
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log, "SELECT epoch, seq FROM ds_producer"
                                        " WHERE stream = ?1 AND producer = ?2", &rc);
    if (!st)
        return -rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, pid, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found) {
        *epoch = sqlite3_column_int64(st, 0);
        *seq = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return found ? 1 : rc == SQLITE_DONE ? 0 : -rc;
}

static int dstore_producer_put(msglog *log, int64_t id, const dstore_producer *p) {
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log, "INSERT OR REPLACE INTO ds_producer(stream, producer,"
                                        " epoch, seq) VALUES (?1, ?2, ?3, ?4)", &rc);
    if (!st)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, p->pid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, p->epoch);
    sqlite3_bind_int64(st, 4, p->seq);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc;
}

/* The producer rules (protocol 5.2.1) for an append to open stream s:
 * DSTORE_OK to go on, or the refusal, with res->epoch / seq filled. */
static dstore_status dstore_producer_check(msglog *log, const dstore_stream *s,
                                           const dstore_producer *p, dstore_result *res) {
    int64_t epoch = -1, seq = -1;
    int found = dstore_producer_get(log, s->id, p->pid, &epoch, &seq);
    if (found < 0)
        return dstore_fail(log, -found, "reading a producer");
    res->epoch = p->epoch;
    res->seq = p->seq;
    if (!found || p->epoch > epoch) {
        if (p->seq != 0) {
            res->seq = -1;
            return found ? DSTORE_BAD_EPOCH_SEQ : DSTORE_SEQ_GAP;
        }
        return DSTORE_OK;
    }
    if (p->epoch < epoch) {
        res->epoch = epoch;
        return DSTORE_STALE_EPOCH;
    }
    if (p->seq <= seq) {
        res->seq = seq;
        return DSTORE_DUPLICATE;
    }
    if (p->seq != seq + 1) {
        res->seq = seq;
        return DSTORE_SEQ_GAP;
    }
    return DSTORE_OK;
}

/* A closed stream's answer to an append (protocol 5.2, 5.2.1). */
static dstore_status dstore_append_closed(msglog *log, const dstore_stream *s,
                                          const dstore_append_req *a, dstore_result *res) {
    res->closed = 1;
    if (a->prod.pid) {
        int64_t epoch = -1, seq = -1;
        int found = dstore_producer_get(log, s->id, a->prod.pid, &epoch, &seq);
        if (found < 0)
            return dstore_fail(log, -found, "reading a producer");
        res->epoch = a->prod.epoch;
        res->seq = a->prod.seq;
        if (found && a->prod.epoch < epoch) {
            res->epoch = epoch;
            return DSTORE_STALE_EPOCH;
        }
        if (!strcmp(s->close_pid, a->prod.pid) && s->close_epoch == a->prod.epoch &&
            s->close_seq == a->prod.seq)
            return DSTORE_DUPLICATE;
        return DSTORE_CLOSED;
    }
    return a->n == 0 && a->close ? DSTORE_DUPLICATE : DSTORE_CLOSED;
}

/* Stream-Seq: strictly increasing, byte order, per stream. */
static dstore_status dstore_seq_check(msglog *log, const dstore_stream *s, const char *seq) {
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log, "SELECT last_seq IS NOT NULL AND CAST(?2 AS BLOB) <="
                                        " CAST(last_seq AS BLOB) FROM ds_stream WHERE id = ?1",
                                   &rc);
    if (!st)
        return dstore_fail(log, rc, "checking Stream-Seq");
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_text(st, 2, seq, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    int behind = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return dstore_fail(log, rc, "checking Stream-Seq");
    if (behind)
        return DSTORE_CONFLICT;
    st = dstore_prep(log, "UPDATE ds_stream SET last_seq = ?2 WHERE id = ?1", &rc);
    if (!st)
        return dstore_fail(log, rc, "recording Stream-Seq");
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_text(st, 2, seq, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? DSTORE_OK : dstore_fail(log, rc, "recording Stream-Seq");
}

/* The append itself, inside the transaction. */
static dstore_status dstore_append_in(msglog *log, dstore_stream *s, const dstore_append_req *a,
                                      dstore_result *res) {
    dstore_status ds;
    res->tail = s->tail;
    if (s->closed)
        return dstore_append_closed(log, s, a, res);
    if (a->n > 0 && a->type && !dsproto_type_same(a->type, s->type))
        return DSTORE_CONFLICT;
    if (a->prod.pid && (ds = dstore_producer_check(log, s, &a->prod, res)) != DSTORE_OK)
        return ds;
    if (a->seq && (ds = dstore_seq_check(log, s, a->seq)) != DSTORE_OK)
        return ds;
    int rc = dstore_insert(log, s->channel, s->type, a, &res->first_id, &res->last_id);
    if (rc != SQLITE_DONE)
        return dstore_fail(log, rc, "appending to a stream");
    if (res->last_id)
        res->tail = s->tail = res->last_id;
    if (a->prod.pid && (rc = dstore_producer_put(log, s->id, &a->prod)) != SQLITE_DONE)
        return dstore_fail(log, rc, "recording a producer");
    if (a->close) {
        int64_t mark = 0;
        if ((rc = dstore_close(log, s, &a->prod, &mark)) != SQLITE_DONE)
            return dstore_fail(log, rc, "closing a stream");
        res->last_id = mark;
        if (!res->first_id)
            res->first_id = mark;
        res->closed = s->closed = 1;
    }
    if (s->ttl_s >= 0)
        dstore_exec(log, "UPDATE ds_stream SET touched_ms = ?2 WHERE id = ?1", 2, s->id,
                    msglog_now_ms(), 0, 0);
    return DSTORE_OK;
}

/* End a transaction: COMMIT after OK-like results, else ROLLBACK. */
static dstore_status dstore_end(msglog *log, dstore_status ds, int write) {
    if (ds == DSTORE_ERR || !write) {
        dstore_rollback(log);
        return ds;
    }
    int rc = dstore_commit(log);
    if (rc != SQLITE_OK) {
        dstore_rollback(log);
        return dstore_fail(log, rc, "committing a stream change");
    }
    return ds;
}

dstore_status dstore_append(msglog *log, const char *name, const dstore_append_req *a,
                            dstore_result *res) {
    dstore_stream s;
    memset(res, 0, sizeof *res);
    int rc = dstore_begin(log);
    if (rc != SQLITE_OK) {
        dstore_rollback(log);
        return dstore_fail(log, rc, "starting an append");
    }
    dstore_status ds = dstore_get(log, name, 0, &s);
    if (ds == DSTORE_OK)
        ds = dstore_append_in(log, &s, a, res);
    return dstore_end(log, ds, ds == DSTORE_OK);
}

/* ---- creating -------------------------------------------------------------- */

/* 1 when existing stream s was created as c asks (protocol 5.1). */
static int dstore_same_config(const dstore_stream *s, const dstore_config *c) {
    const char *type = c->type;
    if (!type && c->fork_from)
        type = s->type;
    return type && dsproto_type_same(type, s->type) && s->ttl_s == c->ttl_s &&
           s->expires_ms == c->expires_ms && s->closed == (c->closed != 0) &&
           !strcmp(s->fork_from, c->fork_from ? c->fork_from : "") &&
           s->fork_at == (c->fork_from ? c->fork_at : -1) &&
           s->fork_sub == (c->fork_from ? c->fork_sub : 0);
}

typedef struct {
    size_t n;
    int64_t pos;
    size_t len;
} dstore_nth;

static void dstore_nth_cb(void *ud, int64_t pos, const void *p, size_t n) {
    dstore_nth *t = ud;
    (void)p;
    if (t->n == 0)
        return;
    t->n--;
    t->pos = pos;
    t->len = n;
}

/* Resolve a fork point: base (and cut) in the source for c. */
static dstore_status dstore_fork_point(msglog *log, const dstore_stream *src,
                                       const dstore_config *c, int64_t *base, int64_t *cut) {
    int64_t at = c->fork_at < 0 ? src->tail : c->fork_at;
    *cut = -1;
    if (at > src->tail)
        return DSTORE_BAD_FORK;
    *base = at;
    if (c->fork_sub <= 0)
        return DSTORE_OK;
    int json = dsproto_type_json(src->type);
    dstore_nth t = {json ? (size_t)c->fork_sub : 1, -1, 0};
    int64_t next;
    int more;
    dstore_status ds = dstore_read(log, src, at, json ? (size_t)1 << 30 : 1, dstore_nth_cb, &t,
                                   &next, &more);
    if (ds != DSTORE_OK)
        return ds;
    if (t.pos < 0 || (json && t.n > 0) || (!json && (size_t)c->fork_sub > t.len))
        return DSTORE_BAD_FORK;
    *base = t.pos;
    if (!json && (size_t)c->fork_sub < t.len)
        *cut = c->fork_sub;
    return DSTORE_OK;
}

/* Remove stream s for good, and collect its sources that wait for it. */
static int dstore_collect(msglog *log, dstore_stream s) {
    for (int depth = 0; depth <= DSTORE_FORK_DEPTH; depth++) {
        int rc;
        /* the stream's rows only: what its channel held before it began
         * (base) is the channel's, and stays */
        if ((rc = dstore_exec(log, "DELETE FROM message WHERE channel = ?1 AND id > ?2", 2,
                              s.channel, s.base, 0, 0)) != SQLITE_DONE ||
            (rc = dstore_exec(log, "DELETE FROM idem WHERE channel = ?1 AND msg_id > ?2", 2,
                              s.channel, s.base, 0, 0)) != SQLITE_DONE ||
            (rc = dstore_exec(log, "DELETE FROM ds_producer WHERE stream = ?1", 1, s.id, 0, 0,
                              0)) != SQLITE_DONE ||
            (rc = dstore_exec(log, "DELETE FROM ds_stream WHERE id = ?1", 1, s.id, 0, 0, 0)) !=
                SQLITE_DONE)
            return rc;
        if (!s.src)
            return SQLITE_DONE;
        if ((rc = dstore_exec(log, "UPDATE ds_stream SET refs = refs - 1 WHERE id = ?1", 1, s.src,
                              0, 0, 0)) != SQLITE_DONE)
            return rc;
        int found;
        dstore_stream p;
        if ((rc = dstore_lookup(log, NULL, s.src, &p, &found)) != SQLITE_OK)
            return rc;
        if (!found || !p.deleted || p.refs > 0)
            return SQLITE_DONE;
        s = p;
    }
    return SQLITE_DONE;
}

/* The new stream's row and channel. */
static int dstore_insert_stream(msglog *log, const char *name, const dstore_config *c,
                                const char *type, int64_t base, int64_t cut, int64_t src,
                                int64_t ttl, int64_t exp, int64_t *channel) {
    const char *chan = name; /* a stream is the channel of its name */
    int rc = SQLITE_OK;
    sqlite3_stmt *st = dstore_prep(log, "INSERT OR IGNORE INTO channel(name) VALUES (?1)", &rc);
    if (!st)
        return rc;
    sqlite3_bind_text(st, 1, chan, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return rc;
    if (!(st = dstore_prep(log, "SELECT id FROM channel WHERE name = ?1", &rc)))
        return rc;
    sqlite3_bind_text(st, 1, chan, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *channel = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return rc;
    if (!(st = dstore_prep(log,
                           "INSERT INTO ds_stream(name, channel, type, base, ttl_s, expires_ms,"
                           " touched_ms, src, cut_len, fork_from, fork_at, fork_sub)"
                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)", &rc)))
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, *channel);
    sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, base);
    sqlite3_bind_int64(st, 5, ttl);
    sqlite3_bind_int64(st, 6, exp);
    sqlite3_bind_int64(st, 7, msglog_now_ms());
    sqlite3_bind_int64(st, 8, src);
    sqlite3_bind_int64(st, 9, cut);
    if (c->fork_from)
        sqlite3_bind_text(st, 10, c->fork_from, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, c->fork_from ? c->fork_at : -1);
    sqlite3_bind_int64(st, 12, c->fork_from ? c->fork_sub : 0);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc;
}

/* The creation itself, inside the transaction. */
static dstore_status dstore_create_in(msglog *log, const char *name, const dstore_config *c,
                                      const dstore_append_req *a, dstore_stream *s,
                                      dstore_result *res) {
    int found, rc = dstore_lookup(log, name, 0, s, &found);
    if (rc != SQLITE_OK)
        return dstore_fail(log, rc, "reading a stream");
    if (found && dstore_expired(s, msglog_now_ms()) && !s->deleted) {
        if ((rc = dstore_collect(log, *s)) != SQLITE_DONE)
            return dstore_fail(log, rc, "removing an expired stream");
        found = 0;
    }
    if (found) {
        res->tail = s->tail;
        res->closed = s->closed;
        if (s->deleted)
            return DSTORE_GONE;
        return dstore_same_config(s, c) ? DSTORE_EXISTS_SAME : DSTORE_CONFLICT;
    }
    const char *type = c->type ? c->type : "application/octet-stream";
    int64_t base = msglog_head(log), cut = -1, src = 0, ttl = c->ttl_s, exp = c->expires_ms;
    dstore_stream p; /* a fork's source: type may point into it */
    if (c->fork_from) {
        dstore_status ds = dstore_get(log, c->fork_from, 0, &p);
        if (ds == DSTORE_NOT_FOUND)
            return DSTORE_SOURCE_MISSING;
        if (ds == DSTORE_GONE)
            return DSTORE_SOURCE_GONE;
        if (ds != DSTORE_OK)
            return ds;
        if (c->type && !dsproto_type_same(c->type, p.type))
            return DSTORE_CONFLICT;
        type = c->type ? c->type : p.type;
        if ((ds = dstore_fork_point(log, &p, c, &base, &cut)) != DSTORE_OK)
            return ds;
        if (ttl < 0 && exp < 0) {
            ttl = p.ttl_s;
            exp = p.expires_ms;
        }
        src = p.id;
        if ((rc = dstore_exec(log, "UPDATE ds_stream SET refs = refs + 1 WHERE id = ?1", 1, src,
                              0, 0, 0)) != SQLITE_DONE)
            return dstore_fail(log, rc, "counting a fork");
    }
    if (base < 0)
        return DSTORE_ERR;
    int64_t channel = 0;
    if ((rc = dstore_insert_stream(log, name, c, type, base, cut, src, ttl, exp, &channel)) !=
        SQLITE_DONE)
        return dstore_fail(log, rc, "creating a stream");
    if ((rc = dstore_lookup(log, name, 0, s, &found)) != SQLITE_OK || !found)
        return dstore_fail(log, rc, "reading a new stream");
    dstore_append_req init = *a;
    init.close = c->closed;
    init.type = NULL;
    init.seq = NULL;
    init.prod.pid = NULL;
    return dstore_append_in(log, s, &init, res);
}

dstore_status dstore_create(msglog *log, const char *name, const dstore_config *c,
                            const dstore_append_req *a, dstore_stream *s, dstore_result *res) {
    memset(res, 0, sizeof *res);
    int rc = dstore_begin(log);
    if (rc != SQLITE_OK) {
        dstore_rollback(log);
        return dstore_fail(log, rc, "starting a stream");
    }
    dstore_status ds = dstore_create_in(log, name, c, a, s, res);
    return dstore_end(log, ds, ds == DSTORE_OK);
}

dstore_status dstore_delete(msglog *log, const char *name) {
    dstore_stream s;
    int rc = dstore_begin(log);
    if (rc != SQLITE_OK) {
        dstore_rollback(log);
        return dstore_fail(log, rc, "starting a delete");
    }
    dstore_status ds = dstore_get(log, name, 0, &s);
    if (ds == DSTORE_OK) {
        if (s.refs > 0)
            rc = dstore_exec(log, "UPDATE ds_stream SET deleted = 1 WHERE id = ?1", 1, s.id, 0, 0,
                             0);
        else
            rc = dstore_collect(log, s);
        if (rc != SQLITE_DONE)
            ds = dstore_fail(log, rc, "deleting a stream");
    } else if (ds == DSTORE_NOT_FOUND) {
        int found;
        /* an expired stream is deleted like a live one, but answers 404 */
        if (dstore_lookup(log, name, 0, &s, &found) == SQLITE_OK && found && !s.deleted) {
            if (s.refs > 0)
                dstore_exec(log, "UPDATE ds_stream SET deleted = 1 WHERE id = ?1", 1, s.id, 0, 0,
                            0);
            else
                dstore_collect(log, s);
            return dstore_end(log, DSTORE_NOT_FOUND, 1);
        }
    }
    return dstore_end(log, ds, ds == DSTORE_OK);
}
