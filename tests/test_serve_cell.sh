#!/usr/bin/env bash
# wdmoe serve-cell from the command line: --help; a small Poisson run writes a
# result JSON with per-user, per-device and timeline sections, byte-identical
# across runs and thread counts; a workload block in the scenario is read;
# a trace file runs; bad traces, prompts and options give one clear message.
set -u
bin="$WDMOE"
model="$WD_SOURCE_DIR/weights/models/stories260k/sliced4-top4"
scen="$WD_SOURCE_DIR/bench/scenarios/paper-cell.json"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_serve_cell_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }

"$bin" serve-cell --help | grep -q "usage: wdmoe serve-cell" && ok || bad "--help"
"$bin" --help | grep -q "serve-cell" && ok || bad "serve-cell in the command list"

printf 'Once upon a time\nThe little dog\nLily and Ben\n' >"$tmp/prompts.txt"
run() { "$bin" serve-cell --model "$model" --scenario "$scen" --users 6 --rate 400 --max-new 8 \
    --prompts "$tmp/prompts.txt" --policy energy "$@"; }
run --threads 1 --json "$tmp/a.json" >"$tmp/a.txt" 2>"$tmp/a.err" || bad "run exited $?"
run --threads 2 --json "$tmp/b.json" >/dev/null 2>&1 || bad "second run"
# the same apart from what describes the run (date, command line)
stable() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [d.pop(k) for k in ('date', 'command_line')]; print(json.dumps(d, sort_keys=True))" "$1"; }
[ "$(stable "$tmp/a.json")" = "$(stable "$tmp/b.json")" ] && ok || bad "result JSON differs across runs/threads"
for key in '"users"' '"devices"' '"timeline"' '"goodput_tok_s"' '"jain_fairness"' \
    '"energy_per_output_token_j"' '"energy_per_token_j"' '"ttft"' '"tpot"'; do
    grep -q "$key" "$tmp/a.json" && ok || bad "no $key in the JSON"
done
grep -q "TPOT per user (ms)" "$tmp/a.txt" && ok || bad "no TPOT row"
grep -q "emulator speed" "$tmp/a.err" && ok || bad "no emulator speed line"

# the workload block of a scenario
sed 's/"bandwidth_allocation": "equal"/"bandwidth_allocation": "equal", "workload": {"users": 3, "rate_per_s": 100, "max_new_tokens": 4, "prefill_chunk": 8}/' \
    "$scen" >"$tmp/wl.json"
"$bin" serve-cell --model "$model" --scenario "$tmp/wl.json" --json "$tmp/wl-out.json" >/dev/null 2>&1 || bad "workload block run"
grep -q '"requests":3' <(tr -d ' \n' <"$tmp/wl-out.json") && ok || bad "workload block users not used"

# a trace
printf 'arrival_s,max_new_tokens,prompt\n0,4,Once upon a time\n0.001,3,The cat, the dog\n' >"$tmp/trace.csv"
"$bin" serve-cell --model "$model" --scenario "$scen" --trace "$tmp/trace.csv" --users-table >"$tmp/t.txt" 2>&1 || bad "trace run"
grep -q "2 requests" "$tmp/t.txt" && ok || bad "trace: 2 requests"

# one request arriving at 0 is `wdmoe generate`: the same tokens and the same latency,
# energy and device reports, bit for bit
"$bin" generate --model "$model" --prompt "Once upon a time" -n 12 --scenario "$scen" \
    --policy wdmoe --json "$tmp/gen.json" >/dev/null 2>&1 || bad "generate run"
printf 'arrival_s,max_new_tokens,prompt\n0,12,Once upon a time\n' >"$tmp/one.csv"
"$bin" serve-cell --model "$model" --scenario "$scen" --policy wdmoe --trace "$tmp/one.csv" \
    --json "$tmp/one.json" >/dev/null 2>&1 || bad "one-request serve-cell run"
python3 - "$tmp/gen.json" "$tmp/one.json" <<'PY' && ok || bad "one request differs from generate"
import json, sys
g, s = (json.load(open(p)) for p in sys.argv[1:3])
u = s["users"][0]
assert g["latency"] == s["latency"], "latency"
assert g["devices"] == s["devices"], "devices"
assert g["tokens"][g["prompt_tokens"]:] == u["tokens"], "tokens"
assert u["ttft_s"] == g["latency"]["prefill"]["mean_s"], "ttft"
PY

check_bad() { # expected-substring args...
    local want="$1"; shift
    local msg
    msg=$("$bin" serve-cell "$@" 2>&1 >/dev/null); local rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$want" <<<"$msg"; then ok; else bad "'$*' -> rc $rc: $msg"; fi
}
printf 'time,n,prompt\n' >"$tmp/badhdr.csv"
printf 'arrival_s,max_new_tokens,prompt\n0.5,4,a\n0.1,4,b\n' >"$tmp/order.csv"
printf 'arrival_s,max_new_tokens,prompt\nx,4,a\n' >"$tmp/num.csv"
: >"$tmp/empty.txt"
check_bad "expected the header" --model "$model" --scenario "$scen" --trace "$tmp/badhdr.csv"
check_bad "must not decrease" --model "$model" --scenario "$scen" --trace "$tmp/order.csv"
check_bad "line 2: arrival_s" --model "$model" --scenario "$scen" --trace "$tmp/num.csv"
check_bad "no prompts" --model "$model" --scenario "$scen" --prompts "$tmp/empty.txt"
check_bad "cannot open" --model "$model" --scenario "$scen" --trace "$tmp/missing.csv"
check_bad "KV budget" --model "$model" --scenario "$scen" --kv-budget-mb 0.00001
check_bad "bad value for --rate" --model "$model" --scenario "$scen" --rate -1
check_bad "are required" --model "$model"
sed 's/"bandwidth_allocation": "equal"/"bandwidth_allocation": "equal", "workload": {"userz": 3}/' "$scen" >"$tmp/wlbad.json"
check_bad "workload" --model "$model" --scenario "$tmp/wlbad.json"
[ ! -e "$tmp/none.json" ] && ok || bad "a failed run left a JSON"

check_bad "bad value for --micro-batches" --model "$model" --scenario "$scen" --micro-batches 0
sed 's/"bandwidth_allocation": "equal"/"bandwidth_allocation": "equal", "workload": {"micro_batches": 0}/' "$scen" >"$tmp/wlmb.json"
check_bad "micro_batches" --model "$model" --scenario "$tmp/wlmb.json"

# pipelined micro-batches: one is the synchronous step, the results of the golden
# made before pipelining existed (tests/data/serve/m1-golden.json: every number in
# it but the noise-level KL, integers and tokens exactly, reals to 1e-12 relative;
# new keys allowed);
# several: deterministic across runs and thread counts,
# the device queue in the JSON
gold() { "$bin" serve-cell --model "$model" --scenario "$scen" --users 6 --rate 400 --max-new 8 \
    --chunk 4 --prompts "$tmp/prompts.txt" --policy wdmoe "$@"; }
gold --threads 1 --json "$tmp/g1.json" >/dev/null 2>&1 || bad "golden run"
gold --threads 2 --micro-batches 1 --json "$tmp/g1b.json" >/dev/null 2>&1 || bad "golden run, -M 1"
python3 - "$WD_SOURCE_DIR/tests/data/serve/m1-golden.json" "$tmp/g1.json" "$tmp/g1b.json" <<'PY' && ok || bad "one micro-batch differs from the golden"
import json, sys
def sub(g, r, at):
    if isinstance(g, dict):
        assert isinstance(r, dict), at
        for k in g:
            assert k in r, f"{at}.{k} missing"
            if k != "mean_kl":  # KL of near-identical outputs (~1e-7): float noise that
                sub(g[k], r[k], f"{at}.{k}")  # differs between compilers
    elif isinstance(g, list):
        assert isinstance(r, list) and len(g) == len(r), at
        for i, (a, b) in enumerate(zip(g, r)):
            sub(a, b, f"{at}[{i}]")
    elif isinstance(g, float):  # bit for bit with the gcc build that made it; clang
        # (the sanitizer build) may round a sum differently in the last bit
        assert isinstance(r, (int, float)) and abs(g - r) <= 1e-12 * max(abs(g), 1e-300), \
            f"{at}: {g!r} != {r!r}"
    else:
        assert g == r, f"{at}: {g!r} != {r!r}"
g = json.load(open(sys.argv[1]))
for p in sys.argv[2:]:
    sub(g, json.load(open(p)), p)
PY
gold --threads 1 --micro-batches 2 --json "$tmp/p1.json" >"$tmp/p1.txt" 2>&1 || bad "2 micro-batches"
gold --threads 2 --micro-batches 2 --json "$tmp/p2.json" >/dev/null 2>&1 || bad "2 micro-batches, 2 threads"
[ "$(stable "$tmp/p1.json")" = "$(stable "$tmp/p2.json")" ] && ok || bad "2 micro-batches: JSON differs across runs/threads"
grep -q "2 pipelined micro-batches per step" "$tmp/p1.txt" && ok || bad "no micro-batch line"
python3 - "$tmp/p1.json" "$tmp/g1.json" <<'PY' && ok || bad "2 micro-batches: JSON content"
import json, sys
p, g = (json.load(open(x)) for x in sys.argv[1:3])
assert p["config"]["micro_batches"] == 2
assert all("jobs" in d and "mean_queue_ahead" in d for d in p["devices"] if d["calls"])
assert not any("jobs" in d for d in g["devices"])
t = p["timeline"]
assert len(t["device_queue_wait_s"]) == len(t["t_s"]) and len(t["device_queue_wait_s"][0]) == 8
assert sum(map(sum, t["device_queued_jobs"])) == sum(d.get("queued_jobs", 0) for d in p["devices"]) > 0
assert sum(map(sum, t["device_queue_ahead"])) >= sum(map(sum, t["device_queued_jobs"]))
for d, dev in enumerate(p["devices"]):
    if dev.get("jobs"):
        ahead = sum(row[d] for row in t["device_queue_ahead"])
        assert abs(ahead / dev["jobs"] - dev["mean_queue_ahead"]) < 1e-12, "queue ahead"
        q = sum(row[d] for row in t["device_queue_wait_s"])
        assert abs(q - dev["queue_wait_s"]) < 1e-9, "queue wait over time"
assert [len(u["tokens"]) for u in p["users"]] == [len(u["tokens"]) for u in g["users"]]
# no barrier between steps: a user's token is out when its micro-batch's LM head is
# done, not when the step's last one is (the step ends, the next step's start)
ends = set(t["t_s"][1:]) | {max(u["finish_s"] for u in p["users"])}
assert any(u["first_token_s"] not in ends or u["finish_s"] not in ends for u in p["users"])
for u in p["users"]:
    assert u["arrival_s"] <= u["admit_s"] < u["first_token_s"] <= u["finish_s"], u
PY

echo "test_serve_cell: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
