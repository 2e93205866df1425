#!/usr/bin/env bash
# Determinism on the CPU backend: the same inputs and seeds give byte-identical
# result files across runs and across thread counts (1 and 2): `wdmoe generate
# --scenario` (result JSON, per-step records, recorded probabilities; sampled,
# with a prompt long enough for the blocked GEMM), `wdmoe replay --out`, and
# `wdmoe eval` (per-item records; the result JSON apart from the two keys that
# describe the machine rather than the result: "threads" and the measured
# "throughput"). The synthetic model is big enough that every matmul is split
# between threads.
set -u
bin="$WDMOE"
synth="$WD_BINARY_DIR/synth_model"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_determinism_XXXXXX")
trap '[ -n "${WD_KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
[ -x "$synth" ] || { echo "SKIPPED: $synth not built"; exit 77; }
"$synth" --out "$tmp/m" --hidden 256 --layers 2 --heads 4 --kv-heads 2 --ffn 512 --experts 4 \
    --top-k 2 --vocab 512 --max-pos 512 --seed 9 >/dev/null || { bad "synth_model"; exit 1; }
# a cell with synthetic (fading) channels and min-max allocation, 6 devices for 4 experts (replicas)
cat >"$tmp/cell.json" <<'JSON'
{"name": "det", "seed": 3, "device_count": 6,
 "devices": [{"distance_m": 60}, {"distance_m": 120}, {"distance_m": 200}, {"distance_m": 320},
             {"distance_m": 450}, {"distance_m": 90, "profile": "laptop"}],
 "policy": {"name": "wdmoe", "gamma": 1.05}, "bandwidth_allocation": "minmax"}
JSON
prompt="Once upon a time there was a little robot who liked to count the stars at night"
stable() { # file: drop the top-level "date" line and the "command_line" array, in place
    awk '/^  "date": ?"/ {next} /^  "command_line": ?\[/ {skip=1} skip { if (/^  \]/) skip=0; next } 1' \
        "$1" >"$1.stable" && mv "$1.stable" "$1"
}
gen() { # tag threads (the files are written under the same names, then moved: paths are echoed)
    local r="$tmp/run"
    rm -rf "$r"; mkdir -p "$r"
    "$bin" generate --model "$tmp/m" --scenario "$tmp/cell.json" --prompt "$prompt" -n 24 \
        --temperature 0.9 --top-p 0.95 --seed 11 --threads "$2" --json "$r/result.json" \
        --records "$r/steps.jsonl" --record-probs "$r/probs.wdpr" \
        >"$r/stdout" 2>"$r/stderr" || bad "generate ($1) exited $?: $(tail -2 "$r/stderr")"
    "$bin" replay --probs "$r/probs.wdpr" --scenario "$tmp/cell.json" \
        --policy wdmoe --policy fastest --out "$r/replay.json" >/dev/null 2>&1 ||
        bad "replay ($1) exited $?"
    # what describes the run rather than the result: the date and the command line (threads)
    stable "$r/result.json"
    stable "$r/replay.json"
    mv "$r" "$tmp/$1"
}
same() { # label file...: all byte-identical
    local label="$1" first="$2"; shift 2
    for f in "$@"; do
        if cmp -s "$first" "$f"; then ok; else bad "$label differs: $first vs $f"; cmp "$first" "$f" | head -2; fi
    done
}
gen a 1
gen b 2
gen c 2
for f in result.json steps.jsonl probs.wdpr replay.json stdout; do
    same "generate $f" "$tmp/a/$f" "$tmp/b/$f" "$tmp/c/$f"
done
[ -s "$tmp/a/steps.jsonl" ] && [ "$(grep -c . "$tmp/a/steps.jsonl")" -ge 48 ] && ok || bad "too few step records"

# eval: multiple choice with a shared prefix, through the scenario, with agreement
ev() { # tag threads
    local r="$tmp/run"
    rm -rf "$r"; mkdir -p "$r"
    "$bin" eval --model "$tmp/m" --task arc_easy --data "$WD_SOURCE_DIR/tests/data/eval/arc_easy_10.jsonl" \
        --scenario "$tmp/cell.json" --agreement --threads "$2" --quiet --out "$r/eval.json" \
        --records "$r/eval.jsonl" >/dev/null 2>"$r/eval.err" ||
        bad "eval ($1) exited $?: $(tail -2 "$r/eval.err")"
    # the machine-dependent keys: "threads" (one line) and the "throughput" block; the date
    # and the command line
    awk '/^  "threads":/ {next} /^  "throughput":/ {skip=1} skip && /^  }/ {skip=0; next} !skip' \
        "$r/eval.json" >"$r/eval.stable.json"
    stable "$r/eval.stable.json"
    cp "$r"/eval* "$tmp/$1/"
}
ev a 1
ev b 2
ev c 2
same "eval records" "$tmp/a/eval.jsonl" "$tmp/b/eval.jsonl" "$tmp/c/eval.jsonl"
same "eval result" "$tmp/a/eval.stable.json" "$tmp/b/eval.stable.json" "$tmp/c/eval.stable.json"
grep -q '"throughput"' "$tmp/a/eval.json" && ! grep -q '"throughput"' "$tmp/a/eval.stable.json" && ok ||
    bad "the throughput block was not found and removed"
grep -q '"metrics"' "$tmp/a/eval.stable.json" && ok || bad "stable eval result lost its metrics"
grep -q '"date"' "$tmp/a/eval.json" && ! grep -q '"date"\|"command_line"' "$tmp/a/eval.stable.json" &&
    grep -q '"git_commit"' "$tmp/a/result.json" && ok || bad "provenance keys not found or not removed"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
