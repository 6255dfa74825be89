#!/usr/bin/env bash
# LoRA training on an NVIDIA GPU side by side with HuggingFace transformers + PEFT
# (bench/peers/peft_cuda_bench.py) on the same random-weight Llama-family shapes, in one run:
# bf16 base weights, r=16 on every linear layer, seq 2048. Prints a Markdown table of tokens/s,
# the ratio, peak GPU memory (live allocations: PyTorch's max_memory_allocated and ours) and the
# share of the GPU's measured bf16 GEMM ceiling (8192³ through cuBLAS) for both engines, counting
# the same FLOPs per token for both.
# Needs a build with the CUDA backend and a Python with torch, transformers and peft.
#   bash bench/run_lora_cuda.sh                     all rows
#   BENCH_LLAMA=path/to/bench_llama PYTHON=python3 bash bench/run_lora_cuda.sh "smollm 1" "llama1b 2"
set -euo pipefail
cd "$(dirname "$0")/.."
ours=${BENCH_LLAMA:-build/bench/bench_llama}
python=${PYTHON:-python3}
rows=("$@")
((${#rows[@]})) || rows=("smollm 1" "smollm 4" "llama1b 1" "llama1b 2")
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }

ceiling=$($ours --mode ceiling --device cuda | field bf16_gflops)
echo "bf16 GEMM ceiling: $(python3 -c "print(f'{$ceiling/1000:.0f}')") TFLOP/s"
table="| preset | batch x seq | loracpp tok/s | PEFT tok/s | ratio | loracpp GPU MB | PEFT GPU MB | memory ratio | loracpp util | PEFT util |
|---|---|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  set -- $row
  preset=$1 batch=$2
  a=$($ours --preset "$preset" --tied --mode lora --rank 16 --alpha 32 --targets all --dtype bf16 --device cuda \
        --seq 2048 --batch "$batch" --steps 5 --warmup 2 | tail -1)
  b=$($python bench/peers/peft_cuda_bench.py --preset "$preset" --batch "$batch" --seq 2048 --rank 16 --steps 5 --warmup 2 | tail -1)
  echo "$a"
  echo "$b"
  table+=$'\n'$(python3 - "$a" "$b" "$ceiling" "$batch" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ceiling, batch = float(sys.argv[3]), sys.argv[4]
gf = a["gflop_per_token"]
print(f"| {a['preset']} | {batch} x 2048 | {a['tokens_per_s']:.0f} | {b['tokens_per_s']:.0f} | "
      f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | {a['peak_gpu_mb']:.0f} | {b['peak_gpu_mb']:.0f} | "
      f"{a['peak_gpu_mb'] / b['peak_gpu_mb']:.2f}x | {100 * a['tokens_per_s'] * gf / ceiling:.1f}% | "
      f"{100 * b['tokens_per_s'] * gf / ceiling:.1f}% |")
PY
)
done
echo
echo "$table"
