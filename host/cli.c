/* Option parsing helpers shared by the subcommands. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

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

/* The one piece of process-wide state: async-signal-safe by construction. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    if (interrupted) _exit(128 + sig);
    interrupted = 1;
    static const char msg[] = "\nwdmoe: interrupted, finishing and writing completed results "
                              "(again to quit now)\n";
    ssize_t w = write(2, msg, sizeof(msg) - 1);
    (void)w;
}

void wd_cli_install_signals(void) {
    struct sigaction sa;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int wd_cli_interrupted(void) { return interrupted != 0; }
