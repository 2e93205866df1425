#!/usr/bin/env bash
# Accuracy of the dense SmolLM2-135M-Instruct (Q4_1 GGUF) with `wdmoe eval` on
# HellaSwag, ARC-Easy, ARC-Challenge, PIQA, WinoGrande and MMLU, beside the
# figures published for the model. Not part of the tests (it takes hours on a
# 2-core machine). Needs the model (bash weights/models/fetch_smollm2.sh) and
# the data sets of ../shared/data/datasets (or WD_DATASETS).
# Usage: bash bench/eval_smollm2.sh [LIMIT] [THREADS]
#   LIMIT: items per task (default 1000; 0 = whole sets); results JSON in
#   bench/results/smollm2/<task>.json, the table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-1000}
threads=${2:-0}
M=weights/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
D=${WD_DATASETS:-../shared/data/datasets}
out=bench/results/smollm2
[ -f "$M" ] || { echo "eval_smollm2: $M missing: bash weights/models/fetch_smollm2.sh" >&2; exit 1; }
mkdir -p "$out"
lim=(); [ "$limit" -gt 0 ] && lim=(--limit "$limit")
run() { # task data extra...
    local task=$1 data=$2; shift 2
    [ -e "$data" ] || { echo "eval_smollm2: $data missing, $task skipped" >&2; return; }
    ./build/wdmoe eval --model "$M" --task "$task" --data "$data" "${lim[@]}" --threads "$threads" \
        --quiet --out "$out/$task.json" "$@" >/dev/null
}
run hellaswag "$D/hellaswag_val_full.txt"
run arc_easy "$D/arc_easy_test.jsonl"
run arc_challenge "$D/arc_challenge_test.jsonl"
run piqa "$D/piqa_valid.jsonl"
run winogrande "$D/winogrande_dev.jsonl"
run mmlu "$D/mmlu" --shots 0
# Published figures: the model card of HuggingFaceTB/SmolLM2-135M-Instruct
# (lighteval; ARC is the average of Easy and Challenge, MMLU in cloze form),
# and a third-party lm-evaluation-harness 0-shot run of the same model.
python3 - "$out" <<'PY'
import json, os, sys
card = {"hellaswag": "40.9", "arc_easy": "37.3 (ARC avg)", "arc_challenge": "37.3 (ARC avg)",
        "piqa": "66.3", "winogrande": "-", "mmlu": "29.3 (cloze)"}
harness = {"hellaswag": "42.99 acc_norm", "arc_easy": "54.12 acc", "arc_challenge": "27.73 acc_norm",
           "piqa": "66.92 acc_norm", "winogrande": "-", "mmlu": "-"}
print("| task | items | acc | acc_norm | model card | lm-eval 0-shot (third party) |")
print("|---|---|---|---|---|---|")
for t in ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "mmlu"]:
    p = os.path.join(sys.argv[1], t + ".json")
    if not os.path.exists(p):
        continue
    d = json.load(open(p))
    r = d["metrics"]
    def g(k):
        v = r.get(k)
        return "%.1f +- %.1f" % (100 * v, 100 * r[k + "_stderr"]) if v is not None else "-"
    print("| %s | %d | %s | %s | %s | %s |" % (t, d["items"], g("acc"), g("acc_norm"), card[t],
                                          harness[t]))
PY
