#!/usr/bin/env bash
# Every paper experiment in a row. On a laptop the quick defaults below finish
# in a few minutes on 2 cores with stories260k (longer with the MoEfied SmolLM2); on a GPU host pass a
# Mixtral-8x7B folder or GGUF and raise the limits (QUICK=0 runs everything).
#
#   bench/repro_all.sh [MODEL] [OUT_DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# Default model: SmolLM2-135M MoEfied into 8 experts (docs/moefication.md), made
# here once from the fetched dense GGUF (weights/models/fetch_smollm2.sh); without
# it, the shipped stories260k moe4-top2 (four identical experts).
smol=$here/../weights/models/smollm2-135m
if [ -z "${1:-}" ] && [ -f "$smol/SmolLM2-135M-Instruct.Q4_1.gguf" ] && [ ! -f "$smol/moe8/model.gguf" ]; then
    "$here/../build/wdmoe" moefy --model "$smol/SmolLM2-135M-Instruct.Q4_1.gguf" --experts 8 \
        --out "$smol/moe8"
fi
if [ -f "$smol/moe8/model.gguf" ]; then
    model=${1:-$smol/moe8/model.gguf}
else
    model=${1:-$here/../weights/models/stories260k/moe4-top2}
fi
out=${2:-$here/results}
quick=${QUICK:-1}
# SEEDS channel seeds per configuration (mean and 95 % CI in the tables; default
# 10, 3 in the quick run); JOBS runs in parallel (default: one per core); a rerun
# with the same OUT_DIR reuses the runs that finished.
jobs=${JOBS:-$(nproc 2>/dev/null || echo 1)}
if [ "$quick" = 1 ]; then seeds=${SEEDS:-3}; else seeds=${SEEDS:-10}; fi
if [ "$quick" = 1 ]; then
    acc_args=(--limit 40 --gsm8k-limit 4 --mmlu-shots 0 --gsm8k-shots 0 --max-new-tokens 48
              --seeds "$seeds" --jobs "$jobs")
    lat_args=(--limit 3 --max-new-tokens 48 --seeds "$seeds" --jobs "$jobs")
    bw_args=(--limit 2 --max-new-tokens 32 --seeds "$seeds" --jobs "$jobs")
    par_args=(--limit 40 --seeds "$seeds" --jobs "$jobs")
    thr_args=(--limit 100 --repeat 2)
else
    acc_args=(--seeds "$seeds" --jobs "$jobs")
    lat_args=(--limit 50 --max-new-tokens 256 --seeds "$seeds" --jobs "$jobs")
    bw_args=(--limit 20 --seeds "$seeds" --jobs "$jobs")
    par_args=(--limit 0 --seeds "$seeds" --jobs "$jobs")
    thr_args=(--limit 1000)
fi
# build/venv (bash .ci/setup) has matplotlib for the plots; else $PYTHON or python3
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x "$here/../build/venv/bin/python" ] && py="$here/../build/venv/bin/python"
"$py" "$here/repro_accuracy.py" "$model" --out "$out/accuracy" "${acc_args[@]}"
"$py" "$here/repro_latency.py" "$model" --out "$out/latency" "${lat_args[@]}"
"$py" "$here/repro_bandwidth.py" "$model" --out "$out/bandwidth" "${bw_args[@]}"
"$py" "$here/repro_pareto.py" "$model" --out "$out/pareto" "${par_args[@]}"
"$py" "$here/repro_throughput.py" "$model" --out "$out/throughput" "${thr_args[@]}"
echo "tables and plots in $out"
