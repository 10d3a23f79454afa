/* check_cli.c -- the holdfast command line, run as a real process: publish,
 * tail (once and following), stats, and how it refuses bad input and files
 * that are not holdfast logs. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_suites.h"
#include "msglog.h"
#include "testutil.h"
#include "wake.h"

#define RUN(r, ...) tu_run((r), NULL, 0, (const char *const[]){__VA_ARGS__, NULL})

static void assert_ok(const tu_run_result *r, const char *what)
{
    ck_assert_msg(r->status == 0, "%s: exit %d, stderr: %s", what, r->status, r->err);
}

/* A failure: non-zero exit, nothing on stdout, exactly one line on stderr. */
static void assert_one_line_error(const tu_run_result *r, const char *what)
{
    ck_assert_msg(r->status != 0, "%s: exit 0, stdout: %s", what, r->out);
    ck_assert_msg(r->status < 128, "%s: killed by a signal (%d)", what, r->status);
    ck_assert_msg(r->outlen == 0, "%s: wrote to stdout: %s", what, r->out);
    ck_assert_msg(r->errlen > 1 && r->err[r->errlen - 1] == '\n', "%s: no error line", what);
    ck_assert_msg(memchr(r->err, '\n', r->errlen - 1) == NULL, "%s: more than one line: %s",
                  what, r->err);
}

/* `holdfast publish --db db chan data`; returns the printed id. */
static long long publish(const char *db, const char *chan, const char *data)
{
    tu_run_result r;
    RUN(&r, "publish", "--db", db, chan, data);
    assert_ok(&r, "publish");
    char *end;
    long long id = strtoll(r.out, &end, 10);
    ck_assert_msg(id > 0 && strcmp(end, "\n") == 0, "publish printed '%s', not an id alone",
                  r.out);
    return id;
}

static json_t *parse_line(const char *line, size_t len)
{
    json_error_t e;
    json_t *v = json_loadb(line, len, 0, &e);
    ck_assert_msg(v != NULL && json_is_object(v), "not a JSON object (%s): %.*s", e.text,
                  (int)len, line);
    return v;
}

/* Check one tail line against what was published. */
static void assert_tail_line(const json_t *v, long long id, const char *chan, const char *type)
{
    ck_assert_int_eq(json_integer_value(json_object_get(v, "id")), id);
    ck_assert_str_eq(json_string_value(json_object_get(v, "channel")), chan);
    ck_assert(json_is_integer(json_object_get(v, "time")));
    ck_assert_int_gt(json_integer_value(json_object_get(v, "time")), 1600000000000LL);
    ck_assert_str_eq(json_string_value(json_object_get(v, "type")), type);
    ck_assert_ptr_nonnull(json_object_get(v, "data"));
}

START_TEST(test_publish_prints_id_alone)
{
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    long long a = publish(db, "news", "first");
    long long b = publish(db, "news", "second");
    ck_assert_int_gt(b, a);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 2);
}
END_TEST

START_TEST(test_publish_reads_body_from_stdin)
{
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    const char body[] = "line 1\nline 2 \xe2\x82\xac";
    tu_run_result r;
    tu_run(&r, body, sizeof body - 1, (const char *const[]){"publish", "--db", db, "news", NULL});
    assert_ok(&r, "publish from stdin");
    ck_assert_int_eq(tu_sql_int(db, "SELECT length(body) FROM message"), (int64_t)sizeof body - 1);
    RUN(&r, "tail", "--db", db, "--once", "--since", "0", "news");
    assert_ok(&r, "tail");
    json_t *v = parse_line(r.out, strcspn(r.out, "\n"));
    const json_t *data = json_object_get(v, "data");
    ck_assert_uint_eq(json_string_length(data), sizeof body - 1);
    ck_assert_mem_eq(json_string_value(data), body, sizeof body - 1);
    json_decref(v);
}
END_TEST

START_TEST(test_tail_once_prints_one_json_object_per_line)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    long long t1 = publish(db, "news", "hello");
    long long other = publish(db, "elsewhere", "not shown");
    msglog *lg = tu_open_log(dir); /* the same file, through the library */
    msglog_entry je = {.channel = "news", .type = "application/json", .body = "{\"n\": 1}",
                       .len = 8};
    msglog_entry be = {.channel = "news", .type = "application/octet-stream",
                       .body = "\xff\x00", .len = 2};
    msglog_ack ja, ba;
    ck_assert_int_eq(msglog_append(lg, &je, &ja), 0);
    ck_assert_int_eq(msglog_append(lg, &be, &ba), 0);
    msglog_close(lg);
    ck_assert_int_gt(other, t1);

    tu_run_result r;
    RUN(&r, "tail", "--db", db, "--once", "--since", "0", "news");
    assert_ok(&r, "tail --once");
    ck_assert_msg(r.outlen > 0 && r.out[r.outlen - 1] == '\n', "output does not end a line");
    const char *p = r.out;
    json_t *lines[4] = {NULL};
    size_t n = 0;
    while (*p) {
        size_t len = strcspn(p, "\n");
        ck_assert_uint_lt(n, 4);
        lines[n++] = parse_line(p, len);
        p += len + 1;
    }
    ck_assert_uint_eq(n, 3);
    assert_tail_line(lines[0], t1, "news", MSGLOG_DEFAULT_TYPE);
    ck_assert_str_eq(json_string_value(json_object_get(lines[0], "data")), "hello");
    assert_tail_line(lines[1], ja.id, "news", "application/json");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(lines[1], "data"), "n")), 1);
    assert_tail_line(lines[2], ba.id, "news", "application/octet-stream");
    ck_assert_str_eq(json_string_value(json_object_get(lines[2], "data")), "/wA=");
    ck_assert_str_eq(json_string_value(json_object_get(lines[2], "encoding")), "base64");
    for (size_t i = 0; i < n; i++)
        json_decref(lines[i]);

    RUN(&r, "tail", "--db", db, "--once", "--since", "0", "news,elsewhere");
    assert_ok(&r, "tail --once two channels");
    size_t count = 0;
    for (const char *q = r.out; *q; q++)
        count += *q == '\n';
    ck_assert_uint_eq(count, 4);

    RUN(&r, "tail", "--db", db, "--once", "news"); /* no --since: only new ones */
    assert_ok(&r, "tail --once from the head");
    ck_assert_uint_eq(r.outlen, 0);
}
END_TEST

START_TEST(test_invalid_channel_name_fails_with_one_line_and_writes_nothing)
{
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    long long id = publish(db, "news", "kept");
    static const char *const bad[] = {"bad name", "a/b", "", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_run_result r;
        RUN(&r, "publish", "--db", db, bad[i], "data");
        assert_one_line_error(&r, bad[i]);
    }
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 1);
    ck_assert_int_eq(tu_sql_int(db, "SELECT max(id) FROM message"), id);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM channel"), 1);

    const char *fresh = tu_path(tu_mkdtemp(), "never.db");
    tu_run_result r;
    RUN(&r, "publish", "--db", fresh, "bad name", "data");
    assert_one_line_error(&r, "bad name on a new path");
    ck_assert_msg(!tu_exists(fresh), "a refused publish created %s", fresh);
}
END_TEST

START_TEST(test_missing_db_directory_fails_clearly)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "no-such-dir/test.db");
    tu_run_result r;
    RUN(&r, "publish", "--db", db, "news", "data");
    assert_one_line_error(&r, "publish into a missing directory");
    ck_assert_msg(strstr(r.err, "no-such-dir") != NULL, "error does not name the path: %s", r.err);
    RUN(&r, "tail", "--db", db, "--once", "--since", "0", "news");
    assert_one_line_error(&r, "tail of a missing directory");
    ck_assert_msg(!tu_exists(tu_path(dir, "no-such-dir")), "the directory was created");
}
END_TEST

START_TEST(test_foreign_sqlite_database_is_refused_and_untouched)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "shop.db");
    tu_write_file(db, "", 0);
    char err[256];
    ck_assert_int_eq(tu_sql_exec(db, "CREATE TABLE orders(id INTEGER, what TEXT);"
                                     "INSERT INTO orders VALUES (1, 'tea');", err, sizeof err), 0);
    static const char *const cmds[][7] = {
        {"publish", "--db", NULL, "news", "data", NULL},
        {"tail", "--db", NULL, "--once", "--since", "0", "news"},
        {"stats", "--db", NULL, NULL}};
    for (size_t i = 0; i < 3; i++) {
        const char *args[8] = {NULL};
        for (size_t k = 0; k < 7 && (k == 2 || cmds[i][k]); k++)
            args[k] = k == 2 ? db : cmds[i][k];
        tu_run_result r;
        tu_run(&r, NULL, 0, args);
        assert_one_line_error(&r, cmds[i][0]);
        ck_assert_msg(strstr(r.err, "shop.db") != NULL, "%s: error does not name the file: %s",
                      cmds[i][0], r.err);
    }
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM sqlite_master"), 1);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM orders"), 1);
}
END_TEST

START_TEST(test_garbage_file_is_refused_and_untouched)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "junk.db");
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)("holdfast? no.\n"[i % 14] ^ (i & 0x40));
    tu_write_file(db, junk, sizeof junk);
    tu_run_result r;
    RUN(&r, "publish", "--db", db, "news", "data");
    assert_one_line_error(&r, "publish into garbage");
    RUN(&r, "stats", "--db", db);
    assert_one_line_error(&r, "stats of garbage");
    size_t n = 0;
    const char *after = tu_read_file(db, &n);
    ck_assert_uint_eq(n, sizeof junk);
    ck_assert_mem_eq(after, junk, n);
}
END_TEST

START_TEST(test_stats_prints_json_counts)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    publish(db, "a", "12345");
    publish(db, "b", "123");
    long long head = publish(db, "a", "12");
    tu_run_result r;
    RUN(&r, "stats", "--db", db);
    assert_ok(&r, "stats");
    json_t *v = parse_line(r.out, r.outlen);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "head")), head);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "messages")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "channels")), 2);
    ck_assert(json_is_integer(json_object_get(v, "bytes")));
    ck_assert_int_ge(json_integer_value(json_object_get(v, "bytes")), 10);
    const char *epoch = json_string_value(json_object_get(v, "epoch"));
    ck_assert_ptr_nonnull(epoch);
    msglog *lg = tu_open_log(dir);
    ck_assert_str_eq(epoch, msglog_epoch(lg));
    msglog_close(lg);
    json_decref(v);
}
END_TEST

START_TEST(test_help_and_version_exit_zero)
{
    tu_run_result r;
    RUN(&r, "--help");
    assert_ok(&r, "--help");
    ck_assert_msg(strstr(r.out, "publish") && strstr(r.out, "tail"), "--help: %s", r.out);
    RUN(&r, "--version");
    assert_ok(&r, "--version");
    ck_assert_msg(strstr(r.out, PACKAGE_VERSION) != NULL, "--version: %s", r.out);
    RUN(&r, "no-such-command");
    ck_assert_int_ne(r.status, 0);
    ck_assert_uint_gt(r.errlen, 0);
}
END_TEST

START_TEST(test_usage_errors_exit_2)
{
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    tu_run_result r;
    RUN(&r, "publish", "--db", db);
    ck_assert_int_eq(r.status, 2);
    RUN(&r, "tail", "--db", db, "--since", "minus-one", "news");
    ck_assert_int_eq(r.status, 2);
    RUN(&r, "tail", "--db", db, "--no-such-option", "news");
    ck_assert_int_eq(r.status, 2);
}
END_TEST

START_TEST(test_publish_json_type_is_validated)
{
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    long long id = publish(db, "news", "kept");
    tu_run_result r;
    RUN(&r, "publish", "--db", db, "--type", "application/json", "news", "{\"a\":");
    assert_one_line_error(&r, "invalid JSON body");
    ck_assert_int_eq(tu_sql_int(db, "SELECT max(id) FROM message"), id);
    RUN(&r, "publish", "--db", db, "--type", "application/json", "news", "{\"a\": [1, 2]}");
    assert_ok(&r, "valid JSON body");
    RUN(&r, "tail", "--db", db, "--once", "--since", "1", "news");
    assert_ok(&r, "tail");
    json_t *v = parse_line(r.out, strcspn(r.out, "\n"));
    ck_assert_str_eq(json_string_value(json_object_get(v, "type")), "application/json");
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(v, "data"), "a")), 2);
    json_decref(v);
}
END_TEST

START_TEST(test_publish_invalid_type_exits_2_with_one_line_and_writes_nothing)
{
    /* --type used to be stored as given: a 6 KB or multi-line type then
     * broke every raw answer carrying it. */
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    long long id = publish(db, "news", "kept");
    static char big[6001];
    memset(big, 'x', sizeof big - 1);
    memcpy(big, "text/", 5);
    const char *bad[] = {big, "text/plain\nX-Injected: 1", "nonsense", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_run_result r;
        RUN(&r, "publish", "--db", db, "--type", bad[i], "news", "x");
        ck_assert_msg(r.status == 2, "--type '%.40s': exit %d", bad[i], r.status);
        assert_one_line_error(&r, "invalid --type");
        ck_assert_ptr_nonnull(strstr(r.err, "--type"));
    }
    ck_assert_int_eq(tu_sql_int(db, "SELECT max(id) FROM message"), id);
    tu_run_result r;
    RUN(&r, "publish", "--db", db, "--type", "text/csv; header=present", "news", "a,b");
    assert_ok(&r, "a valid --type");
}
END_TEST

START_TEST(test_publish_idempotency_key_returns_first_id)
{
    const char *db = tu_path(tu_mkdtemp(), "cli.db");
    tu_run_result r;
    RUN(&r, "publish", "--db", db, "--idempotency-key", "order-7", "news", "once");
    assert_ok(&r, "first publish");
    long long first = strtoll(r.out, NULL, 10);
    RUN(&r, "publish", "--db", db, "--idempotency-key", "order-7", "news", "once");
    assert_ok(&r, "retried publish");
    ck_assert_int_eq(strtoll(r.out, NULL, 10), first);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 1);
}
END_TEST

START_TEST(test_prune_applies_configured_retention)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "cli.db");
    const char *conf = tu_path(dir, "holdfast.conf");
    const char text[] = "retain_messages = 100\n[channel short.*]\nretain_messages = 2\n";
    tu_write_file(conf, text, sizeof text - 1);
    for (int i = 0; i < 5; i++) {
        publish(db, "short.lived", "x");
        publish(db, "long.lived", "y");
    }
    tu_run_result r;
    RUN(&r, "prune", "--config", conf, "--db", db);
    assert_ok(&r, "prune");
    json_t *v = parse_line(r.out, r.outlen);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "deleted")), 3);
    json_decref(v);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message m JOIN channel c "
                                    "ON c.id = m.channel WHERE c.name = 'short.lived'"), 2);
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 7);
}
END_TEST

START_TEST(test_db_path_from_environment)
{
    const char *db = tu_path(tu_mkdtemp(), "env.db");
    setenv("HOLDFAST_DB", db, 1);
    tu_run_result r;
    RUN(&r, "publish", "news", "via env");
    unsetenv("HOLDFAST_DB");
    assert_ok(&r, "publish with HOLDFAST_DB");
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 1);
}
END_TEST

START_TEST(test_tail_follow_is_woken_by_publish)
{
    const char *db = tu_path(tu_mkdtemp(), "follow.db");
    long long first = publish(db, "live", "before");
    int out_fd;
    pid_t pid = tu_spawn((const char *const[]){"tail", "--db", db, "--since", "0", "live", NULL},
                         &out_fd);
    tu_lines lr;
    tu_lines_init(&lr, out_fd);
    char line[4096];
    long len = tu_lines_next(&lr, line, sizeof line, 5000); /* it has read the log */
    ck_assert_msg(len > 0, "tail printed nothing for the existing message");
    json_t *v = parse_line(line, (size_t)len);
    ck_assert_int_eq(json_integer_value(json_object_get(v, "id")), first);
    json_decref(v);
    for (int round = 0; round < 3; round++) {
        char data[32];
        snprintf(data, sizeof data, "live %d", round);
        int64_t t0 = tu_mono_ms();
        long long id = publish(db, "live", data);
        len = tu_lines_next(&lr, line, sizeof line, 2000);
        int64_t took = tu_mono_ms() - t0;
        if (len <= 0)
            tu_stop(pid);
        ck_assert_msg(len > 0, "round %d: no line within 2 s of the publish", round);
        v = parse_line(line, (size_t)len);
        ck_assert_int_eq(json_integer_value(json_object_get(v, "id")), id);
        ck_assert_str_eq(json_string_value(json_object_get(v, "data")), data);
        json_decref(v);
        ck_assert_int_lt(took, 2000);
    }
    tu_stop(pid);
    close(out_fd);
}
END_TEST

START_TEST(test_tail_follow_delivers_burst_exactly_once_in_order)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    msglog *lg = tu_open_log(dir);
    wake *w = NULL;
    char err[256];
    ck_assert_int_eq(wake_open(&w, db, err, sizeof err), 0);
    int64_t first = tu_append(lg, "burst", "ready");
    int out_fd;
    pid_t pid = tu_spawn((const char *const[]){"tail", "--db", db, "--since", "0", "burst", NULL},
                         &out_fd);
    tu_lines lr;
    tu_lines_init(&lr, out_fd);
    char line[4096];
    ck_assert_msg(tu_lines_next(&lr, line, sizeof line, 5000) > 0, "tail printed nothing");
    int64_t ids[200];
    for (int i = 0; i < 200; i++) {
        char body[16];
        snprintf(body, sizeof body, "m%d", i);
        ids[i] = tu_append(lg, i % 3 ? "burst" : "noise", body);
        wake_publish(w, ids[i]);
    }
    int64_t prev = first;
    for (int i = 0; i < 200; i++) {
        if (i % 3 == 0)
            continue;
        long len = tu_lines_next(&lr, line, sizeof line, 3000);
        if (len <= 0)
            tu_stop(pid);
        ck_assert_msg(len > 0, "message %d (id %lld) never arrived", i, (long long)ids[i]);
        json_t *v = parse_line(line, (size_t)len);
        int64_t id = json_integer_value(json_object_get(v, "id"));
        json_decref(v);
        ck_assert_msg(id == ids[i], "got id %lld after %lld, expected %lld", (long long)id,
                      (long long)prev, (long long)ids[i]);
        prev = id;
    }
    tu_stop(pid);
    ck_assert_int_lt(tu_lines_next(&lr, line, sizeof line, 0), 0); /* nothing extra */
    close(out_fd);
    wake_close(w);
    msglog_close(lg);
}
END_TEST

START_TEST(test_tail_follow_sees_outbox_insert_without_wake)
{
    /* A row inserted through the `publish` view by another program bumps
     * no wake file; the slow PRAGMA data_version check must find it. */
    const char *db = tu_path(tu_mkdtemp(), "outbox.db");
    publish(db, "ob", "ready");
    setenv("HOLDFAST_DATA_VERSION_MS", "100", 1);
    int out_fd;
    pid_t pid = tu_spawn((const char *const[]){"tail", "--db", db, "--since", "0", "ob", NULL},
                         &out_fd);
    unsetenv("HOLDFAST_DATA_VERSION_MS");
    tu_lines lr;
    tu_lines_init(&lr, out_fd);
    char line[4096], err[256];
    ck_assert_msg(tu_lines_next(&lr, line, sizeof line, 5000) > 0, "tail printed nothing");
    ck_assert_int_eq(tu_sql_exec(db, "INSERT INTO publish(channel, body) VALUES('ob', 'php')",
                                 err, sizeof err), 0);
    long len = tu_lines_next(&lr, line, sizeof line, 2000);
    tu_stop(pid);
    close(out_fd);
    ck_assert_msg(len > 0, "the outbox row did not reach tail within 2 s");
    json_t *v = parse_line(line, (size_t)len);
    ck_assert_str_eq(json_string_value(json_object_get(v, "data")), "php");
    json_decref(v);
}
END_TEST

Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tu_tcase(s, "cli", 30);
    tcase_add_test(tc, test_publish_prints_id_alone);
    tcase_add_test(tc, test_publish_reads_body_from_stdin);
    tcase_add_test(tc, test_tail_once_prints_one_json_object_per_line);
    tcase_add_test(tc, test_invalid_channel_name_fails_with_one_line_and_writes_nothing);
    tcase_add_test(tc, test_missing_db_directory_fails_clearly);
    tcase_add_test(tc, test_foreign_sqlite_database_is_refused_and_untouched);
    tcase_add_test(tc, test_garbage_file_is_refused_and_untouched);
    tcase_add_test(tc, test_stats_prints_json_counts);
    tcase_add_test(tc, test_help_and_version_exit_zero);
    tcase_add_test(tc, test_usage_errors_exit_2);
    tcase_add_test(tc, test_publish_json_type_is_validated);
    tcase_add_test(tc, test_publish_invalid_type_exits_2_with_one_line_and_writes_nothing);
    tcase_add_test(tc, test_publish_idempotency_key_returns_first_id);
    tcase_add_test(tc, test_prune_applies_configured_retention);
    tcase_add_test(tc, test_db_path_from_environment);
    tcase_add_test(tc, test_tail_follow_is_woken_by_publish);
    tcase_add_test(tc, test_tail_follow_delivers_burst_exactly_once_in_order);
    tcase_add_test(tc, test_tail_follow_sees_outbox_insert_without_wake);
    return s;
}
