/* check_dstore.c -- durable streams in the log: create and its idempotency,
 * appends and their refusals (closed, type, Stream-Seq, the producer
 * rules), reads across fork chains with sub-offset cuts, soft deletion and
 * its collection, TTL, and that a log with streams stays a schema-2 file a
 * previous release opens. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "check_suites.h"
#include "dstore.h"
#include "testutil.h"

static msglog *lg;

static void open_log(void)
{
    lg = tu_open_log(tu_mkdtemp());
}

/* An append request of n text messages. */
static dstore_append_req msgs(const char *const *m, size_t n, size_t *lens)
{
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(m[i]);
    return (dstore_append_req){.msgs = m, .lens = lens, .n = n};
}

static dstore_config plain(const char *type)
{
    return (dstore_config){.type = type, .ttl_s = -1, .expires_ms = -1, .fork_at = -1};
}

static dstore_status create(const char *name, const dstore_config *c, const char *body,
                            dstore_stream *s)
{
    const char *m[1] = {body};
    size_t lens[1];
    dstore_append_req a = msgs(m, body ? 1 : 0, lens);
    dstore_result res;
    return dstore_create(lg, name, c, &a, s, &res);
}

static dstore_status append(const char *name, const char *body, dstore_result *res)
{
    const char *m[1] = {body};
    size_t lens[1];
    dstore_append_req a = msgs(m, 1, lens);
    a.type = "text/plain";
    return dstore_append(lg, name, &a, res);
}

typedef struct {
    char text[256];
    int64_t pos[16];
    int n;
} readout;

static void read_cb(void *ud, int64_t pos, const void *p, size_t n)
{
    readout *o = ud;
    ck_assert_uint_lt(strlen(o->text) + n, sizeof o->text);
    strncat(o->text, p, n);
    if (o->n < 16)
        o->pos[o->n] = pos;
    o->n++;
}

/* Everything of name after `after`, as one string. */
static const char *read_all(const char *name, int64_t after, readout *o)
{
    dstore_stream s;
    int64_t next;
    int more;
    memset(o, 0, sizeof *o);
    ck_assert_int_eq(dstore_get(lg, name, 0, &s), DSTORE_OK);
    ck_assert_int_eq(dstore_read(lg, &s, after, 1 << 20, read_cb, o, &next, &more), DSTORE_OK);
    ck_assert_int_eq(more, 0);
    ck_assert_int_eq(next, s.tail);
    return o->text;
}

START_TEST(test_create_is_idempotent_for_the_same_config_only)
{
    dstore_stream s;
    dstore_config c = plain("text/plain");
    open_log();
    ck_assert_int_eq(create("a", &c, "hello", &s), DSTORE_OK);
    ck_assert_int_eq(create("a", &c, NULL, &s), DSTORE_EXISTS_SAME);
    dstore_config up = plain("TEXT/PLAIN; charset=utf-8");
    ck_assert_int_eq(create("a", &up, NULL, &s), DSTORE_EXISTS_SAME);
    dstore_config other = plain("application/json");
    ck_assert_int_eq(create("a", &other, NULL, &s), DSTORE_CONFLICT);
    dstore_config ttl = plain("text/plain");
    ttl.ttl_s = 60;
    ck_assert_int_eq(create("a", &ttl, NULL, &s), DSTORE_CONFLICT);
    dstore_config closed = plain("text/plain");
    closed.closed = 1;
    ck_assert_int_eq(create("a", &closed, NULL, &s), DSTORE_CONFLICT);
    readout o;
    ck_assert_str_eq(read_all("a", 0, &o), "hello");
    msglog_close(lg);
}
END_TEST

START_TEST(test_appends_refused_by_closure_type_and_seq)
{
    dstore_stream s;
    dstore_result res;
    dstore_config c = plain("text/plain");
    open_log();
    ck_assert_int_eq(create("a", &c, NULL, &s), DSTORE_OK);
    ck_assert_int_eq(append("nope", "x", &res), DSTORE_NOT_FOUND);
    const char *m[1] = {"{}"};
    size_t lens[1];
    dstore_append_req j = msgs(m, 1, lens);
    j.type = "application/json";
    ck_assert_int_eq(dstore_append(lg, "a", &j, &res), DSTORE_CONFLICT);
    dstore_append_req q = msgs((const char *const[]){"1"}, 1, lens);
    q.type = "text/plain";
    q.seq = "09";
    ck_assert_int_eq(dstore_append(lg, "a", &q, &res), DSTORE_OK);
    q.seq = "10";
    ck_assert_int_eq(dstore_append(lg, "a", &q, &res), DSTORE_OK);
    q.seq = "2"; /* "2" > "10" as bytes: accepted */
    ck_assert_int_eq(dstore_append(lg, "a", &q, &res), DSTORE_OK);
    q.seq = "10";
    ck_assert_int_eq(dstore_append(lg, "a", &q, &res), DSTORE_CONFLICT);
    dstore_append_req close = {.close = 1};
    ck_assert_int_eq(dstore_append(lg, "a", &close, &res), DSTORE_OK);
    ck_assert_int_eq(res.closed, 1);
    int64_t tail = res.tail;
    ck_assert_int_eq(dstore_append(lg, "a", &close, &res), DSTORE_DUPLICATE); /* idempotent */
    ck_assert_int_eq(append("a", "late", &res), DSTORE_CLOSED);
    ck_assert_int_eq(res.tail, tail);
    readout o;
    ck_assert_str_eq(read_all("a", 0, &o), "111"); /* the close marker is no data */
    msglog_close(lg);
}
END_TEST

static dstore_status produce(const char *pid, int64_t epoch, int64_t seq, dstore_result *res)
{
    const char *m[1] = {"p"};
    size_t lens[1];
    dstore_append_req a = msgs(m, 1, lens);
    a.type = "text/plain";
    a.prod = (dstore_producer){pid, epoch, seq};
    return dstore_append(lg, "a", &a, res);
}

START_TEST(test_producer_epochs_and_sequences)
{
    dstore_stream s;
    dstore_result res;
    dstore_config c = plain("text/plain");
    open_log();
    ck_assert_int_eq(create("a", &c, NULL, &s), DSTORE_OK);
    ck_assert_int_eq(produce("p", 0, 1, &res), DSTORE_SEQ_GAP); /* must start at 0 */
    ck_assert_int_eq(res.seq + 1, 0);
    ck_assert_int_eq(produce("p", 0, 0, &res), DSTORE_OK);
    ck_assert_int_eq(produce("p", 0, 1, &res), DSTORE_OK);
    ck_assert_int_eq(produce("p", 0, 0, &res), DSTORE_DUPLICATE);
    ck_assert_int_eq(res.seq, 1); /* the highest accepted, not the request's */
    ck_assert_int_eq(produce("p", 0, 3, &res), DSTORE_SEQ_GAP);
    ck_assert_int_eq(res.seq + 1, 2);
    ck_assert_int_eq(produce("p", 1, 1, &res), DSTORE_BAD_EPOCH_SEQ);
    ck_assert_int_eq(produce("p", 1, 0, &res), DSTORE_OK);
    ck_assert_int_eq(produce("p", 0, 2, &res), DSTORE_STALE_EPOCH);
    ck_assert_int_eq(res.epoch, 1);
    ck_assert_int_eq(produce("q", 0, 0, &res), DSTORE_OK); /* its own state */
    readout o;
    ck_assert_str_eq(read_all("a", 0, &o), "pppp");
    msglog_close(lg);
}
END_TEST

START_TEST(test_fork_chain_reads_inherited_then_own_data)
{
    dstore_stream s, f;
    dstore_result res;
    dstore_config c = plain("text/plain");
    readout o;
    open_log();
    ck_assert_int_eq(create("src", &c, "ab", &s), DSTORE_OK);
    ck_assert_int_eq(append("src", "cdef", &res), DSTORE_OK);
    int64_t mid = res.tail;
    ck_assert_int_eq(append("src", "gh", &res), DSTORE_OK);
    /* fork 1: at the offset after "cdef", cut 2 bytes into "gh" */
    dstore_config fc = plain(NULL);
    fc.fork_from = "src";
    fc.fork_at = mid;
    fc.fork_sub = 1;
    ck_assert_int_eq(create("f1", &fc, NULL, &f), DSTORE_OK);
    ck_assert_str_eq(f.type, "text/plain"); /* inherited */
    ck_assert_str_eq(read_all("f1", 0, &o), "abcdefg");
    ck_assert_int_eq(create("f1", &fc, NULL, &f), DSTORE_EXISTS_SAME);
    fc.fork_sub = 2;
    ck_assert_int_eq(create("f1", &fc, NULL, &f), DSTORE_CONFLICT);
    ck_assert_int_eq(append("src", "ij", &res), DSTORE_OK); /* not seen by the fork */
    ck_assert_int_eq(append("f1", "XY", &res), DSTORE_OK);
    ck_assert_str_eq(read_all("f1", 0, &o), "abcdefgXY");
    ck_assert_str_eq(read_all("src", 0, &o), "abcdefghij");
    /* fork 2 of the fork, at its tail: three levels */
    dstore_config f2 = plain(NULL);
    f2.fork_from = "f1";
    ck_assert_int_eq(create("f2", &f2, "Z", &f), DSTORE_OK);
    ck_assert_str_eq(read_all("f2", 0, &o), "abcdefgXYZ");
    ck_assert_str_eq(read_all("f2", mid, &o), "gXYZ");
    /* out of range */
    dstore_config bad = plain(NULL);
    bad.fork_from = "src";
    bad.fork_at = res.tail + 100;
    ck_assert_int_eq(create("f3", &bad, NULL, &f), DSTORE_BAD_FORK);
    bad.fork_at = mid;
    bad.fork_sub = 3; /* "gh" has 2 bytes */
    ck_assert_int_eq(create("f3", &bad, NULL, &f), DSTORE_BAD_FORK);
    bad.fork_from = "missing";
    ck_assert_int_eq(create("f3", &bad, NULL, &f), DSTORE_SOURCE_MISSING);
    bad.fork_from = "src";
    bad.fork_sub = 0;
    bad.type = "application/json";
    ck_assert_int_eq(create("f3", &bad, NULL, &f), DSTORE_CONFLICT);
    msglog_close(lg);
}
END_TEST

START_TEST(test_soft_delete_keeps_sources_until_the_last_fork_goes)
{
    dstore_stream s, f;
    dstore_config c = plain("text/plain");
    readout o;
    open_log();
    ck_assert_int_eq(create("src", &c, "data", &s), DSTORE_OK);
    dstore_config fc = plain(NULL);
    fc.fork_from = "src";
    ck_assert_int_eq(create("mid", &fc, "+m", &f), DSTORE_OK);
    fc.fork_from = "mid";
    ck_assert_int_eq(create("leaf", &fc, "+l", &f), DSTORE_OK);
    ck_assert_int_eq(dstore_delete(lg, "src"), DSTORE_OK); /* soft: mid reads it */
    ck_assert_int_eq(dstore_get(lg, "src", 0, &s), DSTORE_GONE);
    ck_assert_int_eq(dstore_delete(lg, "src"), DSTORE_GONE);
    ck_assert_int_eq(create("src", &c, NULL, &s), DSTORE_GONE); /* the path stays blocked */
    fc.fork_from = "src";
    ck_assert_int_eq(create("other", &fc, NULL, &f), DSTORE_SOURCE_GONE);
    ck_assert_int_eq(dstore_delete(lg, "mid"), DSTORE_OK);
    ck_assert_str_eq(read_all("leaf", 0, &o), "data+m+l");
    ck_assert_int_eq(dstore_delete(lg, "leaf"), DSTORE_OK); /* collects mid, then src */
    ck_assert_int_eq(dstore_get(lg, "src", 0, &s), DSTORE_NOT_FOUND);
    ck_assert_int_eq(dstore_get(lg, "mid", 0, &s), DSTORE_NOT_FOUND);
    ck_assert_int_eq(create("src", &c, "new", &s), DSTORE_OK); /* free again, and empty */
    ck_assert_str_eq(read_all("src", 0, &o), "new");
    msglog_close(lg);
}
END_TEST

START_TEST(test_ttl_expires_an_idle_stream)
{
    dstore_stream s;
    dstore_config c = plain("text/plain");
    tu_clock_install(1000000);
    open_log();
    c.ttl_s = 10;
    ck_assert_int_eq(create("t", &c, "x", &s), DSTORE_OK);
    tu_clock_advance(9000);
    ck_assert_int_eq(dstore_get(lg, "t", 1, &s), DSTORE_OK); /* a read refreshes it */
    tu_clock_advance(9000);
    ck_assert_int_eq(dstore_get(lg, "t", 0, &s), DSTORE_OK);
    tu_clock_advance(2000);
    ck_assert_int_eq(dstore_get(lg, "t", 0, &s), DSTORE_NOT_FOUND);
    dstore_config e = plain("text/plain");
    e.expires_ms = 1000000 + 25000;
    ck_assert_int_eq(create("t", &e, NULL, &s), DSTORE_OK); /* replaces the expired one */
    readout o;
    ck_assert_str_eq(read_all("t", 0, &o), "");
    tu_clock_advance(5000);
    ck_assert_int_eq(dstore_get(lg, "t", 1, &s), DSTORE_NOT_FOUND);
    msglog_close(lg);
}
END_TEST

START_TEST(test_a_read_past_pruned_data_is_refused_not_short)
{
    dstore_stream s;
    dstore_result res;
    dstore_config c = plain("text/plain");
    const char *dir = tu_mkdtemp();
    char err[256];
    lg = tu_open_log(dir);
    ck_assert_int_eq(create("p", &c, "a", &s), DSTORE_OK);
    ck_assert_int_eq(append("p", "b", &res), DSTORE_OK);
    int64_t first = res.tail - 1;
    ck_assert_int_eq(append("p", "c", &res), DSTORE_OK);
    /* what a previous release's retention pass does to the oldest row */
    ck_assert_int_eq(tu_sql_exec(tu_path(dir, "test.db"),
                                 "UPDATE channel SET pruned_through = (SELECT min(id) FROM message)"
                                 " WHERE name = 'p'", err, sizeof err), 0);
    ck_assert_int_eq(dstore_get(lg, "p", 0, &s), DSTORE_OK);
    int64_t next;
    int more;
    readout o;
    memset(&o, 0, sizeof o);
    ck_assert_int_eq(dstore_read(lg, &s, 0, 1 << 20, read_cb, &o, &next, &more), DSTORE_GONE);
    ck_assert_int_eq(dstore_read(lg, &s, first, 1 << 20, read_cb, &o, &next, &more), DSTORE_OK);
    ck_assert_str_eq(o.text, "bc");
    msglog_close(lg);
}
END_TEST

static msglog_retention keep_two(const char *channel, void *ud)
{
    (void)channel;
    (void)ud;
    return (msglog_retention){2, 0};
}

START_TEST(test_one_log_retention_spares_streams_and_closed_ones_refuse_rows)
{
    dstore_stream s;
    dstore_result res;
    dstore_config c = plain("text/plain");
    readout o;
    lg = tu_open_log_ret(tu_mkdtemp(), keep_two, NULL);
    ck_assert_int_eq(create("st", &c, "0", &s), DSTORE_OK);
    for (int i = 1; i < 5; i++) {
        char b[2] = {(char)('0' + i), 0};
        ck_assert_int_eq(append("st", b, &res), DSTORE_OK);
        tu_append(lg, "plain", b);
    }
    /* a publish on the stream's channel is an append to it */
    int64_t id = tu_append(lg, "st", "5");
    ck_assert_str_eq(read_all("st", 0, &o), "012345");
    ck_assert_int_eq(o.pos[5], id);
    int64_t deleted = 0;
    ck_assert_int_eq(msglog_prune(lg, 0, &deleted), 0);
    ck_assert_int_eq(deleted, 2); /* plain: 4 rows, 2 kept; the stream: all 6 */
    ck_assert_str_eq(read_all("st", 0, &o), "012345");
    dstore_append_req close = {.close = 1};
    ck_assert_int_eq(dstore_append(lg, "st", &close, &res), DSTORE_OK);
    /* closed: the log itself refuses more rows, whoever writes them */
    msglog_entry e = {.channel = "st", .body = "x", .len = 1};
    msglog_ack ack;
    ck_assert_int_eq(msglog_append(lg, &e, &ack), -EINVAL);
    ck_assert_ptr_nonnull(strstr(msglog_errmsg(lg), "the stream is closed"));
    ck_assert_str_eq(read_all("st", 0, &o), "012345");
    msglog_close(lg);
}
END_TEST

START_TEST(test_a_stream_begins_at_its_creation_and_deleting_it_keeps_what_was_before)
{
    dstore_stream s;
    dstore_result res;
    dstore_config c = plain("text/plain");
    readout o;
    const char *dir = tu_mkdtemp();
    lg = tu_open_log(dir);
    tu_append(lg, "h", "before");
    ck_assert_int_eq(create("h", &c, "a", &s), DSTORE_OK);
    ck_assert_int_eq(append("h", "b", &res), DSTORE_OK);
    ck_assert_str_eq(read_all("h", 0, &o), "ab");
    ck_assert_int_eq(dstore_delete(lg, "h"), DSTORE_OK);
    ck_assert_int_eq(dstore_get(lg, "h", 0, &s), DSTORE_NOT_FOUND);
    const char *db = tu_path(dir, "test.db");
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message m JOIN channel c"
                                    " ON c.id = m.channel WHERE c.name = 'h'"), 1);
    msglog_close(lg);
}
END_TEST

START_TEST(test_a_log_with_streams_stays_schema_2)
{
    dstore_stream s;
    dstore_config c = plain("text/plain");
    const char *dir = tu_mkdtemp();
    lg = tu_open_log(dir);
    ck_assert_int_eq(create("a", &c, "x", &s), DSTORE_OK);
    msglog_close(lg);
    const char *db = tu_path(dir, "test.db");
    /* what a worker of the previous release checks before opening it */
    ck_assert_int_eq(tu_sql_int(db, "PRAGMA user_version"), 2);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message m JOIN channel c"
                                    " ON c.id = m.channel WHERE c.name = 'a'"), 1);
}
END_TEST

Suite *dstore_suite(void)
{
    Suite *s = suite_create("dstore");
    TCase *tc = tu_tcase(s, "streams", 0);
    tcase_add_test(tc, test_create_is_idempotent_for_the_same_config_only);
    tcase_add_test(tc, test_appends_refused_by_closure_type_and_seq);
    tcase_add_test(tc, test_producer_epochs_and_sequences);
    tcase_add_test(tc, test_fork_chain_reads_inherited_then_own_data);
    tcase_add_test(tc, test_soft_delete_keeps_sources_until_the_last_fork_goes);
    tcase_add_test(tc, test_ttl_expires_an_idle_stream);
    tcase_add_test(tc, test_a_read_past_pruned_data_is_refused_not_short);
    tcase_add_test(tc, test_one_log_retention_spares_streams_and_closed_ones_refuse_rows);
    tcase_add_test(tc, test_a_stream_begins_at_its_creation_and_deleting_it_keeps_what_was_before);
    tcase_add_test(tc, test_a_log_with_streams_stays_schema_2);
    return s;
}
