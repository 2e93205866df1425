#!/usr/bin/env bash
# bench/gpu_check.sh in its dry-run mode (DRY_RUN=1), so the one-shot GPU
# check never meets its first bug on a lent GPU: configure and build the CUDA
# backend for sm_90 in a folder of its own, GPU tests that must all skip (none
# may fail), `wdmoe generate --backend cuda` that must refuse with one line
# ("no CUDA device") and exit 1 for each scenario, gpu_bench --help, and the
# summary. Skipped without nvcc, and in the sanitizer build (the default build
# covers it).
set -u
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
[ -n "$nvcc" ] || { echo "SKIPPED: no nvcc on this machine"; exit 77; }
grep -q "WDMOE_SANITIZE:BOOL=ON" "$WD_BINARY_DIR/CMakeCache.txt" 2>/dev/null &&
  { echo "SKIPPED: sanitizer build (the default build runs the dry run)"; exit 77; }
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "SKIPPED: a GPU is present: run bench/gpu_check.sh itself"; exit 77
fi
dir="$WD_BINARY_DIR/gpu-check-dry"
rm -rf "$dir/out"
out=$(DRY_RUN=1 BUILD="$dir" OUT="$dir/out" JOBS=2 CUDA_ARCH=90 BUDGET=500 \
      bash "$WD_SOURCE_DIR/bench/gpu_check.sh" 2>&1)
rc=$?
echo "$out" | tail -20
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAILED: $2"; fi; }
check '[ $rc -eq 0 ]' "gpu_check.sh DRY_RUN=1 exited $rc"
check '[ -s "$dir/out/summary.txt" ] && grep -q "DRY RUN" "$dir/out/summary.txt"' "no summary.txt"
check 'grep -q "^tests: PASSED" "$dir/out/summary.txt"' "GPU tests did not all skip"
check '[ "$(grep -c "no CUDA device" "$dir/out/cli.log")" -eq 3 ]' "generate --backend cuda did not refuse cleanly 3 times"
check 'grep -q "usage: gpu_bench" "$dir/out/bench.log"' "gpu_bench --help"
for f in configure.log build.log tests.log cli.log bench.log summary.txt; do
  check '[ -f "$dir/out/$f" ]' "missing $f"
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
