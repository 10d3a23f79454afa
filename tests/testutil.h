/* testutil.h -- helpers shared by the Check suites: temporary directories,
 * a log opened in one, a fake clock, SQLite side connections, running the
 * holdfast binary, and base64 decoding.
 *
 * Lifecycle: create each TCase with tu_tcase(), whose checked teardown
 * restores the real clock, removes the test's directories and frees every
 * string the helpers returned.  So callers never free what tu_* returns.
 *
 * Every helper that can fail stops the current test with a Check failure,
 * unless its comment says it returns a code.  The suites must pass both
 * forked (the default: a crash fails one test) and with CK_FORK=no under
 * valgrind, so helpers leak nothing and leave no global state behind. */
#ifndef HOLDFAST_TESTUTIL_H
#define HOLDFAST_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "msglog.h"

/* Called by main around the whole run: every test directory is made inside
 * one run directory, which tu_session_end removes -- also the directories
 * of tests that died on an assertion (Check's forked tests _exit, so no
 * teardown or atexit handler runs in them). */
void tu_session_begin(void);
void tu_session_end(void);

/* A TCase with the teardown above, added to s, with a timeout in seconds
 * (0 = Check's default). */
TCase *tu_tcase(Suite *s, const char *name, double timeout_s);

/* The checked teardown tu_tcase installs (exposed for custom TCases). */
void tu_teardown(void);

/* ---- files ------------------------------------------------------------ */

/* A fresh directory inside the run directory (else under $TMPDIR or /tmp),
 * removed by the teardown. */
const char *tu_mkdtemp(void);

/* rm -rf path; a missing path is not an error. */
void tu_rmrf(const char *path);

/* dir + "/" + name. */
const char *tu_path(const char *dir, const char *name);

/* Write exactly n bytes to path (create or truncate). */
void tu_write_file(const char *path, const void *data, size_t n);

/* A whole file (NUL-terminated, length in *n), or NULL if unreadable. */
const char *tu_read_file(const char *path, size_t *n);

/* 1 if path exists. */
int tu_exists(const char *path);

/* ---- the log ----------------------------------------------------------- */

/* Open dir/test.db with create=1 and the given retention callback (may be
 * NULL); the caller closes it with msglog_close. */
msglog *tu_open_log(const char *dir);
msglog *tu_open_log_ret(const char *dir, msglog_retention_fn fn, void *ud);

/* Append one text message; returns the new id. */
int64_t tu_append(msglog *lg, const char *channel, const char *body);

/* The first column of the first row of sql on a new plain SQLite
 * connection to dbpath, or -1 if the query fails. */
int64_t tu_sql_int(const char *dbpath, const char *sql);

/* Run sql on a new plain SQLite connection to dbpath (never creating it);
 * returns the SQLite result code and the error text in err. */
int tu_sql_exec(const char *dbpath, const char *sql, char *err, size_t errlen);

/* ---- clocks -------------------------------------------------------------- */

/* Install a fake clock for msglog_set_clock, starting at start_ms. */
void tu_clock_install(int64_t start_ms);
void tu_clock_advance(int64_t ms);

/* Monotonic milliseconds (CLOCK_MONOTONIC, comparable across processes). */
int64_t tu_mono_ms(void);

/* ---- the holdfast binary ---------------------------------------------- */

typedef struct {
    int status;       /* exit code, or 128 + signal number */
    const char *out;  /* NUL-terminated stdout */
    size_t outlen;
    const char *err;  /* NUL-terminated stderr */
    size_t errlen;
} tu_run_result;

/* $HOLDFAST_BIN (set by `make check`), else ./holdfast. */
const char *tu_holdfast_bin(void);

/* Run holdfast with args (NULL-terminated, without argv[0]), feeding
 * stdin_data (NULL = empty stdin) and capturing both outputs.  A run that
 * takes longer than 20 s is killed (status 128 + SIGKILL). */
void tu_run(tu_run_result *r, const void *stdin_data, size_t stdin_len,
            const char *const *args);

/* Start holdfast in the background: stdout on *out_fd (non-blocking),
 * stdin from /dev/null, stderr inherited.  Returns the pid. */
pid_t tu_spawn(const char *const *args, int *out_fd);

/* Stop a spawned process: SIGTERM, then SIGKILL after 2 s; reaps it. */
void tu_stop(pid_t pid);

/* A line reader over a non-blocking fd. */
typedef struct {
    int fd;
    int eof;
    size_t len;
    char buf[65536];
} tu_lines;

void tu_lines_init(tu_lines *lr, int fd);

/* Copy the next line (without '\n', NUL-terminated) into line and return
 * its length, or -1 if none arrived within timeout_ms or the writer left. */
long tu_lines_next(tu_lines *lr, char *line, size_t cap, int timeout_ms);

/* ---- base64 ----------------------------------------------------------------- */

/* Decode padded standard base64 into a test-owned buffer, or NULL if s is
 * not valid. */
const unsigned char *tu_base64_decode(const char *s, size_t len, size_t *n);

#endif
