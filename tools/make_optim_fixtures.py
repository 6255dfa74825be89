#!/usr/bin/env python3
"""Reference trajectories of PyTorch's optimisers, gradient clipping and warm-up schedules.

Writes tests/fixtures/optim.json, read by tests/train/optimizer_test.cpp. Run from the
repository root:

    /usr/bin/python3 tools/make_optim_fixtures.py
"""
import json
import math
import pathlib

import torch

torch.manual_seed(7)
STEPS = 12


def hf_lambda(kind, warmup, total, min_ratio=0.0):
    """The multipliers of HuggingFace's get_{constant,linear,cosine}_schedule_with_warmup."""
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        value = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
        return min_ratio + (1.0 - min_ratio) * max(0.0, value)
    return f


def trajectory(name, make_optimizer, schedule, max_norm):
    shapes = [(3, 4), (5,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    initial = [p.detach().clone() for p in params]
    grads_per_step, lrs, after = [], [], []
    optimizer = make_optimizer(params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, hf_lambda(*schedule))
    norms = []
    for _ in range(STEPS):
        grads = [torch.randn(s) * 3 for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        grads_per_step.append([g.flatten().tolist() for g in grads])
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if max_norm else None)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        after.append([p.detach().flatten().tolist() for p in params])
    return {
        "name": name,
        "schedule": {"kind": schedule[0], "warmup": schedule[1], "total": schedule[2],
                     "min_lr_ratio": schedule[3] if len(schedule) > 3 else 0.0},
        "max_norm": max_norm,
        "shapes": [list(s) for s in shapes],
        "initial": [p.flatten().tolist() for p in initial],
        "grads": grads_per_step,
        "norms": norms,
        "lrs": lrs,
        "params": after,
    }


runs = [
    trajectory("adamw_cosine_clip",
               lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
               ("cosine", 3, STEPS), 1.0),
    trajectory("adamw_linear",
               lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.0),
               ("linear", 2, STEPS, 0.1), None),
    trajectory("adamw_constant_warmup",
               lambda p: torch.optim.AdamW(p, lr=1e-3),
               ("constant", 4, STEPS), 0.5),
    trajectory("sgd_momentum",
               lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
               ("constant", 0, STEPS), None),
    trajectory("sgd_nesterov",
               lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.8, nesterov=True),
               ("cosine", 0, STEPS, 0.2), 2.0),
]
options = {
    "adamw_cosine_clip": {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1},
    "adamw_linear": {"lr": 3e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw_constant_warmup": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    "sgd_momentum": {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "nesterov": False},
    "sgd_nesterov": {"lr": 0.02, "momentum": 0.8, "dampening": 0.0, "weight_decay": 0.0, "nesterov": True},
}
for run in runs:
    run["options"] = options[run["name"]]

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "optim.json"
tmp = out.with_suffix(".json.tmp")
tmp.write_text(json.dumps({"generator": "tools/make_optim_fixtures.py", "torch": torch.__version__,
                           "runs": runs}, separators=(",", ":")) + "\n")
tmp.replace(out)
print(f"wrote {len(runs)} runs to {out}")
