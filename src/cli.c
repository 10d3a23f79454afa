/* cli.c -- the `holdfast` command line over the log: publish, tail, stats,
 * prune; and token, which mints a signed token with the configured secret.  Each subcommand is a function of its argv; errors are one line on
 * stderr ("holdfast: ..."), exit status 1 for runtime errors, 2 for usage
 * (a malformed --type among them). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "jsonenc.h"
#include "clock.h"
#include "msglog.h"
#include "token.h"
#include "wake.h"

#define CLI_MAX_STDIN (1024L * 1024 * 1024)
#define CLI_MAX_CHANNELS 64

static const char cli_usage[] =
    "usage: holdfast COMMAND [OPTIONS]\n"
    "\n"
    "Run with no arguments by a web server, holdfast answers FastCGI requests\n"
    "on the socket it inherits (or one CGI request when that is not a socket).\n"
    "\n"
    "commands:\n"
    "  publish [--db PATH] [--type MIME] [--key K] [--idempotency-key K] CHANNEL [DATA]\n"
    "        append DATA (or standard input) to CHANNEL; prints the new id\n"
    "  tail [--db PATH] [--since N | --last K] [--once] CHANNEL[,CHANNEL...]\n"
    "        print messages as JSON lines, following new ones unless --once\n"
    "  serve [--db PATH] [--config FILE] --listen ADDR [--workers N] [--threads N]\n"
    "        run a pre-forked FastCGI pool on a unix path or HOST:PORT\n"
    "  stats [--db PATH]     head, epoch, messages, channels, bytes (JSON)\n"
    "  prune [--db PATH]     apply the configured retention now\n"
    "  token [--config FILE] --channel PATTERN[,PATTERN...] --ttl SECONDS [--publish]\n"
    "        [--alg HS256|HS384|HS512]\n"
    "        print a token granting subscribe (and with --publish, publish) on\n"
    "        the channels matching the patterns, signed with the first\n"
    "        token_secret (or HOLDFAST_TOKEN_SECRET)\n"
    "\n"
    "common options:\n"
    "  --db PATH        the database (default: setting 'db', HOLDFAST_DB)\n"
    "  --config FILE    settings file (default: HOLDFAST_CONFIG, or\n"
    "                   holdfast.conf beside the binary)\n"
    "  --help, --version\n";

/* Shared state of one subcommand run. */
typedef struct {
    config cfg;
    msglog *log;
    wake *wk;
} cli_ctx;

static int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int cli_error(const char *fmt, ...) {
    va_list ap;
    fputs("holdfast: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int cli_usage_error(const char *what) {
    fprintf(stderr, "holdfast: %s\n(see holdfast --help)\n", what);
    return 2;
}

/* Load settings, apply --db, open the log and (with_wake) the wake file.
 * Only publish creates a database: a mistyped --db for tail or stats must
 * say so, not wait forever on a new empty file. */
static int cli_open(cli_ctx *c, const char *cfgpath, const char *db, const char *argv0,
                    int with_wake, int create) {
    char err[1024];
    memset(c, 0, sizeof *c);
    if (config_load(&c->cfg, cfgpath, argv0, err, sizeof err))
        return cli_error("%s", err);
    if (db && config_set(&c->cfg, "db", db, err, sizeof err))
        return cli_error("--db: %s", err);
    msglog_options o = {.path = c->cfg.db,
                        .durability = c->cfg.durability,
                        .busy_timeout_ms = c->cfg.busy_timeout_ms,
                        .create = create,
                        .retention = config_retention_for,
                        .retention_ud = &c->cfg,
                        .prune_every = c->cfg.prune_every};
    if (msglog_open(&c->log, &o, err, sizeof err))
        return cli_error("%s", err);
    if (with_wake && wake_open(&c->wk, c->cfg.db, err, sizeof err)) {
        msglog_close(c->log);
        return cli_error("%s", err);
    }
    return 0;
}

static void cli_close(cli_ctx *c) {
    wake_close(c->wk);
    msglog_close(c->log);
}

static int cli_parse_i64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Read all of standard input into a malloc'd buffer. */
static int cli_read_stdin(char **out, size_t *len) {
    size_t cap = 8192, n = 0, r;
    char *p = malloc(cap);
    while (p && (r = fread(p + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap) {
            char *q = cap < CLI_MAX_STDIN ? realloc(p, cap * 2) : NULL;
            if (!q)
                free(p);
            p = q;
            cap *= 2;
        }
    }
    if (!p || ferror(stdin)) {
        free(p);
        return -1;
    }
    *out = p;
    *len = n;
    return 0;
}

/* ---- publish ------------------------------------------------------------ */

/* s with control bytes shown as '?', for quoting user input in one error
 * line (a static buffer: one use per message). */
static const char *cli_printable(const char *s) {
    static char out[64];
    size_t i = 0;
    for (; s[i] && i < sizeof out - 1; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[i] = '\0';
    return out;
}

static int cli_publish(int argc, char **argv) {
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},   {"config", required_argument, 0, 'c'},
        {"type", required_argument, 0, 't'}, {"key", required_argument, 0, 'k'},
        {"idempotency-key", required_argument, 0, 'i'}, {0, 0, 0, 0}};
    const char *db = NULL, *cfg = NULL;
    msglog_entry e = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': db = optarg; break;
        case 'c': cfg = optarg; break;
        case 't': e.type = optarg; break;
        case 'k': e.key = optarg; break;
        case 'i': e.idem = optarg; break;
        default: return cli_usage_error("publish: unknown option");
        }
    }
    if (optind >= argc || argc - optind > 2)
        return cli_usage_error("publish takes CHANNEL [DATA]");
    if (e.type && !msglog_type_valid(e.type)) {
        fprintf(stderr, "holdfast: --type: '%.*s%s' is not a media type (type/subtype, then"
                        " ; name=value parameters; at most %d bytes of visible ASCII)\n",
                60, cli_printable(e.type), strlen(e.type) > 60 ? "..." : "", MSGLOG_TYPE_MAX);
        return 2;
    }
    e.channel = argv[optind];
    if (!msglog_channel_valid(e.channel, strlen(e.channel)))
        return cli_error("invalid channel name '%s' (1-%d bytes of A-Za-z0-9._:@-)", e.channel,
                         MSGLOG_CHANNEL_MAX);
    char *data = NULL;
    if (optind + 1 < argc) {
        e.body = argv[optind + 1];
        e.len = strlen(argv[optind + 1]);
    } else if (cli_read_stdin(&data, &e.len)) {
        return cli_error("cannot read the message from standard input");
    } else {
        e.body = data;
    }
    int rc = 1;
    cli_ctx c;
    msglog_ack ack;
    if (e.type && jsonenc_type_is_json(e.type) && !jsonenc_valid(e.body, e.len))
        cli_error("the message is not valid JSON (type %s)", e.type);
    else if (cli_open(&c, cfg, db, argv[0], 1, 1) == 0) {
        if (msglog_append(c.log, &e, &ack))
            cli_error("%s", msglog_errmsg(c.log));
        else {
            wake_publish(c.wk, ack.id);
            printf("%lld\n", (long long)ack.id);
            rc = 0;
        }
        cli_close(&c);
    }
    free(data);
    return rc;
}

/* ---- tail --------------------------------------------------------------- */

/* Split "a,b,c" in place; validates every name. */
static int cli_split_channels(char *list, const char **out, size_t *n) {
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == CLI_MAX_CHANNELS)
            return cli_error("too many channels (at most %d)", CLI_MAX_CHANNELS);
        if (!msglog_channel_valid(tok, strlen(tok)))
            return cli_error("invalid channel name '%s' (1-%d bytes of A-Za-z0-9._:@-)", tok,
                             MSGLOG_CHANNEL_MAX);
        out[(*n)++] = tok;
    }
    return *n ? 0 : cli_error("no channel given");
}

/* Print a batch as JSON lines; reports gaps and resets on stderr. */
static int cli_print_batch(const msglog_batch *b, buf *out) {
    if (b->reset)
        fprintf(stderr, "holdfast: the log was reset or replaced; following from id %lld\n",
                (long long)b->head);
    if (b->gap)
        fprintf(stderr, "holdfast: gap: messages were pruned; oldest held is %lld\n",
                (long long)b->oldest);
    for (size_t i = 0; i < b->n; i++) {
        buf_reset(out);
        jsonenc_message(out, &b->msgs[i]);
        buf_putc(out, '\n');
        if (out->oom || fwrite(out->p, 1, out->len, stdout) != out->len)
            return -1;
    }
    return fflush(stdout) == 0 ? 0 : -1;
}

/* Read and print until caught up; updates the query's cursor and epoch. */
static int cli_tail_drain(cli_ctx *c, msglog_query *q, char *epoch, buf *out) {
    msglog_batch b;
    do {
        if (msglog_read(c->log, q, &b))
            return cli_error("%s", msglog_errmsg(c->log));
        int rc = cli_print_batch(&b, out);
        q->since = b.cursor;
        q->last = 0;
        memcpy(epoch, b.epoch, sizeof b.epoch);
        q->epoch = epoch;
        msglog_batch_free(&b);
        if (rc)
            return 1; /* stdout closed: the reader left */
    } while (b.more);
    return 0;
}

static int cli_tail_follow(cli_ctx *c, msglog_query *q, char *epoch, buf *out) {
    for (;;) {
        uint32_t seq = wake_seq(c->wk);
        int rc = cli_tail_drain(c, q, epoch, out);
        if (rc)
            return rc;
        /* Sleep until a publisher bumps the wake file, or the slow timer
         * fires so that rows written by other programs are found. */
        while (wake_wait(c->wk, seq, c->cfg.data_version_ms) == -ETIMEDOUT &&
               msglog_changed(c->log) == 0)
            ;
    }
}

static int cli_tail(int argc, char **argv) {
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},   {"config", required_argument, 0, 'c'},
        {"since", required_argument, 0, 's'}, {"last", required_argument, 0, 'l'},
        {"once", no_argument, 0, 'o'},        {0, 0, 0, 0}};
    const char *db = NULL, *cfg = NULL, *chans[CLI_MAX_CHANNELS];
    msglog_query q = {.since = -1};
    int ch, once = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': db = optarg; break;
        case 'c': cfg = optarg; break;
        case 'o': once = 1; break;
        case 's':
            if (cli_parse_i64(optarg, &q.since))
                return cli_usage_error("--since takes a cursor (an integer >= 0)");
            break;
        case 'l':
            if (cli_parse_i64(optarg, &q.last))
                return cli_usage_error("--last takes a count (an integer >= 0)");
            break;
        default: return cli_usage_error("tail: unknown option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("tail takes one CHANNEL[,CHANNEL...] argument");
    if (q.since >= 0 && q.last > 0)
        return cli_usage_error("--since and --last exclude each other");
    if (cli_split_channels(argv[optind], chans, &q.nchannels))
        return 1;
    q.channels = chans;
    cli_ctx c;
    if (cli_open(&c, cfg, db, argv[0], !once, 0))
        return 1;
    char epoch[MSGLOG_EPOCH_LEN + 1];
    buf out;
    buf_init(&out);
    q.limit = (size_t)c.cfg.batch_limit;
    int rc = once ? cli_tail_drain(&c, &q, epoch, &out) : cli_tail_follow(&c, &q, epoch, &out);
    buf_free(&out);
    cli_close(&c);
    return rc;
}

/* ---- stats and prune ---------------------------------------------------- */

/* Parse the options stats and prune share: --db, --config. */
static int cli_simple_opts(int argc, char **argv, const char **db, const char **cfg) {
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},
                                         {"config", required_argument, 0, 'c'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'd')
            *db = optarg;
        else if (ch == 'c')
            *cfg = optarg;
        else
            return cli_usage_error("unknown option");
    }
    return optind == argc ? 0 : cli_usage_error("unexpected argument");
}

static int cli_stats(int argc, char **argv) {
    const char *db = NULL, *cfg = NULL;
    cli_ctx c;
    msglog_stats st;
    int rc = cli_simple_opts(argc, argv, &db, &cfg);
    if (rc || (rc = cli_open(&c, cfg, db, argv[0], 0, 0)))
        return rc;
    if (msglog_stats_get(c.log, &st))
        rc = cli_error("%s", msglog_errmsg(c.log));
    else
        printf("{\"head\":%lld,\"epoch\":\"%s\",\"messages\":%lld,\"channels\":%lld,"
               "\"bytes\":%lld}\n",
               (long long)st.head, st.epoch, (long long)st.messages, (long long)st.channels,
               (long long)st.bytes);
    cli_close(&c);
    return rc;
}

static int cli_prune(int argc, char **argv) {
    const char *db = NULL, *cfg = NULL;
    cli_ctx c;
    int64_t deleted = 0;
    int rc = cli_simple_opts(argc, argv, &db, &cfg);
    if (rc || (rc = cli_open(&c, cfg, db, argv[0], 0, 0)))
        return rc;
    if (msglog_prune(c.log, 0, &deleted))
        rc = cli_error("%s", msglog_errmsg(c.log));
    else
        printf("{\"deleted\":%lld}\n", (long long)deleted);
    cli_close(&c);
    return rc;
}

/* ---- token -------------------------------------------------------------- */

static int cli_token(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"channel", required_argument, 0, 'n'},
        {"ttl", required_argument, 0, 't'},    {"publish", no_argument, 0, 'p'},
        {"alg", required_argument, 0, 'a'},    {0, 0, 0, 0}};
    const char *cfgpath = NULL, *alg_name = NULL;
    char *channels = NULL, err[1024], out[TOKEN_MAX + 1];
    int64_t ttl = -1;
    int publish = 0, ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': cfgpath = optarg; break;
        case 'n': channels = optarg; break;
        case 'p': publish = 1; break;
        case 'a': alg_name = optarg; break;
        case 't':
            if (cli_parse_i64(optarg, &ttl) || ttl < 1 || ttl > 366LL * 86400)
                return cli_usage_error("--ttl: whole seconds, 1 to 31622400 (a year)");
            break;
        default: return cli_usage_error("token: unknown option");
        }
    }
    if (!channels || ttl < 0 || optind != argc)
        return cli_usage_error("token --channel PATTERN[,PATTERN...] --ttl SECONDS [--publish]");
    config cfg;
    if (config_load(&cfg, cfgpath, argv[0], err, sizeof err))
        return cli_error("%s", err);
    if (!cfg.ntoken_secrets)
        return cli_error("no token_secret is configured (set token_secret in the config file, "
                         "or HOLDFAST_TOKEN_SECRET)");
    token_alg alg = alg_name ? token_alg_parse(alg_name) : 0;
    if (alg_name && !alg)
        return cli_usage_error("--alg: HS256, HS384 or HS512");
    if (!alg) /* the first the server accepts, HS256 before HS384 */
        alg = cfg.token_algs & TOKEN_ALG_HS256 ? TOKEN_ALG_HS256
              : cfg.token_algs & TOKEN_ALG_HS384 ? TOKEN_ALG_HS384 : TOKEN_ALG_HS512;
    if (!(cfg.token_algs & (unsigned)alg))
        return cli_error("--alg %s: the server's token_algorithms do not accept it", alg_name);
    const char *pats[TOKEN_MAX_PATTERNS];
    int n = 0;
    for (char *save = NULL, *p = strtok_r(channels, ",", &save); p;
         p = strtok_r(NULL, ",", &save)) {
        if (n == TOKEN_MAX_PATTERNS || strlen(p) > TOKEN_PATTERN_MAX)
            return cli_usage_error("--channel: at most 32 patterns of at most 128 bytes");
        pats[n++] = p;
    }
    if (!n)
        return cli_usage_error("--channel: name at least one channel or pattern");
    if (token_mint(cfg.token_secrets[0], alg, pats, n, publish, clock_real_ms() / 1000, ttl, out,
                   sizeof out) < 0)
        return cli_error("the token does not fit in %d bytes", TOKEN_MAX);
    puts(out);
    return 0;
}

int cli_main(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"publish", cli_publish}, {"tail", cli_tail}, {"stats", cli_stats},
                {"prune", cli_prune}, {"token", cli_token}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(cli_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("holdfast %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name))
            continue;
        /* getopt sees the subcommand as argv[0]; keep the real argv[0] for
         * finding holdfast.conf beside the binary. */
        argv[1] = argv[0];
        optind = 1;
        return cmds[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "holdfast: unknown command '%s'\n(see holdfast --help)\n", argv[1]);
    return 2;
}
