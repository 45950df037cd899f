"""Global batches cut into shards and gathered back, and metrics reduced over the ranks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..batches import gather_tensors, split_batch
from ..errors import GrowthInputError
from .process import DistributedGrowthError, is_active, rank, world_size


# ------------------------------------------------------------------ data
def shard(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """This rank's contiguous slice of a global batch ``(x, y)`` (the whole batch in one process).

    Raises
    ------
    GrowthInputError
        If the batch has fewer examples than there are ranks (a rank would
        get none, and DDP needs every rank to take part in every step).
    """
    x, y = batch[0], batch[1]
    if not is_active():
        return x, y
    w, r = world_size(), rank()
    if len(x) < w:
        raise GrowthInputError(
            f"a global batch of {len(x)} examples cannot be shared by {w} ranks: use a batch "
            "size of at least the number of ranks (or drop_last=True)"
        )
    idx = torch.tensor_split(torch.arange(len(x)), w)[r]
    return x[idx], y[idx]


def weighted_loss(loss: Tensor, n_local: int, n_global: int) -> Tensor:
    """The local mean loss, scaled so that DDP's gradient average is the global batch's gradient.

    DDP averages the ranks' gradients; with slices of sizes ``n_r`` the
    global-batch gradient is ``sum_r n_r g_r / N``, so rank ``r`` scales its
    mean loss by ``W n_r / N``. ``loss`` itself when that factor is 1 (equal
    slices, or one process).
    """
    weight = world_size() * n_local / n_global if is_active() else 1.0
    return loss if weight == 1.0 else loss * weight


def sharded_batches(batches: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor, int]]:
    """``(x_local, y_local, n_global)`` for each global batch of ``batches``."""
    for batch in batches:
        x, y = shard((batch[0], batch[1]))
        yield x, y, len(batch[0])


def gather_batch(batch: Any) -> Any:
    """Every rank's growth batch concatenated in rank order, on every rank.

    ``batch`` is an ``(x, y)`` pair of tensors or a dict of keyword inputs
    (Hugging Face style, see :mod:`torchgrow.batches`); the result has the
    same form, its tensors concatenated along dimension 0. The exchange
    doubles as a check: if a rank's batch is neither, or the ranks' batches do
    not fit together, every rank raises :class:`DistributedGrowthError` (the
    others are not left waiting).
    """
    if not is_active():
        return batch
    try:
        local: Any = _local_batch(batch)
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        local = exc
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, local if not isinstance(local, Exception) else repr(local))
    bad = [(r, g) for r, g in enumerate(gathered) if isinstance(g, str)]
    if bad:
        if isinstance(local, Exception):
            raise local
        raise DistributedGrowthError(
            "the growth batch was refused on rank(s) "
            + ", ".join(f"{r} ({msg})" for r, msg in bad)
            + "; no rank grew"
        )
    kinds = [_batch_kind(g) for g in gathered]
    if len(set(kinds)) > 1:
        raise DistributedGrowthError(
            "the ranks' growth batches do not fit together (per rank: each tensor's example "
            "shape and dtype): "
            + "; ".join(f"rank {r}: {k}" for r, k in enumerate(kinds))
            + "; no rank grew"
        )
    device = next(v.device for v in _tensors(batch))
    whole = gather_tensors(gathered)
    if isinstance(whole, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in whole.items()}
    return whole[0].to(device), whole[1].to(device)


def _local_batch(batch: Any) -> Any:
    """This rank's growth batch on the CPU, for the exchange (or a clear error)."""
    if isinstance(batch, dict):
        split_batch(batch)  # the same check as in one process
        return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in batch.items()}
    x, y = split_batch(batch)
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise GrowthInputError(
            f"a growth batch must be (Tensor, Tensor) or a dict of tensors, got "
            f"({type(x).__name__}, {type(y).__name__})"
        )
    return x.detach().cpu(), y.detach().cpu()


def _tensors(batch: Any) -> list[Tensor]:
    values = batch.values() if isinstance(batch, dict) else batch[:2]
    return [v for v in values if isinstance(v, Tensor)]


def _batch_kind(batch: Any) -> tuple[Any, ...]:
    """What must agree between the ranks' batches: keys, and each tensor's example shape and
    dtype (the batch dimension may differ)."""
    items = batch.items() if isinstance(batch, dict) else enumerate(batch)
    return tuple(
        (k, tuple(v.shape[1:]), v.dtype) if isinstance(v, Tensor) else (k, repr(v))
        for k, v in items
    )


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (the values themselves in one process)."""
    if not is_active() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    t = _summed(t) / world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def all_sum(*values: float | Tensor) -> tuple[float, ...]:
    """The sum over ranks of each value (the values themselves in one process)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if is_active():
        t = _summed(t)
    return tuple(float(v) for v in t.tolist())


def weighted_mean(tensors: dict[str, Tensor], n_local: int) -> dict[str, Tensor]:
    """Each tensor averaged over ranks, weighted by the ``n_local`` examples it was computed on.

    For per-rank means over shares of one global batch this is the mean over
    the whole batch. The dict's keys must be the same on every rank. In one
    process the tensors are returned unchanged.
    """
    if not is_active():
        return tensors
    (n_total,) = all_sum(n_local)
    out = {}
    for key in sorted(tensors):
        out[key] = _summed(tensors[key] * (n_local / n_total))
    return {k: out[k] for k in tensors}


def _summed(t: Tensor) -> Tensor:
    """A new tensor: ``t`` summed over ranks, on ``t``'s device (via CUDA under nccl)."""
    buf = t.detach().clone(memory_format=torch.contiguous_format)
    if dist.get_backend() == "nccl" and buf.device.type != "cuda":
        buf = buf.cuda()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)
