"""Depth edits: insert a layer after another, append a block to a stage."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import GrowthInputError
from .edit import EditRecord, commit

__all__ = ["insert_after", "append_block", "identity_linear", "identity_conv"]


def _split(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


def _module(model: nn.Module, name: str, what: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise GrowthInputError(f"{what}: model has no module named {name!r}")
    return modules[name]


def _check_new(model: nn.Module, layer: object, what: str) -> nn.Module:
    if not isinstance(layer, nn.Module):
        raise GrowthInputError(f"{what}: expected an nn.Module, got {type(layer).__name__}")
    ids = {id(m) for m in model.modules()}
    if any(id(m) in ids for m in layer.modules()):
        raise GrowthInputError(f"{what}: the new module (or part of it) is already in the model")
    for n, t in [*layer.named_parameters(), *layer.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise GrowthInputError(f"{what}: the new module's {n!r} contains NaN or Inf")
    return layer


def _anchor(module: nn.Module) -> nn.Parameter | None:
    return next(iter(module.parameters()), None)


def _anchor_before(model: nn.Module, name: str) -> nn.Parameter | None:
    """A parameter of ``name`` or, if it has none, of the nearest module before it."""
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    for n in reversed(names[: names.index(name) + 1]):
        p = next(iter(modules[n].parameters(recurse=n == name)), None)
        if p is not None:
            return p
    return None


def insert_after(
    model: nn.Module,
    name: str,
    layer: nn.Module,
    *,
    new_name: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
) -> EditRecord:
    """Insert ``layer`` right after module ``name`` (depth growth).

    If ``name`` lives in an ``nn.Sequential``, ``layer`` joins that container
    just after it. Otherwise ``name`` is replaced by
    ``nn.Sequential(OrderedDict(orig=<module>, <new_name>=layer))`` in its
    parent (the original module object, and so its parameters and optimizer
    state, are kept). The new layer takes the train/eval mode of ``name``.

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    name : str
        Qualified name of the module after which to insert.
    layer : nn.Module
        The new module; see :func:`identity_linear` and :func:`identity_conv`
        for function-preserving ones.
    new_name : str, optional
        Its name in the container (default ``"<child>_next"``, numbered if taken).
    optimizer : torch.optim.Optimizer, optional
        The new parameters join the param group of ``name``'s parameters or,
        if it has none (an activation), of the nearest module before it with
        parameters (group 0 if there is none).
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.

    Returns
    -------
    EditRecord
        What changed; ``record.added`` lists the new parameters.
    """
    target = _module(model, name, "insert_after")
    layer = _check_new(model, layer, "insert_after")
    parent_name, child = _split(name)
    parent = _module(model, parent_name, "insert_after") if parent_name else model
    base = new_name or f"{child}_next"
    if "." in base or base == "":
        raise GrowthInputError(f"insert_after: new_name must be a plain name, got {base!r}")
    if isinstance(parent, nn.Sequential):
        fresh = base
        i = 1
        while fresh in parent._modules:
            if new_name is not None:
                raise GrowthInputError(f"insert_after: {parent_name!r} already has {new_name!r}")
            i += 1
            fresh = f"{base}{i}"
        items = []
        for key, mod in parent._modules.items():
            items.append((key, mod))
            if key == child:
                items.append((fresh, layer))
        new_modules = OrderedDict(items)
        old_modules = parent._modules

        def do() -> None:
            layer.train(target.training)
            parent._modules = new_modules

        def undo() -> None:
            parent._modules = old_modules

        where = f"{parent_name + '.' if parent_name else ''}{fresh}"
    else:
        wrapper = nn.Sequential(OrderedDict([("orig", target), (base, layer)]))
        old = parent._modules[child]

        def do() -> None:
            wrapper.train(target.training)
            parent._modules[child] = wrapper

        def undo() -> None:
            parent._modules[child] = old

        where = f"{name}.{base}"
    record = EditRecord(op="insert_after", target=name, modules=[where], details={"new": where})
    return commit(
        model,
        [],
        optimizer=optimizer,
        record=record,
        structural=[(do, undo)],
        new_params_anchor=_anchor_before(model, name),
        unknown_optimizer=unknown_optimizer,
    )


def append_block(
    model: nn.Module,
    stage_name: str,
    block: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
) -> EditRecord:
    """Append ``block`` at the end of the ``nn.Sequential`` stage ``stage_name`` (AutoGrow).

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    stage_name : str
        Qualified name of an ``nn.Sequential`` stage.
    block : nn.Module
        The new block; it must map the stage's output shape to itself.
    optimizer : torch.optim.Optimizer, optional
        The block's parameters join the group of the stage's parameters.
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.

    Returns
    -------
    EditRecord
        What changed; ``record.added`` lists the new parameters.
    """
    stage = _module(model, stage_name, "append_block")
    if not isinstance(stage, nn.Sequential):
        raise GrowthInputError(
            f"append_block: {stage_name!r} is a {type(stage).__name__}, not an nn.Sequential stage"
        )
    block = _check_new(model, block, "append_block")
    key = str(len(stage))
    while key in stage._modules:
        key = f"{key}_"
    anchor = None
    for mod in reversed(list(stage.children())):
        anchor = _anchor(mod)
        if anchor is not None:
            break

    def do() -> None:
        block.train(stage.training)
        stage._modules[key] = block

    def undo() -> None:
        del stage._modules[key]

    record = EditRecord(
        op="append_block",
        target=stage_name,
        modules=[f"{stage_name}.{key}"],
        details={"new": f"{stage_name}.{key}", "depth_after": len(stage) + 1},
    )
    return commit(
        model,
        [],
        optimizer=optimizer,
        record=record,
        structural=[(do, undo)],
        new_params_anchor=anchor,
        unknown_optimizer=unknown_optimizer,
    )


def identity_linear(features: int, *, bias: bool = True) -> nn.Linear:
    """A ``Linear(features, features)`` that computes the identity (weight I, bias 0).

    Inserted after a ReLU (whose outputs are >= 0) and followed by a ReLU, it
    preserves the function exactly (Net2DeeperNet).
    """
    if features < 1:
        raise GrowthInputError(f"features must be >= 1, got {features}")
    layer = nn.Linear(features, features, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(features))
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


def identity_conv(
    channels: int, kernel_size: int = 3, *, bias: bool = False, batchnorm: bool = False
) -> nn.Module:
    """A same-padding ``Conv2d(channels, channels)`` computing the identity (Dirac kernel).

    Parameters
    ----------
    channels : int
        Input and output channels.
    kernel_size : int
        Odd kernel size.
    bias : bool
        Whether the conv has a (zero) bias.
    batchnorm : bool
        Follow it with a BatchNorm2d that is the identity in eval mode
        (weight 1, bias 0, running mean 0, running var ``1 - eps``).

    Returns
    -------
    nn.Module
        The conv, or ``nn.Sequential(conv, bn)``.
    """
    if channels < 1:
        raise GrowthInputError(f"channels must be >= 1, got {channels}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise GrowthInputError(f"kernel_size must be odd, got {kernel_size}")
    conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=bias)
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        if conv.bias is not None:
            conv.bias.zero_()
    if not batchnorm:
        return conv
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_var.fill_(1.0 - bn.eps)
    return nn.Sequential(OrderedDict([("conv", conv), ("bn", bn)]))
