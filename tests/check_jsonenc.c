/* check_jsonenc.c -- the JSON encoders: strings, base64, content types and
 * the message object, each output parsed back with jansson. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_suites.h"
#include "jsonenc.h"
#include "testutil.h"

/* Parse b's content as exactly one JSON value; fails the test otherwise.
 * The caller json_decref()s the result. */
static json_t *parse_buf(buf *b)
{
    ck_assert_int_eq(b->oom, 0);
    json_error_t e;
    json_t *v = json_loadb(b->p, b->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    ck_assert_msg(v != NULL, "invalid JSON (%s): %.*s", e.text, (int)b->len, b->p);
    return v;
}

/* Encode s[0..n) as a JSON string, parse it back, return the value. */
static json_t *string_round_trip(const char *s, size_t n, buf *b)
{
    buf_reset(b);
    jsonenc_string(b, s, n);
    for (size_t i = 0; i < b->len; i++)
        ck_assert_msg((unsigned char)b->p[i] >= 0x20, "raw control byte 0x%02x in output",
                      (unsigned char)b->p[i]);
    json_t *v = parse_buf(b);
    ck_assert_msg(json_is_string(v), "not a JSON string");
    return v;
}

static void assert_json_str(const json_t *v, const char *want, size_t n)
{
    ck_assert_uint_eq(json_string_length(v), n);
    ck_assert_mem_eq(json_string_value(v), want, n);
}

START_TEST(test_string_escapes_quotes_backslash_and_control_chars)
{
    buf b;
    buf_init(&b);
    const char in[] = "a\"b\\c\n\r\t\x01\x1f\x7f/end";
    json_t *v = string_round_trip(in, sizeof in - 1, &b);
    assert_json_str(v, in, sizeof in - 1);
    json_decref(v);
    ck_assert_ptr_nonnull(strstr(buf_cstr(&b), "\\\""));
    ck_assert_ptr_nonnull(strstr(buf_cstr(&b), "\\\\"));

    v = string_round_trip("a\0b", 3, &b); /* an embedded NUL survives */
    assert_json_str(v, "a\0b", 3);
    json_decref(v);
    v = string_round_trip("", 0, &b);
    ck_assert_str_eq(buf_cstr(&b), "\"\"");
    json_decref(v);
    buf_free(&b);
}
END_TEST

START_TEST(test_string_keeps_valid_utf8)
{
    buf b;
    buf_init(&b);
    const char in[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8";
    json_t *v = string_round_trip(in, sizeof in - 1, &b);
    assert_json_str(v, in, sizeof in - 1);
    json_decref(v);
    buf_free(&b);
}
END_TEST

START_TEST(test_string_replaces_invalid_utf8)
{
    static const struct {
        const char *in;
        size_t n;
    } cases[] = {
        {"a\xff" "b", 3},            /* a byte that never appears */
        {"a\xc0\xaf" "b", 4},        /* overlong '/' */
        {"a\xed\xa0\x80" "b", 5},    /* a UTF-16 surrogate */
        {"a\xf4\x90\x80\x80" "b", 6},/* above U+10FFFF */
        {"a\x80" "b", 3},            /* a lone continuation byte */
        {"a\xe2\x82", 3},            /* truncated at the end */
    };
    buf b;
    buf_init(&b);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *v = string_round_trip(cases[i].in, cases[i].n, &b);
        const char *s = json_string_value(v);
        ck_assert_msg(s[0] == 'a' && strstr(s, "\xef\xbf\xbd") != NULL,
                      "case %zu: no U+FFFD in %s", i, s);
        if (cases[i].in[cases[i].n - 1] == 'b')
            ck_assert_msg(s[strlen(s) - 1] == 'b', "case %zu: lost the tail", i);
        json_decref(v);
    }
    json_t *v = string_round_trip("a\xff" "b", 3, &b);
    assert_json_str(v, "a\xef\xbf\xbd" "b", 5);
    json_decref(v);
    buf_free(&b);
}
END_TEST

START_TEST(test_utf8_valid_rejects_overlongs_surrogates_and_truncation)
{
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"", 0), 1);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"plain", 5), 1);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xc3\xa9", 2), 1);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xf4\x8f\xbf\xbf", 4), 1);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xc0\x80", 2), 0);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xe0\x80\xaf", 3), 0);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xed\xbf\xbf", 3), 0);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xf4\x90\x80\x80", 4), 0);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xe2\x82", 2), 0);
    ck_assert_int_eq(jsonenc_utf8_valid((const unsigned char *)"\xff", 1), 0);
}
END_TEST

START_TEST(test_base64_rfc4648_vectors)
{
    static const char *const vec[][2] = {{"", ""},         {"f", "Zg=="},
                                         {"fo", "Zm8="},   {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    buf b;
    buf_init(&b);
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        buf_reset(&b);
        jsonenc_base64(&b, (const unsigned char *)vec[i][0], strlen(vec[i][0]));
        ck_assert_str_eq(buf_cstr(&b), vec[i][1]);
    }
    buf_reset(&b);
    const unsigned char bytes[] = {0xff, 0x00, 0xfb, 0xef};
    jsonenc_base64(&b, bytes, sizeof bytes);
    ck_assert_str_eq(buf_cstr(&b), "/wD77w==");
    buf_reset(&b);
    buf_puts(&b, "x:"); /* appends after what the buffer holds */
    jsonenc_base64(&b, (const unsigned char *)"hi", 2);
    ck_assert_str_eq(buf_cstr(&b), "x:aGk=");
    buf_free(&b);
}
END_TEST

START_TEST(test_buf_int_printf_and_growth)
{
    buf b;
    buf_init(&b);
    buf_int(&b, INT64_MIN);
    buf_putc(&b, ' ');
    buf_int(&b, 0);
    buf_putc(&b, ' ');
    buf_int(&b, INT64_MAX);
    ck_assert_str_eq(buf_cstr(&b), "-9223372036854775808 0 9223372036854775807");
    buf_reset(&b);
    for (int i = 0; i < 10000; i++)
        buf_printf(&b, "%d,", i % 10);
    ck_assert_uint_eq(b.len, 20000);
    ck_assert_int_eq(b.oom, 0);
    ck_assert_mem_eq(b.p, "0,1,2,3,4,5,6,7,8,9,0,", 22);
    ck_assert_mem_eq(b.p + 19990, "5,6,7,8,9,", 10);
    buf_free(&b);
}
END_TEST

START_TEST(test_content_type_classification)
{
    ck_assert_int_eq(jsonenc_type_is_json("application/json"), 1);
    ck_assert_int_eq(jsonenc_type_is_json("application/json; charset=utf-8"), 1);
    ck_assert_int_eq(jsonenc_type_is_json("Application/JSON"), 1);
    ck_assert_int_eq(jsonenc_type_is_json("application/ld+json"), 1);
    ck_assert_int_eq(jsonenc_type_is_json("application/jsonx"), 0);
    ck_assert_int_eq(jsonenc_type_is_json("text/plain"), 0);
    ck_assert_int_eq(jsonenc_type_is_text("text/plain"), 1);
    ck_assert_int_eq(jsonenc_type_is_text("text/html; charset=iso-8859-1"), 1);
    ck_assert_int_eq(jsonenc_type_is_text("application/xml; charset=UTF-8"), 1);
    ck_assert_int_eq(jsonenc_type_is_text("application/octet-stream"), 0);
    ck_assert_int_eq(jsonenc_type_is_text("image/png"), 0);
}
END_TEST

START_TEST(test_valid_accepts_one_value_of_any_type)
{
    ck_assert_int_eq(jsonenc_valid("{}", 2), 1);
    ck_assert_int_eq(jsonenc_valid(" [1, \"x\"] \n", 11), 1);
    ck_assert_int_eq(jsonenc_valid("42", 2), 1);
    ck_assert_int_eq(jsonenc_valid("\"str\"", 5), 1);
    ck_assert_int_eq(jsonenc_valid("null", 4), 1);
    ck_assert_int_eq(jsonenc_valid("", 0), 0);
    ck_assert_int_eq(jsonenc_valid("{\"a\":", 5), 0);
    ck_assert_int_eq(jsonenc_valid("{} {}", 5), 0);
    ck_assert_int_eq(jsonenc_valid("nul", 3), 0);
    ck_assert_int_eq(jsonenc_valid("{}x", 2), 1); /* only n bytes count */
}
END_TEST

START_TEST(test_valid_accepts_integers_beyond_int64)
{
    /* 64-bit unsigned ids (snowflakes) are common in real payloads; refusing
     * them would turn a valid application/json publish into a 400.  Numbers
     * beyond a double's range (1e400) are refused, as RFC 8259 §6 allows. */
    const char *big = "{\"id\": 18446744073709551615}", *neg = "[-9223372036854775809]";
    ck_assert_int_eq(jsonenc_valid(big, strlen(big)), 1);
    ck_assert_int_eq(jsonenc_valid(neg, strlen(neg)), 1);
    ck_assert_int_eq(jsonenc_valid("[1e400]", 7), 0);
}
END_TEST

/* Encode a message and parse it; checks the common fields. */
static json_t *encode_message(const char *type, const void *body, size_t len, const char *key)
{
    msglog_msg m = {.id = 1042, .time_ms = 1763776000123LL, .channel = "news",
                    .type = type, .body = body, .len = len, .key = key};
    buf b;
    buf_init(&b);
    jsonenc_message(&b, &m);
    ck_assert_ptr_null(memchr(b.p, '\n', b.len)); /* one message, one line */
    json_t *v = parse_buf(&b);
    buf_free(&b);
    ck_assert(json_is_object(v));
    ck_assert_int_eq(json_integer_value(json_object_get(v, "id")), 1042);
    ck_assert_str_eq(json_string_value(json_object_get(v, "channel")), "news");
    ck_assert_int_eq(json_integer_value(json_object_get(v, "time")), 1763776000123LL);
    ck_assert_str_eq(json_string_value(json_object_get(v, "type")), type);
    ck_assert_ptr_nonnull(json_object_get(v, "data"));
    return v;
}

static void assert_base64_data(json_t *v, const void *body, size_t len)
{
    ck_assert_str_eq(json_string_value(json_object_get(v, "encoding")), "base64");
    const json_t *data = json_object_get(v, "data");
    ck_assert(json_is_string(data));
    size_t n = 0;
    const unsigned char *raw = tu_base64_decode(json_string_value(data),
                                                json_string_length(data), &n);
    ck_assert_msg(raw != NULL, "data is not base64: %s", json_string_value(data));
    ck_assert_uint_eq(n, len);
    ck_assert_mem_eq(raw, body, len);
}

START_TEST(test_message_embeds_json_body)
{
    const char body[] = "{\n  \"headline\": \"x\",\n  \"n\": [1, 2]\n}\n";
    json_t *v = encode_message("application/json", body, sizeof body - 1, NULL);
    json_t *want = json_loads(body, 0, NULL);
    ck_assert(json_equal(json_object_get(v, "data"), want));
    ck_assert_ptr_null(json_object_get(v, "encoding"));
    json_decref(want);
    json_decref(v);

    v = encode_message("application/json; charset=utf-8", "42", 2, NULL); /* a scalar */
    ck_assert_int_eq(json_integer_value(json_object_get(v, "data")), 42);
    json_decref(v);
}
END_TEST

START_TEST(test_message_text_becomes_string)
{
    const char body[] = "hello \"q\"\n\tline 2 \xe2\x82\xac";
    json_t *v = encode_message(MSGLOG_DEFAULT_TYPE, body, sizeof body - 1, "k1");
    const json_t *data = json_object_get(v, "data");
    ck_assert(json_is_string(data));
    assert_json_str(data, body, sizeof body - 1);
    ck_assert_ptr_null(json_object_get(v, "encoding"));
    ck_assert_str_eq(json_string_value(json_object_get(v, "key")), "k1");
    json_decref(v);
}
END_TEST

START_TEST(test_message_binary_becomes_base64)
{
    const unsigned char bin[] = {0xff, 0x00};
    json_t *v = encode_message("application/octet-stream", bin, sizeof bin, NULL);
    assert_base64_data(v, bin, sizeof bin);
    ck_assert_str_eq(json_string_value(json_object_get(v, "data")), "/wA=");
    json_decref(v);

    const char latin1[] = "caf\xe9"; /* labelled text but not UTF-8 */
    v = encode_message("text/plain", latin1, 4, NULL);
    assert_base64_data(v, latin1, 4);
    json_decref(v);

    v = encode_message("application/octet-stream", "", 0, NULL);
    assert_base64_data(v, "", 0);
    json_decref(v);
}
END_TEST

START_TEST(test_message_invalid_json_body_falls_back_and_still_parses)
{
    static const char *const bodies[] = {"{\"a\":", "not json at all", "{} {}", ""};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        size_t len = strlen(bodies[i]);
        json_t *v = encode_message("application/json", bodies[i], len, NULL);
        const json_t *enc = json_object_get(v, "encoding");
        if (enc)
            assert_base64_data(v, bodies[i], len);
        else
            assert_json_str(json_object_get(v, "data"), bodies[i], len);
        json_decref(v);
    }
    const char bad[] = "{\"a\":\"\xff\"}"; /* JSON-shaped but not UTF-8 */
    json_t *v = encode_message("application/json", bad, sizeof bad - 1, NULL);
    assert_base64_data(v, bad, sizeof bad - 1);
    json_decref(v);
}
END_TEST

Suite *jsonenc_suite(void)
{
    Suite *s = suite_create("jsonenc");
    TCase *tc = tu_tcase(s, "encode", 0);
    tcase_add_test(tc, test_string_escapes_quotes_backslash_and_control_chars);
    tcase_add_test(tc, test_string_keeps_valid_utf8);
    tcase_add_test(tc, test_string_replaces_invalid_utf8);
    tcase_add_test(tc, test_utf8_valid_rejects_overlongs_surrogates_and_truncation);
    tcase_add_test(tc, test_base64_rfc4648_vectors);
    tcase_add_test(tc, test_buf_int_printf_and_growth);
    tcase_add_test(tc, test_content_type_classification);
    tcase_add_test(tc, test_valid_accepts_one_value_of_any_type);
    tcase_add_test(tc, test_valid_accepts_integers_beyond_int64);

    tc = tu_tcase(s, "message", 0);
    tcase_add_test(tc, test_message_embeds_json_body);
    tcase_add_test(tc, test_message_text_becomes_string);
    tcase_add_test(tc, test_message_binary_becomes_base64);
    tcase_add_test(tc, test_message_invalid_json_body_falls_back_and_still_parses);
    return s;
}
