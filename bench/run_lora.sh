#!/usr/bin/env bash
# LoRA training side by side with the peer (../shared/peers/torch_lora_bench.py), same presets,
# ranks, targets and threads, in one run; prints a Markdown table: tokens/s, the ratios to the
# peer's f32 and bf16 runs, peak RSS, and our share of this machine's f32 GEMM ceiling.
# Needs the build and Debian's python3-torch (apt-get install python3-torch libopenblas0-pthread).
#   bash bench/run_lora.sh [threads] [presets...]        e.g. bash bench/run_lora.sh 2 tiny small smollm
# SMOKE=1 runs a tiny shape for one step, ours only, and checks the output (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
shift || true
presets=${*:-tiny small smollm}
peer=../shared/peers/torch_lora_bench.py
ours=build/bench/bench_llama
export OMP_WAIT_POLICY=PASSIVE
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }

if [[ "${SMOKE:-0}" == 1 ]]; then
  out=$($ours --preset tiny --mode lora --rank 4 --targets all --steps 1 --warmup 0 --batch 1 --seq 16 --threads "$threads")
  echo "$out"
  python3 -c "import json,math,sys; r=json.loads(sys.argv[1]); assert r['tokens_per_s']>0 and math.isfinite(r['loss']) and r['trainable']>0, r" "$out"
  exit 0
fi

ceiling=$($ours --mode ceiling --threads "$threads" | field f32_gflops)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $threads threads; f32 GEMM ceiling ${ceiling} GFLOP/s (2048³, OpenBLAS)"
echo
echo "| preset | adapter | loracpp f32 tok/s | peer f32 tok/s | peer bf16 tok/s | vs peer f32 | vs peer bf16 | loracpp RSS MB | peer f32 RSS MB | RSS ratio | loracpp GFLOP/s | f32 ceiling share |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for preset in $presets; do
  steps=3
  [[ "$preset" != tiny ]] && steps=2
  for config in "8 q,v" "16 all"; do
    set -- $config
    rank=$1 targets=$2
    peer_targets=$targets
    [[ "$targets" == all ]] && peer_targets=q,k,v,o,gate,up,down
    a=$($ours --preset "$preset" --mode lora --rank "$rank" --targets "$targets" --steps "$steps" --threads "$threads")
    b=$(/usr/bin/python3 "$peer" --preset "$preset" --mode lora --rank "$rank" --targets "$peer_targets" --steps "$steps" --threads "$threads")
    c=$(/usr/bin/python3 "$peer" --preset "$preset" --mode lora --rank "$rank" --targets "$peer_targets" --steps "$steps" --threads "$threads" --dtype bfloat16)
    ta=$(echo "$a" | field tokens_per_s); tb=$(echo "$b" | field tokens_per_s); tc=$(echo "$c" | field tokens_per_s)
    ra=$(echo "$a" | field peak_rss_mb); rb=$(echo "$b" | field peak_rss_mb)
    g=$(echo "$a" | field gflops)
    echo "| $preset | r=$rank $targets | $ta | $tb | $tc | $(ratio "$ta" "$tb") | $(ratio "$ta" "$tc") | $ra | $rb | $(ratio "$ra" "$rb") | $g | $(python3 -c "print(f'{100*$g/$ceiling:.0f}%')") |"
  done
done
