/* handler.c -- the routes: subscribe, publish, health, stats, metrics,
 * preflight.  Front-agnostic: input is a parsed request (and a body), output
 * a complete CGI-style response in a buffer, or "park this subscriber".
 *
 * THE ACCESS RULE.  Before a subscribe reads or a publish writes, every
 * channel it names is checked against its policy (config_policy_for):
 * `key` wants a publish key, `token` a signed token granting the channel
 * (or a publish key), `anyone` nothing.  A multi-channel subscribe is
 * granted whole or refused whole.  Missing or invalid credentials are 401,
 * valid ones that do not reach far enough 403; no answer says anything
 * about a key or a secret beyond "it does not verify". */
#include "handler.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "clock.h"
#include "reply.h"
#include "streams.h"
#include "token.h"

#define HANDLER_DB_CHECK_MS 1000
#define HANDLER_STORAGE_RETRY_MS 1000
#define HANDLER_STALL_MS 100 /* a write lock held this long is stuck */

/* THE GROUP COMMIT.  One writer per process at a time, and the writer
 * commits for everyone waiting: a publish queues here (instead of in
 * SQLite's busy handler, whose sleeps of 1, 2, 5 ms... would add latency
 * to every contended publish); when no publish is writing, the first one
 * queued becomes the leader, takes up to HANDLER_GROUP_MAX queued ones in
 * order and appends them in one transaction on its own connection.  Each
 * is answered only after that COMMIT (ack after COMMIT holds), with ids in
 * queue order.  If the transaction fails for an entry's own reason (a
 * reused idempotency key, an invalid message) the leader appends them one
 * by one, so one bad publish costs no other its answer.  An entry lives on
 * its publisher's stack, which waits until it is answered.  Processes
 * still contend in SQLite.
 *
 * THE WRITE GATE.  A publish waits for its turn and for SQLite together at
 * most busy_timeout_ms (one deadline, not one per wait), then answers 503.
 * While the writer has been stuck for HANDLER_STALL_MS (another program
 * holds the database's write lock), at most threads - 1 publishes wait:
 * the others still queued get their 503 within HANDLER_STALL_MS, so one
 * thread is always left for subscribes, /health and /stats.  A publish the
 * leader has taken waits for the leader's result. */
#define HANDLER_GROUP_MAX 64

typedef enum { PENDING_QUEUED, PENDING_TAKEN, PENDING_DONE } pending_state;

typedef struct handler_pending {
    const msglog_entry *e;
    msglog_ack *ack;
    int64_t deadline; /* mono ms */
    int rc;
    pending_state state;
    char err[256];
    struct handler_pending *next;
} handler_pending;

static pthread_mutex_t handler_gate = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t handler_gate_cv; /* on CLOCK_MONOTONIC: handler_gate_init */
static pthread_once_t handler_gate_once = PTHREAD_ONCE_INIT;
/* Under handler_gate: */
static handler_pending *handler_queue, **handler_queue_tail = &handler_queue;
static int handler_writers;        /* queued, taken or writing */
static int handler_leading;        /* a leader is writing */
static int64_t handler_held_since; /* mono ms the leader began, 0 = none */

_Static_assert(sizeof(handler_counters) == WAKE_SLOT_VALUES * sizeof(int64_t),
               "handler_counters must fit a wake slot exactly");

handler_counters *handler_counters_of(wake_slot *slot) {
    return (handler_counters *)(void *)slot->values;
}

request_limits handler_limits(const config *cfg) {
    return (request_limits){.max_channels = cfg->max_channels,
                            .max_body = cfg->max_body,
                            .poll_timeout_s = cfg->poll_timeout_s,
                            .streams_poll_timeout_s = cfg->streams_poll_timeout_s,
                            .max_poll_timeout_s = cfg->max_poll_timeout_s,
                            .batch_limit = cfg->batch_limit,
                            .token_cookie = cfg->token_cookie,
                            .client_param = cfg->client_param};
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
    h->checked_ms = clock_mono_ms();
    return 0;
}

/* Open the log, then the wake file; both or neither. */
static int handler_open_storage(handler *h) {
    int rc = handler_open_log(h, h->err, sizeof h->err);
    if (rc == 0 && (rc = wake_open(&h->wk, h->cfg->db, h->err, sizeof h->err)) != 0) {
        msglog_close(h->log);
        h->log = NULL;
        h->wk = NULL;
    }
    if (rc == 0)
        h->err[0] = '\0';
    h->retry_ms = clock_mono_ms() + HANDLER_STORAGE_RETRY_MS;
    return rc;
}

int handler_open(handler *h, const config *cfg, handler_counters *counters, guard *lim,
                 char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    h->cfg = cfg;
    h->counters = counters;
    h->lim = lim;
    int rc = handler_open_storage(h);
    if (rc)
        snprintf(err, errlen, "%s", h->err);
    return rc;
}

void handler_close(handler *h) {
    msglog_close(h->log);
    wake_close(h->wk);
    h->log = NULL;
    h->wk = NULL;
}

int handler_storage(handler *h) {
    if (h->log)
        return 0;
    if (clock_mono_ms() < h->retry_ms)
        return -EAGAIN;
    char before[sizeof h->err];
    memcpy(before, h->err, sizeof before);
    int rc = handler_open_storage(h);
    if (rc == 0)
        fprintf(stderr, "holdfast[%d]: the log %s is open again\n", (int)getpid(), h->cfg->db);
    else if (strcmp(before, h->err) != 0)
        fprintf(stderr, "holdfast[%d]: %s\n", (int)getpid(), h->err);
    return rc;
}

handler_db handler_check_db(handler *h, int force) {
    struct stat st;
    int64_t now = clock_mono_ms();
    if (!h->log)
        return handler_storage(h) == 0 ? HANDLER_DB_REOPENED : HANDLER_DB_FAILED;
    if (!force && now - h->checked_ms < HANDLER_DB_CHECK_MS)
        return HANDLER_DB_SAME;
    h->checked_ms = now;
    if (stat(h->cfg->db, &st) == 0 && st.st_dev == h->dev && st.st_ino == h->ino)
        return HANDLER_DB_SAME;
    /* Replaced (or removed): open what is there now; a new file gets a new
     * epoch, and every cursor of the old one is answered with a reset. */
    char err[512];
    msglog *old = h->log;
    int rc = handler_open_log(h, err, sizeof err);
    if (rc) {
        h->log = old;
        fprintf(stderr, "holdfast[%d]: reopening %s: %s\n", (int)getpid(), h->cfg->db, err);
        return HANDLER_DB_FAILED;
    }
    msglog_close(old);
    return HANDLER_DB_REOPENED;
}

void handler_count_answer(handler_counters *counters, const msglog_batch *b,
                          request_format fmt) {
    atomic_fetch_add(&counters->answered, 1);
    atomic_fetch_add(&counters->deliveries, (int64_t)(fmt == FORMAT_RAW && b->n ? 1 : b->n));
    if (b->n == 0 && !b->reset)
        atomic_fetch_add(&counters->timeouts, 1);
}

void handler_count_stream(handler_counters *counters, const msglog_batch *b) {
    if (b->n)
        atomic_fetch_add(&counters->deliveries, (int64_t)b->n);
}

void handler_answer(const config *cfg, buf *out, const msglog_batch *b, request_format fmt,
                    const char *cors,
                    handler_counters *counters) {
    if (fmt == FORMAT_RAW && !b->reset) {
        reply_raw(out, b, cors, cfg);
    } else {
        buf body;
        buf_init(&body);
        reply_batch_body(&body, b);
        reply_json(out, 200, cors, body.p, body.len);
        buf_free(&body);
    }
    handler_count_answer(counters, b, fmt);
}

/* ---- THE ACCESS RULE ------------------------------------------------------ */

/* Why a request is refused (or not). */

/* The index of the publish key `bearer` is (0..), or -1.  Compared as
 * SHA-256 digests with CRYPTO_memcmp: the time taken says nothing about
 * the keys' contents or lengths. */
static int handler_key_index(const config *c, const char *bearer) {
    unsigned char want[EVP_MAX_MD_SIZE], have[EVP_MAX_MD_SIZE];
    unsigned int n = 0, m = 0;
    int found = -1;
    if (!bearer || !c->npublish_keys ||
        !EVP_Digest(bearer, strlen(bearer), have, &n, EVP_sha256(), NULL))
        return -1;
    for (int i = 0; i < c->npublish_keys; i++) {
        if (EVP_Digest(c->publish_keys[i], strlen(c->publish_keys[i]), want, &m, EVP_sha256(),
                       NULL) && m == n && CRYPTO_memcmp(want, have, n) == 0 && found < 0)
            found = i;
    }
    return found;
}

/* Verify the request's token into g; TOKEN_OK or why not. */
static token_status handler_token(const handler *h, const request *r, token_grant *g) {
    const config *c = h->cfg;
    const char *secrets[CONFIG_MAX_KEYS];
    if (r->token_over)
        return TOKEN_MALFORMED;
    if (!r->token)
        return TOKEN_MISSING;
    for (int i = 0; i < c->ntoken_secrets; i++)
        secrets[i] = c->token_secrets[i];
    token_keys k = {.secrets = secrets,
                    .nsecrets = c->ntoken_secrets,
                    .algs = c->token_algs,
                    .leeway_s = c->token_leeway_s,
                    .now_s = clock_real_ms() / 1000};
    return token_verify(r->token, strlen(r->token), &k, g);
}

/* Check a subscribe's channels (publish = 0) or a publish's channel
 * against their policies.  *why gets the token's status for AUTH_TOKEN,
 * *denied the first channel refused, *key the publish key used (or -1). */
static handler_auth handler_access(const handler *h, const request *r, int publish,
                                   token_status *why, const char **denied, int *key) {
    int need_token = 0;
    *key = handler_key_index(h->cfg, r->bearer);
    *why = TOKEN_OK;
    *denied = NULL;
    for (size_t i = 0; i < r->nchannels; i++) {
        config_policy p = config_policy_for(h->cfg, r->channels[i]);
        config_access a = publish ? p.publish : p.subscribe;
        if (a == POLICY_KEY && *key < 0) {
            *denied = r->channels[i];
            return !h->cfg->npublish_keys ? AUTH_CLOSED
                   : !r->bearer ? AUTH_KEY_MISSING : AUTH_KEY_WRONG;
        }
        need_token |= a == POLICY_TOKEN;
    }
    if (!need_token || *key >= 0)
        return AUTH_OK; /* a publish key opens every channel */
    token_grant g;
    *why = handler_token(h, r, &g);
    if (*why != TOKEN_OK)
        return AUTH_TOKEN;
    for (size_t i = 0; i < r->nchannels; i++) {
        config_policy p = config_policy_for(h->cfg, r->channels[i]);
        if ((publish ? p.publish : p.subscribe) == POLICY_TOKEN &&
            !token_grants(&g, publish, r->channels[i])) {
            *denied = r->channels[i];
            return AUTH_NOT_GRANTED;
        }
    }
    return AUTH_OK;
}

/* Answer a refusal: its status, a code and a sentence that tells the
 * client what to send, and nothing about the keys. */
static void handler_refuse(buf *out, const char *cors, handler_auth a, token_status why,
                           const char *channel, int publish) {
    char detail[MSGLOG_CHANNEL_MAX + 160];
    switch (a) {
    case AUTH_KEY_MISSING:
        reply_error(out, 401, cors, "unauthorized",
                    "this channel needs Authorization: Bearer <publish key>", 0);
        return;
    case AUTH_KEY_WRONG:
        reply_error(out, 403, cors, "forbidden", "the publish key is not valid", 0);
        return;
    case AUTH_CLOSED:
        reply_error(out, 403, cors, "publishing_closed",
                    "publishing needs a key: set publish_key = SECRET (or HOLDFAST_PUBLISH_KEY) "
                    "and send Authorization: Bearer SECRET, or open channels with publish = "
                    "anyone", 0);
        return;
    case AUTH_TOKEN:
        snprintf(detail, sizeof detail, "%s%s", token_status_reason(why),
                 why == TOKEN_MISSING ? (publish ? ": send Authorization: Bearer <token>"
                                                 : ": send Authorization: Bearer <token>, "
                                                   "?token=<token> or the token cookie")
                                      : "");
        reply_error(out, 401, cors, token_status_code(why), detail, 0);
        return;
    case AUTH_NOT_GRANTED:
        snprintf(detail, sizeof detail, "the token does not grant %s on %s",
                 publish ? "publishing" : "subscribing", channel ? channel : "");
        reply_error(out, 403, cors, "not_granted", detail, 0);
        return;
    case AUTH_OK:
        break;
    }
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
    if (r->route == ROUTE_STREAM)
        return streams_poll(h, r->channel, cors, *cursor, r->ds.cursor, final, out);
    if (handler_read(h, r, *cursor, epoch, &b)) {
        msglog_batch_free(&b);
        if (!final)
            return 0; /* a busy or failing read: try again on the next wake */
        reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
        return 1;
    }
    int answer = final || b.n > 0 || b.reset;
    if (answer)
        handler_answer(h->cfg, out, &b, r->format, cors, h->counters);
    else
        *cursor = b.cursor;
    msglog_batch_free(&b);
    return answer;
}

/* The access rule for one request: AUTH_OK when it may go on (*key: the
 * publish key it used, or -1); otherwise the refusal is already in out. */
handler_auth handler_admit(const handler *h, const request *r, int publish, const char *cors,
                           buf *out, int *key) {
    token_status why;
    const char *denied;
    handler_auth a = handler_access(h, r, publish, &why, &denied, key);
    if (a != AUTH_OK)
        handler_refuse(out, cors, a, why, denied, publish);
    return a;
}

static handler_result handler_sub(handler *h, const request *r, buf *out, int64_t *cursor,
                                  char epoch[MSGLOG_EPOCH_LEN + 1]) {
    msglog_batch b;
    const char *cors = reply_cors(h->cfg, r->origin);
    int key;
    if (handler_admit(h, r, 0, cors, out, &key) != AUTH_OK)
        return HANDLER_DONE;
    if (h->settled && r->timeout_s > 0 && r->since >= 0 && r->since == h->settled_head &&
        r->has_epoch && !strcmp(r->epoch, h->settled_epoch)) {
        *cursor = r->since; /* THE SETTLED HINT: the dispatcher's pass covers the rest */
        memcpy(epoch, h->settled_epoch, sizeof h->settled_epoch);
        return HANDLER_PARK;
    }
    handler_check_db(h, 0);
    if (handler_read(h, r, r->since, r->has_epoch ? r->epoch : NULL, &b)) {
        msglog_batch_free(&b);
        reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
        return HANDLER_DONE;
    }
    handler_result res = HANDLER_DONE;
    if (b.n > 0 || b.reset || b.gap || r->timeout_s == 0) {
        handler_answer(h->cfg, out, &b, r->format, cors, h->counters);
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

/* A subscribe as an event stream: admitted like any subscribe, then always
 * parked (the dispatcher or the CGI loop streams it) from a concrete
 * cursor -- ?since= or Last-Event-ID, else the start `last` asks for,
 * else the head -- in the epoch given, else the log's. */
static handler_result handler_sse(handler *h, const request *r, buf *out, int64_t *cursor,
                                  char epoch[MSGLOG_EPOCH_LEN + 1]) {
    const char *cors = reply_cors(h->cfg, r->origin);
    int key;
    if (handler_admit(h, r, 0, cors, out, &key) != AUTH_OK)
        return HANDLER_DONE;
    handler_check_db(h, 0);
    snprintf(epoch, MSGLOG_EPOCH_LEN + 1, "%s", r->has_epoch ? r->epoch : msglog_epoch(h->log));
    *cursor = r->since;
    if (r->since < 0) {
        msglog_batch b;
        if (handler_read(h, r, -1, NULL, &b)) {
            msglog_batch_free(&b);
            reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
            return HANDLER_DONE;
        }
        *cursor = b.n ? b.msgs[0].id - 1 : b.cursor;
        memcpy(epoch, b.epoch, sizeof b.epoch);
        msglog_batch_free(&b);
    }
    return HANDLER_PARK;
}

int handler_stream(handler *h, const request *r, int64_t *cursor, char *epoch, buf *out) {
    msglog_batch b;
    msglog_query q = {.channels = r->channels, .nchannels = r->nchannels, .since = *cursor,
                      .epoch = epoch, .limit = r->limit};
    if (msglog_read(h->log, &q, &b)) {
        msglog_batch_free(&b);
        return -1;
    }
    reply_sse_batch(out, &b);
    handler_count_stream(h->counters, &b);
    *cursor = b.cursor;
    memcpy(epoch, b.epoch, sizeof b.epoch);
    int more = b.more;
    msglog_batch_free(&b);
    return more;
}

static void handler_gate_init(void) {
    pthread_condattr_t at;
    pthread_condattr_init(&at);
    pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
    pthread_cond_init(&handler_gate_cv, &at);
    pthread_condattr_destroy(&at);
}

static void handler_gate_wait(int64_t until_ms) {
    struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (long)(until_ms % 1000) * 1000000L};
    pthread_cond_timedwait(&handler_gate_cv, &handler_gate, &ts);
}

/* Drop p, still queued, from the queue (under handler_gate). */
static void handler_unqueue(handler_pending *p) {
    handler_pending **pp = &handler_queue;
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    if (handler_queue_tail == &p->next)
        handler_queue_tail = pp;
}

static void handler_pending_fail(handler_pending *p, int rc, const char *why) {
    p->rc = rc;
    snprintf(p->err, sizeof p->err, "%s", why);
}

/* The leader's turn (entered and left under handler_gate, which it drops
 * while writing): append up to HANDLER_GROUP_MAX queued publishes. */
static void handler_lead(handler *h) {
    handler_pending *take[HANDLER_GROUP_MAX];
    msglog_entry es[HANDLER_GROUP_MAX];
    msglog_ack acks[HANDLER_GROUP_MAX];
    size_t n = 0;
    int64_t first = INT64_MAX;
    while (handler_queue && n < HANDLER_GROUP_MAX) {
        handler_pending *p = handler_queue;
        handler_queue = p->next;
        p->state = PENDING_TAKEN;
        take[n] = p;
        es[n++] = *p->e;
        if (p->deadline < first)
            first = p->deadline;
    }
    if (!handler_queue)
        handler_queue_tail = &handler_queue;
    int64_t now = clock_mono_ms();
    handler_leading = 1;
    handler_held_since = now;
    pthread_mutex_unlock(&handler_gate);

    /* SQLite may wait for another process until the earliest deadline. */
    msglog_set_busy_timeout(h->log, first - now > 1 ? (int)(first - now) : 1);
    int rc = msglog_append_batch(h->log, es, n, acks);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            take[i]->rc = 0;
            *take[i]->ack = acks[i];
        }
    } else if (n > 1 && (rc == -EEXIST || rc == -EINVAL)) {
        for (size_t i = 0; i < n; i++) {
            int one = msglog_append(h->log, &es[i], take[i]->ack);
            handler_pending_fail(take[i], one, one ? msglog_errmsg(h->log) : "");
        }
    } else {
        for (size_t i = 0; i < n; i++)
            handler_pending_fail(take[i], rc, msglog_errmsg(h->log));
    }

    pthread_mutex_lock(&handler_gate);
    for (size_t i = 0; i < n; i++)
        take[i]->state = PENDING_DONE;
    handler_leading = 0;
    handler_held_since = 0;
    pthread_cond_broadcast(&handler_gate_cv);
}

/* Append e under THE GROUP COMMIT and THE WRITE GATE: 0 or msglog's code
 * (its reason in err), -ETIMEDOUT when its turn did not come within
 * busy_timeout_ms, -EBUSY when the gate is full. */
static int handler_append(handler *h, const msglog_entry *e, msglog_ack *ack, char *err,
                          size_t errlen) {
    pthread_once(&handler_gate_once, handler_gate_init);
    int limit = h->cfg->threads > 1 ? h->cfg->threads - 1 : 1;
    handler_pending p = {.e = e, .ack = ack, .state = PENDING_QUEUED,
                         .deadline = clock_mono_ms() + h->cfg->busy_timeout_ms};
    pthread_mutex_lock(&handler_gate);
    *handler_queue_tail = &p;
    handler_queue_tail = &p.next;
    handler_writers++;
    while (p.state != PENDING_DONE) {
        if (p.state == PENDING_TAKEN) { /* the leader answers it */
            pthread_cond_wait(&handler_gate_cv, &handler_gate);
            continue;
        }
        if (!handler_leading) {
            handler_lead(h);
            continue;
        }
        int64_t now = clock_mono_ms();
        if (handler_writers > limit && handler_held_since &&
            now - handler_held_since >= HANDLER_STALL_MS) {
            handler_unqueue(&p);
            handler_pending_fail(&p, -EBUSY, "the write gate is full");
            break;
        }
        if (now >= p.deadline) {
            handler_unqueue(&p);
            handler_pending_fail(&p, -ETIMEDOUT, "busy_timeout_ms passed waiting to write");
            break;
        }
        handler_gate_wait(p.deadline - now < HANDLER_STALL_MS ? p.deadline
                                                              : now + HANDLER_STALL_MS);
    }
    handler_writers--;
    pthread_mutex_unlock(&handler_gate);
    snprintf(err, errlen, "%s", p.err);
    return p.rc;
}

static handler_result handler_pub(handler *h, const request *r, const void *body, size_t len,
                                  buf *out) {
    const char *cors = reply_cors(h->cfg, r->origin);
    int key;
    if (handler_admit(h, r, 1, cors, out, &key) != AUTH_OK)
        return HANDLER_DONE;
    if (h->cfg->streams && streams_refuse_publish(h, r, cors, out))
        return HANDLER_DONE; /* the channel is a stream, and its rules say no */
    config_policy p = config_policy_for(h->cfg, r->channel);
    if ((int64_t)len > p.max_body) {
        char detail[96];
        snprintf(detail, sizeof detail, "the body exceeds this channel's max_body (%lld bytes)",
                 (long long)p.max_body);
        reply_error(out, 413, cors, "body_too_large", detail, 0);
        return HANDLER_DONE;
    }
    /* The rate: per publish key, else per client, in each rule's own bucket. */
    char bucket[REQUEST_CLIENT_MAX + 32];
    int retry = 1;
    if (key >= 0)
        snprintf(bucket, sizeof bucket, "%d:k:%d", p.rule, key);
    else
        snprintf(bucket, sizeof bucket, "%d:a:%s", p.rule, r->client);
    if (h->lim && guard_rate(h->lim, bucket, strlen(bucket), p.publish_rate_milli,
                              p.publish_burst, &retry) == GUARD_REFUSED) {
        atomic_fetch_add(&h->counters->refused, 1);
        reply_error(out, 429, cors, "rate_limited",
                    "too many publishes: this channel's publish_rate is exceeded", retry);
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
    char why[256];
    int rc = handler_append(h, &e, &ack, why, sizeof why);
    if (rc == -EBUSY || rc == -ETIMEDOUT) {
        reply_error(out, 503, cors, "busy",
                    "the database is locked by another writer beyond busy_timeout_ms", 1);
        return HANDLER_DONE;
    }
    if (rc == -EEXIST) {
        reply_error(out, 422, cors, "idempotency_key_reused", why, 0);
        return HANDLER_DONE;
    }
    if (rc == -EINVAL) { /* request.c checks first: a rule of the log's own */
        reply_error(out, 400, cors, "invalid_message", why, 0);
        return HANDLER_DONE;
    }
    if (rc) {
        fprintf(stderr, "holdfast[%d]: publish to %s failed: %s\n", (int)getpid(), r->channel,
                why);
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

/* THE COUNTERS, once: every output (/stats, /metrics, the per-worker list)
 * walks this table.  `cumulative` ones are totals that must not drop when
 * a worker is replaced: a dead worker's are folded into the wake file's
 * retired totals. */
static const struct {
    const char *json, *worker_json, *metric, *help;
    size_t off;
    int cumulative;
} handler_counter_defs[] = {
#define HC(f, w, m, h, c) {#f, w, m, h, offsetof(handler_counters, f), c}
    HC(parked, "waiting", "holdfast_parked", "subscribers waiting now", 0),
    HC(publishes, "publishes", "holdfast_publishes_total", "messages appended", 1),
    HC(deliveries, "deliveries", "holdfast_deliveries_total", "messages sent, per subscriber", 1),
    HC(answered, "answered", "holdfast_answers_total", "subscribe answers sent", 1),
    HC(timeouts, "timeouts", "holdfast_timeouts_total", "subscribe answers with no message", 1),
    HC(left, "left", "holdfast_left_total", "parked subscribers whose client left", 1),
    HC(refused, "refused", "holdfast_refused_total",
       "requests refused by a limit (503 full worker, 429 per client or rate)", 1),
#undef HC
};
#define HANDLER_NCOUNTERS (sizeof handler_counter_defs / sizeof handler_counter_defs[0])
_Static_assert(HANDLER_NCOUNTERS == WAKE_SLOT_VALUES, "one table entry per counter");

static int64_t handler_counter(const handler_counters *c, size_t k) {
    return atomic_load((_Atomic int64_t *)((char *)c + handler_counter_defs[k].off));
}

uint32_t handler_cumulative_mask(void) {
    uint32_t mask = 0;
    for (size_t k = 0; k < HANDLER_NCOUNTERS; k++)
        mask |= (uint32_t)handler_counter_defs[k].cumulative << k;
    return mask;
}

/* Sum the counters of every live worker and the retired totals into t,
 * and list the workers into b; just this process's counters when it has
 * no slot (CGI). */
static void handler_workers_json(handler *h, buf *b, int64_t t[HANDLER_NCOUNTERS]) {
    const wake_slot *slots = wake_slots(h->wk);
    int n = 0;
    wake_fold_dead(h->wk, handler_cumulative_mask());
    for (size_t k = 0; k < HANDLER_NCOUNTERS; k++)
        t[k] = wake_retired(h->wk, k);
    buf_puts(b, "\"workers\":[");
    for (size_t i = 0; i < WAKE_SLOTS; i++) {
        if (!wake_slot_alive(&slots[i]))
            continue;
        const handler_counters *c = handler_counters_of((wake_slot *)&slots[i]);
        buf_printf(b, "%s{\"pid\":%d", n++ ? "," : "", (int)slots[i].pid);
        for (size_t k = 0; k < HANDLER_NCOUNTERS; k++) {
            int64_t v = handler_counter(c, k);
            t[k] += v;
            buf_printf(b, ",\"%s\":%lld", handler_counter_defs[k].worker_json, (long long)v);
        }
        buf_putc(b, '}');
    }
    buf_puts(b, "]");
    if (n == 0)
        for (size_t k = 0; k < HANDLER_NCOUNTERS; k++)
            t[k] += handler_counter(h->counters, k);
}

static void handler_stats(handler *h, const request *r, buf *out) {
    msglog_stats st;
    const char *cors = reply_cors(h->cfg, r->origin);
    handler_check_db(h, 1); /* report the file at cfg->db, not a removed one */
    if (msglog_stats_get(h->log, &st)) {
        reply_error(out, 503, cors, "unavailable", msglog_errmsg(h->log), 1);
        return;
    }
    int64_t t[HANDLER_NCOUNTERS];
    const char *durability = msglog_synchronous(h->log) >= 2 ? "full" : "normal";
    buf w, b;
    buf_init(&w);
    buf_init(&b);
    handler_workers_json(h, &w, t);
    if (r->route == ROUTE_STATS) {
        buf_printf(&b,
                   "{\"head\":%lld,\"epoch\":\"%s\",\"messages\":%lld,\"channels\":%lld,"
                   "\"bytes\":%lld,\"durability\":\"%s\",\"pid\":%d",
                   (long long)st.head, st.epoch, (long long)st.messages,
                   (long long)st.channels, (long long)st.bytes, durability, (int)getpid());
        for (size_t k = 0; k < HANDLER_NCOUNTERS; k++)
            buf_printf(&b, ",\"%s\":%lld", handler_counter_defs[k].json, (long long)t[k]);
        buf_putc(&b, ',');
        buf_put(&b, w.p, w.len);
        buf_puts(&b, "}\n");
        reply_json(out, 200, cors, b.p, b.len);
    } else {
        const struct {
            const char *name;
            int64_t v;
        } gauges[] = {{"holdfast_head", st.head},
                      {"holdfast_messages", st.messages},
                      {"holdfast_channels", st.channels},
                      {"holdfast_bytes", st.bytes}};
        for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
            buf_printf(&b, "# TYPE %s gauge\n%s %lld\n", gauges[i].name, gauges[i].name,
                       (long long)gauges[i].v);
        for (size_t k = 0; k < HANDLER_NCOUNTERS; k++)
            buf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n",
                       handler_counter_defs[k].metric, handler_counter_defs[k].help,
                       handler_counter_defs[k].metric,
                       handler_counter_defs[k].cumulative ? "counter" : "gauge",
                       handler_counter_defs[k].metric, (long long)t[k]);
        reply_body(out, 200, cors, "text/plain; version=0.0.4", b.p, b.len);
    }
    buf_free(&w);
    buf_free(&b);
}

handler_result handler_run(handler *h, const request *r, const void *body, size_t len, buf *out,
                           int64_t *cursor, char epoch[MSGLOG_EPOCH_LEN + 1]) {
    const char *cors = reply_cors(h->cfg, r->origin);
    if (r->route != ROUTE_PREFLIGHT && r->route != ROUTE_ERROR && handler_storage(h) != 0) {
        reply_error(out, 503, cors, "unavailable", h->err, 1);
        return HANDLER_DONE;
    }
    switch (r->route) {
    case ROUTE_SUB:
        if (r->format == FORMAT_SSE && !h->cfg->sse) {
            reply_error(out, 406, cors, "not_acceptable",
                        "event streams are off here (sse = off): long-poll with"
                        " Accept: application/json", 0);
            return HANDLER_DONE;
        }
        if (r->format == FORMAT_SSE)
            return handler_sse(h, r, out, cursor, epoch);
        return handler_sub(h, r, out, cursor, epoch);
    case ROUTE_PUB:
        return handler_pub(h, r, body, len, out);
    case ROUTE_STREAM:
        if (!h->cfg->streams) {
            reply_error(out, 404, cors, "not_found", "durable streams are off here (streams = off)",
                        0);
            return HANDLER_DONE;
        }
        if (r->ds.live == FORMAT_DS_SSE && !h->cfg->sse) {
            reply_error(out, 406, cors, "not_acceptable",
                        "event streams are off here (sse = off): read with live=long-poll", 0);
            return HANDLER_DONE;
        }
        if (epoch)
            epoch[0] = '\0'; /* a stream's position is its own: no epoch */
        return streams_run(h, r, body, len, out, cursor);
    case ROUTE_HEALTH:
        /* The file at cfg->db, not whatever this handle has open. */
        if (handler_check_db(h, 1) == HANDLER_DB_FAILED || msglog_head(h->log) < 0)
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
