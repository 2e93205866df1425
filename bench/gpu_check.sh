#!/usr/bin/env bash
# One-shot GPU check (under 8 minutes on one H200): build the CUDA backend for
# this GPU only, run the GPU tests, then the benchmarks (random BF16 weights
# generated on the GPU, nothing downloaded). Prints a table last; writes
# gpu_bench.json, the logs and a summary under $OUT when OUT is set.
#
#   bash bench/gpu_check.sh            (from the repository root)
#   OUT=/tmp/res QUICK=1 bash bench/gpu_check.sh
#
# Environment: BUILD (build folder, default build-gpu), JOBS (default: nproc),
# CUDA_ARCH (default: from nvidia-smi, else 90), QUICK=1 (fewer repetitions),
# BUDGET (seconds for the whole check, default 450: each step's timeout is cut
# to what is left, so the summary is always written).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-$(nproc)}
OUTDIR=${OUT:-$BUILD/gpu-check}
mkdir -p "$OUTDIR"
start=$(date +%s)
say() { printf '[gpu_check %3ds] %s\n' $(( $(date +%s) - start )) "$*"; }
BUDGET=${BUDGET:-450}
# timeout for a step: its own cap, or what is left of BUDGET (at least 10 s)
left() { local l=$(( start + BUDGET - $(date +%s) )); [ $l -lt 10 ] && l=10; echo $(( l < $1 ? l : $1 )); }
# pkg-config: the GPU image may lack it; bring Debian's pkgconf along in .debs/
# (apt-get download pkgconf-bin libpkgconf3), unpacked under /tmp/pkgconf
if ! command -v pkg-config >/dev/null && ls .debs/pkgconf-bin*.deb >/dev/null 2>&1; then
  for f in .debs/pkgconf-bin*.deb .debs/libpkgconf*.deb; do dpkg -x "$f" /tmp/pkgconf; done
  ln -sf pkgconf /tmp/pkgconf/usr/bin/pkg-config
  export PATH=/tmp/pkgconf/usr/bin:$PATH
  export LD_LIBRARY_PATH=/tmp/pkgconf/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "pkg-config: using the packages in .debs (unpacked to /tmp/pkgconf)"
fi
for tool in cmake pkg-config; do
  command -v $tool >/dev/null || { echo "gpu_check: $tool not found on this host"; exit 1; }
done

if [ -z "${CUDA_ARCH:-}" ]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  CUDA_ARCH=${cap:-90}
fi
export PATH=/usr/local/cuda/bin:$PATH

# json-c: GPU hosts often lack libjson-c-dev and cannot reach a package registry.
# Bring the Debian packages along in .debs/ (on a networked machine:
#   mkdir -p .debs && (cd .debs && apt-get download libjson-c-dev libjson-c5))
#   and for pkg-config: apt-get download pkgconf-bin libpkgconf3)
# and they are unpacked under /tmp (never over /).
if ! pkg-config --exists json-c 2>/dev/null && ls .debs/libjson-c*.deb >/dev/null 2>&1; then
  for f in .debs/libjson-c*.deb; do dpkg -x "$f" /tmp/jsonc; done
  pcdir=$(dirname "$(find /tmp/jsonc -name json-c.pc | head -1)")
  # Debian's json-c.pc spells libdir/includedir out in full (/usr/...): move them all
  sed -i "s|=/usr|=/tmp/jsonc/usr|" "$pcdir/json-c.pc"
  export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$(dirname "$pcdir")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "json-c: using the packages in .debs (unpacked to /tmp/jsonc)"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'

say "configure (sm_${CUDA_ARCH}, $JOBS jobs)"
if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWDMOE_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}-real" >"$OUTDIR/configure.log" 2>&1; then
  tail -30 "$OUTDIR/configure.log"; say "configure FAILED"; exit 1
fi
say "build"
if ! timeout $(left 300) cmake --build "$BUILD" -j "$JOBS" --target test_gpu_ops test_gpu_model test_gpu_quant test_sched_gpu gpu_bench wdmoe \
     >"$OUTDIR/build.log" 2>&1; then
  grep -E "error|Error" "$OUTDIR/build.log" | head -30; say "build FAILED"; exit 1
fi

say "GPU tests"
timeout $(left 180) ctest --test-dir "$BUILD" -R gpu --output-on-failure -V >"$OUTDIR/tests.log" 2>&1
test_rc=$?
grep -E "rel L2|agree|synthetic|bit-exact|DIFFERS|refused|SKIPPED|NOT TESTED|CUDA graphs|set_pos|GPUs|CHECK failed|checks,|Passed|Failed|\*\*\*" "$OUTDIR/tests.log" | sed 's/^[0-9]*: //' | head -200

say "wdmoe generate --backend cuda (stories260k over paper-cell, graphs on and off)"
cli_rc=0
for g in "" --no-cuda-graphs; do
  timeout $(left 60) "$BUILD/wdmoe" generate --backend cuda $g --model weights/models/stories260k/moe4-top2 \
    --prompt "Once upon a time" -n 60 --scenario bench/scenarios/paper-cell.json >>"$OUTDIR/cli.log" 2>&1 || cli_rc=1
done
tail -4 "$OUTDIR/cli.log"

say "benchmarks"
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
BENCH_ARGS=(--json "$OUTDIR/gpu_bench.json")
[ "${NGPU:-1}" -gt 1 ] && BENCH_ARGS+=(--gpus "$NGPU")
[ "${QUICK:-0}" = 1 ] && BENCH_ARGS+=(--quick --decode 16 --prefill 256)
timeout $(left 240) "$BUILD/gpu_bench" "${BENCH_ARGS[@]}" >"$OUTDIR/bench.log" 2>&1
bench_rc=$?
[ $bench_rc -ne 0 ] && tail -20 "$OUTDIR/bench.log"

# ---- summary: the table comes last ----
{
  echo
  echo "== wdmoe GPU check ($(date -u +%FT%TZ), $(( $(date +%s) - start )) s) =="
  grep -E "^GPU" "$OUTDIR/bench.log" | head -1
  echo "tests: $( [ $test_rc -eq 0 ] && echo PASSED || echo "FAILED (rc $test_rc, see tests.log)")"
  grep -E "tests passed|tests failed" "$OUTDIR/tests.log" | tail -1
  echo "cli: $( [ $cli_rc -eq 0 ] && echo ok || echo "FAILED (see cli.log)")"
  echo "bench: $( [ $bench_rc -eq 0 ] && echo ok || echo "FAILED (rc $bench_rc, see bench.log)")"
  sed -n '/^metric /,$p' "$OUTDIR/bench.log" | grep -v '^wrote '
} | tee "$OUTDIR/summary.txt"
[ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $cli_rc -eq 0 ]
