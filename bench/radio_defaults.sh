#!/usr/bin/env bash
# What the NR radio defaults do to a decode step (README "Honest latency", docs/radio.md):
# records the router probabilities of 200 greedy tokens of stories260k (moe4-top2),
# then replays them with topk and wdmoe over paper-cell as shipped (CQI link
# adaptation, TDD DDDSU, dynamic grants, HARQ at 10 % BLER) and over the same cell
# with the bare radio of earlier versions (Shannon, no air interface). Prints one
# Markdown table of the mean time per output token (TPOT). Not a test.
# Usage: bash bench/radio_defaults.sh   (after the build)
set -euo pipefail
cd "$(dirname "$0")/.."
W=./build/wdmoe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
S=bench/scenarios/paper-cell.json
"$W" generate --model weights/models/stories260k/moe4-top2 -n 200 --scenario "$S" --policy topk \
    --record-probs "$tmp/p.wdpr" >/dev/null 2>&1
python3 - "$S" "$tmp/bare.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["name"] = "paper-cell (bare radio)"
d["radio"]["link_adaptation"] = "shannon"
links = {"model": "synthetic", "air_interface": False}
d.setdefault("device_defaults", {})["downlink"] = dict(links)
d["device_defaults"]["uplink"] = dict(links)
json.dump(d, open(sys.argv[2], "w"), indent=1)
PY
echo "| radio | TPOT top-k | TPOT wdmoe | wdmoe vs top-k |"
echo "|---|---|---|---|"
for sc in "$tmp/bare.json" "$S"; do
    "$W" replay --probs "$tmp/p.wdpr" --scenario "$sc" --policy wdmoe --json "$tmp/r.json" >/dev/null 2>&1
    python3 - "$tmp/r.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
m = {r["policy"]: r["summary"]["decode"]["mean_s"] for r in runs}
name = runs[0]["scenario"]
label = "bare (Shannon, no air interface)" if "bare" in name else "NR defaults (CQI, TDD, grants, HARQ)"
print("| %s | %.3f ms | %.3f ms | %+.1f %% |" % (label, m["topk"] * 1e3, m["wdmoe"] * 1e3,
                                              100 * (m["wdmoe"] / m["topk"] - 1)))
PY
done
