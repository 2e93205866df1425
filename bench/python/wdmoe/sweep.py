"""Sweeps: scenarios x parameter grid x policies, on every core of this
machine (multiprocessing) or on a Dask cluster (client=...), with one call."""
import hashlib
import itertools
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from .core import Probs, Scenario, replay

_cache = {}  # per worker process: the probabilities, by digest of their bytes


def _probs_from(payload):
    digest = hashlib.sha256(payload).hexdigest()
    p = _cache.get(digest)
    if p is None:
        _cache.clear()
        p = _cache[digest] = Probs.from_bytes(payload)
    return p


def _run(task, payload):
    """One replay on a worker: a row of the sweep's result."""
    sc_data, sc_path, point, policy, tokens = task
    sc = Scenario(sc_data, sc_path)
    res = replay(_probs_from(payload), sc.override(point), policy=policy, tokens=tokens)
    row = {"scenario": res.scenario, "scenario_file": sc_path, "policy": res.policy}
    row.update(point)
    row.update(res.metrics)
    return row


_payload = None  # set in each pool worker by _init


def _init(payload):
    global _payload
    _payload = payload


def _run_pooled(task):
    return _run(task, _payload)


def default_processes():
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def tasks(scenarios, policies=None, grid=None, tokens=None):
    """The sweep's runs, in the order of its rows: for each scenario, each point
    of the grid (the cartesian product of grid's value lists, keys being dotted
    scenario paths such as "policy.gamma"), each policy."""
    grid = grid or {}
    keys = list(grid)
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    out = []
    for s in scenarios:
        sc = Scenario.coerce(s)
        for point in points:
            for pol in policies or [None]:
                out.append((sc.data, sc.path, point, pol, tokens))
    return out


def sweep(probs, scenarios, policies=None, grid=None, tokens=None, processes=None, client=None):
    """Replay probs through every scenario x grid point x policy.

    probs: Probs or a .wdpr path. scenarios: Scenario objects or JSON paths.
    policies: names of built-in policies and/or Python policy functions
    (module-level functions, so that they can be sent to other processes);
    None: each scenario's own. grid: {"dotted.key": [values]} scenario
    overrides, e.g. {"policy.gamma": [1.0, 1.05, 1.1]}. tokens: the first N
    tokens only.
    processes: worker processes on this machine (default: every core; 1: in
    this process). client: a dask.distributed Client: the same runs on its
    cluster instead (scenario and trace files must be readable at the same
    path on the workers; the probabilities are sent to them).
    Returns a list of rows (dicts: scenario, scenario_file, policy, the grid's
    keys, every metric of the summary), in task order; pandas.DataFrame(rows)
    makes a table of it."""
    pr = probs if isinstance(probs, Probs) else Probs.load(probs)
    todo = tasks(scenarios, policies, grid, tokens)
    payload = pr.to_bytes()
    if client is not None:
        shared = client.scatter(payload, broadcast=True)
        futures = client.map(_run, todo, payload=shared, pure=False)
        return client.gather(futures)
    n = processes or default_processes()
    if n <= 1 or len(todo) <= 1:
        return [_run(t, payload) for t in todo]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(n, len(todo)), mp_context=ctx, initializer=_init,
                             initargs=(payload,)) as ex:
        return list(ex.map(_run_pooled, todo, chunksize=max(1, len(todo) // (4 * n))))
