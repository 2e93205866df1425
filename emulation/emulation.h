/* emulation: radio and time for WDMoE (see DESIGN.md, "Emulation semantics",
 * and docs/emulation.md for the model, the formulas and the scenario reference).
 * Depends on libc, libm and json-c only; no model is needed.
 *
 *   wd_scenario   what is emulated: devices (compute profile, position, links,
 *                 hosted experts), the base station (BS), radio parameters,
 *                 payload, policy, bandwidth allocation, faults, seed.
 *                 Loaded from JSON (strict: unknown keys and out-of-range
 *                 values are errors naming the key path) or built in code.
 *   wd_link       one rate process r(t) in bit/s: constant, synthetic (3GPP
 *                 TR 38.901 + shadowing + Jakes fading), CSV trace, Mahimahi.
 *   wd_emu        the run: scenario + model shape + links + virtual clock.
 *                 Per layer step: predict per-expert latency (tau), select
 *                 experts with a policy, then step (transfer + compute times,
 *                 bandwidth shares, wait for the slowest, advance the clock).
 *   wd_policy     expert selection: a table of {name, function}; one file each.
 *   wd_emu_stats  per-token latency statistics; aligned table, JSON.
 *   wd_probs      recorded router probabilities (.wdpr) for `wdmoe replay`.
 *
 * Units: seconds, bits, bit/s, FLOP, FLOP/s, bytes, bytes/s, Hz, metres, dB.
 * Errors: functions returning int give 0 on success and non-zero on failure,
 * after writing one line "FILE: what is wrong" into err (errlen bytes).
 * Nothing here keeps global mutable state; a wd_emu is used by one thread. */
#ifndef WD_EMULATION_H
#define WD_EMULATION_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct json_object;

/* ---- units ------------------------------------------------------------- */
double wd_db_to_linear(double db);
double wd_linear_to_db(double x);
double wd_dbm_to_watt(double dbm);

/* ---- channel model (3GPP TR 38.901 Table 7.4.1-1, 7.4.2-1) ------------ */
typedef enum {
    WD_UMA = 0,
    WD_UMI = 1,
    WD_INH = 2
} wd_pathloss_model; /* UMi: street canyon; InH: office */

/* Path loss in dB at 2D distance d2d_m (BS-device, ground plane), carrier
 * fc_ghz, antenna heights h_bs_m, h_ut_m; los = 1 LOS, 0 NLOS (NLOS is
 * max(PL_LOS, PL'_NLOS) as in the standard). Distances below the model's
 * range are clamped to it (UMa/UMi: d2D >= 10 m; InH: d3D >= 1 m). */
double wd_pathloss_db(wd_pathloss_model m, int los, double d2d_m, double fc_ghz, double h_bs_m,
                      double h_ut_m);
double wd_los_probability(wd_pathloss_model m, double d2d_m, double h_ut_m);
double wd_shadow_sigma_db(wd_pathloss_model m, int los);
double wd_shadow_decorrelation_m(wd_pathloss_model m, int los); /* Table 7.5-6 */

/* Time-correlated small-scale fading, sum of sinusoids (after Zheng & Xiao 2003,
 * Jakes' spectrum): h(t) with E|h|^2 = 1 and autocorrelation J0(2 pi fD tau)
 * (Rayleigh); Rician adds a LOS ray of power K/(K+1) at angle theta0. */
#define WD_FADING_SINUSOIDS 16
typedef enum { WD_FADING_NONE = 0, WD_FADING_RAYLEIGH = 1, WD_FADING_RICIAN = 2 } wd_fading_kind;
typedef struct {
    wd_fading_kind kind;
    double doppler_hz, k_linear, theta0, phi0;
    double w[WD_FADING_SINUSOIDS];                           /* 2 pi fD cos(alpha_n), rad/s */
    double phase[WD_FADING_SINUSOIDS];                       /* phi */
    double ci[WD_FADING_SINUSOIDS], cq[WD_FADING_SINUSOIDS]; /* sqrt(2/M) cos psi_n, sin psi_n */
} wd_fading;
void wd_fading_init(wd_fading *f, wd_fading_kind kind, double doppler_hz, double k_db,
                    uint64_t seed);
void wd_fading_at(const wd_fading *f, double t, double *re, double *im); /* h(t) */

/* ---- compute profiles ---------------------------------------------------- */
typedef struct {
    double peak_flops;   /* FLOP/s */
    double mem_bw;       /* bytes/s */
    double efficiency;   /* (0, 1]: fraction of the roofline reached */
    double overhead_s;   /* per call (kernel launch, scheduling) */
    double mem_capacity; /* bytes; 0 = unchecked */
    double calibration;  /* measured compute (GPU backend): kernel seconds x this (0: 1) */
    int gpu_sms;         /* GPU backend: a green context with about this many SMs (0: a
                            plain stream on the whole GPU) */
    double idle_w;       /* power drawn when idle (W) */
    double busy_w;       /* power drawn while computing (W, >= idle_w) */
} wd_compute_profile;

/* Named presets ("phone", "phone-low", "laptop", "jetson-orin-nano",
 * "jetson-orin-nx", "jetson-agx-orin", "bs-a100", "bs-h100"); 0 when found. */
int wd_profile_preset(const char *name, wd_compute_profile *out);
const char *wd_profile_preset_name(int i); /* NULL past the end */
/* Roofline: max(flops / peak, bytes / mem_bw) / efficiency + overhead, in s. */
double wd_compute_time(const wd_compute_profile *p, double flops, double bytes);

/* ---- scenario -------------------------------------------------------------- */
#define WD_DL 0 /* downlink: BS -> device (hidden states) */
#define WD_UL 1 /* uplink: device -> BS (expert outputs) */
#define WD_MAX_DEVICES 1024

typedef enum {
    WD_LINK_SYNTHETIC = 0,
    WD_LINK_CONSTANT,
    WD_LINK_CSV,
    WD_LINK_MAHIMAHI
} wd_link_model;
typedef enum { WD_LOS_PROBABILITY = 0, WD_LOS_ALWAYS, WD_LOS_NEVER } wd_los_mode;
typedef enum { WD_ALLOC_EQUAL = 0, WD_ALLOC_MINMAX, WD_ALLOC_JOINT } wd_alloc_mode;
typedef enum { WD_FAULT_DOWN = 0, WD_FAULT_LINK, WD_FAULT_SLOW } wd_fault_kind;

typedef struct {
    wd_link_model model;
    double rate_bps;   /* constant: full-band rate */
    char file[1024];   /* csv / mahimahi: resolved path */
    char column[64];   /* csv: rate column (default "downlink_bps" / "uplink_bps") */
    int csv_device;    /* csv: rows whose "device" column equals this (-1: own index) */
    double offset_s;   /* csv / mahimahi: the link starts this far into the trace */
    double offset_jitter_s; /* csv / mahimahi: plus a uniform draw in [0, this) from the seed */
    double window_s;   /* mahimahi: window of the rate estimate used for prediction */
    double rate_scale; /* multiplies the rate (1) */
    double latency_s;  /* fixed latency added to every transfer */
    int air;           /* pays the radio's air interface: -1 default (synthetic yes, others
                          no: constant rates are ideal pipes, traces already hold it), 0, 1 */
    int shared;        /* the capacity is the cell's band, split among the devices active in
                          a layer step: -1 default (synthetic and constant yes; csv and
                          mahimahi no: a trace is one user's own delivery schedule), 0, 1 */
} wd_link_spec;

typedef struct {
    char name[64];
    wd_compute_profile profile;
    double x_m, y_m;      /* position, BS at the origin (distance_m sets x_m) */
    double speed_mps;     /* for Doppler and shadowing decorrelation (moves on a circle) */
    wd_los_mode los;      /* per device, default: the radio's */
    wd_link_spec link[2]; /* [WD_DL], [WD_UL] */
    int n_hosted;         /* experts hosted (the same ids in every layer); 0 = default placement */
    int *hosted;
} wd_device_spec;

/* ---- NR air interface (3GPP TS 38.211 / 38.213 / 38.214) -------------------- */
typedef enum { WD_DUPLEX_TDD = 0, WD_DUPLEX_FDD = 1 } wd_duplex;
typedef enum { WD_LA_CQI = 0, WD_LA_SHANNON = 1 } wd_link_adaptation;
typedef enum { WD_UL_DYNAMIC = 0, WD_UL_CONFIGURED = 1 } wd_ul_scheduling;
#define WD_TDD_MAX_SLOTS 40
typedef struct {
    int enabled;                 /* 1 (default): links with "air_interface" on pay it */
    int numerology;              /* mu: SCS 15 * 2^mu kHz, slot 1 / 2^mu ms (1: 30 kHz) */
    wd_duplex duplex;            /* TDD (default) or FDD */
    char pattern[WD_TDD_MAX_SLOTS + 1]; /* TDD slots, 'D', 'S', 'U' ("DDDSU") */
    int special[3];              /* S slot symbols: downlink, guard, uplink (10, 2, 2) */
    double gnb_proc_sym;         /* gNB processing per step, OFDM symbols (N1 of mu) */
    double n1_sym;               /* UE PDSCH processing N1 (38.214 Table 5.3-1, cap. 1) */
    double n2_sym;               /* UE PUSCH preparation N2 (38.214 Table 6.4-1, cap. 1) */
    double pdcch_sym;            /* symbols of the PDCCH carrying a grant (2) */
    wd_ul_scheduling ul_sched;   /* dynamic: SR -> grant -> PUSCH; configured: no SR/grant */
    double bler;                 /* HARQ: each (re)transmission fails with this (0.1) */
    int max_retx;                /* HARQ: retransmissions at most (3) */
} wd_air;

/* N1 / N2 / gNB processing defaults of a numerology (capability 1, no
 * additional DM-RS); the other fields: the defaults above. */
void wd_air_defaults(wd_air *a, int numerology);
/* Check a TDD pattern and special slot; 0 when valid, else a message. */
int wd_air_check(const wd_air *a, char *err, size_t errlen);
double wd_air_slot_s(const wd_air *a);
/* Fraction of time direction dir may carry data (TDD symbols / all; FDD 1). */
double wd_air_duty(const wd_air *a, int dir);

/* Link adaptation: spectral efficiency (bit/s/Hz) at a linear SNR. CQI: the
 * highest entry of 38.214 Table 5.2.2.1-3 (256-QAM) whose efficiency does
 * not exceed log2(1 + snr / gap), 0 below CQI 1, at most 7.4063. Shannon:
 * log2(1 + snr), uncapped. */
#define WD_CQI_MAX 15
double wd_cqi_efficiency(int cqi); /* Table 5.2.2.1-3; 0 for CQI 0 (out of range) */
int wd_cqi_from_snr(double snr_linear, double gap_linear);
double wd_link_se(wd_link_adaptation la, double snr_linear, double gap_linear);

#define WD_FADING_BLOCK_COHERENCE (-1.0)
#define WD_FADING_BLOCK_MAX_S 1.0 /* blocks longer than this are cut to it */

typedef struct {
    wd_pathloss_model model;
    double carrier_ghz;
    double bandwidth_hz[2]; /* total band shared by the active devices, [WD_DL], [WD_UL] */
    double bs_tx_power_dbm, ue_tx_power_dbm;
    double bs_antenna_gain_dbi, ue_antenna_gain_dbi;
    double noise_density_dbm_hz; /* -174 */
    double bs_noise_figure_db, ue_noise_figure_db;
    double bs_height_m, ue_height_m;
    wd_los_mode los;
    int shadowing; /* 0/1 */
    wd_fading_kind fading;
    double rician_k_db;
    double speed_mps;       /* default device speed */
    double sample_period_s; /* channel sample period */
    /* block fading (docs/radio.md): 0 off (fading rotated sample by sample);
     * > 0: the channel is constant over blocks of this length (s), each block's
     * fading the sum of sinusoids at its start; WD_FADING_BLOCK_COHERENCE: blocks
     * of each device's coherence time 0.423 / f_D (at most 1 s) */
    double fading_block_s;
    double outage_snr_db;   /* full-band SNR below this: rate 0 */
    double latency_s;       /* default per-transfer latency */
    wd_link_adaptation link_adaptation; /* synthetic links: CQI table (default) or Shannon */
    double snr_gap_db;      /* CQI: SNR gap to capacity (0 dB) */
    wd_air air;             /* air interface of the links that pay it */
} wd_radio;

typedef struct {
    int device;
    wd_fault_kind kind;  /* down: unreachable; link: rate x value; slow: compute time x value */
    int dir_mask;        /* link: 1 << WD_DL | 1 << WD_UL */
    double from_s, to_s; /* [from, to), to may be INFINITY */
    double value;
} wd_fault;

typedef struct {
    double alpha;  /* wdmoe: first threshold (0.5) */
    double dtheta; /* wdmoe: threshold step (0.05) */
    double gamma;  /* wdmoe: required WLR gain over top-k (1.05) */
    double theta;  /* wlr-drop, dynamic: weight threshold (0.3) */
    int m;         /* fastest: candidates by weight (0 = 2 top_k) */
    double quality; /* energy: gate mass of the top-k a token keeps at least (0.8) */
} wd_policy_params;

/* Many users (`wdmoe serve-cell`; the command's options override): Poisson
 * arrivals of `users` requests at rate_per_s (the first at 0), or a request
 * trace (CSV: arrival_s,max_new_tokens,prompt); prompts cycle through the
 * lines of a prompts file. Zeros: the command's defaults. */
typedef struct {
    int users;
    double rate_per_s;
    int max_new_tokens;
    int prefill_chunk;      /* prompt tokens per step over all users */
    double kv_budget_bytes; /* BS KV-cache memory for all users (0: unlimited) */
    int max_batch;          /* running users at most (0: unlimited) */
    int micro_batches;      /* pipelined micro-batches per step (0: 1, synchronous) */
    double tpot_slo_s, ttft_slo_s; /* goodput: requests meeting both (0: not checked) */
    char prompts[1024], trace[1024]; /* resolved paths ("" none) */
} wd_workload;

typedef struct {
    char name[64];
    char path[1024]; /* file it was loaded from ("" when built in code) */
    uint64_t seed;
    int n_devices;
    wd_device_spec *dev;
    wd_compute_profile bs;
    wd_radio radio;
    int activation_bits; /* 8, 16 or 32 */
    char policy[32];
    wd_policy_params params;
    wd_alloc_mode alloc;
    int n_faults;
    wd_fault *faults;
    double max_wait_s; /* a transfer not done after this is "never" (error) */
    int compute_measured; /* "compute": "measured": device compute times from the GPU
                             backend's kernel timings x calibration (else modeled) */
    wd_workload workload;
} wd_scenario;

/* A default cell: n devices 50..500 m away (UMa, 3.5 GHz, synthetic links),
 * profiles cycling phone .. jetson-agx-orin, BS "bs-a100", default placement,
 * policy topk, equal allocation, seed 1. */
int wd_scenario_default(wd_scenario *sc, int n_devices, char *err, size_t errlen);
/* Strict JSON loader. Relative file paths are resolved against the folder of
 * path; "${VAR}" and "${VAR:-default}" expand environment variables. */
int wd_scenario_load(wd_scenario *sc, const char *path, char *err, size_t errlen);
int wd_scenario_parse(wd_scenario *sc, const char *json_text, const char *path, char *err,
                      size_t errlen); /* path: for messages and relative files */
void wd_scenario_free(wd_scenario *sc);
const char *wd_alloc_name(wd_alloc_mode m);

/* ---- links ------------------------------------------------------------------- */
typedef struct wd_link wd_link;
/* A link from a spec (constant, csv, mahimahi; synthetic links are built by
 * wd_emu_create). max_wait_s: 0 for the default (3600 s). */
int wd_link_create(wd_link **out, const wd_link_spec *spec, int dir, int device, double max_wait_s,
                   char *err, size_t errlen);
void wd_link_free(wd_link *l);
/* Time (s) to deliver bits starting at t0 with a share (0, 1] of the band:
 * the smallest T with integral_{t0}^{t0+T} share*r = bits (Mahimahi: until
 * the ceil(bits / (12000 share)) th delivery opportunity at or after t0),
 * plus the link latency. INFINITY when it never completes. */
double wd_link_tx_time(wd_link *l, double t0, double bits, double share);
/* Rate (bit/s) at t with share 1 used for prediction: the current sample
 * (Mahimahi: mean over the window_s bin holding t). */
double wd_link_rate(wd_link *l, double t);
/* Bits deliverable in [a, b) at share 1, divided by (b - a). */
double wd_link_mean_rate(wd_link *l, double a, double b);
/* Add a window [from, to) in which the rate is multiplied by scale. */
int wd_link_add_window(wd_link *l, double from_s, double to_s, double scale);

/* ---- bandwidth allocation ---------------------------------------------------- */
/* Min-max FDMA split for n transfers with constant full-band rates (bit/s),
 * sizes (bits) and ready times (s): shares (sum 1) that equalise the finish
 * times ready[i] + bits[i] / (share[i] rate[i]); returns that time. Closed
 * form when all ready times are equal (and force_bisection is 0), bisection
 * otherwise. */
double wd_alloc_minmax_const(int n, const double *rate, const double *bits, const double *ready,
                             double *share, int force_bisection);
/* The bisection behind it: the smallest T in [lo, hi] with
 * sum_i need(ctx, i, T) <= 1, need() decreasing in T; share[i] = need(T)
 * scaled to sum 1. Returns T. */
double wd_alloc_minmax_solve(int n, double (*need)(void *ctx, int i, double T), void *ctx,
                             double lo, double hi, double *share);

/* ---- policies ---------------------------------------------------------------- */
/* One call selects experts for n_tokens tokens of one layer step.
 * in:  probs [n_tokens][E] (softmax over all experts), tau [E] predicted
 *      latency (s; INFINITY when unreachable), available [E] (1 reachable).
 * out: for token t, n[t] experts expert[t*E + j], j < n[t], ordered by
 *      descending probability (ties: lower id), weight[t*E + j] renormalised
 *      to sum to 1 over the chosen set. Same layout as host's wd_selection.
 * Rules shared by every policy: unreachable experts are never chosen; an
 * unreachable expert of the model's top-k is replaced by the next most
 * probable reachable one (top-k stays k; only a policy's own rule uses
 * fewer); when none is reachable n[t] = 0. */
#define WD_POLICY_SCRATCH(n_tokens, n_experts) (4 * (size_t)(n_tokens) + 2 * (size_t)(n_experts))
typedef struct {
    int n_tokens, n_experts, top_k;
    const float *probs;
    const double *tau;
    const unsigned char *available;
    int *n;
    int *expert;
    float *weight;
    double *scratch; /* WD_POLICY_SCRATCH(n_tokens, n_experts) doubles */
    const double *energy; /* [E] predicted energy of one token through each expert (J:
                             radio both ways + device compute); NULL when not known */
    void *user;      /* a caller's policy (wd_emu_set_policy_fn): its pointer; else NULL */
} wd_policy_io;

typedef int (*wd_policy_fn)(const wd_policy_params *p, wd_policy_io *io);
typedef struct {
    const char *name;
    const char *summary;
    wd_policy_fn select;
} wd_policy;

const wd_policy *wd_policy_find(const char *name); /* NULL when unknown */
int wd_policy_count(void);
const wd_policy *wd_policy_at(int i);
/* "topk, wdmoe, ..." into buf: the names an unknown policy's message lists */
const char *wd_policy_names(char *buf, size_t cap);
void wd_policy_defaults(wd_policy_params *p);

/* Helpers for policy files. The m most probable available experts of one
 * token (ties: lower id), descending; returns how many (<= m). */
int wd_policy_top(const float *p, const unsigned char *available, int n_experts, int m, int *ids);
/* The shared start: the k most probable reachable experts of token t (an
 * unreachable expert of the model's top-k is replaced by the next most
 * probable reachable one, so the set keeps k experts while k are
 * reachable); writes n[t] and expert[t*E..]; returns n[t]. */
int wd_policy_base(wd_policy_io *io, int t, int k);
/* weight[t*E + j] = p / sum p over the chosen set (equal when the sum is 0). */
void wd_policy_renorm(wd_policy_io *io, int t);

/* ---- the emulator ------------------------------------------------------------- */
typedef struct {
    int hidden, ffn, n_layers, n_experts, top_k;
    double weight_bytes;               /* bytes per weight element (2 for bf16) */
    int n_heads, n_kv_heads, head_dim; /* 0: q/k/v/o are H x H (BS cost) */
    double bs_layer_flops;             /* BS FLOP per token per layer (0: from the shape) */
    double bs_layer_bytes;             /* BS bytes per layer step (0: from the shape) */
} wd_emu_shape;

/* Latency of one device in one layer step. */
typedef struct {
    int device;
    int tokens;             /* distinct tokens sent to it */
    int pairs;              /* (token, expert) pairs it computes and returns */
    double bits[2];         /* [WD_DL], [WD_UL] */
    double share[2];        /* band shares */
    double t_dl, t_c, t_ul; /* s */
    double air[2];          /* the air-interface overhead included in t_dl, t_ul (s) */
    int calls;              /* expert calls it serves (experts with tokens), one after another */
    /* pipelined micro-batches (wd_emu_pipeline_begin; all 0 otherwise): the
     * wait for the device still busy with earlier jobs (the device queue), and
     * the calls of those jobs ahead */
    double queue_s;
    int queue_ahead;
    double t_back; /* pipelined: absolute time its result is back at the BS */
} wd_emu_dev_time;

typedef struct {
    int layer, n_tokens, n_active;
    double t_start;             /* clock at the start of the step */
    double t_bs;                /* BS compute (attention + router) */
    double wait;                /* max over active devices of t_dl + t_c + t_ul */
    double total;               /* t_bs + wait: the clock advance */
    int critical;               /* index into dev[] of the slowest (-1: none active) */
    const wd_emu_dev_time *dev; /* [n_active], owned by the emulator, valid until the next step */
} wd_emu_step_result;

/* Latency of one phase. Prefill: forward passes over a prompt (or any
 * scored text); one sample per forward, the time to first token (TTFT).
 * Decode: forward passes that produce one output token each; one sample per
 * forward, the time per output token (TPOT). The two are never averaged
 * together. The breakdown is per forward pass along the critical path (the
 * slowest device's times in each layer): bs + dl + comp + ul + air = mean_s;
 * dl and ul are data airtime only, air the air-interface overhead of both
 * directions (scheduling, slot alignment, processing, HARQ); straggle: the
 * sum over layers of (slowest - mean of the active devices). */
typedef struct {
    long forwards, samples, tokens; /* samples: latency samples (forwards, or prompts) */
    double mean_s, p50_s, p95_s, p99_s, max_s;
    double bs_s, dl_s, comp_s, ul_s, air_s, straggle_s;
    double experts_per_token; /* mean experts per token per layer */
    double dl_bits_per_token, ul_bits_per_token; /* per token, all layers */
    /* per (token, layer): experts of the model's top-k that were unreachable
     * and replaced by the next most probable reachable one; and top-k slots
     * left empty (k - chosen: the policy dropped them, or fewer than k
     * experts were reachable) */
    long experts_replaced, experts_dropped;
    /* of the dropped: experts whose predicted latency was below the largest
     * of the step's top-k, so dropping them set no wait */
    long experts_dropped_nonstraggler;
    /* energy (J, totals of the phase): radio transmit energy per direction
     * (downlink: the BS's power x the band share x airtime; uplink: the UE's
     * power x airtime; airtime excludes the air-interface overhead and the
     * fixed link latency), device compute (busy watts x compute time) and BS
     * compute (busy watts x BS time, LM head included); per token: their sum
     * over the phase's tokens. Idle power is in the run summary. */
    double energy_dl_j, energy_ul_j, energy_device_j, energy_bs_j, energy_per_token_j;
} wd_emu_phase_summary;

typedef struct {
    long tokens, forwards, steps; /* both phases */
    wd_emu_phase_summary prefill, decode;
    long experts_replaced, experts_dropped; /* both phases */
    double virtual_time_s; /* clock at the end */
    /* Faults and unreachable experts. Tokens (of the recorded forwards)
     * affected in at least one layer: rerouted (the model's own top-k held
     * an unreachable expert, so the policy chose around it), fallback (all
     * of its top-k unreachable), dropped (nothing reachable: that layer's
     * experts were skipped), slowed (a chosen device ran under a slow
     * fault), link_fault (a transfer of a chosen device met a down or link
     * fault window: rate scaled or zero, it waited). Layer steps with any
     * such token. */
    long tokens_rerouted, tokens_fallback, tokens_dropped, tokens_slowed, tokens_link_fault;
    long steps_rerouted, steps_slowed, steps_link_fault;
    int n_faults; /* the scenario's faults (the table shows the counts when > 0 or any is) */
    /* energy of the cell over the virtual time: both phases' active energy
     * plus the idle watts of every device and the BS while not computing;
     * per token over both phases' tokens */
    double energy_active_j, energy_idle_j, energy_total_j, energy_per_token_j;
} wd_emu_summary;

/* Energy (J) of drawing watts for seconds: the one formula behind every
 * energy figure (a transfer: transmit power x airtime). */
double wd_energy_tx(double watts, double seconds);


typedef struct wd_emu wd_emu;

/* shape may be NULL: channel only (wd_emu_link_*; no step). Copies what it
 * needs from the scenario. Checks placement (expert ids, every expert
 * hosted) and memory capacity against the shape. */
int wd_emu_create(wd_emu **out, const wd_scenario *sc, const wd_emu_shape *shape, char *err,
                  size_t errlen);
void wd_emu_free(wd_emu *emu);
double wd_emu_time(const wd_emu *emu);
void wd_emu_advance(wd_emu *emu, double seconds); /* idle time (e.g. embeddings, LM head) */
/* Replace the policy (name must be registered). */
int wd_emu_set_policy(wd_emu *emu, const char *name, const wd_policy_params *p, char *err,
                      size_t errlen);
const char *wd_emu_policy_name(const wd_emu *emu);
/* Replace the policy by a caller's function (libwdmoe's custom policies): the
 * same contract as a registered one, called with io->user = user; name (kept
 * by pointer: it must outlive the emulator) is for messages. */
void wd_emu_set_policy_fn(wd_emu *emu, const char *name, wd_policy_fn fn, void *user,
                          const wd_policy_params *p);

/* Predicted latency of one token through each expert now (s): downlink of
 * H*activation_bits bits + compute + uplink at the current rates with a
 * 1/min(top_k, devices) share, best replica; INFINITY and available 0 when
 * no replica is reachable (device down, link rate 0). Returns the number of
 * reachable experts. tau, available: [n_experts]. */
int wd_emu_predict(wd_emu *emu, double *tau, unsigned char *available);
/* predict + the scenario's policy (joint allocation: alternate policy and
 * min-max shares until the chosen set stops changing). probs [n_tokens][E];
 * n [n_tokens], expert and weight [n_tokens * E]. */
int wd_emu_select(wd_emu *emu, int n_tokens, const float *probs, int *n, int *expert, float *weight,
                  char *err, size_t errlen);
/* One layer step with the selection (n, expert as above): BS compute, then
 * per active device downlink, compute, uplink at the virtual clock with the
 * scenario's bandwidth allocation; advances the clock by t_bs + wait and
 * accumulates statistics (a forward pass is layers 0 .. n_layers-1 in order;
 * its tokens are recorded at the last layer). res may be NULL. */
int wd_emu_step(wd_emu *emu, int layer, int n_tokens, const int *n, const int *expert,
                wd_emu_step_result *res, char *err, size_t errlen);
/* Measured mode (GPU backend): as wd_emu_step, with each active device's
 * compute time taken from t_c [n_devices] (s, already calibrated; NAN: the
 * modeled time). Slow faults still apply. */
int wd_emu_step_measured(wd_emu *emu, int layer, int n_tokens, const int *n, const int *expert,
                         const double *t_c, wd_emu_step_result *res, char *err, size_t errlen);

/* Which phase the forward passes that start now belong to (layer 0 decides
 * for the whole pass). AUTO (the default): a pass of several tokens is
 * prefill, of one token decode. Hosts set PREFILL for a prompt (even of one
 * token) and for scoring, DECODE for generated tokens. */
typedef enum { WD_PHASE_AUTO = 0, WD_PHASE_PREFILL = 1, WD_PHASE_DECODE = 2 } wd_emu_phase;
/* Explicit PREFILL: the passes until the next call are one sample (a prompt
 * split into chunks is one time to first token). */
void wd_emu_set_phase(wd_emu *emu, wd_emu_phase p);
/* BS work after the last layer of a forward pass (LM head): advances the
 * clock and adds to that pass's latency sample and BS term. */
void wd_emu_finish_forward(wd_emu *emu, double seconds);
/* The forward pass that the last step closed: WD_PHASE_PREFILL or
 * WD_PHASE_DECODE (WD_PHASE_AUTO when none was closed since); *new_sample:
 * it started a latency sample (else it joined the prompt before it). */
wd_emu_phase wd_emu_closed_phase(const wd_emu *emu, int *new_sample);
void wd_emu_summarize(const wd_emu *emu, wd_emu_summary *s);
/* The decode samples (time per output token, s) recorded so far, in order; *n their
 * count. Valid until the next step or reset. */
const double *wd_emu_token_latencies(const wd_emu *emu, size_t *n);
/* One device over the run (since the last reset): time computing, expert
 * calls and tokens, energy (J) of its compute (busy watts) and of the radio
 * transfers to and from it, and its queue: expert calls waiting behind an
 * earlier call of the same layer step (max_queue: the longest such line,
 * queue_wait_s: the summed waiting of the calls). utilisation = busy_s /
 * the virtual time. */
typedef struct {
    double busy_s, utilisation, energy_compute_j, energy_idle_j, energy_dl_j, energy_ul_j,
        queue_wait_s;
    long calls, tokens;
    int max_queue;
    /* pipelined: jobs (one per micro-batch layer step) that found it busy, and
     * the calls ahead of them summed (mean queue length seen = queue_ahead_sum / jobs) */
    long jobs, queued_jobs, queue_ahead_sum;
} wd_emu_device_stats;
int wd_emu_device_stats_get(const wd_emu *emu, int device, wd_emu_device_stats *out);
/* Every device's stats as a JSON array (name, utilisation, busy time, calls,
 * tokens, queue, energy terms) and as an aligned table. */
struct json_object *wd_emu_devices_json(const wd_emu *emu);
void wd_emu_devices_print(FILE *f, const wd_emu *emu);
/* Pipelined micro-batches (docs/serving.md, "Pipelined micro-batches"): the
 * BS splits a step's batch into n micro-batches that run through the layers
 * interleaved. begin: every micro-batch's clock starts (start below). switch(m): what
 * follows (select, step, finish_forward) belongs to micro-batch m, and the
 * clock becomes its own (or the end of the BS's work then). The BS's work
 * (a layer's attention and routers, the LM head) takes the earliest idle gap
 * of the BS from the micro-batch's clock; the downlinks start when it is
 * done, a device's job takes the earliest idle gap of the device from its
 * arrival that holds it (a job queues while the device is busy with another
 * micro-batch's, layer's or step's job), the uplink starts when the compute
 * is done. The band is shared by every transfer in flight: a band-sharing
 * link gets its share of the step's allocation (among the step's n devices)
 * times n / (n + the links carrying another micro-batch's transfer at its
 * start), a link of its own half while it carries one;
 * a transfer keeps the share it started with. The micro-batch's clock moves
 * to its last result back. end: the clock becomes the latest micro-batch's;
 * back to the synchronous step. start NULL: every micro-batch starts now and
 * nothing is busy (the step barrier); n = 1 is then the synchronous step
 * exactly. start[n]: micro-batch m starts at start[m] (none before the
 * earliest micro-batch clock at the previous end, or now after a synchronous
 * step), and the BS, devices and links still busy from the previous pipelined
 * step stay busy (a cross-step queue; n = 1 is then one micro-batch).
 * Returns non-zero on a bad n, a start too early or no memory. */
int wd_emu_pipeline_begin(wd_emu *emu, int n, const double *start, char *err, size_t errlen);
void wd_emu_pipeline_switch(wd_emu *emu, int m);
/* Micro-batch m's clock: the host runs the one with the earliest next. */
double wd_emu_pipeline_ready(const wd_emu *emu, int m);
void wd_emu_pipeline_end(wd_emu *emu);

/* Active energy (J) so far, both phases (cheap: no summary). */
double wd_emu_energy_active_j(const wd_emu *emu);
void wd_emu_reset_stats(wd_emu *emu);
/* One aligned table (two columns: metric, value). */
void wd_emu_summary_print(FILE *f, const wd_emu_summary *s);
/* New JSON object (json-c, caller puts it): deterministic key order. */
struct json_object *wd_emu_summary_json(const wd_emu_summary *s);

/* Channel access (also for `wdmoe trace`). */
int wd_emu_n_devices(const wd_emu *emu);
/* The device that serves expert e in the current layer step (after select;
 * the first replica before any). */
int wd_emu_expert_device(const wd_emu *emu, int e);
const wd_scenario *wd_emu_scenario(const wd_emu *emu); /* the emulator's copy */
/* The first device that hosts expert e under the scenario's placement (the
 * listed experts, or the default), -1 when none does. */
int wd_scenario_expert_home(const wd_scenario *sc, int n_experts, int e);
wd_link *wd_emu_link(wd_emu *emu, int device, int dir);
int wd_emu_device_los(const wd_emu *emu, int device); /* drawn LOS state (synthetic) */

/* ---- recorded router probabilities (.wdpr) ------------------------------------- */
/* Little-endian binary: a 48-byte header, float32 probs [token][layer][E],
 * then (version 2) one flag byte per token (WD_PROBS_*).
 *   char magic[4] = "WDPR"; uint32 version = 2, n_layers, n_experts, top_k,
 *   hidden, ffn, n_heads, n_kv_heads, head_dim, weight_bits, n_tokens.
 * Version 1 files (no flags) read as one decode step per token.
 * Writer: open (header with n_tokens 0, temporary name), one call per token
 * with probs [n_layers][E], close (flags, patches n_tokens, renames into place). */
#define WD_PROBS_PREFILL 1 /* the token was part of a prefill (prompt, scoring) */
#define WD_PROBS_FORWARD 2 /* it starts a forward pass (the pass runs to the next such token) */
#define WD_PROBS_SAMPLE 4  /* it starts a latency sample (a prompt; every decode step) */
typedef struct {
    int n_layers, n_experts, top_k, hidden, ffn, n_heads, n_kv_heads, head_dim, weight_bits;
    long n_tokens;
    float *probs;          /* reader: [n_tokens][n_layers][n_experts] */
    unsigned char *flags;  /* reader: [n_tokens] WD_PROBS_* (version 1: every token a decode
                              step: FORWARD | SAMPLE) */
} wd_probs;

typedef struct wd_probs_writer wd_probs_writer;
int wd_probs_write_open(wd_probs_writer **w, const char *path, const wd_probs *shape, char *err,
                        size_t errlen);
int wd_probs_write_token(wd_probs_writer *w, const float *probs, char *err, size_t errlen);
/* The same with the token's WD_PROBS_* flags (write_token: a decode step). */
int wd_probs_write_token_flags(wd_probs_writer *w, const float *probs, unsigned flags, char *err,
                               size_t errlen);
int wd_probs_write_close(wd_probs_writer *w, char *err, size_t errlen); /* frees w */
void wd_probs_write_abort(wd_probs_writer *w);                          /* frees w, removes tmp */
int wd_probs_read(wd_probs *p, const char *path, char *err, size_t errlen);
void wd_probs_free(wd_probs *p);
wd_emu_shape wd_probs_shape(const wd_probs *p);
/* Replay the first n_tokens (0: all; rounded up to a whole forward pass) of
 * recorded probabilities through emu with its policy: each forward pass as
 * recorded (a prompt's tokens together as its prefill, decode steps one token
 * each; version 1 files: every token a decode step), every layer.
 * on_layer(ctx, layer) (may be NULL) is called before each layer's select. */
int wd_probs_replay(wd_emu *emu, const wd_probs *p, long n_tokens,
                    void (*on_layer)(void *ctx, int layer), void *ctx, char *err, size_t errlen);

/* ---- results files --------------------------------------------------------------- */
/* Write a file atomically: temporary name in the same folder, fsync, rename. */
int wd_emu_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);
typedef struct {
    FILE *f;
    char path[1024], tmp[1100];
} wd_atomic_file;
int wd_atomic_open(wd_atomic_file *a, const char *path, char *err, size_t errlen);
int wd_atomic_commit(wd_atomic_file *a, char *err, size_t errlen); /* close + rename */
void wd_atomic_abort(wd_atomic_file *a);                           /* close + remove */

#ifdef __cplusplus
}
#endif
#endif
