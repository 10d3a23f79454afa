/* check_msglog.c -- the message log's guarantees: ids, resume after any
 * cursor, gaps and resets, idempotency (also after compaction), compaction,
 * retention (bounded passes), content types, the counts, the outbox view,
 * the schema 1 migration.  Concurrent processes and storage faults:
 * check_msglog_procs.c. */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "msglog.h"
#include "testutil.h"

#define T0 1763776000000LL /* a fixed fake wall clock, in ms */

/* ---- helpers ------------------------------------------------------------ */

static void read_q(msglog *lg, const char *const *ch, size_t nch, int64_t since, int64_t last,
                   const char *epoch, size_t limit, msglog_batch *b)
{
    msglog_query q = {0};
    q.channels = ch;
    q.nchannels = nch;
    q.since = since;
    q.last = last;
    q.epoch = epoch;
    q.limit = limit;
    memset(b, 0, sizeof *b);
    int rc = msglog_read(lg, &q, b);
    ck_assert_msg(rc == 0, "msglog_read since=%lld last=%lld: rc=%d %s", (long long)since,
                  (long long)last, rc, msglog_errmsg(lg));
}

/* Read one channel since a cursor, no limit. */
static void read1(msglog *lg, const char *chan, int64_t since, msglog_batch *b)
{
    const char *ch[] = {chan};
    read_q(lg, ch, 1, since, 0, NULL, 0, b);
}

static int64_t append_entry(msglog *lg, const msglog_entry *e, msglog_ack *ack)
{
    msglog_ack tmp;
    if (!ack)
        ack = &tmp;
    memset(ack, 0, sizeof *ack);
    int rc = msglog_append(lg, e, ack);
    ck_assert_msg(rc == 0, "append: rc=%d %s", rc, msglog_errmsg(lg));
    return ack->id;
}

static int64_t append_kv(msglog *lg, const char *chan, const char *key, const char *body)
{
    msglog_entry e = {.channel = chan, .body = body, .len = strlen(body), .key = key};
    return append_entry(lg, &e, NULL);
}

static int64_t append_idem(msglog *lg, const char *chan, const char *idem, const char *body,
                           msglog_ack *ack)
{
    msglog_entry e = {.channel = chan, .body = body, .len = strlen(body), .idem = idem};
    return append_entry(lg, &e, ack);
}

/* Prune until nothing is left to do; returns the total deleted. */
static int64_t prune_all(msglog *lg)
{
    int64_t total = 0, deleted;
    for (int i = 0; i < 1000; i++) {
        deleted = -1;
        ck_assert_int_eq(msglog_prune(lg, 0, &deleted), 0);
        ck_assert_int_ge(deleted, 0);
        if (deleted == 0)
            return total;
        total += deleted;
    }
    ck_abort_msg("msglog_prune(budget 0) never reported completion");
    return total;
}

static int64_t count_messages(msglog *lg)
{
    msglog_stats st;
    memset(&st, 0, sizeof st);
    ck_assert_int_eq(msglog_stats_get(lg, &st), 0);
    return st.messages;
}

static void assert_msg(const msglog_msg *m, int64_t id, const char *chan, const char *body)
{
    ck_assert_int_eq(m->id, id);
    ck_assert_str_eq(m->channel, chan);
    ck_assert_uint_eq(m->len, strlen(body));
    ck_assert_mem_eq(m->body, body, m->len);
}

static const char *db_path(const char *dir)
{
    return tu_path(dir, "test.db");
}

static msglog_retention ret_none(void)
{
    msglog_retention r = {0, 0};
    return r;
}

/* "g*" keeps 5 messages; everything else is kept. */
static msglog_retention ret_g_count5(const char *channel, void *ud)
{
    (void)ud;
    msglog_retention r = ret_none();
    if (channel[0] == 'g')
        r.max_messages = 5;
    return r;
}

/* Every channel keeps 60 s. */
static msglog_retention ret_age60(const char *channel, void *ud)
{
    (void)channel;
    (void)ud;
    msglog_retention r = {0, 60};
    return r;
}

/* Every channel keeps *(int64_t *)ud messages. */
static msglog_retention ret_count_ud(const char *channel, void *ud)
{
    (void)channel;
    msglog_retention r = {*(const int64_t *)ud, 0};
    return r;
}

/* ---- ids -------------------------------------------------------------- */

START_TEST(test_ids_strictly_increasing_across_channels_and_batches)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    ck_assert_int_eq(msglog_head(lg), 0);
    int64_t prev = 0;
    for (int i = 0; i < 10; i++) {
        int64_t id = tu_append(lg, i % 2 ? "odd" : "even", "x");
        ck_assert_int_gt(id, prev);
        prev = id;
    }
    msglog_entry e[3] = {{.channel = "a", .body = "1", .len = 1},
                         {.channel = "b", .body = "2", .len = 1},
                         {.channel = "a", .body = "3", .len = 1}};
    msglog_ack acks[3];
    memset(acks, 0, sizeof acks);
    ck_assert_int_eq(msglog_append_batch(lg, e, 3, acks), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_gt(acks[i].id, prev);
        ck_assert_int_eq(acks[i].replayed, 0);
        prev = acks[i].id;
    }
    ck_assert_int_eq(msglog_head(lg), prev);
    msglog_close(lg);
}
END_TEST

START_TEST(test_ids_never_reused_after_newest_pruned)
{
    const char *dir = tu_mkdtemp();
    tu_clock_install(T0);
    msglog *lg = tu_open_log_ret(dir, ret_age60, NULL);
    int64_t last = 0;
    for (int i = 0; i < 5; i++)
        last = tu_append(lg, "a", "old");
    tu_clock_advance(3600 * 1000);
    ck_assert_int_eq(prune_all(lg), 5); /* the newest row is gone too */
    ck_assert_int_eq(count_messages(lg), 0);
    /* The head is the highest id ever committed, so a client holding the
     * last cursor is neither reset nor told of a gap. */
    ck_assert_int_eq(msglog_head(lg), last);
    msglog_batch b;
    read1(lg, "a", last, &b);
    ck_assert_int_eq(b.reset, 0);
    ck_assert_int_eq(b.gap, 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(b.cursor, last);
    msglog_batch_free(&b);

    int64_t next = tu_append(lg, "a", "new");
    ck_assert_int_gt(next, last);
    msglog_close(lg);
    lg = tu_open_log_ret(dir, ret_age60, NULL); /* and across a reopen */
    tu_clock_advance(3600 * 1000);
    ck_assert_int_eq(prune_all(lg), 1);
    ck_assert_int_gt(tu_append(lg, "b", "newer"), next);
    msglog_close(lg);
}
END_TEST

START_TEST(test_ids_never_reused_after_newest_deleted_externally)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log(dir);
    int64_t last = 0;
    for (int i = 0; i < 5; i++)
        last = tu_append(lg, "a", "m");
    char err[256];
    ck_assert_msg(tu_sql_exec(db, "DELETE FROM message WHERE id = (SELECT max(id) FROM message)",
                              err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 4);
    ck_assert_int_gt(tu_append(lg, "a", "after-delete"), last);
    ck_assert_msg(tu_sql_exec(db, "DELETE FROM message", err, sizeof err) == 0, "%s", err);
    last = msglog_head(lg);
    ck_assert_int_gt(tu_append(lg, "b", "after-delete-all"), last);
    msglog_close(lg);
}
END_TEST

/* ---- resume ------------------------------------------------------------ */

#define NMODEL 50

static const char *const chans3[] = {"alpha", "beta", "gamma.x"};

typedef struct {
    int64_t id;
    int ch;
    char body[32];
} model_msg;

/* Publish NMODEL messages over chans3 in a fixed pseudo-random order. */
static void model_fill(msglog *lg, model_msg *m)
{
    uint32_t r = 12345;
    int64_t prev = 0;
    for (int i = 0; i < NMODEL; i++) {
        r = r * 1103515245u + 12345u;
        m[i].ch = (int)((r >> 16) % 3);
        snprintf(m[i].body, sizeof m[i].body, "%s #%d", chans3[m[i].ch], i);
        m[i].id = tu_append(lg, chans3[m[i].ch], m[i].body);
        ck_assert_int_gt(m[i].id, prev);
        prev = m[i].id;
    }
}

static int in_set(const char *const *set, size_t nset, const char *name)
{
    for (size_t i = 0; i < nset; i++)
        if (strcmp(set[i], name) == 0)
            return 1;
    return 0;
}

/* The model's messages of `set` after `since`, in order. */
static size_t model_expect(const model_msg *m, const char *const *set, size_t nset, int64_t since,
                           const model_msg **out)
{
    size_t n = 0;
    for (int i = 0; i < NMODEL; i++)
        if (m[i].id > since && in_set(set, nset, chans3[m[i].ch]))
            out[n++] = &m[i];
    return n;
}

static void check_single_read(msglog *lg, const model_msg *m, const char *const *set, size_t nset,
                              int64_t since, int64_t head)
{
    const model_msg *exp[NMODEL];
    size_t nexp = model_expect(m, set, nset, since, exp);
    msglog_batch b;
    read_q(lg, set, nset, since, 0, NULL, 0, &b);
    ck_assert_msg(b.n == nexp, "since=%lld: got %zu messages, want %zu", (long long)since, b.n, nexp);
    for (size_t i = 0; i < nexp; i++)
        assert_msg(&b.msgs[i], exp[i]->id, chans3[exp[i]->ch], exp[i]->body);
    ck_assert_int_eq(b.gap, 0);
    ck_assert_int_eq(b.reset, 0);
    ck_assert_int_eq(b.more, 0);
    ck_assert_int_eq(b.head, head);
    ck_assert_int_ge(b.cursor, nexp ? exp[nexp - 1]->id : since);
    ck_assert_int_le(b.cursor, head);
    int64_t cursor = b.cursor;
    msglog_batch_free(&b);
    read_q(lg, set, nset, cursor, 0, NULL, 0, &b); /* resuming repeats nothing */
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_ge(b.cursor, cursor);
    msglog_batch_free(&b);
}

/* Follow the cursor with limit=7 from `since` until !more. */
static void check_limited_reads(msglog *lg, const model_msg *m, const char *const *set,
                                size_t nset, int64_t since)
{
    const model_msg *exp[NMODEL];
    size_t nexp = model_expect(m, set, nset, since, exp), got = 0;
    int64_t cur = since;
    for (int iter = 0;; iter++) {
        ck_assert_msg(iter < 100, "limit loop from %lld does not end", (long long)since);
        msglog_batch b;
        read_q(lg, set, nset, cur, 0, NULL, 7, &b);
        ck_assert_uint_le(b.n, 7);
        for (size_t i = 0; i < b.n; i++, got++) {
            ck_assert_msg(got < nexp, "from %lld: extra message id %lld", (long long)since,
                          (long long)b.msgs[i].id);
            assert_msg(&b.msgs[i], exp[got]->id, chans3[exp[got]->ch], exp[got]->body);
        }
        if (got < nexp)
            ck_assert_msg(b.more, "from %lld: %zu of %zu read but more=0", (long long)since, got,
                          nexp);
        ck_assert_int_ge(b.cursor, cur);
        if (b.n)
            ck_assert_int_ge(b.cursor, b.msgs[b.n - 1].id);
        cur = b.cursor;
        int more = b.more;
        msglog_batch_free(&b);
        if (!more)
            break;
    }
    ck_assert_uint_eq(got, nexp);
}

START_TEST(test_resume_after_every_cursor_returns_exactly_the_rest)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    model_msg m[NMODEL];
    model_fill(lg, m);
    int64_t head = msglog_head(lg);
    ck_assert_int_eq(head, m[NMODEL - 1].id);
    const char *const set_a[] = {"alpha"};
    const char *const set_cb[] = {"gamma.x", "beta"};
    const char *const set_all[] = {"beta", "alpha", "gamma.x"};
    const char *const *sets[] = {set_a, set_cb, set_all};
    const size_t nsets[] = {1, 2, 3};
    for (int s = 0; s < 3; s++)
        for (int64_t c = 0; c <= head; c++)
            check_single_read(lg, m, sets[s], nsets[s], c, head);
    msglog_close(lg);
}
END_TEST

START_TEST(test_resume_with_limit_concatenates_to_full_sequence)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    model_msg m[NMODEL];
    model_fill(lg, m);
    int64_t head = msglog_head(lg);
    const char *const set_b[] = {"beta"};
    const char *const set_ab[] = {"alpha", "beta"};
    const char *const set_all[] = {"alpha", "beta", "gamma.x"};
    const char *const *sets[] = {set_b, set_ab, set_all};
    const size_t nsets[] = {1, 2, 3};
    for (int s = 0; s < 3; s++)
        for (int64_t c = 0; c <= head; c++)
            check_limited_reads(lg, m, sets[s], nsets[s], c);
    msglog_close(lg);
}
END_TEST

START_TEST(test_multi_channel_read_interleaves_in_id_order_and_ignores_unknown_channel)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    int64_t a1 = tu_append(lg, "a", "a1");
    int64_t b1 = tu_append(lg, "b", "b1");
    tu_append(lg, "c", "c1");
    int64_t a2 = tu_append(lg, "a", "a2");
    int64_t b2 = tu_append(lg, "b", "b2");
    const char *const ch[] = {"b", "never-published", "a"};
    msglog_batch b;
    read_q(lg, ch, 3, 0, 0, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 4);
    assert_msg(&b.msgs[0], a1, "a", "a1");
    assert_msg(&b.msgs[1], b1, "b", "b1");
    assert_msg(&b.msgs[2], a2, "a", "a2");
    assert_msg(&b.msgs[3], b2, "b", "b2");
    ck_assert_str_eq(b.msgs[0].type, MSGLOG_DEFAULT_TYPE);
    ck_assert_ptr_null(b.msgs[0].key);
    ck_assert_int_eq(b.gap, 0);
    ck_assert_int_eq(b.reset, 0);
    msglog_batch_free(&b);

    const char *const only_unknown[] = {"never-published"};
    read_q(lg, only_unknown, 1, 0, 0, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(b.reset, 0);
    ck_assert_int_eq(b.head, b2);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_body_type_and_time_round_trip_exactly)
{
    const char *dir = tu_mkdtemp();
    tu_clock_install(T0 + 123);
    msglog *lg = tu_open_log(dir);
    const unsigned char bin[] = {0xff, 0x00, 'a', 0x00, 0x80};
    msglog_entry e = {.channel = "bin", .type = "application/octet-stream", .body = bin,
                      .len = sizeof bin};
    msglog_ack ack;
    int64_t id1 = append_entry(lg, &e, &ack);
    ck_assert_int_eq(ack.time_ms, T0 + 123);
    msglog_entry empty = {.channel = "bin", .type = "text/plain", .body = "", .len = 0};
    int64_t id2 = append_entry(lg, &empty, NULL);
    msglog_batch b;
    read1(lg, "bin", 0, &b);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_int_eq(b.msgs[0].id, id1);
    ck_assert_str_eq(b.msgs[0].type, "application/octet-stream");
    ck_assert_uint_eq(b.msgs[0].len, sizeof bin);
    ck_assert_mem_eq(b.msgs[0].body, bin, sizeof bin);
    ck_assert_int_eq(b.msgs[0].time_ms, T0 + 123);
    ck_assert_int_eq(b.msgs[1].id, id2);
    ck_assert_uint_eq(b.msgs[1].len, 0);
    ck_assert_str_eq(b.msgs[1].type, "text/plain");
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

/* ---- gaps, resets, since/last ---------------------------------------- */

START_TEST(test_gap_reported_when_messages_after_cursor_were_pruned)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log_ret(dir, ret_g_count5, NULL);
    for (int i = 1; i <= 20; i++) {
        char body[16];
        snprintf(body, sizeof body, "g%d", i);
        ck_assert_int_eq(tu_append(lg, "g", body), i);
    }
    ck_assert_int_eq(tu_append(lg, "h", "h21"), 21);
    ck_assert_int_eq(prune_all(lg), 15);
    ck_assert_int_eq(tu_sql_int(db, "SELECT pruned_through FROM channel WHERE name = 'g'"), 15);
    ck_assert_int_eq(tu_sql_int(db, "SELECT pruned_through FROM channel WHERE name = 'h'"), 0);

    const int64_t old_cursors[] = {0, 3, 14};
    for (int i = 0; i < 3; i++) {
        msglog_batch b;
        read1(lg, "g", old_cursors[i], &b);
        ck_assert_msg(b.gap == 1, "cursor %lld: gap not reported", (long long)old_cursors[i]);
        ck_assert_int_eq(b.oldest, 16);
        ck_assert_int_eq(b.reset, 0);
        ck_assert_uint_eq(b.n, 5);
        assert_msg(&b.msgs[0], 16, "g", "g16");
        assert_msg(&b.msgs[4], 20, "g", "g20");
        msglog_batch_free(&b);
    }
    const int64_t fine_cursors[] = {15, 16, 17, 20, 21};
    for (int i = 0; i < 5; i++) {
        msglog_batch b;
        read1(lg, "g", fine_cursors[i], &b);
        ck_assert_msg(b.gap == 0, "cursor %lld: false gap", (long long)fine_cursors[i]);
        ck_assert_uint_eq(b.n, (size_t)(fine_cursors[i] >= 20 ? 0 : 20 - fine_cursors[i]));
        msglog_batch_free(&b);
    }
    msglog_batch b;
    read1(lg, "h", 0, &b); /* an unpruned channel has no gap */
    ck_assert_int_eq(b.gap, 0);
    ck_assert_uint_eq(b.n, 1);
    msglog_batch_free(&b);
    const char *const gh[] = {"h", "g"};
    read_q(lg, gh, 2, 0, 0, NULL, 0, &b); /* any pruned channel of the set is a gap */
    ck_assert_int_eq(b.gap, 1);
    ck_assert_uint_eq(b.n, 6);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_reset_on_epoch_mismatch_or_cursor_ahead_of_head)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    for (int i = 0; i < 3; i++)
        tu_append(lg, "e", "m");
    const char *epoch = msglog_epoch(lg);
    ck_assert_uint_eq(strlen(epoch), MSGLOG_EPOCH_LEN);
    for (const char *p = epoch; *p; p++)
        ck_assert_msg(isxdigit((unsigned char)*p), "epoch %s is not hex", epoch);
    char wrong[MSGLOG_EPOCH_LEN + 1];
    memcpy(wrong, epoch, sizeof wrong);
    wrong[0] = wrong[0] == '0' ? '1' : '0';

    msglog_batch b;
    const char *const ch[] = {"e"};
    read_q(lg, ch, 1, 1, 0, wrong, 0, &b);
    ck_assert_int_eq(b.reset, 1);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(b.cursor, 3);
    ck_assert_int_eq(b.head, 3);
    ck_assert_str_eq(b.epoch, epoch);
    msglog_batch_free(&b);

    read_q(lg, ch, 1, 10, 0, NULL, 0, &b); /* cursor ahead of the log */
    ck_assert_int_eq(b.reset, 1);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(b.cursor, 3);
    msglog_batch_free(&b);

    read_q(lg, ch, 1, 1, 0, epoch, 0, &b); /* the right epoch */
    ck_assert_int_eq(b.reset, 0);
    ck_assert_uint_eq(b.n, 2);
    ck_assert_str_eq(b.epoch, epoch);
    msglog_batch_free(&b);

    read_q(lg, ch, 1, 3, 0, epoch, 0, &b); /* exactly at the head */
    ck_assert_int_eq(b.reset, 0);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(b.cursor, 3);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_epoch_is_stable_per_database_and_differs_between_databases)
{
    const char *dir1 = tu_mkdtemp(), *dir2 = tu_mkdtemp();
    msglog *lg = tu_open_log(dir1);
    char e1[MSGLOG_EPOCH_LEN + 1];
    snprintf(e1, sizeof e1, "%s", msglog_epoch(lg));
    tu_append(lg, "x", "y");
    msglog_close(lg);
    lg = tu_open_log(dir1);
    ck_assert_str_eq(msglog_epoch(lg), e1);
    msglog_close(lg);
    lg = tu_open_log(dir2);
    ck_assert_str_ne(msglog_epoch(lg), e1);
    msglog_close(lg);
}
END_TEST

START_TEST(test_last_k_returns_newest_k_in_order)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    int64_t ids[10];
    for (int i = 0; i < 10; i++)
        ids[i] = tu_append(lg, i % 2 ? "b" : "a", i % 2 ? "b" : "a");
    const char *const ab[] = {"a", "b"};
    msglog_batch b;
    read_q(lg, ab, 2, -1, 3, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(b.msgs[i].id, ids[7 + i]);
    ck_assert_int_ge(b.cursor, ids[9]);
    ck_assert_int_eq(b.gap, 0);
    msglog_batch_free(&b);

    const char *const a[] = {"a"};
    read_q(lg, a, 1, -1, 2, NULL, 0, &b); /* newest 2 of "a": ids[6], ids[8] */
    ck_assert_uint_eq(b.n, 2);
    ck_assert_int_eq(b.msgs[0].id, ids[6]);
    ck_assert_int_eq(b.msgs[1].id, ids[8]);
    msglog_batch_free(&b);

    read_q(lg, a, 1, -1, 100, NULL, 0, &b); /* more than held: all of them */
    ck_assert_uint_eq(b.n, 5);
    ck_assert_int_eq(b.msgs[0].id, ids[0]);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_no_since_starts_at_head_with_no_messages)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    for (int i = 0; i < 4; i++)
        tu_append(lg, "n", "old");
    const char *const ch[] = {"n"};
    msglog_batch b;
    read_q(lg, ch, 1, -1, 0, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 0);
    ck_assert_int_eq(b.cursor, 4);
    ck_assert_int_eq(b.head, 4);
    ck_assert_int_eq(b.reset, 0);
    ck_assert_int_eq(b.gap, 0);
    int64_t cursor = b.cursor;
    msglog_batch_free(&b);
    int64_t id = tu_append(lg, "n", "new");
    read1(lg, "n", cursor, &b); /* ... and then follows */
    ck_assert_uint_eq(b.n, 1);
    assert_msg(&b.msgs[0], id, "n", "new");
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_empty_read_returns_cursor_safe_to_adopt)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    tu_append(lg, "s1", "1");
    tu_append(lg, "other", "2");
    tu_append(lg, "other", "3");
    tu_append(lg, "s2", "4");
    tu_append(lg, "other", "5");
    const char *const set[] = {"s1", "s2"};
    msglog_batch b;
    read_q(lg, set, 2, 0, 0, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 2);
    int64_t c1 = b.cursor;
    ck_assert_int_ge(c1, 4);
    msglog_batch_free(&b);

    tu_append(lg, "other", "6"); /* traffic elsewhere only: a "timeout" read */
    tu_append(lg, "other", "7");
    read_q(lg, set, 2, c1, 0, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 0);
    int64_t c2 = b.cursor;
    ck_assert_int_ge(c2, c1);
    ck_assert_int_le(c2, b.head);
    msglog_batch_free(&b);
    read_q(lg, set, 2, 0, 0, NULL, 0, &b); /* nothing of the set in (4, c2] */
    for (size_t i = 0; i < b.n; i++)
        ck_assert_msg(b.msgs[i].id <= 4 || b.msgs[i].id > c2, "id %lld skipped by cursor %lld",
                      (long long)b.msgs[i].id, (long long)c2);
    msglog_batch_free(&b);

    int64_t id = tu_append(lg, "s2", "8");
    read_q(lg, set, 2, c2, 0, NULL, 0, &b);
    ck_assert_uint_eq(b.n, 1);
    assert_msg(&b.msgs[0], id, "s2", "8");
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

/* ---- idempotency and compaction --------------------------------------- */

START_TEST(test_idempotent_publish_returns_same_id_and_stores_once)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    msglog_ack a1, a2, a3;
    int64_t id1 = append_idem(lg, "i", "key-1", "first", &a1);
    ck_assert_int_eq(a1.replayed, 0);
    int64_t id2 = append_idem(lg, "i", "key-1", "first", &a2); /* the retry */
    ck_assert_int_eq(id2, id1);
    ck_assert_int_eq(a2.replayed, 1);
    ck_assert_int_eq(msglog_head(lg), id1); /* a replay appends nothing */
    int64_t id3 = append_idem(lg, "j", "key-1", "other channel", &a3);
    ck_assert_int_gt(id3, id1);
    ck_assert_int_eq(a3.replayed, 0);
    msglog_batch b;
    read1(lg, "i", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    assert_msg(&b.msgs[0], id1, "i", "first");
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_compaction_keeps_latest_per_key_without_gap)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    int64_t a1 = append_kv(lg, "dash", "a", "a v1");
    int64_t b1 = append_kv(lg, "dash", "b", "b v1");
    int64_t a2 = append_kv(lg, "dash", "a", "a v2");
    int64_t plain = append_kv(lg, "dash", NULL, "no key");
    int64_t other = append_kv(lg, "elsewhere", "a", "same key, other channel");
    ck_assert_int_lt(a1, b1);
    msglog_batch b;
    read1(lg, "dash", 0, &b);
    ck_assert_uint_eq(b.n, 3);
    assert_msg(&b.msgs[0], b1, "dash", "b v1");
    ck_assert_str_eq(b.msgs[0].key, "b");
    assert_msg(&b.msgs[1], a2, "dash", "a v2");
    ck_assert_str_eq(b.msgs[1].key, "a");
    assert_msg(&b.msgs[2], plain, "dash", "no key");
    ck_assert_int_eq(b.gap, 0);
    msglog_batch_free(&b);
    read1(lg, "dash", a1, &b); /* a client that saw v1 continues, no gap */
    ck_assert_uint_eq(b.n, 3);
    ck_assert_int_eq(b.gap, 0);
    msglog_batch_free(&b);
    read1(lg, "elsewhere", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_int_eq(b.msgs[0].id, other);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

/* ---- retention --------------------------------------------------------- */

START_TEST(test_retention_by_age_uses_clock_and_advances_pruned_through)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    tu_clock_install(T0);
    msglog *lg = tu_open_log_ret(dir, ret_age60, NULL);
    for (int i = 0; i < 3; i++)
        tu_append(lg, "t", "old");
    tu_clock_advance(50 * 1000);
    int64_t young = tu_append(lg, "t", "young");
    tu_clock_advance(20 * 1000); /* the first 3 are 70 s old, the 4th 20 s */
    ck_assert_int_eq(prune_all(lg), 3);
    ck_assert_int_eq(tu_sql_int(db, "SELECT pruned_through FROM channel WHERE name = 't'"), 3);
    msglog_batch b;
    read1(lg, "t", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    assert_msg(&b.msgs[0], young, "t", "young");
    ck_assert_int_eq(b.msgs[0].time_ms, T0 + 50 * 1000);
    ck_assert_int_eq(b.gap, 1);
    ck_assert_int_eq(b.oldest, young);
    msglog_batch_free(&b);
    read1(lg, "t", 3, &b);
    ck_assert_int_eq(b.gap, 0);
    msglog_batch_free(&b);
    tu_clock_advance(10 * 1000); /* 30 s old: still kept */
    ck_assert_int_eq(prune_all(lg), 0);
    msglog_close(lg);
}
END_TEST

START_TEST(test_retention_by_count_keeps_newest_per_channel)
{
    const char *dir = tu_mkdtemp();
    int64_t keep = 3;
    msglog *lg = tu_open_log_ret(dir, ret_count_ud, &keep);
    int64_t ids[2][8];
    for (int i = 0; i < 8; i++) {
        ids[0][i] = tu_append(lg, "x", "x");
        ids[1][i] = tu_append(lg, "y", "y");
    }
    ck_assert_int_eq(count_messages(lg), 16);
    ck_assert_int_eq(prune_all(lg), 10);
    const char *names[] = {"x", "y"};
    for (int c = 0; c < 2; c++) {
        msglog_batch b;
        read1(lg, names[c], 0, &b);
        ck_assert_uint_eq(b.n, 3);
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(b.msgs[i].id, ids[c][5 + i]);
        ck_assert_int_eq(b.gap, 1);
        msglog_batch_free(&b);
    }
    msglog_close(lg);
}
END_TEST

START_TEST(test_prune_respects_budget_and_repeated_calls_finish)
{
    const char *dir = tu_mkdtemp();
    int64_t keep = 2;
    msglog *lg = tu_open_log_ret(dir, ret_count_ud, &keep);
    for (int i = 0; i < 20; i++)
        tu_append(lg, i % 2 ? "p" : "q", "m");
    ck_assert_int_eq(count_messages(lg), 20);
    int64_t total = 0, deleted;
    int calls = 0;
    do {
        deleted = -1;
        ck_assert_int_eq(msglog_prune(lg, 5, &deleted), 0);
        ck_assert_int_ge(deleted, 0);
        ck_assert_int_le(deleted, 5);
        total += deleted;
        calls++;
        ck_assert_int_eq(count_messages(lg), 20 - total);
    } while (deleted > 0 && calls < 50);
    ck_assert_int_eq(total, 16);
    ck_assert_int_ge(calls, 4);
    ck_assert_int_eq(count_messages(lg), 4);
    msglog_close(lg);
}
END_TEST

START_TEST(test_append_prunes_every_prune_every_appends)
{
    const char *dir = tu_mkdtemp();
    int64_t keep = 3;
    msglog_options opt = {.path = db_path(dir), .create = 1, .retention = ret_count_ud,
                          .retention_ud = &keep, .prune_every = 10};
    msglog *lg = NULL;
    char err[256] = "";
    ck_assert_msg(msglog_open(&lg, &opt, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 9; i++)
        tu_append(lg, "auto", "m");
    ck_assert_int_eq(count_messages(lg), 9); /* not yet */
    tu_append(lg, "auto", "m");
    ck_assert_int_eq(count_messages(lg), 3); /* the 10th append pruned */
    msglog_close(lg);
}
END_TEST

/* ---- the outbox view --------------------------------------------------- */

START_TEST(test_outbox_insert_through_publish_view_is_read_by_msglog)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log(dir);
    int64_t first = tu_append(lg, "news", "from msglog");
    ck_assert_int_ge(msglog_changed(lg), 0); /* baseline */
    char err[256];
    int rc = tu_sql_exec(db, "INSERT INTO publish(channel, body) VALUES('news', 'hi')", err,
                         sizeof err);
    ck_assert_msg(rc == 0, "outbox insert failed: %d %s", rc, err);
    rc = tu_sql_exec(db,
                     "BEGIN; INSERT INTO publish(channel, type, body, key, idem) "
                     "VALUES('fresh', 'application/json', '{\"n\":1}', 'k', 'once'); COMMIT;",
                     err, sizeof err);
    ck_assert_msg(rc == 0, "outbox insert with all columns failed: %d %s", rc, err);
    ck_assert_int_eq(msglog_changed(lg), 1);
    ck_assert_int_eq(msglog_changed(lg), 0);

    msglog_batch b;
    read1(lg, "news", first, &b);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_int_gt(b.msgs[0].id, first);
    ck_assert_str_eq(b.msgs[0].channel, "news");
    ck_assert_str_eq(b.msgs[0].type, MSGLOG_DEFAULT_TYPE);
    ck_assert_uint_eq(b.msgs[0].len, 2);
    ck_assert_mem_eq(b.msgs[0].body, "hi", 2);
    int64_t now = msglog_now_ms();
    ck_assert_msg(b.msgs[0].time_ms > now - 60000 && b.msgs[0].time_ms <= now + 1000,
                  "time_ms %lld is not in milliseconds near now (%lld)",
                  (long long)b.msgs[0].time_ms, (long long)now);
    msglog_batch_free(&b);
    read1(lg, "fresh", 0, &b); /* a channel created by the view */
    ck_assert_uint_eq(b.n, 1);
    ck_assert_str_eq(b.msgs[0].type, "application/json");
    ck_assert_str_eq(b.msgs[0].key, "k");
    ck_assert_int_eq(b.msgs[0].id, msglog_head(lg));
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_outbox_insert_with_invalid_channel_fails_and_inserts_nothing)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log(dir);
    tu_append(lg, "news", "one");
    msglog_close(lg);
    const char *bad[] = {"INSERT INTO publish(channel, body) VALUES('bad name!', 'x')",
                         "INSERT INTO publish(channel, body) VALUES('', 'x')",
                         "INSERT INTO publish(channel, body) VALUES(NULL, 'x')",
                         "INSERT INTO publish(channel, body) VALUES('a/b', 'x')",
                         "INSERT INTO publish(channel, body) VALUES('caf\xc3\xa9', 'x')",
                         "INSERT INTO publish(channel, body) VALUES(printf('%.129c', 'a'), 'x')",
                         "INSERT INTO publish(channel, body) VALUES('news', NULL)"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256];
        int rc = tu_sql_exec(db, bad[i], err, sizeof err);
        ck_assert_msg(rc != 0, "accepted: %s", bad[i]);
    }
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 1);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM channel"), 1);
    char err[256];
    ck_assert_msg(tu_sql_exec(db, "INSERT INTO publish(channel, body) VALUES('A-z.0_9:@x', 'ok')",
                              err, sizeof err) == 0, "valid name refused: %s", err);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 2);
}
END_TEST

START_TEST(test_changed_reports_commits_of_other_connections)
{
    const char *dir = tu_mkdtemp();
    msglog *a = tu_open_log(dir);
    msglog *b = tu_open_log(dir);
    ck_assert_int_ge(msglog_changed(a), 0);
    ck_assert_int_eq(msglog_changed(a), 0);
    int64_t id = tu_append(b, "c", "from b");
    ck_assert_int_eq(msglog_changed(a), 1);
    ck_assert_int_eq(msglog_changed(a), 0);
    ck_assert_int_eq(msglog_head(a), id);
    msglog_close(a);
    msglog_close(b);
}
END_TEST

typedef struct {
    char names[8][16];
    int n;
} seen_channels;

static void collect_channel(const char *channel, void *ud)
{
    seen_channels *sc = ud;
    if (sc->n < 8)
        snprintf(sc->names[sc->n], sizeof sc->names[0], "%s", channel);
    sc->n++;
}

static int seen_has(const seen_channels *sc, const char *name)
{
    int k = 0;
    for (int i = 0; i < sc->n && i < 8; i++)
        k += strcmp(sc->names[i], name) == 0;
    return k;
}

START_TEST(test_changed_channels_reports_each_concerned_channel_once)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    int64_t a1 = tu_append(lg, "a", "1");
    tu_append(lg, "b", "2");
    int64_t a3 = tu_append(lg, "a", "3");
    int64_t c4 = tu_append(lg, "c", "4");
    seen_channels sc = {0};
    int64_t head = -1;
    ck_assert_int_eq(msglog_changed_channels(lg, a1, &head, collect_channel, &sc), 0);
    ck_assert_int_eq(head, c4);
    ck_assert_int_eq(sc.n, 3);
    ck_assert_int_eq(seen_has(&sc, "a"), 1);
    ck_assert_int_eq(seen_has(&sc, "b"), 1);
    ck_assert_int_eq(seen_has(&sc, "c"), 1);
    memset(&sc, 0, sizeof sc);
    ck_assert_int_eq(msglog_changed_channels(lg, a3, &head, collect_channel, &sc), 0);
    ck_assert_int_eq(sc.n, 1);
    ck_assert_int_eq(seen_has(&sc, "c"), 1);
    memset(&sc, 0, sizeof sc);
    ck_assert_int_eq(msglog_changed_channels(lg, c4, &head, collect_channel, &sc), 0);
    ck_assert_int_eq(sc.n, 0);
    ck_assert_int_eq(head, c4);
    msglog_close(lg);
}
END_TEST

/* ---- validation and opening -------------------------------------------- */

START_TEST(test_channel_names_validated_and_bad_append_writes_nothing)
{
    char name128[129], name129[130];
    memset(name128, 'a', 128);
    name128[128] = '\0';
    memset(name129, 'b', 129);
    name129[129] = '\0';
    ck_assert_int_eq(msglog_channel_valid("news", 4), 1);
    ck_assert_int_eq(msglog_channel_valid("A-z.0_9:@x", 10), 1);
    ck_assert_int_eq(msglog_channel_valid(name128, 128), 1);
    ck_assert_int_eq(msglog_channel_valid(name129, 129), 0);
    ck_assert_int_eq(msglog_channel_valid("", 0), 0);
    ck_assert_int_eq(msglog_channel_valid("a b", 3), 0);
    ck_assert_int_eq(msglog_channel_valid("a/b", 3), 0);
    ck_assert_int_eq(msglog_channel_valid("ab\0c", 4), 0);
    ck_assert_int_eq(msglog_channel_valid("caf\xc3\xa9", 5), 0);
    ck_assert_int_eq(msglog_channel_valid("a,b", 3), 0);

    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    int64_t id = tu_append(lg, "ok", "x");
    msglog_entry e = {.channel = "not ok", .body = "x", .len = 1};
    msglog_ack ack;
    ck_assert_int_eq(msglog_append(lg, &e, &ack), -EINVAL);
    e.channel = name129;
    ck_assert_int_eq(msglog_append(lg, &e, &ack), -EINVAL);
    ck_assert_int_eq(msglog_head(lg), id);
    ck_assert_int_eq(count_messages(lg), 1);
    msglog_close(lg);
}
END_TEST

START_TEST(test_append_batch_is_all_or_nothing)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    int64_t id = tu_append(lg, "ok", "x");
    msglog_entry e[3] = {{.channel = "ok", .body = "1", .len = 1},
                         {.channel = "bad channel", .body = "2", .len = 1},
                         {.channel = "ok", .body = "3", .len = 1}};
    msglog_ack acks[3];
    ck_assert_int_lt(msglog_append_batch(lg, e, 3, acks), 0);
    ck_assert_int_eq(msglog_head(lg), id);
    ck_assert_int_eq(count_messages(lg), 1);
    msglog_close(lg);
}
END_TEST

START_TEST(test_open_fails_clearly_for_missing_directory_or_missing_file)
{
    const char *dir = tu_mkdtemp();
    const char *missing_dir = tu_path(dir, "no-such-dir/test.db");
    const char *missing_file = tu_path(dir, "absent.db");
    msglog_options opt = {.path = missing_dir, .create = 1};
    char err[256] = "";
    msglog *lg = (msglog *)&opt;
    ck_assert_int_lt(msglog_open(&lg, &opt, err, sizeof err), 0);
    ck_assert_ptr_null(lg);
    ck_assert_msg(err[0] != '\0', "no error text for a missing directory");
    opt.path = missing_file;
    opt.create = 0;
    err[0] = '\0';
    ck_assert_int_lt(msglog_open(&lg, &opt, err, sizeof err), 0);
    ck_assert_ptr_null(lg);
    ck_assert_msg(err[0] != '\0', "no error text for a missing file");
    ck_assert_msg(!tu_exists(missing_file), "create=0 created the file");
}
END_TEST

START_TEST(test_open_refuses_foreign_sqlite_database_and_leaves_it_alone)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    tu_write_file(db, "", 0);
    char err[256];
    ck_assert_int_eq(tu_sql_exec(db, "CREATE TABLE customers(name TEXT); "
                                     "INSERT INTO customers VALUES('ada');", err, sizeof err), 0);
    msglog_options opt = {.path = db, .create = 1};
    msglog *lg = NULL;
    err[0] = '\0';
    ck_assert_int_lt(msglog_open(&lg, &opt, err, sizeof err), 0);
    ck_assert_ptr_null(lg);
    ck_assert_msg(err[0] != '\0', "no error text for a foreign database");
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM sqlite_master"), 1);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM customers"), 1);
}
END_TEST

START_TEST(test_open_refuses_garbage_file_and_leaves_it_alone)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = "not a database\n"[i % 15];
    tu_write_file(db, junk, sizeof junk);
    msglog_options opt = {.path = db, .create = 1};
    msglog *lg = NULL;
    char err[256] = "";
    ck_assert_int_lt(msglog_open(&lg, &opt, err, sizeof err), 0);
    ck_assert_ptr_null(lg);
    ck_assert_msg(err[0] != '\0', "no error text for a garbage file");
    size_t n = 0;
    const char *after = tu_read_file(db, &n);
    ck_assert_uint_eq(n, sizeof junk);
    ck_assert_mem_eq(after, junk, n);
}
END_TEST

START_TEST(test_readonly_open_reads_and_refuses_writes)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log(dir);
    int64_t id = tu_append(lg, "r", "x");
    msglog_close(lg);
    msglog_options opt = {.path = db, .readonly = 1};
    char err[256] = "";
    ck_assert_msg(msglog_open(&lg, &opt, err, sizeof err) == 0, "readonly open: %s", err);
    msglog_batch b;
    read1(lg, "r", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    ck_assert_int_eq(b.msgs[0].id, id);
    msglog_batch_free(&b);
    msglog_entry e = {.channel = "r", .body = "y", .len = 1};
    msglog_ack ack;
    ck_assert_int_lt(msglog_append(lg, &e, &ack), 0);
    msglog_close(lg);
}
END_TEST

START_TEST(test_stats_count_head_messages_channels_bytes)
{
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    tu_append(lg, "a", "12345");
    tu_append(lg, "b", "123");
    int64_t head = tu_append(lg, "a", "12");
    msglog_stats st;
    memset(&st, 0, sizeof st);
    ck_assert_int_eq(msglog_stats_get(lg, &st), 0);
    ck_assert_int_eq(st.head, head);
    ck_assert_int_eq(st.messages, 3);
    ck_assert_int_eq(st.channels, 2);
    ck_assert_int_ge(st.bytes, 10);
    ck_assert_str_eq(st.epoch, msglog_epoch(lg));
    msglog_close(lg);
}
END_TEST

/* ---- schema 2: idempotency beyond compaction ----------------------------- */

static msglog_ack append_ack(msglog *lg, const char *chan, const char *type, const char *key,
                             const char *idem, const char *body)
{
    msglog_entry e = {.channel = chan, .type = type, .body = body, .len = strlen(body),
                      .key = key, .idem = idem};
    msglog_ack ack;
    append_entry(lg, &e, &ack);
    return ack;
}

/* Append that must fail with `code`; returns nothing. */
static void append_fails(msglog *lg, const msglog_entry *e, int code)
{
    msglog_ack ack;
    int rc = msglog_append(lg, e, &ack);
    ck_assert_msg(rc == code, "append: rc=%d (want %d) %s", rc, code, msglog_errmsg(lg));
}

START_TEST(test_idempotent_retry_after_compaction_replays_original_id_and_time)
{
    /* The bug: v1 (key X, idem R1), then v2 (key X, idem R2) compacts v1
     * away; the retry of R1 found no message carrying R1, appended v1 again
     * and made it X's value.  Now the idem table answers the retry with v1's
     * id and time, and X stays v2. */
    const char *dir = tu_mkdtemp();
    tu_clock_install(T0);
    msglog *lg = tu_open_log(dir);
    msglog_ack a1 = append_ack(lg, "state", NULL, "X", "R1", "v1");
    tu_clock_advance(1000);
    msglog_ack a2 = append_ack(lg, "state", NULL, "X", "R2", "v2");
    tu_clock_advance(1000);
    msglog_ack r = append_ack(lg, "state", NULL, "X", "R1", "v1");
    ck_assert_int_eq(r.replayed, 1);
    ck_assert_int_eq(r.id, a1.id);
    ck_assert_int_eq(r.time_ms, T0);
    ck_assert_int_eq(msglog_head(lg), a2.id);
    msglog_batch b;
    read1(lg, "state", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    assert_msg(&b.msgs[0], a2.id, "state", "v2");
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_idempotency_key_reused_with_different_message_is_refused_and_writes_nothing)
{
    /* Before schema 2 a retry with another body was answered as a replay of
     * the first, silently dropping the new message. */
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    msglog_ack a = append_ack(lg, "pay", "application/json", "k", "order-1", "{\"n\":1}");
    msglog_entry diff[] = {
        {.channel = "pay", .type = "application/json", .body = "{\"n\":2}", .len = 7, .key = "k",
         .idem = "order-1"},
        {.channel = "pay", .type = "text/plain", .body = "{\"n\":1}", .len = 7, .key = "k",
         .idem = "order-1"},
        {.channel = "pay", .type = "application/json", .body = "{\"n\":1}", .len = 7,
         .idem = "order-1"},
    };
    for (size_t i = 0; i < sizeof diff / sizeof diff[0]; i++) {
        append_fails(lg, &diff[i], -EEXIST);
        ck_assert_str_eq(msglog_errmsg(lg), "Idempotency-Key reused with a different message");
    }
    /* Compacted away, the digest still tells them apart. */
    append_ack(lg, "pay", "application/json", "k", "order-2", "{\"n\":3}");
    append_fails(lg, &diff[0], -EEXIST);
    /* All or nothing: a batch holding a reused key adds nothing. */
    int64_t head = msglog_head(lg);
    msglog_entry batch[2] = {{.channel = "fresh", .body = "x", .len = 1}, diff[0]};
    msglog_ack acks[2];
    ck_assert_int_eq(msglog_append_batch(lg, batch, 2, acks), -EEXIST);
    ck_assert_int_eq(msglog_head(lg), head);
    ck_assert_int_eq(count_messages(lg), 1);
    msglog_ack r = append_ack(lg, "pay", "application/json", "k", "order-1", "{\"n\":1}");
    ck_assert_int_eq(r.replayed, 1);
    ck_assert_int_eq(r.id, a.id);
    msglog_close(lg);
}
END_TEST

START_TEST(test_idempotency_window_ends_when_retention_prunes_the_message)
{
    /* Idem rows go with retention (not with compaction): once the message
     * of a key is pruned, the key is forgotten and the table stays bounded. */
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    int64_t keep = 2;
    msglog *lg = tu_open_log_ret(dir, ret_count_ud, &keep);
    msglog_ack first = append_ack(lg, "w", NULL, NULL, "A", "a");
    append_ack(lg, "w", NULL, NULL, "B", "b");
    msglog_ack again = append_ack(lg, "w", NULL, NULL, "A", "a");
    ck_assert_int_eq(again.replayed, 1);
    append_ack(lg, "w", NULL, NULL, NULL, "c");
    ck_assert_int_eq(prune_all(lg), 1); /* "a" */
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM idem WHERE key = 'A'"), 0);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM idem WHERE key = 'B'"), 1);
    msglog_ack late = append_ack(lg, "w", NULL, NULL, "A", "a");
    ck_assert_int_eq(late.replayed, 0);
    ck_assert_int_gt(late.id, first.id);
    msglog_close(lg);
}
END_TEST

START_TEST(test_outbox_idempotency_uses_the_same_table_as_append)
{
    /* The view used to look for the key in message.idem only, so its retry
     * after compaction published again; it now shares `idem` with C. */
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log(dir);
    char err[256];
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, body, key, idem) "
                                     "VALUES ('s', 'v1', 'X', 'R1')", err, sizeof err), 0);
    int64_t v1 = msglog_head(lg);
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, body, key, idem) "
                                     "VALUES ('s', 'v2', 'X', 'R2')", err, sizeof err), 0);
    int64_t v2 = msglog_head(lg);
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, body, key, idem) "
                                     "VALUES ('s', 'v1', 'X', 'R1')", err, sizeof err), 0);
    ck_assert_int_eq(msglog_head(lg), v2);
    msglog_batch b;
    read1(lg, "s", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    assert_msg(&b.msgs[0], v2, "s", "v2");
    msglog_batch_free(&b);
    /* While the original is held the view tells a different message apart. */
    ck_assert_int_ne(tu_sql_exec(db, "INSERT INTO publish(channel, body, key, idem) "
                                     "VALUES ('s', 'v3', 'X', 'R2')", err, sizeof err), 0);
    ck_assert_msg(strstr(err, "Idempotency-Key reused with a different message"), "%s", err);
    /* C sees the view's keys: a NULL digest is checked against the held
     * original, and a compacted one is a replay. */
    msglog_ack r = append_ack(lg, "s", NULL, "X", "R2", "v2");
    ck_assert_int_eq(r.replayed, 1);
    ck_assert_int_eq(r.id, v2);
    msglog_entry other = {.channel = "s", .body = "v9", .len = 2, .key = "X", .idem = "R2"};
    append_fails(lg, &other, -EEXIST);
    r = append_ack(lg, "s", NULL, "X", "R1", "v1");
    ck_assert_int_eq(r.replayed, 1);
    ck_assert_int_eq(r.id, v1);
    /* And the view sees C's keys. */
    msglog_ack c = append_ack(lg, "s", NULL, NULL, "C1", "c");
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, body, idem) "
                                     "VALUES ('s', 'c', 'C1')", err, sizeof err), 0);
    ck_assert_int_eq(msglog_head(lg), c.id);
    ck_assert_int_ne(tu_sql_exec(db, "INSERT INTO publish(channel, body, idem) "
                                     "VALUES ('s', 'd', 'C1')", err, sizeof err), 0);
    ck_assert_int_eq(msglog_head(lg), c.id);
    msglog_close(lg);
}
END_TEST

/* The schema holdfast 1 created, verbatim: the fixture of the migration. */
static const char schema_v1[] =
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
    "          coalesce(NEW.type, 'text/plain;charset=utf-8'), NEW.body, NEW.key, NEW.idem"
    "   FROM channel c WHERE c.name = NEW.channel"
    "    AND NOT EXISTS (SELECT 1 FROM message m WHERE NEW.idem IS NOT NULL"
    "      AND m.channel = c.id AND m.idem = NEW.idem);"
    "END;"
    "INSERT INTO meta VALUES ('app', 'holdfast'), ('epoch', '0123456789abcdef');"
    "PRAGMA user_version = 1;";

START_TEST(test_schema_1_database_migrates_in_place_keeping_data_epoch_and_idempotency)
{
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    char err[256];
    tu_write_file(db, "", 0);
    ck_assert_msg(tu_sql_exec(db, schema_v1, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(tu_sql_exec(db,
                              "INSERT INTO publish(channel, body, idem) VALUES ('news', 'n1', 'I1');"
                              "INSERT INTO publish(channel, body) VALUES ('news', 'n2');"
                              "INSERT INTO publish(channel, body, key, idem)"
                              "  VALUES ('state', 's1', 'X', 'S1');"
                              "INSERT INTO publish(channel, body, key, idem)"
                              "  VALUES ('state', 's2', 'X', 'S2');"
                              "INSERT INTO publish(channel, type, body)"
                              "  VALUES ('news', printf('text/%.6000c', 'x'), 'long type');"
                              "INSERT INTO publish(channel, type, body)"
                              "  VALUES ('news', 'text/plain' || char(13, 10) || 'X: y', 'crlf');",
                              err, sizeof err) == 0, "%s", err);
    int64_t n1 = tu_sql_int(db, "SELECT id FROM message WHERE body = 'n1'");
    int64_t bytes = tu_sql_int(db, "SELECT sum(length(CAST(body AS BLOB))) FROM message");

    /* A read-only handle does not migrate: it reads and counts schema 1. */
    msglog_options ro = {.path = db, .readonly = 1};
    msglog *lg = NULL;
    ck_assert_msg(msglog_open(&lg, &ro, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(count_messages(lg), 5);
    msglog_batch b;
    read1(lg, "state", 0, &b);
    ck_assert_uint_eq(b.n, 1);
    msglog_batch_free(&b);
    msglog_close(lg);
    ck_assert_int_eq(tu_sql_int(db, "PRAGMA user_version"), 1);

    lg = tu_open_log(dir);
    ck_assert_int_eq(tu_sql_int(db, "PRAGMA user_version"), MSGLOG_SCHEMA_VERSION);
    ck_assert_str_eq(msglog_epoch(lg), "0123456789abcdef");
    ck_assert_int_eq(msglog_head(lg), 6);
    msglog_stats st;
    ck_assert_int_eq(msglog_stats_get(lg, &st), 0);
    ck_assert_int_eq(st.messages, 5);
    ck_assert_int_eq(st.channels, 2);
    ck_assert_int_eq(st.bytes, bytes);
    ck_assert_int_eq(tu_sql_int(db, "SELECT messages FROM channel WHERE name = 'news'"), 4);
    ck_assert_int_eq(tu_sql_int(db, "SELECT messages FROM channel WHERE name = 'state'"), 1);
    /* The types no proxy can carry became octet-stream; the bodies stay. */
    read1(lg, "news", 0, &b);
    ck_assert_uint_eq(b.n, 4);
    assert_msg(&b.msgs[2], 5, "news", "long type");
    ck_assert_str_eq(b.msgs[2].type, "application/octet-stream");
    ck_assert_str_eq(b.msgs[3].type, "application/octet-stream");
    ck_assert_str_eq(b.msgs[1].type, MSGLOG_DEFAULT_TYPE);
    msglog_batch_free(&b);
    /* Keys written by holdfast 1 keep working, digests included. */
    msglog_ack r = append_ack(lg, "news", NULL, NULL, "I1", "n1");
    ck_assert_int_eq(r.replayed, 1);
    ck_assert_int_eq(r.id, n1);
    msglog_entry e = {.channel = "news", .body = "not n1", .len = 6, .idem = "I1"};
    append_fails(lg, &e, -EEXIST);
    r = append_ack(lg, "state", NULL, "X", "S2", "s2");
    ck_assert_int_eq(r.replayed, 1);
    ck_assert_int_eq(msglog_head(lg), 6);
    msglog_close(lg);
    lg = tu_open_log(dir); /* and the next open does not migrate again */
    ck_assert_str_eq(msglog_epoch(lg), "0123456789abcdef");
    ck_assert_int_eq(count_messages(lg), 5);
    msglog_close(lg);
}
END_TEST

/* ---- content types -------------------------------------------------------- */

START_TEST(test_type_valid_accepts_media_types_and_refuses_the_rest)
{
    char max[MSGLOG_TYPE_MAX + 2];
    memset(max, 'a', sizeof max);
    memcpy(max, "text/", 5);
    max[MSGLOG_TYPE_MAX] = '\0';
    static const char *const good[] = {
        "text/plain", MSGLOG_DEFAULT_TYPE, "text/plain; charset=utf-8", "application/json",
        "application/vnd.api+json", "multipart/form-data; boundary=\"a b;c\"", "text/plain;",
        "text/plain ; a=b ;c=d", "a/b;x=\"q\\\"q\"", "a/b;x=\"tab\there\"", "*/*"};
    static const char *const bad[] = {
        "", "text", "text/", "/plain", "text/plain\r\nX-Evil: 1", "text/pl ain",
        "text/plain;charset", "text/plain;=x", "text/plain;a=\"unterminated", "text/plain;a=b c",
        "t\xc3\xa9xt/plain", "text/plain\x01", " text/plain", "text/plain;a=\"\x7f\"",
        "text/plain;a=\"x\\", "text/plain\n", "text/plain;a=\"\r\n\""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_msg(msglog_type_valid(good[i]), "refused: %s", good[i]);
    ck_assert_msg(msglog_type_valid(max), "refused %d bytes", MSGLOG_TYPE_MAX);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!msglog_type_valid(bad[i]), "accepted: %s", bad[i]);
    ck_assert_int_eq(msglog_type_valid(NULL), 0);
    max[MSGLOG_TYPE_MAX] = 'a';
    max[MSGLOG_TYPE_MAX + 1] = '\0';
    ck_assert_msg(!msglog_type_valid(max), "accepted %d bytes", MSGLOG_TYPE_MAX + 1);
}
END_TEST

START_TEST(test_invalid_content_type_is_refused_on_every_path_into_the_log)
{
    /* A 6 KB Content-Type used to be stored, and every raw answer carrying
     * it then failed at the proxy.  Append refuses it, and so does the view. */
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    msglog *lg = tu_open_log(dir);
    int64_t head = tu_append(lg, "t", "kept");
    char big[6001];
    memset(big, 'x', sizeof big - 1);
    memcpy(big, "text/", 5);
    big[sizeof big - 1] = '\0';
    const char *types[] = {big, "text/plain\r\nX-Injected: 1", "nonsense"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        msglog_entry e = {.channel = "new", .type = types[i], .body = "x", .len = 1};
        append_fails(lg, &e, -EINVAL);
        ck_assert_msg(strstr(msglog_errmsg(lg), "content type"), "%s", msglog_errmsg(lg));
    }
    ck_assert_int_eq(msglog_head(lg), head);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM channel"), 1);
    static const char *const sql[] = {
        "INSERT INTO publish(channel, type, body) VALUES ('t', printf('text/%.6000c', 'x'), 'b')",
        "INSERT INTO publish(channel, type, body) VALUES ('t', 'text/plain' || char(10), 'b')",
        "INSERT INTO publish(channel, type, body) VALUES ('t', 'text/pl' || char(0) || 'a', 'b')",
        "INSERT INTO publish(channel, type, body) VALUES ('t', 'text/pl' || char(233), 'b')",
        "INSERT INTO publish(channel, type, body) VALUES ('t', 'nonsense', 'b')",
        "INSERT INTO publish(channel, type, body) VALUES ('t', '', 'b')"};
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        char err[256] = "";
        ck_assert_msg(tu_sql_exec(db, sql[i], err, sizeof err) != 0, "accepted: %s", sql[i]);
        ck_assert_msg(strstr(err, "holdfast: invalid content type"), "%s: %s", sql[i], err);
    }
    ck_assert_int_eq(msglog_head(lg), head);
    char err[256];
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, type, body) VALUES "
                                     "('t', 'text/plain; charset=\"utf-8\"', 'ok')",
                                     err, sizeof err), 0);
    ck_assert_int_eq(msglog_head(lg), head + 1);
    msglog_close(lg);
}
END_TEST

/* ---- counts kept by triggers ------------------------------------------------ */

/* msglog_stats_get agrees with a full scan, and so does channel.messages. */
static void assert_counts_exact(msglog *lg, const char *db)
{
    msglog_stats st;
    ck_assert_int_eq(msglog_stats_get(lg, &st), 0);
    ck_assert_int_eq(st.messages, tu_sql_int(db, "SELECT count(*) FROM message"));
    ck_assert_int_eq(st.channels, tu_sql_int(db, "SELECT count(*) FROM channel"));
    ck_assert_int_eq(st.bytes, tu_sql_int(db, "SELECT coalesce(sum(length(CAST(body AS BLOB))), 0)"
                                              " FROM message"));
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM channel c WHERE messages !="
                                    " (SELECT count(*) FROM message m WHERE m.channel = c.id)"),
                     0);
}

START_TEST(test_stats_counts_stay_exact_through_appends_compaction_retention_and_outbox)
{
    /* /stats used to scan every message (count and sum(length(body))); the
     * counts now live in a table the triggers keep exact. */
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    char err[256];
    tu_clock_install(T0);
    int64_t keep = 3;
    msglog *lg = tu_open_log_ret(dir, ret_count_ud, &keep);
    assert_counts_exact(lg, db);
    tu_append(lg, "a", "12345");
    append_kv(lg, "a", NULL, "");
    msglog_entry batch[3] = {{.channel = "b", .body = "xyz", .len = 3},
                             {.channel = "c", .body = "\0\1\2\3", .len = 4},
                             {.channel = "b", .body = "q", .len = 1, .idem = "i"}};
    msglog_ack acks[3];
    ck_assert_int_eq(msglog_append_batch(lg, batch, 3, acks), 0);
    assert_counts_exact(lg, db);
    append_kv(lg, "k", "x", "first value");
    append_kv(lg, "k", "x", "second");      /* compaction */
    append_idem(lg, "b", "i", "q", NULL);   /* a replay adds nothing */
    assert_counts_exact(lg, db);
    for (int i = 0; i < 6; i++)
        tu_append(lg, "a", "abcdefgh");
    ck_assert_int_gt(prune_all(lg), 0);     /* retention */
    assert_counts_exact(lg, db);
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, body) VALUES ('o', 'h\xc3\xa9');"
                                     "INSERT INTO publish(channel, body, key) VALUES ('k', X'0001', 'x');"
                                     "DELETE FROM message WHERE id = 1;",
                                     err, sizeof err), 0);
    assert_counts_exact(lg, db);
    /* It is the table that answers, not a scan. */
    ck_assert_int_eq(tu_sql_exec(db, "UPDATE counts SET messages = messages + 1000", err,
                                 sizeof err), 0);
    ck_assert_int_eq(count_messages(lg), tu_sql_int(db, "SELECT count(*) FROM message") + 1000);
    msglog_close(lg);
}
END_TEST

/* ---- retention: overflow and bounded passes -------------------------------- */

static msglog_retention ret_age_ud(const char *channel, void *ud)
{
    (void)channel;
    msglog_retention r = {0, *(const int64_t *)ud};
    return r;
}

START_TEST(test_retention_with_huge_age_keeps_messages_instead_of_overflowing)
{
    /* max_age_s * 1000 overflowed (UBSan flagged it) and wrapped to a cutoff
     * in the future, so prune deleted a message it should keep forever. */
    static const int64_t ages[] = {INT64_MAX, INT64_MAX / 1000 + 1, INT64_MAX / 1000,
                                   100LL * 365 * 86400};
    for (size_t i = 0; i < sizeof ages / sizeof ages[0]; i++) {
        const char *dir = tu_mkdtemp();
        int64_t age = ages[i];
        tu_clock_install(T0);
        msglog *lg = tu_open_log_ret(dir, ret_age_ud, &age);
        tu_append(lg, "forever", "x");
        tu_clock_advance(3600 * 1000);
        ck_assert_msg(prune_all(lg) == 0, "retain_seconds %lld deleted a message",
                      (long long)age);
        ck_assert_int_eq(count_messages(lg), 1);
        msglog_close(lg);
    }
}
END_TEST

/* Create n channels named c00001... with per messages each, in one
 * transaction of a plain SQLite connection. */
static void make_channels(const char *db, int n, int per)
{
    char sql[640], err[256];
    snprintf(sql, sizeof sql,
             "BEGIN;"
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
             " INSERT INTO channel(name) SELECT printf('c%%05d', i) FROM n;"
             "WITH RECURSIVE k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < %d)"
             " INSERT INTO message(channel, time_ms, type, body)"
             " SELECT c.id, 0, 'text/plain', 'm' FROM channel c, k WHERE c.name GLOB 'c[0-9]*'"
             " ORDER BY c.id, k.j;"
             "COMMIT;",
             n, per);
    ck_assert_msg(tu_sql_exec(db, sql, err, sizeof err) == 0, "%s", err);
}

START_TEST(test_incremental_prune_visits_a_bounded_number_of_channels)
{
    /* One incremental pass used to walk every channel ever created, with a
     * write transaction each (200k channels: a 2 s stall every 256
     * publishes); with a 2000-row budget it pruned 2000 of these. */
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    int64_t keep = 1;
    msglog *lg = tu_open_log_ret(dir, ret_count_ud, &keep);
    tu_append(lg, "seed", "x");
    make_channels(db, 20000, 2);
    int64_t deleted = -1;
    ck_assert_int_eq(msglog_prune(lg, 2000, &deleted), 0);
    ck_assert_int_gt(msglog_prune_visited(lg), 0);
    ck_assert_int_le(msglog_prune_visited(lg), MSGLOG_PRUNE_VISIT_MAX);
    ck_assert_int_gt(deleted, 0);
    ck_assert_int_le(deleted, MSGLOG_PRUNE_VISIT_MAX);
    /* `holdfast prune` (budget 0) still applies retention everywhere. */
    int64_t rest = -1;
    ck_assert_int_eq(msglog_prune(lg, 0, &rest), 0);
    ck_assert_int_eq(deleted + rest, 20000);
    ck_assert_int_eq(msglog_prune_visited(lg), 20001);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM (SELECT channel FROM message"
                                    " GROUP BY channel HAVING count(*) != 1)"), 0);
    msglog_close(lg);
}
END_TEST

START_TEST(test_incremental_prune_round_robin_reaches_every_channel)
{
    /* Passes continue where the previous one stopped, so every channel is
     * pruned after about channels / MSGLOG_PRUNE_ROUND passes: the bound of
     * the test above starves no channel.  (A guard: the unbounded pass of
     * before pruned them all at once.) */
    const char *dir = tu_mkdtemp();
    const char *db = db_path(dir);
    int64_t keep = 1;
    msglog *lg = tu_open_log_ret(dir, ret_count_ud, &keep);
    make_channels(db, 1000, 3);
    int passes = 0;
    while (tu_sql_int(db, "SELECT count(*) FROM message") > 1000 && passes < 50) {
        int64_t deleted = -1;
        ck_assert_int_eq(msglog_prune(lg, 2000, &deleted), 0);
        ck_assert_int_le(msglog_prune_visited(lg), MSGLOG_PRUNE_VISIT_MAX);
        ck_assert_int_gt(deleted, 0);
        passes++;
    }
    ck_assert_int_le(passes, (1000 + MSGLOG_PRUNE_ROUND - 1) / MSGLOG_PRUNE_ROUND);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 1000);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM channel WHERE pruned_through = 0"), 0);
    msglog_close(lg);
}
END_TEST

/* ---- error paths ----------------------------------------------------------- */

typedef struct {
    msglog *lg;
    int rc;
    int clean;
} nested_read;

/* A msglog_read whose BEGIN fails: called inside another read transaction. */
static void read_inside_callback(const char *channel, void *ud)
{
    nested_read *nr = ud;
    const char *ch[] = {channel};
    msglog_query q = {.channels = ch, .nchannels = 1, .since = 0};
    msglog_batch b;
    nr->rc = msglog_read(nr->lg, &q, &b);
    nr->clean = b.arena_ == NULL && b.msgs == NULL && b.n == 0;
    msglog_batch_free(&b);
    msglog_batch_free(&b);
}

START_TEST(test_failed_read_frees_its_batch_and_leaves_it_safe_to_free)
{
    /* msglog_read allocated its arena before BEGIN and returned without
     * freeing it when BEGIN failed: callers that do not free after an error
     * (cli tail) leaked it.  Now nothing is left behind on any error. */
    const char *dir = tu_mkdtemp();
    msglog *lg = tu_open_log(dir);
    tu_append(lg, "a", "x");
    nested_read nr = {.lg = lg, .rc = 0, .clean = 0};
    int64_t head;
    ck_assert_int_eq(msglog_changed_channels(lg, 0, &head, read_inside_callback, &nr), 0);
    ck_assert_int_lt(nr.rc, 0);
    ck_assert_msg(nr.clean, "a failed msglog_read left memory in the batch");
    msglog_batch b;
    read1(lg, "a", 0, &b); /* the handle is still usable */
    ck_assert_uint_eq(b.n, 1);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

START_TEST(test_durability_reaches_sqlite_as_synchronous_level)
{
    const char *dir = tu_mkdtemp();
    msglog_options opt = {.path = db_path(dir), .create = 1,
                          .durability = MSGLOG_DURABILITY_FULL};
    msglog *lg = NULL;
    char err[256] = "";
    ck_assert_msg(msglog_open(&lg, &opt, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(msglog_synchronous(lg), 2);
    msglog_close(lg);
    opt.durability = MSGLOG_DURABILITY_NORMAL;
    ck_assert_msg(msglog_open(&lg, &opt, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(msglog_synchronous(lg), 1);
    msglog_close(lg);
}
END_TEST

Suite *msglog_suite(void)
{
    Suite *s = suite_create("msglog");
    TCase *tc = tu_tcase(s, "ids", 0);
    tcase_add_test(tc, test_ids_strictly_increasing_across_channels_and_batches);
    tcase_add_test(tc, test_ids_never_reused_after_newest_pruned);
    tcase_add_test(tc, test_ids_never_reused_after_newest_deleted_externally);

    tc = tu_tcase(s, "read", 20);
    tcase_add_test(tc, test_resume_after_every_cursor_returns_exactly_the_rest);
    tcase_add_test(tc, test_resume_with_limit_concatenates_to_full_sequence);
    tcase_add_test(tc, test_multi_channel_read_interleaves_in_id_order_and_ignores_unknown_channel);
    tcase_add_test(tc, test_body_type_and_time_round_trip_exactly);
    tcase_add_test(tc, test_gap_reported_when_messages_after_cursor_were_pruned);
    tcase_add_test(tc, test_reset_on_epoch_mismatch_or_cursor_ahead_of_head);
    tcase_add_test(tc, test_epoch_is_stable_per_database_and_differs_between_databases);
    tcase_add_test(tc, test_last_k_returns_newest_k_in_order);
    tcase_add_test(tc, test_no_since_starts_at_head_with_no_messages);
    tcase_add_test(tc, test_empty_read_returns_cursor_safe_to_adopt);

    tc = tu_tcase(s, "publish", 0);
    tcase_add_test(tc, test_idempotent_publish_returns_same_id_and_stores_once);
    tcase_add_test(tc, test_compaction_keeps_latest_per_key_without_gap);
    tcase_add_test(tc, test_channel_names_validated_and_bad_append_writes_nothing);
    tcase_add_test(tc, test_append_batch_is_all_or_nothing);
    tcase_add_test(tc, test_idempotent_retry_after_compaction_replays_original_id_and_time);
    tcase_add_test(tc, test_idempotency_key_reused_with_different_message_is_refused_and_writes_nothing);
    tcase_add_test(tc, test_idempotency_window_ends_when_retention_prunes_the_message);
    tcase_add_test(tc, test_type_valid_accepts_media_types_and_refuses_the_rest);
    tcase_add_test(tc, test_invalid_content_type_is_refused_on_every_path_into_the_log);

    tc = tu_tcase(s, "retention", 0);
    tcase_add_test(tc, test_retention_by_age_uses_clock_and_advances_pruned_through);
    tcase_add_test(tc, test_retention_by_count_keeps_newest_per_channel);
    tcase_add_test(tc, test_prune_respects_budget_and_repeated_calls_finish);
    tcase_add_test(tc, test_append_prunes_every_prune_every_appends);
    tcase_add_test(tc, test_retention_with_huge_age_keeps_messages_instead_of_overflowing);

    tc = tu_tcase(s, "retention-scale", 60);
    tcase_add_test(tc, test_incremental_prune_visits_a_bounded_number_of_channels);
    tcase_add_test(tc, test_incremental_prune_round_robin_reaches_every_channel);

    tc = tu_tcase(s, "database", 0);
    tcase_add_test(tc, test_outbox_insert_through_publish_view_is_read_by_msglog);
    tcase_add_test(tc, test_outbox_insert_with_invalid_channel_fails_and_inserts_nothing);
    tcase_add_test(tc, test_changed_reports_commits_of_other_connections);
    tcase_add_test(tc, test_changed_channels_reports_each_concerned_channel_once);
    tcase_add_test(tc, test_open_fails_clearly_for_missing_directory_or_missing_file);
    tcase_add_test(tc, test_open_refuses_foreign_sqlite_database_and_leaves_it_alone);
    tcase_add_test(tc, test_open_refuses_garbage_file_and_leaves_it_alone);
    tcase_add_test(tc, test_readonly_open_reads_and_refuses_writes);
    tcase_add_test(tc, test_stats_count_head_messages_channels_bytes);
    tcase_add_test(tc, test_stats_counts_stay_exact_through_appends_compaction_retention_and_outbox);
    tcase_add_test(tc, test_outbox_idempotency_uses_the_same_table_as_append);
    tcase_add_test(tc, test_schema_1_database_migrates_in_place_keeping_data_epoch_and_idempotency);
    tcase_add_test(tc, test_failed_read_frees_its_batch_and_leaves_it_safe_to_free);
    tcase_add_test(tc, test_durability_reaches_sqlite_as_synchronous_level);
    return s;
}
