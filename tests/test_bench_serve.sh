#!/usr/bin/env bash
# bench_serve (the emulator's own speed with many users): the table, the result JSON
# (every figure with median/min/max/spread over --reps samples, the configuration
# echoed), bad options rejected with a message. No timing is checked against a threshold.
set -u
bin="$WD_BINARY_DIR/bench_serve"
[ -x "$bin" ] || { echo "SKIPPED: $bin not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: no python3"; exit 77; }
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_bench_serve_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
model="$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2"
scen="$WD_SOURCE_DIR/bench/scenarios/paper-cell.json"
"$bin" --model "$model" --scenario "$scen" --users 1,3 --reps 2 --max-new 3 --threads 1 \
    --micro-batches 2 --json "$tmp/r.json" >"$tmp/out.txt" 2>&1 ||
    { echo "FAILED: bench_serve: $(cat "$tmp/out.txt")"; fail=1; }
grep -q "expert calls GFLOP/s" "$tmp/out.txt" || { echo "FAILED: no table"; fail=1; }
python3 - "$tmp/r.json" <<'PY' || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
assert d["command"] == "bench_serve" and d["reps"] == 2 and d["micro_batches"] == 2, "config"
assert d["expert_rows"] == 172 and d["expert_cols"] == 64, "expert shape"
for k in ("gemm128_flop_per_s", "gemv_flop_per_s"):
    s = d[k]
    assert s["n"] == 2 and s["min"] <= s["median"] <= s["max"] and s["min"] > 0, k
assert [r["users"] for r in d["runs"]] == [1, 3], "runs"
for r in d["runs"]:
    for k in ("wall_s_per_step", "wall_s_per_output_token", "expert_calls_flop_per_s", "mean_batch"):
        v = sorted(r[k]["samples"])
        assert r[k]["n"] == 2 and r[k]["min"] == v[0] and r[k]["max"] == v[1] and v[0] > 0, k
    assert r["mean_batch"]["median"] <= r["users"], "batch"
PY
[ $? -eq 0 ] || { echo "FAILED: bench_serve JSON"; fail=1; }
"$bin" --help | grep -q -- "--users" || { echo "FAILED: --help"; fail=1; }
for bad in "--reps 0" "--users 0" "--users x" "--threads -1" "--bogus 1"; do
    # shellcheck disable=SC2086
    msg=$("$bin" --model "$model" --scenario "$scen" $bad 2>&1) && { echo "FAILED: accepted: $bad"; fail=1; }
    echo "$msg" | grep -q "bench_serve:" || { echo "FAILED: no message for: $bad"; fail=1; }
done
msg=$("$bin" --model "$model" 2>&1) && { echo "FAILED: ran without --scenario"; fail=1; }
[ "$fail" = 0 ] && echo "test_bench_serve: passed"
exit "$fail"
