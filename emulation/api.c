/* libwdmoe: the stable C API (emulation/wdmoe.h) over the emulation module.
 * A replay is what `wdmoe replay` runs for one scenario x policy. */
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"
#include "emulation/wdmoe.h"

#ifndef WDMOE_VERSION_STRING
#define WDMOE_VERSION_STRING "unknown"
#endif

struct wdmoe_scenario {
    wd_scenario sc;
};
struct wdmoe_probs {
    wd_probs p;
};
struct wdmoe_result {
    json_object *run;     /* the JSON of the run */
    json_object *summary; /* borrowed from run */
    json_object *flat;    /* the summary's numbers by name ("decode.mean_s") */
    double *lat;
    long n_lat;
};

/* err may be NULL: messages then go nowhere */
#define ERRBUF(err, errlen)                                                                        \
    char err_sink_[8];                                                                             \
    if (!(err)) (err) = err_sink_, (errlen) = sizeof err_sink_

int wdmoe_api_version(void) { return WDMOE_API_VERSION; }
const char *wdmoe_version(void) { return WDMOE_VERSION_STRING; }
void wdmoe_free(void *p) { free(p); }

/* ---- scenarios ------------------------------------------------------------------- */
static int scenario_new(wdmoe_scenario **out, const char *json, const char *path, char *err,
                        size_t errlen) {
    ERRBUF(err, errlen);
    *out = NULL;
    wdmoe_scenario *s = calloc(1, sizeof *s);
    if (!s) return wd_fail(err, errlen, "%s: out of memory", path ? path : "scenario");
    int rc = json ? wd_scenario_parse(&s->sc, json, path ? path : "scenario", err, errlen)
                  : wd_scenario_load(&s->sc, path, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int wdmoe_scenario_load(wdmoe_scenario **out, const char *path, char *err, size_t errlen) {
    if (!path) {
        ERRBUF(err, errlen);
        *out = NULL;
        return wd_fail(err, errlen, "scenario: no path given");
    }
    return scenario_new(out, NULL, path, err, errlen);
}

int wdmoe_scenario_parse(wdmoe_scenario **out, const char *json, const char *path, char *err,
                         size_t errlen) {
    if (!json) {
        ERRBUF(err, errlen);
        *out = NULL;
        return wd_fail(err, errlen, "%s: no JSON text given", path ? path : "scenario");
    }
    return scenario_new(out, json, path, err, errlen);
}

void wdmoe_scenario_free(wdmoe_scenario *s) {
    if (!s) return;
    wd_scenario_free(&s->sc);
    free(s);
}
const char *wdmoe_scenario_name(const wdmoe_scenario *s) { return s->sc.name; }
const char *wdmoe_scenario_policy(const wdmoe_scenario *s) { return s->sc.policy; }
int wdmoe_scenario_n_devices(const wdmoe_scenario *s) { return s->sc.n_devices; }

/* ---- probabilities -------------------------------------------------------------------- */
int wdmoe_probs_load(wdmoe_probs **out, const char *path, char *err, size_t errlen) {
    ERRBUF(err, errlen);
    *out = NULL;
    if (!path) return wd_fail(err, errlen, "probabilities: no path given");
    wdmoe_probs *p = calloc(1, sizeof *p);
    if (!p) return wd_fail(err, errlen, "%s: out of memory", path);
    if (wd_probs_read(&p->p, path, err, errlen)) {
        free(p);
        return 1;
    }
    *out = p;
    return 0;
}

int wdmoe_probs_create(wdmoe_probs **out, long n_tokens, int n_layers, int n_experts, int top_k,
                       int hidden, int ffn, const float *probs, char *err, size_t errlen) {
    ERRBUF(err, errlen);
    *out = NULL;
    if (n_tokens < 0 || n_layers < 1 || n_layers > 4096 || n_experts < 1 || n_experts > 4096 ||
        top_k < 1 || top_k > n_experts || hidden < 1 || hidden > (1 << 24) || ffn < 1 ||
        ffn > (1 << 26) || (n_tokens > 0 && !probs))
        return wd_fail(err, errlen,
                       "probabilities: bad shape (tokens %ld, layers %d, experts %d, top_k %d, "
                       "hidden %d, ffn %d)",
                       n_tokens, n_layers, n_experts, top_k, hidden, ffn);
    size_t rows = (size_t)n_tokens * (size_t)n_layers, n = rows * (size_t)n_experts;
    if (n_tokens > 0 && n / (size_t)n_tokens / (size_t)n_experts != (size_t)n_layers)
        return wd_fail(err, errlen, "probabilities: too many values");
    for (size_t r = 0; r < rows; r++) {
        double sum = 0;
        for (int e = 0; e < n_experts; e++) {
            float v = probs[r * n_experts + e];
            if (!(v >= 0.0f && v <= 1.0f))
                return wd_fail(err, errlen,
                               "probabilities: token %zu layer %zu expert %d: %g is not in [0, 1]",
                               r / n_layers, r % n_layers, e, v);
            sum += v;
        }
        if (fabs(sum - 1.0) > 1e-3)
            return wd_fail(err, errlen,
                           "probabilities: token %zu layer %zu: the experts' probabilities sum "
                           "to %g, not 1",
                           r / n_layers, r % n_layers, sum);
    }
    wdmoe_probs *p = calloc(1, sizeof *p);
    float *data = malloc((n ? n : 1) * sizeof(float));
    if (!p || !data) {
        free(p), free(data);
        return wd_fail(err, errlen, "probabilities: out of memory");
    }
    if (n) memcpy(data, probs, n * sizeof(float));
    p->p = (wd_probs){n_layers, n_experts, top_k, hidden, ffn, 0, 0, 0, 16, n_tokens, data, NULL};
    *out = p;
    return 0;
}

int wdmoe_probs_save(const wdmoe_probs *p, const char *path, char *err, size_t errlen) {
    ERRBUF(err, errlen);
    if (!path) return wd_fail(err, errlen, "probabilities: no path given");
    wd_probs_writer *w = NULL;
    if (wd_probs_write_open(&w, path, &p->p, err, errlen)) return 1;
    size_t per = (size_t)p->p.n_layers * p->p.n_experts;
    for (long t = 0; t < p->p.n_tokens; t++)
        if (wd_probs_write_token(w, p->p.probs + (size_t)t * per, err, errlen)) {
            wd_probs_write_abort(w);
            return 1;
        }
    return wd_probs_write_close(w, err, errlen);
}

void wdmoe_probs_free(wdmoe_probs *p) {
    if (!p) return;
    wd_probs_free(&p->p);
    free(p);
}

long wdmoe_probs_dim(const wdmoe_probs *p, const char *name) {
    const wd_probs *q = &p->p;
    const struct {
        const char *name;
        long v;
    } d[] = {{"n_tokens", q->n_tokens},     {"n_layers", q->n_layers},
             {"n_experts", q->n_experts},   {"top_k", q->top_k},
             {"hidden", q->hidden},         {"ffn", q->ffn},
             {"n_heads", q->n_heads},       {"n_kv_heads", q->n_kv_heads},
             {"head_dim", q->head_dim},     {"weight_bits", q->weight_bits}};
    for (size_t i = 0; name && i < sizeof d / sizeof d[0]; i++)
        if (!strcmp(name, d[i].name)) return d[i].v;
    return -1;
}

const float *wdmoe_probs_data(const wdmoe_probs *p) { return p->p.probs; }

/* ---- a caller's policy -------------------------------------------------------------- */
typedef struct {
    wdmoe_policy_fn fn;
    void *user;
    const char *name;
    int layer;
    char msg[512]; /* why the choice was refused ("" when the function failed) */
} custom_ctx;

/* The registered-policy contract around the caller's function: check the
 * choice, order it by descending probability (ties: lower id), renormalise. */
static int custom_select(const wd_policy_params *par, wd_policy_io *io) {
    custom_ctx *c = io->user;
    int E = io->n_experts;
    c->msg[0] = 0;
    for (int t = 0; t < io->n_tokens; t++) io->n[t] = -1;
    int rc = c->fn(c->user, c->layer, io->n_tokens, E, io->top_k, io->probs, io->tau,
                   io->available, io->n, io->expert);
    if (rc) return 1;
    for (int t = 0; t < io->n_tokens; t++) {
        int *ex = io->expert + (size_t)t * E, k = io->n[t];
        const float *p = io->probs + (size_t)t * E;
        if (k < 0 || k > E) {
            snprintf(c->msg, sizeof c->msg, "layer %d token %d: %d experts chosen (0..%d)",
                     c->layer, t, k, E);
            return 1;
        }
        for (int j = 0; j < k; j++) {
            if (ex[j] < 0 || ex[j] >= E) {
                snprintf(c->msg, sizeof c->msg, "layer %d token %d: expert id %d out of range",
                         c->layer, t, ex[j]);
                return 1;
            }
            if (!io->available[ex[j]]) {
                snprintf(c->msg, sizeof c->msg,
                         "layer %d token %d: expert %d is unreachable (tau infinite)", c->layer,
                         t, ex[j]);
                return 1;
            }
            for (int i = 0; i < j; i++)
                if (ex[i] == ex[j]) {
                    snprintf(c->msg, sizeof c->msg, "layer %d token %d: expert %d chosen twice",
                             c->layer, t, ex[j]);
                    return 1;
                }
        }
        for (int j = 1; j < k; j++) /* insertion sort: k is small */
            for (int i = j; i > 0 && (p[ex[i]] > p[ex[i - 1]] ||
                                      (p[ex[i]] == p[ex[i - 1]] && ex[i] < ex[i - 1]));
                 i--) {
                int x = ex[i];
                ex[i] = ex[i - 1], ex[i - 1] = x;
            }
        wd_policy_renorm(io, t);
    }
    (void)par;
    return 0;
}

/* ---- replay -------------------------------------------------------------------- */
static json_object *run_json(const wd_scenario *sc, const char *policy,
                             const wd_emu_summary *sum) {
    json_object *r = json_object_new_object(), *par = json_object_new_object();
    if (!r || !par) {
        json_object_put(r), json_object_put(par);
        return NULL;
    }
    json_object_object_add(r, "scenario", json_object_new_string(sc->name));
    json_object_object_add(r, "scenario_file", json_object_new_string(sc->path));
    json_object_object_add(r, "seed", json_object_new_int64((int64_t)sc->seed));
    json_object_object_add(r, "policy", json_object_new_string(policy));
    json_object_object_add(par, "alpha", json_object_new_double(sc->params.alpha));
    json_object_object_add(par, "dtheta", json_object_new_double(sc->params.dtheta));
    json_object_object_add(par, "gamma", json_object_new_double(sc->params.gamma));
    json_object_object_add(par, "theta", json_object_new_double(sc->params.theta));
    json_object_object_add(par, "m", json_object_new_int(sc->params.m));
    json_object_object_add(r, "params", par);
    json_object_object_add(r, "bandwidth_allocation",
                           json_object_new_string(wd_alloc_name(sc->alloc)));
    json_object *s = wd_emu_summary_json(sum);
    if (!s) {
        json_object_put(r);
        return NULL;
    }
    json_object_object_add(r, "summary", s);
    return r;
}

static void custom_layer(void *ctx, int layer) { ((custom_ctx *)ctx)->layer = layer; }

/* The numbers of the summary, nested ones as "block.name" (prefill.mean_s). */
static json_object *flatten(json_object *summary) {
    json_object *f = json_object_new_object();
    if (!f) return NULL;
    json_object_object_foreach(summary, key, v) {
        if (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)) {
            json_object_object_add(f, key, json_object_get(v));
        } else if (json_object_is_type(v, json_type_object)) {
            json_object_object_foreach(v, k2, v2) {
                if (!json_object_is_type(v2, json_type_double) &&
                    !json_object_is_type(v2, json_type_int))
                    continue;
                char name[160];
                snprintf(name, sizeof name, "%s.%s", key, k2);
                json_object_object_add(f, name, json_object_get(v2));
            }
        }
    }
    return f;
}

static int replay(wdmoe_result **out, const wdmoe_scenario *s, const wdmoe_probs *pp,
                  const char *policy, custom_ctx *custom, long max_tokens, char *err,
                  size_t errlen) {
    ERRBUF(err, errlen);
    *out = NULL;
    if (!s || !pp) return wd_fail(err, errlen, "replay: no scenario or no probabilities");
    const wd_scenario *sc = &s->sc;
    const wd_probs *pr = &pp->p;
    const char *label = custom ? custom->name : policy && *policy ? policy : sc->policy;
    wd_emu_shape shape = wd_probs_shape(pr);
    wd_emu *emu = NULL;
    wd_emu_summary sum;
    int rc = 1;
    wdmoe_result *res = calloc(1, sizeof *res);
    if (!res) {
        wd_fail(err, errlen, "replay: out of memory");
        goto out;
    }
    if (wd_emu_create(&emu, sc, &shape, err, errlen)) goto out;
    if (custom)
        wd_emu_set_policy_fn(emu, custom->name, custom_select, custom, &sc->params);
    else if (wd_emu_set_policy(emu, label, &sc->params, err, errlen))
        goto out;
    if (wd_probs_replay(emu, pr, max_tokens, custom ? custom_layer : NULL, custom, err, errlen)) {
        if (custom && custom->msg[0]) wd_fail(err, errlen, "policy %s: %s", custom->name, custom->msg);
        goto out;
    }
    wd_emu_summarize(emu, &sum);
    size_t nl;
    const double *lat = wd_emu_token_latencies(emu, &nl);
    res->lat = malloc((nl ? nl : 1) * sizeof(double));
    res->run = run_json(sc, label, &sum);
    if (!res->lat || !res->run ||
        !json_object_object_get_ex(res->run, "summary", &res->summary)) {
        wd_fail(err, errlen, "replay: out of memory");
        goto out;
    }
    if (nl) memcpy(res->lat, lat, nl * sizeof(double));
    res->n_lat = (long)nl;
    if (!(res->flat = flatten(res->summary))) {
        wd_fail(err, errlen, "replay: out of memory");
        goto out;
    }
    *out = res, res = NULL;
    rc = 0;
out:
    wd_emu_free(emu);
    wdmoe_result_free(res);
    return rc;
}

int wdmoe_replay(wdmoe_result **out, const wdmoe_scenario *sc, const wdmoe_probs *p,
                 const char *policy, long max_tokens, char *err, size_t errlen) {
    return replay(out, sc, p, policy, NULL, max_tokens, err, errlen);
}

int wdmoe_replay_fn(wdmoe_result **out, const wdmoe_scenario *sc, const wdmoe_probs *p,
                    const char *name, wdmoe_policy_fn fn, void *user, long max_tokens, char *err,
                    size_t errlen) {
    if (!fn) {
        ERRBUF(err, errlen);
        *out = NULL;
        return wd_fail(err, errlen, "replay: no policy function given");
    }
    custom_ctx c = {fn, user, name && *name ? name : "custom", 0, ""};
    return replay(out, sc, p, NULL, &c, max_tokens, err, errlen);
}

/* ---- results ---------------------------------------------------------------------- */
void wdmoe_result_free(wdmoe_result *r) {
    if (!r) return;
    json_object_put(r->run);
    json_object_put(r->flat);
    free(r->lat);
    free(r);
}

int wdmoe_result_get(const wdmoe_result *r, const char *name, double *value) {
    json_object *v;
    if (!name || !json_object_object_get_ex(r->flat, name, &v)) return -1;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return -1;
    *value = json_object_get_double(v);
    return 0;
}

const char *wdmoe_result_name(const wdmoe_result *r, int i) {
    int k = 0;
    json_object_object_foreach(r->flat, key, v) {
        (void)v;
        if (k++ == i) return key;
    }
    return NULL;
}

long wdmoe_result_latencies(const wdmoe_result *r, double *out, long cap) {
    if (out)
        for (long i = 0; i < r->n_lat && i < cap; i++) out[i] = r->lat[i];
    return r->n_lat;
}

char *wdmoe_result_json(const wdmoe_result *r) {
    const char *s = json_object_to_json_string_ext(
        r->run, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    return s ? strdup(s) : NULL;
}
