"""What a growth step reports (:class:`GrowthEvent`), and the loss it uses by default."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import GrowthInputError

__all__ = ["GrowthEvent", "default_loss", "LossFn"]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class GrowthEvent:
    """One unit grown at one growth step.

    Attributes
    ----------
    step : int
        Optimizer steps done when it happened.
    unit : str
        The unit's name (its first producer).
    units_added : int
        Units added to it.
    width_before, width_after : int
        Its width before and after.
    params_before, params_after : int
        Parameters of the whole model before and after.
    max_abs_delta : float
        Max |output after - output before| in eval mode, over all the units
        grown at this step: on the first rows of the growth batch, or on all
        of it with ``Grower(measure="full")`` (NaN when not measured).
    grad_norm_fan_in, grad_norm_fan_out : float
        L2 norm of the loss gradient w.r.t. the new fan-in / fan-out weights
        right after growth, on the growth batch (NaN when not measured).
    seconds : float
        Wall time of this unit's growth (statistics, init and edit).
    how : str
        The initialiser's description.
    info : dict
        What the initialiser reported.
    """

    step: int
    unit: str
    units_added: int
    width_before: int
    width_after: int
    params_before: int
    params_after: int
    max_abs_delta: float = float("nan")
    grad_norm_fan_in: float = float("nan")
    grad_norm_fan_out: float = float("nan")
    seconds: float = 0.0
    how: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python dict (for JSON logs)."""
        d = asdict(self)
        d["info"] = {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))}
        return d


def default_loss(output: Any, target: Tensor | None) -> Tensor:
    """The output's own ``.loss`` when it has one (a Hugging Face model given ``labels``),
    else cross-entropy for integer targets and MSE otherwise (on the output's ``.logits``
    when it has them)."""
    if not isinstance(output, Tensor):
        own = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if isinstance(own, Tensor):
            return own
        logits = (
            output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
        )
        output = logits if logits is not None else output
    if target is None:
        raise GrowthInputError(
            "the batch has no targets (a dict batch without 'labels') and the model's output has "
            "no .loss: add 'labels' to the batch or pass loss_fn="
        )
    if target.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        return F.cross_entropy(output, target)
    return F.mse_loss(output, target)
