/* check_wake.c -- the cross-process wake signal: waiting, timing out, being
 * woken by another process, and the eventfd watcher. */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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
    return s;
}
