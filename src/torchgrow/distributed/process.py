"""Whether torchgrow runs distributed, and as which rank."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import torch.distributed as dist

from ..errors import TorchgrowError

_DISABLED = [False]


class DistributedGrowthError(TorchgrowError, RuntimeError):
    """A growth step that the ranks did not complete identically (every rank raises it)."""


def is_active() -> bool:
    """Whether a process group of more than one rank is initialised (and not :func:`disabled`)."""
    return (
        not _DISABLED[0]
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Treat this process as a single one inside the block (e.g. independent runs per rank)."""
    old = _DISABLED[0]
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = old


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of ranks (1 in a single process)."""
    return dist.get_world_size() if is_active() else 1


def shutdown() -> None:
    """Tear the process group down cleanly: free DDP wrappers first, then wait for every rank.

    A DDP wrapper holds the process group; if one outlives
    ``destroy_process_group`` (kept alive by a reference cycle until the
    interpreter exits), gloo's worker threads can be torn down out of order
    and the process aborts. Call this instead of ``destroy_process_group``.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
