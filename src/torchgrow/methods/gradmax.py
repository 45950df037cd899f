"""GradMax — "Growing Neural Networks Using Gradient Information" (Evci et al., ICLR 2022).

Algorithm, as in the official code (``google-research/growneuron``):

1. every ``update_frequency`` iterations from ``start_iteration``, at most
   ``n_growth_steps`` times (both scaled by ``128 / batch_size``), grow:
2. all candidate layers at once (``AllAtOnce``, the paper's main setting) or
   one layer per event (``RoundRobin``),
3. each by 25 % of its *initial* width, ``max(1, int(0.25 * width0))``,
4. with zero fan-in and the fan-out given by the top singular vectors of the
   gradient matrix, scaled to 0.5 x the mean norm of the existing fan-out;
5. optimizer state carried (``carry_optimizer=True``).

Growth happens after the optimizer step of iteration ``t`` here
(:meth:`torchgrow.Grower.step` counts steps done), which is the official
"before the SGD step of iteration t" with 0-based counting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError, require_int, warn
from ..graph import DEAD_AT_ZERO, NONZERO_AT_ZERO, growable_units
from ..grower import Grower
from ..how import GradMax as GradMaxHow
from ..ops.units import DeadUnitWarning, FunctionChangeWarning
from ..size import Fraction
from ..when import Every
from ..where import AllAtOnce, RoundRobin, Where

__all__ = ["GradMax", "DESCRIPTION", "PAPER_BATCH_SIZE"]

PAPER_BATCH_SIZE = 128

DESCRIPTION = {
    "name": "GradMax",
    "paper": "Evci, van Merriënboer, Unterthiner, Vladymyrov, Pedregosa. ICLR 2022",
    "why": "function-preserving width growth whose new weights get the largest gradient norm "
    "(judged by the new fan-in's gradient norm, training loss, accuracy at matched cost)",
    "when": "fixed schedule: every 2,500 iterations from 10,000, 12 times (batch 128)",
    "where": "preset layers: all at once (or round robin), 25% of each layer's initial width",
    "how": "zero fan-in; fan-out = top-k singular vectors of sum(dL/dz_next h_prev^T), "
    "scaled to 0.5 x mean existing fan-out norm",
}


def GradMax(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    batch_size: int = PAPER_BATCH_SIZE,
    update_frequency: int | None = None,
    start_iteration: int = 10000,
    n_growth_steps: int | None = None,
    where: str | Where = "all_at_once",
    layers: Sequence[str] | str | None = None,
    fraction: float = 0.25,
    scale: float = 0.5,
    scale_method: str = "mean_norm",
    mixed: str = "random",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    seed: int = 0,
    **grower_kwargs,
) -> Grower:
    """A :class:`~torchgrow.Grower` running GradMax with the paper's defaults.

    Parameters
    ----------
    model : nn.Module
        The model; its growable units (or ``layers``) are grown.
    optimizer : torch.optim.Optimizer, optional
        Carried across growth.
    batch_size : int
        The training batch size: ``update_frequency`` and ``start_iteration``
        are given for batch 128 and rescaled by ``128 / batch_size`` as in the
        official ``cifar/main.py``.
    update_frequency, start_iteration, n_growth_steps : int
        The schedule. Defaults follow the official CIFAR configs: all at once,
        every 2,500 iterations from 10,000, 12 times; round robin, every 150
        iterations from 10,000, 12 cycles (12 x the number of grown layers).
    where : {"all_at_once", "round_robin"} or Where
        Unit selection.
    layers : sequence of str or "all", optional
        Producers to grow. Default: the model's ``growth_layers`` when it
        declares them (``models.wide_resnet`` and ``models.cifar_resnet``: the
        convolutions inside each block, as the paper's WRN setting grows the
        first one; ``models.mobilenet_v1``: the pointwise convolutions), else
        every growable unit. ``"all"``: every growable unit, including the
        residual streams of a ResNet.
    fraction : float
        Units per growth: ``max(1, int(fraction * initial width))``.
    scale, scale_method : see :class:`torchgrow.how.GradMax`.
    mixed : {"random", "iterative"}
        Pairs of different layer kinds: random fallback (official) or solved.
    loss_fn : callable, optional
        Loss for the growth statistics (task loss, no weight decay).
    seed : int
        Seed of the initialiser's random parts.
    **grower_kwargs
        Passed to :class:`~torchgrow.Grower` (``measure``, ``unknown_optimizer``).

    Returns
    -------
    Grower
        Call ``grower.step((x, y), loss_fn)`` after each optimizer step.
    """
    require_int(batch_size, "batch_size", 1)
    units = growable_units(model)
    if layers is None:  # the model's own preset (models.wide_resnet, cifar_resnet...), or all
        layers = getattr(model, "growth_layers", None)
    elif isinstance(layers, str):
        if layers != "all":
            raise GrowthInputError(
                f"layers must be a list of producer names or 'all', got {layers!r}"
            )
        layers = None
    names = set(layers) if layers is not None else {u.name for u in units}
    if isinstance(where, str):
        choices = {"all_at_once": AllAtOnce, "round_robin": RoundRobin}
        if where not in choices:
            raise GrowthInputError(
                f"where must be one of {sorted(choices)} or a Where, got {where!r}"
            )
        where = choices[where](layers)
    round_robin = isinstance(where, RoundRobin)
    if update_frequency is None:
        update_frequency = 150 if round_robin else 2500
    if n_growth_steps is None:
        n_growth_steps = 12 * len(names) if round_robin else 12
    factor = PAPER_BATCH_SIZE / batch_size
    every = max(1, round(update_frequency * factor))
    start = max(1, round(start_iteration * factor))
    dead = {
        u.name: sorted(set(u.between) & DEAD_AT_ZERO)
        for u in units
        if u.name in names and set(u.between) & DEAD_AT_ZERO
    }
    if dead:
        warn(
            f"GradMax grows units with zero fan-in, but {dead} pass through activations whose "
            "derivative at 0 is 0: those new units will never train. Build the model with "
            "torchgrow.nn.ReLU1 (models.*(activation='relu1')), as the official code does.",
            DeadUnitWarning,
        )
    shifted = {
        u.name: sorted(set(u.between) & NONZERO_AT_ZERO)
        for u in units
        if u.name in names and set(u.between) & NONZERO_AT_ZERO
    }
    if shifted:
        warn(
            f"GradMax grows units with zero fan-in and a non-zero fan-out, but {shifted} pass "
            "through activations whose value at 0 is not 0: the new units output f(0) != 0 and "
            "growth changes the function. GradMax preserves the function only through "
            "activations with f(0) = 0 (ReLU1, tanh, GELU...).",
            FunctionChangeWarning,
        )
    grower = Grower(
        model,
        optimizer,
        when=Every(every, start=start, times=n_growth_steps),
        where=where,
        how=GradMaxHow(scale=scale, scale_method=scale_method, mixed=mixed, seed=seed),
        size=Fraction(fraction, of="initial"),
        loss_fn=loss_fn,
        **grower_kwargs,
    )
    for u in units:  # fix "initial width" now, as the official code does at construction
        if u.name in names:
            grower.size.units(u)
    grower.description = DESCRIPTION
    return grower
