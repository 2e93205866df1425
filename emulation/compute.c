/* Compute profiles: named presets, the roofline time model and the power
 * model (idle and busy watts). */
#include <string.h>

#include "emulation/emulation.h"

typedef struct {
    const char *name;
    wd_compute_profile p;
} preset;

/* Ballpark figures (dense fp16/bf16 FLOP/s, DRAM bandwidth, memory, idle and
 * busy board power from the vendors' power modes and TDPs) of device classes;
 * scenarios override any field. */
static const preset presets[] = {
    {"phone-low", {0.5e12, 17e9, 0.5, 300e-6, 8e9, 1.0, 0, 0.3, 3}},         /* mid-range phone, LPDDR4X */
    {"phone", {2e12, 60e9, 0.5, 200e-6, 16e9, 1.0, 0, 0.5, 6}},              /* flagship phone, LPDDR5X */
    {"laptop", {15e12, 120e9, 0.5, 50e-6, 32e9, 1.0, 0, 5, 60}},            /* laptop GPU / NPU */
    {"jetson-orin-nano", {10e12, 68e9, 0.5, 100e-6, 8e9, 1.0, 0, 2.5, 15}},   /* Jetson Orin Nano 8 GB */
    {"jetson-orin-nx", {25e12, 102e9, 0.5, 100e-6, 16e9, 1.0, 0, 4, 25}},   /* Jetson Orin NX 16 GB */
    {"jetson-agx-orin", {50e12, 204.8e9, 0.5, 50e-6, 64e9, 1.0, 0, 8, 60}}, /* Jetson AGX Orin 64 GB */
    {"bs-a100", {312e12, 2039e9, 0.6, 10e-6, 80e9, 1.0, 0, 60, 400}},         /* BS server: A100 80 GB */
    {"bs-h100", {989e12, 3350e9, 0.6, 10e-6, 80e9, 1.0, 0, 70, 700}},         /* BS server: H100 SXM */
};

int wd_profile_preset(const char *name, wd_compute_profile *out) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, name)) return *out = presets[i].p, 0;
    return 1;
}

const char *wd_profile_preset_name(int i) {
    return i >= 0 && i < (int)(sizeof presets / sizeof presets[0]) ? presets[i].name : NULL;
}

double wd_compute_time(const wd_compute_profile *p, double flops, double bytes) {
    double a = flops / p->peak_flops, b = bytes / p->mem_bw;
    return (a > b ? a : b) / p->efficiency + p->overhead_s;
}

double wd_energy_tx(double watts, double seconds) { return watts * seconds; }
