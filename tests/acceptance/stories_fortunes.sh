#!/usr/bin/env bash
# The LoRA issue's acceptance recipe on a real model: stories260K adapted to Debian's fortunes
# (10% of the entries held out), r=8, alpha=16 on q,k,v,o, AdamW at 1e-3, batches of 16 sequences
# of 256 tokens, 20 warm-up steps then cosine decay, 300 steps. Passes when held-out perplexity
# drops by at least 65% and the base files are byte-identical afterwards. Prints the figures.
#   tests/acceptance/stories_fortunes.sh LORA_BINARY SHARED_DIR WORK_DIR
set -euo pipefail
lora=$1
model_dir=$2/models/stories260K
work=$3
rm -rf "$work"
mkdir -p "$work"
[ -d /usr/share/games/fortunes ] || { echo "fortunes are not installed (apt-get install fortunes fortunes-min)"; exit 1; }
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && { cat "$f"; echo "%"; }
done > "$work/fortunes.txt"
sums_before=$(sha256sum "$model_dir"/stories260K.bin "$model_dir"/tok512.bin)
field() { echo "$1" | grep -o "\"$2\":[-0-9.e+]*" | cut -d: -f2; }
before=$("$lora" eval --model "$model_dir/stories260K.bin" --data "$work/fortunes.txt" --validation-fraction 0.1 \
  --seed 0 --seq-len 256 --batch-size 16 2>/dev/null | tail -n 1)
"$lora" train --model "$model_dir/stories260K.bin" --data "$work/fortunes.txt" --out "$work/adapter" \
  --r 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj --lr 1e-3 --batch-size 16 --seq-len 256 \
  --warmup 20 --schedule cosine --steps 300 --validation-fraction 0.1 --seed 0 --eval-every 100 > "$work/train.json"
after=$("$lora" eval --model "$model_dir/stories260K.bin" --adapter "$work/adapter" --data "$work/fortunes.txt" \
  --validation-fraction 0.1 --seed 0 --seq-len 256 --batch-size 16 2>/dev/null | tail -n 1)
sums_after=$(sha256sum "$model_dir"/stories260K.bin "$model_dir"/tok512.bin)
echo "before: $before"
echo "after:  $after"
[ "$sums_before" = "$sums_after" ] || { echo "FAIL: the base files changed"; exit 1; }
awk -v b="$(field "$before" perplexity)" -v a="$(field "$after" perplexity)" 'BEGIN {
  drop = 100 * (1 - a / b)
  printf "held-out perplexity %.2f -> %.2f: %.1f%% lower (goal: at least 65%%)\n", b, a, drop
  exit drop >= 65 ? 0 : 1
}'
