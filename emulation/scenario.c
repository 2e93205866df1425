/* Scenario files: a strict JSON reader (json-c). Every key is known, every
 * value is range-checked, and errors name the file and the key path,
 * e.g. "cell.json: devices[2].downlink.rate_mbps: -1 is out of range [0, 1e+06]". */
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "emulation/internal.h"

typedef struct {
    const char *file; /* for messages */
    char dir[1024];   /* folder of relative paths */
    char *err;
    size_t errlen;
} pctx;

static int fail(pctx *c, const char *path, const char *fmt, ...) {
    int n = snprintf(c->err, c->errlen, "%s: %s: ", c->file, path);
    if (n < 0 || (size_t)n >= c->errlen) return 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - n, fmt, ap);
    va_end(ap);
    return 1;
}

/* out = path.key (truncated to n - 1 characters) */
static void sub(char *out, size_t n, const char *path, const char *key) {
    size_t k = 0;
    for (const char *s = path; *s && k + 1 < n; s++) out[k++] = *s;
    if (*path && k + 1 < n) out[k++] = '.';
    for (const char *s = key; *s && k + 1 < n; s++) out[k++] = *s;
    out[k] = 0;
}

static json_object *get(json_object *o, const char *key) {
    json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int is_obj(pctx *c, json_object *o, const char *path) {
    if (json_object_is_type(o, json_type_object)) return 0;
    return fail(c, *path ? path : "(top level)", "expected a JSON object");
}

/* Every key of o must be in keys (NULL-terminated). */
static int check_keys(pctx *c, json_object *o, const char *path, const char *const *keys) {
    if (is_obj(c, o, path)) return 1;
    json_object_object_foreach(o, k, v) {
        (void)v;
        int ok = 0;
        for (int i = 0; keys[i] && !ok; i++) ok = !strcmp(keys[i], k);
        if (ok) continue;
        char p[512], known[512] = "";
        sub(p, sizeof p, path, k);
        for (int i = 0; keys[i]; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     keys[i]);
        return fail(c, p, "unknown key (known here: %s)", known);
    }
    return 0;
}

/* Number in [lo, hi] (gt: lo excluded); absent: *out unchanged. */
static int num(pctx *c, json_object *o, const char *path, const char *key, double lo, int gt,
               double hi, double scale, double *out) {
    json_object *v = get(o, key);
    if (!v) return 0;
    char p[512];
    sub(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return fail(c, p, "expected a number");
    double x = json_object_get_double(v);
    if (!isfinite(x) || (gt ? !(x > lo) : !(x >= lo)) || !(x <= hi))
        return fail(c, p, "%g is out of range %c%g, %g]", x, gt ? '(' : '[', lo, hi);
    *out = x * scale;
    return 0;
}

static int integer(pctx *c, json_object *o, const char *path, const char *key, int64_t lo,
                   int64_t hi, int64_t *out) {
    json_object *v = get(o, key);
    if (!v) return 0;
    char p[512];
    sub(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_int)) return fail(c, p, "expected an integer");
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno || x < lo || x > hi)
        return fail(c, p, "%lld is out of range [%lld, %lld]", (long long)x, (long long)lo,
                    (long long)hi);
    *out = x;
    return 0;
}

static int int32(pctx *c, json_object *o, const char *path, const char *key, int lo, int hi,
                 int *out) {
    int64_t x = *out;
    if (integer(c, o, path, key, lo, hi, &x)) return 1;
    *out = (int)x;
    return 0;
}

static int string(pctx *c, json_object *o, const char *path, const char *key, char *out, size_t n) {
    json_object *v = get(o, key);
    if (!v) return 0;
    char p[512];
    sub(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_string)) return fail(c, p, "expected a string");
    const char *s = json_object_get_string(v);
    if (strlen(s) >= n) return fail(c, p, "longer than %zu characters", n - 1);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int choice(pctx *c, json_object *o, const char *path, const char *key,
                  const char *const *names, int *out) {
    json_object *v = get(o, key);
    if (!v) return 0;
    char p[512], known[256] = "";
    sub(p, sizeof p, path, key);
    if (json_object_is_type(v, json_type_string))
        for (int i = 0; names[i]; i++)
            if (!strcmp(names[i], json_object_get_string(v))) return *out = i, 0;
    for (int i = 0; names[i]; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s\"%s\"", i ? ", " : "",
                 names[i]);
    return fail(c, p, "expected one of %s", known);
}

static int boolean(pctx *c, json_object *o, const char *path, const char *key, int *out) {
    json_object *v = get(o, key);
    if (!v) return 0;
    char p[512];
    sub(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_boolean)) return fail(c, p, "expected true or false");
    *out = json_object_get_boolean(v);
    return 0;
}

/* ${VAR} and ${VAR:-default} from the environment; relative results are
 * taken against the scenario's folder. */
static int expand_path(pctx *c, const char *path, const char *in, char *out, size_t n) {
    char buf[2048];
    size_t k = 0;
    for (const char *s = in; *s;) {
        if (s[0] == '$' && s[1] == '{') {
            const char *e = strchr(s, '}');
            if (!e) return fail(c, path, "unterminated ${ in '%s'", in);
            char name[256], *def = NULL;
            size_t len = (size_t)(e - s - 2);
            if (len >= sizeof name) return fail(c, path, "variable name too long");
            memcpy(name, s + 2, len);
            name[len] = 0;
            char *d = strstr(name, ":-");
            if (d) *d = 0, def = d + 2;
            const char *val = getenv(name);
            if (!val || !*val) val = def;
            if (!val) return fail(c, path, "environment variable %s is not set", name);
            size_t vl = strlen(val);
            if (k + vl >= sizeof buf) return fail(c, path, "path too long");
            memcpy(buf + k, val, vl);
            k += vl;
            s = e + 1;
        } else {
            if (k + 1 >= sizeof buf) return fail(c, path, "path too long");
            buf[k++] = *s++;
        }
    }
    buf[k] = 0;
    int r = buf[0] == '/' || !c->dir[0] ? snprintf(out, n, "%s", buf)
                                        : snprintf(out, n, "%s/%s", c->dir, buf);
    if (r < 0 || (size_t)r >= n) return fail(c, path, "path too long");
    return 0;
}

/* ---- defaults ------------------------------------------------------------- */
static void radio_heights(wd_radio *r) {
    r->bs_height_m = r->model == WD_UMA ? 25.0 : r->model == WD_UMI ? 10.0 : 3.0;
    r->ue_height_m = r->model == WD_INH ? 1.0 : 1.5;
}

static void defaults(wd_scenario *sc) {
    memset(sc, 0, sizeof *sc);
    snprintf(sc->name, sizeof sc->name, "scenario");
    sc->seed = 1;
    wd_radio *r = &sc->radio;
    r->model = WD_UMA;
    r->carrier_ghz = 3.5;
    r->bandwidth_hz[WD_DL] = 100e6, r->bandwidth_hz[WD_UL] = 100e6;
    r->bs_tx_power_dbm = 46.0, r->ue_tx_power_dbm = 23.0;
    r->bs_antenna_gain_dbi = 15.0, r->ue_antenna_gain_dbi = 0.0;
    r->noise_density_dbm_hz = -174.0;
    r->bs_noise_figure_db = 5.0, r->ue_noise_figure_db = 9.0;
    radio_heights(r);
    r->los = WD_LOS_PROBABILITY;
    r->shadowing = 1;
    r->fading = WD_FADING_RAYLEIGH;
    r->rician_k_db = 9.0;
    r->speed_mps = 1.0;
    r->sample_period_s = 1e-3;
    r->outage_snr_db = -10.0;
    r->latency_s = 0.0;
    r->link_adaptation = WD_LA_CQI;
    r->snr_gap_db = 0.0;
    wd_air_defaults(&r->air, 1);
    wd_profile_preset("bs-a100", &sc->bs);
    sc->activation_bits = 16;
    snprintf(sc->policy, sizeof sc->policy, "topk");
    wd_policy_defaults(&sc->params);
    sc->alloc = WD_ALLOC_EQUAL;
    sc->max_wait_s = 60.0;
}

static void device_defaults(wd_device_spec *d, const wd_radio *r) {
    memset(d, 0, sizeof *d);
    wd_profile_preset("phone", &d->profile);
    d->x_m = d->y_m = NAN;
    d->speed_mps = r->speed_mps;
    d->los = r->los;
    for (int k = 0; k < 2; k++) {
        wd_link_spec *l = &d->link[k];
        l->model = WD_LINK_SYNTHETIC;
        l->rate_bps = NAN;
        l->csv_device = -1;
        l->window_s = 0.1;
        l->rate_scale = 1.0;
        l->latency_s = r->latency_s;
        l->air = -1;
        l->shared = -1;
    }
}

const char *wd_alloc_name(wd_alloc_mode m) {
    return m == WD_ALLOC_MINMAX ? "minmax" : m == WD_ALLOC_JOINT ? "joint" : "equal";
}

/* ---- parts ------------------------------------------------------------------- */
static const char *const model_names[] = {"UMa", "UMi", "InH", NULL};
static const char *const los_names[] = {"probability", "los", "nlos", NULL};
static const char *const fading_names[] = {"none", "rayleigh", "rician", NULL};
static const char *const link_names[] = {"synthetic", "constant", "csv", "mahimahi", NULL};
static const char *const alloc_names[] = {"equal", "minmax", "joint", NULL};
static const char *const compute_names[] = {"modeled", "measured", NULL};
static const char *const la_names[] = {"cqi", "shannon", NULL};
static const char *const duplex_names[] = {"tdd", "fdd", NULL};
static const char *const ul_sched_names[] = {"dynamic", "configured", NULL};

static int parse_air(pctx *c, json_object *o, wd_air *a) {
    static const char *const keys[] = {"enabled",
                                       "numerology",
                                       "duplex",
                                       "tdd_pattern",
                                       "special_slot_symbols",
                                       "gnb_processing_symbols",
                                       "ue_pdsch_processing_symbols",
                                       "ue_pusch_preparation_symbols",
                                       "pdcch_symbols",
                                       "uplink_scheduling",
                                       "harq_bler",
                                       "harq_max_retx",
                                       NULL};
    const char *P = "radio.air_interface";
    int mu = a->numerology, dup = a->duplex, uls = a->ul_sched;
    if (check_keys(c, o, P, keys) || int32(c, o, P, "numerology", 0, 4, &mu)) return 1;
    if (mu != a->numerology) { /* processing defaults follow the numerology */
        wd_air d;
        wd_air_defaults(&d, mu);
        a->numerology = mu, a->n1_sym = d.n1_sym, a->n2_sym = d.n2_sym;
        a->gnb_proc_sym = d.gnb_proc_sym;
    }
    if (boolean(c, o, P, "enabled", &a->enabled) || choice(c, o, P, "duplex", duplex_names, &dup) ||
        string(c, o, P, "tdd_pattern", a->pattern, sizeof a->pattern) ||
        num(c, o, P, "gnb_processing_symbols", 0, 0, 1e4, 1, &a->gnb_proc_sym) ||
        num(c, o, P, "ue_pdsch_processing_symbols", 0, 0, 1e4, 1, &a->n1_sym) ||
        num(c, o, P, "ue_pusch_preparation_symbols", 0, 0, 1e4, 1, &a->n2_sym) ||
        num(c, o, P, "pdcch_symbols", 0, 0, 14, 1, &a->pdcch_sym) ||
        choice(c, o, P, "uplink_scheduling", ul_sched_names, &uls) ||
        num(c, o, P, "harq_bler", 0, 0, 0.99, 1, &a->bler) ||
        int32(c, o, P, "harq_max_retx", 0, 32, &a->max_retx))
        return 1;
    a->duplex = (wd_duplex)dup, a->ul_sched = (wd_ul_scheduling)uls;
    json_object *v = get(o, "special_slot_symbols");
    char p[512], e[256];
    if (v) {
        sub(p, sizeof p, P, "special_slot_symbols");
        if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) != 3)
            return fail(c, p, "expected [downlink, guard, uplink] symbols");
        for (int i = 0; i < 3; i++) {
            json_object *x = json_object_array_get_idx(v, i);
            if (!json_object_is_type(x, json_type_int))
                return fail(c, p, "expected [downlink, guard, uplink] symbols");
            int64_t k = json_object_get_int64(x);
            if (k < 0 || k > 14) return fail(c, p, "entry %d: %lld is out of range [0, 14]", i,
                                             (long long)k);
            a->special[i] = (int)k;
        }
    }
    if (wd_air_check(a, e, sizeof e)) return fail(c, P, "%s", e);
    return 0;
}

static int parse_radio(pctx *c, json_object *o, wd_radio *r) {
    static const char *const keys[] = {"model",
                                       "carrier_ghz",
                                       "downlink_bandwidth_mhz",
                                       "uplink_bandwidth_mhz",
                                       "bs_tx_power_dbm",
                                       "ue_tx_power_dbm",
                                       "bs_antenna_gain_dbi",
                                       "ue_antenna_gain_dbi",
                                       "noise_density_dbm_hz",
                                       "bs_noise_figure_db",
                                       "ue_noise_figure_db",
                                       "bs_height_m",
                                       "ue_height_m",
                                       "los",
                                       "shadowing",
                                       "fading",
                                       "rician_k_db",
                                       "speed_mps",
                                       "sample_period_s",
                                       "fading_block_s",
                                       "outage_snr_db",
                                       "latency_s",
                                       "link_adaptation",
                                       "snr_gap_db",
                                       "air_interface",
                                       NULL};
    const char *P = "radio";
    int m = r->model, los = r->los, fad = r->fading;
    if (check_keys(c, o, P, keys) || choice(c, o, P, "model", model_names, &m)) return 1;
    r->model = (wd_pathloss_model)m;
    radio_heights(r);
    double hbs_max = r->model == WD_UMA ? 150 : r->model == WD_UMI ? 50 : 10;
    if (num(c, o, P, "carrier_ghz", 0.5, 0, 100, 1, &r->carrier_ghz) ||
        num(c, o, P, "downlink_bandwidth_mhz", 0, 1, 2000, 1e6, &r->bandwidth_hz[WD_DL]) ||
        num(c, o, P, "uplink_bandwidth_mhz", 0, 1, 2000, 1e6, &r->bandwidth_hz[WD_UL]) ||
        num(c, o, P, "bs_tx_power_dbm", -30, 0, 80, 1, &r->bs_tx_power_dbm) ||
        num(c, o, P, "ue_tx_power_dbm", -30, 0, 40, 1, &r->ue_tx_power_dbm) ||
        num(c, o, P, "bs_antenna_gain_dbi", -20, 0, 60, 1, &r->bs_antenna_gain_dbi) ||
        num(c, o, P, "ue_antenna_gain_dbi", -20, 0, 30, 1, &r->ue_antenna_gain_dbi) ||
        num(c, o, P, "noise_density_dbm_hz", -220, 0, -100, 1, &r->noise_density_dbm_hz) ||
        num(c, o, P, "bs_noise_figure_db", 0, 0, 30, 1, &r->bs_noise_figure_db) ||
        num(c, o, P, "ue_noise_figure_db", 0, 0, 30, 1, &r->ue_noise_figure_db) ||
        num(c, o, P, "bs_height_m", 1.5, 1, hbs_max, 1, &r->bs_height_m) ||
        num(c, o, P, "ue_height_m", 1.0, 0, 22.5, 1, &r->ue_height_m) ||
        choice(c, o, P, "los", los_names, &los) || boolean(c, o, P, "shadowing", &r->shadowing) ||
        choice(c, o, P, "fading", fading_names, &fad) ||
        num(c, o, P, "rician_k_db", -30, 0, 40, 1, &r->rician_k_db) ||
        num(c, o, P, "speed_mps", 0, 0, 150, 1, &r->speed_mps) ||
        num(c, o, P, "sample_period_s", 1e-5, 0, 1, 1, &r->sample_period_s) ||
        num(c, o, P, "outage_snr_db", -60, 0, 60, 1, &r->outage_snr_db) ||
        num(c, o, P, "latency_s", 0, 0, 10, 1, &r->latency_s))
        return 1;
    json_object *fb = get(o, "fading_block_s");
    if (fb && json_object_is_type(fb, json_type_string)) {
        if (strcmp(json_object_get_string(fb), "coherence"))
            return fail(c, "radio.fading_block_s", "expected \"coherence\" or seconds, not \"%s\"",
                        json_object_get_string(fb));
        r->fading_block_s = WD_FADING_BLOCK_COHERENCE;
    } else if (num(c, o, P, "fading_block_s", 1e-5, 0, WD_FADING_BLOCK_MAX_S, 1,
                   &r->fading_block_s)) {
        return 1;
    }
    int la = r->link_adaptation;
    if (choice(c, o, P, "link_adaptation", la_names, &la) ||
        num(c, o, P, "snr_gap_db", 0, 0, 30, 1, &r->snr_gap_db))
        return 1;
    r->link_adaptation = (wd_link_adaptation)la;
    json_object *air = get(o, "air_interface");
    if (air && (is_obj(c, air, "radio.air_interface") || parse_air(c, air, &r->air))) return 1;
    if (r->ue_height_m >= r->bs_height_m)
        return fail(c, "radio.ue_height_m", "must be below bs_height_m");
    r->los = (wd_los_mode)los, r->fading = (wd_fading_kind)fad;
    return 0;
}

static int parse_profile(pctx *c, json_object *v, const char *path, wd_compute_profile *p) {
    if (json_object_is_type(v, json_type_string)) {
        if (!wd_profile_preset(json_object_get_string(v), p)) return 0;
        char known[512] = "";
        for (int i = 0; wd_profile_preset_name(i); i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     wd_profile_preset_name(i));
        return fail(c, path, "unknown preset '%s' (known: %s)", json_object_get_string(v), known);
    }
    static const char *const keys[] = {"preset", "peak_tflops", "mem_bw_gbs",  "efficiency",
                                       "overhead_us", "mem_gb", "calibration", "gpu_sms",
                                       "idle_w", "busy_w", NULL};
    if (check_keys(c, v, path, keys)) return 1;
    json_object *pre = get(v, "preset");
    if (pre) {
        char ppath[512];
        sub(ppath, sizeof ppath, path, "preset");
        if (parse_profile(c, pre, ppath, p)) return 1;
    }
    return num(c, v, path, "peak_tflops", 0, 1, 1e6, 1e12, &p->peak_flops) ||
           num(c, v, path, "mem_bw_gbs", 0, 1, 1e6, 1e9, &p->mem_bw) ||
           num(c, v, path, "efficiency", 0, 1, 1, 1, &p->efficiency) ||
           num(c, v, path, "overhead_us", 0, 0, 1e7, 1e-6, &p->overhead_s) ||
           num(c, v, path, "mem_gb", 0, 0, 1e6, 1e9, &p->mem_capacity) ||
           num(c, v, path, "calibration", 0, 1, 1e6, 1, &p->calibration) ||
           int32(c, v, path, "gpu_sms", 0, 4096, &p->gpu_sms) ||
           num(c, v, path, "idle_w", 0, 0, 1e6, 1, &p->idle_w) ||
           num(c, v, path, "busy_w", 0, 0, 1e6, 1, &p->busy_w) ||
           (p->busy_w < p->idle_w && fail(c, path, "busy_w %g is below idle_w %g", p->busy_w,
                                          p->idle_w));
}

static int parse_link(pctx *c, json_object *o, const char *path, wd_link_spec *l) {
    if (is_obj(c, o, path)) return 1;
    int m = l->model;
    if (choice(c, o, path, "model", link_names, &m)) return 1;
    l->model = (wd_link_model)m;
    static const char *const k_syn[] = {"model", "latency_s", "rate_scale", "air_interface",
                                        "shared_capacity", NULL};
    static const char *const k_const[] = {"model",     "latency_s",     "rate_scale",
                                          "rate_mbps", "air_interface", "shared_capacity",
                                          NULL};
    static const char *const k_csv[] = {"model",  "latency_s", "rate_scale", "file",
                                        "column", "device",    "offset_s",   "air_interface",
                                        "shared_capacity", "offset_jitter_s", NULL};
    static const char *const k_mm[] = {"model",    "latency_s", "rate_scale",    "file",
                                       "offset_s", "window_s",  "air_interface",
                                       "shared_capacity", "offset_jitter_s", NULL};
    const char *const *keys = m == WD_LINK_SYNTHETIC  ? k_syn
                              : m == WD_LINK_CONSTANT ? k_const
                              : m == WD_LINK_CSV      ? k_csv
                                                      : k_mm;
    if (check_keys(c, o, path, keys) || num(c, o, path, "latency_s", 0, 0, 10, 1, &l->latency_s) ||
        num(c, o, path, "rate_scale", 0, 0, 1e6, 1, &l->rate_scale) ||
        num(c, o, path, "rate_mbps", 0, 0, 1e7, 1e6, &l->rate_bps) ||
        string(c, o, path, "column", l->column, sizeof l->column) ||
        int32(c, o, path, "device", 0, WD_MAX_DEVICES - 1, &l->csv_device) ||
        num(c, o, path, "offset_s", 0, 0, 1e9, 1, &l->offset_s) ||
        num(c, o, path, "offset_jitter_s", 0, 0, 1e9, 1, &l->offset_jitter_s) ||
        num(c, o, path, "window_s", 1e-3, 0, 3600, 1, &l->window_s))
        return 1;
    if (get(o, "air_interface")) {
        int on = 0;
        if (boolean(c, o, path, "air_interface", &on)) return 1;
        l->air = on;
    }
    if (get(o, "shared_capacity")) {
        int on = 0;
        if (boolean(c, o, path, "shared_capacity", &on)) return 1;
        l->shared = on;
    }
    json_object *f = get(o, "file");
    if (f) {
        char p[512], raw[1024] = "";
        sub(p, sizeof p, path, "file");
        if (string(c, o, path, "file", raw, sizeof raw) ||
            expand_path(c, p, raw, l->file, sizeof l->file))
            return 1;
    }
    return 0;
}

static int parse_device(pctx *c, json_object *o, const char *path, wd_device_spec *d,
                        int is_template) {
    static const char *const keys[] = {"name", "profile",  "distance_m", "position_m", "speed_mps",
                                       "los",  "downlink", "uplink",     "experts",    NULL};
    char p[512];
    if (check_keys(c, o, path, keys) || string(c, o, path, "name", d->name, sizeof d->name))
        return 1;
    json_object *v;
    if ((v = get(o, "profile"))) {
        sub(p, sizeof p, path, "profile");
        if (parse_profile(c, v, p, &d->profile)) return 1;
    }
    json_object *dist = get(o, "distance_m"), *pos = get(o, "position_m");
    if (dist && pos) return fail(c, path, "give distance_m or position_m, not both");
    if (dist) {
        double r = 0;
        if (num(c, o, path, "distance_m", 0, 0, 1e5, 1, &r)) return 1;
        d->x_m = r, d->y_m = 0;
    }
    if (pos) {
        sub(p, sizeof p, path, "position_m");
        if (!json_object_is_type(pos, json_type_array) || json_object_array_length(pos) != 2)
            return fail(c, p, "expected [x, y] in metres");
        double xy[2];
        for (int i = 0; i < 2; i++) {
            json_object *e = json_object_array_get_idx(pos, i);
            if (!json_object_is_type(e, json_type_double) && !json_object_is_type(e, json_type_int))
                return fail(c, p, "expected [x, y] in metres");
            xy[i] = json_object_get_double(e);
            if (!isfinite(xy[i]) || fabs(xy[i]) > 1e5) return fail(c, p, "coordinate out of range");
        }
        d->x_m = xy[0], d->y_m = xy[1];
    }
    int los = d->los;
    if (num(c, o, path, "speed_mps", 0, 0, 150, 1, &d->speed_mps) ||
        choice(c, o, path, "los", los_names, &los))
        return 1;
    d->los = (wd_los_mode)los;
    for (int k = 0; k < 2; k++) {
        const char *key = k == WD_DL ? "downlink" : "uplink";
        if ((v = get(o, key))) {
            sub(p, sizeof p, path, key);
            if (parse_link(c, v, p, &d->link[k])) return 1;
        }
    }
    if ((v = get(o, "experts"))) {
        sub(p, sizeof p, path, "experts");
        if (is_template) return fail(c, p, "not allowed in device_defaults");
        if (!json_object_is_type(v, json_type_array))
            return fail(c, p, "expected an array of expert ids");
        int n = (int)json_object_array_length(v);
        if (n > 4096) return fail(c, p, "too many experts");
        free(d->hosted);
        d->hosted = malloc((n ? n : 1) * sizeof(int));
        if (!d->hosted) return fail(c, p, "out of memory");
        d->n_hosted = n;
        for (int i = 0; i < n; i++) {
            json_object *e = json_object_array_get_idx(v, i);
            int64_t x = json_object_is_type(e, json_type_int) ? json_object_get_int64(e) : -1;
            if (x < 0 || x >= 4096)
                return fail(c, p, "entry %d: expected an expert id in [0, 4095]", i);
            for (int j = 0; j < i; j++)
                if (d->hosted[j] == x) return fail(c, p, "expert %lld listed twice", (long long)x);
            d->hosted[i] = (int)x;
        }
    }
    return 0;
}

/* After merging: required keys per link model, distances for synthetic links. */
static int check_device(pctx *c, const char *path, wd_device_spec *d, const wd_radio *r) {
    int synthetic = 0;
    char p[512];
    for (int k = 0; k < 2; k++) {
        wd_link_spec *l = &d->link[k];
        sub(p, sizeof p, path, k == WD_DL ? "downlink" : "uplink");
        if (l->model == WD_LINK_SYNTHETIC) synthetic = 1;
        if (l->model == WD_LINK_CONSTANT && isnan(l->rate_bps))
            return fail(c, p, "model constant needs rate_mbps");
        if ((l->model == WD_LINK_CSV || l->model == WD_LINK_MAHIMAHI) && !l->file[0])
            return fail(c, p, "model %s needs file", link_names[l->model]);
    }
    if (!synthetic) return 0;
    if (isnan(d->x_m)) return fail(c, path, "synthetic links need distance_m or position_m");
    double d2 = hypot(d->x_m, d->y_m), lo = r->model == WD_INH ? 1.0 : 10.0,
           hi = r->model == WD_INH ? 150.0 : 5000.0;
    if (!(d2 >= lo && d2 <= hi))
        return fail(c, path, "distance %g m is out of the %s model's range [%g, %g]", d2,
                    model_names[r->model], lo, hi);
    return 0;
}

static int parse_policy(pctx *c, json_object *v, wd_scenario *sc) {
    const char *P = "policy";
    if (json_object_is_type(v, json_type_string)) {
        snprintf(sc->policy, sizeof sc->policy, "%s", json_object_get_string(v));
    } else {
        static const char *const keys[] = {"name",  "alpha", "dtheta", "gamma",
                                           "theta", "m",     "quality", NULL};
        if (check_keys(c, v, P, keys) || string(c, v, P, "name", sc->policy, sizeof sc->policy) ||
            num(c, v, P, "alpha", 0, 0, 1, 1, &sc->params.alpha) ||
            num(c, v, P, "dtheta", 1e-3, 0, 1, 1, &sc->params.dtheta) ||
            num(c, v, P, "gamma", 0, 1, 100, 1, &sc->params.gamma) ||
            num(c, v, P, "theta", 0, 0, 1, 1, &sc->params.theta) ||
            int32(c, v, P, "m", 0, 4096, &sc->params.m) ||
            num(c, v, P, "quality", 0, 0, 1, 1, &sc->params.quality))
            return 1;
    }
    if (!wd_policy_find(sc->policy)) {
        char known[256];
        wd_policy_names(known, sizeof known);
        return fail(c, json_object_is_type(v, json_type_string) ? "policy" : "policy.name",
                    "unknown policy '%s' (known: %s)", sc->policy, known);
    }
    return 0;
}

static int parse_workload(pctx *c, json_object *o, wd_workload *w) {
    static const char *const keys[] = {"users",       "rate_per_s",   "max_new_tokens",
                                       "prefill_chunk", "kv_budget_mb", "max_batch",
                                       "tpot_slo_ms", "ttft_slo_ms",  "prompts",
                                       "trace",       "micro_batches", NULL};
    const char *P = "workload";
    if (is_obj(c, o, P) || check_keys(c, o, P, keys) ||
        int32(c, o, P, "users", 1, 1000000, &w->users) ||
        num(c, o, P, "rate_per_s", 0, 1, 1e9, 1, &w->rate_per_s) ||
        int32(c, o, P, "max_new_tokens", 1, 1 << 24, &w->max_new_tokens) ||
        int32(c, o, P, "prefill_chunk", 1, 1 << 24, &w->prefill_chunk) ||
        num(c, o, P, "kv_budget_mb", 0, 0, 1e9, 1e6, &w->kv_budget_bytes) ||
        int32(c, o, P, "max_batch", 0, 1 << 24, &w->max_batch) ||
        int32(c, o, P, "micro_batches", 1, 4096, &w->micro_batches) ||
        num(c, o, P, "tpot_slo_ms", 0, 0, 1e9, 1e-3, &w->tpot_slo_s) ||
        num(c, o, P, "ttft_slo_ms", 0, 0, 1e9, 1e-3, &w->ttft_slo_s))
        return 1;
    const char *files[] = {"prompts", "trace"};
    char *out[] = {w->prompts, w->trace};
    for (int i = 0; i < 2; i++) {
        if (!get(o, files[i])) continue;
        char p[512], raw[1024] = "";
        sub(p, sizeof p, P, files[i]);
        if (string(c, o, P, files[i], raw, sizeof raw) ||
            expand_path(c, p, raw, out[i], sizeof w->prompts))
            return 1;
    }
    return 0;
}

static int parse_faults(pctx *c, json_object *v, wd_scenario *sc) {
    if (!json_object_is_type(v, json_type_array)) return fail(c, "faults", "expected an array");
    int n = (int)json_object_array_length(v);
    sc->faults = calloc(n ? n : 1, sizeof *sc->faults);
    if (!sc->faults) return fail(c, "faults", "out of memory");
    static const char *const kinds[] = {"down", "link", "slow", NULL};
    static const char *const dirs[] = {"downlink", "uplink", "both", NULL};
    static const char *const k_down[] = {"device", "kind", "from_s", "to_s", NULL};
    static const char *const k_link[] = {"device",    "kind",  "from_s", "to_s",
                                         "direction", "scale", NULL};
    static const char *const k_slow[] = {"device", "kind", "from_s", "to_s", "factor", NULL};
    for (int i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(v, i);
        char p[64];
        snprintf(p, sizeof p, "faults[%d]", i);
        if (is_obj(c, o, p)) return 1;
        wd_fault *f = &sc->faults[i];
        int kind = -1, dir = 2;
        f->device = -1, f->from_s = 0, f->to_s = INFINITY, f->value = NAN;
        if (choice(c, o, p, "kind", kinds, &kind)) return 1;
        if (kind < 0) return fail(c, p, "needs kind (\"down\", \"link\" or \"slow\")");
        f->kind = (wd_fault_kind)kind;
        if (check_keys(c, o, p,
                       kind == 0   ? k_down
                       : kind == 1 ? k_link
                                   : k_slow) ||
            int32(c, o, p, "device", 0, sc->n_devices - 1, &f->device) ||
            num(c, o, p, "from_s", 0, 0, 1e9, 1, &f->from_s) ||
            num(c, o, p, "to_s", 0, 0, 1e9, 1, &f->to_s) ||
            choice(c, o, p, "direction", dirs, &dir) ||
            num(c, o, p, "scale", 0, 0, 1e6, 1, &f->value) ||
            num(c, o, p, "factor", 0, 1, 1e6, 1, &f->value))
            return 1;
        if (f->device < 0) return fail(c, p, "needs device");
        if (!(f->to_s > f->from_s)) return fail(c, p, "to_s must be after from_s");
        if (kind != WD_FAULT_DOWN && isnan(f->value))
            return fail(c, p, "needs %s", kind == WD_FAULT_LINK ? "scale" : "factor");
        f->dir_mask = dir == 0 ? 1 << WD_DL : dir == 1 ? 1 << WD_UL : 3;
        sc->n_faults = i + 1;
    }
    return 0;
}

static int parse_root(pctx *c, json_object *root, wd_scenario *sc) {
    static const char *const keys[] = {"name",
                                       "description",
                                       "seed",
                                       "activation_bits",
                                       "max_wait_s",
                                       "radio",
                                       "bs",
                                       "policy",
                                       "bandwidth_allocation",
                                       "device_defaults",
                                       "devices",
                                       "device_count",
                                       "faults",
                                       "compute",
                                       "workload",
                                       NULL};
    if (check_keys(c, root, "", keys) || string(c, root, "", "name", sc->name, sizeof sc->name))
        return 1;
    json_object *v;
    if ((v = get(root, "description")) && !json_object_is_type(v, json_type_string))
        return fail(c, "description", "expected a string");
    int64_t seed = (int64_t)sc->seed;
    int alloc = sc->alloc;
    if (choice(c, root, "", "compute", compute_names, &sc->compute_measured)) return 1;
    if (integer(c, root, "", "seed", 0, INT64_MAX, &seed) ||
        int32(c, root, "", "activation_bits", 1, 64, &sc->activation_bits) ||
        num(c, root, "", "max_wait_s", 0, 1, 3600, 1, &sc->max_wait_s) ||
        choice(c, root, "", "bandwidth_allocation", alloc_names, &alloc))
        return 1;
    sc->seed = (uint64_t)seed, sc->alloc = (wd_alloc_mode)alloc;
    if (sc->activation_bits != 8 && sc->activation_bits != 16 && sc->activation_bits != 32)
        return fail(c, "activation_bits", "%d is not 8, 16 or 32", sc->activation_bits);
    if ((v = get(root, "radio")) && parse_radio(c, v, &sc->radio)) return 1;
    if ((v = get(root, "bs")) && parse_profile(c, v, "bs", &sc->bs)) return 1;
    if ((v = get(root, "policy")) && parse_policy(c, v, sc)) return 1;

    wd_device_spec tmpl;
    device_defaults(&tmpl, &sc->radio);
    if ((v = get(root, "device_defaults")) && parse_device(c, v, "device_defaults", &tmpl, 1))
        return 1;
    json_object *list = get(root, "devices");
    int n_list = 0, count = -1;
    if (list && !json_object_is_type(list, json_type_array))
        return fail(c, "devices", "expected an array of devices");
    if (list) n_list = (int)json_object_array_length(list);
    if (int32(c, root, "", "device_count", 1, WD_MAX_DEVICES, &count)) return 1;
    if (count < 0) count = n_list;
    if (count < 1) return fail(c, "devices", "no devices (give devices or device_count)");
    if (n_list > WD_MAX_DEVICES) return fail(c, "devices", "more than %d devices", WD_MAX_DEVICES);
    if (count < n_list)
        return fail(c, "device_count", "%d is less than the %d devices listed", count, n_list);
    sc->dev = calloc(count, sizeof *sc->dev);
    if (!sc->dev) return fail(c, "devices", "out of memory");
    sc->n_devices = count;
    for (int i = 0; i < count; i++) {
        char p[64];
        snprintf(p, sizeof p, "devices[%d]", i);
        sc->dev[i] = tmpl;
        snprintf(sc->dev[i].name, sizeof sc->dev[i].name, "device-%d", i);
        if (i < n_list && parse_device(c, json_object_array_get_idx(list, i), p, &sc->dev[i], 0))
            return 1;
        if (check_device(c, p, &sc->dev[i], &sc->radio)) return 1;
    }
    if ((v = get(root, "faults")) && parse_faults(c, v, sc)) return 1;
    if ((v = get(root, "workload")) && parse_workload(c, v, &sc->workload)) return 1;
    return 0;
}

int wd_scenario_parse(wd_scenario *sc, const char *text, const char *path, char *err,
                      size_t errlen) {
    defaults(sc);
    pctx c = {path && *path ? path : "(scenario)", "", err, errlen};
    if (path) {
        snprintf(sc->path, sizeof sc->path, "%s", path);
        const char *slash = strrchr(path, '/');
        if (slash) snprintf(c.dir, sizeof c.dir, "%.*s", (int)(slash - path), path);
        if (slash == path) snprintf(c.dir, sizeof c.dir, "/");
    }
    json_tokener *tok = json_tokener_new();
    if (!tok) return wd_fail(err, errlen, "%s: out of memory", c.file);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    size_t len = strlen(text);
    json_object *root = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (root && je == json_tokener_success)
        for (size_t i = end; i < len; i++)
            if (!strchr(" \t\r\n", text[i])) {
                je = json_tokener_error_parse_unexpected, end = i;
                break;
            }
    if (!root || je != json_tokener_success) {
        int line = 1;
        for (size_t i = 0; i < end && i < len; i++) line += text[i] == '\n';
        snprintf(err, errlen, "%s:%d: JSON syntax error: %s", c.file, line,
                 je == json_tokener_continue ? "unexpected end of file"
                                             : json_tokener_error_desc(je));
        json_object_put(root);
        return 1;
    }
    int rc = parse_root(&c, root, sc);
    json_object_put(root);
    if (rc) wd_scenario_free(sc);
    return rc;
}

int wd_scenario_load(wd_scenario *sc, const char *path, char *err, size_t errlen) {
    memset(sc, 0, sizeof *sc);
    FILE *f = wd_open_input(path, WD_MAX_TEXT_INPUT, err, errlen);
    if (!f) return 1;
    size_t cap = 1 << 14, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) free(buf);
        buf = nb, cap *= 2;
    }
    fclose(f);
    if (!buf) return wd_fail(err, errlen, "%s: out of memory", path);
    buf[n] = 0;
    if (strlen(buf) != n) {
        free(buf);
        return wd_fail(err, errlen, "%s: not a text file (NUL byte)", path);
    }
    int rc = wd_scenario_parse(sc, buf, path, err, errlen);
    free(buf);
    return rc;
}

void wd_scenario_free(wd_scenario *sc) {
    if (sc->dev)
        for (int i = 0; i < sc->n_devices; i++) free(sc->dev[i].hosted);
    free(sc->dev);
    free(sc->faults);
    sc->dev = NULL, sc->faults = NULL;
    sc->n_devices = sc->n_faults = 0;
}

int wd_scenario_default(wd_scenario *sc, int n, char *err, size_t errlen) {
    defaults(sc);
    if (n < 1 || n > WD_MAX_DEVICES)
        return wd_fail(err, errlen, "scenario: %d devices is out of range [1, %d]", n,
                       WD_MAX_DEVICES);
    sc->dev = calloc(n, sizeof *sc->dev);
    if (!sc->dev) return wd_fail(err, errlen, "scenario: out of memory");
    sc->n_devices = n;
    static const char *const cls[] = {"phone", "jetson-orin-nx", "laptop", "jetson-agx-orin"};
    for (int i = 0; i < n; i++) {
        device_defaults(&sc->dev[i], &sc->radio);
        snprintf(sc->dev[i].name, sizeof sc->dev[i].name, "device-%d", i);
        wd_profile_preset(cls[i * 4 / n], &sc->dev[i].profile);
        sc->dev[i].x_m = n > 1 ? 50.0 + 450.0 * i / (n - 1) : 100.0;
        sc->dev[i].y_m = 0.0;
    }
    snprintf(sc->name, sizeof sc->name, "default-%d", n);
    return 0;
}
