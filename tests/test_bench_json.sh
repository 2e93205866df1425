#!/usr/bin/env bash
# bench_decode's repetitions and result JSON: every figure has median/min/max/spread over
# --reps samples (median between min and max, spread (max-min)/median), the configuration is
# echoed, --bw-passes 0 leaves the bandwidth figures null, bad options are rejected. No timing
# is checked against a threshold.
set -u
bin="$WD_BINARY_DIR/bench_decode"
[ -x "$bin" ] || { echo "SKIPPED: $bin not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: no python3"; exit 77; }
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_bench_json_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
model="$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2"

"$bin" --model "$model" --threads 2 --reps 3 --bw-passes 0 --prompt 8 --decode 4 \
    --json "$tmp/r.json" >"$tmp/out.txt" 2>&1 || { echo "FAILED: bench_decode: $(cat "$tmp/out.txt")"; fail=1; }
python3 - "$tmp/r.json" <<'PY' || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
bad = []
def need(c, what):
    if not c: bad.append(what)
need(d["command"] == "bench_decode" and d["version"].startswith("wdmoe"), "command/version")
need(d["threads"] == 2 and d["reps"] == 3 and d["prompt_tokens"] == 8 and d["decode_tokens"] == 4, "config echo")
need(d["read_bandwidth_bytes_per_s"] is None and d["roofline_tok_per_s"] is None, "--bw-passes 0 gives null")
need(set(d["machine"]) >= {"cpu", "cores_online", "llc_bytes", "date_utc"}, "machine")
need(d["active_bytes_per_token"] > 0 and d["weights_bytes"] > 0 and d["peak_rss_bytes"] > 0, "sizes")
for k in ("decode_tok_per_s", "decode_tok_per_cpu_s", "prefill_tok_per_s", "prefill_flop_per_s"):
    s = d[k]
    v = sorted(s["samples"])
    need(s["n"] == 3 and len(v) == 3, k + " n")
    need(s["min"] == v[0] and s["max"] == v[2] and s["median"] == v[1] and v[0] > 0, k + " stats")
    need(abs(s["spread"] - (v[2] - v[0]) / v[1]) <= 1e-9 * max(1, s["spread"]), k + " spread")
if bad:
    print("FAILED: bench_decode JSON:", ", ".join(bad))
    sys.exit(1)
PY
grep -q "decode, CPU time" "$tmp/out.txt" || { echo "FAILED: no CPU-time row"; fail=1; }
# "-": the JSON alone on stdout, the table on stderr
"$bin" --model "$model" --reps 1 --bw-passes 0 --prompt 4 --decode 2 --json - 2>/dev/null |
    python3 -c "import json,sys; json.load(sys.stdin)" || { echo "FAILED: --json - is not JSON alone"; fail=1; }
"$bin" --help | grep -q -- "--reps" || { echo "FAILED: --help"; fail=1; }
for bad in "--reps 0" "--reps x" "--bw-passes -1" "--threads 0" "--dtype q4" "--bogus"; do
    # shellcheck disable=SC2086
    msg=$("$bin" --model "$model" $bad 2>&1) && { echo "FAILED: accepted: $bad"; fail=1; }
    echo "$msg" | grep -q "bench_decode:" || { echo "FAILED: no message for: $bad"; fail=1; }
done
# an unwritable JSON path: one message, non-zero exit, nothing half-written
msg=$("$bin" --model "$model" --reps 1 --bw-passes 0 --prompt 4 --decode 2 --json "$tmp/no/such/dir/r.json" 2>&1) &&
    { echo "FAILED: wrote into a missing folder"; fail=1; }
echo "$msg" | grep -q "r.json" || { echo "FAILED: no message naming the file: $msg"; fail=1; }
# bench_policy: the end-to-end replay figures beside the goal, on the shipped scenario and on
# a recorded probability file; a bad --probs file is refused with its name
pol="$WD_BINARY_DIR/bench_policy"
scen="$WD_SOURCE_DIR/bench/scenarios/paper-cell.json"
for probs in "" "$WD_SOURCE_DIR/tests/data/replay/stories260k-moe4.wdpr"; do
    "$pol" --scenario "$scen" ${probs:+--probs "$probs"} --reps 2 --seconds 0.01 --json "$tmp/p.json" \
        >"$tmp/pout.txt" 2>&1 || { echo "FAILED: bench_policy: $(cat "$tmp/pout.txt")"; fail=1; }
    python3 - "$tmp/p.json" "$probs" <<'PY' || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
e = d["replay_end_to_end"]
ok = d["command"] == "bench_policy" and d["reps"] == 2 and len(e) == 2
ok &= [(r["policy"], r["goal_decisions_per_s"]) for r in e] == [("topk", 10e6), ("wdmoe", 5e6)]
ok &= (d["probs_file"] or "") == sys.argv[2]
for r in e:
    s, v = r["decisions_per_s"], sorted(r["decisions_per_s"]["samples"])
    ok &= r["decisions_per_cpu_s"]["n"] == 2 and r["decisions_per_cpu_s"]["min"] > 0
    ok &= r["scenario"] == "paper-cell" and s["n"] == 2 and v[0] > 0 and s["min"] == v[0] and s["max"] == v[1]
    ok &= r["layers"] == (5 if sys.argv[2] else 32) and r["tokens"] == (52 if sys.argv[2] else 512)
if not ok:
    print("FAILED: bench_policy JSON", sys.argv[2])
    sys.exit(1)
PY
done
grep -q "of goal" "$tmp/pout.txt" || { echo "FAILED: bench_policy prints no goal column"; fail=1; }
head -c 100 "$WD_SOURCE_DIR/tests/data/replay/stories260k-moe4.wdpr" >"$tmp/short.wdpr"
msg=$("$pol" --scenario "$scen" --probs "$tmp/short.wdpr" --reps 1 --seconds 0.01 2>&1) &&
    { echo "FAILED: bench_policy accepted a truncated --probs file"; fail=1; }
echo "$msg" | grep -q "bench_policy: .*short.wdpr" || { echo "FAILED: no message naming the file: $msg"; fail=1; }
[ "$fail" = 0 ] && echo "test_bench_json: passed"
exit "$fail"
