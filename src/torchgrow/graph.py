"""Where things connect: the growable units of a model.

A *growable unit* is a set of output channels that can be widened together:
the producers that make them (``Linear``/``Conv2d``; several when residual
additions tie their outputs), the per-channel layers they pass through
(BatchNorm, LayerNorm, depthwise conv), and the consumers that read them
(``Linear``/``Conv2d``, possibly behind a ``Flatten``).

The analysis follows each tensor's *channel space* through the model's
dataflow graph, taken from :mod:`torch.fx` symbolic tracing (or, for a flat
``nn.Sequential`` of known layers, from a plain walk of its children).
Element-wise binary operations (residual ``+``) merge the spaces of their
operands. A space that reaches the model's input or output cannot grow (their
widths are fixed by the data); a space that meets an operation torchgrow
cannot edit (``torch.cat``, an unknown module or function) is *blocked*, and
asking for it raises an error naming the module and the reason.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import GraphError, GrowthInputError
from .ops.registry import Role, lookup, role_of

__all__ = ["Consumer", "GrowableUnit", "Wiring", "analyse", "growable_units", "find_unit"]


@dataclass(frozen=True)
class Consumer:
    """A module reading a unit's channels.

    Attributes
    ----------
    name : str
        Qualified module name.
    factor : int
        Input features per channel: ``H*W`` after a conv -> ``Flatten`` ->
        ``Linear`` hand-over, else 1.
    """

    name: str
    factor: int = 1


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
    """

    producers: tuple[str, ...]
    per_channel: tuple[str, ...]
    consumers: tuple[Consumer, ...]
    width: int
    between: tuple[str, ...] = ()

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

    def unit_of(self, name: str) -> GrowableUnit | None:
        """The unit that ``name`` produces, or ``None``."""
        for unit in self.units:
            if name in unit.producers:
                return unit
        return None


# ---------------------------------------------------------------- channel spaces
@dataclass
class _Space:
    producers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)  # factor -1: after flatten
    between: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # reasons the width is fixed (input, output)
    blocked: list[str] = field(default_factory=list)  # unsupported operations


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
        for attr in ("producers", "per_channel", "consumers", "between", "fixed", "blocked"):
            getattr(da, attr).extend(getattr(db, attr))
        return ra

    def get(self, i: int) -> _Space:
        return self.data[self.find(i)]


@dataclass(frozen=True)
class _Val:
    """What a graph value carries: a channel space, flattened (``flat``) or not."""

    space: int
    flat: bool = False


_ELEMENTWISE = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
_ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_PASS_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.elu,
    F.leaky_relu,
    F.hardtanh,
    F.mish,
    torch.sigmoid,
    torch.tanh,
    F.sigmoid,
    F.tanh,
    F.dropout,
    F.dropout2d,
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_NEUTRAL_METHODS = {"size", "dim"}  # return non-tensors
# activations whose derivative at 0 is 0: new zero-fan-in units behind them never train
DEAD_AT_ZERO = {"ReLU", "ReLU6", "relu", "relu_", "relu6"}
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


class _Leafy(torch.fx.Tracer):
    """Treat every layer kind the registry knows (and torch's own layers) as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if role_of(m) != Role.NONE:
            return True
        return super().is_leaf_module(m, qualname)


def _fn_name(target: object) -> str:
    return getattr(target, "__name__", repr(target))


class _Analysis:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.sp = _Spaces()
        self.order: list[str] = []  # producers in graph order

    # ---- value helpers
    def _vals(self, args: Iterable[object], env: dict) -> list[_Val]:
        out: list[_Val] = []
        for a in torch.fx.node.map_aggregate(tuple(args), lambda x: x):
            self._collect(a, env, out)
        return out

    def _collect(self, a: object, env: dict, out: list[_Val]) -> None:
        if isinstance(a, torch.fx.Node):
            v = env.get(a)
            if isinstance(v, _Val):
                out.append(v)
        elif isinstance(a, (list, tuple)):
            for x in a:
                self._collect(x, env, out)
        elif isinstance(a, dict):
            for x in a.values():
                self._collect(x, env, out)

    def _block(self, vals: Iterable[_Val], reason: str) -> None:
        for v in vals:
            self.sp.get(v.space).blocked.append(reason)

    def _fresh(self) -> _Val:
        return _Val(self.sp.new())

    # ---- node kinds
    def placeholder(self) -> _Val:
        v = self._fresh()
        self.sp.get(v.space).fixed.append("it is the model's input")
        return v

    def output(self, vals: list[_Val]) -> None:
        for v in vals:
            self.sp.get(v.space).fixed.append("it is (part of) the model's output")

    def call_module(self, name: str, vals: list[_Val]) -> _Val | None:
        module = self.modules[name]
        ops = lookup(module)
        roles = role_of(module)
        kind = type(module).__name__
        if ops is not None and ops.unsupported is not None:
            reason = ops.unsupported(module)
            if reason:
                self._block(vals, f"module {name!r} ({kind}): {reason}")
                return self._fresh()
        if roles & Role.PRODUCER:
            for v in vals[:1]:
                if v.flat and isinstance(module, nn.Conv2d):
                    self._block([v], f"module {name!r} (Conv2d) reads flattened features")
                self.sp.get(v.space).consumers.append((name, -1 if v.flat else 1))
            for v in vals[1:]:
                self._block([v], f"module {name!r} ({kind}) called with several tensors")
            out = self._fresh()
            self.sp.get(out.space).producers.append(name)
            self.order.append(name)
            return out
        if roles & Role.PER_CHANNEL:
            v = vals[0] if vals else self._fresh()
            if v.flat:
                self._block([v], f"per-channel module {name!r} ({kind}) after a flatten")
            self.sp.get(v.space).per_channel.append(name)
            return v
        if roles & Role.PASS_THROUGH:
            v = vals[0] if vals else self._fresh()
            self.sp.get(v.space).between.append(kind)
            return v
        if roles & Role.FLATTEN:
            v = vals[0] if vals else self._fresh()
            return _Val(v.space, flat=True)
        self._block(
            vals,
            f"module {name!r} ({kind}) is a layer kind torchgrow cannot edit; register it with "
            "torchgrow.ops.register(...) or keep it away from the units you grow",
        )
        return self._fresh()

    def call_function(self, node: torch.fx.Node, vals: list[_Val]) -> _Val | None:
        t = node.target
        name = _fn_name(t)
        if t in _ELEMENTWISE:
            return self._merge(vals)
        if t in _PASS_FUNCTIONS:
            if vals:
                self.sp.get(vals[0].space).between.append(name)
                return vals[0]
            return None
        if t is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start == 1 and end == -1 and vals:
                return _Val(vals[0].space, flat=True)
        if t is getattr and vals:
            return None  # attribute access such as x.shape
        if not vals:
            return None
        self._block(
            vals,
            f"operation {name!r} (graph node {node.name!r}) is not supported in a growable unit"
            + ("; torch.cat joins channels of several units" if t is torch.cat else ""),
        )
        return self._fresh()

    def call_method(self, node: torch.fx.Node, vals: list[_Val]) -> _Val | None:
        m = node.target
        if m in _NEUTRAL_METHODS:
            return None
        if m in _ELEMENTWISE_METHODS:
            return self._merge(vals)
        if m in _PASS_METHODS and vals:
            self.sp.get(vals[0].space).between.append(str(m))
            return vals[0]
        if m == "flatten" and vals:
            args = node.args[1:]
            start = args[0] if args else node.kwargs.get("start_dim", 0)
            end = args[1] if len(args) > 1 else node.kwargs.get("end_dim", -1)
            if start == 1 and end == -1:
                return _Val(vals[0].space, flat=True)
        if m in ("view", "reshape") and vals:
            shape = node.args[1:]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                shape = tuple(shape[0])
            if len(shape) == 2 and shape[1] == -1:
                return _Val(vals[0].space, flat=True)
        if not vals:
            return None
        self._block(
            vals,
            f"method '.{m}()' (graph node {node.name!r}) is not supported in a growable unit",
        )
        return self._fresh()

    def _merge(self, vals: list[_Val]) -> _Val | None:
        if not vals:
            return None
        root = vals[0].space
        for v in vals[1:]:
            root = self.sp.union(root, v.space)
        flat = any(v.flat for v in vals)
        if flat and not all(v.flat for v in vals):
            self._block(vals, "an element-wise operation mixes flattened and unflattened tensors")
        return _Val(root, flat=flat)

    # ---- result
    def result(self) -> Wiring:
        units: list[GrowableUnit] = []
        blocked: dict[str, str] = {}
        seen: set[int] = set()
        for prod in self.order:
            root = None
            for i, s in enumerate(self.sp.data):
                if prod in s.producers and self.sp.find(i) == i:
                    root = i
                    break
            if root is None or root in seen:
                continue
            seen.add(root)
            s = self.sp.data[root]
            why = self._why_not(s)
            if why:
                for p in s.producers:
                    blocked[p] = why
                continue
            units.append(self._unit(s, blocked))
        return Wiring([u for u in units if u is not None], blocked)

    def _why_not(self, s: _Space) -> str | None:
        if s.blocked:
            return s.blocked[0]
        if s.fixed:
            return "its width is fixed: " + s.fixed[0]
        if not s.consumers:
            return "no module consumes its output"
        return None

    def _unit(self, s: _Space, blocked: dict[str, str]) -> GrowableUnit | None:
        widths = {p: lookup(self.modules[p]).out_width(self.modules[p]) for p in s.producers}
        if len(set(widths.values())) != 1:
            for p in s.producers:
                blocked[p] = (
                    f"producers tied by an element-wise operation differ in width: {widths}"
                )
            return None
        width = next(iter(widths.values()))
        consumers: list[Consumer] = []
        for name, factor in s.consumers:
            m = self.modules[name]
            n_in = lookup(m).in_width(m)
            if factor == -1:
                if n_in % width:
                    for p in s.producers:
                        blocked[p] = (
                            f"consumer {name!r} has {n_in} inputs, not a multiple of the "
                            f"{width} flattened channels"
                        )
                    return None
                factor = n_in // width
            elif n_in != width:
                for p in s.producers:
                    blocked[p] = f"consumer {name!r} reads {n_in} channels, the unit has {width}"
                return None
            consumers.append(Consumer(name, factor))
        rank = {name: i for i, name in enumerate(self.order)}
        return GrowableUnit(
            producers=tuple(sorted(dict.fromkeys(s.producers), key=rank.__getitem__)),
            per_channel=tuple(dict.fromkeys(s.per_channel)),
            consumers=tuple(dict.fromkeys(consumers)),
            width=width,
            between=tuple(s.between),
        )


def _is_flat_sequential(model: nn.Module) -> bool:
    return isinstance(model, nn.Sequential) and all(
        role_of(m) != Role.NONE for m in model.children()
    )


def analyse(model: nn.Module) -> Wiring:
    """Analyse ``model``'s wiring: its growable units and the producers that cannot grow.

    Parameters
    ----------
    model : nn.Module
        Any model that :mod:`torch.fx` can trace, or a flat ``nn.Sequential``.

    Returns
    -------
    Wiring
        Units and blocked producers (with reasons).
    """
    an = _Analysis(model)
    if _is_flat_sequential(model):
        v = an.placeholder()
        for name, _ in model.named_children():
            v = an.call_module(name, [v])
        an.output([v])
        return an.result()
    try:
        graph = _Leafy().trace(model)
    except Exception as exc:  # fx raises many kinds of errors
        raise GraphError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. torchgrow needs a model "
            "whose forward has no data-dependent control flow, or a flat nn.Sequential."
        ) from exc
    env: dict[torch.fx.Node, _Val | None] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            env[node] = an.placeholder()
        elif node.op == "get_attr":
            env[node] = an._fresh()
        elif node.op == "output":
            an.output(an._vals(node.args, env))
        elif node.op == "call_module":
            env[node] = an.call_module(str(node.target), an._vals(node.args, env))
        elif node.op == "call_function":
            env[node] = an.call_function(node, an._vals((node.args, node.kwargs), env))
        elif node.op == "call_method":
            env[node] = an.call_method(node, an._vals((node.args, node.kwargs), env))
    return an.result()


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
        was = model.training
        model.eval()
        with torch.no_grad():
            model(example_input)
        model.train(was)
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
        If given, a forward pass cross-checks the conv -> flatten -> linear
        hand-overs (features per channel).
    strict : bool
        Raise :class:`~torchgrow.errors.GraphError` if any producer is blocked
        by an unsupported pattern (rather than just leaving it out).

    Returns
    -------
    list of GrowableUnit
        In graph order. Producers feeding the output, or blocked, are absent.
    """
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
