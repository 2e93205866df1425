#!/usr/bin/env bash
# Bad inputs at the command line, one row of docs/bad-inputs.md each: the wdmoe
# binary exits 1 (bad file or data) or 2 (bad usage), prints exactly one line
# on stderr that names the file (and the field, key or line) and the reason,
# never dumps core, and leaves no result file (final or temporary) behind.
# WD_BAD_INPUTS_TABLE=FILE appends "id<TAB>message" for each row (to refresh the doc).
set -u
bin="$WDMOE"
src="$WD_SOURCE_DIR"
models="$src/weights/models/stories260k"
M="$models/moe4-top2"
ev="$src/tests/data/eval"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_bad_inputs_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
out="$tmp/out" # result files go here; it must stay empty
mkdir -p "$out"
# row ID RC WANT... -- wdmoe-args: the run exits RC with one stderr line containing every WANT
row() {
    local id="$1" want_rc="$2"; shift 2
    local wants=()
    while [ "$1" != "--" ]; do wants+=("$1"); shift; done
    shift
    "$bin" "$@" >/dev/null 2>"$tmp/err"; local rc=$?
    local msg
    msg=$(grep -v '^==[0-9]*==WARNING' "$tmp/err")
    [ -n "${WD_BAD_INPUTS_TABLE:-}" ] && printf '%s\t%s\n' "$id" "$msg" >>"$WD_BAD_INPUTS_TABLE"
    if [ $rc -ne "$want_rc" ]; then bad "$id: exit $rc (want $want_rc): $msg"; return; fi
    [ "$(printf '%s\n' "$msg" | grep -c .)" -eq 1 ] || { bad "$id: not one line: $msg"; return; }
    for w in "${wants[@]}"; do
        case "$msg" in *"$w"*) ;; *) bad "$id: message lacks '$w': $msg"; return ;; esac
    done
    [ -z "$(ls -A "$out")" ] || { bad "$id: left $(ls -A "$out")"; rm -rf "${out:?}"/*; return; }
    ok
}
# a good scenario, so that model errors are reached with --json asked for
cat >"$tmp/good.json" <<'JSON'
{"name": "good", "device_count": 4, "device_defaults": {"profile": "phone",
 "downlink": {"model": "constant", "rate_mbps": 100}, "uplink": {"model": "constant", "rate_mbps": 50}}}
JSON
gen() { # model-folder extra...: generate with a scenario and --json
    local m="$1"; shift
    echo generate --model "$m" --scenario "$tmp/good.json" -n 4 --json "$out/r.json" "$@"
}
# model folder: copy moe4-top2 and break one file
mk() { rm -rf "$tmp/$1"; mkdir -p "$tmp/$1"; cp "$M"/* "$tmp/$1/"; }
cfg() { # dir python-statement-on-c: rewrite config.json
    python3 - "$tmp/$1/config.json" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
exec(sys.argv[2])
json.dump(c, open(sys.argv[1], "w"))
PY
}
command -v python3 >/dev/null || { echo "SKIPPED: python3 is needed to write the bad files"; exit 77; }

# ---- model folder ----
row model-missing 1 "$tmp/nothing: no such model" -- $(gen "$tmp/nothing")
mk nocfg; rm "$tmp/nocfg/config.json"
row config-missing 1 "nocfg/config.json: cannot open" -- $(gen "$tmp/nocfg")
mk cfgjson; printf '{"model_type": "mixtral", "hidden_size": 64,,}' >"$tmp/cfgjson/config.json"
row config-syntax 1 "cfgjson/config.json: malformed JSON" -- $(gen "$tmp/cfgjson")
mk cfgtype; cfg cfgtype 'c["model_type"] = "qwen2_moe"'
row config-model-type 1 "cfgtype/config.json" "model_type" -- $(gen "$tmp/cfgtype")
mk cfgkey; cfg cfgkey 'del c["hidden_size"]'
row config-missing-key 1 "cfgkey/config.json" "hidden_size" -- $(gen "$tmp/cfgkey")
mk cfgrange; cfg cfgrange 'c["num_hidden_layers"] = 0'
row config-range 1 "cfgrange/config.json" "num_hidden_layers" -- $(gen "$tmp/cfgrange")
mk cfgtopk; cfg cfgtopk 'c["num_experts_per_tok"] = 9'
row config-topk 1 "cfgtopk/config.json" "num_experts_per_tok" -- $(gen "$tmp/cfgtopk")
mk cfgheads; cfg cfgheads 'c["num_attention_heads"] = 32; c["num_key_value_heads"] = 32; c["head_dim"] = 268435458'
row config-heads-overflow 1 "cfgheads/config.json: num_attention_heads 32 x head_dim 268435458 = 8589934656 is too large" -- $(gen "$tmp/cfgheads")
mk cfgshape; cfg cfgshape 'c["intermediate_size"] = 128'
row config-vs-tensors 1 "cfgshape: tensor model.layers.0.block_sparse_moe.experts.0.w1.weight has shape [172, 64], expected [128, 64]" -- $(gen "$tmp/cfgshape")
mk sttrunc; head -c 5000 "$M/model.safetensors" >"$tmp/sttrunc/model.safetensors"
row st-truncated 1 "sttrunc/model.safetensors: header length 11048 runs past the end of the file (5000 bytes)" -- $(gen "$tmp/sttrunc")
mk sthdr; printf '\xff\xff\xff\xff\x00\x00\x00\x00{}' >"$tmp/sthdr/model.safetensors"
row st-header-length 1 "sthdr/model.safetensors" "header" -- $(gen "$tmp/sthdr")
# rewrite the header: (python) op on the parsed JSON, same data
sthead() { # dir python-expression-on-h
    python3 - "$tmp/$1/model.safetensors" "$2" <<'PY'
import json, struct, sys
p, op = sys.argv[1], sys.argv[2]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
exec(op)
s = json.dumps(h).encode()
s += b" " * (-len(s) % 8)
open(p, "wb").write(struct.pack("<Q", len(s)) + s + b[8 + n:])
PY
}
mk stdtype; sthead stdtype 'h["model.norm.weight"]["dtype"] = "F8_E4M3"'
row st-dtype 1 "stdtype/model.safetensors" "model.norm.weight" -- $(gen "$tmp/stdtype")
mk strange; sthead strange 'h["model.norm.weight"]["data_offsets"] = [0, 10**12]'
row st-range 1 "strange/model.safetensors" "model.norm.weight" -- $(gen "$tmp/strange")
mk stshape; sthead stshape 'h["model.norm.weight"]["shape"] = [65]'
row st-shape-bytes 1 "stshape/model.safetensors" "model.norm.weight" -- $(gen "$tmp/stshape")
mk stdup; python3 - "$tmp/stdup/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
e = dict(h["model.norm.weight"])
s = json.dumps(h)[:-1] + ', "model.norm.weight": ' + json.dumps(e) + "}"  # named twice
s = s.encode() + b" " * (-len(s) % 8)
open(p, "wb").write(struct.pack("<Q", len(s)) + s + b[8 + n:])
PY
row st-duplicate-tensor 1 "stdup/model.safetensors: the header names tensor model.norm.weight twice" -- $(gen "$tmp/stdup")
mk stmiss; sthead stmiss 'del h["model.layers.3.block_sparse_moe.experts.1.w2.weight"]'
row st-missing-tensor 1 "stmiss: missing tensor model.layers.3.block_sparse_moe.experts.1.w2.weight" -- $(gen "$tmp/stmiss")
mk idx; mv "$tmp/idx/model.safetensors" "$tmp/idx/model-00001-of-00001.safetensors"
printf '{"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}' >"$tmp/idx/model.safetensors.index.json"
row index-missing-shard 1 "model-00002-of-00002.safetensors: missing shard named in" -- $(gen "$tmp/idx")
mk tokjson; printf '{"model": {"type": "BPE", "vocab": {' >"$tmp/tokjson/tokenizer.json"
row tokenizer-syntax 1 "tokjson/tokenizer.json: malformed JSON" -- $(gen "$tmp/tokjson")
mk toktype; sed -i 's/"type": "BPE"/"type": "WordPiece"/' "$tmp/toktype/tokenizer.json"
row tokenizer-model 1 "toktype/tokenizer.json" "WordPiece" -- $(gen "$tmp/toktype")
mk tcfgjson; printf '{"bos_token": "<s>",' >"$tmp/tcfgjson/tokenizer_config.json"
row tokenizer-config-syntax 1 "tcfgjson/tokenizer_config.json: malformed JSON" -- $(gen "$tmp/tcfgjson")
mk tcfgtype; printf '{"bos_token": 1}' >"$tmp/tcfgtype/tokenizer_config.json"
row tokenizer-config-type 1 "tcfgtype/tokenizer_config.json: \"bos_token\" must be a string" -- $(gen "$tmp/tcfgtype")
mk tcfgbos; printf '{"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "</s>"}' >"$tmp/tcfgbos/tokenizer_config.json"
row tokenizer-config-bos 1 "tcfgbos/tokenizer_config.json: bos_token \"<|begin_of_text|>\" is not a token of the vocab" -- $(gen "$tmp/tcfgbos")
mk tcfgok; printf '{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "unk_token": null}' >"$tmp/tcfgok/tokenizer_config.json"
"$bin" generate --model "$tmp/tcfgok" -n 2 --ids 2>/dev/null | grep -q "^ids: 1 " && ok || bad "a good tokenizer_config.json is refused or gives no BOS"

# ---- GGUF ----
{ printf 'GGUX\x03\x00\x00\x00'; head -c 100 /dev/zero; } >"$tmp/magic.gguf"
row gguf-magic 1 "magic.gguf: not a GGUF file (bad magic)" -- $(gen "$tmp/magic.gguf")
{ printf 'GGUF\x09\x00\x00\x00'; head -c 100 /dev/zero; } >"$tmp/version.gguf"
row gguf-version 1 "version.gguf: unknown GGUF version 9" -- $(gen "$tmp/version.gguf")
printf 'GGUF\x03\x00' >"$tmp/short.gguf"
row gguf-short 1 "short.gguf: truncated file" -- $(gen "$tmp/short.gguf")
head -c 3000 "$models/moe4-top2.gguf" >"$tmp/trunc.gguf"
row gguf-truncated 1 "trunc.gguf: metadata" "runs past the end of the file" -- $(gen "$tmp/trunc.gguf")
python3 - "$models/moe4-top2.gguf" "$tmp/arch.gguf" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
i = b.index(b"general.architecture") + len(b"general.architecture") + 4 + 8
assert b[i:i + 5] == b"llama"
open(sys.argv[2], "wb").write(b[:i] + b"gpt2x" + b[i + 5:])
PY
row gguf-architecture 1 "arch.gguf" "gpt2x" -- $(gen "$tmp/arch.gguf")

# ---- scenario and traces ----
sc() { printf '%s' "$2" >"$tmp/$1.json"; }
scen() { echo generate --model "$M" --scenario "$tmp/$1.json" -n 4 --json "$out/r.json"; }
sc syntax $'{\n "name": "x",\n "seed": 1\n "devices": []\n}'
row scenario-syntax 1 "syntax.json:4: JSON syntax error" -- $(scen syntax)
sc unknown '{"devices": [{"distance_m": 100, "profile": "phone", "antenna": 2}]}'
row scenario-unknown-key 1 "unknown.json: devices[0].antenna: unknown key" -- $(scen unknown)
sc range '{"radio": {"carrier_ghz": 500}, "devices": [{"distance_m": 100}]}'
row scenario-range 1 "range.json: radio.carrier_ghz: 500 is out of range" -- $(scen range)
sc preset '{"devices": [{"distance_m": 100, "profile": "toaster"}]}'
row scenario-profile 1 "preset.json: devices[0].profile" "toaster" -- $(scen preset)
sc notrace '{"devices": [{"downlink": {"model": "mahimahi", "file": "gone.down"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row trace-missing 1 "notrace.json: devices[0].downlink:" "gone.down: cannot open" -- $(scen notrace)
printf 'time_s,downlink_bps\n0,1e6\n0.5,fast\n' >"$tmp/rate.csv"
sc csvnum '{"devices": [{"downlink": {"model": "csv", "file": "rate.csv"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row csv-bad-number 1 "rate.csv:3: bad downlink_bps 'fast'" -- $(scen csvnum)
printf 'time_s,downlink_bps\n0,1e6\n0.5,2e6\n0.5,3e6\n' >"$tmp/order.csv"
sc csvorder '{"devices": [{"downlink": {"model": "csv", "file": "order.csv"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row csv-time-order 1 "order.csv:4: time_s 0.5 is not after the previous" -- $(scen csvorder)
# equal epoch-millisecond times: t + 1e-6 == t there (this looped forever)
printf 'time_s,downlink_bps\n1700000000000,1e6\n1700000000000,2e6\n' >"$tmp/dupms.csv"
sc csvdup '{"devices": [{"downlink": {"model": "csv", "file": "dupms.csv"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row csv-equal-large-times 1 "dupms.csv:3: time_s 1700000000000 is not after the previous" -- $(scen csvdup)
printf 'time_s,downlink_bps\n1e15,1e6\n1e15,2e6\n' >"$tmp/dup15.csv"
sc csvdup15 '{"devices": [{"downlink": {"model": "csv", "file": "dup15.csv"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row csv-equal-1e15-times 1 "dup15.csv:3: time_s 1e+15 is not after the previous" -- $(scen csvdup15)
# a link too slow to deliver within max_wait_s: one rule and one message for every kind
sc slowconst '{"max_wait_s": 60, "devices": [{"downlink": {"model": "constant", "rate_mbps": 1e-5}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row link-never-completes-constant 1 "slowconst.json: layer 0: device 0 (device-0) never completes: its downlink (constant 10 bit/s)" "max_wait_s = 60 s" -- $(scen slowconst)
printf 'time_s,downlink_bps\n0,10\n1,10\n' >"$tmp/slow.csv"
sc slowcsv '{"devices": [{"downlink": {"model": "csv", "file": "slow.csv"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row link-never-completes-csv 1 "slowcsv.json: layer 0: device 0 (device-0) never completes: its downlink (trace $tmp/slow.csv)" "raise its rate, or max_wait_s" -- $(scen slowcsv)
printf 'time_s,rate\n0,1e6\n' >"$tmp/col.csv"
sc csvcol '{"devices": [{"downlink": {"model": "csv", "file": "col.csv"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row csv-no-column 1 "col.csv:1: no column 'downlink_bps'" -- $(scen csvcol)
printf '1\n2\nabc\n' >"$tmp/text.down"
sc mmtext '{"devices": [{"downlink": {"model": "mahimahi", "file": "text.down"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row mahimahi-not-a-number 1 "text.down:3: not a millisecond timestamp: 'abc'" -- $(scen mmtext)
printf '1\n5\n3\n' >"$tmp/back.down"
sc mmback '{"devices": [{"downlink": {"model": "mahimahi", "file": "back.down"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row mahimahi-order 1 "back.down:3: timestamp 3 is before the previous one" -- $(scen mmback)
printf '1\n2\0003\n' >"$tmp/nul.down"
sc mmnul '{"devices": [{"downlink": {"model": "mahimahi", "file": "nul.down"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row trace-nul-byte 1 "nul.down: not a text file (NUL byte at offset 3)" -- $(scen mmnul)
sc place '{"devices": [{"distance_m": 100, "experts": [0, 1, 2, 9]}]}'
row placement-expert 1 "place.json: devices[0].experts: expert 9 is out of range for a model with 4 experts" -- $(scen place)
sc hole '{"devices": [{"distance_m": 100, "experts": [0, 1]}, {"distance_m": 100, "experts": [3]}]}'
row placement-missing 1 "hole.json: expert 2 is hosted by no device" -- $(scen hole)

# ---- FIFOs and devices as inputs: refused before an open that blocks or a read without end ----
mkfifo "$tmp/fifo.json" "$tmp/fifo.gguf" "$tmp/fifo.jsonl"
row scenario-fifo 1 "fifo.json: not a regular file (a FIFO or pipe)" -- generate --model "$M" --scenario "$tmp/fifo.json" -n 4 --json "$out/r.json"
row scenario-dev-zero 1 "/dev/zero: not a regular file (a character device)" -- generate --model "$M" --scenario /dev/zero -n 4 --json "$out/r.json"
row model-fifo 1 "fifo.gguf: not a regular file (a FIFO or pipe)" -- $(gen "$tmp/fifo.gguf")
mk cfgfifo; rm "$tmp/cfgfifo/config.json"; mkfifo "$tmp/cfgfifo/config.json"
row config-fifo 1 "cfgfifo/config.json: not a regular file (a FIFO or pipe)" -- $(gen "$tmp/cfgfifo")
sc zerotrace '{"devices": [{"downlink": {"model": "mahimahi", "file": "/dev/zero"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}'
row trace-dev-zero 1 "/dev/zero: not a regular file (a character device)" -- $(scen zerotrace)
row eval-data-fifo 1 "fifo.jsonl: not a regular file (a FIFO or pipe)" -- eval --model "$M" --task piqa --data "$tmp/fifo.jsonl" --quiet --out "$out/e.json"
row eval-data-dev-zero 1 "/dev/zero: not a regular file (a character device)" -- eval --model "$M" --task hellaswag --data /dev/zero --quiet --out "$out/e.json"

# ---- recorded probabilities (replay) ----
"$bin" generate --model "$M" --scenario "$tmp/good.json" -n 8 --record-probs "$tmp/p.wdpr" >/dev/null 2>&1 || bad "recording probabilities"
head -c 100 "$tmp/p.wdpr" >"$tmp/short.wdpr"
row wdpr-truncated 1 "short.wdpr: size 100 does not match" -- replay --probs "$tmp/short.wdpr" --scenario "$tmp/good.json" --out "$out/r.json"
python3 - "$tmp/p.wdpr" "$tmp/heads.wdpr" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<I", b, 4 + 4 * 6, 1 << 20)  # n_heads
struct.pack_into("<I", b, 4 + 4 * 8, 1 << 20)  # head_dim
open(sys.argv[2], "wb").write(b)
PY
row wdpr-heads 1 "heads.wdpr: bad header (heads 1048576, kv heads" -- replay --probs "$tmp/heads.wdpr" --scenario "$tmp/good.json" --out "$out/r.json"
mkfifo "$tmp/fifo.wdpr"
row wdpr-fifo 1 "fifo.wdpr: not a regular file (a FIFO or pipe)" -- replay --probs "$tmp/fifo.wdpr" --scenario "$tmp/good.json" --out "$out/r.json"
printf 'NOPE%044d' 0 >"$tmp/magic.wdpr"
row wdpr-magic 1 "magic.wdpr: not a router-probability file" -- replay --probs "$tmp/magic.wdpr" --scenario "$tmp/good.json" --out "$out/r.json"

# ---- evaluation data ----
evl() { echo eval --model "$M" --task "$1" --data "$2" --quiet --out "$out/e.json"; }
{ head -1 "$ev/hellaswag_20.txt"; echo 7; sed -n 3,6p "$ev/hellaswag_20.txt"; } >"$tmp/hs.txt"
row hellaswag-gold 1 "hs.txt: line 2: gold index" -- $(evl hellaswag "$tmp/hs.txt")
head -5 "$ev/hellaswag_20.txt" >"$tmp/hs5.txt"
row hellaswag-truncated 1 "hs5.txt: line 5: task starting at line 1 is incomplete" -- $(evl hellaswag "$tmp/hs5.txt")
mkdir -p "$tmp/mmlu/test" "$tmp/mmlu/dev"
cp "$ev/mmlu/dev/"*.csv "$tmp/mmlu/dev/"
{ head -2 "$ev/mmlu/test/high_school_geography_test.csv"; echo 'Q?,a,b,c,d,7'; } >"$tmp/mmlu/test/high_school_geography_test.csv"
row mmlu-answer 1 "high_school_geography_test.csv: line 3: answer" -- $(evl mmlu "$tmp/mmlu/test/high_school_geography_test.csv")
{ head -2 "$ev/arc_easy_10.jsonl"; echo '{"question": "x", "choices": ["a", "b"], "answer": 1'; } >"$tmp/arc.jsonl"
row jsonl-syntax 1 "arc.jsonl: line 3: malformed JSON" -- $(evl arc_easy "$tmp/arc.jsonl")
echo '{"question": "x", "choices": ["a", "b"], "answer": 2}' >"$tmp/arc2.jsonl"
row jsonl-answer 1 "arc2.jsonl: line 1: \"answer\"" -- $(evl arc_easy "$tmp/arc2.jsonl")
echo '{"question": "1+1?", "answer": "two"}' >"$tmp/gsm.jsonl"
row gsm8k-answer 1 "gsm.jsonl: line 1: the answer has no final" -- eval --model "$M" --task gsm8k --data "$tmp/gsm.jsonl" --shots 0 --quiet --out "$out/e.json"
row eval-data-missing 1 "$tmp/none.jsonl: cannot open" -- $(evl piqa "$tmp/none.jsonl")

# ---- outputs: never over an input, never two in one file, every folder checked before the run ----
# row_keep: like row, and every file named after -- keeps its bytes (sha256 before and after)
row_keep() {
    local files=() a
    for a in "$@"; do [ -f "$a" ] && files+=("$a"); done
    local before after
    before=$(sha256sum "${files[@]}")
    row "$@"
    after=$(sha256sum "${files[@]}")
    [ "$before" = "$after" ] || bad "$1: an input changed"
}
mk keep
cp "$tmp/good.json" "$tmp/keep/sc.json"
G=(generate --model "$tmp/keep" --scenario "$tmp/keep/sc.json" -n 2)
row_keep out-is-weights 2 "--json $tmp/keep/model.safetensors is a file of the model" "refusing to overwrite an input" -- "${G[@]}" --json "$tmp/keep/model.safetensors"
row_keep out-is-scenario 2 "--records $tmp/keep/sc.json is the scenario" -- "${G[@]}" --records "$tmp/keep/sc.json"
row_keep out-is-config 2 "--record-probs $tmp/keep/config.json is a file of the model" -- "${G[@]}" --record-probs "$tmp/keep/config.json"
ln "$tmp/keep/tokenizer.json" "$tmp/keep/hardlink.json"
row_keep out-is-input-hard-link 2 "--json $tmp/keep/hardlink.json is a file of the model ($tmp/keep/tokenizer.json)" -- "${G[@]}" --json "$tmp/keep/hardlink.json"
ln -s model.safetensors "$tmp/keep/symlink.json"
row_keep out-is-input-symlink 2 "--json $tmp/keep/symlink.json is a file of the model ($tmp/keep/model.safetensors)" -- "${G[@]}" --json "$tmp/keep/symlink.json"
printf '1\n2\n3\n' >"$tmp/keep/t.down"
printf '{"devices": [{"downlink": {"model": "mahimahi", "file": "t.down"}, "uplink": {"model": "constant", "rate_mbps": 10}}]}' >"$tmp/keep/tr.json"
row_keep out-is-trace 2 "--out $tmp/keep/t.down is a trace of the scenario" -- trace --scenario "$tmp/keep/tr.json" --duration 1 --out "$tmp/keep/t.down"
row_keep trace-out-is-scenario 2 "--out $tmp/keep/tr.json is the scenario" -- trace --scenario "$tmp/keep/tr.json" --duration 1 --out "$tmp/keep/tr.json"
cp "$ev/piqa_10.jsonl" "$tmp/keep/piqa.jsonl"
row_keep eval-out-is-data 2 "--out $tmp/keep/piqa.jsonl is the data" -- eval --model "$M" --task piqa --data "$tmp/keep/piqa.jsonl" --quiet --out "$tmp/keep/piqa.jsonl"
row_keep eval-records-is-data 2 "--records $tmp/keep/piqa.jsonl is the data" -- eval --model "$M" --task piqa --data "$tmp/keep/piqa.jsonl" --quiet --records "$tmp/keep/piqa.jsonl"
"$bin" generate --model "$M" --scenario "$tmp/good.json" -n 4 --record-probs "$tmp/keep/p.wdpr" >/dev/null 2>&1 || bad "recording probabilities"
row_keep replay-out-is-probs 2 "--out $tmp/keep/p.wdpr is the recorded probabilities" -- replay --probs "$tmp/keep/p.wdpr" --scenario "$tmp/good.json" --out "$tmp/keep/p.wdpr"
# two outputs, one file (also spelled differently)
row out-twice-json-records 2 "--json and --records both name $out/x" -- "${G[@]}" --json "$out/x" --records "$out/x"
row out-twice-json-probs 2 "--json and --record-probs both name" -- "${G[@]}" --json "$out/x" --record-probs "$out/../out/x"
row out-twice-records-probs 2 "--records and --record-probs both name $out/x" -- "${G[@]}" --records "$out/x" --record-probs "$out/x"
row eval-out-twice 2 "--out and --records both name $out/x" -- eval --model "$M" --task piqa --data "$ev/piqa_10.jsonl" --quiet --out "$out/x" --records "$out/x"
# every output's folder, before the run
row out-folder-json 2 "--json $out/none/r.json: the folder $out/none does not exist" -- "${G[@]}" --json "$out/none/r.json"
row out-folder-eval-out 2 "--out $out/none/e.json: the folder $out/none does not exist" -- eval --model "$M" --task piqa --data "$ev/piqa_10.jsonl" --quiet --out "$out/none/e.json"
row out-folder-eval-records 2 "--records $out/none/e.jsonl: the folder $out/none does not exist" -- eval --model "$M" --task piqa --data "$ev/piqa_10.jsonl" --quiet --records "$out/none/e.jsonl"
row out-folder-replay 2 "--out $out/none/r.json: the folder $out/none does not exist" -- replay --probs "$tmp/keep/p.wdpr" --scenario "$tmp/good.json" --out "$out/none/r.json"
row out-is-device 2 "--json /dev/null: exists and is not a regular file" -- "${G[@]}" --json /dev/null
row out-is-folder 2 "--out $tmp: exists and is not a regular file (a folder)" -- trace --scenario "$tmp/good.json" --duration 1 --out "$tmp"

# ---- usage ----
row usage-value 2 "bad value for -n: 'many'" -- generate --model "$M" -n many
row usage-option 2 "unknown option '--fast'" -- generate --model "$M" --fast
row usage-task 2 "nosuch" -- eval --model "$M" --task nosuch --data "$tmp/x"
row usage-gpus 2 "bad value for --gpus: '0'" -- generate --model "$M" --gpus 0
row usage-rank 2 "--rank 1 is outside 0..0" -- generate --model "$M" --rank 1
row usage-nccl-id 2 "--ranks 2 needs --nccl-id FILE" -- generate --model "$M" --ranks 2
row usage-serve 2 "serves ranks 1.. of a multi-process run" -- serve --model "$M"
row usage-top-k 2 "--top-k 5 exceeds the model's 4 experts" -- generate --model "$M" --top-k 5
row usage-router 2 "bad value for --router: 'best'" -- eval --model "$M" --task piqa --data "$tmp/x" --router best
row usage-oracle-scenario 2 "--router oracle is for quality studies without --scenario" -- generate --model "$M" --router oracle --scenario "$tmp/good.json"
row usage-moefy 2 "--model and --out are required" -- moefy --model "$M"
row moefy-not-dense 1 "moefy needs a dense model" -- moefy --model "$M" --out "$out/moe"
row usage-eval-ranks 2 "--ranks is for" -- eval --model "$M" --task piqa --data "$tmp/x" --ranks 2 --nccl-id "$tmp/id"
# the id file is read only by a build with the CUDA backend
printf 'short' >"$tmp/bad.id"
if ! "$bin" serve --model "$M" --ranks 2 --rank 1 --nccl-id "$tmp/bad.id" 2>&1 | grep -q "no CUDA backend"; then
    row nccl-id-bad 1 "bad.id: not an NCCL id (5 bytes, expected 128)" -- serve --model "$M" --ranks 2 --rank 1 --nccl-id "$tmp/bad.id"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
