"""CompNet's building blocks (Lu, Ma, Faltings 2018): a function-preserving new layer, made compact.

Only the paper's abstract could be checked, so this is a **reconstruction**
that meets its stated requirements: the deepened network computes the same
function at insertion, and the added layer is kept small by sparse
optimisation (``docs/compnet.md``).

- :func:`identity_layer`: ``Linear(I) -> ReLU`` or ``Conv(Dirac) [-> BN] -> ReLU``,
  inserted after a ReLU (Net2DeeperNet): exact, as wide as the layer it follows.
- :func:`morphism_factors`: the morphism-equation variant. The next layer's
  weight ``W`` (``out x d``) is factored through ``2r`` paired units,
  ``A = [P; -P]``, ``W' = [Q, -Q]`` with ``Q P = W`` (from the SVD, ``r`` = rank),
  so ``W' relu(A h) = Q (relu(P h) - relu(-P h)) = Q P h = W h`` for any ``h``:
  exact, and narrower than ``d`` whenever ``2 r < d``.
- :func:`unit_group_norms` and :func:`prox_group_lasso`: the group-lasso penalty
  over the new layer's units, one group per unit (its fan-in row, bias, a
  following BatchNorm's scale and shift, and its fan-out column), and its
  proximal step (group soft-threshold), which sets exactly the groups with
  norm <= ``step`` to zero.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from ..ops.depth import identity_conv, identity_linear

__all__ = [
    "identity_layer",
    "morphism_factors",
    "compact_factors",
    "unit_group_norms",
    "prox_group_lasso",
]

_LAYERS = (nn.Linear, nn.Conv2d)


def identity_layer(layer: nn.Module, *, batchnorm: bool = False) -> nn.Sequential:
    """A new layer computing the identity on non-negative inputs, shaped to follow ``layer``.

    Parameters
    ----------
    layer : nn.Linear or nn.Conv2d
        The layer whose (activated) output the new layer will read.
    batchnorm : bool
        For a Conv2d: add an eval-mode-identity BatchNorm2d after the new conv.

    Returns
    -------
    nn.Sequential
        ``fc`` (or ``conv`` [+ ``bn``]) then ``act`` (ReLU); insert it after the
        ReLU that follows ``layer`` with :func:`torchgrow.ops.insert_after`.
    """
    if isinstance(layer, nn.Linear):
        return nn.Sequential(OrderedDict(fc=identity_linear(layer.out_features), act=nn.ReLU()))
    if isinstance(layer, nn.Conv2d):
        block = identity_conv(layer.out_channels, 3, batchnorm=batchnorm)
        parts = list(block.named_children()) if batchnorm else [("conv", block)]
        return nn.Sequential(OrderedDict([*parts, ("act", nn.ReLU())]))
    raise GrowthInputError(f"identity_layer follows a Linear or Conv2d, got {type(layer).__name__}")


def morphism_factors(
    weight: Tensor, rank: int | None = None, *, rtol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Factor ``weight`` (``out x d``) as ``W' relu(A h) = weight h`` with paired ReLU units.

    Parameters
    ----------
    weight : Tensor
        The next layer's weight, ``(out, d)``.
    rank : int, optional
        Number of singular directions kept (default: the numerical rank, the
        singular values above ``rtol * s_max``); fewer than the rank gives the
        best rank-``rank`` approximation, so the function is no longer exact.
    rtol : float
        Relative threshold of the numerical rank.

    Returns
    -------
    A : Tensor
        ``(2 r, d)``: the new layer's weight ``[P; -P]`` with ``P = S^1/2 V^T``.
    W_next : Tensor
        ``(out, 2 r)``: the next layer's new weight ``[Q, -Q]`` with ``Q = U S^1/2``.
    """
    if weight.dim() != 2:
        raise GrowthInputError(f"morphism_factors needs a 2-D weight, got {tuple(weight.shape)}")
    w = weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    numerical = int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    r = numerical if rank is None else int(rank)
    if not 1 <= r <= s.numel():
        raise GrowthInputError(
            f"rank must be in [1, {s.numel()}] (numerical rank {numerical}), got {rank!r}"
        )
    root = s[:r].sqrt()
    p = root[:, None] * vh[:r]
    q = u[:, :r] * root[None, :]
    a = torch.cat([p, -p], 0).to(weight.dtype)
    w_next = torch.cat([q, -q], 1).to(weight.dtype)
    return a, w_next


def compact_factors(
    weight: Tensor, a: Tensor, w_next: Tensor, lam: float, *, steps: int = 500
) -> tuple[Tensor, Tensor, float]:
    """Compact paired factors before insertion: group lasso on the morphism equation.

    Minimises ``1/2 ||W - Q P||_F^2 + lam * sum_j ||[P_j, Q_j]||`` over the
    unpaired factors (``A = [P; -P]``, ``W' = [Q, -Q]``) by proximal gradient
    descent from the exact factors, then drops the groups that reached zero
    (both units of each pair), and pairs left with a zero fan-in or fan-out.
    The pairing is kept, so the new layer computes
    ``Q P h`` exactly; only ``||W - Q P||`` is lost.

    Parameters
    ----------
    weight : Tensor
        ``(out, d)``, the weight being factored.
    a, w_next : Tensor
        Paired factors from :func:`morphism_factors`.
    lam : float
        Group-lasso weight (relative to the squared-error term).
    steps : int
        Proximal gradient steps (step size ``1 / L`` from the factors' norms).

    Returns
    -------
    a, w_next : Tensor
        The compacted paired factors (``2 r'`` units, ``1 <= r' <= r``).
    relative_residual : float
        ``||W - W' A||_F / ||W||_F`` of the result.
    """
    if not lam >= 0:
        raise GrowthInputError(f"lam must be >= 0, got {lam!r}")
    r = a.shape[0] // 2
    w = weight.detach().double()
    p, q = a[:r].detach().double().clone(), w_next[:, :r].detach().double().clone()
    for _ in range(int(steps)):
        lip = float(torch.linalg.matrix_norm(p, 2) ** 2 + torch.linalg.matrix_norm(q, 2) ** 2)
        lr = 1.0 / max(lip, 1e-12)
        resid = q @ p - w
        p, q = p - lr * (q.T @ resid), q - lr * (resid @ p.T)
        norms = (p.pow(2).sum(1) + q.pow(2).sum(0)).sqrt()
        scale = torch.clamp(1 - lr * lam / norms.clamp_min(1e-30), min=0.0)
        p, q = p * scale[:, None], q * scale[None, :]
    # a pair with a zero fan-in or a zero fan-out contributes nothing: drop it too
    alive = (p.abs().sum(1) > 0) & (q.abs().sum(0) > 0)
    keep = torch.nonzero(alive).flatten()
    if len(keep) == 0:
        raise GrowthInputError(
            f"compact_factors: lam={lam!r} removed every direction of the weight; use a smaller "
            "lam (the singular values of the weight give its scale)"
        )
    p, q = p[keep], q[:, keep]
    rel = float(torch.linalg.matrix_norm(w - q @ p) / torch.linalg.matrix_norm(w).clamp_min(1e-30))
    return (
        torch.cat([p, -p], 0).to(a.dtype),
        torch.cat([q, -q], 1).to(w_next.dtype),
        rel,
    )


def _groups(
    producer: nn.Module, consumer: nn.Module, bn: nn.Module | None, factor: int = 1
) -> list[tuple[Tensor, int]]:
    """(tensor, unit dimension) of every tensor in the units' groups."""
    if not isinstance(producer, _LAYERS) or not isinstance(consumer, _LAYERS):
        raise GrowthInputError(
            "group lasso pairs a Linear/Conv2d producer with a Linear/Conv2d consumer, got "
            f"{type(producer).__name__} -> {type(consumer).__name__}"
        )
    width = producer.weight.shape[0]
    fan_out = consumer.weight
    if isinstance(consumer, nn.Linear) and factor > 1 and fan_out.shape[1] == width * factor:
        # a conv -> flatten -> Linear hand-over: `factor` inputs per channel, channel-major
        fan_out = fan_out.view(fan_out.shape[0], width, factor)
    if fan_out.shape[1] != width:
        raise GrowthInputError(
            f"the consumer reads {consumer.weight.shape[1]} features but the producer has "
            f"{width} units (factor {factor}); group lasso needs the consumer directly after "
            "the new layer"
        )
    parts = [(producer.weight, 0), (fan_out, 1)]
    if producer.bias is not None:
        parts.append((producer.bias, 0))
    if bn is not None:
        if bn.num_features != width:
            raise GrowthInputError(f"the BatchNorm has {bn.num_features} features, not {width}")
        parts += [(t, 0) for t in (bn.weight, bn.bias) if t is not None]
    return parts


def _per_unit(t: Tensor, dim: int) -> Tensor:
    return t.detach().transpose(0, dim).reshape(t.shape[dim], -1).pow(2).sum(1)


def unit_group_norms(
    producer: nn.Module, consumer: nn.Module, bn: nn.Module | None = None, factor: int = 1
) -> Tensor:
    """Per-unit L2 norm of the group ``[fan-in row, bias, BN scale and shift, fan-out column]``.

    Parameters
    ----------
    producer : nn.Linear or nn.Conv2d
        The new layer.
    consumer : nn.Linear or nn.Conv2d
        The layer that reads it (directly, apart from an activation).
    bn : nn.BatchNorm2d or nn.BatchNorm1d, optional
        A BatchNorm between them; its per-unit scale and shift join the groups.
    factor : int
        Inputs of a Linear consumer per unit (``H*W`` after a conv -> flatten).

    Returns
    -------
    Tensor
        ``(units,)``.
    """
    return sum(_per_unit(t, d) for t, d in _groups(producer, consumer, bn, factor)).sqrt()


@torch.no_grad()
def prox_group_lasso(
    producer: nn.Module,
    consumer: nn.Module,
    step: float,
    bn: nn.Module | None = None,
    factor: int = 1,
) -> Tensor:
    """One proximal step of ``step * sum_j ||group_j||``: group soft-thresholding, in place.

    Each unit's group is scaled by ``max(0, 1 - step / ||group_j||)``: groups
    with norm <= ``step`` become exactly zero, the others shrink towards zero
    by ``step`` in norm. Call it after each optimizer step with
    ``step = lr * lambda``.

    Returns
    -------
    Tensor
        The group norms after the step.
    """
    if not step >= 0 or math.isinf(step):
        raise GrowthInputError(f"step must be a finite number >= 0, got {step!r}")
    parts = _groups(producer, consumer, bn, factor)
    norms = sum(_per_unit(t, d) for t, d in parts).sqrt()
    scale = torch.clamp(1.0 - step / norms.clamp_min(1e-30), min=0.0)
    scale = torch.where(norms <= step, torch.zeros_like(scale), scale)
    for t, d in parts:
        shape = [1] * t.dim()
        shape[d] = -1
        t.mul_(scale.view(shape).to(t.dtype))
    return norms * scale
