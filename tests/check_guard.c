/* check_guard.c -- the shared abuse limits: the per-client cap within and
 * across processes, dead processes' counts, the token bucket, stale files. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "guard.h"
#include "testutil.h"

static guard *open_in(const char *dir) {
    guard *l;
    char err[512];
    int rc = guard_open(&l, tu_path(dir, "hf.db"), err, sizeof err);
    ck_assert_msg(rc == 0, "guard_open: %s", err);
    return l;
}

START_TEST(test_cap_per_client) {
    guard *l = open_in(tu_mkdtemp());
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(guard_park(l, "10.0.0.1", 8, 3), GUARD_OK);
    ck_assert_int_eq(guard_park(l, "10.0.0.1", 8, 3), GUARD_REFUSED);
    ck_assert_int_eq(guard_parked(l, "10.0.0.1", 8), 3);
    ck_assert_int_eq(guard_park(l, "10.0.0.2", 8, 3), GUARD_OK);
    guard_unpark(l, "10.0.0.1", 8);
    ck_assert_int_eq(guard_park(l, "10.0.0.1", 8, 3), GUARD_OK);
    ck_assert_int_eq(guard_park(l, "10.0.0.9", 8, 0), GUARD_OK); /* 0 = no limit */
    /* Unparking what was never counted does not wrap. */
    for (int i = 0; i < 5; i++)
        guard_unpark(l, "10.0.0.3", 8);
    ck_assert_int_eq(guard_parked(l, "10.0.0.3", 8), 0);
    guard_close(l);
}
END_TEST

START_TEST(test_cap_across_processes_and_dead_rows) {
    const char *dir = tu_mkdtemp();
    guard *l = open_in(dir);
    ck_assert_int_eq(guard_park(l, "c", 1, 4), GUARD_OK);
    int pipefd[2], back[2]; /* child -> parent, parent -> child */
    ck_assert_int_eq(pipe(pipefd), 0);
    ck_assert_int_eq(pipe(back), 0);
    pid_t pid = fork();
    if (pid == 0) {
        guard *c = open_in(dir);
        int ok = 0;
        for (int i = 0; i < 5; i++)
            ok += guard_park(c, "c", 1, 4) == GUARD_OK;
        char n = (char)ok;
        if (write(pipefd[1], &n, 1) != 1)
            _exit(3);
        char wait_for;
        if (read(back[0], &wait_for, 1) != 1) /* killed by the parent: dies holding them */
            _exit(4);
        _exit(5);
    }
    char n = 0;
    ck_assert_int_eq(read(pipefd[0], &n, 1), 1);
    ck_assert_int_eq(n, 3); /* 1 here + 3 there = the cap of 4 */
    ck_assert_int_eq(guard_parked(l, "c", 1), 4);
    ck_assert_int_eq(guard_park(l, "c", 1, 4), GUARD_REFUSED);
    /* Killed without unparking (and before valgrind could count its
     * leaks): its counts must stop counting. */
    kill(pid, SIGKILL);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(guard_parked(l, "c", 1), 1);
    ck_assert_int_eq(guard_park(l, "c", 1, 4), GUARD_OK);
    close(pipefd[0]);
    close(pipefd[1]);
    close(back[0]);
    close(back[1]);
    guard_close(l);
}
END_TEST

START_TEST(test_rate_bucket) {
    guard *l = open_in(tu_mkdtemp());
    int retry = 0;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(guard_rate(l, "k1", 2, 20000, 3, &retry), GUARD_OK);
    ck_assert_int_eq(guard_rate(l, "k1", 2, 20000, 3, &retry), GUARD_REFUSED);
    ck_assert_int_ge(retry, 1);
    ck_assert_int_eq(guard_rate(l, "k2", 2, 20000, 3, &retry), GUARD_OK); /* its own */
    usleep(120 * 1000); /* 20/s: two tokens back */
    ck_assert_int_eq(guard_rate(l, "k1", 2, 20000, 3, &retry), GUARD_OK);
    ck_assert_int_eq(guard_rate(l, "k1", 2, 20000, 3, &retry), GUARD_OK);
    ck_assert_int_eq(guard_rate(l, "k1", 2, 20000, 3, &retry), GUARD_REFUSED);
    /* A slow rate says how long to wait. */
    ck_assert_int_eq(guard_rate(l, "slow", 4, 100, 1, &retry), GUARD_OK);
    ck_assert_int_eq(guard_rate(l, "slow", 4, 100, 1, &retry), GUARD_REFUSED);
    ck_assert_int_ge(retry, 9);
    ck_assert_int_le(retry, 10);
    ck_assert_int_eq(guard_rate(l, "none", 4, 0, 1, &retry), GUARD_OK);
    guard_close(l);
}
END_TEST

START_TEST(test_stale_file_replaced_and_errors) {
    const char *dir = tu_mkdtemp();
    const char *path = tu_path(dir, "hf.db-limits");
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "not ours", 8), 8);
    close(fd);
    guard *l = open_in(dir);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_gt(st.st_size, 500 * 1024);
    ck_assert_int_le(st.st_size, 1 << 20);
    ck_assert_int_eq(guard_park(l, "a", 1, 1), GUARD_OK);
    guard_close(l);
    char err[512];
    ck_assert_int_lt(guard_open(&l, tu_path(tu_path(dir, "missing"), "hf.db"), err, sizeof err),
                     0);
    ck_assert_ptr_nonnull(strstr(err, "limits"));
}
END_TEST

Suite *guard_suite(void) {
    Suite *s = suite_create("guard");
    TCase *tc = tu_tcase(s, "limits", 10);
    tcase_add_test(tc, test_cap_per_client);
    tcase_add_test(tc, test_cap_across_processes_and_dead_rows);
    tcase_add_test(tc, test_rate_bucket);
    tcase_add_test(tc, test_stale_file_replaced_and_errors);
    return s;
}
