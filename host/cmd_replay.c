/* wdmoe replay: re-run only the emulation on recorded router probabilities,
 * for every scenario x policy; an aligned table and a JSON result. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/emulation.h"
#include "host/cli.h"

int wd_cmd_replay(int argc, char **argv);

#define MAX_LIST 64

static void usage(FILE *f) {
    fprintf(f, "usage: wdmoe replay --probs FILE.wdpr --scenario FILE [--scenario FILE2 ...]\n"
               "                    [--policy P ...] [--tokens N] [--seed S] [--json result.json]\n\n"
               "Replays recorded router probabilities through each scenario with each policy\n"
               "(default: topk and the scenario's own policy; topk always runs as the baseline).\n"
               "Forward passes are replayed as recorded: a prompt's tokens together (its time\n"
               "to first token, TTFT), each generated token alone (time per output token,\n"
               "TPOT; a file of format version 1 has no phases: every token a decode step).\n"
               "--tokens N stops at the first pass boundary at or after N tokens. Prints\n"
               "TPOT and TTFT, the experts replaced (outage)\n"
               "and dropped per token-layer (not-strag: dropped although faster than the\n"
               "step's slowest top-k expert), and the reduction against topk; --json FILE\n"
               "(or --out FILE) writes the results as JSON (atomically; - to stdout, and\n"
               "the table to stderr). --seed S replaces every scenario's seed.\n\npolicies:");
    for (int i = 0; i < wd_policy_count(); i++) fprintf(f, " %s", wd_policy_at(i)->name);
    fprintf(f, "\n");
}

/* One scenario x policy run: fresh emulator, every forward pass as recorded
 * (a prompt's tokens together as its prefill, decode steps one token each),
 * every layer. */
static int run_one(const wd_scenario *sc, const char *policy, const wd_probs *pr, long n_tok,
                   wd_emu_summary *sum, json_object **devices, char *err, size_t errlen) {
    wd_emu_shape shape = wd_probs_shape(pr);
    wd_emu *emu = NULL;
    int rc = 1;
    if (wd_emu_create(&emu, sc, &shape, err, errlen) ||
        wd_emu_set_policy(emu, policy, &sc->params, err, errlen) ||
        wd_probs_replay(emu, pr, n_tok, NULL, NULL, err, errlen))
        goto out;
    wd_emu_summarize(emu, sum);
    *devices = wd_emu_devices_json(emu);
    rc = 0;
out:
    wd_emu_free(emu);
    return rc;
}

int wd_cmd_replay(int argc, char **argv) {
    const char *C = "replay", *probs_path = NULL, *out = NULL, *out_opt = "--json", *scen[MAX_LIST], *pol[MAX_LIST], *v;
    int ns = 0, np = 0, max_tok = 0, seed = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (!strcmp(a, "--probs")) {
            if (!(probs_path = wd_cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--out") || !strcmp(a, "--json")) {
            out_opt = a;
            if (!(out = wd_cli_value(C, argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) || wd_cli_int(C, a, v, 0, 2147483647, &seed))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (!(v = wd_cli_value(C, argc, argv, &i)) ||
                wd_cli_int(C, a, v, 1, 1L << 30, &max_tok))
                return 2;
        } else if (!strcmp(a, "--scenario") || !strcmp(a, "--policy")) {
            int is_s = a[2] == 's';
            if (!(v = wd_cli_value(C, argc, argv, &i))) return 2;
            if ((is_s ? ns : np) == MAX_LIST) {
                fprintf(stderr, "wdmoe replay: more than %d %s\n", MAX_LIST, a);
                return 2;
            }
            if (is_s)
                scen[ns++] = v;
            else if (!wd_policy_find(v)) {
                char known[256];
                fprintf(stderr, "wdmoe replay: unknown policy '%s' (known: %s)\n", v,
                        wd_policy_names(known, sizeof known));
                usage(stderr);
                return 2;
            } else {
                pol[np++] = v;
            }
        } else {
            fprintf(stderr, "wdmoe replay: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!probs_path || !ns) {
        fprintf(stderr, "wdmoe replay: --probs and at least one --scenario are required\n");
        usage(stderr);
        return 2;
    }
    wd_cli_io io; /* nothing read may be written over; the output can be written */
    wd_cli_io_init(&io, C);
    wd_cli_io_input(&io, probs_path, "the recorded probabilities");
    for (int s = 0; s < ns; s++) wd_cli_io_scenario(&io, scen[s]);
    int json_stdout = out && !strcmp(out, "-"); /* never a file named "-" */
    FILE *table = json_stdout ? stderr : stdout;
    wd_cli_io_output(&io, out_opt, json_stdout ? NULL : out);
    int io_rc = wd_cli_io_check(&io);
    wd_cli_io_free(&io);
    if (io_rc) return io_rc;
    /* a first SIGINT/SIGTERM stops after the current run and writes the runs done;
     * a second one quits at once, removing the temporary file */
    wd_cli_install_signals();
    if (!json_stdout) wd_cli_remove_on_quit(out);
    char err[1024];
    wd_probs pr;
    if (wd_probs_read(&pr, probs_path, err, sizeof err)) {
        fprintf(stderr, "wdmoe replay: %s\n", err);
        return 1;
    }
    long n_tok = max_tok && max_tok < pr.n_tokens ? max_tok : pr.n_tokens;
    while (n_tok < pr.n_tokens && !(pr.flags[n_tok] & WD_PROBS_FORWARD)) n_tok++; /* whole passes */
    json_object *root = json_object_new_object(), *runs = json_object_new_array();
    json_object *jp = json_object_new_object();
    json_object_object_add(root, "command", json_object_new_string("replay"));
    {
        static const char *const seed_names[] = {"seed"};
        long long seeds[] = {seed}; /* -1: each scenario's own (in its run) */
        wd_cli_provenance(root, "replay", argc, argv, seed_names, seeds, 1);
    }
    json_object_object_add(jp, "file", json_object_new_string(probs_path));
    json_object_object_add(jp, "tokens", json_object_new_int64(n_tok));
    json_object_object_add(jp, "layers", json_object_new_int(pr.n_layers));
    json_object_object_add(jp, "experts", json_object_new_int(pr.n_experts));
    json_object_object_add(jp, "top_k", json_object_new_int(pr.top_k));
    json_object_object_add(jp, "hidden", json_object_new_int(pr.hidden));
    json_object_object_add(jp, "ffn", json_object_new_int(pr.ffn));
    json_object_object_add(root, "probs", jp);
    json_object_object_add(root, "runs", runs);
    fprintf(table, "%-24s %-16s %10s %10s %10s %10s %10s %9s %9s %9s %9s %9s %9s\n", "scenario",
           "policy", "TPOT ms", "p50 ms", "p95 ms", "p99 ms", "TTFT ms", "exp/tok", "replaced",
           "dropped", "not-strag", "mJ/tok", "vs topk");
    int rc = 0;
    for (int s = 0; s < ns && !rc && !wd_cli_interrupted(); s++) {
        wd_scenario sc;
        if (wd_scenario_load(&sc, scen[s], err, sizeof err)) {
            rc = 1;
            break;
        }
        if (seed >= 0) sc.seed = (uint64_t)seed;
        if (sc.compute_measured)
            fprintf(stderr,
                    "wdmoe replay: %s asks for measured compute, which `wdmoe generate --backend "
                    "cuda` provides: using the modeled compute times\n",
                    scen[s]);
        const char *list[MAX_LIST + 2];
        int nl = 0;
        list[nl++] = "topk";
        if (!np && strcmp(sc.policy, "topk")) list[nl++] = sc.policy;
        for (int i = 0; i < np; i++) {
            int dup = 0;
            for (int j = 0; j < nl; j++) dup |= !strcmp(list[j], pol[i]);
            if (!dup) list[nl++] = pol[i];
        }
        double base = 0;
        for (int i = 0; i < nl && !rc && !wd_cli_interrupted(); i++) {
            wd_emu_summary sum;
            json_object *devs = NULL;
            if (run_one(&sc, list[i], &pr, n_tok, &sum, &devs, err, sizeof err)) {
                rc = 1;
                break;
            }
            const wd_emu_phase_summary *d = &sum.decode;
            if (i == 0) base = d->mean_s;
            double red = base > 0 ? 100.0 * (1.0 - d->mean_s / base) : 0.0;
            fprintf(table, "%-24.24s %-16s %10.3f %10.3f %10.3f %10.3f %10.3f %9.3f %9ld %9ld %9ld "
                   "%9.4g %8.2f%%\n",
                   sc.name, list[i], d->mean_s * 1e3, d->p50_s * 1e3, d->p95_s * 1e3,
                   d->p99_s * 1e3, sum.prefill.mean_s * 1e3, d->experts_per_token,
                   d->experts_replaced, d->experts_dropped, d->experts_dropped_nonstraggler,
                   d->energy_per_token_j * 1e3, red);
            json_object *r = json_object_new_object(), *par = json_object_new_object();
            json_object_object_add(r, "scenario", json_object_new_string(sc.name));
            json_object_object_add(r, "scenario_file", json_object_new_string(scen[s]));
            json_object_object_add(r, "seed", json_object_new_int64((int64_t)sc.seed));
            json_object_object_add(r, "policy", json_object_new_string(list[i]));
            json_object_object_add(par, "alpha", json_object_new_double(sc.params.alpha));
            json_object_object_add(par, "dtheta", json_object_new_double(sc.params.dtheta));
            json_object_object_add(par, "gamma", json_object_new_double(sc.params.gamma));
            json_object_object_add(par, "theta", json_object_new_double(sc.params.theta));
            json_object_object_add(par, "m", json_object_new_int(sc.params.m));
            json_object_object_add(r, "params", par);
            json_object_object_add(r, "bandwidth_allocation",
                                   json_object_new_string(wd_alloc_name(sc.alloc)));
            json_object_object_add(r, "summary", wd_emu_summary_json(&sum));
            json_object_object_add(r, "devices", devs);
            json_object_object_add(r, "latency_reduction_vs_topk",
                                   json_object_new_double(red / 100.0));
            json_object_array_add(runs, r);
        }
        wd_scenario_free(&sc);
    }
    int stopped = wd_cli_interrupted();
    json_object_object_add(root, "interrupted", json_object_new_boolean(stopped));
    if (!rc && out) {
        const char *txt = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t len = strlen(txt);
        char *buf = malloc(len + 2);
        if (!buf) {
            snprintf(err, sizeof err, "%s: out of memory", out);
            rc = 1;
        } else {
            memcpy(buf, txt, len);
            buf[len] = '\n';
            if (json_stdout) {
                if (fwrite(buf, 1, len + 1, stdout) != len + 1) {
                    snprintf(err, sizeof err, "cannot write stdout");
                    rc = 1;
                }
            } else {
                rc = wd_emu_write_atomic(out, buf, len + 1, err, sizeof err);
            }
            free(buf);
        }
    }
    if (rc) fprintf(stderr, "wdmoe replay: %s\n", err);
    if (!rc && stopped) rc = 130;
    json_object_put(root);
    wd_probs_free(&pr);
    return rc;
}
