/* lpload.c -- long-poll load generator: N subscribers parked on one channel,
 * M publishes, and a check that every subscriber got every message exactly
 * once and in order, with end-to-end latencies.
 *
 *   lpload [options] (--http ADDR | --fcgi ADDR)      (see usage())
 *
 * This file: options, setup, the report.  lprun.c: the run itself.
 * lphttp.c, lpjson.c, lphist.c: pure helpers (HTTP answers, poll JSON,
 * latency histogram), unit-tested by check_lpload.c.
 *
 * One thread, one epoll set, non-blocking sockets.  The run has phases:
 *   INIT     GET {prefix}/stats: "head" (starting cursor), "epoch", and the
 *            parked count before we start (keys configurable; numbers are
 *            picked with a key search, not a JSON parser).  Without /stats
 *            the first poll carries no since, i.e. starts at the head.
 *   CONNECT  open the subscribers, at most --connect-rate per millisecond,
 *            each sending GET {prefix}/sub/{channel}?since=..&epoch=..
 *            &timeout=T.  RSS of --pids is sampled first.
 *   SETTLE   wait until the server reports N more parked (polling /stats)
 *            or, without a parked count, --settle-ms; then sample RSS.
 *   PUBLISH  POST {prefix}/pub/{channel} "seq=<k> t=<CLOCK_MONOTONIC ns>",
 *            at --rate per second or as fast as --inflight allows.
 *   DRAIN    wait until every subscriber has all M messages, or no delivery
 *            has arrived for --drain-ms.
 * --duration-limit stops any phase.
 *
 * Subscribers re-poll at once with the answer's cursor and epoch, over the
 * same HTTP/1.1 connection when the server keeps it alive (Content-Length or
 * chunked), over a new one otherwise; a request that failed is retried after
 * a short back-off with the same cursor.  In --fcgi mode every request is one
 * FastCGI connection (fcgiclient's split API), SCRIPT_NAME = --prefix.
 *
 * Correctness bookkeeping, per subscriber: a bitmap of seqs received (a
 * second copy is a duplicate), the highest message id seen (a new seq
 * with an id not above it is out of order), and the count of distinct seqs.
 * A payload that is not ours ("seq=" missing or >= M) is counted as foreign.
 *
 * --nchan longpoll|multipart drives nchan (libnginx-mod-nchan) the way its
 * own clients do, for side-by-side runs (tests/bench/compare-nchan): GET
 * {prefix}/sub/{channel} sends back the last answer's Last-Modified and Etag
 * as If-Modified-Since / If-None-Match, POST {prefix}/pub/{channel}
 * publishes, GET {prefix}/pub/{channel} (JSON) gives "subscribers" for
 * SETTLE.  nchan's answers carry no id per message, so order is checked
 * between answers (the (Last-Modified, Etag) position must grow), and
 * within a multipart answer its parts are taken in the order sent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "lpload.h"

static const char *const role_name[NROLES] = {"sub", "pub", "stats"};

static void lp_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void lp_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lpload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: lpload (--http ADDR | --fcgi ADDR) [options]\n"
          "  ADDR: 127.0.0.1:PORT, [::1]:PORT or unix:/path (loopback only\n"
          "        unless --allow-remote)\n"
          "  --subscribers N     parked long-poll subscribers (default 100)\n"
          "  --messages M        messages to publish (default 100)\n"
          "  --rate R            messages per second; 0 = burst (default 0)\n"
          "  --inflight K        most publishes outstanding (default 16)\n"
          "  --channel NAME      (default bench)\n"
          "  --prefix /mount     URL prefix (HTTP) or SCRIPT_NAME (FastCGI)\n"
          "  --duration-limit S  hard stop after S seconds (default 120)\n"
          "  --connect-rate C    new connections per millisecond (default 200)\n"
          "  --pids P,P          worker pids: report RSS per parked subscriber\n"
          "  --settle-ms MS      wait without a parked count (default 2000)\n"
          "  --drain-ms MS       give up after MS without a delivery (default 5000)\n"
          "  --poll-timeout S    timeout= of each poll (default 25)\n"
          "  --publish-key KEY   send Authorization: Bearer KEY on publishes\n"
          "  --stats-head-key K  /stats key of the head cursor (default head)\n"
          "  --stats-parked-key K  /stats key(s) of parked counts, summed\n"
          "                      (default parked)\n"
          "  --nchan MODE        drive nchan: longpoll, multipart or eventsource\n"
          "  --sse               subscribers hold an event stream each\n"
          "                      (Accept: text/event-stream; resume: Last-Event-ID)\n"
          "  --own-pids P,P      a second RSS figure per parked subscriber (the\n"
          "                      server's own processes, when --pids is the stack)\n"
          "exit: 0 all checks passed, 1 a check failed, 2 usage or setup error\n",
          f);
}

static double opt_num(const char *name, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || x < lo || x > hi)
        lp_die("bad value for %s: %s (range %g..%g)", name, v, lo, hi);
    return x;
}

static void opt_pids(int *pids, int *npids, const char *name, const char *v)
{
    char *copy = strdup(v), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*npids == LP_MAX_PIDS)
            lp_die("at most %d %s", LP_MAX_PIDS, name);
        pids[(*npids)++] = (int)opt_num(name, t, 1, 4194304);
    }
    free(copy);
}

/* Apply option name=v; returns 0, or -1 if name is unknown. */
static int opt_apply(lp_opts *o, const char *name, const char *v)
{
    if (!strcmp(name, "--http") || !strcmp(name, "--fcgi")) {
        o->fcgi = name[2] == 'f';
        o->addr = v;
    } else if (!strcmp(name, "--subscribers"))
        o->nsubs = (int)opt_num(name, v, 0, 1000000);
    else if (!strcmp(name, "--messages"))
        o->nmsgs = (int)opt_num(name, v, 1, 100000000);
    else if (!strcmp(name, "--rate"))
        o->rate = opt_num(name, v, 0, 1e7);
    else if (!strcmp(name, "--inflight"))
        o->inflight = (int)opt_num(name, v, 1, 10000);
    else if (!strcmp(name, "--channel"))
        o->channel = v;
    else if (!strcmp(name, "--prefix"))
        o->prefix = v;
    else if (!strcmp(name, "--duration-limit"))
        o->duration_limit = opt_num(name, v, 0.1, 86400);
    else if (!strcmp(name, "--connect-rate"))
        o->connect_rate = opt_num(name, v, 0.001, 100000);
    else if (!strcmp(name, "--pids"))
        opt_pids(o->pids, &o->npids, name, v);
    else if (!strcmp(name, "--own-pids"))
        opt_pids(o->own_pids, &o->nown_pids, name, v);
    else if (!strcmp(name, "--nchan") && !strcmp(v, "longpoll"))
        o->nchan = NCHAN_LONGPOLL;
    else if (!strcmp(name, "--nchan") && !strcmp(v, "multipart"))
        o->nchan = NCHAN_MULTIPART;
    else if (!strcmp(name, "--nchan") && !strcmp(v, "eventsource"))
        o->nchan = NCHAN_EVENTSOURCE, o->sse = 1;
    else if (!strcmp(name, "--settle-ms"))
        o->settle_ms = (int)opt_num(name, v, 0, 3600000);
    else if (!strcmp(name, "--drain-ms"))
        o->drain_ms = (int)opt_num(name, v, 1, 3600000);
    else if (!strcmp(name, "--poll-timeout"))
        o->poll_timeout = (int)opt_num(name, v, 0, 3600);
    else if (!strcmp(name, "--publish-key"))
        o->publish_key = v;
    else if (!strcmp(name, "--stats-head-key"))
        o->head_key = v;
    else if (!strcmp(name, "--stats-parked-key"))
        o->parked_key = v;
    else
        return -1;
    return 0;
}

static int channel_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-") == n;
}

static void opts_parse(lp_opts *o, int argc, char **argv)
{
    *o = (lp_opts){.nsubs = 100, .nmsgs = 100, .inflight = 16, .channel = "bench",
                   .prefix = "", .duration_limit = 120, .connect_rate = 200,
                   .settle_ms = 2000, .drain_ms = 5000, .poll_timeout = 25,
                   .head_key = "head", .parked_key = "parked"};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "--allow-remote")) {
            o->allow_remote = 1;
            continue;
        }
        if (!strcmp(argv[i], "--sse")) {
            o->sse = 1;
            continue;
        }
        if (i + 1 >= argc || opt_apply(o, argv[i], argv[i + 1])) {
            usage(stderr);
            lp_die("bad or incomplete option: %s", argv[i]);
        }
        i++;
    }
    if (!o->addr) {
        usage(stderr);
        lp_die("one of --http ADDR or --fcgi ADDR is required");
    }
    if (!channel_ok(o->channel))
        lp_die("bad channel name: %s", o->channel);
    if (strpbrk(o->prefix, " ?#\r\n"))
        lp_die("bad prefix: %s", o->prefix);
    if ((o->nchan || o->sse) && o->fcgi)
        lp_die("--nchan and --sse talk HTTP: use --http");
    if (o->nchan && !strcmp(o->parked_key, "parked"))
        o->parked_key = "subscribers"; /* nchan's channel info */
}

static void rlimit_raise(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)need > rl.rlim_cur)
        lp_die("need %d file descriptors, RLIMIT_NOFILE is %llu", need,
               (unsigned long long)rl.rlim_cur);
}

static void lp_setup(lp *L)
{
    const lp_opts *o = &L->o;
    if (fcgi_addr_parse(o->addr, &L->ss, &L->slen))
        lp_die("bad address: %s", o->addr);
    if (!o->allow_remote && !fcgi_addr_is_local(&L->ss))
        lp_die("%s is not loopback or a unix socket (use --allow-remote)", o->addr);
    snprintf(L->host, sizeof L->host, "%s", L->ss.ss_family == AF_UNIX ? "localhost" : o->addr);
    rlimit_raise(o->nsubs + o->inflight + 32);
    size_t bitmap = ((size_t)o->nmsgs + 7) / 8;
    if ((double)bitmap * o->nsubs > 2e9)
        lp_die("subscribers x messages too large for the bitmaps (%.0f MB)",
               (double)bitmap * o->nsubs / 1e6);
    L->subs = calloc((size_t)o->nsubs + 1, sizeof *L->subs);
    L->pubs = calloc((size_t)o->inflight, sizeof *L->pubs);
    L->pub_seq = calloc((size_t)o->inflight, sizeof *L->pub_seq);
    L->pub_free = calloc((size_t)o->inflight, sizeof *L->pub_free);
    size_t conns = (size_t)o->nsubs + (size_t)o->inflight + 1;
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!L->subs || !L->pubs || !L->pub_seq || !L->pub_free || L->ep < 0 ||
        lprun_fifo_init(&L->connq, conns, 0) || lprun_fifo_init(&L->backoff, conns, LP_BACKOFF_NS) ||
        lprun_fifo_init(&L->soon, conns, LP_SOON_NS) || lphist_init(&L->hist))
        lp_die("out of memory or no epoll");
    for (int i = 0; i < o->nsubs; i++) {
        lprun_conn_init(&L->subs[i].c, ROLE_SUB, i);
        L->subs[i].last_id = -1;
        if (!(L->subs[i].seen = calloc(bitmap, 1)))
            lp_die("out of memory for the bitmaps");
    }
    for (int i = 0; i < o->inflight; i++) {
        lprun_conn_init(&L->pubs[i], ROLE_PUB, i);
        L->pub_free[L->npub_free++] = o->inflight - 1 - i;
    }
    lprun_conn_init(&L->ctl, ROLE_CTL, 0);
    L->t_start = L->tokens_ns = lprun_clock_ns();
    L->tokens = o->connect_rate;
    L->ph = PH_INIT;
}

static void lp_teardown(lp *L)
{
    for (int i = 0; i < L->o.nsubs; i++) {
        lprun_conn_close(&L->subs[i].c);
        lphttp_resp_free(&L->subs[i].c.hr);
        free(L->subs[i].c.out);
        free(L->subs[i].seen);
    }
    for (int i = 0; i < L->o.inflight; i++) {
        lprun_conn_close(&L->pubs[i]);
        lphttp_resp_free(&L->pubs[i].hr);
        free(L->pubs[i].out);
    }
    lprun_conn_close(&L->ctl);
    lphttp_resp_free(&L->ctl.hr);
    free(L->ctl.out);
    free(L->subs);
    free(L->pubs);
    free(L->pub_seq);
    free(L->pub_free);
    free(L->connq.v);
    free(L->backoff.v);
    free(L->soon.v);
    lphist_free(&L->hist);
    close(L->ep);
}

static void report_errors(const lp *L)
{
    static const char *const special[] = {"conn", "timeout", "bad-answer"};
    int any = 0;
    printf("errors:");
    for (int r = 0; r < NROLES; r++)
        for (int k = 0; k < LP_STATUS_MAX; k++) {
            if (!L->errs[r][k])
                continue;
            if (k < 3)
                printf(" %s:%s=%u", role_name[r], special[k], L->errs[r][k]);
            else
                printf(" %s:%d=%u", role_name[r], k, L->errs[r][k]);
            any = 1;
        }
    printf("%s\n", any ? "" : " none");
}

static int report_check(const char *name, int ok, int *passed)
{
    printf("check_%s: %s\n", name, ok ? "pass" : "FAIL");
    *passed += ok;
    return !ok;
}

static void report_rss_one(const char *name, long before, long after, int nsubs)
{
    printf("%srss_before_kib: %ld\n%srss_after_kib: %ld\n", name, before, name, after);
    if (before < 0 || after < 0)
        printf("%sbytes_per_subscriber: unknown (cannot read /proc/PID/status)\n", name);
    else if (nsubs > 0)
        printf("%sbytes_per_subscriber: %.0f\n", name,
               (double)(after - before) * 1024.0 / nsubs);
}

static void report_rss(const lp *L)
{
    if (L->o.npids)
        report_rss_one("", L->rss_before_kib, L->rss_after_kib, L->o.nsubs);
    if (L->o.nown_pids)
        report_rss_one("own_", L->own_before_kib, L->own_after_kib, L->o.nsubs);
}

static void report_counts(const lp *L, uint64_t expected)
{
    static const char *const kind[] = {"http", "nchan-longpoll", "nchan-multipart",
                                       "nchan-eventsource"};
    printf("target: %s%s %s prefix=%s channel=%s\n", L->o.fcgi ? "fcgi" : kind[L->o.nchan],
           L->o.sse && !L->o.nchan ? "-sse" : "", L->o.addr, L->o.prefix, L->o.channel);
    if (L->head_known)
        printf("start: since=%" PRId64 " from /stats\n", L->head);
    else
        printf("start: server head (no usable /stats)\n");
    printf("subscribers: %d\nmessages: %d\n", L->o.nsubs, L->o.nmsgs);
    if (L->o.rate > 0)
        printf("rate: %g/s (inflight %d)\n", L->o.rate, L->o.inflight);
    else
        printf("rate: burst (inflight %d)\n", L->o.inflight);
    if (L->parked_known)
        printf("parked_at_publish: %" PRId64 "%s\n", L->parked_last - L->parked0,
               L->settle_timed_out ? " (settle timed out)" : "");
    else
        printf("parked_at_publish: unknown (waited %d ms)\n", L->o.settle_ms);
    printf("deliveries_expected: %" PRIu64 "\ndeliveries_got: %" PRIu64 "\n", expected,
           L->deliveries);
    printf("missing: %" PRIu64 "\nduplicates: %" PRIu64 "\nout_of_order: %" PRIu64 "\n",
           expected - L->deliveries, L->duplicates, L->out_of_order);
    printf("subscribers_complete: %d\nforeign_messages: %" PRIu64 "\n", L->complete, L->foreign);
    printf("gaps: %" PRIu64 "\nresets: %" PRIu64 "\n", L->gaps, L->resets);
    printf("published_ok: %d\npublish_failed: %d\n", L->pub_ok, L->pub_failed);
    printf("polls: %" PRIu64 "\nempty_polls: %" PRIu64 "\nreconnects: %" PRIu64 "\n", L->polls,
           L->empty_polls, L->reconnects);
    printf("connect_backlog_full: %" PRIu64 "\n", L->connect_eagain);
}

static void report_timing(const lp *L)
{
    const lphist *h = &L->hist;
    printf("latency_us_p50: %" PRIu64 "\nlatency_us_p90: %" PRIu64 "\n",
           lphist_percentile(h, 0.50), lphist_percentile(h, 0.90));
    printf("latency_us_p99: %" PRIu64 "\nlatency_us_max: %" PRIu64 "\n",
           lphist_percentile(h, 0.99), h->max);
    int64_t pub_end = L->t_pub_done ? L->t_pub_done : L->now;
    double pub_s = L->t_pub_first ? (double)(pub_end - L->t_pub_first) / 1e9 : 0;
    double del_s = L->t_pub_first && L->t_last_delivery > L->t_pub_first
                       ? (double)(L->t_last_delivery - L->t_pub_first) / 1e9
                       : 0;
    printf("publish_window_s: %.3f\ndelivery_window_s: %.3f\n", pub_s, del_s);
    printf("deliveries_per_s: %.0f\n", del_s > 0 ? (double)L->deliveries / del_s : 0.0);
    printf("publishes_per_s: %.0f\n", pub_s > 0 ? (double)L->pub_ok / pub_s : 0.0);
    printf("setup_s: %.3f\n", (double)L->setup_ms / 1e3);
    printf("elapsed_s: %.3f\n", (double)(L->now - L->t_start) / 1e9);
}

/* Print the report; returns the number of failed checks. */
static int report(lp *L)
{
    uint64_t expected = (uint64_t)L->o.nsubs * (uint64_t)L->o.nmsgs;
    int passed = 0, failed = 0;
    L->now = lprun_clock_ns();
    report_counts(L, expected);
    report_timing(L);
    report_rss(L);
    report_errors(L);
    printf("stopped_by: %s\n", L->stopped_by ? L->stopped_by : "?");
    failed += report_check("zero_missing", L->deliveries == expected, &passed);
    failed += report_check("zero_duplicates", L->duplicates == 0, &passed);
    failed += report_check("zero_out_of_order", L->out_of_order == 0, &passed);
    failed += report_check("all_subscribers_complete", L->complete == L->o.nsubs, &passed);
    printf("lpload: %d passed, %d failed\n", passed, failed);
    fflush(stdout);
    return failed;
}

int main(int argc, char **argv)
{
    static lp L;
    opts_parse(&L.o, argc, argv);
    lp_setup(&L);
    lprun_loop(&L);
    int failed = report(&L);
    lp_teardown(&L);
    return failed ? 1 : 0;
}
