"""Layers torchgrow needs that PyTorch lacks.

``ReLU1`` is the rectifier whose derivative at 0 is 1. Units grown with zero
fan-in have a pre-activation of exactly 0; behind ``torch.relu`` (derivative 0
at 0) they receive no gradient and never train. GradMax's official code uses
this activation between every pair of grown layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ReLU1", "relu1"]


class _ReLU1Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x >= 0).to(grad.dtype)


def relu1(x: Tensor) -> Tensor:
    """``max(x, 0)`` with derivative 1 at ``x == 0`` (and 0 below, 1 above).

    Parameters
    ----------
    x : Tensor
        Input of any shape.

    Returns
    -------
    Tensor
        ``x.clamp_min(0)``.
    """
    return _ReLU1Function.apply(x)


class ReLU1(nn.Module):
    """Module form of :func:`relu1`, the ReLU whose derivative at 0 is 1."""

    def forward(self, x: Tensor) -> Tensor:
        return relu1(x)
