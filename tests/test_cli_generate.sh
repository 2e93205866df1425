#!/usr/bin/env bash
# wdmoe generate from the command line: greedy output of the shipped model equals the
# published greedy text; --help everywhere; bad models and options give one clear
# message naming the problem and a non-zero exit, never a crash.
set -u
bin="$WDMOE"
models="$WD_SOURCE_DIR/weights/models/stories260k"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_cli_generate_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }

# 1. greedy from BOS, 200 tokens: stdout is greedy-200.txt plus the final newline
"$bin" generate --model "$models/moe4-top2" -n 200 --threads 2 >"$tmp/out.txt" 2>"$tmp/err.txt" || bad "generate exited $?"
printf '\n' >"$tmp/nl"
cat "$models/greedy-200.txt" "$tmp/nl" >"$tmp/want.txt"
if cmp -s "$tmp/out.txt" "$tmp/want.txt"; then ok; else bad "greedy text differs from greedy-200.txt"; diff "$tmp/out.txt" "$tmp/want.txt" | head -5; fi
grep -q "prefill: .* tok/s) | decode: .* tok/s)" "$tmp/err.txt" && ok || bad "no throughput summary"

# 2. --ids prints BOS + 200 ids equal to greedy_tokens.json
"$bin" generate --model "$models/sliced4-top4" -n 200 --ids 2>/dev/null | sed -n 's/^ids: //p' | tr ' ' ',' >"$tmp/ids"
want=$(tr -d ' \n[]' <"$models/greedy_tokens.json")
[ "$(cat "$tmp/ids")" = "$want" ] && ok || bad "ids differ from greedy_tokens.json"

# 3. help
for cmd in "" "generate"; do
    # shellcheck disable=SC2086
    "$bin" $cmd --help | grep -q "usage: wdmoe" && ok || bad "--help for '$cmd'"
done

# 4. bad input: (arguments, expected text in the message)
mkdir -p "$tmp/trunc" "$tmp/nocfg"
cp "$models/moe4-top2/config.json" "$models/moe4-top2/tokenizer.json" "$tmp/trunc/"
head -c 5000 "$models/moe4-top2/model.safetensors" >"$tmp/trunc/model.safetensors"
cp "$models/moe4-top2/model.safetensors" "$tmp/nocfg/"
check_bad() { # expected-substring args...
    local want="$1"; shift
    local msg
    msg=$("$bin" "$@" 2>&1 >/dev/null); local rc=$?
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then bad "exit $rc for: $*"; return; fi
    case "$msg" in *"$want"*) ok ;; *) bad "message for '$*' lacks '$want': $msg" ;; esac
}
check_bad "no such model" generate --model "$tmp/missing"
check_bad "model.safetensors" generate --model "$tmp/trunc"
check_bad "config.json" generate --model "$tmp/nocfg"
check_bad "--model is required" generate
check_bad "bad value for -n" generate --model "$models/moe4-top2" -n -3
check_bad "bad value for --top-p" generate --model "$models/moe4-top2" --top-p 2
check_bad "unknown option" generate --model "$models/moe4-top2" --bogus
check_bad "needs a value" generate --model
check_bad "unknown command" frobnicate

# 5. a scenario asking for measured compute on the CPU backend: a note, the modeled times,
#    and the same latency as the modeled scenario (replay too)
sed 's/"name": "paper-cell"/"name": "paper-cell", "compute": "measured"/' \
    "$WD_SOURCE_DIR/bench/scenarios/paper-cell.json" >"$tmp/measured.json"
grep -q '"compute": "measured"' "$tmp/measured.json" || bad "could not write measured.json"
for sc in "$WD_SOURCE_DIR/bench/scenarios/paper-cell.json" "$tmp/measured.json"; do
    "$bin" generate --model "$models/moe4-top2" -n 12 --scenario "$sc" --no-compare \
        --record-probs "$tmp/p.wdpr" >/dev/null 2>"$tmp/err_m.txt"
    grep "latency mean" "$tmp/err_m.txt" >>"$tmp/lat.txt" # the report is on stderr
done
grep -q "asks for measured compute, which needs --backend cuda: using the modeled compute times" \
    "$tmp/err_m.txt" && ok || bad "no note for measured compute on the CPU: $(cat "$tmp/err_m.txt")"
[ "$(wc -l <"$tmp/lat.txt")" -eq 2 ] && [ "$(sort -u "$tmp/lat.txt" | wc -l)" -eq 1 ] && ok ||
    bad "measured on the CPU changed the latency: $(cat "$tmp/lat.txt")"
"$bin" replay --probs "$tmp/p.wdpr" --scenario "$tmp/measured.json" >/dev/null 2>"$tmp/err_r.txt" &&
    grep -q "using the modeled compute times" "$tmp/err_r.txt" && ok || bad "replay: no note: $(cat "$tmp/err_r.txt")"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
