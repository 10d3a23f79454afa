/* fuzz_token.c -- libFuzzer target: arbitrary bytes as a presented token.
 * token_verify() must never crash or read past the input; a token it
 * accepts has an exp, patterns within their bounds, and grants only what
 * its lists say. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const secrets[] = {"fuzz-secret-one-0123456789abcdef-0123",
                                          "fuzz-secret-two-0123456789abcdef-0123"};
    static token_grant g;
    token_keys k = {.secrets = secrets, .nsecrets = 2, .algs = 7, .leeway_s = 5,
                    .now_s = 1800000000};
    char *tok = malloc(size ? size : 1);
    memcpy(tok, data, size); /* exactly size bytes: no NUL to lean on */
    token_status st = token_verify(tok, size, &k, &g);
    assert(st >= TOKEN_OK && st <= TOKEN_NOT_YET_VALID);
    assert(token_status_code(st) && token_status_reason(st));
    if (st == TOKEN_OK) {
        assert(g.nsubscribe >= 0 && g.nsubscribe <= TOKEN_MAX_PATTERNS);
        assert(g.npublish >= 0 && g.npublish <= TOKEN_MAX_PATTERNS);
        for (int i = 0; i < g.nsubscribe; i++)
            assert(strlen(g.subscribe[i]) >= 1 && strlen(g.subscribe[i]) <= TOKEN_PATTERN_MAX);
        token_grants(&g, 0, "chat.lobby");
        token_grants(&g, 1, "chat.lobby");
    } else {
        assert(g.nsubscribe == 0 && g.npublish == 0);
    }
    free(tok);
    return 0;
}
