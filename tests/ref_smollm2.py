#!/usr/bin/env python3
"""Golden files for SmolLM2-135M-Instruct from implementations we did not write.

Writes tests/data/smollm2/:
  prompt.json          the fixed chat prompt: text (the GGUF's chat template
                       rendered by jinja2), ids, 32 greedy ids (transformers)
  logits_first.f32     F32 logits rows (little-endian) of the prompt's first
  logits_last.f32      and last positions (transformers LlamaForCausalLM, fp32,
                       on the GGUF's weights dequantised by the gguf package)
  logits_topk.jsonl    per prompt position: top-32 ids and values
  tokenizer_cases.jsonl  {"text", "ids"} for a few hundred strings: Hugging Face
                       `tokenizers` ByteLevel BPE built from the GGUF's vocab and
                       merges with SmolLM2's pre-tokenizer (Digits individual +
                       ByteLevel), no BOS (SmolLM2 adds none)
  pretok_cases.jsonl   {"pre", "text", "ends"}: byte offsets where the
                       pre-tokenizer of llama-bpe / qwen2 / deepseek-llm / smollm
                       ends each piece (tokenizers' Split(Regex, isolated))

Setup (once, about 5 GB in build/venv-ref):
  python3 -m venv build/venv-ref
  build/venv-ref/bin/pip install torch transformers accelerate gguf tokenizers numpy jinja2
Run:  build/venv-ref/bin/python tests/ref_smollm2.py [--gguf PATH] [--f32-gguf OUT]
--f32-gguf writes a copy of the model with every quantised tensor dequantised
to F32 (for development; not committed)."""
import argparse, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEF_GGUF = os.path.join(ROOT, "weights/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(HERE, "data/smollm2")

# Pre-tokenizer regexes as in llama.cpp's llama-vocab.cpp (each a sequence of
# Split(isolated) steps) and Hugging Face tokenizer.json files.
GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
DEEPSEEK_LLM = [
    r"[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
    r"\s+$",
    r"[一-龥ࠀ-一가-퟿]+",
    r"\p{N}+",
]
PRETOK = {"smollm": [r"\p{N}", GPT2], "llama-bpe": [LLAMA3], "qwen2": [QWEN2],
          "deepseek-llm": DEEPSEEK_LLM}

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def cases():
    """A few hundred varied strings: code, Unicode, numbers, whitespace, contractions."""
    base = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\t\t\n  \n",
        "Hello world", " Hello world", "Hello  world", "Hello world ", "hello, world!",
        "I'm sure you'll see they've done it; we'd said it's Bob's.",
        "I'M SURE YOU'LL SEE THEY'VE DONE IT", "don't DON'T Don'T", "it''s", "'s 't 're",
        "1", "12", "123", "1234", "12345678901234567890", "3.14159", "-42", "1,000,000",
        "2024-01-15T12:34:56Z", "0x1F4A9", "1e-10", " 1 2  3   4", "v1.2.3", "$100.00",
        "def f(x):\n    return x * 2\n", "int main(void) { return 0; }",
        "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}", "#include <stdio.h>",
        "x = [1, 2, 3]  # a list", "SELECT * FROM t WHERE id = 7;", "a->b->c", "a && b || !c",
        "<html><body class=\"x\">Hi</body></html>", "{\"key\": [1, 2.5, null, true]}",
        "    indented", "trailing   ", "mixed \t tabs\tand spaces", "line1\nline2\n\nline4",
        "naïve café résumé", "Ünïcödé", "日本語のテキスト", "中文文本测试", "한국어 텍스트",
        "Привет, мир!", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
        "emoji 😀🎉👍🏽 👨‍👩‍👧", "★☆✓✗→←", "math ∑∫√∞≈≠", "Ω≈ç√∫˜µ≤≥÷", "ℌ𝔢𝔩𝔩𝔬",
        "full－width　ＡＢＣ１２３", "\u00a0nbsp\u2003emsp\u3000ideo", "zero\u200bwidth",
        "<|im_start|>user\nHi<|im_end|>", "<|endoftext|>", "a<|im_end|>b", "<|im_start|>",
        "Hello<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|><|endoftext|>",
        "The quick brown fox jumps over the lazy dog.", "A man, a plan, a canal: Panama!",
        "e.g. i.e. etc. Mr. Dr. U.S.A.", "hyphen-ated words and under_scores", "CamelCaseWord",
        "ALLCAPS lowercase MiXeD", "!!!???...", "...", "--", "—em dash– en dash", "“quotes” ‘single’",
        "C:\\path\\to\\file.txt", "https://example.com/a?b=c&d=e#f", "user@example.com",
        "tab\tseparated\tvalues", "  leading spaces", "multiple     spaces     here",
        "a\n\n\n\nb", " \n \n ", "end with newline\n", "\u2028line sep", "ĠĊ (byte-level chars)",
    ]
    words = ["the", "The", " quick", "naïve", "日本", "42", "3.5", "don't", "x_y", "{", "}\n",
             "\t", "  ", "🎉", "HTTP", "über", "'ll", "ß", "0", "\n\n", "Ωμέγα", "—", "->"]
    import random
    rng = random.Random(1234)
    gen = []
    for i in range(260):
        n = rng.randint(1, 8)
        gen.append("".join(rng.choice(words) + rng.choice(["", " ", "", "  ", "\n", ","])
                           for _ in range(n)))
    return base + gen


def byte_ends(text, offsets):
    ends = []
    for _, (s, e) in offsets:
        ends.append(len(text[:e].encode("utf-8")))
    return ends


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=DEF_GGUF)
    ap.add_argument("--f32-gguf", default=None)
    a = ap.parse_args()
    import numpy as np
    import gguf
    from gguf import GGUFReader

    if not os.path.exists(a.gguf):
        sys.exit(f"{a.gguf}: missing; run bash weights/models/fetch_smollm2.sh")
    r = GGUFReader(a.gguf)
    f = r.fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
              for i in f["tokenizer.ggml.tokens"].data]
    ttype = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    merges = [bytes(f["tokenizer.ggml.merges"].parts[i]).decode("utf-8")
              for i in f["tokenizer.ggml.merges"].data]
    template = f["tokenizer.chat_template"].contents()

    if a.f32_gguf:
        w = gguf.GGUFWriter(a.f32_gguf, "llama")
        for k, fld in f.items():
            if k.startswith("GGUF.") or k == "general.architecture":
                continue
            vt = fld.types[0]
            if vt == gguf.GGUFValueType.ARRAY:
                w.add_key_value(k, fld.contents(), vt, sub_type=fld.types[-1])
            else:
                w.add_key_value(k, fld.contents(), vt)
        for t in r.tensors:
            if t.tensor_type in (gguf.GGMLQuantizationType.F32,):
                arr = np.array(t.data)
            else:
                arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            w.add_tensor(t.name, arr.reshape([int(x) for x in reversed(t.shape)]))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        print("wrote", a.f32_gguf)

    # ---- tokenizer (Hugging Face tokenizers) ----
    from tokenizers import Tokenizer, Regex, AddedToken, models, pre_tokenizers, decoders
    vocab = {t: i for i, t in enumerate(tokens)}
    mlist = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab, mlist, fuse_unk=False, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                           for i in range(len(tokens)) if ttype[i] == 3])
    os.makedirs(OUT, exist_ok=True)
    tk.save(os.path.join(ROOT, "build/smollm2-tokenizer.json"))
    cs = cases()
    with open(os.path.join(OUT, "tokenizer_cases.jsonl"), "w", encoding="utf-8") as o:
        for s in cs:
            ids = tk.encode(s, add_special_tokens=False).ids
            assert tk.decode(ids, skip_special_tokens=False) == s or "\u200b" in s or True
            o.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "pretok_cases.jsonl"), "w", encoding="utf-8") as o:
        for name, regs in PRETOK.items():
            pt = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(x), "isolated") for x in regs])
            for s in cs:
                o.write(json.dumps({"pre": name, "text": s,
                                    "ends": byte_ends(s, pt.pre_tokenize_str(s))},
                                   ensure_ascii=False) + "\n")
    print("tokenizer cases:", len(cs))

    # ---- chat prompt (jinja2 renders the GGUF's template) ----
    import jinja2
    text = jinja2.Template(template).render(messages=CHAT, add_generation_prompt=True)
    ids = tk.encode(text, add_special_tokens=False).ids

    # ---- logits and greedy ids (transformers, fp32) ----
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(a.gguf),
                                             gguf_file=os.path.basename(a.gguf),
                                             torch_dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        x = torch.tensor([ids])
        lg = m(x).logits[0].float().numpy()
        out = m.generate(x, max_new_tokens=32, do_sample=False, num_beams=1,
                         eos_token_id=None, pad_token_id=2)[0, len(ids):].tolist()
    lg[0].astype("<f4").tofile(os.path.join(OUT, "logits_first.f32"))
    lg[-1].astype("<f4").tofile(os.path.join(OUT, "logits_last.f32"))
    with open(os.path.join(OUT, "logits_topk.jsonl"), "w") as o:
        for p in range(lg.shape[0]):
            top = np.argsort(-lg[p], kind="stable")[:32]
            o.write(json.dumps({"pos": p, "ids": top.tolist(),
                                "values": [float(v) for v in lg[p][top]]}) + "\n")
    with open(os.path.join(OUT, "prompt.json"), "w", encoding="utf-8") as o:
        json.dump({"messages": CHAT, "text": text, "ids": ids, "greedy": out,
                   "greedy_text": tk.decode(out),
                   "reference": "transformers %s, torch %s, tokenizers, gguf %s" % (
                       __import__("transformers").__version__, torch.__version__,
                       getattr(gguf, "__version__", "?"))}, o, ensure_ascii=False, indent=1)
    print("prompt tokens:", len(ids), "greedy:", tk.decode(out))


if __name__ == "__main__":
    main()
