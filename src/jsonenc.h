/* jsonenc.h -- the JSON encoders of the HTTP API, on buf.h's buffers:
 * escaped strings, base64, and the message object. */
#ifndef HOLDFAST_JSONENC_H
#define HOLDFAST_JSONENC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "msglog.h"

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
