#!/usr/bin/env python3
"""Reference Llama-family models and their outputs, from PyTorch (Debian's python3-torch).

For each variant (grouped-query attention, tied and untied output layer, Qwen2-style q/k/v
biases, Llama-3 rope scaling) it builds a tiny random model, writes it as a HuggingFace folder
(config.json + model.safetensors) under tests/fixtures/llama/<variant>/, and dumps, for a fixed
batch, the logits, the next-token loss and the gradient of every weight (reference.json). The
forward pass below is written from the architecture's definition (HuggingFace's modeling_llama
and modeling_qwen2 semantics), in float64.

It also records what greedy decoding of ../shared/models/stories260K prints for a prompt, with
the prompt encoded by SentencePiece (python3-sentencepiece) from tok512.model.

Run from the repository root:  /usr/bin/python3 tools/make_llama_fixtures.py
"""
import json
import math
import pathlib
import struct

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "llama"


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def inv_freq(cfg):
    hd = cfg["head_dim"]
    freqs = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    s = cfg.get("rope_scaling")
    if not s:
        return freqs
    old = s["original_max_position_embeddings"]
    low_wl, high_wl = old / s["low_freq_factor"], old / s["high_freq_factor"]
    out = []
    for f in freqs.tolist():
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
        elif wl > low_wl:
            out.append(f / s["factor"])
        else:
            smooth = (old / wl - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
            out.append((1 - smooth) * f / s["factor"] + smooth * f)
    return torch.tensor(out, dtype=torch.float64)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def forward(W, cfg, ids):
    B, T = ids.shape
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    x = W["model.embed_tokens.weight"][ids]
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq(cfg))
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)

        def proj(name, heads):
            y = h @ W[p + f"self_attn.{name}.weight"].T
            if cfg.get("attention_bias"):
                y = y + W[p + f"self_attn.{name}.bias"]
            return y.view(B, T, heads, hd).transpose(1, 2)

        q, k, v = proj("q_proj", H), proj("k_proj", KV), proj("v_proj", KV)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1) @ v
        x = x + att.transpose(1, 2).reshape(B, T, H * hd) @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        gated = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)
        x = x + gated @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return x @ head.T


def make_weights(cfg, gen):
    V, D, F = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

    def rnd(*shape, scale=0.3):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).float().double()

    W = {"model.embed_tokens.weight": rnd(V, D, scale=1.0)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1.0 + rnd(D, scale=0.1)
        W[p + "self_attn.q_proj.weight"] = rnd(H * hd, D)
        W[p + "self_attn.k_proj.weight"] = rnd(KV * hd, D)
        W[p + "self_attn.v_proj.weight"] = rnd(KV * hd, D)
        if cfg.get("attention_bias"):
            W[p + "self_attn.q_proj.bias"] = rnd(H * hd, scale=0.1)
            W[p + "self_attn.k_proj.bias"] = rnd(KV * hd, scale=0.1)
            W[p + "self_attn.v_proj.bias"] = rnd(KV * hd, scale=0.1)
        W[p + "self_attn.o_proj.weight"] = rnd(D, H * hd)
        W[p + "post_attention_layernorm.weight"] = 1.0 + rnd(D, scale=0.1)
        W[p + "mlp.gate_proj.weight"] = rnd(F, D)
        W[p + "mlp.up_proj.weight"] = rnd(F, D)
        W[p + "mlp.down_proj.weight"] = rnd(D, F)
    W["model.norm.weight"] = 1.0 + rnd(D, scale=0.1)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = rnd(V, D)
    return W


BASE = {
    "vocab_size": 40, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
    "bos_token_id": 1, "eos_token_id": 2,
}
VARIANTS = {
    "llama_gqa": {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
    "smollm_tied": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "tie_word_embeddings": True,
                    "num_key_value_heads": 4, "rope_theta": 100000.0},
    "qwen2_bias": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_bias": True,
                   "num_key_value_heads": 1, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                   "tie_word_embeddings": True},
    "llama3_scaled": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rope_theta": 500000.0,
                      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16}},
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "num_key_value_heads": 1},
}


def make_variant(name, overrides, seed):
    cfg = dict(BASE, **overrides)
    gen = torch.Generator().manual_seed(seed)
    W = make_weights(cfg, gen)
    for t in W.values():
        t.requires_grad_(True)
    ids = torch.randint(0, cfg["vocab_size"], (2, 7), generator=gen)
    logits = forward(W, cfg, ids)
    V = cfg["vocab_size"]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    loss.backward()
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    write_safetensors(folder / "model.safetensors", W)
    ref = {
        "ids": ids.tolist(),
        "logits": logits.detach().flatten().tolist(),
        "logits_shape": list(logits.shape),
        "loss": loss.item(),
        "grads": {k: v.grad.flatten().tolist() for k, v in W.items()},
    }
    (folder / "reference.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")


def stories_prompt_reference():
    """Greedy continuation of a prompt by stories260K, as llama2.c's run.c computes it."""
    import sentencepiece as spm

    model_dir = ROOT.parent / "shared" / "models" / "stories260K"
    raw = (model_dir / "stories260K.bin").read_bytes()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    w = np.frombuffer(raw[28:], dtype=np.float32).astype(np.float64)
    hs = dim // heads
    at = 0

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        out = torch.from_numpy(w[at:at + n].reshape(shape).copy())
        at += n
        return out

    emb = take(vocab, dim)
    rms_att = take(layers, dim)
    wq, wk, wv = take(layers, dim, dim), take(layers, kv_heads * hs, dim), take(layers, kv_heads * hs, dim)
    wo = take(layers, dim, dim)
    rms_ffn = take(layers, dim)
    w1, w2, w3 = take(layers, hidden, dim), take(layers, dim, hidden), take(layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hs // 2)
    take(seq_len, hs // 2)
    wcls = emb if shared else take(vocab, dim)

    def rope_interleaved(x, pos):  # x [heads, hs]: pairs (2i, 2i+1), freq 10000^(-2i/hs)
        i = torch.arange(0, hs, 2, dtype=torch.float64)
        ang = pos / (10000.0 ** (i / hs))
        x0, x1 = x[:, 0::2], x[:, 1::2]
        out = torch.empty_like(x)
        out[:, 0::2] = x0 * ang.cos() - x1 * ang.sin()
        out[:, 1::2] = x0 * ang.sin() + x1 * ang.cos()
        return out

    def rms(x, g):
        return x / torch.sqrt((x * x).mean() + 1e-5) * g

    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tok512.model"))
    prompt = "Once upon a time, a little dog"
    tokens = [1] + sp.encode(prompt)
    steps = 64
    keys = [[] for _ in range(layers)]
    values = [[] for _ in range(layers)]
    token, out_tokens = tokens[0], [tokens[0]]
    for pos in range(steps):
        x = emb[token].clone()
        for l in range(layers):
            h = rms(x, rms_att[l])
            q = rope_interleaved((wq[l] @ h).view(heads, hs), pos)
            k = rope_interleaved((wk[l] @ h).view(kv_heads, hs), pos)
            keys[l].append(k)
            values[l].append((wv[l] @ h).view(kv_heads, hs))
            K, Vv = torch.stack(keys[l], 1), torch.stack(values[l], 1)  # [kv_heads, pos+1, hs]
            att = torch.empty(heads, hs, dtype=torch.float64)
            for hh in range(heads):
                kvh = hh // (heads // kv_heads)
                a = torch.softmax(K[kvh] @ q[hh] / math.sqrt(hs), dim=0)
                att[hh] = a @ Vv[kvh]
            x = x + wo[l] @ att.reshape(-1)
            h = rms(x, rms_ffn[l])
            x = x + w2[l] @ (torch.nn.functional.silu(w1[l] @ h) * (w3[l] @ h))
        logits = wcls @ rms(x, rms_final)
        nxt = tokens[pos + 1] if pos + 1 < len(tokens) else int(torch.argmax(logits))
        if nxt == 1:
            break
        out_tokens.append(nxt)
        token = nxt
    text = sp.decode(out_tokens[1:])
    (OUT / "stories260K_prompt.json").write_text(json.dumps(
        {"prompt": prompt, "steps": steps, "prompt_ids": tokens, "tokens": out_tokens, "text": text + "\n"}, indent=1) + "\n")


if __name__ == "__main__":
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        make_variant(name, overrides, 100 + i)
    stories_prompt_reference()
    print(f"wrote {len(VARIANTS)} model variants and the stories260K prompt reference to {OUT}")
