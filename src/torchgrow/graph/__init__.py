"""Where things connect: the growable units of a model.

A *growable unit* is a set of output channels that can be widened together:
the producers that make them (``Linear``/``Conv2d``; several when residual
additions tie their outputs), the per-channel layers and tensors they pass
through (BatchNorm, LayerNorm, depthwise conv, a LayerScale vector), and the
consumers that read them (``Linear``/``Conv2d``, possibly behind a
``Flatten`` or a ``torch.cat``).

Two analyses find them. When torchgrow has an example input for the model
(:func:`set_example`, or the one :func:`growable_units` is given), it records
one real forward pass (:mod:`~torchgrow.graph.record`) and follows each
tensor's channels through the op rules of :mod:`~torchgrow.graph.rules`; this
works on any model that runs, Hugging Face models included. Without one it
falls back to :mod:`torch.fx` symbolic tracing (:mod:`~torchgrow.graph.fx_trace`).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import GraphError, GrowthInputError
from ..modes import eval_mode
from . import rules
from .fx_trace import analyse_fx
from .rules import OpContext, register_op, rule_for
from .units import (
    DEAD_AT_ZERO,
    NONZERO_AT_ZERO,
    UNIT_SLOPE_AT_ZERO,
    Consumer,
    GrowableUnit,
    Wiring,
)

__all__ = [
    "Consumer",
    "GrowableUnit",
    "Wiring",
    "analyse",
    "growable_units",
    "find_unit",
    "set_example",
    "example_of",
    "register_op",
    "rule_for",
    "rules",
    "OpContext",
    "DEAD_AT_ZERO",
    "NONZERO_AT_ZERO",
    "UNIT_SLOPE_AT_ZERO",
]

_EXAMPLES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict]] = weakref.WeakKeyDictionary()


def set_example(model: nn.Module, *args: Any, **kwargs: Any) -> None:
    """Give torchgrow an example input for ``model`` (a few rows are enough).

    With it, the analysis records a real forward pass instead of tracing
    symbolically, and every edit of ``model`` verifies itself by a forward on
    it. Call with no arguments to forget the example.

    Parameters
    ----------
    model : nn.Module
        The model.
    *args, **kwargs
        What ``model(*args, **kwargs)`` is called with.
    """
    if not args and not kwargs:
        _EXAMPLES.pop(model, None)
        return
    _EXAMPLES[model] = (tuple(_detach(a) for a in args), {k: _detach(v) for k, v in kwargs.items()})


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, Tensor) else x


def example_of(model: nn.Module) -> tuple[tuple, dict] | None:
    """The example input given by :func:`set_example` as ``(args, kwargs)``, or ``None``."""
    return _EXAMPLES.get(model)


def analyse(model: nn.Module) -> Wiring:
    """Analyse ``model``'s wiring: its growable units and the producers that cannot grow.

    Parameters
    ----------
    model : nn.Module
        The model. With an example input (:func:`set_example`) any model that
        runs; without, a model :mod:`torch.fx` can trace or a flat ``nn.Sequential``.

    Returns
    -------
    Wiring
        Units and blocked producers (with reasons).
    """
    example = example_of(model)
    if example is None:
        return analyse_fx(model)
    from .forward import analyse_forward

    return analyse_forward(model, *example[0], **example[1])


def _check_factors(model: nn.Module, units: list[GrowableUnit], example_input: Tensor) -> None:
    """Cross-check flatten factors against a real forward pass."""
    seen: dict[str, int] = {}
    modules = dict(model.named_modules())
    hooks = []
    wanted = {c.name for u in units for c in u.consumers if c.factor > 1}

    def hook(name: str):
        def fn(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
            seen[name] = inp[0].shape[-1]

        return fn

    for name in wanted:
        hooks.append(modules[name].register_forward_hook(hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    for u in units:
        for c in u.consumers:
            if c.factor > 1 and seen.get(c.name, c.factor * u.width) != c.factor * u.width:
                raise GraphError(
                    f"consumer {c.name!r} receives {seen[c.name]} features, expected "
                    f"{u.width} channels x {c.factor}"
                )


def growable_units(
    model: nn.Module, example_input: Tensor | None = None, *, strict: bool = False
) -> list[GrowableUnit]:
    """List the units of ``model`` that can be widened.

    Parameters
    ----------
    model : nn.Module
        The model.
    example_input : Tensor, optional
        If given, it becomes the model's example input (:func:`set_example`):
        the analysis records a forward pass on it, and later edits verify
        themselves on it.
    strict : bool
        Raise :class:`~torchgrow.errors.GraphError` if any producer is blocked
        by an unsupported pattern (rather than just leaving it out).

    Returns
    -------
    list of GrowableUnit
        In graph order. Producers feeding the output, or blocked, are absent.
    """
    if example_input is not None:
        set_example(model, example_input)
    wiring = analyse(model)
    if strict:
        for name, why in wiring.blocked.items():
            if not why.startswith("its width is fixed"):
                raise GraphError(f"producer {name!r} cannot grow: {why}")
    if example_input is not None:
        _check_factors(model, wiring.units, example_input)
    return wiring.units


def find_unit(model: nn.Module, name: str) -> GrowableUnit:
    """The growable unit that module ``name`` produces.

    Parameters
    ----------
    model : nn.Module
        The model.
    name : str
        Qualified name of a producer (``Linear`` or ``Conv2d``).

    Returns
    -------
    GrowableUnit
        The unit (shared with every producer tied to ``name``).

    Raises
    ------
    GrowthInputError
        ``name`` is not a module of ``model``.
    GraphError
        ``name`` exists but its channels cannot be widened, with the reason.
    """
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        near = [n for n in modules if n and (name in n or n in name)][:5]
        hint = f" Did you mean one of {near}?" if near else ""
        raise GrowthInputError(f"model has no module named {name!r}.{hint}")
    wiring = analyse(model)
    unit = wiring.unit_of(name)
    if unit is not None:
        return unit
    if name in wiring.blocked:
        raise GraphError(f"module {name!r} cannot be widened: {wiring.blocked[name]}")
    kind = type(modules[name]).__name__
    raise GraphError(
        f"module {name!r} ({kind}) is not a producer of a growable unit; widen a Linear or "
        f"Conv2d whose output feeds another layer. Growable: "
        f"{[u.name for u in wiring.units]}"
    )
