/* check_lpload.c -- unit tests of the load tool's pure parts: the HTTP
 * response parser (every body framing, any split), the poll-answer walker,
 * and the latency histogram. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lphist.h"
#include "lphttp.h"
#include "lpjson.h"

static void part_count(void *ud, const char *data, size_t n)
{
    char *acc = ud;
    strncat(acc, data, n);
    strcat(acc, "|");
}

START_TEST(test_multipart_parts_in_order_and_malformed_refused)
{
    char acc[128] = "";
    const char *b = "--B\r\nContent-Type: text/plain\r\n\r\none\r\n--B\r\n\r\ntwo\r\n--B--";
    ck_assert_int_eq(lphttp_multipart_each(b, strlen(b), "B", part_count, acc), 2);
    ck_assert_str_eq(acc, "one|two|");
    ck_assert_int_eq(lphttp_multipart_each("junk", 4, "B", part_count, acc), -1);
}
END_TEST

START_TEST(test_sse_events_split_anywhere_and_consumed)
{
    const char *t = "retry: 1000\n\n: ping\r\n\r\nid: 7\ndata: seq=1 t=5\ndata: more\n\nid: 8\n";
    lphttp_event ev;
    size_t n = strlen(t), off = 0, k;
    k = lphttp_sse_next(t, n, &ev);
    ck_assert_uint_eq(k, 13);
    ck_assert_int_eq(ev.comment_only, 0); /* retry: is a field */
    ck_assert_ptr_null(ev.id);
    off += k;
    k = lphttp_sse_next(t + off, n - off, &ev);
    ck_assert_int_eq(ev.comment_only, 1);
    off += k;
    k = lphttp_sse_next(t + off, n - off, &ev);
    ck_assert_uint_gt(k, 0);
    ck_assert_uint_eq(ev.id_len, 1);
    ck_assert_int_eq(ev.id[0], '7');
    ck_assert_uint_eq(ev.data_len, 9); /* the first data: line only */
    ck_assert_int_eq(memcmp(ev.data, "seq=1 t=5", 9), 0);
    off += k;
    /* an event without its blank line yet is not complete, however split */
    for (size_t cut = 0; cut <= n - off; cut++)
        ck_assert_uint_eq(lphttp_sse_next(t + off, cut, &ev), 0);

    lphttp_resp r;
    lphttp_resp_init(&r);
    const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nid: 1\r\n";
    size_t used;
    ck_assert_int_eq(lphttp_resp_feed(&r, h, strlen(h), &used), LPHTTP_MORE);
    ck_assert_int_eq(lphttp_resp_in_body(&r), 1);
    ck_assert_uint_eq(r.body_len, 5);
    lphttp_resp_consume(&r, 3);
    ck_assert_str_eq(r.body, " 1");
    lphttp_resp_consume(&r, 99);
    ck_assert_uint_eq(r.body_len, 0);
    lphttp_resp_free(&r);
}
END_TEST

Suite *lpload_suite(void);

/* Feed s to a fresh parser in pieces of `step` bytes (0 = whole). */
static lphttp_result http_feed(lphttp_resp *r, const char *s, size_t step)
{
    size_t n = strlen(s), off = 0, used;
    lphttp_result res = LPHTTP_MORE;
    while (off < n && res == LPHTTP_MORE) {
        size_t k = step && n - off > step ? step : n - off;
        res = lphttp_resp_feed(r, s + off, k, &used);
        off += used;
    }
    return res;
}

START_TEST(test_http_content_length_any_split)
{
    static const char *ans = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                             "Content-Type: application/json\r\n\r\nhello";
    for (size_t step = 0; step < 8; step++) {
        lphttp_resp r;
        lphttp_resp_init(&r);
        ck_assert_int_eq(http_feed(&r, ans, step), LPHTTP_DONE);
        ck_assert_int_eq(r.status, 200);
        ck_assert_int_eq(r.keep_alive, 1);
        ck_assert_uint_eq(r.body_len, 5);
        ck_assert_str_eq(r.body, "hello");
        lphttp_resp_free(&r);
    }
}
END_TEST

START_TEST(test_http_chunked_with_extension_and_trailer)
{
    static const char *ans = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    for (size_t step = 0; step < 6; step++) {
        lphttp_resp r;
        lphttp_resp_init(&r);
        ck_assert_int_eq(http_feed(&r, ans, step), LPHTTP_DONE);
        ck_assert_int_eq(r.chunked, 1);
        ck_assert_str_eq(r.body, "abc0123456789");
        lphttp_resp_free(&r);
    }
}
END_TEST

START_TEST(test_http_keep_alive_rules_and_reuse)
{
    lphttp_resp r;
    lphttp_resp_init(&r);
    ck_assert_int_eq(http_feed(&r, "HTTP/1.1 503 X\r\nConnection: close\r\nRetry-After: 2\r\n"
                                   "Content-Length: 0\r\n\r\n", 0), LPHTTP_DONE);
    ck_assert_int_eq(r.status, 503);
    ck_assert_int_eq(r.keep_alive, 0);
    ck_assert_int_eq(r.retry_after, 2);
    lphttp_resp_reset(&r);
    ck_assert_int_eq(lphttp_resp_empty(&r), 1);
    ck_assert_int_eq(http_feed(&r, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                                   "Content-Length: 2\r\n\r\nok", 0), LPHTTP_DONE);
    ck_assert_int_eq(r.keep_alive, 1);
    lphttp_resp_reset(&r);
    ck_assert_int_eq(http_feed(&r, "HTTP/1.0 200 OK\r\n\r\nuntil close", 0), LPHTTP_MORE);
    ck_assert_int_eq(lphttp_resp_eof(&r), LPHTTP_DONE);
    ck_assert_int_eq(r.keep_alive, 0);
    ck_assert_str_eq(r.body, "until close");
    lphttp_resp_free(&r);
}
END_TEST

START_TEST(test_http_interim_and_no_body_statuses)
{
    lphttp_resp r;
    lphttp_resp_init(&r);
    ck_assert_int_eq(http_feed(&r, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
                               0), LPHTTP_DONE);
    ck_assert_int_eq(r.status, 204);
    ck_assert_uint_eq(r.body_len, 0);
    lphttp_resp_free(&r);
}
END_TEST

START_TEST(test_http_errors_are_reported)
{
    lphttp_resp r;
    lphttp_resp_init(&r);
    ck_assert_int_eq(http_feed(&r, "SMTP ready\r\n\r\n", 0), LPHTTP_ERROR);
    ck_assert_ptr_nonnull(r.error);
    lphttp_resp_reset(&r);
    ck_assert_int_eq(http_feed(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                               0), LPHTTP_ERROR);
    lphttp_resp_reset(&r);
    ck_assert_int_eq(http_feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", 0),
                     LPHTTP_MORE);
    ck_assert_int_eq(lphttp_resp_eof(&r), LPHTTP_ERROR);
    lphttp_resp_reset(&r);
    ck_assert_int_eq(lphttp_resp_eof(&r), LPHTTP_ERROR);
    lphttp_resp_free(&r);
}
END_TEST

START_TEST(test_http_stops_at_end_of_answer)
{
    static const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1";
    lphttp_resp r;
    size_t used;
    lphttp_resp_init(&r);
    ck_assert_int_eq(lphttp_resp_feed(&r, two, strlen(two), &used), LPHTTP_DONE);
    ck_assert_uint_eq(used, strlen(two) - 8);
    lphttp_resp_free(&r);
}
END_TEST

typedef struct {
    int64_t ids[8];
    char data[8][32];
    int n;
} msgs;

static void collect(void *ud, const lpjson_msg *m)
{
    msgs *x = ud;
    if (x->n == 8)
        return;
    x->ids[x->n] = m->id;
    snprintf(x->data[x->n], sizeof x->data[0], "%s%.*s", m->data_is_string ? "s:" : "v:",
             (int)m->data_len, m->data);
    x->n++;
}

START_TEST(test_json_poll_answer_walk)
{
    static const char *ans =
        "{\"cursor\": 1042, \"epoch\": \"9f3c1a7e\",\n"
        " \"messages\": [{\"id\": 1041, \"channel\": \"news\", \"time\": 1763776000123,\n"
        "   \"type\": \"application/json\", \"data\": {\"headline\": \"a \\\"q\\\" ]}\"}},\n"
        "  {\"id\": 1042, \"channel\": \"news\", \"time\": 1763776000456,\n"
        "   \"type\": \"text/plain\", \"data\": \"seq=3 t=99\"}],\n"
        " \"gap\": false, \"extra\": [1, {\"x\": null}], \"reset\": true}";
    lpjson_poll p;
    msgs x = {.n = 0};
    ck_assert_int_eq(lpjson_poll_parse(ans, strlen(ans), &p, collect, &x), 0);
    ck_assert_int_eq(p.has_cursor, 1);
    ck_assert_int_eq(p.cursor, 1042);
    ck_assert_str_eq(p.epoch, "9f3c1a7e");
    ck_assert_int_eq(p.gap, 0);
    ck_assert_int_eq(p.reset, 1);
    ck_assert_uint_eq(p.nmessages, 2);
    ck_assert_int_eq(x.n, 2);
    ck_assert_int_eq(x.ids[0], 1041);
    ck_assert_str_eq(x.data[0], "v:{\"headline\": \"a \\\"q\\\" ]}\"}");
    ck_assert_int_eq(x.ids[1], 1042);
    ck_assert_str_eq(x.data[1], "s:seq=3 t=99");
}
END_TEST

START_TEST(test_json_rejects_malformed)
{
    static const char *bad[] = {"", "[]", "{\"cursor\": 1", "{\"messages\": [{\"id\": 1}",
                                "{\"a\": \"unterminated}", "{\"a\": 1} trailing",
                                "{\"a\" 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lpjson_poll p;
        ck_assert_msg(lpjson_poll_parse(bad[i], strlen(bad[i]), &p, NULL, NULL) == -1,
                      "accepted: %s", bad[i]);
    }
    char deep[300];
    memset(deep, '[', sizeof deep);
    memcpy(deep, "{\"a\":", 5);
    lpjson_poll p;
    ck_assert_int_eq(lpjson_poll_parse(deep, sizeof deep, &p, NULL, NULL), -1);
}
END_TEST

START_TEST(test_json_stats_numbers)
{
    static const char *st = "{\"head\": 77, \"epoch\": \"ab12\", \"workers\": [{\"parked\": 3},"
                            " {\"parked\" : 4}], \"parked_total\": 100, \"arr\": {\"parked\":[1,2]}}";
    int64_t v = -1;
    char epoch[16];
    ck_assert_int_eq(lpjson_int_sum(st, "head", &v), 1);
    ck_assert_int_eq(v, 77);
    ck_assert_int_eq(lpjson_int_sum(st, "parked", &v), 3);
    ck_assert_int_eq(v, 10);
    ck_assert_int_eq(lpjson_int_sum(st, "missing", &v), 0);
    ck_assert_int_eq(v, 10);
    ck_assert_int_eq(lpjson_str_find(st, "epoch", epoch, sizeof epoch), 0);
    ck_assert_str_eq(epoch, "ab12");
    ck_assert_int_eq(lpjson_str_find(st, "head", epoch, sizeof epoch), -1);
}
END_TEST

START_TEST(test_hist_percentiles_within_precision)
{
    lphist h;
    ck_assert_int_eq(lphist_init(&h), 0);
    ck_assert_uint_eq(lphist_percentile(&h, 0.5), 0);
    for (uint64_t v = 1; v <= 100000; v++)
        lphist_add(&h, v);
    uint64_t p50 = lphist_percentile(&h, 0.50), p99 = lphist_percentile(&h, 0.99);
    ck_assert_uint_le(p50 > 50000 ? p50 - 50000 : 50000 - p50, 50);
    ck_assert_uint_le(p99 > 99000 ? p99 - 99000 : 99000 - p99, 100);
    ck_assert_uint_eq(lphist_percentile(&h, 1.0), 100000);
    ck_assert_uint_eq(h.count, 100000);
    lphist_add(&h, (uint64_t)1 << 50); /* clamped, not out of bounds */
    ck_assert_uint_eq(h.max, ((uint64_t)1 << 40) - 1);
    lphist_free(&h);
}
END_TEST

Suite *lpload_suite(void)
{
    Suite *s = suite_create("lpload");
    TCase *tc = tcase_create("http");
    tcase_add_test(tc, test_http_content_length_any_split);
    tcase_add_test(tc, test_http_chunked_with_extension_and_trailer);
    tcase_add_test(tc, test_http_keep_alive_rules_and_reuse);
    tcase_add_test(tc, test_http_interim_and_no_body_statuses);
    tcase_add_test(tc, test_http_errors_are_reported);
    tcase_add_test(tc, test_multipart_parts_in_order_and_malformed_refused);
    tcase_add_test(tc, test_sse_events_split_anywhere_and_consumed);
    tcase_add_test(tc, test_http_stops_at_end_of_answer);
    suite_add_tcase(s, tc);
    tc = tcase_create("json");
    tcase_add_test(tc, test_json_poll_answer_walk);
    tcase_add_test(tc, test_json_rejects_malformed);
    tcase_add_test(tc, test_json_stats_numbers);
    suite_add_tcase(s, tc);
    tc = tcase_create("hist");
    tcase_add_test(tc, test_hist_percentiles_within_precision);
    suite_add_tcase(s, tc);
    return s;
}
