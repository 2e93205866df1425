#!/usr/bin/env bash
# Quality beside latency in a cell (docs/serving.md): one serve-cell run per policy with
# the top-k comparison on (each user's output re-scored with the model's own routing:
# token agreement and mean KL), p95 TPOT and experts per token. Prints a Markdown table
# and writes it to OUT/quality.md.
#
#   bench/serve_quality.sh [--model M] [--rate R] [--users N] [--max-new N] [--seed S]
#                          [--policies a,b,..] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
model=weights/models/smollm2-135m/moe8/model.gguf rate=0.03 users=32 max_new=16 seed=1
policies=topk,wdmoe,wdmoe-straggler,energy out=docs/experiments/serve-cell
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --max-new) max_new=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --policies) policies=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "serve_quality.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
{
  echo "$model, paper-cell, $users users at $rate/s, $max_new new tokens, seed $seed, 1 thread"
  echo
  echo "| policy | TPOT p95 ms | experts/token | agreement with top-k | mean KL nats |"
  echo "|---|---:|---:|---:|---:|"
  for p in ${policies//,/ }; do
    build/wdmoe serve-cell --model "$model" --scenario bench/scenarios/paper-cell.json \
        --prompts bench/prompts/story-openers.txt --users "$users" --rate "$rate" \
        --max-new "$max_new" --policy "$p" --seed "$seed" --threads 1 \
        --json "$tmp/$p.json" >/dev/null 2>"$tmp/err" ||
        { echo "serve_quality.sh: serve-cell --policy $p failed: $(cat "$tmp/err")" >&2; exit 1; }
    python3 - "$tmp/$p.json" "$p" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); s = d["summary"]
print(f"| {sys.argv[2]} | {s['tpot']['p95_s'] * 1e3:.1f} | "
      f"{d['latency']['decode']['experts_per_token']:.2f} | {100 * s['agreement']:.1f} % | "
      f"{s['mean_kl']:.3f} |")
PY
  done
} | tee "$tmp/quality.md"
mv "$tmp/quality.md" "$out/quality.md"
