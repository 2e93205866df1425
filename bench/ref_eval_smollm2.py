#!/usr/bin/env python3
"""HellaSwag with an implementation we did not write, on the same items as
`wdmoe eval --task hellaswag`: transformers' LlamaForCausalLM (fp32) on the
GGUF's dequantised weights, tokens from `tokenizers` (SmolLM2's BPE from the
GGUF vocab, as tests/ref_smollm2.py builds it), lm-evaluation-harness scoring
(context tokens = encode(context); continuation = encode(context + " " +
ending)[len(context):]; acc = argmax of the summed log-likelihood, acc_norm =
argmax of it divided by the continuation's length in bytes).
Usage: build/venv-ref/bin/python bench/ref_eval_smollm2.py [N] [hellaswag file]"""
import os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        ROOT, "../shared/data/datasets/hellaswag_val_full.txt")
    import torch
    from gguf import GGUFReader
    from tokenizers import Tokenizer, models, pre_tokenizers, AddedToken
    from transformers import AutoModelForCausalLM
    import ref_smollm2 as R
    f = GGUFReader(R.DEF_GGUF).fields
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    tt = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    merges = [tuple(bytes(f["tokenizer.ggml.merges"].parts[i]).decode().split(" ", 1))
              for i in f["tokenizer.ggml.merges"].data]
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(toks)}, merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.add_special_tokens([AddedToken(toks[i], special=True) for i in range(len(toks)) if tt[i] == 3])
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(R.DEF_GGUF),
                                             gguf_file=os.path.basename(R.DEF_GGUF),
                                             dtype=torch.float32)
    m.eval()
    torch.set_num_threads(2)
    lines = [l.rstrip("\r\n") for l in open(data, encoding="utf-8")]
    items, i = [], 0
    while i + 6 <= len(lines) and len(items) < n:
        if not lines[i]:
            i += 1
            continue
        items.append((lines[i], int(lines[i + 1]), lines[i + 2:i + 6]))
        i += 6
    acc = accn = 0
    with torch.no_grad():
        for ctx, gold, ends in items:
            ce = tk.encode(ctx, add_special_tokens=False).ids
            ll, nl = [], []
            for e in ends:
                we = tk.encode(ctx + " " + e, add_special_tokens=False).ids
                cont = we[len(ce):]
                seq = ce + cont
                lp = torch.log_softmax(m(torch.tensor([seq])).logits[0].float(), -1)
                ll.append(sum(lp[len(ce) - 1 + k, t].item() for k, t in enumerate(cont)))
                nl.append(len((" " + e).encode("utf-8")))
            acc += max(range(4), key=lambda k: ll[k]) == gold
            accn += max(range(4), key=lambda k: ll[k] / nl[k]) == gold
    print("hellaswag %d items: acc %.4f (%d), acc_norm %.4f (%d)" % (
        len(items), acc / len(items), acc, accn / len(items), accn))


if __name__ == "__main__":
    main()
