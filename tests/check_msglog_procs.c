/* check_msglog_procs.c -- the log under several processes at once (two
 * concurrent publishers lose and reorder nothing, processes opening a new
 * database together agree on one schema and one epoch, a writer holding the
 * lock gives -EBUSY) and under storage faults: read-only file or directory,
 * the database removed, a truncated or damaged file, a full disk. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
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

/* ---- storage faults ---------------------------------------------------------- */

/* Open dir's test.db with a busy timeout; the caller closes it. */
static msglog *open_busy(const char *db, int busy_ms)
{
    msglog_options opt = {.path = db, .create = 1, .busy_timeout_ms = busy_ms};
    msglog *lg = NULL;
    char err[512] = "";
    ck_assert_msg(msglog_open(&lg, &opt, err, sizeof err) == 0, "open %s: %s", db, err);
    return lg;
}

static int try_append(msglog *lg, const char *body)
{
    msglog_entry e = {.channel = "c", .body = body, .len = strlen(body)};
    msglog_ack ack;
    return msglog_append(lg, &e, &ack);
}

/* Open must fail with code and a reason containing `words`. */
static void open_fails(const char *db, int code, const char *words)
{
    msglog_options opt = {.path = db, .create = 1};
    msglog *lg = (msglog *)&opt;
    char err[512] = "";
    int rc = msglog_open(&lg, &opt, err, sizeof err);
    ck_assert_msg(rc == code, "open %s: rc=%d (want %d) %s", db, rc, code, err);
    ck_assert_ptr_null(lg);
    ck_assert_msg(strstr(err, words) && strstr(err, db), "unclear error: %s", err);
}

/* In a forked child: take the write lock with BEGIN EXCLUSIVE on a plain
 * SQLite connection, say so on ready_fd, hold it until go_fd has a byte. */
static int locker_child(const char *db, int ready_fd, int go_fd)
{
    sqlite3 *c = NULL;
    char byte = 'L';
    if (sqlite3_open_v2(db, &c, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_exec(c, "BEGIN EXCLUSIVE", NULL, NULL, NULL) != SQLITE_OK)
        return 2;
    if (write(ready_fd, &byte, 1) != 1)
        return 3;
    while (read(go_fd, &byte, 1) < 0 && errno == EINTR)
        ;
    int rc = sqlite3_exec(c, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(c);
    return rc == SQLITE_OK ? 0 : 4;
}

START_TEST(test_append_blocked_by_another_writer_gives_ebusy_within_the_set_timeout_then_succeeds)
{
    /* A lock held beyond the busy timeout is -EBUSY (the lead's 503 busy),
     * msglog_set_busy_timeout shortens the wait from the open's 60 s, and
     * the handle appends again once the lock is released. */
    const char *db = tu_path(tu_mkdtemp(), "test.db");
    msglog *lg = open_busy(db, 60000);
    ck_assert_int_eq(try_append(lg, "before"), 0);
    msglog_close(lg); /* fork with no handle open (valgrind would see the
                         child's copy leak) */
    int ready[2], go[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(locker_child(db, ready[1], go[0]));
    char byte;
    ck_assert_int_eq(read(ready[0], &byte, 1), 1);
    lg = open_busy(db, 60000); /* opening needs no write lock */
    msglog_set_busy_timeout(lg, 100);
    int64_t t0 = tu_mono_ms();
    int rc = try_append(lg, "blocked");
    int64_t waited = tu_mono_ms() - t0;
    ck_assert_msg(rc == -EBUSY, "append under a held lock: rc=%d %s", rc, msglog_errmsg(lg));
    ck_assert_msg(strstr(msglog_errmsg(lg), "locked"), "%s", msglog_errmsg(lg));
    ck_assert_msg(waited < 10000, "waited %lld ms: the 100 ms busy timeout was not used",
                  (long long)waited);
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "locker failed: %d", st);
    rc = try_append(lg, "after");
    ck_assert_msg(rc == 0, "append after the lock was released: %d %s", rc, msglog_errmsg(lg));
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 2);
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
    msglog_close(lg);
}
END_TEST

START_TEST(test_read_only_file_or_directory_fails_with_its_own_clear_error)
{
    /* A 0555 directory was accepted for root (access() says writable) and,
     * for others, gave the same -EROFS as a read-only file; each now has its
     * own code and words, and mode bits count for root too. */
    const char *dir = tu_mkdtemp();
    const char *db = tu_path(dir, "test.db");
    msglog_close(open_busy(db, 0));
    ck_assert_int_eq(chmod(db, 0444), 0);
    open_fails(db, -EROFS, "read-only");
    ck_assert_int_eq(chmod(db, 0644), 0);
    ck_assert_int_eq(chmod(dir, 0555), 0);
    open_fails(db, -EACCES, "not writable");
    ck_assert_int_eq(chmod(dir, 0755), 0);
    msglog *lg = open_busy(db, 0); /* the cause gone, it opens */
    ck_assert_int_eq(try_append(lg, "ok"), 0);
    msglog_close(lg);
}
END_TEST

START_TEST(test_append_after_database_removed_with_its_directory_fails_with_estale)
{
    /* SQLite would commit into the unlinked file and the message would be
     * acknowledged and lost. */
    const char *sub = tu_path(tu_mkdtemp(), "sub");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    const char *db = tu_path(sub, "test.db");
    msglog *lg = open_busy(db, 0);
    ck_assert_int_eq(try_append(lg, "kept"), 0);
    tu_rmrf(sub);
    int rc = try_append(lg, "lost?");
    ck_assert_msg(rc == -ESTALE, "append to a removed database: rc=%d %s", rc, msglog_errmsg(lg));
    ck_assert_msg(strstr(msglog_errmsg(lg), "removed"), "%s", msglog_errmsg(lg));
    msglog_close(lg);
    open_fails(db, -ENOENT, "does not exist");
}
END_TEST

/* A log of several pages: 400 messages of 200 bytes over 4 channels. */
static void fill_log(const char *db)
{
    msglog *lg = open_busy(db, 0);
    char body[201];
    memset(body, 'b', 200);
    body[200] = '\0';
    for (int i = 0; i < 400; i++) {
        static const char *const chans[] = {"a", "b", "c", "d"};
        msglog_entry e = {.channel = chans[i % 4], .body = body, .len = 200};
        msglog_ack ack;
        ck_assert_int_eq(msglog_append(lg, &e, &ack), 0);
    }
    msglog_close(lg); /* checkpoints: everything is in the file */
}

/* Open db and read every channel: the first failure's code (0 if none) and
 * its text in why. */
static int open_and_read_all(const char *db, char *why, size_t cap)
{
    static const char *const chans[] = {"a", "b", "c", "d"};
    msglog_options opt = {.path = db};
    msglog *lg = NULL;
    int rc = msglog_open(&lg, &opt, why, cap);
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        msglog_query q = {.channels = &chans[i], .nchannels = 1, .since = 0};
        msglog_batch b;
        rc = msglog_read(lg, &q, &b);
        if (rc)
            snprintf(why, cap, "%s", msglog_errmsg(lg));
        msglog_batch_free(&b);
    }
    msglog_close(lg);
    return rc;
}

/* Damage db with `damage`, then: a clear -EILSEQ at open or read, no crash,
 * and the file exactly as damaged. */
static void assert_damage_refused(const char *db, void (*damage)(char *, size_t *))
{
    size_t n = 0;
    const char *orig = tu_read_file(db, &n);
    ck_assert_uint_gt(n, 16 * 4096);
    char *bad = malloc(n);
    ck_assert_ptr_nonnull(bad);
    memcpy(bad, orig, n);
    damage(bad, &n);
    tu_write_file(db, bad, n);
    char why[512] = "";
    int rc = open_and_read_all(db, why, sizeof why);
    ck_assert_msg(rc == -EILSEQ, "damaged file: rc=%d %s", rc, why);
    ck_assert_msg(strstr(why, "corrupt") && strstr(why, db), "unclear error: %s", why);
    size_t after_n = 0;
    const char *after = tu_read_file(db, &after_n);
    ck_assert_uint_eq(after_n, n);
    ck_assert_msg(memcmp(after, bad, n) == 0, "the damaged file was modified");
    free(bad);
}

static void damage_truncate_half(char *p, size_t *n)
{
    (void)p;
    *n /= 2;
}

/* A whole page of 0xab in the middle (its page-type byte is invalid). */
static void damage_middle_page(char *p, size_t *n)
{
    size_t page = (*n / 4096 / 2) * 4096;
    memset(p + page, 0xab, 4096);
}

START_TEST(test_truncated_database_fails_clearly_and_is_left_untouched)
{
    /* A guard (this held before): the page count in the header exceeds the
     * file, so the first read says corrupt and nothing writes to it. */
    const char *db = tu_path(tu_mkdtemp(), "test.db");
    fill_log(db);
    assert_damage_refused(db, damage_truncate_half);
}
END_TEST

START_TEST(test_garbage_in_the_middle_fails_clearly_and_is_left_untouched)
{
    /* The open succeeds (the schema pages are intact) and the read fails:
     * its message used to be SQLite's bare "database disk image is
     * malformed"; it now says the file is corrupt or truncated. */
    const char *db = tu_path(tu_mkdtemp(), "test.db");
    fill_log(db);
    assert_damage_refused(db, damage_middle_page);
}
END_TEST

/* A VFS over the default one whose writes fail with SQLITE_FULL while
 * fault_full is set: a disk that fills up and is then cleaned. */
typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
} fault_file;

static sqlite3_vfs *fault_base;
static sqlite3_vfs fault_vfs;
static int fault_full;

#define REAL(f) (((fault_file *)(f))->real)
static int fault_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int fault_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int fault_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    return fault_full ? SQLITE_FULL : REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int fault_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int fault_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int fault_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int fault_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int fault_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int fault_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int fault_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int fault_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int fault_devchar(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int fault_shmmap(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int fault_shmlock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void fault_shmbarrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int fault_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int fault_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int fault_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}
#undef REAL

static const sqlite3_io_methods fault_io = {
    3,           fault_close,   fault_read,       fault_write,    fault_truncate,
    fault_sync,  fault_size,    fault_lock,       fault_unlock,   fault_reserved,
    fault_fcntl, fault_sector,  fault_devchar,    fault_shmmap,   fault_shmlock,
    fault_shmbarrier, fault_shmunmap, fault_fetch, fault_unfetch};

static int fault_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    fault_file *ff = (fault_file *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = fault_base->xOpen(fault_base, name, ff->real, flags, out);
    f->pMethods = ff->real->pMethods ? &fault_io : NULL;
    return rc;
}

/* Make the fault VFS SQLite's default (undone by fault_vfs_remove). */
static void fault_vfs_install(void)
{
    fault_base = sqlite3_vfs_find(NULL);
    ck_assert_ptr_nonnull(fault_base);
    fault_vfs = *fault_base;
    fault_vfs.zName = "holdfast-test-fault";
    fault_vfs.szOsFile = (int)sizeof(fault_file) + fault_base->szOsFile;
    fault_vfs.xOpen = fault_open;
    fault_vfs.pNext = NULL;
    fault_full = 0;
    ck_assert_int_eq(sqlite3_vfs_register(&fault_vfs, 1), SQLITE_OK);
}

static void fault_vfs_remove(void)
{
    sqlite3_vfs_unregister(&fault_vfs);
    sqlite3_vfs_register(fault_base, 1);
    fault_full = 0;
}

START_TEST(test_disk_full_gives_enospc_and_the_handle_recovers)
{
    /* SQLITE_FULL is -ENOSPC with words a log line can use, the failed
     * append leaves nothing behind, and the same handle appends once space
     * is back.  (A guard: the mapping existed; the recovery was untested.) */
    const char *db = tu_path(tu_mkdtemp(), "test.db");
    fault_vfs_install();
    msglog *lg = open_busy(db, 0);
    ck_assert_int_eq(try_append(lg, "one"), 0);
    int64_t head = msglog_head(lg);
    fault_full = 1;
    int rc = try_append(lg, "no room");
    fault_full = 0;
    ck_assert_msg(rc == -ENOSPC, "append on a full disk: rc=%d %s", rc, msglog_errmsg(lg));
    ck_assert_msg(strstr(msglog_errmsg(lg), "disk is full"), "%s", msglog_errmsg(lg));
    ck_assert_int_eq(msglog_head(lg), head);
    rc = try_append(lg, "two");
    ck_assert_msg(rc == 0, "append once space is back: %d %s", rc, msglog_errmsg(lg));
    ck_assert_int_eq(msglog_head(lg), head + 1);
    msglog_close(lg);
    fault_vfs_remove();
    ck_assert_int_eq(tu_sql_int(db, "SELECT count(*) FROM message"), 2);
}
END_TEST

Suite *msglog_procs_suite(void)
{
    Suite *s = suite_create("msglog_procs");
    TCase *tc = tu_tcase(s, "concurrency", 120);
    tcase_add_test(tc, test_two_processes_publishing_concurrently_lose_and_reorder_nothing);
    tcase_add_test(tc, test_concurrent_first_open_creates_one_schema_and_epoch);
    tcase_add_test(tc, test_append_blocked_by_another_writer_gives_ebusy_within_the_set_timeout_then_succeeds);

    tc = tu_tcase(s, "faults", 30);
    tcase_add_test(tc, test_read_only_file_or_directory_fails_with_its_own_clear_error);
    tcase_add_test(tc, test_append_after_database_removed_with_its_directory_fails_with_estale);
    tcase_add_test(tc, test_truncated_database_fails_clearly_and_is_left_untouched);
    tcase_add_test(tc, test_garbage_in_the_middle_fails_clearly_and_is_left_untouched);
    tcase_add_test(tc, test_disk_full_gives_enospc_and_the_handle_recovers);
    return s;
}
