"""Planned changes, and committing them atomically with the optimizer carried along.

An edit works in two phases. *Planning* validates every input and computes
every new tensor without touching the model. *Committing* swaps the new
tensors and attributes in, then carries the optimizer over; if anything fails
on the way, every swap is undone, so model and optimizer are exactly as they
were.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Change", "EditRecord", "commit", "Remap"]

Remap = Callable[[Tensor, float], Tensor]
"""Applies a structural edit to any tensor shaped like the old one; new entries get ``fill``."""


@dataclass
class Change:
    """One planned change to a module.

    Exactly one of ``tensor`` (with ``remap`` for parameters) or ``value`` is
    meaningful: a tensor change replaces the parameter or buffer ``name`` of
    ``owner``; an attribute change sets a plain attribute (``out_features``).

    Attributes
    ----------
    owner : nn.Module
        The module holding the parameter, buffer or attribute.
    name : str
        Its name on ``owner``.
    tensor : Tensor, optional
        The new value of a parameter or buffer.
    remap : callable, optional
        The same structural edit as a function: maps any tensor shaped like
        the old one to the new shape (old entries kept, new ones filled).
        Required for parameters (it carries their optimizer state).
    value : Any
        The new value of a plain attribute.
    also : tuple of (nn.Module, str)
        Other places holding the same tensor (a tied weight): they receive the
        same new tensor, so the tie stays a tie.
    """

    owner: nn.Module
    name: str
    tensor: Tensor | None = None
    remap: Remap | None = None
    value: Any = None
    also: tuple[tuple[nn.Module, str], ...] = ()

    @staticmethod
    def attr(owner: nn.Module, name: str, value: Any) -> Change:
        """A change of a plain attribute."""
        return Change(owner, name, value=value)


@dataclass
class EditRecord:
    """What an edit changed.

    Attributes
    ----------
    op : str
        The operation (``"widen"``, ``"shrink"``, ``"insert_after"``...).
    target : str
        The module (or stage) the user named.
    modules : list of str
        Every module whose parameters, buffers or attributes changed.
    units_added, units_removed : int
        Units (per producer) added or removed; 0 for depth edits.
    params_before, params_after : int
        Parameter count of the whole model before and after.
    replaced : dict
        Old parameter -> new parameter, for every parameter that was replaced.
    added : list of nn.Parameter
        Parameters that are new (inserted layers, appended blocks).
    seconds : float
        Wall time of the edit, optimizer carry included.
    details : dict
        Operation-specific facts (the unit's producers, consumers...).
    """

    op: str
    target: str
    modules: list[str] = field(default_factory=list)
    units_added: int = 0
    units_removed: int = 0
    params_before: int = 0
    params_after: int = 0
    replaced: dict[nn.Parameter, nn.Parameter] = field(default_factory=dict, repr=False)
    added: list[nn.Parameter] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class _Transaction:
    """Undo log of attribute swaps on modules."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def swap(self, owner: nn.Module, name: str, value: Any) -> None:
        if name in owner._parameters:
            old = owner._parameters[name]
            flat = getattr(owner, "_init_flat_weights", None)  # RNNs keep a list of their weights

            def undo() -> None:
                owner._parameters[name] = old
                if flat is not None:
                    flat()

            self._undo.append(undo)
            owner._parameters[name] = value
            if flat is not None:
                flat()
        elif name in owner._buffers:
            old = owner._buffers[name]
            self._undo.append(lambda: owner._buffers.__setitem__(name, old))
            owner._buffers[name] = value
        elif name in owner._modules:
            old = owner._modules[name]
            self._undo.append(lambda: owner._modules.__setitem__(name, old))
            owner._modules[name] = value
        else:
            had = name in owner.__dict__
            old = owner.__dict__.get(name)

            def undo() -> None:
                if had:
                    owner.__dict__[name] = old
                else:
                    owner.__dict__.pop(name, None)

            self._undo.append(undo)
            owner.__dict__[name] = value

    def call(self, do: Callable[[], None], undo: Callable[[], None]) -> None:
        do()
        self._undo.append(undo)

    def rollback(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def _compose(first: Change, second: Change, old: Tensor) -> Change:
    """Merge two changes of one tensor (a module that both produces and consumes a unit).

    Each change was planned from the old tensor: ``c = r(old) + block``. For
    structural edits along different dimensions the remaps commute, so the
    merged tensor is ``r2(c1) + r1(c2) - r2(r1(old))``: the old entries, both
    blocks, and zero where the two new regions cross.
    """
    assert first.tensor is not None and second.tensor is not None
    if first.remap is None or second.remap is None:
        raise AssertionError(f"cannot merge two changes of {first.name!r} without remaps")
    r1, r2 = first.remap, second.remap
    base = old.detach()
    merged = r2(first.tensor, 0.0) + r1(second.tensor, 0.0) - r2(r1(base, 0.0), 0.0)
    return Change(first.owner, first.name, merged, lambda t, fill: r2(r1(t, fill), fill))


def _merge_same_tensor(changes: Sequence[Change]) -> list[Change]:
    """One change per tensor object.

    Changes of the same tensor along different dims (a module that both
    produces and consumes a unit) are composed. The same change planned by
    several holders of one tensor (a tied weight) is kept once, the other
    holders going to ``also``; different changes along the same dim of one
    tensor are a conflict.
    """
    from ..errors import GrowthInputError

    out: list[Change | list[Change]] = []
    where: dict[int, int] = {}
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for ch in changes:
        if ch.tensor is None:
            out.append(ch)
            continue
        current = getattr(ch.owner, ch.name)
        key = id(current)
        place = (ch.owner, ch.name)
        if key not in where:
            where[key] = len(out)
            out.append([ch])
            holders[key] = [place]
            continue
        if all(h[0] is not place[0] or h[1] != place[1] for h in holders[key]):
            holders[key].append(place)
        plans = out[where[key]]
        assert isinstance(plans, list)
        same = next((p for p in plans if p.tensor.shape == ch.tensor.shape), None)  # type: ignore[union-attr]
        if same is None:
            plans.append(ch)
        elif not torch.equal(same.tensor, ch.tensor):  # type: ignore[arg-type]
            raise GrowthInputError(
                f"the shared tensor {ch.name!r} (shape {tuple(current.shape)}) would get two "
                "different new blocks from the modules holding it (tied weights); give the same "
                "block (or none) on both sides of the tie"
            )
    merged: list[Change] = []
    for item in out:
        if isinstance(item, Change):
            merged.append(item)
            continue
        first = item[0]
        current = getattr(first.owner, first.name)
        combined = first
        for nxt in item[1:]:
            combined = _compose(combined, nxt, current)
        hs = holders[id(current)]
        merged.append(replace(combined, owner=hs[0][0], name=hs[0][1], also=tuple(hs[1:])))
    return merged


def count_params(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (dense count)."""
    return sum(p.numel() for p in model.parameters())


def carry_grad(old: nn.Parameter, new: nn.Parameter, remap: Remap) -> None:
    """Give ``new`` the accumulated gradient of ``old``, remapped (new entries 0).

    Growing between the micro-batches of an accumulated step then equals growing
    before them: the gradient already summed stays, and the new entries start
    from 0, as if they had been there with no gradient. ``old`` keeps its own
    ``.grad``, so a rollback restores it as it was.
    """
    if old.grad is None:
        return
    g = remap(old.grad.detach(), 0.0)
    if tuple(g.shape) != tuple(new.shape):
        raise AssertionError(f"gradient remap gave {tuple(g.shape)} for {tuple(new.shape)}")
    new.grad = g.to(dtype=new.dtype).clone()


def commit(
    model: nn.Module,
    changes: Sequence[Change],
    *,
    optimizer: torch.optim.Optimizer | None,
    record: EditRecord,
    structural: Iterable[tuple[Callable[[], None], Callable[[], None]]] = (),
    new_params_anchor: nn.Parameter | None = None,
    unknown_optimizer: str = "raise",
    verify: Callable[[], None] | None = None,
) -> EditRecord:
    """Apply planned changes atomically and carry the optimizer.

    Parameters
    ----------
    model : nn.Module
        The model being edited (used for the parameter counts).
    changes : sequence of Change
        Tensor and attribute changes, already validated.
    optimizer : torch.optim.Optimizer, optional
        Carried along: replaced parameters keep their state (remapped), new
        parameters join the param group of ``new_params_anchor``.
    record : EditRecord
        Filled in and returned.
    structural : iterable of (do, undo)
        Extra structural steps (inserting a module into a container).
    new_params_anchor : nn.Parameter, optional
        A parameter already in the optimizer whose group receives new parameters.
    unknown_optimizer : {"raise", "reset"}
        What to do with an optimizer kind whose state layout is unknown.
    verify : callable, optional
        Called once the model is edited and before the optimizer is carried
        (a :class:`~torchgrow.ops.verify.Verifier`); if it raises, the edit is
        rolled back and the error propagates.

    Returns
    -------
    EditRecord
        ``record``, completed.
    """
    from .batch import active_batch  # local: both import this module
    from .followers import check_followers, has_copies, update_followers
    from .optim_state import carry, check_carry

    batch = active_batch(model)
    if batch is not None:
        if structural:
            raise AssertionError("depth edits cannot join an edit batch")
        return batch.commit(changes, record)
    start = time.perf_counter()
    changes = _merge_same_tensor(changes)
    record.params_before = count_params(model)
    before = set(model.parameters())
    names_before = {p: n for n, p in model.named_parameters()} if has_copies(model) else None
    check_carry(optimizer, unknown=unknown_optimizer)
    check_followers(model, unknown=unknown_optimizer)
    tx = _Transaction()
    remaps: dict[nn.Parameter, tuple[nn.Parameter, Remap]] = {}
    try:
        with torch.no_grad():
            for ch in changes:
                if ch.tensor is None:
                    tx.swap(ch.owner, ch.name, ch.value)
                    continue
                old = getattr(ch.owner, ch.name)
                if isinstance(old, nn.Parameter):
                    new = nn.Parameter(ch.tensor.detach().clone(), requires_grad=old.requires_grad)
                    if ch.remap is None:
                        raise AssertionError(f"parameter change of {ch.name!r} without remap")
                    carry_grad(old, new, ch.remap)
                    remaps[old] = (new, ch.remap)
                else:
                    new = ch.tensor.detach().clone()
                tx.swap(ch.owner, ch.name, new)
                for owner, name in ch.also:
                    tx.swap(owner, name, new)
            for do, undo in structural:
                tx.call(do, undo)
        if verify is not None:
            verify()
        after = list(model.parameters())
        after_set = set(after)
        added = [
            p for p in after if p not in before and all(p is not n for n, _ in remaps.values())
        ]
        lost = [p for p in before if p not in after_set and p not in remaps]
        record.replaced = {old: new for old, (new, _) in remaps.items()}
        record.added = added
        if optimizer is not None:
            carry(
                optimizer,
                remaps,
                added=added,
                removed=lost,
                anchor=new_params_anchor,
                unknown=unknown_optimizer,
            )
        update_followers(
            model, remaps, skip=optimizer, names_before=names_before, added=added,
            removed=lost, anchor=new_params_anchor, unknown=unknown_optimizer,
        )  # fmt: skip
    except BaseException:
        tx.rollback()
        raise
    record.params_after = count_params(model)
    record.seconds = time.perf_counter() - start
    return record
