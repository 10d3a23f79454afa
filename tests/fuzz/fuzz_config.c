/* fuzz_config.c -- libFuzzer target: arbitrary text through config_parse().
 * It must never crash, and an error message must name the file and a line. */
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
    else
        (void)config_policy_for(&c, "news");
    free(text);
    return 0;
}
