#!/usr/bin/env bash
# Create (or bring up to date) a Python virtual environment with the plotting
# requirements (bench/requirements.txt) and the wdmoe Python package
# (bench/python), plus Dask with --dask. Run by `bash .ci/setup` (build/venv)
# and by the Python tests. Nothing is installed outside the environment.
#
#   bash bench/python/setup_venv.sh [VENV (default build/venv)] [--dask]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$root/build/venv}
[ "${1:-}" = --dask ] && venv=$root/build/venv
dask=0
for a in "$@"; do [ "$a" = --dask ] && dask=1; done
py=${PYTHON:-python3}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock" # one setup at a time (ctest runs the Python tests in parallel)
flock 9
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" || {
        echo "setup_venv: '$py -m venv' failed (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# reinstall only when the requirements or the package changed
stamp=$(cat "$root/bench/requirements.txt" $(find "$root/bench/python/wdmoe" "$root/bench/python/pyproject.toml" -type f -name '*.py' -o -name '*.toml' | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.wdmoe-stamp" 2>/dev/null)" != "$stamp" ]; then
    pip install -r "$root/bench/requirements.txt"
    # from a copy: pip builds in the source folder, which stays clean (or read-only)
    src=$(mktemp -d)
    cp -r "$root/bench/python/pyproject.toml" "$root/bench/python/README.md" \
        "$root/bench/python/wdmoe" "$src/"
    pip install --no-deps --force-reinstall "$src" || { rm -rf "$src"; exit 1; }
    rm -rf "$src"
    echo "$stamp" >"$venv/.wdmoe-stamp"
fi
if [ $dask = 1 ] && ! "$venv/bin/python" -c "import dask.distributed" 2>/dev/null; then
    pip install "dask[distributed]>=2022.1"
fi
