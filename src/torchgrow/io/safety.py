"""What a checkpoint may make torchgrow import and call when it is loaded.

A torchgrow checkpoint pickles the grown model object (its class rebuilds the
architecture), so loading it unpickles. Unpickling an arbitrary file can run
arbitrary code; torchgrow therefore loads with ``torch.load(weights_only=True)``,
whose unpickler refuses every global that is not allowed, and allows only:

- layer classes (``nn.Module`` subclasses) of ``torch.nn`` and of torchgrow;
- optimizer classes of ``torch.optim``;
- torchgrow's policy classes (``when``, ``where``, ``size``, ``how``) and
  ``torch.Generator``, which policies hold;
- the functions of ``torch.nn.functional`` (loss functions) and the few
  torchgrow functions its own objects refer to (the default loss, the
  partial-area input hook);
- what the user allows: :func:`add_safe_classes` or ``load(..., allow=[...])``.

The globals a file needs are listed from its pickle without running it
(``torch.serialization.get_unsafe_globals_in_checkpoint``); only names under
``torch`` and ``torchgrow`` are ever imported to check them.
"""

from __future__ import annotations

import importlib
import io
import types
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["add_safe_classes", "resolve_safe_globals", "safe_functions"]

_USER_ALLOWED: dict[str, Any] = {}
_POLICY_MODULES = ("torchgrow.when", "torchgrow.where", "torchgrow.size", "torchgrow.how")


def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def add_safe_classes(*objs: Any) -> None:
    """Allow checkpoints to refer to these classes (or functions) of your own.

    A checkpoint of a model of your own class names that class; loading it
    calls its code (``__setstate__``, the constructor of its parts), so
    torchgrow refuses it unless told it is trusted. Register the classes once,
    after importing them::

        torchgrow.io.add_safe_classes(MyNet, MyBlock)

    Raises
    ------
    CheckpointError
        If an object is not a class or a function defined at module level.
    """
    for obj in objs:
        if not isinstance(obj, type | types.FunctionType) or "<locals>" in obj.__qualname__:
            raise CheckpointError(
                f"{obj!r} cannot be allowed: only classes and functions defined at module "
                "level can be named by a checkpoint"
            )
        _USER_ALLOWED[_name(obj)] = obj


def safe_functions() -> list[Any]:
    """torchgrow's own functions that its checkpoints may refer to."""
    from ..grower import default_loss
    from ..ops.area import _mask_input
    from ..ops.masks import _guard_mask

    return [default_loss, _mask_input, _guard_mask]


def _allowed_by_default(obj: Any) -> bool:
    module = getattr(obj, "__module__", "") or ""
    if isinstance(obj, type):
        if issubclass(obj, nn.Module):
            return module.startswith(("torch.nn.", "torchgrow."))
        if issubclass(obj, torch.optim.Optimizer):
            return module.startswith("torch.optim.")
        if obj is torch.Generator:
            return True
        return module.startswith(_POLICY_MODULES) or module == "torchgrow.grower"
    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType):
        return module == "torch.nn.functional" or any(obj is f for f in safe_functions())
    return False


def _resolve(name: str) -> Any | None:
    """The object ``name`` (``package.module.Qual.Name``) refers to, under torch/torchgrow only."""
    parts = name.split(".")
    if parts[0] not in ("torch", "torchgrow"):
        return None
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        # An alias (``torchgrow.models.CifarResNet`` for ``torchgrow.models.resnet.CifarResNet``,
        # as older checkpoints name it) resolves too: the policy judges the object itself, by
        # its own module, so ``torchgrow.io.checkpoint.pickle.loads`` is still refused.
        return obj
    return None


def resolve_safe_globals(payload: bytes, source: str, allow: Iterable[Any] = ()) -> list[Any]:
    """The objects ``payload`` needs, each checked against the allow-list.

    Raises
    ------
    CheckpointError
        Naming every global the file needs that is not allowed, and what to do.
    """
    extra = {_name(o): o for o in allow}
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(payload))
    except Exception as exc:  # not a torch.save archive at all
        raise CheckpointError(f"{source} is not a readable torch archive: {exc}") from exc
    objs, refused = [], []
    for name in sorted(needed):
        obj = _USER_ALLOWED.get(name, extra.get(name))
        if obj is None:
            obj = _resolve(name)
            if obj is None or not _allowed_by_default(obj):
                refused.append(name)
                continue
        objs.append(obj)
    if refused:
        raise CheckpointError(
            f"{source} refers to {', '.join(refused)}, which torchgrow does not load by "
            "default: unpickling them would run their code. If you trust this file, load it "
            "with torchgrow.load(path, trusted=True); to allow just your own classes, pass "
            "torchgrow.load(path, allow=[MyNet, ...]) or call "
            "torchgrow.io.add_safe_classes(MyNet, ...) once"
        )
    return objs
