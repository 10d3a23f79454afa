/* waiters.c -- the parked-subscriber registry.
 *
 * Two indexes over the same waiters, as Redis keeps blocked clients:
 *   - by channel: a chained hash table of channels, each with a doubly
 *     linked list of waiter_links (a waiter on k channels has k links, all
 *     inside its own allocation), so a publish to one channel touches only
 *     the waiters of that channel;
 *   - by deadline: a binary min-heap on (deadline_ms, seq), whose top is the
 *     dispatcher's next timeout (libuv's timer heap).
 * A channel entry is freed when its last waiter leaves, so names that
 * clients invent do not accumulate.
 */
#include "waiters.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct waiters_chan {
    waiters_chan *next; /* hash chain */
    waiter_link *head;
    uint64_t hash;
    char name[];
};

struct waiters {
    waiters_chan **buckets;
    size_t nbuckets; /* power of two */
    size_t nchans;
    waiter **heap;
    size_t n, cap;
};

/* ---- waiter ------------------------------------------------------------ */

waiter *waiter_new(const char *const *channels, size_t n) {
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += strlen(channels[i]) + 1;
    size_t head = sizeof(waiter) + n * sizeof(waiter_link);
    head = (head + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
    waiter *w = calloc(1, head + n * sizeof(char *) + names);
    if (!w)
        return NULL;
    w->fd = -1;
    w->nchannels = (uint8_t)n;
    w->channels = (const char **)((char *)w + head);
    char *p = (char *)(w->channels + n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(channels[i]) + 1;
        memcpy(p, channels[i], len);
        w->channels[i] = p;
        p += len;
    }
    w->names_len = names;
    return w;
}

void waiter_free(waiter *w) {
    free(w);
}

const char *waiter_names(const waiter *w, size_t *len) {
    *len = w->names_len;
    return w->nchannels ? w->channels[0] : "";
}

/* ---- channel index ------------------------------------------------------ */

static uint64_t waiters_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static waiters_chan **waiters_slot(const waiters *ws, const char *name, uint64_t h) {
    waiters_chan **pp = &ws->buckets[h & (ws->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->name, name)))
        pp = &(*pp)->next;
    return pp;
}

static int waiters_rehash(waiters *ws) {
    size_t nb = ws->nbuckets * 2;
    waiters_chan **b = calloc(nb, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < ws->nbuckets; i++) {
        for (waiters_chan *c = ws->buckets[i], *next; c; c = next) {
            next = c->next;
            c->next = b[c->hash & (nb - 1)];
            b[c->hash & (nb - 1)] = c;
        }
    }
    free(ws->buckets);
    ws->buckets = b;
    ws->nbuckets = nb;
    return 0;
}

static waiters_chan *waiters_chan_get(waiters *ws, const char *name) {
    uint64_t h = waiters_hash(name);
    waiters_chan **pp = waiters_slot(ws, name, h);
    if (*pp)
        return *pp;
    size_t len = strlen(name) + 1;
    waiters_chan *c = calloc(1, sizeof *c + len);
    if (!c)
        return NULL;
    memcpy(c->name, name, len);
    c->hash = h;
    *pp = c;
    if (++ws->nchans > ws->nbuckets)
        waiters_rehash(ws); /* a failed grow only lengthens the chains */
    return c;
}

static void waiters_chan_drop(waiters *ws, waiters_chan *c) {
    waiters_chan **pp = waiters_slot(ws, c->name, c->hash);
    *pp = c->next;
    ws->nchans--;
    free(c);
}

/* ---- deadline heap ------------------------------------------------------ */

static int waiters_before(const waiter *a, const waiter *b) {
    return a->deadline_ms < b->deadline_ms ||
           (a->deadline_ms == b->deadline_ms && a->seq < b->seq);
}

static void waiters_heap_set(waiters *ws, size_t i, waiter *w) {
    ws->heap[i] = w;
    w->heap_idx = i;
}

static void waiters_sift_up(waiters *ws, size_t i) {
    waiter *w = ws->heap[i];
    while (i > 0 && waiters_before(w, ws->heap[(i - 1) / 2])) {
        waiters_heap_set(ws, i, ws->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    waiters_heap_set(ws, i, w);
}

static void waiters_sift_down(waiters *ws, size_t i) {
    waiter *w = ws->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ws->n)
            break;
        if (c + 1 < ws->n && waiters_before(ws->heap[c + 1], ws->heap[c]))
            c++;
        if (!waiters_before(ws->heap[c], w))
            break;
        waiters_heap_set(ws, i, ws->heap[c]);
        i = c;
    }
    waiters_heap_set(ws, i, w);
}

/* ---- registry ------------------------------------------------------------ */

waiters *waiters_new(void) {
    waiters *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->nbuckets = 64;
    ws->buckets = calloc(ws->nbuckets, sizeof *ws->buckets);
    if (!ws->buckets) {
        free(ws);
        return NULL;
    }
    return ws;
}

void waiters_free(waiters *ws) {
    if (!ws)
        return;
    for (size_t i = 0; i < ws->nbuckets; i++)
        for (waiters_chan *c = ws->buckets[i], *next; c; c = next) {
            next = c->next;
            free(c);
        }
    free(ws->buckets);
    free(ws->heap);
    free(ws);
}

int waiters_add(waiters *ws, waiter *w) {
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 256;
        waiter **h = realloc(ws->heap, cap * sizeof *h);
        if (!h)
            return -ENOMEM;
        ws->heap = h;
        ws->cap = cap;
    }
    for (size_t i = 0; i < w->nchannels; i++) {
        waiters_chan *c = waiters_chan_get(ws, w->channels[i]);
        if (!c) {
            waiters_remove(ws, w); /* undo the links made so far */
            return -ENOMEM;
        }
        waiter_link *l = &w->links[i];
        l->w = w;
        l->chan = c;
        l->prev = NULL;
        l->next = c->head;
        if (c->head)
            c->head->prev = l;
        c->head = l;
    }
    ws->n++;
    waiters_heap_set(ws, ws->n - 1, w);
    waiters_sift_up(ws, ws->n - 1);
    return 0;
}

void waiters_remove(waiters *ws, waiter *w) {
    for (size_t i = 0; i < w->nchannels; i++) {
        waiter_link *l = &w->links[i];
        if (!l->chan)
            continue;
        if (l->prev)
            l->prev->next = l->next;
        else
            l->chan->head = l->next;
        if (l->next)
            l->next->prev = l->prev;
        if (!l->chan->head)
            waiters_chan_drop(ws, l->chan);
        l->chan = NULL;
    }
    size_t i = w->heap_idx;
    if (i >= ws->n || ws->heap[i] != w)
        return; /* not in the heap (a partial add) */
    waiter *last = ws->heap[--ws->n];
    if (i < ws->n) {
        waiters_heap_set(ws, i, last);
        waiters_sift_up(ws, i);
        waiters_sift_down(ws, last->heap_idx);
    }
}

void waiters_reschedule(waiters *ws, waiter *w, int64_t deadline_ms) {
    w->deadline_ms = deadline_ms;
    waiters_sift_up(ws, w->heap_idx);
    waiters_sift_down(ws, w->heap_idx);
}

size_t waiters_count(const waiters *ws) {
    return ws->n;
}

waiter *waiters_first_due(const waiters *ws) {
    return ws->n ? ws->heap[0] : NULL;
}

waiter *waiters_at(const waiters *ws, size_t i) {
    return i < ws->n ? ws->heap[i] : NULL;
}

void waiters_each_on(const waiters *ws, const char *name, void (*fn)(waiter *, void *),
                     void *ud) {
    waiters_chan *c = *waiters_slot(ws, name, waiters_hash(name));
    for (waiter_link *l = c ? c->head : NULL; l; l = l->next)
        fn(l->w, ud);
}
