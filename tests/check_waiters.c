/* check_waiters.c -- the parked-subscriber registry: channel index, deadline
 * heap order, removal from anywhere, and channel entries freed when empty. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_suites.h"
#include "testutil.h"
#include "waiters.h"

typedef struct {
    waiter *seen[64];
    size_t n;
} visit;

static void collect(waiter *w, void *ud)
{
    visit *v = ud;
    ck_assert_uint_lt(v->n, 64);
    v->seen[v->n++] = w;
}

static waiter *mk(const char *a, const char *b, int64_t deadline, uint64_t seq)
{
    const char *ch[2] = {a, b};
    waiter *w = waiter_new(ch, b ? 2 : 1);
    ck_assert_ptr_nonnull(w);
    w->deadline_ms = deadline;
    w->seq = seq;
    return w;
}

START_TEST(test_each_on_finds_exactly_the_waiters_of_a_channel)
{
    waiters *ws = waiters_new();
    waiter *a = mk("news", NULL, 10, 1), *b = mk("news", "chat", 20, 2), *c = mk("chat", NULL, 5, 3);
    ck_assert_int_eq(waiters_add(ws, a), 0);
    ck_assert_int_eq(waiters_add(ws, b), 0);
    ck_assert_int_eq(waiters_add(ws, c), 0);
    visit v = {0};
    waiters_each_on(ws, "news", collect, &v);
    ck_assert_uint_eq(v.n, 2);
    ck_assert(v.seen[0] != v.seen[1] && (v.seen[0] == a || v.seen[0] == b));
    v.n = 0;
    waiters_each_on(ws, "chat", collect, &v);
    ck_assert_uint_eq(v.n, 2);
    v.n = 0;
    waiters_each_on(ws, "other", collect, &v);
    ck_assert_uint_eq(v.n, 0);
    size_t len;
    const char *names = waiter_names(b, &len);
    ck_assert_uint_eq(len, strlen("news") + strlen("chat") + 2);
    ck_assert_int_eq(memcmp(names, "news\0chat", 10), 0);
    waiters_remove(ws, b);
    v.n = 0;
    waiters_each_on(ws, "news", collect, &v);
    ck_assert_uint_eq(v.n, 1);
    ck_assert_ptr_eq(v.seen[0], a);
    waiters_remove(ws, a);
    waiters_remove(ws, c);
    ck_assert_uint_eq(waiters_count(ws), 0);
    v.n = 0;
    waiters_each_on(ws, "news", collect, &v); /* the emptied entry is gone */
    ck_assert_uint_eq(v.n, 0);
    waiter_free(a);
    waiter_free(b);
    waiter_free(c);
    waiters_free(ws);
}
END_TEST

START_TEST(test_deadline_heap_yields_earliest_first_ties_by_arrival)
{
    enum { N = 500 };
    waiters *ws = waiters_new();
    waiter *w[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        w[i] = mk(i % 3 ? "a" : "b", NULL, rand() % 50, (uint64_t)i);
        ck_assert_int_eq(waiters_add(ws, w[i]), 0);
    }
    for (int i = 0; i < N; i += 7) /* remove from the middle of the heap */
        waiters_remove(ws, w[i]);
    for (int i = 3; i < N; i += 7) /* and move others, earlier and later */
        waiters_reschedule(ws, w[i], i % 2 ? rand() % 5 : 45 + rand() % 10);
    int64_t last_d = -1;
    uint64_t last_s = 0;
    size_t popped = 0;
    waiter *x;
    while ((x = waiters_first_due(ws))) {
        ck_assert(x->deadline_ms > last_d || (x->deadline_ms == last_d && x->seq > last_s));
        last_d = x->deadline_ms;
        last_s = x->seq;
        waiters_remove(ws, x);
        popped++;
    }
    ck_assert_uint_eq(popped, N - (N + 6) / 7);
    for (int i = 0; i < N; i++)
        waiter_free(w[i]);
    waiters_free(ws);
}
END_TEST

START_TEST(test_many_channels_grow_the_index_and_all_stay_reachable)
{
    enum { N = 3000 };
    waiters *ws = waiters_new();
    waiter **w = calloc(N, sizeof *w);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "ch.%d", i);
        w[i] = mk(name, "all", i, (uint64_t)i);
        ck_assert_int_eq(waiters_add(ws, w[i]), 0);
    }
    for (int i = 0; i < N; i += 97) {
        visit v = {0};
        snprintf(name, sizeof name, "ch.%d", i);
        waiters_each_on(ws, name, collect, &v);
        ck_assert_uint_eq(v.n, 1);
        ck_assert_ptr_eq(v.seen[0], w[i]);
    }
    ck_assert_uint_eq(waiters_count(ws), N);
    ck_assert_ptr_eq(waiters_first_due(ws), w[0]);
    for (int i = 0; i < N; i++) {
        ck_assert_ptr_nonnull(waiters_at(ws, 0));
        waiters_remove(ws, w[i]);
        waiter_free(w[i]);
    }
    ck_assert_ptr_null(waiters_at(ws, 0));
    free(w);
    waiters_free(ws);
}
END_TEST

Suite *waiters_suite(void)
{
    Suite *s = suite_create("waiters");
    TCase *tc = tu_tcase(s, "registry", 0);
    tcase_add_test(tc, test_each_on_finds_exactly_the_waiters_of_a_channel);
    tcase_add_test(tc, test_deadline_heap_yields_earliest_first_ties_by_arrival);
    tcase_add_test(tc, test_many_channels_grow_the_index_and_all_stay_reachable);
    return s;
}
