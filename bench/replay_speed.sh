#!/usr/bin/env bash
# Replay speed and the emulation's own cost (docs/performance.md, "Replay speed and the
# emulation's cost"): bench_policy's end-to-end replays (wd_probs_replay, as `wdmoe replay`
# runs them) on paper-cell, paper-cell-block (block fading), att-lte-driving and
# tmobile-lte-short beside the goal of issue 14 (10 M decisions/s topk, 5 M wdmoe), then
# bench_decode's share of a decode step spent in the BS scheduler (policy + radio emulation)
# on paper-cell and paper-cell-block for the real models that are here.
# Prints Markdown; --update-docs puts it into docs/performance.md between its markers.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=5
SECONDS_PER=0.5
DEC_REPS=5
UPDATE_DOCS=0
SMOL=weights/models/smollm2-135m/moe8/model.gguf
usage() {
    cat <<EOF
usage: bash bench/replay_speed.sh [--reps N] [--seconds S] [--decode-reps N] [--smollm2 FILE]
                                  [--update-docs]

Replay speed: build/bench_policy --reps N (default $REPS) --seconds S (default $SECONDS_PER)
on bench/scenarios/{paper-cell,paper-cell-block,att-lte-driving,tmobile-lte-short}.json:
the end-to-end
replay (every forward pass and the summary, on a fresh emulator whose creation, reading
trace files, is not timed) of one 512-token decode of the Mixtral-8x7B shape, topk and
wdmoe, median [min-max] and spread of the rounds, against
the goal (10 M decisions/s topk, 5 M wdmoe), the same on paper-cell and paper-cell-block
for the router probabilities recorded from SmolLM2-135M-moe8 in tests/data/replay (top-6
of 8), with the decode loop on them without and with 4 MB read between layer steps
(--evict 4); and the batch-1 select+step loop.
Emulation cost: build/bench_decode --threads 1 --reps N (--decode-reps, default $DEC_REPS)
--scenario bench/scenarios/paper-cell{,-block}.json on stories260k (moe4-top2) and SmolLM2-135M
MoEfied into 8 experts (--smollm2 FILE, default $SMOL; made by
\`wdmoe moefy --experts 8\`, skipped when absent): the time in the BS scheduler as a share
of the rest of the decode step. Prints Markdown (the load average before and after: the
machine may be shared); --update-docs writes it into docs/performance.md between
<!-- replay_speed:begin --> and <!-- replay_speed:end -->. Needs ./build.
EOF
}
while [ $# -gt 0 ]; do
    case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --decode-reps) DEC_REPS=$2; shift 2 ;;
    --smollm2) SMOL=$2; shift 2 ;;
    --update-docs) UPDATE_DOCS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "replay_speed.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$REPS" "$DEC_REPS"; do
    case "$v" in ''|*[!0-9]*|0) echo "replay_speed.sh: --reps and --decode-reps want positive integers" >&2; exit 2 ;; esac
done
for b in build/bench_policy build/bench_decode; do
    [ -x "$b" ] || { echo "replay_speed.sh: $b not found: build first (cmake -S . -B build && cmake --build build -j2)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load0=$(cut -d' ' -f1-3 /proc/loadavg)
S=bench/scenarios
build/bench_policy --scenario $S/paper-cell.json --scenario $S/paper-cell-block.json \
    --scenario $S/att-lte-driving.json --scenario $S/tmobile-lte-short.json --reps "$REPS" \
    --seconds "$SECONDS_PER" --json "$tmp/policy.json" >/dev/null
REC=tests/data/replay/smollm2-moe8.wdpr
build/bench_policy --scenario $S/paper-cell.json --scenario $S/paper-cell-block.json --probs "$REC" \
    --reps "$REPS" --seconds "$SECONDS_PER" --evict 4 --json "$tmp/policy-rec.json" >/dev/null
models=("stories260k weights/models/stories260k/moe4-top2.gguf")
if [ -f "$SMOL" ]; then models+=("SmolLM2-135M-moe8 $SMOL"); fi
for m in "${models[@]}"; do
    set -- $m
    for sc in paper-cell paper-cell-block; do
        build/bench_decode --model "$2" --threads 1 --reps "$DEC_REPS" --bw-passes 0 --prompt 16 \
            --decode 64 --scenario $S/$sc.json --json "$tmp/dec-$1@$sc.json" >/dev/null
    done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$tmp" "$load0" "$load1" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$SMOL" >"$tmp/table.md" <<'PY'
import glob, json, os, sys
tmp, load0, load1, commit, smol = sys.argv[1:6]
p = json.load(open(os.path.join(tmp, "policy.json")))
m = p["machine"]
def mm(s, f="%.2f", k=1e-6):
    return (f + " [" + f + "-" + f + "]") % (s["median"] * k, s["min"] * k, s["max"] * k)
print("%s; %s, %s cores online; wdmoe %s; load average %s at the start, %s at the end "
      "(the machine is shared: read medians and ranges)." %
      (m["date_utc"], m["cpu"], m["cores_online"], commit, load0, load1))
print()
print("Replay, end to end (`bench_policy`: %d rounds of %.2g s; one 512-token decode of the "
      "Mixtral-8x7B shape, 32 layers, 8 experts top-2, through `wd_probs_replay` as `wdmoe replay` "
      "runs it; decisions = token-layers; one core; per CPU-second: without the time slices other "
      "processes took):" % (p["reps"], p["seconds_per_round"]))
print()
print("| scenario | policy | M decisions/s, median [min-max] | spread | M per CPU-second | goal | of goal |")
print("|---|---|---|---|---|---|---|")
rec = json.load(open(os.path.join(tmp, "policy-rec.json")))
rows = [(r, "") for r in p["replay_end_to_end"]]
rows += [(r, ", recorded SmolLM2-moe8 (%d tokens x %d layers, top-6)" % (r["tokens"], r["layers"]))
         for r in rec["replay_end_to_end"]]
for r, what in rows:
    s = r["decisions_per_s"]
    print("| %s%s | %s | %s | %.0f %% | %.2f | %.0f M | %.1f %% |" % (
        r["scenario"], what, r["policy"], mm(s), 100 * s["spread"],
        r["decisions_per_cpu_s"]["median"] * 1e-6, r["goal_decisions_per_s"] * 1e-6,
        100 * s["median"] / r["goal_decisions_per_s"]))
print()
print("The batch-1 select + step loop alone (`bench_policy`, same probabilities, M decisions/s): " +
      "; ".join("%s %s %s" % (r["scenario"], r["policy"], mm(r["decisions_per_s"]))
                for r in p["with_latency_model"] if r["batch"] == 1) + ".")
print()
print("The decode loop on the recorded SmolLM2-moe8 probabilities (`bench_policy --evict 4`: "
      "select and step per layer, one emulator; ns per decision, without and with 4 MB read "
      "between two layer steps, as a decode's forward pass evicts the caches): " +
      "; ".join("%s %s %s, evicted %s" % (r["scenario"], r["policy"],
                                          mm(r["ns_per_decision"], "%.0f", 1),
                                          mm(r["ns_per_decision_evicted"], "%.0f", 1))
                for r in rec["decode_loop"]) + ".")
print()
print("Emulation cost inside a real decode (`bench_decode --threads 1 --scenario "
      "bench/scenarios/SCENARIO.json`, the scenario's policy wdmoe; time in the BS scheduler "
      "as a share of the rest of the step, median [min-max] of the repetitions; goal: under 1 %):")
print()
print("| model | scenario | decode tok/s (no emulation) | scheduler share of the step |")
print("|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(tmp, "dec-*.json"))):
    d = json.load(open(f))
    name, sc = os.path.basename(f)[4:-5].split("@")
    print("| %s (%s) | %s | %s | %s %% |" % (name, d["weight_dtype"], sc,
                                            mm(d["decode_tok_per_s"], "%.1f", 1),
                                            mm(d["emulation"]["scheduler_share"], "%.2f", 100)))
if not os.path.exists(smol):
    print()
    print("(SmolLM2-135M moe8 not found at %s: skipped.)" % smol)
PY
cat "$tmp/table.md"
if [ "$UPDATE_DOCS" = 1 ]; then
    python3 bench/update_docs.py docs/performance.md replay_speed "$tmp/table.md" || exit 1
    echo "replay_speed.sh: docs/performance.md updated"
fi
