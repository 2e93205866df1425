#!/usr/bin/env bash
# What block fading changes (docs/radio.md, "Block fading"): replays the router
# probabilities recorded in tests/data/replay (stories260k moe4-top2, 52 tokens; SmolLM2-135M
# MoEfied into 8 experts, top-6, 44 tokens) with topk and wdmoe over paper-cell (fading
# sampled every 1 ms) and paper-cell-block (one channel state per coherence time, 36 ms)
# for channel seeds 1..N, and prints one Markdown table: mean time per output token
# (TPOT) of each policy and the wdmoe reduction against topk, mean over the seeds with their
# range; --update-docs writes it into docs/radio.md between its markers. Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=10
UPDATE_DOCS=0
usage() {
    cat <<EOF
usage: bash bench/block_fading.sh [--seeds N] [--update-docs]

Replays tests/data/replay/{stories260k-moe4,smollm2-moe8}.wdpr with build/wdmoe replay
over bench/scenarios/paper-cell.json and paper-cell-block.json, policies topk and wdmoe,
channel seeds 1..N (default $SEEDS); prints the mean TPOT per policy and the wdmoe
reduction against topk as a Markdown table (mean over the seeds, min to max); --update-docs
writes it into docs/radio.md between <!-- block_fading:begin --> and <!-- block_fading:end -->
(virtual time: the figures do not depend on the machine). Needs ./build.
EOF
}
while [ $# -gt 0 ]; do
    case "$1" in
    --seeds) SEEDS=$2; shift 2 ;;
    --update-docs) UPDATE_DOCS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "block_fading.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$SEEDS" in
''|*[!0-9]*|0) echo "block_fading.sh: --seeds wants a positive integer" >&2; exit 2 ;;
esac
[ -x build/wdmoe ] || { echo "block_fading.sh: build/wdmoe not found: build first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for rec in stories260k-moe4 smollm2-moe8; do
    for sc in paper-cell paper-cell-block; do
        for seed in $(seq 1 "$SEEDS"); do
            build/wdmoe replay --probs "tests/data/replay/$rec.wdpr" \
                --scenario "bench/scenarios/$sc.json" --policy wdmoe --seed "$seed" \
                --json "$tmp/$rec.$sc.$seed.json" >/dev/null 2>&1
        done
    done
done
python3 - "$tmp" "$SEEDS" >"$tmp/table.md" <<'PY'
import json, os, sys
tmp, n = sys.argv[1], int(sys.argv[2])
def rng(v, f):
    return (f + " (" + f + " to " + f + ")") % (sum(v) / len(v), min(v), max(v))
print("Mean TPOT over channel seeds 1-%d, mean (min to max) (`wdmoe replay` of the recorded "
      "probabilities, each generated token a decode step):" % n)
print()
print("| recording | scenario | TPOT top-k (ms) | TPOT wdmoe (ms) | wdmoe vs top-k (%) |")
print("|---|---|---|---|---|")
for rec in ("stories260k-moe4", "smollm2-moe8"):
    for sc in ("paper-cell", "paper-cell-block"):
        tk, wd, red = [], [], []
        for seed in range(1, n + 1):
            runs = json.load(open(os.path.join(tmp, "%s.%s.%d.json" % (rec, sc, seed))))["runs"]
            m = {r["policy"]: r["summary"]["decode"]["mean_s"] for r in runs}
            tk.append(m["topk"] * 1e3), wd.append(m["wdmoe"] * 1e3)
            red.append(100 * (m["wdmoe"] / m["topk"] - 1))
        print("| %s | %s | %s | %s | %s |" % (rec, sc, rng(tk, "%.2f"), rng(wd, "%.2f"),
                                             rng(red, "%+.1f")))
PY
cat "$tmp/table.md"
if [ "$UPDATE_DOCS" = 1 ]; then
    python3 bench/update_docs.py docs/radio.md block_fading "$tmp/table.md" || exit 1
    echo "block_fading.sh: docs/radio.md updated"
fi
