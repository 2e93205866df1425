/* gpu_bench: the CUDA backend's figures on the GPU at hand, with random
 * weights generated on the GPU (nothing downloaded).
 *
 *   copy     cudaMemcpy device-to-device bandwidth (bytes read + written / s)
 *   expert   the fused expert FFN (gate/up + SiLU*mul, down + scale) at
 *            Mixtral-8x7B shapes (H 4096, F 14336, BF16), n = 1, 2, 4, 8 tokens:
 *            weight bytes / time, against the copy bandwidth
 *   gemm     cuBLAS BF16 GEMMs at prefill shapes, TFLOP/s, against a large
 *            square GEMM (the "cuBLAS peak" of this GPU)
 *   delay    the real-time delay kernel: median |measured - requested| over a
 *            sweep of 1 us .. 1 ms (measured with events around the kernel)
 *   model    a Mixtral-8x7B-shaped model (32 layers, 8 experts, top-2, BF16)
 *            through the real GPU runner: prefill tokens/s, decode tokens/s
 *            against the HBM roofline (active bytes per token / copy bandwidth),
 *            and real-time mode: the added time per token against the injected
 *            link delays.
 *
 *            Decode is measured launch by launch and with CUDA graphs; with
 *            --gpus N (N > 1, N GPUs present) also spread over N GPUs (NCCL).
 *
 * usage: gpu_bench [--json PATH] [--quick] [--layers N] [--decode N] [--prefill N] [--gpus N]
 * Prints a table last; exits 77 without a GPU. */
#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "host/cuda_runner.h"

#define CK(x)                                                                                 \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "gpu_bench: %s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)
#define CKI(x)                                                                                \
    do {                                                                                      \
        int e_ = (x);                                                                         \
        if (e_) {                                                                             \
            fprintf(stderr, "gpu_bench: %s:%d: %s\n", __FILE__, __LINE__,                     \
                    wd_cuda_error_string(e_));                                                \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

struct row {
    char name[64], value[48], goal[64];
};
static std::vector<row> table;
static std::vector<std::pair<std::string, double>> metrics;

static void report(const char *name, const char *goal, const char *fmt, double v,
                   const char *key) {
    row r;
    snprintf(r.name, sizeof r.name, "%s", name);
    snprintf(r.value, sizeof r.value, fmt, v);
    snprintf(r.goal, sizeof r.goal, "%s", goal);
    table.push_back(r);
    metrics.push_back({key, v});
    printf("  %-44s %s\n", name, r.value);
    fflush(stdout);
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n ? (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])) : 0;
}

__global__ void fill_bf16(__nv_bfloat16 *p, size_t n, unsigned seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned z = (unsigned)(i * 2654435761u) ^ seed;
        z ^= z >> 15;
        z *= 0x2c1b3c6du;
        z ^= z >> 12;
        p[i] = __float2bfloat16(scale * ((z & 0xffff) / 32768.0f - 1.0f));
    }
}
static void *rand_bf16(size_t n, unsigned seed, float scale) {
    void *p;
    CK(cudaMalloc(&p, n * 2));
    fill_bf16<<<4096, 256>>>((__nv_bfloat16 *)p, n, seed, scale);
    CK(cudaGetLastError());
    return p;
}
static float *rand_f32(size_t n) {
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++) h[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
    float *d;
    CK(cudaMalloc(&d, n * 4));
    CK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
    return d;
}

/* Seconds per call of fn (median of reps, each timed with events). */
template <typename F> static double time_it(F fn, int reps, cudaStream_t s = 0) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    fn(); /* warm-up */
    CK(cudaStreamSynchronize(s));
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a, s));
        fn();
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms * 1e-3);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return median(t);
}

/* selection hook: the first k of the model's top-k (k = 0: no expert) */
static int select_first_k(void *ctx, int layer, int pos0, const float *probs, wd_selection *sel) {
    int k = *(const int *)ctx;
    for (int t = 0; t < sel->n_tokens; t++)
        if (sel->n[t] > k) sel->n[t] = k;
    return 0;
}

typedef struct {
    uint64_t dl, ul;
} link_ctx;
static void fixed_delays(void *ctx, int layer, int device, int n_tokens, uint64_t *dl,
                         uint64_t *ul) {
    link_ctx *c = (link_ctx *)ctx;
    *dl = c->dl;
    *ul = c->ul;
}

int main(int argc, char **argv) {
    const char *json = NULL;
    int quick = 0, layers = 32, ndecode = 64, nprefill = 512, ngpus = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) ndecode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc) nprefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gpus") && i + 1 < argc) ngpus = atoi(argv[++i]);
        else {
            int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr,
                    "usage: gpu_bench [--json PATH] [--quick] [--layers N] [--decode N] "
                    "[--prefill N] [--gpus N]\n"
                    "The CUDA backend's figures on this GPU (see the comment at the top of\n"
                    "bench/gpu_bench.cu and README.md, \"The GPU check\"); a table last.\n");
            return help ? 0 : 2;
        }
    }
    if (wd_cuda_device_count() <= 0) {
        printf("SKIPPED: no CUDA device\n");
        return 77;
    }
    if (layers < 1 || ndecode < 1 || nprefill < 1 || ngpus < 1) {
        fprintf(stderr, "gpu_bench: --layers, --decode, --prefill and --gpus must be positive\n");
        return 2;
    }
    char info[256];
    wd_cuda_device_info(0, info, sizeof info);
    printf("GPU 0: %s\n", info);
    int reps = quick ? 5 : 20;

    /* ---- copy bandwidth ---- */
    size_t cb = (size_t)1 << 30;
    void *ca, *cbuf;
    CK(cudaMalloc(&ca, cb));
    CK(cudaMalloc(&cbuf, cb));
    CK(cudaMemset(ca, 1, cb));
    double tc = time_it([&] { CK(cudaMemcpyAsync(cbuf, ca, cb, cudaMemcpyDeviceToDevice, 0)); }, reps);
    double copy_bw = 2.0 * cb / tc;
    CK(cudaFree(ca));
    CK(cudaFree(cbuf));
    report("copy bandwidth D2D (read+write)", "-", "%.0f GB/s", copy_bw / 1e9, "copy_gbps");

    /* ---- fused expert at Mixtral shapes ---- */
    const int H = 4096, F = 14336, NE = 4;
    wd_cuda_expert ex[NE];
    for (int e = 0; e < NE; e++) {
        ex[e].w1 = rand_bf16((size_t)F * H, 11 + e, 0.02f);
        ex[e].w3 = rand_bf16((size_t)F * H, 23 + e, 0.02f);
        ex[e].w2 = rand_bf16((size_t)H * F, 37 + e, 0.01f);
        ex[e].dt = WD_DT_BF16;
        ex[e].hidden = H;
        ex[e].ffn = F;
    }
    float *x = rand_f32((size_t)8 * H), *out;
    CK(cudaMalloc(&out, (size_t)8 * H * 4));
    void *scr;
    CK(cudaMalloc(&scr, wd_cuda_expert_scratch_bytes(64, H, F)));
    double ebytes = 3.0 * H * F * 2;
    double expert_frac1 = 0;
    for (int n : {1, 2, 4, 8}) {
        int k = 0;
        double t = time_it([&] {
            CKI(wd_cuda_expert_ffn(NULL, &ex[k++ % NE], out, x, NULL, NULL, n, 0, scr, NULL));
        }, reps);
        char name[64], key[32];
        snprintf(name, sizeof name, "expert fused n=%d: weight GB/s", n);
        snprintf(key, sizeof key, "expert_n%d_gbps", n);
        report(name, n == 1 ? ">= 85% of copy" : "-", "%.0f GB/s", ebytes / t / 1e9, key);
        if (n == 1) {
            expert_frac1 = ebytes / t / copy_bw;
            snprintf(name, sizeof name, "expert fused n=1: time");
            report(name, "-", "%.1f us", t * 1e6, "expert_n1_us");
            report("expert fused n=1: fraction of copy BW", ">= 0.85", "%.3f", expert_frac1,
                   "expert_n1_frac_copy");
        }
    }
    CK(cudaFree(x));
    CK(cudaFree(out));
    CK(cudaFree(scr));

    /* ---- cuBLAS GEMMs at prefill shapes ---- */
    char err[512];
    size_t maxel = (size_t)8192 * 14336;
    wd_cuda_blas *blas = wd_cuda_blas_create(NULL, maxel, err, sizeof err);
    if (!blas) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return 1;
    }
    {
        int P = 8192;
        void *w = rand_bf16((size_t)P * P, 5, 0.01f);
        float *xa = rand_f32((size_t)P * P), *ya;
        CK(cudaMalloc(&ya, (size_t)P * P * 4));
        void *xa16 = rand_bf16((size_t)P * P, 3, 1.0f);
        /* the GEMM alone (input already BF16); the fp32 -> bf16 conversion that
           wd_cuda_gemm adds is reported on its own */
        double t = time_it([&] {
            CKI(wd_cuda_gemm_typed_input(blas, ya, xa16, w, WD_DT_BF16, P, P, P));
        }, quick ? 3 : 10);
        double peak = 2.0 * P * P * (double)P / t;
        report("cuBLAS BF16 peak (8192^3, fp32 out)", "-", "%.0f TFLOP/s", peak / 1e12, "gemm_peak_tflops");
        double tconv = time_it([&] { CKI(wd_cuda_gemm(blas, ya, xa, w, WD_DT_BF16, P, P, P)); },
                               quick ? 3 : 10) - t;
        report("gemm 8192^3: fp32->bf16 input conversion", "-", "%.1f us", tconv * 1e6,
               "gemm_convert_us");
        CK(cudaFree(w));
        CK(cudaFree(xa));
        CK(cudaFree(xa16));
        CK(cudaFree(ya));
        cudaDeviceProp prop;
        CK(cudaGetDeviceProperties(&prop, 0));
        struct { int rows, cols; const char *what; } shapes[] = {
            {4096, 4096, "q/o"}, {1024, 4096, "k/v"}, {14336, 4096, "w1/w3"}, {4096, 14336, "w2"}};
        /* a shape "fills the GPU" when its output holds at least one 128x128
           tile per SM; smaller ones are reported, but not held to the goal */
        double worst = 1e9, worst_small = 1e9;
        for (int n : {512, 2048}) {
            for (auto &s : shapes) {
                void *wm = rand_bf16((size_t)s.rows * s.cols, 9, 0.01f);
                void *xm = rand_bf16((size_t)n * s.cols, 4, 1.0f);
                float *ym;
                CK(cudaMalloc(&ym, (size_t)n * s.rows * 4));
                double tt = time_it([&] {
                    CKI(wd_cuda_gemm_typed_input(blas, ym, xm, wm, WD_DT_BF16, n, s.rows, s.cols));
                }, reps);
                double tf = 2.0 * n * s.rows * (double)s.cols / tt;
                long tiles = (long)((s.rows + 127) / 128) * ((n + 127) / 128);
                int fills = tiles >= prop.multiProcessorCount;
                char name[64], key[48];
                snprintf(name, sizeof name, "gemm n=%d %s %dx%d%s", n, s.what, s.rows, s.cols,
                         fills ? "" : " (small)");
                snprintf(key, sizeof key, "gemm_n%d_%dx%d_tflops", n, s.rows, s.cols);
                report(name, "-", "%.0f TFLOP/s", tf / 1e12, key);
                if (fills) worst = std::min(worst, tf / peak);
                else worst_small = std::min(worst_small, tf / peak);
                CK(cudaFree(wm));
                CK(cudaFree(xm));
                CK(cudaFree(ym));
            }
        }
        printf("  (small: fewer 128x128 output tiles than the %d SMs; GEMM alone, BF16 input)\n",
               prop.multiProcessorCount);
        report("prefill GEMMs filling the GPU: worst fraction of peak", ">= 0.70", "%.3f", worst,
               "gemm_worst_frac_peak");
        if (worst_small < 1e9)
            report("prefill GEMMs too small to fill it: worst fraction", "-", "%.3f", worst_small,
                   "gemm_small_worst_frac_peak");
    }
    for (int e = 0; e < NE; e++) {
        CK(cudaFree((void *)ex[e].w1));
        CK(cudaFree((void *)ex[e].w3));
        CK(cudaFree((void *)ex[e].w2));
    }

    /* ---- delay kernel accuracy ---- */
    {
        cudaStream_t s;
        CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        unsigned long long *dt;
        CK(cudaMalloc(&dt, 16));
        std::vector<double> ev_err, k_err;
        const double req_us[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
        for (double us : req_us) {
            for (int r = 0; r < (quick ? 5 : 20); r++) {
                uint64_t ns = (uint64_t)(us * 1000);
                double t = time_it([&] { CKI(wd_cuda_delay_timed(ns, dt, s)); }, 1, s);
                unsigned long long h[2];
                CK(cudaMemcpy(h, dt, 16, cudaMemcpyDeviceToHost));
                ev_err.push_back(fabs(t * 1e6 - us));
                k_err.push_back(fabs((h[1] - h[0]) / 1e3 - us));
            }
        }
        report("delay: median |event time - requested|", "<= 5 us", "%.2f us", median(ev_err),
               "delay_median_abs_err_us");
        report("delay: median |kernel timer - requested|", "-", "%.2f us", median(k_err),
               "delay_kernel_median_abs_err_us");
        CK(cudaFree(dt));
        CK(cudaStreamDestroy(s));
    }
    wd_cuda_blas_free(blas);

    /* ---- Mixtral-8x7B-shaped model through the GPU runner ---- */
    {
        wd_config c;
        memset(&c, 0, sizeof c);
        strcpy(c.model_type, "mixtral");
        c.hidden = 4096; c.n_layers = layers; c.n_heads = 32; c.n_kv_heads = 8; c.head_dim = 128;
        c.ffn = 14336; c.n_experts = 8; c.top_k = 2; c.vocab = 32000; c.max_pos = 32768;
        c.rms_eps = 1e-5f; c.rope_theta = 1e6f; c.tie_embeddings = 0; c.bos_id = 1; c.eos_id = 2;
        size_t free_b, total_b;
        CK(cudaMemGetInfo(&free_b, &total_b));
        double need = 2.0 * ((double)c.n_layers * (2.5 * 4096 * 4096 + 8.0 * 3 * 4096 * 14336) +
                             2.0 * 32000 * 4096);
        printf("model: Mixtral-8x7B shape, %d layers, ~%.1f GB of BF16 weights, %.1f GB free\n",
               c.n_layers, need / 1e9, free_b / 1e9);
        if (need + 4e9 > (double)free_b) {
            int fit = (int)((free_b - 4e9 - 2.0 * 2 * 32000 * 4096) / (need / c.n_layers));
            printf("model: does not fit; using %d layers (tokens/s scaled to 32 layers)\n", fit);
            c.n_layers = fit > 1 ? fit : 1;
        }
        wd_cuda_model_spec spec;
        wd_cuda_model_spec_default(&spec);
        spec.dtype = WD_DT_BF16;
        spec.max_ctx = nprefill + 2 * ndecode + 8;
        spec.max_batch = nprefill;
        spec.n_devices = 8;
        spec.realtime = 1;
        char log[4096] = "";
        wd_cuda_model *cm;
        if (wd_cuda_model_create_random(&cm, &c, 42, &spec, log, sizeof log, err, sizeof err)) {
            fprintf(stderr, "gpu_bench: %s\n", err);
            return 1;
        }
        printf("%s", log);
        double wbytes = (double)wd_cuda_model_weight_bytes(cm);
        /* active bytes per decode token: all but 6 of 8 experts per layer, embed row */
        double expert_b = 3.0 * c.hidden * c.ffn * 2;
        double active = wbytes - (double)c.n_layers * (c.n_experts - c.top_k) * expert_b -
                        (double)c.vocab * c.hidden * 2;
        double scale32 = 32.0 / c.n_layers;
        std::vector<int> toks(nprefill);
        for (int i = 0; i < nprefill; i++) toks[i] = (i * 7919 + 13) % c.vocab;
        std::vector<float> logits(c.vocab);
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        CK(cudaEventRecord(a));
        if (wd_cuda_model_forward(cm, toks.data(), nprefill, logits.data(), 0, NULL, NULL, err, sizeof err)) {
            fprintf(stderr, "gpu_bench: %s\n", err);
            return 1;
        }
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        report("Mixtral shape prefill (tokens/s, 32 layers)", "-", "%.0f tok/s",
               nprefill / (ms * 1e-3 * scale32), "prefill_tok_s");
        /* decode: greedy tokens one at a time (host argmax) */
        /* every decode series starts right after the prompt (same context length) */
        int decode_base = nprefill;
        /* A decode series of n tokens: median seconds per token over the tokens
           that captured no CUDA graph (a token that captures pays the capture
           and instantiation, which is no decode cost); *captured counts the
           tokens left out. */
        auto decode = [&](int n, const wd_cuda_timing_hooks *th, int *captured,
                          const wd_moe_hooks *mh = NULL) {
            if (wd_cuda_model_set_pos(cm, decode_base) != 0) {
                fprintf(stderr, "gpu_bench: set_pos failed\n");
                exit(1);
            }
            int tok = 0;
            for (int i = 0; i < c.vocab; i++) if (logits[i] > logits[tok]) tok = i;
            std::vector<double> t;
            int skipped = 0;
            for (int i = 0; i < n; i++) {
                wd_cuda_profile p0, p1;
                wd_cuda_model_profile(cm, &p0);
                CK(cudaEventRecord(a));
                if (wd_cuda_model_forward(cm, &tok, 1, logits.data(), 0, mh, th, err, sizeof err)) {
                    fprintf(stderr, "gpu_bench: %s\n", err);
                    exit(1);
                }
                CK(cudaEventRecord(b));
                CK(cudaEventSynchronize(b));
                wd_cuda_model_profile(cm, &p1);
                float m2;
                CK(cudaEventElapsedTime(&m2, a, b));
                if (p1.captures > p0.captures) skipped++;
                else t.push_back(m2 * 1e-3);
                tok = 0;
                for (int j = 0; j < c.vocab; j++) if (logits[j] > logits[tok]) tok = j;
            }
            if (captured) *captured = skipped;
            return t.empty() ? 1e9 : median(t);
        };
        /* warm up: decode series until one captures nothing (every expert set
           the greedy tokens reach has its graph), at most `rounds` series */
        auto warm_graphs = [&](const wd_cuda_timing_hooks *th, int rounds, long *captures,
                               double *capture_s, const wd_moe_hooks *mh = NULL) {
            wd_cuda_profile p0, p1;
            wd_cuda_model_profile(cm, &p0);
            int r = 0, cap = 1;
            for (; r < rounds && cap; r++) decode(ndecode, th, &cap, mh);
            wd_cuda_model_profile(cm, &p1);
            *captures = p1.captures - p0.captures;
            *capture_s = p1.capture - p0.capture;
            return cap == 0;
        };
        double td_plain = decode(ndecode, NULL, NULL) * scale32;
        report("Mixtral shape decode batch 1, launch by launch", "-", "%.1f tok/s", 1.0 / td_plain,
               "decode_tok_s_no_graphs");
        double td = td_plain;
        int graphs_on = wd_cuda_model_set_graphs(cm, 1) == 0;
        if (graphs_on) {
            long ncap;
            double tcap;
            int settled = warm_graphs(NULL, quick ? 6 : 12, &ncap, &tcap);
            printf("  graph warm-up: %ld captures, %.1f ms each%s\n", ncap,
                   ncap ? tcap / ncap * 1e3 : 0.0,
                   settled ? "" : " (still capturing: those tokens are left out)");
            report("decode: CUDA graph capture + instantiate", "-", "%.2f ms",
                   ncap ? tcap / ncap * 1e3 : 0.0, "graph_capture_ms");
            wd_cuda_model_profile_reset(cm);
            int skipped = 0;
            td = decode(ndecode, NULL, &skipped) * scale32;
            if (skipped)
                printf("  %d of %d timed tokens captured a graph: left out of the median\n",
                       skipped, ndecode);
            report("Mixtral shape decode batch 1, CUDA graphs", ">= 150 tok/s", "%.1f tok/s",
                   1.0 / td, "decode_tok_s");
            wd_cuda_profile pf;
            wd_cuda_model_profile(cm, &pf);
            double per = pf.layers ? 1e6 / pf.layers : 0;
            printf("decode host time per layer (us): launch BS %.1f | wait router %.1f | select "
                   "%.1f | launch experts %.1f; per token: tail %.1f us\n",
                   pf.launch_bs * per, pf.wait_router * per, pf.select * per,
                   pf.launch_experts * per, pf.forwards ? pf.tail * 1e6 / pf.forwards : 0.0);
            report("decode: host select + launches per layer", "-", "%.1f us",
                   (pf.launch_bs + pf.select + pf.launch_experts) * per, "decode_host_us_per_layer");
            /* where a decode token's time goes: the same decode with no expert
               (the BS part alone: attention, router, LM head, host round trips)
               and with the top-1 expert only */
            for (int k : {0, 1}) {
                wd_moe_hooks mh = {&k, select_first_k, NULL};
                long nc;
                double tc2;
                warm_graphs(NULL, 4, &nc, &tc2, &mh);
                double tk = decode(ndecode, NULL, NULL, &mh) * scale32;
                report(k ? "decode breakdown: top-1 expert only, ms/token"
                         : "decode breakdown: no experts (BS part), ms/token",
                       "-", "%.2f ms", tk * 1e3, k ? "decode_top1_ms" : "decode_bs_only_ms");
            }
        } else {
            printf("CUDA graphs not possible for this model: decode launch by launch\n");
        }
        double roof = active * scale32 / copy_bw;
        report("decode: active GB per token", "-", "%.2f GB", active * scale32 / 1e9, "decode_active_gb");
        report("decode: fraction of HBM roofline (copy BW)", ">= 0.80", "%.3f", roof / td,
               "decode_frac_roofline");
        /* real-time mode: 100 us downlink + 50 us uplink on every device, every layer */
        link_ctx lc = {100000, 50000};
        wd_cuda_timing_hooks th = {&lc, fixed_delays, NULL};
        if (graphs_on) { /* real-time graphs are keyed apart: warm them up too */
            long ncap;
            double tcap;
            warm_graphs(&th, quick ? 6 : 12, &ncap, &tcap);
        }
        double tr = decode(quick ? 4 : 16, &th, NULL) * scale32;
        double expect = 32 * 150e-6;
        report("real-time decode: added ms per token", "-", "%.2f ms", (tr - td) * 1e3, "realtime_added_ms");
        report("real-time decode: injected link ms per token", "-", "%.2f ms", expect * 1e3,
               "realtime_injected_ms");
        CK(cudaEventDestroy(a));
        CK(cudaEventDestroy(b));
        wd_cuda_model_free(cm);
        /* the same model spread over several GPUs (NCCL) */
        if (ngpus > 1 && wd_cuda_device_count() >= ngpus && wd_cuda_have_nccl()) {
            spec.n_gpus = ngpus;
            spec.realtime = 0;
            log[0] = 0;
            if (wd_cuda_model_create_random(&cm, &c, 42, &spec, log, sizeof log, err, sizeof err)) {
                fprintf(stderr, "gpu_bench: %d GPUs: %s\n", ngpus, err);
                return 1;
            }
            printf("%s", log);
            CK(cudaSetDevice(0));
            CK(cudaEventCreate(&a));
            CK(cudaEventCreate(&b));
            decode_base = nprefill;
            if (wd_cuda_model_forward(cm, toks.data(), nprefill, logits.data(), 0, NULL, NULL, err,
                                      sizeof err)) {
                fprintf(stderr, "gpu_bench: %s\n", err);
                return 1;
            }
            double tg = decode(ndecode, NULL, NULL) * scale32;
            char name[64];
            snprintf(name, sizeof name, "decode batch 1 over %d GPUs (NCCL)", ngpus);
            report(name, "-", "%.1f tok/s", 1.0 / tg, "decode_tok_s_multi_gpu");
            CK(cudaEventDestroy(a));
            CK(cudaEventDestroy(b));
            wd_cuda_model_free(cm);
        } else if (ngpus > 1) {
            printf("--gpus %d: %d GPU(s) present, NCCL %s: multi-GPU decode not measured\n", ngpus,
                   wd_cuda_device_count(), wd_cuda_have_nccl() ? "built" : "not built");
        }
    }

    /* ---- table ---- */
    printf("\n%-46s %-16s %s\n", "metric", "value", "goal");
    for (auto &r : table) printf("%-46s %-16s %s\n", r.name, r.value, r.goal);
    if (json) {
        std::string tmp = std::string(json) + ".tmp";
        FILE *f = fopen(tmp.c_str(), "w");
        if (!f) {
            fprintf(stderr, "gpu_bench: %s: cannot write\n", tmp.c_str());
            return 1;
        }
        fprintf(f, "{\n  \"gpu\": \"%s\",\n  \"metrics\": {\n", info);
        for (size_t i = 0; i < metrics.size(); i++)
            fprintf(f, "    \"%s\": %.6g%s\n", metrics[i].first.c_str(), metrics[i].second,
                    i + 1 < metrics.size() ? "," : "");
        fprintf(f, "  }\n}\n");
        if (fclose(f) || rename(tmp.c_str(), json)) {
            fprintf(stderr, "gpu_bench: %s: cannot write\n", json);
            return 1;
        }
        printf("wrote %s\n", json);
    }
    return 0;
}
