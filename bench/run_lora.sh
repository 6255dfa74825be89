#!/usr/bin/env bash
# LoRA training side by side with the peer (../shared/peers/torch_lora_bench.py): same presets,
# ranks, targets and threads, in one run. Prints Markdown tables: tokens/s of our f32 and bf16
# paths against the peer's f32 and bf16 runs, peak RSS, and the share of this machine's measured
# GEMM ceilings; then inference (forward and generation, adapter merged or not).
# Needs the build and Debian's python3-torch (apt-get install python3-torch libopenblas0-pthread).
#   bash bench/run_lora.sh [threads] [presets...]        e.g. bash bench/run_lora.sh 2 tiny small smollm
# Each LoRA row runs the four engines ROUNDS times (default 2), interleaved, and keeps each one's
# fastest round: these machines are shared, and a neighbour's burst should not decide a ratio.
# Rounds alternate OpenMP's waiting policy: even rounds run with its default (idle threads spin a
# moment, then sleep), odd rounds with OMP_WAIT_POLICY=PASSIVE; with the fastest round kept, each
# engine is credited with the better policy for it. (The peer's f32 run, whose OpenBLAS keeps
# threads of its own, is far faster with PASSIVE; its bf16 run and ours, a little with the default.)
# Where the CPU has no native bf16 products (no AVX512-BF16 or AMX), PyTorch's bf16 runs take
# minutes a step (tiny: ~30x slower than its f32) and are left out unless PEER_BF16=1; the table
# says so, and the peer's f32 run is then the comparison for both of our paths. With PEER_BF16=1 on
# such a CPU, each of the peer's bf16 runs is made once (in the first round), of one step after its
# warm-up step: about 40 minutes more for the three presets.
# SMOKE=1 runs a tiny shape for one step in each dtype (f32, bf16, q8_0, q4_0), ours only, and checks the output (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
shift || true
presets=${*:-tiny small smollm}
peer=../shared/peers/torch_lora_bench.py
ours=${BENCH_LLAMA:-build/bench/bench_llama}
rounds=${ROUNDS:-2}
native_bf16=0
grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo && native_bf16=1
peer_bf16=${PEER_BF16:-$native_bf16}
# Whether the peer's bf16 runs in this round, and for how many steps (see above).
peer_bf16_round() { ((peer_bf16)) && { ((native_bf16)) || (($1 == 0)); }; }
peer_bf16_steps() { if ((native_bf16)); then echo "$1"; else echo 1; fi; }
unset OMP_WAIT_POLICY GOMP_SPINCOUNT
with_policy() {  # with_policy ROUND COMMAND...
  local round=$1
  shift
  if ((round % 2)); then OMP_WAIT_POLICY=PASSIVE "$@"; else "$@"; fi
}
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
# Of two JSON results, the one with more tokens/s (the first when the second is empty).
faster() { python3 -c "import json,sys; a,b=sys.argv[1],sys.argv[2]; print(b if b and json.loads(b)['tokens_per_s']>json.loads(a)['tokens_per_s'] else a)" "$1" "$2"; }
ratio() { if [[ "$2" == "not run" ]]; then echo "—"; else python3 -c "print(f'{$1/$2:.2f}x')"; fi; }
share() { python3 -c "print(f'{100*$1/$2:.0f}%')"; }

if [[ "${SMOKE:-0}" == 1 ]]; then
  for dtype in f32 bf16 q8_0 q4_0; do
    out=$($ours --preset tiny --mode lora --rank 4 --targets all --steps 1 --warmup 0 --batch 1 --seq 16 --threads "$threads" --dtype $dtype)
    echo "$out"
    python3 -c "import json,math,sys; r=json.loads(sys.argv[1]); assert r['tokens_per_s']>0 and math.isfinite(r['loss']) and abs(r['loss']-10.37)<0.5 and r['trainable']>0, r" "$out"
    out=$($ours --preset tiny --mode generate --tokens 4 --prompt 8 --steps 1 --rank 4 --targets all --threads "$threads" --dtype $dtype)
    echo "$out"
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); assert r['prompt']==8 and min(r['tokens_per_s'],r['merged_tokens_per_s'],r['prompt_tokens_per_s'],r['prompt_by_position_tokens_per_s'])>0, r" "$out"
  done
  exit 0
fi

if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "bench/run_lora.sh: the peer ($peer) needs Debian's python3-torch, which /usr/bin/python3 cannot import;" \
    "install it with: apt-get install -y python3-torch libopenblas0-pthread" >&2
  exit 1
fi

# The GEMM ceilings: the best reading of one taken before each preset and one at the end, so that
# a neighbour's burst during one reading does not inflate the shares.
f32c=0 bf16c=0
read_ceilings() {
  local c
  c=$($ours --mode ceiling --threads "$threads")
  f32c=$(python3 -c "print(max($f32c, $(echo "$c" | field f32_gflops)))")
  bf16c=$(python3 -c "print(max($bf16c, $(echo "$c" | field bf16_gflops)))")
}
rows=()
for preset in $presets; do
  read_ceilings
  steps=4
  [[ "$preset" != tiny ]] && steps=2
  for config in "8 q,v" "16 all"; do
    set -- $config
    rank=$1 targets=$2
    peer_targets=$targets
    [[ "$targets" == all ]] && peer_targets=q,k,v,o,gate,up,down
    a="" a16="" b="" b16=""
    for ((round = 0; round < rounds; ++round)); do
      a=$(faster "$(with_policy $round $ours --preset "$preset" --mode lora --rank "$rank" --targets "$targets" --steps "$steps" --threads "$threads")" "$a")
      a16=$(faster "$(with_policy $round $ours --preset "$preset" --mode lora --rank "$rank" --targets "$targets" --steps "$steps" --threads "$threads" --dtype bf16)" "$a16")
      b=$(faster "$(with_policy $round /usr/bin/python3 "$peer" --preset "$preset" --mode lora --rank "$rank" --targets "$peer_targets" --steps "$steps" --threads "$threads")" "$b")
      if peer_bf16_round $round; then
        b16=$(faster "$(with_policy $round /usr/bin/python3 "$peer" --preset "$preset" --mode lora --rank "$rank" --targets "$peer_targets" --steps "$(peer_bf16_steps $steps)" --threads "$threads" --dtype bfloat16)" "$b16")
      fi
    done
    ta=$(echo "$a" | field tokens_per_s); ta16=$(echo "$a16" | field tokens_per_s)
    ra=$(echo "$a" | field peak_rss_mb); ra16=$(echo "$a16" | field peak_rss_mb)
    tb=$(echo "$b" | field tokens_per_s); rb=$(echo "$b" | field peak_rss_mb)
    tb16="not run" rb16="not run"
    if [[ -n "$b16" ]]; then tb16=$(echo "$b16" | field tokens_per_s); rb16=$(echo "$b16" | field peak_rss_mb); fi
    rows+=("| $preset | r=$rank $targets | $ta | $ta16 | $tb | $tb16 | $(ratio "$ta" "$tb") | $(ratio "$ta16" "$tb16") | $ra / $ra16 | $rb / $rb16 | $(ratio "$ra" "$rb") / $(ratio "$ra16" "$rb16") |@$(echo "$a" | field gflops)@$(echo "$a16" | field gflops)")
  done
done
read_ceilings
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $threads threads;" \
     "GEMM ceilings at 2048³ (best reading): f32 ${f32c} GFLOP/s (the better of OpenBLAS and oneDNN), bf16 ${bf16c} GFLOP/s" \
     "$( ((native_bf16)) && echo "(oneDNN)" || echo "(no native bf16 here: our packed f32 kernel, widening as it packs)")"
((peer_bf16)) || echo "The peer's bf16 runs were not run: this CPU has no native bf16 products (PEER_BF16=1 runs them)."
((peer_bf16 && !native_bf16)) && echo "The peer's bf16 runs were made once each, of one step after a warm-up step: this CPU has no native bf16 products."
echo
echo "| preset | adapter | ours f32 tok/s | ours bf16 tok/s | peer f32 tok/s | peer bf16 tok/s | f32 vs peer f32 | bf16 vs peer bf16 | ours f32 / bf16 RSS MB | peer f32 / bf16 RSS MB | RSS ratio f32 / bf16 | ceiling share f32 / bf16 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  IFS=@ read -r text g32 g16 <<< "$row"
  echo "$text $(share "$g32" "$f32c") / $(share "$g16" "$bf16c") |"
done

echo
echo "| inference, small preset | ours tok/s | peer tok/s | ratio |"
echo "|---|---|---|---|"
for dtype in f32 bf16; do
  pd=float32; [[ $dtype == bf16 ]] && pd=bfloat16
  a="" b=""
  for ((round = 0; round < rounds; ++round)); do
    a=$(faster "$(with_policy $round $ours --preset small --mode forward --steps 2 --threads "$threads" --dtype $dtype)" "$a")
    if [[ $dtype == f32 ]]; then
      b=$(faster "$(with_policy $round /usr/bin/python3 "$peer" --preset small --mode infer --steps 2 --threads "$threads" --dtype $pd)" "$b")
    elif peer_bf16_round $round; then
      b=$(faster "$(with_policy $round /usr/bin/python3 "$peer" --preset small --mode infer --steps "$(peer_bf16_steps 2)" --threads "$threads" --dtype $pd)" "$b")
    fi
  done
  tb="not run"
  [[ -n "$b" ]] && tb=$(echo "$b" | field tokens_per_s)
  echo "| forward [2, 512], $dtype | $(echo "$a" | field tokens_per_s) | $tb | $(ratio "$(echo "$a" | field tokens_per_s)" "$tb") |"
done
# The unmerged adapter's cost comes from one process per round that generates with the adapter on
# the side and merged, in alternating blocks (see bench_llama); the cost is the mean over rounds.
# q8_0 and q4_0 (GGUF's 8- and 4-bit blocks) have no peer run: PyTorch has no such weights on the
# CPU path.
for dtype in f32 bf16 q8_0 q4_0; do
  runs=()
  for ((round = 0; round < rounds; ++round)); do
    runs+=("$(with_policy $round $ours --preset small --mode generate --tokens 256 --prompt 256 --steps 2 --threads "$threads" --dtype $dtype --rank 16 --targets all)")
  done
  python3 - "$dtype" "${runs[@]}" <<'PY'
import json, sys
dtype, runs = sys.argv[1], [json.loads(r) for r in sys.argv[2:]]
best = max(runs, key=lambda r: r["merged_tokens_per_s"])
costs = ", ".join(f"{100 * r['unmerged_cost']:.0f}%" for r in runs)
mean = 100 * sum(r["unmerged_cost"] for r in runs) / len(runs)
print(f"| generation (KV cache), {dtype}: merged / unmerged r=16 all | {best['merged_tokens_per_s']} / "
      f"{best['tokens_per_s']} | no generation mode | unmerged costs {mean:.0f}% (rounds: {costs}) |")
fill = max(runs, key=lambda r: r["prompt_tokens_per_s"])
print(f"| a {fill['prompt']}-token prompt into the KV cache, {dtype}: one pass / position by position | "
      f"{fill['prompt_tokens_per_s']} / {fill['prompt_by_position_tokens_per_s']} | no generation mode | "
      f"one pass {fill['prompt_tokens_per_s'] / fill['prompt_by_position_tokens_per_s']:.1f}x |")
PY
done
