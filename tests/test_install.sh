#!/usr/bin/env bash
# `cmake --install` into a temporary prefix, then a program outside the tree
# (tests/data/install) finds the package with find_package(wdmoe), links
# libwdmoe, replays a shipped scenario from share/wdmoe; its mean latency
# equals the installed `wdmoe replay` on the probabilities it saved.
set -u
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_install_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
cache="$WD_BINARY_DIR/CMakeCache.txt"
cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$cache")
flags=""
grep -q '^WDMOE_SANITIZE:BOOL=ON' "$cache" && flags="-fsanitize=address,undefined"

cmake --install "$WD_BINARY_DIR" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 || { bad "cmake --install"; cat "$tmp/install.log"; }
p="$tmp/prefix"
for f in bin/wdmoe include/wdmoe.h lib/libwdmoe.so lib/cmake/wdmoe/wdmoeConfig.cmake \
    lib/cmake/wdmoe/wdmoeConfigVersion.cmake lib/cmake/wdmoe/wdmoeTargets.cmake \
    libexec/wdmoe/synth_model share/wdmoe/scenarios/att-lte-driving.json \
    share/wdmoe/traces/ATT-LTE-driving-2016.down share/doc/wdmoe/LICENSE; do
    [ -e "$p/$f" ] && ok || bad "not installed: $f"
done
cmake -S "$WD_SOURCE_DIR/tests/data/install" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$p" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    >"$tmp/cfg.log" 2>&1 || { bad "find_package(wdmoe) failed"; cat "$tmp/cfg.log"; }
cmake --build "$tmp/consumer" >"$tmp/build.log" 2>&1 || { bad "consumer build"; cat "$tmp/build.log"; }
# a version the package does not satisfy is refused
sed 's/find_package(wdmoe 0.1 REQUIRED)/find_package(wdmoe 9.0 REQUIRED)/' \
    "$WD_SOURCE_DIR/tests/data/install/CMakeLists.txt" >"$tmp/v9.txt"
mkdir -p "$tmp/v9" && cp "$tmp/v9.txt" "$tmp/v9/CMakeLists.txt" && cp "$WD_SOURCE_DIR/tests/data/install/consumer.c" "$tmp/v9/"
if cmake -S "$tmp/v9" -B "$tmp/v9/b" -DCMAKE_PREFIX_PATH="$p" >"$tmp/v9.log" 2>&1; then
    bad "find_package(wdmoe 9.0) accepted"
else
    grep -q "version: 0.1.0" "$tmp/v9.log" && ok || bad "version refusal: $(cat "$tmp/v9.log")"
fi
out=$("$tmp/consumer/consumer" "$p/share/wdmoe/scenarios/att-lte-driving.json" "$tmp/p.wdpr" 2>&1)
echo "$out"
mean=$(echo "$out" | sed -n 's/.* mean //p')
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$cache")
case "$out" in "wdmoe $version api 1 mean "*) ok ;; *) bad "consumer: $out (want version $version)" ;; esac
"$p/bin/wdmoe" replay --probs "$tmp/p.wdpr" --scenario "$p/share/wdmoe/scenarios/att-lte-driving.json" \
    --policy topk --out "$tmp/r.json" >/dev/null 2>"$tmp/r.err" || { bad "installed wdmoe replay"; cat "$tmp/r.err"; }
cli=$(python3 -c "import json,sys; print(repr(json.load(open(sys.argv[1]))['runs'][0]['summary']['decode']['mean_s']))" "$tmp/r.json" 2>/dev/null)
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if a > 0 and a == b else 1)" "${mean:-0}" "${cli:-0}" &&
    ok || bad "libwdmoe mean $mean != wdmoe replay $cli"
echo "test_install: $pass passed, $fail failed"
[ $fail -eq 0 ]
