"""Recording what a model computes in one real forward pass.

A :class:`~torch.overrides.TorchFunctionMode` sees every torch function and
tensor method the forward calls (``torch.cat``, ``x.view``, ``a + b``,
``F.scaled_dot_product_attention``...); forward hooks see every call of a
layer kind the registry knows (``Linear``, ``Conv2d``, ``BatchNorm2d``...),
whose insides are not recorded. Each tensor gets a value id the first time it
is seen; parameters and buffers are named; an in-place operation makes a new
value. Python control flow, keyword arguments and structured inputs and
outputs (dicts, dataclasses, Hugging Face's ``ModelOutput``) do not matter:
only the operations that ran are recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..ops.registry import Role, role_of

__all__ = ["Ref", "Call", "Value", "Record", "record", "tensors_in", "function_name"]


@dataclass(frozen=True)
class Ref:
    """A tensor argument of a recorded call: the id of its value."""

    vid: int


@dataclass
class Value:
    """A tensor seen in the forward.

    Attributes
    ----------
    shape : tuple of int
        Its shape.
    origin : str
        ``"input"``, ``"param"``, ``"buffer"``, ``"const"`` (made inside the
        forward without tensor inputs, or unknown) or ``"call"``.
    names : tuple of str
        For parameters and buffers: every qualified name it has (several when shared).
    """

    shape: tuple[int, ...]
    origin: str
    names: tuple[str, ...] = ()


@dataclass
class Call:
    """One recorded operation.

    Attributes
    ----------
    kind : str
        ``"module"`` (a registered layer) or ``"function"``.
    target : object
        The module's qualified name, or the function called.
    where : str
        The qualified name of the innermost module running when it was called.
    args, kwargs : tuple, dict
        The arguments, tensors replaced by :class:`Ref`.
    inputs : list of int
        Value ids of the tensor arguments, in order.
    outputs : list of int
        Value ids of the tensors it returned, in order.
    """

    kind: str
    target: Any
    where: str
    args: tuple
    kwargs: dict
    inputs: list[int]
    outputs: list[int]

    @property
    def name(self) -> str:
        """What was called, for messages."""
        return self.target if self.kind == "module" else function_name(self.target)


@dataclass
class Record:
    """The operations of one forward, in the order they ran."""

    calls: list[Call] = field(default_factory=list)
    values: dict[int, Value] = field(default_factory=dict)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)


def function_name(func: Callable) -> str:
    """``torch.cat``, ``Tensor.view``, ``F.gelu``...: a readable name of a torch function."""
    name = getattr(func, "__name__", None) or repr(func)
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    if owner is not None and getattr(owner, "__name__", "") == "TensorBase":
        return f"Tensor.{name}"
    if name == "__get__":
        return f"Tensor.{getattr(getattr(func, '__self__', None), '__name__', 'attribute')}"
    return name


def tensors_in(obj: Any) -> Iterator[Tensor]:
    """Every tensor inside nested tuples, lists, dicts and dataclasses (``ModelOutput`` too)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from tensors_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from tensors_in(x)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from tensors_in(getattr(obj, f.name, None))


def _replace(obj: Any, fn: Callable[[Tensor], Any]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_replace(x, fn) for x in obj)
    if isinstance(obj, list):
        return [_replace(x, fn) for x in obj]
    if isinstance(obj, dict):
        return {k: _replace(x, fn) for k, x in obj.items()}
    return obj


class _Recorder:
    def __init__(self, model: nn.Module) -> None:
        self.rec = Record()
        self.ids: dict[int, int] = {}
        self.alive: list[Tensor] = []  # keeps ids unique while recording
        self.depth = 0  # > 0 inside a registered layer
        self.stack: list[str] = [""]
        self.named: dict[int, tuple[str, tuple[str, ...]]] = {}
        for kind, items in (
            ("param", model.named_parameters(remove_duplicate=False)),
            ("buffer", model.named_buffers(remove_duplicate=False)),
        ):
            for n, t in items:
                origin, names = self.named.get(id(t), (kind, ()))
                self.named[id(t)] = (origin, (*names, n))
                self.alive.append(t)

    def vid(self, t: Tensor) -> int:
        i = self.ids.get(id(t))
        if i is None:
            origin, names = self.named.get(id(t), ("const", ()))
            i = self.new(t, origin, names)
        return i

    def new(self, t: Tensor, origin: str, names: tuple[str, ...] = ()) -> int:
        i = len(self.rec.values)
        self.rec.values[i] = Value(tuple(t.shape), origin, names)
        self.ids[id(t)] = i
        self.alive.append(t)
        return i

    def add(self, kind: str, target: Any, args: tuple, kwargs: dict, out: Any) -> None:
        inputs: list[int] = []

        def ref(t: Tensor) -> Ref:
            i = self.vid(t)
            inputs.append(i)
            return Ref(i)

        a, kw = _replace(args, ref), _replace(kwargs, ref)
        outputs = [self.new(t, "call") for t in tensors_in(out)]
        self.rec.calls.append(Call(kind, target, self.stack[-1], a, kw, inputs, outputs))


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.r = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        r = self.r
        if r.depth == 0:
            if func is Tensor.__setitem__:  # in place: the target becomes a new value
                out_val = args[0]
                r.add("function", func, args, kwargs, None)
                r.rec.calls[-1].outputs.append(r.new(out_val, "call"))
            elif any(True for _ in tensors_in(out)):
                r.add("function", func, args, kwargs, out)
        return out


def record(model: nn.Module, *args: Any, **kwargs: Any) -> tuple[Record, Any]:
    """Run ``model(*args, **kwargs)`` once and record what it computes.

    Parameters
    ----------
    model : nn.Module
        The model (run as it is: set eval mode and ``no_grad`` outside if wanted).
    *args, **kwargs
        Its inputs.

    Returns
    -------
    (Record, object)
        The record, and what the forward returned.
    """
    r = _Recorder(model)
    for t in tensors_in((args, kwargs)):
        r.new(t, "input")
        r.rec.inputs.append(r.ids[id(t)])
    handles = []
    leaves: dict[nn.Module, str] = {}
    pending: list[tuple[tuple, dict]] = []

    def pre(mod: nn.Module, a: tuple, kw: dict) -> None:
        name = names[mod]
        r.stack.append(name)
        if mod in leaves:
            if r.depth == 0:
                pending.append((a, kw))
            r.depth += 1

    def post(mod: nn.Module, a: tuple, kw: dict, out: Any) -> None:
        if mod in leaves:
            r.depth -= 1
            if r.depth == 0:
                a0, kw0 = pending.pop()
                r.add("module", names[mod], a0, kw0, out)
        r.stack.pop()

    names: dict[nn.Module, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        if mod in names:
            continue
        names[mod] = name
        if role_of(mod) != Role.NONE:
            leaves[mod] = name
        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))
        handles.append(mod.register_forward_hook(post, with_kwargs=True, always_call=True))
    try:
        with _Mode(r):
            out = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    r.rec.outputs = [r.vid(t) for t in tensors_in(out)]
    return r.rec, out
