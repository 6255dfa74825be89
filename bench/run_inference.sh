#!/usr/bin/env bash
# Inference side by side with the peer (../shared/peers/torch_lora_bench.py --mode infer), same
# shapes, same threads, in one run; prints a Markdown table. Needs the build and Debian's
# python3-torch (apt-get install python3-torch libopenblas0-pthread).
#   bash bench/run_inference.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
peer=../shared/peers/torch_lora_bench.py
ours=build/bench/bench_llama
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }

echo "| workload | loracpp tokens/s | peer tokens/s | ratio | loracpp peak RSS MB | peer peak RSS MB |"
echo "|---|---|---|---|---|---|"
for preset in tiny small; do
  a=$($ours --preset "$preset" --mode forward --steps 3 --threads "$threads")
  b=$(/usr/bin/python3 "$peer" --preset "$preset" --mode infer --steps 3 --threads "$threads")
  ta=$(echo "$a" | field tokens_per_s); tb=$(echo "$b" | field tokens_per_s)
  echo "| forward, $preset preset (f32) | $ta | $tb | $(python3 -c "print(f'{$ta/$tb:.2f}x')") | $(echo "$a" | field peak_rss_mb) | $(echo "$b" | field peak_rss_mb) |"
done
g=$($ours --model ../shared/models/stories260K/stories260K.bin --mode generate --tokens 255 --threads "$threads")
echo "| generation, stories260K (KV cache) | $(echo "$g" | field tokens_per_s) | no generation mode | | $(echo "$g" | field peak_rss_mb) | |"
g=$($ours --preset small --mode generate --tokens 64 --threads "$threads")
echo "| generation, small preset (KV cache) | $(echo "$g" | field tokens_per_s) | no generation mode | | $(echo "$g" | field peak_rss_mb) | |"
