"""Shared helpers of the bench/plot_*.py scripts: matplotlib (from bench/requirements.txt,
see pyplot), atomic PNG writes."""
import json
import os
import sys
import tempfile


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None (with a note) when it is missing.
    Nothing is installed from here: `bash .ci/setup` puts bench/requirements.txt into the
    virtual environment build/venv, whose python bench/repro_all.sh uses."""
    try:
        import matplotlib
    except ImportError:
        print("plot: matplotlib is missing, no PNG written: run `bash .ci/setup` and use "
              "build/venv/bin/python, or `pip install -r bench/requirements.txt` in your "
              "own environment", file=sys.stderr)
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


def model_label(meta):
    """The model of a table's meta as a caption shows it: the last three components of
    its path (a bare file name says little: smollm2-135m/moe8/model.gguf)."""
    parts = str((meta or {}).get("model", "?")).rstrip("/").split("/")
    return "/".join(parts[-3:])
