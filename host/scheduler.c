/* The BS scheduler: plugged between router and experts (wd_moe_hooks). For
 * every layer step it asks the emulator for the predicted per-device latency,
 * lets the scenario's policy choose experts and weights, advances the virtual
 * clock by the BS time plus the wait for the slowest chosen device, and
 * optionally records router probabilities (for `wdmoe replay`) and one JSON
 * line per layer step. The experts themselves run through the default
 * execution (wd_moe_run_selection) on the CPU pool. */
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"

struct wd_scheduler {
    const wd_model *m;
    wd_emu *emu;
    wd_compute_profile bs;
    int n_layers, n_experts;
    /* router probabilities of the current forward, [token][layer][E] */
    wd_probs_writer *rec;
    float *probs_buf;
    int cap;
    FILE *records; /* JSON lines, one per layer step (NULL: off) */
    long forwards;
    /* measured compute: the selection waits for the kernel times */
    int measured, pend_layer, pend_pos0, pend_n, pend_cap;
    int *pend_sel_n, *pend_expert;
    float *pend_weight;
    double *t_c;
    /* real-time mode: the last step's per-device times */
    wd_emu_step_result last;
    int have_last;
};

static double weight_bytes(wd_dtype dt) { return (double)wd_dtype_bytes(dt, 256) / 256.0; }

int wd_scheduler_create(wd_scheduler **out, const wd_model *m, const wd_scenario *sc, char *err,
                        size_t errlen) {
    *out = NULL;
    const wd_config *c = &m->cfg;
    wd_scheduler *k = calloc(1, sizeof(*k));
    if (!k) {
        snprintf(err, errlen, "scheduler: out of memory");
        return 1;
    }
    k->m = m;
    k->bs = sc->bs;
    k->n_layers = c->n_layers;
    k->n_experts = c->n_experts;
    wd_emu_shape shape = {0};
    shape.hidden = c->hidden;
    shape.ffn = c->ffn;
    shape.n_layers = c->n_layers;
    shape.n_experts = c->n_experts;
    shape.top_k = c->top_k;
    shape.weight_bytes = weight_bytes(m->layers[0].w1[0]->dtype);
    shape.n_heads = c->n_heads;
    shape.n_kv_heads = c->n_kv_heads;
    shape.head_dim = c->head_dim;
    if (wd_emu_create(&k->emu, sc, &shape, err, errlen)) {
        free(k);
        return 1;
    }
    *out = k;
    return 0;
}

wd_emu *wd_scheduler_emu(wd_scheduler *k) { return k->emu; }

int wd_scheduler_record_probs(wd_scheduler *k, const char *path, char *err, size_t errlen) {
    const wd_model *m = k->m;
    const wd_config *c = &m->cfg;
    wd_probs shape = {c->n_layers, c->n_experts, c->top_k, c->hidden, c->ffn,
                      c->n_heads, c->n_kv_heads, c->head_dim,
                      (int)(8 * weight_bytes(m->layers[0].w1[0]->dtype)), 0, NULL};
    return wd_probs_write_open(&k->rec, path, &shape, err, errlen);
}

void wd_scheduler_record_steps(wd_scheduler *k, FILE *jsonl) { k->records = jsonl; }

int wd_scheduler_finish(wd_scheduler *k, char *err, size_t errlen) {
    if (!k->rec) return 0;
    int rc = wd_probs_write_close(k->rec, err, errlen);
    k->rec = NULL;
    return rc;
}

void wd_scheduler_free(wd_scheduler *k) {
    if (!k) return;
    if (k->rec) wd_probs_write_abort(k->rec);
    wd_emu_free(k->emu);
    free(k->probs_buf);
    free(k->pend_sel_n);
    free(k->pend_expert);
    free(k->pend_weight);
    free(k->t_c);
    free(k);
}

static void write_record(wd_scheduler *k, int layer, int pos0, const wd_selection *sel,
                         const wd_emu_step_result *r) {
    int E = sel->n_experts;
    fprintf(k->records, "{\"pos\":%d,\"layer\":%d,\"tokens\":%d,\"t_start\":%.9g,\"t_bs\":%.9g,"
                        "\"wait\":%.9g,\"selection\":[", pos0, layer, sel->n_tokens, r->t_start,
            r->t_bs, r->wait);
    for (int t = 0; t < sel->n_tokens; t++) {
        fprintf(k->records, "%s{\"experts\":[", t ? "," : "");
        for (int j = 0; j < sel->n[t]; j++)
            fprintf(k->records, "%s%d", j ? "," : "", sel->expert[(size_t)t * E + j]);
        fprintf(k->records, "],\"weights\":[");
        for (int j = 0; j < sel->n[t]; j++)
            fprintf(k->records, "%s%.6g", j ? "," : "", sel->weight[(size_t)t * E + j]);
        fprintf(k->records, "]}");
    }
    fprintf(k->records, "],\"devices\":[");
    for (int d = 0; d < r->n_active; d++) {
        const wd_emu_dev_time *v = &r->dev[d];
        fprintf(k->records,
                "%s{\"device\":%d,\"tokens\":%d,\"t_dl\":%.9g,\"t_c\":%.9g,\"t_ul\":%.9g,"
                "\"bits_dl\":%.0f,\"bits_ul\":%.0f,\"share_dl\":%.6g,\"share_ul\":%.6g}",
                d ? "," : "", v->device, v->tokens, v->t_dl, v->t_c, v->t_ul, v->bits[WD_DL],
                v->bits[WD_UL], v->share[WD_DL], v->share[WD_UL]);
    }
    fprintf(k->records, "]}\n");
}

static int after_step(wd_scheduler *k, int layer, int pos0, const wd_selection *sel,
                      const wd_emu_step_result *r);

static int sched_select(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    wd_scheduler *k = ctx;
    int n = sel->n_tokens, E = sel->n_experts;
    char err[512];
    if (k->rec) {
        if (n > k->cap) {
            free(k->probs_buf);
            k->probs_buf = malloc((size_t)n * k->n_layers * E * sizeof(float));
            k->cap = k->probs_buf ? n : 0;
            if (!k->probs_buf) return 1;
        }
        for (int t = 0; t < n; t++)
            memcpy(k->probs_buf + ((size_t)t * k->n_layers + layer) * E,
                   probs + (size_t)t * E, (size_t)E * sizeof(float));
    }
    wd_emu_step_result r;
    if (wd_emu_select(k->emu, n, probs, sel->n, sel->expert, sel->weight, err, sizeof(err))) {
        fprintf(stderr, "wdmoe: emulation: %s\n", err);
        return 1;
    }
    if (k->measured) { /* the step follows the kernel times (wd_scheduler_expert_times) */
        if (n > k->pend_cap) {
            free(k->pend_sel_n);
            free(k->pend_expert);
            free(k->pend_weight);
            k->pend_sel_n = malloc((size_t)n * sizeof(int));
            k->pend_expert = malloc((size_t)n * E * sizeof(int));
            k->pend_weight = malloc((size_t)n * E * sizeof(float));
            k->pend_cap = k->pend_sel_n && k->pend_expert && k->pend_weight ? n : 0;
            if (!k->pend_cap) return 1;
        }
        memcpy(k->pend_sel_n, sel->n, (size_t)n * sizeof(int));
        memcpy(k->pend_expert, sel->expert, (size_t)n * E * sizeof(int));
        memcpy(k->pend_weight, sel->weight, (size_t)n * E * sizeof(float));
        k->pend_layer = layer, k->pend_pos0 = pos0, k->pend_n = n;
        return 0;
    }
    if (wd_emu_step(k->emu, layer, n, sel->n, sel->expert, &r, err, sizeof(err))) {
        fprintf(stderr, "wdmoe: emulation: %s\n", err);
        return 1;
    }
    return after_step(k, layer, pos0, sel, &r);
}

/* records, the LM head after the last layer, the recorded probabilities */
static int after_step(wd_scheduler *k, int layer, int pos0, const wd_selection *sel,
                      const wd_emu_step_result *r) {
    int n = sel->n_tokens, E = sel->n_experts;
    char err[512];
    k->last = *r;
    k->have_last = 1;
    if (k->records) write_record(k, layer, pos0, sel, r);
    if (layer == k->n_layers - 1) {
        /* LM head at the BS after the last layer */
        const wd_config *c = &k->m->cfg;
        double lm = wd_compute_time(&k->bs, 2.0 * c->hidden * c->vocab,
                                    (double)c->hidden * c->vocab *
                                        weight_bytes(k->m->lm_head->dtype));
        wd_emu_advance(k->emu, lm);
        k->forwards++;
        if (k->rec)
            for (int t = 0; t < n; t++)
                if (wd_probs_write_token(k->rec, k->probs_buf + (size_t)t * k->n_layers * E,
                                         err, sizeof(err))) {
                    fprintf(stderr, "wdmoe: %s\n", err);
                    return 1;
                }
    }
    return 0;
}

void wd_scheduler_set_measured(wd_scheduler *k, int on) { k->measured = on != 0; }
int wd_scheduler_measured(const wd_scheduler *k) { return k->measured; }

int wd_scheduler_expert_times(wd_scheduler *k, int layer, const double *seconds, int n_experts) {
    if (!k->measured) return 0;
    char err[512];
    if (layer != k->pend_layer || n_experts != k->n_experts || k->pend_n < 1) {
        fprintf(stderr, "wdmoe: emulation: expert times for layer %d without its selection\n",
                layer);
        return 1;
    }
    int nd = wd_emu_n_devices(k->emu);
    if (!k->t_c && !(k->t_c = malloc((size_t)nd * sizeof(double)))) return 1;
    for (int d = 0; d < nd; d++) k->t_c[d] = NAN; /* NAN: the modeled time */
    const wd_scenario *sc = wd_emu_scenario(k->emu);
    for (int e = 0; e < n_experts; e++) {
        int d = wd_emu_expert_device(k->emu, e);
        if (seconds[e] < 0 || d < 0) continue;
        double cal = sc->dev[d].profile.calibration > 0 ? sc->dev[d].profile.calibration : 1.0;
        k->t_c[d] = (isnan(k->t_c[d]) ? 0.0 : k->t_c[d]) + seconds[e] * cal;
    }
    wd_emu_step_result r;
    if (wd_emu_step_measured(k->emu, layer, k->pend_n, k->pend_sel_n, k->pend_expert, k->t_c, &r,
                             err, sizeof(err))) {
        fprintf(stderr, "wdmoe: emulation: %s\n", err);
        return 1;
    }
    wd_selection sel = {k->pend_n, k->n_experts, k->pend_sel_n, k->pend_expert, k->pend_weight};
    k->pend_n = 0;
    return after_step(k, layer, k->pend_pos0, &sel, &r);
}

void wd_scheduler_link_delays(wd_scheduler *k, int layer, int expert, uint64_t *dl_ns,
                              uint64_t *ul_ns) {
    *dl_ns = *ul_ns = 0;
    if (!k->have_last || k->last.layer != layer) return;
    int d = wd_emu_expert_device(k->emu, expert);
    for (int i = 0; i < k->last.n_active; i++)
        if (k->last.dev[i].device == d) {
            *dl_ns = (uint64_t)(k->last.dev[i].t_dl * 1e9 + 0.5);
            *ul_ns = (uint64_t)(k->last.dev[i].t_ul * 1e9 + 0.5);
        }
}

void wd_scheduler_hooks(wd_scheduler *k, wd_moe_hooks *hooks) {
    hooks->ctx = k;
    hooks->select = sched_select;
    hooks->run_experts = NULL; /* default execution on the CPU pool */
}
