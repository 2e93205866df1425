/* What the emulation tests share, next to tests/test_util.h. */
#ifndef WD_EMU_TEST_UTIL_H
#define WD_EMU_TEST_UTIL_H
#include <stdio.h>
#include <stdlib.h>

#include "emulation/emulation.h"

/* The built-in default scenario's radio; a test then sets the fields it studies. */
static inline wd_radio wd_test_default_radio(void) {
    wd_scenario sc;
    char err[256];
    if (wd_scenario_default(&sc, 1, err, sizeof err)) {
        fprintf(stderr, "default scenario: %s\n", err);
        abort();
    }
    wd_radio r = sc.radio;
    wd_scenario_free(&sc);
    return r;
}
#endif
