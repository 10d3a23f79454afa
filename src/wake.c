/* wake.c -- cross-process wake-up: a futex in a small shared file.
 *
 * THE PROTOCOL.  Beside the database lives "<db>-wake", one page mapped
 * MAP_SHARED by every process that publishes or waits:
 *
 *     magic | version | seq (u32, the futex word) | waiters (u32) | head (i64)
 *     ... | slots[WAKE_SLOTS] at offset WAKE_SLOT_OFFSET (per-process counters)
 *
 * A publisher, after its COMMIT, raises `head` to its id, increments `seq`
 * and, if `waiters` is non-zero, calls FUTEX_WAKE on `seq` (no private flag,
 * so sleepers in any process wake).  A waiter reads `seq` *before* it looks
 * at the log, then sleeps with FUTEX_WAIT(seq, seen): if a publish happened
 * in between, the kernel sees seq != seen and returns at once, so no wake-up
 * is lost.  The file is a hint: it says "look again", and the log is the
 * truth.  Rows written by programs that do not know this file (a cron job
 * inserting through the outbox view) are found by the caller's slow
 * PRAGMA data_version check instead.
 *
 * Without futexes (not Linux) a waiter polls `seq` every few milliseconds.
 */
#include "wake.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#define WAKE_MAGIC 0x686f6c64u /* "hold" */
#define WAKE_VERSION 2u
#define WAKE_SLOT_OFFSET 64
#define WAKE_SIZE ((off_t)(WAKE_SLOT_OFFSET + WAKE_SLOTS * sizeof(wake_slot)))
#define WAKE_POLL_MS 5

typedef struct {
    uint32_t magic;
    uint32_t version;
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    _Atomic int64_t head;
} wake_page;

struct wake {
    wake_page *page;
    pthread_t watcher;
    int watching;
    _Atomic int stop;
    int fd;
    int interval_ms;
    uint32_t watch_seen; /* the counter when the watcher was started */
};

int wake_open(wake **out, const char *db_path, char *err, size_t errlen) {
    char path[PATH_MAX];
    struct stat st;
    *out = NULL;
    if (snprintf(path, sizeof path, "%s-wake", db_path) >= (int)sizeof path) {
        snprintf(err, errlen, "path too long: %s", db_path);
        return -ENAMETOOLONG;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open wake file %s: %s", path, strerror(e));
        return -e;
    }
    /* ftruncate only grows a new file; racing creators agree on the size. */
    if (fstat(fd, &st) != 0 || (st.st_size < WAKE_SIZE && ftruncate(fd, WAKE_SIZE) != 0)) {
        int e = errno;
        close(fd);
        snprintf(err, errlen, "cannot size wake file %s: %s", path, strerror(e));
        return -e;
    }
    void *p = mmap(NULL, (size_t)WAKE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "cannot map wake file %s: %s", path, strerror(e));
        return -e;
    }
    wake *w = calloc(1, sizeof *w);
    if (!w) {
        munmap(p, (size_t)WAKE_SIZE);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->page = p;
    /* A fresh file is all zeroes, which is a valid state; stamp it. */
    if (w->page->magic == 0) {
        w->page->version = WAKE_VERSION;
        w->page->magic = WAKE_MAGIC;
    } else if (w->page->magic != WAKE_MAGIC || w->page->version != WAKE_VERSION) {
        wake_close(w);
        snprintf(err, errlen, "%s is not a holdfast wake file (delete it; it is rebuilt)", path);
        return -EINVAL;
    }
    *out = w;
    return 0;
}

void wake_close(wake *w) {
    if (!w)
        return;
    if (w->watching) {
        atomic_store(&w->stop, 1);
        /* Nudge our own watcher out of its wait. */
        atomic_fetch_add(&w->page->seq, 1);
#ifdef __linux__
        syscall(SYS_futex, &w->page->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
        pthread_join(w->watcher, NULL);
    }
    munmap(w->page, (size_t)WAKE_SIZE);
    free(w);
}

void wake_publish(wake *w, int64_t head) {
    int64_t cur = atomic_load(&w->page->head);
    while (cur < head && !atomic_compare_exchange_weak(&w->page->head, &cur, head))
        ;
    atomic_fetch_add(&w->page->seq, 1);
#ifdef __linux__
    if (atomic_load(&w->page->waiters) > 0)
        syscall(SYS_futex, &w->page->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#endif
}

uint32_t wake_seq(const wake *w) {
    return atomic_load(&w->page->seq);
}

int64_t wake_head(const wake *w) {
    return atomic_load(&w->page->head);
}

static int64_t wake_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One sleep of at most ms (-1 = unbounded) while seq == seen. */
static int wake_sleep(wake *w, uint32_t seen, int ms) {
#ifdef __linux__
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    long r = syscall(SYS_futex, &w->page->seq, FUTEX_WAIT, seen, ms < 0 ? NULL : &ts, NULL, 0);
    if (r == 0 || errno == EAGAIN)
        return 0;
    return errno == ETIMEDOUT ? -ETIMEDOUT : errno == EINTR ? -EINTR : 0;
#else
    struct timespec ts = {0, WAKE_POLL_MS * 1000000L};
    (void)seen;
    if (ms >= 0 && ms < WAKE_POLL_MS)
        ts.tv_nsec = ms * 1000000L;
    nanosleep(&ts, NULL);
    return 0;
#endif
}

int wake_wait(wake *w, uint32_t seen, int timeout_ms) {
    int64_t deadline = timeout_ms < 0 ? -1 : wake_now_ms() + timeout_ms;
    int rc = 0;
    atomic_fetch_add(&w->page->waiters, 1);
    while (atomic_load(&w->page->seq) == seen) {
        int left = -1;
        if (deadline >= 0) {
            int64_t now = wake_now_ms();
            if (now >= deadline) {
                rc = -ETIMEDOUT;
                break;
            }
            left = (int)(deadline - now);
        }
        rc = wake_sleep(w, seen, left);
        if (rc == -EINTR)
            break;
        rc = 0;
    }
    atomic_fetch_sub(&w->page->waiters, 1);
    return rc;
}

static void *wake_watch_main(void *arg) {
    wake *w = arg;
    uint32_t seen = w->watch_seen;
    while (!atomic_load(&w->stop)) {
        int rc = wake_wait(w, seen, w->interval_ms);
        uint64_t one = 1;
        seen = wake_seq(w);
        if (atomic_load(&w->stop))
            break;
        (void)rc; /* moved or timed out: either way the owner looks again */
        /* EAGAIN means the counter is already non-zero: the owner will look. */
        if (write(w->fd, &one, sizeof one) < 0 && errno != EAGAIN)
            break;
    }
    return NULL;
}

int wake_watch_start(wake *w, int fd, int interval_ms) {
    if (w->watching)
        return -EBUSY;
    w->fd = fd;
    w->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    /* Read now, not in the thread: a publish between this call's return and
     * the thread's first read would otherwise go unnoticed. */
    w->watch_seen = wake_seq(w);
    int rc = pthread_create(&w->watcher, NULL, wake_watch_main, w);
    if (rc)
        return -rc;
    w->watching = 1;
    return 0;
}

/* ---- per-process counters ------------------------------------------------ */

static wake_slot *wake_slot_array(const wake *w) {
    return (wake_slot *)((char *)w->page + WAKE_SLOT_OFFSET);
}

const wake_slot *wake_slots(const wake *w) {
    return wake_slot_array(w);
}

int wake_slot_alive(const wake_slot *s) {
    int32_t pid = atomic_load(&s->pid);
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

wake_slot *wake_slot_claim(wake *w) {
    wake_slot *slots = wake_slot_array(w);
    int32_t me = (int32_t)getpid();
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < WAKE_SLOTS; i++) {
            int32_t cur = atomic_load(&slots[i].pid);
            /* First pass: free slots; second: slots of dead processes. */
            if (pass == 0 ? cur != 0 : (cur == 0 || wake_slot_alive(&slots[i])))
                continue;
            if (!atomic_compare_exchange_strong(&slots[i].pid, &cur, me))
                continue;
            for (size_t k = 0; k < WAKE_SLOT_VALUES; k++)
                atomic_store(&slots[i].values[k], 0);
            return &slots[i];
        }
    }
    return NULL;
}

void wake_slot_release(wake_slot *s) {
    if (s)
        atomic_store(&s->pid, 0);
}
