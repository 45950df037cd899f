"""The architecture of a grown model, without its weights, for checkpoints of other frameworks.

A training framework's checkpoint (Lightning's, Hugging Face ``Trainer``'s) holds the
model's ``state_dict`` and rebuilds the model from its class, at the size the class
builds: a grown model's weights no longer fit (``size mismatch for net.0.weight``).
:func:`architecture_record` stores the grown submodules as module objects whose
parameters and persistent buffers are on the ``meta`` device (the structure, with no
data: a few KB), for the framework to keep beside the ``state_dict``;
:func:`restore_architecture` puts them back into a freshly built model (on its device,
uninitialised) before the framework loads the ``state_dict`` into it. Loading runs no
code from the record: it is unpickled with the allow-list of :func:`torchgrow.load`.

.. code-block:: python

    record = torchgrow.io.architecture_record(module, ["net"])  # at save time
    ...
    torchgrow.io.restore_architecture(fresh_module, record)     # then load_state_dict
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import _restore_parametrizations, _strip_parametrizations, _unpickle

__all__ = ["architecture_record", "restore_architecture"]

FORMAT = "torchgrow-architecture"
VERSION = 1


def _on_meta(modules: list[nn.Module]) -> list[nn.Module]:
    """Copies of ``modules`` whose parameters and persistent buffers are empty ``meta``
    tensors (non-persistent buffers keep their values: no ``state_dict`` brings them back).
    One copy for all of them, so that a tensor they share (tied weights) stays shared."""
    memo: dict[int, Any] = {}
    for module in modules:
        for p in module.parameters():
            memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
        for sub in module.modules():
            for name, b in sub._buffers.items():
                if b is not None and name not in sub._non_persistent_buffers_set:
                    memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(modules, memo)


def architecture_record(model: nn.Module, paths: Sequence[str] | None = None) -> bytes:
    """The structure of ``model``'s submodules at ``paths``, without their weights.

    Parameters
    ----------
    model : nn.Module
        The (grown) model.
    paths : sequence of str, optional
        Names of the submodules to record (``model.get_submodule`` names; ``""`` is
        the model itself, which then must be rebuilt whole by the loader). Default: every
        direct child and the shapes of the model's own parameters.

    Returns
    -------
    bytes
        The record (a ``torch.save`` archive), to store beside the ``state_dict``.

    Raises
    ------
    CheckpointError
        If a path names no submodule or the structure cannot be pickled (a class
        defined in ``__main__``, a lambda held by a module).
    """
    if paths is None:
        paths = [name for name, _ in model.named_children()]
    try:
        subs = [model.get_submodule(path) for path in paths]
    except AttributeError as exc:
        raise CheckpointError(f"architecture_record: {exc}") from exc
    modules: dict[str, nn.Module] = {}
    parametrizations: dict[str, list] = {}
    for path, copied in zip(paths, _on_meta(subs), strict=True):
        modules[path], parametrizations[path] = _strip_parametrizations(copied)
    own = {name: tuple(p.shape) for name, p in model.named_parameters(recurse=False)}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "modules": modules,
        "parametrizations": parametrizations,
        "own_parameters": own,
    }
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
    except Exception as exc:  # pickling errors come in several types
        raise CheckpointError(
            f"could not record the architecture: {exc}. The grown submodules must be "
            "picklable: classes defined at module level, no lambdas"
        ) from exc
    data = buffer.getvalue()
    in_main = sorted(
        n
        for n in torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
        if n.startswith("__main__.")
    )
    if in_main:
        raise CheckpointError(
            f"cannot record {', '.join(in_main)}: defined in __main__, so no other process "
            "could load the checkpoint; move the class into a module and import it from there"
        )
    return data


def _materialize(modules: list[nn.Module], device: torch.device) -> None:
    """Replace the ``meta`` parameters and buffers of ``modules`` by uninitialised tensors on
    ``device``, one for each shared tensor (``Module.to_empty`` would untie tied weights)."""
    made: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for root in modules:
        for sub in root.modules():
            for slots in (sub._parameters, sub._buffers):
                for name, t in list(slots.items()):
                    if t is None or not t.is_meta:
                        continue
                    if id(t) not in made:
                        new = torch.empty_like(t, device=device)
                        if isinstance(t, nn.Parameter):
                            new = nn.Parameter(new, t.requires_grad)
                        made[id(t)] = (t, new)  # the old tensor kept alive: ids stay unique
                    slots[name] = made[id(t)][1]


def _device_of(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def restore_architecture(
    model: nn.Module, record: bytes, *, allow: Iterable[Any] = (), trusted: bool = False
) -> list[str]:
    """Give ``model`` the architecture in ``record`` (weights uninitialised: load the
    ``state_dict`` next).

    Parameters
    ----------
    model : nn.Module
        A freshly built model of the class that was recorded.
    record : bytes
        What :func:`architecture_record` returned.
    allow : iterable of classes
        Your own module classes the record may name (as for :func:`torchgrow.load`).
    trusted : bool
        Unpickle without the allow-list (only for records you made).

    Returns
    -------
    list of str
        The submodules replaced (and own parameters resized).

    Raises
    ------
    CheckpointError
        If the record is not one, names classes that are not allowed, or names
        submodules the model does not have; the model is unchanged then.
    """
    payload = _unpickle(record, "the architecture record", "cpu", trusted, allow)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a torchgrow architecture record (architecture_record)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError("the architecture record was written by a newer torchgrow")
    device = _device_of(model)
    for path in payload["modules"]:
        if path:
            try:
                model.get_submodule(path)
            except AttributeError as exc:
                raise CheckpointError(
                    f"the checkpoint's grown submodule {path!r} is not in this model: {exc}"
                ) from exc
    if "" in payload["modules"]:
        raise CheckpointError(
            "the record holds the whole model: rebuild it with restore_architecture on its "
            "parent, or record its children"
        )
    for path, sub in payload["modules"].items():
        _restore_parametrizations(sub, payload["parametrizations"][path])
    # all at once, parametrizations' own buffers (masks) included: shared tensors stay shared
    _materialize(list(payload["modules"].values()), device)
    changed = []
    for path, sub in payload["modules"].items():
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent), leaf, sub)
        changed.append(path)
    for name, shape in payload["own_parameters"].items():
        p = getattr(model, name)
        if tuple(p.shape) != tuple(shape):
            new = torch.empty(shape, dtype=p.dtype, device=p.device)
            setattr(model, name, nn.Parameter(new, p.requires_grad))
            changed.append(name)
    return changed
