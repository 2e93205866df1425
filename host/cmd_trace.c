/* wdmoe trace: sample a scenario's links into a CSV rate trace
 * (time_s, device, downlink_bps, uplink_bps) that a later scenario can
 * replay with links {"model": "csv", "file": ...}. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "emulation/emulation.h"
#include "host/cli.h"

int wd_cmd_trace(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f, "usage: wdmoe trace --scenario FILE --duration S --out FILE.csv [--period S]\n"
               "                   [--seed N]\n\n"
               "Writes the full-band rate of every device's downlink and uplink, averaged over\n"
               "each period (default: the scenario's radio.sample_period_s), as CSV with the\n"
               "columns time_s,device,downlink_bps,uplink_bps. Faults are not applied.\n"
               "--seed replaces the scenario's seed (its channel realisation).\n");
}

int wd_cmd_trace(int argc, char **argv) {
    const char *C = "trace", *scen = NULL, *out = NULL, *v;
    double duration = -1, period = 0;
    long long seed = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (!strcmp(a, "--scenario")) {
            if (!(scen = wd_cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--out")) {
            if (!(out = wd_cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--duration")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) ||
                wd_cli_double(C, a, v, 1e-9, 1e7, &duration))
                return 2;
        } else if (!strcmp(a, "--seed")) {
            int sv;
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 0, 2147483647, &sv))
                return 2;
            seed = sv;
        } else if (!strcmp(a, "--period")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) ||
                wd_cli_double(C, a, v, 1e-6, 1e4, &period))
                return 2;
        } else {
            fprintf(stderr, "wdmoe trace: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!scen || !out || duration < 0) {
        fprintf(stderr, "wdmoe trace: --scenario, --duration and --out are required\n");
        usage(stderr);
        return 2;
    }
    wd_cli_io io; /* nothing read may be written over; the output can be written */
    wd_cli_io_init(&io, C);
    wd_cli_io_scenario(&io, scen);
    wd_cli_io_output(&io, "--out", out);
    int io_rc = wd_cli_io_check(&io);
    wd_cli_io_free(&io);
    if (io_rc) return io_rc;
    /* SIGINT/SIGTERM: stop, remove the temporary file, write nothing */
    wd_cli_install_signals();
    wd_cli_remove_on_quit(out);
    char err[1024];
    wd_scenario sc;
    wd_emu *emu = NULL;
    if (wd_scenario_load(&sc, scen, err, sizeof err)) {
        fprintf(stderr, "wdmoe trace: %s\n", err);
        return 1;
    }
    sc.n_faults = 0; /* the channel only */
    if (seed >= 0) sc.seed = (uint64_t)seed;
    if (period <= 0) period = sc.radio.sample_period_s;
    if (wd_emu_create(&emu, &sc, NULL, err, sizeof err)) {
        fprintf(stderr, "wdmoe trace: %s\n", err);
        wd_scenario_free(&sc);
        return 1;
    }
    long n = (long)ceil(duration / period - 1e-9);
    int nd = wd_emu_n_devices(emu);
    wd_atomic_file af;
    int rc = 1;
    if (wd_atomic_open(&af, out, err, sizeof err)) goto done;
    fprintf(af.f, "time_s,device,downlink_bps,uplink_bps\n");
    for (long k = 0; k < n && !wd_cli_interrupted(); k++) {
        double t = k * period;
        for (int d = 0; d < nd; d++)
            fprintf(af.f, "%.10g,%d,%.17g,%.17g\n", t, d,
                    wd_link_mean_rate(wd_emu_link(emu, d, WD_DL), t, t + period),
                    wd_link_mean_rate(wd_emu_link(emu, d, WD_UL), t, t + period));
    }
    if (wd_cli_interrupted()) {
        wd_atomic_abort(&af);
        snprintf(err, sizeof err, "interrupted: nothing written");
        rc = 130;
        goto done;
    }
    if (wd_atomic_commit(&af, err, sizeof err)) goto done;
    printf("wrote %s: %d devices x %ld samples of %g s\n", out, nd, n, period);
    rc = 0;
done:
    if (rc) fprintf(stderr, "wdmoe trace: %s\n", err);
    wd_emu_free(emu);
    wd_scenario_free(&sc);
    return rc;
}
