"""The analysis by :mod:`torch.fx` symbolic tracing, used when no example input is known.

The analysis follows each tensor's *channel space* through the model's
dataflow graph, taken from :mod:`torch.fx` symbolic tracing (or, for a flat
``nn.Sequential`` of known layers, from a plain walk of its children).
Element-wise binary operations (residual ``+``) merge the spaces of their
operands. A space that reaches the model's input or output cannot grow (their
widths are fixed by the data); a space that meets an operation it cannot
follow (``torch.cat``, an unknown module or function) is *blocked*, and asking
for it raises an error naming the module and the reason. The analysis of a
recorded forward (:mod:`torchgrow.graph.forward`) follows far more (see
``docs/design.md``); this one stays for models analysed without an example.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import GraphError
from ..ops.registry import Role, lookup, role_of
from .units import (  # noqa: F401  (re-exported for old imports)
    DEAD_AT_ZERO,
    NONZERO_AT_ZERO,
    Consumer,
    GrowableUnit,
    Wiring,
    _Space,
    _Spaces,
)

__all__ = ["analyse_fx", "DEAD_AT_ZERO", "NONZERO_AT_ZERO"]


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
            why = s.why_not()
            if why:
                for p in s.producers:
                    blocked[p] = why
                continue
            units.append(self._unit(s, blocked))
        return Wiring([u for u in units if u is not None], blocked)

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


def analyse_fx(model: nn.Module) -> Wiring:
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
