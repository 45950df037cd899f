"""The registry of per-layer surgery functions.

Each layer kind says which *roles* it can play in a growable unit and how to
edit it in each role:

- ``PRODUCER`` makes the unit's channels (``Linear``, ``Conv2d``): it can add
  or drop output units (rows of its weight and entries of its bias).
- ``CONSUMER`` reads them (``Linear``, ``Conv2d``): it can add or drop input
  units (columns, or input-channel slices, of its weight).
- ``PER_CHANNEL`` carries one entry per channel and passes the channels on
  (``BatchNorm``, ``LayerNorm``, depthwise ``Conv2d``).
- ``PASS_THROUGH`` acts on each channel alone and holds nothing per channel
  (activations, pooling, dropout, ``Identity``).
- ``FLATTEN`` turns ``C`` channels of ``H x W`` positions into ``C*H*W``
  features (``nn.Flatten`` from dim 1).

Users extend the registry for their own layer kinds with :func:`register`
(see ``docs/extending.md``). Functions never edit a module: they return the
:class:`~torchgrow.ops.edit.Change` objects that an edit commits atomically.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import UnsupportedLayerError
from .edit import Change

__all__ = [
    "Role",
    "LayerOps",
    "register",
    "register_by_name",
    "register_pass_through",
    "lookup",
    "role_of",
]


class Role(enum.Flag):
    """What a layer can do in a growable unit."""

    NONE = 0
    PRODUCER = enum.auto()
    CONSUMER = enum.auto()
    PER_CHANNEL = enum.auto()
    PASS_THROUGH = enum.auto()
    FLATTEN = enum.auto()


# signatures of the per-layer functions
GrowOut = Callable[[nn.Module, int, "Tensor | None"], Sequence[Change]]
GrowIn = Callable[[nn.Module, int, "Tensor | None", int], Sequence[Change]]
GrowChannels = Callable[[nn.Module, int], Sequence[Change]]
KeepOut = Callable[[nn.Module, Tensor], Sequence[Change]]
KeepIn = Callable[[nn.Module, Tensor, int], Sequence[Change]]
KeepChannels = Callable[[nn.Module, Tensor], Sequence[Change]]
Shape = Callable[[nn.Module, int], tuple[int, ...]]
ShapeIn = Callable[[nn.Module, int, int], tuple[int, ...]]
Width = Callable[[nn.Module], int]
Check = Callable[[nn.Module], "str | None"]


@dataclass(frozen=True)
class LayerOps:
    """How to edit one layer kind.

    Attributes
    ----------
    kind : type
        The ``nn.Module`` subclass (subclasses of it match too).
    role : Role
        The roles the kind can play. ``role_for`` may narrow it per instance
        (a depthwise ``Conv2d`` is per-channel, an ordinary one is not).
    out_width, in_width : callable
        Number of output / input units of an instance.
    grow_out, keep_out : callable
        Producer edits: append ``k`` output units with the given fan-in
        (``None`` = zero), or keep only the given output units.
    grow_in, keep_in : callable
        Consumer edits: append ``k`` input units (times ``factor`` features
        each after a flatten) with the given fan-out (``None`` = zero), or keep
        only the given input units.
    grow_channels, keep_channels : callable
        Per-channel edits: append ``k`` identity entries, or keep some.
    fan_in_shape, fan_out_shape : callable
        Expected shapes of a fan-in block for ``k`` new units, and of a
        fan-out block for ``k`` new units with ``factor`` features each.
    role_for : callable, optional
        Narrows ``role`` for one instance (returns the instance's roles).
    unsupported : callable, optional
        Returns a reason string when an instance cannot be edited at all.
    channel_dim : int
        The dimension of its input and output tensors that holds the channels
        (``1`` for convolutions and BatchNorm, ``-1`` for ``Linear`` and
        ``LayerNorm``); used by the analysis of a recorded forward.
    in_dim : int
        The dimension of the weight that holds a consumer's inputs (1 for
        ``Linear`` and convolutions), where new inputs are placed when the
        consumer's input is laid out by a ``torch.cat`` or a flatten.
    out_dim : int
        The dimension of the weight that holds a producer's outputs (0 for
        ``Linear`` and convolutions, 1 for ``Embedding`` and transformers' ``Conv1D``).
    """

    kind: type
    role: Role
    out_width: Width | None = None
    in_width: Width | None = None
    grow_out: GrowOut | None = None
    keep_out: KeepOut | None = None
    grow_in: GrowIn | None = None
    keep_in: KeepIn | None = None
    grow_channels: GrowChannels | None = None
    keep_channels: KeepChannels | None = None
    fan_in_shape: Shape | None = None
    fan_out_shape: ShapeIn | None = None
    role_for: Callable[[nn.Module], Role] | None = None
    unsupported: Check | None = None
    channel_dim: int = 1
    in_dim: int = 1
    out_dim: int = 0

    def roles(self, module: nn.Module) -> Role:
        """The roles this instance can play."""
        return self.role_for(module) if self.role_for is not None else self.role


_REGISTRY: dict[type, LayerOps] = {}
_BY_NAME: dict[str, LayerOps] = {}


def register(ops: LayerOps) -> LayerOps:
    """Register (or replace) the surgery functions of a layer kind.

    Parameters
    ----------
    ops : LayerOps
        The functions; ``ops.kind`` is the key.

    Returns
    -------
    LayerOps
        ``ops``, so that the call can be used as an expression.
    """
    _REGISTRY[ops.kind] = ops
    return ops


def register_by_name(qualified_name: str, ops: LayerOps) -> LayerOps:
    """Register the ops of a layer kind by its class's ``module.QualName``.

    For kinds of libraries torchgrow does not import (transformers' ``Conv1D``
    is ``"transformers.pytorch_utils.Conv1D"``); subclasses match too.
    """
    _BY_NAME[qualified_name] = ops
    return ops


def register_pass_through(*kinds: type) -> None:
    """Declare layer kinds that act on each channel alone and hold no per-channel state."""
    for kind in kinds:
        register(LayerOps(kind=kind, role=Role.PASS_THROUGH))


def lookup(module: nn.Module) -> LayerOps | None:
    """The registered ops of ``module``'s kind (or of its nearest registered base class)."""
    for cls in type(module).__mro__:
        ops = _REGISTRY.get(cls)
        if ops is None and _BY_NAME:
            ops = _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if ops is not None:
            return ops
    return None


def role_of(module: nn.Module) -> Role:
    """The roles ``module`` can play (``Role.NONE`` when its kind is unknown)."""
    ops = lookup(module)
    return Role.NONE if ops is None else ops.roles(module)


def weight_hook(module: nn.Module) -> str | None:
    """Why ``module``'s weight cannot be edited: a parametrization, or an old-style
    reparametrization hook (``nn.utils.weight_norm``, ``spectral_norm``, ``nn.utils.prune``),
    recomputes it from other tensors before each forward; ``None`` when there is none
    (torchgrow's own connection masks keep the weight as it is)."""
    plists = getattr(module, "parametrizations", None)
    if plists is not None:
        for pname, plist in plists.items():
            kinds = [type(p).__name__ for p in plist]
            if kinds:
                return (
                    f"its {pname!r} is computed by a {kinds[0]} parametrization, which torchgrow "
                    "cannot resize; remove it (torch.nn.utils.parametrize.remove_parametrizations) "
                    "before growing"
                )
    for hook in module._forward_pre_hooks.values():
        kind = type(hook).__name__
        mod = type(hook).__module__
        if kind in ("WeightNorm", "SpectralNorm") or mod.startswith("torch.nn.utils.prune"):
            return (
                f"its weight is recomputed by a {kind} hook before each forward, which torchgrow "
                "cannot resize; remove it (nn.utils.remove_weight_norm, remove_spectral_norm, "
                "prune.remove) before growing, or use torchgrow.ops.masks for connection masks"
            )
    return None


def require(module: nn.Module, name: str, role: Role) -> LayerOps:
    """Ops of ``module`` for ``role``, or an :class:`UnsupportedLayerError` naming it."""
    ops = lookup(module)
    if ops is None or not (ops.roles(module) & role):
        kind = type(module).__name__
        raise UnsupportedLayerError(
            f"module {name!r} ({kind}) cannot act as {role.name.lower()} in a growth edit; "
            f"torchgrow.ops knows how to edit: {known_kinds()}. Register the kind with "
            "torchgrow.ops.register(LayerOps(...)) to teach it (see docs/extending.md)."
        )
    reason = ops.unsupported(module) if ops.unsupported is not None else None
    reason = reason or weight_hook(module)
    if reason:
        raise UnsupportedLayerError(f"module {name!r} ({type(module).__name__}): {reason}")
    return ops


def known_kinds() -> str:
    """Names of the registered layer kinds, for error messages."""
    names = [k.__name__ for k in _REGISTRY] + [n.rsplit(".", 1)[-1] for n in _BY_NAME]
    return ", ".join(sorted(names))
