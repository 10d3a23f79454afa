/* check_fcgi_proto.c -- the FastCGI record reader and writer: a whole
 * request in any split, every limit, every protocol error.
 *
 * Requests are built here byte by byte (rec, pair), independently of the
 * code under test, and fed through drive(), which hands the reader one
 * piece at a time and records what it said.  A piece that the reader
 * does not take whole must end in an event (PARAMS, DONE, ABORT, ERROR):
 * drive() checks that on every call. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_suites.h"
#include "fcgi_proto.h"

enum {
    T_BEGIN = 1,
    T_ABORT = 2,
    T_END = 3,
    T_PARAMS = 4,
    T_STDIN = 5,
    T_STDOUT = 6,
    T_GET_VALUES = 9,
    T_GET_VALUES_RESULT = 10,
    T_UNKNOWN_TYPE = 11
};

/* ---- building requests ------------------------------------------------- */

/* Append one record with `pad` bytes of (non-zero) padding to b. */
static void rec_pad(buf *b, int type, uint16_t id, const void *data, size_t len, size_t pad) {
    unsigned char h[8] = {1, (unsigned char)type, (unsigned char)(id >> 8), (unsigned char)id,
                          (unsigned char)(len >> 8), (unsigned char)len, (unsigned char)pad, 0};
    buf_put(b, h, 8);
    buf_put(b, data, len);
    for (size_t i = 0; i < pad; i++)
        buf_putc(b, (char)(0xA5 ^ i));
}

static void rec(buf *b, int type, uint16_t id, const void *data, size_t len) {
    rec_pad(b, type, id, data, len, 0);
}

/* A stream's content in records of at most `chunk` bytes, then its end. */
static void stream(buf *b, int type, uint16_t id, const void *data, size_t len, size_t chunk) {
    for (size_t off = 0; off < len; off += chunk)
        rec(b, type, id, (const char *)data + off, len - off < chunk ? len - off : chunk);
    rec(b, type, id, NULL, 0);
}

/* A name-value length: 1 byte below 128 unless `wide`, else 4. */
static void nvlen(buf *b, size_t n, int wide) {
    if (n < 128 && !wide) {
        buf_putc(b, (char)n);
        return;
    }
    unsigned char l[4] = {(unsigned char)(0x80 | n >> 24), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n};
    buf_put(b, l, 4);
}

static void pair_n(buf *b, const char *n, size_t nl, const char *v, size_t vl, int wide) {
    nvlen(b, nl, wide);
    nvlen(b, vl, wide);
    buf_put(b, n, nl);
    buf_put(b, v, vl);
}

static void pair(buf *b, const char *n, const char *v) {
    pair_n(b, n, strlen(n), v, strlen(v), 0);
}

static void begin(buf *b, uint16_t id, int role, int flags) {
    unsigned char body[8] = {(unsigned char)(role >> 8), (unsigned char)role,
                             (unsigned char)flags, 0, 0, 0, 0, 0};
    rec(b, T_BEGIN, id, body, 8);
}

/* A whole request: BEGIN, params (encoded pairs) and body in records of
 * at most `chunk` bytes. */
static void request(buf *b, uint16_t id, const buf *params, const char *body, size_t blen,
                    size_t chunk) {
    begin(b, id, 1, 0);
    stream(b, T_PARAMS, id, params->p, params->len, chunk);
    stream(b, T_STDIN, id, body, blen, chunk);
}

/* The GET the tests start from: two params, no body. */
static void simple_params(buf *pp) {
    pair(pp, "REQUEST_METHOD", "GET");
    pair(pp, "PATH_INFO", "/sub/news");
}

static void simple_request(buf *b, uint16_t id) {
    buf pp;
    buf_init(&pp);
    simple_params(&pp);
    request(b, id, &pp, NULL, 0, 65535);
    buf_free(&pp);
}

/* ---- driving the reader ------------------------------------------------ */

typedef struct {
    int params;          /* PARAMS events */
    size_t params_at;    /* bytes consumed when PARAMS came */
    fcgi_proto_event end; /* DONE, ABORT, ERROR, or MORE if input ran out */
    size_t used;         /* bytes consumed in all */
    size_t calls;
} drive_result;

/* Feed data[0..len) in pieces: piece i is cuts[i] bytes (cycling through
 * cuts), stopping at the first DONE, ABORT or ERROR. */
static drive_result drive(fcgi_proto *p, const buf *in, const size_t *cuts, size_t ncuts) {
    drive_result r = {.end = FCGI_PROTO_MORE};
    const unsigned char *d = (const unsigned char *)in->p;
    size_t off = 0;
    for (size_t i = 0; off < in->len; i++) {
        size_t piece = cuts[i % ncuts];
        if (piece > in->len - off)
            piece = in->len - off;
        size_t got = 0;
        while (got < piece) {
            size_t used = 99999999;
            fcgi_proto_event ev = fcgi_proto_feed(p, d + off + got, piece - got, &used);
            r.calls++;
            ck_assert_uint_le(used, piece - got);
            if (ev == FCGI_PROTO_MORE)
                ck_assert_uint_eq(used, piece - got);
            got += used;
            if (ev == FCGI_PROTO_PARAMS) {
                r.params++;
                r.params_at = off + got;
            } else if (ev != FCGI_PROTO_MORE) {
                r.end = ev;
                r.used = off + got;
                return r;
            }
        }
        off += piece;
    }
    r.used = off;
    return r;
}

static drive_result drive_whole(fcgi_proto *p, const buf *in) {
    size_t all = in->len ? in->len : 1;
    return drive(p, in, &all, 1);
}

/* Check the simple GET's outcome. */
static void assert_simple(const fcgi_proto *p, const drive_result *r, size_t len, uint16_t id) {
    ck_assert_int_eq(r->end, FCGI_PROTO_DONE);
    ck_assert_int_eq(r->params, 1);
    ck_assert_uint_eq(r->used, len);
    ck_assert_uint_eq(p->reqid, id);
    ck_assert_uint_eq(p->nenv, 2);
    ck_assert_str_eq(p->envp[0], "REQUEST_METHOD=GET");
    ck_assert_str_eq(p->envp[1], "PATH_INFO=/sub/news");
    ck_assert_ptr_null(p->envp[2]);
    ck_assert_uint_eq(p->body.len, 0);
    ck_assert_uint_eq(p->stdin_len, 0);
    ck_assert(!p->params_over && !p->body_over && !p->keep_conn);
    ck_assert_uint_eq(p->reply.len, 0);
}

/* ---- reading records back ---------------------------------------------- */

typedef struct {
    int type;
    uint16_t id;
    const unsigned char *content;
    size_t len, pad;
} record;

/* Split b into records; the number found, or -1 if b does not end on a
 * record boundary or a record is not version 1. */
static int records(const buf *b, record *out, int max) {
    const unsigned char *s = (const unsigned char *)b->p;
    size_t off = 0;
    int n = 0;
    while (off < b->len) {
        if (b->len - off < 8 || s[off] != 1 || n == max)
            return -1;
        record r = {.type = s[off + 1],
                    .id = (uint16_t)(s[off + 2] << 8 | s[off + 3]),
                    .content = s + off + 8,
                    .len = (size_t)(s[off + 4] << 8 | s[off + 5]),
                    .pad = s[off + 6]};
        if (b->len - off - 8 < r.len + r.pad)
            return -1;
        out[n++] = r;
        off += 8 + r.len + r.pad;
    }
    return n;
}

/* The value of `name` among a GET_VALUES_RESULT's pairs (1-byte lengths:
 * the names and values are short), or NULL; the record must hold whole
 * pairs and nothing else. */
static const char *value_of(const record *r, const char *name) {
    static char val[64];
    const char *found = NULL;
    size_t off = 0, want = strlen(name);
    while (off < r->len) {
        ck_assert_uint_le(off + 2, r->len);
        size_t nl = r->content[off], vl = r->content[off + 1];
        ck_assert(nl < 128 && vl < sizeof val);
        ck_assert_uint_le(off + 2 + nl + vl, r->len);
        if (nl == want && memcmp(r->content + off + 2, name, nl) == 0) {
            ck_assert_ptr_null(found); /* each name once */
            memcpy(val, r->content + off + 2 + nl, vl);
            val[vl] = '\0';
            found = val;
        }
        off += 2 + nl + vl;
    }
    return found;
}

/* An END_REQUEST record's protocol status. */
static int end_status(const record *r) {
    ck_assert_int_eq(r->type, T_END);
    ck_assert_uint_eq(r->len, 8);
    return r->content[4];
}

/* ---- splits ------------------------------------------------------------ */

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

/* A POST whose params and body span several records each. */
static void post_request(buf *b, const char *body, size_t blen, size_t chunk) {
    buf pp;
    buf_init(&pp);
    pair(&pp, "REQUEST_METHOD", "POST");
    pair(&pp, "PATH_INFO", "/pub/news");
    pair(&pp, "CONTENT_LENGTH", "300");
    pair(&pp, "HTTP_X_FILL", "0123456789012345678901234567890123456789");
    request(b, 0x1234, &pp, body, blen, chunk);
    buf_free(&pp);
}

static void assert_post(const fcgi_proto *p, const drive_result *r, const buf *in,
                        const char *body) {
    ck_assert_int_eq(r->end, FCGI_PROTO_DONE);
    ck_assert_int_eq(r->params, 1);
    ck_assert_uint_eq(r->used, in->len);
    ck_assert_uint_eq(p->reqid, 0x1234);
    ck_assert_uint_eq(p->nenv, 4);
    ck_assert_str_eq(p->envp[2], "CONTENT_LENGTH=300");
    ck_assert_uint_eq(p->stdin_len, 300);
    ck_assert_uint_eq(p->body.len, 300);
    ck_assert(memcmp(p->body.p, body, 300) == 0);
    ck_assert(!p->body_over && !p->params_over);
}

START_TEST(test_post_in_small_records_same_result_for_every_two_way_split)
{
    char body[300];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)('a' + i % 26);
    buf b;
    buf_init(&b);
    post_request(&b, body, sizeof body, 7); /* records of 7 bytes: many boundaries */
    for (size_t k = 0; k <= b.len; k++) {
        size_t cuts[2] = {k ? k : 1, b.len};
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = k ? drive(&p, &b, cuts, 2) : drive_whole(&p, &b);
        assert_post(&p, &r, &b, body);
        fcgi_proto_free(&p);
    }
    buf_free(&b);
}
END_TEST

START_TEST(test_post_same_result_in_pieces_of_every_size_up_to_64)
{
    char body[300];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)i;
    buf b;
    buf_init(&b);
    post_request(&b, body, sizeof body, 100);
    for (size_t piece = 1; piece <= 64; piece++) {
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = drive(&p, &b, &piece, 1);
        assert_post(&p, &r, &b, body);
        fcgi_proto_free(&p);
    }
    buf_free(&b);
}
END_TEST

START_TEST(test_record_by_record_params_at_empty_params_done_at_empty_stdin)
{
    buf b;
    buf_init(&b);
    simple_request(&b, 3);
    /* BEGIN, the PARAMS record, the empty PARAMS, the empty STDIN */
    size_t cuts[] = {16, b.len - 32, 8, 8};
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    const unsigned char *d = (const unsigned char *)b.p;
    fcgi_proto_event want[] = {FCGI_PROTO_MORE, FCGI_PROTO_MORE, FCGI_PROTO_PARAMS,
                               FCGI_PROTO_DONE};
    size_t off = 0;
    for (size_t i = 0; i < 4; i++) {
        size_t used;
        ck_assert_int_eq(fcgi_proto_feed(&p, d + off, cuts[i], &used), want[i]);
        ck_assert_uint_eq(used, cuts[i]);
        off += used;
    }
    drive_result r = {.params = 1, .end = FCGI_PROTO_DONE, .used = off};
    assert_simple(&p, &r, b.len, 3);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_all_at_once_stops_at_params_then_takes_the_rest)
{
    buf b;
    buf_init(&b);
    simple_request(&b, 1);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    size_t used;
    ck_assert_int_eq(fcgi_proto_feed(&p, (unsigned char *)b.p, b.len, &used), FCGI_PROTO_PARAMS);
    ck_assert_uint_eq(used, b.len - 8); /* all but the empty STDIN */
    ck_assert_uint_eq(p.nenv, 2);
    size_t used2;
    ck_assert_int_eq(fcgi_proto_feed(&p, (unsigned char *)b.p + used, b.len - used, &used2),
                     FCGI_PROTO_DONE);
    ck_assert_uint_eq(used + used2, b.len);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_keep_conn_flag_is_reported)
{
    buf b, pp;
    buf_init(&b);
    buf_init(&pp);
    simple_params(&pp);
    begin(&b, 5, 1, 1);
    stream(&b, T_PARAMS, 5, pp.p, pp.len, 65535);
    stream(&b, T_STDIN, 5, NULL, 0, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_int_eq(p.keep_conn, 1);
    fcgi_proto_free(&p);
    buf_free(&b);
    buf_free(&pp);
}
END_TEST

/* ---- encoding details --------------------------------------------------- */

START_TEST(test_four_byte_lengths_long_names_and_values_across_records)
{
    size_t nl = 300, vl = 70000; /* the value alone spans two records */
    char *name = malloc(nl), *val = malloc(vl);
    memset(name, 'N', nl);
    for (size_t i = 0; i < vl; i++)
        val[i] = (char)('a' + i % 26);
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    pair_n(&pp, name, nl, val, vl, 0);
    pair_n(&pp, "SHORT", 5, "wide", 4, 1); /* small lengths in the 4-byte form */
    pair(&pp, "LAST", "x");
    request(&b, 2, &pp, NULL, 0, 65535);
    size_t cuts[] = {1, 4093, 3, 65536};
    fcgi_proto p;
    fcgi_proto_init(&p, 1 << 20, 1024);
    drive_result r = drive(&p, &b, cuts, 4);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_uint_eq(p.nenv, 3);
    ck_assert_uint_eq(strlen(p.envp[0]), nl + 1 + vl);
    ck_assert(memcmp(p.envp[0], name, nl) == 0 && p.envp[0][nl] == '=');
    ck_assert(memcmp(p.envp[0] + nl + 1, val, vl) == 0);
    ck_assert_str_eq(p.envp[1], "SHORT=wide");
    ck_assert_str_eq(p.envp[2], "LAST=x");
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
    free(name);
    free(val);
}
END_TEST

START_TEST(test_padding_is_skipped_in_every_split)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    unsigned char body[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    rec_pad(&b, T_BEGIN, 9, body, 8, 255);
    rec_pad(&b, T_PARAMS, 9, pp.p, 10, 3);
    rec_pad(&b, T_PARAMS, 9, pp.p + 10, pp.len - 10, 7);
    rec_pad(&b, T_PARAMS, 9, NULL, 0, 5);
    rec_pad(&b, T_STDIN, 9, "body", 4, 4);
    rec_pad(&b, T_STDIN, 9, NULL, 0, 1);
    for (size_t piece = 1; piece <= b.len; piece += piece < 20 ? 1 : 37) {
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = drive(&p, &b, &piece, 1);
        ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
        ck_assert_uint_eq(r.used, b.len);
        ck_assert_uint_eq(p.nenv, 2);
        ck_assert_str_eq(p.envp[1], "PATH_INFO=/sub/news");
        ck_assert_uint_eq(p.body.len, 4);
        ck_assert(memcmp(p.body.p, "body", 4) == 0);
        fcgi_proto_free(&p);
    }
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_names_with_equals_nul_or_empty_are_dropped)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    pair(&pp, "PATH_INFO=/admin", "x");  /* would pose as PATH_INFO */
    pair_n(&pp, "A\0B", 3, "y", 1, 0);
    pair_n(&pp, "", 0, "empty name", 10, 0);
    pair(&pp, "PATH_INFO", "/sub/a=b");  /* '=' in a value is fine */
    pair(&pp, "EMPTY", "");
    request(&b, 1, &pp, NULL, 0, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_uint_eq(p.nenv, 2);
    ck_assert_str_eq(p.envp[0], "PATH_INFO=/sub/a=b");
    ck_assert_str_eq(p.envp[1], "EMPTY=");
    ck_assert_ptr_null(p.envp[2]);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_records_of_other_ids_are_ignored)
{
    buf pp, junk, b;
    buf_init(&pp);
    buf_init(&junk);
    buf_init(&b);
    simple_params(&pp);
    pair(&junk, "PATH_INFO", "/other");
    stream(&b, T_PARAMS, 8, junk.p, junk.len, 65535); /* before any BEGIN */
    begin(&b, 4, 1, 0);
    rec(&b, T_PARAMS, 4, pp.p, pp.len);
    stream(&b, T_PARAMS, 8, junk.p, junk.len, 65535); /* in the middle */
    rec(&b, T_STDIN, 8, "xx", 2);
    rec(&b, T_ABORT, 8, NULL, 0);
    rec(&b, T_PARAMS, 4, NULL, 0);
    rec(&b, T_STDOUT, 4, "odd", 3); /* a type a responder never receives */
    rec(&b, T_STDIN, 4, NULL, 0);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_uint_eq(r.used, b.len);
    ck_assert_uint_eq(p.reqid, 4);
    ck_assert_uint_eq(p.nenv, 2);
    ck_assert_str_eq(p.envp[1], "PATH_INFO=/sub/news");
    ck_assert_uint_eq(p.stdin_len, 0);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&junk);
    buf_free(&b);
}
END_TEST

/* ---- limits -------------------------------------------------------------- */

START_TEST(test_params_over_max_params_read_through_to_done)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    char big[200];
    memset(big, 'v', sizeof big);
    pair_n(&pp, "HTTP_COOKIE", 11, big, sizeof big, 0);
    request(&b, 1, &pp, "abc", 3, 16);
    size_t one = 1;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fcgi_proto p;
        fcgi_proto_init(&p, 100, 1024);
        drive_result r = bytewise ? drive(&p, &b, &one, 1) : drive_whole(&p, &b);
        ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
        ck_assert_int_eq(r.params, 1);
        ck_assert_uint_eq(r.used, b.len);
        ck_assert_int_eq(p.params_over, 1);
        ck_assert_uint_eq(p.nenv, 0);
        ck_assert_ptr_nonnull(p.envp);
        ck_assert_ptr_null(p.envp[0]);
        ck_assert_uint_eq(p.body.len, 3);
        ck_assert_uint_eq(p.stdin_len, 3);
        fcgi_proto_free(&p);
    }
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_params_of_exactly_max_params_bytes_are_kept)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    request(&b, 1, &pp, NULL, 0, 10);
    fcgi_proto p;
    fcgi_proto_init(&p, pp.len, 1024);
    drive_result r = drive_whole(&p, &b);
    assert_simple(&p, &r, b.len, 1);
    fcgi_proto_free(&p);
    fcgi_proto_init(&p, pp.len - 1, 1024);
    r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert(p.params_over && p.nenv == 0);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

/* n pairs "Pi=i" (numbered), as one request. */
static void many_pairs_request(buf *b, size_t n) {
    buf pp;
    buf_init(&pp);
    for (size_t i = 0; i < n; i++) {
        char name[32], val[32];
        snprintf(name, sizeof name, "P%zu", i);
        snprintf(val, sizeof val, "%zu", i);
        pair(&pp, name, val);
    }
    request(b, 1, &pp, NULL, 0, 65535);
    buf_free(&pp);
}

START_TEST(test_max_params_pairs_kept_one_more_is_params_over)
{
    buf b;
    buf_init(&b);
    many_pairs_request(&b, FCGI_PROTO_MAX_PARAMS);
    fcgi_proto p;
    fcgi_proto_init(&p, 1 << 20, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert(!p.params_over);
    ck_assert_uint_eq(p.nenv, FCGI_PROTO_MAX_PARAMS);
    for (size_t i = 0; i < p.nenv; i++) {
        char want[64];
        snprintf(want, sizeof want, "P%zu=%zu", i, i);
        ck_assert_str_eq(p.envp[i], want);
    }
    ck_assert_ptr_null(p.envp[FCGI_PROTO_MAX_PARAMS]);
    fcgi_proto_free(&p);

    buf_reset(&b);
    many_pairs_request(&b, FCGI_PROTO_MAX_PARAMS + 1);
    fcgi_proto_init(&p, 1 << 20, 1024);
    r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_uint_eq(r.used, b.len);
    ck_assert(p.params_over);
    ck_assert_uint_eq(p.nenv, 0);
    ck_assert_ptr_null(p.envp[0]);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_body_over_max_body_keeps_max_body_and_counts_all)
{
    char body[25];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)('A' + i);
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    request(&b, 1, &pp, body, sizeof body, 8); /* 4 STDIN records */
    size_t one = 1;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 10);
        drive_result r = bytewise ? drive(&p, &b, &one, 1) : drive_whole(&p, &b);
        ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
        ck_assert_uint_eq(r.used, b.len);
        ck_assert_int_eq(p.body_over, 1);
        ck_assert_uint_eq(p.stdin_len, 25);
        ck_assert_uint_eq(p.body.len, 10);
        ck_assert(memcmp(p.body.p, body, 10) == 0);
        ck_assert_uint_eq(p.nenv, 2); /* the params are still there for the answer */
        fcgi_proto_free(&p);
    }
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 25); /* exactly max_body: not over */
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert(!p.body_over);
    ck_assert_uint_eq(p.body.len, 25);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_four_mib_body_costs_only_max_body)
{
    size_t big = 4u << 20;
    char *body = malloc(big);
    memset(body, 'z', big);
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    request(&b, 1, &pp, body, big, 65535);
    size_t piece = 8192;
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 65536);
    drive_result r = drive(&p, &b, &piece, 1);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_uint_eq(r.used, b.len);
    ck_assert(p.body_over);
    ck_assert_uint_eq(p.stdin_len, big);
    ck_assert_uint_eq(p.body.len, 65536);
    ck_assert_uint_le(p.body.cap, 2 * 65536 + 1);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
    free(body);
}
END_TEST

/* ---- management records ------------------------------------------------- */

START_TEST(test_get_values_answered_with_mpxs_conns_0)
{
    buf q, b, pp;
    buf_init(&q);
    buf_init(&b);
    buf_init(&pp);
    pair(&q, "FCGI_MPXS_CONNS", "");
    pair(&q, "FCGI_UNKNOWN_THING", "");
    pair(&q, "FCGI_MAX_CONNS", "");
    rec_pad(&b, T_GET_VALUES, 0, q.p, q.len, 3);
    size_t before = b.len;
    simple_params(&pp);
    request(&b, 1, &pp, NULL, 0, 65535);
    size_t one = 1;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = bytewise ? drive(&p, &b, &one, 1) : drive_whole(&p, &b);
        ck_assert_int_eq(r.end, FCGI_PROTO_DONE); /* the request after it is served */
        ck_assert_uint_eq(p.nenv, 2);
        record out[4];
        ck_assert_int_eq(records(&p.reply, out, 4), 1);
        ck_assert_int_eq(out[0].type, T_GET_VALUES_RESULT);
        ck_assert_uint_eq(out[0].id, 0);
        /* the two known names, each with its value; not the unknown one */
        ck_assert_str_eq(value_of(&out[0], "FCGI_MPXS_CONNS"), "0");
        const char *conns = value_of(&out[0], "FCGI_MAX_CONNS");
        ck_assert(conns[0] >= '1' && conns[0] <= '9');
        ck_assert_ptr_null(value_of(&out[0], "FCGI_UNKNOWN_THING"));
        ck_assert_ptr_null(value_of(&out[0], "FCGI_MAX_REQS")); /* not asked */
        fcgi_proto_free(&p);
    }
    /* alone, before any BEGIN: consumed whole, nothing else happens */
    buf_reset(&pp);
    buf_put(&pp, b.p, before);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &pp);
    ck_assert_int_eq(r.end, FCGI_PROTO_MORE);
    ck_assert_uint_eq(r.used, before);
    ck_assert(!p.begun);
    ck_assert_uint_gt(p.reply.len, 0);
    fcgi_proto_free(&p);
    buf_free(&q);
    buf_free(&b);
    buf_free(&pp);
}
END_TEST

START_TEST(test_get_values_between_params_and_stdin_is_answered_too)
{
    buf q, pp, b;
    buf_init(&q);
    buf_init(&pp);
    buf_init(&b);
    pair(&q, "FCGI_MPXS_CONNS", "");
    simple_params(&pp);
    begin(&b, 1, 1, 0);
    stream(&b, T_PARAMS, 1, pp.p, pp.len, 65535);
    rec(&b, T_GET_VALUES, 0, q.p, q.len);
    stream(&b, T_STDIN, 1, NULL, 0, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    record out[4];
    ck_assert_int_eq(records(&p.reply, out, 4), 1);
    ck_assert_int_eq(out[0].type, T_GET_VALUES_RESULT);
    ck_assert_str_eq(value_of(&out[0], "FCGI_MPXS_CONNS"), "0");
    fcgi_proto_free(&p);
    buf_free(&q);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_malformed_get_values_is_an_error)
{
    buf b;
    buf_init(&b);
    rec(&b, T_GET_VALUES, 0, "\x0f\x00" "FCGI", 6); /* name runs past the record */
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    ck_assert_ptr_nonnull(p.error);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_unknown_management_type_gets_unknown_type)
{
    buf b;
    buf_init(&b);
    rec(&b, 42, 0, "whatever", 8);
    simple_request(&b, 1);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    record out[4];
    ck_assert_int_eq(records(&p.reply, out, 4), 1);
    ck_assert_int_eq(out[0].type, T_UNKNOWN_TYPE);
    ck_assert_uint_eq(out[0].id, 0);
    ck_assert_uint_eq(out[0].len, 8);
    ck_assert_int_eq(out[0].content[0], 42);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

/* ---- protocol errors and refusals ------------------------------------------ */

START_TEST(test_second_begin_for_another_id_gets_cant_mpx_conn)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    begin(&b, 1, 1, 0);
    rec(&b, T_PARAMS, 1, pp.p, pp.len);
    begin(&b, 2, 1, 0);
    stream(&b, T_PARAMS, 2, "\x01\x01XY", 4, 65535);
    rec(&b, T_PARAMS, 1, NULL, 0);
    stream(&b, T_STDIN, 2, "other", 5, 65535);
    stream(&b, T_STDIN, 1, "mine", 4, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    ck_assert_uint_eq(r.used, b.len);
    ck_assert_uint_eq(p.reqid, 1);
    ck_assert_uint_eq(p.nenv, 2);
    ck_assert(p.body.len == 4 && memcmp(p.body.p, "mine", 4) == 0);
    record out[4];
    ck_assert_int_eq(records(&p.reply, out, 4), 1);
    ck_assert_uint_eq(out[0].id, 2);
    ck_assert_int_eq(end_status(&out[0]), 1); /* FCGI_CANT_MPX_CONN */
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_second_begin_for_the_same_id_is_an_error)
{
    buf b;
    buf_init(&b);
    begin(&b, 1, 1, 0);
    begin(&b, 1, 1, 0);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    ck_assert_ptr_nonnull(p.error);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_short_begin_is_an_error)
{
    buf b;
    buf_init(&b);
    rec(&b, T_BEGIN, 1, "\x00\x01\x00", 3);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    ck_assert_int_eq(drive_whole(&p, &b).end, FCGI_PROTO_ERROR);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_wrong_version_is_an_error_at_its_header)
{
    buf b;
    buf_init(&b);
    simple_request(&b, 1);
    size_t good = b.len - 8; /* the empty STDIN becomes version 2 */
    b.p[good] = 2;
    size_t one = 1;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = bytewise ? drive(&p, &b, &one, 1) : drive_whole(&p, &b);
        ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
        ck_assert_int_eq(r.params, 1);
        ck_assert_uint_le(r.used, b.len);
        ck_assert_uint_gt(r.used, good);
        ck_assert_ptr_nonnull(p.error);
        fcgi_proto_free(&p);
    }
    /* an HTTP request sent to the FastCGI socket by mistake */
    buf_reset(&b);
    buf_puts(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    ck_assert_uint_le(r.used, 8);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_stdin_before_end_of_params_is_an_error)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    begin(&b, 1, 1, 0);
    rec(&b, T_PARAMS, 1, pp.p, pp.len);
    rec(&b, T_STDIN, 1, "x", 1);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    ck_assert_int_eq(r.params, 0);
    ck_assert_ptr_nonnull(p.error);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_params_record_after_end_of_params_is_an_error)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    begin(&b, 1, 1, 0);
    stream(&b, T_PARAMS, 1, pp.p, pp.len, 65535);
    stream(&b, T_PARAMS, 1, pp.p, pp.len, 65535);
    stream(&b, T_STDIN, 1, NULL, 0, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.params, 1);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

/* A request whose params stream is `pp` verbatim: the error is at its end. */
static void assert_params_error(const buf *pp) {
    buf b;
    buf_init(&b);
    request(&b, 1, pp, NULL, 0, 65535);
    size_t one = 1;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fcgi_proto p;
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = bytewise ? drive(&p, &b, &one, 1) : drive_whole(&p, &b);
        ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
        ck_assert_int_eq(r.params, 0);
        ck_assert_ptr_nonnull(p.error);
        fcgi_proto_free(&p);
    }
    buf_free(&b);
}

START_TEST(test_truncated_pairs_are_errors)
{
    buf pp;
    buf_init(&pp);
    simple_params(&pp);
    buf_put(&pp, "\x0a\x01" "SHORT", 7); /* name of 10, 5 present */
    assert_params_error(&pp);
    buf_reset(&pp);
    simple_params(&pp);
    buf_put(&pp, "\x80\x00", 2); /* a 4-byte length cut after 2 */
    assert_params_error(&pp);
    buf_reset(&pp);
    buf_put(&pp, "\x04", 1); /* a name length and no value length */
    assert_params_error(&pp);
    buf_reset(&pp);
    buf_put(&pp, "\x01\xff\xff\xff\xff" "N", 6); /* a 2 GiB value */
    assert_params_error(&pp);
    buf_free(&pp);
}
END_TEST

START_TEST(test_unknown_role_is_refused_with_unknown_role)
{
    buf b;
    buf_init(&b);
    begin(&b, 6, 2, 0); /* FCGI_AUTHORIZER */
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    ck_assert_uint_eq(r.used, 16);
    ck_assert_ptr_nonnull(p.error);
    record out[4];
    ck_assert_int_eq(records(&p.reply, out, 4), 1);
    ck_assert_uint_eq(out[0].id, 6);
    ck_assert_int_eq(end_status(&out[0]), 3); /* FCGI_UNKNOWN_ROLE */
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_abort_request_is_reported_before_and_after_params)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    for (int after = 0; after < 2; after++) {
        buf_reset(&b);
        begin(&b, 3, 1, 0);
        rec(&b, T_PARAMS, 3, pp.p, pp.len);
        if (after)
            rec(&b, T_PARAMS, 3, NULL, 0);
        size_t upto = b.len;
        rec(&b, T_ABORT, 3, NULL, 0);
        size_t aborted = b.len;
        rec(&b, T_STDIN, 3, NULL, 0);
        size_t one = 1;
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            fcgi_proto p;
            fcgi_proto_init(&p, 65536, 1024);
            drive_result r = bytewise ? drive(&p, &b, &one, 1) : drive_whole(&p, &b);
            ck_assert_int_eq(r.params, after);
            ck_assert_int_eq(r.end, FCGI_PROTO_ABORT);
            ck_assert_uint_eq(r.used, aborted); /* the STDIN after it is left */
            ck_assert_uint_gt(r.used, upto);
            fcgi_proto_free(&p);
        }
    }
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

/* ---- what is left over ------------------------------------------------------ */

START_TEST(test_bytes_after_done_are_not_consumed)
{
    buf b;
    buf_init(&b);
    simple_request(&b, 1);
    size_t first = b.len;
    simple_request(&b, 2); /* the web server's next request (FCGI_KEEP_CONN) */
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    assert_simple(&p, &r, first, 1);
    size_t used = 1;
    fcgi_proto_feed(&p, (unsigned char *)b.p + first, b.len - first, &used);
    ck_assert_uint_eq(used, 0);
    fcgi_proto_free(&p);
    /* and the rest is a whole request for a fresh reader */
    buf rest;
    buf_init(&rest);
    buf_put(&rest, b.p + first, b.len - first);
    fcgi_proto_init(&p, 65536, 1024);
    r = drive_whole(&p, &rest);
    assert_simple(&p, &r, rest.len, 2);
    fcgi_proto_free(&p);
    buf_free(&rest);
    buf_free(&b);
}
END_TEST

START_TEST(test_nothing_is_consumed_after_an_error)
{
    buf b;
    buf_init(&b);
    buf_puts(&b, "\x02garbage-garbage-garbage");
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ERROR);
    size_t used = 1;
    fcgi_proto_feed(&p, (unsigned char *)b.p + r.used, b.len - r.used, &used);
    ck_assert_uint_eq(used, 0);
    fcgi_proto_free(&p);
    buf_free(&b);
}
END_TEST

START_TEST(test_free_then_init_reuses_nothing)
{
    buf b;
    buf_init(&b);
    simple_request(&b, 1);
    fcgi_proto p;
    for (int i = 0; i < 3; i++) {
        fcgi_proto_init(&p, 65536, 1024);
        drive_result r = drive_whole(&p, &b);
        assert_simple(&p, &r, b.len, 1);
        fcgi_proto_free(&p);
        ck_assert_ptr_null(p.envp);
        ck_assert_uint_eq(p.nenv, 0);
    }
    fcgi_proto_free(&p); /* twice is harmless */
    buf_free(&b);
}
END_TEST

/* ---- the answer's records ---------------------------------------------------- */

/* fcgi_proto_frame(data) parsed back: STDOUT records of at most 65528
 * bytes that concatenate to data, the empty STDOUT, END_REQUEST
 * (app status 0, FCGI_REQUEST_COMPLETE), all for reqid, nothing after. */
static void assert_framed(const char *data, size_t len, uint16_t reqid) {
    buf out;
    buf_init(&out);
    fcgi_proto_frame(&out, reqid, data, len);
    int max = (int)(len / 65528) + 4;
    record *rs = calloc((size_t)max, sizeof *rs);
    int n = records(&out, rs, max);
    ck_assert_int_ge(n, 2);
    ck_assert_int_eq(n, (int)((len + 65527) / 65528) + 2);
    size_t off = 0;
    for (int i = 0; i < n - 2; i++) {
        ck_assert_int_eq(rs[i].type, T_STDOUT);
        ck_assert_uint_eq(rs[i].id, reqid);
        ck_assert_uint_gt(rs[i].len, 0);
        ck_assert_uint_le(rs[i].len, 65528);
        ck_assert(memcmp(rs[i].content, data + off, rs[i].len) == 0);
        off += rs[i].len;
    }
    ck_assert_uint_eq(off, len);
    ck_assert(rs[n - 2].type == T_STDOUT && rs[n - 2].len == 0 && rs[n - 2].id == reqid);
    ck_assert_uint_eq(rs[n - 1].id, reqid);
    ck_assert_int_eq(end_status(&rs[n - 1]), 0);
    ck_assert(memcmp(rs[n - 1].content, "\0\0\0\0", 4) == 0); /* app status 0 */
    free(rs);
    buf_free(&out);
}

START_TEST(test_frame_parses_back_small_empty_and_200_kib)
{
    assert_framed("", 0, 1);
    const char *small = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
    assert_framed(small, strlen(small), 0xBEEF);
    size_t big = 200 * 1024;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)(i * 7 + i / 251);
    assert_framed(data, big, 65535);
    assert_framed(data, 65528, 2);      /* exactly one full record */
    assert_framed(data, 65529, 3);      /* one byte more: two */
    assert_framed(data, 3 * 65528, 4);
    free(data);
}
END_TEST

START_TEST(test_frame_appends_to_what_the_buffer_holds)
{
    buf out;
    buf_init(&out);
    fcgi_proto_frame(&out, 1, "a", 1);
    size_t first = out.len;
    fcgi_proto_frame(&out, 2, "bc", 2);
    record rs[8];
    ck_assert_int_eq(records(&out, rs, 8), 6);
    ck_assert(rs[0].id == 1 && rs[3].id == 2 && rs[3].len == 2);
    ck_assert_uint_eq(first, 8 + 1 + 8 + 16);
    buf_free(&out);
}
END_TEST

START_TEST(test_value_with_nul_cannot_pose_as_another_variable)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    pair_n(&pp, "HTTP_X", 6, "x\0PATH_INFO=/admin", 18, 0);
    pair(&pp, "PATH_INFO", "/sub/news");
    request(&b, 1, &pp, NULL, 0, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_DONE);
    int path_info = 0;
    for (size_t i = 0; i < p.nenv; i++) {
        ck_assert_str_ne(p.envp[i], "PATH_INFO=/admin");
        ck_assert_ptr_nonnull(strchr(p.envp[i], '='));
        path_info += strcmp(p.envp[i], "PATH_INFO=/sub/news") == 0;
    }
    ck_assert_int_eq(path_info, 1);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

START_TEST(test_nothing_is_consumed_after_abort)
{
    buf pp, b;
    buf_init(&pp);
    buf_init(&b);
    simple_params(&pp);
    begin(&b, 3, 1, 0);
    stream(&b, T_PARAMS, 3, pp.p, pp.len, 65535);
    rec(&b, T_ABORT, 3, NULL, 0);
    size_t aborted = b.len;
    stream(&b, T_STDIN, 3, "late", 4, 65535);
    fcgi_proto p;
    fcgi_proto_init(&p, 65536, 1024);
    drive_result r = drive_whole(&p, &b);
    ck_assert_int_eq(r.end, FCGI_PROTO_ABORT);
    ck_assert_uint_eq(r.used, aborted);
    size_t used = 1;
    fcgi_proto_feed(&p, (unsigned char *)b.p + aborted, b.len - aborted, &used);
    ck_assert_uint_eq(used, 0);
    ck_assert_uint_eq(p.stdin_len, 0);
    fcgi_proto_free(&p);
    buf_free(&pp);
    buf_free(&b);
}
END_TEST

Suite *fcgi_proto_suite(void) {
    Suite *s = suite_create("fcgi_proto");
    TCase *tc = tcase_create("splits");
    tcase_add_test(tc, test_whole_request_byte_by_byte_gives_params_then_done);
    tcase_add_test(tc, test_post_in_small_records_same_result_for_every_two_way_split);
    tcase_add_test(tc, test_post_same_result_in_pieces_of_every_size_up_to_64);
    tcase_add_test(tc, test_record_by_record_params_at_empty_params_done_at_empty_stdin);
    tcase_add_test(tc, test_all_at_once_stops_at_params_then_takes_the_rest);
    tcase_add_test(tc, test_keep_conn_flag_is_reported);
    suite_add_tcase(s, tc);

    tc = tcase_create("encoding");
    tcase_add_test(tc, test_four_byte_lengths_long_names_and_values_across_records);
    tcase_add_test(tc, test_padding_is_skipped_in_every_split);
    tcase_add_test(tc, test_names_with_equals_nul_or_empty_are_dropped);
    tcase_add_test(tc, test_records_of_other_ids_are_ignored);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_params_over_max_params_read_through_to_done);
    tcase_add_test(tc, test_params_of_exactly_max_params_bytes_are_kept);
    tcase_add_test(tc, test_max_params_pairs_kept_one_more_is_params_over);
    tcase_add_test(tc, test_body_over_max_body_keeps_max_body_and_counts_all);
    tcase_add_test(tc, test_four_mib_body_costs_only_max_body);
    suite_add_tcase(s, tc);

    tc = tcase_create("management");
    tcase_add_test(tc, test_get_values_answered_with_mpxs_conns_0);
    tcase_add_test(tc, test_get_values_between_params_and_stdin_is_answered_too);
    tcase_add_test(tc, test_malformed_get_values_is_an_error);
    tcase_add_test(tc, test_unknown_management_type_gets_unknown_type);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_second_begin_for_another_id_gets_cant_mpx_conn);
    tcase_add_test(tc, test_second_begin_for_the_same_id_is_an_error);
    tcase_add_test(tc, test_short_begin_is_an_error);
    tcase_add_test(tc, test_wrong_version_is_an_error_at_its_header);
    tcase_add_test(tc, test_stdin_before_end_of_params_is_an_error);
    tcase_add_test(tc, test_params_record_after_end_of_params_is_an_error);
    tcase_add_test(tc, test_truncated_pairs_are_errors);
    tcase_add_test(tc, test_unknown_role_is_refused_with_unknown_role);
    tcase_add_test(tc, test_abort_request_is_reported_before_and_after_params);
    suite_add_tcase(s, tc);

    tc = tcase_create("leftovers");
    tcase_add_test(tc, test_bytes_after_done_are_not_consumed);
    tcase_add_test(tc, test_nothing_is_consumed_after_an_error);
    tcase_add_test(tc, test_free_then_init_reuses_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("frame");
    tcase_add_test(tc, test_frame_parses_back_small_empty_and_200_kib);
    tcase_add_test(tc, test_frame_appends_to_what_the_buffer_holds);
    tcase_add_test(tc, test_value_with_nul_cannot_pose_as_another_variable);
    tcase_add_test(tc, test_nothing_is_consumed_after_abort);
    suite_add_tcase(s, tc);
    return s;
}
