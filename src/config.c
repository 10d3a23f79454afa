/* config.c -- holdfast.conf, HOLDFAST_* variables and flags into one struct.
 *
 * The file is lines of `key = value`; `#` starts a comment; blank lines are
 * ignored.  A `[channel PATTERN]` line opens a per-channel policy (PATTERN is
 * an fnmatch(3) glob such as `chat.*`); the keys after it, up to the next
 * section, apply to channels matching it: publish, subscribe, max_body,
 * publish_rate, publish_burst, retain_messages, retain_seconds.  The first
 * matching policy wins.
 *
 * Safe by default: publishing needs a key (publish = key) until the
 * settings say `publish = anyone`, globally or for a section; subscribing
 * is open unless a rule says `subscribe = token`, which needs a
 * token_secret of at least CONFIG_SECRET_MIN bytes.
 *
 * Every top-level key can also come from the environment as HOLDFAST_<KEY>
 * (upper case: HOLDFAST_DB, HOLDFAST_POLL_TIMEOUT, ...) -- what mod_fcgid's
 * FcgidInitialEnv and lighttpd's bin-environment can set -- and overrides the
 * file.  Errors name the file and line.  Every number has a range, and an
 * error names the key and its bounds; retain_seconds stops at 100 years
 * (CONFIG_RETAIN_SECONDS_MAX), far from where milliseconds overflow.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

extern char **environ;

void config_defaults(config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->db, sizeof c->db, "holdfast.db");
    c->durability = MSGLOG_DURABILITY_NORMAL;
    c->busy_timeout_ms = 5000;
    c->poll_timeout_s = 25;
    c->max_poll_timeout_s = 55;
    c->sse = 1;
    c->sse_ping_s = 15;
    c->streams = 1;
    c->streams_poll_timeout_s = 30;
    c->sse_max_s = 120;
    c->sse_queue_max = 1 << 20;
    c->max_body = 64 * 1024;
    c->max_channels = 16;
    c->max_parked = 10000;
    c->batch_limit = 1000;
    c->data_version_ms = 1000;
    c->prune_every = 256;
    c->workers = 2;
    c->listen_mode = -1;
    c->threads = 4;
    c->retention.max_messages = 10000;
    c->retention.max_age_s = 0;
    c->publish = POLICY_KEY;
    c->subscribe = POLICY_ANYONE;
    c->token_algs = TOKEN_ALG_HS256;
    c->token_leeway_s = 0;
    c->max_parked_per_client = 64;
    c->publish_rate_milli = 50 * 1000;
    c->publish_burst = 100;
    /* Types a browser will not run as a page even without the sandbox. */
    static const char *const raw[] = {"text/plain", "application/json",
                                      "application/octet-stream", "image/png", "image/jpeg",
                                      "image/gif", "image/webp", "application/x-ndjson"};
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++)
        snprintf(c->raw_types[c->nraw_types++], CONFIG_STR, "%s", raw[i]);
}

/* ---- value parsers ------------------------------------------------------ */

/* Parse a decimal integer (with k/m suffixes for byte counts): 0, -EINVAL
 * if it is not a number, -ERANGE if it is outside lo..hi (or int64). */
static int config_int(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || (errno && errno != ERANGE))
        return -EINVAL;
    int range = errno == ERANGE;
    /* Size suffixes for byte counts: 64k, 1m. */
    long long mul = *end == 'k' || *end == 'K' ? 1024 : *end == 'm' || *end == 'M' ? 1 << 20 : 1;
    if (mul > 1) {
        if (x > LLONG_MAX / mul || x < LLONG_MIN / mul)
            range = 1;
        else
            x *= mul;
        end++;
    }
    if (*end)
        return -EINVAL;
    if (range || x < lo || x > hi)
        return -ERANGE;
    *out = x;
    return 0;
}

/* Integer settings: key, field offset, width, range, and what the maximum
 * means when it is not obvious. */
typedef struct {
    const char *key;
    size_t off;
    int is64;
    int64_t lo, hi;
    const char *hi_means;
} config_intkey;

#define CI(k, f, lo, hi) {k, offsetof(config, f), sizeof(((config *)0)->f) == 8, lo, hi, NULL}
static const config_intkey config_ints[] = {
    CI("busy_timeout_ms", busy_timeout_ms, 0, 600000),
    CI("poll_timeout", poll_timeout_s, 0, 3600),
    CI("max_poll_timeout", max_poll_timeout_s, 0, 3600),
    CI("sse_ping", sse_ping_s, 1, 3600),
    CI("streams_poll_timeout", streams_poll_timeout_s, 0, 3600),
    CI("sse_max", sse_max_s, 1, 86400),
    CI("sse_queue_max", sse_queue_max, 4096, 1LL << 30),
    CI("max_body", max_body, 1, 1024LL * 1024 * 1024),
    CI("max_channels", max_channels, 1, 64),
    CI("max_parked", max_parked, 1, 1000000),
    CI("batch_limit", batch_limit, 1, 100000),
    CI("data_version_ms", data_version_ms, 10, 600000),
    CI("prune_every", prune_every, -1, 1000000),
    CI("workers", workers, 1, 256),
    CI("threads", threads, 1, 64),
    CI("retain_messages", retention.max_messages, 0, INT64_MAX),
    CI("token_leeway", token_leeway_s, 0, 3600),
    CI("max_parked_per_client", max_parked_per_client, 0, 1000000),
    CI("publish_burst", publish_burst, 1, 1000000),
    {"retain_seconds", offsetof(config, retention.max_age_s), 1, 0, CONFIG_RETAIN_SECONDS_MAX,
     "100 years"},
};

static const config_intkey *config_intkey_find(const char *key) {
    for (size_t i = 0; i < sizeof config_ints / sizeof config_ints[0]; i++)
        if (!strcmp(key, config_ints[i].key))
            return &config_ints[i];
    return NULL;
}

/* Parse v for k into *x; on failure an error naming the key and its range. */
static int config_int_for(const config_intkey *k, const char *v, int64_t *x, char *err,
                          size_t errlen) {
    int rc = config_int(v, k->lo, k->hi, x);
    if (rc == -ERANGE)
        snprintf(err, errlen, "%s: %s is out of range: the minimum is %lld, the maximum %lld%s%s%s",
                 k->key, v, (long long)k->lo, (long long)k->hi, k->hi_means ? " (" : "",
                 k->hi_means ? k->hi_means : "", k->hi_means ? ")" : "");
    else if (rc)
        snprintf(err, errlen, "%s: '%s' is not a number in %lld..%lld", k->key, v,
                 (long long)k->lo, (long long)k->hi);
    return rc ? -EINVAL : 0;
}

static int config_set_int(config *c, const config_intkey *k, const char *v, char *err,
                          size_t errlen) {
    int64_t x;
    if (config_int_for(k, v, &x, err, errlen))
        return -EINVAL;
    if (k->is64)
        *(int64_t *)((char *)c + k->off) = x;
    else
        *(int *)((char *)c + k->off) = (int)x;
    return 0;
}

static int config_set_str(char *dst, size_t cap, const char *v, char *err, size_t errlen) {
    if (strlen(v) >= cap) {
        snprintf(err, errlen, "value too long (at most %zu bytes)", cap - 1);
        return -EINVAL;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int config_add_str(char (*list)[CONFIG_STR], int *n, int max, const char *v,
                          char *err, size_t errlen) {
    if (*n >= max) {
        snprintf(err, errlen, "too many values (at most %d)", max);
        return -EINVAL;
    }
    return config_set_str(list[(*n)++], CONFIG_STR, v, err, errlen);
}

/* "anyone", "key" or "token", as far as `allowed` (bits 1 << POLICY_*) goes. */
static int config_access_of(const char *key, const char *v, unsigned allowed,
                            config_access *out, char *err, size_t errlen) {
    static const char *const names[] = {"anyone", "key", "token"};
    for (int i = 0; i < 3; i++) {
        if ((allowed & 1u << i) && !strcmp(v, names[i])) {
            *out = (config_access)i;
            return 0;
        }
    }
    snprintf(err, errlen, "%s: '%s' must be %s", key, v,
             allowed == 7 ? "'anyone', 'key' or 'token'" : "'anyone' or 'token'");
    return -EINVAL;
}
#define CONFIG_PUBLISH_ACCESS 7u                                     /* anyone|key|token */
#define CONFIG_SUBSCRIBE_ACCESS (1u << POLICY_ANYONE | 1u << POLICY_TOKEN) /* anyone|token */

/* publish_rate: "N" or "N/s" per second, "N/m" per minute, N a decimal
 * number with at most three places; 0 = no limit.  Into thousandths of a
 * publish per second. */
static int config_rate(const char *v, int64_t *milli, char *err, size_t errlen) {
    int64_t whole = 0, frac = 0, scale = 1000;
    const char *p = v;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && whole < 100000000; p++, digits++)
        whole = whole * 10 + (*p - '0');
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9' && scale > 1; p++, digits++)
            frac += (*p - '0') * (scale /= 10);
    int per_minute = 0;
    if (*p == '/' && (p[1] == 's' || p[1] == 'm') && !p[2]) {
        per_minute = p[1] == 'm';
        p += 2;
    }
    if (!digits || *p || whole > 1000000) {
        snprintf(err, errlen, "publish_rate: '%s' is not a rate such as 10, 2.5/s or 30/m "
                              "(at most 1000000 per second; 0 = no limit)", v);
        return -EINVAL;
    }
    *milli = whole * 1000 + frac;
    if (per_minute)
        *milli = (*milli + 59) / 60; /* round up: a rate never becomes 0 = none */
    return 0;
}

/* A header or cookie name: 1-63 bytes of A-Za-z0-9, '-' and '_'. */
static int config_name(const char *key, const char *v, char *dst, char *err, size_t errlen) {
    size_t n = strlen(v);
    int ok = n < CONFIG_NAME;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)v[i]) || v[i] == '-' || v[i] == '_';
    if (!ok) {
        snprintf(err, errlen, "%s: '%s' is not a name of at most %d letters, digits, - and _",
                 key, v, CONFIG_NAME - 1);
        return -EINVAL;
    }
    memcpy(dst, v, n + 1);
    return 0;
}

/* raw_types: media types (type/subtype) separated by spaces or commas. */
static int config_raw_types(config *c, const char *v, char *err, size_t errlen) {
    if (!c->raw_types_set) {
        c->nraw_types = 0; /* the first raw_types line replaces the defaults */
        c->raw_types_set = 1;
    }
    while (*v) {
        size_t n = strcspn(v, " \t,");
        if (n) {
            char t[CONFIG_STR];
            if (n >= sizeof t || memchr(v, ';', n)) {
                snprintf(err, errlen, "raw_types: each entry is a bare type/subtype");
                return -EINVAL;
            }
            memcpy(t, v, n);
            t[n] = '\0';
            if (!msglog_type_valid(t) || !strchr(t, '/')) {
                snprintf(err, errlen, "raw_types: '%s' is not a media type such as text/plain",
                         t);
                return -EINVAL;
            }
            if (config_add_str(c->raw_types, &c->nraw_types, CONFIG_MAX_TYPES, t, err, errlen))
                return -EINVAL;
        }
        v += n + (v[n] != '\0');
    }
    return 0;
}

/* token_algorithms: HS256, HS384, HS512 separated by spaces or commas. */
static int config_algs(config *c, const char *v, char *err, size_t errlen) {
    unsigned algs = 0;
    while (*v) {
        size_t n = strcspn(v, " \t,");
        if (n) {
            char name[8] = "";
            token_alg a = n < sizeof name ? (memcpy(name, v, n), token_alg_parse(name)) : 0;
            if (!a) {
                snprintf(err, errlen, "token_algorithms: '%.*s' is not HS256, HS384 or HS512",
                         (int)(n < 32 ? n : 32), v);
                return -EINVAL;
            }
            algs |= (unsigned)a;
        }
        v += n + (v[n] != '\0');
    }
    if (!algs) {
        snprintf(err, errlen, "token_algorithms: name at least one of HS256, HS384, HS512");
        return -EINVAL;
    }
    c->token_algs = algs;
    return 0;
}

/* on/off, yes/no, true/false, 1/0. */
static int config_bool(const char *key, const char *v, int *out, char *err, size_t errlen) {
    static const char *const yes[] = {"on", "yes", "true", "1"}, *const no[] = {"off", "no",
                                                                                "false", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(v, yes[i]) || !strcmp(v, no[i])) {
            *out = !strcmp(v, yes[i]);
            return 0;
        }
    }
    snprintf(err, errlen, "%s: '%s' is neither on nor off", key, v);
    return -EINVAL;
}

/* The header lines each listed origin is answered with.  Credentials only
 * for an exact origin (config_check refuses them with *). */
static void config_cors_headers(config *c) {
    for (int i = 0; i < c->ncors_origins; i++) {
        const char *o = c->cors_origins[i];
        int any = !strcmp(o, "*");
        snprintf(c->cors_headers[i], sizeof c->cors_headers[i],
                 "Access-Control-Allow-Origin: %s\r\n"
                 "Access-Control-Expose-Headers: Holdfast-Id, Holdfast-Epoch, Holdfast-Cursor, "
                 "Retry-After, ETag, Location, Stream-Next-Offset, Stream-Cursor, "
                 "Stream-Up-To-Date, Stream-Closed, Stream-TTL, Stream-Expires-At, "
                 "Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
                 "Producer-Expected-Seq, Producer-Received-Seq\r\n%s%s",
                 o, c->cors_credentials && !any ? "Access-Control-Allow-Credentials: true\r\n" : "",
                 any ? "" : "Vary: Origin\r\n");
    }
}

int config_set(config *c, const char *key, const char *v, char *err, size_t errlen) {
    const config_intkey *k = config_intkey_find(key);
    if (k)
        return config_set_int(c, k, v, err, errlen);
    if (!strcmp(key, "db"))
        return config_set_str(c->db, sizeof c->db, v, err, errlen);
    if (!strcmp(key, "listen"))
        return config_set_str(c->listen, sizeof c->listen, v, err, errlen);
    if (!strcmp(key, "listen_group"))
        return config_set_str(c->listen_group, sizeof c->listen_group, v, err, errlen);
    if (!strcmp(key, "listen_mode")) {
        char *end;
        long m = strtol(v, &end, 8);
        if (*v && !*end && m >= 0 && m <= 0777) {
            c->listen_mode = (int)m;
            return 0;
        }
        snprintf(err, errlen, "listen_mode: '%s' is not an octal mode such as 0660", v);
        return -EINVAL;
    }
    if (!strcmp(key, "publish_key"))
        return config_add_str(c->publish_keys, &c->npublish_keys, CONFIG_MAX_KEYS, v, err,
                              errlen);
    if (!strcmp(key, "cors_origin") || !strcmp(key, "cors_credentials")) {
        int rc = key[5] == 'o' ? config_add_str(c->cors_origins, &c->ncors_origins,
                                                CONFIG_MAX_ORIGINS, v, err, errlen)
                               : config_bool(key, v, &c->cors_credentials, err, errlen);
        config_cors_headers(c);
        return rc;
    }
    if (!strcmp(key, "publish"))
        return config_access_of(key, v, CONFIG_PUBLISH_ACCESS, &c->publish, err, errlen);
    if (!strcmp(key, "subscribe"))
        return config_access_of(key, v, CONFIG_SUBSCRIBE_ACCESS, &c->subscribe, err, errlen);
    if (!strcmp(key, "token_secret")) {
        if (strlen(v) < CONFIG_SECRET_MIN) {
            snprintf(err, errlen, "token_secret: at least %d bytes (try: head -c 32 "
                                  "/dev/urandom | base64)", CONFIG_SECRET_MIN);
            return -EINVAL;
        }
        return config_add_str(c->token_secrets, &c->ntoken_secrets, CONFIG_MAX_KEYS, v, err,
                              errlen);
    }
    if (!strcmp(key, "token_algorithms"))
        return config_algs(c, v, err, errlen);
    if (!strcmp(key, "token_cookie"))
        return config_name(key, v, c->token_cookie, err, errlen);
    if (!strcmp(key, "client_header")) {
        if (config_name(key, v, c->client_header, err, errlen))
            return -EINVAL;
        /* The CGI name of the header: HTTP_ and the name, upper case, - as _. */
        size_t n = strlen(v);
        memcpy(c->client_param, "HTTP_", 5);
        for (size_t i = 0; i <= n; i++)
            c->client_param[5 + i] = v[i] == '-' ? '_' : (char)toupper((unsigned char)v[i]);
        if (!n)
            c->client_param[0] = '\0';
        return 0;
    }
    if (!strcmp(key, "publish_rate"))
        return config_rate(v, &c->publish_rate_milli, err, errlen);
    if (!strcmp(key, "sse"))
        return config_bool(key, v, &c->sse, err, errlen);
    if (!strcmp(key, "streams"))
        return config_bool(key, v, &c->streams, err, errlen);
    if (!strcmp(key, "raw_types"))
        return config_raw_types(c, v, err, errlen);
    if (!strcmp(key, "durability")) {
        if (!strcmp(v, "normal") || !strcmp(v, "full")) {
            c->durability = !strcmp(v, "full") ? MSGLOG_DURABILITY_FULL
                                               : MSGLOG_DURABILITY_NORMAL;
            return 0;
        }
        snprintf(err, errlen, "durability: '%s' is neither 'normal' nor 'full'", v);
        return -EINVAL;
    }
    snprintf(err, errlen, "unknown setting '%s'", key);
    return -ENOENT;
}

/* A key inside a [channel PATTERN] section. */
static int config_set_policy(config_policy *p, const char *key, const char *v, char *err,
                             size_t errlen) {
    int64_t x;
    if (!strcmp(key, "publish"))
        return config_access_of(key, v, CONFIG_PUBLISH_ACCESS, &p->publish, err, errlen);
    if (!strcmp(key, "subscribe"))
        return config_access_of(key, v, CONFIG_SUBSCRIBE_ACCESS, &p->subscribe, err, errlen);
    if (!strcmp(key, "max_body") || !strcmp(key, "publish_burst")) {
        const config_intkey *k = config_intkey_find(key);
        if (config_int_for(k, v, &x, err, errlen))
            return -EINVAL;
        if (key[0] == 'm')
            p->max_body = x;
        else
            p->publish_burst = (int)x;
        return 0;
    }
    if (!strcmp(key, "publish_rate"))
        return config_rate(v, &p->publish_rate_milli, err, errlen);
    int count = !strcmp(key, "retain_messages");
    if (count || !strcmp(key, "retain_seconds")) {
        /* The same bounds as the global keys. */
        if (config_int_for(config_intkey_find(key), v, &x, err, errlen))
            return -EINVAL;
        *(count ? &p->retention.max_messages : &p->retention.max_age_s) = x;
        return 0;
    }
    snprintf(err, errlen, "unknown channel setting '%s'", key);
    return -ENOENT;
}

/* ---- the file ----------------------------------------------------------- */

static char *config_trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Open a [channel PATTERN] section; it starts from the global defaults. */
static int config_open_section(config *c, char *line, char *err, size_t errlen) {
    char *end = strchr(line, ']');
    if (!end || end[1] != '\0' || strncmp(line, "[channel", 8) != 0 ||
        !isspace((unsigned char)line[8])) {
        snprintf(err, errlen, "expected '[channel PATTERN]'");
        return -EINVAL;
    }
    *end = '\0';
    char *pat = config_trim(line + 8);
    if (!*pat || strlen(pat) > MSGLOG_CHANNEL_MAX) {
        snprintf(err, errlen, "channel pattern must be 1-%d bytes", MSGLOG_CHANNEL_MAX);
        return -EINVAL;
    }
    if (c->npolicies >= CONFIG_MAX_POLICIES) {
        snprintf(err, errlen, "too many [channel] sections (at most %d)", CONFIG_MAX_POLICIES);
        return -EINVAL;
    }
    config_policy *p = &c->policies[c->npolicies++];
    memset(p, 0, sizeof *p);
    snprintf(p->pattern, sizeof p->pattern, "%s", pat);
    p->publish = POLICY_INHERIT;
    p->subscribe = POLICY_INHERIT;
    p->retention.max_messages = -1;
    p->retention.max_age_s = -1;
    p->max_body = -1;
    p->publish_rate_milli = -1;
    p->publish_burst = -1;
    p->rule = c->npolicies;
    return 0;
}

static int config_parse_line(config *c, char *line, int *in_section, char *err,
                             size_t errlen) {
    char *s = config_trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    if (*s == '[') {
        *in_section = 1;
        return config_open_section(c, s, err, errlen);
    }
    char *eq = strchr(s, '=');
    if (!eq) {
        snprintf(err, errlen, "expected 'key = value'");
        return -EINVAL;
    }
    *eq = '\0';
    char *key = config_trim(s), *val = config_trim(eq + 1);
    if (*in_section)
        return config_set_policy(&c->policies[c->npolicies - 1], key, val, err, errlen);
    return config_set(c, key, val, err, errlen);
}

int config_parse(config *c, const char *name, const char *text, char *err, size_t errlen) {
    char line[4096], why[1024];
    int lineno = 0, in_section = 0;
    while (*text) {
        size_t n = strcspn(text, "\n");
        lineno++;
        if (n >= sizeof line) {
            snprintf(err, errlen, "%s:%d: line too long", name, lineno);
            return -EINVAL;
        }
        memcpy(line, text, n);
        line[n] = '\0';
        text += n + (text[n] == '\n');
        if (config_parse_line(c, line, &in_section, why, sizeof why)) {
            snprintf(err, errlen, "%s:%d: %s", name, lineno, why);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- environment and loading -------------------------------------------- */

int config_apply_env(config *c, char *const *envp, char *err, size_t errlen) {
    static const char *const keys[] = {
        "db",           "durability",       "listen",           "listen_mode",
        "listen_group", "publish_key",      "cors_origin",      "cors_credentials",
        "publish",      "subscribe",        "token_secret",     "token_algorithms",
        "token_cookie", "client_header",    "publish_rate",     "raw_types",
        "sse",          "streams"};
    char name[64], why[512];
    if (!envp)
        envp = environ;
    for (char *const *e = envp; *e; e++) {
        if (strncmp(*e, "HOLDFAST_", 9) != 0 || !strncmp(*e, "HOLDFAST_CONFIG=", 16))
            continue;
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) - 9 : 0;
        if (!eq || n == 0 || n >= sizeof name)
            continue;
        for (size_t i = 0; i < n; i++)
            name[i] = (char)tolower((unsigned char)(*e)[9 + i]);
        name[n] = '\0';
        int known = 0;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            known |= !strcmp(name, keys[i]);
        known |= config_intkey_find(name) != NULL;
        if (!known)
            continue; /* other HOLDFAST_* variables (tests, wrappers) */
        if (config_set(c, name, eq + 1, why, sizeof why)) {
            snprintf(err, errlen, "environment %.*s: %s", (int)(eq - *e), *e, why);
            return -EINVAL;
        }
    }
    return 0;
}

static int config_read_file(const char *path, char **out, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "cannot read config %s: %s", path, strerror(e));
        return -e;
    }
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    size_t n;
    while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *t = cap < (1u << 20) ? realloc(s, cap *= 2) : NULL;
            if (!t)
                free(s);
            s = t;
        }
    }
    fclose(f);
    if (!s) {
        snprintf(err, errlen, "config %s is too large or memory ran out", path);
        return -ENOMEM;
    }
    s[len] = '\0';
    *out = s;
    return 0;
}

/* holdfast.conf in the binary's directory: from argv0 when it has a
 * directory, else from /proc/self/exe (suEXEC runs a program by its bare
 * name from its own folder).  0 if found, -1 if not. */
static int config_beside_binary(const char *argv0, char *out, size_t cap) {
    char exe[PATH_MAX];
    const char *dir = argv0;
    if (!argv0 || !strchr(argv0, '/')) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            return -1;
        exe[n] = '\0';
        dir = exe;
    }
    const char *slash = strrchr(dir, '/');
    if (snprintf(out, cap, "%.*s/holdfast.conf", (int)(slash - dir), dir) >= (int)cap)
        return -1;
    return access(out, R_OK) == 0 ? 0 : -1;
}

int config_load(config *c, const char *path, const char *argv0, char *err, size_t errlen) {
    char beside[PATH_MAX];
    config_defaults(c);
    if (!path || !*path)
        path = getenv("HOLDFAST_CONFIG");
    if ((!path || !*path) && config_beside_binary(argv0, beside, sizeof beside) == 0)
        path = beside;
    if (path && *path) {
        char *text = NULL;
        int rc = config_read_file(path, &text, err, errlen);
        if (rc)
            return rc;
        rc = config_parse(c, path, text, err, errlen);
        free(text);
        if (rc)
            return rc;
        rc = config_set_str(c->source, sizeof c->source, path, err, errlen);
        if (rc)
            return rc;
    }
    int rc = config_apply_env(c, NULL, err, errlen);
    return rc ? rc : config_check(c, err, errlen);
}

int config_check(const config *c, char *err, size_t errlen) {
    const char *where = *c->source ? c->source : "settings";
    char what[MSGLOG_CHANNEL_MAX + 32] = "";
    if (c->publish == POLICY_TOKEN || c->subscribe == POLICY_TOKEN)
        snprintf(what, sizeof what, "%s = token",
                 c->subscribe == POLICY_TOKEN ? "subscribe" : "publish");
    for (int i = 0; !*what && i < c->npolicies; i++)
        if (c->policies[i].publish == POLICY_TOKEN || c->policies[i].subscribe == POLICY_TOKEN)
            snprintf(what, sizeof what, "[channel %s]", c->policies[i].pattern);
    if (*what && !c->ntoken_secrets) {
        snprintf(err, errlen, "%s: %s needs a token_secret (or HOLDFAST_TOKEN_SECRET) to "
                              "verify tokens with", where, what);
        return -EINVAL;
    }
    if (c->cors_credentials) {
        for (int i = 0; i < c->ncors_origins; i++) {
            if (!strcmp(c->cors_origins[i], "*")) {
                snprintf(err, errlen, "%s: cors_credentials = on needs listed origins, not "
                                      "cors_origin = * (browsers refuse the pair)", where);
                return -EINVAL;
            }
        }
    }
    return 0;
}

int config_publish_closed(const config *c) {
    return c->publish == POLICY_KEY && c->npublish_keys == 0;
}

const char *config_publish_summary(const config *c, char *out, size_t cap) {
    int open_sections = 0;
    for (int i = 0; i < c->npolicies; i++)
        open_sections += c->policies[i].publish == POLICY_ANYONE;
    if (config_publish_closed(c))
        snprintf(out, cap, "publishing is closed: no publish_key is set and publish is not "
                           "'anyone', so publishes get 403%s (set publish_key = SECRET, or "
                           "publish = anyone)",
                 open_sections ? " except on [channel] sections with publish = anyone" : "");
    else if (c->publish == POLICY_ANYONE)
        snprintf(out, cap, "warning: publish = anyone: anyone who can reach this server may "
                           "publish to channels no [channel] section closes");
    else
        snprintf(out, cap, "publishing needs %s%s", c->publish == POLICY_TOKEN
                 ? "a signed token or a publish key" : "a publish key",
                 open_sections ? " (but some [channel] sections say publish = anyone)" : "");
    return out;
}

int config_raw_type_allowed(const config *c, const char *type) {
    if (!type)
        return 0;
    size_t n = strcspn(type, "; \t");
    for (int i = 0; i < c->nraw_types; i++)
        if (strlen(c->raw_types[i]) == n && !strncasecmp(c->raw_types[i], type, n))
            return 1;
    return 0;
}

config_policy config_policy_for(const config *c, const char *channel) {
    config_policy p = {.publish = POLICY_INHERIT,
                       .subscribe = POLICY_INHERIT,
                       .retention = {-1, -1},
                       .max_body = -1,
                       .publish_rate_milli = -1,
                       .publish_burst = -1};
    for (int i = 0; i < c->npolicies; i++) {
        if (fnmatch(c->policies[i].pattern, channel, 0) == 0) {
            p = c->policies[i];
            break;
        }
    }
    if (p.publish == POLICY_INHERIT)
        p.publish = c->publish;
    if (p.subscribe == POLICY_INHERIT)
        p.subscribe = c->subscribe;
    if (p.max_body < 0 || p.max_body > c->max_body)
        p.max_body = c->max_body; /* a section narrows max_body, never widens it */
    if (p.publish_rate_milli < 0)
        p.publish_rate_milli = c->publish_rate_milli;
    if (p.publish_burst < 0)
        p.publish_burst = c->publish_burst;
    if (p.retention.max_messages < 0)
        p.retention.max_messages = c->retention.max_messages;
    if (p.retention.max_age_s < 0)
        p.retention.max_age_s = c->retention.max_age_s;
    return p;
}

msglog_retention config_retention_for(const char *channel, void *ud) {
    return config_policy_for(ud, channel).retention;
}
