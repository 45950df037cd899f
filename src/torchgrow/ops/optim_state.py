"""Carrying an optimizer across a structural edit.

After an edit the optimizer holds exactly the model's live parameters, in the
same param groups (same hyper-parameters, same positions), with:

- the state of every surviving entry copied (momentum buffers, Adam moments,
  square averages...), remapped to the new shape;
- new entries at zero (Adagrad's accumulator at its ``initial_accumulator_value``);
- per-parameter step counters kept as they were.

This is what GradMax's ``carry_optimizer=True`` and AutoGrow's state copy do.
The optimizers whose state is element-wise (one slot per weight entry, plus
scalar counters) are supported; for any other kind an edit raises
:class:`~torchgrow.errors.OptimizerCarryError` before anything changes, unless
the caller opts in to resetting the state of the edited parameters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError, OptimizerCarryError, warn
from .edit import Remap

__all__ = [
    "SUPPORTED_OPTIMIZERS",
    "carry",
    "check_carry",
    "check_consistent",
    "flush_subnormal_state",
]

SUPPORTED_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
)

# state slots whose new entries do not start at zero: slot -> param-group key holding the fill
_FILL_FROM_GROUP = {(torch.optim.Adagrad, "sum"): "initial_accumulator_value"}


def _supported(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer) in SUPPORTED_OPTIMIZERS


def check_carry(optimizer: torch.optim.Optimizer | None, *, unknown: str = "raise") -> None:
    """Raise if ``optimizer``'s state cannot be carried (before anything is edited).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer or None
        The optimizer an edit will carry (``None``: only ``unknown`` is checked).
    unknown : {"raise", "reset"}
        ``"reset"`` accepts an unknown optimizer kind: the state of edited
        parameters will be dropped, with a warning.
    """
    if unknown not in ("raise", "reset"):
        raise GrowthInputError(f"unknown_optimizer must be 'raise' or 'reset', got {unknown!r}")
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise OptimizerCarryError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if hasattr(optimizer, "_params"):
        raise OptimizerCarryError(
            f"{type(optimizer).__name__} keeps its own flattened view of all parameters "
            "(e.g. LBFGS's history vectors), which cannot be carried or reset per parameter; "
            "build a new optimizer after growing."
        )
    if not _supported(optimizer) and unknown == "raise":
        names = ", ".join(c.__name__ for c in SUPPORTED_OPTIMIZERS)
        raise OptimizerCarryError(
            f"torchgrow does not know the state layout of {type(optimizer).__name__}, so it cannot "
            f"carry its state across the edit. Supported: {names}. Pass "
            "unknown_optimizer='reset' to reset the state of edited parameters instead "
            "(a warning is issued), or rebuild the optimizer yourself after the edit."
        )


def _group_of(optimizer: torch.optim.Optimizer, param: nn.Parameter | None) -> int:
    if param is not None:
        for i, group in enumerate(optimizer.param_groups):
            if any(p is param for p in group["params"]):
                return i
    return 0


def _remap_state(
    optimizer: torch.optim.Optimizer,
    group: Mapping[str, Any],
    old: nn.Parameter,
    state: Mapping[str, Any],
    remap: Remap,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape == old.shape:
            fill_key = _FILL_FROM_GROUP.get((type(optimizer), key))
            fill = float(group[fill_key]) if fill_key else 0.0
            out[key] = remap(value, fill)
        elif isinstance(value, Tensor) and value.dim() > 0:
            raise OptimizerCarryError(
                f"{type(optimizer).__name__} state {key!r} has shape {tuple(value.shape)}, not the "
                f"parameter's {tuple(old.shape)}; torchgrow cannot remap it."
            )
        elif isinstance(value, Tensor):
            out[key] = value.clone()
        else:
            out[key] = value
    return out


def carry(
    optimizer: torch.optim.Optimizer,
    remaps: Mapping[nn.Parameter, tuple[nn.Parameter, Remap]],
    *,
    added: Sequence[nn.Parameter] = (),
    removed: Sequence[nn.Parameter] = (),
    anchor: nn.Parameter | None = None,
    unknown: str = "raise",
) -> None:
    """Update ``optimizer`` in place after parameters were replaced, added or removed.

    Everything is computed before the optimizer is touched, so a failure
    leaves it as it was.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer to update.
    remaps : mapping
        Old parameter -> (new parameter, remap of state tensors).
    added : sequence of nn.Parameter
        New parameters; they join the group holding ``anchor`` (group 0 if none).
    removed : sequence of nn.Parameter
        Parameters the model no longer holds; dropped with their state.
    anchor : nn.Parameter, optional
        A parameter whose group receives ``added``.
    unknown : {"raise", "reset"}
        See :func:`check_carry`.
    """
    check_carry(optimizer, unknown=unknown)
    reset = not _supported(optimizer)
    removed_ids = {id(p) for p in removed}
    known_ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
    new_groups: list[list[nn.Parameter]] = []
    new_state: dict[nn.Parameter, Any] = {}
    for group in optimizer.param_groups:
        params: list[nn.Parameter] = []
        for p in group["params"]:
            if id(p) in removed_ids:
                continue
            if p in remaps:
                new_p, remap = remaps[p]
                params.append(new_p)
                if p in optimizer.state and optimizer.state[p] and not reset:
                    new_state[new_p] = _remap_state(optimizer, group, p, optimizer.state[p], remap)
            else:
                params.append(p)
                if p in optimizer.state:
                    new_state[p] = optimizer.state[p]
        new_groups.append(params)
    fresh = [p for p in added if id(p) not in known_ids]
    if fresh:
        new_groups[_group_of(optimizer, anchor)].extend(fresh)
    if reset and remaps:
        warn(
            f"optimizer state of {len(remaps)} edited parameter(s) was reset: torchgrow does not "
            f"know {type(optimizer).__name__}'s state layout."
        )
    # commit: nothing above touched the optimizer; lists are updated in place so that any
    # alias of them the optimizer keeps stays valid
    for group, params in zip(optimizer.param_groups, new_groups, strict=True):
        group["params"][:] = params
    optimizer.state = defaultdict(dict, new_state)


def check_consistent(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``AssertionError`` unless ``optimizer`` holds exactly the live, trainable parameters.

    Parameters
    ----------
    model : nn.Module
        The model.
    optimizer : torch.optim.Optimizer
        An optimizer built over all of ``model``'s trainable parameters.
    """
    live = {id(p) for p in model.parameters() if p.requires_grad}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    held_ids = {id(p) for p in held}
    if len(held_ids) != len(held):
        raise AssertionError("the optimizer holds a parameter twice")
    stale = held_ids - live
    missing = live - held_ids
    if stale or missing:
        raise AssertionError(
            f"optimizer out of sync: {len(stale)} stale parameter(s), {len(missing)} missing"
        )
    for p, st in optimizer.state.items():
        if id(p) not in live:
            raise AssertionError("optimizer state kept for a parameter the model lost")
        for k, v in st.items():
            if isinstance(v, Tensor) and v.dim() > 0 and v.shape != p.shape:
                raise AssertionError(f"state {k!r} shape {tuple(v.shape)} != {tuple(p.shape)}")


def flush_subnormal_state(optimizer: torch.optim.Optimizer | None) -> int:
    """Set the optimizer's subnormal state entries to exactly 0; return how many there were.

    A unit that stops receiving gradient (a grown unit that trained briefly and
    died, behind a ReLU) keeps a momentum that decays geometrically into the
    subnormal floats and, in float32, stalls there (``5.6e-45 * 0.9`` rounds back to
    ``5.6e-45``). Arithmetic on subnormals is many times slower on CPUs, so a
    grown model whose optimizer holds many of them trains slower than the same
    model built at its size. Zeroing them changes no value by more than the
    smallest normal float (``1.2e-38`` in float32), touches no global state (unlike
    ``torch.set_flush_denormal``) and works on every device and thread count.
    :class:`torchgrow.Grower` calls it every ``flush_subnormals_every`` steps.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer or None
        Any optimizer; its floating-point state tensors shaped like their
        parameter are cleaned in place (step counters are not touched).

    Returns
    -------
    int
        The number of entries set to 0.
    """
    if optimizer is None:
        return 0
    flushed = 0
    with torch.no_grad():
        for p, st in optimizer.state.items():
            for v in st.values():
                if not (isinstance(v, Tensor) and v.is_floating_point() and v.shape == p.shape):
                    continue
                if v.dim() == 0:
                    continue
                tiny = torch.finfo(v.dtype).tiny
                sub = (v.abs() < tiny) & (v != 0)
                n = int(sub.sum())
                if n:
                    v.masked_fill_(sub, 0)
                    flushed += n
    return flushed
