#!/usr/bin/env bash
# The main job: the five steps of LoRA on a fresh machine, in a few minutes on 2 cores.
#   1. a base model: no pretrained language model comes with Debian, so one is pretrained from
#      scratch (full training, byte-level) on the King James Bible (package bible-kjv);
#   2. a dataset: Debian's fortunes, 10% of the entries held out;
#   3. a LoRA adapter (r=8 on q,k,v,o) trained on the fortunes, the base frozen;
#   4. validation: held-out perplexity and generations before and after;
#   5. deployment: the adapter's size against the base's, and a merge whose output is checked.
# Usage: bash scripts/run.sh [--model MODEL]   (with --model, that model is adapted instead)
set -euo pipefail
cd "$(dirname "$0")/.."
model=""
if [ "${1:-}" = "--model" ]; then model="$2"; fi
bash scripts/setup.sh
lora=build/lora
work=build/main-job
mkdir -p "$work"
start=$(date +%s)

echo "==> data"
if [ ! -s "$work/fortunes.txt" ]; then
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && { cat "$f"; echo "%"; }
  done > "$work/fortunes.txt.tmp"
  mv "$work/fortunes.txt.tmp" "$work/fortunes.txt"
fi
echo "fortunes: $(grep -c '^%$' "$work/fortunes.txt") entries"

if [ -z "$model" ]; then
  echo "==> 1. pretraining a small base model from scratch on the King James Bible"
  if [ ! -s "$work/kjv.txt" ]; then
    # One document per chapter: verse numbers dropped, chapters separated by blank lines.
    bible Gen1:1-Rev22:21 | sed -E 's/^ +[0-9]+ //' > "$work/kjv.txt.tmp"
    mv "$work/kjv.txt.tmp" "$work/kjv.txt"
  fi
  $lora init --config scripts/main_model.json --out "$work/base-init" --seed 1
  $lora train --full --model "$work/base-init" --data "$work/kjv.txt" --out "$work/base" --overwrite \
    --steps 800 --batch-size 16 --seq-len 128 --lr 3e-3 --warmup 30 --schedule cosine --min-lr-ratio 0.1 \
    --weight-decay 0.01 --validation-fraction 0.02 --eval-batches 20 --seed 1 > "$work/pretrain.json"
  echo "pretraining: $(cat "$work/pretrain.json")"
  model="$work/base"
fi

echo "==> 2-4. LoRA on the fortunes, base frozen"
eval_args=(--data "$work/fortunes.txt" --validation-fraction 0.1 --seed 7 --seq-len 128)
before=$($lora eval --model "$model" "${eval_args[@]}" 2>/dev/null | tail -n 1)
echo "held-out perplexity before: $before"
echo "--- generation before (base model):"
$lora generate --model "$model" --prompt "The" --temperature 0.8 --top-p 0.9 --seed 3 -n 160 2>/dev/null
$lora train --model "$model" --data "$work/fortunes.txt" --out "$work/adapter" --overwrite \
  --r 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj --steps 300 --batch-size 16 --seq-len 128 \
  --lr 3e-3 --warmup 20 --validation-fraction 0.1 --eval-every 100 --eval-batches 20 --seed 7 > "$work/lora.json"
after=$($lora eval --model "$model" --adapter "$work/adapter" "${eval_args[@]}" 2>/dev/null | tail -n 1)
echo "held-out perplexity after:  $after"
echo "--- generation after (base + adapter):"
$lora generate --model "$model" --adapter "$work/adapter" --prompt "The" --temperature 0.8 --top-p 0.9 --seed 3 -n 160 2>/dev/null

echo "==> 5. deploy"
adapter_bytes=$(stat -c %s "$work/adapter/adapter_model.safetensors")
base_bytes=$(du -cb "$model" | tail -n 1 | cut -f1)
echo "adapter: $adapter_bytes bytes; base model: $base_bytes bytes ($(awk -v a="$adapter_bytes" -v b="$base_bytes" 'BEGIN { printf "%.2f", 100 * a / b }')% of it)"
$lora merge --model "$model" --adapter "$work/adapter" --out "$work/merged" 2>/dev/null | tee "$work/merge.json"
merged=$($lora eval --model "$work/merged" "${eval_args[@]}" 2>/dev/null | tail -n 1)
echo "held-out perplexity of the merged model: $merged"
field() { echo "$1" | grep -o "\"$2\":[-0-9.e+]*" | cut -d: -f2; }
awk -v b="$(field "$before" perplexity)" -v a="$(field "$after" perplexity)" \
    -v la="$(field "$after" loss)" -v lm="$(field "$merged" loss)" 'BEGIN {
  printf "perplexity %.2f -> %.2f (%.0f%% lower)\n", b, a, 100 * (1 - a / b)
  d = la - lm; if (d < 0) d = -d
  same = d <= 1e-4 * (la < 0 ? -la : la)
  print "merge check: " (same ? "the merged model matches base + adapter" : "MISMATCH")
  exit (same && a < b) ? 0 : 1
}'
echo "main job done in $(( $(date +%s) - start )) s"
