/* fcgi_echo.c -- a fake FastCGI responder (libfcgi) for testing the client
 * tools: it echoes what it received, or misbehaves on request.
 *
 *   fcgi_echo [--listen PATH|HOST:PORT] [--threads N] [--lifetime SEC]
 *             [--max-requests N] [--log FILE]
 *
 * Without --listen it serves the socket inherited on fd 0 (spawned by a web
 * server).  Each of N threads (default 4) accepts with its own FCGX_Request.
 * The process exits after --lifetime seconds (default 300, SIGALRM) or after
 * --max-requests answers (default 100000), and at once on SIGTERM/SIGINT.
 *
 * Routes, by PATH_INFO:
 *   /status/NNN   answer with that status
 *   /big/N        N bytes of body (a..z repeated), N <= 16 MiB
 *   /stderr       one line on FCGI_STDERR, then "ok"
 *   /sleep/MS     wait MS milliseconds (<= 60000), then "slept"
 *   /hold/SEC     wait up to SEC seconds (<= 600) for the peer to close the
 *                 connection; log "hold-closed" or answer "held" + log
 *                 "hold-timeout"
 *   /noheader     a body with no CGI header block
 *   /location     a Location: header and no Status: (CGI says 302)
 *   /split        the header block written as several STDOUT records
 *   anything else 200 text/plain: "param NAME=VALUE" lines in the order
 *                 received, "stdin N", then the N bytes of the body
 * The log (--log) gets one line per request: "<route> <PATH_INFO>".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define MAX_BIG (16L * 1024 * 1024)

static int echo_log_fd = -1;
static atomic_long echo_remaining;

static void echo_log(const char *route, const char *path)
{
    if (echo_log_fd < 0)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "%s %s\n", route, path ? path : "");
    if (n > 0)
        (void)!write(echo_log_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void echo_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Read the whole STDIN stream; returns a new buffer (NUL-terminated). */
static char *echo_stdin_read(FCGX_Request *rq, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *p = malloc(cap + 1);
    for (int guard = 0; p && guard < 100000; guard++) {
        if (n == cap) {
            char *q = realloc(p, cap * 2 + 1);
            if (!q)
                break;
            p = q;
            cap *= 2;
        }
        int got = FCGX_GetStr(p + n, (int)(cap - n), rq->in);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    if (p)
        p[n] = '\0';
    *len = n;
    return p;
}

static void echo_default(FCGX_Request *rq, const char *body, size_t blen)
{
    FCGX_FPrintF(rq->out, "Status: 200 OK\r\nContent-Type: text/plain\r\n"
                          "X-Echo: 1\r\n\r\n");
    for (char **e = rq->envp; e && *e; e++)
        FCGX_FPrintF(rq->out, "param %s\n", *e);
    FCGX_FPrintF(rq->out, "stdin %lu\n", (unsigned long)blen); /* no %zu in libfcgi */
    FCGX_PutStr(body, (int)blen, rq->out);
}

static void echo_big(FCGX_Request *rq, long n)
{
    if (n < 0 || n > MAX_BIG)
        n = 0;
    FCGX_FPrintF(rq->out, "Content-Type: text/plain\r\nContent-Length: %ld\r\n\r\n", n);
    char chunk[26 * 160]; /* a whole number of alphabets: byte i is 'a' + i % 26 */
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)('a' + i % 26);
    for (long off = 0; off < n; off += (long)sizeof chunk) {
        long k = n - off < (long)sizeof chunk ? n - off : (long)sizeof chunk;
        FCGX_PutStr(chunk, (int)k, rq->out);
    }
}

/* Wait up to sec seconds for EOF from the peer; 1 if it closed. */
static int echo_peer_closed(FCGX_Request *rq, long sec)
{
    long waited = 0;
    while (waited < sec * 1000) {
        struct pollfd p = {.fd = rq->ipcFd, .events = POLLIN | POLLRDHUP};
        int n = poll(&p, 1, 100);
        waited += 100;
        if (n <= 0)
            continue;
        char c;
        ssize_t r = recv(rq->ipcFd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return 1;
        echo_sleep_ms(100); /* data we don't expect: don't spin on it */
    }
    return 0;
}

static void echo_hold(FCGX_Request *rq, const char *path, long sec)
{
    if (sec < 0 || sec > 600)
        sec = 600;
    if (echo_peer_closed(rq, sec)) {
        echo_log("hold-closed", path);
        return;
    }
    echo_log("hold-timeout", path);
    FCGX_FPrintF(rq->out, "Content-Type: text/plain\r\n\r\nheld\n");
}

static void echo_split(FCGX_Request *rq)
{
    static const char *const pieces[] = {"Sta", "tus: 2", "01 Created\r", "\nX-Sp",
                                         "lit: yes\r\n", "\r", "\nsplit body\n"};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        FCGX_PutS(pieces[i], rq->out);
        FCGX_FFlush(rq->out);
    }
}

/* Answer one accepted request by its PATH_INFO. */
static void echo_answer(FCGX_Request *rq)
{
    const char *path = FCGX_GetParam("PATH_INFO", rq->envp);
    size_t blen;
    char *body = echo_stdin_read(rq, &blen);
    const char *p = path ? path : "";
    long arg = 0;
    if (sscanf(p, "/%*[a-z]/%ld", &arg) != 1)
        arg = 0;
    if (strncmp(p, "/status/", 8) == 0) {
        echo_log("status", p);
        FCGX_FPrintF(rq->out, "Status: %ld Test\r\nContent-Type: text/plain\r\n\r\n"
                              "status %ld\n", arg, arg);
    } else if (strncmp(p, "/big/", 5) == 0) {
        echo_log("big", p);
        echo_big(rq, arg);
    } else if (strcmp(p, "/stderr") == 0) {
        echo_log("stderr", p);
        FCGX_FPrintF(rq->err, "echo-stderr-line\n");
        FCGX_FPrintF(rq->out, "Content-Type: text/plain\r\n\r\nok\n");
    } else if (strncmp(p, "/sleep/", 7) == 0) {
        echo_log("sleep", p);
        echo_sleep_ms(arg < 0 || arg > 60000 ? 60000 : arg);
        FCGX_FPrintF(rq->out, "Content-Type: text/plain\r\n\r\nslept\n");
    } else if (strncmp(p, "/hold/", 6) == 0) {
        echo_log("hold", p);
        echo_hold(rq, p, arg);
    } else if (strcmp(p, "/noheader") == 0) {
        echo_log("noheader", p);
        FCGX_FPrintF(rq->out, "just a body\n");
    } else if (strcmp(p, "/location") == 0) {
        echo_log("location", p);
        FCGX_FPrintF(rq->out, "Location: http://localhost/elsewhere\r\n\r\n");
    } else if (strcmp(p, "/split") == 0) {
        echo_log("split", p);
        echo_split(rq);
    } else {
        echo_log("echo", p);
        echo_default(rq, body ? body : "", body ? blen : 0);
    }
    free(body);
}

static void *echo_thread(void *arg)
{
    int sock = *(int *)arg;
    FCGX_Request rq;
    if (FCGX_InitRequest(&rq, sock, 0) != 0)
        return NULL;
    while (atomic_load(&echo_remaining) > 0) {
        if (FCGX_Accept_r(&rq) < 0)
            break;
        echo_answer(&rq);
        FCGX_Finish_r(&rq);
        if (atomic_fetch_sub(&echo_remaining, 1) <= 1)
            exit(0);
    }
    return NULL;
}

/* Bind and listen on a unix path or HOST:PORT ourselves, for a clean error
 * (FCGX_OpenSocket exits on failure).  Returns the fd or -1. */
static int echo_listen(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    const char *colon = strrchr(addr, ':');
    if (addr[0] == '/' || addr[0] == '.' || !colon) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        if (strlen(addr) >= sizeof un->sun_path)
            return -1;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, addr);
        len = sizeof *un;
        unlink(addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        char host[64];
        size_t hl = (size_t)(colon - addr);
        snprintf(host, sizeof host, "%.*s", (int)hl, addr);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, hl ? host : "127.0.0.1", &s4->sin_addr) != 1)
            return -1;
        len = sizeof *s4;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 1024) < 0) {
        fprintf(stderr, "fcgi_echo: %s: %s\n", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void echo_on_term(int sig)
{
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv)
{
    const char *listen_addr = NULL, *log_path = NULL;
    long threads = 4, lifetime = 300, max_requests = 100000;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v && strcmp(argv[i], "--listen") == 0)
            listen_addr = v;
        else if (v && strcmp(argv[i], "--log") == 0)
            log_path = v;
        else if (v && strcmp(argv[i], "--threads") == 0)
            threads = atol(v);
        else if (v && strcmp(argv[i], "--lifetime") == 0)
            lifetime = atol(v);
        else if (v && strcmp(argv[i], "--max-requests") == 0)
            max_requests = atol(v);
        else {
            fprintf(stderr, "usage: fcgi_echo [--listen PATH|HOST:PORT] [--threads N] "
                            "[--lifetime SEC] [--max-requests N] [--log FILE]\n");
            return 2;
        }
        i++;
    }
    if (threads < 1 || threads > MAX_THREADS || lifetime < 1 || max_requests < 1) {
        fprintf(stderr, "fcgi_echo: bad --threads, --lifetime or --max-requests\n");
        return 2;
    }
    signal(SIGTERM, echo_on_term);
    signal(SIGINT, echo_on_term);
    alarm((unsigned)lifetime);
    atomic_store(&echo_remaining, max_requests);
    if (log_path && (echo_log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                                        0644)) < 0) {
        fprintf(stderr, "fcgi_echo: %s: %s\n", log_path, strerror(errno));
        return 1;
    }
    if (FCGX_Init() != 0)
        return 1;
    int sock = listen_addr ? echo_listen(listen_addr) : 0;
    if (sock < 0)
        return 1;
    pthread_t tid[MAX_THREADS];
    for (long t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, echo_thread, &sock) != 0)
            return 1;
    for (long t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    return 0;
}
