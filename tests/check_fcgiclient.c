/* check_fcgiclient.c -- unit tests of the FastCGI test client: params
 * encoding, the record parser under every split of its input, the CGI
 * answer split, addresses, and one request/answer round trip over a real
 * unix socket with a hand-written peer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <check.h>
#include <errno.h>
#include <fastcgi.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fcgiclient.h"

Suite *fcgiclient_suite(void);

/* ---- helpers ------------------------------------------------------------ */

typedef struct {
    unsigned char b[4096];
    size_t n;
} stream;

static void rec_put(stream *s, unsigned type, unsigned id, const void *data, size_t len,
                    unsigned pad)
{
    unsigned char h[8] = {1, (unsigned char)type, (unsigned char)(id >> 8), (unsigned char)id,
                          (unsigned char)(len >> 8), (unsigned char)len, (unsigned char)pad, 0};
    ck_assert_uint_lt(s->n + 8 + len + pad, sizeof s->b);
    memcpy(s->b + s->n, h, 8);
    memcpy(s->b + s->n + 8, data, len);
    memset(s->b + s->n + 8 + len, 0xee, pad);
    s->n += 8 + len + pad;
}

/* An answer with everything a parser can trip on: a management record, a
 * record of another request, padding, the header block split across
 * records, STDERR in the middle, an empty STDOUT, END_REQUEST. */
static void answer_build(stream *s)
{
    static const unsigned char end[8] = {0, 0, 0, 7, FCGI_REQUEST_COMPLETE, 0, 0, 0};
    s->n = 0;
    rec_put(s, FCGI_GET_VALUES_RESULT, 0, "\x0e\x01" "FCGI_MAX_CONNS1", 17, 7);
    rec_put(s, FCGI_STDOUT, 2, "junk", 4, 4);
    rec_put(s, FCGI_STDOUT, 1, "Status: 404 Not Found\r\nContent-Type: text/pl", 44, 4);
    rec_put(s, FCGI_STDERR, 1, "warn\n", 5, 3);
    rec_put(s, FCGI_STDOUT, 1, "ain\r\nX-A: 1\r\n\r\nbody-bytes", 25, 0);
    rec_put(s, FCGI_STDOUT, 1, "", 0, 0);
    rec_put(s, FCGI_END_REQUEST, 1, end, 8, 0);
}

static void answer_check(fcgi_conn *c)
{
    size_t n;
    ck_assert_int_eq(fcgi_conn_done(c), 1);
    ck_assert_int_eq(fcgi_conn_status(c), 404);
    ck_assert_str_eq(fcgi_conn_header(c, "content-type"), "text/plain");
    ck_assert_str_eq(fcgi_conn_header(c, "X-A"), "1");
    ck_assert_ptr_null(fcgi_conn_header(c, "X-B"));
    ck_assert_str_eq(fcgi_conn_body(c, &n), "body-bytes");
    ck_assert_uint_eq(n, 10);
    ck_assert_str_eq(fcgi_conn_stderr(c, &n), "warn\n");
    ck_assert_int_eq(fcgi_conn_app_status(c), 7);
    ck_assert_int_eq(fcgi_conn_protocol_status(c), 0);
    ck_assert_uint_eq(fcgi_conn_header_count(c), 3);
}

/* Feed s in pieces whose sizes come from next(); returns the last result.
 * Once DONE, every later piece must keep answering DONE. */
static fcgi_conn_result feed_pieces(fcgi_conn *c, const stream *s, size_t (*next)(size_t))
{
    fcgi_conn_result r = FCGI_CONN_MORE;
    for (size_t off = 0, k = 0; off < s->n; k++) {
        size_t n = next(k);
        if (n > s->n - off)
            n = s->n - off;
        fcgi_conn_result prev = r;
        r = fcgi_conn_feed(c, s->b + off, n);
        off += n;
        ck_assert_int_ne(r, FCGI_CONN_ERROR);
        if (prev == FCGI_CONN_DONE)
            ck_assert_int_eq(r, FCGI_CONN_DONE);
    }
    return r;
}

static size_t one_byte(size_t k)
{
    (void)k;
    return 1;
}

static unsigned rnd_state = 12345;
static size_t random_size(size_t k)
{
    (void)k;
    rnd_state = rnd_state * 1103515245u + 12345u;
    return 1 + (rnd_state >> 16) % 23;
}

/* ---- params ----------------------------------------------------------- */

START_TEST(test_params_encode_short_and_long_lengths)
{
    fcgi_params p;
    char name[200], value[300];
    memset(name, 'N', sizeof name);
    memset(value, 'v', sizeof value);
    fcgi_params_init(&p);
    ck_assert_int_eq(fcgi_params_add(&p, "A", "b"), 0);
    ck_assert_int_eq(fcgi_params_addn(&p, name, sizeof name, value, sizeof value), 0);
    static const unsigned char head[] = {1, 1, 'A', 'b', 0x80, 0, 0, 200, 0x80, 0, 1, 44};
    ck_assert_uint_eq(p.len, sizeof head + sizeof name + sizeof value);
    ck_assert_mem_eq(p.buf, head, sizeof head);
    size_t vl;
    const char *v = fcgi_params_find(&p, "A", &vl);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(vl, 1);
    ck_assert_int_eq(v[0], 'b');
    char zname[201];
    memcpy(zname, name, 200);
    zname[200] = '\0';
    ck_assert_ptr_nonnull(fcgi_params_find(&p, zname, &vl));
    ck_assert_uint_eq(vl, 300);
    ck_assert_ptr_null(fcgi_params_find(&p, "B", NULL));
    fcgi_params_free(&p);
}
END_TEST

static void param_is(const fcgi_params *p, const char *name, const char *want)
{
    size_t n;
    const char *v = fcgi_params_find(p, name, &n);
    ck_assert_msg(v != NULL, "%s missing", name);
    ck_assert_msg(n == strlen(want) && memcmp(v, want, n) == 0, "%s = %.*s, want %s", name,
                  (int)n, v, want);
}

START_TEST(test_params_http_maps_uri_headers_and_body)
{
    static const char *const hdrs[] = {"Content-Type: text/plain", "X-Foo-Bar:  baz ",
                                       "Content-Length: 99"};
    fcgi_http_request rq = {.method = "POST", .uri = "/sub/a%20b?since=1&x=%20",
                            .script_name = "/lp", .headers = hdrs, .nheaders = 3,
                            .has_body = 1, .body_len = 5};
    fcgi_params p;
    fcgi_params_init(&p);
    ck_assert_int_eq(fcgi_params_add(&p, "PATH_INFO", "/override"), 0);
    ck_assert_int_eq(fcgi_params_add_http(&p, &rq), 0);
    param_is(&p, "PATH_INFO", "/override");
    param_is(&p, "QUERY_STRING", "since=1&x=%20");
    param_is(&p, "REQUEST_URI", "/lp/sub/a%20b?since=1&x=%20");
    param_is(&p, "SCRIPT_NAME", "/lp");
    param_is(&p, "CONTENT_TYPE", "text/plain");
    param_is(&p, "CONTENT_LENGTH", "5");
    param_is(&p, "HTTP_X_FOO_BAR", "baz");
    param_is(&p, "REQUEST_METHOD", "POST");
    ck_assert_ptr_null(fcgi_params_find(&p, "HTTP_CONTENT_LENGTH", NULL));
    ck_assert_ptr_null(fcgi_params_find(&p, "HTTP_CONTENT_TYPE", NULL));
    fcgi_params_free(&p);

    fcgi_http_request get = {.uri = "/x%2Fy"};
    fcgi_params_init(&p);
    ck_assert_int_eq(fcgi_params_add_http(&p, &get), 0);
    param_is(&p, "PATH_INFO", "/x/y");
    param_is(&p, "QUERY_STRING", "");
    param_is(&p, "REQUEST_METHOD", "GET");
    ck_assert_ptr_null(fcgi_params_find(&p, "CONTENT_LENGTH", NULL));
    fcgi_params_free(&p);
}
END_TEST

START_TEST(test_params_http_rejects_header_without_colon)
{
    static const char *const hdrs[] = {"NoColonHere"};
    fcgi_http_request rq = {.uri = "/", .headers = hdrs, .nheaders = 1};
    fcgi_params p;
    fcgi_params_init(&p);
    ck_assert_int_eq(fcgi_params_add_http(&p, &rq), -EINVAL);
    fcgi_params_free(&p);
}
END_TEST

/* ---- record parser ------------------------------------------------------ */

START_TEST(test_feed_whole_answer_in_one_piece)
{
    stream s;
    answer_build(&s);
    fcgi_conn *c = fcgi_conn_detached();
    ck_assert_int_eq(fcgi_conn_feed(c, s.b, s.n), FCGI_CONN_DONE);
    answer_check(c);
    fcgi_conn_free(c);
}
END_TEST

START_TEST(test_feed_one_byte_at_a_time)
{
    stream s;
    answer_build(&s);
    fcgi_conn *c = fcgi_conn_detached();
    ck_assert_int_eq(feed_pieces(c, &s, one_byte), FCGI_CONN_DONE);
    answer_check(c);
    fcgi_conn_free(c);
}
END_TEST

START_TEST(test_feed_split_at_every_offset)
{
    stream s;
    answer_build(&s);
    for (size_t cut = 1; cut <= s.n; cut++) { /* a 0-byte feed means EOF */
        fcgi_conn *c = fcgi_conn_detached();
        fcgi_conn_result r = fcgi_conn_feed(c, s.b, cut);
        ck_assert_int_eq(r, cut == s.n ? FCGI_CONN_DONE : FCGI_CONN_MORE);
        if (cut < s.n)
            ck_assert_int_eq(fcgi_conn_feed(c, s.b + cut, s.n - cut), FCGI_CONN_DONE);
        answer_check(c);
        fcgi_conn_free(c);
    }
}
END_TEST

START_TEST(test_feed_random_splits_and_trailing_bytes)
{
    stream s;
    answer_build(&s);
    memcpy(s.b + s.n, "trailing", 8); /* after END_REQUEST: ignored */
    s.n += 8;
    for (int round = 0; round < 200; round++) {
        fcgi_conn *c = fcgi_conn_detached();
        ck_assert_int_eq(feed_pieces(c, &s, random_size), FCGI_CONN_DONE);
        answer_check(c);
        fcgi_conn_free(c);
    }
}
END_TEST

START_TEST(test_feed_eof_before_end_request_is_an_error)
{
    stream s;
    answer_build(&s);
    fcgi_conn *c = fcgi_conn_detached();
    ck_assert_int_eq(fcgi_conn_feed(c, s.b, s.n - 3), FCGI_CONN_MORE);
    ck_assert_int_eq(fcgi_conn_feed(c, NULL, 0), FCGI_CONN_ERROR);
    ck_assert_int_eq(fcgi_conn_error(c), -ECONNABORTED);
    ck_assert_int_eq(fcgi_conn_done(c), 0);
    ck_assert_int_eq(fcgi_conn_feed(c, s.b + s.n - 3, 3), FCGI_CONN_ERROR); /* sticky */
    fcgi_conn_free(c);
}
END_TEST

START_TEST(test_feed_bad_version_is_a_protocol_error)
{
    stream s;
    answer_build(&s);
    s.b[0] = 2;
    fcgi_conn *c = fcgi_conn_detached();
    ck_assert_int_eq(fcgi_conn_feed(c, s.b, s.n), FCGI_CONN_ERROR);
    ck_assert_int_eq(fcgi_conn_error(c), -EPROTO);
    fcgi_conn_free(c);
}
END_TEST

START_TEST(test_feed_short_end_request_is_a_protocol_error)
{
    stream s = {.n = 0};
    rec_put(&s, FCGI_END_REQUEST, 1, "\0\0\0\0", 4, 0);
    fcgi_conn *c = fcgi_conn_detached();
    ck_assert_int_eq(fcgi_conn_feed(c, s.b, s.n), FCGI_CONN_ERROR);
    ck_assert_int_eq(fcgi_conn_error(c), -EPROTO);
    fcgi_conn_free(c);
}
END_TEST

/* Parse a STDOUT that is exactly out. */
static fcgi_conn *cgi_answer(const char *out)
{
    static const unsigned char end[8] = {0};
    stream s = {.n = 0};
    rec_put(&s, FCGI_STDOUT, 1, out, strlen(out), 0);
    rec_put(&s, FCGI_END_REQUEST, 1, end, 8, 0);
    fcgi_conn *c = fcgi_conn_detached();
    ck_assert_int_eq(fcgi_conn_feed(c, s.b, s.n), FCGI_CONN_DONE);
    return c;
}

START_TEST(test_cgi_status_defaults_and_line_endings)
{
    size_t n;
    fcgi_conn *c = cgi_answer("Content-Type: text/plain\n\nlf only");
    ck_assert_int_eq(fcgi_conn_status(c), 200);
    ck_assert_str_eq(fcgi_conn_body(c, &n), "lf only");
    fcgi_conn_free(c);
    c = cgi_answer("Location: /x\r\n\r\n");
    ck_assert_int_eq(fcgi_conn_status(c), 302);
    ck_assert_str_eq(fcgi_conn_body(c, &n), "");
    ck_assert_uint_eq(n, 0);
    fcgi_conn_free(c);
    c = cgi_answer("no header block at all");
    ck_assert_int_eq(fcgi_conn_status(c), 0);
    ck_assert_str_eq(fcgi_conn_body(c, &n), "no header block at all");
    fcgi_conn_free(c);
    c = cgi_answer("Status: 503\r\nRetry-After: 1\r\n\r\n{\"error\":\"full\"}\r\n\r\n");
    ck_assert_int_eq(fcgi_conn_status(c), 503);
    ck_assert_str_eq(fcgi_conn_header(c, "retry-after"), "1");
    ck_assert_str_eq(fcgi_conn_body(c, &n), "{\"error\":\"full\"}\r\n\r\n");
    fcgi_conn_free(c);
}
END_TEST

/* ---- addresses ---------------------------------------------------------- */

START_TEST(test_addr_parse_forms_and_locality)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ck_assert_int_eq(fcgi_addr_parse("unix:/tmp/x.sock", &ss, &len), 0);
    ck_assert_int_eq(ss.ss_family, AF_UNIX);
    ck_assert_str_eq(((struct sockaddr_un *)&ss)->sun_path, "/tmp/x.sock");
    ck_assert_int_eq(fcgi_addr_parse("/tmp/x.sock", &ss, &len), 0);
    ck_assert_int_eq(fcgi_addr_parse("127.0.0.1:9000", &ss, &len), 0);
    ck_assert_int_eq(ss.ss_family, AF_INET);
    ck_assert_int_eq(fcgi_addr_is_local(&ss), 1);
    ck_assert_int_eq(fcgi_addr_parse(":9000", &ss, &len), 0);
    ck_assert_int_eq(fcgi_addr_is_local(&ss), 1);
    ck_assert_int_eq(fcgi_addr_parse("localhost:1", &ss, &len), 0);
    ck_assert_int_eq(fcgi_addr_parse("[::1]:9", &ss, &len), 0);
    ck_assert_int_eq(ss.ss_family, AF_INET6);
    ck_assert_int_eq(fcgi_addr_is_local(&ss), 1);
    ck_assert_int_eq(fcgi_addr_parse("10.1.2.3:80", &ss, &len), 0);
    ck_assert_int_eq(fcgi_addr_is_local(&ss), 0);
    ck_assert_int_eq(fcgi_addr_parse("127.0.0.1", &ss, &len), -EINVAL);
    ck_assert_int_eq(fcgi_addr_parse("127.0.0.1:0", &ss, &len), -EINVAL);
    ck_assert_int_eq(fcgi_addr_parse("127.0.0.1:70000", &ss, &len), -EINVAL);
    ck_assert_int_eq(fcgi_addr_parse("example.org:80", &ss, &len), -EINVAL);
    ck_assert_int_eq(fcgi_addr_parse("unix:", &ss, &len), -EINVAL);
}
END_TEST

/* ---- round trip over a unix socket ---------------------------------------- */

typedef struct {
    unsigned char *b;
    size_t n, cap;
} grow_buf;

static void gb_put(grow_buf *g, const void *s, size_t n)
{
    if (g->n + n > g->cap) {
        g->cap = (g->n + n) * 2;
        g->b = realloc(g->b, g->cap);
        ck_assert_ptr_nonnull(g->b);
    }
    memcpy(g->b + g->n, s, n);
    g->n += n;
}

/* Split the request bytes into streams, checking record framing. */
static void request_decode(const grow_buf *in, grow_buf *params, grow_buf *body, int *ends)
{
    size_t off = 0;
    int saw_begin = 0;
    while (off + 8 <= in->n) {
        const unsigned char *h = in->b + off;
        size_t clen = ((size_t)h[4] << 8) | h[5];
        ck_assert_int_eq(h[0], 1);
        ck_assert_int_eq((h[2] << 8) | h[3], 1);
        ck_assert_uint_le(off + 8 + clen + h[6], in->n);
        if (h[1] == FCGI_BEGIN_REQUEST) {
            ck_assert_uint_eq(clen, 8);
            ck_assert_int_eq((h[8] << 8) | h[9], FCGI_RESPONDER);
            ck_assert_int_eq(h[10], 0); /* flags: no keep-conn */
            saw_begin = 1;
        } else if (h[1] == FCGI_PARAMS || h[1] == FCGI_STDIN) {
            ck_assert(saw_begin);
            if (clen == 0)
                (*ends)++;
            gb_put(h[1] == FCGI_PARAMS ? params : body, h + 8, clen);
        } else {
            ck_abort_msg("unexpected record type %d", h[1]);
        }
        off += 8 + clen + h[6];
    }
    ck_assert_uint_eq(off, in->n);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    return fd;
}

/* Read the whole request from peer while the client flushes: until the
 * client has nothing left to write and the socket stays quiet. */
static void request_read(fcgi_conn *c, int peer, grow_buf *in)
{
    unsigned char buf[65536];
    for (int i = 0; i < 10000; i++) {
        fcgi_conn_flush(c);
        struct pollfd p = {.fd = peer, .events = POLLIN};
        if (poll(&p, 1, 10) <= 0) {
            if (!fcgi_conn_want_write(c))
                return;
            continue;
        }
        ssize_t n = read(peer, buf, sizeof buf);
        ck_assert_int_gt(n, 0);
        gb_put(in, buf, (size_t)n);
    }
    ck_abort_msg("request never finished");
}

START_TEST(test_round_trip_over_unix_socket)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/check-fcgiclient-%d.sock", (int)getpid());
    int lfd = listen_unix(path);
    size_t blen = 200000;
    char *body = malloc(blen), bigval[70000];
    for (size_t i = 0; i < blen; i++)
        body[i] = (char)(i * 7);
    memset(bigval, 'x', sizeof bigval - 1);
    bigval[sizeof bigval - 1] = '\0';
    fcgi_params p;
    fcgi_params_init(&p);
    fcgi_params_add(&p, "HTTP_BIG", bigval); /* PARAMS over more than one record */
    fcgi_params_add(&p, "PATH_INFO", "/pub/x");
    char addr[80];
    snprintf(addr, sizeof addr, "unix:%s", path);
    fcgi_conn *c = NULL;
    ck_assert_int_eq(fcgi_conn_start(&c, addr, &p, body, blen), 0);
    int peer = accept(lfd, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    grow_buf in = {0}, params = {0}, stdin_ = {0};
    request_read(c, peer, &in);
    int ends = 0;
    request_decode(&in, &params, &stdin_, &ends);
    ck_assert_int_eq(ends, 2);
    ck_assert_uint_eq(params.n, p.len);
    ck_assert_mem_eq(params.b, p.buf, p.len);
    ck_assert_uint_eq(stdin_.n, blen);
    ck_assert_mem_eq(stdin_.b, body, blen);

    stream s;
    answer_build(&s);
    ck_assert_int_eq(write(peer, s.b, s.n), (ssize_t)s.n);
    close(peer);
    fcgi_conn_result r = FCGI_CONN_MORE;
    for (int i = 0; i < 1000 && r == FCGI_CONN_MORE; i++) {
        struct pollfd pf = {.fd = fcgi_conn_fd(c), .events = POLLIN};
        poll(&pf, 1, 10);
        r = fcgi_conn_pump(c);
    }
    ck_assert_int_eq(r, FCGI_CONN_DONE);
    answer_check(c);
    fcgi_conn_free(c);
    fcgi_params_free(&p);
    free(in.b);
    free(params.b);
    free(stdin_.b);
    free(body);
    close(lfd);
    unlink(path);
}
END_TEST

START_TEST(test_call_reports_refused_and_timeout)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/check-fcgiclient-t%d.sock", (int)getpid());
    fcgi_params p;
    fcgi_params_init(&p);
    fcgi_conn *c = NULL;
    unlink(path);
    char addr[80];
    snprintf(addr, sizeof addr, "unix:%s", path);
    ck_assert_int_eq(fcgi_call(&c, addr, &p, NULL, 0, 1000), -ENOENT);
    ck_assert_ptr_null(c);
    int lfd = listen_unix(path); /* accepts (backlog) but never answers */
    ck_assert_int_eq(fcgi_call(&c, addr, &p, NULL, 0, 100), -ETIMEDOUT);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(fcgi_conn_error(c), -ETIMEDOUT);
    fcgi_conn_free(c);
    close(lfd);
    unlink(path);
    fcgi_params_free(&p);
}
END_TEST

Suite *fcgiclient_suite(void)
{
    Suite *s = suite_create("fcgiclient");
    TCase *tc = tcase_create("params");
    tcase_add_test(tc, test_params_encode_short_and_long_lengths);
    tcase_add_test(tc, test_params_http_maps_uri_headers_and_body);
    tcase_add_test(tc, test_params_http_rejects_header_without_colon);
    suite_add_tcase(s, tc);
    tc = tcase_create("parser");
    tcase_add_test(tc, test_feed_whole_answer_in_one_piece);
    tcase_add_test(tc, test_feed_one_byte_at_a_time);
    tcase_add_test(tc, test_feed_split_at_every_offset);
    tcase_add_test(tc, test_feed_random_splits_and_trailing_bytes);
    tcase_add_test(tc, test_feed_eof_before_end_request_is_an_error);
    tcase_add_test(tc, test_feed_bad_version_is_a_protocol_error);
    tcase_add_test(tc, test_feed_short_end_request_is_a_protocol_error);
    tcase_add_test(tc, test_cgi_status_defaults_and_line_endings);
    suite_add_tcase(s, tc);
    tc = tcase_create("net");
    tcase_add_test(tc, test_addr_parse_forms_and_locality);
    tcase_add_test(tc, test_round_trip_over_unix_socket);
    tcase_add_test(tc, test_call_reports_refused_and_timeout);
    suite_add_tcase(s, tc);
    return s;
}
