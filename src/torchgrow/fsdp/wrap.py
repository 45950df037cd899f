"""Wrapping a built model with ``fully_shard``: per layer and at the root."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["shard_layers"]


def _layers(module: nn.Module) -> list[nn.Module]:
    """The modules sharded one by one: children holding parameters, containers opened."""
    out: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            out += _layers(child)
        elif any(True for _ in child.parameters()):
            out.append(child)
    return out


def shard_layers(model: nn.Module, mesh: Any = None, *, device_type: str = "cpu") -> nn.Module:
    """``fully_shard`` every layer of ``model`` and then the root, in place.

    The layers are the children holding parameters, with the elements of a
    ``ModuleList``/``ModuleDict`` taken one by one (a transformer's blocks),
    so that an edit gathers only the layers it touches.

    Parameters
    ----------
    model : nn.Module
        The model, built and on its device.
    mesh : DeviceMesh, optional
        Default: a one-dimensional mesh over every rank of the process group.
    device_type : str
        The mesh's device type when ``mesh`` is not given (``"cpu"`` or ``"cuda"``).

    Returns
    -------
    nn.Module
        ``model``, sharded.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if mesh is None:
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for layer in _layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
