#!/usr/bin/env bash
# wdmoe.sweep on Dask distributed (the optional dependency): a LocalCluster of two
# worker processes on this machine gives the rows of the serial sweep. Skipped,
# visibly, where dask cannot be installed (no package index reachable).
set -u
dask_ok=1
. "$WD_SOURCE_DIR/tests/python_env.sh" # (the venv itself is required)
bash "$WD_SOURCE_DIR/bench/python/setup_venv.sh" "$venv" --dask >"$tmp/dask.log" 2>&1 || dask_ok=0
if [ $dask_ok = 0 ] || ! "$venv/bin/python" -c "import dask.distributed" 2>/dev/null; then
    echo "SKIPPED: dask[distributed] could not be installed into $venv:"
    tail -3 "$tmp/dask.log"
    exit 77
fi
"$venv/bin/python" "$WD_SOURCE_DIR/bench/python/tests/test_dask.py" -v
