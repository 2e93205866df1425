/* The BS scheduler's hooks for the GPU backend, on the CPU (no GPU needed):
 *  - measured compute: select() only chooses; wd_scheduler_expert_times then
 *    takes the layer step with each device's compute time = sum over the
 *    experts it serves of the kernel seconds x its profile's calibration
 *    (checked in the step record against values computed here);
 *  - real-time link delays: the last step's downlink/uplink time of the
 *    device serving an expert, in ns, equal to the step record; 0 for an
 *    expert whose device is idle;
 *  - wd_scenario_expert_home agrees with the emulator's placement (the
 *    first replica) for the default placements and a listed one;
 *  - the scenario keys "compute", "calibration", "gpu_sms" and their errors. */
#include <json-c/json.h>
#include <math.h>
#include <string.h>

#include "host/host.h"
#include "tests/test_util.h"

#define MODEL WD_SOURCE_DIR "/weights/models/stories260k/moe4-top2"

/* 2 devices, 4 experts (default placement: device d hosts d and d + 2),
 * constant links, device 1 calibrated x2 */
static const char *SCEN =
    "{\"name\": \"gpu-hooks\", \"seed\": 3, \"compute\": \"%s\", \"device_count\": 2,"
    " \"device_defaults\": {\"profile\": \"phone\", \"downlink\": {\"model\": \"constant\","
    " \"rate_mbps\": 100, \"latency_s\": 0.001}, \"uplink\": {\"model\": \"constant\","
    " \"rate_mbps\": 50, \"latency_s\": 0.002}},"
    " \"devices\": [{}, {\"profile\": {\"preset\": \"phone\", \"calibration\": 2.0, \"gpu_sms\": 16}}]}";

static wd_scheduler *make(const wd_model *m, const char *compute, wd_scenario *sc) {
    char text[1024], err[512];
    snprintf(text, sizeof text, SCEN, compute);
    if (wd_scenario_parse(sc, text, "gpu-hooks.json", err, sizeof err)) {
        CHECKF(0, "scenario: %s", err);
        return NULL;
    }
    wd_scheduler *k;
    if (wd_scheduler_create(&k, m, sc, err, sizeof err)) {
        CHECKF(0, "scheduler: %s", err);
        wd_scenario_free(sc);
        return NULL;
    }
    return k;
}

/* the last JSON line of f */
static json_object *last_record(FILE *f) {
    fflush(f);
    rewind(f);
    char line[8192], last[8192] = "";
    while (fgets(line, sizeof line, f)) strcpy(last, line);
    return json_tokener_parse(last);
}

static double dev_field(json_object *rec, int device, const char *key) {
    json_object *devs, *v;
    if (!rec || !json_object_object_get_ex(rec, "devices", &devs)) return NAN;
    for (size_t i = 0; i < json_object_array_length(devs); i++) {
        json_object *d = json_object_array_get_idx(devs, i), *id;
        if (json_object_object_get_ex(d, "device", &id) && json_object_get_int(id) == device &&
            json_object_object_get_ex(d, key, &v))
            return json_object_get_double(v);
    }
    return NAN;
}

/* one token whose top-2 are experts a and b */
static void select_two(wd_moe_hooks *h, int layer, int a, int b, wd_selection *sel, int *n,
                       int *ex, float *w) {
    float probs[4] = {0.05f, 0.05f, 0.05f, 0.05f};
    probs[a] = 0.5f;
    probs[b] = 0.35f;
    sel->n_tokens = 1;
    sel->n_experts = 4;
    sel->n = n;
    sel->expert = ex;
    sel->weight = w;
    n[0] = 2, ex[0] = a, ex[1] = b, w[0] = 0.6f, w[1] = 0.4f;
    CHECK(h->select(h->ctx, layer, 0, probs, sel) == 0);
}

static void test_measured(const wd_model *m) {
    wd_scenario sc;
    wd_scheduler *k = make(m, "measured", &sc);
    if (!k) return;
    FILE *rec = tmpfile();
    wd_scheduler_record_steps(k, rec);
    wd_scheduler_set_measured(k, sc.compute_measured);
    CHECK(wd_scheduler_measured(k) == 1);
    wd_moe_hooks h;
    wd_scheduler_hooks(k, &h);
    wd_selection sel;
    int n[1], ex[4];
    float w[4];
    /* experts 1 and 3: both on device 1 (calibration 2) */
    select_two(&h, 0, 1, 3, &sel, n, ex, w);
    double clock0 = wd_emu_time(wd_scheduler_emu(k));
    double secs[4] = {-1, 0.003, -1, 0.002};
    CHECK(wd_scheduler_expert_times(k, 0, secs, 4) == 0);
    json_object *r = last_record(rec);
    CHECKF(r != NULL, "no step record after the expert times");
    double tc = dev_field(r, 1, "t_c");
    CHECK_NEAR(tc, (0.003 + 0.002) * 2.0, 1e-12);
    CHECKF(isnan(dev_field(r, 0, "t_c")), "device 0 should be idle");
    double tdl = dev_field(r, 1, "t_dl"), tul = dev_field(r, 1, "t_ul");
    json_object *v;
    double wait = NAN, tbs = NAN;
    if (json_object_object_get_ex(r, "wait", &v)) wait = json_object_get_double(v);
    if (json_object_object_get_ex(r, "t_bs", &v)) tbs = json_object_get_double(v);
    CHECK_NEAR(wait, tdl + tc + tul, 1e-12);
    CHECK_NEAR(wd_emu_time(wd_scheduler_emu(k)) - clock0, tbs + wait, 1e-12);
    printf("  measured: device 1 t_c %.6f s = (3 ms + 2 ms) x 2, wait %.6f s\n", tc, wait);
    json_object_put(r);
    /* experts 0 and 1 on two devices; device 0's time not measured: modeled */
    select_two(&h, 1, 0, 1, &sel, n, ex, w);
    double secs2[4] = {-1, 0.004, -1, -1};
    CHECK(wd_scheduler_expert_times(k, 1, secs2, 4) == 0);
    r = last_record(rec);
    CHECK_NEAR(dev_field(r, 1, "t_c"), 0.008, 1e-12);
    double modeled0 = dev_field(r, 0, "t_c");
    CHECKF(modeled0 > 0 && isfinite(modeled0), "device 0 modeled t_c %g", modeled0);
    json_object_put(r);
    /* times for a layer whose selection did not happen */
    CHECK(wd_scheduler_expert_times(k, 3, secs2, 4) != 0);
    fclose(rec);
    wd_scheduler_free(k);
    wd_scenario_free(&sc);
}

static void test_link_delays(const wd_model *m) {
    wd_scenario sc;
    wd_scheduler *k = make(m, "modeled", &sc);
    if (!k) return;
    CHECK(sc.compute_measured == 0);
    FILE *rec = tmpfile();
    wd_scheduler_record_steps(k, rec);
    wd_moe_hooks h;
    wd_scheduler_hooks(k, &h);
    wd_selection sel;
    int n[1], ex[4];
    float w[4];
    select_two(&h, 2, 2, 0, &sel, n, ex, w); /* experts 2 and 0: device 0 only */
    json_object *r = last_record(rec);
    uint64_t dl, ul;
    wd_scheduler_link_delays(k, 2, 2, &dl, &ul);
    CHECK(dl == (uint64_t)(dev_field(r, 0, "t_dl") * 1e9 + 0.5));
    CHECK(ul == (uint64_t)(dev_field(r, 0, "t_ul") * 1e9 + 0.5));
    CHECKF(dl > 1000000 && ul > 2000000, "delays include the link latency: %llu, %llu ns",
           (unsigned long long)dl, (unsigned long long)ul);
    printf("  real-time: expert 2 on device 0: downlink %llu ns, uplink %llu ns\n",
           (unsigned long long)dl, (unsigned long long)ul);
    wd_scheduler_link_delays(k, 2, 1, &dl, &ul); /* device 1 idle */
    CHECK(dl == 0 && ul == 0);
    wd_scheduler_link_delays(k, 1, 2, &dl, &ul); /* another layer */
    CHECK(dl == 0 && ul == 0);
    json_object_put(r);
    fclose(rec);
    wd_scheduler_free(k);
    wd_scenario_free(&sc);
}

static void test_placement(void) {
    static const char *const cases[] = {
        /* nd < E, nd > E, listed with a replica */
        "{\"name\": \"p\", \"device_count\": 3, \"device_defaults\": {\"downlink\": {\"model\": "
        "\"constant\", \"rate_mbps\": 10}, \"uplink\": {\"model\": \"constant\", \"rate_mbps\": 10}}}",
        "{\"name\": \"p\", \"device_count\": 11, \"device_defaults\": {\"downlink\": {\"model\": "
        "\"constant\", \"rate_mbps\": 10}, \"uplink\": {\"model\": \"constant\", \"rate_mbps\": 10}}}",
        "{\"name\": \"p\", \"device_defaults\": {\"downlink\": {\"model\": \"constant\", "
        "\"rate_mbps\": 10}, \"uplink\": {\"model\": \"constant\", \"rate_mbps\": 10}}, "
        "\"devices\": [{\"experts\": [3, 1]}, {\"experts\": [0, 2, 4, 5, 6, 7]}, {\"experts\": [1]}]}",
    };
    wd_emu_shape shape = {0};
    shape.hidden = 64, shape.ffn = 128, shape.n_layers = 2, shape.n_experts = 8, shape.top_k = 2;
    shape.weight_bytes = 2, shape.n_heads = 4, shape.n_kv_heads = 4, shape.head_dim = 16;
    for (int c = 0; c < 3; c++) {
        wd_scenario sc;
        wd_emu *emu;
        char err[512];
        if (wd_scenario_parse(&sc, cases[c], "p.json", err, sizeof err) ||
            wd_emu_create(&emu, &sc, &shape, err, sizeof err)) {
            CHECKF(0, "placement case %d: %s", c, err);
            continue;
        }
        for (int e = 0; e < 8; e++)
            CHECKF(wd_scenario_expert_home(&sc, 8, e) == wd_emu_expert_device(emu, e),
                   "case %d expert %d: home %d, emulator %d", c, e,
                   wd_scenario_expert_home(&sc, 8, e), wd_emu_expert_device(emu, e));
        CHECK(wd_scenario_expert_home(&sc, 8, 8) == -1);
        wd_emu_free(emu);
        wd_scenario_free(&sc);
    }
}

static void test_keys(void) {
    wd_scenario sc;
    char text[1024], err[512];
    snprintf(text, sizeof text, SCEN, "measured");
    CHECK(wd_scenario_parse(&sc, text, "k.json", err, sizeof err) == 0);
    CHECK(sc.compute_measured == 1 && sc.dev[1].profile.calibration == 2.0 &&
          sc.dev[1].profile.gpu_sms == 16 && sc.dev[0].profile.gpu_sms == 0);
    wd_scenario_free(&sc);
    struct {
        const char *text, *want;
    } bad[] = {
        {"{\"name\": \"k\", \"device_count\": 1, \"compute\": \"fast\"}", "compute"},
        {"{\"name\": \"k\", \"device_count\": 1, \"device_defaults\": {\"profile\": {\"preset\": "
         "\"phone\", \"calibration\": 0}}}",
         "calibration"},
        {"{\"name\": \"k\", \"device_count\": 1, \"device_defaults\": {\"profile\": {\"preset\": "
         "\"phone\", \"gpu_sms\": -1}}}",
         "gpu_sms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = wd_scenario_parse(&sc, bad[i].text, "k.json", err, sizeof err);
        CHECKF(rc != 0 && strstr(err, bad[i].want) && strstr(err, "k.json"),
               "bad key %s: rc %d, '%s'", bad[i].want, rc, err);
        if (!rc) wd_scenario_free(&sc);
    }
}

int main(void) {
    char err[512];
    wd_model *m;
    if (wd_model_load(&m, MODEL, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    test_measured(m);
    test_link_delays(m);
    test_placement();
    test_keys();
    wd_model_free(m);
    return wd_test_finish("test_sched_gpu");
}
