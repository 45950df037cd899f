"""One growth decision on every rank: compared, undone everywhere on a mismatch, broadcast."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .process import DistributedGrowthError, is_active, rank, world_size


# ------------------------------------------------------------------ agreement
def fingerprint(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str:
    """A digest of the architecture: parameter names and shapes, and the optimizer's state shapes."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    for name, b in model.named_buffers():
        h.update(f"{name}:{tuple(b.shape)};".encode())
    if optimizer is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                shapes = sorted(
                    (k, tuple(v.shape)) for k, v in state.items() if isinstance(v, Tensor)
                )
                h.update(f"{tuple(p.shape)}{shapes};".encode())
    return h.hexdigest()


def agree(
    what: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    """Check that every rank finished ``what`` with the same architecture.

    Every rank must call it once per step, passing ``error`` if its own step
    failed. If any rank failed, or the architectures differ, every rank raises
    (the failing rank its own error, the others :class:`DistributedGrowthError`),
    so callers can undo their edit instead of waiting forever at the next
    collective.
    """
    if not is_active():
        if error is not None:
            raise error
        return
    mine = {"error": None if error is None else repr(error), "fp": fingerprint(model, optimizer)}
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    failed = [(r, e["error"]) for r, e in enumerate(everyone) if e["error"] is not None]
    if error is not None:
        raise error
    if failed:
        raise DistributedGrowthError(
            f"{what} failed on rank(s) "
            + ", ".join(f"{r}: {msg}" for r, msg in failed)
            + f"; rank {rank()} undid its edit so that every replica stays as it was"
        )
    prints = [e["fp"] for e in everyone]
    if len(set(prints)) > 1:
        groups: dict[str, list[int]] = {}
        for r, p in enumerate(prints):
            groups.setdefault(p, []).append(r)
        raise DistributedGrowthError(
            f"after {what} the ranks disagree on the architecture or optimizer state "
            f"(ranks grouped by digest: {sorted(groups.values())}); every rank undid its edit. "
            "Check that every rank runs the same model, growth settings and seeds"
        )


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP does this at the start of each forward pass; after the last training
    step of a phase each rank's buffers hold its own share's statistics, so
    evaluation and growth call this first.
    """
    if not is_active():
        return
    with torch.no_grad():
        for b in model.buffers():
            dist.broadcast(b.data, src=src)


def broadcast_model(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameter and buffer values to every rank (shapes must agree)."""
    if not is_active():
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=src)
