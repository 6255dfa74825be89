"""The GPU peer: HuggingFace transformers + PEFT LoRA training on a random-weight Llama-family
model in bf16, timed the way bench/run_lora_cuda.sh times loracpp. Prints one JSON line.

  python3 bench/peers/peft_cuda_bench.py --preset smollm --seq 2048 --batch 4 --rank 16
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

PRESETS = {
    # SmolLM-135M's shape.
    "smollm": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                   num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=10000.0),
    # Llama-3.2-1B's shape (without its rope scaling, which changes no cost).
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", choices=PRESETS, default="smollm")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attn", default="sdpa")
    a = p.parse_args()

    torch.manual_seed(0)
    config = LlamaConfig(max_position_embeddings=a.seq, rms_norm_eps=1e-5, **PRESETS[a.preset])
    config._attn_implementation = a.attn
    model = LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16)
    lora = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, target_modules=ALL_LINEAR)
    model = get_peft_model(model, lora)  # adapters in f32 (PEFT's default autocast)
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    ids = torch.randint(0, config.vocab_size, (a.batch, a.seq), device="cuda")

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / a.steps
    print(json.dumps(dict(engine="peft", preset=a.preset, seq=a.seq, batch=a.batch, rank=a.rank,
                          tokens_per_s=round(a.batch * a.seq / seconds, 1), ms_per_step=round(1e3 * seconds, 2),
                          peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                          trainable=sum(q.numel() for q in params), loss=round(loss.item(), 4),
                          torch=torch.__version__)))


if __name__ == "__main__":
    main()
