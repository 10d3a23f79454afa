/* hf-fcgi.c -- send one HTTP-like request to a FastCGI responder and print
 * the answer: the command-line face of fcgiclient for shell tests.
 *
 *   hf-fcgi [options] ADDR PATH[?QUERY]
 *
 * ADDR is "unix:/path", "/path" or "127.0.0.1:port"; PATH is what the web
 * server would pass as PATH_INFO (e.g. /sub/news?since=3).  Output: the
 * status code on the first line, the CGI headers (Status: left out), a
 * blank line and the body; STDERR records go to our stderr.
 *
 * Options: --header 'Name: value' (repeatable; Content-Type becomes
 * CONTENT_TYPE, others HTTP_*), --data BODY or --data-file FILE|- (POST
 * unless --method), --param NAME=VALUE (set or override any CGI variable,
 * e.g. --param CONTENT_LENGTH= to mimic nginx on a GET), --script-name
 * /mount, --timeout SEC (whole exchange, 0 = none, default 30),
 * --body-only, --status-only, and --hold-and-close SEC: send the request,
 * read nothing, close after SEC seconds (a client that leaves while parked).
 *
 * Exit status: 0 an answer arrived (whatever its HTTP status), 1 usage or
 * local error, 2 connection error (refused, reset, closed before
 * END_REQUEST), 3 timeout, 4 malformed FastCGI answer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "fcgiclient.h"

#define MAX_HEADERS 64
#define MAX_PARAMS 64
#define MAX_BODY (64u * 1024u * 1024u)

enum { EXIT_ANSWER = 0, EXIT_LOCAL = 1, EXIT_CONN = 2, EXIT_TIMEOUT = 3, EXIT_PROTO = 4 };
enum { OUT_FULL, OUT_BODY, OUT_STATUS };

typedef struct {
    double timeout_s;
    const char *headers[MAX_HEADERS];
    size_t nheaders;
    const char *params[MAX_PARAMS]; /* "NAME=VALUE" */
    size_t nparams;
    const char *data;
    const char *data_file;
    const char *method;
    const char *script_name;
    int output;
    double hold_s; /* < 0: normal request */
    const char *addr;
    const char *uri;
} options;

static void usage(FILE *f)
{
    fputs("usage: hf-fcgi [--timeout SEC] [--header 'Name: value']...\n"
          "               [--data BODY | --data-file FILE|-] [--method M]\n"
          "               [--param NAME=VALUE]... [--script-name /mount]\n"
          "               [--body-only | --status-only] [--hold-and-close SEC]\n"
          "               ADDR PATH[?QUERY]\n"
          "ADDR: unix:/path, /path, 127.0.0.1:port\n"
          "--timeout: whole exchange, fractions allowed, 0 = none (default 30)\n"
          "exit: 0 answer, 1 usage/local error, 2 connection error, 3 timeout,\n"
          "      4 malformed FastCGI answer\n",
          f);
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0 || v > 86400)
        return -1;
    *out = v;
    return 0;
}

/* Take the value of option argv[*i]; returns NULL (after a message) if
 * missing. */
static const char *opt_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "hf-fcgi: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int opt_list_add(const char **list, size_t *n, size_t max, const char *v)
{
    if (*n >= max) {
        fprintf(stderr, "hf-fcgi: too many --header/--param (max %zu)\n", max);
        return -1;
    }
    list[(*n)++] = v;
    return 0;
}

/* Handle one option that takes a value; returns 0, or -1 on error. */
static int opt_apply(options *o, const char *name, const char *v)
{
    if (strcmp(name, "--timeout") == 0)
        return parse_seconds(v, &o->timeout_s);
    if (strcmp(name, "--hold-and-close") == 0)
        return parse_seconds(v, &o->hold_s);
    if (strcmp(name, "--header") == 0 || strcmp(name, "-H") == 0)
        return opt_list_add(o->headers, &o->nheaders, MAX_HEADERS, v);
    if (strcmp(name, "--param") == 0)
        return strchr(v, '=') ? opt_list_add(o->params, &o->nparams, MAX_PARAMS, v) : -1;
    if (strcmp(name, "--data") == 0 || strcmp(name, "-d") == 0)
        o->data = v;
    else if (strcmp(name, "--data-file") == 0)
        o->data_file = v;
    else if (strcmp(name, "--method") == 0 || strcmp(name, "-X") == 0)
        o->method = v;
    else if (strcmp(name, "--script-name") == 0)
        o->script_name = v;
    else
        return -1;
    return 0;
}

static int opts_parse(options *o, int argc, char **argv)
{
    static const char *const with_value[] = {
        "--timeout", "--hold-and-close", "--header", "-H", "--param", "--data", "-d",
        "--data-file", "--method", "-X", "--script-name"};
    const char *pos[2];
    int npos = 0, only_pos = 0;
    memset(o, 0, sizeof *o);
    o->timeout_s = 30;
    o->hold_s = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || !a[1]) {
            if (npos == 2)
                return -1;
            pos[npos++] = a;
        } else if (strcmp(a, "--") == 0) {
            only_pos = 1;
        } else if (strcmp(a, "--body-only") == 0 || strcmp(a, "--status-only") == 0) {
            o->output = a[2] == 'b' ? OUT_BODY : OUT_STATUS;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            size_t k = 0, nk = sizeof with_value / sizeof with_value[0];
            while (k < nk && strcmp(a, with_value[k]) != 0)
                k++;
            const char *v = k < nk ? opt_value(argc, argv, &i) : NULL;
            if (!v || opt_apply(o, a, v)) {
                if (v || k == nk)
                    fprintf(stderr, "hf-fcgi: bad option or value: %s\n", a);
                return -1;
            }
        }
    }
    if (npos != 2 || (o->data && o->data_file))
        return -1;
    o->addr = pos[0];
    o->uri = pos[1];
    return 0;
}

/* Read the whole file (or stdin for "-") into a new buffer. */
static char *file_slurp(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);
    while (p) {
        size_t got = fread(p + n, 1, cap - n, f);
        n += got;
        if (got == 0 || n > MAX_BODY)
            break;
        if (n == cap) {
            char *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    if (p && (ferror(f) || n > MAX_BODY)) {
        free(p);
        p = NULL;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return p;
}

/* Build the params: --param overrides first, then the HTTP defaults. */
static int request_params(const options *o, fcgi_params *p, int has_body, size_t blen)
{
    for (size_t i = 0; i < o->nparams; i++) {
        const char *eq = strchr(o->params[i], '=');
        if (fcgi_params_addn(p, o->params[i], (size_t)(eq - o->params[i]), eq + 1,
                             strlen(eq + 1)))
            return -1;
    }
    fcgi_http_request rq = {
        .method = o->method ? o->method : (has_body ? "POST" : "GET"),
        .uri = o->uri,
        .script_name = o->script_name,
        .headers = o->headers,
        .nheaders = o->nheaders,
        .has_body = has_body,
        .body_len = blen,
    };
    return fcgi_params_add_http(p, &rq) ? -1 : 0;
}

static void answer_print(const fcgi_conn *c, int output)
{
    size_t blen, elen;
    const char *body = fcgi_conn_body(c, &blen);
    const char *err = fcgi_conn_stderr(c, &elen);
    if (elen)
        fwrite(err, 1, elen, stderr);
    if (output == OUT_STATUS) {
        printf("%d\n", fcgi_conn_status(c));
        return;
    }
    if (output == OUT_FULL) {
        printf("%d\n", fcgi_conn_status(c));
        for (size_t i = 0; i < fcgi_conn_header_count(c); i++) {
            const char *name, *value;
            fcgi_conn_header_at(c, i, &name, &value);
            if (strcasecmp(name, "Status") != 0)
                printf("%s: %s\n", name, value);
        }
        printf("\n");
    }
    fwrite(body, 1, blen, stdout);
}

/* The --timeout in milliseconds for fcgiclient (-1 = no limit). */
static int timeout_ms(const options *o)
{
    return o->timeout_s > 0 ? (int)(o->timeout_s * 1000) : -1;
}

static int exit_for_error(int rc)
{
    if (rc == -ETIMEDOUT)
        return EXIT_TIMEOUT;
    if (rc == -EPROTO || rc == -EFBIG)
        return EXIT_PROTO;
    if (rc == -ENOMEM || rc == -EINVAL)
        return EXIT_LOCAL;
    return EXIT_CONN;
}

/* Send the request, keep the connection open hold_s seconds without
 * reading, then close it: a client that leaves while parked. */
static int request_hold(const options *o, const fcgi_params *p, const char *body, size_t blen)
{
    fcgi_conn *c = NULL;
    int rc = fcgi_conn_start(&c, o->addr, p, body, blen);
    if (rc == 0)
        rc = fcgi_conn_send_wait(c, timeout_ms(o));
    if (rc) {
        fprintf(stderr, "hf-fcgi: %s: %s\n", o->addr, strerror(-rc));
        fcgi_conn_free(c);
        return exit_for_error(rc);
    }
    struct timespec ts = {.tv_sec = (time_t)o->hold_s,
                          .tv_nsec = (long)((o->hold_s - (double)(time_t)o->hold_s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    fcgi_conn_free(c);
    return EXIT_ANSWER;
}

static int request_run(const options *o, const fcgi_params *p, const char *body, size_t blen)
{
    fcgi_conn *c = NULL;
    int rc = fcgi_call(&c, o->addr, p, body, blen, timeout_ms(o));
    if (rc == 0) {
        answer_print(c, o->output);
        if (fcgi_conn_status(c) == 0)
            fprintf(stderr, "hf-fcgi: warning: no CGI header block in the answer\n");
    } else {
        const char *msg = c ? fcgi_conn_errmsg(c) : strerror(-rc);
        fprintf(stderr, "hf-fcgi: %s: %s\n", o->addr, *msg ? msg : strerror(-rc));
    }
    fcgi_conn_free(c);
    if (fflush(stdout) != 0)
        return EXIT_LOCAL;
    return rc ? exit_for_error(rc) : EXIT_ANSWER;
}

int main(int argc, char **argv)
{
    options o;
    if (opts_parse(&o, argc, argv)) {
        usage(stderr);
        return EXIT_LOCAL;
    }
    char *owned = NULL;
    const char *body = o.data;
    size_t blen = o.data ? strlen(o.data) : 0;
    if (o.data_file) {
        body = owned = file_slurp(o.data_file, &blen);
        if (!owned) {
            fprintf(stderr, "hf-fcgi: cannot read %s (or larger than 64 MiB)\n", o.data_file);
            return EXIT_LOCAL;
        }
    }
    fcgi_params p;
    fcgi_params_init(&p);
    int code = EXIT_LOCAL;
    if (request_params(&o, &p, body != NULL, blen))
        fprintf(stderr, "hf-fcgi: bad header or out of memory\n");
    else if (o.hold_s >= 0)
        code = request_hold(&o, &p, body, blen);
    else
        code = request_run(&o, &p, body, blen);
    fcgi_params_free(&p);
    free(owned);
    return code;
}
