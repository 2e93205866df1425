/* Uses the installed libwdmoe: a scenario from share/wdmoe (its traces by
 * relative path), router probabilities built in memory and saved as .wdpr,
 * a top-k replay; prints the mean latency for test_install.sh to compare
 * with the installed `wdmoe replay` on the saved file. */
#include <stdio.h>
#include <stdlib.h>
#include <wdmoe.h>

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: consumer SCENARIO OUT.wdpr\n"), 2;
    enum { T = 30, L = 3, E = 8 };
    static float p[T * L * E];
    for (int r = 0; r < T * L; r++) { /* a different top-2 per row */
        for (int e = 0; e < E; e++) p[r * E + e] = 0.04f;
        p[r * E + r % E] = 0.5f, p[r * E + (r * 3 + 1) % E] = 0.26f;
    }
    char err[512];
    wdmoe_scenario *sc = NULL;
    wdmoe_probs *pr = NULL;
    wdmoe_result *res = NULL;
    double mean;
    if (wdmoe_scenario_load(&sc, argv[1], err, sizeof err) ||
        wdmoe_probs_create(&pr, T, L, E, 2, 4096, 14336, p, err, sizeof err) ||
        wdmoe_probs_save(pr, argv[2], err, sizeof err) ||
        wdmoe_replay(&res, sc, pr, "topk", 0, err, sizeof err) ||
        wdmoe_result_get(res, "decode.mean_s", &mean))
        return fprintf(stderr, "consumer: %s\n", err), 1;
    printf("wdmoe %s api %d mean %.17g\n", wdmoe_version(), wdmoe_api_version(), mean);
    wdmoe_result_free(res);
    wdmoe_probs_free(pr);
    wdmoe_scenario_free(sc);
    return 0;
}
