/* check_msglog_procs.c -- the log under several processes at once: two
 * concurrent publishers lose and reorder nothing, and processes opening a
 * new database together agree on one schema and one epoch. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "msglog.h"
#include "testutil.h"

/* ---- several processes -------------------------------------------------- */

#define PER_PROC 5000

/* In a forked child: wait for the start signal, then publish PER_PROC
 * messages "P<proc>-<seq>".  Returns the exit status (never uses Check). */
static int publisher_child(const char *db, int proc, int start_fd)
{
    char c;
    while (read(start_fd, &c, 1) < 0 && errno == EINTR)
        ;
    msglog_options opt = {.path = db, .create = 1};
    msglog *lg = NULL;
    char err[256];
    if (msglog_open(&lg, &opt, err, sizeof err) != 0) {
        fprintf(stderr, "P%d: open: %s\n", proc, err);
        return 2;
    }
    int64_t prev = 0;
    for (int i = 0; i < PER_PROC; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "P%d-%d", proc, i);
        msglog_entry e = {.channel = "c", .body = body, .len = (size_t)n};
        msglog_ack ack;
        if (msglog_append(lg, &e, &ack) != 0) {
            fprintf(stderr, "P%d: append %d: %s\n", proc, i, msglog_errmsg(lg));
            return 3;
        }
        if (ack.id <= prev) {
            fprintf(stderr, "P%d: id %lld after %lld\n", proc, (long long)ack.id, (long long)prev);
            return 4;
        }
        prev = ack.id;
    }
    msglog_close(lg);
    return 0;
}

START_TEST(test_two_processes_publishing_concurrently_lose_and_reorder_nothing)
{
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    msglog_close(tu_open_log(dir));
    int start[2];
    ck_assert_int_eq(pipe(start), 0);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0) {
            close(start[1]);
            _exit(publisher_child(db, p, start[0]));
        }
    }
    close(start[0]);
    close(start[1]); /* both start now */
    for (int p = 0; p < 2; p++) {
        int st;
        ck_assert_int_eq(waitpid(pids[p], &st, 0), pids[p]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "publisher %d failed (status %d)", p,
                      st);
    }
    msglog *lg = tu_open_log(dir);
    msglog_batch b;
    const char *chan = "c";
    msglog_query q = {.channels = &chan, .nchannels = 1, .since = 0};
    ck_assert_int_eq(msglog_read(lg, &q, &b), 0);
    ck_assert_uint_eq(b.n, 2 * PER_PROC);
    int next[2] = {0, 0};
    for (size_t i = 0; i < b.n; i++) {
        if (i > 0)
            ck_assert_int_gt(b.msgs[i].id, b.msgs[i - 1].id);
        char body[32];
        ck_assert_uint_lt(b.msgs[i].len, sizeof body);
        memcpy(body, b.msgs[i].body, b.msgs[i].len);
        body[b.msgs[i].len] = '\0';
        int proc, seq;
        ck_assert_msg(sscanf(body, "P%d-%d", &proc, &seq) == 2 && (proc == 0 || proc == 1),
                      "unexpected body %s", body);
        ck_assert_msg(seq == next[proc], "P%d: seq %d where %d was due", proc, seq, next[proc]);
        next[proc]++;
    }
    ck_assert_int_eq(next[0], PER_PROC);
    ck_assert_int_eq(next[1], PER_PROC);
    msglog_batch_free(&b);
    msglog_close(lg);
}
END_TEST

#define NOPENERS 8
#define OPEN_ROUNDS 30

/* In a forked child: wait for the start signal, open (creating) the log,
 * append one message and report the epoch on result_fd. */
static int opener_child(const char *db, int p, int start_fd, int result_fd)
{
    char c, err[256], line[MSGLOG_EPOCH_LEN + 2];
    while (read(start_fd, &c, 1) < 0 && errno == EINTR)
        ;
    msglog_options opt = {.path = db, .create = 1};
    msglog *lg = NULL;
    if (msglog_open(&lg, &opt, err, sizeof err) != 0) {
        fprintf(stderr, "opener %d: %s\n", p, err);
        return 2;
    }
    msglog_entry e = {.channel = "c", .body = "x", .len = 1};
    msglog_ack ack;
    if (msglog_append(lg, &e, &ack) != 0) {
        fprintf(stderr, "opener %d: append: %s\n", p, msglog_errmsg(lg));
        return 3;
    }
    snprintf(line, sizeof line, "%s\n", msglog_epoch(lg));
    ssize_t w = write(result_fd, line, strlen(line));
    msglog_close(lg);
    return w == (ssize_t)strlen(line) ? 0 : 4;
}

/* NOPENERS processes open one new database at once; all must succeed and
 * agree on its epoch. */
static void concurrent_open_round(const char *db, int round)
{
    int start[2], result[2];
    ck_assert_int_eq(pipe(start), 0);
    ck_assert_int_eq(pipe(result), 0);
    pid_t pids[NOPENERS];
    for (int p = 0; p < NOPENERS; p++) {
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0) {
            close(start[1]);
            _exit(opener_child(db, p, start[0], result[1]));
        }
    }
    close(start[0]);
    close(start[1]);
    close(result[1]);
    int failed = 0;
    for (int p = 0; p < NOPENERS; p++) {
        int st;
        ck_assert_int_eq(waitpid(pids[p], &st, 0), pids[p]);
        failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    ck_assert_msg(failed == 0, "round %d: %d of %d processes opening a new database failed "
                  "(see stderr)", round, failed, NOPENERS);
    char epochs[NOPENERS * (MSGLOG_EPOCH_LEN + 1) + 1];
    size_t len = 0;
    ssize_t got;
    while ((got = read(result[0], epochs + len, sizeof epochs - 1 - len)) > 0)
        len += (size_t)got;
    close(result[0]);
    ck_assert_uint_eq(len, NOPENERS * (MSGLOG_EPOCH_LEN + 1));
    for (int p = 1; p < NOPENERS; p++)
        ck_assert_mem_eq(epochs + p * (MSGLOG_EPOCH_LEN + 1), epochs, MSGLOG_EPOCH_LEN);
}

START_TEST(test_concurrent_first_open_creates_one_schema_and_epoch)
{
    const char *dir = tu_mkdtemp();
    for (int round = 0; round < OPEN_ROUNDS; round++) {
        char name[32];
        snprintf(name, sizeof name, "round%d.db", round);
        concurrent_open_round(tu_path(dir, name), round);
    }
}
END_TEST

Suite *msglog_procs_suite(void)
{
    Suite *s = suite_create("msglog_procs");
    TCase *tc = tu_tcase(s, "concurrency", 120);
    tcase_add_test(tc, test_two_processes_publishing_concurrently_lose_and_reorder_nothing);
    tcase_add_test(tc, test_concurrent_first_open_creates_one_schema_and_epoch);
    return s;
}
