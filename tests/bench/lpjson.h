/* lpjson.h -- just enough JSON for the load tool: walk a poll answer
 * ({"cursor":N,"epoch":"..","messages":[{"id":N,"data":..},...],
 *   "gap":bool,"reset":bool}) and pick numbers out of /stats and publish
 * answers.
 *
 * Pure: no I/O, no allocation.  The walker checks the structure (balanced
 * brackets, strings, literals) but not number grammar in detail, and never
 * unescapes strings: message data is handed over raw, between its quotes.
 */
#ifndef HOLDFAST_LPJSON_H
#define HOLDFAST_LPJSON_H

#include <stddef.h>
#include <stdint.h>

#define LPJSON_EPOCH_MAX 64

typedef struct {
    int64_t id;          /* -1 if the message had no numeric "id" */
    const char *data;    /* raw text of "data": string contents without quotes,
                            or the JSON value itself */
    size_t data_len;
    int data_is_string;
} lpjson_msg;

typedef struct {
    int has_cursor;
    int64_t cursor;
    char epoch[LPJSON_EPOCH_MAX + 1]; /* "" if absent or too long */
    int gap;
    int reset;
    size_t nmessages;
} lpjson_poll;

typedef void (*lpjson_msg_fn)(void *ud, const lpjson_msg *m);

/* Walk the poll answer s[0..n); call fn for each element of "messages" in
 * order.  Returns 0, or -1 if s is not one well-formed JSON object (fn may
 * already have been called for earlier messages). */
int lpjson_poll_parse(const char *s, size_t n, lpjson_poll *out, lpjson_msg_fn fn, void *ud);

/* Sum of every integer that follows "key": anywhere in s (NUL-terminated);
 * an array value adds its integer elements.  Returns the number of
 * occurrences found (0: *sum untouched). */
int lpjson_int_sum(const char *s, const char *key, int64_t *sum);

/* The first "key":"string" in s (NUL-terminated) into out (cap bytes, no
 * unescaping).  Returns 0, or -1 if absent or too long. */
int lpjson_str_find(const char *s, const char *key, char *out, size_t cap);

#endif
