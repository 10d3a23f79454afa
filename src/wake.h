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
 * define; WAKE_SLOT_VALUES of them.
 *
 * A slot's pid is 0 when free, the owner's pid while it counts, and minus
 * the pid of a process that is moving its values into the retired totals
 * ("folding"; readers skip it).  `index` is the slot's own position, set
 * when it is claimed. */
#define WAKE_SLOT_VALUES 7
#define WAKE_SLOTS 255
typedef struct {
    _Atomic int32_t pid;
    int32_t index;
    _Atomic int64_t values[WAKE_SLOT_VALUES];
} wake_slot;

/* Open or create the wake file beside db_path ("<db_path>-wake").  A new
 * file is fully allocated (posix_fallocate: no page of the mapping can
 * fault for want of disk space) and stamped before it appears at its path;
 * a stale one (older or newer version, wrong size, foreign magic) is
 * replaced the same way.  Returns 0, or -errno with the reason in err
 * ("cannot allocate wake file PATH: No space left on device"). */
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

/* Claim a free slot for this process (or one left by a dead process,
 * whose values are first folded into the retired totals with the mask
 * last given to wake_fold_dead() by any process: it is kept in the file),
 * zeroed; NULL when all WAKE_SLOTS are taken by live processes.  Call
 * wake_fold_dead() once before the first claim so that the mask is known:
 * until some process has given one, no value is cumulative and a dead
 * slot's values are dropped. */
wake_slot *wake_slot_claim(wake *w);

/* Give the slot back (at exit): its values are folded into the retired
 * totals (with the mask kept in the file) and the slot is freed.  A slot
 * that is not this process's (a forked child's copy) is left alone; NULL
 * is a no-op. */
void wake_slot_release(wake_slot *s);

/* The slot array (WAKE_SLOTS entries; pid 0 = free).  A slot whose pid is
 * no longer alive is stale: wake_slot_alive() tells. */
const wake_slot *wake_slots(const wake *w);
int wake_slot_alive(const wake_slot *s);

/* Totals of processes that are gone: for every slot whose process is dead,
 * add the values whose bit is set in cumulative_mask (bit k = values[k],
 * e.g. counters that only grow; leave gauges out) to retired[k] and free
 * the slot.  Safe when several processes fold at once: each slot is taken
 * by compare-and-swap of its pid first, so it is counted once.  The mask
 * is kept in the file for wake_slot_claim() and wake_slot_release().  A
 * process that dies while folding (a few instructions) leaves a slot that
 * the next fold frees without adding it. */
void wake_fold_dead(wake *w, uint32_t cumulative_mask);

/* The retired total of value k (0 for k >= WAKE_SLOT_VALUES).  A report is
 * retired[k] plus values[k] of every live slot. */
int64_t wake_retired(const wake *w, size_t k);

#endif
