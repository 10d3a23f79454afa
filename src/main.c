/* main.c -- holdfast's entry point.
 *
 *   holdfast                  spawned by a web server: FastCGI on fd 0, or
 *                             one CGI request when fd 0 is not a socket
 *   holdfast serve ...        pre-forked pool on its own socket (pool.c)
 *   holdfast publish|tail|stats|prune ...   the command line (cli.c)
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgi_front.h"
#include "cli.h"
#include "config.h"
#include "fcgi_front.h"
#include "pool.h"

/* With no arguments: serve whatever the web server connected us to. */
static int main_spawned(const char *argv0) {
    static config cfg;
    char err[1024];
    if (isatty(0) && !getenv("GATEWAY_INTERFACE"))
        return cli_main(1, (char *[]){(char *)argv0, NULL});
    if (config_load(&cfg, NULL, argv0, err, sizeof err)) {
        fprintf(stderr, "holdfast: %s\n", err);
        if (!fcgi_front_is_listener(0))
            printf("Status: 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                   "\r\n{\"error\":\"config\",\"detail\":\"holdfast.conf is invalid; see the "
                   "server's error log\"}\n");
        return 1;
    }
    return !fcgi_front_is_listener(0) ? cgi_front_run(&cfg) : fcgi_front_run(&cfg, 0, -1, 0);
}

static int main_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"db", required_argument, 0, 'd'},      {"config", required_argument, 0, 'c'},
        {"listen", required_argument, 0, 'l'},  {"workers", required_argument, 0, 'w'},
        {"threads", required_argument, 0, 't'}, {0, 0, 0, 0}};
    pool_options o = {.argv0 = argv[0]};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': o.db = optarg; break;
        case 'c': o.config_path = optarg; break;
        case 'l': o.listen = optarg; break;
        case 'w': o.workers = optarg; break;
        case 't': o.threads = optarg; break;
        default:
            fprintf(stderr, "holdfast: serve [--db PATH] [--config FILE] --listen ADDR "
                            "[--workers N] [--threads N]\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "holdfast: serve takes no arguments besides its options\n");
        return 2;
    }
    return pool_run(&o);
}

int main(int argc, char **argv) {
    /* A CGI request may come with arguments: Apache passes a query string
     * without '=' (?1700000000) as argv.  GATEWAY_INTERFACE says which it is. */
    if (argc < 2 || getenv("GATEWAY_INTERFACE"))
        return main_spawned(argv[0]);
    if (!strcmp(argv[1], "serve"))
        return main_serve(argc, argv);
    return cli_main(argc, argv);
}
