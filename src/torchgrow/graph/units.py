"""What the analyses find: growable units, their consumers, and the channel spaces behind them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "Consumer",
    "GrowableUnit",
    "Wiring",
    "DEAD_AT_ZERO",
    "NONZERO_AT_ZERO",
    "UNIT_SLOPE_AT_ZERO",
]


@dataclass(frozen=True)
class Consumer:
    """A module reading a unit's channels.

    Attributes
    ----------
    name : str
        Qualified module name.
    factor : int
        Input features per channel: ``H*W`` after a conv -> ``Flatten`` ->
        ``Linear`` hand-over, else 1. With a ``layout``: the columns each
        channel has in the consumer's input.
    layout : Layout, optional
        Where the unit's channels are among the consumer's inputs when they are
        not simply ``factor`` consecutive columns per channel, in channel order
        (a ``torch.cat`` with other tensors, a ``(B, T, F)`` flatten): a
        :mod:`~torchgrow.graph.layout` relative to this unit.
    """

    name: str
    factor: int = 1
    layout: Any = None


@dataclass(frozen=True)
class GrowableUnit:
    """Channels that grow together.

    Attributes
    ----------
    producers : tuple of str
        Modules making the channels (more than one when tied by residual additions).
    per_channel : tuple of str
        Per-channel modules on the way (BatchNorm, LayerNorm, depthwise conv).
    consumers : tuple of Consumer
        Modules reading the channels.
    width : int
        Current number of channels.
    between : tuple of str
        Pass-through operations on the way (activations, pooling...), by module
        name or function name; used to warn about dead new units.
    tensors : tuple of (str, int, float)
        Parameters and buffers used directly in the forward with one entry per
        channel (``h * self.gamma``, LayerScale): qualified name, the dimension
        that grows, and the value of new entries (1 for a scale, 0 for a shift).
    """

    producers: tuple[str, ...]
    per_channel: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    width: int
    between: tuple[str, ...] = ()
    tensors: tuple[tuple[str, int, float], ...] = ()

    @property
    def name(self) -> str:
        """The unit's name: its first producer."""
        return self.producers[0]


@dataclass
class Wiring:
    """The result of :func:`analyse`.

    Attributes
    ----------
    units : list of GrowableUnit
        The growable units, in graph order.
    blocked : dict
        Producer name -> why its channels cannot grow.
    """

    units: list[GrowableUnit]
    blocked: dict[str, str]
    _regrow: Any = field(default=None, repr=False, compare=False)

    def unit_of(self, name: str) -> GrowableUnit | None:
        """The unit that ``name`` produces, or ``None``."""
        for unit in self.units:
            if name in unit.producers:
                return unit
        return None

    def after_widen(self, name: str, k: int) -> None:
        """Bring the wiring up to date after the unit of ``name`` got ``k`` more channels.

        Cheaper than a new analysis: only the grown unit and the units whose
        consumers' layouts hold its channels are recomputed. Call it right
        after :func:`torchgrow.ops.widen` on the same model.
        """
        unit = self.unit_of(name)
        if unit is None:
            raise KeyError(f"{name!r} is not a producer of a growable unit of this wiring")
        if self._regrow is not None:
            self.units = self._regrow(self.units, unit, k)
        else:  # fx analysis: layouts are factors, only the width changes
            grown = replace(unit, width=unit.width + k)
            self.units = [grown if u is unit else u for u in self.units]


# ---------------------------------------------------------------- channel spaces
@dataclass
class _Space:
    producers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)  # factor -1: after flatten
    between: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # reasons the width is fixed (input, output)
    blocked: list[str] = field(default_factory=list)  # unsupported operations
    tensors: list[tuple[str, int, float]] = field(default_factory=list)  # per-channel tensors

    def why_not(self) -> str | None:
        """Why these channels cannot grow (``None``: they can)."""
        if self.blocked:
            return self.blocked[0]
        if self.fixed:
            return "its width is fixed: " + self.fixed[0]
        if not self.consumers:
            return "no module consumes its output"
        return None


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.data: list[_Space] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        self.data.append(_Space())
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        self.parent[rb] = ra
        da, db = self.data[ra], self.data[rb]
        for attr in (
            "producers",
            "per_channel",
            "consumers",
            "between",
            "fixed",
            "blocked",
            "tensors",
        ):
            getattr(da, attr).extend(getattr(db, attr))
        return ra

    def get(self, i: int) -> _Space:
        return self.data[self.find(i)]


# activations whose derivative at 0 is 0: new zero-fan-in units behind them never train
DEAD_AT_ZERO = {"ReLU", "ReLU6", "relu", "relu_", "relu6"}
# ops with value 0 and derivative exactly 1 at 0: a zero-fan-in unit's gradient passes unchanged
UNIT_SLOPE_AT_ZERO = {
    "ReLU1",
    "relu1",
    "Tanh",
    "tanh",
    "tanh_",
    "Hardtanh",
    "hardtanh",
    "Softsign",
    "softsign",
    "Identity",
    "Flatten",
    "flatten",
}
# activations whose value at 0 is not 0: new zero-fan-in units behind them output f(0) != 0,
# so a non-zero fan-out changes the function
NONZERO_AT_ZERO = {
    "Sigmoid",
    "sigmoid",
    "sigmoid_",
    "Softplus",
    "softplus",
    "LogSigmoid",
    "logsigmoid",
    "Hardsigmoid",
    "hardsigmoid",
    "Softmax",
    "softmax",
    "Softmin",
    "softmin",
}
