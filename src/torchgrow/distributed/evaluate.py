"""Accuracy and loss with each rank evaluating a share of the data."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .agree import broadcast_buffers
from .collectives import _summed
from .process import is_active, rank, world_size


# ------------------------------------------------------------------ evaluation
def _share(data: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    x, y = data
    idx = torch.tensor_split(torch.arange(len(x)), world_size())[rank()]
    return x[idx], y[idx]


def evaluate(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
) -> dict[str, float | int]:
    """:func:`torchgrow.why.evaluate` over all ranks: each evaluates a share, the sums are reduced.

    Parameters
    ----------
    model : nn.Module
        The replica (not the DDP wrapper).
    data : tuple of (Tensor, Tensor)
        The whole evaluation set, the same on every rank.
    loss_fn : callable, optional
        As in :func:`torchgrow.why.evaluate`.
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    dict
        ``loss``, ``n`` and (for labels) ``accuracy`` of the whole set, equal on
        every rank.
    """
    from .. import why

    if not is_active():
        return why.evaluate(model, data, loss_fn, batch_size=batch_size)
    broadcast_buffers(model)
    x, y = _share(data)
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, examples, correct labels, labels
    labels = True
    if len(x):
        res = why.evaluate(model, (x, y), loss_fn, batch_size=batch_size)
        labels = "accuracy" in res
        sums[0] = float(res["loss"]) * int(res["n"])
        sums[1] = int(res["n"])
        sums[2] = float(res.get("accuracy", 0.0)) * y.numel()
        sums[3] = y.numel()
    sums = _summed(sums)
    n = int(round(float(sums[1])))
    out: dict[str, float | int] = {"loss": float(sums[0]) / n, "n": n}
    if labels:
        out["accuracy"] = round(float(sums[2])) / float(sums[3])
    return out


def accuracy(model: nn.Module, data: tuple[Tensor, Tensor], *, batch_size: int = 1024) -> float:
    """:func:`torchgrow.why.accuracy` of the whole set, reduced over ranks."""
    from .. import why

    if not is_active():
        return why.accuracy(model, data, batch_size=batch_size)
    broadcast_buffers(model)
    x, y = _share(data)
    counts = torch.zeros(2, dtype=torch.float64)
    if len(x):
        counts[0] = why.accuracy(model, (x, y), batch_size=batch_size) * y.numel()
        counts[1] = y.numel()
    counts = _summed(counts)
    return round(float(counts[0])) / float(counts[1])
