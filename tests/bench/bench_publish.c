/* bench_publish.c -- publish throughput of the log: P processes each append
 * N messages (one COMMIT per message, or per --batch messages), report
 * messages/s.
 *
 *   bench_publish --db DIR [--messages N] [--procs P] [--durability normal|full]
 *                 [--batch B] [--size BYTES]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msglog.h"
#include "wake.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One publisher: append n messages in batches of `batch`; 0 on success. */
static int publisher(const char *db, int proc, long n, int batch, size_t size,
                     msglog_durability dur) {
    msglog_options o = {.path = db, .durability = dur, .create = 1, .busy_timeout_ms = 30000};
    char err[512], *body = malloc(size + 1);
    msglog *log;
    wake *wk;
    msglog_entry *e = calloc((size_t)batch, sizeof *e);
    msglog_ack *acks = calloc((size_t)batch, sizeof *acks);
    if (!body || !e || !acks || msglog_open(&log, &o, err, sizeof err) ||
        wake_open(&wk, db, err, sizeof err)) {
        fprintf(stderr, "publisher %d: %s\n", proc, err);
        return 1;
    }
    memset(body, 'x', size);
    for (int i = 0; i < batch; i++)
        e[i] = (msglog_entry){.channel = "bench", .body = body, .len = size};
    for (long done = 0; done < n;) {
        int k = n - done < batch ? (int)(n - done) : batch;
        if (msglog_append_batch(log, e, (size_t)k, acks)) {
            fprintf(stderr, "publisher %d: %s\n", proc, msglog_errmsg(log));
            return 1;
        }
        wake_publish(wk, acks[k - 1].id);
        done += k;
    }
    wake_close(wk);
    msglog_close(log);
    free(body);
    free(e);
    free(acks);
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},       {"messages", required_argument, 0, 'n'},
        {"procs", required_argument, 0, 'p'},    {"durability", required_argument, 0, 'u'},
        {"batch", required_argument, 0, 'b'},    {"size", required_argument, 0, 's'},
        {0, 0, 0, 0}};
    const char *dir = "/tmp";
    long n = 20000;
    int procs = 1, batch = 1, ch;
    size_t size = 64;
    msglog_durability dur = MSGLOG_DURABILITY_NORMAL;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 'n': n = atol(optarg); break;
        case 'p': procs = atoi(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        case 'u': dur = !strcmp(optarg, "full") ? MSGLOG_DURABILITY_FULL
                                                : MSGLOG_DURABILITY_NORMAL; break;
        default: return 2;
        }
    }
    if (n < 1 || procs < 1 || procs > 64 || batch < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char db[4096];
    snprintf(db, sizeof db, "%s/bench-%d.db", dir, (int)getpid());
    /* Create the schema before the clock starts. */
    if (publisher(db, 0, 0, 1, size, dur))
        return 1;
    double t0 = now_s();
    for (int p = 0; p < procs; p++)
        if (fork() == 0)
            _exit(publisher(db, p, n, batch, size, dur));
    int failed = 0, status;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    double dt = now_s() - t0;
    printf("publish durability=%s procs=%d batch=%d size=%zu messages=%ld seconds=%.3f "
           "msgs_per_s=%.0f\n",
           dur == MSGLOG_DURABILITY_FULL ? "full" : "normal", procs, batch, size,
           n * procs, dt, (double)(n * procs) / dt);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-wake"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char f[4200];
        snprintf(f, sizeof f, "%s%s", db, suffixes[i]);
        unlink(f);
    }
    return failed;
}
