/* token.h -- signed grants (JSON Web Tokens, HMAC only): verify the token a
 * client presents against the configured secrets, and mint one (the CLI).
 *
 * Pure: no I/O, no state, thread-safe.  HMAC, base64 and constant-time
 * comparison come from OpenSSL's libcrypto, JSON from jansson.
 */
#ifndef HOLDFAST_TOKEN_H
#define HOLDFAST_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_MAX 4096        /* bytes of a token; longer is TOKEN_MALFORMED */
#define TOKEN_PATTERN_MAX 128 /* bytes of one channel pattern */
#define TOKEN_MAX_PATTERNS 32 /* per list */

typedef enum { TOKEN_ALG_HS256 = 1u, TOKEN_ALG_HS384 = 2u, TOKEN_ALG_HS512 = 4u } token_alg;

typedef enum {
    TOKEN_OK = 0,
    TOKEN_MISSING,      /* none presented */
    TOKEN_MALFORMED,    /* shape, encoding, JSON, claim types, no exp, crit, length */
    TOKEN_ALGORITHM,    /* alg none, unknown, or not configured */
    TOKEN_SIGNATURE,    /* no configured secret verifies it */
    TOKEN_EXPIRED,      /* now > exp + leeway */
    TOKEN_NOT_YET_VALID /* now + leeway < nbf, or < iat */
} token_status;

/* What a valid token grants: channel patterns (fnmatch globs). */
typedef struct {
    char subscribe[TOKEN_MAX_PATTERNS][TOKEN_PATTERN_MAX + 1];
    int nsubscribe;
    char publish[TOKEN_MAX_PATTERNS][TOKEN_PATTERN_MAX + 1];
    int npublish;
    int64_t exp, nbf, iat; /* seconds; nbf and iat 0 when absent */
} token_grant;

typedef struct {
    const char *const *secrets; /* any one verifies */
    int nsecrets;
    unsigned algs;   /* token_alg bits accepted */
    int leeway_s;    /* clock leeway, >= 0 */
    int64_t now_s;   /* the caller's clock, unix seconds */
} token_keys;

/* Verify tok[0..len) and fill g.  The signature is checked before the
 * claims are parsed; `exp` is required; a token expires after exp + leeway
 * (exp == now is still valid).  A missing `holdfast` claim grants nothing. */
token_status token_verify(const char *tok, size_t len, const token_keys *k, token_grant *g);

/* "token_missing", "token_malformed", ... ("ok" for TOKEN_OK). */
const char *token_status_code(token_status s);

/* A sentence for the client that says nothing about the secrets. */
const char *token_status_reason(token_status s);

/* 1 when a pattern of the grant's publish (or subscribe) list matches. */
int token_grants(const token_grant *g, int publish, const char *channel);

/* A token granting subscribe (and publish when `publish`) on the patterns
 * for ttl_s seconds from now_s, NUL-terminated into out: its length, or -1
 * when it does not fit or an argument is wrong. */
int token_mint(const char *secret, token_alg alg, const char *const *patterns, int npatterns,
               int publish, int64_t now_s, int64_t ttl_s, char *out, size_t cap);

/* "HS256", "HS384", "HS512" (exactly) to a token_alg; 0 if none. */
token_alg token_alg_parse(const char *name);

#endif
