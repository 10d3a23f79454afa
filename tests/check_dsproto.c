/* check_dsproto.c -- the Durable Streams values: offsets, integers, RFC
 * 3339 times, content types, JSON-mode splitting, the live cursor; and the
 * request parser's /v1/stream/ route with every refusal it maps to 400. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "check_suites.h"
#include "dsproto.h"
#include "request.h"
#include "testutil.h"

START_TEST(test_offsets_round_trip_and_sort_as_numbers)
{
    char a[DSPROTO_OFFSET_LEN + 1], b[DSPROTO_OFFSET_LEN + 1];
    int64_t pos = -1;
    dsproto_offset_format(9, a);
    dsproto_offset_format(10, b);
    ck_assert_str_eq(a, "0000000000000000_0000000000000009");
    ck_assert_int_lt(strcmp(a, b), 0); /* 9 < 10 as strings too */
    ck_assert_int_eq(dsproto_offset_parse(b, strlen(b), &pos), DSPROTO_OFFSET_AT);
    ck_assert_int_eq(pos, 10);
    ck_assert_int_eq(dsproto_offset_parse("-1", 2, &pos), DSPROTO_OFFSET_START);
    ck_assert_int_eq(dsproto_offset_parse("now", 3, &pos), DSPROTO_OFFSET_NOW);
    static const char *const bad[] = {"", "0", "-2", "NOW", "0000000000000000_000000000000000x",
                                      "0000000000000000_00000000000000001",
                                      "0000000000000001_0000000000000001",
                                      "0000000000000000,0000000000000001"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(dsproto_offset_parse(bad[i], strlen(bad[i]), &pos) == DSPROTO_OFFSET_BAD,
                      "%s", bad[i]);
}
END_TEST

START_TEST(test_integers_are_plain_decimal_up_to_2_pow_53)
{
    int64_t v = -1;
    ck_assert_int_eq(dsproto_uint_parse("0", &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(dsproto_uint_parse("3600", &v), 0);
    ck_assert_int_eq(v, 3600);
    ck_assert_int_eq(dsproto_uint_parse("9007199254740991", &v), 0);
    static const char *const bad[] = {"", "+3600", "03600", "3600.0", "3.6e3", "-1", " 1",
                                      "9007199254740992", "99999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(dsproto_uint_parse(bad[i], &v) == -1, "%s", bad[i]);
    ck_assert_int_eq(dsproto_uint_parse(NULL, &v), -1);
}
END_TEST

START_TEST(test_rfc3339_times_parse_with_zones_and_print_utc)
{
    int64_t ms = 0;
    char out[64];
    ck_assert_int_eq(dsproto_time_parse("2026-12-04T10:00:00Z", &ms), 0);
    ck_assert_int_eq(ms, 1796378400000LL);
    ck_assert_int_eq(dsproto_time_parse("2026-12-04T12:00:00.5+02:00", &ms), 0);
    ck_assert_int_eq(ms, 1796378400500LL);
    dsproto_time_format(1796378400500LL, out);
    ck_assert_str_eq(out, "2026-12-04T10:00:00.500Z");
    ck_assert_int_eq(dsproto_time_parse("2024-02-29T00:00:00Z", &ms), 0);
    static const char *const bad[] = {"", "2026-12-04", "2026-12-04 10:00:00Z",
                                      "2026-13-04T10:00:00Z", "2025-02-29T00:00:00Z",
                                      "2026-12-04T10:00:00", "2026-12-04T10:00:00+0200",
                                      "2026-12-04T10:00:00Zjunk", "not a time"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(dsproto_time_parse(bad[i], &ms) == -1, "%s", bad[i]);
}
END_TEST

START_TEST(test_content_types_and_closed_values)
{
    ck_assert(dsproto_type_same("Application/JSON", "application/json; charset=utf-8"));
    ck_assert(!dsproto_type_same("application/json", "application/jsonx"));
    ck_assert(dsproto_type_json("application/json;charset=utf-8"));
    ck_assert(!dsproto_type_json("application/ld+json"));
    ck_assert(dsproto_type_text("text/plain"));
    ck_assert(dsproto_type_text("application/json"));
    ck_assert(!dsproto_type_text("application/octet-stream"));
    ck_assert(dsproto_closed("true") && dsproto_closed("TRUE"));
    ck_assert(!dsproto_closed("yes") && !dsproto_closed("1") && !dsproto_closed("") &&
              !dsproto_closed(NULL));
}
END_TEST

typedef struct {
    char parts[8][64];
    int n;
} split_out;

static void split_cb(void *ud, const char *s, size_t n)
{
    split_out *o = ud;
    ck_assert_int_lt(o->n, 8);
    ck_assert_uint_lt(n, 64);
    memcpy(o->parts[o->n], s, n);
    o->parts[o->n++][n] = '\0';
}

static int split(const char *s, split_out *o)
{
    memset(o, 0, sizeof *o);
    return dsproto_json_split(s, strlen(s), split_cb, o);
}

START_TEST(test_json_split_flattens_one_level_keeping_bytes)
{
    split_out o;
    ck_assert_int_eq(split(" {\"a\": [1,2]} ", &o), 1);
    ck_assert_str_eq(o.parts[0], "{\"a\": [1,2]}");
    ck_assert_int_eq(split("[ 1 , \"x,]\\\"\" ,{\"k\":[3]}, [[4]] ,null]", &o), 5);
    ck_assert_str_eq(o.parts[0], "1");
    ck_assert_str_eq(o.parts[1], "\"x,]\\\"\"");
    ck_assert_str_eq(o.parts[2], "{\"k\":[3]}");
    ck_assert_str_eq(o.parts[3], "[[4]]");
    ck_assert_str_eq(o.parts[4], "null");
    ck_assert_int_eq(split("[]", &o), 0);
    ck_assert_int_eq(split(" [ ] ", &o), 0);
    ck_assert_int_eq(split("[[]]", &o), 1);
    ck_assert_str_eq(o.parts[0], "[]");
    ck_assert_int_eq(split("[1,", &o), -1);
    ck_assert_int_eq(split("{\"a\":}", &o), -1);
    ck_assert_int_eq(split("", &o), -1);
}
END_TEST

START_TEST(test_cursor_is_the_interval_or_jumps_past_the_client)
{
    int64_t t = 1728432000000LL + 1000 * 20000LL; /* interval 1000 */
    ck_assert_int_eq(dsproto_cursor(t, -1, 7), 1000);
    ck_assert_int_eq(dsproto_cursor(t, 999, 7), 1000);
    int64_t c = dsproto_cursor(t, 1000, 7);
    ck_assert_int_gt(c, 1000);
    ck_assert_int_le(c, 1000 + 180);
    ck_assert_int_gt(dsproto_cursor(t, 5000, 123456), 5000);
}
END_TEST

/* ---- the request parser's stream route -------------------------------------- */

static const request_limits lim = {.max_channels = 4, .max_body = 1024, .poll_timeout_s = 25,
                                   .max_poll_timeout_s = 55, .batch_limit = 100,
                                   .streams_poll_timeout_s = 7};
static request r;

#define PARSE(...) request_parse(&r, (char *const[]){__VA_ARGS__, NULL}, &lim)

START_TEST(test_stream_route_fields)
{
    ck_assert_int_eq(PARSE("REQUEST_METHOD=PUT", "PATH_INFO=/v1/stream/chat.room-1",
                           "SCRIPT_NAME=/lp", "HTTP_HOST=example.org", "HTTPS=on",
                           "CONTENT_TYPE=application/json", "CONTENT_LENGTH=2",
                           "HTTP_STREAM_TTL=60", "HTTP_STREAM_CLOSED=TRUE",
                           "HTTP_STREAM_SEQ=0001", "HTTP_PRODUCER_ID=p1",
                           "HTTP_PRODUCER_EPOCH=2", "HTTP_PRODUCER_SEQ=0",
                           "HTTP_STREAM_FORKED_FROM=/lp/v1/stream/src",
                           "HTTP_STREAM_FORK_OFFSET=0000000000000000_0000000000000004",
                           "HTTP_STREAM_FORK_SUB_OFFSET=3"),
                     ROUTE_STREAM);
    ck_assert_str_eq(r.ds.name, "chat.room-1");
    ck_assert_str_eq(r.channels[0], "chat.room-1"); /* the stream is the channel */
    ck_assert_int_eq(r.ds.ttl_s, 60);
    ck_assert_int_eq(r.ds.expires_ms, -1);
    ck_assert_int_eq(r.ds.closed, 1);
    ck_assert_str_eq(r.ds.seq, "0001");
    ck_assert_str_eq(r.ds.pid, "p1");
    ck_assert_int_eq(r.ds.pepoch, 2);
    ck_assert_int_eq(r.ds.pseq, 0);
    ck_assert_str_eq(r.ds.fork_from, "src");
    ck_assert_int_eq(r.ds.fork_at, 4);
    ck_assert_int_eq(r.ds.fork_sub, 3);
    ck_assert_str_eq(r.ds.script, "/lp");
    ck_assert_str_eq(r.ds.host, "example.org");
    ck_assert_int_eq(r.ds.https, 1);
    ck_assert_int_eq(r.timeout_s, 7);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=GET", "PATH_INFO=/v1/stream/s",
                           "QUERY_STRING=live=long-poll&offset=now&cursor=12&_=1"),
                     ROUTE_STREAM);
    ck_assert_int_eq(r.ds.live, FORMAT_DS_POLL);
    ck_assert_int_eq(r.format, FORMAT_DS_POLL);
    ck_assert_int_eq(r.ds.offset, DSPROTO_OFFSET_NOW);
    ck_assert_int_eq(r.ds.cursor, 12);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=GET", "PATH_INFO=/v1/stream/s"), ROUTE_STREAM);
    ck_assert_int_eq(r.ds.offset, DSPROTO_OFFSET_START);
    ck_assert_int_eq(r.ds.live, 0);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=OPTIONS", "PATH_INFO=/v1/stream/s"), ROUTE_PREFLIGHT);
}
END_TEST

START_TEST(test_stream_route_refusals)
{
    static const struct {
        const char *method, *path, *query, *h1, *h2;
        int status;
    } cases[] = {
        {"PATCH", "/v1/stream/s", "", NULL, NULL, 405},
        {"GET", "/v1/stream/", "", NULL, NULL, 400},
        {"GET", "/v1/stream/a/b", "", NULL, NULL, 400},
        {"GET", "/v1/stream/s", "offset=1,2", NULL, NULL, 400},
        {"GET", "/v1/stream/s", "offset=", NULL, NULL, 400},
        {"GET", "/v1/stream/s", "offset=-1&offset=-1", NULL, NULL, 400},
        {"GET", "/v1/stream/s", "live=long-poll", NULL, NULL, 400},
        {"GET", "/v1/stream/s", "live=ws&offset=-1", NULL, NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_TTL=03600", NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_TTL=-1", NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_EXPIRES_AT=tomorrow", NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_TTL=5",
         "HTTP_STREAM_EXPIRES_AT=2030-01-01T00:00:00Z", 400},
        {"POST", "/v1/stream/s", "", "HTTP_PRODUCER_ID=p", "HTTP_PRODUCER_EPOCH=0", 400},
        {"POST", "/v1/stream/s", "", "HTTP_PRODUCER_ID=", NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_FORK_OFFSET=-1", NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_FORK_SUB_OFFSET=0", NULL, 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_FORKED_FROM=/v1/stream/a",
         "HTTP_STREAM_FORK_SUB_OFFSET=2", 400},
        {"PUT", "/v1/stream/s", "", "HTTP_STREAM_FORKED_FROM=/v1/stream/a",
         "HTTP_STREAM_FORK_OFFSET=bogus", 400},
        {"POST", "/v1/stream/s", "", "CONTENT_LENGTH=2048", NULL, 413},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char m[32], p[64], q[64];
        snprintf(m, sizeof m, "REQUEST_METHOD=%s", cases[i].method);
        snprintf(p, sizeof p, "PATH_INFO=%s", cases[i].path);
        snprintf(q, sizeof q, "QUERY_STRING=%s", cases[i].query);
        char *env[] = {m, p, q, (char *)cases[i].h1, (char *)cases[i].h2, NULL};
        if (!cases[i].h1)
            env[3] = NULL;
        ck_assert_msg(request_parse(&r, env, &lim) == ROUTE_ERROR, "case %zu", i);
        ck_assert_msg(r.status == cases[i].status, "case %zu: %d", i, r.status);
    }
    /* Stream-Closed other than "true" is no header at all, not an error */
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/v1/stream/s",
                           "HTTP_STREAM_CLOSED=yes"), ROUTE_STREAM);
    ck_assert_int_eq(r.ds.closed, 0);
}
END_TEST

Suite *dsproto_suite(void)
{
    Suite *s = suite_create("dsproto");
    TCase *tc = tu_tcase(s, "values", 0);
    tcase_add_test(tc, test_offsets_round_trip_and_sort_as_numbers);
    tcase_add_test(tc, test_integers_are_plain_decimal_up_to_2_pow_53);
    tcase_add_test(tc, test_rfc3339_times_parse_with_zones_and_print_utc);
    tcase_add_test(tc, test_content_types_and_closed_values);
    tcase_add_test(tc, test_json_split_flattens_one_level_keeping_bytes);
    tcase_add_test(tc, test_cursor_is_the_interval_or_jumps_past_the_client);
    tc = tu_tcase(s, "request", 0);
    tcase_add_test(tc, test_stream_route_fields);
    tcase_add_test(tc, test_stream_route_refusals);
    return s;
}
