/* guard.c -- abuse limits across processes, in "<db>-limits".
 *
 * THE FILE (made and replaced by shmfile.c, so never partial):
 *
 *     magic | version | key state | key[16] | ... rate[GUARD_RATE_BUCKETS]
 *     | rows[GUARD_ROWS]: {pid, count[GUARD_BUCKETS]}
 *
 * Waiting subscribers: each process counts its own in its row, so a dead
 * process's counts stop counting the moment it is gone (rows of dead pids
 * are skipped, and reclaimed by the next process that needs a row).  A
 * client maps to two buckets by a keyed hash (HMAC-SHA256 with the file's
 * random key, so a client cannot aim at another's buckets); its count is
 * the smaller of the two bucket sums over live rows, so an innocent client
 * is refused only if both of its buckets are shared with heavy ones.  A
 * park is counted first and checked after, so racing parks never exceed
 * the cap (both may be refused).
 *
 * Publish rate: one token bucket per hashed key, packed into a 64-bit word
 * (last refill, milliseconds of CLOCK_MONOTONIC, low 32 bits | tokens in
 * thousandths) and updated by compare-and-swap.  Keys that hash alike
 * share a bucket.  A word of zero is a full bucket.
 */
#include "guard.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "clock.h"
#include "shmfile.h"

#define GUARD_MAGIC 0x686c696du /* "hlim" */
#define GUARD_VERSION 1u
#define GUARD_ROWS 255
#define GUARD_BUCKETS 1024
#define GUARD_RATE_BUCKETS 4096
#define GUARD_HEADER 64

typedef struct {
    uint32_t magic, version;
    _Atomic uint32_t key_state; /* 0 none, 1 being made, 2 ready */
    uint32_t pad;
    unsigned char key[16];
} guard_header;

typedef struct {
    _Atomic int32_t pid;
    int32_t pad;
    _Atomic uint16_t count[GUARD_BUCKETS];
} guard_row;

#define GUARD_RATE_OFF GUARD_HEADER
#define GUARD_ROWS_OFF (GUARD_RATE_OFF + GUARD_RATE_BUCKETS * 8)
#define GUARD_SIZE ((off_t)(GUARD_ROWS_OFF + GUARD_ROWS * sizeof(guard_row)))

_Static_assert(sizeof(guard_header) <= GUARD_HEADER, "the header overlaps the buckets");

struct guard {
    void *map;
    guard_header *hdr;
    _Atomic uint64_t *rate;
    guard_row *rows;
    guard_row *mine; /* NULL: no row was free */
    pid_t owner;
};

static int guard_pid_alive(int32_t pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The file's hash key, made by the first process that needs it. */
static const unsigned char *guard_key(guard *l) {
    uint32_t zero = 0;
    if (atomic_compare_exchange_strong(&l->hdr->key_state, &zero, 1)) {
        if (getrandom(l->hdr->key, sizeof l->hdr->key, 0) != (ssize_t)sizeof l->hdr->key)
            memset(l->hdr->key, 0x5a, sizeof l->hdr->key); /* still works, less keyed */
        atomic_store(&l->hdr->key_state, 2);
    }
    while (atomic_load(&l->hdr->key_state) != 2)
        sched_yield();
    return l->hdr->key;
}

/* Keyed hash of s: 64 bits. */
static uint64_t guard_hash(guard *l, const char *s, size_t n) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    uint64_t h = 0;
    if (HMAC(EVP_sha256(), guard_key(l), 16, (const unsigned char *)s, n, mac, &len) && len >= 8)
        memcpy(&h, mac, sizeof h);
    return h;
}

/* Claim a free row, or one of a dead process (zeroed). */
static guard_row *guard_claim(guard *l) {
    int32_t me = (int32_t)getpid();
    for (int i = 0; i < GUARD_ROWS; i++) {
        guard_row *r = &l->rows[i];
        int32_t cur = atomic_load(&r->pid);
        if (cur == me)
            return r;
        if ((cur == 0 || !guard_pid_alive(cur)) && atomic_compare_exchange_strong(&r->pid, &cur, me)) {
            for (int b = 0; b < GUARD_BUCKETS; b++)
                atomic_store(&r->count[b], 0);
            return r;
        }
    }
    return NULL;
}

int guard_open(guard **out, const char *db_path, char *err, size_t errlen) {
    static const shmfile_kind kind = {"limits", GUARD_MAGIC, GUARD_VERSION, GUARD_SIZE};
    char path[4096];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s-limits", db_path) >= (int)sizeof path) {
        snprintf(err, errlen, "path too long: %s", db_path);
        return -ENAMETOOLONG;
    }
    int fd = shmfile_open(path, &kind, err, errlen);
    if (fd < 0)
        return fd;
    void *p = mmap(NULL, (size_t)GUARD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "cannot map limits file %s: %s", path, strerror(e));
        return -e;
    }
    guard *l = calloc(1, sizeof *l);
    if (!l) {
        munmap(p, (size_t)GUARD_SIZE);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    l->map = p;
    l->hdr = p;
    l->rate = (_Atomic uint64_t *)(void *)((char *)p + GUARD_RATE_OFF);
    l->rows = (guard_row *)(void *)((char *)p + GUARD_ROWS_OFF);
    l->owner = getpid();
    l->mine = guard_claim(l);
    *out = l;
    return 0;
}

void guard_close(guard *l) {
    if (!l)
        return;
    if (l->mine && l->owner == getpid()) {
        for (int b = 0; b < GUARD_BUCKETS; b++)
            atomic_store(&l->mine->count[b], 0);
        atomic_store(&l->mine->pid, 0);
    }
    munmap(l->map, (size_t)GUARD_SIZE);
    free(l);
}

static void guard_buckets(guard *l, const char *client, size_t len, unsigned b[2]) {
    uint64_t h = guard_hash(l, client, len);
    b[0] = (unsigned)(h % GUARD_BUCKETS);
    b[1] = (unsigned)((h >> 32) % GUARD_BUCKETS);
    if (b[1] == b[0])
        b[1] = (b[0] + 1) % GUARD_BUCKETS;
}

/* The smaller bucket sum over live rows. */
static int guard_count(guard *l, const unsigned b[2]) {
    int64_t sum[2] = {0, 0};
    for (int i = 0; i < GUARD_ROWS; i++) {
        guard_row *r = &l->rows[i];
        int32_t pid = atomic_load(&r->pid);
        if (pid == 0)
            continue;
        uint16_t c0 = atomic_load(&r->count[b[0]]), c1 = atomic_load(&r->count[b[1]]);
        if ((c0 || c1) && (r == l->mine || guard_pid_alive(pid))) {
            sum[0] += c0;
            sum[1] += c1;
        }
    }
    return (int)(sum[0] < sum[1] ? sum[0] : sum[1]);
}

/* Add d (+1 or -1) to a bucket of this process's row, saturating. */
static void guard_add(_Atomic uint16_t *c, int d) {
    uint16_t cur = atomic_load(c);
    for (;;) {
        if ((d < 0 && cur == 0) || (d > 0 && cur == UINT16_MAX))
            return;
        if (atomic_compare_exchange_weak(c, &cur, (uint16_t)(cur + d)))
            return;
    }
}

guard_result guard_park(guard *l, const char *client, size_t len, int max) {
    if (!l || !l->mine || max <= 0)
        return GUARD_OK;
    unsigned b[2];
    guard_buckets(l, client, len, b);
    guard_add(&l->mine->count[b[0]], 1);
    guard_add(&l->mine->count[b[1]], 1);
    if (guard_count(l, b) <= max)
        return GUARD_OK;
    guard_add(&l->mine->count[b[0]], -1);
    guard_add(&l->mine->count[b[1]], -1);
    return GUARD_REFUSED;
}

void guard_unpark(guard *l, const char *client, size_t len) {
    if (!l || !l->mine)
        return;
    unsigned b[2];
    guard_buckets(l, client, len, b);
    guard_add(&l->mine->count[b[0]], -1);
    guard_add(&l->mine->count[b[1]], -1);
}

int guard_parked(guard *l, const char *client, size_t len) {
    unsigned b[2];
    if (!l)
        return 0;
    guard_buckets(l, client, len, b);
    return guard_count(l, b);
}

guard_result guard_rate(guard *l, const char *key, size_t len, int64_t rate_milli, int burst,
                          int *retry_after_s) {
    if (!l || rate_milli <= 0)
        return GUARD_OK;
    if (burst < 1)
        burst = 1;
    _Atomic uint64_t *w = &l->rate[guard_hash(l, key, len) % GUARD_RATE_BUCKETS];
    uint64_t full = (uint64_t)burst * 1000;
    if (full > UINT32_MAX)
        full = UINT32_MAX;
    uint64_t cur = atomic_load(w);
    for (;;) {
        uint32_t now = (uint32_t)clock_mono_ms() | 1; /* never 0: 0 is "full" */
        uint64_t tokens;
        if (cur == 0) {
            tokens = full;
        } else {
            uint32_t last = (uint32_t)(cur >> 32), elapsed = now - last;
            tokens = (uint32_t)cur + (uint64_t)elapsed * (uint64_t)rate_milli / 1000;
            if (tokens > full)
                tokens = full;
        }
        if (tokens < 1000) {
            int64_t need_ms = (int64_t)((1000 - tokens) * 1000 / (uint64_t)rate_milli);
            *retry_after_s = (int)((need_ms + 999) / 1000);
            if (*retry_after_s < 1)
                *retry_after_s = 1;
            return GUARD_REFUSED;
        }
        uint64_t next = (uint64_t)now << 32 | (tokens - 1000);
        if (atomic_compare_exchange_weak(w, &cur, next))
            return GUARD_OK;
    }
}
