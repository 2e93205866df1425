/* libwdmoe: the stable C API of wdmoe's emulation, for other languages (the
 * Python package in bench/python uses it through ctypes) and other programs.
 * Installed by `cmake --install` as <prefix>/include/wdmoe.h with
 * <prefix>/lib/libwdmoe.so and a CMake package (find_package(wdmoe), target
 * wdmoe::wdmoe). See docs/python.md and docs/install.md.
 *
 * What it offers: load a scenario (JSON file or text), load or build recorded
 * router probabilities (.wdpr, as `wdmoe generate --record-probs` writes),
 * replay them through the scenario with a built-in policy or with a caller's
 * policy function, and read the results as numbers (by the names of the JSON
 * summary) or as JSON. It is what `wdmoe replay` does, one run at a time.
 *
 * Stability: only opaque handles, C strings, plain numbers and arrays cross
 * this interface, so new metrics and scenario keys need no change to it.
 * Functions are only ever added; WDMOE_API_VERSION counts the additions.
 *
 * Errors: a function returning int gives 0 on success; otherwise non-zero
 * after writing one line "FILE: what is wrong" into err (errlen bytes; err
 * may be NULL). Nothing here keeps global state: handles may be used from
 * several threads at once as long as each result is read by one thread;
 * a replay only reads its scenario and probabilities. */
#ifndef WDMOE_H
#define WDMOE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(WDMOE_STATIC)
#define WDMOE_API __attribute__((visibility("default")))
#else
#define WDMOE_API
#endif

#define WDMOE_API_VERSION 1

typedef struct wdmoe_scenario wdmoe_scenario;
typedef struct wdmoe_probs wdmoe_probs;
typedef struct wdmoe_result wdmoe_result;

/* WDMOE_API_VERSION of the library (may be newer than the header's). */
WDMOE_API int wdmoe_api_version(void);
/* The wdmoe release, "MAJOR.MINOR.PATCH" (CMake's PROJECT_VERSION). */
WDMOE_API const char *wdmoe_version(void);
/* Frees what the library returned as char * (wdmoe_result_json). */
WDMOE_API void wdmoe_free(void *p);

/* ---- scenarios ----------------------------------------------------------- */
/* The scenario format is docs/emulation.md; unknown keys and out-of-range
 * values are errors naming the key path. parse: json is the text, path names
 * it in messages and relative trace files resolve against its folder. */
WDMOE_API int wdmoe_scenario_load(wdmoe_scenario **out, const char *path, char *err,
                                  size_t errlen);
WDMOE_API int wdmoe_scenario_parse(wdmoe_scenario **out, const char *json, const char *path,
                                   char *err, size_t errlen);
WDMOE_API void wdmoe_scenario_free(wdmoe_scenario *sc);
WDMOE_API const char *wdmoe_scenario_name(const wdmoe_scenario *sc);
WDMOE_API const char *wdmoe_scenario_policy(const wdmoe_scenario *sc); /* its own policy */
WDMOE_API int wdmoe_scenario_n_devices(const wdmoe_scenario *sc);

/* ---- recorded router probabilities ---------------------------------------- */
WDMOE_API int wdmoe_probs_load(wdmoe_probs **out, const char *path, char *err, size_t errlen);
/* From memory: probs [n_tokens][n_layers][n_experts] (each row a softmax:
 * non-negative, sums to 1 within 1e-3; copied) for an MoE of hidden size
 * `hidden`, expert width `ffn`, top_k experts per token; attention q/k/v/o
 * are hidden x hidden and weights 16-bit (what the BS and device compute
 * models need). */
WDMOE_API int wdmoe_probs_create(wdmoe_probs **out, long n_tokens, int n_layers, int n_experts,
                                 int top_k, int hidden, int ffn, const float *probs, char *err,
                                 size_t errlen);
/* Writes a .wdpr file (atomically: temporary name, then rename). */
WDMOE_API int wdmoe_probs_save(const wdmoe_probs *p, const char *path, char *err, size_t errlen);
WDMOE_API void wdmoe_probs_free(wdmoe_probs *p);
/* A dimension by name: "n_tokens", "n_layers", "n_experts", "top_k", "hidden",
 * "ffn", "n_heads", "n_kv_heads", "head_dim", "weight_bits"; -1 when unknown. */
WDMOE_API long wdmoe_probs_dim(const wdmoe_probs *p, const char *name);
/* The probabilities, [n_tokens][n_layers][n_experts] (read-only, owned by p). */
WDMOE_API const float *wdmoe_probs_data(const wdmoe_probs *p);

/* ---- replay -------------------------------------------------------------- */
/* Every token (max_tokens > 0: the first max_tokens), every layer, one decode
 * token per layer step, on a fresh emulator. policy: a built-in policy name,
 * or NULL / "" for the scenario's own; its parameters come from the scenario
 * ("policy": {"name": ..., "gamma": ...}). */
WDMOE_API int wdmoe_replay(wdmoe_result **out, const wdmoe_scenario *sc, const wdmoe_probs *p,
                           const char *policy, long max_tokens, char *err, size_t errlen);

/* A caller's policy, called once per layer step (and again where the
 * scenario's joint allocation or a fault makes the emulator select again):
 *   probs [n_tokens][n_experts] router softmax; tau [n_experts] predicted
 *   latency of one token through each expert now (s; INFINITY when
 *   unreachable); available [n_experts] 1 when reachable.
 *   Writes, for each token t, n[t] and the chosen expert ids
 *   expert[t * n_experts + j], j < n[t]. Returns 0, or non-zero to stop the
 *   replay (the replay then fails with "policy NAME failed").
 * The library checks the choice (ids in range, no repeats, never an
 * unreachable expert: an error naming the layer and token), orders it by
 * descending probability and renormalises the weights. */
typedef int (*wdmoe_policy_fn)(void *user, int layer, int n_tokens, int n_experts, int top_k,
                               const float *probs, const double *tau,
                               const unsigned char *available, int *n, int *expert);
/* As wdmoe_replay with fn as the policy; name labels it in the results. */
WDMOE_API int wdmoe_replay_fn(wdmoe_result **out, const wdmoe_scenario *sc, const wdmoe_probs *p,
                              const char *name, wdmoe_policy_fn fn, void *user, long max_tokens,
                              char *err, size_t errlen);

/* ---- results ------------------------------------------------------------- */
WDMOE_API void wdmoe_result_free(wdmoe_result *r);
/* A number of the summary by its JSON name, a nested one as "block.name"
 * ("decode.mean_s": time per output token, "decode.p95_s", "prefill.mean_s":
 * time to first token, "decode.experts_per_token", "tokens", ...; see
 * docs/results.md): 0 and *value when present, -1 when not. */
WDMOE_API int wdmoe_result_get(const wdmoe_result *r, const char *name, double *value);
/* The names of the numbers, in order: the i-th, NULL past the end. */
WDMOE_API const char *wdmoe_result_name(const wdmoe_result *r, int i);
/* The time per output token (s) of every replayed decode step, in order: copies
 * up to cap values into out (out may be NULL) and returns how many there are. */
WDMOE_API long wdmoe_result_latencies(const wdmoe_result *r, double *out, long cap);
/* The run as JSON, the shape of one entry of `wdmoe replay`'s "runs":
 * scenario, scenario_file, seed, policy, params, bandwidth_allocation,
 * summary. Malloc'd; free with wdmoe_free. NULL when out of memory. */
WDMOE_API char *wdmoe_result_json(const wdmoe_result *r);

#ifdef __cplusplus
}
#endif
#endif
