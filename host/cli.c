/* Option parsing helpers shared by the subcommands. */
#include <errno.h>
#include <stdlib.h>

#include "host/cli.h"

const char *wd_cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "wdmoe %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    *i += 1;
    return argv[*i];
}

int wd_cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        fprintf(stderr, "wdmoe %s: bad value for %s: '%s' (an integer in [%ld, %ld])\n", cmd,
                opt, val, lo, hi);
        return 1;
    }
    *out = (int)v;
    return 0;
}

int wd_cli_double(const char *cmd, const char *opt, const char *val, double lo, double hi,
                  double *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "wdmoe %s: bad value for %s: '%s' (a number in [%g, %g])\n", cmd, opt,
                val, lo, hi);
        return 1;
    }
    *out = v;
    return 0;
}
