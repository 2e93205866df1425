/* MoEfication output: the MoE as a GGUF (from a GGUF: every other tensor and
 * key copied raw, stacked expert tensors as llama.cpp's Mixtral files) or a
 * Hugging Face folder (from a folder: config.json edited, model.safetensors,
 * tokenizer.json copied), and moefy.json describing the run. Every file is
 * written to a temporary name and renamed; the file that makes the folder
 * loadable (config.json, model.gguf) comes after the tensors, moefy.json
 * last. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "host/moefy_internal.h"

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int write_atomic(const char *path, const void *a, size_t na, const void *b, size_t nb,
                        const void *c, size_t nc, char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return 1;
    }
    int bad = (na && fwrite(a, 1, na, f) != na) || (nb && fwrite(b, 1, nb, f) != nb) ||
              (nc && fwrite(c, 1, nc, f) != nc) || fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

static const char *st_dtype(wd_dtype dt) {
    return dt == WD_DT_F32 ? "F32" : dt == WD_DT_F16 ? "F16" : dt == WD_DT_BF16 ? "BF16" : NULL;
}

/* ---- the new tensors of one layer ---------------------------------------- */
typedef struct {
    unsigned char *w1, *w3; /* [E][Fe] rows of the source dtype */
    size_t row_bytes;
} layer_rows;

static int gather_rows(const wd_model *m, int l, const wd_moefy_layer *ly, layer_rows *r) {
    const wd_layer *L = &m->layers[l];
    int H = m->cfg.hidden, F = m->cfg.ffn;
    r->row_bytes = wd_dtype_bytes(L->w1[0]->dtype, H);
    r->w1 = malloc((size_t)F * r->row_bytes);
    r->w3 = malloc((size_t)F * r->row_bytes);
    if (!r->w1 || !r->w3) return 1;
    for (int p = 0; p < F; p++) {
        size_t src = (size_t)ly->perm[p] * r->row_bytes;
        memcpy(r->w1 + (size_t)p * r->row_bytes, (const unsigned char *)L->w1[0]->data + src,
               r->row_bytes);
        memcpy(r->w3 + (size_t)p * r->row_bytes, (const unsigned char *)L->w3[0]->data + src,
               r->row_bytes);
    }
    return 0;
}

/* ---- GGUF ----------------------------------------------------------------- */
static int write_gguf(const wd_model *m, const wd_moefy_result *res, const char *path, char *err,
                      size_t errlen) {
    const wd_config *c = &m->cfg;
    int L = c->n_layers, H = c->hidden, E = res->opts.n_experts, Fe = c->ffn / E, rc = 1;
    char(*names)[64] = calloc((size_t)L * 7, 64);
    const char **drop = calloc((size_t)L * 3, sizeof(char *));
    wd_gguf_out_tensor *add = calloc((size_t)L * 4, sizeof(*add));
    layer_rows *rows = calloc((size_t)L, sizeof(*rows));
    if (!names || !drop || !add || !rows) goto oom;
    for (int l = 0; l < L; l++) {
        const wd_moefy_layer *ly = &res->layers[l];
        static const char *const dn[] = {"ffn_gate", "ffn_up", "ffn_down"};
        for (int k = 0; k < 3; k++) {
            snprintf(names[l * 7 + k], 64, "blk.%d.%s.weight", l, dn[k]);
            drop[l * 3 + k] = names[l * 7 + k];
        }
        if (gather_rows(m, l, ly, &rows[l])) goto oom;
        uint32_t t13, t2;
        if (wd_gguf_type(m->layers[l].w1[0]->dtype, &t13) || wd_gguf_type(ly->down_dtype, &t2)) {
            snprintf(err, errlen, "%s: layer %d: no GGUF type for the expert weights", path, l);
            goto done;
        }
        static const char *const an[] = {"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps",
                                         "ffn_down_exps"};
        for (int k = 0; k < 4; k++) snprintf(names[l * 7 + 3 + k], 64, "blk.%d.%s.weight", l, an[k]);
        wd_gguf_out_tensor *a = add + (size_t)l * 4;
        a[0] = (wd_gguf_out_tensor){names[l * 7 + 3], 0, 2, {H, E}, ly->router,
                                    (size_t)E * H * sizeof(float)};
        a[1] = (wd_gguf_out_tensor){names[l * 7 + 4], t13, 3, {H, Fe, E}, rows[l].w1,
                                    (size_t)c->ffn * rows[l].row_bytes};
        a[2] = (wd_gguf_out_tensor){names[l * 7 + 5], t13, 3, {H, Fe, E}, rows[l].w3,
                                    (size_t)c->ffn * rows[l].row_bytes};
        a[3] = (wd_gguf_out_tensor){names[l * 7 + 6], t2, 3, {Fe, H, E}, ly->down,
                                    wd_dtype_bytes(ly->down_dtype, (int64_t)H * c->ffn)};
    }
    wd_gguf_kv kv[] = {
        {"llama.expert_count", 4, (uint32_t)E, NULL},
        {"llama.expert_used_count", 4, (uint32_t)res->opts.top_k, NULL},
        {"llama.feed_forward_length", 4, (uint32_t)Fe, NULL},
        {"llama.expert_feed_forward_length", 4, (uint32_t)Fe, NULL},
        {"wdmoe.moe_combine", 8, 0, "sum"},
    };
    rc = wd_gguf_rewrite(m->path, path, kv, (int)(sizeof(kv) / sizeof(kv[0])), drop, L * 3, add,
                         L * 4, err, errlen);
    goto done;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
done:
    if (rows)
        for (int l = 0; l < L; l++) free(rows[l].w1), free(rows[l].w3);
    free(rows);
    free(names);
    free(drop);
    free(add);
    return rc;
}

/* ---- Hugging Face folder ---------------------------------------------------- */
typedef struct {
    char *name;
    const char *dtype;
    int64_t shape[2];
    const void *data;
    size_t nbytes;
} st_entry;

static int write_safetensors(const wd_model *m, const wd_moefy_result *res, const char *dir,
                             char *err, size_t errlen) {
    const wd_config *c = &m->cfg;
    int L = c->n_layers, H = c->hidden, E = res->opts.n_experts, Fe = c->ffn / E, rc = 1;
    int n_src = wd_tensors_count(m->tensors), n = 0, cap = n_src + L * (1 + 3 * E);
    st_entry *en = calloc((size_t)cap, sizeof(*en));
    layer_rows *rows = calloc((size_t)L, sizeof(*rows));
    json_object *hdr = json_object_new_object();
    char path[4200], name[160];
    if (!en || !rows || !hdr) goto oom;
    for (int i = 0; i < n_src; i++) {
        const wd_tensor *t = wd_tensors_at(m->tensors, i);
        if (strstr(t->name, ".mlp.")) continue;
        if (!st_dtype(t->dtype) || t->ndim > 2) {
            snprintf(err, errlen, "%s: tensor %s: only F32/F16/BF16 matrices are written", m->path,
                     t->name);
            goto done;
        }
        en[n++] = (st_entry){strdup(t->name), st_dtype(t->dtype),
                             {t->shape[0], t->ndim > 1 ? t->shape[1] : -1}, t->data, t->nbytes};
        if (!en[n - 1].name) goto oom;
    }
    for (int l = 0; l < L; l++) {
        const wd_moefy_layer *ly = &res->layers[l];
        if (gather_rows(m, l, ly, &rows[l])) goto oom;
        const char *d13 = st_dtype(m->layers[l].w1[0]->dtype), *d2 = st_dtype(ly->down_dtype);
        snprintf(name, sizeof(name), "model.layers.%d.block_sparse_moe.gate.weight", l);
        en[n++] = (st_entry){strdup(name), "F32", {E, H}, ly->router, (size_t)E * H * 4};
        if (!en[n - 1].name) goto oom;
        size_t rb = rows[l].row_bytes, db = wd_dtype_bytes(ly->down_dtype, (int64_t)H * Fe);
        for (int e = 0; e < E; e++) {
            static const char *const w[] = {"w1", "w2", "w3"};
            for (int k = 0; k < 3; k++) {
                snprintf(name, sizeof(name), "model.layers.%d.block_sparse_moe.experts.%d.%s.weight",
                         l, e, w[k]);
                st_entry *s = &en[n++];
                s->name = strdup(name);
                if (!s->name) goto oom;
                if (k == 1) {
                    *s = (st_entry){s->name, d2, {H, Fe}, ly->down + (size_t)e * db, db};
                } else {
                    const unsigned char *src = k == 0 ? rows[l].w1 : rows[l].w3;
                    *s = (st_entry){s->name, d13, {Fe, H}, src + (size_t)e * Fe * rb, (size_t)Fe * rb};
                }
            }
        }
    }
    /* header: name -> dtype, shape, data_offsets; data 8-byte aligned */
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_object *o = json_object_new_object(), *shape = json_object_new_array(),
                    *offs = json_object_new_array();
        if (!o || !shape || !offs) goto oom;
        json_object_object_add(o, "dtype", json_object_new_string(en[i].dtype));
        json_object_array_add(shape, json_object_new_int64(en[i].shape[0]));
        if (en[i].shape[1] >= 0) json_object_array_add(shape, json_object_new_int64(en[i].shape[1]));
        json_object_object_add(o, "shape", shape);
        json_object_array_add(offs, json_object_new_int64((int64_t)off));
        json_object_array_add(offs, json_object_new_int64((int64_t)(off + en[i].nbytes)));
        json_object_object_add(o, "data_offsets", offs);
        json_object_object_add(hdr, en[i].name, o);
        off += en[i].nbytes;
    }
    const char *hs = json_object_to_json_string_ext(hdr, JSON_C_TO_STRING_PLAIN);
    size_t hl = strlen(hs), padded = (hl + 7) / 8 * 8;
    unsigned char *head = malloc(8 + padded), *data = malloc(off ? off : 1);
    if (!head || !data) {
        free(head);
        free(data);
        goto oom;
    }
    uint64_t hl64 = padded;
    memcpy(head, &hl64, 8);
    memcpy(head + 8, hs, hl);
    memset(head + 8 + hl, ' ', padded - hl);
    off = 0;
    for (int i = 0; i < n; i++) memcpy(data + off, en[i].data, en[i].nbytes), off += en[i].nbytes;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    rc = write_atomic(path, head, 8 + padded, data, off, NULL, 0, err, errlen);
    free(head);
    free(data);
    if (rc) goto done;
    rc = 1;
    /* tokenizer.json as is */
    char src[4200];
    snprintf(src, sizeof(src), "%s/tokenizer.json", m->path);
    FILE *f = fopen(src, "rb");
    if (f) {
        char *buf = NULL;
        long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
        if (sz >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)sz + 1)) &&
            fread(buf, 1, (size_t)sz, f) == (size_t)sz) {
            snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
            int w = write_atomic(path, buf, (size_t)sz, NULL, 0, NULL, 0, err, errlen);
            free(buf);
            fclose(f);
            if (w) goto done;
        } else {
            free(buf);
            fclose(f);
            snprintf(err, errlen, "%s: read failed", src);
            goto done;
        }
    }
    /* config.json: the source's, as Mixtral with the plain-sum combine */
    snprintf(src, sizeof(src), "%s/config.json", m->path);
    json_object *cfg = json_object_from_file(src);
    if (!cfg || !json_object_is_type(cfg, json_type_object)) {
        json_object_put(cfg);
        snprintf(err, errlen, "%s: cannot read", src);
        goto done;
    }
    json_object *arch = json_object_new_array();
    json_object_array_add(arch, json_object_new_string("MixtralForCausalLM"));
    json_object_object_add(cfg, "architectures", arch);
    json_object_object_add(cfg, "model_type", json_object_new_string("mixtral"));
    json_object_object_add(cfg, "intermediate_size", json_object_new_int(Fe));
    json_object_object_add(cfg, "num_local_experts", json_object_new_int(E));
    json_object_object_add(cfg, "num_experts_per_tok", json_object_new_int(res->opts.top_k));
    json_object_object_add(cfg, "moe_combine", json_object_new_string("sum"));
    const char *cs = json_object_to_json_string_ext(
        cfg, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    rc = write_atomic(path, cs, strlen(cs), "\n", 1, NULL, 0, err, errlen);
    json_object_put(cfg);
    goto done;
oom:
    snprintf(err, errlen, "%s: out of memory", dir);
done:
    json_object_put(hdr);
    if (en)
        for (int i = 0; i < n; i++) free(en[i].name);
    free(en);
    if (rows)
        for (int l = 0; l < L; l++) free(rows[l].w1), free(rows[l].w3);
    free(rows);
    return rc;
}

/* ---- moefy.json ------------------------------------------------------------- */
static json_object *freq_array(const double *v, int n) {
    json_object *a = json_object_new_array();
    for (int i = 0; i < n; i++) json_object_array_add(a, json_object_new_double(v[i]));
    return a;
}

static int write_report(const wd_model *m, const wd_moefy_result *res, const char *dir,
                        char *err, size_t errlen) {
    const wd_config *c = &m->cfg;
    const wd_moefy_opts *o = &res->opts;
    int E = o->n_experts, Fe = c->ffn / E, H = c->hidden;
    json_object *doc = json_object_new_object(), *cal = json_object_new_object(),
                *pr = json_object_new_array(), *layers = json_object_new_array(),
                *call = json_object_new_object();
    const char *base = strrchr(m->path, '/');
    json_object_object_add(doc, "source", json_object_new_string(base ? base + 1 : m->path));
    json_object_object_add(doc, "experts", json_object_new_int(E));
    json_object_object_add(doc, "top_k", json_object_new_int(o->top_k));
    json_object_object_add(doc, "expert_ffn", json_object_new_int(Fe));
    json_object_object_add(doc, "combine", json_object_new_string("sum"));
    for (int i = 0; wd_moefy_prompt(i); i++)
        json_object_array_add(pr, json_object_new_string(wd_moefy_prompt(i)));
    json_object_object_add(cal, "prompts", pr);
    json_object_object_add(cal, "tokens", json_object_new_int(o->calib_tokens));
    json_object_object_add(cal, "sequences", json_object_new_int(res->n_seq));
    json_object_object_add(cal, "seq_len", json_object_new_int(o->seq_len));
    json_object_object_add(cal, "temperature", json_object_new_double(o->temperature));
    json_object_object_add(cal, "top_p", json_object_new_double(o->top_p));
    json_object_object_add(cal, "seed", json_object_new_int64((int64_t)o->seed));
    json_object_object_add(doc, "calibration", cal);
    /* one expert call on one token: weights read and FLOPs (gate, up, down) */
    const wd_layer *L0 = &m->layers[0];
    double wb = 2 * (double)wd_dtype_bytes(L0->w1[0]->dtype, (int64_t)Fe * H) +
                (double)wd_dtype_bytes(res->layers[0].down_dtype, (int64_t)Fe * H);
    json_object_object_add(call, "weight_bytes", json_object_new_double(wb));
    json_object_object_add(call, "flops_per_token", json_object_new_double(6.0 * H * Fe));
    json_object_object_add(call, "activation_bytes_per_token_f32",
                           json_object_new_double(2.0 * H * 4));
    json_object_object_add(doc, "expert_call", call);
    for (int l = 0; l < res->n_layers; l++) {
        const wd_moefy_layer *ly = &res->layers[l];
        json_object *lo = json_object_new_object();
        json_object_object_add(lo, "router_topk_freq", freq_array(ly->router_freq, E));
        json_object_object_add(lo, "oracle_topk_freq", freq_array(ly->oracle_freq, E));
        json_object_object_add(lo, "heldout_topk_overlap",
                               json_object_new_double(ly->heldout_overlap));
        json_object_object_add(lo, "cluster_iterations", json_object_new_int(ly->iters));
        json_object_object_add(lo, "down_dtype",
                               json_object_new_string(wd_dtype_name(ly->down_dtype)));
        json_object_array_add(layers, lo);
    }
    json_object_object_add(doc, "layers", layers);
    const char *s = json_object_to_json_string_ext(
        doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    char path[4200];
    snprintf(path, sizeof(path), "%s/moefy.json", dir);
    int rc = write_atomic(path, s, strlen(s), "\n", 1, NULL, 0, err, errlen);
    json_object_put(doc);
    return rc;
}

int wd_moefy_write(const wd_model *m, const wd_moefy_result *res, const char *dir, char *err,
                   size_t errlen) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s: exists and is not a folder", dir);
            return 1;
        }
    } else if (mkdir(dir, 0777) != 0) {
        snprintf(err, errlen, "%s: cannot create the folder: %s", dir, strerror(errno));
        return 1;
    }
    int rc;
    if (ends_with(m->path, ".gguf")) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/model.gguf", dir);
        rc = write_gguf(m, res, path, err, errlen);
    } else {
        rc = write_safetensors(m, res, dir, err, errlen);
    }
    return rc ? rc : write_report(m, res, dir, err, errlen);
}

int wd_moefy(const wd_model *m, const char *out_dir, const wd_moefy_opts *o, wd_pool *pool,
             char *err, size_t errlen) {
    wd_moefy_result res;
    if (wd_moefy_build(m, o, pool, &res, err, errlen)) return 1;
    double t0 = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = ts.tv_sec + 1e-9 * ts.tv_nsec;
    int rc = wd_moefy_write(m, &res, out_dir, err, errlen);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (!rc && o->progress)
        fprintf(o->progress, "moefy: phases: calibration %.1f s, experts and routers %.1f s, "
                "writing %.1f s\n", res.t_calib, res.t_layers, ts.tv_sec + 1e-9 * ts.tv_nsec - t0);
    wd_moefy_result_free(&res);
    return rc;
}
