"""A SyncBatchNorm that can grow (statistics summed over the ranks)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .collectives import _summed
from .process import is_active


# ------------------------------------------------------------------ BatchNorm over all ranks
class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over ranks; the gradient of each rank's copy is the summed gradient."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        return _summed(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _summed(grad)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on CPU and GPU.

    In training mode under ``torch.distributed`` the per-channel sum, sum of
    squares and count are summed over ranks with an autograd-aware
    all-reduce, so the normalisation, its gradient and the running
    statistics are those of the whole global batch, as in one process. In
    eval mode, or in one process, it is an ordinary BatchNorm.
    (``torch.nn.SyncBatchNorm`` does the same on GPUs only.) It is a
    ``_BatchNorm``, so torchgrow's surgery grows and shrinks it like any
    BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_active()):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x64 = input.to(torch.float64)  # E[x^2] - E[x]^2 in double: no cancellation
        local = torch.cat(
            [x64.sum(dims), (x64 * x64).sum(dims), x64.new_full((1,), input.numel() / c)]
        )
        total = _SumOverRanks.apply(local)  # summed over ranks; its backward sums gradients
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None and self.running_var is not None
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else float(self.momentum)
                )
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (x64 - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        out = out.to(input.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(model: nn.Module) -> int:
    """Replace every plain BatchNorm of ``model`` by :class:`SyncBatchNorm`, in place.

    The new modules hold the very same parameter and buffer tensors, so an
    optimizer over the model needs no change. Returns how many were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) not in _PLAIN_BN:
                continue
            sync = SyncBatchNorm(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            for key in ("weight", "bias"):  # the same Parameter objects (optimizer state)
                setattr(sync, key, getattr(child, key))
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                sync._buffers[key] = child._buffers.get(key)
            sync.train(child.training)
            setattr(parent, name, sync)
            replaced += 1
    return replaced
