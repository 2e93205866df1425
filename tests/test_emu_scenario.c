/* Scenario files: the shipped scenarios load; defaults and merging; every
 * kind of bad input gives one message naming the file and the key path. */
#include <sys/stat.h>

#include "emulation/emulation.h"
#include "tests/test_util.h"

static const char *F = "bad.json";

static void expect_bad(const char *json, const char *want) {
    wd_scenario sc;
    char err[1024] = "";
    int rc = wd_scenario_parse(&sc, json, F, err, sizeof err);
    CHECKF(rc != 0, "accepted: %s", json);
    CHECKF(strncmp(err, F, strlen(F)) == 0 && strstr(err, want), "message '%s' lacks '%s'", err,
           want);
    if (!rc) wd_scenario_free(&sc);
}

#define DEV "\"devices\": [{\"distance_m\": 100}]"

static void test_bad(void) {
    expect_bad("{\"seed\": 1,,}", "bad.json:1: JSON syntax error");
    expect_bad("{\n\"seed\": 1,\n\"name\" \"x\"\n}", "bad.json:3: JSON syntax error");
    expect_bad("{\"seed\": 1", "unexpected end of file");
    expect_bad("{} x", "JSON syntax error");
    expect_bad("[1, 2]", "(top level): expected a JSON object");
    expect_bad("{\"sed\": 1, " DEV "}", "bad.json: sed: unknown key");
    expect_bad("{\"radio\": {\"carrier\": 3.5}, " DEV "}", "radio.carrier: unknown key");
    expect_bad("{\"radio\": {\"downlink_bandwidth_mhz\": -5}, " DEV "}",
               "radio.downlink_bandwidth_mhz: -5 is out of range (0, 2000]");
    expect_bad("{\"radio\": {\"uplink_bandwidth_mhz\": 0}, " DEV "}",
               "radio.uplink_bandwidth_mhz: 0 is out of range");
    expect_bad("{\"radio\": {\"model\": \"RMa\"}, " DEV "}",
               "radio.model: expected one of \"UMa\"");
    expect_bad("{\"radio\": {\"shadowing\": 1}, " DEV "}",
               "radio.shadowing: expected true or false");
    expect_bad("{\"seed\": \"x\", " DEV "}", "seed: expected an integer");
    expect_bad("{\"seed\": -1, " DEV "}", "seed: -1 is out of range");
    expect_bad("{\"activation_bits\": 12, " DEV "}", "activation_bits: 12 is not 8, 16 or 32");
    expect_bad("{\"devices\": [{\"distance_m\": 100}, {\"distance_m\": 100, \"profile\": "
               "{\"peak_tflop\": 1}}]}",
               "devices[1].profile.peak_tflop: unknown key");
    expect_bad("{\"devices\": [{\"distance_m\": 100, \"profile\": \"toaster\"}]}",
               "devices[0].profile: unknown preset 'toaster'");
    expect_bad("{\"devices\": [{\"distance_m\": 100, \"profile\": {\"efficiency\": 1.5}}]}",
               "devices[0].profile.efficiency: 1.5 is out of range (0, 1]");
    expect_bad("{\"devices\": [{\"downlink\": {\"model\": \"constant\", \"file\": \"x\"}}]}",
               "devices[0].downlink.file: unknown key");
    expect_bad("{\"devices\": [{\"downlink\": {\"model\": \"constant\"}, \"uplink\": {\"model\": "
               "\"constant\", \"rate_mbps\": 1}}]}",
               "devices[0].downlink: model constant needs rate_mbps");
    expect_bad("{\"devices\": [{\"downlink\": {\"model\": \"constant\", \"rate_mbps\": -1}}]}",
               "devices[0].downlink.rate_mbps: -1 is out of range");
    expect_bad("{\"devices\": [{\"downlink\": {\"model\": \"mahimahi\"}, \"uplink\": {\"model\": "
               "\"constant\", \"rate_mbps\": 1}}]}",
               "devices[0].downlink: model mahimahi needs file");
    expect_bad("{\"devices\": [{\"distance_m\": 3}]}",
               "devices[0]: distance 3 m is out of the UMa model's range");
    expect_bad("{\"devices\": [{}]}", "devices[0]: synthetic links need distance_m or position_m");
    expect_bad("{\"devices\": [{\"distance_m\": 100, \"position_m\": [1, 2]}]}", "not both");
    expect_bad("{\"devices\": [{\"position_m\": [1]}]}", "devices[0].position_m: expected [x, y]");
    expect_bad("{\"devices\": [{\"distance_m\": 100, \"experts\": [1, 1]}]}",
               "devices[0].experts: expert 1 listed twice");
    expect_bad("{\"device_defaults\": {\"experts\": [1]}, " DEV "}",
               "device_defaults.experts: not allowed");
    expect_bad("{\"devices\": {}}", "devices: expected an array");
    expect_bad("{}", "devices: no devices");
    expect_bad("{\"device_count\": 1, \"devices\": [{\"distance_m\": 100}, {\"distance_m\": 100}]}",
               "device_count: 1 is less than the 2 devices listed");
    expect_bad("{\"policy\": \"best\", " DEV "}", "policy: unknown policy 'best'");
    expect_bad("{\"policy\": {\"name\": \"best\"}, " DEV "}", "policy.name: unknown policy");
    expect_bad("{\"policy\": {\"name\": \"wdmoe\", \"gamma\": 0}, " DEV "}",
               "policy.gamma: 0 is out of range");
    expect_bad("{\"bandwidth_allocation\": \"fair\", " DEV "}",
               "bandwidth_allocation: expected one of");
    expect_bad("{\"faults\": [{\"kind\": \"down\", \"device\": 9}], " DEV "}",
               "faults[0].device: 9 is out of range");
    expect_bad(
        "{\"faults\": [{\"kind\": \"down\", \"device\": 0, \"from_s\": 2, \"to_s\": 1}], " DEV "}",
        "faults[0]: to_s must be after from_s");
    expect_bad("{\"faults\": [{\"kind\": \"slow\", \"device\": 0, \"scale\": 2}], " DEV "}",
               "faults[0].scale: unknown key");
    expect_bad("{\"faults\": [{\"kind\": \"link\", \"device\": 0}], " DEV "}",
               "faults[0]: needs scale");
    expect_bad("{\"faults\": [{\"device\": 0}], " DEV "}", "faults[0]: needs kind");
    expect_bad("{\"devices\": [{\"downlink\": {\"model\": \"mahimahi\", \"file\": "
               "\"${WD_NOPE_XYZ}/a\"}, \"distance_m\": 100}]}",
               "devices[0].downlink.file: environment variable WD_NOPE_XYZ is not set");
    wd_scenario sc;
    char err[1024];
    CHECK(wd_scenario_load(&sc, "/nonexistent/s.json", err, sizeof err) != 0);
    CHECK(strstr(err, "/nonexistent/s.json: cannot open") != NULL);
}

static void test_defaults_and_merge(void) {
    wd_scenario sc;
    char err[1024];
    const char *j =
        "{\"device_count\": 3,"
        " \"device_defaults\": {\"profile\": {\"preset\": \"laptop\", \"efficiency\": 0.25},"
        "   \"downlink\": {\"model\": \"mahimahi\", \"file\": \"${WD_NOPE_XYZ:-traces}/x.down\", "
        "\"latency_s\": 0.01},"
        "   \"uplink\": {\"model\": \"constant\", \"rate_mbps\": 5}},"
        " \"devices\": [{\"name\": \"a\", \"downlink\": {\"offset_s\": 4}}, {\"uplink\": "
        "{\"rate_mbps\": 7}}]}";
    CHECKF(wd_scenario_parse(&sc, j, "/x/y/s.json", err, sizeof err) == 0, "%s", err);
    CHECK(sc.n_devices == 3);
    CHECK(!strcmp(sc.dev[0].name, "a") && !strcmp(sc.dev[2].name, "device-2"));
    CHECK(!strcmp(sc.dev[1].link[WD_DL].file, "/x/y/traces/x.down"));
    CHECK_NEAR(sc.dev[0].link[WD_DL].offset_s, 4, 0);
    CHECK_NEAR(sc.dev[1].link[WD_DL].offset_s, 0, 0);
    CHECK_NEAR(sc.dev[2].link[WD_DL].latency_s, 0.01, 0);
    CHECK_NEAR(sc.dev[1].link[WD_UL].rate_bps, 7e6, 0);
    CHECK_NEAR(sc.dev[2].link[WD_UL].rate_bps, 5e6, 0);
    CHECK_NEAR(sc.dev[2].profile.efficiency, 0.25, 0);
    CHECK_NEAR(sc.dev[2].profile.peak_flops, 15e12, 0); /* laptop preset */
    CHECK(!strcmp(sc.policy, "topk") && sc.alloc == WD_ALLOC_EQUAL && sc.activation_bits == 16);
    CHECK_NEAR(sc.radio.carrier_ghz, 3.5, 0);
    CHECK_NEAR(sc.radio.bs_height_m, 25, 0);
    wd_scenario_free(&sc);
    CHECK(wd_scenario_parse(
              &sc, "{\"radio\": {\"model\": \"InH\"}, \"devices\": [{\"position_m\": [3, 4]}]}",
              "s.json", err, sizeof err) == 0);
    CHECK_NEAR(sc.radio.bs_height_m, 3, 0);
    CHECK_NEAR(sc.radio.ue_height_m, 1, 0);
    CHECK_NEAR(hypot(sc.dev[0].x_m, sc.dev[0].y_m), 5, 1e-12);
    wd_scenario_free(&sc);
}

static void test_shipped(void) {
    const char *names[3] = {"paper-cell", "att-lte-driving", "tmobile-lte-short"};
    wd_emu_shape mixtral = {4096, 14336, 32, 8, 2, 2.0, 32, 8, 128, 0, 0};
    for (int i = 0; i < 3; i++) {
        char path[1024], err[1024];
        snprintf(path, sizeof path, "%s/bench/scenarios/%s.json", WD_SOURCE_DIR, names[i]);
        wd_scenario sc;
        CHECKF(wd_scenario_load(&sc, path, err, sizeof err) == 0, "%s", err);
        CHECK(sc.n_devices == 8 && !strcmp(sc.name, names[i]) && !strcmp(sc.policy, "wdmoe"));
        if (i == 0) {
            CHECK(sc.radio.model == WD_UMA && sc.radio.carrier_ghz == 3.5);
            for (int d = 0; d < 8; d++) {
                double r = hypot(sc.dev[d].x_m, sc.dev[d].y_m);
                CHECK(r >= 50 && r <= 500);
            }
        }
        wd_emu *emu = NULL; /* the traces are shipped in bench/traces */
        CHECKF(wd_emu_create(&emu, &sc, &mixtral, err, sizeof err) == 0, "%s", err);
        wd_emu_free(emu);
        wd_scenario_free(&sc);
    }
}

static void test_create_errors(void) {
    wd_scenario sc;
    wd_emu *emu = NULL;
    char err[1024];
    wd_emu_shape sh = {64, 128, 2, 4, 2, 2.0, 0, 0, 0, 0, 0};
    const char *j = "{\"devices\": [{\"distance_m\": 100, \"experts\": [0, 1, 9]}]}";
    CHECK(wd_scenario_parse(&sc, j, "p.json", err, sizeof err) == 0);
    CHECK(wd_emu_create(&emu, &sc, &sh, err, sizeof err) != 0);
    CHECKF(strstr(err, "p.json: devices[0].experts: expert 9 is out of range") != NULL, "%s", err);
    wd_scenario_free(&sc);
    j = "{\"devices\": [{\"distance_m\": 100, \"experts\": [0, 1, 2]}]}";
    CHECK(wd_scenario_parse(&sc, j, "p.json", err, sizeof err) == 0);
    CHECK(wd_emu_create(&emu, &sc, &sh, err, sizeof err) != 0);
    CHECKF(strstr(err, "p.json: expert 3 is hosted by no device") != NULL, "%s", err);
    wd_scenario_free(&sc);
    j = "{\"devices\": [{\"distance_m\": 100, \"profile\": {\"mem_gb\": 0.001}}]}";
    CHECK(wd_scenario_parse(&sc, j, "p.json", err, sizeof err) == 0);
    wd_emu_shape big = {4096, 14336, 32, 1, 1, 2.0, 0, 0, 0, 0, 0};
    CHECK(wd_emu_create(&emu, &sc, &big, err, sizeof err) != 0);
    CHECKF(strstr(err, "more than its memory") != NULL, "%s", err);
    wd_scenario_free(&sc);
    j = "{\"devices\": [{\"distance_m\": 100, \"downlink\": {\"model\": \"mahimahi\", \"file\": "
        "\"/nonexistent/t.down\"}}]}";
    CHECK(wd_scenario_parse(&sc, j, "p.json", err, sizeof err) == 0);
    CHECK(wd_emu_create(&emu, &sc, &sh, err, sizeof err) != 0);
    CHECKF(strstr(err, "p.json: devices[0].downlink: /nonexistent/t.down: cannot open") != NULL,
           "%s", err);
    wd_scenario_free(&sc);
    wd_emu_shape bad = {0, 128, 2, 4, 2, 2.0, 0, 0, 0, 0, 0};
    CHECK(wd_scenario_default(&sc, 2, err, sizeof err) == 0);
    CHECK(wd_emu_create(&emu, &sc, &bad, err, sizeof err) != 0);
    CHECK(strstr(err, "bad model shape") != NULL);
    wd_scenario_free(&sc);
}

int main(void) {
    test_bad();
    test_defaults_and_merge();
    test_shipped();
    test_create_errors();
    return wd_test_finish("test_emu_scenario");
}
