"""wdmoe.sweep on a Dask cluster: a LocalCluster of two worker processes on
this machine gives exactly the rows of the same sweep run in this process,
Python policies included. Run by tests/test_python_dask.sh (ctest)."""
import os
import sys
import unittest

import numpy as np
from dask.distributed import Client, LocalCluster

import wdmoe

SRC = os.environ["WD_SOURCE_DIR"]
SCEN = [os.path.join(SRC, "bench", "scenarios", n + ".json")
        for n in ("paper-cell", "att-lte-driving", "tmobile-lte-short")]


def py_topk(p, tau, available, top_k):
    top = [int(e) for e in np.argsort(-p, kind="stable")[:top_k] if available[e]]
    return top or [int(np.argmax(np.where(available, p, -1.0)))]


class DaskSweep(unittest.TestCase):
    def test_local_cluster_equals_serial(self):
        kw = dict(policies=["topk", "wdmoe", py_topk], grid={"policy.gamma": [1.0, 1.1]},
                  tokens=20)
        probs = wdmoe.Probs.load(os.environ["WD_PROBS"])
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            self.assertEqual(len(client.scheduler_info()["workers"]), 2)
            rows = wdmoe.sweep(probs, SCEN, client=client, **kw)
            # both workers ran replays
            ran = client.run(lambda: len(sys.modules["wdmoe.sweep"]._cache))
            self.assertEqual(sorted(ran.values()), [1, 1])
        self.assertEqual(rows, wdmoe.sweep(probs, SCEN, processes=1, **kw))
        self.assertEqual(len(rows), 3 * 2 * 3)


if __name__ == "__main__":
    unittest.main()
