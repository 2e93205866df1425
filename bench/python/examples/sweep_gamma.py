"""Sweep the wdmoe policy's gamma over the three shipped scenarios; plot the mean
latency per token and the experts per token against gamma, top-k dashed."""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import wdmoe  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("probs", help="router probabilities (.wdpr) from `wdmoe generate --record-probs`")
ap.add_argument("--repo", default=".", help="the wdmoe checkout (its bench/scenarios)")
ap.add_argument("--out", default="gamma.png", help="the plot (PNG)")
a = ap.parse_args()

names = ["paper-cell", "att-lte-driving", "tmobile-lte-short"]
scenarios = [os.path.join(a.repo, "bench", "scenarios", n + ".json") for n in names]
gammas = [1.0, 1.02, 1.05, 1.1, 1.2, 1.5]
# 3 scenarios x 6 gammas x 2 policies = 36 replays, on every core
rows = wdmoe.sweep(a.probs, scenarios, policies=["topk", "wdmoe"],
                   grid={"policy.gamma": gammas})

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
for i, name in enumerate(names):
    for pol, style in (("wdmoe", "-o"), ("topk", "--")):
        rs = [r for r in rows if r["scenario"] == name and r["policy"] == pol]
        g = [r["policy.gamma"] for r in rs]
        label = f"{name} ({pol})"
        ax1.plot(g, [r["decode.mean_s"] * 1e3 for r in rs], style, color=f"C{i}", label=label)
        ax2.plot(g, [r["decode.experts_per_token"] for r in rs], style, color=f"C{i}", label=label)
ax1.set(xlabel="gamma", ylabel="mean latency per token (ms)", yscale="log")
ax2.set(xlabel="gamma", ylabel="experts per token")
ax2.legend(fontsize=7)
fig.tight_layout()
fig.savefig(a.out, dpi=120)
for r in rows:
    if r["policy"] == "wdmoe":
        print(f"{r['scenario']:18s} gamma {r['policy.gamma']:<5} "
              f"{r['decode.mean_s'] * 1e3:9.3f} ms  {r['decode.experts_per_token']:.3f} experts/token")
print(f"wrote {a.out}")
