#!/usr/bin/env python3
"""MoEfication quality curve: a dense model, its MoEfied form (wdmoe moefy) and,
for k = 1..E experts per token, with the learned router and with the oracle
(the k experts with the largest output norm):

- perplexity on held-out text the dense model generates itself, KL(dense || MoE)
  per position and next-token agreement with the dense model (build/moe_quality);
- accuracy (wdmoe eval --top-k K [--router oracle]) on HellaSwag, ARC-Easy,
  PIQA and WinoGrande for the k values of --acc-k / --oracle-k, beside the dense
  model;
- per layer, the fraction of tokens with each expert in the learned top-k;
- bytes and FLOPs of one expert call (from moefy.json).

    bench/repro_moefy.py DENSE [--experts 8] [--limit 100] [--out DIR]

Writes DIR/moefication.{md,json}, DIR/moefication.png and
DIR/moefication-load.png; the MoE in DIR/moe/, per-run eval JSONs in DIR/runs/
(an existing run is reused, so an interrupted sweep resumes).
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repro_common as rc  # noqa: E402

TASKS = ["hellaswag", "arc_easy", "piqa", "winogrande"]


def run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd)
    if p.returncode != 0:
        sys.exit(f"repro_moefy: failed ({p.returncode}): {' '.join(cmd)}")


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dense")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(rc.REPO, "bench", "results", "moefy"))
    ap.add_argument("--limit", type=int, default=100, help="items per task (default 100)")
    ap.add_argument("--acc-k", default="2,4,5,6,7", help="k of the learned-router accuracy runs")
    ap.add_argument("--oracle-k", default="4,6", help="k of the oracle accuracy runs")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seqs", type=int, default=8, help="held-out sequences (moe_quality)")
    ap.add_argument("--len", type=int, default=128, help="tokens per held-out sequence")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data-dir", default=rc.default_data_dir())
    ap.add_argument("--wdmoe", default=None)
    a = ap.parse_args()
    wdmoe = rc.find_wdmoe(a.wdmoe)
    mq = os.path.join(os.path.dirname(wdmoe), "moe_quality")
    out = os.path.abspath(a.out)
    moe_dir = os.path.join(out, "moe")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    thr = ["--threads", str(a.threads)] if a.threads else []

    # 1. the MoE
    moe = os.path.join(moe_dir, "model.gguf" if a.dense.endswith(".gguf") else "")
    if not os.path.exists(os.path.join(moe_dir, "moefy.json")) or not os.path.exists(
            moe if a.dense.endswith(".gguf") else os.path.join(moe_dir, "config.json")):
        run([wdmoe, "moefy", "--model", a.dense, "--experts", str(a.experts), "--out", moe_dir]
            + thr)
    moe = moe if a.dense.endswith(".gguf") else moe_dir
    with open(os.path.join(moe_dir, "moefy.json")) as f:
        mj = json.load(f)

    # 2. perplexity, KL, agreement, load
    qpath = os.path.join(out, "quality.json")
    if not os.path.exists(qpath):
        run([mq, "--dense", a.dense, "--moe", moe, "--seqs", str(a.seqs), "--len", str(a.len),
             "--out", qpath] + thr)
    with open(qpath) as f:
        q = json.load(f)

    # 3. accuracy
    acc = {}  # (task, label) -> (value, stderr)
    configs = [("dense", a.dense, [])]
    configs += [(f"learned k={k}", moe, ["--top-k", str(k)]) for k in ints(a.acc_k)]
    configs += [(f"oracle k={k}", moe, ["--top-k", str(k), "--router", "oracle"])
                for k in ints(a.oracle_k)]
    tasks = [t for t in a.tasks.split(",") if t]
    for task in tasks:
        data = rc.dataset_path(a.data_dir, task)
        if not data:
            print(f"repro_moefy: no data for {task}; skipped", file=sys.stderr)
            continue
        for label, model, extra in configs:
            rp = os.path.join(out, "runs", f"{task}-{label.replace(' ', '-').replace('=', '')}.json")
            if not os.path.exists(rp):
                run([wdmoe, "eval", "--model", model, "--task", task, "--data", data, "--limit",
                     str(a.limit), "--quiet", "--out", rp] + extra + thr)
            with open(rp) as f:
                doc = json.load(f)
            acc[(task, label)] = rc.metric(doc, rc.TASKS[task][1])
            acc[(task, label, "n")] = (doc.get("items") or {}).get("evaluated") if isinstance(
                doc.get("items"), dict) else doc.get("items")

    # 4. tables
    E = q["experts"]
    md = ["# MoEfication quality curve", "",
          f"Dense model `{os.path.basename(a.dense)}` MoEfied by `wdmoe moefy` into {E} experts "
          f"of {mj['expert_ffn']} neurons per layer (combine: plain sum; written top-k "
          f"{mj['top_k']}); calibration: {mj['calibration']['tokens']} self-generated tokens, "
          f"seed {mj['calibration']['seed']}.", "",
          f"## Held-out text ({q['heldout_tokens']} tokens generated by the dense model; "
          f"dense perplexity {q['dense_ppl']:.3f})", "",
          "| k | ppl (learned) | ppl (oracle) | KL nats (learned) | KL nats (oracle) | "
          "agreement (learned) | agreement (oracle) |", "|---|---|---|---|---|---|---|"]
    rows = {(r["router"], r["k"]): r for r in q["rows"]}
    for k in range(1, E + 1):
        lr, orr = rows[("learned", k)], rows[("oracle", k)]
        md.append(f"| {k} | {lr['ppl']:.4g} | {orr['ppl']:.4g} | {abs(lr['kl']):.3f} | "
                  f"{abs(orr['kl']):.3f} | {100 * lr['agreement']:.1f} % | "
                  f"{100 * orr['agreement']:.1f} % |")
    if tasks:
        md += ["", f"## Accuracy ({a.limit} items per task, the first of each set; "
               "acc_norm, WinoGrande acc; +- one standard error)", "",
               "| model | " + " | ".join(rc.TASK_LABELS[t] for t in tasks) + " |",
               "|---|" + "---|" * len(tasks)]
        for label, _, _ in configs:
            cells = []
            for t in tasks:
                v, se = acc.get((t, label), (None, None))
                cells.append("-" if v is None else f"{100 * v:.1f} +- {100 * (se or 0):.1f}")
            md.append(f"| {label} | " + " | ".join(cells) + " |")
    call = mj["expert_call"]
    md += ["", "## One expert call", "",
           f"weights read {call['weight_bytes'] / 1e6:.3f} MB, {call['flops_per_token'] / 1e6:.3f} "
           f"MFLOP per token (6 H F/E), activations in and out {call['activation_bytes_per_token_f32']} "
           "bytes per token at f32.", "",
           "## Expert load (learned router, k = written top-k)", "",
           "Fraction of held-out tokens with each expert in the top-k, per layer: "
           "`moefication-load.png`; min / max over the experts per layer:", ""]
    k0 = mj["top_k"]
    load = next(x for x in q["load"] if x["k"] == k0)["layers"]
    md.append("| layer | min | max |")
    md.append("|---|---|---|")
    for l, fr in enumerate(load):
        md.append(f"| {l} | {min(fr):.3f} | {max(fr):.3f} |")
    rc.atomic_write(os.path.join(out, "moefication.md"), "\n".join(md) + "\n")
    rc.atomic_write(os.path.join(out, "moefication.json"), json.dumps(
        {"quality": q, "moefy": mj, "accuracy": [
            {"task": t, "model": label, "value": acc[(t, label)][0], "stderr": acc[(t, label)][1]}
            for t in tasks for label, _, _ in configs if (t, label) in acc]}, indent=1) + "\n")
    plot(out, q, acc, tasks, configs, E, load, k0)
    print(f"repro_moefy: wrote {out}/moefication.md", file=sys.stderr)


def plot(out, q, acc, tasks, configs, E, load, k0):
    import plot_common as pc
    plt = pc.pyplot()
    if plt is None:
        return
    ks = list(range(1, E + 1))
    rows = {(r["router"], r["k"]): r for r in q["rows"]}
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    for router, style in (("learned", "-o"), ("oracle", "--s")):
        ax[0].semilogy(ks, [rows[(router, k)]["ppl"] for k in ks], style, label=router)
        ax[1].plot(ks, [max(0.0, rows[(router, k)]["kl"]) for k in ks], style, label=router)
        ax[2].plot(ks, [rows[(router, k)]["agreement"] for k in ks], style, label=router)
    ax[0].axhline(q["dense_ppl"], color="k", lw=1, label="dense")
    ax[0].set(xlabel="experts per token k", ylabel="perplexity (held-out)",
              title="Perplexity of self-generated text")
    ax[1].set(xlabel="experts per token k", ylabel="KL(dense || MoE), nats",
              title="KL to the dense model")
    ax[2].set(xlabel="experts per token k", ylabel="fraction of positions",
              title="Next-token agreement with dense")
    for t in tasks:
        lk = [(int(lab.split("=")[1]), acc[(t, lab)][0]) for lab, _, _ in configs
              if lab.startswith("learned") and (t, lab) in acc]
        ok = [(int(lab.split("=")[1]), acc[(t, lab)][0]) for lab, _, _ in configs
              if lab.startswith("oracle") and (t, lab) in acc]
        dense = acc.get((t, "dense"), (None,))[0]
        if dense is not None:
            lk.append((E, dense))
        line, = ax[3].plot([k for k, _ in lk], [v for _, v in lk], "-o",
                           label=rc.TASK_LABELS[t])
        if ok:
            ax[3].plot([k for k, _ in ok], [v for _, v in ok], "--s", color=line.get_color())
    ax[3].set(xlabel="experts per token k (k = E: dense)", ylabel="accuracy",
              title="Accuracy (solid: learned, dashed: oracle)")
    for a_ in ax:
        a_.grid(alpha=0.3)
        a_.legend(fontsize=7)
    pc.save(fig, os.path.join(out, "moefication.png"))
    fig, ax = plt.subplots(figsize=(6, 6))
    im = ax.imshow(load, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set(xlabel="expert", ylabel="layer",
           title=f"Fraction of tokens with the expert in the top-{k0} (learned router)")
    fig.colorbar(im)
    pc.save(fig, os.path.join(out, "moefication-load.png"))


if __name__ == "__main__":
    main()
