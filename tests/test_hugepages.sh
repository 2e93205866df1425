#!/usr/bin/env bash
# --hugepages (wd_tensors_to_hugepages): the weights copied out of the file mappings give the
# very same tokens as the mapped ones, for a safetensors folder and a GGUF file (whose Q/K rows
# and stacked experts are views and converted buffers), greedy and sampled.
set -u
[ -x "$WDMOE" ] || { echo "SKIPPED: $WDMOE not built"; exit 77; }
fail=0
for model in "$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2" \
             "$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2.gguf" \
             "$WD_SOURCE_DIR/weights/models/stories260k/sliced4-top4"; do
    for opts in "--threads 1" "--threads 2 --temperature 0.8 --seed 5"; do
        # shellcheck disable=SC2086
        a=$("$WDMOE" generate --model "$model" --prompt "Once upon a time" -n 40 --ids $opts 2>/dev/null) ||
            { echo "FAILED: generate $model $opts"; fail=1; }
        # shellcheck disable=SC2086
        b=$("$WDMOE" generate --model "$model" --prompt "Once upon a time" -n 40 --ids $opts --hugepages 2>/dev/null) ||
            { echo "FAILED: generate --hugepages $model $opts"; fail=1; }
        [ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAILED: --hugepages changes the output ($model $opts)"; fail=1; }
    done
done
bench="$WD_BINARY_DIR/bench_decode"
if [ -x "$bench" ]; then
    "$bench" --model "$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2.gguf" --hugepages --reps 1 \
        --bw-passes 0 --prompt 4 --decode 2 --json - 2>/dev/null | grep -q '"hugepages": true' ||
        { echo "FAILED: bench_decode --hugepages"; fail=1; }
fi
[ "$fail" = 0 ] && echo "test_hugepages: passed"
exit "$fail"
