#!/usr/bin/env bash
# wdmoe eval from the command line on the shipped stories260k model and the
# copied data subsets: every task runs and writes a valid result JSON; two runs
# with the same seed give identical results (timing aside); shared prefix and
# from scratch give the same accuracy; Ctrl-C (SIGINT) stops cleanly with the
# items done written; bad input gives one clear message and a non-zero exit.
set -u
bin="$WDMOE"
model="$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2"
data="$WD_SOURCE_DIR/tests/data/eval"
if ! "$bin" eval --help >/dev/null 2>&1; then
    echo "SKIPPED: this wdmoe has no eval command"
    exit 77
fi
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_cli_eval_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
# json FILE EXPR: evaluate a Python expression on the parsed document d
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(($2))" "$1"; }

# 1. every task, result JSON with its metrics
run() { # name task data extra...
    local name="$1" task="$2" d="$3"; shift 3
    if "$bin" eval --model "$model" --task "$task" --data "$d" --threads 2 --quiet \
        --out "$tmp/$name.json" --records "$tmp/$name.jsonl" "$@" >"$tmp/$name.txt" 2>&1; then
        ok
    else
        bad "eval $task exited $?: $(tail -2 "$tmp/$name.txt")"
    fi
}
run hs hellaswag "$data/hellaswag_20.txt" --limit 6
run arc arc_easy "$data/arc_easy_10.jsonl" --limit 4
run arcc arc-challenge "$data/arc_challenge_10.jsonl" --limit 3
run piqa piqa "$data/piqa_10.jsonl" --limit 4
run wino winogrande "$data/winogrande_10.jsonl" --limit 4
run mmlu0 mmlu "$data/mmlu" --shots 0 --limit 3
run mmlu5 mmlu "$data/mmlu/test/high_school_geography_test.csv" --shots 5 --limit 2
run gsm gsm8k "$data/gsm8k_12.jsonl" --shots 0 --limit 2 --max-new-tokens 24
run ppl perplexity "$WD_SOURCE_DIR/weights/models/stories260k/greedy-200.txt" --window 64
if command -v python3 >/dev/null; then
    [ "$(json "$tmp/hs.json" "d['items'], d['task'], d['metrics']['acc'] is not None")" = "(6, 'hellaswag', True)" ] && ok || bad "hellaswag JSON"
    [ "$(json "$tmp/mmlu0.json" "d['items'], d['shots'], list(d['groups'])")" = "(3, 0, ['high_school_geography'])" ] && ok || bad "mmlu JSON"
    [ "$(json "$tmp/mmlu5.json" "d['shots'], d['truncated'] > 0")" = "(5, True)" ] && ok || bad "mmlu 5-shot is cut to the 512-token context"
    [ "$(json "$tmp/gsm.json" "'exact_match' in d['metrics'], d['throughput']['tokens_generated'] > 0")" = "(True, True)" ] && ok || bad "gsm8k JSON"
    [ "$(json "$tmp/ppl.json" "1 < d['metrics']['ppl'] < 20, d['metrics']['tokens']")" = "(True, 200)" ] && ok || bad "perplexity of the model's own greedy text: $(json "$tmp/ppl.json" "d['metrics']")"
    [ "$(json "$tmp/hs.json" "d['agreement'], d['latency'], d['interrupted']")" = "(None, None, False)" ] && ok || bad "plain top-k has no agreement/latency"
fi
[ "$(wc -l <"$tmp/hs.jsonl")" -eq 6 ] && ok || bad "records: one line per item"
grep -q "acc_norm" "$tmp/hs.txt" && ok || bad "table on stdout"

# 2. same seed, same results (timing removed); shuffle picks other items
strip() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [d.pop(k) for k in ('throughput', 'date', 'command_line')]; print(json.dumps(d, sort_keys=True))" "$1"; }
for i in 1 2; do
    "$bin" eval --model "$model" --task hellaswag --data "$data/hellaswag_20.txt" --limit 5 \
        --shuffle --seed 7 --quiet --out "$tmp/seed$i.json" --records "$tmp/seed$i.jsonl" >/dev/null 2>&1 || bad "seeded run $i"
done
[ "$(strip "$tmp/seed1.json")" = "$(strip "$tmp/seed2.json")" ] && ok || bad "two runs with the same seed differ"
cmp -s "$tmp/seed1.jsonl" "$tmp/seed2.jsonl" && ok || bad "records differ between identical runs"
"$bin" eval --model "$model" --task hellaswag --data "$data/hellaswag_20.txt" --limit 5 \
    --shuffle --seed 8 --quiet --records "$tmp/seed3.jsonl" >/dev/null 2>&1
cmp -s "$tmp/seed1.jsonl" "$tmp/seed3.jsonl" && bad "another seed picked the same items" || ok

# lm-evaluation-harness's layout beside wdmoe's own keys; provenance keys
[ "$(json "$tmp/seed1.json" "d['results']['hellaswag']['acc,none'] == d['metrics']['acc'], d['results']['hellaswag']['acc_norm_stderr,none'] == d['metrics']['acc_norm_stderr'], d['n-samples']['hellaswag']['effective'], d['config']['model'], d['seeds']['seed'], d['model']['experts']")" = "(True, True, 5, 'wdmoe', 7, 4)" ] && ok || bad "lm-eval layout or provenance: $(json "$tmp/seed1.json" "d.get('results'), d.get('config')")"
# --json - prints the result document alone; no file named "-"
(cd "$tmp" && "$bin" eval --model "$model" --task hellaswag --data "$data/hellaswag_20.txt" --limit 2 \
    --quiet --json - 2>/dev/null) | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['items'] == 2" &&
    [ ! -e "$tmp/-" ] && ok || bad "eval --json -"

# 3. from scratch: same metrics, more tokens forwarded
"$bin" eval --model "$model" --task hellaswag --data "$data/hellaswag_20.txt" --limit 6 \
    --no-shared-prefix --quiet --out "$tmp/hs_scratch.json" >/dev/null 2>&1 || bad "no-shared-prefix run"
[ "$(json "$tmp/hs.json" "d['metrics']")" = "$(json "$tmp/hs_scratch.json" "d['metrics']")" ] && ok || bad "shared prefix changed the metrics"
[ "$(json "$tmp/hs.json" "d['throughput']['tokens_forwarded']")" -lt "$(json "$tmp/hs_scratch.json" "d['throughput']['tokens_forwarded']")" ] && ok || bad "shared prefix forwards fewer tokens"

# 4. emulation: every forward through the scenario's policy; agreement with top-k
scen="$WD_SOURCE_DIR/bench/scenarios/paper-cell.json"
sliced="$WD_SOURCE_DIR/weights/models/stories260k/sliced4-top4"
if [ -f "$scen" ]; then
    for i in 1 2; do
        "$bin" eval --model "$sliced" --task arc_easy --data "$data/arc_easy_10.jsonl" --limit 3 \
            --scenario "$scen" --policy dynamic --seed 3 --quiet --out "$tmp/emu$i.json" >/dev/null 2>&1 || bad "scenario run $i"
    done
    [ "$(json "$tmp/emu1.json" "d['policy'], d['latency']['prefill']['mean_s'] > 0, d['latency']['prefill']['experts_per_token'] < 4, d['latency']['decode']['samples'] == 0")" = "('dynamic', True, True, True)" ] && ok || bad "emulated latency in the result: multiple-choice scoring is prefill only"
    [ "$(json "$tmp/emu1.json" "d['agreement']['positions'] > 0, d['agreement']['kl_mean'] > 0")" = "(True, True)" ] && ok || bad "sliced experts, fewer of them: KL > 0"
    [ "$(strip "$tmp/emu1.json")" = "$(strip "$tmp/emu2.json")" ] && ok || bad "scenario runs with the same seed differ"
    # moe4-top2: identical experts, any selection gives the top-k distribution
    "$bin" eval --model "$model" --task arc_easy --data "$data/arc_easy_10.jsonl" --limit 3 \
        --scenario "$scen" --policy dynamic --quiet --out "$tmp/emu3.json" >/dev/null 2>&1 || bad "moe4 scenario run"
    [ "$(json "$tmp/emu3.json" "d['agreement']['token_agreement'], d['agreement']['kl_max'] < 1e-6")" = "(1.0, True)" ] && ok || bad "identical experts: agreement 1"
    # the policy without a scenario: the default cell
    "$bin" eval --model "$model" --task arc_easy --data "$data/arc_easy_10.jsonl" --limit 2 \
        --policy wdmoe --quiet --out "$tmp/emu4.json" >/dev/null 2>&1 || bad "--policy without --scenario"
    [ "$(json "$tmp/emu4.json" "d['scenario'], d['policy'], d['latency'] is not None")" = "(None, 'wdmoe', True)" ] && ok || bad "default cell"
else
    echo "SKIPPED (no $scen): emulation checks"
fi
check_policy=$("$bin" eval --model "$model" --task arc_easy --data "$data/arc_easy_10.jsonl" --policy nosuch 2>&1 >/dev/null)
case "$check_policy" in *nosuch*) ok ;; *) bad "unknown policy message: $check_policy" ;; esac

# 5. SIGINT: stops after the current item, writes what is complete, exit 130
big="$WD_SHARED_DATA/datasets/hellaswag_val_full.txt"
# without ../shared (CI): 20000 items (3.6 MB), far more than the 5 s before the signal
# however fast scoring gets (1000 items no longer were: exit 0)
[ -f "$big" ] || { for i in $(seq 1000); do cat "$data/hellaswag_20.txt"; done >"$tmp/hs_big.txt"; big="$tmp/hs_big.txt"; }
"$bin" eval --model "$model" --task hellaswag --data "$big" --threads 1 --quiet \
    --out "$tmp/int.json" --records "$tmp/int.jsonl" >/dev/null 2>"$tmp/int.err" &
pid=$!
for i in $(seq 50); do sleep 0.1; done
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] && ok || bad "SIGINT exit status $rc (want 130)"
if [ -f "$tmp/int.json" ]; then
    n=$(json "$tmp/int.json" "d['items']")
    [ "$(json "$tmp/int.json" "d['interrupted'] and 0 < d['items'] < d['items_total']")" = "True" ] && ok || bad "interrupted result"
    [ "$(wc -l <"$tmp/int.jsonl")" -eq "$n" ] && ok || bad "records of the completed items"
else
    bad "no result after SIGINT"
fi
ls "$tmp" | grep -q "\.tmp\." && bad "temporary files left" || ok

# 6. bad input
check_bad() { # expected-substring args...
    local want="$1"; shift
    local msg
    msg=$("$bin" "$@" 2>&1 >/dev/null); local rc=$?
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then bad "exit $rc for: $*"; return; fi
    case "$msg" in *"$want"*) ok ;; *) bad "message for '$*' lacks '$want': $msg" ;; esac
}
printf 'ctx\n9\na\nb\nc\nd\n' >"$tmp/bad_hs.txt"
check_bad "are required" eval --model "$model"
check_bad "unknown task" eval --model "$model" --task squad --data "$tmp/bad_hs.txt"
check_bad "bad_hs.txt: line 2" eval --model "$model" --task hellaswag --data "$tmp/bad_hs.txt"
check_bad "no such model" eval --model "$tmp/missing" --task hellaswag --data "$data/hellaswag_20.txt"
check_bad "missing.jsonl" eval --model "$model" --task piqa --data "$tmp/missing.jsonl"
check_bad "bad value for --limit" eval --model "$model" --task piqa --data "$data/piqa_10.jsonl" --limit -1
check_bad "unknown option" eval --model "$model" --task piqa --data "$data/piqa_10.jsonl" --bogus
"$bin" eval --help | grep -q "usage: wdmoe eval" && ok || bad "--help"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
