"""Checkpoints of grown sharded models: DCP shards and the architecture to rebuild them at."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import GrowthInputError
from .state import is_sharded, plain_copy, reshard_idle

ARCHITECTURE_FILE = "torchgrow-architecture.pt"


def _meta(t: Tensor, memo: dict[int, Any]) -> Tensor:
    if id(t) not in memo:
        new = torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
        memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
    return memo[id(t)]


def plain_mirror(module: nn.Module) -> nn.Module:
    """A copy of ``module`` without FSDP: the original classes, no hooks, and ``meta`` tensors
    of the full (global) shapes; shared tensors stay shared. What an architecture record of a
    sharded model is made from."""
    return plain_copy(module, _meta)


def save(
    folder: str | Any, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Save a (grown, sharded) model and its optimizer with ``torch.distributed.checkpoint``.

    Every rank writes its shards; rank 0 adds the architecture record
    (:func:`torchgrow.io.architecture_record` of :func:`plain_mirror`), so that
    :func:`restore` can build the model at its grown size on resume, with any
    number of ranks.
    """
    from pathlib import Path

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from ..io import architecture_record

    folder = Path(folder)
    reshard_idle(model)
    record = architecture_record(plain_mirror(model))
    opts = [optimizer] if optimizer is not None else []
    msd, osd = get_state_dict(model, opts)
    state = {"model": msd, **({"optim": osd} if optimizer is not None else {})}
    dcp.save(state, checkpoint_id=str(folder))
    if not dist.is_initialized() or dist.get_rank() == 0:
        (folder / ARCHITECTURE_FILE).write_bytes(record)
    if dist.is_initialized():
        dist.barrier()


def restore(folder: str | Any, model: nn.Module, *, allow: Iterable[Any] = ()) -> list[str]:
    """Give a freshly built (plain, not yet sharded) ``model`` the architecture saved in
    ``folder``: "grow on resume". Then ``fully_shard`` it as before (or not) and :func:`load`.

    Returns the submodules replaced (see :func:`torchgrow.io.restore_architecture`).
    """
    from pathlib import Path

    from ..io import restore_architecture

    if is_sharded(model):
        raise GrowthInputError(
            "torchgrow.fsdp.restore: call it on the model as built, before fully_shard: the "
            "grown modules it puts in must be sharded with the others"
        )
    record = (Path(folder) / ARCHITECTURE_FILE).read_bytes()
    return restore_architecture(model, record, allow=allow)


def load(
    folder: str | Any, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load what :func:`save` wrote into ``model`` (sharded on any number of ranks, or plain in
    one process) and ``optimizer``, after :func:`restore` gave the model its grown size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    opts = [optimizer] if optimizer is not None else []
    msd, osd = get_state_dict(model, opts)
    state = {"model": msd, **({"optim": osd} if optimizer is not None else {})}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        model, opts, model_state_dict=state["model"],
        optim_state_dict=state.get("optim", {}),
    )  # fmt: skip
