#!/usr/bin/env bash
# Sets everything up, builds, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> testing"
# Tests run side by side on the same cores: OpenMP threads that spin while waiting for work would
# take the cores from the other test processes, so they sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
