/* bench_wake.c -- cross-process wake latency.
 *
 * A child process sleeps in wake_wait(); the parent stamps the time and
 * publishes.  Two modes, each over --rounds wakes:
 *   signal: parent calls wake_publish(); child measures until it sees the
 *           new head (the futex path alone);
 *   commit: parent appends a message (COMMIT) and publishes; the child
 *           wakes and reads the new row with msglog_read (what a parked
 *           subscriber's worker does).
 * Reports p50/p90/p99/max in microseconds. */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msglog.h"
#include "wake.h"

typedef struct {
    _Atomic int64_t sent_ns; /* when the parent started round i */
    _Atomic int64_t seen;    /* last round the child finished */
    int64_t lat_ns[];        /* per round, written by the child */
} shared_area;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Child: wait for each round's head, record its latency. */
static int waiter(const char *db, int rounds, int commit, shared_area *sh) {
    msglog_options o = {.path = db, .create = 1};
    char err[512];
    msglog *log;
    wake *wk;
    if (msglog_open(&log, &o, err, sizeof err) || wake_open(&wk, db, err, sizeof err)) {
        fprintf(stderr, "waiter: %s\n", err);
        return 1;
    }
    const char *chan = "wake";
    msglog_query q = {.channels = &chan, .nchannels = 1, .since = msglog_head(log)};
    int64_t base = commit ? q.since : wake_head(wk);
    for (int i = 1; i <= rounds; i++) {
        for (;;) {
            uint32_t seq = wake_seq(wk);
            int got;
            if (commit) {
                msglog_batch b;
                if (msglog_read(log, &q, &b))
                    return 1;
                got = b.n > 0;
                if (got)
                    q.since = b.cursor;
                msglog_batch_free(&b);
            } else {
                got = wake_head(wk) >= base + i;
            }
            if (got)
                break;
            if (wake_wait(wk, seq, 5000) == -ETIMEDOUT) {
                fprintf(stderr, "waiter: round %d never woke\n", i);
                return 1;
            }
        }
        sh->lat_ns[i - 1] = now_ns() - atomic_load(&sh->sent_ns);
        atomic_store(&sh->seen, i);
    }
    wake_close(wk);
    msglog_close(log);
    return 0;
}

static int run(const char *db, int rounds, int commit) {
    shared_area *sh = mmap(NULL, sizeof *sh + (size_t)rounds * 8, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    msglog_options o = {.path = db, .create = 1};
    char err[512];
    msglog *log;
    wake *wk;
    if (sh == MAP_FAILED || msglog_open(&log, &o, err, sizeof err) ||
        wake_open(&wk, db, err, sizeof err)) {
        fprintf(stderr, "bench_wake: %s\n", err);
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(waiter(db, rounds, commit, sh));
    usleep(200000); /* let the child open and start waiting */
    int64_t base = wake_head(wk);
    for (int i = 1; i <= rounds; i++) {
        usleep(300); /* the child is asleep in the futex, as in production */
        atomic_store(&sh->sent_ns, now_ns());
        if (commit) {
            msglog_entry e = {.channel = "wake", .body = "x", .len = 1};
            msglog_ack ack;
            if (msglog_append(log, &e, &ack))
                return 1;
            wake_publish(wk, ack.id);
        } else {
            wake_publish(wk, base + i);
        }
        int64_t t0 = now_ns();
        while (atomic_load(&sh->seen) < i && now_ns() - t0 < 5000000000LL)
            usleep(20);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        return 1;
    qsort(sh->lat_ns, (size_t)rounds, 8, cmp64);
    printf("wake mode=%s rounds=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f\n",
           commit ? "commit+read" : "signal", rounds, sh->lat_ns[rounds / 2] / 1e3,
           sh->lat_ns[rounds * 9 / 10] / 1e3, sh->lat_ns[rounds * 99 / 100] / 1e3,
           sh->lat_ns[rounds - 1] / 1e3);
    wake_close(wk);
    msglog_close(log);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    int rounds = argc > 2 ? atoi(argv[2]) : 2000;
    char db[4096];
    if (rounds < 100 || rounds > 1000000) {
        fprintf(stderr, "usage: bench_wake [DIR] [ROUNDS >= 100]\n");
        return 2;
    }
    snprintf(db, sizeof db, "%s/wake-%d.db", dir, (int)getpid());
    int rc = run(db, rounds, 0) || run(db, rounds, 1);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-wake"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char f[4200];
        snprintf(f, sizeof f, "%s%s", db, suffixes[i]);
        unlink(f);
    }
    return rc;
}
