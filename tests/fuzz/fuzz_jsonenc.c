/* fuzz_jsonenc.c -- libFuzzer target: arbitrary bytes as a message body
 * under several content types through jsonenc_message(); the output must
 * always be one valid JSON object on one line (checked with jansson). */
#include <assert.h>
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "jsonenc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const types[] = {"application/json", "text/plain",
                                        "application/octet-stream", "application/ld+json"};
    const char *type = types[size ? data[0] % 4 : 0];
    msglog_msg m = {.id = 7, .time_ms = 1, .channel = "c", .type = type,
                    .body = size ? data + 1 : data, .len = size ? size - 1 : 0};
    buf b;
    json_error_t e;
    buf_init(&b);
    jsonenc_message(&b, &m);
    assert(!b.oom);
    assert(memchr(b.p, '\n', b.len) == NULL);
    json_t *v = json_loadb(b.p, b.len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
    assert(v && json_is_object(v));
    json_decref(v);
    buf_free(&b);
    return 0;
}
