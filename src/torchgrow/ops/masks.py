"""Connection masks: dense-over-sparse weights (for NeST-style connection growth and pruning).

A masked layer keeps its full weight tensor and a binary mask, registered
with :mod:`torch.nn.utils.parametrize`, so ``module.weight`` is
``original * mask``. Dormant entries of ``original`` are held at exactly 0, so
with zero gradient there they stay 0 under SGD, Adam and weight decay: they
neither train nor count as parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import GrowthInputError

__all__ = [
    "ConnectionMask",
    "apply_mask",
    "mask_of",
    "is_masked",
    "grow_connections",
    "prune_connections",
    "remove_mask",
    "weight_parameter",
]


class ConnectionMask(nn.Module):
    """Parametrization ``w -> w * mask`` with the mask stored as a buffer."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def is_masked(module: nn.Module) -> bool:
    """Whether ``module.weight`` carries a :class:`ConnectionMask`."""
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, ConnectionMask) for p in module.parametrizations.weight
    )


def mask_of(module: nn.Module) -> Tensor | None:
    """The module's connection mask (a float 0/1 tensor shaped like the weight), or ``None``."""
    if not is_masked(module):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, ConnectionMask):
            return p.mask
    return None


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
    if is_masked(module):
        current = mask_of(module)
        assert current is not None
        with torch.no_grad():
            current.copy_(mask)
    else:
        parametrize.register_parametrization(module, "weight", ConnectionMask(mask))
    dormant = mask == 0
    with torch.no_grad():
        w[dormant] = 0
    _zero_state(optimizer, w, dormant)
    return mask_of(module)  # type: ignore[return-value]


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


def own_parametrized_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own before a parametrization is removed.

    ``copy.deepcopy`` shares the injected ``Parametrized<Layer>`` class between
    the copy and the original, and removing a parametrization deletes its
    property from that class: without this, the other model would lose its
    ``weight``.
    """
    cls = type(module)
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


def remove_mask(module: nn.Module) -> None:
    """Bake the mask into the weight and remove the parametrization (keeps the same Parameter).

    Safe on a deep copy: the original keeps its mask.
    """
    if is_masked(module):
        own_parametrized_class(module)
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
