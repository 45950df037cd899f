"""What a growth step measures right after its edits: the output's change and the gradient norms
of the new fan-in and fan-out (GradMax's metric), where the initialiser does not know them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .batches import run_model, split_batch
from .errors import GrowthInputError
from .graph import GrowableUnit
from .growth_event import GrowthEvent, LossFn
from .modes import eval_mode
from .ops.masks import weight_parameter
from .ops.placement import new_columns
from .ops.registry import lookup

__all__ = ["forward_eval", "measure_gradients"]


def forward_eval(model: nn.Module, x: Any) -> Tensor:
    """The model's output on ``x`` (the logits of a Hugging Face output), in eval mode."""
    with eval_mode(model), torch.no_grad():
        out = run_model(model, x)
    if isinstance(out, Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if not isinstance(logits, Tensor):
        raise GrowthInputError(
            f"cannot read the change of the model's output ({type(out).__name__}): it is not a "
            "tensor and has no .logits; use measure=False or measure=True"
        )
    return logits


def measure_gradients(
    model: nn.Module,
    events: Sequence[GrowthEvent],
    batch: object,
    loss_fn: LossFn,
    units: dict[str, GrowableUnit],
) -> None:
    """Gradient norms of the new fan-in/fan-out right after growth (GradMax's metric).

    ``units`` are the grown units as they were before the step.
    """
    wanted: list[tuple[GrowthEvent, str, nn.Module, Tensor, int]] = []
    for ev in events:
        unit = units[ev.unit]
        for p in unit.producers:
            m = model.get_submodule(p)
            rows = torch.arange(ev.width_before, ev.width_after)
            wanted.append((ev, "in", m, rows, lookup(m).out_dim))
        for c in unit.consumers:
            m = model.get_submodule(c.name)
            wanted.append(
                (ev, "out", m, new_columns(c, unit.width, ev.units_added), lookup(m).in_dim)
            )
    params = [
        p
        for p in {id(weight_parameter(m)): weight_parameter(m) for _, _, m, _, _ in wanted}.values()
        if p.requires_grad  # a frozen layer has no gradient to measure
    ]
    x, y = split_batch(batch)
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.enable_grad():
            loss = loss_fn(run_model(model, x), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True) if params else ()
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
    by_id = {id(p): g for p, g in zip(params, grads, strict=True)}
    by_id = {
        id(weight_parameter(m)): by_id.get(id(weight_parameter(m))) for _, _, m, _, _ in wanted
    }
    sums: dict[tuple[int, str], float] = {}
    for ev, side, m, index, dim in wanted:
        g = by_id[id(weight_parameter(m))]
        if g is None:
            continue
        new = g.index_select(dim, index.to(g.device))
        key = (id(ev), side)
        sums[key] = sums.get(key, 0.0) + float(new.pow(2).sum())
    for ev in events:
        ev.grad_norm_fan_in = sums.get((id(ev), "in"), 0.0) ** 0.5
        ev.grad_norm_fan_out = sums.get((id(ev), "out"), 0.0) ** 0.5
