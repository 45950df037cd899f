"""Connection-level growth and pruning for dense-over-sparse layers (NeST's Policies 1 and 4).

A masked layer (:func:`torchgrow.ops.apply_mask`) keeps its full weight and a
0/1 mask. These functions choose *which* connections to activate or prune;
the edits themselves are :func:`torchgrow.ops.grow_connections` and
:func:`torchgrow.ops.prune_connections` (dormant entries and their optimizer
state held at exactly zero). Each function validates all layers first and
edits nothing on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import distributed
from .batches import n_rows, run_model, split_batch
from .errors import GrowthInputError
from .graph import find_unit, growable_units
from .how import fan_out_vectors
from .ops.masks import (
    apply_mask,
    grow_connections,
    is_masked,
    mask_of,
    prune_connections,
    weight_parameter,
)
from .ops.units import shrink

__all__ = [
    "dense_weight_gradients",
    "grow_by_gradient",
    "prune_by_magnitude",
    "effective_weight",
    "dead_units",
    "remove_dead_units",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
_LAYERS = (nn.Linear, nn.Conv2d)


def _layers(
    model: nn.Module, names: Sequence[str] | None, *, masked_only: bool
) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if names is None:
        chosen = {n: m for n, m in modules.items() if isinstance(m, _LAYERS)}
        if masked_only:
            chosen = {n: m for n, m in chosen.items() if is_masked(m)}
        return chosen
    out = {}
    for n in names:
        if n not in modules:
            raise GrowthInputError(f"model has no module named {n!r}")
        if not isinstance(modules[n], _LAYERS):
            raise GrowthInputError(
                f"{n!r} is a {type(modules[n]).__name__}, not a Linear or Conv2d"
            )
        if masked_only and not is_masked(modules[n]):
            raise GrowthInputError(f"{n!r} has no connection mask: call torchgrow.ops.apply_mask")
        out[n] = modules[n]
    return out


def dense_weight_gradients(
    model: nn.Module, batch: object, loss_fn: LossFn, layers: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """``dL/dW`` of each layer's *effective* weight, dormant entries included.

    The gradient of a masked weight's trainable tensor is zero where the mask
    is; NeST scores dormant connections by the gradient they *would* get, the
    correlation of the layer's input and its output gradient
    (``E[G ⊗ x]``). Computed from hooks on one forward/backward pass; parameter
    ``.grad`` and buffers are untouched.

    Parameters
    ----------
    model : nn.Module
        The model.
    batch : tuple
        ``(x, y)``.
    loss_fn : callable
        Scalar loss.
    layers : sequence of str, optional
        Linear/Conv2d names (default: every one).

    Returns
    -------
    dict
        Layer name -> gradient shaped like its weight. Under
        ``torch.distributed`` each rank passes its share of the batch and every
        rank gets the gradient of the whole batch (the ranks' gradients
        averaged, weighted by their shares' sizes).
    """
    chosen = _layers(model, layers, masked_only=False)
    x, y = split_batch(batch)
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}
    hooks = []
    for name, m in chosen.items():
        hooks.append(
            m.register_forward_pre_hook(lambda mod, a, n=name: inputs.__setitem__(n, a[0].detach()))
        )
        hooks.append(m.register_forward_hook(lambda mod, a, o, n=name: outputs.__setitem__(n, o)))
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.enable_grad():
            loss = loss_fn(run_model(model, x), y)
            if not torch.isfinite(loss):
                raise GrowthInputError(f"the loss is {loss.item()}: cannot score connections")
            names = [n for n in chosen if n in outputs]
            grads = torch.autograd.grad(loss, [outputs[n] for n in names], allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
    out: dict[str, Tensor] = {}
    for n, g in zip(names, grads, strict=True):
        m, inp = chosen[n], inputs[n]
        w = weight_parameter(m)
        if g is None:
            out[n] = torch.zeros_like(w)
        elif isinstance(m, nn.Linear):
            out[n] = g.reshape(-1, g.shape[-1]).T @ inp.reshape(-1, inp.shape[-1])
        else:
            out[n] = torch.nn.grad.conv2d_weight(
                inp,
                w.shape,
                g,
                stride=m.stride,
                padding=m.padding,
                dilation=m.dilation,
                groups=m.groups,
            )
    return distributed.weighted_mean(out, n_rows(x) or 0)


def grow_by_gradient(
    model: nn.Module,
    batch: object,
    loss_fn: LossFn,
    *,
    fraction: float,
    init: str = "gradient",
    lr: float = 0.1,
    layers: Sequence[str] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, int]:
    """NeST Policy 1: activate the dormant connections with the largest ``|dL/dw|``.

    Parameters
    ----------
    model : nn.Module
        A model with masked layers.
    batch, loss_fn
        The growth batch and loss.
    fraction : float
        Fraction of each layer's *dormant* connections activated (0 < f <= 1);
        ``ceil(fraction * dormant)`` of them. The paper gives no value.
    init : {"gradient", "zero"}
        New weight: one gradient step on the virtual weight, ``-lr * dL/dw``
        (default), or 0.
    lr : float
        Step size of the ``"gradient"`` initialisation.
    layers : sequence of str, optional
        Masked layers to grow (default: every masked Linear/Conv2d).
    optimizer : torch.optim.Optimizer, optional
        State of activated entries starts at zero.

    Returns
    -------
    dict
        Layer name -> connections activated.
    """
    check_growth(fraction, init, lr)
    chosen = _layers(model, layers, masked_only=True)
    grads = dense_weight_gradients(model, batch, loss_fn, list(chosen))
    return grow_from_gradients(chosen, grads, fraction, init, lr, optimizer)


def check_growth(fraction: float, init: str, lr: float) -> None:
    """Refuse bad arguments of :func:`grow_by_gradient` (before anything runs)."""
    if not 0.0 < fraction <= 1.0:
        raise GrowthInputError(f"fraction must be in (0, 1], got {fraction!r}")
    if init not in ("gradient", "zero"):
        raise GrowthInputError(f"init must be 'gradient' or 'zero', got {init!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise GrowthInputError(f"lr must be finite and > 0, got {lr!r}")


def grow_from_gradients(
    chosen: dict[str, nn.Module],
    grads: dict[str, Tensor],
    fraction: float,
    init: str,
    lr: float,
    optimizer: torch.optim.Optimizer | None,
) -> dict[str, int]:
    """The second half of :func:`grow_by_gradient`: activate, in each masked layer of
    ``chosen``, the dormant connections with the largest ``|grads|`` (arguments as there)."""
    plan: dict[str, tuple[Tensor, Tensor]] = {}
    for n, m in chosen.items():
        mask = mask_of(m)
        dormant = mask == 0
        n_dormant = int(dormant.sum())
        where = torch.zeros_like(dormant)
        if n_dormant:
            k = math.ceil(fraction * n_dormant)
            score = grads[n].abs().masked_fill(~dormant, -1.0).flatten()
            where.view(-1)[score.topk(k).indices] = True
        values = -lr * grads[n] if init == "gradient" else torch.zeros_like(grads[n])
        plan[n] = (where, values)
    return {n: grow_connections(chosen[n], w, v, optimizer=optimizer) for n, (w, v) in plan.items()}


def _following_batchnorm(model: nn.Module) -> dict[str, _BatchNorm]:
    """Producer name -> the BatchNorm right after it (first per-channel layer of its unit)."""
    modules = dict(model.named_modules())
    out: dict[str, _BatchNorm] = {}
    for u in growable_units(model):
        bns = [modules[p] for p in u.per_channel if isinstance(modules[p], _BatchNorm)]
        if len(u.producers) == 1 and len(bns) == 1:
            out[u.producers[0]] = bns[0]
    return out


def effective_weight(module: nn.Module, bn: _BatchNorm | None = None) -> Tensor:
    """The weight a layer applies, scaled by the BatchNorm after it: ``W * gamma / sqrt(var + eps)``.

    NeST judges magnitudes on this effective weight when BatchNorm follows.
    """
    w = module.weight.detach()
    if bn is None or bn.running_var is None:
        return w
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    return w * scale.view(-1, *([1] * (w.dim() - 1)))


def prune_by_magnitude(
    model: nn.Module,
    fraction: float,
    *,
    layers: Sequence[str] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    keep_min: int = 1,
) -> dict[str, int]:
    """NeST Policy 4 (one step): prune the smallest-magnitude active weights of each layer.

    Layers without a mask get one (all active) first. With a BatchNorm right
    after a layer, magnitudes are those of :func:`effective_weight`.

    Parameters
    ----------
    model : nn.Module
        The model.
    fraction : float
        Fraction of each layer's *active* connections pruned, ``floor(fraction *
        active)`` (the source's example is 1 % per layer per step).
    layers : sequence of str, optional
        Linear/Conv2d names (default: every one).
    optimizer : torch.optim.Optimizer, optional
        State of pruned entries is zeroed.
    keep_min : int
        Never prune a layer below this many active connections.

    Returns
    -------
    dict
        Layer name -> connections pruned.
    """
    if not 0.0 <= fraction < 1.0:
        raise GrowthInputError(f"fraction must be in [0, 1), got {fraction!r}")
    chosen = _layers(model, layers, masked_only=False)
    return prune_smallest(chosen, _following_batchnorm(model), fraction, optimizer, keep_min)


def prune_smallest(
    chosen: dict[str, nn.Module],
    bns: dict[str, _BatchNorm],
    fraction: float,
    optimizer: torch.optim.Optimizer | None,
    keep_min: int,
) -> dict[str, int]:
    """The second half of :func:`prune_by_magnitude`: prune the smallest active weights of each
    layer of ``chosen`` (magnitudes scaled by the BatchNorm of ``bns`` after it)."""
    plan: dict[str, Tensor] = {}
    for n, m in chosen.items():
        mask = mask_of(m)
        active = torch.ones_like(m.weight, dtype=torch.bool) if mask is None else mask != 0
        n_active = int(active.sum())
        k = min(math.floor(fraction * n_active), max(0, n_active - keep_min))
        where = torch.zeros_like(active)
        if k > 0:
            score = effective_weight(m, bns.get(n)).abs().masked_fill(~active, math.inf).flatten()
            where.view(-1)[(-score).topk(k).indices] = True
        plan[n] = where
    out = {}
    for n, where in plan.items():
        if not is_masked(chosen[n]):
            apply_mask(
                chosen[n], torch.ones_like(where, dtype=chosen[n].weight.dtype), optimizer=optimizer
            )
        out[n] = prune_connections(chosen[n], where, optimizer=optimizer)
    return out


# activations and pass-through layers that map 0 to 0: a unit with no fan-in and no bias
# behind them outputs exactly 0
_ZERO_AT_ZERO = {
    "ReLU", "ReLU1", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU",
    "Mish", "Tanh", "Hardtanh", "Hardswish", "Identity", "Dropout", "Dropout1d", "Dropout2d",
    "AlphaDropout", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "relu", "relu_", "relu6",
    "gelu", "silu", "elu", "leaky_relu", "hardtanh", "mish", "tanh", "dropout", "dropout2d",
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d", "contiguous", "clone",
}  # fmt: skip


def dead_units(model: nn.Module) -> dict[str, list[int]]:
    """Units that contribute nothing, per growable unit (by its name).

    A unit is dead when every consumer's fan-out for it is zero, or when
    every producer's fan-in row for it is zero, it has no bias (or a zero
    one), no per-channel layer follows (BatchNorm would add a constant) and
    everything on the way maps 0 to 0. Removing dead units leaves the
    function unchanged.
    """
    modules = dict(model.named_modules())
    out: dict[str, list[int]] = {}
    for u in growable_units(model):
        no_out = torch.ones(u.width, dtype=torch.bool)
        for c in u.consumers:
            m = modules[c.name]
            eff = fan_out_vectors(m, c.factor, effective=True)
            no_out &= ~(eff != 0).any(dim=1)
        no_in = torch.zeros(u.width, dtype=torch.bool)
        if not u.per_channel and set(u.between) <= _ZERO_AT_ZERO:
            no_in = torch.ones(u.width, dtype=torch.bool)
            for p in u.producers:
                m = modules[p]
                rows = m.weight.detach().reshape(u.width, -1)
                no_in &= ~(rows != 0).any(dim=1)
                if m.bias is not None:
                    no_in &= m.bias.detach() == 0
        dead = (no_out | no_in).nonzero().flatten().tolist()
        if dead:
            out[u.name] = dead
    return out


def remove_dead_units(
    model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, int]:
    """Remove the units :func:`dead_units` finds, with :func:`torchgrow.ops.shrink` (optimizer carried).

    A unit whose channels are all dead keeps one (a layer cannot have zero width).

    Returns
    -------
    dict
        Unit name -> units removed.
    """
    removed: dict[str, int] = {}
    for name, dead in dead_units(model).items():
        width = find_unit(model, name).width
        keep = [i for i in range(width) if i not in set(dead)] or [0]
        if len(keep) < width:
            shrink(model, name, keep, optimizer=optimizer)
            removed[name] = width - len(keep)
    return removed
