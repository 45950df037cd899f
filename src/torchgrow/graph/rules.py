"""Op rules: how an operation maps the channel dimensions of its inputs to its outputs.

The analysis of a recorded forward (:mod:`~torchgrow.graph.forward`) follows
every tensor dimension that carries channels of a unit. For each recorded
call with such a tensor among its inputs it asks the rule registered for the
function; the rule reads the inputs' channel dimensions from an
:class:`OpContext` and says which output dimensions carry which channels (and
which channels must stay fixed, or cannot grow at all). A call whose inputs
carry no channels needs no rule.

Teach torchgrow an op with :func:`register_op` (see ``docs/extending.md``)::

    from torchgrow.graph import register_op, rules

    register_op(my_gelu, rules.same_as_input)      # acts on each element alone
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .layout import Cat, Fixed, Layout, Leaf, Prod, leaves
from .record import Call, Ref, function_name

if TYPE_CHECKING:
    from .forward import _Analysis

__all__ = ["OpContext", "Rule", "register_op", "rule_for", "same_as_input"]

Dims = dict[int, Layout]


class OpContext:
    """What a rule sees of one recorded call, and what it can say about it.

    Attributes
    ----------
    call : Call
        The recorded call (function, arguments with tensors as ``Ref``).
    name : str
        The function's readable name (``"torch.cat"``, ``"Tensor.view"``).
    """

    def __init__(self, analysis: _Analysis, call: Call) -> None:
        self._an = analysis
        self.call = call
        self.name = call.name

    # ---- reading the inputs
    def arg(self, index: int, keyword: str | None = None, default: Any = None) -> Any:
        """Positional argument ``index`` (or keyword ``keyword``); tensors come as ``Ref``."""
        if index < len(self.call.args):
            return self.call.args[index]
        if keyword is not None and keyword in self.call.kwargs:
            return self.call.kwargs[keyword]
        return default

    def dims(self, ref: Ref | Any) -> Dims:
        """Channel dimensions of a tensor argument: dim -> layout (empty when none)."""
        return dict(self._an.dims.get(ref.vid, {})) if isinstance(ref, Ref) else {}

    def shape(self, ref: Ref | int) -> tuple[int, ...]:
        """Shape of a tensor argument (a ``Ref``) or of output number ``ref`` (an int)."""
        if isinstance(ref, Ref):
            return self._an.record.values[ref.vid].shape
        return self._an.record.values[self.call.outputs[ref]].shape

    @property
    def tensor_args(self) -> list[Ref]:
        """The tensor arguments, in order."""
        return [Ref(v) for v in self.call.inputs]

    def size(self, layout: Layout) -> int:
        """Number of entries of a layout (a unit's width for its channels)."""
        return self._an.size(layout)

    def n_outputs(self) -> int:
        """Number of tensors the call returned."""
        return len(self.call.outputs)

    def is_parameter(self, ref: Ref, dim: int) -> tuple[str, int] | None:
        """``(name, its dim)`` when dim ``dim`` of the argument is a dim of a parameter or
        buffer (the tensor itself, a view or a broadcast of it); else ``None``."""
        p = self._an.param_of.get(ref.vid)
        if p is None or dim not in p[1]:
            return None
        return p[0], p[1][dim]

    # ---- saying what the outputs carry
    def output(self, index: int, dims: Dims) -> None:
        """Output ``index`` carries ``dims`` (dim -> layout)."""
        vid = self.call.outputs[index]
        nd = len(self._an.record.values[vid].shape)
        self._an.dims[vid] = {d % nd if nd else d: lay for d, lay in dims.items()}

    def unify(self, a: Layout, b: Layout) -> Layout | None:
        """Make two layouts the same channels (element-wise ops); ``None`` if they cannot be."""
        return self._an.unify(a, b)

    def block(self, reason: str, layouts: list[Layout] | None = None) -> None:
        """The channels in ``layouts`` (default: of every input) cannot grow, for ``reason``."""
        if layouts is None:
            layouts = [lay for r in self.tensor_args for lay in self.dims(r).values()]
        msg = f"{reason} (in {self.name!r} called by module {self.call.where or '<model>'!r})"
        for lay in layouts:
            for s in leaves(lay):
                self._an.sp.get(s).blocked.append(msg)

    def fix(self, layout: Layout, reason: str) -> None:
        """The channels in ``layout`` keep their width (they meet data of a fixed width)."""
        msg = f"{reason} (in {self.name!r} called by module {self.call.where or '<model>'!r})"
        for s in leaves(layout):
            self._an.sp.get(s).fixed.append(msg)

    def per_channel(self, layout: Layout, ref: Ref, dim: int, fill: float) -> bool:
        """Dim ``dim`` of ``ref``, a parameter or buffer with one entry per channel of
        ``layout``, grows with the channels (new entries ``fill``).

        Returns False (and does nothing) when ``ref`` is not a parameter or
        buffer there, or ``layout`` is not a single unit's channels.
        """
        p = self.is_parameter(ref, dim)
        if p is None or not isinstance(layout, Leaf):
            return False
        name, dim = p
        self._an.sp.get(layout.space).tensors.append((name, dim, fill))
        return True

    def between(self, layout: Layout) -> None:
        """Record the op as one the channels pass through (used for dead-unit warnings)."""
        short = self.name.split(".")[-1]
        for s in leaves(layout):
            self._an.sp.get(s).between.append(short)


Rule = Callable[[OpContext], None]

_RULES: dict[Any, Rule] = {}


def register_op(op: Callable | str, rule: Rule) -> Rule:
    """Register (or replace) the rule of a torch function, tensor method or op name.

    Parameters
    ----------
    op : callable or str
        The function as the forward calls it (``torch.cat``, ``torch.Tensor.view``,
        ``torch.nn.functional.gelu``, your own function overridable by
        ``__torch_function__``), or its name as errors print it (``"Tensor.T"``).
    rule : callable
        ``rule(ctx: OpContext) -> None``; see :class:`OpContext`.

    Returns
    -------
    callable
        ``rule``, so the call can decorate it.
    """
    _RULES[op] = rule
    return rule


def rule_for(func: Any) -> Rule | None:
    """The rule registered for ``func`` (by identity, then by name), or ``None``."""
    try:
        rule = _RULES.get(func)
    except TypeError:  # unhashable
        rule = None
    return rule if rule is not None else _RULES.get(function_name(func))


def ops_named(names: str, *owners: object) -> list[object]:
    """The functions called ``names`` (space-separated) on each of ``owners`` that has them
    (``ops_named("relu gelu", torch, torch.Tensor, F)``), to register one rule for many."""
    out = []
    for n in names.split():
        for owner in owners:
            f = getattr(owner, n, None)
            if f is not None:
                out.append(f)
    return out


# ---------------------------------------------------------------- building blocks for rules
def same_as_input(ctx: OpContext) -> None:
    """Every output has the channel dims of the first tensor argument (activations, dropout)."""
    refs = ctx.tensor_args
    dims = ctx.dims(refs[0]) if refs else {}
    for lay in dims.values():
        ctx.between(lay)
    for i in range(ctx.n_outputs()):
        ctx.output(i, dims)


def fixed_size_dims(ctx: OpContext, ref: Ref) -> Dims:
    """Channel dims of ``ref`` whose size the call keeps; blocks the others (pooling, pad)."""
    out_shape = ctx.shape(0)
    dims = {}
    for d, lay in ctx.dims(ref).items():
        if d < len(out_shape) and out_shape[d] == ctx.shape(ref)[d]:
            dims[d] = lay
        else:
            ctx.block(f"changes the size of a dimension carrying channels (dim {d})", [lay])
    return dims


def as_layout(dims: Dims, d: int, n: int) -> Layout:
    """The layout of dim ``d`` of a tensor: its channels, or ``Fixed(n)``."""
    return dims.get(d, Fixed(n))


def product(parts: list[Layout]) -> Layout:
    """The layout of several dims flattened into one (dims of size 1 dropped)."""
    parts = [p for p in parts if not (isinstance(p, Fixed) and p.n == 1)]
    if not parts:
        return Fixed(1)
    out = parts[0]
    for p in parts[1:]:
        if isinstance(out, Fixed) and isinstance(p, Fixed):
            out = Fixed(out.n * p.n)
        elif isinstance(out, Prod) and isinstance(out.inner, Fixed) and isinstance(p, Fixed):
            out = Prod(out.outer, Fixed(out.inner.n * p.n))
        else:
            out = Prod(out, p)
    return out


def concat(parts: list[Layout]) -> Layout:
    """The layout of tensors concatenated along one dim (neighbouring fixed parts merged)."""
    merged: list[Layout] = []
    for p in parts:
        if merged and isinstance(p, Fixed) and isinstance(merged[-1], Fixed):
            merged[-1] = Fixed(merged[-1].n + p.n)
        else:
            merged.append(p)
    return merged[0] if len(merged) == 1 else Cat(tuple(merged))
