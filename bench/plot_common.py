"""Shared helpers of the bench/plot_*.py scripts: matplotlib (installed with
pip --user when missing, where the network allows), atomic PNG writes."""
import json
import os
import subprocess
import sys
import tempfile


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None when it cannot be had."""
    try:
        import matplotlib
    except ImportError:
        print("plot: matplotlib missing, trying pip install --user matplotlib", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--user", "--quiet",
                            "matplotlib"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            print("plot: could not install matplotlib; no PNG written", file=sys.stderr)
            return None
        import site
        import importlib
        importlib.invalidate_caches()
        p = site.getusersitepackages()
        if p not in sys.path:
            sys.path.append(p)
        try:
            import matplotlib
        except ImportError:
            print("plot: matplotlib still not importable; no PNG written", file=sys.stderr)
            return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def load(path):
    with open(path) as f:
        return json.load(f)


def save(fig, path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", suffix=".png", dir=d)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"wrote {path}")
