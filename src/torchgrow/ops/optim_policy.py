"""How the optimizer treats the weights a growth step creates.

Every edit carries the optimizer (old entries keep their state, new entries start
at zero). The transformer papers treat new weights differently, and that choice
decides much of whether growth pays off; an :class:`OptimizerPolicy` passed to a
transformer edit (``policy=``) applies one of them right after the edit:

``state="zero"`` (default)
    torchgrow's carry: new entries' moments are zero, old ones kept.
``state="copy"``
    a copied block's parameters start with a copy of their source's state
    (depth edits; width clones already tile the state with the weights).
``state="reset"``
    every parameter the edit touched loses its state, as in a fresh optimizer
    (G_stack's and LEMON's restart with a new AdamW).
``rewarm_steps=N``
    the new entries' updates are scaled by ``t / N`` over the next ``N`` optimizer
    steps (a learning-rate re-warm of the new weights only; old entries train at
    the full rate). It works with any optimizer whose update scales with the
    learning rate (SGD, Adam, AdamW...), by blending each new entry between its
    value before and after ``optimizer.step()``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError
from .edit import Change, EditRecord

__all__ = ["OptimizerPolicy", "new_entry_masks", "planned_masks"]

_STATES = ("zero", "copy", "reset")


def planned_masks(changes: list[Change]) -> list[tuple[nn.Parameter, Tensor]]:
    """Before an edit commits: each parameter it will replace, with a bool mask (in the new
    shape) of the entries that are new (where the change's ``remap`` puts the fill)."""
    out = []
    for ch in changes:
        old = getattr(ch.owner, ch.name, None)
        if ch.remap is not None and isinstance(old, nn.Parameter):
            ones = torch.ones(old.shape, dtype=torch.float32, device=old.device)
            out.append((old, ch.remap(ones, 0.0) == 0))
    return out


def new_entry_masks(
    planned: list[tuple[nn.Parameter, Tensor]], record: EditRecord
) -> dict[nn.Parameter, Tensor]:
    """After the edit: the new parameters with their new-entry masks (added ones are all new)."""
    masks = {record.replaced[old]: m for old, m in planned if old in record.replaced}
    masks |= {p: torch.ones(p.shape, dtype=torch.bool, device=p.device) for p in record.added}
    return {p: m for p, m in masks.items() if bool(m.any())}


@dataclass
class OptimizerPolicy:
    """What a growth step does to the optimizer beyond carrying it.

    Parameters
    ----------
    state : {"zero", "copy", "reset"}
        The new weights' state (see the module docstring).
    rewarm_steps : int
        Re-warm the new entries' updates linearly over this many steps (0: off).
    """

    state: str = "zero"
    rewarm_steps: int = 0
    _masks: dict[nn.Parameter, Tensor] = field(default_factory=dict, repr=False)
    _count: int = field(default=0, repr=False)
    _handles: list[Any] = field(default_factory=list, repr=False)
    _before: dict[nn.Parameter, Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.state not in _STATES:
            raise GrowthInputError(
                f"OptimizerPolicy: state must be one of {_STATES}, got {self.state!r}"
            )
        if (
            isinstance(self.rewarm_steps, bool)
            or not isinstance(self.rewarm_steps, int)
            or self.rewarm_steps < 0
        ):
            raise GrowthInputError(
                f"OptimizerPolicy: rewarm_steps must be an int >= 0, got {self.rewarm_steps!r}"
            )

    @property
    def rewarming(self) -> bool:
        """Whether a re-warm is under way."""
        return bool(self._handles)

    def apply(
        self,
        optimizer: torch.optim.Optimizer | None,
        record: EditRecord,
        masks: dict[nn.Parameter, Tensor],
        sources: dict[nn.Parameter, nn.Parameter] | None = None,
    ) -> None:
        """Apply the policy to an edit just committed (called by the edits)."""
        if optimizer is None:
            return
        if self.state == "copy":
            for new, src in (sources or {}).items():
                state = optimizer.state.get(src)
                if state:
                    optimizer.state[new] = {
                        k: v.clone() if isinstance(v, Tensor) else copy.deepcopy(v)
                        for k, v in state.items()
                    }
        elif self.state == "reset":
            for p in [*record.replaced.values(), *record.added]:
                optimizer.state.pop(p, None)
        if self.rewarm_steps and masks:
            self._start(optimizer, masks)

    def _start(self, optimizer: torch.optim.Optimizer, masks: dict[nn.Parameter, Tensor]) -> None:
        self.stop()
        self._masks, self._count = dict(masks), 0
        self._handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._before = {p: p.detach()[m].clone() for p, m in self._masks.items()}

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._count += 1
        scale = min(1.0, self._count / self.rewarm_steps)
        with torch.no_grad():
            for p, m in self._masks.items():
                old = self._before[p]
                p[m] = old + scale * (p[m] - old)
        self._before = {}
        if self._count >= self.rewarm_steps:
            self.stop()

    def stop(self) -> None:
        """End a re-warm now (new entries train at the full rate from the next step)."""
        for h in self._handles:
            h.remove()
        self._handles, self._masks, self._before = [], {}, {}
