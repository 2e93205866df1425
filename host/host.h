/* host: the inference runtime.
 *
 * A model (config + mapped tensors + tokenizer), a session (KV cache,
 * scratch, position) and the forward pass, with the MoE layer split at the
 * API: the base station (BS) part of each layer computes attention and the
 * router; an expert selection hook decides, per token, which experts run
 * and with which weights; experts are run through wd_expert_run ("run expert
 * e of layer l on these n token vectors"), which the BS scheduler dispatches
 * to emulated devices. */
#ifndef WD_HOST_H
#define WD_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "emulation/emulation.h"
#include "kernels/kernels.h"
#include "weights/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- model ------------------------------------------------------------ */
typedef struct {
    const wd_tensor *attn_norm, *ffn_norm; /* [hidden] */
    const wd_tensor *wq, *wk, *wv, *wo;    /* [nh*hd x H], [nkv*hd x H] x2, [H x nh*hd] */
    const wd_tensor *gate;                 /* router [E x H]; NULL: dense (one FFN = expert 0) */
    const wd_tensor **w1, **w2, **w3;      /* per expert: [F x H], [H x F], [F x H] */
    float *attn_norm_f32, *ffn_norm_f32;   /* norms converted once */
} wd_layer;

typedef struct {
    wd_config cfg;
    wd_tensors *tensors;
    wd_tokenizer *tok; /* may be NULL when the folder has no tokenizer.json */
    const wd_tensor *embed, *norm, *lm_head; /* lm_head == embed when tied */
    float *norm_f32;
    wd_layer *layers;
    char path[1024];
} wd_model;

/* path: a Hugging Face model folder or a .gguf file. */
int wd_model_load(wd_model **out, const char *path, char *err, size_t errlen);
void wd_model_free(wd_model *m);
/* Bytes of weights one decode token reads with k experts per layer. */
double wd_model_active_bytes(const wd_model *m, int k);

/* Huge pages for CPU decode (the default of bench_decode and serve-cell,
 * `--hugepages` of generate; eval keeps the file mapping): copies the mapped
 * weights into anonymous memory advised for transparent huge pages
 * (wd_tensors_to_hugepages) when the copy takes at most half of
 * wd_mem_available(). Returns 1 when copied; 0 when the weights stay mapped,
 * with the reason in note (empty when nothing was mapped). */
int wd_model_hugepages(wd_model *m, char *note, size_t notelen);
/* MemAvailable of /proc/meminfo in bytes (0 when unknown); the environment
 * variable WDMOE_MEM_AVAILABLE_MB overrides it (tests force the fallback). */
size_t wd_mem_available(void);

/* ---- expert selection ------------------------------------------------- */
/* Per-token expert choice for one layer: for token t, n[t] experts
 * expert[t*E + j] with combine weights weight[t*E + j], j < n[t]. */
typedef struct {
    int n_tokens, n_experts;
    int *n;
    int *expert;
    float *weight;
} wd_selection;

/* The model's own routing: top_k of probs (softmax over all experts, fp32),
 * weights renormalised to sum to 1 over the chosen set. probs: [n_tokens][E]. */
void wd_select_topk(wd_selection *sel, const float *probs, int top_k);

/* Hook between router and experts. select() fills sel from probs (it may
 * keep the default top-k that is already in sel). run_experts(), when set,
 * replaces the default expert execution: it must add
 * sum_j weight[t,j] * expert_j(u_t) into out[t] for every token (use
 * wd_moe_run_selection for the computation itself). Return non-zero to abort. */
typedef struct {
    void *ctx;
    int (*select)(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel);
    int (*run_experts)(void *ctx, int layer, const float *u, const wd_selection *sel,
                       float *out);
} wd_moe_hooks;

/* ---- session ---------------------------------------------------------- */
typedef struct wd_session wd_session;

wd_session *wd_session_create(const wd_model *m, int max_ctx, wd_pool *pool);
/* Bytes wd_session_create allocates for max_ctx tokens (<= 0 or above the
 * model's: max_position_embeddings): the fp32 KV cache of every layer plus
 * one token's scratch. For the message when creation fails (NULL). */
double wd_session_bytes(const wd_model *m, int max_ctx);
void wd_session_free(wd_session *s);
void wd_session_reset(wd_session *s);                     /* pos = 0 */
int wd_session_pos(const wd_session *s);
int wd_session_max_ctx(const wd_session *s);
void wd_session_set_pos(wd_session *s, int pos);          /* rewind (pos <= current) */
void wd_session_set_hooks(wd_session *s, const wd_moe_hooks *hooks); /* NULL: top-k */
/* Oracle router (quality studies of MoEfied models): each token uses the
 * top_k experts with the largest output norm instead of the router's choice;
 * every expert runs on every token. The router's probabilities still reach
 * the selection hook. on = 0: the router. */
void wd_session_set_oracle(wd_session *s, int on);
const wd_model *wd_session_model(const wd_session *s);

/* Run n tokens at positions pos..pos+n-1 (prefill when n > 1) and advance
 * pos. logits: NULL, or [vocab] for the last token (all_logits = 0) or
 * [n][vocab] (all_logits = 1). Returns 0, or non-zero with a message in err. */
int wd_forward(wd_session *s, const int *tokens, int n, float *logits, int all_logits,
               char *err, size_t errlen);

/* One batched forward pass over several sequences (continuous batching at
 * the BS): sequence i runs n[i] tokens at its own positions with its own KV
 * cache (seqs[i], distinct sessions of one model); the projections, the
 * routers and the experts run once over all sum(n) tokens, in sequence
 * order (each expert one batched call over every token routed to it), and
 * the selection hook of `batch` sees all of them as one layer step. batch
 * holds the scratch, the hooks and the pool (it may be one of seqs; its own
 * KV cache is untouched otherwise). logits: NULL or [n_seq][vocab], each
 * sequence's last token. One sequence with batch == seqs[0] is wd_forward. */
int wd_forward_batch(wd_session *batch, wd_session *const *seqs, const int *const *tokens,
                     const int *n, int n_seq, float *logits, char *err, size_t errlen);

/* Expert e of layer l on n token vectors x[n][H] -> y[n][H] (overwritten).
 * scratch: 2*n*F floats. */
void wd_expert_run(const wd_model *m, int layer, int expert, const float *x, int n, float *y,
                   wd_pool *pool, float *scratch);

/* Default expert execution for a selection: groups tokens by expert, runs
 * each expert once over its tokens, adds weighted results into out[t][H]. */
int wd_moe_run_selection(wd_session *s, int layer, const float *u, const wd_selection *sel,
                         float *out);

/* ---- BS scheduler (emulated wireless MoE) ------------------------------- */
/* Between router and experts: per layer step it asks the emulator for the
 * predicted per-device latency, lets the scenario's policy choose experts and
 * weights, and advances the virtual clock (BS compute + the wait for the
 * slowest chosen device; the LM head after the last layer). Works with any
 * backend that calls wd_moe_hooks.select. */
typedef struct wd_scheduler wd_scheduler;

int wd_scheduler_create(wd_scheduler **out, const wd_model *m, const wd_scenario *sc, char *err,
                        size_t errlen);
void wd_scheduler_free(wd_scheduler *k);
/* hooks for wd_session_set_hooks (or a GPU runner's forward) */
void wd_scheduler_hooks(wd_scheduler *k, wd_moe_hooks *hooks);
/* the emulator: wd_emu_summarize, wd_emu_set_policy, wd_emu_reset_stats ... */
wd_emu *wd_scheduler_emu(wd_scheduler *k);
/* Why the last hook call failed ("" when none did): the hooks cannot return a
 * message, so a forward that fails in them reports this one instead. */
const char *wd_scheduler_error(const wd_scheduler *k);
/* Record the router probabilities of every token to a .wdpr file (for
 * `wdmoe replay`); finished by wd_scheduler_finish. */
int wd_scheduler_record_probs(wd_scheduler *k, const char *path, char *err, size_t errlen);
/* Write one JSON line per layer step to f (NULL: off): selection, weights,
 * per device t_dl, t_c, t_ul, bits, shares; the BS time and the wait. */
void wd_scheduler_record_steps(wd_scheduler *k, FILE *f);
/* Close the probability recording (renames it into place). */
int wd_scheduler_finish(wd_scheduler *k, char *err, size_t errlen);
/* GPU backend (one runner stream per expert). Measured compute ("compute":
 * "measured" in the scenario): select() only chooses, and the layer step
 * waits for wd_scheduler_expert_times with the measured kernel seconds per
 * expert (< 0: not run); a device's compute time is the sum over the experts
 * it serves, times its profile's calibration. Returns non-zero (message on
 * stderr) when the step fails. */
void wd_scheduler_set_measured(wd_scheduler *k, int on);
int wd_scheduler_measured(const wd_scheduler *k);
int wd_scheduler_expert_times(wd_scheduler *k, int layer, const double *seconds, int n_experts);
/* Real-time mode (modeled compute): the downlink and uplink times of the
 * device serving expert e in the layer step just taken, in ns (0, 0 when it
 * is not active). */
void wd_scheduler_link_delays(wd_scheduler *k, int layer, int expert, uint64_t *dl_ns,
                              uint64_t *ul_ns);

/* ---- serving a cell (host/serve.c) ------------------------------------ */
/* Many users' requests through the BS with continuous batching on the
 * scheduler's virtual clock (see serve.c for the rules). */
typedef struct {
    double arrival_s; /* virtual time the request reaches the BS */
    int max_new;      /* tokens to generate at most (EOS ends earlier) */
    int n_prompt;     /* prompt tokens (BOS first), >= 1 */
    const int *prompt;
} wd_serve_request;

typedef struct {
    int prefill_chunk;      /* prompt tokens per step over all users (<= 0: unlimited) */
    double kv_budget_bytes; /* BS KV-cache memory for all users (0: unlimited) */
    int max_batch;          /* running users at most (0: unlimited) */
    float temperature, top_p;
    uint64_t seed; /* user i samples with seed + i */
    int compare;   /* re-score each user's output with the model's top-k */
    int micro_batches; /* pipelined micro-batches per step (<= 1: the synchronous step) */
} wd_serve_opts;

typedef struct {
    double arrival_s, admit_s, first_s, finish_s; /* virtual times */
    double ttft_s;    /* first token - arrival (queueing + prefill) */
    double tpot_s;    /* (finish - first) / (outputs - 1); 0 with one output */
    double max_gap_s; /* the longest wait between two of its output tokens */
    double energy_j;  /* its share (by tokens) of the active energy of its steps */
    double agreement, mean_kl; /* vs top-k (NAN when not compared) */
    int n_prompt, n_out;
    int *tokens; /* [n_out] */
} wd_serve_user;

typedef struct {
    double t_start, t_end; /* virtual */
    int tokens, running, waiting, seqs;
    double kv_bytes, energy_j; /* KV reserved; active energy of the step */
    double device_util;        /* mean over devices of compute time / step time */
    double device_queue_s;     /* expert calls' waiting behind earlier calls, summed */
} wd_serve_step;

typedef struct {
    int n_users;
    wd_serve_user *users; /* in request order */
    long steps, n_timeline;
    wd_serve_step *timeline; /* [n_timeline], one per step */
    int n_devices;
    /* per step and device, [n_timeline * n_devices]: compute time, queue wait,
     * jobs that found the device busy and the calls ahead of them, summed
     * (pipelined micro-batches: the queue over time) */
    double *dev_busy_s, *dev_queue_s;
    long *dev_queued, *dev_ahead;
    double makespan_s, max_kv_bytes;
    double wall_s, expert_flops, expert_wall_s; /* the emulator's own speed (wall clock) */
} wd_serve_result;

/* KV bytes one token of one user takes at the BS (fp32 K and V, all layers). */
double wd_serve_kv_bytes_per_token(const wd_model *m);
/* Runs every request to completion through the scheduler k (its policy,
 * radio and clock; the clock is not reset). 0, or 1 with a message. */
int wd_serve_run(const wd_model *m, wd_pool *pool, wd_scheduler *k, const wd_serve_request *req,
                 int n_req, const wd_serve_opts *o, wd_serve_result *res, char *err,
                 size_t errlen);
void wd_serve_result_free(wd_serve_result *r);

/* ---- MoEfication (host/moefy.c, docs/moefication.md) ---------------------- */
/* A dense Llama model -> a Mixtral-layout MoE: the FFN's neurons split into
 * n_experts equal groups by balanced clustering of their co-activation on
 * text the model generates itself, a learned linear router per layer, the
 * plain sum of the chosen experts as the combine ("moe_combine": "sum"). */
typedef struct {
    int n_experts;      /* default 8 */
    int top_k;          /* written into the config; 0: 3/4 of n_experts, rounded up */
    int calib_tokens;   /* calibration tokens (default 1024) */
    int seq_len;        /* tokens per calibration sequence, prompt included (128) */
    uint64_t seed;      /* sampling and clustering seed (default 1) */
    float temperature, top_p; /* calibration sampling (0.8, 0.95) */
    FILE *progress;     /* progress and phase times (NULL: quiet) */
} wd_moefy_opts;
void wd_moefy_default(wd_moefy_opts *o);
/* Builds the MoE of dense model m and writes it to out_dir: a GGUF input
 * gives out_dir/model.gguf, a Hugging Face folder gives config.json,
 * model.safetensors and tokenizer.json; out_dir/moefy.json describes the
 * run. Deterministic for a seed (any thread count). */
int wd_moefy(const wd_model *m, const char *out_dir, const wd_moefy_opts *o, wd_pool *pool,
             char *err, size_t errlen);
/* Balanced clustering: X [F][T] unit rows -> assign[F], every cluster
 * exactly F/E points. Returns the iterations used, -1 when out of memory. */
int wd_moefy_cluster(const float *X, int F, int T, int E, uint64_t seed, int *assign);

/* ---- sampling --------------------------------------------------------- */
typedef struct { uint64_t state; } wd_rng;
void wd_rng_seed(wd_rng *r, uint64_t seed);
uint64_t wd_rng_next(wd_rng *r);
double wd_rng_uniform(wd_rng *r); /* [0, 1) */
/* temperature <= 0: argmax (ties to the lower id). Otherwise softmax(logits/T)
 * restricted to the smallest set of top tokens with mass >= top_p. */
int wd_sample(const float *logits, int vocab, float temperature, float top_p, wd_rng *rng,
              int *scratch_idx);

/* ---- the build (host/provenance.c) ------------------------------------- */
const char *wd_version(void);    /* "0.1.0": CMake's PROJECT_VERSION */
const char *wd_git_commit(void); /* of the source tree at build time, or "unknown" */

#ifdef __cplusplus
}
#endif
#endif
