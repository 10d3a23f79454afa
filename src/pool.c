/* pool.c -- the supervisor of `holdfast serve`.
 *
 * It binds the socket once and forks `workers` processes that each run the
 * FastCGI front on it.  Signal handlers only set flags (lighttpd's habit);
 * the loop does the work.  SIGTERM, SIGINT, SIGHUP, SIGCHLD and SIGUSR1
 * stay blocked in the supervisor except while it sleeps in ppoll(), so no
 * signal falls between a look at the flags and the sleep, and every worker
 * is forked with them blocked: it resets SIGHUP and SIGCHLD and leaves
 * SIGTERM/SIGINT/SIGUSR1 blocked until fcgi_front_run() has installed its
 * own handlers, so a SIGTERM sent the moment a worker exists is not lost.
 *
 *   - Each worker has a seat, refilled when its worker dies.  Only a worker
 *     that fails on its own -- killed by a crash signal (SIGSEGV, SIGBUS,
 *     SIGABRT, SIGILL, SIGFPE, SIGSYS, SIGTRAP) or exiting non-zero within
 *     POOL_YOUNG_MS of its start -- makes its seat wait before the next
 *     one: 100 ms, doubling while it keeps failing young, up to 30 s.  A
 *     worker stopped or killed from outside (SIGKILL, SIGTERM, the OOM
 *     killer) is replaced at once.  Whenever no worker of the serving
 *     generation is alive, one seat is refilled at once whatever its
 *     back-off (at most every POOL_LAST_RESORT_MS, so a worker that cannot
 *     start does not spin).  A failed fork backs its seat off, up to 1 s.
 *   - Each worker has a pipe and writes one byte to it once it serves
 *     normally (fcgi_front_run's ready_fd).  SIGHUP re-reads the settings;
 *     if they are valid it starts a new generation beside the running one
 *     and, only once every new worker is ready, sends SIGTERM to the old
 *     one: the old workers answer their parked subscribers, which re-poll
 *     (with their cursors) into the new ones, so no message is lost.  If
 *     the new generation is not ready within POOL_READY_MS, it is stopped
 *     and the old one keeps serving with the settings it was started with.
 *     Invalid settings change nothing.  A SIGHUP during a reload replaces
 *     that reload.  The socket stays: a new `listen` needs a restart.
 *   - Workers ask for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG):
 *     a killed supervisor leaves no orphans serving on, and a new one binds
 *     the socket again.
 *   - A worker sent SIGTERM (retired by a reload) that still runs
 *     POOL_STOP_GRACE_MS later is killed.
 *   - SIGTERM/SIGINT: SIGTERM to every worker, wait up to
 *     POOL_STOP_GRACE_MS for them to answer their parked requests, SIGKILL
 *     what remains, remove the socket file (if it is still ours), exit.
 */
#include "pool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "clock.h"
#include "fcgi_front.h"

#define POOL_MAX_WORKERS 256
#define POOL_SLOTS (POOL_MAX_WORKERS * 4) /* serving, starting, and stopping workers */
#define POOL_STOP_GRACE_MS 10000
#define POOL_KILL_WAIT_MS 2000     /* after SIGKILL, at shutdown */
#define POOL_BACKOFF_MIN_MS 100
#define POOL_BACKOFF_MAX_MS 30000
#define POOL_FORK_RETRY_MAX_MS 1000
#define POOL_YOUNG_MS 2000
#define POOL_LAST_RESORT_MS 200
#define POOL_READY_MS 10000        /* a reload's new workers must be ready by then */
#define POOL_TICK_MS 1000

static volatile sig_atomic_t pool_stop, pool_reload, pool_child;

static void pool_on_signal(int sig) {
    if (sig == SIGHUP)
        pool_reload = 1;
    else if (sig == SIGCHLD)
        pool_child = 1;
    else
        pool_stop = 1;
}

/* A seat of a generation (or a stopping worker that no longer has one). */
typedef struct {
    pid_t pid;             /* 0: none (the seat waits for respawn_at_ms) */
    int gen;               /* 0: the entry is free */
    int ready;             /* its ready byte arrived */
    int ready_fd;          /* read end of its ready pipe, -1 when closed */
    int killed;            /* SIGKILL sent */
    int64_t started_ms;
    int64_t backoff_ms;    /* this seat's back-off, 0 while it is healthy */
    int64_t respawn_at_ms;
    int64_t term_ms;       /* when it was sent SIGTERM, 0 if not */
} pool_slot;

typedef struct {
    pool_slot slot[POOL_SLOTS];
    int gen;               /* the serving generation */
    config *cfg;           /* the settings it was started with */
    int next_gen;          /* a reload's generation, not yet ready; 0 = none */
    config *next_cfg;
    int64_t next_deadline_ms;
    int gens;              /* generations made so far */
    int listen_fd;
    char listen_addr[CONFIG_STR]; /* what was bound: a reload cannot move it */
    dev_t sock_dev;        /* the unix socket file we made, to remove only it */
    ino_t sock_ino;
    int have_sock;
    int64_t last_resort_ms;
    pid_t self;
} pool;

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
static int pool_socket_access(const config *c, const char *addr, char *err, size_t errlen) {
    const char *path = pool_unix_path(addr);
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

static void pool_slot_free(pool_slot *s) {
    if (s->ready_fd >= 0)
        close(s->ready_fd);
    memset(s, 0, sizeof *s);
    s->ready_fd = -1;
}

/* The generations whose seats are kept filled: serving and starting. */
static int pool_kept(const pool *p, int gen) {
    return gen && (gen == p->gen || gen == p->next_gen);
}

static int pool_live(const pool *p, int gen) {
    int n = 0;
    for (size_t i = 0; i < POOL_SLOTS; i++)
        n += p->slot[i].pid && (gen < 0 || p->slot[i].gen == gen);
    return n;
}

/* n empty seats of generation gen; -1 (and none) if there is no room. */
static int pool_add_seats(pool *p, int gen, int n) {
    int free_slots = 0;
    for (size_t i = 0; i < POOL_SLOTS; i++)
        free_slots += p->slot[i].gen == 0;
    if (free_slots < n)
        return -1;
    for (size_t i = 0; i < POOL_SLOTS && n > 0; i++) {
        if (p->slot[i].gen == 0) {
            p->slot[i].gen = gen;
            n--;
        }
    }
    return 0;
}

/* The forked worker: never returns. */
static void pool_worker(const pool *p, const config *cfg, int ready_rd, int ready_wr,
                        int patient) {
    struct sigaction sa;
    sigset_t set;
    /* The other workers' pipes are not this one's business. */
    close(ready_rd);
    for (size_t i = 0; i < POOL_SLOTS; i++)
        if (p->slot[i].ready_fd >= 0)
            close(p->slot[i].ready_fd);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* delivered once fcgi_front_run unblocks it */
#endif
    if (getppid() != p->self)
        _exit(0); /* the supervisor died before we asked: nothing was accepted yet */
    /* SIGTERM, SIGINT and SIGUSR1 stay blocked (they still have the
     * supervisor's handler): fcgi_front_run unblocks them once its own are
     * in place. */
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    _exit(fcgi_front_run(cfg, p->listen_fd, ready_wr, patient));
}

/* Fill seat s with a new worker running cfg (signals are blocked here, see
 * the top).  A failed fork backs the seat off. */
static void pool_spawn(pool *p, pool_slot *s, const config *cfg) {
    int fds[2] = {-1, -1};
    int64_t now = clock_mono_ms();
    pid_t pid = -1;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0 && (pid = fork()) == 0)
        pool_worker(p, cfg, fds[0], fds[1], s->gen == p->next_gen); /* a reload's: wait */
    if (pid < 0) {
        int e = errno;
        if (fds[0] >= 0) {
            close(fds[0]);
            close(fds[1]);
        }
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : POOL_BACKOFF_MIN_MS;
        if (s->backoff_ms > POOL_FORK_RETRY_MAX_MS)
            s->backoff_ms = POOL_FORK_RETRY_MAX_MS;
        s->respawn_at_ms = now + s->backoff_ms;
        fprintf(stderr, "holdfast: cannot start a worker: %s; trying again in %lld ms\n",
                strerror(e), (long long)s->backoff_ms);
        return;
    }
    close(fds[1]);
    s->pid = pid;
    s->ready = 0;
    s->ready_fd = fds[0];
    s->killed = 0;
    s->term_ms = 0;
    s->started_ms = now;
}

static pool_slot *pool_find(pool *p, pid_t pid) {
    for (size_t i = 0; i < POOL_SLOTS; i++)
        if (p->slot[i].pid == pid)
            return &p->slot[i];
    return NULL;
}

/* A signal by which a process kills itself (a bug), rather than one sent
 * from outside to stop it. */
static int pool_crash_signal(int sig) {
    switch (sig) {
    case SIGSEGV: case SIGBUS: case SIGABRT: case SIGILL: case SIGFPE: case SIGSYS:
    case SIGTRAP:
        return 1;
    default:
        return 0;
    }
}

/* Collect dead workers.  A kept seat waits for its back-off if the worker
 * failed on its own, else it is refilled at once; other entries are freed. */
static void pool_reap(pool *p) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        pool_slot *s = pool_find(p, pid);
        int64_t now = clock_mono_ms();
        if (!s)
            continue;
        if (pool_stop || !pool_kept(p, s->gen)) {
            pool_slot_free(s);
            continue;
        }
        int young = now - s->started_ms < POOL_YOUNG_MS;
        int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        int own = sig ? pool_crash_signal(sig) : WEXITSTATUS(status) != 0 && young;
        if (!young)
            s->backoff_ms = 0; /* it had been healthy: start the sequence over */
        if (own) {
            s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : POOL_BACKOFF_MIN_MS;
            if (s->backoff_ms > POOL_BACKOFF_MAX_MS)
                s->backoff_ms = POOL_BACKOFF_MAX_MS;
        }
        s->respawn_at_ms = now + (own ? s->backoff_ms : 0);
        if (s->ready_fd >= 0)
            close(s->ready_fd);
        s->ready_fd = -1;
        s->pid = 0;
        s->ready = 0;
        if (own)
            fprintf(stderr, "holdfast: worker %d %s %d; replacing it in %lld ms\n", (int)pid,
                    sig ? "killed by signal" : "exited with", sig ? sig : WEXITSTATUS(status),
                    (long long)s->backoff_ms);
        else
            fprintf(stderr, "holdfast: worker %d %s %d; replacing it\n", (int)pid,
                    sig ? "killed by signal" : "exited with", sig ? sig : WEXITSTATUS(status));
    }
}

/* Take the ready bytes that arrived (fds[i] watches slot idx[i]). */
static void pool_take_ready(pool *p, const struct pollfd *fds, const size_t *idx, size_t n) {
    for (size_t i = 0; i < n; i++) {
        pool_slot *s = &p->slot[idx[i]];
        char c;
        if (!fds[i].revents || s->ready_fd != fds[i].fd)
            continue;
        ssize_t r = read(s->ready_fd, &c, 1);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        s->ready = r == 1;
        close(s->ready_fd); /* its byte, or its end: either way nothing more comes */
        s->ready_fd = -1;
    }
}

/* SIGTERM to every worker of gen (they then have no seat to be refilled). */
static void pool_retire(pool *p, int gen) {
    int64_t now = clock_mono_ms();
    for (size_t i = 0; i < POOL_SLOTS; i++) {
        pool_slot *s = &p->slot[i];
        if (s->gen != gen)
            continue;
        if (!s->pid) {
            pool_slot_free(s);
            continue;
        }
        kill(s->pid, SIGTERM);
        s->term_ms = now;
    }
}

/* 1 if gen has seats and every one holds a worker that said it is ready. */
static int pool_gen_ready(const pool *p, int gen) {
    int seats = 0;
    for (size_t i = 0; i < POOL_SLOTS; i++) {
        const pool_slot *s = &p->slot[i];
        if (s->gen != gen)
            continue;
        if (!s->pid || !s->ready)
            return 0;
        seats++;
    }
    return seats > 0;
}

/* The reload's workers are all ready: they serve, the old ones stop. */
static void pool_promote(pool *p) {
    char err[1024];
    int old = p->gen;
    free(p->cfg); /* children have their own copy */
    p->gen = p->next_gen;
    p->cfg = p->next_cfg;
    p->next_gen = 0;
    p->next_cfg = NULL;
    pool_retire(p, old);
    if (pool_socket_access(p->cfg, p->listen_addr, err, sizeof err) != 0)
        fprintf(stderr, "holdfast: %s\n", err);
    fprintf(stderr, "holdfast: settings reloaded; %d new workers ready, the old ones stop\n",
            p->cfg->workers);
}

static void pool_abandon(pool *p, const char *why) {
    pool_retire(p, p->next_gen);
    free(p->next_cfg);
    p->next_gen = 0;
    p->next_cfg = NULL;
    fprintf(stderr, "holdfast: reload failed: %s; keeping the running ones\n", why);
}

/* SIGHUP: new settings, and a new generation that takes over once ready. */
static void pool_do_reload(pool *p, const pool_options *o) {
    config *c = malloc(sizeof *c);
    if (!c || pool_load_config(o, c)) {
        fprintf(stderr, "holdfast: reload failed; keeping the running settings\n");
        free(c);
        return;
    }
    if (strcmp(c->listen, p->listen_addr) != 0) {
        fprintf(stderr, "holdfast: reload: listen stays %s (a new address needs a restart)\n",
                p->listen_addr);
        snprintf(c->listen, sizeof c->listen, "%s", p->listen_addr);
    }
    if (p->next_gen)
        pool_abandon(p, "a newer SIGHUP replaces it");
    if (pool_add_seats(p, p->gens + 1, c->workers) != 0) {
        fprintf(stderr, "holdfast: reload failed: too many workers are still stopping; "
                        "keeping the running ones\n");
        free(c);
        return;
    }
    p->next_gen = ++p->gens;
    p->next_cfg = c;
    p->next_deadline_ms = clock_mono_ms() + POOL_READY_MS;
    fprintf(stderr, "holdfast: reloading: starting %d new workers\n", c->workers);
}

/* The loop's work besides signals: finish or give up a reload, kill what
 * ignored its SIGTERM, fill seats.  Returns how long the loop may sleep. */
static int pool_tick(pool *p) {
    int64_t now = clock_mono_ms(), next = now + POOL_TICK_MS;
    int tried = 0; /* a seat of the serving generation was just filled (or tried) */
    if (p->next_gen && pool_gen_ready(p, p->next_gen))
        pool_promote(p);
    else if (p->next_gen && now >= p->next_deadline_ms)
        pool_abandon(p, "new workers did not become ready (see above)");
    if (p->next_gen && p->next_deadline_ms < next)
        next = p->next_deadline_ms;
    for (size_t i = 0; i < POOL_SLOTS; i++) {
        pool_slot *s = &p->slot[i];
        if (!s->pid || !s->term_ms || s->killed)
            continue;
        if (now - s->term_ms >= POOL_STOP_GRACE_MS) {
            fprintf(stderr, "holdfast: worker %d still runs %d s after SIGTERM; killing it\n",
                    (int)s->pid, POOL_STOP_GRACE_MS / 1000);
            kill(s->pid, SIGKILL);
            s->killed = 1;
        } else if (s->term_ms + POOL_STOP_GRACE_MS < next) {
            next = s->term_ms + POOL_STOP_GRACE_MS;
        }
    }
    for (size_t i = 0; i < POOL_SLOTS; i++) {
        pool_slot *s = &p->slot[i];
        if (!pool_kept(p, s->gen) || s->pid)
            continue;
        if (now >= s->respawn_at_ms) {
            pool_spawn(p, s, s->gen == p->gen ? p->cfg : p->next_cfg);
            tried |= s->gen == p->gen;
        }
        if (!s->pid && s->respawn_at_ms < next)
            next = s->respawn_at_ms;
    }
    /* Never a pool without a serving worker for longer than a respawn. */
    if (pool_live(p, p->gen) == 0 && !tried) {
        pool_slot *first = NULL;
        for (size_t i = 0; i < POOL_SLOTS; i++) {
            pool_slot *s = &p->slot[i];
            if (s->gen == p->gen && !s->pid && (!first || s->respawn_at_ms < first->respawn_at_ms))
                first = s;
        }
        if (first && now >= p->last_resort_ms) {
            fprintf(stderr, "holdfast: no worker is running; starting one now despite the "
                            "back-off\n");
            p->last_resort_ms = now + POOL_LAST_RESORT_MS;
            pool_spawn(p, first, p->cfg);
        }
        if (pool_live(p, p->gen) == 0 && p->last_resort_ms > now && p->last_resort_ms < next)
            next = p->last_resort_ms;
    }
    return next > now ? (int)(next - now) : 0;
}

static void pool_shutdown(pool *p) {
    int64_t until = clock_mono_ms() + POOL_STOP_GRACE_MS;
    for (size_t i = 0; i < POOL_SLOTS; i++)
        if (p->slot[i].pid)
            kill(p->slot[i].pid, SIGTERM);
    while (pool_live(p, -1) && clock_mono_ms() < until) {
        pool_reap(p);
        if (pool_live(p, -1))
            poll(NULL, 0, 20);
    }
    if (pool_live(p, -1)) {
        fprintf(stderr, "holdfast: %d workers still run %d s after SIGTERM; killing them\n",
                pool_live(p, -1), POOL_STOP_GRACE_MS / 1000);
        for (size_t i = 0; i < POOL_SLOTS; i++)
            if (p->slot[i].pid)
                kill(p->slot[i].pid, SIGKILL);
    }
    until = clock_mono_ms() + POOL_KILL_WAIT_MS;
    while (pool_live(p, -1) && clock_mono_ms() < until) {
        pool_reap(p);
        if (pool_live(p, -1))
            poll(NULL, 0, 20);
    }
    for (size_t i = 0; i < POOL_SLOTS; i++)
        pool_slot_free(&p->slot[i]);
}

/* Remove the socket file at exit, unless it is no longer the one we made
 * (a newer server may have bound the path meanwhile). */
static void pool_unlink_socket(const pool *p) {
    const char *path = pool_unix_path(p->listen_addr);
    struct stat st;
    if (path && p->have_sock && stat(path, &st) == 0 && st.st_dev == p->sock_dev &&
        st.st_ino == p->sock_ino)
        unlink(path);
}

static void pool_free(pool *p) {
    if (!p)
        return;
    free(p->cfg);
    free(p->next_cfg);
    free(p);
}

int pool_run(const pool_options *o) {
    char err[1024];
    struct stat st;
    sigset_t block, saved, wait_mask;
    pool *p = calloc(1, sizeof *p);
    if (!p || !(p->cfg = malloc(sizeof *p->cfg)) || pool_load_config(o, p->cfg)) {
        pool_free(p);
        return 1;
    }
    for (size_t i = 0; i < POOL_SLOTS; i++)
        p->slot[i].ready_fd = -1;
    snprintf(p->listen_addr, sizeof p->listen_addr, "%s", p->cfg->listen);
    if ((p->listen_fd = pool_listen(p->listen_addr, err, sizeof err)) < 0 ||
        pool_socket_access(p->cfg, p->listen_addr, err, sizeof err) != 0) {
        fprintf(stderr, "holdfast: %s\n", err);
        if (p->listen_fd >= 0)
            close(p->listen_fd);
        pool_free(p);
        return 1;
    }
    if (pool_unix_path(p->listen_addr) && stat(pool_unix_path(p->listen_addr), &st) == 0) {
        p->sock_dev = st.st_dev;
        p->sock_ino = st.st_ino;
        p->have_sock = 1;
    }
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &saved);
    wait_mask = saved; /* what ppoll lets in: ours, whatever we inherited */
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    sigdelset(&wait_mask, SIGHUP);
    sigdelset(&wait_mask, SIGCHLD);
    pool_signals();
    p->self = getpid();
    char access[256];
    fprintf(stderr, "holdfast: serving %s on %s with %d workers\nholdfast: %s\n", p->cfg->db,
            p->listen_addr, p->cfg->workers,
            config_publish_summary(p->cfg, access, sizeof access));
    p->gen = ++p->gens;
    pool_add_seats(p, p->gen, p->cfg->workers);
    while (!pool_stop) {
        struct pollfd fds[POOL_SLOTS];
        size_t idx[POOL_SLOTS], n = 0;
        int ms = pool_tick(p);
        for (size_t i = 0; i < POOL_SLOTS; i++) {
            if (p->slot[i].ready_fd >= 0) {
                fds[n] = (struct pollfd){p->slot[i].ready_fd, POLLIN, 0};
                idx[n++] = i;
            }
        }
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        if (ppoll(fds, (nfds_t)n, &ts, &wait_mask) > 0) /* signals interrupt it */
            pool_take_ready(p, fds, idx, n);
        if (pool_child) {
            pool_child = 0;
            pool_reap(p);
        }
        if (pool_reload && !pool_stop) {
            pool_reload = 0;
            pool_do_reload(p, o);
        }
    }
    pool_shutdown(p);
    pool_unlink_socket(p);
    close(p->listen_fd);
    sigprocmask(SIG_SETMASK, &saved, NULL);
    pool_free(p);
    return 0;
}
