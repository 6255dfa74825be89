#!/usr/bin/env bash
# Sets everything up, builds, and runs the main job. Until LoRA training of language models lands,
# the main job is the engine's LoRA demo: a frozen layer, a rank-r adapter trained with AdamW.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> main job"
./build/lora demo "$@"
