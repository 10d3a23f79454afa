/* config.h -- holdfast's settings: defaults, then file, then environment,
 * then command-line flags, merged into one struct that is read-only after
 * config_load() returns.  See config.c for the file format. */
#ifndef HOLDFAST_CONFIG_H
#define HOLDFAST_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "msglog.h"
#include "token.h"

#define CONFIG_MAX_POLICIES 32
#define CONFIG_MAX_KEYS 8
#define CONFIG_MAX_ORIGINS 16
#define CONFIG_MAX_TYPES 16
#define CONFIG_NAME 64 /* a header or cookie name */
/* A token_secret is at least this long: HS256 wants a key of its own size. */
#define CONFIG_SECRET_MIN 32
#define CONFIG_STR 512
#define CONFIG_PATH 4096
/* retain_seconds at most 100 years: msglog turns it into milliseconds. */
#define CONFIG_RETAIN_SECONDS_MAX (100LL * 365 * 86400)

/* Who may publish to or subscribe to a channel. */
typedef enum {
    POLICY_INHERIT = -1, /* not set in the section: the global rule decides */
    POLICY_ANYONE = 0,
    POLICY_KEY = 1,      /* a publish key: Authorization: Bearer KEY */
    POLICY_TOKEN = 2     /* a signed token granting the channel, or a publish key */
} config_access;

/* Per-channel rule, chosen by the first pattern (fnmatch) that matches.
 * Fields a section leaves out (POLICY_INHERIT, -1) take the global value
 * when config_policy_for() resolves them, so settings that arrive later
 * (environment, flags) still apply. */
typedef struct {
    char pattern[MSGLOG_CHANNEL_MAX + 1];
    config_access publish;   /* anyone, key or token */
    config_access subscribe; /* anyone or token */
    msglog_retention retention;
    int64_t max_body;            /* bytes of one message; 413 past it */
    int64_t publish_rate_milli;  /* publishes per second x1000, per key or client; 0 = none */
    int publish_burst;           /* the token bucket's size */
    int rule;                    /* 0 = the global rule, else section number (1..) */
} config_policy;

typedef struct {
    char db[CONFIG_PATH];
    msglog_durability durability;
    int busy_timeout_ms;
    int poll_timeout_s;      /* default hold of a subscribe */
    int max_poll_timeout_s;  /* cap on ?timeout= */
    int sse;                 /* event streams served (off: 406, clients long-poll) */
    int streams;             /* the Durable Streams routes (off: 404) */
    int streams_poll_timeout_s; /* how long a stream's long-poll waits */
    int sse_ping_s;          /* an event stream's comment line at least this often */
    int sse_max_s;           /* an event stream ends after this (the browser reconnects) */
    int64_t sse_queue_max;   /* bytes an event stream may have unsent before it is dropped */
    int64_t max_body;        /* bytes; 413 past it */
    int max_channels;        /* per subscribe; 400 past it */
    int max_parked;          /* per worker; 503 past it */
    int batch_limit;         /* messages per response */
    int data_version_ms;     /* slow check for rows written by others */
    int prune_every;         /* publishes between incremental prunes */
    char listen[CONFIG_STR];
    int listen_mode;         /* unix socket permissions, -1 = by umask */
    char listen_group[CONFIG_STR]; /* unix socket group, "" = unchanged */
    int workers;
    int threads;             /* accepting threads per worker */
    char publish_keys[CONFIG_MAX_KEYS][CONFIG_STR];
    int npublish_keys;
    char cors_origins[CONFIG_MAX_ORIGINS][CONFIG_STR];
    int ncors_origins;
    int cors_credentials;    /* Access-Control-Allow-Credentials for listed origins */
    /* The CORS header lines answered to each origin (built by config_set). */
    char cors_headers[CONFIG_MAX_ORIGINS][CONFIG_STR + 512];
    config_access publish;   /* the global rules: publish defaults to key */
    config_access subscribe; /* and subscribe to anyone */
    char token_secrets[CONFIG_MAX_KEYS][CONFIG_STR];
    int ntoken_secrets;
    unsigned token_algs;     /* token_alg bits a token may use */
    int token_leeway_s;      /* clock leeway for exp, nbf, iat */
    char token_cookie[CONFIG_NAME];   /* cookie carrying a token, "" = none */
    char client_header[CONFIG_NAME];  /* trusted header naming the client, "" = REMOTE_ADDR */
    char client_param[CONFIG_NAME + 8]; /* its CGI name: HTTP_X_REAL_IP */
    int max_parked_per_client; /* across every process; 429 past it; 0 = no limit */
    int64_t publish_rate_milli; /* default publish rate (see config_policy) */
    int publish_burst;
    char raw_types[CONFIG_MAX_TYPES][CONFIG_STR]; /* types format=raw serves as themselves */
    int nraw_types;
    int raw_types_set;       /* the list was configured: it replaced the defaults */
    msglog_retention retention; /* default for channels no policy matches */
    config_policy policies[CONFIG_MAX_POLICIES];
    int npolicies;
    char source[CONFIG_PATH]; /* file the settings came from, "" if none */
} config;

/* Fill c with the defaults. */
void config_defaults(config *c);

/* Parse a config file's text into c (on top of what c holds).  `name` is
 * used in messages.  Returns 0, or -EINVAL with "name:line: reason" in err. */
int config_parse(config *c, const char *name, const char *text, char *err, size_t errlen);

/* Apply one setting by its file key (also used for flags and environment). */
int config_set(config *c, const char *key, const char *value, char *err, size_t errlen);

/* Apply HOLDFAST_* variables from envp (NULL = environ). */
int config_apply_env(config *c, char *const *envp, char *err, size_t errlen);

/* Defaults, then the file (explicit path, else $HOLDFAST_CONFIG, else
 * holdfast.conf beside argv0 if it exists), then the environment, then
 * config_check().  An explicit file that cannot be read is an error. */
int config_load(config *c, const char *path, const char *argv0, char *err, size_t errlen);

/* Rules that span settings: a `token` rule needs a token_secret, and
 * credentials cannot go with cors_origin = *.  0 or -EINVAL with the
 * reason in err. */
int config_check(const config *c, char *err, size_t errlen);

/* The policy for a channel: the first [channel] section whose pattern
 * matches, else the global one (publish needs a key unless publish =
 * anyone). */
config_policy config_policy_for(const config *c, const char *channel);

/* 1 when no publish can succeed with these settings as far as the global
 * rule goes: it needs a key and none is configured (serve says so). */
int config_publish_closed(const config *c);

/* One sentence on who may publish, for serve to print at start. */
const char *config_publish_summary(const config *c, char *out, size_t cap);

/* 1 when format=raw may serve a message of media type `type` as itself. */
int config_raw_type_allowed(const config *c, const char *type);

/* Retention callback for msglog_options (ud = const config *). */
msglog_retention config_retention_for(const char *channel, void *ud);

#endif
