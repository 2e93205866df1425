/* Replay results bit for bit against a golden file.
 *
 * tests/data/replay/golden.txt was written by this test (`--write FILE`) on
 * the code before the channel-state caches of issue 14 (commit c29cecf):
 * the caches must not change a result. Inputs: router probabilities
 * recorded from two real models (stories260k moe4-top2, 52 tokens; SmolLM2-135M
 * MoEfied into 8 experts, top-6, 44 tokens), each at its own width and at the
 * Mixtral-8x7B width (hidden 4096, ffn 14336: transfers and expert compute
 * long enough that the clock jumps many channel samples per layer step, as
 * in bench_policy), through paper-cell (synthetic channel, NR air interface),
 * att-lte-driving and tmobile-lte-short (Mahimahi traces), with topk and wdmoe.
 * Then paper-cell variants through other code paths: Rician fading (K 6 dB)
 * with min-max bandwidth allocation; Shannon link adaptation, FDD, configured
 * uplink grants and joint selection + allocation.
 * Per run: a hash of every layer step (the selection: experts and weights;
 * the step: clock, BS time, wait, and per device its bits, shares, t_dl, t_c,
 * t_ul, air-interface part) with each token its own decode step, and the
 * summary JSON of `wdmoe replay` (wd_probs_replay: prompts as prefill). */
#include <json-c/json.h>
#include <stdint.h>

#include "emulation/emulation.h"
#include "tests/test_util.h"

#define MAX_OUT (1 << 20)

typedef struct {
    uint64_t h;
} fnv;

static void fnv_add(fnv *f, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) f->h = (f->h ^ c[i]) * 0x100000001b3ULL;
}
static void fnv_d(fnv *f, double x) { fnv_add(f, &x, sizeof x); }
static void fnv_i(fnv *f, int x) { fnv_add(f, &x, sizeof x); }

/* Every token alone through every layer: the hash of selections and steps. */
static int step_hash(const wd_scenario *sc, const char *policy, const wd_probs *pr, uint64_t *hash,
                     double *clock, char *err, size_t errlen) {
    wd_emu_shape shape = wd_probs_shape(pr);
    wd_emu *emu;
    if (wd_emu_create(&emu, sc, &shape, err, errlen)) return 1;
    int E = pr->n_experts, L = pr->n_layers, n[1], ex[64], rc = 0;
    float w[64];
    fnv f = {0xcbf29ce484222325ULL};
    if (wd_emu_set_policy(emu, policy, &sc->params, err, errlen)) rc = 1;
    for (long t = 0; !rc && t < pr->n_tokens; t++)
        for (int l = 0; l < L && !rc; l++) {
            wd_emu_step_result r;
            const float *p = pr->probs + ((size_t)t * L + l) * E;
            if (wd_emu_select(emu, 1, p, n, ex, w, err, errlen) ||
                wd_emu_step(emu, l, 1, n, ex, &r, err, errlen)) {
                rc = 1;
                break;
            }
            fnv_i(&f, n[0]);
            for (int j = 0; j < n[0]; j++) fnv_i(&f, ex[j]), fnv_add(&f, &w[j], sizeof w[j]);
            fnv_d(&f, r.t_start), fnv_d(&f, r.t_bs), fnv_d(&f, r.wait), fnv_i(&f, r.critical);
            for (int i = 0; i < r.n_active; i++) {
                const wd_emu_dev_time *x = &r.dev[i];
                fnv_i(&f, x->device), fnv_i(&f, x->tokens), fnv_i(&f, x->pairs);
                fnv_i(&f, x->calls);
                for (int k = 0; k < 2; k++)
                    fnv_d(&f, x->bits[k]), fnv_d(&f, x->share[k]), fnv_d(&f, x->air[k]);
                fnv_d(&f, x->t_dl), fnv_d(&f, x->t_c), fnv_d(&f, x->t_ul);
            }
        }
    *hash = f.h;
    *clock = wd_emu_time(emu);
    wd_emu_free(emu);
    return rc;
}

/* wdmoe replay's summary of one run, as one line of JSON. */
static int summary_line(const wd_scenario *sc, const char *policy, const wd_probs *pr, char *out,
                        size_t outlen, char *err, size_t errlen) {
    wd_emu_shape shape = wd_probs_shape(pr);
    wd_emu *emu;
    if (wd_emu_create(&emu, sc, &shape, err, errlen)) return 1;
    int rc = wd_emu_set_policy(emu, policy, &sc->params, err, errlen) ||
             wd_probs_replay(emu, pr, 0, NULL, NULL, err, errlen);
    if (!rc) {
        wd_emu_summary s;
        wd_emu_summarize(emu, &s);
        json_object *j = wd_emu_summary_json(&s);
        snprintf(out, outlen, "%s", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
    }
    wd_emu_free(emu);
    return rc;
}

/* One run: the golden lines for probabilities pr through sc with a policy. */
static void run_lines(const char *file, int wide, const char *scen, const char *policy,
                      const wd_scenario *sc, const wd_probs *pr, char *out, size_t *len) {
    uint64_t h = 0;
    double clock = 0;
    char sum[12288], line[16384], err[1024];
    int rc = step_hash(sc, policy, pr, &h, &clock, err, sizeof err) ||
             summary_line(sc, policy, pr, sum, sizeof sum, err, sizeof err);
    CHECKF(rc == 0, "%s %s %s: %s", file, scen, policy, err);
    if (rc) return;
    snprintf(line, sizeof line, "%s %s %s %s steps %016llx clock %a\n%s\n", file,
             wide ? "mixtral-width" : "own-width", scen, policy, (unsigned long long)h, clock, sum);
    size_t n = strlen(line);
    if (*len + n < MAX_OUT) memcpy(out + *len, line, n + 1), *len += n;
}

static void widen(wd_probs *pr) { /* Mixtral-8x7B width, 16-bit weights */
    pr->hidden = 4096, pr->ffn = 14336, pr->n_heads = 32, pr->n_kv_heads = 8, pr->head_dim = 128;
    pr->weight_bits = 16;
}

int main(int argc, char **argv) {
    const char *write_path = argc == 3 && !strcmp(argv[1], "--write") ? argv[2] : NULL;
    static const char *files[] = {"stories260k-moe4", "smollm2-moe8"};
    static const char *scens[] = {"paper-cell", "att-lte-driving", "tmobile-lte-short"};
    static const char *pols[] = {"topk", "wdmoe"};
    char *out = malloc(MAX_OUT), line[16384], err[1024], path[1024];
    size_t len = 0;
    CHECK(out != NULL);
    if (!out) return wd_test_finish("test_replay_golden");
    out[0] = 0;
    for (int fi = 0; fi < 2; fi++) {
        wd_probs pr;
        snprintf(path, sizeof path, "%s/tests/data/replay/%s.wdpr", WD_SOURCE_DIR, files[fi]);
        if (wd_probs_read(&pr, path, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            CHECK(0);
            continue;
        }
        for (int wide = 0; wide < 2; wide++) {
            if (wide) widen(&pr);
            for (int si = 0; si < 3; si++) {
                wd_scenario sc;
                snprintf(path, sizeof path, "%s/bench/scenarios/%s.json", WD_SOURCE_DIR, scens[si]);
                if (wd_scenario_load(&sc, path, err, sizeof err)) {
                    fprintf(stderr, "%s\n", err);
                    CHECK(0);
                    continue;
                }
                for (int pi = 0; pi < 2; pi++)
                    run_lines(files[fi], wide, scens[si], pols[pi], &sc, &pr, out, &len);
                wd_scenario_free(&sc);
            }
        }
        wd_probs_free(&pr);
    }
    /* paper-cell variants: SmolLM2 at its own width, stories260k at Mixtral width */
    for (int fi = 0; fi < 2; fi++) {
        wd_probs pr;
        wd_scenario sc;
        snprintf(path, sizeof path, "%s/tests/data/replay/%s.wdpr", WD_SOURCE_DIR, files[fi]);
        int rc = wd_probs_read(&pr, path, err, sizeof err);
        CHECKF(rc == 0, "%s", err);
        if (rc) continue;
        if (fi == 0) widen(&pr);
        snprintf(path, sizeof path, "%s/bench/scenarios/paper-cell.json", WD_SOURCE_DIR);
        for (int v = 0; v < 2; v++) {
            if ((rc = wd_scenario_load(&sc, path, err, sizeof err))) break;
            if (v == 0) {
                sc.radio.fading = WD_FADING_RICIAN, sc.radio.rician_k_db = 6.0;
                sc.alloc = WD_ALLOC_MINMAX;
            } else {
                sc.radio.link_adaptation = WD_LA_SHANNON, sc.radio.air.duplex = WD_DUPLEX_FDD;
                sc.radio.air.ul_sched = WD_UL_CONFIGURED, sc.alloc = WD_ALLOC_JOINT;
            }
            for (int pi = 0; pi < 2; pi++)
                run_lines(files[fi], fi == 0,
                          v ? "paper-cell-shannon-fdd-configured-joint" : "paper-cell-rician-minmax",
                          pols[pi], &sc, &pr, out, &len);
            wd_scenario_free(&sc);
        }
        CHECKF(rc == 0, "%s", err);
        wd_probs_free(&pr);
    }
    if (write_path) {
        FILE *f = fopen(write_path, "w");
        CHECK(f && fwrite(out, 1, len, f) == len && fclose(f) == 0);
        free(out);
        return wd_test_finish("test_replay_golden");
    }
    snprintf(path, sizeof path, "%s/tests/data/replay/golden.txt", WD_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "%s: cannot open", path);
    if (f) {
        /* line by line: say which run differs first */
        const char *p = out;
        int lineno = 0, shown = 0;
        while (fgets(line, sizeof line, f)) {
            lineno++;
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
            int same = n == strlen(line) && !memcmp(p, line, n);
            if (!same && shown++ < 4)
                fprintf(stderr, "golden.txt:%d differs:\n  golden: %.300s  now:    %.300s\n", lineno,
                        line, n ? p : "(nothing)\n");
            CHECK(same);
            p += n;
        }
        CHECKF(*p == 0, "more output than golden.txt has lines");
        fclose(f);
    }
    free(out);
    return wd_test_finish("test_replay_golden");
}
