#!/usr/bin/env bash
# Sets everything up, builds, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> testing"
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
