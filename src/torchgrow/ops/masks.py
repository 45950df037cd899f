"""Connection masks: dense-over-sparse weights (for NeST-style connection growth and pruning).

A masked layer keeps its full weight tensor, with its dormant entries held at
exactly 0, and a 0/1 buffer ``weight_mask`` of the same shape. The forward
reads the weight as it is (no ``weight * mask`` recomputed at every step);
instead the weight's gradient is multiplied by the mask, so dormant entries get
exactly 0 and stay 0 under SGD, Adam and weight decay (and their optimizer
state stays 0): they neither train nor count as parameters. A forward
pre-hook makes sure the layer's current weight carries that gradient hook,
so the mask follows the weight through ``copy.deepcopy``,
``torchgrow.save``/``load`` and every edit that replaces the Parameter. A
training step costs what the plain layer's does, plus one multiply of the
gradient.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import GrowthInputError

__all__ = [
    "apply_mask",
    "mask_of",
    "is_masked",
    "grow_connections",
    "prune_connections",
    "remove_mask",
    "weight_parameter",
]

MASK = "weight_mask"  # the buffer
_HOOK_ID = "_torchgrow_mask_hook"  # the module attribute naming its forward pre-hook
# module -> (its weight when the gradient hook was put on it, that hook's handle)
_HOOKED: weakref.WeakKeyDictionary[nn.Module, tuple[weakref.ref, Any]] = weakref.WeakKeyDictionary()


def _mask_gradient(module: nn.Module) -> None:
    """Put the gradient-masking hook on ``module.weight`` unless it carries it already."""
    weight = module.weight
    held = _HOOKED.get(module)
    if held is not None and held[0]() is weight:
        return
    if held is not None:
        held[1].remove()
    ref = weakref.ref(module)

    def masked(grad: Tensor) -> Tensor:
        owner = ref()
        return grad if owner is None else grad * getattr(owner, MASK)

    _HOOKED[module] = (weakref.ref(weight), weight.register_hook(masked))


def _guard_mask(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of a masked layer: its current weight's gradient is masked."""
    if module.weight.requires_grad:
        _mask_gradient(module)


def is_masked(module: nn.Module) -> bool:
    """Whether ``module`` carries a connection mask (:func:`apply_mask`)."""
    return hasattr(module, _HOOK_ID) and isinstance(getattr(module, MASK, None), Tensor)


def mask_of(module: nn.Module) -> Tensor | None:
    """The module's connection mask (a float 0/1 tensor shaped like the weight), or ``None``."""
    return getattr(module, MASK) if is_masked(module) else None


def weight_parameter(module: nn.Module) -> nn.Parameter:
    """The trainable weight tensor: ``weight`` itself, or its parametrization's original."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _validate_mask(module: nn.Module, mask: Tensor, what: str) -> Tensor:
    w = weight_parameter(module)
    if tuple(mask.shape) != tuple(w.shape):
        raise GrowthInputError(
            f"{what}: mask shape {tuple(mask.shape)} does not match the weight's {tuple(w.shape)}"
        )
    if not torch.isfinite(mask.float()).all():
        raise GrowthInputError(f"{what}: mask contains NaN or Inf")
    return mask.to(dtype=w.dtype, device=w.device).ne(0).to(w.dtype)


def _zero_state(optimizer: torch.optim.Optimizer | None, param: Tensor, where: Tensor) -> None:
    if optimizer is None or param not in optimizer.state:
        return
    for value in optimizer.state[param].values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value[where] = 0


def apply_mask(
    module: nn.Module,
    mask: Tensor | None = None,
    *,
    density: float | None = None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Tensor:
    """Make ``module``'s weight dense-over-sparse.

    Parameters
    ----------
    module : nn.Module
        A ``Linear`` or ``Conv2d`` (anything with a ``weight``).
    mask : Tensor, optional
        0/1 tensor shaped like the weight. Mutually exclusive with ``density``.
    density : float, optional
        Fraction of connections kept, drawn uniformly at random.
    generator : torch.Generator, optional
        Source of randomness for ``density``.
    optimizer : torch.optim.Optimizer, optional
        Its state at the dormant entries is zeroed.

    Returns
    -------
    Tensor
        The mask now in force.
    """
    if not hasattr(module, "weight"):
        raise GrowthInputError(f"{type(module).__name__} has no weight to mask")
    if (mask is None) == (density is None):
        raise GrowthInputError("give exactly one of mask= or density=")
    w = weight_parameter(module)
    if density is not None:
        if not 0.0 < density <= 1.0:
            raise GrowthInputError(f"density must be in (0, 1], got {density}")
        scores = torch.rand(w.shape, generator=generator).to(w.device)
        n_keep = max(1, round(density * w.numel()))
        keep = torch.zeros(w.numel(), dtype=w.dtype, device=w.device)
        keep[scores.flatten().topk(n_keep).indices] = 1
        mask = keep.view_as(w)
    mask = _validate_mask(module, mask, "apply_mask")
    if parametrize.is_parametrized(module, "weight"):
        raise GrowthInputError(
            f"{type(module).__name__}.weight is computed by a parametrization: remove it "
            "(torch.nn.utils.parametrize.remove_parametrizations) before masking"
        )
    if is_masked(module):
        with torch.no_grad():
            getattr(module, MASK).copy_(mask)
    else:
        module.register_buffer(MASK, mask)
        setattr(module, _HOOK_ID, module.register_forward_pre_hook(_guard_mask).id)
    dormant = mask == 0
    with torch.no_grad():
        w[dormant] = 0
    _zero_state(optimizer, w, dormant)
    if w.requires_grad:
        _mask_gradient(module)
    return getattr(module, MASK)


def grow_connections(
    module: nn.Module,
    where: Tensor,
    values: Tensor | float = 0.0,
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> int:
    """Activate dormant connections.

    Parameters
    ----------
    module : nn.Module
        A masked layer.
    where : Tensor
        Boolean tensor shaped like the weight: the connections to activate.
    values : Tensor or float
        Initial values of the new connections (a tensor shaped like the weight
        is read at ``where``). NeST uses one gradient step, ``-lr * grad``, or 0.
    optimizer : torch.optim.Optimizer, optional
        Its state at the activated entries starts at zero.

    Returns
    -------
    int
        Number of connections that were dormant and are now active.
    """
    mask = mask_of(module)
    if mask is None:
        raise GrowthInputError("grow_connections needs a masked layer: call apply_mask first")
    where = _validate_mask(module, where, "grow_connections").bool()
    w = weight_parameter(module)
    if isinstance(values, Tensor):
        if values.shape != w.shape or not torch.isfinite(values[where]).all():
            raise GrowthInputError("values must be finite and shaped like the weight")
        new_vals = values.to(w)[where]
    else:
        if not torch.isfinite(torch.tensor(values)):
            raise GrowthInputError("values must be finite")
        new_vals = torch.full((int(where.sum()),), float(values), dtype=w.dtype, device=w.device)
    n_new = int((where & (mask == 0)).sum())
    with torch.no_grad():
        w[where] = new_vals
        mask[where] = 1
    _zero_state(optimizer, w, where)
    return n_new


def prune_connections(
    module: nn.Module, where: Tensor, *, optimizer: torch.optim.Optimizer | None = None
) -> int:
    """Make connections dormant (weight and optimizer state zeroed).

    Parameters
    ----------
    module : nn.Module
        A masked layer (or any layer: a mask is applied first).
    where : Tensor
        Boolean tensor shaped like the weight: the connections to prune.
    optimizer : torch.optim.Optimizer, optional
        Its state at the pruned entries is zeroed.

    Returns
    -------
    int
        Number of connections that were active and are now dormant.
    """
    w = weight_parameter(module)
    where = _validate_mask(module, where, "prune_connections").bool()
    if not is_masked(module):
        apply_mask(module, torch.ones_like(w), optimizer=optimizer)
    mask = mask_of(module)
    assert mask is not None
    n_pruned = int((where & (mask != 0)).sum())
    with torch.no_grad():
        mask[where] = 0
        w[where] = 0
    _zero_state(optimizer, w, where)
    return n_pruned


def remove_mask(module: nn.Module) -> None:
    """Make a masked layer plain again: its weight (dormant entries 0) stays the same Parameter.

    Safe on a deep copy: the original keeps its mask.
    """
    if not is_masked(module):
        return
    module._forward_pre_hooks.pop(getattr(module, _HOOK_ID), None)
    delattr(module, _HOOK_ID)
    delattr(module, MASK)
    held = _HOOKED.pop(module, None)
    if held is not None:
        held[1].remove()
