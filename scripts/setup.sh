#!/usr/bin/env bash
# Installs every Debian package loracpp needs and builds it (Release, optimised for this CPU).
# Usage: bash scripts/setup.sh [extra cmake arguments, e.g. -DLORACPP_PORTABLE=ON]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libopenblas-openmp-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libgtest-dev libbenchmark-dev
  bible-kjv fortunes fortunes-min
)
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
missing=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null | grep -vc "install ok installed" || true)
listed=$(dpkg-query -W -f='${Package}\n' "${packages[@]}" 2>/dev/null | wc -l || true)
if [ "$missing" != "0" ] || [ "$listed" != "${#packages[@]}" ]; then
  echo "==> installing Debian packages"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

echo "==> building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
