/* synth_model: write a random Mixtral-layout Hugging Face model folder
 * (config.json, model.safetensors or shards + index, tokenizer.json).
 *
 *   synth_model --out DIR [--preset mini|mixtral-8x7b|default] [shape options]
 *
 * Shape options override the preset, whatever their order. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "weights/weights.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: synth_model --out DIR [options]\n"
            "Writes a random Mixtral-layout Hugging Face folder: config.json,\n"
            "model.safetensors (or model-0000i-of-0000n.safetensors + index when larger\n"
            "than the shard limit) and tokenizer.json (Llama-style BPE, byte fallback).\n"
            "\n"
            "  --out DIR          output folder (created if needed)\n"
            "  --preset NAME      default  hidden 64, 2 layers, 4 heads, 2 kv, head_dim 16,\n"
            "                              ffn 96, 8 experts, top-2, vocab 320, f32\n"
            "                     mini     hidden 512, 8 layers, 8 heads, 2 kv, ffn 1792,\n"
            "                              8 experts, top-2, vocab 32000, f32 (~0.85 GB)\n"
            "                     mixtral-8x7b  hidden 4096, 32 layers, 32 heads, 8 kv,\n"
            "                              ffn 14336, 8 experts, top-2, vocab 32000, bf16\n"
            "                              (~93 GB, 4 GiB shards)\n"
            "  --hidden N  --layers N  --heads N  --kv-heads N  --head-dim N (default\n"
            "  hidden/heads)  --ffn N  --experts N  --top-k N  --vocab N (>= 259)\n"
            "  --max-pos N        max_position_embeddings\n"
            "  --rope-theta X  --rms-eps X\n"
            "  --dtype f32|f16|bf16\n"
            "  --tied             tie_word_embeddings (no lm_head.weight)\n"
            "  --dense            a dense Llama (model_type llama, mlp.* tensors, no router;\n"
            "                     --experts and --top-k are ignored)\n"
            "  --seed S           random seed (default 1)\n"
            "  --init-std X       weight std (default 1/sqrt(fan_in))\n"
            "  --shard-mb N       most data MB per file (default 4096 MiB)\n"
            "  --help\n");
}

static int parse_long(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "synth_model: bad value for %s: '%s' (need an integer in [%ld, %ld])\n",
                opt, v, lo, hi);
        return 1;
    }
    *out = x;
    return 0;
}

static int parse_double(const char *opt, const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= 0)) {
        fprintf(stderr, "synth_model: bad value for %s: '%s' (need a number >= 0)\n", opt, v);
        return 1;
    }
    *out = x;
    return 0;
}

static int apply_preset(wd_synth_spec *s, const char *name) {
    wd_synth_default(s);
    if (strcmp(name, "default") == 0) return 0;
    if (strcmp(name, "mini") == 0) {
        s->hidden = 512;
        s->n_layers = 8;
        s->n_heads = 8;
        s->n_kv_heads = 2;
        s->head_dim = 64;
        s->ffn = 1792;
        s->n_experts = 8;
        s->top_k = 2;
        s->vocab = 32000;
        s->max_pos = 2048;
        s->rope_theta = 1e6f;
        s->dtype = WD_DT_F32;
        return 0;
    }
    if (strcmp(name, "mixtral-8x7b") == 0) {
        s->hidden = 4096;
        s->n_layers = 32;
        s->n_heads = 32;
        s->n_kv_heads = 8;
        s->head_dim = 128;
        s->ffn = 14336;
        s->n_experts = 8;
        s->top_k = 2;
        s->vocab = 32000;
        s->max_pos = 32768;
        s->rope_theta = 1e6f;
        s->dtype = WD_DT_BF16;
        return 0;
    }
    fprintf(stderr, "synth_model: unknown preset '%s' (mini, mixtral-8x7b, default)\n", name);
    return 1;
}

int main(int argc, char **argv) {
    const char *out = NULL, *preset = "default";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--preset") == 0 && i + 1 < argc) preset = argv[++i];
    }
    wd_synth_spec s;
    if (apply_preset(&s, preset)) return 2;
    int head_dim_given = 0, shape_changed = 0, kv_given = 0, topk_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--tied") == 0) {
            s.tied = 1;
            continue;
        }
        if (strcmp(a, "--dense") == 0) {
            s.dense = 1;
            continue;
        }
        static const char *takes_value[] = {
            "--out", "--preset", "--hidden", "--layers", "--heads", "--kv-heads", "--head-dim",
            "--ffn", "--experts", "--top-k", "--vocab", "--max-pos", "--rope-theta",
            "--rms-eps", "--dtype", "--seed", "--init-std", "--shard-mb"};
        int known = 0;
        for (size_t k = 0; k < sizeof(takes_value) / sizeof(*takes_value); k++)
            if (strcmp(a, takes_value[k]) == 0) known = 1;
        if (!known) {
            fprintf(stderr, "synth_model: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "synth_model: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long x = 0;
        double d = 0;
        const long big = 1L << 30;
        if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--preset") == 0) continue;
        else if (strcmp(a, "--dtype") == 0) {
            if (strcasecmp(v, "f32") == 0) s.dtype = WD_DT_F32;
            else if (strcasecmp(v, "f16") == 0) s.dtype = WD_DT_F16;
            else if (strcasecmp(v, "bf16") == 0) s.dtype = WD_DT_BF16;
            else {
                fprintf(stderr, "synth_model: bad value for --dtype: '%s' (f32, f16, bf16)\n", v);
                return 2;
            }
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long u = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "synth_model: bad value for --seed: '%s'\n", v);
                return 2;
            }
            s.seed = u;
        } else if (strcmp(a, "--rope-theta") == 0 || strcmp(a, "--rms-eps") == 0 ||
                   strcmp(a, "--init-std") == 0) {
            if (parse_double(a, v, &d)) return 2;
            if (a[2] == 'r' && a[3] == 'o') s.rope_theta = (float)d;
            else if (a[2] == 'r') s.rms_eps = (float)d;
            else s.init_std = (float)d;
        } else if (strcmp(a, "--shard-mb") == 0) {
            if (parse_long(a, v, 1, 1L << 40, &x)) return 2;
            s.max_shard_bytes = (uint64_t)x << 20;
        } else {
            if (parse_long(a, v, 1, big, &x)) return 2;
            if (strcmp(a, "--hidden") == 0) s.hidden = (int)x, shape_changed = 1;
            else if (strcmp(a, "--layers") == 0) s.n_layers = (int)x;
            else if (strcmp(a, "--heads") == 0) s.n_heads = (int)x, shape_changed = 1;
            else if (strcmp(a, "--kv-heads") == 0) s.n_kv_heads = (int)x, kv_given = 1;
            else if (strcmp(a, "--head-dim") == 0) s.head_dim = (int)x, head_dim_given = 1;
            else if (strcmp(a, "--ffn") == 0) s.ffn = (int)x;
            else if (strcmp(a, "--experts") == 0) s.n_experts = (int)x;
            else if (strcmp(a, "--top-k") == 0) s.top_k = (int)x, topk_given = 1;
            else if (strcmp(a, "--vocab") == 0) s.vocab = (int)x;
            else if (strcmp(a, "--max-pos") == 0) s.max_pos = (int)x;
        }
    }
    if (!out) {
        fprintf(stderr, "synth_model: --out DIR is required (see --help)\n");
        return 2;
    }
    if (shape_changed && !head_dim_given) {
        if (s.hidden % s.n_heads) {
            fprintf(stderr,
                    "synth_model: hidden %d is not a multiple of heads %d: give --head-dim\n",
                    s.hidden, s.n_heads);
            return 2;
        }
        s.head_dim = s.hidden / s.n_heads;
    }
    /* a preset's kv-heads / top-k follow a smaller --heads / --experts */
    if (!kv_given && s.n_kv_heads > s.n_heads) s.n_kv_heads = s.n_heads;
    if (!kv_given && s.n_heads % s.n_kv_heads) s.n_kv_heads = s.n_heads;
    if (!topk_given && s.top_k > s.n_experts) s.top_k = s.n_experts;

    char err[1024];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (wd_synth_write(out, &s, err, sizeof(err))) {
        fprintf(stderr, "synth_model: %s\n", err);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    wd_tensors *ts;
    if (wd_safetensors_open(&ts, out, err, sizeof(err))) {
        fprintf(stderr, "synth_model: written model does not load back: %s\n", err);
        return 1;
    }
    size_t bytes = wd_tensors_total_bytes(ts);
    printf("%s: hidden %d, %d layers, %d heads (%d kv, head_dim %d), ffn %d, %d experts "
           "top-%d, vocab %d, %s%s, seed %llu\n",
           out, s.hidden, s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.ffn, s.n_experts,
           s.top_k, s.vocab, wd_dtype_name(s.dtype), s.tied ? ", tied" : "",
           (unsigned long long)s.seed);
    printf("%d tensors, %zu bytes (%.3f GB), written in %.2f s (%.0f MB/s)\n",
           wd_tensors_count(ts), bytes, bytes / 1e9, secs, bytes / 1e6 / (secs > 0 ? secs : 1));
    wd_tensors_free(ts);
    return 0;
}
