/* fuzz_request.c -- libFuzzer target: arbitrary bytes as a CGI parameter set
 * (entries separated by NUL, "NAME=value") through request_parse().  Checks
 * the parser's promises: it never crashes, an error has a 4xx/5xx status
 * and a NUL-terminated detail, a subscribe's channels are all valid, and a
 * publish's Content-Type is one msglog accepts (no CR/LF, at most 255 bytes),
 * and a stream request's fields are within the protocol's bounds (the Host
 * it echoes in Location carries no line break). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static request r;
    char *copy = malloc(size + 1), *env[64];
    size_t n = 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    for (char *p = copy; p < copy + size && n < 63; p += strlen(p) + 1)
        env[n++] = p;
    env[n] = NULL;
    request_limits lim = {.max_channels = 16, .max_body = 65536, .poll_timeout_s = 25,
                          .max_poll_timeout_s = 55, .batch_limit = 1000,
                          .streams_poll_timeout_s = 30};
    request_route route = request_parse(&r, env, &lim);
    if (route == ROUTE_ERROR) {
        assert(r.status >= 400 && r.status < 600);
        assert(memchr(r.detail, '\0', sizeof r.detail));
    } else if (route == ROUTE_SUB) {
        assert(r.nchannels >= 1 && r.nchannels <= 16);
        for (size_t i = 0; i < r.nchannels; i++)
            assert(msglog_channel_valid(r.channels[i], strlen(r.channels[i])));
        assert(r.timeout_s >= 0 && r.timeout_s <= 55);
        assert(r.limit >= 1 && r.limit <= 1000);
    } else if (route == ROUTE_STREAM) {
        /* a stream is a valid channel; a live read has an offset and a bound */
        assert(r.nchannels == 1 && msglog_channel_valid(r.channel, strlen(r.channel)));
        assert(!strcmp(r.channel, r.ds.name));
        assert(strlen(r.ds.name) >= 1 && strlen(r.ds.name) <= DSPROTO_NAME_MAX);
        assert(!r.content_type || msglog_type_valid(r.content_type));
        assert(r.ds.ttl_s < 0 || r.ds.expires_ms < 0);
        assert(!r.ds.pid || (r.ds.pepoch <= DSPROTO_INT_MAX && r.ds.pseq <= DSPROTO_INT_MAX));
        assert(!strpbrk(r.ds.host, "\r\n"));
        assert(r.timeout_s >= 0 && r.timeout_s <= 55);
    } else if (route == ROUTE_PUB) {
        /* Only a type msglog stores (and a proxy can carry) gets through. */
        assert(msglog_channel_valid(r.channel, strlen(r.channel)));
        assert(!r.content_type || msglog_type_valid(r.content_type));
        assert(!r.content_type || strlen(r.content_type) <= MSGLOG_TYPE_MAX);
        assert(!r.content_type || !strpbrk(r.content_type, "\r\n"));
    }
    free(copy);
    return 0;
}
