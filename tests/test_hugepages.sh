#!/usr/bin/env bash
# Huge pages (wd_model_hugepages: generate --hugepages, the default of serve-cell and
# bench_decode): the weights copied out of the file mappings give the very same logits and
# tokens as the mapped ones, for a safetensors folder and a GGUF file (whose Q/K rows and stacked
# experts are views and converted buffers), greedy and sampled; when the copy would take more
# than half of the available memory (forced with WDMOE_MEM_AVAILABLE_MB) the weights stay mapped,
# the command says so and the output is the same.
set -u
[ -x "$WDMOE" ] || { echo "SKIPPED: $WDMOE not built"; exit 77; }
fail=0
tmp="$WD_BINARY_DIR/test_hugepages.$$"
mkdir -p "$tmp" && trap 'rm -rf "$tmp"' EXIT
M="$WD_SOURCE_DIR/weights/models/stories260k"
for model in "$M/moe4-top2" "$M/moe4-top2.gguf" "$M/sliced4-top4"; do
    for opts in "--threads 1" "--threads 2 --temperature 0.8 --seed 5"; do
        outs=""
        for hp in "" --hugepages; do
            # shellcheck disable=SC2086
            o=$("$WDMOE" generate --model "$model" --prompt "Once upon a time" -n 40 --ids $opts $hp \
                --logits "$tmp/logits$hp" 2>"$tmp/err") || { echo "FAILED: generate $model $opts $hp"; fail=1; }
            grep -q "file-mapped" "$tmp/err" && { echo "FAILED: $model $hp fell back: $(cat "$tmp/err")"; fail=1; }
            [ -n "$o" ] || { echo "FAILED: no output ($model $opts $hp)"; fail=1; }
            outs="$outs|$o"
            cmp -s "$tmp/logits" "$tmp/logits$hp" ||
                { echo "FAILED: logits with '$hp' differ from the mapped ones ($model $opts)"; fail=1; }
        done
        first=${outs#|}; first=${first%%|*}
        [ "$outs" = "|$first|$first" ] || { echo "FAILED: huge pages change the output ($model $opts)"; fail=1; }
        # the fallback: too little memory for the copy
        # shellcheck disable=SC2086
        o=$(WDMOE_MEM_AVAILABLE_MB=1 "$WDMOE" generate --model "$model" --prompt "Once upon a time" -n 40 --ids \
            $opts --hugepages 2>"$tmp/err") || { echo "FAILED: generate with the fallback ($model $opts)"; fail=1; }
        grep -q "stay file-mapped (4 KB pages): their huge-page copy" "$tmp/err" ||
            { echo "FAILED: the fallback is not reported ($model): $(cat "$tmp/err")"; fail=1; }
        [ "$o" = "$first" ] || { echo "FAILED: the fallback changes the output ($model $opts)"; fail=1; }
    done
done
bench="$WD_BINARY_DIR/bench_decode"
if [ -x "$bench" ]; then
    run_bench() { # expected "hugepages" value, then options
        want=$1; shift
        "$bench" --model "$M/moe4-top2.gguf" --reps 1 --bw-passes 0 --prompt 4 --decode 2 --json - "$@" \
            2>"$tmp/err" | grep -q "\"hugepages\": $want" || { echo "FAILED: bench_decode $* (want $want)"; fail=1; }
    }
    run_bench true
    run_bench false --no-hugepages
    WDMOE_MEM_AVAILABLE_MB=1 run_bench false
    grep -q "stay file-mapped" "$tmp/err" || { echo "FAILED: bench_decode fallback not reported"; fail=1; }
fi
[ "$fail" = 0 ] && echo "test_hugepages: passed"
exit "$fail"
