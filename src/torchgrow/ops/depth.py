"""Depth edits: insert a layer after another, insert or append a block in a container.

Containers are ``nn.Sequential``, ``nn.ModuleList`` (how transformers hold
their layers) and ``nn.ModuleDict``. When the model has an example input
(:func:`torchgrow.graph.set_example`) every depth edit runs it afterwards and
rolls back if the forward fails (a block of the wrong width) or, with
``preserve=True``, if the output moved.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import GrowthInputError
from .edit import EditRecord, commit
from .verify import Verifier

__all__ = [
    "insert_after",
    "append_block",
    "insert_block",
    "identity_linear",
    "identity_conv",
    "Then",
]

Container = nn.Sequential | nn.ModuleList | nn.ModuleDict


class Then(nn.Sequential):
    """``orig`` then the inserted layers: what :func:`insert_after` puts in ``orig``'s place.

    Unlike a plain ``nn.Sequential`` it passes every positional and keyword
    argument to ``orig`` (a layer called as ``layer(h, attention_mask=m)``
    keeps working); the layers after it take ``orig``'s output.
    """

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        mods = iter(self._modules.values())
        out = next(mods)(*args, **kwargs)
        for m in mods:
            out = m(out)
        return out


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
    preserve: bool = False,
) -> EditRecord:
    """Insert ``layer`` right after module ``name`` (depth growth).

    If ``name`` lives in an ``nn.Sequential``, ``layer`` joins that container
    just after it. Otherwise ``name`` is replaced by
    ``Then(OrderedDict(orig=<module>, <new_name>=layer))`` in its parent (a
    ``Sequential`` that passes keyword arguments on to ``orig``; the original
    module object, and so its parameters and optimizer state, are kept). The
    new layer takes the train/eval mode of ``name``.

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
    preserve : bool
        The new layer computes the identity: with an example input, roll back
        if the output moved beyond the tolerance (a failing forward always
        rolls back).

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
        wrapper = Then(OrderedDict([("orig", target), (base, layer)]))
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
        verify=Verifier(model, f"insert_after({name!r})", preserve=preserve),
    )


def append_block(
    model: nn.Module,
    stage_name: str,
    block: nn.Module,
    *,
    key: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    preserve: bool = False,
) -> EditRecord:
    """Append ``block`` at the end of the container ``stage_name`` (AutoGrow's stage growth).

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    stage_name : str
        Qualified name of an ``nn.Sequential``, ``nn.ModuleList`` or ``nn.ModuleDict``.
    block : nn.Module
        The new block; it must map the stage's output shape to itself.
    key : str, optional
        Its name in the container (required for an ``nn.ModuleDict``).
    optimizer : torch.optim.Optimizer, optional
        The block's parameters join the group of the stage's parameters.
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    preserve : bool
        See :func:`insert_block`.

    Returns
    -------
    EditRecord
        What changed; ``record.added`` lists the new parameters.
    """
    stage = _container(model, stage_name, "append_block")
    return insert_block(
        model,
        stage_name,
        len(stage),
        block,
        key=key,
        optimizer=optimizer,
        unknown_optimizer=unknown_optimizer,
        preserve=preserve,
        _op="append_block",
    )


def _container(model: nn.Module, name: str, what: str) -> Container:
    stage = _module(model, name, what)
    if not isinstance(stage, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise GrowthInputError(
            f"{what}: {name!r} is a {type(stage).__name__}, not an nn.Sequential, nn.ModuleList "
            "or nn.ModuleDict"
        )
    return stage


def _numbered(container: Container) -> bool:
    return all(k.isdigit() for k in container._modules) and not isinstance(container, nn.ModuleDict)


def insert_block(
    model: nn.Module,
    container: str,
    index: int,
    block: nn.Module,
    *,
    key: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    unknown_optimizer: str = "raise",
    preserve: bool = False,
    _op: str = "insert_block",
) -> EditRecord:
    """Insert ``block`` at position ``index`` of a container (depth growth of a stack).

    In an ``nn.ModuleList`` or a numbered ``nn.Sequential`` the blocks after
    ``index`` are renumbered (``layers.3`` becomes ``layers.4``); their module
    objects, parameters and optimizer state are untouched. In an
    ``nn.ModuleDict`` or a named ``nn.Sequential``, ``key`` names the block.

    Parameters
    ----------
    model : nn.Module
        The model, edited in place.
    container : str
        Qualified name of an ``nn.Sequential``, ``nn.ModuleList`` or ``nn.ModuleDict``.
    index : int
        Position of the new block, ``0 <= index <= len(container)``.
    block : nn.Module
        The new block. It takes the container's train/eval mode.
    key : str, optional
        The block's name (required for a dict or a named Sequential).
    optimizer : torch.optim.Optimizer, optional
        The block's parameters join the param group of the nearest block
        with parameters before it (or after it, or group 0).
    unknown_optimizer : {"raise", "reset"}
        See :func:`torchgrow.ops.widen`.
    preserve : bool
        The block computes the identity (or adds zero to a residual stream):
        with an example input, roll back if the output moved beyond the
        tolerance. A failing forward always rolls back.

    Returns
    -------
    EditRecord
        What changed; ``record.added`` lists the new parameters.
    """
    stage = _container(model, container, _op)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(stage):
        raise GrowthInputError(f"{_op}: index must be in [0, {len(stage)}], got {index!r}")
    block = _check_new(model, block, _op)
    items = list(stage._modules.items())
    if _numbered(stage):
        if key is not None:
            raise GrowthInputError(f"{_op}: {container!r} is numbered; do not pass key=")
        blocks = [m for _, m in items[:index]] + [block] + [m for _, m in items[index:]]
        new_items = [(str(i), m) for i, m in enumerate(blocks)]
        new_key = str(index)
    else:
        if key is None and index == len(items) and not isinstance(stage, nn.ModuleDict):
            key = str(len(items))  # appending to a named Sequential: the next free number
            while key in stage._modules:
                key = f"{key}_"
        if key is None or "." in key or key == "" or key in stage._modules:
            raise GrowthInputError(
                f"{_op}: {container!r} names its blocks: pass a new plain key= (got {key!r})"
            )
        new_items = items[:index] + [(key, block)] + items[index:]
        new_key = key
    anchor = None
    for _, mod in reversed(items[:index]):
        anchor = _anchor(mod)
        if anchor is not None:
            break
    if anchor is None:
        anchor = next((p for _, mod in items[index:] for p in mod.parameters()), None)
    old_modules = stage._modules
    new_modules = OrderedDict(new_items)

    def do() -> None:
        block.train(stage.training)
        stage._modules = new_modules

    def undo() -> None:
        stage._modules = old_modules

    where = f"{container}.{new_key}" if container else new_key
    record = EditRecord(
        op=_op,
        target=container,
        modules=[where],
        details={"new": where, "depth_after": len(items) + 1},
    )
    return commit(
        model,
        [],
        optimizer=optimizer,
        record=record,
        structural=[(do, undo)],
        new_params_anchor=anchor,
        unknown_optimizer=unknown_optimizer,
        verify=Verifier(model, f"{_op}({container!r}, {index})", preserve=preserve),
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
