"""wdmoe: replays and sweeps of the wireless MoE emulation from Python.

    import wdmoe
    probs = wdmoe.Probs.load("run.wdpr")          # wdmoe generate --record-probs
    r = wdmoe.replay(probs, "bench/scenarios/paper-cell.json", policy="wdmoe")
    rows = wdmoe.sweep(probs, ["bench/scenarios/paper-cell.json"],
                       policies=["topk", "wdmoe"], grid={"policy.gamma": [1.0, 1.1]})

See docs/python.md in the wdmoe repository.
"""
from ._lib import WdmoeError
from .core import Probs, Result, Scenario, replay, version
from .sweep import default_processes, sweep, tasks

__all__ = ["Probs", "Result", "Scenario", "WdmoeError", "default_processes", "replay", "sweep",
           "tasks", "version"]
__version__ = "0.1.0"
