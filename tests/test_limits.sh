#!/usr/bin/env bash
# Limits, from the command line: a sequence longer than the context, more
# experts placed on a device than its memory holds, memory exhausted when the
# session is created (the message gives the size needed), SIGINT/SIGTERM during
# a run (complete results kept, no partial file), a scenario fault in the
# printed report and the result JSON.
set -u
bin="$WDMOE"
synth="$WD_BINARY_DIR/synth_model"
models="$WD_SOURCE_DIR/weights/models/stories260k"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_limits_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
[ -x "$synth" ] || { echo "SKIPPED: $synth not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 is needed to check JSON"; exit 77; }
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:allocator_may_return_null=1" # a failed calloc is the test
# expect_fail WANT RC args...: exit code RC (1 or 2), stderr one line containing WANT
expect_fail() {
    local want="$1" want_rc="$2"; shift 2
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    [ $rc -eq "$want_rc" ] || { bad "exit $rc (want $want_rc) for: $*"; cat "$tmp/err"; return; }
    grep -qF -- "$want" "$tmp/err" && ok || { bad "no '$want' in: $(cat "$tmp/err")"; return; }
    # (lines of the sanitizer runtime, "==PID==WARNING: ...", are not the program's)
    [ "$(grep -v '^==[0-9]*==WARNING' "$tmp/err" | grep -c .)" -eq 1 ] && ok ||
        bad "more than one line for: $*: $(cat "$tmp/err")"
}
sc_const() { # name extra-device-keys faults
    cat >"$tmp/$1.json" <<JSON
{"name": "$1", "device_count": 4, "device_defaults": {"profile": "phone",
 "downlink": {"model": "constant", "rate_mbps": 100, "latency_s": 0.001},
 "uplink": {"model": "constant", "rate_mbps": 50, "latency_s": 0.001}}, $2 "faults": [$3]}
JSON
}

# 1. context: -n capped to the context (with a note), a prompt longer than it refused
"$bin" generate --model "$models/moe4-top2" --ctx 16 -n 100 --ids >"$tmp/out" 2>"$tmp/err" || bad "capped run exited $?"
grep -q "generating 15 tokens to stay within the context of 16" "$tmp/err" && ok || bad "no cap note: $(cat "$tmp/err")"
[ "$(sed -n 's/^ids: //p' "$tmp/out" | wc -w)" -eq 16 ] && ok || bad "not 16 ids: $(cat "$tmp/out")"
"$bin" generate --model "$models/moe4-top2" --ctx 100000 -n 1000 >/dev/null 2>"$tmp/err" || bad "--ctx above the model's exited $?"
grep -q "within the context of 512" "$tmp/err" && ok || bad "--ctx not capped to max_position_embeddings"
expect_fail "exceeds the context (4)" 1 generate --model "$models/moe4-top2" --ctx 4 \
    --prompt "Once upon a time there was a little girl named Lily"

# 2. placement beyond a device's memory (stories260k: one expert x 5 layers = 0.66 MB)
sc_const small '"devices": [{"profile": {"preset": "phone", "mem_gb": 0.0005}}],' ""
expect_fail "devices[0] (device-0): 1 experts x 5 layers need 0.00066 GB, more than its memory (0.0005 GB)" 1 \
    generate --model "$models/moe4-top2" --scenario "$tmp/small.json" -n 2
cat >"$tmp/crowded.json" <<JSON
{"name": "crowded", "devices": [{"experts": [0, 1, 2, 3], "profile": {"preset": "phone", "mem_gb": 0.002},
  "downlink": {"model": "constant", "rate_mbps": 100}, "uplink": {"model": "constant", "rate_mbps": 50}}]}
JSON
expect_fail "4 experts x 5 layers need 0.00264 GB, more than its memory (0.002 GB)" 1 \
    generate --model "$models/moe4-top2" --scenario "$tmp/crowded.json" -n 2

# 3. memory exhausted on load: a model whose context needs a 281 TB KV cache
"$synth" --out "$tmp/huge" --hidden 16 --layers 2 --heads 2 --kv-heads 2 --head-dim 8192 --ffn 8 \
    --experts 2 --top-k 1 --vocab 260 --max-pos 1073741824 >/dev/null || bad "synth_model (huge)"
expect_fail "out of memory: a context of 1073741824 tokens needs 281.5 TB for the KV cache of $tmp/huge (lower --ctx)" 1 \
    generate --model "$tmp/huge" -n 2
"$bin" generate --model "$tmp/huge" -n 2 --ctx 64 >/dev/null 2>&1 && ok || bad "huge model with --ctx 64 failed"
expect_fail "out of memory: a context of 1073741824 tokens needs 281.5 TB for the KV cache of $tmp/huge (lower --ctx)" 1 \
    eval --model "$tmp/huge" --task perplexity --data "$models/greedy-200.txt" --quiet

# 4. a fault in the report: device 0 unreachable all along
sc_const down '' '{"device": 0, "kind": "down"}'
"$bin" generate --model "$models/moe4-top2" --scenario "$tmp/down.json" -n 20 --json "$tmp/down-result.json" \
    >/dev/null 2>"$tmp/err" || bad "faulty run exited $?"
grep -qE "tokens rerouted +[1-9]" "$tmp/err" && ok || bad "no rerouted count in the table: $(cat "$tmp/err")"
python3 - "$tmp/down-result.json" <<'PY' && ok || bad "result JSON lacks the fault counts"
import json, sys
lat = json.load(open(sys.argv[1]))["latency"]
assert lat["tokens_rerouted"] > 0 and lat["tokens_dropped"] == 0, lat
assert all(k in lat for k in ("tokens_fallback", "tokens_slowed", "tokens_link_fault", "steps_rerouted"))
PY

# 5. signals: a long run on a synthetic model, stopped after its first tokens
"$synth" --out "$tmp/long" --hidden 256 --layers 4 --heads 4 --kv-heads 2 --ffn 512 --experts 4 \
    --top-k 2 --vocab 512 --max-pos 65536 --seed 5 >/dev/null || bad "synth_model (long)"
sc_const sig '"policy": "wdmoe",' ""
check_results() { # label rc-wanted: complete JSON (interrupted) or absent, valid records/probs, no tmp
    local label="$1"
    ls "$tmp"/run/*.tmp.* >/dev/null 2>&1 && bad "$label: temporary files left: $(ls "$tmp"/run)" || ok
    python3 - "$tmp/run" <<'PY' && ok || bad "$label: a result file is partial"
import json, os, struct, sys
d = sys.argv[1]
r = os.path.join(d, "result.json")
if os.path.exists(r):
    j = json.load(open(r))
    assert j["interrupted"] is True, "interrupted is not true"
    assert len(j["tokens"]) >= 2 and j["latency"]["tokens"] >= 1, j["latency"]
rec = os.path.join(d, "steps.jsonl")
if os.path.exists(rec):
    lines = open(rec).read().splitlines()
    assert lines and all(json.loads(l)["layer"] >= 0 for l in lines)
p = os.path.join(d, "probs.wdpr")
if os.path.exists(p):
    b = open(p, "rb").read()
    w = struct.unpack("<4s11I", b[:48])
    flags = w[11] if w[1] == 2 else 0  # version 2: one phase byte per token after the probs
    assert w[0] == b"WDPR" and len(b) == 48 + 4 * w[11] * w[2] * w[3] + flags, "probs size"
PY
}
run_signal() { # label kill-args...
    local label="$1"; shift
    rm -rf "$tmp/run"; mkdir -p "$tmp/run"
    "$bin" generate --model "$tmp/long" --scenario "$tmp/sig.json" -n 20000 --threads 2 \
        --json "$tmp/run/result.json" --records "$tmp/run/steps.jsonl" \
        --record-probs "$tmp/run/probs.wdpr" >"$tmp/run/stdout" 2>"$tmp/run/stderr" &
    local pid=$! i
    for i in $(seq 600); do [ -s "$tmp/run/stdout" ] && break; sleep 0.05; done
    sleep 0.3
    "$@" $pid
    wait $pid; local rc=$?
    echo "$label: exit $rc"
    [ "$rc" -eq 130 ] && ok || bad "$label: exit $rc, want 130: $(tail -3 "$tmp/run/stderr")"
    check_results "$label"
}
run_signal "SIGINT" kill -INT
[ -f "$tmp/run/result.json" ] && ok || bad "SIGINT: no result JSON"
grep -q "interrupted, finishing" "$tmp/run/stderr" && ok || bad "SIGINT: no note on stderr"
"$bin" replay --probs "$tmp/run/probs.wdpr" --scenario "$tmp/sig.json" >/dev/null 2>&1 && ok || bad "replay of the interrupted run's probabilities"
run_signal "SIGTERM" kill -TERM
[ -f "$tmp/run/result.json" ] && ok || bad "SIGTERM: no result JSON"
# a single SIGTERM (`timeout`) also arms a grace timer that ends a run stuck where the flag is not polled
grep -q "terminated, finishing.*quits in 10 s" "$tmp/run/stderr" && ok || bad "SIGTERM: no grace note on stderr"
twice() { kill -INT "$1"; sleep 0.001; kill -INT "$1"; }
run_signal "SIGINT twice" twice

# eval: SIGTERM stops after the current item; the results of the items done are written
# (12 items of up to 4000 tokens: far more than the 1.5 s before the signal, however fast decode gets)
rm -rf "$tmp/run"; mkdir -p "$tmp/run"
"$bin" eval --model "$tmp/long" --task gsm8k --data "$WD_SOURCE_DIR/tests/data/eval/gsm8k_12.jsonl" \
    --shots 0 --max-new-tokens 4000 --threads 2 --quiet --out "$tmp/run/eval.json" \
    --records "$tmp/run/eval.jsonl" >/dev/null 2>"$tmp/run/stderr" &
pid=$!
sleep 1.5
kill -TERM $pid
wait $pid; rc=$?
[ $rc -eq 130 ] && ok || bad "eval SIGTERM: exit $rc, want 130: $(tail -3 "$tmp/run/stderr")"
ls "$tmp"/run/*.tmp.* >/dev/null 2>&1 && bad "eval SIGTERM: temporary files left" || ok
python3 - "$tmp/run" <<'PY' && ok || bad "eval SIGTERM: partial or missing results"
import json, os, sys
d = sys.argv[1]
j = json.load(open(os.path.join(d, "eval.json")))
assert j["interrupted"] is True and j["items"] < 12, (j["interrupted"], j["items"])
lines = open(os.path.join(d, "eval.jsonl")).read().splitlines()
assert len(lines) == j["items"] and all("output" in json.loads(l) for l in lines)
PY

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
