/* check_suites.h -- one Suite per tested module, run together by check_main.c. */
#ifndef HOLDFAST_CHECK_SUITES_H
#define HOLDFAST_CHECK_SUITES_H

#include <check.h>

Suite *msglog_suite(void);
Suite *config_suite(void);
Suite *wake_suite(void);
Suite *jsonenc_suite(void);
Suite *cli_suite(void);
Suite *msglog_procs_suite(void);
Suite *request_suite(void);
Suite *waiters_suite(void);
Suite *fcgiclient_suite(void);
Suite *lpload_suite(void);
Suite *fcgi_proto_suite(void);
Suite *token_suite(void);
Suite *guard_suite(void);
Suite *dsproto_suite(void);
Suite *dstore_suite(void);

#endif
