#!/usr/bin/env bash
# wdmoe moefy through the CLI: a synthetic dense Llama folder becomes an MoE
# whose greedy ids with --top-k 8 (all experts) equal the dense model's, with
# the learned and the oracle router; fewer experts change them; the help and
# the per-phase times are printed; the output folder is complete.
set -u
bin="$WDMOE"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_cli_moefy_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
"$WD_BINARY_DIR/synth_model" --out "$tmp/dense" --dense --hidden 64 --ffn 128 --layers 2 >/dev/null ||
    { echo "synth_model failed"; exit 1; }
"$bin" moefy --help | grep -q -- "--experts E" || bad "moefy --help"
"$bin" moefy --model "$tmp/dense" --out "$tmp/moe" --calib-tokens 96 --seq-len 24 2>"$tmp/log" ||
    bad "moefy failed: $(cat "$tmp/log")"
grep -q "moefy: phases: calibration" "$tmp/log" || bad "no phase times: $(cat "$tmp/log")"
grep -q "moefy: layer 2/2" "$tmp/log" || bad "no per-layer progress"
for f in config.json model.safetensors tokenizer.json moefy.json; do
    [ -s "$tmp/moe/$f" ] || bad "missing $f"
done
ls "$tmp/moe" | grep -q tmp && bad "temporary file left"
grep -q '"moe_combine": "sum"' "$tmp/moe/config.json" || bad "config lacks moe_combine"
grep -q '"num_experts_per_tok": 6' "$tmp/moe/config.json" || bad "default top-k is not 6"
ids() { "$bin" generate --model "$@" --prompt "hello" -n 24 --ids 2>/dev/null | grep '^ids:'; }
want=$(ids "$tmp/dense")
[ -n "$want" ] || bad "no dense ids"
[ "$(ids "$tmp/moe" --top-k 8)" = "$want" ] || bad "top-8 (learned) differs from dense"
[ "$(ids "$tmp/moe" --top-k 8 --router oracle)" = "$want" ] || bad "top-8 (oracle) differs from dense"
[ "$(ids "$tmp/moe" --top-k 1)" != "$want" ] || bad "top-1 equals dense"
[ $fail -eq 0 ] && echo "test_cli_moefy: ok"
[ $fail -eq 0 ]
