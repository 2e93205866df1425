#!/usr/bin/env bash
# One-shot GPU check (under 8 minutes on one H200): build the CUDA backend for
# this GPU only, run the GPU tests (a failing one again under compute-sanitizer),
# `wdmoe generate --backend cuda` (graphs on and off, and with green-context
# partitions), then the benchmarks (random BF16 weights generated on the GPU,
# nothing downloaded). Prints a table last; writes gpu_bench.json, the logs and
# summary.txt under $OUT when OUT is set (8 files at most).
#
#   bash bench/gpu_prepare.sh          (here, with network: fills .debs/)
#   bash bench/gpu_check.sh            (there, from the repository root)
#   OUT=/tmp/res QUICK=1 bash bench/gpu_check.sh
#   DRY_RUN=1 bash bench/gpu_check.sh  (no GPU needed: every step that can run
#                                       without one; tests/test_gpu_check_dry.sh)
#
# Environment: BUILD (build folder, default build-gpu), JOBS (default: nproc),
# CUDA_ARCH (default: from nvidia-smi, else 90), QUICK=1 (fewer repetitions),
# BUDGET (seconds for the whole check, default 450: each step's timeout is cut
# to what is left, so the summary is always written), DRY_RUN=1.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-$(nproc)}
OUTDIR=${OUT:-$BUILD/gpu-check}
DRY_RUN=${DRY_RUN:-0}
mkdir -p "$OUTDIR"
start=$(date +%s)
say() { printf '[gpu_check %3ds] %s\n' $(( $(date +%s) - start )) "$*"; }
BUDGET=${BUDGET:-450}
# timeout for a step: its own cap, or what is left of BUDGET (at least 10 s)
left() { local l=$(( start + BUDGET - $(date +%s) )); [ $l -lt 10 ] && l=10; echo $(( l < $1 ? l : $1 )); }
export PATH=/usr/local/cuda/bin:$PATH

# ---- packages brought along in .debs/ (bench/gpu_prepare.sh), unpacked under
# /tmp/gpu-check-debs (never over /), before any tool check ----
DEBROOT=/tmp/gpu-check-debs
CMAKE_EXTRA=()
unpack() { for f in "$@"; do [ -f "$f" ] && dpkg -x "$f" "$DEBROOT"; done; }
if ! command -v pkg-config >/dev/null && ls .debs/pkgconf-bin_*.deb >/dev/null 2>&1; then
  unpack .debs/pkgconf-bin_*.deb .debs/libpkgconf3_*.deb
  ln -sf pkgconf "$DEBROOT/usr/bin/pkg-config"
  export PATH=$DEBROOT/usr/bin:$PATH
  export LD_LIBRARY_PATH=$DEBROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG=$DEBROOT/usr/bin/pkgconf
  echo "pkg-config: from .debs (unpacked to $DEBROOT)"
fi
if ! pkg-config --exists json-c 2>/dev/null && [ ! -f /usr/include/json-c/json.h ] &&
   ls .debs/libjson-c*.deb >/dev/null 2>&1; then
  unpack .debs/libjson-c*.deb
  pcdir=$(dirname "$(find "$DEBROOT" -name json-c.pc | head -1)")
  # Debian's json-c.pc spells libdir/includedir out in full (/usr/...): move them all
  sed -i "s|=/usr|=$DEBROOT/usr|" "$pcdir/json-c.pc"
  export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$(dirname "$pcdir")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CMAKE_EXTRA+=("-DCMAKE_PREFIX_PATH=$DEBROOT/usr")  # CMake's fallback without pkg-config
  echo "json-c: from .debs (unpacked to $DEBROOT)"
fi
command -v cmake >/dev/null || { echo "gpu_check: cmake not found on this host"; exit 1; }
command -v pkg-config >/dev/null || echo "gpu_check: no pkg-config: CMake looks for json-c directly"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

if [ -z "${CUDA_ARCH:-}" ]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  CUDA_ARCH=${cap:-90}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
[ "$DRY_RUN" = 1 ] && echo "DRY RUN: no GPU steps (tests must skip, generate must refuse cleanly)"

say "configure (sm_${CUDA_ARCH}, $JOBS jobs${GEN:+, Ninja})"
if ! cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DWDMOE_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}-real" "${CMAKE_EXTRA[@]}" >"$OUTDIR/configure.log" 2>&1; then
  tail -30 "$OUTDIR/configure.log"; say "configure FAILED"; exit 1
fi
say "build"
if ! timeout $(left 300) cmake --build "$BUILD" -j "$JOBS" --target test_gpu_ops test_gpu_model test_gpu_quant test_gpu_moefy gpu_bench wdmoe \
     >"$OUTDIR/build.log" 2>&1; then
  grep -E "error|Error" "$OUTDIR/build.log" | head -30; say "build FAILED"; exit 1
fi

say "GPU tests (ctest -L gpu)"
timeout $(left 180) ctest --test-dir "$BUILD" -L gpu --output-on-failure -V >"$OUTDIR/tests.log" 2>&1
test_rc=$?
grep -E "rel L2|agree|synthetic|bit-exact|DIFFERS|refused|SKIPPED|NOT TESTED|CUDA graphs|set_pos|GPUs|green|cuBLAS|delay|CHECK failed|checks,|Passed|Failed|Skipped|\*\*\*" \
  "$OUTDIR/tests.log" | sed 's/^[0-9]*: //' | head -200
if [ "$DRY_RUN" = 1 ]; then
  # without a GPU every GPU test must say it skipped, and none may fail
  grep -q "Failed\|\*\*\*Exception" "$OUTDIR/tests.log" && test_rc=1
  [ "$(grep -c 'Skipped' "$OUTDIR/tests.log")" -ge 3 ] || test_rc=1
fi
san_note=""
if [ $test_rc -ne 0 ] && [ "$DRY_RUN" != 1 ]; then
  # each failing test once more, under compute-sanitizer memcheck where it runs,
  # else with launches made synchronous (the failing kernel is then named)
  for t in $(sed -n 's/^.*[0-9]* - \(test_gpu_[a-z_]*\) (Failed).*$/\1/p' "$OUTDIR/tests.log" | sort -u); do
    exe=$(find "$BUILD" -name "$t" -type f -perm -u+x | head -1)
    [ -n "$exe" ] || continue
    if command -v compute-sanitizer >/dev/null; then
      say "rerun $t under compute-sanitizer --tool memcheck"
      (cd "$(dirname "$exe")" && timeout $(left 150) compute-sanitizer --tool memcheck \
         --print-limit 20 "$exe") >>"$OUTDIR/sanitizer.log" 2>&1
    fi
    if ! grep -q "ERROR SUMMARY" "$OUTDIR/sanitizer.log" 2>/dev/null ||
       grep -q "Device not supported\|error 999" "$OUTDIR/sanitizer.log"; then
      say "rerun $t with CUDA_LAUNCH_BLOCKING=1"
      (cd "$(dirname "$exe")" && CUDA_LAUNCH_BLOCKING=1 timeout $(left 90) "$exe") \
        >>"$OUTDIR/sanitizer.log" 2>&1
    fi
  done
  [ -f "$OUTDIR/sanitizer.log" ] && { grep -E "ERROR SUMMARY|Invalid|CHECK failed" "$OUTDIR/sanitizer.log" | head -20; san_note=" (reruns in sanitizer.log)"; }
fi

say "wdmoe generate --backend cuda (stories260k: paper-cell with graphs on and off; gpu-partitions)"
cli_rc=0
M=weights/models/stories260k/moe4-top2
runs=("--scenario bench/scenarios/paper-cell.json" "--no-cuda-graphs --scenario bench/scenarios/paper-cell.json"
      "--scenario bench/scenarios/gpu-partitions.json")
for args in "${runs[@]}"; do
  echo "== wdmoe generate --backend cuda $args" >>"$OUTDIR/cli.log"
  # shellcheck disable=SC2086
  timeout $(left 60) "$BUILD/wdmoe" generate --backend cuda $args --model $M \
    --prompt "Once upon a time" -n 60 >>"$OUTDIR/cli.log" 2>&1
  rc=$?
  if [ "$DRY_RUN" = 1 ]; then  # no GPU: one clear line, exit 1, never a crash
    [ $rc -eq 1 ] && tail -1 "$OUTDIR/cli.log" | grep -q "no CUDA device" || cli_rc=1
  else
    [ $rc -eq 0 ] || cli_rc=1
  fi
done
grep -E "green context|CUDA graphs|agreement|wdmoe generate:" "$OUTDIR/cli.log" | sort | uniq -c | head -12

NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
bench_rc=0
if [ "$DRY_RUN" = 1 ]; then
  say "benchmarks: gpu_bench --help only (dry run)"
  "$BUILD/gpu_bench" --help >"$OUTDIR/bench.log" 2>&1 || bench_rc=$?
else
  say "benchmarks"
  BENCH_ARGS=(--json "$OUTDIR/gpu_bench.json")
  [ "${NGPU:-1}" -gt 1 ] && BENCH_ARGS+=(--gpus "$NGPU")
  [ "${QUICK:-0}" = 1 ] && BENCH_ARGS+=(--quick --decode 16 --prefill 256)
  timeout $(left 240) "$BUILD/gpu_bench" "${BENCH_ARGS[@]}" >"$OUTDIR/bench.log" 2>&1
  bench_rc=$?
  [ $bench_rc -ne 0 ] && tail -20 "$OUTDIR/bench.log"
fi

# ---- summary: the table comes last ----
{
  echo
  echo "== wdmoe GPU check$( [ "$DRY_RUN" = 1 ] && echo " (DRY RUN)") ($(date -u +%FT%TZ), $(( $(date +%s) - start )) s, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')) =="
  grep -E "^GPU" "$OUTDIR/bench.log" | head -1
  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | sed 's/^/driver: /'
  echo "tests: $( [ $test_rc -eq 0 ] && echo PASSED || echo "FAILED (rc $test_rc, see tests.log)$san_note")"
  grep -E "tests passed|tests failed" "$OUTDIR/tests.log" | tail -1
  echo "cli: $( [ $cli_rc -eq 0 ] && echo ok || echo "FAILED (see cli.log)")"
  echo "bench: $( [ $bench_rc -eq 0 ] && echo ok || echo "FAILED (rc $bench_rc, see bench.log)")"
  sed -n '/^metric /,$p' "$OUTDIR/bench.log" | grep -v '^wrote '
} | tee "$OUTDIR/summary.txt"
[ $test_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $cli_rc -eq 0 ]
