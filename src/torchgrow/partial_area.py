"""NeST's partial-area convolution (Algorithm 2): drop the weakest input positions of convolutions.

Each ordinary ``Conv2d`` keeps a fixed 0/1 mask over its input
``(channels, height, width)`` (:func:`torchgrow.ops.apply_input_mask`). One
step measures, on calibration data, the feature-map tensor ``C`` each
convolution reads (``M`` images x ``N`` channels x ``P x Q`` positions),
scores every input position by its mean ``|C|`` over the images, and masks
the weakest ``gamma`` fraction of the positions still active (the paper's
γ = 1 %). Retraining follows, then the next step. Masked positions skip
their multiply-accumulates, which :func:`torchgrow.why.flops_per_example`
counts.

The paper's threshold is "the γ·MNPQ-th smallest |C|"; applied over all
entries it would stall once the masked (zero) positions fill the first γ, so
each step here takes γ of the *active* positions, the percentile reading
(``docs/nest.md``). Aggregating ``|C|`` by its mean over the calibration
images is torchgrow's choice: the paper leaves it open.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import GrowthInputError
from .ops.area import apply_input_mask, input_mask_of

__all__ = ["input_importance", "prune_input_area"]


def _convs(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Conv2d]:
    modules = dict(model.named_modules())
    if layers is None:
        return {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups == 1}
    out = {}
    for n in layers:
        m = modules.get(n)
        if not isinstance(m, nn.Conv2d) or m.groups != 1:
            raise GrowthInputError(
                f"{n!r} is not an ordinary nn.Conv2d of the model; partial-area masks need one"
            )
        out[n] = m
    return out


@torch.no_grad()
def input_importance(
    model: nn.Module, x: Tensor, layers: Sequence[str] | None = None
) -> dict[str, Tensor]:
    """Mean ``|input|`` over the images of ``x``, per convolution: ``(C, H, W)`` tensors.

    The model runs once in eval mode (modes restored afterwards).
    """
    convs = _convs(model, layers)
    sums: dict[str, Tensor] = {}
    handles = []
    for name, conv in convs.items():

        def hook(mod: nn.Module, args: tuple, _name: str = name) -> None:
            sums[_name] = args[0].detach().abs().mean(0)

        handles.append(conv.register_forward_pre_hook(hook))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return sums


def prune_input_area(
    model: nn.Module,
    x: Tensor,
    gamma: float = 0.01,
    *,
    layers: Sequence[str] | None = None,
) -> dict[str, int]:
    """One step of Algorithm 2: mask the weakest ``gamma`` of each conv's active input positions.

    Parameters
    ----------
    model : nn.Module
        The model; every ordinary ``Conv2d`` (or those in ``layers``) gets or
        updates an input-area mask.
    x : Tensor
        Calibration images (a batch the model accepts).
    gamma : float
        Fraction of each convolution's still-active input positions masked
        (``ceil(gamma * active)``, at least one position stays active).
    layers : sequence of str, optional
        Names of the convolutions (default: all ordinary ``Conv2d``).

    Returns
    -------
    dict
        Convolution name -> input positions masked by this step.

    Raises
    ------
    GrowthInputError
        On a bad ``gamma`` or layer name; nothing is changed then.
    """
    if not 0.0 < gamma < 1.0:
        raise GrowthInputError(f"gamma must be in (0, 1), got {gamma!r}")
    convs = _convs(model, layers)
    if not convs:
        raise GrowthInputError("the model has no ordinary nn.Conv2d for partial-area masks")
    importance = input_importance(model, x, list(convs))
    plan: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for name, conv in convs.items():
        if name not in importance:
            raise GrowthInputError(f"{name!r} did not run in the model's forward pass on x")
        score = importance[name]
        current = input_mask_of(conv)
        active = torch.ones_like(score, dtype=torch.bool) if current is None else current != 0
        if current is not None and current.shape != score.shape:
            raise GrowthInputError(
                f"{name!r}: its input mask is {tuple(current.shape)} but x gives inputs of "
                f"{tuple(score.shape)}; calibrate with images of the size it was masked for"
            )
        n_active = int(active.sum())
        k = min(math.ceil(gamma * n_active), n_active - 1)
        new = active.clone()
        if k > 0:
            flat = score.masked_fill(~active, math.inf).flatten()
            new.view(-1)[(-flat).topk(k).indices] = False
        plan[name], counts[name] = new, max(k, 0)
    for name, new in plan.items():
        apply_input_mask(convs[name], new.to(convs[name].weight.dtype))
    return counts
