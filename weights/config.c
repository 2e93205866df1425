/* config.json of a Hugging Face Mixtral model folder. */
#include <errno.h>
#include <math.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "weights/weights.h"

static int get_int(json_object *root, const char *key, int required, int def, int lo, int *out,
                   const char *path, char *err, size_t errlen) {
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required) {
            snprintf(err, errlen, "%s: missing field \"%s\"", path, key);
            return 1;
        }
        *out = def;
        return 0;
    }
    /* eos_token_id may be a list (several stop tokens): the first one is used */
    size_t kl = strlen(key);
    if (json_object_is_type(v, json_type_array) && kl > 9 &&
        strcmp(key + kl - 9, "_token_id") == 0 && json_object_array_length(v) > 0)
        v = json_object_array_get_idx(v, 0);
    if (!json_object_is_type(v, json_type_int)) {
        snprintf(err, errlen, "%s: field \"%s\" must be an integer", path, key);
        return 1;
    }
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > (1 << 30)) {
        snprintf(err, errlen, "%s: field \"%s\" out of range: %lld", path, key, (long long)x);
        return 1;
    }
    *out = (int)x;
    return 0;
}

static int get_float(json_object *root, const char *key, float def, float *out, const char *path,
                     char *err, size_t errlen) {
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null)) {
        *out = def;
        return 0;
    }
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int)) {
        snprintf(err, errlen, "%s: field \"%s\" must be a number", path, key);
        return 1;
    }
    double x = json_object_get_double(v);
    if (!(x > 0) || !isfinite(x) || x > 3.4e38) {
        snprintf(err, errlen, "%s: field \"%s\" must be a positive finite number", path, key);
        return 1;
    }
    *out = (float)x;
    return 0;
}

int wd_config_load(wd_config *cfg, const char *path, char *err, size_t errlen) {
    memset(cfg, 0, sizeof(*cfg));
    int fd = wd_input_open(path, WD_MAX_JSON_INPUT, err, errlen);
    if (fd < 0) return 1;
    json_object *root = json_object_from_fd(fd);
    close(fd);
    if (!root) {
        snprintf(err, errlen, "%s: malformed JSON: %s", path, json_util_get_last_err());
        char *nl = strchr(err, '\n'); /* json-c's message ends with a newline */
        if (nl) *nl = 0;
        return 1;
    }
    int rc = 1;
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "%s: top level is not a JSON object", path);
        goto done;
    }
    json_object *mt;
    if (!json_object_object_get_ex(root, "model_type", &mt)) {
        snprintf(err, errlen, "%s: missing field \"model_type\"", path);
        goto done;
    }
    if (!json_object_is_type(mt, json_type_string)) {
        snprintf(err, errlen, "%s: field \"model_type\" must be a string", path);
        goto done;
    }
    snprintf(cfg->model_type, sizeof(cfg->model_type), "%s", json_object_get_string(mt));
    int dense = !strcmp(cfg->model_type, "llama"); /* one FFN, no router */
    if (strcmp(cfg->model_type, "mixtral") != 0 && !dense) {
        snprintf(err, errlen, "%s: model_type \"%s\" is not supported (need \"mixtral\" or "
                 "\"llama\")", path, cfg->model_type);
        goto done;
    }
    if (get_int(root, "hidden_size", 1, 0, 1, &cfg->hidden, path, err, errlen) ||
        get_int(root, "num_hidden_layers", 1, 0, 1, &cfg->n_layers, path, err, errlen) ||
        get_int(root, "num_attention_heads", 1, 0, 1, &cfg->n_heads, path, err, errlen) ||
        get_int(root, "num_key_value_heads", 0, cfg->n_heads, 1, &cfg->n_kv_heads, path, err,
                errlen) ||
        get_int(root, "intermediate_size", 1, 0, 1, &cfg->ffn, path, err, errlen) ||
        get_int(root, "num_local_experts", !dense, 1, 1, &cfg->n_experts, path, err, errlen) ||
        get_int(root, "num_experts_per_tok", !dense, 1, 1, &cfg->top_k, path, err, errlen) ||
        get_int(root, "vocab_size", 1, 0, 1, &cfg->vocab, path, err, errlen) ||
        get_int(root, "max_position_embeddings", 0, 4096, 1, &cfg->max_pos, path, err, errlen) ||
        get_int(root, "bos_token_id", 0, 1, 0, &cfg->bos_id, path, err, errlen) ||
        get_int(root, "eos_token_id", 0, 2, 0, &cfg->eos_id, path, err, errlen) ||
        get_float(root, "rms_norm_eps", 1e-5f, &cfg->rms_eps, path, err, errlen) ||
        get_float(root, "rope_theta", 1e6f, &cfg->rope_theta, path, err, errlen))
        goto done;
    if (dense) cfg->n_experts = cfg->top_k = 1;
    if (get_int(root, "head_dim", 0, cfg->hidden / cfg->n_heads, 1, &cfg->head_dim, path, err,
                errlen))
        goto done;
    json_object *tie;
    if (json_object_object_get_ex(root, "tie_word_embeddings", &tie) &&
        !json_object_is_type(tie, json_type_null)) {
        if (!json_object_is_type(tie, json_type_boolean)) {
            snprintf(err, errlen, "%s: field \"tie_word_embeddings\" must be true or false", path);
            goto done;
        }
        cfg->tie_embeddings = json_object_get_boolean(tie);
    }
    if (cfg->head_dim < 1) {
        snprintf(err, errlen, "%s: head_dim is 0 (hidden_size %d < num_attention_heads %d)",
                 path, cfg->hidden, cfg->n_heads);
        goto done;
    }
    if (cfg->bos_id >= cfg->vocab || cfg->eos_id >= cfg->vocab) {
        snprintf(err, errlen, "%s: bos_token_id %d / eos_token_id %d out of range for vocab_size %d",
                 path, cfg->bos_id, cfg->eos_id, cfg->vocab);
        goto done;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        snprintf(err, errlen, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                 path, cfg->n_heads, cfg->n_kv_heads);
        goto done;
    }
    if (cfg->head_dim % 2) {
        snprintf(err, errlen, "%s: head_dim %d must be even for RoPE", path, cfg->head_dim);
        goto done;
    }
    if ((int64_t)cfg->n_heads * cfg->head_dim > INT32_MAX) {
        snprintf(err, errlen,
                 "%s: num_attention_heads %d x head_dim %d = %lld is too large (at most %d)", path,
                 cfg->n_heads, cfg->head_dim, (long long)cfg->n_heads * cfg->head_dim, INT32_MAX);
        goto done;
    }
    json_object *comb;
    if (json_object_object_get_ex(root, "moe_combine", &comb)) {
        const char *cs = json_object_is_type(comb, json_type_string)
                             ? json_object_get_string(comb) : "";
        if (strcmp(cs, "sum") && strcmp(cs, "renormalize")) {
            snprintf(err, errlen, "%s: field \"moe_combine\" must be \"sum\" or \"renormalize\"",
                     path);
            goto done;
        }
        cfg->combine_sum = !strcmp(cs, "sum");
    }
    if (cfg->top_k > cfg->n_experts) {
        snprintf(err, errlen, "%s: num_experts_per_tok %d exceeds num_local_experts %d", path,
                 cfg->top_k, cfg->n_experts);
        goto done;
    }
    rc = 0;
done:
    json_object_put(root);
    return rc;
}
