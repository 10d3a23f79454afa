/* buf.c -- a growable byte buffer.
 *
 * Invariant: p[0..len) is the content and cap > len whenever p is set, so
 * there is always room for a NUL (buf_cstr).  A buffer that fails to grow
 * sets `oom` and ignores every later write: callers check once at the end. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(buf *b) {
    memset(b, 0, sizeof *b);
}

void buf_free(buf *b) {
    free(b->p);
    buf_init(b);
}

void buf_reset(buf *b) {
    b->len = 0;
}

/* Make room for n more bytes plus a NUL; 0 or -1 (and oom set). */
int buf_reserve(buf *b, size_t n) {
    if (b->oom)
        return -1;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void buf_put(buf *b, const void *s, size_t n) {
    if (n == 0 || buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void buf_puts(buf *b, const char *s) {
    buf_put(b, s, strlen(s));
}

void buf_putc(buf *b, char c) {
    if (buf_reserve(b, 1) == 0)
        b->p[b->len++] = c;
}

void buf_printf(buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_int(buf *b, int64_t v) {
    char tmp[24];
    int i = sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    buf_put(b, tmp + i, sizeof tmp - (size_t)i);
}

const char *buf_cstr(buf *b) {
    if (buf_reserve(b, 0))
        return NULL;
    b->p[b->len] = '\0';
    return b->p;
}
