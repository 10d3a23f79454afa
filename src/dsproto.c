/* dsproto.c -- the Durable Streams protocol's values (see dsproto.h).
 *
 * OFFSETS.  A position is a message id of the log (THE CURSOR RULE in
 * msglog.c): the offset after a stream's last message is that message's
 * id, so offsets increase strictly with every append, forks share their
 * source's offsets below the fork point, and a fork's own appends get ids
 * above it.  The token is "0000000000000000_" then the id in 16 digits:
 * fixed width, so string order is numeric order, and never "-1" or "now".
 */
#include "dsproto.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#define DSPROTO_OFFSET_HIGH "0000000000000000_"
#define DSPROTO_CURSOR_EPOCH_MS 1728432000000LL /* 2024-10-09T00:00:00Z */
#define DSPROTO_CURSOR_INTERVAL_MS 20000LL

dsproto_offset dsproto_offset_parse(const char *s, size_t n, int64_t *pos) {
    if (n == 2 && !memcmp(s, "-1", 2))
        return DSPROTO_OFFSET_START;
    if (n == 3 && !memcmp(s, "now", 3))
        return DSPROTO_OFFSET_NOW;
    if (n != DSPROTO_OFFSET_LEN || memcmp(s, DSPROTO_OFFSET_HIGH, 17))
        return DSPROTO_OFFSET_BAD;
    int64_t v = 0;
    for (size_t i = 17; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return DSPROTO_OFFSET_BAD;
        v = v * 10 + (s[i] - '0');
    }
    *pos = v;
    return DSPROTO_OFFSET_AT;
}

void dsproto_offset_format(int64_t pos, char out[DSPROTO_OFFSET_LEN + 1]) {
    snprintf(out, DSPROTO_OFFSET_LEN + 1, DSPROTO_OFFSET_HIGH "%016lld", (long long)pos);
}

int dsproto_uint_parse(const char *s, int64_t *out) {
    size_t n = s ? strlen(s) : 0;
    int64_t v = 0;
    if (n == 0 || n > 16 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > DSPROTO_INT_MAX)
        return -1;
    *out = v;
    return 0;
}

/* n digits at s into *v: 0 or -1. */
static int dsproto_digits(const char *s, int n, int *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t dsproto_days(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int dsproto_time_parse(const char *s, int64_t *ms) {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se, frac = 0, oh = 0, om = 0, sign = 0;
    size_t n = s ? strlen(s) : 0;
    if (n < 20 || dsproto_digits(s, 4, &y) || s[4] != '-' || dsproto_digits(s + 5, 2, &mo) ||
        s[7] != '-' || dsproto_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        dsproto_digits(s + 11, 2, &h) || s[13] != ':' || dsproto_digits(s + 14, 2, &mi) ||
        s[16] != ':' || dsproto_digits(s + 17, 2, &se))
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        int k = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, k++)
            if (k < 3)
                frac = frac * 10 + (*p - '0');
        if (k == 0)
            return -1;
        for (; k < 3; k++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        if (dsproto_digits(p + 1, 2, &oh) || p[3] != ':' || dsproto_digits(p + 4, 2, &om))
            return -1;
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && (y % 4 || (y % 100 == 0 && y % 400))) || h > 23 || mi > 59 ||
        se > 60 || oh > 23 || om > 59)
        return -1;
    int64_t secs = dsproto_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + se -
                   sign * (oh * 3600 + om * 60);
    *ms = secs * 1000 + frac;
    return 0;
}

void dsproto_time_format(int64_t ms, char out[64]) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int dsproto_closed(const char *v) {
    return v && !strcasecmp(v, "true");
}

/* The length of the media type (before parameters and blanks). */
static size_t dsproto_type_len(const char *t) {
    size_t n = strcspn(t, "; \t");
    return n;
}

int dsproto_type_same(const char *a, const char *b) {
    size_t na = dsproto_type_len(a), nb = dsproto_type_len(b);
    return na == nb && !strncasecmp(a, b, na);
}

int dsproto_type_json(const char *type) {
    return type && dsproto_type_same(type, "application/json");
}

int dsproto_type_text(const char *type) {
    return type && (!strncasecmp(type, "text/", 5) || dsproto_type_json(type));
}

static int dsproto_blank(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Report s[a..b) trimmed. */
static void dsproto_emit(const char *s, size_t a, size_t b,
                         void (*fn)(void *, const char *, size_t), void *ud) {
    while (a < b && dsproto_blank(s[a]))
        a++;
    while (b > a && dsproto_blank(s[b - 1]))
        b--;
    fn(ud, s + a, b - a);
}

int dsproto_json_split(const char *body, size_t len,
                       void (*fn)(void *ud, const char *s, size_t n), void *ud) {
    json_error_t e;
    json_t *v =
        json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
    if (!v)
        return -1;
    int is_array = json_is_array(v);
    json_decref(v);
    if (!is_array) {
        dsproto_emit(body, 0, len, fn, ud);
        return 1;
    }
    /* A valid array: its elements are where depth is 1, outside strings. */
    size_t i = 0, start = 0;
    int depth = 0, instr = 0, count = 0, any = 0;
    for (; i < len; i++) {
        char c = body[i];
        if (instr) {
            if (c == '\\')
                i++;
            else if (c == '"')
                instr = 0;
            continue;
        }
        if (c == '"') {
            instr = 1;
            any |= depth == 1;
        } else if (c == '[' || c == '{') {
            if (depth++ == 0) {
                start = i + 1;
                continue;
            }
            any |= depth == 2;
        } else if (c == ']' || c == '}') {
            if (--depth == 0) {
                if (any) {
                    dsproto_emit(body, start, i, fn, ud);
                    count++;
                }
                break;
            }
        } else if (c == ',' && depth == 1) {
            dsproto_emit(body, start, i, fn, ud);
            count++;
            start = i + 1;
            any = 0;
        } else if (!dsproto_blank(c) && depth == 1) {
            any = 1;
        }
    }
    return count;
}

int64_t dsproto_cursor(int64_t now_ms, int64_t client, uint64_t noise) {
    int64_t interval = (now_ms - DSPROTO_CURSOR_EPOCH_MS) / DSPROTO_CURSOR_INTERVAL_MS;
    if (client >= interval)
        return client + 1 + (int64_t)(noise % 180);
    return interval;
}
