/* check_request.c -- the request parser: routes, every parameter and header,
 * every limit and the status each violation maps to. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "check_suites.h"
#include "request.h"
#include "testutil.h"

static const request_limits lim = {.max_channels = 4, .max_body = 1024, .poll_timeout_s = 25,
                                   .max_poll_timeout_s = 55, .batch_limit = 100};
static request r;

/* Parse a NULL-terminated list of "NAME=value" entries. */
#define PARSE(...) request_parse(&r, (char *const[]){__VA_ARGS__, NULL}, &lim)

START_TEST(test_subscribe_route_defaults_start_at_head)
{
    ck_assert_int_eq(PARSE("REQUEST_METHOD=GET", "PATH_INFO=/sub/news"), ROUTE_SUB);
    ck_assert_int_eq(r.nchannels, 1);
    ck_assert_str_eq(r.channels[0], "news");
    ck_assert_int_eq(r.since, -1);
    ck_assert_int_eq(r.last, 0);
    ck_assert_int_eq(r.timeout_s, 25);
    ck_assert_int_eq(r.limit, 100);
    ck_assert_int_eq(r.format, FORMAT_JSON);
    ck_assert_int_eq(r.has_epoch, 0);
}
END_TEST

START_TEST(test_subscribe_parameters_parsed_and_capped)
{
    ck_assert_int_eq(PARSE("REQUEST_METHOD=GET", "PATH_INFO=/sub/a,b.c,a",
                           "QUERY_STRING=since=42&epoch=9f3c1a7e&timeout=999&limit=5000"
                           "&format=raw&_=123&x"),
                     ROUTE_SUB);
    ck_assert_int_eq(r.nchannels, 2); /* the duplicate "a" is dropped */
    ck_assert_str_eq(r.channels[1], "b.c");
    ck_assert_int_eq(r.since, 42);
    ck_assert_str_eq(r.epoch, "9f3c1a7e");
    ck_assert_int_eq(r.timeout_s, 55);
    ck_assert_int_eq(r.limit, 100);
    ck_assert_int_eq(r.format, FORMAT_RAW);
}
END_TEST

START_TEST(test_cursor_from_last_event_id_and_since_wins_over_last)
{
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "HTTP_LAST_EVENT_ID=17"), ROUTE_SUB);
    ck_assert_int_eq(r.since, 17);
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "QUERY_STRING=last=5&since=9"), ROUTE_SUB);
    ck_assert_int_eq(r.since, 9);
    ck_assert_int_eq(r.last, 0);
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "QUERY_STRING=last=5"), ROUTE_SUB);
    ck_assert_int_eq(r.last, 5);
    ck_assert_int_eq(r.since, -1);
    /* since wins over Last-Event-ID on a long-poll, Last-Event-ID on a stream */
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "QUERY_STRING=since=9", "HTTP_LAST_EVENT_ID=17"),
                     ROUTE_SUB);
    ck_assert_int_eq(r.since, 9);
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "QUERY_STRING=since=9", "HTTP_LAST_EVENT_ID=17",
                           "HTTP_ACCEPT=text/event-stream"),
                     ROUTE_SUB);
    ck_assert_int_eq(r.since, 17);
    ck_assert_int_eq(r.format, FORMAT_SSE);
}
END_TEST

START_TEST(test_percent_encoded_query_is_decoded)
{
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "QUERY_STRING=s%69nce=%31%32"), ROUTE_SUB);
    ck_assert_int_eq(r.since, 12);
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "QUERY_STRING=since=%3"), ROUTE_ERROR);
    ck_assert_int_eq(r.status, 400);
}
END_TEST

START_TEST(test_unknown_parameters_are_ignored_however_long)
{
    char q[400] = "QUERY_STRING=since=5&utm_content=";
    memset(q + strlen(q), 'x', 200);
    strcat(q, "&%zz=1&_=123");
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", q), ROUTE_SUB);
    ck_assert_int_eq(r.since, 5);
}
END_TEST

START_TEST(test_path_falls_back_to_request_uri_minus_script_name)
{
    ck_assert_int_eq(PARSE("REQUEST_URI=/lp/holdfast.fcgi/sub/news?since=3",
                           "SCRIPT_NAME=/lp/holdfast.fcgi", "QUERY_STRING=since=3"),
                     ROUTE_SUB);
    ck_assert_str_eq(r.channels[0], "news");
    ck_assert_int_eq(PARSE("PATH_INFO=", "REQUEST_URI=/health"), ROUTE_HEALTH);
    ck_assert_int_eq(PARSE("REQUEST_URI=/lp/sub/a%2Cb%40x", "SCRIPT_NAME=/lp"), ROUTE_SUB);
    ck_assert_int_eq(r.nchannels, 2);
    ck_assert_str_eq(r.channels[1], "b@x");
}
END_TEST

START_TEST(test_bad_input_maps_to_documented_statuses)
{
    static const struct {
        const char *path, *query, *method;
        int status;
        const char *error;
    } cases[] = {
        {"/sub/bad name", "", "GET", 400, "bad_channel"},
        {"/sub/", "", "GET", 400, "bad_channel"},
        {"/sub/a,", "", "GET", 400, "bad_channel"},
        {"/sub/a,b,c,d,e", "", "GET", 400, "too_many_channels"},
        {"/sub/a", "since=abc", "GET", 400, "bad_cursor"},
        {"/sub/a", "since=-1", "GET", 400, "bad_cursor"},
        {"/sub/a", "since=99999999999999999999", "GET", 400, "bad_cursor"},
        {"/sub/a", "timeout=x", "GET", 400, "bad_parameter"},
        {"/sub/a", "limit=0", "GET", 400, "bad_parameter"},
        {"/sub/a", "format=xml", "GET", 400, "bad_parameter"},
        {"/sub/a", "epoch=not-hex", "GET", 400, "bad_parameter"},
        {"/nope", "", "GET", 404, "not_found"},
        {"/healthz", "", "GET", 404, "not_found"},
        {"/sub/a", "", "POST", 405, "method_not_allowed"},
        {"/pub/a", "", "GET", 405, "method_not_allowed"},
        {"/pub/a,b", "", "POST", 400, "bad_channel"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char p[256], q[256], m[64];
        snprintf(p, sizeof p, "PATH_INFO=%s", cases[i].path);
        snprintf(q, sizeof q, "QUERY_STRING=%s", cases[i].query);
        snprintf(m, sizeof m, "REQUEST_METHOD=%s", cases[i].method);
        ck_assert_int_eq(PARSE(m, p, q), ROUTE_ERROR);
        ck_assert_msg(r.status == cases[i].status && !strcmp(r.error, cases[i].error),
                      "%s %s?%s: got %d %s, want %d %s", cases[i].method, cases[i].path,
                      cases[i].query, r.status, r.error, cases[i].status, cases[i].error);
        ck_assert_int_gt(strlen(r.detail), 0);
    }
}
END_TEST

START_TEST(test_publish_headers_and_body_limit)
{
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", "CONTENT_LENGTH=5",
                           "CONTENT_TYPE=application/json", "HTTP_IDEMPOTENCY_KEY=abc-1",
                           "HTTP_HOLDFAST_KEY=cpu", "HTTP_AUTHORIZATION=Bearer s3cret"),
                     ROUTE_PUB);
    ck_assert_str_eq(r.channel, "news");
    ck_assert_int_eq(r.content_length, 5);
    ck_assert_str_eq(r.content_type, "application/json");
    ck_assert_str_eq(r.idem, "abc-1");
    ck_assert_str_eq(r.key, "cpu");
    ck_assert_str_eq(r.bearer, "s3cret");
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", "CONTENT_LENGTH=1025"),
                     ROUTE_ERROR);
    ck_assert_int_eq(r.status, 413);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news",
                           "HTTP_IDEMPOTENCY_KEY=has space"),
                     ROUTE_ERROR);
    ck_assert_int_eq(r.status, 400);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", "CONTENT_LENGTH=x"),
                     ROUTE_ERROR);
    ck_assert_int_eq(r.status, 400);
}
END_TEST

START_TEST(test_publish_content_type_is_bounded_and_checked)
{
    /* A 6 KB Content-Type used to be accepted and stored, and every
     * format=raw answer carrying it then failed at nginx (502).  The parser
     * now answers 400 bad_content_type for what msglog would refuse. */
    static char big[6100], max[300], ct[6200];
    memset(big, 'x', 6000);
    memcpy(big, "text/", 5);
    big[6000] = '\0';
    memset(max, 'y', MSGLOG_TYPE_MAX);
    memcpy(max, "text/", 5);
    max[MSGLOG_TYPE_MAX] = '\0';
    const char *bad[] = {big, "text/plain\r\nX-Injected: 1", "json", "text/plain; charset",
                         "text/pl\x01ain"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(ct, sizeof ct, "CONTENT_TYPE=%s", bad[i]);
        ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", ct), ROUTE_ERROR);
        ck_assert_int_eq(r.status, 400);
        ck_assert_str_eq(r.error, "bad_content_type");
        ck_assert_ptr_nonnull(strstr(r.detail, "255"));
    }
    snprintf(ct, sizeof ct, "CONTENT_TYPE=%s", max);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", ct), ROUTE_PUB);
    ck_assert_uint_eq(strlen(r.content_type), MSGLOG_TYPE_MAX);
    max[MSGLOG_TYPE_MAX] = 'y';
    max[MSGLOG_TYPE_MAX + 1] = '\0';
    snprintf(ct, sizeof ct, "CONTENT_TYPE=%s", max);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", ct), ROUTE_ERROR);
    ck_assert_str_eq(r.error, "bad_content_type");
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news",
                           "CONTENT_TYPE=application/json; charset=\"utf-8\""),
                     ROUTE_PUB);
    ck_assert_int_eq(PARSE("REQUEST_METHOD=POST", "PATH_INFO=/pub/news", "CONTENT_TYPE="),
                     ROUTE_PUB);
    ck_assert_ptr_null(r.content_type);
}
END_TEST

START_TEST(test_options_is_a_preflight_and_sse_is_recognised)
{
    ck_assert_int_eq(PARSE("REQUEST_METHOD=OPTIONS", "PATH_INFO=/pub/news",
                           "HTTP_ORIGIN=https://a.test"),
                     ROUTE_PREFLIGHT);
    ck_assert_str_eq(r.origin, "https://a.test");
    ck_assert_int_eq(PARSE("PATH_INFO=/sub/x", "HTTP_ACCEPT=text/event-stream"), ROUTE_SUB);
    ck_assert_int_eq(r.format, FORMAT_SSE);
}
END_TEST

Suite *request_suite(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tu_tcase(s, "parse", 0);
    tcase_add_test(tc, test_subscribe_route_defaults_start_at_head);
    tcase_add_test(tc, test_subscribe_parameters_parsed_and_capped);
    tcase_add_test(tc, test_cursor_from_last_event_id_and_since_wins_over_last);
    tcase_add_test(tc, test_percent_encoded_query_is_decoded);
    tcase_add_test(tc, test_unknown_parameters_are_ignored_however_long);
    tcase_add_test(tc, test_path_falls_back_to_request_uri_minus_script_name);
    tcase_add_test(tc, test_bad_input_maps_to_documented_statuses);
    tcase_add_test(tc, test_publish_headers_and_body_limit);
    tcase_add_test(tc, test_publish_content_type_is_bounded_and_checked);
    tcase_add_test(tc, test_options_is_a_preflight_and_sse_is_recognised);
    return s;
}
