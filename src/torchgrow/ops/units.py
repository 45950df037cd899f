"""Width edits: add or remove output units of a producer and everything that depends on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import GrowthInputError, require_int, warn
from ..graph.units import GrowableUnit
from .batch import active_batch
from .edit import Change, EditRecord, commit
from .placement import grown_order, kept_columns, place_columns
from .registry import Role, require
from .verify import Verifier

__all__ = ["widen", "shrink", "DeadUnitWarning", "FunctionChangeWarning"]

TensorOrMap = Tensor | Mapping[str, Tensor] | None


class DeadUnitWarning(UserWarning):
    """New units that cannot train (zero fan-in behind an activation with zero slope at 0)."""


class FunctionChangeWarning(UserWarning):
    """Zero fan-in that does not preserve the function (an activation with f(0) != 0)."""


class _Modules:
    """``model``'s submodules by qualified name, looked up on demand (no walk of the model)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __getitem__(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)


def _check_k(k: object) -> int:
    return require_int(k, "k", 1)


def _per_module(
    value: TensorOrMap, names: Sequence[str], what: str, target: str
) -> dict[str, Tensor | None]:
    """Spread a tensor (single module) or a name->tensor mapping over ``names``."""
    if value is None:
        return dict.fromkeys(names)
    if isinstance(value, Tensor):
        if len(names) != 1:
            raise GrowthInputError(
                f"{what} for {target!r} must be a dict name -> tensor: the unit has "
                f"{len(names)} modules {list(names)}"
            )
        return {names[0]: value}
    if not isinstance(value, Mapping):
        raise GrowthInputError(f"{what} must be a Tensor or a dict name -> Tensor")
    unknown = set(value) - set(names)
    if unknown:
        raise GrowthInputError(f"{what}: {sorted(unknown)} not in this unit's {list(names)}")
    return {n: value.get(n) for n in names}


def _check_block(t: Tensor | None, shape: tuple[int, ...], what: str, name: str) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise GrowthInputError(f"{what} for {name!r} must be a Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise GrowthInputError(
            f"{what} for {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}"
        )
    if not torch.isfinite(t).all():
        raise GrowthInputError(f"{what} for {name!r} contains NaN or Inf")


def widen(
    model: nn.Module,
    name: str,
    k: int,
    *,
    fan_in: TensorOrMap = None,
    fan_out: TensorOrMap = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    new_connections: str = "all",
    verify: bool = True,
    unit: GrowableUnit | None = None,
) -> EditRecord:
    """Add ``k`` output units to producer ``name`` and matching inputs to its consumers.

    Per-channel layers in between get identity entries (BatchNorm: weight 1,
    bias 0, running mean 0, running var 1; LayerNorm: weight 1, bias 0;
    depthwise conv: centre tap 1). A conv -> ``Flatten`` -> ``Linear``
    hand-over adds ``H*W`` inputs per new channel. Producers tied to ``name``
    by residual additions grow too. New biases are 0.

    With zero ``fan_in`` (the default) or zero ``fan_out`` the function is
    preserved (exactly, unless a LayerNorm is on the way, which renormalises
    over the units; a warning says so).

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    name : str
        Qualified name of a producer (``Linear`` or ``Conv2d``).
    k : int
        Number of units to add (>= 1).
    fan_in : Tensor or dict, optional
        New rows of the producer's weight, shape ``(k, in)`` for Linear or
        ``(k, C_in, kh, kw)`` for Conv2d; a dict ``producer -> tensor`` when
        the unit has several producers. Default zero.
    fan_out : Tensor or dict, optional
        New input slices of the consumer's weight, shape ``(out, k*factor)``
        for Linear or ``(C_out, k, kh, kw)`` for Conv2d; a dict
        ``consumer -> tensor`` when the unit has several consumers. Default zero.
    optimizer : torch.optim.Optimizer, optional
        Carried along: old state kept, new entries zero.
    unknown_optimizer : {"raise", "reset"}
        What to do with an optimizer whose state layout torchgrow does not know.
    new_connections : {"all", "nonzero"}
        For layers with a connection mask: whether every new connection is
        active (default), or only those whose new weight is non-zero (NeST's
        new neurons are connected exactly by their non-zero pattern).
    verify : bool
        When the model has an example input (:func:`torchgrow.graph.set_example`),
        run it after the edit and roll back with
        :class:`~torchgrow.errors.EditVerificationError` if the forward fails
        or, with a zero fan-in or fan-out, if the output moved (default True).
    unit : GrowableUnit, optional
        The unit of ``name`` as an up-to-date analysis found it (see
        ``Wiring.after_widen``); saves analysing the model again.

    Returns
    -------
    EditRecord
        What changed.

    Raises
    ------
    GrowthInputError, GraphError, UnsupportedLayerError, OptimizerCarryError
        Before anything changes.
    """
    from ..graph import DEAD_AT_ZERO, NONZERO_AT_ZERO, find_unit

    k = _check_k(k)
    if new_connections not in ("all", "nonzero"):
        raise GrowthInputError(
            f"new_connections must be 'all' or 'nonzero', got {new_connections!r}"
        )
    if unit is None:
        unit = find_unit(model, name)
    elif name not in unit.producers:
        raise GrowthInputError(f"widen: {name!r} is not a producer of the given unit {unit.name!r}")
    modules = _Modules(model)
    fin = _per_module(fan_in, unit.producers, "fan_in", name)
    fout = _per_module(fan_out, [c.name for c in unit.consumers], "fan_out", name)
    changes: list[Change] = []
    for p in unit.producers:
        ops = require(modules[p], p, Role.PRODUCER)
        _check_block(fin[p], ops.fan_in_shape(modules[p], k), "fan_in", p)
        changes += ops.grow_out(modules[p], k, fin[p])
    for pc in unit.per_channel:
        changes += require(modules[pc], pc, Role.PER_CHANNEL).grow_channels(modules[pc], k)
    changes += _tensor_changes(model, unit, k=k)
    for c in unit.consumers:
        ops = require(modules[c.name], c.name, Role.CONSUMER)
        _check_block(
            fout[c.name], ops.fan_out_shape(modules[c.name], k, c.factor), "fan_out", c.name
        )
        grown = ops.grow_in(modules[c.name], k, fout[c.name], c.factor)
        if c.layout is not None:
            grown = place_columns(grown, grown_order(c.layout, unit.width, k), ops.in_dim)
        changes += grown

    if new_connections == "nonzero":
        changes = _connect_nonzero_only(changes)
    zero_in = all(t is None or not bool(t.any()) for t in fin.values())
    zero_out = all(t is None or not bool(t.any()) for t in fout.values())
    nonzero_at_zero = sorted(set(unit.between) & NONZERO_AT_ZERO)
    has_ln = any(isinstance(modules[pc], (nn.LayerNorm, nn.RMSNorm)) for pc in unit.per_channel)
    preserve = (zero_out or (zero_in and not nonzero_at_zero)) and not has_ln
    record = EditRecord(
        op="widen",
        target=name,
        modules=[*unit.producers, *unit.per_channel, *(c.name for c in unit.consumers)],
        units_added=k,
        details={"unit": unit, "width_before": unit.width, "width_after": unit.width + k},
    )
    record.details["preserving"] = preserve
    checker = None
    if verify and active_batch(model) is None:  # a batch verifies once, at its end
        checker = Verifier(model, f"widen({name!r}, k={k})", preserve=preserve)
    commit(
        model,
        changes,
        optimizer=optimizer,
        record=record,
        unknown_optimizer=unknown_optimizer,
        verify=checker,
    )

    if has_ln:
        warn(
            f"widening {name!r} through a LayerNorm/RMSNorm: it normalises over the units, so "
            "new units shift the statistics and the function is not exactly preserved"
        )
    if zero_in and not zero_out and nonzero_at_zero:
        warn(
            f"the {k} new units of {name!r} have zero fan-in but pass through "
            f"{nonzero_at_zero}, whose value at 0 is not 0: they output f(0) != 0, so their "
            "non-zero fan-out changes the function. Zero fan-in preserves the function only "
            "through activations with f(0) = 0 (ReLU1, tanh, GELU...); grow with a zero "
            "fan-out here to keep it.",
            FunctionChangeWarning,
        )
    dead = sorted(set(unit.between) & DEAD_AT_ZERO)
    if zero_in and dead:
        warn(
            f"the {k} new units of {name!r} have zero fan-in and pass through {dead}, whose "
            "derivative at 0 is 0: they will never train. Use torchgrow.nn.ReLU1 (derivative 1 "
            "at 0), as GradMax does, or grow with a non-zero fan-in.",
            DeadUnitWarning,
        )
    return record


def _connect_nonzero_only(changes: list[Change]) -> list[Change]:
    """Masks' new entries follow the new weights' non-zero pattern (old entries unchanged)."""
    from .masks import MASK

    weights = {id(ch.owner): ch for ch in changes if ch.name == "weight" and ch.tensor is not None}
    out = []
    for ch in changes:
        w = weights.get(id(ch.owner))
        if ch.name == MASK and ch.remap is not None and w is not None:
            old = getattr(ch.owner, MASK)
            new_region = 1 - ch.remap(torch.ones_like(old), 0.0)
            active = (w.tensor != 0).to(ch.tensor.dtype)
            ch = Change(ch.owner, ch.name, ch.tensor * (1 - new_region) + new_region * active,
                        ch.remap)  # fmt: skip
        out.append(ch)
    return out


def _check_keep(keep: object, width: int, name: str) -> Tensor:
    try:
        idx = torch.as_tensor(keep if isinstance(keep, Tensor) else list(keep))
    except Exception as exc:
        raise GrowthInputError(f"keep must be a sequence of unit indices, got {keep!r}") from exc
    if idx.numel() == 0:
        raise GrowthInputError(f"keep is empty: {name!r} must keep at least one unit")
    if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise GrowthInputError(f"keep must be a 1-D sequence of integer indices, got {keep!r}")
    idx = idx.long()
    if (idx < 0).any() or (idx >= width).any():
        raise GrowthInputError(
            f"keep indices must be in [0, {width}) for {name!r}, got {idx.tolist()}"
        )
    if idx.unique().numel() != idx.numel():
        raise GrowthInputError(f"keep has repeated indices: {idx.tolist()}")
    return idx.sort().values


def shrink(
    model: nn.Module,
    name: str,
    keep: Sequence[int] | Tensor,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
) -> EditRecord:
    """Keep only the output units ``keep`` of producer ``name`` (the inverse of :func:`widen`).

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    name : str
        Qualified name of a producer.
    keep : sequence of int or Tensor
        Indices of the units to keep (unique, in range, at least one).
    optimizer : torch.optim.Optimizer, optional
        Carried along: state of kept entries kept, removed entries dropped.
    unknown_optimizer : {"raise", "reset"}
        See :func:`widen`.

    Returns
    -------
    EditRecord
        What changed.
    """
    from ..graph import find_unit

    unit = find_unit(model, name)
    idx = _check_keep(keep, unit.width, name)
    modules = dict(model.named_modules())
    changes: list[Change] = []
    for p in unit.producers:
        changes += require(modules[p], p, Role.PRODUCER).keep_out(modules[p], idx)
    for pc in unit.per_channel:
        changes += require(modules[pc], pc, Role.PER_CHANNEL).keep_channels(modules[pc], idx)
    changes += _tensor_changes(model, unit, keep=idx)
    for c in unit.consumers:
        ops = require(modules[c.name], c.name, Role.CONSUMER)
        if c.layout is None:
            changes += ops.keep_in(modules[c.name], idx, c.factor)
        else:
            changes += ops.keep_in(modules[c.name], kept_columns(c.layout, unit.width, idx), 1)
    record = EditRecord(
        op="shrink",
        target=name,
        modules=[*unit.producers, *unit.per_channel, *(c.name for c in unit.consumers)],
        units_removed=unit.width - len(idx),
        details={"unit": unit, "width_before": unit.width, "width_after": len(idx), "keep": idx},
    )
    return commit(
        model,
        changes,
        optimizer=optimizer,
        record=record,
        unknown_optimizer=unknown_optimizer,
        verify=Verifier(model, f"shrink({name!r})", preserve=False),
    )


def _tensor_changes(
    model: nn.Module, unit, *, k: int | None = None, keep: Tensor | None = None
) -> list[Change]:
    """Grow (or cut) the parameters and buffers used directly per channel (LayerScale...)."""
    from .layers import tensor_change

    changes = []
    for qualname, dim, fill in unit.tensors:
        path, _, attr = qualname.rpartition(".")
        owner = model.get_submodule(path)
        t = getattr(owner, attr)
        if keep is not None:
            changes.append(tensor_change(owner, attr, dim, keep=keep))
        else:
            shape = list(t.shape)
            shape[dim] = k
            changes.append(tensor_change(owner, attr, dim, block=t.new_full(shape, fill)))
    return changes
