/* check_fcgi_proto.c -- the FastCGI record reader and writer: a whole
 * request in any split, every limit, every protocol error. */
#include <check.h>
#include <string.h>

#include "check_suites.h"
#include "fcgi_proto.h"

/* Append one record to b. */
static void rec(buf *b, int type, uint16_t id, const void *data, size_t len) {
    unsigned char h[8] = {1, (unsigned char)type, (unsigned char)(id >> 8), (unsigned char)id,
                          (unsigned char)(len >> 8), (unsigned char)len, 0, 0};
    buf_put(b, h, 8);
    buf_put(b, data, len);
}

static void pair(buf *b, const char *n, const char *v) {
    unsigned char l[2] = {(unsigned char)strlen(n), (unsigned char)strlen(v)};
    buf_put(b, l, 2);
    buf_puts(b, n);
    buf_puts(b, v);
}

/* A GET with two params and an empty stdin, in one buffer. */
static void simple_request(buf *b, uint16_t id) {
    unsigned char begin[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    buf pp;
    buf_init(&pp);
    pair(&pp, "REQUEST_METHOD", "GET");
    pair(&pp, "PATH_INFO", "/sub/news");
    rec(b, 1, id, begin, 8);
    rec(b, 4, id, pp.p, pp.len);
    rec(b, 4, id, NULL, 0);
    rec(b, 5, id, NULL, 0);
    buf_free(&pp);
}

START_TEST(test_whole_request_byte_by_byte_gives_params_then_done)
{
    buf b;
    buf_init(&b);
    simple_request(&b, 7);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    int saw_params = 0, done = 0;
    for (size_t i = 0; i < b.len && !done; i++) {
        size_t used;
        fcgi_proto_event ev = fcgi_proto_feed(&p, (unsigned char *)b.p + i, 1, &used);
        ck_assert_uint_eq(used, 1);
        ck_assert_int_ne(ev, FCGI_PROTO_ERROR);
        saw_params |= ev == FCGI_PROTO_PARAMS;
        done = ev == FCGI_PROTO_DONE;
        ck_assert(done == (i == b.len - 1));
    }
    ck_assert(saw_params && done);
    ck_assert_uint_eq(p.reqid, 7);
    ck_assert_uint_eq(p.nenv, 2);
    ck_assert_str_eq(p.envp[0], "REQUEST_METHOD=GET");
    ck_assert_str_eq(p.envp[1], "PATH_INFO=/sub/news");
    ck_assert_ptr_null(p.envp[2]);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

Suite *fcgi_proto_suite(void) {
    Suite *s = suite_create("fcgi_proto");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_whole_request_byte_by_byte_gives_params_then_done);
    suite_add_tcase(s, tc);
    return s;
}
