/* jsonenc.c -- the JSON encoders of holdfast's answers.
 *
 * Written for speed (a batch is encoded once and sent to many waiters), and
 * kept honest by tests that parse every shape it emits with jansson. */
#include "jsonenc.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int jsonenc_utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

void jsonenc_string(buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    buf_putc(b, '"');
    while (i < n) {
        unsigned char c = u[i];
        size_t k = c >= 0x20 && c != '"' && c != '\\' ? utf8_seq(u + i, n - i) : 0;
        if (k) {
            i += k;
            continue;
        }
        buf_put(b, u + run, i - run); /* flush the clean run before c */
        if (c >= 0x80) {
            buf_puts(b, "\xef\xbf\xbd"); /* U+FFFD for an invalid byte */
        } else if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_put(b, esc, 2);
        } else if (c == '\n') {
            buf_puts(b, "\\n");
        } else if (c == '\t') {
            buf_puts(b, "\\t");
        } else if (c == '\r') {
            buf_puts(b, "\\r");
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_put(b, esc, 6);
        }
        run = ++i;
    }
    buf_put(b, u + run, n - run);
    buf_putc(b, '"');
}

void jsonenc_cstring(buf *b, const char *s) {
    jsonenc_string(b, s, strlen(s));
}

void jsonenc_base64(buf *b, const unsigned char *s, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (buf_reserve(b, (n + 2) / 3 * 4))
        return;
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
}

/* The media type without parameters, lower-cased, into out. */
static void jsonenc_media(const char *type, char *out, size_t cap) {
    size_t i = 0;
    while (type && type[i] && type[i] != ';' && type[i] != ' ' && i + 1 < cap) {
        char c = type[i];
        out[i++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[i] = '\0';
}

int jsonenc_type_is_json(const char *type) {
    char m[128];
    jsonenc_media(type, m, sizeof m);
    size_t n = strlen(m);
    return !strcmp(m, "application/json") || (n > 5 && !strcmp(m + n - 5, "+json"));
}

int jsonenc_type_is_text(const char *type) {
    static const char *const textual[] = {"application/x-www-form-urlencoded",
                                          "application/xml", "application/javascript",
                                          "application/ecmascript"};
    char m[128];
    jsonenc_media(type, m, sizeof m);
    size_t n = strlen(m);
    if (!strncmp(m, "text/", 5) || jsonenc_type_is_json(type) ||
        (n > 4 && !strcmp(m + n - 4, "+xml")) ||
        (type && strcasestr(type, "charset=utf-8") != NULL))
        return 1;
    for (size_t i = 0; i < sizeof textual / sizeof textual[0]; i++)
        if (!strcmp(m, textual[i]))
            return 1;
    return 0;
}

int jsonenc_valid(const char *s, size_t n) {
    json_error_t e;
    /* Integers beyond 64 bits are valid JSON (ids often are): read them as
     * reals instead of refusing the document. */
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
    if (!v)
        return 0;
    json_decref(v);
    return 1;
}

/* Copy a valid JSON text without its line breaks: they can only be
 * insignificant white space (a JSON string cannot hold a raw one), and the
 * CLI and SSE need one message per line. */
static void json_copy_oneline(buf *b, const unsigned char *s, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\n' && s[i] != '\r')
            continue;
        buf_put(b, s + run, i - run);
        run = i + 1;
    }
    buf_put(b, s + run, n - run);
}

void jsonenc_message(buf *b, const msglog_msg *m) {
    buf_puts(b, "{\"id\":");
    buf_int(b, m->id);
    buf_puts(b, ",\"channel\":");
    jsonenc_cstring(b, m->channel);
    buf_puts(b, ",\"time\":");
    buf_int(b, m->time_ms);
    buf_puts(b, ",\"type\":");
    jsonenc_cstring(b, m->type);
    buf_puts(b, ",\"data\":");
    if (jsonenc_type_is_json(m->type) && jsonenc_valid((const char *)m->body, m->len)) {
        json_copy_oneline(b, m->body, m->len);
    } else if (jsonenc_type_is_text(m->type) && jsonenc_utf8_valid(m->body, m->len)) {
        jsonenc_string(b, (const char *)m->body, m->len);
    } else {
        buf_putc(b, '"');
        jsonenc_base64(b, m->body, m->len);
        buf_puts(b, "\",\"encoding\":\"base64\"");
    }
    if (m->key) {
        buf_puts(b, ",\"key\":");
        jsonenc_cstring(b, m->key);
    }
    buf_putc(b, '}');
}
