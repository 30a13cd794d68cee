"""AdamW over a method's trainable parameters (with per-group learning-rate multipliers)
and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch

from vop.train.config import OptimSection


def build_optimizer(model, cfg: OptimSection) -> torch.optim.AdamW:
    groups = [{"params": g["params"], "lr": cfg.lr * g["lr_scale"], "lr_scale": g["lr_scale"]}
              for g in model.parameter_groups()]
    if not groups:
        raise ValueError(f"method {model.config.method!r} has nothing to train")
    # The fused kernel updates every tensor in one pass: benchmarks/optimizer.py measured
    # 0.23x the time of the default CPU step for `full`; results agree to rounding.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             fused=True)


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """Multiplier of the peak learning rate at optimiser step ``s``: linear from 0 over the
    warm-up, then cosine down to 0 at ``total_steps``."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(optimizer, total_steps: int, cfg: OptimSection):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, cfg.warmup_ratio))
