/* lpload.h -- the load tool's shared state: options, connections, the
 * subscribers, and the run (see lpload.c for what the tool does).
 *
 * lpload.c parses options, sets up and reports; lprun.c drives the run
 * (requests, connections, answers, phases, the epoll loop).  One thread.
 */
#ifndef HOLDFAST_LPLOAD_H
#define HOLDFAST_LPLOAD_H

#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "../fcgiclient.h"
#include "lphist.h"
#include "lphttp.h"
#include "lpjson.h"

#define LP_MAX_PIDS 32
#define LP_BACKOFF_NS 250000000LL   /* retry a failed poll after 250 ms */
#define LP_SOON_NS 10000000LL       /* retry a connect the backlog refused */
#define LP_SETTLE_CAP_MS 30000      /* longest wait for the parked count */
#define LP_STATS_EVERY_NS 100000000LL
#define LP_PUB_TIMEOUT_NS 30000000000LL
#define LP_CTL_TIMEOUT_NS 5000000000LL
#define LP_STATUS_MAX 600
#define LP_READ_ROUNDS 16

enum { ROLE_SUB, ROLE_PUB, ROLE_CTL, NROLES };
enum { ERR_CONN = 0, ERR_TIMEOUT = 1, ERR_BADANSWER = 2 }; /* below 100: not HTTP */
enum { NEXT_IDLE, NEXT_REPOLL, NEXT_BACKOFF, NEXT_RETRY };
typedef enum { PH_INIT, PH_CONNECT, PH_SETTLE, PH_PUBLISH, PH_DRAIN, PH_STOP } lp_phase;

typedef struct {
    int fcgi;
    const char *addr;
    int nsubs;
    int nmsgs;
    double rate;
    int inflight;
    const char *channel;
    const char *prefix;
    double duration_limit;
    double connect_rate;
    int pids[LP_MAX_PIDS];
    int npids;
    int settle_ms;
    int drain_ms;
    int poll_timeout;
    const char *publish_key;
    const char *head_key;
    const char *parked_key;
    int allow_remote;
    int nchan;        /* NCHAN_*: talk to nchan instead of holdfast */
    int sse;          /* --sse: subscribers hold one event stream each */
    int own_pids[LP_MAX_PIDS]; /* --own-pids: a second RSS figure (a subset) */
    int nown_pids;
} lp_opts;

/* --nchan: nchan's long-poll (one message per answer), or its multipart
 * answers (every buffered message after the client's position in one). */
enum { NCHAN_OFF, NCHAN_LONGPOLL, NCHAN_MULTIPART, NCHAN_EVENTSOURCE };
#define LP_NCHAN_DATE_MAX 40
#define LP_NCHAN_ETAG_MAX 24

typedef struct {
    int fd;          /* -1: no connection */
    int role;
    int idx;
    int busy;        /* a request is in flight */
    int reused;      /* ... on a connection kept alive from an earlier one */
    int queued;      /* in one of the FIFOs */
    int want_out;
    char *out;
    size_t out_len, out_off, out_cap;
    lphttp_resp hr;
    fcgi_conn *fc;   /* --fcgi: owns fd */
    int64_t sent_ns;
    int64_t ready_at; /* while in a FIFO: when it may leave */
    int retried;     /* a publish already re-sent once */
} lp_conn;

/* Connections waiting for something; every entry of one FIFO waits the
 * same delay, so the FIFO is also in deadline order. */
typedef struct {
    lp_conn **v;
    size_t cap, head, len;
    int64_t delay_ns;
} lp_fifo;

typedef struct {
    lp_conn c;
    int64_t cursor;
    int has_cursor;
    char epoch[LPJSON_EPOCH_MAX + 1];
    int64_t last_id;
    uint32_t got;
    int complete;
    int first_done;  /* the first request has been written */
    uint8_t *seen;
    /* --nchan: the position nchan gave (Last-Modified, Etag), sent back as
     * If-Modified-Since / If-None-Match; key orders answers */
    char lm[LP_NCHAN_DATE_MAX];
    char etag[LP_NCHAN_ETAG_MAX]; /* --nchan eventsource: the last event's id */
    int64_t nchan_key;
} lp_sub;

typedef struct {
    lp_opts o;
    struct sockaddr_storage ss;
    socklen_t slen;
    char host[80];
    int ep;
    lp_phase ph;
    int64_t t_start, t_phase, t_pub_first, t_last_delivery, t_pub_done, t_next_stats;
    int64_t setup_ms; /* start to first publish: connect + settle */

    lp_sub *subs;
    lp_conn *pubs;
    int *pub_seq;
    int *pub_free;
    int npub_free;
    lp_conn ctl;

    lp_fifo connq;   /* waiting for a connect token (--connect-rate) */
    lp_fifo backoff; /* failed polls, retried after LP_BACKOFF_NS */
    lp_fifo soon;    /* connects refused with EAGAIN (unix backlog full) */
    double tokens;
    int64_t tokens_ns;

    int stats_ok, head_known, parked_known;
    int64_t head, parked0, parked_last;
    char epoch0[LPJSON_EPOCH_MAX + 1];
    int settle_timed_out;
    long rss_before_kib, rss_after_kib;
    long own_before_kib, own_after_kib;

    int next_seq, pub_inflight, pub_ok, pub_failed;
    int first_done, complete;
    uint64_t deliveries, duplicates, out_of_order, foreign, gaps, resets;
    uint64_t polls, empty_polls, reconnects, connect_eagain;
    uint32_t errs[NROLES][LP_STATUS_MAX];
    lphist hist;
    const char *stopped_by;
    int64_t now;     /* cached CLOCK_MONOTONIC ns for the current event */
} lp;

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t lprun_clock_ns(void);

/* Set up c as an idle connection of role (ROLE_*) and index idx. */
void lprun_conn_init(lp_conn *c, int role, int idx);

/* Close c's socket (if any) and forget a partial answer; c stays usable. */
void lprun_conn_close(lp_conn *c);

/* Allocate a FIFO of cap entries whose entries wait delay_ns; 0 or -1. */
int lprun_fifo_init(lp_fifo *f, size_t cap, int64_t delay_ns);

/* Run the phases from INIT to STOP (set up by lp_setup() in lpload.c);
 * returns when the run is complete, drained, or over --duration-limit. */
void lprun_loop(lp *L);

#endif
