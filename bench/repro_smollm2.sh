#!/usr/bin/env bash
# The paper's five experiments on the MoEfied SmolLM2-135M in one command, on one
# thread, one run at a time (about an hour on one core of a laptop-class CPU):
# tables, CSV, JSON and plots into docs/experiments/, raw runs into
# bench/results/smollm2/ (a rerun reuses them). Arguments go to
# bench/repro_smollm2.py (--help: what runs, the limits, the stages).
#
#   bash bench/repro_smollm2.sh [--items N] [--seeds N] [--stages ...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; echo; ;; esac
# build/venv (bash .ci/setup) has matplotlib for the plots; else $PYTHON or python3
py=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x "$here/../build/venv/bin/python" ] && py="$here/../build/venv/bin/python"
exec "$py" "$here/repro_smollm2.py" "$@"
