#!/usr/bin/env bash
# bench/ statistics: the 95 % confidence interval (t-distribution) against hand
# examples, mean ± half-width in the tables, and a repro_latency run over two
# channel seeds in parallel that a rerun resumes (every run reused).
set -u
src="$WD_SOURCE_DIR"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_repro_stats_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }

# 1. hand examples. [1, 2, 3, 4, 5]: mean 3, s = sqrt(2.5) = 1.58114, t(0.975, 4) =
#    2.77645 (tables), half-width 2.77645 * 1.58114 / sqrt(5) = 1.96324.
#    [10, 12]: s = sqrt(2), t(0.975, 1) = 12.7062, half-width 12.7062.
#    One value: no interval.
out=$(cd "$src/bench" && python3 - <<'PY'
import repro_common as rc
m, h = rc.ci95([1, 2, 3, 4, 5])
assert abs(m - 3) < 1e-12 and abs(h - 1.96324) < 1e-5, (m, h)
assert abs(rc.t_quantile(0.975, 4) - 2.776445) < 1e-6
assert abs(rc.t_quantile(0.975, 9) - 2.262157) < 1e-6
assert abs(rc.t_quantile(0.975, 30) - 2.042272) < 1e-6
m, h = rc.ci95([10, 12])
assert abs(m - 11) < 1e-12 and abs(h - 12.7062) < 1e-4, (m, h)
assert rc.ci95([7.0]) == (7.0, None) and rc.ci95([]) == (None, None)
assert rc.ci95([None, 1.0, float("nan"), 3.0])[0] == 2.0
print(rc.cell({"x": 3.0, "x_ci": 1.96324}, "x", 3))
PY
) && [ "$out" = "3.000 ± 1.963" ] && ok || bad "confidence interval: $out"

# 2. repro_latency over 2 seeds, 2 jobs; the rerun reuses every run
model="$src/weights/models/stories260k/moe4-top2"
args=("$model" --scenario "$src/bench/scenarios/paper-cell.json" --policies topk,wdmoe
      --task gsm8k --data "$src/tests/data/eval/gsm8k_12.jsonl" --limit 1 --max-new-tokens 4
      --seeds 2 --jobs 2 --out "$tmp/lat" --wdmoe "$WDMOE")
if WD_NO_PLOT=1 python3 "$src/bench/repro_latency.py" "${args[@]}" >"$tmp/1.txt" 2>&1; then ok
else bad "repro_latency: $(tail -3 "$tmp/1.txt")"; fi
[ "$(ls "$tmp/lat/runs" | grep -c '_seed[12].json$')" = 4 ] && ok || bad "4 runs (2 policies x 2 seeds)"
py="import json; d=json.load(open('$tmp/lat/latency.json')); r=d['rows']
print(len(r), all(x['seeds'] == 2 and x['tpot_ms'] > 0 and x['ttft_ms'] > 0 and
      x['tpot_ms_ci'] is not None for x in r), r[0]['reduction_pct'])"
[ "$(python3 -c "$py")" = "2 True 0.0" ] && ok || bad "latency rows: $(python3 -c "$py" 2>&1)"
grep -q "TTFT ms (prefill) | TPOT ms (decode)" "$tmp/lat/latency.md" && grep -q " ± " "$tmp/lat/latency.md" \
    && ok || bad "table: TTFT and TPOT columns with mean ± half-width"
head -1 "$tmp/lat/latency.csv" | grep -q "tpot_ms,tpot_ms_ci95" && ok || bad "CSV: CI column"
cp "$tmp/lat/latency.json" "$tmp/first.json"
rm "$tmp/lat/runs/paper-cell_wdmoe_seed2.json" # as if stopped before that run
WD_NO_PLOT=1 python3 "$src/bench/repro_latency.py" "${args[@]}" >"$tmp/2.txt" 2>&1
grep -q "3 of 4 runs reused" "$tmp/2.txt" && ok || bad "rerun did not resume: $(tail -3 "$tmp/2.txt")"
cmp -s "$tmp/first.json" "$tmp/lat/latency.json" && ok || bad "resumed table differs"

echo "test_repro_stats: $pass passed, $fail failed"
[ "$fail" = 0 ]
