"""FSDP2's state as torchgrow reads it: which modules are wrapped, and their parameter groups.

The FSDP internals used here (``FSDPState``, ``FSDPParamGroup``) are private to
torch; :func:`check_supported` says when the installed torch does not have them
in the form this package was written for (torch 2.13).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import TorchgrowError


class FSDPGrowthError(TorchgrowError, RuntimeError):
    """A growth edit under FSDP failed on some rank; every rank restored its model."""


def internals() -> Any:
    """The private FSDP2 modules (imported lazily: torch.distributed may be absent)."""
    try:
        from torch.distributed.fsdp._fully_shard import _fsdp_param_group, _fsdp_state
    except ImportError as e:  # pragma: no cover - depends on the installed torch
        raise TorchgrowError(
            f"torchgrow.fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.6): {e}"
        ) from e
    return _fsdp_state, _fsdp_param_group


def check_supported() -> None:
    """Raise :class:`~torchgrow.errors.TorchgrowError` if this torch lacks what the edit uses."""
    state_mod, group_mod = internals()
    missing = [
        n
        for n, obj in (
            ("_get_module_fsdp_state", state_mod),
            ("FSDPParamGroup", group_mod),
        )
        if not hasattr(obj, n)
    ]
    if missing:  # pragma: no cover - depends on the installed torch
        raise TorchgrowError(
            f"torchgrow.fsdp: torch {torch.__version__} lacks {missing}; it was written for the "
            "FSDP2 internals of torch 2.13"
        )


def state_of(module: nn.Module) -> Any:
    state_mod, _ = internals()
    return state_mod._get_module_fsdp_state(module)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` or one of its submodules was wrapped with ``fully_shard``."""
    return any(state_of(m) is not None for m in model.modules())


def states(model: nn.Module) -> list[tuple[str, Any]]:
    """(qualified name, FSDP state) of every wrapped module, in module order, each state once."""
    seen: set[int] = set()
    out = []
    for name, m in model.named_modules():
        s = state_of(m)
        if s is not None and id(s) not in seen:
            seen.add(id(s))
            out.append((name, s))
    return out


def managed_modules(group: Any) -> list[nn.Module]:
    """The modules whose own parameters a group manages: its modules' subtrees minus nested FSDP."""
    out: list[nn.Module] = []
    seen: set[int] = set()

    def visit(m: nn.Module, top: bool) -> None:
        if id(m) in seen or (not top and state_of(m) is not None):
            return
        seen.add(id(m))
        out.append(m)
        for child in m.children():
            visit(child, False)

    for m in group.modules:
        visit(m, True)
    return out


def reshard_idle(model: nn.Module) -> None:
    """Reshard every idle FSDP group (the root keeps its parameters unsharded after a forward)."""
    for _, state in states(model):
        if state._training_state.name == "IDLE":
            for g in state._fsdp_param_groups:
                if not g.is_sharded:
                    g.reshard()


def _plain_class(module: nn.Module) -> type:
    from torch.distributed.fsdp import FSDPModule

    cls = type(module)
    if issubclass(cls, FSDPModule):  # fully_shard's FSDP<cls>(FSDPModule, cls)
        return next(b for b in cls.__bases__ if b is not FSDPModule)
    return cls


def _is_fsdp_hook(hook: Any) -> bool:
    """Whether ``hook`` is one ``fully_shard`` registered (a method of its state, a closure of
    its module, or a partial of either)."""
    fn = getattr(hook, "func", hook)  # functools.partial
    fn = getattr(fn, "__func__", fn)  # bound method
    return (getattr(fn, "__module__", None) or "").startswith("torch.distributed.fsdp")


def fsdp_hook_ids(module: nn.Module) -> set[int]:
    """The handle ids of the hooks FSDP put on ``module`` (forward and backward)."""
    return {
        i
        for k, v in module.__dict__.items()
        if "hook" in k and isinstance(v, dict)
        for i, h in v.items()
        if callable(h) and _is_fsdp_hook(h)
    }


def plain_copy(
    module: nn.Module, tensor=None, _memo: dict[int, Any] | None = None, *, hooks: bool = False
) -> nn.Module:
    """``module`` as its original classes, without FSDP's state and hooks (with ``hooks``,
    its other hooks, torchgrow's masks among them, are kept).

    ``tensor`` maps each parameter and buffer to the copy's (default: the same
    object, so the copy shares them); shared tensors and modules stay shared.
    What a deep copy can be taken of (FSDP modules refuse ``copy.deepcopy``) and
    what an architecture record is made from.
    """
    memo: dict[int, Any] = {} if _memo is None else _memo
    if id(module) in memo:
        return memo[id(module)]
    new = object.__new__(_plain_class(module))
    memo[id(module)] = new
    fsdp_ids = fsdp_hook_ids(module) if hooks else None
    d: dict[str, Any] = {}
    for k, v in module.__dict__.items():
        if k.startswith("__composable") or k.startswith("_fsdp") or k == "_is_fsdp_managed_module":
            continue
        if k in ("_parameters", "_buffers"):
            d[k] = {n: t if t is None or tensor is None else tensor(t, memo) for n, t in v.items()}
        elif k == "_modules":
            d[k] = {
                n: None if c is None else plain_copy(c, tensor, memo, hooks=hooks)
                for n, c in v.items()
            }
        elif "hook" in k and isinstance(v, dict):  # flag dicts share the handle ids
            kept = () if fsdp_ids is None else v.items()
            d[k] = type(v)((i, h) for i, h in kept if i not in fsdp_ids)
        else:
            d[k] = v
    new.__dict__.update(d)
    return new


def is_dtensor(t: object) -> bool:
    """Whether ``t`` is a ``DTensor``."""
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t: Tensor) -> Tensor:
    """The whole tensor of a ``DTensor`` (a collective), or ``t`` itself."""
    return t.full_tensor() if is_dtensor(t) else t
