/* wake.c -- cross-process wake-up: a futex in a small shared file.
 *
 * THE PROTOCOL.  Beside the database lives "<db>-wake", a few pages mapped
 * MAP_SHARED by every process that publishes or waits:
 *
 *     magic | version | seq (u32, the futex word) | waiters (u32) | head (i64)
 *     | fold mask (u32) | retired[WAKE_SLOT_VALUES] (i64, totals of the dead)
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
 * THE FILE is made and replaced by shmfile.c: only a complete file ever
 * appears at the path, and a stale one is replaced once.  A process that mapped the old
 * file keeps that mapping: it no longer wakes or is woken through this
 * file, and still sees new rows through its data_version tick.
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
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "clock.h"
#include "shmfile.h"

#define WAKE_MAGIC 0x686f6c64u /* "hold" */
#define WAKE_VERSION 3u        /* 3: fold mask and retired totals */
#define WAKE_SLOT_OFFSET 128
#define WAKE_PAGE_BYTES 4096
#define WAKE_SIZE                                                                        \
    ((off_t)((WAKE_SLOT_OFFSET + WAKE_SLOTS * sizeof(wake_slot) + WAKE_PAGE_BYTES - 1) / \
             WAKE_PAGE_BYTES * WAKE_PAGE_BYTES))
#define WAKE_POLL_MS 5
#define WAKE_MASK_GIVEN 0x80000000u /* fold_mask: some process has set it */

typedef struct {
    uint32_t magic;
    uint32_t version;
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    _Atomic int64_t head;
    _Atomic uint32_t fold_mask; /* WAKE_MASK_GIVEN | the cumulative values */
    uint32_t pad;
    _Atomic int64_t retired[WAKE_SLOT_VALUES];
} wake_page;

_Static_assert(sizeof(wake_page) <= WAKE_SLOT_OFFSET, "the header overlaps the slots");
_Static_assert(WAKE_SLOT_VALUES < 31, "the fold mask has a bit per value");

struct wake {
    wake_page *page;
    pthread_t watcher;
    int watching;
    _Atomic int stop;
    int fd;
    int interval_ms;
    uint32_t watch_seen; /* the counter when the watcher was started */
};

static const shmfile_kind wake_kind = {"wake", WAKE_MAGIC, WAKE_VERSION, WAKE_SIZE};

int wake_open(wake **out, const char *db_path, char *err, size_t errlen) {
    char path[PATH_MAX];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s-wake", db_path) >= (int)sizeof path) {
        snprintf(err, errlen, "path too long: %s", db_path);
        return -ENAMETOOLONG;
    }
    int fd = shmfile_open(path, &wake_kind, err, errlen);
    if (fd < 0)
        return fd;
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
    int64_t deadline = timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
    int rc = 0;
    atomic_fetch_add(&w->page->waiters, 1);
    while (atomic_load(&w->page->seq) == seen) {
        int left = -1;
        if (deadline >= 0) {
            int64_t now = clock_mono_ms();
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

static int wake_pid_alive(int32_t pid) {
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* With the slot taken (pid = -me): add its masked values to the retired
 * totals and zero them. */
static void wake_slot_fold(wake_page *pg, wake_slot *s, uint32_t mask) {
    for (size_t k = 0; k < WAKE_SLOT_VALUES; k++) {
        int64_t v = atomic_exchange(&s->values[k], 0);
        if (mask & (1u << k) && v)
            atomic_fetch_add(&pg->retired[k], v);
    }
}

/* The cumulative mask some process gave, or 0. */
static uint32_t wake_mask(const wake_page *pg) {
    uint32_t m = atomic_load(&pg->fold_mask);
    return m & WAKE_MASK_GIVEN ? m & ~WAKE_MASK_GIVEN : 0;
}

/* Take slot i from `cur` (a dead owner, or a dead folder when cur < 0) for
 * this process; fold a dead owner's values.  1 if taken (pid is -me). */
static int wake_slot_take(wake_page *pg, wake_slot *s, int32_t cur, int32_t me) {
    if (!atomic_compare_exchange_strong(&s->pid, &cur, -me))
        return 0;
    /* A dead folder's slot may be partly added: freeing it without adding
     * more is the best that can be done. */
    wake_slot_fold(pg, s, cur > 0 ? wake_mask(pg) : 0);
    return 1;
}

/* 1 if slot value cur belongs to a process that is gone. */
static int wake_slot_dead(int32_t cur, int32_t me) {
    if (cur > 0)
        return !wake_pid_alive(cur);
    return cur < 0 && -cur != me && !wake_pid_alive(-cur);
}

void wake_fold_dead(wake *w, uint32_t cumulative_mask) {
    wake_slot *slots = wake_slot_array(w);
    int32_t me = (int32_t)getpid();
    atomic_store(&w->page->fold_mask,
                 (cumulative_mask & ((1u << WAKE_SLOT_VALUES) - 1)) | WAKE_MASK_GIVEN);
    for (size_t i = 0; i < WAKE_SLOTS; i++) {
        int32_t cur = atomic_load(&slots[i].pid);
        if (cur != 0 && wake_slot_dead(cur, me) && wake_slot_take(w->page, &slots[i], cur, me))
            atomic_store(&slots[i].pid, 0);
    }
}

int64_t wake_retired(const wake *w, size_t k) {
    return k < WAKE_SLOT_VALUES ? atomic_load(&w->page->retired[k]) : 0;
}

wake_slot *wake_slot_claim(wake *w) {
    wake_slot *slots = wake_slot_array(w);
    int32_t me = (int32_t)getpid();
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < WAKE_SLOTS; i++) {
            int32_t cur = atomic_load(&slots[i].pid);
            /* First pass: free slots; second: slots of dead processes. */
            if (pass == 0 ? cur != 0 : (cur == 0 || !wake_slot_dead(cur, me)))
                continue;
            if (!wake_slot_take(w->page, &slots[i], cur, me))
                continue;
            slots[i].index = (int32_t)i;
            atomic_store(&slots[i].pid, me); /* zeroed: readers may count it now */
            return &slots[i];
        }
    }
    return NULL;
}

void wake_slot_release(wake_slot *s) {
    if (!s || s->index < 0 || s->index >= WAKE_SLOTS)
        return;
    wake_page *pg = (wake_page *)(void *)((char *)(s - s->index) - WAKE_SLOT_OFFSET);
    int32_t me = (int32_t)getpid();
    if (wake_slot_take(pg, s, me, me))
        atomic_store(&s->pid, 0);
}
