# Sourced by the Python tests (test_python*.sh): skip where Python cannot load
# this build's libwdmoe, create/update the virtual environment build/venv
# (bench/python/setup_venv.sh), record router probabilities with the CLI.
# Sets: venv, tmp, WDMOE_LIBRARY, WD_PROBS, WD_VERSION.
lib="$WD_BINARY_DIR/libwdmoe.so"
cache="$WD_BINARY_DIR/CMakeCache.txt"
if grep -q '^WDMOE_SANITIZE:BOOL=ON' "$cache" || grep -q '^WDMOE_FUZZ:BOOL=ON' "$cache"; then
    # a sanitizer runtime must be the first library of the process: not a python3
    echo "SKIPPED: Python cannot load a libwdmoe built with sanitizers (test_api covers the C API here)"
    exit 77
fi
[ -f "$lib" ] || { echo "FAILED: $lib not built"; exit 1; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 is not installed"; exit 77; }
venv="$WD_BINARY_DIR/venv"
bash "$WD_SOURCE_DIR/bench/python/setup_venv.sh" "$venv" || {
    echo "FAILED: could not create the Python environment $venv (see above)"; exit 1; }
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_python_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export WDMOE_LIBRARY="$lib" WD_PROBS="$tmp/s.wdpr"
export WD_VERSION=$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$cache")
# real router probabilities: 48 decode tokens of the shipped stories260k MoE
"$WDMOE" generate --model "$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2" \
    --scenario "$WD_SOURCE_DIR/bench/scenarios/paper-cell.json" -n 48 \
    --record-probs "$WD_PROBS" >/dev/null 2>"$tmp/gen.err" || {
    echo "FAILED: wdmoe generate --record-probs"; cat "$tmp/gen.err"; exit 1; }
cd "$tmp" # not the checkout: the installed package is what is imported
