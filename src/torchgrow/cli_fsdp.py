"""``torchgrow run --fsdp``: the model sharded with ``fully_shard`` on every rank of a torchrun job.

The model is sharded per layer (each child module holding parameters, the
elements of a ``ModuleList``/``ModuleDict`` one by one) and at the root, on a
one-dimensional mesh over every rank; the optimizer is built on the sharded
parameters and the method's grower runs as :class:`torchgrow.fsdp.Grower`.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from . import distributed
from .graph import set_example
from .grower import Grower

__all__ = ["FSDP_METHODS", "check", "shard", "grower_for"]

FSDP_METHODS = ("gradmax", "random", "zero", "static")
"""The command line's methods that grow under FSDP (their initialisers need no more of the model
than the gathered units; see :class:`torchgrow.fsdp.Grower`)."""


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse ``--fsdp`` where it cannot run, before anything is built."""
    if not distributed.is_active():
        parser.error("--fsdp shards the model over several processes: add --nproc N (N >= 2)")
    if args.method not in FSDP_METHODS:
        parser.error(
            f"--fsdp grows with {', '.join(FSDP_METHODS)}; {args.method!r} needs more of the "
            "model than the gathered units"
        )
    if args.resume is not None or args.checkpoint_every is not None:
        parser.error(
            "--fsdp: checkpoints of a sharded model are written by every rank with "
            "torch.distributed.checkpoint (torchgrow.fsdp.save), not by --checkpoint-every"
        )


def shard(model: nn.Module, example: torch.Tensor, device: torch.device) -> nn.Module:
    """Shard ``model`` in place (per layer and at the root) and give it its example input."""
    from .fsdp.wrap import shard_layers

    shard_layers(model, device_type=device.type)
    set_example(model, example.to(device))  # every edit under FSDP is checked on it
    return model


def grower_for(grower: Grower | None) -> Grower | None:
    """The method's grower as the FSDP grower (``None`` for a static run)."""
    if grower is None:
        return None
    from .fsdp import Grower as ShardedGrower

    return ShardedGrower.of(grower)
