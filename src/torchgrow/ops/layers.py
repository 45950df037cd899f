"""Per-layer surgery functions for PyTorch's built-in layers, registered on import.

One small function per layer kind and role; each returns planned
:class:`~torchgrow.ops.edit.Change` objects and never edits the module.
Masked weights (:mod:`torchgrow.ops.masks`) are handled: the mask is edited
along with the weight, new connections active.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UnsupportedLayerError
from ..nn import ReLU1
from .area import input_mask_of
from .edit import Change
from .masks import MASK, is_masked
from .registry import LayerOps, Role, register, register_pass_through

__all__ = ["expand_index", "tensor_change"]


# ---------------------------------------------------------------- generic tensor edits
def _append_remap(dim: int, k: int):
    def remap(t: Tensor, fill: float) -> Tensor:
        shape = list(t.shape)
        shape[dim] = k
        return torch.cat([t, t.new_full(shape, fill)], dim)

    return remap


def _keep_remap(dim: int, index: Tensor):
    def remap(t: Tensor, fill: float) -> Tensor:
        return t.index_select(dim, index.to(t.device))

    return remap


def tensor_change(owner: nn.Module, name: str, dim: int, *, block=None, keep=None) -> Change:
    """Append ``block`` along ``dim`` to ``owner.name`` or keep ``keep`` indices of it."""
    t = getattr(owner, name)
    if keep is not None:
        new = t.detach().index_select(dim, keep.to(t.device))
        remap = _keep_remap(dim, keep)
    else:
        new = torch.cat([t.detach(), block.to(device=t.device, dtype=t.dtype)], dim)
        remap = _append_remap(dim, block.shape[dim])
    return Change(owner, name, new, remap)


def _weight_changes(module: nn.Module, dim: int, *, block=None, keep=None) -> list[Change]:
    """Changes of ``module.weight`` along ``dim``, and of its connection mask if it has one
    (new connections active)."""
    changes = [tensor_change(module, "weight", dim, block=block, keep=keep)]
    if is_masked(module):
        mask_block = None if block is None else torch.ones_like(block)
        changes.append(tensor_change(module, MASK, dim, block=mask_block, keep=keep))
    return changes


def _vector_changes(module: nn.Module, name: str, k_or_keep, fill: float) -> list[Change]:
    """Append ``k`` entries of ``fill`` to a 1-D tensor (param or buffer), or keep indices."""
    t = getattr(module, name, None)
    if t is None:
        return []
    if isinstance(k_or_keep, Tensor):
        return [tensor_change(module, name, 0, keep=k_or_keep)]
    return [tensor_change(module, name, 0, block=t.new_full((k_or_keep,), fill))]


def _weight(module: nn.Module) -> Tensor:
    return module.weight


def expand_index(keep: Tensor, factor: int) -> Tensor:
    """Feature indices of kept channels after a flatten of ``factor`` positions per channel."""
    if factor == 1:
        return keep
    return (keep[:, None] * factor + torch.arange(factor, device=keep.device)).flatten()


def _zeros(shape: Sequence[int], like: Tensor) -> Tensor:
    return torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)


# ---------------------------------------------------------------- Linear
def _linear_grow_out(m: nn.Linear, k: int, fan_in: Tensor | None) -> list[Change]:
    w = _weight(m)
    block = fan_in if fan_in is not None else _zeros((k, m.in_features), w)
    return [
        *_weight_changes(m, 0, block=block),
        *_vector_changes(m, "bias", k, 0.0),
        Change.attr(m, "out_features", m.out_features + k),
    ]


def _linear_keep_out(m: nn.Linear, keep: Tensor) -> list[Change]:
    return [
        *_weight_changes(m, 0, keep=keep),
        *_vector_changes(m, "bias", keep, 0.0),
        Change.attr(m, "out_features", len(keep)),
    ]


def _linear_grow_in(m: nn.Linear, k: int, fan_out: Tensor | None, factor: int) -> list[Change]:
    w = _weight(m)
    block = fan_out if fan_out is not None else _zeros((m.out_features, k * factor), w)
    return [
        *_weight_changes(m, 1, block=block),
        Change.attr(m, "in_features", m.in_features + k * factor),
    ]


def _linear_keep_in(m: nn.Linear, keep: Tensor, factor: int) -> list[Change]:
    idx = expand_index(keep, factor)
    return [*_weight_changes(m, 1, keep=idx), Change.attr(m, "in_features", len(idx))]


register(
    LayerOps(
        kind=nn.Linear,
        role=Role.PRODUCER | Role.CONSUMER,
        channel_dim=-1,
        out_width=lambda m: m.out_features,
        in_width=lambda m: m.in_features,
        grow_out=_linear_grow_out,
        keep_out=_linear_keep_out,
        grow_in=_linear_grow_in,
        keep_in=_linear_keep_in,
        fan_in_shape=lambda m, k: (k, m.in_features),
        fan_out_shape=lambda m, k, f: (m.out_features, k * f),
    )
)


# ---------------------------------------------------------------- Conv2d (ordinary and depthwise)
def _is_depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _conv_roles(m: nn.Conv2d) -> Role:
    if m.groups == 1:
        return Role.PRODUCER | Role.CONSUMER
    if _is_depthwise(m):
        return Role.PER_CHANNEL
    return Role.NONE


def _conv_unsupported(m: nn.Conv2d) -> str | None:
    if m.groups != 1 and not _is_depthwise(m):
        return (
            f"grouped convolution (groups={m.groups}) is not supported; only ordinary "
            "(groups=1) and depthwise (groups=in_channels=out_channels) convolutions"
        )
    return None


def _conv_grow_out(m: nn.Conv2d, k: int, fan_in: Tensor | None) -> list[Change]:
    w = _weight(m)
    block = fan_in if fan_in is not None else _zeros((k, *w.shape[1:]), w)
    return [
        *_weight_changes(m, 0, block=block),
        *_vector_changes(m, "bias", k, 0.0),
        Change.attr(m, "out_channels", m.out_channels + k),
    ]


def _conv_keep_out(m: nn.Conv2d, keep: Tensor) -> list[Change]:
    return [
        *_weight_changes(m, 0, keep=keep),
        *_vector_changes(m, "bias", keep, 0.0),
        Change.attr(m, "out_channels", len(keep)),
    ]


def _conv_grow_in(m: nn.Conv2d, k: int, fan_out: Tensor | None, factor: int) -> list[Change]:
    if factor != 1:
        raise UnsupportedLayerError("a Conv2d cannot consume flattened features")
    w = _weight(m)
    block = fan_out if fan_out is not None else _zeros((w.shape[0], k, *w.shape[2:]), w)
    changes = [
        *_weight_changes(m, 1, block=block),
        Change.attr(m, "in_channels", m.in_channels + k),
    ]
    area = input_mask_of(m)
    if area is not None:  # a new input channel sees its whole area
        changes.append(tensor_change(m, "input_mask", 0, block=area.new_ones(k, *area.shape[1:])))
    return changes


def _conv_keep_in(m: nn.Conv2d, keep: Tensor, factor: int) -> list[Change]:
    if factor != 1:
        raise UnsupportedLayerError("a Conv2d cannot consume flattened features")
    changes = [*_weight_changes(m, 1, keep=keep), Change.attr(m, "in_channels", len(keep))]
    if input_mask_of(m) is not None:
        changes.append(tensor_change(m, "input_mask", 0, keep=keep))
    return changes


def _depthwise_grow(m: nn.Conv2d, k: int) -> list[Change]:
    w = _weight(m)
    block = _zeros((k, 1, *w.shape[2:]), w)
    block[(slice(None), 0, *(n // 2 for n in w.shape[2:]))] = 1.0  # identity tap: passes through
    n = m.out_channels + k
    return [
        *_weight_changes(m, 0, block=block),
        *_vector_changes(m, "bias", k, 0.0),
        Change.attr(m, "in_channels", n),
        Change.attr(m, "out_channels", n),
        Change.attr(m, "groups", n),
    ]


def _depthwise_keep(m: nn.Conv2d, keep: Tensor) -> list[Change]:
    n = len(keep)
    return [
        *_weight_changes(m, 0, keep=keep),
        *_vector_changes(m, "bias", keep, 0.0),
        Change.attr(m, "in_channels", n),
        Change.attr(m, "out_channels", n),
        Change.attr(m, "groups", n),
    ]


for _conv in (nn.Conv2d, nn.Conv1d):
    register(
        LayerOps(
            kind=_conv,
            role=Role.PRODUCER | Role.CONSUMER | Role.PER_CHANNEL,
            role_for=_conv_roles,
            unsupported=_conv_unsupported,
            out_width=lambda m: m.out_channels,
            in_width=lambda m: m.in_channels,
            grow_out=_conv_grow_out,
            keep_out=_conv_keep_out,
            grow_in=_conv_grow_in,
            keep_in=_conv_keep_in,
            grow_channels=_depthwise_grow,
            keep_channels=_depthwise_keep,
            fan_in_shape=lambda m, k: (k, m.in_channels, *m.kernel_size),
            fan_out_shape=lambda m, k, f: (m.out_channels, k, *m.kernel_size),
        )
    )


# ---------------------------------------------------------------- BatchNorm
def _bn_grow(m: _BatchNorm, k: int) -> list[Change]:
    return [
        *_vector_changes(m, "weight", k, 1.0),
        *_vector_changes(m, "bias", k, 0.0),
        *_vector_changes(m, "running_mean", k, 0.0),
        *_vector_changes(m, "running_var", k, 1.0),
        Change.attr(m, "num_features", m.num_features + k),
    ]


def _bn_keep(m: _BatchNorm, keep: Tensor) -> list[Change]:
    return [
        *_vector_changes(m, "weight", keep, 0.0),
        *_vector_changes(m, "bias", keep, 0.0),
        *_vector_changes(m, "running_mean", keep, 0.0),
        *_vector_changes(m, "running_var", keep, 0.0),
        Change.attr(m, "num_features", len(keep)),
    ]


register(
    LayerOps(
        kind=_BatchNorm,
        role=Role.PER_CHANNEL,
        out_width=lambda m: m.num_features,
        in_width=lambda m: m.num_features,
        grow_channels=_bn_grow,
        keep_channels=_bn_keep,
    )
)


# ---------------------------------------------------------------- LayerNorm
def _ln_unsupported(m: nn.LayerNorm) -> str | None:
    if len(m.normalized_shape) != 1:
        return (
            f"LayerNorm over shape {tuple(m.normalized_shape)} cannot be resized per channel; "
            "only a LayerNorm over the last dimension (of a Linear's output) can"
        )
    return None


def _ln_grow(m: nn.LayerNorm, k: int) -> list[Change]:
    return [
        *_vector_changes(m, "weight", k, 1.0),
        *_vector_changes(m, "bias", k, 0.0),
        Change.attr(m, "normalized_shape", (m.normalized_shape[0] + k,)),
    ]


def _ln_keep(m: nn.LayerNorm, keep: Tensor) -> list[Change]:
    return [
        *_vector_changes(m, "weight", keep, 0.0),
        *_vector_changes(m, "bias", keep, 0.0),
        Change.attr(m, "normalized_shape", (len(keep),)),
    ]


register(
    LayerOps(
        kind=nn.LayerNorm,
        role=Role.PER_CHANNEL,
        channel_dim=-1,
        unsupported=_ln_unsupported,
        out_width=lambda m: m.normalized_shape[0],
        in_width=lambda m: m.normalized_shape[0],
        grow_channels=_ln_grow,
        keep_channels=_ln_keep,
    )
)


# ---------------------------------------------------------------- Flatten and pass-through layers
def _flatten_unsupported(m: nn.Flatten) -> str | None:
    if m.start_dim != 1 or m.end_dim != -1:
        return (
            f"only Flatten(start_dim=1, end_dim=-1) is supported, got ({m.start_dim}, {m.end_dim})"
        )
    return None


register(LayerOps(kind=nn.Flatten, role=Role.FLATTEN, unsupported=_flatten_unsupported))

register_pass_through(
    nn.Identity,
    nn.ReLU,
    ReLU1,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
