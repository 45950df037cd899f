"""The commit every transformer edit shares: verify, carry the optimizer, apply its policy."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .edit import Change, EditRecord, commit
from .optim_policy import OptimizerPolicy, new_entry_masks, planned_masks
from .verify import Verifier

__all__ = ["run_edit"]


def run_edit(
    model: nn.Module,
    changes: list[Change],
    structural: list,
    record: EditRecord,
    *,
    optimizer: torch.optim.Optimizer | None,
    unknown_optimizer: str,
    preserve: bool,
    verify: bool,
    example: Tensor | None,
    policy: OptimizerPolicy | None = None,
    anchor: nn.Parameter | None = None,
    sources: dict[nn.Parameter, nn.Parameter] | None = None,
) -> EditRecord:
    """Commit ``changes`` and ``structural`` steps atomically, verified on the example input.

    ``record.details`` gets ``preserving`` (what was promised) and ``max_abs_dout``
    (what the check saw; NaN without an example). ``policy`` is applied after the
    commit; ``sources`` maps each copied parameter to the one it copies.
    """
    what = f"{record.op}({record.target!r})"
    checker = Verifier(model, what, preserve=preserve, example=example) if verify else None
    planned = planned_masks(changes) if policy is not None else []
    commit(
        model,
        changes,
        optimizer=optimizer,
        record=record,
        structural=structural,
        new_params_anchor=anchor,
        unknown_optimizer=unknown_optimizer,
        verify=checker,
    )
    if policy is not None:
        policy.apply(optimizer, record, new_entry_masks(planned, record), sources)
    record.details["preserving"] = preserve
    record.details["max_abs_dout"] = float("nan") if checker is None else checker.max_delta
    return record
