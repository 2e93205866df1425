#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) and run each for a while.
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Env: WD_FUZZ_BUILD (build folder, default build-fuzz), WD_SHARED_DATA (the
# shared data folder, default ../shared/data), WD_FUZZ_JOBS (parallel
# fuzzers, default 1). Seeds: small valid files written by fuzz_seeds, the
# shipped files (models, scenarios, traces, datasets) and
# tests/fuzz/regress/<target> (past findings, replayed by the ctest
# test_fuzz_regress). The growing corpus is kept in
# $WD_FUZZ_BUILD/corpus/<target>. A finding is saved as
# $WD_FUZZ_BUILD/artifacts/<target>-crash-* (reproduce: ./fuzz_<target> FILE)
# and makes the script exit 1. One summary line per target: executions,
# executions/s, corpus size, result.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
shift || true
build=${WD_FUZZ_BUILD:-$root/build-fuzz}
shared=${WD_SHARED_DATA:-$root/../shared/data}
jobs=${WD_FUZZ_JOBS:-1}
case "$secs" in '' | *[!0-9]*) echo "run.sh: seconds must be a positive integer, not '$secs'" >&2; exit 2 ;; esac

command -v clang >/dev/null || { echo "run.sh: clang is needed (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWDMOE_FUZZ=ON \
    -DWDMOE_SANITIZE=ON -DWDMOE_CUDA=OFF -DWD_SHARED_DATA="$shared" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$root"/tests/fuzz/fuzz_*.c; do
        n=$(basename "$f" .c)
        [ "$n" = fuzz_seeds ] || targets+=("${n#fuzz_}")
    done
fi
bins=(fuzz_seeds)
for t in "${targets[@]}"; do bins+=("fuzz_$t"); done
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" --target "${bins[@]}" >/dev/null

# seeds
seeds="$build/seeds"
rm -rf "$seeds"
"$build/tests/fuzz/fuzz_seeds" "$seeds"
models="$root/weights/models/stories260k"
add() { # target files...
    local t="$1"; shift
    mkdir -p "$seeds/$t"
    for f in "$@"; do [ -f "$f" ] && cp "$f" "$seeds/$t/$(echo "${f#"$root"/}" | tr '/' '_')"; done
    return 0
}
add safetensors "$models/sliced4-top4/model.safetensors"
add config "$models/moe4-top2/config.json" "$models/sliced4-top4/config.json"
add tokenizer "$models/moe4-top2/tokenizer.json" "$root"/tests/data/bytelevel/*.json
add pretok "$root"/tests/data/eval/*.jsonl "$root"/tests/data/eval/hellaswag*.txt
add gguf "$models/moe4-top2.gguf" "$root/tests/data/vocab/ggml-vocab-llama-spm.gguf"
add scenario "$root"/bench/scenarios/*.json
add mahimahi "$root/bench/traces/ATT-LTE-driving-2016.up"
for f in "$root"/bench/traces/*.down; do # the long traces: their first 4000 lines
    [ -f "$f" ] && head -n 4000 "$f" >"$seeds/mahimahi/head-$(basename "$f")"
done
add csv_trace "$root"/tests/data/traces/*.csv
ds="$root/tests/data/eval"
add eval_text "$ds"/hellaswag*.txt "$models/greedy-200.txt"
add eval_mmlu "$ds"/mmlu/*/*.csv
add eval_jsonl "$ds"/*.jsonl

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/artifacts" "$build/logs"
run_one() {
    local t="$1" bin="$build/tests/fuzz/fuzz_$1" corpus="$build/corpus/$1"
    mkdir -p "$corpus" "$seeds/$t"
    local dirs=("$corpus" "$seeds/$t") rc=0
    [ -d "$root/tests/fuzz/regress/$t" ] && dirs+=("$root/tests/fuzz/regress/$t")
    (cd "$build/logs" && "$bin" "${dirs[@]}" -max_total_time="$secs" -timeout=20 -seed="${WD_FUZZ_SEED:-1}" \
        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
        >"$build/logs/$t.log" 2>&1) || rc=$?
    local runs rate size
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build/logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$build/logs/$t.log" | tail -1)
    size=$(find "$corpus" -type f | wc -l)
    if [ $rc -eq 0 ]; then
        printf '%-16s %10s runs %8s exec/s %6s corpus  ok\n' "$t" "${runs:-?}" "${rate:-?}" "$size"
    else
        printf '%-16s %10s runs %8s exec/s %6s corpus  FINDING (exit %d, see %s)\n' "$t" \
            "${runs:-?}" "${rate:-?}" "$size" "$rc" "$build/logs/$t.log"
        grep -m3 -E "ERROR: |runtime error|SUMMARY" "$build/logs/$t.log" | sed 's/^/    /'
        return 1
    fi
}
fail=0
if [ "$jobs" -gt 1 ]; then
    pids=()
    for t in "${targets[@]}"; do
        run_one "$t" >"$build/logs/$t.summary" &
        pids+=($!)
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.2; done
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || fail=1; cat "$build/logs/${targets[$i]}.summary"; done
else
    for t in "${targets[@]}"; do run_one "$t" || fail=1; done
fi
exit $fail
