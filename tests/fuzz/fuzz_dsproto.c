/* fuzz_dsproto.c -- libFuzzer target: arbitrary bytes through the Durable
 * Streams value parsers (offset, integer, RFC 3339 time, Stream-Closed,
 * content types) and the JSON-mode splitter.  Checks their promises: a
 * parsed offset prints back as the same token, a parsed time prints and
 * parses back to the same millisecond, and every message the splitter
 * reports lies inside the body, trimmed, and is itself valid JSON. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dsproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const char *body;
    size_t len;
    int n;
} split_state;

static void split_cb(void *ud, const char *s, size_t n) {
    split_state *st = ud;
    json_error_t e;
    assert(s >= st->body && s + n <= st->body + st->len);
    assert(n > 0 && s[0] != ' ' && s[n - 1] != ' ');
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
    assert(v);
    json_decref(v);
    st->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t pos, v, ms, ms2;
    char off[DSPROTO_OFFSET_LEN + 1], t[64];
    if (dsproto_offset_parse(s, size, &pos) == DSPROTO_OFFSET_AT) {
        dsproto_offset_format(pos, off);
        assert(size == DSPROTO_OFFSET_LEN && !memcmp(off, s, size));
    }
    if (dsproto_uint_parse(s, &v) == 0)
        assert(v >= 0 && v <= DSPROTO_INT_MAX);
    if (dsproto_time_parse(s, &ms) == 0 && ms >= 0 && ms < 253402300800000LL) {
        dsproto_time_format(ms, t);
        assert(dsproto_time_parse(t, &ms2) == 0 && ms2 == ms);
    }
    (void)dsproto_closed(s);
    (void)dsproto_type_json(s);
    (void)dsproto_type_text(s);
    (void)dsproto_type_same(s, "application/json");
    split_state st = {s, size, 0};
    int n = dsproto_json_split(s, size, split_cb, &st);
    assert(n == -1 ? st.n == 0 : n == st.n);
    free(s);
    return 0;
}
