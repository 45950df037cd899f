"""The growable units of a model, from one recorded forward pass.

Each recorded call is visited in the order it ran. A registered layer acts by
its roles: a producer starts a new channel space on its output's channel dim,
a consumer reads the layout of its input's channel dim, a per-channel layer
passes channels on and joins the unit. Every other call goes to its op rule
(:mod:`~torchgrow.graph.rules`). A module called several times makes one
unit: its outputs are the same channels, its inputs the same columns.
Spaces reaching the model's output are fixed; spaces that met an op torchgrow
cannot follow are blocked, with the reason.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modes import eval_mode
from ..ops.registry import Role, lookup, role_of, weight_hook
from . import builtin_rules  # noqa: F401  (registers the built-in rules)
from .assemble import _Assembly
from .layout import (
    Cat,
    Fixed,
    Layout,
    Leaf,
    Prod,
    leaves,
    size,
)
from .record import Call, Record, function_name, record
from .rules import Dims, OpContext, fixed_size_dims, rule_for
from .units import Wiring, _Spaces

__all__ = ["analyse_forward"]


class _Analysis(_Assembly):
    def __init__(self, model: nn.Module, rec: Record) -> None:
        self.model = model
        self.record = rec
        self.modules = dict(model.named_modules())
        self.sp = _Spaces()
        self.widths: dict[int, int] = {}
        self.dims: dict[int, Dims] = {}
        self.param_of: dict[int, tuple[str, dict[int, int]]] = {}
        self.order: list[str] = []
        self.out_space: dict[str, int] = {}
        self.in_layout: dict[str, Layout | None] = {}
        self.pc_layout: dict[str, Layout] = {}
        for vid, v in rec.values.items():
            if v.origin in ("param", "buffer"):
                self.param_of[vid] = (v.names[0], {d: d for d, n in enumerate(v.shape) if n != 1})

    def _follow_param(self, call: Call) -> None:
        """A view or broadcast of a parameter is still that parameter, dim for dim."""
        src = call.inputs[0]
        name, dmap = self.param_of[src]
        sshape = self.record.values[src].shape
        oshape = self.record.values[call.outputs[0]].shape
        short = function_name(call.target).split(".")[-1]
        if short in ("expand", "expand_as", "broadcast_to"):
            off = len(oshape) - len(sshape)
            self.param_of[call.outputs[0]] = (name, {d + off: p for d, p in dmap.items()})
        elif len(call.inputs) == 1 and _numel(oshape) == _numel(sshape):
            if oshape == sshape:
                self.param_of[call.outputs[0]] = (name, dmap)
                return
            big_s = [d for d, n in enumerate(sshape) if n != 1]
            big_o = [d for d, n in enumerate(oshape) if n != 1]
            if len(big_s) == 1 and len(big_o) == 1 and big_s[0] in dmap:
                self.param_of[call.outputs[0]] = (name, {big_o[0]: dmap[big_s[0]]})

    # ---- layouts
    def new_space(self, width: int) -> int:
        s = self.sp.new()
        self.widths[s] = width
        return s

    def size(self, layout: Layout) -> int:
        return size(layout, self.widths)

    def unify(self, a: Layout, b: Layout) -> Layout | None:
        if isinstance(a, Leaf) and isinstance(b, Leaf):
            if self.widths[a.space] != self.widths[b.space]:
                return None
            self.sp.union(a.space, b.space)
            return a
        if isinstance(a, Fixed) and isinstance(b, Fixed):
            return a if a.n == b.n else None
        if isinstance(a, Cat) and isinstance(b, Cat) and len(a.parts) == len(b.parts):
            parts = [self.unify(x, y) for x, y in zip(a.parts, b.parts, strict=True)]
            return None if None in parts else a
        if isinstance(a, Prod) and isinstance(b, Prod):
            o, i = self.unify(a.outer, b.outer), self.unify(a.inner, b.inner)
            return None if o is None or i is None else a
        return None

    def _block(self, layouts: list[Layout], reason: str) -> None:
        for lay in layouts:
            for s in leaves(lay):
                self.sp.get(s).blocked.append(reason)

    # ---- calls
    def run(self) -> None:
        for call in self.record.calls:
            if call.kind == "module":
                self.module_call(call)
            else:
                self.function_call(call)
        for vid in self.record.outputs:
            for lay in self.dims.get(vid, {}).values():
                for s in leaves(lay):
                    self.sp.get(s).fixed.append("it is (part of) the model's output")

    def function_call(self, call: Call) -> None:
        if call.inputs and call.inputs[0] in self.param_of and call.outputs:
            self._follow_param(call)
        if not any(self.dims.get(v) for v in call.inputs):
            return
        rule = rule_for(call.target)
        ctx = OpContext(self, call)
        if rule is None:
            name = function_name(call.target)
            ctx.block(
                f"torchgrow has no op rule for {name!r}; teach it one with "
                f"torchgrow.graph.register_op(<{name}>, rule) (see docs/extending.md)"
            )
            return
        rule(ctx)

    def module_call(self, call: Call) -> None:
        name = str(call.target)
        m = self.modules[name]
        ops = lookup(m)
        roles = role_of(m)
        kind = type(m).__name__
        x = call.inputs[0] if call.inputs else None
        dims = self.dims.get(x, {}) if x is not None else {}
        reason = ops.unsupported(m) if ops is not None and ops.unsupported else None
        reason = reason or weight_hook(m)
        if reason:
            self._block(list(dims.values()), f"module {name!r} ({kind}): {reason}")
            for out in call.outputs[:1]:
                s = self.new_space(getattr(ops, "out_width", lambda _: 0)(m) or 0)
                self.sp.get(s).blocked.append(f"module {name!r} ({kind}): {reason}")
                self.sp.get(s).producers.append(name)
                self.out_space.setdefault(name, s)
                self.order.append(name)
                self.dims[out] = {
                    getattr(ops, "channel_dim", 1) % len(self.record.values[out].shape): Leaf(s)
                }
            return
        for other in call.inputs[1:]:
            self._block(
                list(self.dims.get(other, {}).values()),
                f"module {name!r} ({kind}) is called with several tensors",
            )
        if roles & (Role.PRODUCER | Role.CONSUMER):
            self._layer(call, name, m, roles, x, dims)
        elif roles & Role.PER_CHANNEL:
            self._per_channel(call, name, m, x, dims)
        elif roles & Role.FLATTEN:
            from .shape_rules import reshape

            if dims:
                reshape(OpContext(self, call))
        elif roles & Role.PASS_THROUGH and x is not None and call.outputs:
            ctx = OpContext(self, call)
            kept = fixed_size_dims(ctx, ctx.tensor_args[0])
            for lay in kept.values():
                for s in leaves(lay):
                    self.sp.get(s).between.append(kind)
            if len(self.record.values[call.outputs[0]].shape) == len(self.record.values[x].shape):
                ctx.output(0, kept)

    def _layer(
        self, call: Call, name: str, m: nn.Module, roles: Role, x: int | None, dims: Dims
    ) -> None:
        ops = lookup(m)
        cdim = getattr(ops, "channel_dim", 1)
        rest: Dims = {}
        if x is not None and roles & Role.CONSUMER:
            nd = len(self.record.values[x].shape)
            d = cdim % nd
            self._consume(name, dims.get(d), self.record.values[x].shape[d])
            if cdim == -1:
                rest = {k: v for k, v in dims.items() if k != d}
            elif any(k != d for k in dims):
                self._block(
                    [v for k, v in dims.items() if k != d],
                    f"module {name!r} ({type(m).__name__}) mixes a dimension carrying channels",
                )
        if not (roles & Role.PRODUCER) or not call.outputs:
            return
        out = call.outputs[0]
        nd = len(self.record.values[out].shape)
        s = self.out_space.get(name)
        if s is None:
            s = self.new_space(ops.out_width(m))
            self.sp.get(s).producers.append(name)
            self.out_space[name] = s
            self.order.append(name)
        self.dims[out] = {**rest, cdim % nd: Leaf(s)}

    def _consume(self, name: str, lay: Layout | None, n: int) -> None:
        if name in self.in_layout:  # called before: the same columns
            seen = self.in_layout[name]
            if seen is None and lay is None:
                return
            if seen is None or lay is None:
                self._fix_any([seen, lay], f"module {name!r} is also called on data of fixed width")
                return
            if self.unify(seen, lay) is None:
                self._block([seen, lay], f"module {name!r} is called on differently laid channels")
            return
        self.in_layout[name] = lay
        if lay is None:
            return
        for s in dict.fromkeys(self.sp.find(s) for s in leaves(lay)):
            self.sp.get(s).consumers.append((name, lay))

    def _fix_any(self, layouts: list[Layout | None], reason: str) -> None:
        for lay in layouts:
            if lay is not None:
                for s in leaves(lay):
                    self.sp.get(s).fixed.append(reason)

    def _per_channel(self, call: Call, name: str, m: nn.Module, x: int | None, dims: Dims) -> None:
        if x is None or not call.outputs:
            return
        ops = lookup(m)
        nd = len(self.record.values[x].shape)
        d = getattr(ops, "channel_dim", 1) % nd
        lay = dims.get(d)
        if isinstance(lay, Leaf):
            if name in self.pc_layout:
                if self.unify(self.pc_layout[name], lay) is None:
                    self._block([lay], f"per-channel module {name!r} is called on other channels")
            else:
                self.pc_layout[name] = lay
                self.sp.get(lay.space).per_channel.append(name)
        elif lay is not None:
            self._block([lay], f"per-channel module {name!r} reads the channels of several units")
        self.dims[call.outputs[0]] = dims


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def analyse_forward(model: nn.Module, *args: Any, **kwargs: Any) -> Wiring:
    """Analyse ``model`` from one forward pass on ``(args, kwargs)`` (in eval mode, no grad).

    Parameters
    ----------
    model : nn.Module
        Any model that runs on the example.
    *args, **kwargs
        The example input.

    Returns
    -------
    Wiring
        Units and blocked producers (with reasons).
    """
    device = next((p.device for p in model.parameters()), None)
    if device is not None:
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with eval_mode(model), torch.no_grad():
        rec, _ = record(model, *args, **kwargs)
    an = _Analysis(model, rec)
    an.run()
    return an.result()
