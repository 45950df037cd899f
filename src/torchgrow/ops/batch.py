"""Several edits of one model as one: one optimizer carry, one verification, one rollback.

Inside ``with edit_batch(model, optimizer):`` every width edit of ``model``
swaps its tensors in at once (so later edits, and forwards, see the edited
model) but the optimizer is carried only when the block ends, with each
parameter's remaps composed, and the model's example input is checked once.
If anything raises inside the block, or the final check fails, every edit of
the block is undone and the optimizer was never touched. This is how a
growth step edits many units at the cost of one.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import GrowthInputError
from .edit import (
    Change,
    EditRecord,
    Remap,
    _merge_same_tensor,
    _Transaction,
    carry_grad,
    count_params,
)
from .optim_policy import OptimizerPolicy

__all__ = ["edit_batch", "EditBatch"]

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, EditBatch] = weakref.WeakKeyDictionary()


class EditBatch:
    """The edits of one ``with edit_batch(...)`` block (see :func:`edit_batch`)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer,  # noqa: ANN001
        unknown_optimizer: str,
        verify: bool,
        example: torch.Tensor | tuple[tuple, dict] | None = None,
        policy: OptimizerPolicy | None = None,
    ) -> None:
        from .followers import check_followers, has_copies
        from .optim_state import check_carry
        from .verify import Verifier

        check_carry(optimizer, unknown=unknown_optimizer)
        check_followers(model, unknown=unknown_optimizer)
        self.names_before = (
            {p: n for n, p in model.named_parameters()} if has_copies(model) else None
        )
        self.model = model
        self.optimizer = optimizer
        self.unknown = unknown_optimizer
        self.tx = _Transaction()
        self.origin: dict[nn.Parameter, tuple[nn.Parameter, Remap]] = {}
        self.total = count_params(model)
        self.records: list[EditRecord] = []
        self.policy = policy
        self.verifier = (
            Verifier(model, "the batch of edits", preserve=True, example=example)
            if verify
            else None
        )

    def commit(self, changes: Sequence[Change], record: EditRecord) -> EditRecord:
        """Apply one edit's changes now; the optimizer follows at the end of the block."""
        start = time.perf_counter()
        record.params_before = self.total
        with torch.no_grad():
            for ch in _merge_same_tensor(changes):
                if ch.tensor is None:
                    self.tx.swap(ch.owner, ch.name, ch.value)
                    continue
                old = getattr(ch.owner, ch.name)
                if not isinstance(old, nn.Parameter):
                    new_buffer = ch.tensor.detach().clone()
                    for owner, name in ((ch.owner, ch.name), *ch.also):
                        self.tx.swap(owner, name, new_buffer)
                    continue
                new = nn.Parameter(ch.tensor.detach().clone(), requires_grad=old.requires_grad)
                carry_grad(old, new, ch.remap)
                if old in self.origin:
                    first, r0 = self.origin.pop(old)
                    r1 = ch.remap

                    def remap(t, fill, r0=r0, r1=r1):  # noqa: ANN001, ANN202
                        return r1(r0(t, fill), fill)

                    self.origin[new] = (first, remap)
                else:
                    self.origin[new] = (old, ch.remap)
                self.total += new.numel() - old.numel()
                record.replaced[old] = new
                for owner, name in ((ch.owner, ch.name), *ch.also):
                    self.tx.swap(owner, name, new)
        record.params_after = self.total
        record.seconds = time.perf_counter() - start
        self.records.append(record)
        return record

    def close(self) -> None:
        from .followers import update_followers
        from .optim_state import carry

        if self.verifier is not None:
            self.verifier.preserve = all(r.details.get("preserving", False) for r in self.records)
            self.verifier()
        if self.optimizer is not None and self.origin:
            remaps = {first: (new, r) for new, (first, r) in self.origin.items()}
            carry(self.optimizer, remaps, unknown=self.unknown)
            if self.policy is not None:
                self._apply_policy(remaps)
        if self.origin:
            remaps = {first: (new, r) for new, (first, r) in self.origin.items()}
            update_followers(
                self.model, remaps, skip=self.optimizer, names_before=self.names_before,
                unknown=self.unknown,
            )  # fmt: skip

    def _apply_policy(self, remaps: dict[nn.Parameter, tuple[nn.Parameter, Remap]]) -> None:
        """The batch's optimizer policy, once, over every parameter the batch replaced (its new
        entries: where the composed remap puts the fill)."""
        masks = {}
        for first, (new, remap) in remaps.items():
            ones = torch.ones(first.shape, dtype=torch.float32, device=first.device)
            mask = remap(ones, 0.0) == 0
            if bool(mask.any()):
                masks[new] = mask
        record = EditRecord(op="edit_batch", target="", modules=[r.target for r in self.records])
        record.replaced = {first: new for first, (new, _) in remaps.items()}
        self.policy.apply(self.optimizer, record, masks)


def active_batch(model: nn.Module) -> EditBatch | None:
    """The batch ``model`` is being edited in, if any."""
    return _ACTIVE.get(model)


@contextmanager
def edit_batch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    unknown_optimizer: str = "raise",
    verify: bool = True,
    example: torch.Tensor | tuple[tuple, dict] | None = None,
    policy: OptimizerPolicy | None = None,
) -> Iterator[EditBatch]:
    """Make the width edits of ``model`` inside the block one atomic edit.

    Parameters
    ----------
    model : nn.Module
        The model the edits change.
    optimizer : torch.optim.Optimizer, optional
        Carried once, when the block ends (pass the same one to each edit, or none).
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    verify : bool
        Check the model once at the end on its example input (the function
        must be preserved when every edit promised to preserve it).
    example : Tensor or tuple, optional
        Check on this input (a tensor, or the model's ``(args, kwargs)``)
        instead of the model's example input; afterwards
        ``batch.verifier.max_delta`` is how far the output moved on it.
    policy : OptimizerPolicy, optional
        Applied once when the block ends, to every parameter the block replaced
        (``state="reset"`` drops their state; ``rewarm_steps`` re-warms their new
        entries); default: the carry alone (new entries' state zero).

    Yields
    ------
    EditBatch
        Its ``records`` list the edits.
    """
    if model in _ACTIVE:
        raise GrowthInputError("edit_batch: this model is already being edited in a batch")
    batch = EditBatch(model, optimizer, unknown_optimizer, verify, example, policy)
    _ACTIVE[model] = batch
    try:
        yield batch
        batch.close()
    except BaseException:
        batch.tx.rollback()
        raise
    finally:
        _ACTIVE.pop(model, None)
