/* check_token.c -- token verification: every rejection with its status, the
 * clock boundaries, rotation, grants, minting, and tokens made by Python's
 * own hmac/base64 (so holdfast reads what a standard library writes). */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "check_suites.h"
#include "token.h"

#define S1 "first-secret-0123456789abcdef-0123456789"
#define S2 "second-secret-0123456789abcdef-012345678"
#define NOW 1800000000LL

static const char *const secrets1[] = {S1};
static const char *const secrets2[] = {"unrelated-secret-0123456789abcdef-01234", S1};

static token_keys keys(unsigned algs, int leeway, int64_t now) {
    return (token_keys){.secrets = secrets1, .nsecrets = 1, .algs = algs, .leeway_s = leeway,
                        .now_s = now};
}

static token_status verify(const char *tok, token_keys k, token_grant *g) {
    return token_verify(tok, strlen(tok), &k, g);
}

/* base64url of s (test-side, with OpenSSL like token.c but separately). */
static void b64(const void *p, size_t n, char *out) {
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
}

/* A token from header and payload JSON, signed with HS256 and `secret`. */
static void make(const char *header, const char *payload, const char *secret, char *out) {
    char h[2048], p[4096];
    unsigned char mac[64];
    unsigned int n = 0;
    b64(header, strlen(header), h);
    b64(payload, strlen(payload), p);
    sprintf(out, "%s.%s", h, p);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)out, strlen(out), mac, &n);
    strcat(out, ".");
    b64(mac, n, out + strlen(out));
}

#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define GRANT "\"holdfast\":{\"subscribe\":[\"chat.*\"]}"

static void expect(const char *header, const char *payload, token_status want) {
    char tok[8192];
    token_grant g;
    make(header, payload, S1, tok);
    ck_assert_msg(verify(tok, keys(TOKEN_ALG_HS256, 0, NOW), &g) == want, "%s %s: got %s", header,
                  payload, token_status_code(verify(tok, keys(TOKEN_ALG_HS256, 0, NOW), &g)));
}

START_TEST(test_round_trip_each_algorithm) {
    const token_alg algs[] = {TOKEN_ALG_HS256, TOKEN_ALG_HS384, TOKEN_ALG_HS512};
    const char *pats[] = {"chat.*", "news"};
    for (int i = 0; i < 3; i++) {
        char tok[TOKEN_MAX + 1];
        token_grant g;
        ck_assert_int_gt(token_mint(S1, algs[i], pats, 2, i == 1, NOW, 60, tok, sizeof tok), 0);
        ck_assert_int_eq(verify(tok, keys(7, 0, NOW), &g), TOKEN_OK);
        ck_assert_int_eq(g.nsubscribe, 2);
        ck_assert_int_eq(g.npublish, i == 1 ? 2 : 0);
        ck_assert_int_eq(g.exp, NOW + 60);
        ck_assert(token_grants(&g, 0, "chat.lobby"));
        ck_assert(token_grants(&g, 0, "news"));
        ck_assert(!token_grants(&g, 0, "newsroom"));
        ck_assert_int_eq(token_grants(&g, 1, "news"), i == 1);
        /* Only the configured algorithm. */
        ck_assert_int_eq(verify(tok, keys(7u & ~(unsigned)algs[i], 0, NOW), &g), TOKEN_ALGORITHM);
    }
}
END_TEST

START_TEST(test_tokens_made_by_python_hmac) {
    /* Made with python3's hmac, hashlib and base64 (see the commit). */
    static const char *const py[] = {"python-secret-0123456789abcdef-0123456789"};
    token_keys k = {.secrets = py, .nsecrets = 1, .algs = 7, .now_s = NOW};
    token_grant g;
    const char *t256 =
        "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJleHAiOiAyMDAwMDAwMDAwLCAiaWF0IjogMTcwMDAw"
        "MDAwMCwgImhvbGRmYXN0IjogeyJzdWJzY3JpYmUiOiBbImNoYXQuKiIsICJuZXdzIl19fQ.Y8iYGB3jBiMHVgF"
        "EqBecnuJ2jquNRW06VPL26t6fltQ";
    const char *t512 =
        "eyJhbGciOiAiSFM1MTIiLCAidHlwIjogIkpXVCJ9.eyJleHAiOiAyMDAwMDAwMDAwLCAiaG9sZGZhc3QiOiB7In"
        "B1Ymxpc2giOiBbInJvb20uMSJdfX0.UjuWNYclv1jX0p_nao7wEi4B0kZOsL7CQQ8I3P2C9Nm59RWFr1kqdB-LV1"
        "wDVnSXh78V93YOF7Fob8zhMmi9mQ";
    ck_assert_int_eq(token_verify(t256, strlen(t256), &k, &g), TOKEN_OK);
    ck_assert(token_grants(&g, 0, "chat.x") && token_grants(&g, 0, "news"));
    ck_assert_int_eq(g.iat, 1700000000);
    ck_assert_int_eq(token_verify(t512, strlen(t512), &k, &g), TOKEN_OK);
    ck_assert(token_grants(&g, 1, "room.1") && !token_grants(&g, 0, "room.1"));
}
END_TEST

START_TEST(test_algorithm_rejections) {
    expect("{\"alg\":\"none\"}", "{\"exp\":1900000000," GRANT "}", TOKEN_ALGORITHM);
    expect("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "{\"exp\":1900000000}", TOKEN_ALGORITHM);
    expect("{\"alg\":\"hs256\"}", "{\"exp\":1900000000}", TOKEN_ALGORITHM);
    expect("{\"alg\":\"HS384\"}", "{\"exp\":1900000000}", TOKEN_ALGORITHM); /* not configured */
    expect("{\"typ\":\"JWT\"}", "{\"exp\":1900000000}", TOKEN_MALFORMED);
    expect("{\"alg\":256}", "{\"exp\":1900000000}", TOKEN_MALFORMED);
    expect("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{\"exp\":1900000000}", TOKEN_MALFORMED);
    expect("{\"alg\":\"HS256\",\"typ\":\"JOSE+JSON\"}", "{\"exp\":1900000000}", TOKEN_MALFORMED);
    expect("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{\"exp\":1900000000}", TOKEN_MALFORMED);
    /* alg none with an empty signature */
    char h[64], p[64], tok[256];  /* base64 of 14 and 18 bytes: 19 and 24 */
    b64("{\"alg\":\"none\"}", 14, h);
    b64("{\"exp\":1900000000}", 18, p);
    snprintf(tok, sizeof tok, "%.60s.%.60s.", h, p);
    token_grant g;
    ck_assert_int_eq(verify(tok, keys(7, 0, NOW), &g), TOKEN_ALGORITHM);
}
END_TEST

START_TEST(test_signature_rejections_and_rotation) {
    char tok[4096];
    token_grant g;
    make(HS256, "{\"exp\":1900000000," GRANT "}", S1, tok);
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_OK);
    token_keys other = keys(1, 0, NOW);
    static const char *const wrong[] = {S2};
    other.secrets = wrong;
    ck_assert_int_eq(verify(tok, other, &g), TOKEN_SIGNATURE);
    other.secrets = secrets2; /* rotation: the second secret verifies */
    other.nsecrets = 2;
    ck_assert_int_eq(verify(tok, other, &g), TOKEN_OK);
    size_t n = strlen(tok);
    tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_SIGNATURE);
    tok[n - 1] = '\0'; /* a short signature */
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_MALFORMED);
    make(HS256, "{\"exp\":1900000000," GRANT "}", S1, tok);
    char *dot = strchr(tok, '.');
    dot[1] = dot[1] == 'e' ? 'f' : 'e'; /* payload changed after signing */
    ck_assert_int_ne(verify(tok, keys(1, 0, NOW), &g), TOKEN_OK);
    ck_assert_int_eq(g.nsubscribe, 0);
}
END_TEST

START_TEST(test_time_boundaries) {
    char tok[4096], payload[256];
    token_grant g;
    sprintf(payload, "{\"exp\":%lld}", NOW);
    make(HS256, payload, S1, tok);
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_OK);        /* exp == now */
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW + 1), &g), TOKEN_EXPIRED);
    ck_assert_int_eq(verify(tok, keys(1, 1, NOW + 1), &g), TOKEN_OK);    /* leeway 1 */
    ck_assert_int_eq(verify(tok, keys(1, 1, NOW + 2), &g), TOKEN_EXPIRED);
    sprintf(payload, "{\"exp\":%lld,\"nbf\":%lld}", NOW + 100, NOW + 10);
    make(HS256, payload, S1, tok);
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_NOT_YET_VALID);
    ck_assert_int_eq(verify(tok, keys(1, 10, NOW), &g), TOKEN_OK);
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW + 10), &g), TOKEN_OK);
    sprintf(payload, "{\"exp\":%lld,\"iat\":%lld}", NOW + 100, NOW + 5);
    make(HS256, payload, S1, tok);
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_NOT_YET_VALID);
    sprintf(payload, "{\"exp\":%lld.75}", NOW);
    make(HS256, payload, S1, tok);
    ck_assert_int_eq(verify(tok, keys(1, 0, NOW), &g), TOKEN_OK);
}
END_TEST

START_TEST(test_claim_rejections) {
    expect(HS256, "{\"holdfast\":{\"subscribe\":[\"a\"]}}", TOKEN_MALFORMED); /* no exp */
    expect(HS256, "{\"exp\":\"1900000000\"}", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000,\"nbf\":\"x\"}", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000,\"holdfast\":[]}", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000,\"holdfast\":{\"subscribe\":\"chat.*\"}}", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000,\"holdfast\":{\"publish\":[1]}}", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000,\"holdfast\":{\"publish\":[\"\"]}}", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000,\"exp\":1}", TOKEN_MALFORMED); /* duplicate */
    expect(HS256, "[1900000000]", TOKEN_MALFORMED);
    expect(HS256, "{\"exp\":1900000000}", TOKEN_OK); /* grants nothing, but valid */
    char payload[8192], pat[200];
    memset(pat, 'p', 129);
    pat[129] = '\0';
    sprintf(payload, "{\"exp\":1900000000,\"holdfast\":{\"subscribe\":[\"%s\"]}}", pat);
    expect(HS256, payload, TOKEN_MALFORMED); /* a pattern too long */
    strcpy(payload, "{\"exp\":1900000000,\"holdfast\":{\"subscribe\":[");
    for (int i = 0; i < 33; i++)
        strcat(payload, i ? ",\"a\"" : "\"a\"");
    strcat(payload, "]}}");
    expect(HS256, payload, TOKEN_MALFORMED); /* too many patterns */
}
END_TEST

START_TEST(test_shape_rejections) {
    char tok[8192], big[TOKEN_MAX + 10];
    token_grant g;
    token_keys k = keys(1, 0, NOW);
    ck_assert_int_eq(token_verify("", 0, &k, &g), TOKEN_MISSING);
    ck_assert_int_eq(token_verify(NULL, 0, &k, &g), TOKEN_MISSING);
    ck_assert_int_eq(verify("abc", k, &g), TOKEN_MALFORMED);
    ck_assert_int_eq(verify("a.b", k, &g), TOKEN_MALFORMED);
    ck_assert_int_eq(verify("a.b.c.d", k, &g), TOKEN_MALFORMED);
    ck_assert_int_eq(verify("..", k, &g), TOKEN_MALFORMED);
    make(HS256, "{\"exp\":1900000000}", S1, tok);
    char padded[8192];
    snprintf(padded, sizeof padded, "%.8000s=", tok);
    ck_assert_int_eq(verify(padded, k, &g), TOKEN_MALFORMED);
    char *dot = strchr(tok, '.');
    char spaced[8192];
    snprintf(spaced, sizeof spaced, "%.*s %.4000s", (int)(dot - tok), tok, dot);
    ck_assert_int_eq(verify(spaced, k, &g), TOKEN_MALFORMED);
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[10] = big[20] = '.';
    ck_assert_int_eq(verify(big, k, &g), TOKEN_MALFORMED);
    ck_assert_int_eq(token_verify("a.b\0.c", 6, &k, &g), TOKEN_MALFORMED);
}
END_TEST

START_TEST(test_mint_bounds) {
    const char *pats[] = {"x"};
    char small[40], tok[TOKEN_MAX + 1];
    ck_assert_int_eq(token_mint(S1, TOKEN_ALG_HS256, pats, 1, 0, NOW, 60, small, sizeof small), -1);
    ck_assert_int_eq(token_mint(S1, (token_alg)3, pats, 1, 0, NOW, 60, tok, sizeof tok), -1);
    ck_assert_int_eq(token_mint(S1, TOKEN_ALG_HS256, pats, 33, 0, NOW, 60, tok, sizeof tok), -1);
    ck_assert_int_eq(token_alg_parse("HS512"), TOKEN_ALG_HS512);
    ck_assert_int_eq(token_alg_parse("none"), 0);
    for (int s = TOKEN_OK; s <= TOKEN_NOT_YET_VALID; s++) {
        ck_assert_ptr_nonnull(strstr(token_status_code((token_status)s), s ? "token_" : "ok"));
        ck_assert_ptr_null(strstr(token_status_reason((token_status)s), S1));
    }
}
END_TEST

Suite *token_suite(void) {
    Suite *s = suite_create("token");
    TCase *tc = tcase_create("verify");
    tcase_add_test(tc, test_round_trip_each_algorithm);
    tcase_add_test(tc, test_tokens_made_by_python_hmac);
    tcase_add_test(tc, test_algorithm_rejections);
    tcase_add_test(tc, test_signature_rejections_and_rotation);
    tcase_add_test(tc, test_time_boundaries);
    tcase_add_test(tc, test_claim_rejections);
    tcase_add_test(tc, test_shape_rejections);
    tcase_add_test(tc, test_mint_bounds);
    suite_add_tcase(s, tc);
    return s;
}
