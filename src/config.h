/* config.h -- holdfast's settings: defaults, then file, then environment,
 * then command-line flags, merged into one struct that is read-only after
 * config_load() returns.  See config.c for the file format. */
#ifndef HOLDFAST_CONFIG_H
#define HOLDFAST_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "msglog.h"

#define CONFIG_MAX_POLICIES 32
#define CONFIG_MAX_KEYS 8
#define CONFIG_MAX_ORIGINS 16
#define CONFIG_STR 512
#define CONFIG_PATH 4096
/* retain_seconds at most 100 years: msglog turns it into milliseconds. */
#define CONFIG_RETAIN_SECONDS_MAX (100LL * 365 * 86400)

typedef enum {
    POLICY_INHERIT = -1, /* not set in the section: the global rule decides */
    POLICY_ANYONE = 0,
    POLICY_KEY = 1
} config_access;

/* Per-channel rule, chosen by the first pattern (fnmatch) that matches.
 * Fields a section leaves out (POLICY_INHERIT, retention -1) take the global
 * value when config_policy_for() resolves them, so settings that arrive
 * later (environment, flags) still apply. */
typedef struct {
    char pattern[MSGLOG_CHANNEL_MAX + 1];
    config_access publish;   /* anyone or key */
    config_access subscribe; /* anyone (signed tokens: a later release) */
    msglog_retention retention;
} config_policy;

typedef struct {
    char db[CONFIG_PATH];
    msglog_durability durability;
    int busy_timeout_ms;
    int poll_timeout_s;      /* default hold of a subscribe */
    int max_poll_timeout_s;  /* cap on ?timeout= */
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
 * holdfast.conf beside argv0 if it exists), then the environment.  An
 * explicit file that cannot be read is an error. */
int config_load(config *c, const char *path, const char *argv0, char *err, size_t errlen);

/* The policy for a channel: the first [channel] section whose pattern
 * matches, else the global one (publish needs a key once any is set). */
config_policy config_policy_for(const config *c, const char *channel);

/* Retention callback for msglog_options (ud = const config *). */
msglog_retention config_retention_for(const char *channel, void *ud);

#endif
