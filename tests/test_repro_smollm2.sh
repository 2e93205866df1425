#!/usr/bin/env bash
# bench/repro_smollm2.py end to end on stories260k with tiny limits: every table
# is written, the concatenated .wdpr holds exactly the recorded tokens, replay's
# decode steps equal generate's, each TPOT breakdown sums to its TPOT, identical
# experts (moe4-top2) give every policy exactly top-k's accuracy (paired
# difference 0), the paired standard error against a hand example, a rerun reuses
# every run and rewrites the same tables, and recordings of different models are
# refused.
set -u
src="$WD_SOURCE_DIR"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_repro_smollm2_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }

st="$src/weights/models/stories260k"
args=(--model "$st/moe4-top2" --dense "$st/sliced4-top4" --data-dir "$src/tests/data/eval"
      --items 4 --pareto-items 2 --prompts 2 --new-tokens 6 --seeds 2 --quality-prompts 1
      --quality-tokens 3 --acc-policies wdmoe,wdmoe-straggler --sweeps devices --devices 4,8
      --out "$tmp/raw" --docs "$tmp/docs" --wdmoe "$WDMOE")
export WD_NO_PLOT=1
if python3 "$src/bench/repro_smollm2.py" "${args[@]}" >"$tmp/1.txt" 2>"$tmp/1.err"; then ok
else bad "repro_smollm2: $(tail -5 "$tmp/1.err")"; fi

missing=""
for n in accuracy latency sweep_devices pareto_paper-cell pareto_att-lte-driving \
         pareto_tmobile-lte-short straggler summary; do
    for e in md csv json; do [ -s "$tmp/docs/$n.$e" ] || missing="$missing $n.$e"; done
done
[ -s "$tmp/docs/README.md" ] || missing="$missing README.md"
[ -z "$missing" ] && ok || bad "tables missing:$missing"

# the recording: header sums, file size, and replay's decode steps = generate's
out=$(cd "$src/bench" && python3 - "$tmp" <<'PY'
import json, os, struct, sys
import repro_smollm2 as rs
raw = os.path.join(sys.argv[1], "raw")
def head(p):
    with open(p, "rb") as f:
        return struct.unpack("<11I", f.read(48)[4:])
parts = [os.path.join(raw, "record", f"p{i}.wdpr") for i in range(2)]
h = head(os.path.join(raw, "decode.wdpr"))
n = sum(head(p)[10] for p in parts)
size = os.path.getsize(os.path.join(raw, "decode.wdpr"))
print("tokens", h[10] == n and size == 48 + n * (h[1] * h[2] * 4 + 1))
gen = sum(json.load(open(os.path.join(raw, "record", f"p{i}.json")))["latency"]["decode"]["samples"]
          for i in range(2))
rows = json.load(open(os.path.join(sys.argv[1], "docs", "latency.json")))["rows"]
print("rows", len(rows) == 18 and all(r["tokens"] == gen and r["seeds"] == 2 for r in rows))
print("sum", all(abs(r["bs_ms"] + r["downlink_ms"] + r["compute_ms"] + r["uplink_ms"] +
                     r["air_ms"] - r["tpot_ms"]) <= 1e-6 * r["tpot_ms"] for r in rows))
print("topk", all(r["reduction_pct"] == 0 for r in rows if r["policy"] == "topk"))
acc = json.load(open(os.path.join(sys.argv[1], "docs", "accuracy.json")))["rows"]
pol = [r for r in acc if r["config"] in ("wdmoe", "wdmoe-straggler")]
print("acc", len(acc) == 6 * 4 and len(pol) == 12 and all(r["items"] == 4 for r in acc) and
      all(r["delta"] == 0 and r["delta_se"] == 0 for r in pol))
# hand example: differences 100, 0, 0, 100 -> mean 50, s = 57.735, se = 28.868
m, se = rs.paired([1, 0, 1, 1], [0, 0, 1, 0])
print("paired", abs(m - 50) < 1e-9 and abs(se - 28.86751) < 1e-4)
# a recording of another model is refused
bad = os.path.join(sys.argv[1], "other.wdpr")
with open(parts[0], "rb") as f:
    b = bytearray(f.read())
b[12:16] = struct.pack("<I", h[2] + 1)       # n_experts
open(bad, "wb").write(bytes(b))
try:
    rs.wdpr_concat([parts[0], bad], os.path.join(sys.argv[1], "x.wdpr"))
    print("refused", False)
except ValueError as e:
    print("refused", "model shape differs" in str(e) and
          not os.path.exists(os.path.join(sys.argv[1], "x.wdpr")))
PY
)
for k in tokens rows sum topk acc paired refused; do
    echo "$out" | grep -qx "$k True" && ok || bad "$k: $(echo "$out" | grep "^$k" || echo "$out" | tail -3)"
done

# a rerun runs nothing and writes the same tables
mkdir -p "$tmp/first" && cp "$tmp/docs/"*.json "$tmp/first/"
python3 "$src/bench/repro_smollm2.py" "${args[@]}" >"$tmp/2.txt" 2>"$tmp/2.err" || bad "rerun failed"
grep -q '^+ ' "$tmp/2.err" && bad "rerun ran wdmoe again: $(grep -m1 '^+ ' "$tmp/2.err")" || ok
same=1
for f in "$tmp/first/"*.json; do cmp -s "$f" "$tmp/docs/$(basename "$f")" || same=0; done
[ "$same" = 1 ] && ok || bad "rerun wrote different tables"

echo "test_repro_smollm2: $pass passed, $fail failed"
[ "$fail" = 0 ]
