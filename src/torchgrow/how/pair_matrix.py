"""GradMax's closed forms: the matrix of a dense or conv pair, and the new fan-in's gradient
norm where it is known without a measuring backward (nothing between the pair, or one BatchNorm).

See ``docs/gradmax.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GrowthInputError
from ..graph import UNIT_SLOPE_AT_ZERO, GrowableUnit

__all__ = ["fix_signs", "dense_pair_matrix", "conv_pair_matrix"]


def fix_signs(vectors: Tensor) -> Tensor:
    """Flip each row so that its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, idx))
    signs[signs == 0] = 1
    return vectors * signs


def dense_pair_matrix(h_prev: Tensor, g_next: Tensor) -> Tensor:
    """GradMax's ``M = sum_batch g_next h_prev^T`` for a Linear -> Linear pair, shape ``(d_out, d_in)``."""
    h = h_prev.reshape(-1, h_prev.shape[-1]).double()
    g = g_next.reshape(-1, g_next.shape[-1]).double()
    return g.T @ h


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return tuple(conv.padding)  # type: ignore[return-value]


def conv_pair_matrix(
    h_prev: Tensor, g_next: Tensor, producer: nn.Conv2d, consumer: nn.Conv2d
) -> Tensor:
    """GradMax's matrix for a Conv2d -> Conv2d pair, shape ``(m0*k1h*k1w, m2*k2h*k2w)``.

    ``N[(c0, p), (c2, q)]`` is the gradient that a new channel with fan-in tap
    ``(c0, p)`` and fan-out tap ``(c2, q)`` would give: the sum over the batch
    and the consumer's output positions ``z`` of ``g[c2, z]`` times the input
    value that tap ``p`` of the producer reads at the producer position that
    tap ``q`` of the consumer reads for ``z``. That is the weight gradient of
    the consumer's convolution applied to the producer's unfolded input
    (``m0*k1h*k1w`` channels, the producer's output positions), so it is
    computed as one (any stride, padding and dilation; the consumer's zero
    padding of the producer's output included), in the statistics' precision.
    For stride 1 it equals the rearranged gradient of GradMax's auxiliary
    ``(k1+k2-1)``-kernel conv.
    """
    n = h_prev.shape[0]
    k1 = producer.kernel_size
    u1 = F.unfold(
        h_prev,
        k1,
        dilation=producer.dilation,
        padding=_conv_padding(producer),
        stride=producer.stride,
    )
    h1 = [
        (h_prev.shape[2 + i] + 2 * producer.padding[i] - producer.dilation[i] * (k1[i] - 1) - 1)
        // producer.stride[i]
        + 1
        for i in range(2)
    ]
    c1, m2 = u1.shape[1], g_next.shape[1]
    u1 = u1.view(n, c1, h1[0], h1[1])
    try:
        w = torch.nn.grad.conv2d_weight(
            u1,
            (m2, c1, *consumer.kernel_size),
            g_next.to(u1.dtype),
            stride=consumer.stride,
            padding=_conv_padding(consumer),
            dilation=consumer.dilation,
        )
    except RuntimeError as exc:
        raise GrowthInputError(
            f"conv pair: the consumer's gradient {tuple(g_next.shape)} does not fit its "
            f"convolution of the producer's output ({exc})"
        ) from exc
    return w.permute(1, 0, 2, 3).reshape(c1, -1)


def _exact_closed_form(unit: GrowableUnit) -> bool:
    """Whether the closed form's gradient is the real one: nothing per-channel between the pair
    and only ops of value 0 and slope 1 at 0 (``ReLU1``, ``tanh``...), which pass a zero-fan-in
    unit's gradient unchanged."""
    return (
        not unit.per_channel
        and all(c.factor == 1 for c in unit.consumers)
        and set(unit.between) <= UNIT_SLOPE_AT_ZERO
    )


def _batchnorm_between(unit: GrowableUnit, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The one BatchNorm between a single pair whose other ops pass 0 with slope 1, or None."""
    if len(unit.per_channel) != 1 or not set(unit.between) <= UNIT_SLOPE_AT_ZERO:
        return None
    if any(c.factor != 1 for c in unit.consumers) or len(unit.consumers) != 1:
        return None
    bn = modules[unit.per_channel[0]]
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d)
    return bn if type(bn) in kinds else None


def _fan_in_norm_through_batchnorm(
    h: Tensor, g: Tensor, block: Tensor, bn: nn.Module, producer: nn.Module, consumer: nn.Module
) -> float | None:
    """The gradient norm of zero-fan-in units' fan-in through a BatchNorm, in closed form.

    A new unit's pre-normalisation value is 0 everywhere and its new BatchNorm entry has
    weight 1, bias 0, running mean 0 and variance 1 (how ``widen`` grows a BatchNorm), so it
    outputs 0 and the ops after it (value 0, slope 1 at 0) pass its gradient ``d`` (the
    consumer's output gradient through the new fan-out) unchanged. With batch statistics the
    variance of an all-zero channel is 0, so the BatchNorm's backward is ``(d - mean(d)) /
    sqrt(eps)`` (the mean over the batch and positions); with running statistics it is ``d /
    sqrt(1 + eps)``. The fan-in gradient is that pulled back to the producer's input (dense
    pairs in float64, conv pairs by two convolutions in the statistics' precision). Returns
    None for shapes this does not cover (the grower then measures).
    """
    batch_stats = bn.training or bn.running_mean is None
    scale = (bn.eps if batch_stats else 1.0 + bn.eps) ** -0.5
    if isinstance(producer, nn.Linear) and h.dim() == 2 and g.dim() == 2:
        h, g, v = h.double(), g.double(), block.detach().double()
        d = g @ v  # (batch, k)
        if batch_stats:
            d = d - d.mean(0, keepdim=True)
        return float((scale * d.T @ h).norm())
    if not (isinstance(producer, nn.Conv2d) and h.dim() == 4 and g.dim() == 4):
        return None
    pad_p, pad_c = _conv_padding(producer), _conv_padding(consumer)
    if pad_p is None or pad_c is None or producer.groups != 1 or consumer.groups != 1:
        return None
    v = block.detach().to(h.dtype)  # the convolutions in the statistics' precision
    g = g.to(h.dtype)
    n, k = h.shape[0], v.shape[1]
    size = [
        (h.shape[2 + i] + 2 * pad_p[i] - producer.dilation[i] * (producer.kernel_size[i] - 1) - 1)
        // producer.stride[i]
        + 1
        for i in range(2)
    ]
    d = torch.nn.grad.conv2d_input(
        (n, k, *size), v, g, stride=consumer.stride, padding=pad_c, dilation=consumer.dilation
    )
    if batch_stats:
        d = d - d.mean((0, 2, 3), keepdim=True)
    w = torch.nn.grad.conv2d_weight(
        h,
        (k, h.shape[1], *producer.kernel_size),
        scale * d,
        stride=producer.stride,
        padding=pad_p,
        dilation=producer.dilation,
    )
    return float(w.double().norm())
