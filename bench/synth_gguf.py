#!/usr/bin/env python3
"""Write a synthetic Mixtral-shaped GGUF (llama architecture, stacked experts)
with llama.cpp's own gguf-py writer, for side-by-side runs of wdmoe and
llama.cpp on the very same file (bench/vs_llamacpp.sh).

usage: synth_gguf.py OUT.gguf [--hidden 512 --layers 8 --heads 8 --kv-heads 2
                               --ffn 1792 --experts 8 --top-k 2 --vocab 32000 --seed 1]

Weights are F32, N(0, 1/fan_in) (norms 1 + N(0, 0.02^2)), so every dtype can
be made from this file with llama-quantize. The vocab is an SPM ("llama")
vocab of <unk>, <s>, </s>, the 256 byte tokens and filler pieces, which is
all llama.cpp needs to load it. Q/K rows are random, so their interleaved
(Meta) order needs no permutation. Needs numpy and gguf (gguf-py)."""
import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("synth_gguf.py: the gguf package (llama.cpp's gguf-py) is not installed")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    for name, default in [("hidden", 512), ("layers", 8), ("heads", 8), ("kv-heads", 2),
                          ("ffn", 1792), ("experts", 8), ("top-k", 2), ("vocab", 32000),
                          ("seed", 1), ("ctx", 4096)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    if a.hidden % a.heads or a.heads % a.kv_heads or a.vocab < 300 or a.top_k > a.experts:
        sys.exit("synth_gguf.py: inconsistent shape (hidden %% heads, heads %% kv-heads, "
                 "vocab >= 300, top-k <= experts)")
    H, F, E, L, V = a.hidden, a.ffn, a.experts, a.layers, a.vocab
    hd = H // a.heads
    rng = np.random.default_rng(a.seed)

    def mat(*shape):  # last dim is the input (fan_in)
        return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])).astype(np.float32)

    def norm():
        return (1 + 0.02 * rng.standard_normal(H, dtype=np.float32)).astype(np.float32)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("wdmoe synthetic mini Mixtral")
    w.add_context_length(a.ctx)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(E)
    w.add_expert_used_count(a.top_k)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    toks, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        toks.append("<0x%02X>" % b)
        scores.append(0.0)
        types.append(6)
    i = 0
    while len(toks) < V:
        toks.append("\u2581t%d" % i)
        scores.append(-float(i))
        types.append(1)
        i += 1
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    w.add_tensor("token_embd.weight", mat(V, H))
    for l in range(L):
        p = "blk.%d." % l
        w.add_tensor(p + "attn_norm.weight", norm())
        w.add_tensor(p + "attn_q.weight", mat(a.heads * hd, H))
        w.add_tensor(p + "attn_k.weight", mat(a.kv_heads * hd, H))
        w.add_tensor(p + "attn_v.weight", mat(a.kv_heads * hd, H))
        w.add_tensor(p + "attn_output.weight", mat(H, a.heads * hd))
        w.add_tensor(p + "ffn_norm.weight", norm())
        w.add_tensor(p + "ffn_gate_inp.weight", mat(E, H))
        w.add_tensor(p + "ffn_gate_exps.weight", mat(E, F, H))
        w.add_tensor(p + "ffn_up_exps.weight", mat(E, F, H))
        w.add_tensor(p + "ffn_down_exps.weight", mat(E, H, F))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", mat(V, H))
    tmp = a.out  # GGUFWriter writes in place; the caller renames when done
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("synth_gguf.py: wrote %s" % tmp)


if __name__ == "__main__":
    main()
