/* check_wake.c -- the cross-process wake signal: waiting, timing out, being
 * woken by another process, and the eventfd watcher; the file itself
 * (allocated before it appears, stale ones replaced); the per-process
 * slots and the retired totals of dead processes. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "msglog.h"
#include "testutil.h"
#include "wake.h"

static wake *open_wake(const char *dbpath)
{
    wake *w = NULL;
    char err[512] = "";
    int rc = wake_open(&w, dbpath, err, sizeof err);
    ck_assert_msg(rc == 0 && w != NULL, "wake_open %s: rc=%d %s", dbpath, rc, err);
    return w;
}

/* Wait up to timeout_ms for fd to become readable; 1 if it did. */
static int readable_within(int fd, int timeout_ms)
{
    struct pollfd pf = {fd, POLLIN, 0};
    int64_t deadline = tu_mono_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - tu_mono_ms());
        int n = poll(&pf, 1, left > 0 ? left : 0);
        if (n > 0)
            return 1;
        if (n == 0 || left <= 0)
            return 0;
    }
}

static void read_exact(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        ck_assert_msg(r > 0, "pipe closed after %zu of %zu bytes", got, n);
        got += (size_t)r;
    }
}

START_TEST(test_open_creates_wake_file_beside_db)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    wake *w = open_wake(db);
    ck_assert_msg(tu_exists(tu_path(dir, "test.db-wake")), "no <db>-wake file");
    ck_assert_int_eq(wake_head(w), 0);
    wake_close(w);

    wake *missing = (wake *)dir;
    char err[512] = "";
    ck_assert_int_lt(wake_open(&missing, tu_path(dir, "no-such-dir/test.db"), err, sizeof err),
                     0);
    ck_assert_ptr_null(missing);
    ck_assert_msg(err[0] != '\0', "no error text");
}
END_TEST

START_TEST(test_wait_times_out_when_nothing_happens)
{
    const char *dir = tu_mkdtemp();
    wake *w = open_wake(tu_path(dir, "test.db"));
    uint32_t seq = wake_seq(w);
    int64_t t0 = tu_mono_ms();
    ck_assert_int_eq(wake_wait(w, seq, 200), -ETIMEDOUT);
    int64_t took = tu_mono_ms() - t0;
    ck_assert_msg(took >= 190 && took < 2000, "200 ms timeout took %lld ms", (long long)took);
    ck_assert_int_eq(wake_seq(w), seq);
    ck_assert_int_eq(wake_wait(w, seq, 0), -ETIMEDOUT);
    wake_close(w);
}
END_TEST

START_TEST(test_wait_returns_at_once_if_counter_already_moved)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    wake *a = open_wake(db);
    wake *b = open_wake(db);
    uint32_t seq = wake_seq(a);
    wake_publish(b, 42);
    ck_assert_uint_ne(wake_seq(a), seq);
    int64_t t0 = tu_mono_ms();
    ck_assert_int_eq(wake_wait(a, seq, 5000), 0);
    ck_assert_int_lt(tu_mono_ms() - t0, 1000);
    ck_assert_int_eq(wake_head(a), 42);
    wake_close(a);
    wake_close(b);
}
END_TEST

START_TEST(test_head_never_goes_backwards)
{
    const char *dir = tu_mkdtemp();
    wake *w = open_wake(tu_path(dir, "test.db"));
    wake_publish(w, 10);
    uint32_t seq = wake_seq(w);
    wake_publish(w, 5); /* a slower publisher announcing an older commit */
    ck_assert_int_eq(wake_head(w), 10);
    ck_assert_uint_ne(wake_seq(w), seq); /* but it still wakes everyone */
    wake_close(w);
}
END_TEST

typedef struct {
    int rc;
    int64_t woke_ms;
    int64_t head;
    int64_t first_id;
} waiter_report;

/* In a forked child: read seq, say "ready", wait, look at the log, report.
 * Never uses Check; the parent checks the report. */
static void waiter_child(const char *db, int ready_fd, int report_fd)
{
    waiter_report rep = {0};
    char err[256];
    wake *w = NULL;
    msglog *lg = NULL;
    msglog_options opt = {.path = db};
    if (wake_open(&w, db, err, sizeof err) || msglog_open(&lg, &opt, err, sizeof err))
        _exit(2);
    uint32_t seq = wake_seq(w);
    if (write(ready_fd, "r", 1) != 1)
        _exit(3);
    rep.rc = wake_wait(w, seq, 5000);
    rep.woke_ms = tu_mono_ms();
    rep.head = wake_head(w);
    const char *ch[] = {"news"};
    msglog_query q = {.channels = ch, .nchannels = 1, .since = 0};
    msglog_batch b;
    if (msglog_read(lg, &q, &b) == 0 && b.n > 0)
        rep.first_id = b.msgs[0].id;
    msglog_batch_free(&b);
    msglog_close(lg);
    wake_close(w);
    _exit(write(report_fd, &rep, sizeof rep) == (ssize_t)sizeof rep ? 0 : 4);
}

START_TEST(test_waiter_in_other_process_is_woken_by_publish)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    msglog_close(tu_open_log(dir)); /* create it */
    int ready[2], report[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(report), 0);
    pid_t pid = fork(); /* before this process opens anything the child could inherit */
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        waiter_child(db, ready[1], report[1]);
    msglog *lg = tu_open_log(dir);
    wake *w = open_wake(db);
    char c;
    read_exact(ready[0], &c, 1); /* the child holds its seq now */
    int64_t id = tu_append(lg, "news", "wake up");
    int64_t published = tu_mono_ms();
    wake_publish(w, id);
    waiter_report rep;
    read_exact(report[0], &rep, sizeof rep);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "waiter failed (status %d)", st);
    ck_assert_int_eq(rep.rc, 0);
    ck_assert_int_eq(rep.head, id);
    ck_assert_int_eq(rep.first_id, id);
    ck_assert_msg(rep.woke_ms - published < 1000, "woken %lld ms after the publish",
                  (long long)(rep.woke_ms - published));
    close(ready[0]);
    close(ready[1]);
    close(report[0]);
    close(report[1]);
    wake_close(w);
    msglog_close(lg);
}
END_TEST

/* In a forked child: for each byte read from go_fd, publish head+1 through
 * a wake handle of its own; exits when go_fd closes. */
static void publisher_child(const char *db, int go_fd, int done_fd)
{
    char c;
    wake *p = NULL;
    char err[256];
    if (wake_open(&p, db, err, sizeof err))
        _exit(2);
    for (int64_t head = 100; read(go_fd, &c, 1) == 1; head++) {
        wake_publish(p, head);
        if (write(done_fd, "d", 1) != 1)
            break;
    }
    wake_close(p);
    _exit(0);
}

START_TEST(test_watcher_writes_eventfd_on_publish_from_another_process)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    int go[2], done[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(done), 0);
    pid_t pid = fork(); /* before the watcher thread and handle exist */
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(go[1]);
        publisher_child(db, go[0], done[1]);
    }
    close(go[0]);
    close(done[1]);
    wake *w = open_wake(db);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(efd, 0);
    ck_assert_int_eq(wake_watch_start(w, efd, 60000), 0);
    ck_assert_int_lt(wake_watch_start(w, efd, 60000), 0); /* one watcher per handle */
    uint64_t v;
    /* Make sure the thread is waiting before the rounds start (a publish it
     * misses while starting is the subject of the next test, not this one). */
    int64_t until = tu_mono_ms() + 2000;
    do
        wake_publish(w, 1);
    while (!readable_within(efd, 20) && tu_mono_ms() < until);
    for (int round = 0; round < 3; round++) {
        while (read(efd, &v, sizeof v) == (ssize_t)sizeof v)
            ; /* drain */
        char c;
        ck_assert_int_eq(write(go[1], "g", 1), 1);
        read_exact(done[0], &c, 1);
        ck_assert_msg(readable_within(efd, 2000), "round %d: eventfd not written", round);
        ck_assert_int_eq(read(efd, &v, sizeof v), (ssize_t)sizeof v);
        ck_assert_uint_gt(v, 0);
        ck_assert_int_eq(wake_head(w), 100 + round);
    }
    close(go[1]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_int_eq(st, 0);
    close(done[0]);
    wake_close(w); /* stops the thread */
    close(efd);
}
END_TEST

START_TEST(test_watcher_forwards_publish_made_right_after_start)
{
    /* "Forward every change": a publish that happens after
     * wake_watch_start() returned must reach the eventfd, however soon. */
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    for (int round = 0; round < 20; round++) {
        wake *w = open_wake(db);
        wake *pub = open_wake(db);
        int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ck_assert_int_ge(efd, 0);
        ck_assert_int_eq(wake_watch_start(w, efd, 60000), 0);
        wake_publish(pub, round + 1);
        int ok = readable_within(efd, 1000);
        wake_close(w);
        wake_close(pub);
        close(efd);
        ck_assert_msg(ok, "round %d: a publish right after wake_watch_start was lost "
                      "(the watcher would only notice after its 60 s interval)", round);
    }
}
END_TEST

START_TEST(test_watcher_ticks_every_interval_without_publishes)
{
    const char *dir = tu_mkdtemp();
    wake *w = open_wake(tu_path(dir, "test.db"));
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_ge(efd, 0);
    ck_assert_int_eq(wake_watch_start(w, efd, 50), 0);
    uint64_t v;
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(readable_within(efd, 2000), "tick %d missing with interval 50 ms", i);
        ck_assert_int_eq(read(efd, &v, sizeof v), (ssize_t)sizeof v);
    }
    wake_close(w);
    close(efd);
}
END_TEST

/* ---- the file -------------------------------------------------------------- */

/* The names in dir, sorted, joined by spaces (ignores "." and ".."). */
static const char *dir_listing(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    char names[32][256];
    int n = 0;
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d)) && n < 32;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? " " : "", names[i]);
    return out;
}

static void assert_allocated(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_msg(st.st_size >= 16384 && st.st_size % 4096 == 0, "size %lld",
                  (long long)st.st_size);
    ck_assert_msg((long long)st.st_blocks * 512 >= (long long)st.st_size,
                  "%s is sparse: %lld of %lld bytes allocated (a page touched on a full "
                  "disk would SIGBUS)", path, (long long)st.st_blocks * 512,
                  (long long)st.st_size);
}

START_TEST(test_new_wake_file_is_fully_allocated)
{
    const char *dir = tu_mkdtemp();
    wake *w = open_wake(tu_path(dir, "test.db"));
    assert_allocated(tu_path(dir, "test.db-wake"));
    wake_close(w);
}
END_TEST

START_TEST(test_wake_file_that_cannot_be_allocated_fails_cleanly)
{
    /* A full disk, as far as this process is concerned: a file size limit
     * below the wake file's size (posix_fallocate fails with EFBIG; on a
     * full filesystem it is ENOSPC, see test_pool.py). */
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    int rep[2];
    ck_assert_int_eq(pipe(rep), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {4096, 4096};
        char err[512] = "";
        wake *w = NULL;
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(2);
        int rc = wake_open(&w, db, err, sizeof err);
        ssize_t n = write(rep[1], err, strlen(err) + 1);
        _exit(rc < 0 && w == NULL && n > 0 ? 0 : 3);
    }
    close(rep[1]);
    char err[512] = "";
    ssize_t n = read(rep[0], err, sizeof err - 1);
    close(rep[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d (err '%s')", st, err);
    ck_assert_int_gt(n, 0);
    char want[600];
    snprintf(want, sizeof want, "cannot allocate wake file %s: ", tu_path(dir, "test.db-wake"));
    ck_assert_msg(!strncmp(err, want, strlen(want)), "error '%s', want '%s...'", err, want);
    char ls[1024];
    ck_assert_msg(!strcmp(dir_listing(dir, ls, sizeof ls), ""),
                  "left behind after a failed wake_open: '%s'", ls);
    /* Without the limit it works. */
    wake *w = open_wake(db);
    assert_allocated(tu_path(dir, "test.db-wake"));
    wake_close(w);
}
END_TEST

/* The first 8 bytes of a wake file made by this version (magic, version). */
static void current_stamp(uint32_t h[2], size_t *size)
{
    const char *dir = tu_mkdtemp();
    wake *w = open_wake(tu_path(dir, "stamp.db"));
    wake_close(w);
    size_t n;
    const char *p = tu_read_file(tu_path(dir, "stamp.db-wake"), &n);
    ck_assert_ptr_nonnull(p);
    memcpy(h, p, 2 * sizeof h[0]);
    *size = n;
}

/* Two handles on db, wake-up from one to the other. */
static void assert_wakes(const char *db)
{
    wake *a = open_wake(db), *b = open_wake(db);
    uint32_t seq = wake_seq(a);
    wake_publish(b, 77);
    ck_assert_int_eq(wake_wait(a, seq, 2000), 0);
    ck_assert_int_eq(wake_head(a), 77);
    wake_slot *s = wake_slot_claim(a);
    ck_assert_ptr_nonnull(s);
    wake_slot_release(s);
    wake_close(a);
    wake_close(b);
}

START_TEST(test_stale_wake_files_are_replaced_atomically)
{
    uint32_t cur[2];
    size_t size;
    current_stamp(cur, &size);
    struct {
        const char *what;
        uint32_t magic, version;
        size_t size;
    } cases[] = {
        {"version 1 (an older holdfast)", cur[0], 1, 16384},
        {"version 2, the previous layout", cur[0], 2, 16384},
        {"a newer version", cur[0], cur[1] + 1, size},
        {"the current stamp, wrong size", cur[0], cur[1], size / 2},
        {"a short file", 0, 0, 100},
        {"an empty file", 0, 0, 0},
        {"a foreign file of the right size", 0x12345678u, 9, size},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = tu_mkdtemp();
        const char *db = tu_path(dir, "test.db");
        const char *path = tu_path(dir, "test.db-wake");
        char *old = calloc(1, cases[i].size + 8);
        ck_assert_ptr_nonnull(old);
        memcpy(old, &cases[i].magic, 4);
        memcpy(old + 4, &cases[i].version, 4);
        memset(old + 8, 0xab, cases[i].size > 8 ? cases[i].size - 8 : 0);
        tu_write_file(path, old, cases[i].size);
        int oldfd = open(path, O_RDONLY);
        ck_assert_int_ge(oldfd, 0);
        struct stat before, after;
        ck_assert_int_eq(fstat(oldfd, &before), 0);

        wake *w = NULL;
        char err[512] = "";
        int rc = wake_open(&w, db, err, sizeof err);
        ck_assert_msg(rc == 0, "%s: wake_open refused it: %s", cases[i].what, err);
        wake_close(w);
        ck_assert_int_eq(stat(path, &after), 0);
        ck_assert_msg(after.st_ino != before.st_ino, "%s: rewritten in place, not replaced",
                      cases[i].what);
        ck_assert_int_eq((long long)after.st_size, (long long)size);
        assert_allocated(path);
        size_t n;
        const char *now = tu_read_file(path, &n);
        ck_assert_msg(!memcmp(now, cur, sizeof cur), "%s: the new file is not stamped",
                      cases[i].what);
        /* The old file, still held by "an old process", is untouched. */
        char *held = calloc(1, cases[i].size + 8);
        ck_assert_ptr_nonnull(held);
        ck_assert_int_eq(pread(oldfd, held, cases[i].size, 0), (ssize_t)cases[i].size);
        ck_assert_msg(!memcmp(held, old, cases[i].size), "%s: the old file was modified",
                      cases[i].what);
        close(oldfd);
        free(held);
        free(old);
        assert_wakes(db);
        char ls[1024];
        ck_assert_str_eq(dir_listing(dir, ls, sizeof ls), "test.db-wake");
    }
}
END_TEST

START_TEST(test_non_regular_file_at_the_wake_path_is_an_error)
{
    const char *dir = tu_mkdtemp();
    ck_assert_int_eq(mkdir(tu_path(dir, "test.db-wake"), 0755), 0);
    wake *w = (wake *)dir;
    char err[512] = "";
    ck_assert_int_lt(wake_open(&w, tu_path(dir, "test.db"), err, sizeof err), 0);
    ck_assert_ptr_null(w);
    ck_assert_msg(strstr(err, "test.db-wake") != NULL, "error '%s' does not name the file", err);
}
END_TEST

/* In a forked child: wait for go_fd to close, open the wake file, publish. */
static void opener_child(const char *db, int go_fd)
{
    char c, err[256];
    wake *w = NULL;
    if (read(go_fd, &c, 1) != 0)
        _exit(2);
    if (wake_open(&w, db, err, sizeof err))
        _exit(3);
    wake_publish(w, 1);
    wake_close(w);
    _exit(0);
}

START_TEST(test_racing_openers_all_use_one_file)
{
    /* Every process that opens at the same moment -- the file missing, or
     * stale -- must end up on the same file, or their wake-ups would go
     * past each other: each child publishes once into the file it got. */
    enum { KIDS = 8 };
    for (int stale = 0; stale < 2; stale++) {
        const char *dir = tu_mkdtemp();
        const char *db = tu_path(dir, "test.db");
        if (stale) {
            uint32_t h[2] = {0x686f6c64u, 1};
            tu_write_file(tu_path(dir, "test.db-wake"), h, sizeof h);
        }
        int go[2];
        pid_t kids[KIDS];
        ck_assert_int_eq(pipe(go), 0);
        for (int i = 0; i < KIDS; i++) {
            kids[i] = fork();
            ck_assert_int_ge(kids[i], 0);
            if (kids[i] == 0) {
                close(go[1]);
                opener_child(db, go[0]);
            }
        }
        close(go[0]);
        usleep(50 * 1000);
        close(go[1]); /* go, all at once */
        for (int i = 0; i < KIDS; i++) {
            int st;
            ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "opener %d: status %d", i, st);
        }
        wake *w = open_wake(db);
        ck_assert_msg(wake_seq(w) == KIDS, "%s file: %u of %d publishes reached the file at "
                      "the path", stale ? "stale" : "missing", wake_seq(w), KIDS);
        wake_close(w);
        char ls[1024];
        ck_assert_str_eq(dir_listing(dir, ls, sizeof ls), "test.db-wake");
    }
}
END_TEST

/* ---- slots and retired totals ------------------------------------------- */

#define MASK_CUMULATIVE ((1u << 1) | (1u << 2)) /* values[0] is a gauge */

/* In a forked child: claim a slot, set values 0..2 to base, base+1, base+2,
 * report the slot's index, optionally release it, exit. */
static pid_t counting_child(const char *db, int64_t base, int release, int *index)
{
    int rep[2];
    ck_assert_int_eq(pipe(rep), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char err[256];
        wake *w = NULL;
        close(rep[0]);
        if (wake_open(&w, db, err, sizeof err))
            _exit(2);
        wake_slot *s = wake_slot_claim(w);
        if (!s)
            _exit(3);
        int i = (int)(s - (wake_slot *)wake_slots(w));
        for (int k = 0; k < 3; k++)
            atomic_fetch_add(&s->values[k], base + k);
        if (write(rep[1], &i, sizeof i) != (ssize_t)sizeof i)
            _exit(4);
        if (release)
            wake_slot_release(s);
        wake_close(w);
        _exit(0); /* without release: as if it had been killed */
    }
    close(rep[1]);
    read_exact(rep[0], index, sizeof *index);
    close(rep[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "counting child: status %d", st);
    return pid;
}

/* retired + live slots of value k, as /stats adds them up. */
static int64_t total(const wake *w, size_t k)
{
    int64_t t = wake_retired(w, k);
    const wake_slot *s = wake_slots(w);
    for (size_t i = 0; i < WAKE_SLOTS; i++)
        if (wake_slot_alive(&s[i]))
            t += atomic_load(&s[i].values[k]);
    return t;
}

START_TEST(test_fold_dead_adds_the_masked_values_of_a_dead_process_once)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    wake *w = open_wake(db);
    ck_assert_int_eq(wake_retired(w, 1), 0);
    wake_fold_dead(w, MASK_CUMULATIVE);
    int idx;
    pid_t pid = counting_child(db, 10, 0, &idx);
    const wake_slot *s = wake_slots(w);
    ck_assert_int_eq(atomic_load(&s[idx].pid), pid); /* left behind by the dead child */
    ck_assert(!wake_slot_alive(&s[idx]));
    wake_fold_dead(w, MASK_CUMULATIVE);
    ck_assert_int_eq(atomic_load(&s[idx].pid), 0); /* freed */
    ck_assert_int_eq(wake_retired(w, 0), 0);       /* a gauge: not kept */
    ck_assert_int_eq(wake_retired(w, 1), 11);
    ck_assert_int_eq(wake_retired(w, 2), 12);
    ck_assert_int_eq(wake_retired(w, 3), 0);
    ck_assert_int_eq(wake_retired(w, WAKE_SLOT_VALUES), 0);
    wake_fold_dead(w, MASK_CUMULATIVE); /* again: nothing more */
    ck_assert_int_eq(wake_retired(w, 1), 11);
    /* Another handle (another process) sees the same totals. */
    wake *o = open_wake(db);
    ck_assert_int_eq(wake_retired(o, 2), 12);
    wake_close(o);

    /* A slot left by a process that died while folding it: freed, not added. */
    pid = counting_child(db, 100, 0, &idx);
    atomic_store((_Atomic int32_t *)&s[idx].pid, -pid);
    wake_fold_dead(w, MASK_CUMULATIVE);
    ck_assert_int_eq(atomic_load(&s[idx].pid), 0);
    ck_assert_int_eq(wake_retired(w, 1), 11);
    wake_close(w);
}
END_TEST

START_TEST(test_released_slot_keeps_its_totals)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    wake *w = open_wake(db);
    wake_fold_dead(w, MASK_CUMULATIVE);
    int idx;
    counting_child(db, 5, 1, &idx);
    ck_assert_int_eq(atomic_load(&wake_slots(w)[idx].pid), 0);
    ck_assert_int_eq(wake_retired(w, 1), 6);
    ck_assert_int_eq(wake_retired(w, 2), 7);
    ck_assert_int_eq(total(w, 1), 6);
    /* A forked child's copy of our slot is not the child's to release. */
    wake_slot *mine = wake_slot_claim(w);
    ck_assert_ptr_nonnull(mine);
    atomic_store(&mine->values[1], 3);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        wake_slot_release(mine);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_int_eq(atomic_load(&mine->pid), (int32_t)getpid());
    ck_assert_int_eq(total(w, 1), 9);
    wake_slot_release(mine);
    ck_assert_int_eq(total(w, 1), 9);
    ck_assert_int_eq(wake_retired(w, 1), 9);
    wake_close(w);
}
END_TEST

START_TEST(test_claim_folds_a_dead_slot_before_reusing_it)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    wake *w = open_wake(db);
    wake_fold_dead(w, MASK_CUMULATIVE); /* gives the mask; nothing to fold yet */
    int idx;
    counting_child(db, 40, 0, &idx);
    wake_slot *mine[WAKE_SLOTS];
    for (int i = 0; i < WAKE_SLOTS - 1; i++) {
        mine[i] = wake_slot_claim(w);
        ck_assert_msg(mine[i] != NULL, "claim %d of the free slots failed", i);
    }
    ck_assert_int_eq(wake_retired(w, 1), 0); /* free slots first */
    mine[WAKE_SLOTS - 1] = wake_slot_claim(w);
    ck_assert_ptr_eq(mine[WAKE_SLOTS - 1], &wake_slots(w)[idx]);
    ck_assert_int_eq(wake_retired(w, 1), 41);
    ck_assert_int_eq(wake_retired(w, 2), 42);
    for (size_t k = 0; k < WAKE_SLOT_VALUES; k++)
        ck_assert_int_eq(atomic_load(&mine[WAKE_SLOTS - 1]->values[k]), 0);
    ck_assert_ptr_null(wake_slot_claim(w)); /* every slot is live */
    for (int i = 0; i < WAKE_SLOTS; i++)
        wake_slot_release(mine[i]);
    ck_assert_int_eq(total(w, 1), 41);
    wake_close(w);
}
END_TEST

static void folder_child(const char *db, int go_fd)
{
    char c, err[256];
    wake *w = NULL;
    if (wake_open(&w, db, err, sizeof err))
        _exit(2);
    if (read(go_fd, &c, 1) != 0)
        _exit(3);
    wake_fold_dead(w, MASK_CUMULATIVE);
    wake_close(w);
    _exit(0);
}

START_TEST(test_processes_folding_at_once_count_each_dead_slot_once)
{
    enum { DEAD = 24, FOLDERS = 6 };
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    wake *w = open_wake(db);
    int64_t want = 0;
    for (int i = 0; i < DEAD; i++) {
        int idx;
        counting_child(db, 1000 * (i + 1), 0, &idx);
        want += 1000 * (i + 1) + 1;
    }
    int go[2];
    pid_t kids[FOLDERS];
    ck_assert_int_eq(pipe(go), 0);
    for (int i = 0; i < FOLDERS; i++) {
        kids[i] = fork();
        ck_assert_int_ge(kids[i], 0);
        if (kids[i] == 0) {
            close(go[1]);
            folder_child(db, go[0]);
        }
    }
    close(go[0]);
    usleep(50 * 1000);
    close(go[1]);
    for (int i = 0; i < FOLDERS; i++) {
        int st;
        ck_assert_int_eq(waitpid(kids[i], &st, 0), kids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "folder %d: status %d", i, st);
    }
    ck_assert_int_eq(wake_retired(w, 1), want);
    const wake_slot *s = wake_slots(w);
    for (size_t i = 0; i < WAKE_SLOTS; i++)
        ck_assert_int_eq(atomic_load(&s[i].pid), 0);
    wake_close(w);
}
END_TEST

Suite *wake_suite(void)
{
    Suite *s = suite_create("wake");
    TCase *tc = tu_tcase(s, "wake", 30);
    tcase_add_test(tc, test_open_creates_wake_file_beside_db);
    tcase_add_test(tc, test_wait_times_out_when_nothing_happens);
    tcase_add_test(tc, test_wait_returns_at_once_if_counter_already_moved);
    tcase_add_test(tc, test_head_never_goes_backwards);
    tcase_add_test(tc, test_waiter_in_other_process_is_woken_by_publish);
    tcase_add_test(tc, test_watcher_writes_eventfd_on_publish_from_another_process);
    tcase_add_test(tc, test_watcher_forwards_publish_made_right_after_start);
    tcase_add_test(tc, test_watcher_ticks_every_interval_without_publishes);
    tcase_add_test(tc, test_new_wake_file_is_fully_allocated);
    tcase_add_test(tc, test_wake_file_that_cannot_be_allocated_fails_cleanly);
    tcase_add_test(tc, test_stale_wake_files_are_replaced_atomically);
    tcase_add_test(tc, test_non_regular_file_at_the_wake_path_is_an_error);
    tcase_add_test(tc, test_racing_openers_all_use_one_file);
    tcase_add_test(tc, test_fold_dead_adds_the_masked_values_of_a_dead_process_once);
    tcase_add_test(tc, test_released_slot_keeps_its_totals);
    tcase_add_test(tc, test_claim_folds_a_dead_slot_before_reusing_it);
    tcase_add_test(tc, test_processes_folding_at_once_count_each_dead_slot_once);
    return s;
}
