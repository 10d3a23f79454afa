/* pool.h -- `holdfast serve`: bind a socket, pre-fork workers, supervise. */
#ifndef HOLDFAST_POOL_H
#define HOLDFAST_POOL_H

#include "config.h"

/* How to (re)load settings: the config file, plus flags that override it. */
typedef struct {
    const char *config_path; /* NULL: HOLDFAST_CONFIG or beside argv0 */
    const char *argv0;
    const char *db, *listen, *workers, *threads; /* NULL = from config */
} pool_options;

/* Load settings per o into c (file, environment, flags); 0 or -1 with a
 * message on stderr. */
int pool_load_config(const pool_options *o, config *c);

/* Bind cfg->listen ("unix:/path", "/path", "HOST:PORT" or ":PORT"):
 * a listening fd, or -1 with the reason in err. */
int pool_listen(const char *addr, char *err, size_t errlen);

/* Run the supervisor until SIGTERM/SIGINT; returns the exit status.
 * SIGHUP reloads the settings and replaces the workers once the new ones
 * are ready (else keeps the running ones); see pool.c for the rules. */
int pool_run(const pool_options *o);

#endif
