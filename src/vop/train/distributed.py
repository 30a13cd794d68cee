"""torch.distributed helpers for training: an all-gather that carries gradients so every
rank's loss sees the global batch of negatives, gradient averaging, barriers. Rank/world
set-up is :func:`vop.runtime.setup` (shared with evaluation and encoding)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward returns this rank's slice of the summed gradient: every
    rank's loss depends on every rank's embeddings, so gradients must flow back to them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum of every rank's gradient w.r.t. the gathered tensor
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[n, D]`` per rank -> ``[world * n, D]`` (rank order), differentiable. Identity
    when not distributed. Ranks must hold equal ``n`` (the sampler pads to ensure it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def average_gradients(parameters) -> None:
    """Average the gradients of ``parameters`` over ranks (the loss is computed identically
    on every rank from the gathered batch, so the mean keeps the single-process scale)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
