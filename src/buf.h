/* buf.h -- a growable byte buffer (see buf.c).
 *
 * A buffer that fails to grow sets `oom` and ignores further writes, so a
 * caller checks once at the end instead of after every append. */
#ifndef HOLDFAST_BUF_H
#define HOLDFAST_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *p;
    size_t len;
    size_t cap;
    int oom;
} buf;

void buf_init(buf *b);
void buf_free(buf *b);
void buf_reset(buf *b); /* len = 0, keeps the memory */
/* Make room for n more bytes plus a NUL: 0, or -1 with oom set. */
int buf_reserve(buf *b, size_t n);
void buf_put(buf *b, const void *s, size_t n);
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append the decimal form of v. */
void buf_int(buf *b, int64_t v);
/* NUL-terminate without counting the NUL in len; returns b->p or NULL on oom. */
const char *buf_cstr(buf *b);

#endif
