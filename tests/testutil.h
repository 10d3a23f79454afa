/* testutil.h -- helpers shared by the Check suites: temporary directories,
 * a log opened in one, a fake clock, SQLite side connections, running the
 * holdfast binary, and a thin JSON reader.
 *
 * Every helper that can fail stops the current test with a Check failure, so
 * callers need not check results unless a function says it returns a code.
 * Tests run forked (CK_FORK), so the global state here (the fake clock, the
 * list of directories to remove) is per test.
 *
 * This header deliberately includes neither <jansson.h> nor jsonenc.h: both
 * declare a function named json_string with different signatures, so the
 * JSON reader below wraps jansson behind opaque pointers. */
#ifndef HOLDFAST_TESTUTIL_H
#define HOLDFAST_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "msglog.h"

/* ---- files ------------------------------------------------------------ */

/* Create a fresh directory under $TMPDIR (or /tmp).  It is removed when the
 * creating process exits (also after a failed assertion), or earlier by
 * tu_rmrf.  Returns a malloc'd path. */
char *tu_mkdtemp(void);

/* rm -rf path; a missing path is not an error. */
void tu_rmrf(const char *path);

/* dir + "/" + name, malloc'd. */
char *tu_path(const char *dir, const char *name);

/* Write exactly n bytes to path (create or truncate). */
void tu_write_file(const char *path, const void *data, size_t n);

/* Read a whole file; returns malloc'd bytes (NUL-terminated) and sets *n,
 * or NULL if it cannot be read. */
char *tu_read_file(const char *path, size_t *n);

/* 1 if path exists. */
int tu_exists(const char *path);

/* ---- the log ----------------------------------------------------------- */

/* Open dir/test.db with create=1 (and the given retention callback, may be
 * NULL).  Fails the test if it cannot. */
msglog *tu_open_log(const char *dir);
msglog *tu_open_log_ret(const char *dir, msglog_retention_fn fn, void *ud);

/* Append one message (type NULL = default); fails the test on error and
 * returns the new id. */
int64_t tu_append(msglog *lg, const char *channel, const char *body);

/* Count all rows of the message table of the database at path (side
 * connection), or -1 if the query fails. */
int64_t tu_sql_int(const char *dbpath, const char *sql);

/* Run sql on a new plain SQLite connection to dbpath (no create); returns
 * the SQLite result code and copies the error text into err. */
int tu_sql_exec(const char *dbpath, const char *sql, char *err, size_t errlen);

/* ---- fake clock (for msglog_set_clock) -------------------------------- */

/* Install the fake clock at start_ms. */
void tu_clock_install(int64_t start_ms);
void tu_clock_set(int64_t ms);
void tu_clock_advance(int64_t ms);
int64_t tu_clock_now(void);

/* Monotonic milliseconds (CLOCK_MONOTONIC, comparable across processes). */
int64_t tu_mono_ms(void);

/* ---- the holdfast binary ---------------------------------------------- */

typedef struct {
    int status; /* exit code, or 128 + signal number */
    char *out;  /* NUL-terminated stdout */
    size_t outlen;
    char *err; /* NUL-terminated stderr */
    size_t errlen;
} tu_run_result;

/* $HOLDFAST_BIN, else ./holdfast; fails the test if not executable. */
const char *tu_holdfast_bin(void);

/* Run holdfast with args (NULL-terminated, without argv[0]), feeding
 * stdin_data (NULL = empty stdin) and capturing output.  A run that takes
 * longer than 20 s is killed (status 128 + SIGKILL). */
void tu_run(tu_run_result *r, const void *stdin_data, size_t stdin_len,
            const char *const *args);
void tu_run_free(tu_run_result *r);

/* Start holdfast with args in the background, its stdout on *out_fd
 * (non-blocking), stdin from /dev/null, stderr inherited.  Returns the pid. */
pid_t tu_spawn(const char *const *args, int *out_fd);

/* Stop a spawned process: SIGTERM, then SIGKILL after 2 s; reaps it. */
void tu_stop(pid_t pid);

/* A line reader over a non-blocking fd. */
typedef struct {
    int fd;
    char buf[65536];
    size_t len;
    int eof;
} tu_lines;

void tu_lines_init(tu_lines *lr, int fd);

/* Copy the next line (without '\n') into line and return its length, or -1
 * if none arrived within timeout_ms (or the writer closed). */
long tu_lines_next(tu_lines *lr, char *line, size_t cap, int timeout_ms);

/* ---- JSON reading (jansson behind opaque pointers) -------------------- */

typedef struct tu_json tu_json;

/* Parse exactly one JSON value (any type, NUL allowed in strings); NULL if
 * the text is not valid JSON.  Free the root with tu_json_free. */
tu_json *tu_json_parse(const char *s, size_t n);
void tu_json_free(tu_json *v);

/* Member of an object (borrowed), NULL if absent or v is not an object. */
tu_json *tu_json_get(const tu_json *v, const char *key);

/* 'o' object, 'a' array, 's' string, 'i' integer, 'r' real, 't' true,
 * 'f' false, 'n' null, 0 for a NULL pointer. */
int tu_json_kind(const tu_json *v);

/* String value and its length (NUL-safe); NULL if not a string. */
const char *tu_json_str(const tu_json *v, size_t *len);
long long tu_json_int(const tu_json *v);

/* Elements of an array or members of an object. */
size_t tu_json_size(const tu_json *v);
tu_json *tu_json_at(const tu_json *v, size_t i);

/* 1 if v equals the JSON value written in text. */
int tu_json_equals_text(const tu_json *v, const char *text);

/* Decode standard base64; returns malloc'd bytes and sets *n, NULL if the
 * input is not valid padded base64. */
unsigned char *tu_base64_decode(const char *s, size_t len, size_t *n);

#endif
