/* pool.c -- the supervisor of `holdfast serve`.
 *
 * It binds the socket once and forks `workers` processes that each run the
 * FastCGI front on it.  Signal handlers only set flags (lighttpd's habit);
 * the loop does the work:
 *   - a worker that dies is replaced, after a back-off that doubles (up to
 *     30 s) while workers keep dying young, so a crash loop cannot spin;
 *   - SIGHUP re-reads the settings and, if they are valid, starts a new
 *     generation of workers before sending SIGTERM to the old one: the old
 *     workers answer their parked subscribers, which re-poll (with their
 *     cursors) into the new ones, so no message is lost;
 *   - SIGTERM/SIGINT: SIGTERM to every worker, wait up to 10 s for them to
 *     answer their parked requests, SIGKILL what remains, exit.
 */
#include "pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fcgi_front.h"

#define POOL_MAX_WORKERS 256
#define POOL_STOP_GRACE_MS 10000
#define POOL_BACKOFF_MAX_MS 30000
#define POOL_YOUNG_MS 2000

static volatile sig_atomic_t pool_stop, pool_reload, pool_child;

static void pool_on_signal(int sig) {
    if (sig == SIGHUP)
        pool_reload = 1;
    else if (sig == SIGCHLD)
        pool_child = 1;
    else
        pool_stop = 1;
}

typedef struct {
    pid_t pid;
    int gen;
    int64_t started_ms;
} pool_slot;

typedef struct {
    pool_slot slot[POOL_MAX_WORKERS * 2]; /* current and retiring generations */
    int gen;
    int listen_fd;
    config *cfg;
    int64_t backoff_ms;
    int64_t respawn_at_ms;
} pool;

static int64_t pool_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pool_load_config(const pool_options *o, config *c) {
    char err[1024];
    struct {
        const char *key, *val;
    } flags[] = {{"db", o->db}, {"listen", o->listen}, {"workers", o->workers},
                 {"threads", o->threads}};
    if (config_load(c, o->config_path, o->argv0, err, sizeof err)) {
        fprintf(stderr, "holdfast: %s\n", err);
        return -1;
    }
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (flags[i].val && config_set(c, flags[i].key, flags[i].val, err, sizeof err)) {
            fprintf(stderr, "holdfast: --%s: %s\n", flags[i].key, err);
            return -1;
        }
    }
    return 0;
}

/* The unix socket path of a listen address, or NULL for TCP. */
static const char *pool_unix_path(const char *addr) {
    if (!strncmp(addr, "unix:", 5))
        return addr + 5;
    return addr[0] == '/' || addr[0] == '.' ? addr : NULL;
}

static int pool_listen_unix(const char *path, char *err, size_t errlen) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    /* A socket left by a previous run would make bind fail; anything else
     * at that path is not ours to remove. */
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int pool_listen_tcp(const char *addr, char *err, size_t errlen) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t hl = (size_t)(colon - addr);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res = NULL;
    if (hl >= sizeof host) {
        snprintf(err, errlen, "bad address %s", addr);
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') { /* [::1]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    int rc = getaddrinfo(hl ? host : "127.0.0.1", colon + 1, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "bad address %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int one = 1, fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int pool_listen(const char *addr, char *err, size_t errlen) {
    if (!addr || !*addr) {
        snprintf(err, errlen, "no address to listen on (--listen or setting 'listen')");
        return -1;
    }
    if (pool_unix_path(addr))
        return pool_listen_unix(pool_unix_path(addr), err, errlen);
    if (!strchr(addr, ':')) {
        snprintf(err, errlen, "bad address %s (want unix:/path, /path or HOST:PORT)", addr);
        return -1;
    }
    return pool_listen_tcp(addr, err, errlen);
}

/* Let the web server's user reach the socket: listen_mode (chmod) and
 * listen_group (chgrp), when set. */
static int pool_socket_access(const config *c, char *err, size_t errlen) {
    const char *path = pool_unix_path(c->listen);
    if (!path)
        return 0;
    if (c->listen_group[0]) {
        struct group *g = getgrnam(c->listen_group);
        if (!g || chown(path, (uid_t)-1, g->gr_gid) != 0) {
            snprintf(err, errlen, "listen_group %.64s for %.256s: %s", c->listen_group, path,
                     g ? strerror(errno) : "no such group");
            return -1;
        }
    }
    if (c->listen_mode >= 0 && chmod(path, (mode_t)c->listen_mode) != 0) {
        snprintf(err, errlen, "listen_mode for %.256s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void pool_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pool_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* Fork one worker of the current generation into a free slot. */
static void pool_spawn(pool *p) {
    pool_slot *s = NULL;
    for (size_t i = 0; i < sizeof p->slot / sizeof p->slot[0] && !s; i++)
        if (p->slot[i].pid == 0)
            s = &p->slot[i];
    if (!s)
        return;
    pid_t pid = fork();
    if (pid < 0) {
        perror("holdfast: fork");
        return;
    }
    if (pid == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGHUP, &sa, NULL);
        sigaction(SIGCHLD, &sa, NULL);
        _exit(fcgi_front_run(p->cfg, p->listen_fd, -1));
    }
    s->pid = pid;
    s->gen = p->gen;
    s->started_ms = pool_now_ms();
}

static int pool_live(const pool *p, int gen) {
    int n = 0;
    for (size_t i = 0; i < sizeof p->slot / sizeof p->slot[0]; i++)
        n += p->slot[i].pid && (gen < 0 || p->slot[i].gen == gen);
    return n;
}

/* Collect dead workers; one that died young raises the back-off. */
static void pool_reap(pool *p) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (size_t i = 0; i < sizeof p->slot / sizeof p->slot[0]; i++) {
            pool_slot *s = &p->slot[i];
            if (s->pid != pid)
                continue;
            if (s->gen == p->gen && !pool_stop) {
                fprintf(stderr, "holdfast: worker %d %s %d; replacing it\n", (int)pid,
                        WIFSIGNALED(status) ? "killed by signal" : "exited with",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                int young = pool_now_ms() - s->started_ms < POOL_YOUNG_MS;
                p->backoff_ms = young ? (p->backoff_ms ? p->backoff_ms * 2 : 100) : 0;
                if (p->backoff_ms > POOL_BACKOFF_MAX_MS)
                    p->backoff_ms = POOL_BACKOFF_MAX_MS;
                p->respawn_at_ms = pool_now_ms() + p->backoff_ms;
            }
            s->pid = 0;
        }
    }
}

static void pool_signal_gen(pool *p, int gen, int sig) {
    for (size_t i = 0; i < sizeof p->slot / sizeof p->slot[0]; i++)
        if (p->slot[i].pid && (gen < 0 || p->slot[i].gen == gen))
            kill(p->slot[i].pid, sig);
}

/* SIGHUP: new settings, new workers, then retire the old ones. */
static void pool_do_reload(pool *p, const pool_options *o) {
    config *c = malloc(sizeof *c);
    if (!c || pool_load_config(o, c)) {
        fprintf(stderr, "holdfast: reload failed; keeping the running settings\n");
        free(c);
        return;
    }
    /* The socket stays: a changed listen address needs a restart. */
    config *old = p->cfg;
    p->cfg = c;
    p->gen++;
    for (int i = 0; i < c->workers; i++)
        pool_spawn(p);
    pool_signal_gen(p, p->gen - 1, SIGTERM);
    pool_signal_gen(p, p->gen - 2, SIGTERM);
    fprintf(stderr, "holdfast: settings reloaded; %d new workers\n", c->workers);
    free(old); /* children have their own copy */
}

static void pool_shutdown(pool *p) {
    int64_t until = pool_now_ms() + POOL_STOP_GRACE_MS;
    pool_signal_gen(p, -1, SIGTERM);
    while (pool_live(p, -1) && pool_now_ms() < until) {
        pool_reap(p);
        if (pool_live(p, -1))
            poll(NULL, 0, 20);
    }
    pool_signal_gen(p, -1, SIGKILL);
    while (pool_live(p, -1) && waitpid(-1, NULL, 0) > 0)
        pool_reap(p);
}

int pool_run(const pool_options *o) {
    char err[1024];
    pool *p = calloc(1, sizeof *p);
    if (!p || !(p->cfg = malloc(sizeof *p->cfg)) || pool_load_config(o, p->cfg))
        return 1;
    if ((p->listen_fd = pool_listen(p->cfg->listen, err, sizeof err)) < 0 ||
        pool_socket_access(p->cfg, err, sizeof err) != 0) {
        fprintf(stderr, "holdfast: %s\n", err);
        return 1;
    }
    pool_signals();
    fprintf(stderr, "holdfast: serving %s on %s with %d workers\n", p->cfg->db,
            p->cfg->listen, p->cfg->workers);
    for (int i = 0; i < p->cfg->workers; i++)
        pool_spawn(p);
    while (!pool_stop) {
        poll(NULL, 0, 200); /* signals interrupt it; the flags say why */
        if (pool_child) {
            pool_child = 0;
            pool_reap(p);
        }
        if (pool_reload) {
            pool_reload = 0;
            pool_do_reload(p, o);
        }
        while (!pool_stop && pool_live(p, p->gen) < p->cfg->workers &&
               pool_now_ms() >= p->respawn_at_ms)
            pool_spawn(p);
    }
    pool_shutdown(p);
    if (pool_unix_path(p->cfg->listen))
        unlink(pool_unix_path(p->cfg->listen));
    close(p->listen_fd);
    free(p->cfg);
    free(p);
    return 0;
}
