/* cgi_front.h -- one request as a plain CGI program (fd 0 is not a socket). */
#ifndef HOLDFAST_CGI_FRONT_H
#define HOLDFAST_CGI_FRONT_H

#include "config.h"

/* Answer the request described by the environment and standard input on
 * standard output.  A subscribe with nothing new blocks in this process
 * until a message or its timeout.  Returns the exit status. */
int cgi_front_run(const config *cfg);

#endif
