/* token.c -- JSON Web Tokens (compact JWS, HS256/HS384/HS512) for holdfast.
 *
 * Invariant: nothing of a token is believed before its signature verifies
 * with one of the configured secrets under an algorithm the configuration
 * accepts; only the header is parsed before that, to learn the algorithm.
 * Every comparison of secret-derived bytes is CRYPTO_memcmp.  base64url is
 * translated to standard base64 and decoded by OpenSSL (EVP_DecodeBlock);
 * HMAC is OpenSSL's.
 */
#include "token.h"

#include <fnmatch.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    token_alg alg;
} token_algs[] = {{"HS256", TOKEN_ALG_HS256}, {"HS384", TOKEN_ALG_HS384},
                  {"HS512", TOKEN_ALG_HS512}};

token_alg token_alg_parse(const char *name) {
    for (size_t i = 0; i < sizeof token_algs / sizeof token_algs[0]; i++)
        if (name && !strcmp(name, token_algs[i].name))
            return token_algs[i].alg;
    return 0;
}

static const EVP_MD *token_md(token_alg a) {
    return a == TOKEN_ALG_HS256 ? EVP_sha256()
           : a == TOKEN_ALG_HS384 ? EVP_sha384()
           : a == TOKEN_ALG_HS512 ? EVP_sha512() : NULL;
}

static const char *token_alg_name(token_alg a) {
    for (size_t i = 0; i < sizeof token_algs / sizeof token_algs[0]; i++)
        if (token_algs[i].alg == a)
            return token_algs[i].name;
    return NULL;
}

const char *token_status_code(token_status s) {
    switch (s) {
    case TOKEN_OK: return "ok";
    case TOKEN_MISSING: return "token_missing";
    case TOKEN_MALFORMED: return "token_malformed";
    case TOKEN_ALGORITHM: return "token_algorithm";
    case TOKEN_SIGNATURE: return "token_signature";
    case TOKEN_EXPIRED: return "token_expired";
    case TOKEN_NOT_YET_VALID: return "token_not_yet_valid";
    }
    return "token_malformed";
}

const char *token_status_reason(token_status s) {
    switch (s) {
    case TOKEN_OK: return "the token is valid";
    case TOKEN_MISSING: return "this channel needs a token";
    case TOKEN_MALFORMED: return "the token is not a well-formed JWT with an exp claim";
    case TOKEN_ALGORITHM: return "the token's algorithm is not one this server accepts";
    case TOKEN_SIGNATURE: return "the token's signature does not verify";
    case TOKEN_EXPIRED: return "the token expired";
    case TOKEN_NOT_YET_VALID: return "the token is not valid yet (nbf or iat)";
    }
    return "the token is not valid";
}

/* ---- base64url ------------------------------------------------------------ */

/* Decode a base64url part (no padding) into out; its length, or -1.  The
 * text is translated to standard base64 with padding; OpenSSL decodes. */
static int token_b64_decode(const char *s, size_t n, unsigned char *out, size_t cap) {
    char std[TOKEN_MAX + 4];
    if (n % 4 == 1 || n + 4 > sizeof std)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return -1; /* '+', '/', '=', whitespace: not base64url */
        std[i] = c;
    }
    size_t pad = (4 - n % 4) % 4, m = n + pad;
    memset(std + n, '=', pad);
    if (m / 4 * 3 > cap)
        return -1;
    int got = EVP_DecodeBlock(out, (const unsigned char *)std, (int)m);
    return got < 0 ? -1 : got - (int)pad;
}

/* Encode into out (NUL-terminated) as base64url without padding; length or -1. */
static int token_b64_encode(const unsigned char *p, size_t n, char *out, size_t cap) {
    if ((n + 2) / 3 * 4 + 1 > cap)
        return -1;
    int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return len;
}

/* ---- verification --------------------------------------------------------- */

static json_t *token_json(const char *s, size_t n) {
    unsigned char raw[TOKEN_MAX];
    int len = token_b64_decode(s, n, raw, sizeof raw);
    if (len <= 0)
        return NULL;
    json_t *j = json_loadb((const char *)raw, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A NumericDate claim: 1 if present and a number (into *out), 0 if absent,
 * -1 if of another type. */
static int token_time(json_t *claims, const char *name, int64_t *out) {
    json_t *v = json_object_get(claims, name);
    if (!v)
        return 0;
    if (json_is_integer(v))
        *out = (int64_t)json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) > -9e15 && json_real_value(v) < 9e15)
        *out = (int64_t)json_real_value(v);
    else
        return -1;
    return 1;
}

/* Copy a list of patterns; -1 if it is not an array of 1..PATTERN_MAX-byte strings. */
static int token_patterns(json_t *list, char (*dst)[TOKEN_PATTERN_MAX + 1], int *n) {
    size_t i;
    json_t *v;
    *n = 0;
    if (!list)
        return 0;
    if (!json_is_array(list) || json_array_size(list) > TOKEN_MAX_PATTERNS)
        return -1;
    json_array_foreach(list, i, v) {
        size_t len = json_is_string(v) ? json_string_length(v) : 0;
        const char *s = json_string_value(v);
        if (len < 1 || len > TOKEN_PATTERN_MAX || memchr(s, '\0', len))
            return -1;
        memcpy(dst[*n], s, len + 1);
        (*n)++;
    }
    return 0;
}

/* The header's algorithm, after its checks. */
static token_status token_header(const char *s, size_t n, token_alg *alg, unsigned accepted) {
    json_t *h = token_json(s, n);
    if (!h)
        return TOKEN_MALFORMED;
    json_t *a = json_object_get(h, "alg"), *typ = json_object_get(h, "typ");
    token_status st = TOKEN_OK;
    if (!json_is_string(a) || json_object_get(h, "crit") ||
        (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT"))))
        st = TOKEN_MALFORMED;
    else if (!(*alg = token_alg_parse(json_string_value(a))) || !(accepted & (unsigned)*alg))
        st = TOKEN_ALGORITHM; /* "none", RS256, or one not configured */
    json_decref(h);
    return st;
}

static token_status token_signature(const char *tok, size_t signed_len, const char *sig,
                                    size_t siglen, token_alg alg, const token_keys *k) {
    unsigned char want[EVP_MAX_MD_SIZE], have[EVP_MAX_MD_SIZE + 3];
    unsigned int wlen = 0;
    const EVP_MD *md = token_md(alg);
    int hlen = token_b64_decode(sig, siglen, have, sizeof have);
    if (hlen != EVP_MD_get_size(md))
        return TOKEN_MALFORMED;
    int ok = 0;
    for (int i = 0; i < k->nsecrets; i++) {
        const char *secret = k->secrets[i];
        if (HMAC(md, secret, (int)strlen(secret), (const unsigned char *)tok, signed_len, want,
                 &wlen) && (int)wlen == hlen)
            ok |= CRYPTO_memcmp(want, have, wlen) == 0;
    }
    return ok ? TOKEN_OK : TOKEN_SIGNATURE;
}

static token_status token_claims(json_t *c, const token_keys *k, token_grant *g) {
    int e = token_time(c, "exp", &g->exp);
    int nb = token_time(c, "nbf", &g->nbf), ia = token_time(c, "iat", &g->iat);
    if (e != 1 || nb < 0 || ia < 0)
        return TOKEN_MALFORMED;
    if (k->now_s - k->leeway_s > g->exp)
        return TOKEN_EXPIRED;
    if ((nb && k->now_s + k->leeway_s < g->nbf) || (ia && k->now_s + k->leeway_s < g->iat))
        return TOKEN_NOT_YET_VALID;
    json_t *hf = json_object_get(c, "holdfast");
    if (!hf)
        return TOKEN_OK; /* valid, grants nothing */
    if (!json_is_object(hf) ||
        token_patterns(json_object_get(hf, "subscribe"), g->subscribe, &g->nsubscribe) ||
        token_patterns(json_object_get(hf, "publish"), g->publish, &g->npublish))
        return TOKEN_MALFORMED;
    return TOKEN_OK;
}

token_status token_verify(const char *tok, size_t len, const token_keys *k, token_grant *g) {
    memset(g, 0, sizeof *g);
    if (!tok || len == 0)
        return TOKEN_MISSING;
    if (len > TOKEN_MAX || memchr(tok, '\0', len))
        return TOKEN_MALFORMED;
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        return TOKEN_MALFORMED; /* not three parts */
    token_alg alg = 0;
    token_status st = token_header(tok, (size_t)(d1 - tok), &alg, k->algs);
    if (st != TOKEN_OK)
        return st;
    st = token_signature(tok, (size_t)(d2 - tok), d2 + 1, len - (size_t)(d2 + 1 - tok), alg, k);
    if (st != TOKEN_OK)
        return st;
    json_t *claims = token_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!claims)
        return TOKEN_MALFORMED;
    st = token_claims(claims, k, g);
    json_decref(claims);
    if (st != TOKEN_OK)
        memset(g, 0, sizeof *g);
    return st;
}

int token_grants(const token_grant *g, int publish, const char *channel) {
    int n = publish ? g->npublish : g->nsubscribe;
    for (int i = 0; i < n; i++)
        if (fnmatch(publish ? g->publish[i] : g->subscribe[i], channel, 0) == 0)
            return 1;
    return 0;
}

/* ---- minting -------------------------------------------------------------- */

int token_mint(const char *secret, token_alg alg, const char *const *patterns, int npatterns,
               int publish, int64_t now_s, int64_t ttl_s, char *out, size_t cap) {
    const EVP_MD *md = token_md(alg);
    if (!md || !secret || npatterns < 0 || npatterns > TOKEN_MAX_PATTERNS || ttl_s < 0)
        return -1;
    json_t *list = json_array(), *grant = json_object(), *claims = json_object();
    for (int i = 0; i < npatterns; i++)
        json_array_append_new(list, json_string(patterns[i]));
    if (publish)
        json_object_set(grant, "publish", list);
    json_object_set_new(grant, "subscribe", list);
    json_object_set_new(claims, "exp", json_integer((json_int_t)(now_s + ttl_s)));
    json_object_set_new(claims, "iat", json_integer((json_int_t)now_s));
    json_object_set_new(claims, "holdfast", grant);
    char head[64];
    snprintf(head, sizeof head, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", token_alg_name(alg));
    char *body = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(claims);
    int rc = -1, a, b, c;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (body && (a = token_b64_encode((const unsigned char *)head, strlen(head), out, cap)) > 0 &&
        (size_t)a + 1 < cap) {
        out[a] = '.';
        b = token_b64_encode((const unsigned char *)body, strlen(body), out + a + 1,
                             cap - (size_t)a - 1);
        if (b > 0 && (size_t)(a + 1 + b) + 1 < cap &&
            HMAC(md, secret, (int)strlen(secret), (const unsigned char *)out, (size_t)(a + 1 + b),
                 mac, &maclen)) {
            out[a + 1 + b] = '.';
            c = token_b64_encode(mac, maclen, out + a + b + 2, cap - (size_t)(a + b + 2));
            if (c > 0)
                rc = a + b + 2 + c;
        }
    }
    free(body);
    return rc;
}
