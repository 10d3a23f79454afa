/* check_config.c -- holdfast.conf parsing, HOLDFAST_* overrides, loading
 * order, and the per-channel policy lookup. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_suites.h"
#include "config.h"
#include "testutil.h"

static const char full_conf[] =
    "# holdfast.conf used by the tests\n"
    "\n"
    "db = /var/lib/holdfast/test.db\n"
    "durability=full\n"
    "   busy_timeout_ms   =   2500   \n"
    "poll_timeout = 20\n"
    "max_poll_timeout = 50\n"
    "max_body = 65536\n"
    "max_channels = 8\n"
    "max_parked = 1000\n"
    "batch_limit = 50\n"
    "data_version_ms = 250\n"
    "prune_every = 64\n"
    "listen = unix:/run/holdfast.sock\n"
    "workers = 3\n"
    "threads = 8\n"
    "publish_key = k1\n"
    "publish_key = k2\n"
    "cors_origin = https://a.example\n"
    "cors_origin = https://b.example\n"
    "retain_messages = 1000\n"
    "retain_seconds = 86400\n"
    "sse = off\n"
    "sse_ping = 5\n"
    "sse_max = 600\n"
    "sse_queue_max = 64k\n"
    "\n"
    "[channel chat.*]\n"
    "# a comment inside a section\n"
    "retain_messages = 10\n"
    "retain_seconds = 60\n"
    "publish = anyone\n"
    "\n"
    "[channel chat.vip]\n"
    "retain_messages = 99\n"
    "\n"
    "[channel metrics.*]\n"
    "publish = key\n"
    "subscribe = anyone\n";

static void parse_ok(config *c, const char *text)
{
    char err[1024] = "";
    int rc = config_parse(c, "test.conf", text, err, sizeof err);
    ck_assert_msg(rc == 0, "config_parse failed: %s", err);
}

/* Parse text that must fail; err must name test.conf and the line. */
static void parse_fails_at(const char *text, int line)
{
    config c;
    char err[1024] = "", where[32];
    config_defaults(&c);
    ck_assert_msg(config_parse(&c, "test.conf", text, err, sizeof err) < 0, "accepted: %s", text);
    snprintf(where, sizeof where, "test.conf:%d:", line);
    ck_assert_msg(strstr(err, where) != NULL, "error '%s' does not say '%s'", err, where);
    ck_assert_msg(strlen(err) > strlen(where), "error '%s' gives no reason", err);
}

START_TEST(test_defaults_are_sane)
{
    config c;
    memset(&c, 0xa5, sizeof c);
    config_defaults(&c);
    ck_assert_int_eq(c.durability, MSGLOG_DURABILITY_NORMAL);
    ck_assert_int_eq(c.poll_timeout_s, 25); /* under mod_fcgid's 40 s and nginx's 60 s */
    ck_assert_int_ge(c.max_poll_timeout_s, c.poll_timeout_s);
    ck_assert_int_lt(c.max_poll_timeout_s, 60);
    ck_assert_int_gt(c.busy_timeout_ms, 0);
    ck_assert_int_gt(c.max_body, 0);
    ck_assert_int_gt(c.max_channels, 0);
    ck_assert_int_gt(c.max_parked, 0);
    ck_assert_int_gt(c.batch_limit, 0);
    ck_assert_int_gt(c.data_version_ms, 0);
    ck_assert_int_le(c.data_version_ms, 5000);
    ck_assert_int_ge(c.workers, 1);
    ck_assert_int_ge(c.threads, 1);
    ck_assert_int_eq(c.npublish_keys, 0);
    ck_assert_int_eq(c.sse, 1);
    /* a ping well inside every web server's idle timeout (nginx 60 s, mod_fcgid
     * 40 s), a stream recycled before mod_fcgid's FcgidBusyTimeout (300 s) */
    ck_assert_int_le(c.sse_ping_s, 30);
    ck_assert_int_lt(c.sse_max_s, 300);
    ck_assert_int_ge(c.sse_queue_max, 65536);
    ck_assert_int_eq(c.ncors_origins, 0);
    ck_assert_int_eq(c.npolicies, 0);
    ck_assert_str_eq(c.source, "");
    ck_assert_msg(c.db[0] != '\0', "no default database path");
    ck_assert_ptr_nonnull(memchr(c.db, '\0', sizeof c.db));
}
END_TEST

START_TEST(test_parse_reads_every_key_comments_and_blank_lines)
{
    config c;
    config_defaults(&c);
    parse_ok(&c, full_conf);
    ck_assert_str_eq(c.db, "/var/lib/holdfast/test.db");
    ck_assert_int_eq(c.durability, MSGLOG_DURABILITY_FULL);
    ck_assert_int_eq(c.busy_timeout_ms, 2500);
    ck_assert_int_eq(c.poll_timeout_s, 20);
    ck_assert_int_eq(c.max_poll_timeout_s, 50);
    ck_assert_int_eq(c.max_body, 65536);
    ck_assert_int_eq(c.max_channels, 8);
    ck_assert_int_eq(c.max_parked, 1000);
    ck_assert_int_eq(c.batch_limit, 50);
    ck_assert_int_eq(c.data_version_ms, 250);
    ck_assert_int_eq(c.prune_every, 64);
    ck_assert_str_eq(c.listen, "unix:/run/holdfast.sock");
    ck_assert_int_eq(c.workers, 3);
    ck_assert_int_eq(c.threads, 8);
    ck_assert_int_eq(c.npublish_keys, 2);
    ck_assert_str_eq(c.publish_keys[0], "k1");
    ck_assert_str_eq(c.publish_keys[1], "k2");
    ck_assert_int_eq(c.ncors_origins, 2);
    ck_assert_str_eq(c.cors_origins[1], "https://b.example");
    ck_assert_int_eq(c.retention.max_messages, 1000);
    ck_assert_int_eq(c.retention.max_age_s, 86400);
    ck_assert_int_eq(c.sse, 0);
    ck_assert_int_eq(c.sse_ping_s, 5);
    ck_assert_int_eq(c.sse_max_s, 600);
    ck_assert_int_eq(c.sse_queue_max, 65536);
    ck_assert_int_eq(c.npolicies, 3);
    ck_assert_str_eq(c.policies[0].pattern, "chat.*");
    ck_assert_int_eq(c.policies[0].retention.max_messages, 10);
    ck_assert_int_eq(c.policies[0].retention.max_age_s, 60);
    ck_assert_int_eq(c.policies[0].publish, POLICY_ANYONE);
    ck_assert_int_eq(c.policies[0].subscribe, POLICY_INHERIT);
    ck_assert_int_eq(c.policies[1].retention.max_age_s, -1); /* inherits 86400 */
    ck_assert_str_eq(c.policies[2].pattern, "metrics.*");
    ck_assert_int_eq(c.policies[2].publish, POLICY_KEY);
    ck_assert_int_eq(c.policies[2].subscribe, POLICY_ANYONE);
}
END_TEST

START_TEST(test_parse_handles_crlf_and_missing_final_newline)
{
    config c;
    config_defaults(&c);
    parse_ok(&c, "# windows editor\r\nworkers = 4\r\n\r\nlisten = 127.0.0.1:9000");
    ck_assert_int_eq(c.workers, 4);
    ck_assert_str_eq(c.listen, "127.0.0.1:9000");
}
END_TEST

START_TEST(test_parse_errors_name_file_and_line)
{
    parse_fails_at("# fine\n\nbogus_key = 1\n", 3);
    parse_fails_at("workers = 2\nmax_body = 12x\n", 2);
    parse_fails_at("poll_timeout = abc\n", 1);
    parse_fails_at("poll_timeout =\n", 1);
    parse_fails_at("workers = 1\njust some words\n", 2);
    parse_fails_at("durability = sometimes\n", 1);
    parse_fails_at("workers = 0\n", 1);
    parse_fails_at("\n\n\n[channel chat.*]\npublish = maybe\n", 5);
    parse_fails_at("[channel chat.*]\nsubscribe = key\n", 2);
    parse_fails_at("[channel chat.*]\nretain_messages = -5\n", 2);
    parse_fails_at("[channel chat.*]\nno_such_policy_key = 1\n", 2);
    parse_fails_at("workers = 1\n[bogus x]\n", 2);
    parse_fails_at("[channel]\n", 1);
}
END_TEST

START_TEST(test_number_with_size_suffix_overflow_is_rejected)
{
    config c;
    char err[512] = "";
    config_defaults(&c);
    ck_assert_int_eq(config_set(&c, "max_body", "64k", err, sizeof err), 0);
    ck_assert_int_eq(c.max_body, 65536);
    /* (2^54 + 1) * 1024 overflows int64; it must not wrap around to 1024 */
    int rc = config_set(&c, "max_body", "18014398509481985k", err, sizeof err);
    ck_assert_msg(rc < 0, "accepted an overflowing number; max_body = %lld",
                  (long long)c.max_body);
    ck_assert_int_lt(config_set(&c, "retain_messages", "99999999999999999999", err, sizeof err),
                     0);
}
END_TEST

START_TEST(test_retain_seconds_above_100_years_is_refused_naming_key_and_maximum)
{
    /* retain_seconds used to accept up to INT64_MAX, which msglog turned
     * into an overflowing number of milliseconds (and a prune that deleted
     * what it should keep).  Now the file, a section and the environment
     * refuse anything above 100 years, saying so. */
    config c;
    char err[512] = "";
    config_defaults(&c);
    ck_assert_int_eq(config_set(&c, "retain_seconds", "3153600000", err, sizeof err), 0);
    ck_assert_int_eq(c.retention.max_age_s, CONFIG_RETAIN_SECONDS_MAX);
    static const char *const big[] = {"3153600001", "9223372036854775807",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        err[0] = '\0';
        ck_assert_int_lt(config_set(&c, "retain_seconds", big[i], err, sizeof err), 0);
        ck_assert_msg(strstr(err, "retain_seconds") && strstr(err, "3153600000") &&
                          strstr(err, "100 years"),
                      "unclear error for %s: %s", big[i], err);
    }
    ck_assert_int_eq(c.retention.max_age_s, CONFIG_RETAIN_SECONDS_MAX);
    parse_fails_at("[channel chat.*]\nretain_seconds = 9223372036854775807\n", 2);
    config_defaults(&c);
    ck_assert_int_lt(config_parse(&c, "test.conf", "[channel a]\nretain_seconds = 4000000000\n",
                                  err, sizeof err), 0);
    ck_assert_msg(strstr(err, "retain_seconds") && strstr(err, "3153600000"), "%s", err);
    char *env[] = {"HOLDFAST_RETAIN_SECONDS=9223372036854775807", NULL};
    config_defaults(&c);
    ck_assert_int_lt(config_apply_env(&c, env, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "HOLDFAST_RETAIN_SECONDS") && strstr(err, "3153600000"), "%s", err);
    /* Numbers too large for any key say "out of range", not "not a number". */
    ck_assert_int_lt(config_set(&c, "busy_timeout_ms", "99999999999999999999", err, sizeof err),
                     0);
    ck_assert_msg(strstr(err, "out of range") && strstr(err, "600000"), "%s", err);
}
END_TEST

START_TEST(test_env_overrides_file_and_ignores_other_variables)
{
    config c;
    char err[1024] = "";
    config_defaults(&c);
    parse_ok(&c, "db = /from/file.db\npoll_timeout = 20\nworkers = 3\n");
    char *const envp[] = {"HOLDFAST_DB=/from/env.db",
                          "HOLDFAST_DURABILITY=full",
                          "HOLDFAST_POLL_TIMEOUT=7",
                          "HOLDFAST_MAX_BODY=1m",
                          "HOLDFAST_RETAIN_MESSAGES=77",
                          "HOLDFAST_CONFIG=/some/where.conf",
                          "HOLDFAST_BIN=/usr/bin/holdfast",
                          "PATH=/usr/bin:/bin",
                          "DB=/not/ours.db",
                          NULL};
    ck_assert_msg(config_apply_env(&c, envp, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(c.db, "/from/env.db");
    ck_assert_int_eq(c.durability, MSGLOG_DURABILITY_FULL);
    ck_assert_int_eq(c.poll_timeout_s, 7);
    ck_assert_int_eq(c.max_body, 1024 * 1024);
    ck_assert_int_eq(c.retention.max_messages, 77);
    ck_assert_int_eq(c.workers, 3); /* not in the environment: the file's value */
}
END_TEST

START_TEST(test_env_bad_value_is_an_error_naming_the_variable)
{
    config c;
    char err[1024] = "";
    config_defaults(&c);
    char *const envp[] = {"HOLDFAST_POLL_TIMEOUT=soon", NULL};
    ck_assert_int_lt(config_apply_env(&c, envp, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "HOLDFAST_POLL_TIMEOUT") != NULL, "error '%s' hides the variable",
                  err);
}
END_TEST

START_TEST(test_policy_for_picks_first_matching_pattern)
{
    config c;
    config_defaults(&c);
    parse_ok(&c, full_conf);
    config_policy p = config_policy_for(&c, "chat.vip"); /* chat.* comes first */
    ck_assert_str_eq(p.pattern, "chat.*");
    ck_assert_int_eq(p.retention.max_messages, 10);
    p = config_policy_for(&c, "chat.lobby");
    ck_assert_str_eq(p.pattern, "chat.*");
    ck_assert_int_eq(p.subscribe, POLICY_ANYONE);
    p = config_policy_for(&c, "chat.vip");
    ck_assert_int_eq(p.retention.max_age_s, 60);
    p = config_policy_for(&c, "metrics.cpu");
    ck_assert_str_eq(p.pattern, "metrics.*");
    ck_assert_int_eq(p.publish, POLICY_KEY);
    p = config_policy_for(&c, "news"); /* no section: the global rule */
    ck_assert_int_eq(p.subscribe, POLICY_ANYONE);
    ck_assert_int_eq(p.publish, POLICY_KEY); /* keys are configured */
    ck_assert_int_eq(p.retention.max_messages, 1000);
    ck_assert_int_eq(p.retention.max_age_s, 86400);

    msglog_retention r = config_retention_for("chat.vip", &c);
    ck_assert_int_eq(r.max_messages, 10);
    r = config_retention_for("news", &c);
    ck_assert_int_eq(r.max_messages, 1000);

    config open;
    config_defaults(&open);
    p = config_policy_for(&open, "news"); /* no keys at all: publishing is closed */
    ck_assert_int_eq(p.publish, POLICY_KEY);
    ck_assert(config_publish_closed(&open));
    ck_assert_int_eq(p.subscribe, POLICY_ANYONE);
    char *const envp[] = {"HOLDFAST_PUBLISH=anyone", NULL};
    char err[256];
    ck_assert_int_eq(config_apply_env(&open, envp, err, sizeof err), 0);
    ck_assert_int_eq(config_policy_for(&open, "news").publish, POLICY_ANYONE);
    ck_assert(!config_publish_closed(&open));
}
END_TEST

START_TEST(test_section_without_publish_rule_requires_key_set_by_environment)
{
    /* The deployment guides set the key through FcgidInitialEnv /
     * bin-environment; a [channel] section that only sets retention must
     * not thereby open its channels to anonymous publishing. */
    config c;
    char err[1024] = "";
    config_defaults(&c);
    parse_ok(&c, "[channel chat.*]\nretain_messages = 10\n");
    char *const envp[] = {"HOLDFAST_PUBLISH_KEY=secret", NULL};
    ck_assert_msg(config_apply_env(&c, envp, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.npublish_keys, 1);
    ck_assert_int_eq(config_policy_for(&c, "news").publish, POLICY_KEY);
    config_policy p = config_policy_for(&c, "chat.room");
    ck_assert_int_eq(p.retention.max_messages, 10);
    ck_assert_msg(p.publish == POLICY_KEY,
                  "[channel chat.*] lets anyone publish although HOLDFAST_PUBLISH_KEY is set");
}
END_TEST

START_TEST(test_token_rules_need_a_secret)
{
    config c;
    char err[1024] = "";
    config_defaults(&c);
    parse_ok(&c, "[channel x]\nsubscribe = token\npublish = token\nmax_body = 1k\n"
                 "publish_rate = 30/m\npublish_burst = 5\n");
    ck_assert_int_eq(c.policies[0].subscribe, POLICY_TOKEN);
    ck_assert_int_lt(config_check(&c, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "token_secret") && strstr(err, "[channel x]"), "%s", err);
    config_policy p = config_policy_for(&c, "x");
    ck_assert_int_eq(p.max_body, 1024);
    ck_assert_int_eq(p.publish_rate_milli, 500);
    ck_assert_int_eq(p.publish_burst, 5);
    ck_assert_int_eq(p.rule, 1);
    ck_assert_int_eq(config_policy_for(&c, "y").rule, 0);
    char *const envp[] = {"HOLDFAST_TOKEN_SECRET=0123456789abcdef0123456789abcdef", NULL};
    ck_assert_int_eq(config_apply_env(&c, envp, err, sizeof err), 0);
    ck_assert_int_eq(config_check(&c, err, sizeof err), 0);
    /* Bad values name their line. */
    parse_fails_at("token_secret = too-short\n", 1);
    parse_fails_at("\ntoken_algorithms = HS256 RS256\n", 2);
    parse_fails_at("[channel x]\nsubscribe = key\n", 2);
    parse_fails_at("[channel x]\npublish_rate = 1/h\n", 2);
    parse_fails_at("client_header = X Real IP\n", 1);
    parse_fails_at("raw_types = text/html;charset=utf-8\n", 1);
    parse_fails_at("cors_credentials = maybe\n", 1);
    config_defaults(&c);
    parse_ok(&c, "cors_origin = *\ncors_credentials = on\n");
    ck_assert_int_lt(config_check(&c, err, sizeof err), 0);
    config_defaults(&c);
    parse_ok(&c, "raw_types = text/html\nraw_types = image/svg+xml\n");
    ck_assert_int_eq(c.nraw_types, 2);
    ck_assert(config_raw_type_allowed(&c, "text/HTML; charset=utf-8"));
    ck_assert(!config_raw_type_allowed(&c, "text/plain"));
}
END_TEST

START_TEST(test_load_explicit_file_then_environment)
{
    const char *dir = tu_mkdtemp();
    const char *path = tu_path(dir, "my.conf");
    const char text[] = "poll_timeout = 21\nworkers = 5\n";
    tu_write_file(path, text, sizeof text - 1);
    unsetenv("HOLDFAST_CONFIG");
    setenv("HOLDFAST_WORKERS", "6", 1);
    config c;
    char err[1024] = "";
    ck_assert_msg(config_load(&c, path, NULL, err, sizeof err) == 0, "%s", err);
    unsetenv("HOLDFAST_WORKERS");
    ck_assert_int_eq(c.poll_timeout_s, 21);
    ck_assert_int_eq(c.workers, 6);
    ck_assert_str_eq(c.source, path);
}
END_TEST

START_TEST(test_load_missing_explicit_file_is_an_error)
{
    const char *dir = tu_mkdtemp();
    const char *path = tu_path(dir, "absent.conf");
    config c;
    char err[1024] = "";
    ck_assert_int_lt(config_load(&c, path, NULL, err, sizeof err), 0);
    ck_assert_msg(strstr(err, path) != NULL, "error '%s' does not name the file", err);
}
END_TEST

START_TEST(test_load_finds_file_beside_binary_unless_holdfast_config_set)
{
    const char *dir = tu_mkdtemp();
    const char *beside = tu_path(dir, "holdfast.conf");
    const char *other = tu_path(dir, "other.conf");
    const char *argv0 = tu_path(dir, "holdfast");
    tu_write_file(beside, "workers = 7\n", 12);
    tu_write_file(other, "workers = 8\n", 12);
    config c;
    char err[1024] = "";
    unsetenv("HOLDFAST_CONFIG");
    unsetenv("HOLDFAST_WORKERS");
    ck_assert_msg(config_load(&c, NULL, argv0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.workers, 7);
    ck_assert_str_eq(c.source, beside);
    setenv("HOLDFAST_CONFIG", other, 1);
    ck_assert_msg(config_load(&c, NULL, argv0, err, sizeof err) == 0, "%s", err);
    unsetenv("HOLDFAST_CONFIG");
    ck_assert_int_eq(c.workers, 8);
    ck_assert_str_eq(c.source, other);
}
END_TEST

START_TEST(test_repeatable_keys_have_a_clear_limit)
{
    config c;
    char err[512] = "", key[32];
    config_defaults(&c);
    for (int i = 0; i < CONFIG_MAX_KEYS; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        ck_assert_int_eq(config_set(&c, "publish_key", key, err, sizeof err), 0);
    }
    err[0] = '\0';
    ck_assert_int_lt(config_set(&c, "publish_key", "one-too-many", err, sizeof err), 0);
    ck_assert_msg(err[0] != '\0', "no reason given");
    ck_assert_int_eq(c.npublish_keys, CONFIG_MAX_KEYS);
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tu_tcase(s, "parse", 0);
    tcase_add_test(tc, test_defaults_are_sane);
    tcase_add_test(tc, test_parse_reads_every_key_comments_and_blank_lines);
    tcase_add_test(tc, test_parse_handles_crlf_and_missing_final_newline);
    tcase_add_test(tc, test_parse_errors_name_file_and_line);
    tcase_add_test(tc, test_number_with_size_suffix_overflow_is_rejected);
    tcase_add_test(tc, test_retain_seconds_above_100_years_is_refused_naming_key_and_maximum);
    tcase_add_test(tc, test_repeatable_keys_have_a_clear_limit);

    tc = tu_tcase(s, "env", 0);
    tcase_add_test(tc, test_env_overrides_file_and_ignores_other_variables);
    tcase_add_test(tc, test_env_bad_value_is_an_error_naming_the_variable);
    tcase_add_test(tc, test_token_rules_need_a_secret);
    tcase_add_test(tc, test_load_explicit_file_then_environment);
    tcase_add_test(tc, test_load_missing_explicit_file_is_an_error);
    tcase_add_test(tc, test_load_finds_file_beside_binary_unless_holdfast_config_set);

    tc = tu_tcase(s, "policy", 0);
    tcase_add_test(tc, test_policy_for_picks_first_matching_pattern);
    tcase_add_test(tc, test_section_without_publish_rule_requires_key_set_by_environment);
    return s;
}
