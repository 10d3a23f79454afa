/* jsonenc.h -- a growable byte buffer and the JSON encoders built on it:
 * escaped strings, base64, and the message object of the HTTP API.
 *
 * A buffer that fails to grow sets `oom` and ignores further writes, so a
 * caller checks once at the end instead of after every append. */
#ifndef HOLDFAST_JSONENC_H
#define HOLDFAST_JSONENC_H

#include <stddef.h>
#include <stdint.h>

#include "msglog.h"

typedef struct {
    char *p;
    size_t len;
    size_t cap;
    int oom;
} buf;

void buf_init(buf *b);
void buf_free(buf *b);
void buf_reset(buf *b); /* len = 0, keeps the memory */
void buf_put(buf *b, const void *s, size_t n);
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append the decimal form of v. */
void buf_int(buf *b, int64_t v);
/* NUL-terminate without counting the NUL in len; returns b->p or NULL on oom. */
const char *buf_cstr(buf *b);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int jsonenc_utf8_valid(const unsigned char *s, size_t n);

/* Append s[0..n) as a quoted JSON string; invalid UTF-8 bytes become U+FFFD. */
void jsonenc_string(buf *b, const char *s, size_t n);
void jsonenc_cstring(buf *b, const char *s);

/* Append s[0..n) base64-encoded (standard alphabet, padded), no quotes. */
void jsonenc_base64(buf *b, const unsigned char *s, size_t n);

/* 1 if the content type is JSON (application/json or +json, any params). */
int jsonenc_type_is_json(const char *type);
/* 1 if the content type is textual: text/..., JSON, XML, form data, or any
 * type with charset=utf-8. */
int jsonenc_type_is_text(const char *type);

/* 1 if s[0..n) parses as one JSON value (jansson). */
int jsonenc_valid(const char *s, size_t n);

/* Append the API's message object:
 *   {"id":..,"channel":..,"time":..,"type":..,"data":..[,"encoding":"base64"]}
 * data is the JSON value itself for a valid JSON body of a JSON type, a JSON
 * string for UTF-8 text, and base64 for anything else. */
void jsonenc_message(buf *b, const msglog_msg *m);

#endif
