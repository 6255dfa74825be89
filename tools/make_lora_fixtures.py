#!/usr/bin/env python3
"""A LoRA adapter in HuggingFace PEFT's on-disk format, written independently of loracpp, with
the logits it should produce.

Takes the tiny reference model tests/fixtures/llama/llama_gqa (run make_llama_fixtures.py first),
makes a random adapter (A and B both non-zero, r = 4 with a rank_pattern of 2 for down_proj, LoRA
on embed_tokens too), and writes tests/fixtures/lora/peft_adapter/{adapter_model.safetensors,
adapter_config.json} with PEFT's tensor names and config keys, plus expected.json: the logits of
base + adapter for a fixed batch, computed with the adapter folded into the weights
(W + alpha/r * B A), in float64.

Run from the repository root:  /usr/bin/python3 tools/make_lora_fixtures.py
"""
import json
import pathlib
import struct
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_llama_fixtures import forward, write_safetensors  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / "tests" / "fixtures" / "llama" / "llama_gqa"
OUT = ROOT / "tests" / "fixtures" / "lora" / "peft_adapter"


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float32).reshape(e["shape"]).double()
    return out


def main():
    cfg = json.loads((BASE / "config.json").read_text())
    W = read_safetensors(BASE / "model.safetensors")
    gen = torch.Generator().manual_seed(7)
    r, alpha = 4, 8.0
    ranks = {"q_proj": r, "v_proj": r, "down_proj": 2}
    adapter, merged = {}, dict(W)
    for l in range(cfg["num_hidden_layers"]):
        for kind, rank in ranks.items():
            part = "mlp" if kind == "down_proj" else "self_attn"
            module = f"model.layers.{l}.{part}.{kind}"
            w = W[module + ".weight"]
            A = (torch.randn(rank, w.shape[1], generator=gen) * 0.2).float().double()
            B = (torch.randn(w.shape[0], rank, generator=gen) * 0.2).float().double()
            adapter[f"base_model.model.{module}.lora_A.weight"] = A
            adapter[f"base_model.model.{module}.lora_B.weight"] = B
            merged[module + ".weight"] = w + (alpha / rank) * B @ A
    # Embedding LoRA: lora_embedding_A [r, vocab], lora_embedding_B [dim, r]; delta = (B A)^T.
    emb = W["model.embed_tokens.weight"]
    A = (torch.randn(r, emb.shape[0], generator=gen) * 0.2).float().double()
    B = (torch.randn(emb.shape[1], r, generator=gen) * 0.2).float().double()
    adapter["base_model.model.model.embed_tokens.lora_embedding_A"] = A
    adapter["base_model.model.model.embed_tokens.lora_embedding_B"] = B
    merged["model.embed_tokens.weight"] = emb + (alpha / r) * (B @ A).T

    OUT.mkdir(parents=True, exist_ok=True)
    write_safetensors(OUT / "adapter_model.safetensors", adapter)
    config = {  # the keys PEFT writes for a LoRA adapter
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "llama_gqa", "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layer_replication": None,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha,
        "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "r": r, "rank_pattern": {"down_proj": 2}, "revision": None,
        "target_modules": ["q_proj", "v_proj", "down_proj", "embed_tokens"], "task_type": "CAUSAL_LM",
        "use_dora": False, "use_rslora": False,
    }
    (OUT / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    ids = torch.tensor([[1, 5, 9, 2, 33, 7, 12], [3, 3, 8, 21, 0, 39, 4]])
    logits = forward(merged, cfg, ids)
    (OUT.parent / "peft_adapter_expected.json").write_text(json.dumps(
        {"ids": ids.tolist(), "logits": logits.flatten().tolist()}, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
