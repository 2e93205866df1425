#!/usr/bin/env bash
# Run HERE (a machine with Debian's package registry), before lending the
# working tree to a GPU host that cannot fetch anything: downloads the Debian
# packages bench/gpu_check.sh may need there into .debs/ (gitignored; name
# `.debs` in the device call's carry list).
#
#   bash bench/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(libjson-c-dev libjson-c5 pkgconf-bin libpkgconf3)
mkdir -p .debs
missing=()
for p in "${pkgs[@]}"; do ls .debs/"${p}"_*.deb >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if ! (cd .debs && apt-get download "${missing[@]}" >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    (cd .debs && apt-get download "${missing[@]}") ||
      { echo "gpu_prepare: apt-get download ${missing[*]} failed (no package registry?)" >&2; exit 1; }
  fi
fi
ls -1 .debs/*.deb | sed 's/^/gpu_prepare: /'
echo "gpu_prepare: carry .debs with the device call; it is $(du -sh .debs | cut -f1)"
