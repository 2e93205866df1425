/* weights: model file formats.
 *
 * - Tensor stores: Hugging Face safetensors (single file or sharded with
 *   model.safetensors.index.json), memory-mapped; GGUF (llama.cpp).
 *   Every store exposes tensors under Hugging Face Mixtral names.
 * - config.json of a Hugging Face model folder.
 * - Tokenizer: Hugging Face tokenizer.json (Llama/Mistral BPE with byte
 *   fallback, byte-level BPE) and the vocab inside GGUF files (SPM "llama",
 *   byte-level BPE "gpt2" with the pre-tokenizers smollm, llama-bpe, qwen2,
 *   deepseek-llm, gpt2).
 * - The synthetic-model writer: random Mixtral-layout HF folders.
 *
 * Errors: functions return 0 on success and non-zero on failure, after
 * writing one line "FILE: what is wrong" into err (errlen bytes). */
#ifndef WD_WEIGHTS_H
#define WD_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WD_MAX_DIMS 4

typedef struct {
    char *name;
    wd_dtype dtype;
    int ndim;
    int64_t shape[WD_MAX_DIMS]; /* outermost first, as in safetensors */
    const void *data;           /* mapped (or owned by the store) */
    size_t nbytes;
} wd_tensor;

typedef struct wd_tensors wd_tensors;

/* path: a model folder (model.safetensors or model.safetensors.index.json +
 * shards) or a .safetensors file. Validates every header: dtype known, shape
 * consistent with byte range, ranges inside the file and not overlapping. */
int wd_safetensors_open(wd_tensors **out, const char *path, char *err, size_t errlen);
const wd_tensor *wd_tensors_find(const wd_tensors *ts, const char *name);
int wd_tensors_count(const wd_tensors *ts);
const wd_tensor *wd_tensors_at(const wd_tensors *ts, int i);
size_t wd_tensors_total_bytes(const wd_tensors *ts);
/* Bytes of the file mappings the tensors point into (what wd_tensors_to_hugepages copies). */
size_t wd_tensors_mapped_bytes(const wd_tensors *ts);
/* Moves the tensors of every mapped file into anonymous memory advised for
 * transparent huge pages (a copy, read-only afterwards; the file mappings
 * are dropped chunk by chunk as they are copied). Decode reads weights
 * sequentially at a few tens of GB/s per core, where 4 KB pages cost
 * 10-20 %; the price is the load-time copy and memory the kernel cannot
 * reclaim as page cache. Returns 0, or 1 with a message (out of memory:
 * the tensors stay mapped and usable). */
int wd_tensors_to_hugepages(wd_tensors *ts, char *err, size_t errlen);
void wd_tensors_free(wd_tensors *ts);

/* ---- model configuration --------------------------------------------- */
typedef struct {
    char model_type[32];
    int hidden;      /* hidden_size */
    int n_layers;    /* num_hidden_layers */
    int n_heads;     /* num_attention_heads */
    int n_kv_heads;  /* num_key_value_heads (default n_heads) */
    int head_dim;    /* head_dim (default hidden / n_heads) */
    int ffn;         /* intermediate_size */
    int n_experts;   /* num_local_experts */
    int top_k;       /* num_experts_per_tok */
    int vocab;       /* vocab_size */
    int max_pos;     /* max_position_embeddings */
    float rms_eps;   /* rms_norm_eps */
    float rope_theta;
    int tie_embeddings; /* tie_word_embeddings */
    int bos_id, eos_id;
    /* How the selected experts' outputs combine: 0 (Mixtral): weighted by the
     * router probabilities renormalised over the chosen set; 1 (MoEfied dense
     * models): their plain sum. config.json "moe_combine": "renormalize" |
     * "sum"; GGUF "wdmoe.moe_combine" (same strings). */
    int combine_sum;
} wd_config;

/* path: config.json. model_type "mixtral", or "llama" (dense: one FFN, no
 * router; n_experts = top_k = 1 so the emulator can place the FFN). */
int wd_config_load(wd_config *cfg, const char *path, char *err, size_t errlen);

/* ---- input files ------------------------------------------------------ */
/* A read-only descriptor of a regular file of at most max_bytes (0: any
 * size); -1 with "PATH: ..." in err. FIFOs and devices are refused before they
 * can block or read without end (weights/input.c). */
int wd_input_open(const char *path, long long max_bytes, char *err, size_t errlen);
#define WD_MAX_JSON_INPUT (1LL << 30) /* config.json, tokenizer.json, index, data sets */

/* ---- tokenizer -------------------------------------------------------- */
typedef struct wd_tokenizer wd_tokenizer;

int wd_tokenizer_load_json(wd_tokenizer **out, const char *path, char *err, size_t errlen);
void wd_tokenizer_free(wd_tokenizer *tok);
int wd_tokenizer_vocab_size(const wd_tokenizer *tok);
int wd_tokenizer_bos(const wd_tokenizer *tok);
int wd_tokenizer_eos(const wd_tokenizer *tok);
/* 1 when the model's tokenizer puts BOS in front of a text (SPM and Llama
 * tokenizer.json: yes; GGUF: tokenizer.ggml.add_bos_token; byte-level: no). */
int wd_tokenizer_add_bos(const wd_tokenizer *tok);
/* "spm", "bpe" (Llama-style), or the byte-level pre-tokenizer's name
 * ("gpt2", "smollm", "llama-bpe", "qwen2", "deepseek-llm"). */
const char *wd_tokenizer_kind(const wd_tokenizer *tok);
/* Applies a ChatML-style chat template (<|im_start|>role\ncontent<|im_end|>\n,
 * as SmolLM2 and Qwen use) to one user message, with the template's default
 * system message when it has one, and the assistant turn opened. Returns a
 * malloc'd string, or NULL with a message in err (no template, or one of a
 * kind not supported). */
char *wd_tokenizer_apply_chat(const wd_tokenizer *tok, const char *user, char *err,
                              size_t errlen);
/* Encode UTF-8 text. *ids is malloc'd (caller frees); returns 0 on success. */
int wd_tokenizer_encode(const wd_tokenizer *tok, const char *text, int add_bos, int **ids,
                        int *n_ids);
/* Bytes of one token when it follows token prev (prev < 0: first token of
 * the text). Byte-fallback pieces <0xNN> yield the raw byte; the leading space
 * of the first piece is stripped (SentencePiece decoding). Writes at most
 * cap bytes to buf and returns the piece length (0 for special tokens). */
int wd_tokenizer_piece(const wd_tokenizer *tok, int prev, int id, char *buf, int cap);
/* Decode ids into a malloc'd NUL-terminated string (NULL on allocation failure). */
char *wd_tokenizer_decode(const wd_tokenizer *tok, const int *ids, int n_ids);

/* ---- GGUF (llama.cpp) ------------------------------------------------- */
/* Opens a GGUF file of the llama/Mixtral architecture. Tensors appear under
 * Hugging Face names (Q/K rows converted to rotate-half order, stacked
 * experts split into per-expert views). cfg is filled from the metadata;
 * tok (optional, may be NULL) from tokenizer.ggml.*. */
int wd_gguf_open(wd_tensors **out, wd_config *cfg, wd_tokenizer **tok, const char *path,
                 char *err, size_t errlen);
/* A GGUF holding only a vocab (tokenizer.ggml.*). */
int wd_gguf_load_tokenizer(wd_tokenizer **tok, const char *path, char *err, size_t errlen);

/* GGUF rewriter (MoEfication): dst gets src's metadata except the keys in kv,
 * then kv (type 4 = uint32 with u32, 8 = string with str); src's tensors
 * copied raw (type, shape, bytes) except those named in drop, then add
 * (ne innermost first, as ggml). Written to a temporary name and renamed. */
typedef struct {
    const char *key;
    uint32_t type;
    uint32_t u32;
    const char *str;
} wd_gguf_kv;
typedef struct {
    const char *name;
    uint32_t ggml_type;
    int n_dims;
    int64_t ne[WD_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wd_gguf_out_tensor;
int wd_gguf_rewrite(const char *src, const char *dst, const wd_gguf_kv *kv, int n_kv,
                    const char *const *drop, int n_drop, const wd_gguf_out_tensor *add,
                    int n_add, char *err, size_t errlen);
/* The ggml type id of a dtype; 0, or 1 when it has none. */
int wd_gguf_type(wd_dtype dt, uint32_t *ggml_type);

/* ---- synthetic models ------------------------------------------------- */
typedef struct {
    int hidden, n_layers, n_heads, n_kv_heads, head_dim, ffn, n_experts, top_k, vocab;
    int max_pos;
    float rope_theta, rms_eps;
    wd_dtype dtype; /* F32, F16 or BF16 */
    int tied;       /* tie_word_embeddings */
    int dense;      /* a dense Llama (model_type llama, mlp.*): no router, one FFN */
    uint64_t seed;
    float init_std; /* weights ~ N(0, init_std^2) (0: 1/sqrt(fan_in)) */
    /* Most tensor-data bytes per file (0: 4 GiB). A model larger than this is
     * written as shards model-0000i-of-0000n.safetensors plus
     * model.safetensors.index.json; otherwise as one model.safetensors. */
    uint64_t max_shard_bytes;
} wd_synth_spec;

void wd_synth_default(wd_synth_spec *spec); /* a small valid shape */
/* Writes dir/config.json, dir/model.safetensors (or shards + index) and
 * dir/tokenizer.json (a Llama-style BPE vocab of `vocab` >= 259 tokens with
 * byte fallback). Creates dir if needed; files are written to temporary names
 * and renamed. Values depend only on (seed, tensor name, element index) and
 * the dtype rounding, not on sharding or thread count. */
int wd_synth_write(const char *dir, const wd_synth_spec *spec, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
