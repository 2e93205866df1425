#!/usr/bin/env bash
# The wdmoe Python package (bench/python): installed with pip into the virtual
# environment build/venv with the plotting requirements, it replays exactly as
# `wdmoe replay`, runs Python policies (equal to the C ones), sweeps on several
# processes (equal to serial), and the example of docs/python.md runs.
set -u
. "$WD_SOURCE_DIR/tests/python_env.sh"
"$venv/bin/python" "$WD_SOURCE_DIR/bench/python/tests/test_wdmoe.py" -v
