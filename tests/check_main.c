/* check_main.c -- runs every holdfast unit-test suite in one SRunner.
 *
 * Tests run in fork mode (Check's default; CK_FORK=no overrides it for a
 * debugger), so a crash fails one test, not the run.  CK_RUN_SUITE and
 * CK_RUN_CASE select a subset; CK_VERBOSITY=verbose lists every test. */
#include <check.h>
#include <stdlib.h>

#include "check_suites.h"
#include "testutil.h"

int main(void)
{
    SRunner *sr = srunner_create(msglog_suite());
    srunner_add_suite(sr, config_suite());
    srunner_add_suite(sr, wake_suite());
    srunner_add_suite(sr, jsonenc_suite());
    srunner_add_suite(sr, cli_suite());
    srunner_add_suite(sr, msglog_procs_suite());
    srunner_add_suite(sr, request_suite());
    srunner_add_suite(sr, waiters_suite());
    srunner_add_suite(sr, fcgiclient_suite());
    srunner_add_suite(sr, lpload_suite());
    srunner_add_suite(sr, fcgi_proto_suite());
    srunner_add_suite(sr, token_suite());
    srunner_add_suite(sr, guard_suite());
    srunner_add_suite(sr, dsproto_suite());
    srunner_add_suite(sr, dstore_suite());
    tu_session_begin();
    srunner_run_all(sr, CK_ENV);
    tu_session_end();
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
