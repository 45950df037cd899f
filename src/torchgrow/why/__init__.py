"""Why: the goal of growing, and the metrics every method is judged on.

Growing methods are compared at equal cost, so this module measures the cost
side (parameters, inference FLOPs, cumulative training FLOPs) and the quality
side (accuracy, loss) the same way for every method.

Dormant connections, i.e. entries of a weight whose connection mask
(:func:`torchgrow.ops.apply_mask`) is 0, are neither parameters nor
FLOPs: a masked layer costs only what its active connections cost.

The cost side is in :mod:`torchgrow.why.flops` (parameters, inference FLOPs and their
convention) and :mod:`torchgrow.why.compute` (cumulative training FLOPs); the quality side in
:mod:`torchgrow.why.quality`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .compute import TrainingCompute, gradient_norm
from .flops import count_parameters, flops_breakdown, flops_per_example
from .quality import Data, accuracy, evaluate, mean_loss

__all__ = [
    "Data",
    "count_parameters",
    "flops_per_example",
    "flops_breakdown",
    "accuracy",
    "evaluate",
    "mean_loss",
    "TrainingCompute",
    "gradient_norm",
    "METRICS",
    "metric",
]

# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------

METRICS: dict[str, Callable[..., Any]] = {
    "parameters": count_parameters,
    "flops_per_example": flops_per_example,
    "accuracy": accuracy,
    "loss": mean_loss,
}
"""The metrics by name: ``metric(name)(model, ...)``."""


def metric(name: str) -> Callable[..., Any]:
    """Look a metric up by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`METRICS`.

    Returns
    -------
    callable
        The metric function.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(METRICS))
        raise ValueError(f"unknown metric {name!r}; valid names: {valid}") from None
