/* testutil.c -- helpers shared by the Check suites (see testutil.h). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* ---- what the teardown undoes ------------------------------------------ */

#define TU_MAX_OWNED 256
#define TU_MAX_DIRS 16

static void *tu_owned[TU_MAX_OWNED];
static int tu_nowned;
static char *tu_dirs[TU_MAX_DIRS];
static int tu_ndirs;
static char tu_root[4096]; /* the run's directory, made before tests fork */

/* Take ownership of p until the teardown; returns p. */
static void *tu_own(void *p)
{
    ck_assert_ptr_nonnull(p);
    ck_assert_int_lt(tu_nowned, TU_MAX_OWNED);
    tu_owned[tu_nowned++] = p;
    return p;
}

static char *tu_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *tu_sprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    ck_assert_int_ge(n, 0);
    return tu_own(s);
}

static void tu_remove_dirs(void)
{
    for (int i = 0; i < tu_ndirs; i++) {
        tu_rmrf(tu_dirs[i]);
        free(tu_dirs[i]);
    }
    tu_ndirs = 0;
}

void tu_session_begin(void)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(tu_root, sizeof tu_root, "%s/holdfast-check-XXXXXX", base);
    if (!mkdtemp(tu_root)) {
        fprintf(stderr, "mkdtemp %s: %s\n", tu_root, strerror(errno));
        tu_root[0] = '\0';
    }
}

void tu_session_end(void)
{
    if (tu_root[0])
        tu_rmrf(tu_root);
    tu_root[0] = '\0';
}

void tu_teardown(void)
{
    msglog_set_clock(NULL);
    tu_remove_dirs();
    for (int i = 0; i < tu_nowned; i++)
        free(tu_owned[i]);
    tu_nowned = 0;
}

TCase *tu_tcase(Suite *s, const char *name, double timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, NULL, tu_teardown);
    if (timeout_s > 0)
        tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
    return tc;
}

/* ---- files ------------------------------------------------------------ */

const char *tu_mkdtemp(void)
{
    const char *base = tu_root[0] ? tu_root : getenv("TMPDIR");
    char tmpl[sizeof tu_root + 32];
    if (!base || !*base)
        base = "/tmp";
    snprintf(tmpl, sizeof tmpl, "%s/holdfast-test-XXXXXX", base);
    ck_assert_msg(mkdtemp(tmpl) != NULL, "mkdtemp %s: %s", tmpl, strerror(errno));
    ck_assert_int_lt(tu_ndirs, TU_MAX_DIRS);
    tu_dirs[tu_ndirs] = strdup(tmpl);
    ck_assert_ptr_nonnull(tu_dirs[tu_ndirs]);
    return tu_dirs[tu_ndirs++];
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

const char *tu_path(const char *dir, const char *name)
{
    return tu_sprintf("%s/%s", dir, name);
}

void tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

const char *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0, got;
    char *p = malloc(cap + 1);
    while (p && (got = fread(p + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *q = realloc(p, (cap *= 2) + 1);
            if (!q)
                free(p);
            p = q;
        }
    }
    fclose(f);
    tu_own(p);
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
    msglog_options opt = {0};
    opt.path = tu_path(dir, "test.db");
    opt.create = 1;
    opt.retention = fn;
    opt.retention_ud = ud;
    opt.prune_every = -1; /* tests prune explicitly */
    char err[512] = "";
    msglog *lg = NULL;
    int rc = msglog_open(&lg, &opt, err, sizeof err);
    ck_assert_msg(rc == 0 && lg != NULL, "msglog_open %s: rc=%d %s", opt.path, rc, err);
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

static int64_t tu_clock_now(void)
{
    return tu_fake_ms;
}

void tu_clock_install(int64_t start_ms)
{
    tu_fake_ms = start_ms;
    msglog_set_clock(tu_clock_now);
}

void tu_clock_advance(int64_t ms)
{
    tu_fake_ms += ms;
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
    ck_assert_msg(access(bin, X_OK) == 0,
                  "holdfast binary not executable at %s (set HOLDFAST_BIN)", bin);
    return bin;
}

/* argv for execv: the binary, then args; test-owned. */
static char **tu_argv(const char *const *args)
{
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = tu_own(calloc(n + 2, sizeof *argv));
    argv[0] = (char *)tu_holdfast_bin();
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    return argv;
}

/* In a child before exec: move fd onto target. */
static void tu_child_dup(int fd, int target)
{
    if (fd != target) {
        dup2(fd, target);
        close(fd);
    }
}

typedef struct {
    char *p;
    size_t len;
} tu_bytes;

/* Read what fd has; returns 0 at EOF or error, 1 if more may come. */
static int tu_drain(int fd, tu_bytes *b)
{
    char tmp[4096];
    for (;;) {
        ssize_t got = read(fd, tmp, sizeof tmp);
        if (got == 0)
            return 0;
        if (got < 0)
            return errno == EAGAIN || errno == EINTR;
        char *p = realloc(b->p, b->len + (size_t)got + 1);
        ck_assert_ptr_nonnull(p);
        memcpy(p + b->len, tmp, (size_t)got);
        b->p = p;
        b->len += (size_t)got;
        b->p[b->len] = '\0';
    }
}

/* Feed stdin and collect stdout/stderr until both close or the deadline. */
static void tu_pump(pid_t pid, int in_fd, int out_fd, int err_fd, const void *data, size_t len,
                    tu_bytes *out, tu_bytes *err)
{
    size_t sent = 0;
    int out_open = 1, err_open = 1;
    int64_t deadline = tu_mono_ms() + 20000;
    if (len == 0) {
        close(in_fd);
        in_fd = -1;
    }
    while (out_open || err_open) {
        struct pollfd pf[3] = {{out_open ? out_fd : -1, POLLIN, 0},
                               {err_open ? err_fd : -1, POLLIN, 0},
                               {in_fd, POLLOUT, 0}};
        int left = (int)(deadline - tu_mono_ms());
        if (left <= 0 || poll(pf, 3, left) == 0) {
            kill(pid, SIGKILL);
            break;
        }
        if (pf[0].revents)
            out_open = tu_drain(out_fd, out);
        if (pf[1].revents)
            err_open = tu_drain(err_fd, err);
        if (in_fd >= 0 && pf[2].revents) {
            ssize_t w = write(in_fd, (const char *)data + sent, len - sent);
            if (w > 0)
                sent += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || sent == len) {
                close(in_fd);
                in_fd = -1;
            }
        }
    }
    if (in_fd >= 0)
        close(in_fd);
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
    close(in[0]);
    close(out[1]);
    close(err[1]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    tu_bytes o = {calloc(1, 1), 0}, e = {calloc(1, 1), 0}; /* owned once complete */
    tu_pump(pid, in[1], out[0], err[0], stdin_data, stdin_data ? stdin_len : 0, &o, &e);
    close(out[0]);
    close(err[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    memset(r, 0, sizeof *r);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r->out = tu_own(o.p);
    r->outlen = o.len;
    r->err = tu_own(e.p);
    r->errlen = e.len;
}

pid_t tu_spawn(const char *const *args, int *out_fd)
{
    int out[2];
    char **argv = tu_argv(args);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tu_child_dup(open("/dev/null", O_RDONLY), 0);
        tu_child_dup(out[1], 1);
        execv(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    *out_fd = out[0];
    return pid;
}

void tu_stop(pid_t pid)
{
    int st;
    kill(pid, SIGTERM);
    int64_t deadline = tu_mono_ms() + 2000;
    while (tu_mono_ms() < deadline) {
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
    lr->eof = 0;
    lr->len = 0;
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

/* ---- base64 ---------------------------------------------------------------- */

static int tu_b64_value(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

const unsigned char *tu_base64_decode(const char *s, size_t len, size_t *n)
{
    if (len % 4 != 0)
        return NULL;
    unsigned char *out = tu_own(malloc(len / 4 * 3 + 1));
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int pad = (s[i + 3] == '=') + (s[i + 3] == '=' && s[i + 2] == '=');
        if (pad && i + 4 != len)
            return NULL;
        uint32_t bits = 0;
        for (int k = 0; k < 4; k++) {
            int v = k >= 4 - pad ? 0 : tu_b64_value(s[i + k]);
            if (v < 0)
                return NULL;
            bits = bits << 6 | (uint32_t)v;
        }
        out[o++] = (unsigned char)(bits >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(bits >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)bits;
    }
    *n = o;
    return out;
}
