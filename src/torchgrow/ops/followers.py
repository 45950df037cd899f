"""Followers: what else a training set-up holds of a model, updated by every edit of it.

An edit replaces the parameters it changes. The optimizer given to it is
carried; anything else that holds the old parameters, or a copy shaped like
them, would go on with the old ones. Register those with :func:`follow`:

- **optimizers** other than the one an edit is given (a second optimizer over
  part of the model, a discriminator's, ...): carried exactly as that one
  (state of the old entries kept, new entries zero; new parameters join it
  when it holds the edit's anchor parameter);
- **averaged copies**: ``torch.optim.swa_utils.AveragedModel`` and anything
  that keeps a copy of the model in ``.module`` (the usual EMA classes). The
  copy is rebuilt at the model's new structure: the entries the edit keeps
  keep their averages, new entries and new parameters start at the model's
  values, buffers of unchanged shape keep the copy's (those that change shape, which
  an edit records no remap for, take the model's);
- **LR schedulers**: nothing to update (an edit changes the optimizer's param
  groups in place and keeps their learning rates); accepted so that a set-up
  can register everything it holds.

And a guard for what was not registered: the first step of an optimizer that
still holds a parameter an edit replaced or removed warns, naming the fix.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.weak import WeakIdKeyDictionary

from ..errors import GrowthInputError, warn

__all__ = ["follow", "unfollow", "followers", "has_copies"]

Remap = Any  # (tensor, fill) -> tensor, see torchgrow.ops.edit

_FOLLOWERS: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()
_REPLACED: WeakIdKeyDictionary = WeakIdKeyDictionary()  # parameters edits replaced or removed
_CHECKED: weakref.WeakKeyDictionary[torch.optim.Optimizer, int] = weakref.WeakKeyDictionary()
_EDITS = [0]  # edits that replaced parameters, for the guard to check each optimizer once per edit
_HOOK: list[Any] = []


def _kind(obj: object) -> str:
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    schedulers = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if isinstance(obj, schedulers):
        return "scheduler"
    if isinstance(getattr(obj, "module", None), nn.Module):
        return "copy"
    raise GrowthInputError(
        f"cannot follow a {type(obj).__name__}: a follower is a torch optimizer, an LR scheduler, "
        "or an averaged copy keeping the model's copy in .module (torch's AveragedModel, an EMA)"
    )


def follow(model: nn.Module, *objects: Any) -> None:
    """Have every later edit of ``model`` update ``objects`` (see the module's description).

    Parameters
    ----------
    model : nn.Module
        The model edits change.
    *objects
        Optimizers, LR schedulers, averaged copies (``AveragedModel``, EMAs).

    Raises
    ------
    GrowthInputError
        For an object of another kind, or an averaged copy whose ``.module`` does
        not have the model's parameter names and shapes (nothing is registered).
    """
    for obj in objects:
        if _kind(obj) == "copy":
            _check_copy(model, obj.module)
    registered = _FOLLOWERS.setdefault(model, [])
    for obj in objects:
        if not any(obj is r for r in registered):
            registered.append(obj)


def unfollow(model: nn.Module, *objects: Any) -> None:
    """Stop updating ``objects`` (those not registered are ignored)."""
    registered = _FOLLOWERS.get(model, [])
    registered[:] = [r for r in registered if not any(r is o for o in objects)]


def followers(model: nn.Module) -> list[Any]:
    """What every edit of ``model`` updates, in registration order."""
    return list(_FOLLOWERS.get(model, []))


def has_copies(model: nn.Module) -> bool:
    """Whether an averaged copy follows ``model`` (edits then record parameter names first)."""
    return any(_kind(f) == "copy" for f in _FOLLOWERS.get(model, []))


def _check_copy(model: nn.Module, module: nn.Module) -> None:
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    theirs = {n: tuple(p.shape) for n, p in module.named_parameters()}
    if ours != theirs:
        raise GrowthInputError(
            "the averaged copy's .module does not have the model's parameters (names and "
            "shapes); build it from the model as it is now (AveragedModel(model)) and follow it"
        )


def check_followers(model: nn.Module, *, unknown: str = "raise") -> None:
    """Refuse an edit up front if a follower optimizer could not be carried (nothing changes)."""
    from .optim_state import check_carry

    for obj in _FOLLOWERS.get(model, []):
        if _kind(obj) == "optimizer":
            check_carry(obj, unknown=unknown)


def update_followers(
    model: nn.Module,
    remaps: Mapping[nn.Parameter, tuple[nn.Parameter, Remap]],
    *,
    skip: torch.optim.Optimizer | None,
    names_before: Mapping[nn.Parameter, str] | None,
    added: Sequence[nn.Parameter] = (),
    removed: Sequence[nn.Parameter] = (),
    anchor: nn.Parameter | None = None,
    unknown: str = "raise",
) -> None:
    """After a committed edit of ``model``: carry its followers, and note what it replaced.

    ``skip`` is the optimizer the edit carried itself; ``names_before`` maps the
    model's parameters before the edit to their names (needed by averaged copies).
    """
    from .optim_state import carry

    for obj in _FOLLOWERS.get(model, []):
        kind = _kind(obj)
        if kind == "optimizer" and obj is not skip:
            holds = anchor is not None and any(
                p is anchor for g in obj.param_groups for p in g["params"]
            )
            carry(obj, remaps, added=added if holds else (), removed=removed, anchor=anchor,
                  unknown=unknown)  # fmt: skip
        elif kind == "copy":
            assert names_before is not None, "edits record names when a copy follows"
            obj.module = _rebuilt_copy(model, obj.module, remaps, names_before)
    replaced = [*remaps, *removed]
    if replaced:
        for p in replaced:
            _REPLACED[p] = None
        _EDITS[0] += 1
        if not _HOOK:
            _HOOK.append(register_optimizer_step_pre_hook(_warn_stale))


def _rebuilt_copy(
    model: nn.Module,
    old: nn.Module,
    remaps: Mapping[nn.Parameter, tuple[nn.Parameter, Remap]],
    names_before: Mapping[nn.Parameter, str],
) -> nn.Module:
    """The model's copy at its new structure, holding the old copy's values where they carry."""
    averages = dict(old.named_parameters())
    old_buffers = dict(old.named_buffers())
    origin = {new: (first, remap) for first, (new, remap) in remaps.items()}
    new = copy.deepcopy(model)
    with torch.no_grad():
        for p, q in zip(model.parameters(), new.parameters(), strict=True):
            q.grad = None
            first, remap = origin.get(p, (p, None))
            avg = averages.get(names_before.get(first, ""))
            if avg is None:
                continue  # a new parameter: its average starts at its value
            if remap is None:
                q.copy_(avg)
                continue
            carried = remap(avg.detach(), 0.0)
            kept = remap(torch.ones_like(avg, dtype=torch.float32), 0.0) != 0
            q.copy_(torch.where(kept, carried.to(q.dtype), q))
        for name, b in new.named_buffers():
            mine = old_buffers.get(name)
            if isinstance(mine, Tensor) and mine.shape == b.shape:
                b.copy_(mine)
    return new.to(next((t.device for t in old.parameters()), None) or "cpu")


def _warn_stale(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Optimizer step pre-hook: warn once per edit if ``optimizer`` steps replaced parameters."""
    if _CHECKED.get(optimizer) == _EDITS[0]:
        return
    _CHECKED[optimizer] = _EDITS[0]
    stale = sum(p in _REPLACED for g in optimizer.param_groups for p in g["params"])
    if stale:
        warn(
            f"this {type(optimizer).__name__} steps {stale} parameter(s) that a torchgrow edit "
            "replaced: the model no longer uses them, so their updates are lost. Register the "
            "optimizer so that edits carry it: grower.follow(optimizer) (or "
            "torchgrow.ops.follow(model, optimizer))"
        )
