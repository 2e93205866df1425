/* The synthetic-model writer: a random Mixtral-layout Hugging Face folder
 * (config.json, model.safetensors or shards + index, tokenizer.json).
 *
 * Values: element i of tensor NAME is drawn from the stream of block
 * i / BLOCK, a xoshiro256** generator seeded (through splitmix64) from the
 * seed, the FNV-1a hash of NAME and the block number; Box-Muller turns pairs
 * of uniforms into normals. Matrices ~ N(0, std^2) with std = init_std or
 * 1/sqrt(fan_in) (fan_in = columns); norm weights ~ 1 + N(0, 0.02^2). So the
 * values do not depend on sharding, on the thread count or on the dtype
 * (beyond its rounding), and blocks can be generated in parallel.
 *
 * Tensors are generated and written chunk by chunk: memory use is a few
 * tens of MB whatever the model size. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "weights/weights.h"

#define BLOCK 65536           /* elements per random stream */
#define CHUNK_BLOCKS 32       /* blocks generated per write */
#define NORM_NOISE 0.02f
#define DEFAULT_SHARD (4ull << 30)

void wd_synth_default(wd_synth_spec *s) {
    memset(s, 0, sizeof(*s));
    s->hidden = 64;
    s->n_layers = 2;
    s->n_heads = 4;
    s->n_kv_heads = 2;
    s->head_dim = 16;
    s->ffn = 96;
    s->n_experts = 8;
    s->top_k = 2;
    s->vocab = 320;
    s->max_pos = 512;
    s->rope_theta = 10000.0f;
    s->rms_eps = 1e-5f;
    s->dtype = WD_DT_F32;
    s->tied = 0;
    s->seed = 1;
    s->init_std = 0.0f;
    s->max_shard_bytes = 0;
}

/* ---- random numbers --------------------------------------------------- */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t s[4];
} xoshiro;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xo_next(xoshiro *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static void xo_seed(xoshiro *r, uint64_t seed, uint64_t name_hash, uint64_t block) {
    uint64_t x = seed;
    uint64_t a = splitmix64(&x) ^ name_hash;
    uint64_t b = splitmix64(&a) ^ block;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&b);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Box-Muller with float log/sin/cos polynomials (Cephes coefficients, about
 * 1 ulp) written as branch-free loops the compiler vectorises; the result
 * does not depend on the C library. */
static float as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t as_u32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* sqrt(v) for v >= 0 by Newton steps on 1/sqrt (a libm call that may set
 * errno would stop the loop below from vectorising). Relative error ~1e-7. */
static float sqrt_pos(float v) {
    float y = as_float(0x5f3759dfu - (as_u32(v) >> 1));
    for (int k = 0; k < 3; k++) y = y * (1.5f - 0.5f * v * y * y);
    return v * y;
}

/* n standard normals (n even) from r; tmp holds n floats. */
static void normals(xoshiro *r, float *out, int64_t n, float *tmp) {
    int64_t h = n / 2;
    float *u1 = tmp, *u2 = tmp + h;
    for (int64_t i = 0; i < h; i++) {
        uint64_t x = xo_next(r);
        u1[i] = (float)((uint32_t)(x >> 40) + 1u) * 0x1p-24f;    /* (0, 1] */
        u2[i] = (float)((uint32_t)(x >> 8) & 0xffffffu) * 0x1p-24f; /* [0, 1) */
    }
    for (int64_t i = 0; i < h; i++) {
        /* log(u1): u1 = m * 2^e, m in [sqrt(1/2), sqrt(2)) */
        uint32_t b = as_u32(u1[i]);
        int32_t e = (int32_t)((b >> 23) & 0xff) - 126;
        float m = as_float((b & 0x7fffffu) | 0x3f000000u); /* [0.5, 1) */
        int lo = m < 0.70710678f;
        e -= lo;
        m = lo ? m + m - 1.0f : m - 1.0f;
        float z = m * m;
        float y = 7.0376836292e-2f;
        y = y * m - 1.1514610310e-1f;
        y = y * m + 1.1676998740e-1f;
        y = y * m - 1.2420140846e-1f;
        y = y * m + 1.4249322787e-1f;
        y = y * m - 1.6668057665e-1f;
        y = y * m + 2.0000714765e-1f;
        y = y * m - 2.4999993993e-1f;
        y = y * m + 3.3333331174e-1f;
        y = y * m * z;
        float fe = (float)e;
        y += -2.12194440e-4f * fe;
        y += -0.5f * z;
        float lg = m + y + 0.693359375f * fe;
        float rad = sqrt_pos(-2.0f * lg); /* lg <= 0 */
        /* sin, cos of 2 pi u2: quadrant j, remainder in [-1/8, 1/8] turn (exact) */
        float t = u2[i];
        int j = (int)(t * 4.0f + 0.5f);
        float a = (t - (float)j * 0.25f) * 6.28318530718f;
        float a2 = a * a;
        float sn = a + a * a2 * (-1.6666654611e-1f + a2 * (8.3321608736e-3f + a2 * -1.9515295891e-4f));
        float cs = 1.0f - 0.5f * a2 +
                   a2 * a2 * (4.166664568298827e-2f + a2 * (-1.388731625493765e-3f + a2 * 2.443315711809948e-5f));
        j &= 3;
        float s_out = j == 0 ? sn : j == 1 ? cs : j == 2 ? -sn : -cs;
        float c_out = j == 0 ? cs : j == 1 ? -sn : j == 2 ? -cs : sn;
        out[2 * i] = rad * c_out;
        out[2 * i + 1] = rad * s_out;
    }
}

/* ---- the tensor plan --------------------------------------------------- */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    int is_norm;
    float std;
    uint64_t numel, nbytes;
    uint64_t offset; /* within its shard's data */
    int shard;
} plan_entry;

typedef struct {
    plan_entry *e;
    int n, cap;
} plan;

static int plan_add(plan *p, const char *name, int64_t rows, int64_t cols, float init_std,
                    wd_dtype dt) {
    if (p->n == p->cap) {
        int nc = p->cap ? p->cap * 2 : 64;
        plan_entry *ne = realloc(p->e, (size_t)nc * sizeof(*ne));
        if (!ne) return -1;
        p->e = ne;
        p->cap = nc;
    }
    plan_entry *e = &p->e[p->n++];
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    if (cols == 0) { /* a norm vector */
        e->ndim = 1;
        e->shape[0] = rows;
        e->is_norm = 1;
        e->numel = (uint64_t)rows;
    } else {
        e->ndim = 2;
        e->shape[0] = rows;
        e->shape[1] = cols;
        e->std = init_std > 0 ? init_std : (float)(1.0 / sqrt((double)cols));
        e->numel = (uint64_t)rows * (uint64_t)cols;
    }
    e->nbytes = wd_dtype_bytes(dt, (int64_t)e->numel);
    return 0;
}

static int build_plan(plan *p, const wd_synth_spec *s) {
    char nm[96];
    int64_t H = s->hidden, Q = (int64_t)s->n_heads * s->head_dim,
            KV = (int64_t)s->n_kv_heads * s->head_dim;
    float sd = s->init_std;
    wd_dtype dt = s->dtype;
    if (plan_add(p, "model.embed_tokens.weight", s->vocab, H, sd, dt)) return -1;
    for (int l = 0; l < s->n_layers; l++) {
        static const char *attn[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        snprintf(nm, sizeof(nm), "model.layers.%d.input_layernorm.weight", l);
        if (plan_add(p, nm, H, 0, sd, dt)) return -1;
        for (int k = 0; k < 4; k++) {
            int64_t rows = k == 0 ? Q : k == 3 ? H : KV, cols = k == 3 ? Q : H;
            snprintf(nm, sizeof(nm), "model.layers.%d.self_attn.%s.weight", l, attn[k]);
            if (plan_add(p, nm, rows, cols, sd, dt)) return -1;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.post_attention_layernorm.weight", l);
        if (plan_add(p, nm, H, 0, sd, dt)) return -1;
        if (s->dense) {
            static const char *mlp[] = {"gate_proj", "down_proj", "up_proj"};
            for (int k = 0; k < 3; k++) {
                snprintf(nm, sizeof(nm), "model.layers.%d.mlp.%s.weight", l, mlp[k]);
                if (plan_add(p, nm, k == 1 ? H : s->ffn, k == 1 ? s->ffn : H, sd, dt)) return -1;
            }
            continue;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.gate.weight", l);
        if (plan_add(p, nm, s->n_experts, H, sd, dt)) return -1;
        for (int e = 0; e < s->n_experts; e++) {
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
            if (plan_add(p, nm, s->ffn, H, sd, dt)) return -1;
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
            if (plan_add(p, nm, H, s->ffn, sd, dt)) return -1;
            snprintf(nm, sizeof(nm), "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
            if (plan_add(p, nm, s->ffn, H, sd, dt)) return -1;
        }
    }
    if (plan_add(p, "model.norm.weight", H, 0, sd, dt)) return -1;
    if (!s->tied && plan_add(p, "lm_head.weight", s->vocab, H, sd, dt)) return -1;
    return 0;
}

static uint64_t align8(uint64_t x) { return (x + 7) & ~7ull; }

/* Assigns shards and offsets; returns the number of shards. */
static int assign_shards(plan *p, uint64_t limit) {
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++) total += align8(p->e[i].nbytes);
    int shard = 0;
    uint64_t cur = 0;
    for (int i = 0; i < p->n; i++) {
        uint64_t sz = align8(p->e[i].nbytes);
        if (total > limit && cur > 0 && cur + sz > limit) {
            shard++;
            cur = 0;
        }
        p->e[i].shard = shard;
        p->e[i].offset = cur;
        cur += sz;
    }
    return shard + 1;
}

/* ---- small output helpers ------------------------------------------------ */
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + (size_t)k + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

static int full_write(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* "dir/.name.tmp-PID" */
static char *tmp_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 40;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/.%s.tmp-%ld", dir, name, (long)getpid());
    return p;
}

static int mkdir_p(const char *dir, char *err, size_t errlen) {
    char *p = strdup(dir);
    if (!p) {
        snprintf(err, errlen, "%s: out of memory", dir);
        return 1;
    }
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "%s: cannot create folder: %s", p, strerror(errno));
                free(p);
                return 1;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a folder", dir);
        return 1;
    }
    return 0;
}

/* Writes buf to dir/name through a temporary file. */
static int write_file_atomic(const char *dir, const char *name, const char *buf, size_t n,
                             char *err, size_t errlen) {
    char *tmp = tmp_path(dir, name), *dst = path_join(dir, name);
    int rc = 1;
    if (!tmp || !dst) {
        snprintf(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    if (full_write(fd, buf, n) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd) != 0 || rename(tmp, dst) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", dst, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    free(tmp);
    free(dst);
    return rc;
}

/* Shortest decimal that reads back as the same float, always with a '.' or 'e'. */
static void fmt_float(char *buf, size_t n, float v) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".en")) strncat(buf, ".0", n - strlen(buf) - 1);
}

/* ---- config.json --------------------------------------------------------- */
static const char *torch_dtype(wd_dtype dt) {
    return dt == WD_DT_F16 ? "float16" : dt == WD_DT_BF16 ? "bfloat16" : "float32";
}

static int write_config(const char *dir, const wd_synth_spec *s, char *err, size_t errlen) {
    char eps[32], theta[32];
    fmt_float(eps, sizeof(eps), s->rms_eps);
    fmt_float(theta, sizeof(theta), s->rope_theta);
    sbuf b = {0};
    sb_add(&b,
           "{\n"
           "  \"architectures\": [\"%s\"],\n"
           "  \"model_type\": \"%s\",\n"
           "  \"hidden_size\": %d,\n"
           "  \"intermediate_size\": %d,\n"
           "  \"num_hidden_layers\": %d,\n"
           "  \"num_attention_heads\": %d,\n"
           "  \"num_key_value_heads\": %d,\n"
           "  \"head_dim\": %d,\n"
           "  \"num_local_experts\": %d,\n"
           "  \"num_experts_per_tok\": %d,\n"
           "  \"vocab_size\": %d,\n"
           "  \"max_position_embeddings\": %d,\n"
           "  \"rms_norm_eps\": %s,\n"
           "  \"rope_theta\": %s,\n"
           "  \"sliding_window\": null,\n"
           "  \"tie_word_embeddings\": %s,\n"
           "  \"bos_token_id\": 1,\n"
           "  \"eos_token_id\": 2,\n"
           "  \"hidden_act\": \"silu\",\n"
           "  \"torch_dtype\": \"%s\",\n"
           "  \"wdmoe_synthetic\": {\"seed\": %llu}\n"
           "}\n",
           s->dense ? "LlamaForCausalLM" : "MixtralForCausalLM", s->dense ? "llama" : "mixtral",
           s->hidden, s->ffn, s->n_layers, s->n_heads, s->n_kv_heads, s->head_dim, s->n_experts,
           s->top_k, s->vocab, s->max_pos, eps, theta, s->tied ? "true" : "false",
           torch_dtype(s->dtype), (unsigned long long)s->seed);
    if (b.oom) {
        free(b.s);
        snprintf(err, errlen, "%s: out of memory", dir);
        return 1;
    }
    int rc = write_file_atomic(dir, "config.json", b.s, b.n, err, errlen);
    free(b.s);
    return rc;
}

/* ---- tokenizer.json -------------------------------------------------------- */
#define SPACE_MARK "\xe2\x96\x81" /* U+2581 ▁ */

static void sb_json_str(sbuf *b, const char *s) {
    sb_add(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') sb_add(b, "\\%c", *s);
        else sb_add(b, "%c", *s);
    }
    sb_add(b, "\"");
}

typedef struct {
    sbuf vocab, merges;
    int n; /* tokens so far */
    int cap;
    int n_merges;
} tok_builder;

static int tb_token(tok_builder *t, const char *piece) {
    if (t->n >= t->cap) return 0;
    if (t->n) sb_add(&t->vocab, ",\n");
    sb_add(&t->vocab, "      ");
    sb_json_str(&t->vocab, piece);
    sb_add(&t->vocab, ": %d", t->n);
    t->n++;
    return 1;
}

static void tb_merge(tok_builder *t, const char *a, const char *b) {
    char both[128];
    snprintf(both, sizeof(both), "%s%s", a, b);
    if (!tb_token(t, both)) return;
    if (t->n_merges++) sb_add(&t->merges, ",\n");
    sb_add(&t->merges, "      [");
    sb_json_str(&t->merges, a);
    sb_add(&t->merges, ", ");
    sb_json_str(&t->merges, b);
    sb_add(&t->merges, "]");
}

static int write_tokenizer(const char *dir, int vocab, char *err, size_t errlen) {
    tok_builder t = {0};
    t.cap = vocab;
    char piece[64];
    tb_token(&t, "<unk>");
    tb_token(&t, "<s>");
    tb_token(&t, "</s>");
    for (int i = 0; i < 256; i++) {
        snprintf(piece, sizeof(piece), "<0x%02X>", i);
        tb_token(&t, piece);
    }
    /* single characters ▁ and a-z, the merges ▁a..▁z, then A-Z, 0-9 and
     * ASCII punctuation */
    tb_token(&t, SPACE_MARK);
    for (int c = 'a'; c <= 'z'; c++) tb_token(&t, (char[]){(char)c, 0});
    for (int c = 'a'; c <= 'z'; c++) tb_merge(&t, SPACE_MARK, (char[]){(char)c, 0});
    for (int c = 'A'; c <= 'Z'; c++) tb_token(&t, (char[]){(char)c, 0});
    for (int c = '0'; c <= '9'; c++) tb_token(&t, (char[]){(char)c, 0});
    for (int c = 0x21; c < 0x7f; c++)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            tb_token(&t, (char[]){(char)c, 0});
    /* merges: for lengths k = 2, 3, ...: each lowercase word w = w' + c of
     * length k (merged from w' and c), then "▁" + w (merged from "▁" + w'
     * and c). Each merge's parts are earlier tokens. */
    for (int k = 2; k <= 6 && t.n < t.cap; k++) {
        long count = 1;
        for (int i = 0; i < k; i++) count *= 26;
        for (long idx = 0; idx < count && t.n < t.cap; idx++) {
            char w[8];
            long x = idx;
            for (int i = k - 1; i >= 0; i--) {
                w[i] = (char)('a' + x % 26);
                x /= 26;
            }
            w[k] = 0;
            char last[2] = {w[k - 1], 0};
            char head[16];
            memcpy(head, w, (size_t)k - 1);
            head[k - 1] = 0;
            tb_merge(&t, head, last);
            char shead[24];
            snprintf(shead, sizeof(shead), SPACE_MARK "%s", head);
            tb_merge(&t, shead, last);
        }
    }
    while (t.n < t.cap) { /* only for absurdly large vocabs */
        snprintf(piece, sizeof(piece), "<extra_%d>", t.n);
        tb_token(&t, piece);
    }
    sbuf b = {0};
    sb_add(&b,
           "{\n"
           "  \"version\": \"1.0\",\n"
           "  \"truncation\": null,\n"
           "  \"padding\": null,\n"
           "  \"added_tokens\": [\n");
    static const char *specials[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        sb_add(&b,
               "    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
               "\"rstrip\": false, \"normalized\": false, \"special\": true}%s\n",
               i, specials[i], i < 2 ? "," : "");
    sb_add(&b,
           "  ],\n"
           "  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [\n"
           "    {\"type\": \"Prepend\", \"prepend\": \"" SPACE_MARK "\"},\n"
           "    {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"" SPACE_MARK
           "\"}]},\n"
           "  \"pre_tokenizer\": null,\n"
           "  \"post_processor\": {\"type\": \"TemplateProcessing\",\n"
           "    \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
           "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"
           "    \"pair\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
           "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
           "{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 1}}, "
           "{\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}],\n"
           "    \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": "
           "[\"<s>\"]}}},\n"
           "  \"decoder\": {\"type\": \"Sequence\", \"decoders\": [\n"
           "    {\"type\": \"Replace\", \"pattern\": {\"String\": \"" SPACE_MARK
           "\"}, \"content\": \" \"},\n"
           "    {\"type\": \"ByteFallback\"},\n"
           "    {\"type\": \"Fuse\"},\n"
           "    {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},\n"
           "  \"model\": {\n"
           "    \"type\": \"BPE\",\n"
           "    \"dropout\": null,\n"
           "    \"unk_token\": \"<unk>\",\n"
           "    \"continuing_subword_prefix\": null,\n"
           "    \"end_of_word_suffix\": null,\n"
           "    \"fuse_unk\": true,\n"
           "    \"byte_fallback\": true,\n"
           "    \"ignore_merges\": false,\n"
           "    \"vocab\": {\n");
    if (t.vocab.s) sb_add(&b, "%s", t.vocab.s);
    sb_add(&b, "\n    },\n    \"merges\": [\n");
    if (t.merges.s) sb_add(&b, "%s", t.merges.s);
    sb_add(&b, "\n    ]\n  }\n}\n");
    int rc;
    if (b.oom || t.vocab.oom || t.merges.oom) {
        snprintf(err, errlen, "%s: out of memory", dir);
        rc = 1;
    } else {
        rc = write_file_atomic(dir, "tokenizer.json", b.s, b.n, err, errlen);
    }
    free(b.s);
    free(t.vocab.s);
    free(t.merges.s);
    return rc;
}

/* ---- tensor data ---------------------------------------------------------- */
/* Bit-identical to wd_f32_to_bf16 (tests compare the two); local so that the
 * conversion loop inlines and vectorises. */
static inline uint16_t bf16_round(float f) {
    uint32_t u = as_u32(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : r);
}

/* The data of a shard is produced in chunks of up to CHUNK_BLOCKS blocks of
 * one tensor. Each pool run generates chunk k into one output buffer while
 * one task writes chunk k-1 from the other. */
typedef struct {
    const plan_entry *e;
    uint64_t name_hash;
    uint64_t first_block;
    int nb;          /* blocks in this chunk */
    size_t bytes;    /* data bytes of this chunk */
    size_t pad;      /* zero bytes to write before it (alignment) */
} chunk;

typedef struct {
    uint64_t seed;
    wd_dtype dt;
    chunk gen;             /* chunk to generate (gen.nb == 0: none) */
    unsigned char *gen_out;
    chunk put;             /* chunk to write (put.bytes == 0 && !put.pad: none) */
    const unsigned char *put_out;
    int has_put;
    int fd;
    int write_errno;       /* 0 or the errno of a failed write */
    float *scratch;        /* 2 * CHUNK_BLOCKS * BLOCK floats */
} pipe_ctx;

static void gen_one_block(pipe_ctx *c, int k) {
    const plan_entry *e = c->gen.e;
    uint64_t blk = c->gen.first_block + (uint64_t)k;
    int64_t i0 = (int64_t)blk * BLOCK, numel = (int64_t)e->numel;
    if (i0 >= numel) return;
    int64_t n = numel - i0 < BLOCK ? numel - i0 : BLOCK;
    float *f = c->scratch + (size_t)k * BLOCK;
    xoshiro r;
    xo_seed(&r, c->seed, c->gen.name_hash, blk);
    /* BLOCK is even: an odd n is < BLOCK; the second half of the scratch
     * (block k's slot there) holds the uniforms */
    normals(&r, f, n + (n & 1), c->scratch + ((size_t)CHUNK_BLOCKS + (size_t)k) * BLOCK);
    if (e->is_norm)
        for (int64_t i = 0; i < n; i++) f[i] = 1.0f + NORM_NOISE * f[i];
    else
        for (int64_t i = 0; i < n; i++) f[i] *= e->std;
    if (c->dt == WD_DT_F32) {
        memcpy(c->gen_out + (size_t)k * BLOCK * 4, f, (size_t)n * 4);
    } else {
        uint16_t *o = (uint16_t *)(c->gen_out + (size_t)k * BLOCK * 2);
        if (c->dt == WD_DT_BF16)
            for (int64_t i = 0; i < n; i++) o[i] = bf16_round(f[i]);
        else
            for (int64_t i = 0; i < n; i++) o[i] = wd_f32_to_f16(f[i]);
    }
}

static void pipe_task(void *vctx, int task, int n_tasks) {
    (void)n_tasks;
    pipe_ctx *c = vctx;
    if (c->has_put) {
        if (task == 0) { /* the write: first, so that it starts at once */
            static const unsigned char zeros[8] = {0};
            if ((c->put.pad && full_write(c->fd, zeros, c->put.pad)) ||
                full_write(c->fd, c->put_out, c->put.bytes))
                c->write_errno = errno ? errno : EIO;
            return;
        }
        task--;
    }
    gen_one_block(c, task);
}

/* Writes one safetensors file holding the plan entries of shard `shard`. */
static int write_shard(const char *dir, const char *fname, const plan *p, int shard,
                       const wd_synth_spec *s, wd_pool *pool, float *scratch,
                       unsigned char *out[2], char *err, size_t errlen) {
    sbuf h = {0};
    sb_add(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < p->n; i++) {
        const plan_entry *e = &p->e[i];
        if (e->shard != shard) continue;
        sb_add(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e->name, wd_dtype_name(s->dtype));
        for (int d = 0; d < e->ndim; d++)
            sb_add(&h, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        sb_add(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)e->offset,
               (unsigned long long)(e->offset + e->nbytes));
    }
    sb_add(&h, "}");
    while (!h.oom && (8 + h.n) % 8) sb_add(&h, " ");
    if (h.oom) {
        free(h.s);
        snprintf(err, errlen, "%s: out of memory", dir);
        return 1;
    }
    char *tmp = tmp_path(dir, fname), *dst = path_join(dir, fname);
    int rc = 1, fd = -1;
    if (!tmp || !dst) {
        snprintf(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    if (full_write(fd, len8, 8) || full_write(fd, h.s, h.n)) goto werr;
    size_t esz = s->dtype == WD_DT_F32 ? 4 : 2;
    pipe_ctx pc = {.seed = s->seed, .dt = s->dtype, .fd = fd, .scratch = scratch};
    uint64_t pos = 0;
    int cur = 0; /* output buffer of the chunk being generated */
    for (int i = 0; i <= p->n; i++) {
        const plan_entry *e = i < p->n ? &p->e[i] : NULL;
        if (e && e->shard != shard) continue;
        uint64_t n_blocks = e ? (e->numel + BLOCK - 1) / BLOCK : 1;
        for (uint64_t b = 0; b < n_blocks || (e && b == 0); b += CHUNK_BLOCKS) {
            chunk g = {0};
            if (e) {
                g.e = e;
                g.name_hash = fnv1a(e->name);
                g.first_block = b;
                g.nb = (int)(n_blocks - b < CHUNK_BLOCKS ? n_blocks - b : CHUNK_BLOCKS);
                uint64_t i0 = b * BLOCK, i1 = i0 + (uint64_t)g.nb * BLOCK;
                if (i1 > e->numel) i1 = e->numel;
                g.bytes = (size_t)(i1 - i0) * esz;
                if (b == 0) {
                    g.pad = (size_t)(e->offset - pos);
                    pos = e->offset + e->nbytes;
                }
            }
            pc.gen = g;
            pc.gen_out = out[cur];
            int tasks = g.nb + (pc.has_put ? 1 : 0);
            wd_pool_run(pool, pipe_task, &pc, tasks);
            if (pc.write_errno) {
                errno = pc.write_errno;
                goto werr;
            }
            /* the chunk just generated is written during the next run */
            pc.put = g;
            pc.put_out = out[cur];
            pc.has_put = e != NULL;
            cur ^= 1;
            if (!e) break;
        }
    }
    if (close(fd) != 0) {
        fd = -1;
        goto werr;
    }
    fd = -1;
    if (rename(tmp, dst) != 0) {
        snprintf(err, errlen, "%s: cannot rename into place: %s", dst, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
    goto done;
werr:
    snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
done:
    free(tmp);
    free(dst);
    free(h.s);
    return rc;
}

static int check_spec(const wd_synth_spec *s, const char *dir, char *err, size_t errlen) {
    struct {
        const char *name;
        int v;
    } pos[] = {{"hidden", s->hidden},     {"layers", s->n_layers},   {"heads", s->n_heads},
               {"kv-heads", s->n_kv_heads}, {"head-dim", s->head_dim}, {"ffn", s->ffn},
               {"experts", s->n_experts}, {"top-k", s->top_k},       {"vocab", s->vocab},
               {"max-pos", s->max_pos}};
    for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++)
        if (pos[i].v <= 0) {
            snprintf(err, errlen, "%s: synthetic model: %s must be positive (got %d)", dir,
                     pos[i].name, pos[i].v);
            return 1;
        }
    if (s->n_heads % s->n_kv_heads) {
        snprintf(err, errlen, "%s: synthetic model: heads %d not a multiple of kv-heads %d", dir,
                 s->n_heads, s->n_kv_heads);
        return 1;
    }
    if (s->head_dim % 2) {
        snprintf(err, errlen, "%s: synthetic model: head-dim %d must be even (RoPE)", dir,
                 s->head_dim);
        return 1;
    }
    if (!s->dense && s->top_k > s->n_experts) {
        snprintf(err, errlen, "%s: synthetic model: top-k %d exceeds experts %d", dir, s->top_k,
                 s->n_experts);
        return 1;
    }
    if (s->vocab < 259) {
        snprintf(err, errlen,
                 "%s: synthetic model: vocab %d too small (need >= 259: 3 specials + 256 bytes)",
                 dir, s->vocab);
        return 1;
    }
    if (s->dtype != WD_DT_F32 && s->dtype != WD_DT_F16 && s->dtype != WD_DT_BF16) {
        snprintf(err, errlen, "%s: synthetic model: dtype must be F32, F16 or BF16", dir);
        return 1;
    }
    if (!(s->rms_eps > 0) || !(s->rope_theta > 0) || s->init_std < 0 || isnan(s->init_std)) {
        snprintf(err, errlen, "%s: synthetic model: rms_eps and rope_theta must be positive, "
                 "init_std >= 0", dir);
        return 1;
    }
    return 0;
}

int wd_synth_write(const char *dir, const wd_synth_spec *s, char *err, size_t errlen) {
    if (errlen) err[0] = 0;
    if (check_spec(s, dir, err, errlen)) return 1;
    plan p = {0};
    wd_pool *pool = NULL;
    float *scratch = NULL;
    unsigned char *out[2] = {NULL, NULL};
    int rc = 1;
    if (build_plan(&p, s)) {
        snprintf(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    if (mkdir_p(dir, err, errlen)) goto done;
    uint64_t limit = s->max_shard_bytes ? s->max_shard_bytes : DEFAULT_SHARD;
    int n_shards = assign_shards(&p, limit);
    uint64_t total = 0, need = 0;
    for (int i = 0; i < p.n; i++) {
        total += p.e[i].nbytes;
        need += align8(p.e[i].nbytes);
    }
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
        if (avail < need) {
            snprintf(err, errlen, "%s: not enough disk space: the model needs %.2f GB, %.2f GB "
                     "available", dir, need / 1e9, avail / 1e9);
            goto done;
        }
    }
    if (write_config(dir, s, err, errlen) || write_tokenizer(dir, s->vocab, err, errlen))
        goto done;
    scratch = malloc((size_t)2 * CHUNK_BLOCKS * BLOCK * sizeof(float));
    out[0] = malloc((size_t)CHUNK_BLOCKS * BLOCK * 4);
    out[1] = malloc((size_t)CHUNK_BLOCKS * BLOCK * 4);
    if (!scratch || !out[0] || !out[1]) {
        snprintf(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    pool = wd_pool_create(0); /* NULL: run serially */
    char *single = path_join(dir, "model.safetensors"),
         *index = path_join(dir, "model.safetensors.index.json");
    if (!single || !index) {
        free(single);
        free(index);
        snprintf(err, errlen, "%s: out of memory", dir);
        goto done;
    }
    if (n_shards == 1) {
        unlink(index); /* a stale index would win over model.safetensors */
        rc = write_shard(dir, "model.safetensors", &p, 0, s, pool, scratch, out, err, errlen);
    } else {
        unlink(single);
        unlink(index);
        sbuf ix = {0};
        sb_add(&ix, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n",
               (unsigned long long)total);
        rc = 0;
        for (int sh = 0; sh < n_shards && rc == 0; sh++) {
            char fname[64];
            snprintf(fname, sizeof(fname), "model-%05d-of-%05d.safetensors", sh + 1, n_shards);
            rc = write_shard(dir, fname, &p, sh, s, pool, scratch, out, err, errlen);
        }
        for (int i = 0; i < p.n; i++)
            sb_add(&ix, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", p.e[i].name,
                   p.e[i].shard + 1, n_shards, i + 1 < p.n ? "," : "");
        sb_add(&ix, "  }\n}\n");
        if (rc == 0) {
            if (ix.oom) {
                snprintf(err, errlen, "%s: out of memory", dir);
                rc = 1;
            } else {
                rc = write_file_atomic(dir, "model.safetensors.index.json", ix.s, ix.n, err,
                                       errlen);
            }
        }
        free(ix.s);
    }
    free(single);
    free(index);
done:
    wd_pool_destroy(pool);
    free(scratch);
    free(out[0]);
    free(out[1]);
    free(p.e);
    return rc;
}
