/* fuzz_config.c -- libFuzzer target: arbitrary text through config_parse().
 * It must never crash, an error message must name the file and a line, and
 * an accepted retain_seconds is at most CONFIG_RETAIN_SECONDS_MAX. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static config c;
    char err[1024];
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    config_defaults(&c);
    if (config_parse(&c, "fuzz.conf", text, err, sizeof err) != 0)
        assert(!strncmp(err, "fuzz.conf:", 10));
    else {
        /* Every retention age fits msglog's milliseconds. */
        config_policy p = config_policy_for(&c, "news");
        assert(p.retention.max_age_s >= 0 && p.retention.max_age_s <= CONFIG_RETAIN_SECONDS_MAX);
        for (int i = 0; i < c.npolicies; i++)
            assert(c.policies[i].retention.max_age_s <= CONFIG_RETAIN_SECONDS_MAX);
    }
    free(text);
    return 0;
}
