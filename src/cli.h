/* cli.h -- the `holdfast` command line: publish, tail, stats, prune. */
#ifndef HOLDFAST_CLI_H
#define HOLDFAST_CLI_H

/* Run the subcommand named by argv[1]; returns the process exit status
 * (0 ok, 1 runtime error, 2 usage error).  Writes results to stdout and
 * one-line errors to stderr. */
int cli_main(int argc, char **argv);

#endif
