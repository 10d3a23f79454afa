/* testutil.c -- helpers shared by the Check suites (see testutil.h). */
#include <config.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* ---- files ------------------------------------------------------------ */

#define TU_MAX_DIRS 16

static char *tu_dirs[TU_MAX_DIRS];
static int tu_ndirs;
static pid_t tu_dirs_owner;

static void tu_cleanup_dirs(void)
{
    if (getpid() != tu_dirs_owner)
        return; /* a forked helper must not remove its parent's files */
    for (int i = 0; i < tu_ndirs; i++) {
        tu_rmrf(tu_dirs[i]);
        free(tu_dirs[i]);
    }
    tu_ndirs = 0;
}

char *tu_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char *tmpl = NULL;
    ck_assert_int_ge(asprintf(&tmpl, "%s/holdfast-test-XXXXXX", base), 0);
    ck_assert_msg(mkdtemp(tmpl) != NULL, "mkdtemp %s: %s", tmpl, strerror(errno));
    if (tu_ndirs == 0) {
        tu_dirs_owner = getpid();
        atexit(tu_cleanup_dirs);
    }
    ck_assert_int_lt(tu_ndirs, TU_MAX_DIRS);
    tu_dirs[tu_ndirs++] = strdup(tmpl);
    return tmpl;
}

static int tu_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tu_rmrf(const char *path)
{
    nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_path(const char *dir, const char *name)
{
    char *p = NULL;
    ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
    return p;
}

void tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

char *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *p = malloc(cap + 1);
    size_t got;
    while ((got = fread(p + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap)
            p = realloc(p, (cap *= 2) + 1);
    }
    fclose(f);
    p[len] = '\0';
    *n = len;
    return p;
}

int tu_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- the log ----------------------------------------------------------- */

msglog *tu_open_log_ret(const char *dir, msglog_retention_fn fn, void *ud)
{
    char *path = tu_path(dir, "test.db");
    msglog_options opt = {0};
    opt.path = path;
    opt.create = 1;
    opt.retention = fn;
    opt.retention_ud = ud;
    char err[256] = "";
    msglog *lg = NULL;
    int rc = msglog_open(&lg, &opt, err, sizeof err);
    ck_assert_msg(rc == 0 && lg != NULL, "msglog_open %s: rc=%d %s", path, rc, err);
    free(path);
    return lg;
}

msglog *tu_open_log(const char *dir)
{
    return tu_open_log_ret(dir, NULL, NULL);
}

int64_t tu_append(msglog *lg, const char *channel, const char *body)
{
    msglog_entry e = {0};
    e.channel = channel;
    e.body = body;
    e.len = strlen(body);
    msglog_ack ack = {0};
    int rc = msglog_append(lg, &e, &ack);
    ck_assert_msg(rc == 0, "append to %s: rc=%d %s", channel, rc, msglog_errmsg(lg));
    ck_assert_int_gt(ack.id, 0);
    return ack.id;
}

static sqlite3 *tu_sql_open(const char *dbpath)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

int64_t tu_sql_int(const char *dbpath, const char *sql)
{
    sqlite3 *db = tu_sql_open(dbpath);
    if (!db)
        return -1;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

int tu_sql_exec(const char *dbpath, const char *sql, char *err, size_t errlen)
{
    sqlite3 *db = tu_sql_open(dbpath);
    if (!db) {
        snprintf(err, errlen, "cannot open %s", dbpath);
        return SQLITE_CANTOPEN;
    }
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    snprintf(err, errlen, "%s", msg ? msg : "");
    sqlite3_free(msg);
    sqlite3_close(db);
    return rc;
}

/* ---- clocks ------------------------------------------------------------ */

static int64_t tu_fake_ms;

int64_t tu_clock_now(void)
{
    return tu_fake_ms;
}

void tu_clock_set(int64_t ms)
{
    tu_fake_ms = ms;
}

void tu_clock_advance(int64_t ms)
{
    tu_fake_ms += ms;
}

void tu_clock_install(int64_t start_ms)
{
    tu_fake_ms = start_ms;
    msglog_set_clock(tu_clock_now);
}

int64_t tu_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the holdfast binary ---------------------------------------------- */

const char *tu_holdfast_bin(void)
{
    const char *bin = getenv("HOLDFAST_BIN");
    if (!bin || !*bin)
        bin = "./holdfast";
    ck_assert_msg(access(bin, X_OK) == 0, "holdfast binary not executable at %s "
                  "(set HOLDFAST_BIN)", bin);
    return bin;
}

static char **tu_argv(const char *const *args)
{
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = (char *)tu_holdfast_bin();
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    return argv;
}

/* In the child: move fd onto target (closing the original). */
static void tu_child_dup(int fd, int target)
{
    if (fd != target) {
        dup2(fd, target);
        close(fd);
    }
}

static void tu_append_bytes(char **p, size_t *len, const char *data, size_t n)
{
    *p = realloc(*p, *len + n + 1);
    memcpy(*p + *len, data, n);
    *len += n;
    (*p)[*len] = '\0';
}

/* Drain fd into (*p, *len); returns 0 at EOF, 1 if it may have more. */
static int tu_drain(int fd, char **p, size_t *len)
{
    char tmp[4096];
    for (;;) {
        ssize_t got = read(fd, tmp, sizeof tmp);
        if (got > 0)
            tu_append_bytes(p, len, tmp, (size_t)got);
        else if (got == 0)
            return 0;
        else
            return errno == EINTR ? 1 : (errno == EAGAIN ? 1 : 0);
    }
}

void tu_run(tu_run_result *r, const void *stdin_data, size_t stdin_len,
            const char *const *args)
{
    int in[2], out[2], err[2];
    char **argv = tu_argv(args);
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tu_child_dup(in[0], 0);
        tu_child_dup(out[1], 1);
        tu_child_dup(err[1], 2);
        execv(argv[0], argv);
        _exit(127);
    }
    free(argv);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    memset(r, 0, sizeof *r);
    r->out = calloc(1, 1);
    r->err = calloc(1, 1);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    int in_fd = in[1], out_open = 1, err_open = 1;
    if (!stdin_data || stdin_len == 0) {
        close(in_fd);
        in_fd = -1;
    }
    int64_t deadline = tu_mono_ms() + 20000;
    while (out_open || err_open) {
        struct pollfd pf[3] = {{out_open ? out[0] : -1, POLLIN, 0},
                               {err_open ? err[0] : -1, POLLIN, 0},
                               {in_fd, POLLOUT, 0}};
        int left = (int)(deadline - tu_mono_ms());
        if (left <= 0 || poll(pf, 3, left) == 0) {
            kill(pid, SIGKILL);
            break;
        }
        if (pf[0].revents)
            out_open = tu_drain(out[0], &r->out, &r->outlen);
        if (pf[1].revents)
            err_open = tu_drain(err[0], &r->err, &r->errlen);
        if (in_fd >= 0 && pf[2].revents) {
            ssize_t w = write(in_fd, (const char *)stdin_data + sent, stdin_len - sent);
            if (w > 0)
                sent += (size_t)w;
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                sent = stdin_len;
            if (sent == stdin_len) {
                close(in_fd);
                in_fd = -1;
            }
        }
    }
    if (in_fd >= 0)
        close(in_fd);
    close(out[0]);
    close(err[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void tu_run_free(tu_run_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

pid_t tu_spawn(const char *const *args, int *out_fd)
{
    int out[2];
    char **argv = tu_argv(args);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        tu_child_dup(devnull, 0);
        tu_child_dup(out[1], 1);
        execv(argv[0], argv);
        _exit(127);
    }
    free(argv);
    close(out[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    *out_fd = out[0];
    return pid;
}

void tu_stop(pid_t pid)
{
    int st;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

void tu_lines_init(tu_lines *lr, int fd)
{
    lr->fd = fd;
    lr->len = 0;
    lr->eof = 0;
}

long tu_lines_next(tu_lines *lr, char *line, size_t cap, int timeout_ms)
{
    int64_t deadline = tu_mono_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(lr->buf, '\n', lr->len);
        if (nl) {
            size_t n = (size_t)(nl - lr->buf);
            size_t copy = n < cap - 1 ? n : cap - 1;
            memcpy(line, lr->buf, copy);
            line[copy] = '\0';
            memmove(lr->buf, nl + 1, lr->len - n - 1);
            lr->len -= n + 1;
            return (long)copy;
        }
        int left = (int)(deadline - tu_mono_ms());
        if (lr->eof || left <= 0 || lr->len == sizeof lr->buf)
            return -1;
        struct pollfd pf = {lr->fd, POLLIN, 0};
        if (poll(&pf, 1, left) <= 0)
            continue;
        ssize_t got = read(lr->fd, lr->buf + lr->len, sizeof lr->buf - lr->len);
        if (got > 0)
            lr->len += (size_t)got;
        else if (got == 0)
            lr->eof = 1;
    }
}

/* ---- JSON reading ------------------------------------------------------ */

tu_json *tu_json_parse(const char *s, size_t n)
{
    json_error_t e;
    return (tu_json *)json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
}

void tu_json_free(tu_json *v)
{
    json_decref((json_t *)v);
}

tu_json *tu_json_get(const tu_json *v, const char *key)
{
    return (tu_json *)json_object_get((const json_t *)v, key);
}

int tu_json_kind(const tu_json *v)
{
    const json_t *j = (const json_t *)v;
    if (!j)
        return 0;
    switch (json_typeof(j)) {
    case JSON_OBJECT: return 'o';
    case JSON_ARRAY: return 'a';
    case JSON_STRING: return 's';
    case JSON_INTEGER: return 'i';
    case JSON_REAL: return 'r';
    case JSON_TRUE: return 't';
    case JSON_FALSE: return 'f';
    case JSON_NULL: return 'n';
    }
    return 0;
}

const char *tu_json_str(const tu_json *v, size_t *len)
{
    const json_t *j = (const json_t *)v;
    if (!json_is_string(j))
        return NULL;
    if (len)
        *len = json_string_length(j);
    return json_string_value(j);
}

long long tu_json_int(const tu_json *v)
{
    return (long long)json_integer_value((const json_t *)v);
}

size_t tu_json_size(const tu_json *v)
{
    const json_t *j = (const json_t *)v;
    return json_is_array(j) ? json_array_size(j) : json_object_size(j);
}

tu_json *tu_json_at(const tu_json *v, size_t i)
{
    return (tu_json *)json_array_get((const json_t *)v, i);
}

int tu_json_equals_text(const tu_json *v, const char *text)
{
    json_error_t e;
    json_t *want = json_loads(text, JSON_DECODE_ANY, &e);
    ck_assert_msg(want != NULL, "bad expected JSON in test: %s", text);
    int eq = json_equal((json_t *)v, want);
    json_decref(want);
    return eq;
}

static int tu_b64_value(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

unsigned char *tu_base64_decode(const char *s, size_t len, size_t *n)
{
    if (len % 4 != 0)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int pad = (s[i + 2] == '=') + (s[i + 3] == '=');
        int v[4];
        for (int k = 0; k < 4; k++)
            v[k] = (k >= 4 - pad) ? 0 : tu_b64_value(s[i + k]);
        if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0 || (pad && i + 4 != len)
            || (pad == 1 && s[i + 2] == '=')) {
            free(out);
            return NULL;
        }
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(bits >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(bits >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)bits;
    }
    *n = o;
    return out;
}
