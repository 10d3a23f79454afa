/* fcgi_front.h -- the FastCGI front: accept connections, read each
 * request whole under one deadline, answer or park it, close. */
#ifndef HOLDFAST_FCGI_FRONT_H
#define HOLDFAST_FCGI_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jsonenc.h"

/* Serve FastCGI on listen_fd (fd 0 when a web server spawned us) until
 * SIGTERM or SIGINT: then stop accepting, answer every parked request, and
 * return the exit status (0 after a clean stop).  When ready_fd >= 0, one
 * byte is written to it (and it is closed) once the log is open and the
 * process serves requests normally: the supervisor retires an old
 * generation only then.  A process that cannot open the log still serves,
 * answering 503 until the storage comes back -- unless `patient` is set
 * (a reload's worker, with the running ones still serving): then it
 * accepts nothing until it is ready. */
int fcgi_front_run(const config *cfg, int listen_fd, int ready_fd, int patient);

/* 1 if fd is a listening socket: how a program spawned by a web server
 * tells FastCGI (a listener on fd 0) from CGI. */
int fcgi_front_is_listener(int fd);

#endif
