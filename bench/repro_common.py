"""Shared helpers of the bench/repro_*.py scripts (Python 3.8+, standard library only).

Each repro script runs `wdmoe eval` (and `wdmoe trace`) and writes its tables as
Markdown, CSV and JSON, every file written atomically (temporary name in the
same folder, fsync, rename), so an interrupted run never leaves half a table.
Ctrl-C stops a script between runs; the rows completed so far are written.
"""
import concurrent.futures
import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Llama-2-70B, as published in Jiang et al., "Mixtral of Experts",
# arXiv:2401.04088, Table 2 (their evaluation pipeline; GSM8K 8-shot maj@8,
# MMLU 5-shot, commonsense tasks 0-shot). Percent.
LLAMA2_70B = {
    "arc_easy": 79.9,
    "arc_challenge": 56.5,
    "piqa": 82.6,
    "hellaswag": 85.4,
    "winogrande": 80.4,
    "mmlu": 69.9,
    "gsm8k": 69.6,
}
LLAMA2_70B_SOURCE = ("Llama-2-70B: Jiang et al., Mixtral of Experts, arXiv:2401.04088, "
                     "Table 2 (published figures, not run here)")

# task -> (file or folder under the datasets folder, reported metric)
TASKS = {
    "arc_easy": ("arc_easy_test.jsonl", "acc_norm"),
    "arc_challenge": ("arc_challenge_test.jsonl", "acc_norm"),
    "piqa": ("piqa_valid.jsonl", "acc_norm"),
    "hellaswag": ("hellaswag_val_full.txt", "acc_norm"),
    "winogrande": ("winogrande_dev.jsonl", "acc"),
    "mmlu": ("mmlu", "acc"),
    "gsm8k": ("gsm8k/test.jsonl", "exact_match"),
}
TASK_LABELS = {
    "arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "piqa": "PIQA",
    "hellaswag": "HellaSwag", "winogrande": "WinoGrande", "mmlu": "MMLU", "gsm8k": "GSM8K",
}


class Interrupted(Exception):
    pass


def find_wdmoe(given=None):
    """The wdmoe binary: --wdmoe, $WDMOE, build/wdmoe of this checkout, or PATH."""
    for cand in (given, os.environ.get("WDMOE"), os.path.join(REPO, "build", "wdmoe"),
                 shutil.which("wdmoe")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    sys.exit("repro: no wdmoe binary (build it: cmake -S . -B build && cmake --build build "
             "-j; or pass --wdmoe PATH / set WDMOE)")


def default_data_dir():
    env = os.environ.get("WD_SHARED_DATA")
    for cand in ([os.path.join(env, "datasets")] if env else []) + [
            os.path.join(REPO, "..", "shared", "data", "datasets")]:
        if os.path.isdir(cand):
            return os.path.abspath(cand)
    return os.path.join(REPO, "tests", "data", "eval")


def dataset_path(data_dir, task):
    """The shipped file of a task, or the small copied subset in tests/data/eval."""
    rel = TASKS[task][0]
    p = os.path.join(data_dir, rel)
    if os.path.exists(p):
        return p
    subsets = {"arc_easy": "arc_easy_10.jsonl", "arc_challenge": "arc_challenge_10.jsonl",
               "piqa": "piqa_10.jsonl", "hellaswag": "hellaswag_20.txt",
               "winogrande": "winogrande_10.jsonl", "mmlu": "mmlu", "gsm8k": "gsm8k_12.jsonl"}
    p = os.path.join(REPO, "tests", "data", "eval", subsets[task])
    return p if os.path.exists(p) else None


def atomic_write(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---- statistics over channel seeds ---------------------------------------------
def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (Numerical Recipes 6.4)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + aa / c
        c = c if abs(c) > 1e-300 else 1e-300
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + aa / c
        c = c if abs(c) > 1e-300 else 1e-300
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betai(a, b, x):
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
           + b * math.log(1.0 - x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """Student's t distribution function."""
    p = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - p if t >= 0 else p


def t_quantile(q, df):
    """The q quantile (0.5 < q < 1) of Student's t with df degrees of freedom."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ci95(values):
    """(mean, half-width of the 95 % confidence interval of the mean, t-distribution);
    the half-width is None for fewer than two values; (None, None) for none."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, None
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return m, t_quantile(0.975, len(v) - 1) * sd / math.sqrt(len(v))


def seeds_list(n, first=1):
    return list(range(first, first + n))


def fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def cell(r, c, digits):
    """A table cell: "mean ± half-width" when the row has c + "_ci" (95 % CI)."""
    h = r.get(c + "_ci")
    if h is not None and r.get(c) is not None:
        return f"{fmt(r.get(c), digits)} ± {fmt(h, digits)}"
    return fmt(r.get(c), digits)


def write_tables(out_dir, name, title, columns, rows, notes=(), meta=None):
    """rows: list of dicts keyed by column id; columns: list of (id, header, digits).
    A column c whose rows carry c + "_ci" prints as mean ± half-width (Markdown) and
    gets a c_ci95 column of its own (CSV)."""
    md = io.StringIO()
    md.write(f"# {title}\n\n")
    md.write("| " + " | ".join(h for _, h, _ in columns) + " |\n")
    md.write("|" + "|".join("---" for _ in columns) + "|\n")
    for r in rows:
        md.write("| " + " | ".join(cell(r, c, d) for c, _, d in columns) + " |\n")
    if notes:
        md.write("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    cs = io.StringIO()
    w = csv.writer(cs, lineterminator="\n")
    ids = []
    for c, _, _ in columns:
        ids.append(c)
        if any(r.get(c + "_ci") is not None for r in rows):
            ids.append(c + "_ci")
    w.writerow([c + "95" if c.endswith("_ci") else c for c in ids])
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in ids])
    doc = {"title": title, "columns": [c for c, _, _ in columns], "rows": rows,
           "notes": list(notes)}
    if meta:
        doc["meta"] = meta
    atomic_write(os.path.join(out_dir, name + ".md"), md.getvalue())
    atomic_write(os.path.join(out_dir, name + ".csv"), cs.getvalue())
    atomic_write(os.path.join(out_dir, name + ".json"), json.dumps(doc, indent=2) + "\n")
    print(md.getvalue())


class Runner:
    """Runs wdmoe commands one at a time; Ctrl-C stops the current one cleanly."""

    def __init__(self, wdmoe, model, threads=0, verbose=True):
        self.wdmoe, self.model, self.threads, self.verbose = wdmoe, model, threads, verbose
        self.stop = False
        signal.signal(signal.SIGINT, self._sigint)

    def _sigint(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\nrepro: stopping after the current run (Ctrl-C again to abort)",
              file=sys.stderr)

    def eval(self, task, data, out_json, extra=()):
        """One `wdmoe eval`; returns the result document. Raises Interrupted when
        stopped (Ctrl-C) before or during the run."""
        if self.stop:
            raise Interrupted()
        cmd = [self.wdmoe, "eval", "--model", self.model, "--task", task, "--data", data,
               "--out", out_json]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        cmd += list(extra)
        if self.verbose:
            print("+ " + " ".join(cmd), file=sys.stderr)
        t0 = time.time()
        # the child ignores our SIGINT handling: it gets its own Ctrl-C and
        # writes what it completed (exit 130)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None)
        if p.returncode not in (0, 130):
            raise RuntimeError(f"wdmoe eval failed ({p.returncode}): {' '.join(cmd)}")
        with open(out_json) as f:
            doc = json.load(f)
        if self.verbose:
            print(f"  {time.time() - t0:.1f} s", file=sys.stderr)
        if p.returncode == 130 or doc.get("interrupted"):
            # a partial run is not comparable with complete ones: not tabulated
            # (its result JSON stays in runs/)
            self.stop = True
            raise Interrupted()
        return doc

    def eval_many(self, jobs, parallel=1):
        """Several `wdmoe eval` runs, `parallel` at a time (each with one thread when
        parallel > 1). jobs: list of (task, data, out_json, extra). A run whose result
        JSON already exists, complete, is not run again (resume). Returns the result
        documents in order (None for runs not done because of Ctrl-C)."""
        done = [reuse(j[2]) for j in jobs]
        todo = [i for i, d in enumerate(done) if d is None]
        if self.verbose and len(todo) < len(jobs):
            print(f"repro: {len(jobs) - len(todo)} of {len(jobs)} runs reused from an earlier "
                  "run", file=sys.stderr)
        threads = self.threads
        if parallel > 1:
            self.threads = 1
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as ex:
                futs = {ex.submit(self._eval_or_none, *jobs[i]): i for i in todo}
                for f in concurrent.futures.as_completed(futs):
                    done[futs[f]] = f.result()
        finally:
            self.threads = threads
        if any(d is None for d in done):
            raise Interrupted()
        return done

    def _eval_or_none(self, task, data, out_json, extra):
        try:
            return self.eval(task, data, out_json, extra)
        except Interrupted:
            return None

    def trace(self, scenario, out_csv, duration=1.0):
        """Mean full-band rate per device and direction from `wdmoe trace`, or None."""
        cmd = [self.wdmoe, "trace", "--scenario", scenario, "--duration", str(duration),
               "--out", out_csv]
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            return None
        rates = {}
        with open(out_csv) as f:
            for row in csv.DictReader(f):
                d = int(row["device"])
                acc = rates.setdefault(d, [0.0, 0.0, 0])
                acc[0] += float(row["downlink_bps"])
                acc[1] += float(row["uplink_bps"])
                acc[2] += 1
        return {d: (a[0] / a[2], a[1] / a[2]) for d, a in sorted(rates.items())}


def reuse(out_json):
    """The result document of a finished earlier run at out_json, or None."""
    try:
        with open(out_json) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return None if doc.get("interrupted") else doc


def load_scenario(path):
    with open(path) as f:
        return json.load(f)


def absolutize_files(node, base):
    """Make relative "file" entries absolute so a scenario variant can live elsewhere."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "file" and isinstance(v, str) and not os.path.isabs(v) and "${" not in v:
                node[k] = os.path.normpath(os.path.join(base, v))
            else:
                absolutize_files(v, base)
    elif isinstance(node, list):
        for v in node:
            absolutize_files(v, base)
    return node


def write_scenario(doc, src_path, out_path):
    doc = absolutize_files(json.loads(json.dumps(doc)), os.path.dirname(os.path.abspath(src_path)))
    atomic_write(out_path, json.dumps(doc, indent=2) + "\n")
    return out_path


def default_scenario():
    p = os.path.join(REPO, "bench", "scenarios", "paper-cell.json")
    return p if os.path.exists(p) else None


def metric(doc, name):
    m = doc.get("metrics") or {}
    v = m.get(name)
    se = m.get(name + "_stderr")
    return v, se


def latency(doc):
    lat = doc.get("latency") or {}
    return lat


def phase(doc, which):
    """The "prefill" (time to first token) or "decode" (time per output token)
    latency summary of a result document ({} when absent)."""
    return (doc.get("latency") or {}).get(which) or {}


def seed_args(ap, default=10):
    ap.add_argument("--seeds", type=int, default=default,
                    help=f"channel seeds per configuration (default {default}); tables give "
                    "the mean over seeds and its 95 %% confidence interval")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="runs in parallel (default: one per core); finished runs are reused")


def plot(script, *args):
    """Run a bench/plot_*.py script; PNGs are optional (matplotlib may be missing;
    WD_NO_PLOT=1 skips them)."""
    if os.environ.get("WD_NO_PLOT") == "1":
        return
    p = subprocess.run([sys.executable, os.path.join(REPO, "bench", script)] + list(args))
    if p.returncode != 0:
        print(f"repro: {script} made no plot (see above); tables are written", file=sys.stderr)
