/* lpjson.c -- the load tool's minimal JSON walker (see lpjson.h).
 *
 * A cursor moves over the text; each skip_* consumes exactly one value and
 * fails on anything malformed, with nesting capped at LPJSON_DEPTH so a
 * hostile answer cannot exhaust the stack.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "lpjson.h"

#include <stdlib.h>
#include <string.h>

#define LPJSON_DEPTH 64

typedef struct {
    const char *s;
    size_t n;
    size_t i;
    int depth;
} cursor;

static void ws(cursor *c)
{
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                           c->s[c->i] == '\r'))
        c->i++;
}

static int peek(cursor *c)
{
    ws(c);
    return c->i < c->n ? (unsigned char)c->s[c->i] : -1;
}

static int expect(cursor *c, char ch)
{
    if (peek(c) != (unsigned char)ch)
        return -1;
    c->i++;
    return 0;
}

/* A string at the cursor: its raw contents in *start, *len. */
static int skip_string(cursor *c, const char **start, size_t *len)
{
    if (expect(c, '"'))
        return -1;
    size_t from = c->i;
    while (c->i < c->n && c->s[c->i] != '"') {
        if ((unsigned char)c->s[c->i] < 0x20)
            return -1;
        c->i += c->s[c->i] == '\\' ? 2 : 1;
    }
    if (c->i >= c->n)
        return -1;
    if (start)
        *start = c->s + from;
    if (len)
        *len = c->i - from;
    c->i++;
    return 0;
}

/* A number or literal: the run of [-+.0-9a-zA-Z]. */
static int skip_scalar(cursor *c, const char **start, size_t *len)
{
    ws(c);
    size_t from = c->i;
    while (c->i < c->n && (strchr("+-.", c->s[c->i]) || (c->s[c->i] >= '0' && c->s[c->i] <= '9') ||
                           (c->s[c->i] >= 'a' && c->s[c->i] <= 'z') ||
                           (c->s[c->i] >= 'A' && c->s[c->i] <= 'Z')))
        c->i++;
    if (c->i == from)
        return -1;
    *start = c->s + from;
    *len = c->i - from;
    return 0;
}

static int skip_value(cursor *c);

/* An object or array (open/close brackets); values only when !keyed. */
static int skip_container(cursor *c, char open, char close, int keyed)
{
    if (expect(c, open) || ++c->depth > LPJSON_DEPTH)
        return -1;
    if (peek(c) == (unsigned char)close) {
        c->i++;
        c->depth--;
        return 0;
    }
    for (;;) {
        if (keyed && (skip_string(c, NULL, NULL) || expect(c, ':')))
            return -1;
        if (skip_value(c))
            return -1;
        int ch = peek(c);
        c->i++;
        if (ch == (unsigned char)close)
            break;
        if (ch != ',')
            return -1;
    }
    c->depth--;
    return 0;
}

static int skip_value(cursor *c)
{
    const char *s;
    size_t n;
    switch (peek(c)) {
    case '{':
        return skip_container(c, '{', '}', 1);
    case '[':
        return skip_container(c, '[', ']', 0);
    case '"':
        return skip_string(c, NULL, NULL);
    default:
        return skip_scalar(c, &s, &n);
    }
}

static int scalar_int(cursor *c, int64_t *v)
{
    const char *s;
    size_t n;
    char tmp[32];
    if (peek(c) == '"' || skip_scalar(c, &s, &n) || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    long long x = strtoll(tmp, &end, 10);
    if (*end)
        return -1;
    *v = x;
    return 0;
}

static int scalar_true(cursor *c, int *v)
{
    const char *s;
    size_t n;
    if (skip_scalar(c, &s, &n))
        return -1;
    *v = n == 4 && memcmp(s, "true", 4) == 0;
    return 0;
}

static int key_is(const char *k, size_t kl, const char *want)
{
    return strlen(want) == kl && memcmp(k, want, kl) == 0;
}

/* One element of "messages". */
static int walk_message(cursor *c, lpjson_msg_fn fn, void *ud)
{
    lpjson_msg m = {.id = -1, .data = "", .data_len = 0, .data_is_string = 0};
    if (expect(c, '{') || ++c->depth > LPJSON_DEPTH)
        return -1;
    int ch = peek(c);
    while (ch != '}') {
        const char *k;
        size_t kl;
        if (skip_string(c, &k, &kl) || expect(c, ':'))
            return -1;
        int rc;
        if (key_is(k, kl, "id")) {
            rc = scalar_int(c, &m.id);
        } else if (key_is(k, kl, "data") && peek(c) == '"') {
            rc = skip_string(c, &m.data, &m.data_len);
            m.data_is_string = 1;
        } else if (key_is(k, kl, "data")) {
            ws(c);
            size_t from = c->i;
            rc = skip_value(c);
            m.data = c->s + from;
            m.data_len = c->i - from;
        } else {
            rc = skip_value(c);
        }
        if (rc)
            return -1;
        ch = peek(c);
        if (ch != ',' && ch != '}')
            return -1;
        if (ch == ',') {
            c->i++;
            ch = peek(c);
        }
    }
    c->i++;
    c->depth--;
    if (fn)
        fn(ud, &m);
    return 0;
}

static int walk_messages(cursor *c, lpjson_poll *out, lpjson_msg_fn fn, void *ud)
{
    if (expect(c, '['))
        return -1;
    if (peek(c) == ']') {
        c->i++;
        return 0;
    }
    for (;;) {
        if (walk_message(c, fn, ud))
            return -1;
        out->nmessages++;
        int ch = peek(c);
        c->i++;
        if (ch == ']')
            return 0;
        if (ch != ',')
            return -1;
    }
}

/* One top-level member of the poll answer. */
static int walk_member(cursor *c, lpjson_poll *out, lpjson_msg_fn fn, void *ud)
{
    const char *k, *v;
    size_t kl, vl;
    if (skip_string(c, &k, &kl) || expect(c, ':'))
        return -1;
    if (key_is(k, kl, "cursor")) {
        out->has_cursor = 1;
        return scalar_int(c, &out->cursor);
    }
    if (key_is(k, kl, "epoch") && peek(c) == '"') {
        if (skip_string(c, &v, &vl))
            return -1;
        if (vl <= LPJSON_EPOCH_MAX) {
            memcpy(out->epoch, v, vl);
            out->epoch[vl] = '\0';
        }
        return 0;
    }
    if (key_is(k, kl, "gap"))
        return scalar_true(c, &out->gap);
    if (key_is(k, kl, "reset"))
        return scalar_true(c, &out->reset);
    if (key_is(k, kl, "messages"))
        return walk_messages(c, out, fn, ud);
    return skip_value(c);
}

int lpjson_poll_parse(const char *s, size_t n, lpjson_poll *out, lpjson_msg_fn fn, void *ud)
{
    cursor c = {.s = s, .n = n, .i = 0, .depth = 0};
    memset(out, 0, sizeof *out);
    if (!s || expect(&c, '{'))
        return -1;
    if (peek(&c) == '}')
        return 0;
    for (;;) {
        if (walk_member(&c, out, fn, ud))
            return -1;
        int ch = peek(&c);
        c.i++;
        if (ch == '}')
            break;
        if (ch != ',')
            return -1;
    }
    return peek(&c) == -1 ? 0 : -1;
}

/* Point just after `"key"` + optional blanks + ':' + blanks, or NULL. */
static const char *key_value(const char *s, const char *key, const char **resume)
{
    size_t kl = strlen(key);
    for (const char *p = strchr(s, '"'); p; p = strchr(p + 1, '"')) {
        if (strncmp(p + 1, key, kl) != 0 || p[1 + kl] != '"')
            continue;
        const char *q = p + 2 + kl;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        if (*q != ':')
            continue;
        q++;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        *resume = q;
        return q;
    }
    return NULL;
}

int lpjson_int_sum(const char *s, const char *key, int64_t *sum)
{
    int found = 0;
    int64_t total = 0;
    const char *v;
    while ((v = key_value(s, key, &s)) != NULL) {
        char *end;
        if (*v == '[') {
            for (v++; *v && *v != ']'; v = end) {
                long long x = strtoll(v, &end, 10);
                if (end == v)
                    end = (char *)v + 1;
                else
                    total += x;
            }
            found++;
            continue;
        }
        long long x = strtoll(v, &end, 10);
        if (end != v) {
            total += x;
            found++;
        }
    }
    if (found)
        *sum = total;
    return found;
}

int lpjson_str_find(const char *s, const char *key, char *out, size_t cap)
{
    const char *v = key_value(s, key, &s);
    if (!v || *v != '"')
        return -1;
    const char *end = strchr(v + 1, '"');
    if (!end || (size_t)(end - v - 1) >= cap)
        return -1;
    memcpy(out, v + 1, (size_t)(end - v - 1));
    out[end - v - 1] = '\0';
    return 0;
}
