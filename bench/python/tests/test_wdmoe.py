"""The wdmoe Python package against the wdmoe CLI and the C policies.

Run by tests/test_python.sh (ctest) with:
  WDMOE_LIBRARY  the libwdmoe of the build under test
  WDMOE          the wdmoe CLI of the same build
  WD_PROBS       router probabilities recorded by `wdmoe generate --record-probs`
  WD_SOURCE_DIR  the checkout
"""
import json
import os
import pickle
import subprocess
import sys
import tempfile
import unittest

import numpy as np

import wdmoe

SRC = os.environ["WD_SOURCE_DIR"]
SCEN = [os.path.join(SRC, "bench", "scenarios", n + ".json")
        for n in ("paper-cell", "att-lte-driving", "tmobile-lte-short")]
POLICIES = ["topk", "wdmoe", "wlr-drop", "dynamic", "fastest"]


def py_topk(p, tau, available, top_k):
    """The built-in topk in Python: the top_k most probable reachable experts
    (ties: lower id): an unreachable one is replaced by the next most probable."""
    return [int(e) for e in np.argsort(-p, kind="stable") if available[e]][:top_k]


def py_quickest(p, tau, available, top_k):
    """One expert: the quickest reachable one among the top 2 * top_k."""
    cand = [int(e) for e in np.argsort(-p, kind="stable")[:2 * top_k] if available[e]]
    return [min(cand, key=lambda e: tau[e])] if cand else py_topk(p, tau, available, 1)


class Replay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.probs = wdmoe.Probs.load(os.environ["WD_PROBS"])
        cls.tmp = tempfile.TemporaryDirectory(prefix="wdmoe-py-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_version(self):
        release, api = wdmoe.version()
        self.assertEqual(release, os.environ["WD_VERSION"])
        self.assertGreaterEqual(api, 1)

    def test_equals_cli(self):
        """Every built-in policy on the three shipped scenarios: the numbers of
        `wdmoe replay --out` exactly."""
        out = os.path.join(self.tmp.name, "cli.json")
        cmd = [os.environ["WDMOE"], "replay", "--probs", os.environ["WD_PROBS"], "--out", out]
        for s in SCEN:
            cmd += ["--scenario", s]
        for p in POLICIES:
            cmd += ["--policy", p]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            runs = json.load(f)["runs"]
        self.assertEqual(len(runs), len(SCEN) * len(POLICIES))
        for run in runs:
            r = wdmoe.replay(self.probs, run["scenario_file"], policy=run["policy"])
            self.assertEqual(r.json["summary"], run["summary"], (run["scenario"], run["policy"]))
            self.assertEqual(r.json["params"], run["params"])
            self.assertEqual(r.metrics["decode.mean_s"], run["summary"]["decode"]["mean_s"])
            self.assertEqual(len(r.latencies), run["summary"]["decode"]["samples"])
            self.assertAlmostEqual(float(np.mean(r.latencies)), r["decode.mean_s"], delta=1e-12)

    def test_python_policy_equals_c(self):
        """topk written in Python gives exactly the built-in topk, also with a
        device down (rerouting) and under min-max allocation."""
        for path in SCEN:
            base = wdmoe.Scenario.load(path)
            # stories260k has 4 experts on 8 devices: expert 1 lives on devices 1 and 5
            down = [{"device": d, "kind": "down", "from_s": 0} for d in (1, 5)]
            for sc in (base, base.override({"faults": down, "bandwidth_allocation": "minmax"})):
                c = wdmoe.replay(self.probs, sc, policy="topk")
                py = wdmoe.replay(self.probs, sc, policy=py_topk)
                self.assertEqual(py.policy, "py_topk")
                self.assertEqual(c.metrics, py.metrics, sc.name)
                self.assertTrue(np.array_equal(c.latencies, py.latencies))
        self.assertGreater(c["tokens_rerouted"], 0)

    def test_python_policy_one_expert(self):
        r = wdmoe.replay(self.probs, SCEN[1], policy=py_quickest, name="quickest")
        t = wdmoe.replay(self.probs, SCEN[1], policy="topk")
        self.assertEqual(r.policy, "quickest")
        self.assertEqual(r["decode.experts_per_token"], 1.0)
        self.assertLess(r["decode.mean_s"], t["decode.mean_s"])

    def test_python_policy_errors(self):
        def unreachable(p, tau, available, k):
            return [int(np.flatnonzero(~available)[0])] if (~available).any() else [99]

        def raises(p, tau, available, k):
            return 1 / 0

        sc = wdmoe.Scenario.load(SCEN[0]).override(
            {"faults": [{"device": d, "kind": "down", "from_s": 0} for d in (3, 7)]})
        with self.assertRaisesRegex(wdmoe.WdmoeError,
                                    "policy unreachable: layer 0 token 0: expert 3 is "
                                    "unreachable"):
            wdmoe.replay(self.probs, sc, policy=unreachable)
        with self.assertRaises(ZeroDivisionError):
            wdmoe.replay(self.probs, sc, policy=raises)
        with self.assertRaisesRegex(wdmoe.WdmoeError, "chosen twice"):
            wdmoe.replay(self.probs, sc, policy=lambda p, tau, a, k: [0, 0])

    def test_overrides_and_bad_input(self):
        sc = wdmoe.Scenario.load(SCEN[0])
        r = wdmoe.replay(self.probs, sc.override({"policy.gamma": 1.3}), policy="wdmoe",
                         tokens=5)
        self.assertEqual(r.json["params"]["gamma"], 1.3)
        self.assertEqual(r["tokens"], 5)
        self.assertEqual(sc.data["policy"]["gamma"], 1.05)  # the original is unchanged
        with self.assertRaisesRegex(wdmoe.WdmoeError, "policy.gamma"):
            wdmoe.replay(self.probs, sc.override({"policy.gamma": 1000}))
        with self.assertRaisesRegex(wdmoe.WdmoeError, "nosuch"):
            wdmoe.replay(self.probs, sc, policy="nosuch")
        with self.assertRaisesRegex(wdmoe.WdmoeError, "unknown key|nosuch_key"):
            sc.override(nosuch_key=1).check()
        with self.assertRaises(FileNotFoundError):
            wdmoe.Scenario.load("/nonexistent/s.json")
        with self.assertRaisesRegex(wdmoe.WdmoeError, "/nonexistent/p.wdpr: cannot open"):
            wdmoe.Probs.load("/nonexistent/p.wdpr")
        with self.assertRaisesRegex(wdmoe.WdmoeError, "sum to"):
            wdmoe.Probs.from_array(np.full((2, 3, 4), 0.3), top_k=2, hidden=64, ffn=128)

    def test_probs_round_trip(self):
        a = self.probs.array()
        self.assertEqual(a.shape, self.probs.shape)
        np.testing.assert_allclose(a.sum(axis=2), 1.0, atol=1e-3)
        b = pickle.loads(pickle.dumps(self.probs))
        self.assertTrue(np.array_equal(a, b.array()))
        self.assertEqual(b.dim("hidden"), self.probs.dim("hidden"))
        c = wdmoe.Probs.from_array(a, top_k=2, hidden=4096, ffn=14336)
        path = os.path.join(self.tmp.name, "c.wdpr")
        c.save(path)
        d = wdmoe.Probs.load(path)
        self.assertTrue(np.array_equal(d.array(), a))
        self.assertEqual((d.dim("hidden"), d.dim("ffn"), d.top_k), (4096, 14336, 2))


class Sweep(unittest.TestCase):
    def test_parallel_equals_serial(self):
        kw = dict(policies=["topk", "wdmoe", py_topk], grid={"policy.gamma": [1.0, 1.2]},
                  tokens=20)
        probs = os.environ["WD_PROBS"]
        serial = wdmoe.sweep(probs, SCEN, processes=1, **kw)
        parallel = wdmoe.sweep(probs, SCEN, processes=2, **kw)
        self.assertEqual(len(serial), 3 * 2 * 3)
        self.assertEqual(serial, parallel)
        row = serial[0]
        self.assertEqual((row["scenario"], row["policy"], row["policy.gamma"]),
                         ("paper-cell", "topk", 1.0))
        for r in serial:
            if r["policy"] == "py_topk":
                c = [x for x in serial if x["policy"] == "topk" and x["scenario"] == r["scenario"]
                     and x["policy.gamma"] == r["policy.gamma"]][0]
                self.assertEqual({k: v for k, v in r.items() if k != "policy"},
                                 {k: v for k, v in c.items() if k != "policy"})
        self.assertGreaterEqual(wdmoe.default_processes(), 1)

    def test_docs_example(self):
        """docs/python.md shows bench/python/examples/sweep_gamma.py as it is,
        and the script runs: 36 replays, a PNG."""
        ex = os.path.join(SRC, "bench", "python", "examples", "sweep_gamma.py")
        with open(ex) as f:
            script = f.read()
        with open(os.path.join(SRC, "docs", "python.md")) as f:
            self.assertIn(script, f.read())
        with tempfile.TemporaryDirectory() as d:
            png = os.path.join(d, "gamma.png")
            p = subprocess.run([sys.executable, ex, os.environ["WD_PROBS"], "--repo", SRC,
                                "--out", png], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.count(" experts/token"), 3 * 6)
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    unittest.main()
