/* wake.h -- cross-process "the log has grown" signal (see wake.c).
 *
 * Lifecycle:
 *   wake_open(db_path)      map <db>-wake, creating it if needed
 *   wake_publish(w, id)     after COMMIT: announce the new head, wake waiters
 *   wake_wait(w, seq, ms)   block until the sequence moves past seq or timeout
 *   wake_watch_start(w, fd) forward every change to an eventfd (for epoll)
 *   wake_close(w)
 *
 * The signal is a hint, never the truth: a woken reader re-reads the log.
 */
#ifndef HOLDFAST_WAKE_H
#define HOLDFAST_WAKE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wake wake;

/* A process's counters, published in the wake file so that any worker can
 * report every worker's (/stats).  values[] are the process's own to
 * define; WAKE_SLOT_VALUES of them. */
#define WAKE_SLOT_VALUES 7
#define WAKE_SLOTS 255
typedef struct {
    _Atomic int32_t pid; /* 0 = free */
    int32_t reserved;
    _Atomic int64_t values[WAKE_SLOT_VALUES];
} wake_slot;

/* Open or create the wake file beside db_path ("<db_path>-wake"). */
int wake_open(wake **out, const char *db_path, char *err, size_t errlen);

/* Stop any watcher thread and unmap; NULL is a no-op. */
void wake_close(wake *w);

/* Announce that ids up to `head` are committed, and wake every waiter in
 * every process.  Cheap when nobody waits (no system call). */
void wake_publish(wake *w, int64_t head);

/* The change counter; read it before checking the log, then wait on it. */
uint32_t wake_seq(const wake *w);

/* Highest head any publisher announced (rows inserted by other programs are
 * not counted: they are noticed through msglog_changed()). */
int64_t wake_head(const wake *w);

/* Wait until the counter differs from `seen` or timeout_ms passes (-1 = no
 * limit).  Returns 0 when it moved, -ETIMEDOUT, or -EINTR. */
int wake_wait(wake *w, uint32_t seen, int timeout_ms);

/* Start one thread that writes 1 to eventfd `fd` whenever the counter moves
 * (and at least every interval_ms, so the owner can run its slow checks).
 * At most one watcher per handle; stopped by wake_close(). */
int wake_watch_start(wake *w, int fd, int interval_ms);

/* Claim a free slot for this process (or one left by a dead process),
 * zeroed; NULL when all WAKE_SLOTS are taken by live processes. */
wake_slot *wake_slot_claim(wake *w);

/* Give the slot back (at exit). */
void wake_slot_release(wake_slot *s);

/* The slot array (WAKE_SLOTS entries; pid 0 = free).  A slot whose pid is
 * no longer alive is stale: wake_slot_alive() tells. */
const wake_slot *wake_slots(const wake *w);
int wake_slot_alive(const wake_slot *s);

#endif
