"""NeST's connection growth and magnitude pruning on a model sharded with ``fully_shard``.

Masked layers (:func:`torchgrow.ops.apply_mask`) train under FSDP as they do in
one process: the mask is a buffer, replicated on every rank, and the gradient
hook that keeps dormant entries at exactly 0 is put on whichever weight the
layer holds when it runs (the unsharded one inside FSDP's forward), so the
sharded gradient is masked before the optimizer sees it.

Editing the masks is a checked edit of :mod:`torchgrow.fsdp`:

- :func:`grow_connections`: the dense gradient ``dL/dW`` that scores the dormant
  connections is taken through the sharded model, every rank on its share of
  the global batch, and averaged over the ranks weighted by their shares (as
  under DDP); then the scored layers are gathered, NeST's rule activates the
  top ``fraction`` of each layer's dormant connections (new weight ``-lr *
  dL/dw``, or 0), and the layers are sharded again;
- :func:`prune_connections`: the layers are gathered and NeST's magnitude rule
  prunes the smallest ``fraction`` of their active connections.

Both are atomic on every rank: the masks, edited in place, are restored with
the model and the optimizer when any rank fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..connections import (
    _following_batchnorm,
    check_growth,
    dense_weight_gradients,
    grow_from_gradients,
    prune_smallest,
)
from ..errors import GrowthInputError
from ..ops.masks import mask_of
from .state import check_supported, is_dtensor, reshard_idle
from .width import edit

__all__ = ["grow_connections", "prune_connections"]

LossFn = Callable[[Any, Any], Tensor]


def _masked(model: nn.Module, layers: Sequence[str]) -> dict[str, Tensor]:
    """Each layer's mask buffer (the layers must be masked)."""
    masks = {}
    for name in layers:
        mask = mask_of(model.get_submodule(name))
        if mask is None:
            raise GrowthInputError(
                f"torchgrow.fsdp: {name!r} has no connection mask: apply_mask before fully_shard"
            )
        masks[name] = mask
    return masks


def _edit_masks(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    layers: Sequence[str],
    fn: Callable[[], dict[str, int]],
    preserve: bool,
    atol: float,
) -> dict[str, int]:
    """Run ``fn`` on the gathered ``layers`` as one checked edit; the masks restored if it fails."""
    masks = _masked(model, layers)
    saved = {n: m.clone() for n, m in masks.items()}
    try:
        return edit(model, optimizer, fn, modules=list(layers), preserve=preserve, atol=atol)
    except BaseException:
        with torch.no_grad():
            for name, mask in masks.items():
                mask.copy_(saved[name])
        raise


def grow_connections(
    model: nn.Module,
    batch: object,
    loss_fn: LossFn,
    *,
    layers: Sequence[str],
    fraction: float,
    init: str = "gradient",
    lr: float = 0.1,
    optimizer: torch.optim.Optimizer | None = None,
    atol: float = 1e-5,
) -> dict[str, int]:
    """NeST's connection growth (:func:`torchgrow.connections.grow_by_gradient`) under FSDP.

    Parameters
    ----------
    model : nn.Module
        Sharded with ``fully_shard``, with an example input
        (:func:`torchgrow.graph.set_example`) and masked ``layers``.
    batch : tuple or dict
        This rank's share of the growth batch.
    loss_fn : callable
        Scalar loss of the model's output and the targets.
    layers : sequence of str
        The masked Linear/Conv2d layers to grow (the same on every rank).
    fraction, init, lr
        As in :func:`torchgrow.connections.grow_by_gradient`.
    optimizer : torch.optim.Optimizer, optional
        Built on the sharded parameters; the activated entries' state starts at 0.
    atol : float
        Tolerance of the check when ``init="zero"`` (function-preserving).

    Returns
    -------
    dict
        Layer name -> connections activated (the same on every rank).
    """
    check_supported()
    check_growth(fraction, init, lr)
    _masked(model, layers)
    grads = dense_weight_gradients(model, batch, loss_fn, list(layers))
    reshard_idle(model)
    grads = {n: (g.full_tensor() if is_dtensor(g) else g).detach() for n, g in grads.items()}

    def activate() -> dict[str, int]:
        chosen = {n: model.get_submodule(n) for n in layers}  # gathered: full weights
        return grow_from_gradients(chosen, grads, fraction, init, lr, optimizer)

    return _edit_masks(model, optimizer, layers, activate, init == "zero", atol)


def prune_connections(
    model: nn.Module,
    fraction: float,
    *,
    layers: Sequence[str],
    optimizer: torch.optim.Optimizer | None = None,
    keep_min: int = 1,
    atol: float = 1e-5,
) -> dict[str, int]:
    """NeST's magnitude pruning (:func:`torchgrow.connections.prune_by_magnitude`) under FSDP.

    The ``layers`` (masked, the same on every rank) are gathered; in each the
    smallest ``fraction`` of the active connections become dormant (weight and
    optimizer state 0); a BatchNorm right after a layer scales its magnitudes, as in one
    process. Returns layer name -> connections pruned.
    """
    check_supported()
    if not 0.0 <= fraction < 1.0:
        raise GrowthInputError(f"fraction must be in [0, 1), got {fraction!r}")
    _masked(model, layers)
    # the BatchNorm after each layer, found before anything is gathered (the analysis runs the
    # sharded model's forward on its example, a collective)
    bns = {n: bn for n, bn in _following_batchnorm(model).items() if n in layers}

    def prune() -> dict[str, int]:
        chosen = {n: model.get_submodule(n) for n in layers}  # gathered: full weights
        return prune_smallest(chosen, bns, fraction, optimizer, keep_min)

    return _edit_masks(model, optimizer, layers, prune, False, atol)
