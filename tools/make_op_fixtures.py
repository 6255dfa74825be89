#!/usr/bin/env python3
"""Reference values for every op, computed by PyTorch (Debian's python3-torch) in float64.

Writes tests/fixtures/ops.json: for each case its inputs, output, a fixed upstream gradient and
the resulting input gradients. The C++ test (tests/ops/reference_test.cpp) runs the same case
through our ops and compares. Run from the repository root:

    /usr/bin/python3 tools/make_op_fixtures.py
"""
import json
import math
import pathlib

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

torch.manual_seed(20261122)
CASES = []


def rnd(*shape, lo=-1.0, hi=1.0):
    # Values representable in f32, so both sides start from identical inputs.
    return (torch.rand(tuple(shape), dtype=torch.float64) * (hi - lo) + lo).float().double()


def case(name, fn, inputs, grad=None):
    """inputs: list of tensors; float ones get gradients (unless grad excludes them)."""
    grad = grad if grad is not None else [t.is_floating_point() for t in inputs]
    leaves = []
    for t, g in zip(inputs, grad):
        leaf = t.clone()
        if g:
            leaf.requires_grad_(True)
        leaves.append(leaf)
    out = fn(*leaves)
    upstream = rnd(*out.shape)
    out.backward(upstream)
    entry = {
        "name": name,
        "inputs": [
            {
                "shape": list(t.shape),
                "dtype": "f32" if t.is_floating_point() else "i64",
                "data": t.flatten().tolist(),
            }
            for t in inputs
        ],
        "output": {"shape": list(out.shape), "data": out.detach().flatten().tolist()},
        "grad_output": upstream.flatten().tolist(),
        "grads": [leaf.grad.flatten().tolist() if leaf.grad is not None else None for leaf in leaves],
    }
    CASES.append(entry)


# ---- layout ----
case("contiguous", lambda x: x.t().contiguous(), [rnd(3, 4)])
case("to_dtype_bf16", lambda x: x.to(torch.bfloat16).double(), [rnd(2, 5)])
case("reshape", lambda x: x.reshape(4, 6), [rnd(2, 3, 4)])
case("permute", lambda x: x.permute(2, 0, 1), [rnd(2, 3, 4)])
case("transpose", lambda x: x.transpose(0, 2), [rnd(2, 3, 4)])
case("slice", lambda x: x[:, 1:4], [rnd(4, 5)])
case("broadcast_to", lambda x: x.expand(2, 3, 4), [rnd(3, 1)])
case("concat", lambda a, b: torch.cat([a, b], dim=1), [rnd(2, 3), rnd(2, 2)])
case("split", lambda x: torch.split(x, [2, 3], dim=0)[1], [rnd(5, 3)])
# ---- arithmetic ----
case("add", lambda a, b: a + b, [rnd(2, 3, 4), rnd(3, 1)])
case("sub", lambda a, b: a - b, [rnd(2, 3), rnd(2, 1)])
case("mul", lambda a, b: a * b, [rnd(4, 1, 3), rnd(5, 1)])
case("div", lambda a, b: a / b, [rnd(2, 3), rnd(3, lo=0.5, hi=2.0)])
case("scale", lambda x: x * 2.5, [rnd(3, 4)])
case("sum_dim", lambda x: x.sum(dim=1), [rnd(2, 3, 4)])
case("sum_all", lambda x: x.sum(), [rnd(2, 3)])
case("mean_keepdim", lambda x: x.mean(dim=(0, 2), keepdim=True), [rnd(2, 3, 4)])
# ---- products ----
case("matmul_2d_rhs", lambda a, b: a @ b, [rnd(2, 3, 4), rnd(4, 5)])
case("matmul_broadcast", lambda a, b: a @ b, [rnd(2, 1, 3, 4), rnd(3, 4, 2)])
case("matmul_transposed_lhs", lambda a, b: a.transpose(-1, -2) @ b, [rnd(2, 4, 3), rnd(2, 4, 5)])
case("matmul_transposed_rhs", lambda a, b: a @ b.transpose(-1, -2), [rnd(3, 4), rnd(5, 4)])
case("linear", lambda x, w, b: F.linear(x, w, b), [rnd(2, 3, 4), rnd(5, 4), rnd(5)])
case("embedding", lambda w, ids: F.embedding(ids, w), [rnd(7, 3), torch.tensor([[1, 4, 1], [6, 0, 4]])])
# ---- normalisation and activations ----
case("rms_norm",
     lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w,
     [rnd(2, 3, 8), rnd(8, lo=0.5, hi=1.5)])
case("layer_norm", lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5), [rnd(4, 6), rnd(6), rnd(6)])
case("layer_norm_plain", lambda x: F.layer_norm(x, (6,), None, None, 1e-5), [rnd(4, 6)])
case("softmax_last", lambda x: torch.softmax(x * 3, dim=-1), [rnd(3, 5)])
case("softmax_middle", lambda x: torch.softmax(x * 3, dim=1), [rnd(4, 3, 2)])
case("silu", lambda x: F.silu(x), [rnd(3, 4, lo=-4, hi=4)])
case("gelu_erf", lambda x: F.gelu(x), [rnd(3, 4, lo=-4, hi=4)])
case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [rnd(3, 4, lo=-4, hi=4)])
case("swiglu", lambda g, u: F.silu(g) * u, [rnd(3, 4, lo=-3, hi=3), rnd(3, 4)])
case("dropout_eval", lambda x: F.dropout(x, 0.3, training=False), [rnd(3, 4)])
# ---- loss ----
case("cross_entropy",
     lambda logits, t: F.cross_entropy(logits * 2, t, ignore_index=-100),
     [rnd(6, 5), torch.tensor([0, 4, -100, 2, 2, -100])])
case("cross_entropy_3d",
     lambda logits, t: F.cross_entropy((logits * 2).reshape(-1, 7), t.reshape(-1)),
     [rnd(2, 3, 7), torch.tensor([[1, 6, 0], [3, 3, 5]])])


# ---- rotary embeddings, written from their definitions ----
def rope_half(x, theta, offset):
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    pos = torch.arange(x.shape[-2], dtype=torch.float64) + offset
    freqs = torch.outer(pos, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * emb.cos() + rotated * emb.sin()


def rope_interleaved(x, theta, offset):
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    pos = torch.arange(x.shape[-2], dtype=torch.float64) + offset
    angles = torch.outer(pos, inv)
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
    out = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles))
    return out.reshape(x.shape)


case("rope_half", lambda x: rope_half(x, 10000.0, 3), [rnd(1, 2, 4, 8)])
case("rope_interleaved", lambda x: rope_interleaved(x, 500.0, 0), [rnd(2, 1, 3, 6)])


# ---- attention, written from its definition ----
def attention(q, k, v, causal, mask=None):
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    t, s = q.shape[-2], k.shape[-2]
    if causal:
        allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        scores = scores.masked_fill(~allowed, float("-inf"))
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v


case("attention_causal_gqa", lambda q, k, v: attention(q, k, v, True), [rnd(2, 4, 5, 8), rnd(2, 2, 5, 8), rnd(2, 2, 5, 8)])
case("attention_kv_longer", lambda q, k, v: attention(q, k, v, True), [rnd(1, 2, 3, 4), rnd(1, 1, 6, 4), rnd(1, 1, 6, 3)])
case("attention_mask",
     lambda q, k, v, m: attention(q, k, v, False, m),
     [rnd(1, 2, 3, 4), rnd(1, 2, 4, 4), rnd(1, 2, 4, 4), rnd(1, 1, 3, 4, lo=-2, hi=0)], grad=[True, True, True, False])
# ---- convolution and pooling ----
case("im2col", lambda x: F.unfold(x, (2, 3), padding=(1, 0), stride=(1, 2)), [rnd(2, 2, 4, 5)])
case("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [rnd(2, 3, 5, 5), rnd(4, 3, 3, 3), rnd(4)])
case("max_pool2d", lambda x: F.max_pool2d(x, 2), [rnd(2, 2, 4, 6)])
case("max_pool2d_padded", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [rnd(1, 2, 5, 5)])
case("avg_pool2d_padded", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [rnd(1, 2, 5, 6)])
# ---- fused LoRA linear (last, so the cases above keep their random inputs) ----
case("lora_linear",
     lambda x, w, b, a, bb: F.linear(x, w, b) + F.linear(F.linear(x, a), bb) * 1.5,
     [rnd(2, 3, 6), rnd(5, 6), rnd(5), rnd(2, 6), rnd(5, 2)])
# ---- fused output layer and cross-entropy (appended, for the same reason) ----
case("linear_cross_entropy",
     lambda x, w, t: F.cross_entropy(F.linear(x, w).reshape(-1, 9), t.reshape(-1), ignore_index=-100),
     [rnd(2, 4, 6, lo=-2, hi=2), rnd(9, 6, lo=-2, hi=2), torch.tensor([[3, 8, -100, 0], [5, 5, 1, -100]])])
# ---- activation checkpointing: a segment recomputed in the backward pass (appended too) ----
case("checkpoint",
     lambda x, w: torch.utils.checkpoint.checkpoint(lambda x, w: F.silu(F.linear(x, w)) * x, x, w, use_reentrant=False),
     [rnd(2, 3, 4), rnd(4, 4)])

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ops.json"
out.parent.mkdir(parents=True, exist_ok=True)
payload = {"generator": "tools/make_op_fixtures.py", "torch": torch.__version__, "cases": CASES}
tmp = out.with_suffix(".json.tmp")
tmp.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
tmp.replace(out)
print(f"wrote {len(CASES)} cases to {out}")
