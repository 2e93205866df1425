#!/usr/bin/env bash
# wdmoe tokenize and generate --prompt-ids / --logits / --chat on a tiny dense
# llama GGUF with a byte-level vocab (tests/tiny_gguf.py), and on SmolLM2 when
# it is present: ids against tokenizers' (tests/data/smollm2), logits against
# transformers'. Bad inputs give one line naming the file and the key, exit 1
# (or 2 for usage), and leave no output file.
set -u
bin="$WDMOE"
src="$WD_SOURCE_DIR"
command -v python3 >/dev/null || { echo "SKIPPED: python3 is needed to write the GGUF files"; exit 77; }
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_cli_tokenize_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
out="$tmp/out"
mkdir -p "$out"
row() { # ID RC WANT... -- args: exit RC, one stderr line holding every WANT, nothing in $out
    local id="$1" want_rc="$2"; shift 2
    local wants=()
    while [ "$1" != "--" ]; do wants+=("$1"); shift; done
    shift
    "$bin" "$@" >/dev/null 2>"$tmp/err"; local rc=$?
    local msg
    msg=$(grep -v '^==[0-9]*==WARNING' "$tmp/err")
    if [ $rc -ne "$want_rc" ]; then bad "$id: exit $rc (want $want_rc): $msg"; return; fi
    [ "$(printf '%s\n' "$msg" | grep -c .)" -eq 1 ] || { bad "$id: not one line: $msg"; return; }
    for w in "${wants[@]}"; do
        case "$msg" in *"$w"*) ;; *) bad "$id: message lacks '$w': $msg"; return ;; esac
    done
    [ -z "$(ls -A "$out")" ] || { bad "$id: left $(ls -A "$out")"; rm -rf "${out:?}"/*; return; }
    ok
}
T="$tmp/tiny.gguf"
python3 "$src/tests/tiny_gguf.py" "$T" || { echo "FAILED: tiny_gguf.py"; exit 1; }

# ---- tokenize: one line of ids per input line, no BOS (the vocab adds none) ----
got=$("$bin" tokenize --model "$T" --text "$(printf 'a ab  a\n\nab')")
want=$(printf '97 256 98 32 256\n\n257')
[ "$got" = "$want" ] && ok || bad "tokenize --text: '$got' want '$want'"
printf 'a ab  a\n\nab' >"$tmp/in.txt"
got=$("$bin" tokenize --model "$T" -f "$tmp/in.txt")
[ "$got" = "$want" ] && ok || bad "tokenize -f: '$got' want '$want'"
got=$(printf '<|im_start|>ab<|im_end|>\n' | "$bin" tokenize --model "$T" -f -)
[ "$got" = "258 257 259" ] && ok || bad "special tokens: '$got'"
got=$("$bin" tokenize --model "$T" --chat --text "a")
[ "$got" = "258 117 115 101 114 10 97 259 10 258 97 115 115 105 115 116 97 110 116 10" ] && ok ||
    bad "tokenize --chat: '$got'"
"$bin" tokenize --help | grep -q -- "--prompt-ids\|--text" && ok || bad "tokenize --help"
"$bin" generate --help | grep -q -- "--prompt-ids" && ok || bad "generate --help lacks --prompt-ids"

# ---- generate --prompt-ids --logits: rows x vocab F32, the last row what decoding starts from ----
"$bin" generate --model "$T" --prompt-ids 97,256,98 --logits "$tmp/lg.f32" -n 0 --threads 1 \
    >/dev/null 2>"$tmp/err" && ok || bad "generate --logits: $(cat "$tmp/err")"
sz=$(stat -c %s "$tmp/lg.f32" 2>/dev/null || echo 0)
[ "$sz" -eq $((3 * 260 * 4)) ] && ok || bad "logits file has $sz bytes, want $((3 * 260 * 4))"
ls "$tmp" | grep -q '\.tmp' && bad "temporary file left" || ok
# the logits of a prefix are the first rows of the longer prompt's (causal attention)
"$bin" generate --model "$T" --prompt-ids 97,256 --logits "$tmp/lg2.f32" -n 0 --threads 1 \
    >/dev/null 2>&1 && ok || bad "generate --logits (2 ids)"
python3 - "$tmp/lg.f32" "$tmp/lg2.f32" <<'PY' && ok || bad "prefix logits differ"
import array, sys
a = array.array("f"); a.frombytes(open(sys.argv[1], "rb").read())
b = array.array("f"); b.frombytes(open(sys.argv[2], "rb").read())
assert len(b) == 2 * 260 and max(abs(x - y) for x, y in zip(a[:520], b)) < 1e-5
PY

# a dense model runs without router or device; a scenario places its FFN on a device as
# expert 0, with the same output
a=$("$bin" generate --model "$T" --prompt "ab a" -n 6 --ids --threads 1 2>/dev/null | grep '^ids:')
b=$("$bin" generate --model "$T" --prompt "ab a" -n 6 --ids --threads 1 \
    --scenario "$src/bench/scenarios/paper-cell.json" 2>"$tmp/err" | grep '^ids:')
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "dense with a scenario: '$a' vs '$b' $(head -3 "$tmp/err")"

# ---- bad inputs ----
row ids-range 2 "--prompt-ids" "'999'" "[0, 260)" -- generate --model "$T" --prompt-ids 1,999 --logits "$out/l.f32"
row ids-text 2 "--prompt-ids" "'x'" -- generate --model "$T" --prompt-ids 1,x --logits "$out/l.f32"
row ids-prompt 2 "--prompt-ids" -- generate --model "$T" --prompt-ids 1 --prompt hi
row tok-usage 2 "--text" -- tokenize --model "$T"
row tok-file 1 "$tmp/none.txt" -- tokenize --model "$T" -f "$tmp/none.txt"
python3 "$src/tests/tiny_gguf.py" "$tmp/pre.gguf" --pre no-such-pre
row pre 1 "$tmp/pre.gguf" "tokenizer.ggml.pre" "no-such-pre" -- tokenize --model "$tmp/pre.gguf" --text a
row pre-gen 1 "$tmp/pre.gguf" "tokenizer.ggml.pre" -- generate --model "$tmp/pre.gguf" --prompt-ids 1 --logits "$out/l.f32"
python3 "$src/tests/tiny_gguf.py" "$tmp/kind.gguf" --tok-model bert
row tok-model 1 "$tmp/kind.gguf" "tokenizer.ggml.model" "bert" -- tokenize --model "$tmp/kind.gguf" --text a
python3 "$src/tests/tiny_gguf.py" "$tmp/rows.gguf" --embd-rows 300
row vocab-rows 1 "$tmp/rows.gguf" "token_embd.weight" "tokenizer.ggml.tokens" -- generate --model "$tmp/rows.gguf" --prompt-ids 1 --logits "$out/l.f32"
python3 "$src/tests/tiny_gguf.py" "$tmp/nochat.gguf" --chat-template "{{ messages }}"
row chat 1 "$tmp/nochat.gguf" "chat template" -- generate --model "$tmp/nochat.gguf" --chat --prompt hi

# a Qwen2.5-style template: the default system message follows a branch that uses the user's
python3 "$src/tests/tiny_gguf.py" "$tmp/qwen.gguf" --chat-template "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, a helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for m in messages %}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endfor %}"
got=$("$bin" generate --model "$tmp/qwen.gguf" --chat --prompt "ab" -n 0 --threads 1 2>/dev/null)
want=$(printf 'system\nYou are Qwen, a helpful assistant.\nuser\nab\nassistant')
[ "$got" = "$want" ] && ok || bad "Qwen-style --chat: '$got'"

# SentencePiece: stories260k's 119 cases against llama.cpp's ids (BOS first: the vocab adds it)
sd="${WD_SHARED_DATA:-$src/../shared/data}/models/stories260k"
if [ -f "$sd/tokenizer-cases.txt" ]; then
    "$bin" tokenize --model "$src/weights/models/stories260k/moe4-top2.gguf" -f "$sd/tokenizer-cases.txt" \
        >"$tmp/spm.ids" && sed 's/ *$//' "$sd/tokenizer-cases.ids" | cmp -s - "$tmp/spm.ids" && ok ||
        bad "stories260k tokenize -f differs from llama.cpp's ids"
fi

# ---- SmolLM2 (when fetched): ids and logits against the references ----
S="$src/weights/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$S" ]; then
    python3 - "$src/tests/data/smollm2/tokenizer_cases.jsonl" "$tmp/cases.txt" "$tmp/cases.ids" <<'PY'
import json, sys
with open(sys.argv[2], "w", encoding="utf-8") as t, open(sys.argv[3], "w") as i:
    for l in open(sys.argv[1], encoding="utf-8"):
        c = json.loads(l)
        if "\n" in c["text"] or "\r" in c["text"]:
            continue
        t.write(c["text"] + "\n")
        i.write(" ".join(map(str, c["ids"])) + "\n")
PY
    "$bin" tokenize --model "$S" -f "$tmp/cases.txt" >"$tmp/got.ids" && cmp -s "$tmp/got.ids" "$tmp/cases.ids" &&
        ok || bad "SmolLM2 tokenize -f differs from tokenizers: $(diff "$tmp/got.ids" "$tmp/cases.ids" | head -4)"
    ids=$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['ids'])))" \
        "$src/tests/data/smollm2/prompt.json")
    "$bin" generate --model "$S" --prompt-ids "$ids" --logits "$tmp/s.f32" -n 0 --threads 2 >/dev/null 2>&1 &&
        python3 - "$tmp/s.f32" "$src/tests/data/smollm2/logits_last.f32" <<'PY' && ok || bad "SmolLM2 --logits last row"
import array, math, sys
a = array.array("f"); a.frombytes(open(sys.argv[1], "rb").read())
r = array.array("f"); r.frombytes(open(sys.argv[2], "rb").read())
V = len(r); x = a[len(a) - V:]
e = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, r)) / sum(q * q for q in r))
print("SmolLM2 --logits last row: rel L2 %.3g" % e)
assert e < 1e-3
PY
    # --chat renders the GGUF's template as jinja2 does (prompt.json)
    python3 - "$src/tests/data/smollm2/prompt.json" >"$tmp/p.txt" <<'PY'
import json, sys
print(json.load(open(sys.argv[1]))["messages"][0]["content"])
PY
    got=$("$bin" tokenize --model "$S" --chat -f "$tmp/p.txt")
    [ "$got" = "$(echo "$ids" | tr , ' ')" ] && ok || bad "SmolLM2 --chat ids: $got"
else
    echo "note: $S absent; SmolLM2 rows skipped (bash weights/models/fetch_smollm2.sh)"
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
