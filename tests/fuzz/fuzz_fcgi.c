/* fuzz_fcgi.c -- libFuzzer target: arbitrary bytes as what a web server
 * sends on a FastCGI connection, fed to fcgi_proto_feed() in pieces whose
 * sizes come from the input, so the splits are fuzzed with the records.
 *
 * Input: byte 0 picks max_params, byte 1 max_body, bytes 2..7 are the
 * piece sizes (cycled; 0: all that is left, 1..127 bytes, 128..255:
 * (n - 127) * 512 bytes), the rest is the connection's byte stream
 * (tests/fuzz/make_fcgi_seeds.py writes seeds in this form).
 *
 * Checked after every call, as fcgi_proto.h promises:
 *   - never more consumed than given; FCGI_PROTO_MORE consumed it all;
 *   - PARAMS comes at most once, before DONE; then envp has nenv entries,
 *     each "NAME=value" with a non-empty name, and a NULL after them;
 *     params_over means nenv == 0;
 *   - body.len == min(stdin_len, max_body), body_over == (stdin_len >
 *     max_body);
 *   - error is set exactly with FCGI_PROTO_ERROR;
 *   - after DONE, ABORT or ERROR nothing more is consumed;
 *   - p->reply is whole, well-formed records of the types a responder
 *     sends (END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE), and at most
 *     twice the input: no amplification. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "fcgi_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t max_params_of[8] = {65536, 16, 100, 1000, 4096, 0, 8, 65535};
static const size_t max_body_of[8] = {65536, 0, 1, 10, 100, 1000, 4096, 65535};

/* Name-value pairs s[0..n) decode exactly (as fcgi_proto reads them). */
static int pairs_ok(const unsigned char *s, size_t n) {
    size_t off = 0;
    while (off < n) {
        uint64_t len[2];
        for (int i = 0; i < 2; i++) {
            if (off >= n)
                return 0;
            if (!(s[off] & 0x80)) {
                len[i] = s[off++];
                continue;
            }
            if (n - off < 4)
                return 0;
            len[i] = (uint64_t)(s[off] & 0x7f) << 24 | (uint64_t)s[off + 1] << 16 |
                     (uint64_t)s[off + 2] << 8 | s[off + 3];
            off += 4;
        }
        if (len[0] + len[1] > n - off)
            return 0;
        off += len[0] + len[1];
    }
    return 1;
}

/* The reply: whole records, version 1, of the types a responder sends. */
static void check_reply(const buf *r) {
    const unsigned char *s = (const unsigned char *)r->p;
    size_t off = 0;
    while (off < r->len) {
        assert(r->len - off >= 8);
        assert(s[off] == 1);
        int type = s[off + 1];
        size_t id = (size_t)(s[off + 2] << 8 | s[off + 3]);
        size_t len = (size_t)(s[off + 4] << 8 | s[off + 5]), pad = s[off + 6];
        assert(r->len - off - 8 >= len + pad);
        const unsigned char *c = s + off + 8;
        if (type == 3) { /* END_REQUEST: FCGI_CANT_MPX_CONN or FCGI_UNKNOWN_ROLE */
            assert(len == 8 && id != 0 && (c[4] == 1 || c[4] == 3));
        } else if (type == 10) { /* GET_VALUES_RESULT */
            assert(id == 0 && pairs_ok(c, len));
        } else {
            assert(type == 11 && id == 0 && len == 8); /* UNKNOWN_TYPE */
        }
        off += 8 + len + pad;
    }
}

static void check_state(const fcgi_proto *p, fcgi_proto_event ev, int params_seen) {
    uint64_t kept = p->stdin_len < p->max_body ? p->stdin_len : p->max_body;
    assert(p->body.len == kept);
    assert(p->body_over == (p->stdin_len > p->max_body));
    assert((ev == FCGI_PROTO_ERROR) == (p->error != NULL));
    assert(!p->body.oom);
    if (!params_seen)
        return;
    assert(p->params_done && p->envp);
    assert(p->nenv <= FCGI_PROTO_MAX_PARAMS);
    assert(!p->params_over || p->nenv == 0);
    for (size_t i = 0; i < p->nenv; i++) {
        assert(p->envp[i]);
        const char *eq = strchr(p->envp[i], '=');
        assert(eq && eq != p->envp[i]);
    }
    assert(p->envp[p->nenv] == NULL);
}

/* The size of piece i: see the header comment. */
static size_t piece_size(const uint8_t *sizes, size_t i, size_t left) {
    unsigned s = sizes[i % 6];
    size_t n = s == 0 ? left : s < 128 ? s : (size_t)(s - 127) * 512;
    return n < left ? n : left;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8)
        return 0;
    fcgi_proto p;
    fcgi_proto_init(&p, max_params_of[data[0] & 7], max_body_of[data[1] & 7]);
    const uint8_t *sizes = data + 2, *in = data + 8;
    size_t len = size - 8, off = 0;
    int params_seen = 0;
    fcgi_proto_event ev = FCGI_PROTO_MORE;
    for (size_t i = 0; off < len && ev != FCGI_PROTO_DONE && ev != FCGI_PROTO_ABORT &&
                       ev != FCGI_PROTO_ERROR; i++) {
        size_t n = piece_size(sizes, i, len - off), used = SIZE_MAX;
        ev = fcgi_proto_feed(&p, in + off, n, &used);
        assert(used <= n);
        assert(ev != FCGI_PROTO_MORE || used == n);
        assert(ev != FCGI_PROTO_PARAMS || !params_seen);
        assert(ev != FCGI_PROTO_DONE || params_seen);
        params_seen |= ev == FCGI_PROTO_PARAMS;
        off += used;
        check_state(&p, ev, params_seen);
    }
    if (ev == FCGI_PROTO_DONE || ev == FCGI_PROTO_ABORT || ev == FCGI_PROTO_ERROR) {
        /* what is left (or one more byte) belongs to the next request */
        static const unsigned char one[1] = {1};
        size_t used = SIZE_MAX, before = p.stdin_len;
        fcgi_proto_feed(&p, off < len ? in + off : one, off < len ? len - off : 1, &used);
        assert(used == 0);
        assert(p.stdin_len == before);
    }
    check_reply(&p.reply);
    assert(p.reply.len <= 2 * size + 16);
    fcgi_proto_free(&p);
    return 0;
}
