/* handler.c -- the routes: subscribe, publish, health, stats, metrics,
 * preflight.  Front-agnostic: input is a parsed request (and a body), output
 * a complete CGI-style response in a buffer, or "park this subscriber". */
#include "handler.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "reply.h"

#define HANDLER_DB_CHECK_MS 1000

/* One writer per process at a time: threads of one worker queue here instead
 * of in SQLite's busy handler, whose sleeps (1, 2, 5 ms...) would add
 * latency to every contended publish.  Processes still contend in SQLite. */
static pthread_mutex_t handler_write_lock = PTHREAD_MUTEX_INITIALIZER;

_Static_assert(sizeof(handler_counters) == WAKE_SLOT_VALUES * sizeof(int64_t),
               "handler_counters must fit a wake slot exactly");

handler_counters *handler_counters_of(wake_slot *slot) {
    return (handler_counters *)(void *)slot->values;
}

request_limits handler_limits(const config *cfg) {
    return (request_limits){.max_channels = cfg->max_channels,
                            .max_body = cfg->max_body,
                            .poll_timeout_s = cfg->poll_timeout_s,
                            .max_poll_timeout_s = cfg->max_poll_timeout_s,
                            .batch_limit = cfg->batch_limit};
}

static int64_t handler_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int handler_open_log(handler *h, char *err, size_t errlen) {
    const config *c = h->cfg;
    struct stat st;
    msglog_options o = {.path = c->db,
                        .durability = c->durability,
                        .busy_timeout_ms = c->busy_timeout_ms,
                        .create = 1,
                        .retention = config_retention_for,
                        .retention_ud = (void *)c,
                        .prune_every = c->prune_every};
    int rc = msglog_open(&h->log, &o, err, errlen);
    if (rc)
        return rc;
    if (stat(c->db, &st) == 0) {
        h->dev = st.st_dev;
        h->ino = st.st_ino;
    }
    h->checked_ms = handler_mono_ms();
    return 0;
}

int handler_open(handler *h, const config *cfg, handler_counters *counters, char *err,
                 size_t errlen) {
    memset(h, 0, sizeof *h);
    h->cfg = cfg;
    h->counters = counters;
    int rc = handler_open_log(h, err, errlen);
    if (rc == 0 && (rc = wake_open(&h->wk, cfg->db, err, errlen)))
        msglog_close(h->log);
    return rc;
}

void handler_close(handler *h) {
    msglog_close(h->log);
    wake_close(h->wk);
    h->log = NULL;
    h->wk = NULL;
}

int handler_check_db(handler *h, int force) {
    struct stat st;
    int64_t now = handler_mono_ms();
    if (!force && now - h->checked_ms < HANDLER_DB_CHECK_MS)
        return 0;
    h->checked_ms = now;
    if (stat(h->cfg->db, &st) == 0 && st.st_dev == h->dev && st.st_ino == h->ino)
        return 0;
    /* Replaced (or removed): open what is there now; a new file gets a new
     * epoch, and every cursor of the old one is answered with a reset. */
    char err[512];
    msglog *old = h->log;
    int rc = handler_open_log(h, err, sizeof err);
    if (rc) {
        h->log = old;
        fprintf(stderr, "holdfast[%d]: reopening %s: %s\n", (int)getpid(), h->cfg->db, err);
        return rc;
    }
    msglog_close(old);
    return 1;
}

void handler_count_answer(handler_counters *counters, const msglog_batch *b,
                          request_format fmt) {
    atomic_fetch_add(&counters->answered, 1);
    atomic_fetch_add(&counters->deliveries, (int64_t)(fmt == FORMAT_RAW && b->n ? 1 : b->n));
    if (b->n == 0 && !b->reset)
        atomic_fetch_add(&counters->timeouts, 1);
}

void handler_answer(buf *out, const msglog_batch *b, request_format fmt, const char *cors,
                    handler_counters *counters) {
    if (fmt == FORMAT_RAW && !b->reset) {
        reply_raw(out, b, cors);
    } else {
        buf body;
        buf_init(&body);
        reply_batch_body(&body, b);
        reply_json(out, 200, cors, body.p, body.len);
        buf_free(&body);
    }
    handler_count_answer(counters, b, fmt);
}

/* Read for a subscribe; fills b (caller frees). */
static int handler_read(handler *h, const request *r, int64_t since, const char *epoch,
                        msglog_batch *b) {
    msglog_query q = {.channels = r->channels,
                      .nchannels = r->nchannels,
                      .since = since,
                      .last = since < 0 ? r->last : 0,
                      .epoch = epoch,
                      .limit = r->format == FORMAT_RAW ? 1 : r->limit};
    return msglog_read(h->log, &q, b);
}

int handler_poll(handler *h, const request *r, int64_t *cursor, const char *epoch, int final,
                 buf *out) {
    msglog_batch b;
    const char *cors = reply_cors(h->cfg, r->origin);
    if (handler_read(h, r, *cursor, epoch, &b)) {
        msglog_batch_free(&b);
        if (!final)
            return 0; /* a busy or failing read: try again on the next wake */
        reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
        return 1;
    }
    int answer = final || b.n > 0 || b.reset;
    if (answer)
        handler_answer(out, &b, r->format, cors, h->counters);
    else
        *cursor = b.cursor;
    msglog_batch_free(&b);
    return answer;
}

static handler_result handler_sub(handler *h, const request *r, buf *out, int64_t *cursor,
                                  char epoch[MSGLOG_EPOCH_LEN + 1]) {
    msglog_batch b;
    const char *cors = reply_cors(h->cfg, r->origin);
    handler_check_db(h, 0);
    if (handler_read(h, r, r->since, r->has_epoch ? r->epoch : NULL, &b)) {
        msglog_batch_free(&b);
        reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
        return HANDLER_DONE;
    }
    handler_result res = HANDLER_DONE;
    if (b.n > 0 || b.reset || b.gap || r->timeout_s == 0) {
        handler_answer(out, &b, r->format, cors, h->counters);
    } else {
        /* "Latest" becomes a concrete cursor before parking, so that serving
         * the request again on a wake is always the same question. */
        *cursor = b.cursor;
        memcpy(epoch, b.epoch, sizeof b.epoch);
        res = HANDLER_PARK;
    }
    msglog_batch_free(&b);
    return res;
}

/* Constant-time comparison of a presented key with a configured one. */
static int handler_key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la && i < lb; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* 0 if the publish is allowed, else the HTTP status to refuse it with. */
static int handler_pub_auth(const handler *h, const request *r) {
    config_policy p = config_policy_for(h->cfg, r->channel);
    if (p.publish == POLICY_ANYONE)
        return 0;
    if (!r->bearer)
        return 401;
    for (int i = 0; i < h->cfg->npublish_keys; i++)
        if (handler_key_equal(r->bearer, h->cfg->publish_keys[i]))
            return 0;
    return 403;
}

static handler_result handler_pub(handler *h, const request *r, const void *body, size_t len,
                                  buf *out) {
    const char *cors = reply_cors(h->cfg, r->origin);
    int deny = handler_pub_auth(h, r);
    if (deny) {
        reply_error(out, deny, cors, deny == 401 ? "unauthorized" : "forbidden",
                    deny == 401 ? "this channel needs Authorization: Bearer <publish key>"
                                : "the publish key is not valid for this channel", 0);
        return HANDLER_DONE;
    }
    if (r->content_type && jsonenc_type_is_json(r->content_type) && !jsonenc_valid(body, len)) {
        reply_error(out, 400, cors, "invalid_json", "the body is not valid JSON", 0);
        return HANDLER_DONE;
    }
    /* Every publish checks (one stat) that the file is still the one open:
     * a commit into a replaced, unlinked file would be acknowledged and lost. */
    handler_check_db(h, 1);
    msglog_entry e = {.channel = r->channel, .type = r->content_type, .body = body, .len = len,
                      .key = r->key, .idem = r->idem};
    msglog_ack ack;
    pthread_mutex_lock(&handler_write_lock);
    int rc = msglog_append(h->log, &e, &ack);
    pthread_mutex_unlock(&handler_write_lock);
    if (rc) {
        fprintf(stderr, "holdfast[%d]: publish to %s failed: %s\n", (int)getpid(), r->channel,
                msglog_errmsg(h->log));
        reply_error(out, 503, cors, "unavailable", "the log could not take the message", 1);
        return HANDLER_DONE;
    }
    if (!ack.replayed) {
        wake_publish(h->wk, ack.id);
        atomic_fetch_add(&h->counters->publishes, 1);
    }
    buf b;
    buf_init(&b);
    buf_printf(&b, "{\"id\":%lld,\"channel\":", (long long)ack.id);
    jsonenc_cstring(&b, r->channel);
    buf_printf(&b, ",\"time\":%lld}\n", (long long)ack.time_ms);
    reply_json(out, ack.replayed ? 200 : 201, cors, b.p, b.len);
    buf_free(&b);
    return HANDLER_DONE;
}

/* Sum the counters of every live worker (and list them), or report just
 * this process's when it has no slot (CGI). */
typedef struct {
    int64_t parked, publishes, deliveries, answered, timeouts, left, refused;
} handler_totals;

static void handler_add(handler_totals *t, const handler_counters *c) {
    t->parked += c->parked;
    t->publishes += c->publishes;
    t->deliveries += c->deliveries;
    t->answered += c->answered;
    t->timeouts += c->timeouts;
    t->left += c->left;
    t->refused += c->refused;
}

static void handler_workers_json(handler *h, buf *b, handler_totals *t) {
    const wake_slot *slots = wake_slots(h->wk);
    int n = 0;
    buf_puts(b, "\"workers\":[");
    for (size_t i = 0; i < WAKE_SLOTS; i++) {
        if (!wake_slot_alive(&slots[i]))
            continue;
        const handler_counters *c = handler_counters_of((wake_slot *)&slots[i]);
        handler_add(t, c);
        buf_printf(b, "%s{\"pid\":%d,\"waiting\":%lld,\"publishes\":%lld,\"deliveries\":%lld}",
                   n++ ? "," : "", (int)slots[i].pid, (long long)c->parked,
                   (long long)c->publishes, (long long)c->deliveries);
    }
    buf_puts(b, "]");
    if (n == 0)
        handler_add(t, h->counters);
}

static void handler_stats(handler *h, const request *r, buf *out) {
    msglog_stats st;
    const char *cors = reply_cors(h->cfg, r->origin);
    if (msglog_stats_get(h->log, &st)) {
        reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
        return;
    }
    handler_totals t = {0};
    buf w, b;
    buf_init(&w);
    buf_init(&b);
    handler_workers_json(h, &w, &t);
    if (r->route == ROUTE_STATS) {
        buf_printf(&b,
                   "{\"head\":%lld,\"epoch\":\"%s\",\"messages\":%lld,\"channels\":%lld,"
                   "\"bytes\":%lld,\"pid\":%d,\"parked\":%lld,\"publishes\":%lld,"
                   "\"deliveries\":%lld,\"answered\":%lld,\"timeouts\":%lld,\"left\":%lld,"
                   "\"refused\":%lld,",
                   (long long)st.head, st.epoch, (long long)st.messages,
                   (long long)st.channels, (long long)st.bytes, (int)getpid(),
                   (long long)t.parked, (long long)t.publishes, (long long)t.deliveries,
                   (long long)t.answered, (long long)t.timeouts, (long long)t.left,
                   (long long)t.refused);
        buf_put(&b, w.p, w.len);
        buf_puts(&b, "}\n");
        reply_json(out, 200, cors, b.p, b.len);
    } else {
        buf_printf(&b,
                   "# TYPE holdfast_head gauge\nholdfast_head %lld\n"
                   "# TYPE holdfast_messages gauge\nholdfast_messages %lld\n"
                   "# TYPE holdfast_channels gauge\nholdfast_channels %lld\n"
                   "# TYPE holdfast_bytes gauge\nholdfast_bytes %lld\n"
                   "# TYPE holdfast_parked gauge\nholdfast_parked %lld\n"
                   "# TYPE holdfast_publishes_total counter\nholdfast_publishes_total %lld\n"
                   "# TYPE holdfast_deliveries_total counter\nholdfast_deliveries_total %lld\n"
                   "# TYPE holdfast_answers_total counter\nholdfast_answers_total %lld\n"
                   "# TYPE holdfast_timeouts_total counter\nholdfast_timeouts_total %lld\n"
                   "# TYPE holdfast_refused_total counter\nholdfast_refused_total %lld\n",
                   (long long)st.head, (long long)st.messages, (long long)st.channels,
                   (long long)st.bytes, (long long)t.parked, (long long)t.publishes,
                   (long long)t.deliveries, (long long)t.answered, (long long)t.timeouts,
                   (long long)t.refused);
        reply_body(out, 200, cors, "text/plain; version=0.0.4", b.p, b.len);
    }
    buf_free(&w);
    buf_free(&b);
}

handler_result handler_run(handler *h, const request *r, const void *body, size_t len, buf *out,
                           int64_t *cursor, char epoch[MSGLOG_EPOCH_LEN + 1]) {
    const char *cors = reply_cors(h->cfg, r->origin);
    switch (r->route) {
    case ROUTE_SUB:
        if (r->format == FORMAT_SSE) {
            reply_error(out, 406, cors, "not_acceptable",
                        "the EventSource transport is not in this release; long-poll with"
                        " Accept: application/json", 0);
            return HANDLER_DONE;
        }
        return handler_sub(h, r, out, cursor, epoch);
    case ROUTE_PUB:
        return handler_pub(h, r, body, len, out);
    case ROUTE_HEALTH:
        if (msglog_head(h->log) < 0)
            reply_error(out, 503, cors, "unavailable", "the log is not readable", 1);
        else
            reply_body(out, 200, cors, "text/plain", "ok\n", 3);
        return HANDLER_DONE;
    case ROUTE_STATS:
    case ROUTE_METRICS:
        handler_stats(h, r, out);
        return HANDLER_DONE;
    case ROUTE_PREFLIGHT:
        reply_preflight(out, cors);
        return HANDLER_DONE;
    case ROUTE_ERROR:
        break;
    }
    reply_error(out, r->status ? r->status : 500, cors, r->error ? r->error : "internal",
                r->detail, 0);
    return HANDLER_DONE;
}
