#!/usr/bin/env python3
"""A tiny dense llama GGUF with a byte-level BPE vocab (Python standard library
only), for command-line and bad-input tests: 256 byte tokens + "Ġa", "ab",
<|im_start|>, <|im_end|>; hidden 32, 1 layer, 2 heads (1 KV), FFN 64, F32.
Usage: tiny_gguf.py OUT [--tok-model gpt2] [--pre smollm] [--embd-rows N]
                       [--chat-template T]"""
import argparse, struct


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tok-model", default="gpt2")
    ap.add_argument("--pre", default="smollm")
    ap.add_argument("--embd-rows", type=int, default=0)
    ap.add_argument("--chat-template", default="{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
    a = ap.parse_args()
    b2u = bytes_to_unicode()
    tokens = [b2u[i] for i in range(256)] + ["\u0120a", "ab", "<|im_start|>", "<|im_end|>"]
    ttype = [1] * 258 + [3, 3]
    merges = ["\u0120 a", "a b"]
    V, H, L, NH, NKV, F = len(tokens), 32, 1, 2, 1, 64
    HD = H // NH
    kv = []

    def s(x):
        d = x.encode("utf-8")
        return struct.pack("<Q", len(d)) + d
    kv.append((s("general.architecture"), 8, s("llama")))
    for k, v in [("llama.context_length", 64), ("llama.embedding_length", H),
                 ("llama.block_count", L), ("llama.feed_forward_length", F),
                 ("llama.attention.head_count", NH), ("llama.attention.head_count_kv", NKV),
                 ("tokenizer.ggml.bos_token_id", 258), ("tokenizer.ggml.eos_token_id", 259)]:
        kv.append((s(k), 4, struct.pack("<I", v)))
    kv.append((s("llama.attention.layer_norm_rms_epsilon"), 6, struct.pack("<f", 1e-5)))
    kv.append((s("tokenizer.ggml.model"), 8, s(a.tok_model)))
    kv.append((s("tokenizer.ggml.pre"), 8, s(a.pre)))
    kv.append((s("tokenizer.ggml.tokens"), 9,
               struct.pack("<IQ", 8, V) + b"".join(s(t) for t in tokens)))
    kv.append((s("tokenizer.ggml.token_type"), 9,
               struct.pack("<IQ", 5, V) + b"".join(struct.pack("<i", t) for t in ttype)))
    kv.append((s("tokenizer.ggml.merges"), 9,
               struct.pack("<IQ", 8, len(merges)) + b"".join(s(m) for m in merges)))
    kv.append((s("tokenizer.ggml.add_bos_token"), 7, b"\x00"))
    kv.append((s("tokenizer.chat_template"), 8, s(a.chat_template)))
    rows = a.embd_rows or V
    tensors = [("token_embd.weight", [H, rows]), ("output_norm.weight", [H])]
    for l in range(L):
        tensors += [("blk.%d.attn_norm.weight" % l, [H]), ("blk.%d.ffn_norm.weight" % l, [H]),
                    ("blk.%d.attn_q.weight" % l, [H, NH * HD]),
                    ("blk.%d.attn_k.weight" % l, [H, NKV * HD]),
                    ("blk.%d.attn_v.weight" % l, [H, NKV * HD]),
                    ("blk.%d.attn_output.weight" % l, [NH * HD, H]),
                    ("blk.%d.ffn_gate.weight" % l, [H, F]), ("blk.%d.ffn_up.weight" % l, [H, F]),
                    ("blk.%d.ffn_down.weight" % l, [F, H])]
    seed = 12345
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for k, t, v in kv:
        out += k + struct.pack("<I", t) + v
    off, datas = 0, []
    for name, ne in tensors:
        n = 1
        for d in ne:
            n *= d
        vals = []
        for _ in range(n):
            seed = (seed * 1103515245 + 12345) % (1 << 31)
            vals.append(1.0 if name.endswith("norm.weight") else (seed / (1 << 31) - 0.5) * 0.2)
        data = struct.pack("<%df" % n, *vals)
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", 0, off)
        datas.append(data)
        off += (len(data) + 31) // 32 * 32
    out += b"\0" * ((32 - len(out) % 32) % 32)
    for d in datas:
        out += d + b"\0" * ((32 - len(d) % 32) % 32)
    open(a.out, "wb").write(out)


if __name__ == "__main__":
    main()
