/* Option parsing helpers shared by the subcommands. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
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

static void quit_now(int sig);

/* A first SIGTERM also starts a grace timer: `timeout`, service managers and
 * batch systems send one SIGTERM and may wait forever, so a run stuck in a
 * long computation that does not poll the flag still ends (SIGALRM). */
#define WD_CLI_GRACE_S 10

static void on_signal(int sig) {
    if (interrupted) quit_now(sig);
    interrupted = 1;
    static const char msg[] = "\nwdmoe: interrupted, finishing and writing completed results "
                              "(again to quit now)\n";
    static const char msg_term[] = "\nwdmoe: terminated, finishing and writing completed "
                                   "results (quits in 10 s, or at once on a second signal)\n";
    ssize_t w = sig == SIGTERM ? write(2, msg_term, sizeof(msg_term) - 1)
                               : write(2, msg, sizeof(msg) - 1);
    (void)w;
    if (sig == SIGTERM) alarm(WD_CLI_GRACE_S);
}

static void on_alarm(int sig) {
    (void)sig;
    quit_now(SIGTERM);
}

void wd_cli_install_signals(void) {
    struct sigaction sa;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
}

const volatile sig_atomic_t *wd_cli_interrupt_flag(void) { return &interrupted; }

int wd_cli_interrupted(void) { return interrupted != 0; }

/* Temporary files to remove when a second signal ends the process at once. */
#define WD_CLI_MAX_TMP 8
static char quit_tmp[WD_CLI_MAX_TMP][1100];
static volatile sig_atomic_t n_quit_tmp;

void wd_cli_remove_on_quit(const char *path) {
    if (!path || n_quit_tmp >= WD_CLI_MAX_TMP) return;
    snprintf(quit_tmp[n_quit_tmp], sizeof quit_tmp[0], "%s.tmp.%ld", path, (long)getpid());
    n_quit_tmp++;
}

void wd_cli_format_bytes(char *buf, size_t cap, double bytes) {
    if (bytes >= 1e12)
        snprintf(buf, cap, "%.1f TB", bytes / 1e12);
    else if (bytes >= 1e9)
        snprintf(buf, cap, "%.2f GB", bytes / 1e9);
    else
        snprintf(buf, cap, "%.1f MB", bytes / 1e6);
}

static void quit_now(int sig) { /* async-signal-safe: unlink and _exit only */
    for (int i = 0; i < n_quit_tmp; i++) unlink(quit_tmp[i]);
    _exit(128 + sig);
}

/* Length of the valid UTF-8 sequence at s (0: invalid), RFC 3629. */
static int utf8_seq(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F))) return 0;
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))) return 0;
    return n;
}

char *wd_cli_utf8(const char *s) {
    size_t len = strlen(s);
    char *out = malloc(3 * len + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_seq(p);
        if (n) {
            memcpy(o, p, n), o += n, p += n;
        } else {
            memcpy(o, "\xEF\xBF\xBD", 3), o += 3, p++;
        }
    }
    *o = 0;
    return out;
}

const char *const wd_cli_route_help =
    "  --top-k K             experts per token (default: the model's num_experts_per_tok)\n"
    "  --router R            learned (default) or oracle: each token uses the K experts\n"
    "                        with the largest output norm (all experts run; CPU, no scenario)\n";

int wd_cli_route_option(const char *cmd, int argc, char **argv, int *i, wd_cli_route *o) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--top-k")) {
        if (!(v = wd_cli_value(cmd, argc, argv, i)) || wd_cli_int(cmd, a, v, 1, 1 << 16, &o->top_k))
            return -1;
        return 1;
    }
    if (!strcmp(a, "--router")) {
        if (!(v = wd_cli_value(cmd, argc, argv, i))) return -1;
        if (strcmp(v, "learned") && strcmp(v, "oracle")) {
            fprintf(stderr, "wdmoe %s: bad value for --router: '%s' (learned or oracle)\n", cmd, v);
            return -1;
        }
        o->oracle = !strcmp(v, "oracle");
        return 1;
    }
    return 0;
}

int wd_cli_route_apply(const char *cmd, const wd_cli_route *o, int n_experts, int *cfg_top_k,
                       int cuda, int emulated) {
    if (o->top_k > n_experts) {
        fprintf(stderr, "wdmoe %s: --top-k %d exceeds the model's %d experts\n", cmd, o->top_k,
                n_experts);
        return 2;
    }
    if (o->oracle && cuda) {
        fprintf(stderr, "wdmoe %s: --router oracle runs on the CPU backend only\n", cmd);
        return 2;
    }
    if (o->oracle && emulated) {
        fprintf(stderr, "wdmoe %s: --router oracle is for quality studies without --scenario or "
                "--policy (the emulated system would time the router's choice)\n", cmd);
        return 2;
    }
    if (o->top_k > 0) *cfg_top_k = o->top_k;
    return 0;
}

int wd_cli_parse_ids(const char *cmd, const char *list, int vocab, int **ids, int *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',' || *p == ' ';
    int *v = malloc(cap * sizeof(int));
    if (!v) {
        fprintf(stderr, "wdmoe %s: out of memory\n", cmd);
        return 1;
    }
    int k = 0;
    for (const char *p = list; *p;) {
        while (*p == ',' || *p == ' ') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',' && *end != ' ') || errno || x < 0 || x >= vocab) {
            int len = 0;
            while (p[len] && p[len] != ',' && p[len] != ' ' && len < 40) len++;
            fprintf(stderr, "wdmoe %s: --prompt-ids: '%.*s' is not a token id in [0, %d)\n", cmd,
                    len, p, vocab);
            free(v);
            return 1;
        }
        v[k++] = (int)x;
        p = end;
    }
    if (k == 0) {
        fprintf(stderr, "wdmoe %s: --prompt-ids: no ids in '%.40s'\n", cmd, list);
        free(v);
        return 1;
    }
    *ids = v;
    *n = k;
    return 0;
}
