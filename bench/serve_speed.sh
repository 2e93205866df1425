#!/usr/bin/env bash
# The emulator's own speed with many users (docs/serving.md, "Measured: the
# emulator's own speed"): bench_serve on a synthetic Mixtral-layout model
# (hidden 512, FFN 1792, 8 experts top-2, 4 layers, 8/2 heads, BF16, vocab 2000;
# written by build/synth_model into build/synth-serve when missing), paper-cell,
# 1, 8, 32 and 128 users arriving at once, 16 new tokens each, one thread by
# default (the machine is shared). Writes docs/experiments/serve-cell/speed.{json,txt}.
#
#   bench/serve_speed.sh [--threads N] [--reps N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=1 reps=3 out=docs/experiments/serve-cell
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "serve_speed.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
model=build/synth-serve
for b in build/synth_model build/bench_serve; do
  [ -x "$b" ] || { echo "serve_speed.sh: $b not built (cmake --build build)" >&2; exit 1; }
done
[ -f "$model/config.json" ] || build/synth_model --out "$model" --hidden 512 --layers 4 \
    --heads 8 --kv-heads 2 --ffn 1792 --experts 8 --top-k 2 --vocab 2000 --dtype bf16 >/dev/null
mkdir -p "$out"
build/bench_serve --model "$model" --scenario bench/scenarios/paper-cell.json \
    --users 1,8,32,128 --max-new 16 --reps "$reps" --threads "$threads" \
    --json "$out/speed.json" | tee "$out/speed.txt.tmp"
mv "$out/speed.txt.tmp" "$out/speed.txt"
